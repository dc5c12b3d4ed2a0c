//! The simulated GPU: SPDM 1.1 `GET_MEASUREMENTS` evidence in exactly the format NVIDIA GPUs
//! produce, signed by a generated device key under a generated "SIMULATED NVIDIA Device Identity
//! CA". The verification path is the real one; a verifier trusts this root only through
//! [`NvidiaVerifier::dangerous_accept_simulated_root`], after which claims say
//! `platform: simulated`.

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};

use super::{CertSpec, certificate, extension, p384_spki};
use crate::der::{self, oids};
use crate::nvidia::spdm::field;
use crate::nvidia::{Arch, GpuEvidence, NvidiaVerifier};
use crate::time::UnixTime;

const ORG: &str = "Coffre development (SIMULATED, not NVIDIA)";
const BLOCKS: u8 = 64;

/// A simulated GPU with its own device chain.
pub struct SimulatedGpu {
    arch: Arch,
    device_key: std::sync::Arc<EcdsaKeyPair>,
    root_key: std::sync::Arc<EcdsaKeyPair>,
    root_der: Vec<u8>,
    leaf_der: Vec<u8>,
    fwid: [u8; 48],
    /// Driver version the GPU reports.
    pub driver_version: String,
    /// VBIOS version field (8 bytes, NVIDIA's layout).
    pub vbios: [u8; 8],
}

impl std::fmt::Debug for SimulatedGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimulatedGpu {{ arch: {:?}, driver: {}, keys: <redacted> }}", self.arch, self.driver_version)
    }
}

fn random<const N: usize>() -> Result<[u8; N], String> {
    let mut out = [0u8; N];
    aws_lc_rs::rand::fill(&mut out).map_err(|_| "random number generator failed".to_owned())?;
    Ok(out)
}

fn name(cn: &str) -> Vec<u8> {
    der::name(&[(oids::O, ORG), (oids::CN, cn)])
}

/// The leaf's TCB Info extension value, in the layout each architecture uses.
fn tcb_info(arch: Arch, spki: &[u8], fwid: &[u8; 48]) -> Vec<u8> {
    let fwid = der::seq(&[&der::oid(oids::SHA384), &der::octet_string(fwid)]);
    match arch {
        Arch::Hopper => der::seq(&[&der::uint64(1), spki, &fwid]),
        Arch::Blackwell => {
            der::seq(&[&der::tlv(0x80, b"NVIDIA"), &der::tlv(0x81, b"GB100 A01 GSP"), &der::tlv(0xA6, &fwid)])
        }
    }
}

