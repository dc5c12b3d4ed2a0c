//! Composite appraisal: one confidential VM (SEV-SNP or TDX) and the 0–8 GPUs assigned to it, in
//! one call, with one result.
//!
//! # Binding the GPUs to the CPU evidence
//!
//! The worker first obtains its CPU report with the 64-byte REPORT_DATA the key-release protocol
//! asks for, then requests every GPU's evidence with the nonce
//!
//! ```text
//! gpu_nonce = SHA-256("coffre/gpu-nonce/v1" ‖ REPORT_DATA)
//! ```
//!
//! The verifier derives the same nonce from the REPORT_DATA the CPU signed and requires it in
//! every GPU's signed request. A GPU report taken in another session carries another session's
//! nonce and fails; so does one whose CPU report did not verify. All GPUs of one VM share the
//! nonce (as NVIDIA's tools do); the same device may not appear twice.
//!
//! Composite checks (besides every CPU and GPU check, reported under `cpu` and `gpus[i]`):
//!
//! | check | passes when |
//! |---|---|
//! | `gpu_count` | at most 8 GPUs |
//! | `report_data` | (when expected) the CPU report's REPORT_DATA is the expected one |
//! | `gpu_nonce` | the CPU report parsed, so the GPU nonce could be derived from it |
//! | `distinct_gpus` | no device certificate appears twice |
//! | `simulated` | (when any evidence is simulated) recorded so that no decision can miss it |

use std::collections::HashMap;

use aws_lc_rs::digest;
use rayon::prelude::*;
use serde::Serialize;

use crate::check::Check;
use crate::memo::Memo;
use crate::nvidia::{GpuClaims, GpuEvidence, GpuVerification, NvidiaVerifier};
use crate::snp::{SnpClaims, SnpEvidence, SnpVerification, SnpVerifier};
use crate::tdx::{TdxClaims, TdxCollateral, TdxVerification, TdxVerifier};
use crate::time::UnixTime;
use crate::{Platform, memo};

/// The most GPUs one appraisal takes (an HGX machine has 8).
pub const MAX_GPUS: usize = 8;
const NONCE_LABEL: &[u8] = b"coffre/gpu-nonce/v1";

/// The nonce every GPU must sign for a CPU report with this REPORT_DATA.
pub fn gpu_nonce(report_data: &[u8; 64]) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(NONCE_LABEL);
    ctx.update(report_data);
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

const REPORT_DATA_LABEL: &[u8] = b"coffre/report-data/v1";

