//! Evidence as a worker sends it and as an evidence bundle records it: every byte the verifiers
//! use, in one mapping shared by the vault (which records it) and the auditor (who reads it back),
//! so what is recorded is exactly what an audit re-verifies.

use coffre_attestation::composite::{CompositeEvidence, CpuEvidence, GpuInput};
use coffre_attestation::nvidia::GpuEvidence;
use coffre_attestation::snp::SnpEvidence;
use coffre_attestation::tdx::TdxCollateral;
use coffre_log::Digest;
use coffre_log::bundle::Bundle;
use serde::{Deserialize, Serialize};

use crate::b64;

/// Bundle item roles.
pub mod role {
    /// The SEV-SNP report (1184 bytes).
    pub const SNP_REPORT: &str = "cpu.snp.report";
    /// The VCEK or VLEK (DER).
    pub const SNP_VEK: &str = "cpu.snp.vek";
    /// An intermediate (ASK/ASVK, DER).
    pub const SNP_CHAIN: &str = "cpu.snp.chain";
    /// AMD's CRL (DER).
    pub const SNP_CRL: &str = "cpu.snp.crl";
    /// The TDX quote.
    pub const TDX_QUOTE: &str = "cpu.tdx.quote";
    /// The TDX collateral (dcap-qvl JSON).
    pub const TDX_COLLATERAL: &str = "cpu.tdx.collateral";
    /// A GPU's SPDM report.
    pub const GPU_REPORT: &str = "gpu.report";
    /// A GPU's device chain certificate (DER, one each).
    pub const GPU_CHAIN: &str = "gpu.chain";
    /// A GPU's RIM (XML).
    pub const GPU_RIM: &str = "gpu.rim";
    /// The KBS sample TEE's evidence (JSON).
    pub const SAMPLE_EVIDENCE: &str = "cpu.sample.evidence";
    /// The KBS sample device's evidence (JSON).
    pub const SAMPLE_DEVICE: &str = "cpu.sample.device";

    /// Every role this version knows.
    pub const ALL: [&str; 11] = [
        SNP_REPORT,
        SNP_VEK,
        SNP_CHAIN,
        SNP_CRL,
        TDX_QUOTE,
        TDX_COLLATERAL,
        GPU_REPORT,
        GPU_CHAIN,
        GPU_RIM,
        SAMPLE_EVIDENCE,
        SAMPLE_DEVICE,
    ];
}

/// CPU evidence as received: every byte the verifier uses.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "lowercase", deny_unknown_fields)]
pub enum RawCpu {
    /// SEV-SNP: report, VCEK/VLEK, intermediates (DER, each), CRL.
    Snp {
        /// The report.
        #[serde(with = "b64")]
        report: Vec<u8>,
        /// The VCEK or VLEK (DER); the vault's collateral store supplies it when absent.
        #[serde(default, with = "b64::opt")]
        vek: Option<Vec<u8>>,
        /// Intermediates (ASK or ASVK), DER each.
        #[serde(default, with = "b64::list")]
        chain: Vec<Vec<u8>>,
        /// AMD's CRL for the product (DER).
        #[serde(default, with = "b64::opt")]
        crl: Option<Vec<u8>>,
    },
    /// TDX: the quote and its collateral (dcap-qvl JSON).
    Tdx {
        /// The DCAP quote.
        #[serde(with = "b64")]
        quote: Vec<u8>,
        /// TCB Info, QE Identity, CRLs and issuer chains (dcap-qvl JSON).
        #[serde(with = "b64")]
        collateral: Vec<u8>,
    },
    /// The KBS protocol's sample TEE (development vaults built with the kbs-sample feature
    /// only): its evidence JSON, and the sample device's when the guest sent one.
    Sample {
        /// `{"svn", "report_data"}` as received.
        #[serde(with = "b64")]
        evidence: Vec<u8>,
        /// The sample device's `{"svn", "report_data"}`.
        #[serde(default, with = "b64::opt")]
        device: Option<Vec<u8>>,
    },
}

/// One GPU's evidence as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawGpu {
    /// The SPDM GET_MEASUREMENTS request ‖ response.
    #[serde(with = "b64")]
    pub report: Vec<u8>,
    /// The device chain, one DER certificate each, leaf first.
    #[serde(with = "b64::list")]
    pub chain: Vec<Vec<u8>>,
    /// Driver and VBIOS RIMs (XML).
    #[serde(default, with = "b64::list")]
    pub rims: Vec<Vec<u8>>,
}

/// A worker's evidence as received.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RawEvidence {
    /// The confidential VM's report or quote.
    pub cpu: RawCpu,
    /// Each GPU assigned to it.
    #[serde(default)]
    pub gpus: Vec<RawGpu>,
}

impl RawCpu {
    /// SEV-SNP evidence as collected in the guest (or read from the attestation agent): the
    /// report, the VCEK or VLEK and the intermediates the host supplied (the ARK is pinned).
    pub fn from_collected(c: coffre_attestation::collect::CollectedEvidence) -> Self {
        use coffre_attestation::collect::CertKind;
        let vek =
            c.certificates.iter().find(|e| matches!(e.kind, CertKind::Vcek | CertKind::Vlek)).map(|e| e.der.clone());
        let chain = c.certificates.iter().filter(|e| matches!(e.kind, CertKind::Ask)).map(|e| e.der.clone()).collect();
        RawCpu::Snp { report: c.report, vek, chain, crl: None }
    }
}

