//! `coffre attest verify`: check attestation evidence offline, as an auditor would.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand, ValueEnum};
use coffre_attestation::nvidia::input::{ReportFile, read_report_file};
use coffre_attestation::nvidia::{GpuClaims, GpuEvidence, GpuVerification, NvidiaVerifier};
use coffre_attestation::snp::{SnpClaims, SnpEvidence, SnpVerifier};
use coffre_attestation::tdx::{PcsCollateral, TdxClaims, TdxCollateral, TdxVerifier};
use coffre_attestation::x509::{Certificate, certificates_from_pem_or_der};
use coffre_attestation::{Check, Platform, UnixTime, Verification};

use crate::error::{CliError, CliResult};

#[derive(Debug, Subcommand)]
pub enum AttestCommand {
    /// Verify attestation evidence against pinned vendor roots, offline
    #[command(after_help = "\
Nothing is fetched: every certificate, CRL and collateral item comes from the files given, and the
vendor roots are built in (AMD ARK/ASK/ASVK for Milan, Genoa and Turin; the Intel SGX Root CA; the
NVIDIA Device Identity CA and RIM root). Certificates supplied with the evidence are only
intermediates to be checked against them, never trusted instead of them.

--kind snp     FILE is the raw 1184-byte report, hex text of it, an Azure HCL report, or Trustee's
               Azure JSON evidence (which also carries the VCEK). --cert takes the VCEK or VLEK;
               a PEM bundle may also hold the ASK and ARK.
--kind tdx     --quote is the DCAP quote (raw or hex; TDX v4/v5 or SGX v3). --collateral is either
               a JSON file in dcap-qvl's layout, or a directory of raw Intel PCS responses named
               tcb_info.json, qe_identity.json, pck_crl.der, root_crl.der,
               tcb_info_issuer_chain.pem, qe_identity_issuer_chain.pem, pck_crl_issuer_chain.pem.
               Without --collateral the quote's signatures and PCK chain are still checked, but
               it is never verified: its TCB status and revocation are unknown.
--kind nvidia  --report is the SPDM GET_MEASUREMENTS request and response (raw or hex) with its
               device chain in --chain, or NVIDIA's JSON evidence list (each entry carries its
               chain; the result then has one entry per GPU under \"devices\"). --nonce is the
               nonce the verifier asked for; without it freshness is not checked. Each --rim
               (driver or VBIOS RIM, XML) is verified and compared with every GPU's measurements.

Exit status: 0 verified, 1 the evidence is invalid (every failed check is listed), 2 usage error.

Examples:
  coffre attest verify --kind snp --report report.bin --cert vcek.der --at 2025-06-01T00:00:00Z
  coffre attest verify --kind tdx --quote quote.dat --collateral collateral.json --at now --json
  coffre attest verify --kind nvidia --report gpu.hex --chain gpu-chain.pem \\
      --nonce 931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb \\
      --rim NV_GPU_DRIVER_GH100_550.90.07.xml --rim NV_GPU_VBIOS_1010_0200_882_96009F0001.xml --at now
  coffre attest verify --kind nvidia --report multi_gpu_evidence.json --at now --json")]
    Verify(VerifyArgs),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum EvidenceKind {
    /// AMD SEV-SNP attestation report
    Snp,
    /// Intel TDX (or SGX) DCAP quote
    Tdx,
    /// NVIDIA Hopper or Blackwell GPU evidence (SPDM)
    Nvidia,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// Kind of evidence
    #[arg(long, value_enum)]
    pub kind: EvidenceKind,

    /// snp, nvidia: the report (see the forms below)
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,

    /// snp: the VCEK or VLEK certificate (PEM or DER)
    #[arg(long, value_name = "VCEK_OR_VLEK")]
    pub cert: Option<PathBuf>,

    /// snp: host-supplied intermediates (ASK or ASVK, and the ARK); nvidia: the GPU's device
    /// chain, leaf first. PEM or DER; repeatable
    #[arg(long, value_name = "PEM")]
    pub chain: Vec<PathBuf>,

    /// snp: an AMD CRL (DER or PEM), checked when given
    #[arg(long, value_name = "FILE")]
    pub crl: Option<PathBuf>,

    /// tdx: the DCAP quote (raw or hex text)
    #[arg(long, value_name = "FILE")]
    pub quote: Option<PathBuf>,

    /// tdx: the collateral: dcap-qvl JSON, or a directory of raw Intel PCS responses (without it
    /// the quote can only be diagnosed, never verified)
    #[arg(long, value_name = "FILE_OR_DIR")]
    pub collateral: Option<PathBuf>,

    /// nvidia: the nonce the GPU evidence must carry (64 hex digits)
    #[arg(long, value_name = "HEX")]
    pub nonce: Option<String>,

    /// nvidia: a driver or VBIOS RIM (XML) to verify and compare with; repeatable
    #[arg(long, value_name = "FILE")]
    pub rim: Vec<PathBuf>,

    /// The time at which certificates and collateral must be valid: RFC 3339
    /// (2025-06-01T00:00:00Z) or `now`
    #[arg(long, value_name = "RFC3339")]
    pub at: String,

    /// Print one JSON object {"verified", "kind", "errors", "claims", "checks", "at"} (nvidia
    /// evidence lists: {"verified", "kind", "errors", "devices": [...], "at"})
    #[arg(long)]
    pub json: bool,

    /// DEVELOPMENT ONLY: also trust the simulated roots in this file (PEM or DER): the simulated
    /// ARK and ASK for snp, the simulated GPU root for nvidia. Claims then say platform "simulated"
    #[arg(long, value_name = "PEM")]
    pub dangerous_accept_simulated_roots: Option<PathBuf>,
}

pub(crate) fn read(path: &Path, what: &str) -> CliResult<Vec<u8>> {
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

fn required<'a>(value: &'a Option<PathBuf>, flag: &str, kind: &str) -> CliResult<&'a PathBuf> {
    value.as_ref().ok_or_else(|| {
        CliError::usage(format!("--kind {kind} needs {flag}"))
            .hint("see `coffre attest verify --help` for each kind's inputs")
    })
}