/// The REPORT_DATA of a key-release request: exactly 64 bytes binding the vault's single-use
/// nonce, the worker's ephemeral public key (the keys are wrapped to it) and the job manifest:
///
/// ```text
/// REPORT_DATA = SHA-512("coffre/report-data/v1" ‖ nonce ‖ SHA-256(ephemeral key) ‖ SHA-256(job manifest))
/// ```
///
/// Every part has a fixed length, so the concatenation is unambiguous; nothing is padded or
/// truncated. The vault requires it when it verifies, and an auditor recomputes it from the
/// evidence bundle.
pub fn release_report_data(nonce: &[u8; 32], ephemeral_key: &[u8], job_manifest: &[u8]) -> [u8; 64] {
    let mut ctx = digest::Context::new(&digest::SHA512);
    ctx.update(REPORT_DATA_LABEL);
    ctx.update(nonce);
    ctx.update(digest::digest(&digest::SHA256, ephemeral_key).as_ref());
    ctx.update(digest::digest(&digest::SHA256, job_manifest).as_ref());
    let mut out = [0u8; 64];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A GPU's device identity: the SHA-256 of the key of its per-device certificate. In NVIDIA's
/// chains that is the issuer of the attestation leaf (the "GSP BROM" certificate, whose key the
/// chip's fuses determine); where the leaf's issuer is already a self-signed root (the simulator's
/// two-certificate chains), the leaf's own key. Two reports from one device share it whatever
/// their leaf certificates' bytes are; a chain that does not parse has none (and fails its own
/// checks).
fn device_identity(chain: &[Vec<u8>]) -> Option<[u8; 32]> {
    let parse = |der: &Vec<u8>| crate::x509::Certificate::from_der(der).ok();
    let leaf = parse(chain.first()?)?;
    let cert = match chain.get(1).and_then(parse) {
        Some(issuer) if issuer.subject_raw != issuer.issuer_raw => issuer,
        _ => leaf,
    };
    let key = match &cert.public_key {
        crate::x509::PublicKey::P384(p) | crate::x509::PublicKey::P256(p) => p.as_slice(),
        crate::x509::PublicKey::Rsa { pkcs1 } => pkcs1.as_slice(),
        crate::x509::PublicKey::Unsupported(_) => return None,
    };
    Some(memo::key([key]))
}

/// The confidential VM's evidence.
#[derive(Debug, Clone)]
pub enum CpuEvidence {
    /// AMD SEV-SNP.
    Snp(SnpEvidence),
    /// Intel TDX: the quote and its collateral.
    Tdx {
        /// The DCAP quote.
        quote: Vec<u8>,
        /// TCB Info, QE Identity, CRLs and issuer chains.
        collateral: TdxCollateral,
    },
    /// The KBS protocol's sample TEE (no hardware): its evidence JSON and the sample device's.
    Sample {
        /// `{"svn", "report_data"}`.
        evidence: Vec<u8>,
        /// The sample device's evidence, when the guest sent one.
        device: Option<Vec<u8>>,
    },
}

/// What a verification requires the evidence to bind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// Coffre's release binding: this REPORT_DATA; the GPUs' nonce derives from it.
    Coffre([u8; 64]),
    /// The KBS protocol's binding (see [`crate::kbs`]).
    Kbs(crate::kbs::KbsExpected),
}

/// One GPU: its evidence and the RIMs (XML) to compare its measurements with.
#[derive(Debug, Clone)]
pub struct GpuInput {
    /// The GPU's evidence.
    pub evidence: GpuEvidence,
    /// Driver and VBIOS RIMs for it (may be empty; a policy decides whether that is enough).
    pub rims: Vec<Vec<u8>>,
}

/// Everything one appraisal looks at.
#[derive(Debug, Clone)]
pub struct CompositeEvidence {
    /// The CPU evidence.
    pub cpu: CpuEvidence,
    /// 0 to 8 GPUs.
    pub gpus: Vec<GpuInput>,
}

/// The CPU part of the result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CpuVerification {
    /// SEV-SNP.
    Snp(Box<SnpVerification>),
    /// TDX.
    Tdx(Box<TdxVerification>),
    /// The sample TEE.
    Sample(Box<crate::kbs::SampleVerification>),
}

impl CpuVerification {
    fn is_verified(&self) -> bool {
        match self {
            CpuVerification::Snp(v) => v.is_verified(),
            CpuVerification::Tdx(v) => v.is_verified(),
            CpuVerification::Sample(v) => v.is_verified(),
        }
    }

    fn errors(&self) -> Vec<String> {
        match self {
            CpuVerification::Snp(v) => v.errors(),
            CpuVerification::Tdx(v) => v.errors(),
            CpuVerification::Sample(v) => v.errors(),
        }
    }

    /// Every check of the CPU part.
    pub fn checks(&self) -> &[Check] {
        match self {
            CpuVerification::Snp(v) => &v.checks,
            CpuVerification::Tdx(v) => &v.checks,
            CpuVerification::Sample(v) => &v.checks,
        }
    }

    /// The REPORT_DATA of the CPU's claims, when it verified far enough to have them.
    fn report_data(&self) -> Option<[u8; 64]> {
        match self {
            CpuVerification::Snp(v) => v.claims.as_ref().map(|c| c.report_data),
            CpuVerification::Tdx(v) => v.claims.as_ref().and_then(TdxClaims::report_data),
            CpuVerification::Sample(v) => v.claims.as_ref().and_then(crate::kbs::SampleClaims::report_data_64),
        }
    }

    fn has_claims(&self) -> bool {
        match self {
            CpuVerification::Snp(v) => v.claims.is_some(),
            CpuVerification::Tdx(v) => v.claims.is_some(),
            CpuVerification::Sample(v) => v.claims.is_some(),
        }
    }

