//! Recorded evidence for dry-runs: an evidence manifest (`coffre-evidence/v1`) naming the files
//! of one appraisal, or a self-contained evidence file; verified offline at its recorded time.

use std::path::{Path, PathBuf};

use coffre_attestation::composite::{
    CompositeEvidence, CompositeVerifier, CpuClaims, CpuEvidence, GpuInput, VerifiedComposite,
};
use coffre_attestation::nvidia::input::{ReportFile, read_report_file};
use coffre_attestation::nvidia::{GpuEvidence, NvidiaVerifier, VerifiedGpu};
use coffre_attestation::snp::SnpEvidence;
use coffre_attestation::x509::Certificate;
use coffre_attestation::{Check, UnixTime};
use coffre_policies::Appraisal;
use serde::Deserialize;

use crate::attest::{collateral, read, simulated_roots};
use crate::error::{CliError, CliResult};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Manifest {
    format: String,
    #[serde(default)]
    at: Option<toml::value::Datetime>,
    #[serde(default)]
    cpu: Option<CpuPart>,
    #[serde(default)]
    gpus: Vec<GpuPart>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct CpuPart {
    kind: String,
    #[serde(default)]
    report: Option<PathBuf>,
    #[serde(default)]
    cert: Option<PathBuf>,
    #[serde(default)]
    chain: Vec<PathBuf>,
    #[serde(default)]
    crl: Option<PathBuf>,
    #[serde(default)]
    quote: Option<PathBuf>,
    #[serde(default)]
    collateral: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuPart {
    report: PathBuf,
    #[serde(default)]
    chain: Option<PathBuf>,
    #[serde(default)]
    rims: Vec<PathBuf>,
    #[serde(default)]
    nonce: Option<String>,
}

/// One piece of recorded evidence, loaded.
pub struct Loaded {
    /// The recorded time, when the manifest states one.
    pub at: Option<UnixTime>,
    cpu: Option<CpuEvidence>,
    gpus: Vec<(GpuInput, Option<[u8; 32]>)>,
}

/// The simulated roots a development dry-run may trust.
pub struct SimulatedRoots {
    ark: Vec<u8>,
    ask: Vec<u8>,
    gpu: Option<Vec<u8>>,
}

impl SimulatedRoots {
    /// A CPU+GPU verifier that also trusts these simulated roots.
    pub fn composite_verifier(&self) -> CliResult<CompositeVerifier> {
        let gpu = self.gpu.as_deref().ok_or_else(|| {
            CliError::usage(
                "the simulated roots file holds no simulated GPU root (the CPU+GPU verifier needs all three)",
            )
        })?;
        CompositeVerifier::new().dangerous_accept_simulated_roots(&self.ark, &self.ask, gpu).map_err(CliError::usage)
    }

    pub fn load(path: &Path) -> CliResult<Self> {
        let certs: Vec<Certificate> = simulated_roots(path)?;
        let amd: Vec<&Certificate> = certs.iter().filter(|c| !c.subject_cn.contains("NVIDIA")).collect();
        let [ark, ask] = amd.as_slice() else {
            return Err(CliError::usage(format!("{} must hold the simulated ARK and ASK", path.display())));
        };
        let gpu = certs.iter().find(|c| c.subject_cn.contains("NVIDIA")).map(|c| c.der.clone());
        Ok(Self { ark: ark.der.clone(), ask: ask.der.clone(), gpu })
    }
}

fn bad(path: &Path, e: impl std::fmt::Display) -> CliError {
    CliError::usage(format!("{}: {e}", path.display()))
        .hint("see `coffre policy dry-run --help` for the evidence manifest and the files accepted")
}

fn nonce(path: &Path, text: &str) -> CliResult<[u8; 32]> {
    hex::decode(text.trim())
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| bad(path, format!("nonce {text:?} is not 32 bytes of hex")))
}

fn gpu_inputs(path: &Path, report: &[u8], chain: Option<&[u8]>, rims: Vec<Vec<u8>>) -> CliResult<Vec<GpuInput>> {
    let file = read_report_file(report).map_err(|e| bad(path, e))?;
    let evidence: Vec<GpuEvidence> = match (file, chain) {
        (ReportFile::Single(r), Some(chain)) => vec![GpuEvidence::new(r, chain).map_err(|e| bad(path, e))?],
        (ReportFile::Single(_), None) => {
            return Err(bad(path, "a single GPU report needs its device chain (chain = …)"));
        }
        (ReportFile::List(list), _) => list,
    };
    Ok(evidence.into_iter().map(|e| GpuInput { evidence: e, rims: rims.clone() }).collect())
}

/// Loads a manifest or a self-contained evidence file.
pub fn load(path: &Path) -> CliResult<Loaded> {
    let bytes = read(path, "evidence")?;
    let text = std::str::from_utf8(&bytes).ok();
    if let Some(manifest) = text.and_then(|t| toml::from_str::<toml::Table>(t).ok())
        && manifest.get("format").and_then(|f| f.as_str()) == Some("coffre-evidence/v1")
    {
        return load_manifest(path, text.unwrap_or_default());
    }
    // Self-contained: NVIDIA's JSON evidence list, or an SNP report carrying its VCEK (Trustee's
    // Azure JSON). The GPU list is tried first: the SNP reader also takes JSON and would claim it.
    if let Ok(ReportFile::List(list)) = read_report_file(&bytes) {
        let gpus = list.into_iter().map(|e| (GpuInput { evidence: e, rims: Vec::new() }, None)).collect();
        return Ok(Loaded { at: None, cpu: None, gpus });
    }
    if let Ok(ev) = SnpEvidence::from_report_bytes(&bytes) {
        if ev.vek.is_some() {
            return Ok(Loaded { at: None, cpu: Some(CpuEvidence::Snp(ev)), gpus: Vec::new() });
        }
        return Err(bad(path, "an SNP report without its VCEK or VLEK: write an evidence manifest naming both"));
    }
    Err(bad(path, "not an evidence manifest (format = \"coffre-evidence/v1\") nor a self-contained evidence file"))
}

fn load_manifest(path: &Path, text: &str) -> CliResult<Loaded> {
    let m: Manifest = toml::from_str(text)
        .map_err(|e| crate::policy::load_error(path, &coffre_policies::LoadError::from_toml(text, &e)))?;
    if m.format != "coffre-evidence/v1" {
        return Err(bad(path, format!("unknown format {:?}", m.format)));
    }
    let base = path.parent().unwrap_or(Path::new("."));
    let file = |p: &Path, what: &str| read(&base.join(p), what);
    let at =
        m.at.map(|dt| UnixTime::parse_rfc3339(&dt.to_string()).map_err(|e| bad(path, format!("at: {e}"))))
            .transpose()?;
    let cpu = match &m.cpu {
        None => None,
        Some(c) if c.kind == "snp" => {
            let report = c.report.as_deref().ok_or_else(|| bad(path, "[cpu] kind snp needs report = …"))?;
            let mut ev = SnpEvidence::from_report_bytes(&file(report, "report")?).map_err(|e| bad(path, e))?;
            if let Some(cert) = &c.cert {
                ev = ev.with_vek(&file(cert, "certificate")?).map_err(|e| bad(path, e))?;
            }
            for chain in &c.chain {
                ev = ev.with_chain(&file(chain, "chain")?).map_err(|e| bad(path, e))?;
            }
            if let Some(crl) = &c.crl {
                ev = ev.with_crl(&file(crl, "CRL")?).map_err(|e| bad(path, e))?;
            }
            Some(CpuEvidence::Snp(ev))
        }
        Some(c) if c.kind == "tdx" => {
            let quote = c.quote.as_deref().ok_or_else(|| bad(path, "[cpu] kind tdx needs quote = …"))?;
            let coll = c.collateral.as_deref().ok_or_else(|| {
                bad(path, "[cpu] kind tdx needs collateral = … (a quote without collateral can never be allowed)")
            })?;
            Some(CpuEvidence::Tdx {
                quote: coffre_attestation::tdx::quote::from_bytes(&file(quote, "quote")?),
                collateral: collateral(&base.join(coll))?,
            })
        }
        Some(c) => return Err(bad(path, format!("[cpu] kind {:?}: snp or tdx", c.kind))),
    };
    let mut gpus = Vec::new();
    for g in &m.gpus {
        let report = file(&g.report, "GPU report")?;
        let chain = g.chain.as_deref().map(|c| file(c, "GPU chain")).transpose()?;
        let rims = g.rims.iter().map(|r| file(r, "RIM")).collect::<CliResult<Vec<_>>>()?;
        let n = g.nonce.as_deref().map(|t| nonce(path, t)).transpose()?;
        if n.is_some() && cpu.is_some() {
            return Err(bad(path, "a GPU nonce is derived from the CPU report; remove nonce = … when [cpu] is given"));
        }
        for input in gpu_inputs(path, &report, chain.as_deref(), rims)? {
            gpus.push((input, n));
        }
    }
    if cpu.is_none() && gpus.is_empty() {
        return Err(bad(path, "the manifest names no evidence: add [cpu] and/or [[gpus]]"));
    }
    Ok(Loaded { at, cpu, gpus })
}

/// Verified evidence in the form a policy evaluates.
pub enum VerifiedEvidence {
    Composite(Box<VerifiedComposite>),
    Gpus(Vec<VerifiedGpu>),
}

impl VerifiedEvidence {
    pub fn appraisal(&self) -> Appraisal<'_> {
        match self {
            VerifiedEvidence::Composite(v) => Appraisal::from(v.as_ref()),
            VerifiedEvidence::Gpus(g) => Appraisal::gpus_only(g),
        }
    }

    pub fn summary(&self, at: UnixTime) -> String {
        match self {
            VerifiedEvidence::Composite(v) => {
                let cpu = match v.cpu() {
                    CpuClaims::Snp(c) => format!(
                        "{}snp {}",
                        if v.is_simulated() { "SIMULATED " } else { "" },
                        c.product.map_or("unknown product".to_owned(), |p| p.to_string())
                    ),
                    CpuClaims::Tdx(c) => format!("{} {}", c.tee, c.tcb_status.as_deref().unwrap_or("")),
                    CpuClaims::Sample(_) => "SIMULATED sample TEE (KBS)".to_owned(),
                };
                format!("{cpu} + {} GPU(s), verified at {at}", v.gpus().len())
            }
            VerifiedEvidence::Gpus(g) => format!("{} GPU(s) without CPU evidence, verified at {at}", g.len()),
        }
    }
}