/// Flags that belong to other kinds are refused rather than silently ignored.
fn refuse(kind: &str, given: &[(&str, bool)]) -> CliResult {
    match given.iter().find(|(_, present)| *present) {
        Some((flag, _)) => Err(CliError::usage(format!("{flag} does not apply to --kind {kind}"))
            .hint("see `coffre attest verify --help` for each kind's inputs")),
        None => Ok(()),
    }
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
    match args.kind {
        EvidenceKind::Snp => verify_snp(args, at),
        EvidenceKind::Tdx => verify_tdx(args, at),
        EvidenceKind::Nvidia => verify_nvidia(args, at),
    }
}

/// The certificates of the `--dangerous-accept-simulated-roots` file, with a warning.
pub(crate) fn simulated_roots(path: &Path) -> CliResult<Vec<Certificate>> {
    let certs = certificates_from_pem_or_der(&read(path, "simulated roots")?)
        .and_then(|ders| ders.iter().map(|d| Certificate::from_der(d)).collect::<Result<Vec<_>, _>>())
        .map_err(|e| usage("simulated roots", path, e))?;
    eprintln!("warning: trusting SIMULATED roots from {}: for development only", path.display());
    Ok(certs)
}

fn verify_snp(args: &VerifyArgs, at: UnixTime) -> CliResult<bool> {
    refuse(
        "snp",
        &[
            ("--quote", args.quote.is_some()),
            ("--collateral", args.collateral.is_some()),
            ("--nonce", args.nonce.is_some()),
            ("--rim", !args.rim.is_empty()),
        ],
    )?;
    let report = required(&args.report, "--report", "snp")?;
    let mut evidence = SnpEvidence::from_report_bytes(&read(report, "report")?)
        .map_err(|e| CliError::usage(format!("{}: {e}", report.display())))?;
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
        let certs = simulated_roots(path)?;
        let amd: Vec<&Certificate> = certs.iter().filter(|c| !c.subject_cn.contains("NVIDIA")).collect();
        let [ark, ask] = amd.as_slice() else {
            return Err(CliError::usage(format!("{} must hold the simulated ARK and ASK", path.display())));
        };
        verifier = verifier
            .dangerous_accept_simulated_roots(&ark.der, &ask.der)
            .map_err(|e| usage("simulated ARK and ASK", path, e))?;
    }
    let result = verifier.verify(&evidence, at);
    let title = match (&result.claims, result.is_verified()) {
        (Some(c), true) => format!(
            "SEV-SNP report VERIFIED: {}, report version {}, signed by the {}{}",
            c.product.map_or("unknown product".to_owned(), |p| p.to_string()),
            c.version,
            c.signing_key,
            simulated_note(c.platform)
        ),
        _ => "SEV-SNP report NOT VERIFIED".to_owned(),
    };
    report_one("snp", &title, &result, at, args.json, snp_rows)
}