    fn take_claims(&mut self) -> Option<CpuClaims> {
        match self {
            CpuVerification::Snp(v) => v.claims.take().map(|c| CpuClaims::Snp(Box::new(c))),
            CpuVerification::Tdx(v) => v.claims.take().map(|c| CpuClaims::Tdx(Box::new(c))),
            CpuVerification::Sample(v) => v.claims.take().map(|c| CpuClaims::Sample(Box::new(c))),
        }
    }
}

/// Verified CPU claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "lowercase")]
pub enum CpuClaims {
    /// SEV-SNP.
    Snp(Box<SnpClaims>),
    /// TDX.
    Tdx(Box<TdxClaims>),
    /// The KBS protocol's sample TEE (always simulated).
    Sample(Box<crate::kbs::SampleClaims>),
}

impl CpuClaims {
    /// The REPORT_DATA the CPU signed.
    pub fn report_data(&self) -> Option<[u8; 64]> {
        match self {
            CpuClaims::Snp(c) => Some(c.report_data),
            CpuClaims::Tdx(c) => c.report_data(),
            CpuClaims::Sample(c) => c.report_data_64(),
        }
    }

    /// Where the CPU evidence came from.
    pub fn platform(&self) -> Platform {
        match self {
            CpuClaims::Snp(c) => c.platform,
            CpuClaims::Tdx(_) => Platform::Tdx,
            CpuClaims::Sample(c) => c.platform,
        }
    }
}

/// The result of one appraisal.
#[must_use = "an appraisal says nothing until its outcome is checked"]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CompositeVerification {
    /// Checks of the whole (count, binding, distinct devices).
    pub checks: Vec<Check>,
    /// The CPU's verification.
    pub cpu: CpuVerification,
    /// The nonce the GPUs had to sign (hex), when it could be derived.
    pub gpu_nonce: Option<String>,
    /// Each GPU's verification, in the order given.
    pub gpus: Vec<GpuVerification>,
}

impl CompositeVerification {
    /// True when the CPU, every GPU and every composite check verified.
    pub fn is_verified(&self) -> bool {
        !self.checks.is_empty()
            && self.checks.iter().all(|c| c.passed)
            && self.cpu.is_verified()
            && self.gpus.iter().all(GpuVerification::is_verified)
    }

    /// Every failure, prefixed with where it happened (`cpu`, `gpu[2]`, `composite`).
    pub fn errors(&self) -> Vec<String> {
        let mut out: Vec<String> =
            self.checks.iter().filter(|c| !c.passed).map(|c| format!("composite: {}: {}", c.name, c.detail)).collect();
        out.extend(self.cpu.errors().into_iter().map(|e| format!("cpu: {e}")));
        for (i, gpu) in self.gpus.iter().enumerate() {
            out.extend(gpu.errors().into_iter().map(|e| format!("gpu[{i}]: {e}")));
        }
        out
    }

    /// The proof token, or this result back when anything failed.
    pub fn into_verified(mut self) -> Result<VerifiedComposite, Box<Self>> {
        if !self.is_verified() {
            return Err(Box::new(self));
        }
        // Moved, not copied (a GPU's claims hold dozens of measurements). Taken only once
        // every part is known to carry them, so a refusal returns the result whole.
        if !self.cpu.has_claims() || self.gpus.iter().any(|g| g.claims.is_none()) {
            return Err(Box::new(self));
        }
        let cpu = self.cpu.take_claims();
        let gpus: Option<Vec<GpuClaims>> = self.gpus.iter_mut().map(|g| g.claims.take()).collect();
        match (cpu, gpus) {
            (Some(cpu), Some(gpus)) => Ok(VerifiedComposite { cpu, gpus }),
            _ => Err(Box::new(self)),
        }
    }
}

/// Claims of an appraisal in which every check passed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VerifiedComposite {
    cpu: CpuClaims,
    gpus: Vec<GpuClaims>,
}

impl VerifiedComposite {
    /// The CPU's claims.
    pub fn cpu(&self) -> &CpuClaims {
        &self.cpu
    }

    /// Each GPU's claims.
    pub fn gpus(&self) -> &[GpuClaims] {
        &self.gpus
    }

