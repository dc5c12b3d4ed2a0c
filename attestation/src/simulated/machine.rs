//! A simulated machine kept in a file, so that a development vault and a development worker in
//! two processes agree on it: `coffre-worker simulate init` writes the machine (its keys) and the
//! roots a development vault is told to trust (`coffred serve --dev --dev-roots`).
//!
//! The file holds the simulated chain's private keys. They protect nothing real (every verifier
//! marks this hardware `simulated`, and every production policy denies it), but the file is still
//! written owner-only and its `Debug` output shows no key.

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, RsaKeyPair};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use super::gpu::GpuParts;
use super::{SimulatedGpu, SimulatedPlatform, SimulatedReport, SimulatedTee};
use crate::nvidia::Arch;
use crate::snp::{Product, Tcb};
use crate::time::UnixTime;

/// The file format.
pub const MACHINE_FORMAT: &str = "coffre-simulated-machine/v1";

/// A simulated CPU TEE and its GPUs.
pub struct SimulatedMachine {
    /// The SEV-SNP attester.
    pub tee: SimulatedTee,
    /// The GPUs (one shared simulated root).
    pub gpus: Vec<SimulatedGpu>,
}

impl std::fmt::Debug for SimulatedMachine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimulatedMachine {{ tee: {:?}, gpus: {} }}", self.tee, self.gpus.len())
    }
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct File {
    format: String,
    warning: String,
    product: String,
    tcb: [Option<u8>; 5],
    chip_id: String,
    not_before: i64,
    not_after: i64,
    ark_key: String,
    vcek_key: String,
    ark: String,
    ask: String,
    vcek: String,
    gpus: Vec<GpuFile>,
    /// The guest policy its reports carry, when not the default (debugging and migration agent
    /// off): a machine for showing what a policy denies.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    guest_policy: Option<u64>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct GpuFile {
    arch: String,
    device_key: String,
    root_key: String,
    root: String,
    leaf: String,
    fwid: String,
    driver_version: String,
    vbios: String,
}

fn b64(bytes: &[u8]) -> String {
    STANDARD.encode(bytes)
}

fn unb64(what: &str, text: &str) -> Result<Vec<u8>, String> {
    STANDARD.decode(text).map_err(|e| format!("{what}: {e}"))
}

fn unhex<const N: usize>(what: &str, text: &str) -> Result<[u8; N], String> {
    let v = hex::decode(text).map_err(|e| format!("{what}: {e}"))?;
    v.try_into().map_err(|_| format!("{what}: expected {N} bytes"))
}

fn pem(out: &mut String, der: &[u8]) {
    out.push_str("-----BEGIN CERTIFICATE-----\n");
    let text = STANDARD.encode(der);
    for line in text.as_bytes().chunks(64) {
        out.push_str(&String::from_utf8_lossy(line));
        out.push('\n');
    }
    out.push_str("-----END CERTIFICATE-----\n");
}

impl SimulatedMachine {
    /// A new machine: a Milan-layout SNP attester and `hopper_gpus` H100s.
    pub fn generate(hopper_gpus: usize) -> Result<Self, String> {
        let tee = SimulatedTee::generate(SimulatedPlatform::default())?;
        let gpus = if hopper_gpus == 0 {
            Vec::new()
        } else {
            SimulatedGpu::generate_machine(&vec![Arch::Hopper; hopper_gpus])?
        };
        Ok(Self { tee, gpus })
    }

    /// The same machine (same chip, keys and GPUs) whose guests are launched with debugging
    /// allowed (SNP guest policy bit 19): the host can read their memory, so every policy that
    /// checks the bit denies them.
    pub fn with_debug_guest(mut self) -> Self {
        self.tee.report_defaults.policy |= 1 << 19;
        self
    }

    /// The roots a development verifier trusts for this machine, PEM: the simulated ARK and ASK
    /// and, with GPUs, the simulated GPU root.
    pub fn roots_pem(&self) -> String {
        let mut out = String::new();
        pem(&mut out, self.tee.ark_der());
        pem(&mut out, self.tee.ask_der());
        if let Some(g) = self.gpus.first() {
            pem(&mut out, g.root_der());
        }
        out
    }