impl RawEvidence {
    /// Every item, in bundle order: (role, GPU index, bytes).
    pub fn items(&self) -> Vec<(&'static str, Option<u32>, &[u8])> {
        let mut out: Vec<(&'static str, Option<u32>, &[u8])> = Vec::new();
        match &self.cpu {
            RawCpu::Snp { report, vek, chain, crl } => {
                out.push((role::SNP_REPORT, None, report));
                out.extend(vek.iter().map(|v| (role::SNP_VEK, None, v.as_slice())));
                out.extend(chain.iter().map(|c| (role::SNP_CHAIN, None, c.as_slice())));
                out.extend(crl.iter().map(|c| (role::SNP_CRL, None, c.as_slice())));
            }
            RawCpu::Tdx { quote, collateral } => {
                out.push((role::TDX_QUOTE, None, quote));
                out.push((role::TDX_COLLATERAL, None, collateral));
            }
            RawCpu::Sample { evidence, device } => {
                out.push((role::SAMPLE_EVIDENCE, None, evidence));
                out.extend(device.iter().map(|d| (role::SAMPLE_DEVICE, None, d.as_slice())));
            }
        }
        for (i, g) in (0u32..).zip(&self.gpus) {
            let i = Some(i);
            out.push((role::GPU_REPORT, i, &g.report));
            out.extend(g.chain.iter().map(|c| (role::GPU_CHAIN, i, c.as_slice())));
            out.extend(g.rims.iter().map(|r| (role::GPU_RIM, i, r.as_slice())));
        }
        out
    }

    /// Reads the evidence back from a bundle; `blob` fetches (and checks) each item.
    pub fn from_bundle(b: &Bundle, mut blob: impl FnMut(&Digest) -> Result<Vec<u8>, String>) -> Result<Self, String> {
        let mut all = |role: &str, gpu: Option<u32>| -> Result<Vec<Vec<u8>>, String> {
            b.items(role, gpu).map(&mut blob).collect()
        };
        let one = |mut v: Vec<Vec<u8>>, role: &str| -> Result<Option<Vec<u8>>, String> {
            if v.len() > 1 {
                return Err(format!("more than one {role} item"));
            }
            Ok(v.pop())
        };
        if let Some(i) = b.items.iter().find(|i| !role::ALL.contains(&i.role.as_str())) {
            return Err(format!("unknown evidence role {:?}", i.role));
        }
        if let Some(i) = b.items.iter().find(|i| i.role.starts_with("gpu.") != i.gpu.is_some()) {
            return Err(format!("item {:?} {} a GPU index", i.role, if i.gpu.is_some() { "has" } else { "lacks" }));
        }
        let snp = one(all(role::SNP_REPORT, None)?, role::SNP_REPORT)?;
        let tdx = one(all(role::TDX_QUOTE, None)?, role::TDX_QUOTE)?;
        let sample = one(all(role::SAMPLE_EVIDENCE, None)?, role::SAMPLE_EVIDENCE)?;
        let cpu = match (snp, tdx, sample) {
            (None, None, Some(evidence)) => {
                RawCpu::Sample { evidence, device: one(all(role::SAMPLE_DEVICE, None)?, role::SAMPLE_DEVICE)? }
            }
            (Some(report), None, None) => RawCpu::Snp {
                report,
                vek: one(all(role::SNP_VEK, None)?, role::SNP_VEK)?,
                chain: all(role::SNP_CHAIN, None)?,
                crl: one(all(role::SNP_CRL, None)?, role::SNP_CRL)?,
            },
            (None, Some(quote), None) => RawCpu::Tdx {
                quote,
                collateral: one(all(role::TDX_COLLATERAL, None)?, role::TDX_COLLATERAL)?
                    .ok_or("a TDX quote without its collateral")?,
            },
            _ => return Err("the bundle must hold exactly one CPU report or quote".into()),
        };
        let mut gpus = Vec::new();
        for i in 0..b.gpu_count() {
            let report =
                one(all(role::GPU_REPORT, Some(i))?, role::GPU_REPORT)?.ok_or(format!("GPU {i} has no report"))?;
            gpus.push(RawGpu { report, chain: all(role::GPU_CHAIN, Some(i))?, rims: all(role::GPU_RIM, Some(i))? });
        }
        Ok(Self { cpu, gpus })
    }

    /// The verifier's input.
    pub fn composite(&self) -> Result<CompositeEvidence, String> {
        let cpu = match &self.cpu {
            RawCpu::Snp { report, vek, chain, crl } => {
                let mut e = SnpEvidence::from_report_bytes(report)?;
                if let Some(v) = vek {
                    e = e.with_vek(v)?;
                }
                for c in chain {
                    e = e.with_chain(c)?;
                }
                if let Some(c) = crl {
                    e = e.with_crl(c)?;
                }
                CpuEvidence::Snp(e)
            }
            RawCpu::Tdx { quote, collateral } => CpuEvidence::Tdx {
                quote: coffre_attestation::tdx::quote::from_bytes(quote),
                collateral: TdxCollateral::from_dcap_json(collateral)?,
            },
            RawCpu::Sample { evidence, device } => {
                CpuEvidence::Sample { evidence: evidence.clone(), device: device.clone() }
            }
        };
        let gpus = self
            .gpus
            .iter()
            .map(|g| {
                Ok(GpuInput { evidence: GpuEvidence::new(g.report.clone(), &g.chain.concat())?, rims: g.rims.clone() })
            })
            .collect::<Result<_, String>>()?;
        Ok(CompositeEvidence { cpu, gpus })
    }
}