    /// Whether any part of the evidence came from the simulator.
    pub fn is_simulated(&self) -> bool {
        self.cpu.platform() == Platform::Simulated || self.gpus.iter().any(|g| g.platform == Platform::Simulated)
    }
}

/// Verifies CPU and GPU evidence together, against the pinned vendor roots.
#[derive(Debug, Default)]
pub struct CompositeVerifier {
    snp: SnpVerifier,
    tdx: TdxVerifier,
    nvidia: NvidiaVerifier,
    /// Whether the KBS sample TEE is taken (development vaults built with the feature).
    sample: bool,
    /// Device identities by the exact chain bytes (two certificate parses per GPU otherwise).
    identities: Memo<Option<[u8; 32]>>,
}

impl CompositeVerifier {
    /// A verifier trusting AMD's, Intel's and NVIDIA's pinned roots and nothing else.
    pub fn new() -> Self {
        Self::default()
    }

    /// **Development only.** Also trusts the simulated CPU roots (ARK, ASK) and the simulated GPU
    /// root: one option for the whole machine, so CPU and GPU simulators are accepted together
    /// or not at all. Everything that chains to them says `platform: simulated`.
    pub fn dangerous_accept_simulated_roots(
        self,
        ark_der: &[u8],
        ask_der: &[u8],
        gpu_root_der: &[u8],
    ) -> Result<Self, String> {
        Ok(Self {
            snp: self.snp.dangerous_accept_simulated_roots(ark_der, ask_der)?,
            tdx: self.tdx,
            nvidia: self.nvidia.dangerous_accept_simulated_root(gpu_root_der)?,
            sample: self.sample,
            identities: self.identities,
        })
    }

    /// **Development only.** Also trusts a simulated NVIDIA RIM root, so that simulated GPUs'
    /// RIMs can be matched (see [`NvidiaVerifier::dangerous_accept_simulated_rim_root`]).
    pub fn dangerous_accept_simulated_rim_root(self, rim_root_der: &[u8]) -> Result<Self, String> {
        Ok(Self { nvidia: self.nvidia.dangerous_accept_simulated_rim_root(rim_root_der)?, ..self })
    }

    /// **Development only.** Also takes the KBS protocol's sample TEE, whose evidence is an
    /// unsigned claim of report data: its claims say `platform: simulated`.
    pub fn dangerous_accept_sample(self) -> Self {
        Self { sample: true, ..self }
    }

    /// Whether this verifier takes the sample TEE.
    pub fn accepts_sample(&self) -> bool {
        self.sample
    }

    /// Appraises `evidence` at `now`. `expected_report_data`, when given, is the REPORT_DATA the
    /// CPU report must carry (the key-release protocol's binding).
    pub fn verify(
        &self,
        evidence: &CompositeEvidence,
        expected_report_data: Option<&[u8; 64]>,
        now: UnixTime,
    ) -> CompositeVerification {
        self.verify_bound(evidence, expected_report_data.map(|r| Expected::Coffre(*r)), now)
    }