    /// The file form (JSON, holding the simulated private keys).
    pub fn to_json(&self) -> Result<String, String> {
        let t = &self.tee;
        let p = &t.platform;
        let ark_key = t.ark_key.as_der().map_err(|_| "cannot export the simulated ARK key".to_owned())?;
        let vcek_key = t.vcek_key.to_pkcs8v1().map_err(|_| "cannot export the simulated VCEK key".to_owned())?;
        let gpus = self
            .gpus
            .iter()
            .map(|g| {
                let parts = g.to_parts()?;
                Ok(GpuFile {
                    arch: match parts.arch {
                        Arch::Hopper => "hopper".into(),
                        Arch::Blackwell => "blackwell".into(),
                    },
                    device_key: b64(&parts.device_key),
                    root_key: b64(&parts.root_key),
                    root: b64(&parts.root_der),
                    leaf: b64(&parts.leaf_der),
                    fwid: hex::encode(parts.fwid),
                    driver_version: parts.driver_version,
                    vbios: hex::encode(parts.vbios),
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        let file = File {
            format: MACHINE_FORMAT.into(),
            warning: "SIMULATED development hardware: every verifier marks it simulated and every production policy denies it. Never use it with real data.".into(),
            product: p.product.name().into(),
            tcb: [p.tcb.fmc, Some(p.tcb.bootloader), Some(p.tcb.tee), Some(p.tcb.snp), Some(p.tcb.microcode)],
            chip_id: hex::encode(p.chip_id),
            not_before: p.not_before.0,
            not_after: p.not_after.0,
            ark_key: b64(ark_key.as_ref()),
            vcek_key: b64(vcek_key.as_ref()),
            ark: b64(&t.ark_der),
            ask: b64(&t.ask_der),
            vcek: b64(&t.vcek_der),
            gpus,
            guest_policy: (t.report_defaults.policy != SimulatedReport::default().policy)
                .then_some(t.report_defaults.policy),
        };
        serde_json::to_string_pretty(&file).map_err(|e| e.to_string())
    }

    /// Reads [`SimulatedMachine::to_json`].
    pub fn from_json(text: &str) -> Result<Self, String> {
        let f: File = serde_json::from_str(text).map_err(|e| format!("not a simulated machine file: {e}"))?;
        if f.format != MACHINE_FORMAT {
            return Err(format!("format {:?}, expected {MACHINE_FORMAT:?}", f.format));
        }
        let product = Product::ALL
            .into_iter()
            .find(|p| p.name() == f.product)
            .ok_or_else(|| format!("unknown product {:?}", f.product))?;
        let [fmc, bootloader, tee, snp, microcode] = f.tcb;
        let need = |v: Option<u8>| v.ok_or_else(|| "tcb: only the FMC may be absent".to_owned());
        let platform = SimulatedPlatform {
            product,
            tcb: Tcb {
                fmc,
                bootloader: need(bootloader)?,
                tee: need(tee)?,
                snp: need(snp)?,
                microcode: need(microcode)?,
            },
            chip_id: unhex("chip_id", &f.chip_id)?,
            not_before: UnixTime(f.not_before),
            not_after: UnixTime(f.not_after),
        };
        let ark_key = RsaKeyPair::from_pkcs8(&unb64("ark_key", &f.ark_key)?)
            .map_err(|_| "ark_key is not an RSA PKCS#8 key".to_owned())?;
        let vcek_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &unb64("vcek_key", &f.vcek_key)?)
            .map_err(|_| "vcek_key is not a P-384 PKCS#8 key".to_owned())?;
        let tee = SimulatedTee {
            platform,
            report_defaults: SimulatedReport {
                policy: f.guest_policy.unwrap_or(SimulatedReport::default().policy),
                ..SimulatedReport::default()
            },
            ark_key,
            vcek_key,
            ark_der: unb64("ark", &f.ark)?,
            ask_der: unb64("ask", &f.ask)?,
            vcek_der: unb64("vcek", &f.vcek)?,
        };
        let gpus = f
            .gpus
            .into_iter()
            .map(|g| {
                SimulatedGpu::from_parts(GpuParts {
                    arch: match g.arch.as_str() {
                        "hopper" => Arch::Hopper,
                        "blackwell" => Arch::Blackwell,
                        other => return Err(format!("unknown GPU architecture {other:?}")),
                    },
                    device_key: unb64("device_key", &g.device_key)?,
                    root_key: unb64("root_key", &g.root_key)?,
                    root_der: unb64("root", &g.root)?,
                    leaf_der: unb64("leaf", &g.leaf)?,
                    fwid: unhex("fwid", &g.fwid)?,
                    driver_version: g.driver_version,
                    vbios: unhex("vbios", &g.vbios)?,
                })
            })
            .collect::<Result<Vec<_>, String>>()?;
        Ok(Self { tee, gpus })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::collect::ReportData;

    #[test]
    fn a_machine_read_back_signs_evidence_its_roots_verify() {
        let m = SimulatedMachine::generate(1).unwrap();
        let back = SimulatedMachine::from_json(&m.to_json().unwrap()).unwrap();
        assert_eq!(back.roots_pem(), m.roots_pem());
        let rd = ReportData::new([7; 64]);
        let report =
            back.tee.report(&SimulatedReport { report_data: *rd.as_bytes(), ..SimulatedReport::default() }).unwrap();
        // The original's verifier (its roots) accepts the reloaded machine's report and GPU.
        let now = UnixTime(1_800_000_000);
        let evidence = crate::snp::SnpEvidence {
            report,
            vek: Some(back.tee.vcek_der().to_vec()),
            chain: Vec::new(),
            crl: None,
            hcl: None,
            form: crate::snp::input::ReportForm::Raw,
        };
        assert!(m.tee.dangerous_verifier().unwrap().verify(&evidence, now).is_verified());
        let nonce = [9u8; 32];
        let gpu = back.gpus[0].evidence(&nonce).unwrap();
        assert!(m.gpus[0].dangerous_verifier().unwrap().verify(&gpu, Some(&nonce), &[], now).is_verified());
        // Another machine's roots do not.
        let other = SimulatedMachine::generate(0).unwrap();
        assert!(!other.tee.dangerous_verifier().unwrap().verify(&evidence, now).is_verified());
    }
}
