//! `coffre attest verify`: check attestation evidence offline, as an auditor would.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use coffre_attestation::UnixTime;
use coffre_attestation::snp::{SnpEvidence, SnpVerification, SnpVerifier};

use crate::error::{CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Verify attestation evidence against pinned vendor roots, offline
    #[command(after_help = "\
FILE may be the raw 1184-byte report, hex text of it, an Azure HCL report, or Trustee's Azure JSON
evidence (which also carries the VCEK). Certificates may be PEM or DER; a PEM bundle given to --cert
may also hold the ASK and ARK. AMD's ARK, ASK and ASVK for Milan, Genoa and Turin are built in: a
chain given with --chain is only checked against them, never trusted instead of them.

Exit status: 0 verified, 1 the evidence is invalid (every failed check is listed), 2 usage error.

Examples:
  coffre attest verify --kind snp --report report.bin --cert vcek.der --at 2025-06-01T00:00:00Z
  coffre attest verify --kind snp --report hcl-report.bin --cert vcek.pem --at now --json")]
    Verify(VerifyArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvidenceKind {
    /// AMD SEV-SNP attestation report
    Snp,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Kind of evidence
    #[arg(long, value_enum)]
    pub kind: EvidenceKind,

    /// The report (raw, hex text, Azure HCL report, or Azure JSON evidence)
    #[arg(long, value_name = "FILE")]
    pub report: PathBuf,

    /// The VCEK or VLEK certificate (PEM or DER)
    #[arg(long, value_name = "VCEK_OR_VLEK")]
    pub cert: Option<PathBuf>,

    /// Intermediates supplied by the host (ASK or ASVK, and the ARK), PEM or DER; repeatable
    #[arg(long, value_name = "PEM")]
    pub chain: Vec<PathBuf>,

    /// An AMD CRL (DER or PEM), checked when given
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,

    /// The time at which certificates must be valid: RFC 3339 (2025-06-01T00:00:00Z) or `now`
    #[arg(long, value_name = "RFC3339")]
    pub at: String,

    /// Print one JSON object {"verified", "kind", "errors", "claims", "checks"}
    #[arg(long)]
    pub json: bool,

    /// DEVELOPMENT ONLY: also trust this simulated ARK and ASK (PEM or DER, both in one file);
    /// claims then say platform "simulated"
    #[arg(long, value_name = "PEM")]
    pub dangerous_accept_simulated_roots: Option<PathBuf>,
}

fn read(path: &Path, what: &str) -> CliResult<Vec<u8>> {
    fs::read(path).map_err(|e| {
        let mut err = CliError::io(&format!("read the {what}"), path, &e);
        err.code = 2;
        err
    })
}

fn usage(what: &str, path: &Path, e: String) -> CliError {
    CliError::usage(format!("{}: {e}", path.display()))
        .hint(format!("give the {what} as PEM or DER; see `coffre attest verify --help`"))
}

pub fn run(cmd: &AttestCommand) -> CliResult<bool> {
    match cmd {
        AttestCommand::Verify(args) => verify(args),
    }
}

fn verify(args: &VerifyArgs) -> CliResult<bool> {
    let at = if args.at == "now" {
        UnixTime::now()
    } else {
        UnixTime::parse_rfc3339(&args.at)
            .map_err(|e| CliError::usage(e).hint("use --at 2025-06-01T00:00:00Z, or --at now"))?
    };
    let mut evidence = SnpEvidence::from_report_bytes(&read(&args.report, "report")?)
        .map_err(|e| CliError::usage(format!("{}: {e}", args.report.display())))?;
    if let Some(cert) = &args.cert {
        evidence = evidence.with_vek(&read(cert, "certificate")?).map_err(|e| usage("VCEK or VLEK", cert, e))?;
    }
    for chain in &args.chain {
        evidence = evidence.with_chain(&read(chain, "chain")?).map_err(|e| usage("chain", chain, e))?;
    }
    if let Some(crl) = &args.crl {
        evidence = evidence.with_crl(&read(crl, "CRL")?).map_err(|e| usage("CRL", crl, e))?;
    }
    let mut verifier = SnpVerifier::new();
    if let Some(path) = &args.dangerous_accept_simulated_roots {
        let certs = coffre_attestation::x509::certificates_from_pem_or_der(&read(path, "simulated roots")?)
            .map_err(|e| usage("simulated ARK and ASK", path, e))?;
        let [ark, ask] = certs.as_slice() else {
            return Err(CliError::usage(format!("{} must hold exactly the simulated ARK and ASK", path.display())));
        };
        verifier =
            verifier.dangerous_accept_simulated_roots(ark, ask).map_err(|e| usage("simulated ARK and ASK", path, e))?;
        eprintln!("warning: trusting SIMULATED roots from {}: for development only", path.display());
    }
    let result = verifier.verify(&evidence, at);
    if args.json {
        print_json(&result, at)?;
    } else {
        print_table(&result, at);
    }
    Ok(result.is_verified())
}

#[derive(serde::Serialize)]
struct VerifyJson<'a> {
    verified: bool,
    kind: &'static str,
    errors: Vec<String>,
    claims: &'a Option<coffre_attestation::snp::SnpClaims>,
    checks: &'a [coffre_attestation::Check],
    at: UnixTime,
}

fn print_json(result: &SnpVerification, at: UnixTime) -> CliResult {
    let doc = VerifyJson {
        verified: result.is_verified(),
        kind: "snp",
        errors: result.errors(),
        claims: &result.claims,
        checks: &result.checks,
        at,
    };
    let text = serde_json::to_string_pretty(&doc).map_err(|e| CliError::new(format!("JSON output: {e}")))?;
    outln!("{text}");
    Ok(())
}

fn print_table(result: &SnpVerification, at: UnixTime) {
    let failed = result.checks.iter().filter(|c| !c.passed).count();
    match (&result.claims, result.is_verified()) {
        (Some(c), true) => outln!(
            "SEV-SNP report VERIFIED: {}, report version {}, signed by the {}{}",
            c.product.map_or("unknown product".to_owned(), |p| p.to_string()),
            c.version,
            c.signing_key,
            if c.platform == coffre_attestation::Platform::Simulated { " (SIMULATED: not hardware)" } else { "" }
        ),
        _ => outln!("SEV-SNP report NOT VERIFIED: {failed} check(s) failed"),
    }
    outln!("\nchecks at {at}:");
    let width = result.checks.iter().map(|c| c.name.len()).max().unwrap_or(10);
    for c in &result.checks {
        outln!("  {} {:<width$}  {}", if c.passed { "✓" } else { "✗" }, c.name, c.detail);
    }
    let Some(c) = &result.claims else { return };
    outln!("\nclaims{}:", if result.is_verified() { "" } else { " (NOT verified: shown for diagnosis)" });
    let hex = |b: &[u8]| hex::encode(b);
    let rows: Vec<(&str, String)> = vec![
        ("platform", format!("{:?}", c.platform).to_lowercase()),
        ("product", c.product.map_or("unknown".into(), |p| p.to_string())),
        ("version", c.version.to_string()),
        ("vmpl", c.vmpl.to_string()),
        (
            "policy",
            format!(
                "{:#x} (debug {}, migrate_ma {}, smt {}, single_socket {}, abi {}.{})",
                c.policy.raw,
                c.policy.debug,
                c.policy.migrate_ma,
                c.policy.smt,
                c.policy.single_socket,
                c.policy.abi_major,
                c.policy.abi_minor
            ),
        ),
        ("measurement", hex(&c.measurement)),
        ("host_data", hex(&c.host_data)),
        ("report_data", hex(&c.report_data)),
        ("id_key_digest", hex(&c.id_key_digest)),
        ("author_key_digest", hex(&c.author_key_digest)),
        ("chip_id", hex(&c.chip_id)),
        ("reported_tcb", c.reported_tcb.to_string()),
        ("current_tcb", c.current_tcb.to_string()),
        ("committed_tcb", c.committed_tcb.to_string()),
        ("launch_tcb", c.launch_tcb.to_string()),
        (
            "platform_info",
            format!(
                "{:#x} (smt {}, tsme {}, ecc {}, rapl_disabled {}, ciphertext_hiding {}, alias_check {})",
                c.platform_info.raw,
                c.platform_info.smt_enabled,
                c.platform_info.tsme_enabled,
                c.platform_info.ecc_enabled,
                c.platform_info.rapl_disabled,
                c.platform_info.ciphertext_hiding_enabled,
                c.platform_info.alias_check_complete
            ),
        ),
        ("signing_key", c.signing_key.to_string()),
        ("vlek_csp_id", c.vlek_csp_id.clone().unwrap_or_else(|| "-".into())),
        ("crl_checked", c.crl_checked.to_string()),
        (
            "firmware",
            format!(
                "{}.{}.{} (committed {}.{}.{})",
                c.current_firmware.major,
                c.current_firmware.minor,
                c.current_firmware.build,
                c.committed_firmware.major,
                c.committed_firmware.minor,
                c.committed_firmware.build
            ),
        ),
    ];
    for (k, v) in rows {
        outln!("  {k:<18} {v}");
    }
}