    /// Appraises `evidence` at `now` under one binding, named explicitly: Coffre's (the GPUs'
    /// nonce derived from the REPORT_DATA) or the KBS protocol's (the GPUs' nonce from the
    /// runtime data). Nothing is guessed, padded or cut.
    pub fn verify_bound(
        &self,
        evidence: &CompositeEvidence,
        expected: Option<Expected>,
        now: UnixTime,
    ) -> CompositeVerification {
        let mut checks = Vec::new();
        let kbs = match expected {
            Some(Expected::Kbs(k)) => Some(k),
            _ => None,
        };
        let cpu = match &evidence.cpu {
            CpuEvidence::Snp(e) => CpuVerification::Snp(Box::new(self.snp.verify(e, now))),
            CpuEvidence::Tdx { quote, collateral } => {
                CpuVerification::Tdx(Box::new(self.tdx.verify(quote, collateral, now)))
            }
            CpuEvidence::Sample { evidence, device } => CpuVerification::Sample(Box::new(crate::kbs::verify_sample(
                evidence,
                device.as_deref(),
                self.sample,
                kbs.as_ref().map(|k| &k.device_hash),
            ))),
        };
        if matches!(evidence.cpu, CpuEvidence::Sample { .. }) && kbs.is_none() {
            checks
                .push(Check::fail("binding", "the sample TEE is a KBS client's, verified under the KBS binding only"));
        }
        let expected_report_data = match &expected {
            Some(Expected::Coffre(r)) => Some(r),
            Some(Expected::Kbs(k)) => Some(&k.report_data),
            None => None,
        };
        let report_data = cpu.report_data();
        if let Some(expected) = expected_report_data {
            checks.push(match &report_data {
                Some(actual) if actual == expected => Check::pass("report_data", "REPORT_DATA is the expected one"),
                Some(actual) => Check::fail(
                    "report_data",
                    format!("REPORT_DATA is {}, not the expected {}", hex::encode(actual), hex::encode(expected)),
                ),
                None => Check::fail("report_data", "the CPU evidence did not parse"),
            });
        }
        let nonce = match &kbs {
            Some(k) => Some(k.gpu_nonce()),
            None => report_data.as_ref().map(gpu_nonce),
        };
        let count = evidence.gpus.len();
        if count > MAX_GPUS {
            checks.push(Check::fail("gpu_count", format!("{count} GPUs; one appraisal takes at most {MAX_GPUS}")));
            return CompositeVerification { checks, cpu, gpu_nonce: None, gpus: Vec::new() };
        }
        checks.push(Check::pass("gpu_count", format!("{count} GPU(s)")));
        if count > 0 {
            checks.push(match &nonce {
                Some(n) => Check::pass(
                    "gpu_nonce",
                    format!(
                        "GPUs must sign {} ({})",
                        hex::encode(n),
                        if kbs.is_some() { "from the KBS runtime data" } else { "from REPORT_DATA" }
                    ),
                ),
                None => Check::fail(
                    "gpu_nonce",
                    "no REPORT_DATA to derive the GPU nonce from: the CPU evidence did not parse",
                ),
            });
        }
        // Without a derivable nonce the GPUs are still verified, so that every failure is
        // reported; the failed `gpu_nonce` check above keeps the whole appraisal unverified.
        // The GPUs are independent: verified side by side (a node's eight reports are most of a
        // release's signature work, and one worker's latency is what it waits for).
        let gpus: Vec<GpuVerification> = evidence
            .gpus
            .par_iter()
            .map(|g| {
                let rims: Vec<&[u8]> = g.rims.iter().map(Vec::as_slice).collect();
                self.nvidia.verify(&g.evidence, nonce.as_ref(), &rims, now)
            })
            .collect();
        let mut seen: HashMap<[u8; 32], usize> = HashMap::new();
        let mut duplicates = Vec::new();
        for (i, g) in evidence.gpus.iter().enumerate() {
            let chain = &g.evidence.chain;
            let id = self
                .identities
                .get_or_insert_with(memo::key(chain.iter().map(Vec::as_slice)), || device_identity(chain));
            if let Some(id) = *id
                && let Some(first) = seen.insert(id, i)
            {
                duplicates.push(format!("gpu[{first}] and gpu[{i}] are the same device (same device identity key)"));
            }
        }
        if count > 0 {
            checks.push(if duplicates.is_empty() {
                Check::pass("distinct_gpus", "every GPU is a distinct device")
            } else {
                Check::fail("distinct_gpus", duplicates.join("; "))
            });
        }
        let cpu_simulated = match &cpu {
            CpuVerification::Snp(v) => v.claims.as_ref().is_some_and(|c| c.platform == Platform::Simulated),
            CpuVerification::Tdx(_) => false,
            CpuVerification::Sample(v) => v.claims.is_some(),
        };
        let simulated =
            cpu_simulated || gpus.iter().any(|g| g.claims.as_ref().is_some_and(|c| c.platform == Platform::Simulated));
        if simulated {
            checks.push(Check::pass("simulated", "part of this evidence is SIMULATED: development only"));
        }
        CompositeVerification { checks, cpu, gpu_nonce: nonce.map(hex::encode), gpus }
    }
}
