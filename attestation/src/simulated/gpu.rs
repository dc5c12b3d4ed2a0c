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

/// A simulated NVIDIA RIM service: a "SIMULATED NVIDIA RIM Root CA" and a signer, issuing driver
/// and VBIOS RIMs (SWID tags with enveloped XML-DSig, C14N 1.1, ECDSA P-384/SHA-384) in the shape
/// NVIDIA publishes, whose golden measurements are a simulated GPU's. The verification path is the
/// real one; a verifier trusts this root only through
/// [`NvidiaVerifier::dangerous_accept_simulated_rim_root`].
pub struct SimulatedRimAuthority {
    signer_key: EcdsaKeyPair,
    root_der: Vec<u8>,
    signer_der: Vec<u8>,
}

impl std::fmt::Debug for SimulatedRimAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SimulatedRimAuthority { keys: <redacted> }")
    }
}

/// Which firmware a RIM describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RimKind {
    /// The driver: measurement blocks 1..=32.
    Driver,
    /// The VBIOS: measurement blocks 33..=64.
    Vbios,
}

impl SimulatedRimAuthority {
    /// A fresh root and signer.
    pub fn generate() -> Result<Self, String> {
        let rng = SystemRandom::new();
        let root_key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING)
            .map_err(|_| "P-384 key generation failed".to_owned())?;
        // XML-DSig ECDSA signatures are r ‖ s (fixed width), not DER.
        let signer_key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .map_err(|_| "P-384 key generation failed".to_owned())?;
        let sign = |tbs: &[u8]| -> Result<Vec<u8>, String> {
            root_key.sign(&rng, tbs).map(|s| s.as_ref().to_vec()).map_err(|_| "ECDSA signing failed".to_owned())
        };
        let alg = der::seq(&[&der::oid(oids::ECDSA_SHA384)]);
        let root_name = name("SIMULATED NVIDIA RIM Root CA");
        let ca = extension(&[2, 5, 29, 19], true, &der::seq(&[&[0x01, 0x01, 0xff]]));
        let ca_ku = extension(&[2, 5, 29, 15], true, &der::tlv(0x03, &[0x01, 0x06]));
        let signer_ku = extension(&[2, 5, 29, 15], true, &der::tlv(0x03, &[0x07, 0x80]));
        let spec = |serial: &'static [u8], subject: &Vec<u8>, key: &EcdsaKeyPair, exts: Vec<Vec<u8>>| {
            let spki = p384_spki(key.public_key().as_ref());
            certificate(
                &CertSpec {
                    serial,
                    issuer: &root_name,
                    subject,
                    spki: &spki,
                    extensions: &exts,
                    not_before: VALIDITY.0,
                    not_after: VALIDITY.1,
                },
                &alg,
                &sign,
            )
        };
        let root_der = spec(&[1], &root_name, &root_key, vec![ca, ca_ku])?;
        let signer_der = spec(&[2], &name("SIMULATED HCC RIM Signer"), &signer_key, vec![signer_ku])?;
        Ok(Self { signer_key, root_der, signer_der })
    }

    /// The simulated RIM root (DER).
    pub fn root_der(&self) -> &[u8] {
        &self.root_der
    }

    /// A signed RIM of `kind` for `gpu`'s driver or VBIOS version, listing the golden
    /// measurements `gpu` reports (or, with `tamper`, one wrong value at that index).
    pub fn rim(&self, gpu: &SimulatedGpu, kind: RimKind, tamper: Option<u8>) -> Result<Vec<u8>, String> {
        const DS: &str = "http://www.w3.org/2000/09/xmldsig#";
        const SHA384: &str = "http://www.w3.org/2001/04/xmlenc#sha384";
        let chip = gpu.arch.chip();
        let (version, blocks) = match kind {
            RimKind::Driver => (gpu.driver_version.clone(), 1..=BLOCKS / 2),
            RimKind::Vbios => {
                (crate::nvidia::spdm::vbios_version(&gpu.vbios).map_err(|e| e.to_string())?, BLOCKS / 2 + 1..=BLOCKS)
            }
        };
        let mut payload = String::new();
        for block in blocks {
            let mut value = measurement(block);
            if tamper == Some(block) {
                value[0] ^= 1;
            }
            payload.push_str(&format!(
                "<Resource type=\"Measurement\" index=\"{}\" active=\"true\" alternatives=\"1\" SHA384:Hash0=\"{}\"/>",
                block - 1,
                hex::encode(value)
            ));
        }
        let kind_name = match kind {
            RimKind::Driver => "DRIVER",
            RimKind::Vbios => "VBIOS",
        };
        let body = format!(
            "<SoftwareIdentity xmlns=\"http://standards.iso.org/iso/19770/-2/2015/schema.xsd\" \
             xmlns:SHA384=\"{SHA384}\" xmlns:ds=\"{DS}\" name=\"{chip}\" tagId=\"SIMULATED_NV_GPU_{kind_name}_{chip}_{version}\" \
             version=\"{version}\"><Meta colloquialVersion=\"{version}\" product=\"{chip}\"/>\
             <Payload>{payload}</Payload>"
        );
        let unsigned = format!("{body}</SoftwareIdentity>");
        let doc = crate::xml::parse(unsigned.as_bytes())?;
        let canonical = crate::xml::canonicalize_document(&doc, None);
        let digest_value = base64_encode(digest::digest(&digest::SHA384, canonical.as_bytes()).as_ref());
        let signed_info = format!(
            "<ds:SignedInfo><ds:CanonicalizationMethod Algorithm=\"http://www.w3.org/2006/12/xml-c14n11\"/>\
             <ds:SignatureMethod Algorithm=\"http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384\"/>\
             <ds:Reference URI=\"\"><ds:Transforms>\
             <ds:Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\
             <ds:Transform Algorithm=\"http://www.w3.org/2006/12/xml-c14n11\"/></ds:Transforms>\
             <ds:DigestMethod Algorithm=\"{SHA384}\"/><ds:DigestValue>{digest_value}</ds:DigestValue>\
             </ds:Reference></ds:SignedInfo>"
        );
        let key_info = format!(
            "<ds:KeyInfo><ds:X509Data><ds:X509Certificate>{}</ds:X509Certificate>\
             <ds:X509Certificate>{}</ds:X509Certificate></ds:X509Data></ds:KeyInfo>",
            base64_encode(&self.signer_der),
            base64_encode(&self.root_der)
        );
        // Canonicalise SignedInfo exactly as a verifier will: in the scope of the finished document.
        let draft = format!(
            "{body}<ds:Signature>{signed_info}<ds:SignatureValue>AA==</ds:SignatureValue>{key_info}</ds:Signature></SoftwareIdentity>"
        );
        let draft_doc = crate::xml::parse(draft.as_bytes())?;
        let root_scope = draft_doc.root.scope(&crate::xml::Namespaces::new());
        let sig_el = draft_doc.root.elements().find(|e| e.local() == "Signature").ok_or("no Signature element")?;
        let sig_scope = sig_el.scope(&root_scope);
        let si_el = sig_el.elements().find(|e| e.local() == "SignedInfo").ok_or("no SignedInfo element")?;
        let si_canonical = crate::xml::canonicalize_subtree(si_el, &sig_scope);
        let fixed = self
            .signer_key
            .sign(&SystemRandom::new(), si_canonical.as_bytes())
            .map_err(|_| "ECDSA signing failed".to_owned())?;
        let fixed = fixed.as_ref();
        Ok(draft
            .replace(
                "<ds:SignatureValue>AA==</ds:SignatureValue>",
                &format!("<ds:SignatureValue>{}</ds:SignatureValue>", base64_encode(fixed)),
            )
            .into_bytes())
    }
}