pub(crate) fn collateral(path: &Path) -> CliResult<TdxCollateral> {
    if !path.is_dir() {
        return TdxCollateral::from_dcap_json(&read(path, "collateral")?).map_err(|e| {
            CliError::usage(format!("{}: {e}", path.display()))
                .hint("give dcap-qvl's collateral JSON, or a directory of raw Intel PCS responses (see --help)")
        });
    }
    let part = |name: &str| read(&path.join(name), name);
    let (tcb, qe, pck_crl, root_crl, tcb_chain, qe_chain, crl_chain) = (
        part("tcb_info.json")?,
        part("qe_identity.json")?,
        part("pck_crl.der")?,
        part("root_crl.der")?,
        part("tcb_info_issuer_chain.pem")?,
        part("qe_identity_issuer_chain.pem")?,
        part("pck_crl_issuer_chain.pem")?,
    );
    TdxCollateral::from_pcs(&PcsCollateral {
        tcb_info_response: &tcb,
        qe_identity_response: &qe,
        pck_crl: &pck_crl,
        root_crl: &root_crl,
        tcb_info_issuer_chain: &tcb_chain,
        qe_identity_issuer_chain: &qe_chain,
        pck_crl_issuer_chain: &crl_chain,
    })
    .map_err(|e| CliError::usage(format!("{}: {e}", path.display())))
}

fn verify_tdx(args: &VerifyArgs, at: UnixTime) -> CliResult<bool> {
    refuse(
        "tdx",
        &[
            ("--report", args.report.is_some()),
            ("--cert", args.cert.is_some()),
            ("--chain", !args.chain.is_empty()),
            ("--crl", args.crl.is_some()),
            ("--nonce", args.nonce.is_some()),
            ("--rim", !args.rim.is_empty()),
            ("--dangerous-accept-simulated-roots", args.dangerous_accept_simulated_roots.is_some()),
        ],
    )?;
    let quote_path = required(&args.quote, "--quote", "tdx")?;
    let quote = coffre_attestation::tdx::quote::from_bytes(&read(quote_path, "quote")?);
    let result = match &args.collateral {
        Some(path) => TdxVerifier::new().verify(&quote, &collateral(path)?, at),
        None => {
            eprintln!("warning: no --collateral: only the quote's own signatures and PCK chain can be checked");
            TdxVerifier::new().verify_without_collateral(&quote, at)
        }
    };
    let title = match (&result.claims, result.is_verified()) {
        (Some(c), true) => format!(
            "{} quote VERIFIED: quote v{}, TCB {}",
            c.tee.to_uppercase(),
            c.quote_version,
            c.tcb_status.as_deref().unwrap_or("unknown")
        ),
        _ => "DCAP quote NOT VERIFIED".to_owned(),
    };
    report_one("tdx", &title, &result, at, args.json, tdx_rows)
}

fn nonce(text: &str) -> CliResult<[u8; 32]> {
    hex::decode(text.trim().trim_start_matches("0x")).ok().and_then(|b| <[u8; 32]>::try_from(b).ok()).ok_or_else(|| {
        CliError::usage(format!("--nonce {text}: not 32 bytes of hex"))
            .hint("give the 64 hex digits the GPU was asked to sign")
    })
}