pub enum Verified {
    Ok(VerifiedEvidence),
    /// Every failed verification check, as (name, detail).
    Failed(Vec<(String, String)>),
}

fn failures(prefix: &str, checks: &[Check]) -> impl Iterator<Item = (String, String)> {
    let prefix = prefix.to_owned();
    checks.iter().filter(|c| !c.passed).map(move |c| (format!("{prefix}{}", c.name), c.detail.clone()))
}

/// Verifies loaded evidence at `at` against the pinned roots (and simulated ones when given).
pub fn verify(loaded: &Loaded, at: UnixTime, roots: Option<&SimulatedRoots>) -> CliResult<Verified> {
    let Some(cpu) = &loaded.cpu else {
        let mut verifier = NvidiaVerifier::new();
        if let Some(gpu_root) = roots.and_then(|r| r.gpu.as_ref()) {
            verifier = verifier.dangerous_accept_simulated_root(gpu_root).map_err(CliError::usage)?;
        }
        let mut ok = Vec::new();
        let mut failed = Vec::new();
        for (i, (g, nonce)) in loaded.gpus.iter().enumerate() {
            let rims: Vec<&[u8]> = g.rims.iter().map(Vec::as_slice).collect();
            match verifier.verify(&g.evidence, nonce.as_ref(), &rims, at).into_verified() {
                Ok(v) => ok.push(v),
                Err(v) => failed.extend(failures(&format!("gpu[{i}]."), &v.checks)),
            }
        }
        return Ok(if failed.is_empty() { Verified::Ok(VerifiedEvidence::Gpus(ok)) } else { Verified::Failed(failed) });
    };
    let verifier = match roots {
        Some(r) => r.composite_verifier()?,
        None => CompositeVerifier::new(),
    };
    let evidence = CompositeEvidence { cpu: cpu.clone(), gpus: loaded.gpus.iter().map(|(g, _)| g.clone()).collect() };
    Ok(verify_composite(&verifier, &evidence, None, at))
}

/// Verifies composite evidence; on failure, every failed check as (`cpu.…`/`gpu[i].…` name,
/// detail).
pub fn verify_composite(
    verifier: &CompositeVerifier,
    evidence: &CompositeEvidence,
    expected_report_data: Option<&[u8; 64]>,
    at: UnixTime,
) -> Verified {
    match verifier.verify(evidence, expected_report_data, at).into_verified() {
        Ok(v) => Verified::Ok(VerifiedEvidence::Composite(Box::new(v))),
        Err(v) => {
            let mut out: Vec<(String, String)> = failures("", &v.checks).collect();
            let cpu_checks = v.cpu.checks();
            out.extend(failures("cpu.", cpu_checks));
            for (i, g) in v.gpus.iter().enumerate() {
                out.extend(failures(&format!("gpu[{i}]."), &g.checks));
            }
            if out.is_empty() {
                out.push(("verification".into(), "the evidence did not parse far enough to be checked".into()));
            }
            Verified::Failed(out)
        }
    }
}