fn base64_encode(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// What [`super::machine`] stores of a simulated GPU: keys as PKCS#8, certificates as DER.
pub(super) struct GpuParts {
    pub arch: Arch,
    pub device_key: Vec<u8>,
    pub root_key: Vec<u8>,
    pub root_der: Vec<u8>,
    pub leaf_der: Vec<u8>,
    pub fwid: [u8; 48],
    pub driver_version: String,
    pub vbios: [u8; 8],
}

impl SimulatedGpu {
    pub(super) fn to_parts(&self) -> Result<GpuParts, String> {
        let pkcs8 = |k: &EcdsaKeyPair| {
            k.to_pkcs8v1().map(|d| d.as_ref().to_vec()).map_err(|_| "cannot export a simulated GPU key".to_owned())
        };
        Ok(GpuParts {
            arch: self.arch,
            device_key: pkcs8(&self.device_key)?,
            root_key: pkcs8(&self.root_key)?,
            root_der: self.root_der.clone(),
            leaf_der: self.leaf_der.clone(),
            fwid: self.fwid,
            driver_version: self.driver_version.clone(),
            vbios: self.vbios,
        })
    }

    pub(super) fn from_parts(p: GpuParts) -> Result<Self, String> {
        let device_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &p.device_key)
            .map_err(|_| "the simulated GPU's device key is not a P-384 PKCS#8 key".to_owned())?;
        let root_key = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_ASN1_SIGNING, &p.root_key)
            .map_err(|_| "the simulated GPU root key is not a P-384 PKCS#8 key".to_owned())?;
        Ok(Self {
            arch: p.arch,
            device_key: std::sync::Arc::new(device_key),
            root_key: std::sync::Arc::new(root_key),
            root_der: p.root_der,
            leaf_der: p.leaf_der,
            fwid: p.fwid,
            driver_version: p.driver_version,
            vbios: p.vbios,
        })
    }
}