fn verify_nvidia(args: &VerifyArgs, at: UnixTime) -> CliResult<bool> {
    refuse(
        "nvidia",
        &[
            ("--cert", args.cert.is_some()),
            ("--crl", args.crl.is_some()),
            ("--quote", args.quote.is_some()),
            ("--collateral", args.collateral.is_some()),
        ],
    )?;
    let report = required(&args.report, "--report", "nvidia")?;
    let file = read_report_file(&read(report, "report")?).map_err(|e| {
        CliError::usage(format!("{}: {e}", report.display()))
            .hint("give the SPDM report as raw bytes or hex text, or NVIDIA's JSON evidence list")
    })?;
    let expected = args.nonce.as_deref().map(nonce).transpose()?;
    if expected.is_none() {
        eprintln!("warning: no --nonce: the evidence is verified, but not that it is fresh");
    }
    let rims: Vec<Vec<u8>> = args.rim.iter().map(|p| read(p, "RIM")).collect::<CliResult<_>>()?;
    let rim_refs: Vec<&[u8]> = rims.iter().map(Vec::as_slice).collect();
    let mut verifier = NvidiaVerifier::new();
    if let Some(path) = &args.dangerous_accept_simulated_roots {
        let certs = simulated_roots(path)?;
        let root = certs
            .iter()
            .find(|c| c.subject_cn.contains("NVIDIA"))
            .ok_or_else(|| CliError::usage(format!("{} holds no simulated NVIDIA device root", path.display())))?;
        verifier =
            verifier.dangerous_accept_simulated_root(&root.der).map_err(|e| usage("simulated GPU root", path, e))?;
    }
    let single = |evidence: &GpuEvidence| verifier.verify(evidence, expected.as_ref(), &rim_refs, at);
    match file {
        ReportFile::Single(bytes) => {
            let [chain] = args.chain.as_slice() else {
                return Err(CliError::usage(
                    "--kind nvidia with a single report needs exactly one --chain (the device chain, leaf first)",
                )
                .hint("a JSON evidence list carries each GPU's chain instead"));
            };
            let evidence =
                GpuEvidence::new(bytes, &read(chain, "chain")?).map_err(|e| usage("device chain", chain, e))?;
            let result = single(&evidence);
            report_one("nvidia", &gpu_title(&result), &result, at, args.json, gpu_rows)
        }
        ReportFile::List(list) => {
            if !args.chain.is_empty() {
                return Err(CliError::usage(
                    "--chain does not apply to a JSON evidence list: each entry carries its chain",
                ));
            }
            let results: Vec<GpuVerification> = list.iter().map(single).collect();
            report_devices(&results, at, args.json)
        }
    }
}

fn simulated_note(platform: Platform) -> &'static str {
    if platform == Platform::Simulated { " (SIMULATED: not hardware)" } else { "" }
}

fn gpu_title(result: &GpuVerification) -> String {
    match (&result.claims, result.is_verified()) {
        (Some(c), true) => format!(
            "NVIDIA {} GPU VERIFIED: driver {}, VBIOS {}{}",
            c.arch.map_or("unknown".to_owned(), |a| format!("{a:?}")),
            c.driver_version.as_deref().unwrap_or("unknown"),
            c.vbios_version.as_deref().unwrap_or("unknown"),
            simulated_note(c.platform)
        ),
        _ => "NVIDIA GPU evidence NOT VERIFIED".to_owned(),
    }
}

#[derive(serde::Serialize)]
struct VerifyJson<'a, C: serde::Serialize> {
    verified: bool,
    kind: &'static str,
    errors: Vec<String>,
    claims: &'a Option<C>,
    checks: &'a [Check],
    at: UnixTime,
}

#[derive(serde::Serialize)]
struct DeviceJson<'a> {
    verified: bool,
    errors: Vec<String>,
    claims: &'a Option<GpuClaims>,
    checks: &'a [Check],
}