/// A simulated measurement: deterministic per GPU model and index, so RIM-like comparisons are
/// repeatable.
pub fn measurement(index: u8) -> [u8; 48] {
    let mut ctx = digest::Context::new(&digest::SHA384);
    ctx.update(b"coffre simulated GPU measurement");
    ctx.update(&[index]);
    let mut out = [0u8; 48];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

const VALIDITY: (UnixTime, UnixTime) = (UnixTime(1_577_836_800), UnixTime(4_102_444_800)); // 2020 … 2100
const ROOT_CN: &str = "SIMULATED NVIDIA Device Identity CA";

/// A device leaf of `arch` for `device_key`, with `fwid`, signed by the simulated root.
fn leaf_certificate(
    arch: Arch,
    root_key: &EcdsaKeyPair,
    device_key: &EcdsaKeyPair,
    fwid: &[u8; 48],
) -> Result<Vec<u8>, String> {
    let rng = SystemRandom::new();
    let sign = |tbs: &[u8]| -> Result<Vec<u8>, String> {
        root_key.sign(&rng, tbs).map(|s| s.as_ref().to_vec()).map_err(|_| "ECDSA signing failed".to_owned())
    };
    let alg = der::seq(&[&der::oid(oids::ECDSA_SHA384)]);
    let leaf_name = name(&format!("SIMULATED {} A01 GSP FMC LF", arch.chip()));
    let leaf_spki = p384_spki(device_key.public_key().as_ref());
    let fwid_oid: Vec<u64> = match arch {
        Arch::Hopper => vec![2, 23, 133, 5, 4, 1],
        Arch::Blackwell => vec![2, 23, 133, 5, 4, 1, 1],
    };
    let mut leaf_serial: [u8; 16] = random()?;
    leaf_serial[0] &= 0x7f;
    certificate(
        &CertSpec {
            serial: &leaf_serial,
            issuer: &name(ROOT_CN),
            subject: &leaf_name,
            spki: &leaf_spki,
            extensions: &[extension(&fwid_oid, false, &tcb_info(arch, &leaf_spki, fwid))],
            not_before: VALIDITY.0,
            not_after: VALIDITY.1,
        },
        &alg,
        &sign,
    )
}

impl SimulatedGpu {
    /// Generates a device chain: a self-signed SIMULATED root (P-384) and a device leaf with the
    /// FWID extension of `arch`.
    pub fn generate(arch: Arch) -> Result<Self, String> {
        Self::generate_machine(&[arch])?.pop().ok_or_else(|| "no GPU generated".to_owned())
    }

    /// Generates the GPUs of one machine: one SIMULATED root (as all real GPUs share NVIDIA's
    /// Device Identity CA) and a device leaf per entry of `archs`.
    pub fn generate_machine(archs: &[Arch]) -> Result<Vec<Self>, String> {
        let rng = SystemRandom::new();
        let root_key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING)
            .map_err(|_| "P-384 key generation failed".to_owned())?;
        let sign = |tbs: &[u8]| -> Result<Vec<u8>, String> {
            root_key.sign(&rng, tbs).map(|s| s.as_ref().to_vec()).map_err(|_| "ECDSA signing failed".to_owned())
        };
        let alg = der::seq(&[&der::oid(oids::ECDSA_SHA384)]);
        let root_name = name(ROOT_CN);
        let (not_before, not_after) = VALIDITY;
        let ca = extension(&[2, 5, 29, 19], true, &der::seq(&[&[0x01, 0x01, 0xff]]));
        let root_spki = p384_spki(root_key.public_key().as_ref());
        let mut serial: [u8; 16] = random()?;
        serial[0] &= 0x7f;
        let root_der = certificate(
            &CertSpec {
                serial: &serial,
                issuer: &root_name,
                subject: &root_name,
                spki: &root_spki,
                extensions: &[ca],
                not_before,
                not_after,
            },
            &alg,
            &sign,
        )?;
        let root_key = std::sync::Arc::new(root_key);
        let mut out = Vec::with_capacity(archs.len());
        for &arch in archs {
            let device_key = std::sync::Arc::new(
                EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
                    .map_err(|_| "P-384 key generation failed".to_owned())?,
            );
            let fwid: [u8; 48] = random()?;
            out.push(Self {
                arch,
                leaf_der: leaf_certificate(arch, &root_key, &device_key, &fwid)?,
                device_key,
                root_key: root_key.clone(),
                root_der: root_der.clone(),
                fwid,
                driver_version: "580.95.05".into(),
                vbios: [0x00, 0x74, 0x00, 0x96, 0x1a, 0, 0, 0],
            });
        }
        Ok(out)
    }

    /// The same device with a freshly issued attestation certificate (new serial and FWID, the
    /// same device key): what a second boot of one GPU presents. Lets tests show that one device
    /// is recognised whatever its certificate's bytes.
    pub fn reissued(&self) -> Result<Self, String> {
        let fwid: [u8; 48] = random()?;
        Ok(Self {
            arch: self.arch,
            leaf_der: leaf_certificate(self.arch, &self.root_key, &self.device_key, &fwid)?,
            device_key: self.device_key.clone(),
            root_key: self.root_key.clone(),
            root_der: self.root_der.clone(),
            fwid,
            driver_version: self.driver_version.clone(),
            vbios: self.vbios,
        })
    }

    /// The simulated root (DER): what a development verifier is told to trust.
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// The device chain (DER), leaf first, as a GPU returns it.
    pub fn chain(&self) -> Vec<Vec<u8>> {
        vec![self.leaf_der.clone(), self.root_der.clone()]
    }

    /// A verifier that trusts NVIDIA's roots and, dangerously, this simulator's.
    pub fn dangerous_verifier(&self) -> Result<NvidiaVerifier, String> {
        NvidiaVerifier::new().dangerous_accept_simulated_root(&self.root_der)
    }

    /// A signed `GET_MEASUREMENTS` request ‖ response for `nonce`.
    pub fn report(&self, nonce: &[u8; 32]) -> Result<Vec<u8>, String> {
        let mut b = vec![0x11, 0xE0, 0x01, 0xFF];
        b.extend_from_slice(nonce);
        b.push(0);
        b.extend([0x11, 0x60, 0x00, 0x00, BLOCKS]);
        let mut record = Vec::new();
        for index in 1..=BLOCKS {
            record.extend([index, 0x01, 51, 0, 0x01, 48, 0]);
            record.extend(measurement(index));
        }
        b.extend(&u32::try_from(record.len()).map_err(|_| "record too long")?.to_le_bytes()[..3]);
        b.extend(record);
        b.extend(random::<32>()?);
        let mut driver = self.driver_version.as_bytes().to_vec();
        driver.push(0);
        let counts: Vec<u8> = (0..u32::from(BLOCKS)).flat_map(|_| 1u32.to_le_bytes()).collect();
        let fields: [(u16, &[u8]); 7] = [
            (field::VBIOS_VERSION, &self.vbios),
            (field::DRIVER_VERSION, &driver),
            (field::MSRSCNT, &counts),
            (field::NVDEC0_STATUS, &[0x55]),
            (field::FWID, &self.fwid),
            (field::OPAQUE_DATA_VERSION, &[1, 0]),
            (field::FEATURE_FLAG, &[0, 0]),
        ];
        let mut opaque = Vec::new();
        for (kind, value) in fields {
            opaque.extend(kind.to_le_bytes());
            opaque.extend(u16::try_from(value.len()).map_err(|_| "opaque field too long")?.to_le_bytes());
            opaque.extend(value);
        }
        b.extend(u16::try_from(opaque.len()).map_err(|_| "opaque data too long")?.to_le_bytes());
        b.extend(opaque);
        let sig = self.device_key.sign(&SystemRandom::new(), &b).map_err(|_| "ECDSA signing failed".to_owned())?;
        b.extend(sig.as_ref());
        Ok(b)
    }

    /// The GPU's evidence for `nonce`, as the worker sends it.
    pub fn evidence(&self, nonce: &[u8; 32]) -> Result<GpuEvidence, String> {
        Ok(GpuEvidence {
            report: self.report(nonce)?,
            chain: self.chain(),
            stated_arch: Some(format!("{:?}", self.arch).to_uppercase()),
        })
    }
}