#[derive(serde::Serialize)]
struct DevicesJson<'a> {
    verified: bool,
    kind: &'static str,
    errors: Vec<String>,
    devices: Vec<DeviceJson<'a>>,
    at: UnixTime,
}

fn print_json<T: serde::Serialize>(doc: &T) -> CliResult {
    let text = serde_json::to_string_pretty(doc).map_err(|e| CliError::new(format!("JSON output: {e}")))?;
    outln!("{text}");
    Ok(())
}

fn report_one<C: serde::Serialize>(
    kind: &'static str,
    title: &str,
    result: &Verification<C>,
    at: UnixTime,
    json: bool,
    rows: fn(&C) -> Vec<(&'static str, String)>,
) -> CliResult<bool> {
    if json {
        print_json(&VerifyJson {
            verified: result.is_verified(),
            kind,
            errors: result.errors(),
            claims: &result.claims,
            checks: &result.checks,
            at,
        })?;
    } else {
        print_table(title, result, at, rows);
    }
    Ok(result.is_verified())
}

fn report_devices(results: &[GpuVerification], at: UnixTime, json: bool) -> CliResult<bool> {
    let verified = results.iter().all(GpuVerification::is_verified);
    if json {
        print_json(&DevicesJson {
            verified,
            kind: "nvidia",
            errors: results
                .iter()
                .enumerate()
                .flat_map(|(i, r)| r.errors().into_iter().map(move |e| format!("gpu[{i}]: {e}")))
                .collect(),
            devices: results
                .iter()
                .map(|r| DeviceJson {
                    verified: r.is_verified(),
                    errors: r.errors(),
                    claims: &r.claims,
                    checks: &r.checks,
                })
                .collect(),
            at,
        })?;
    } else {
        let ok = results.iter().filter(|r| r.is_verified()).count();
        outln!(
            "{} of {} GPUs VERIFIED{}",
            ok,
            results.len(),
            if verified { "" } else { ": the evidence list is NOT VERIFIED" }
        );
        for (i, r) in results.iter().enumerate() {
            outln!("\n── gpu[{i}] ──");
            print_table(&gpu_title(r), r, at, gpu_rows);
        }
    }
    Ok(verified)
}

fn print_table<C>(title: &str, result: &Verification<C>, at: UnixTime, rows: fn(&C) -> Vec<(&'static str, String)>) {
    let failed = result.checks.iter().filter(|c| !c.passed).count();
    if result.is_verified() {
        outln!("{title}");
    } else {
        outln!("{title}: {failed} check(s) failed");
    }
    outln!("\nchecks at {at}:");
    let width = result.checks.iter().map(|c| c.name.len()).max().unwrap_or(10);
    for c in &result.checks {
        outln!("  {} {:<width$}  {}", if c.passed { "✓" } else { "✗" }, c.name, c.detail);
    }
    let Some(c) = &result.claims else { return };
    outln!("\nclaims{}:", if result.is_verified() { "" } else { " (NOT verified: shown for diagnosis)" });
    for (k, v) in rows(c) {
        outln!("  {k:<20} {v}");
    }
}

fn snp_rows(c: &SnpClaims) -> Vec<(&'static str, String)> {
    let hex = |b: &[u8]| hex::encode(b);
    vec![
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
                "{:#x} (smt {}, tsme {}, ecc {}, rapl_disabled {}, ciphertext_hiding {}, alias_check {}, tio {}{})",
                c.platform_info.raw,
                c.platform_info.smt_enabled,
                c.platform_info.tsme_enabled,
                c.platform_info.ecc_enabled,
                c.platform_info.rapl_disabled,
                c.platform_info.ciphertext_hiding_enabled,
                c.platform_info.alias_check_complete,
                c.platform_info.tio_enabled,
                if c.platform_info.unknown_bits == 0 {
                    String::new()
                } else {
                    format!(", bits not named by this version {:#x}", c.platform_info.unknown_bits)
                }
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
    ]
}

fn tdx_rows(c: &TdxClaims) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let mut rows = vec![
        ("tee", c.tee.to_owned()),
        ("quote_version", c.quote_version.to_string()),
        ("body", format!("{:?}", c.body)),
        ("tcb_status", opt(c.tcb_status.clone())),
        ("advisory_ids", if c.advisory_ids.is_empty() { "-".into() } else { c.advisory_ids.join(", ") }),
        ("fmspc", opt(c.fmspc.clone())),
        ("pce_svn", opt(c.pce_svn.map(|s| s.to_string()))),
        ("tcb_date", opt(c.tcb_date.clone())),
        ("collateral_expires", opt(c.collateral_expires.map(|t| t.to_string()))),
    ];
    if let Some(td) = &c.td {
        let a = &td.td_attributes;
        rows.extend([
            ("mr_td", hex::encode(td.mr_td)),
            ("mr_config_id", hex::encode(td.mr_config_id)),
            ("mr_owner", hex::encode(td.mr_owner)),
            ("mr_owner_config", hex::encode(td.mr_owner_config)),
            ("rtmr0", hex::encode(td.rtmr0)),
            ("rtmr1", hex::encode(td.rtmr1)),
            ("rtmr2", hex::encode(td.rtmr2)),
            ("rtmr3", hex::encode(td.rtmr3)),
            ("report_data", hex::encode(td.report_data)),
            (
                "td_attributes",
                format!(
                    "{:#018x} (debug {}, sept_ve_disable {}, migratable {}, pks {}, kl {}, perfmon {})",
                    a.raw, a.debug, a.sept_ve_disable, a.migratable, a.pks, a.kl, a.perfmon
                ),
            ),
            ("xfam", hex::encode(td.xfam)),
            ("tee_tcb_svn", hex::encode(td.tee_tcb_svn)),
            ("mr_seam", hex::encode(td.mr_seam)),
        ]);
    }
    if let Some(e) = &c.enclave {
        rows.extend([
            ("mr_enclave", hex::encode(e.mr_enclave)),
            ("mr_signer", hex::encode(e.mr_signer)),
            ("isv_prod_id", e.isv_prod_id.to_string()),
            ("isv_svn", e.isv_svn.to_string()),
            ("debug", e.debug.to_string()),
            ("report_data", hex::encode(e.report_data)),
        ]);
    }
    rows
}

fn gpu_rows(c: &GpuClaims) -> Vec<(&'static str, String)> {
    let opt = |v: Option<String>| v.unwrap_or_else(|| "-".into());
    let rims: Vec<String> = c
        .rims
        .iter()
        .map(|r| match (&r.version, r.covers) {
            (Some(v), Some(k)) => format!("#{} {k} {v}", r.position),
            (Some(v), None) => format!("#{} {v} (not this GPU's)", r.position),
            _ => format!("#{} not verified", r.position),
        })
        .collect();
    vec![
        ("platform", format!("{:?}", c.platform).to_lowercase()),
        ("arch", opt(c.arch.map(|a| format!("{a:?}").to_lowercase()))),
        ("nonce", c.nonce.clone()),
        ("driver_version", opt(c.driver_version.clone())),
        ("vbios_version", opt(c.vbios_version.clone())),
        ("fwid", opt(c.fwid.clone())),
        ("device_serial", opt(c.device_serial.clone())),
        ("cc_mode", "not carried by SPDM evidence".into()),
        ("nvdec0_status", opt(c.nvdec0_status.map(|s| format!("{s:?}").to_lowercase()))),
        ("protected_pcie", opt(c.protected_pcie_status.map(|s| format!("{s:?}").to_lowercase()))),
        ("feature_flag", opt(c.feature_flag.clone())),
        ("measurements", format!("{} blocks", c.measurements.len())),
        ("rims", if rims.is_empty() { "none given".into() } else { rims.join("; ") }),
        ("driver_rim_matched", c.driver_rim_matched.to_string()),
        ("vbios_rim_matched", c.vbios_rim_matched.to_string()),
        (
            "mismatched_indices",
            if c.mismatched_indices.is_empty() {
                "-".into()
            } else {
                c.mismatched_indices.iter().map(u32::to_string).collect::<Vec<_>>().join(", ")
            },
        ),
    ]
}
