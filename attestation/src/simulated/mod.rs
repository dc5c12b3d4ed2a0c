//! The simulated TEE: a software SEV-SNP attester for development, tests and the demo.
//!
//! It generates its own chain, ARK → ASK (RSA-4096, RSASSA-PSS SHA-384, as AMD's) → VCEK
//! (ECDSA P-384, with AMD's extensions), every subject saying SIMULATED, and signs version-3
//! reports (Milan layout) with chosen report data, measurement, policy and TCB. The verification
//! path is the real one; only the root differs, and a verifier trusts that root only through
//! [`SnpVerifier::dangerous_accept_simulated_roots`], after which claims say
//! `platform: simulated`.
//!
//! [`gpu`] does the same for NVIDIA GPU evidence.
//!
//! This module exists only with the `simulated` feature, which is never a default feature.

pub mod gpu;
pub mod machine;

pub use gpu::{RimKind, SimulatedGpu, SimulatedRimAuthority};
pub use machine::SimulatedMachine;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RSA_PSS_SHA384, RsaKeyPair};

use crate::collect::{CertKind, CertTableEntry, CollectError, CollectedEvidence, EvidenceSource, ReportData};
use crate::der::{self, oids};
use crate::snp::report::{REPORT_LEN, SIGNED_LEN};
use crate::snp::{Product, SnpVerifier, Tcb};
use crate::time::UnixTime;

const ORG: &str = "Coffre development (SIMULATED, not AMD)";
const VCEK_GUID: [u8; 16] =
    [0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd];

/// What the simulated platform looks like.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedPlatform {
    /// The processor generation: decides the TCB layout, CPUID, the VCEK's product name and the
    /// hwID form (8 bytes on Turin, 64 before).
    pub product: Product,
    /// REPORTED_TCB (and CURRENT, COMMITTED, LAUNCH): the VCEK is issued for it. `fmc` must be
    /// set exactly when the product is Turin.
    pub tcb: Tcb,
    /// CHIP_ID, and the VCEK's hwID.
    pub chip_id: [u8; 64],
    /// Certificates are valid from…
    pub not_before: UnixTime,
    /// …until.
    pub not_after: UnixTime,
}

impl SimulatedPlatform {
    /// A Turin (Zen 5) platform: the Turin TCB layout with an FMC, an 8-byte chip id.
    pub fn turin() -> Self {
        let mut chip_id = [0u8; 64];
        chip_id[..8].copy_from_slice(&[0x5a, 0x5b, 0x58, 0x59, 0x5e, 0x5f, 0x5c, 0x5d]);
        Self {
            product: Product::Turin,
            tcb: Tcb { fmc: Some(1), bootloader: 1, tee: 1, snp: 4, microcode: 81 },
            chip_id,
            ..Self::default()
        }
    }

    fn tcb_raw(&self) -> [u8; 8] {
        let t = self.tcb;
        if self.product.has_fmc() {
            [t.fmc.unwrap_or(0), t.bootloader, t.tee, t.snp, 0, 0, 0, t.microcode]
        } else {
            [t.bootloader, t.tee, 0, 0, 0, 0, t.snp, t.microcode]
        }
    }

    fn cpuid(&self) -> [u8; 3] {
        match self.product {
            Product::Milan => [0x19, 0x01, 0x01],
            Product::Genoa => [0x19, 0x11, 0x01],
            Product::Turin => [0x1A, 0x02, 0x01],
        }
    }

    fn product_name(&self) -> &'static str {
        match self.product {
            Product::Milan => "Milan-B0",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }
}

impl Default for SimulatedPlatform {
    fn default() -> Self {
        let mut chip_id = [0u8; 64];
        for (i, b) in chip_id.iter_mut().enumerate() {
            *b = 0x5a ^ i as u8;
        }
        Self {
            product: Product::Milan,
            tcb: Tcb { bootloader: 9, tee: 0, snp: 23, microcode: 213, fmc: None },
            chip_id,
            not_before: UnixTime(1_577_836_800), // 2020-01-01
            not_after: UnixTime(4_102_444_800),  // 2100-01-01
        }
    }
}

/// The fields a simulated report request can choose.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SimulatedReport {
    /// REPORT_DATA.
    pub report_data: [u8; 64],
    /// MEASUREMENT.
    pub measurement: [u8; 48],
    /// HOST_DATA.
    pub host_data: [u8; 32],
    /// POLICY (bit 17 must stay set).
    pub policy: u64,
    /// VMPL.
    pub vmpl: u32,
    /// GUEST_SVN.
    pub guest_svn: u32,
    /// FAMILY_ID.
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    pub image_id: [u8; 16],
    /// ID_KEY_DIGEST.
    pub id_key_digest: [u8; 48],
    /// PLATFORM_INFO.
    pub platform_info: u64,
    /// Report VERSION (2 to 6): the fields written follow it (CPUID from 3, mitigation vectors
    /// from 5).
    pub version: u32,
    /// LAUNCH_MIT_VECTOR and CURRENT_MIT_VECTOR (version 5 and later).
    pub mit_vectors: (u64, u64),
}

impl Default for SimulatedReport {
    fn default() -> Self {
        Self {
            report_data: [0; 64],
            measurement: [0x11; 48],
            host_data: [0; 32],
            policy: 0x3_0000, // SMT allowed, reserved bit 17; debug and migration agent off
            vmpl: 0,
            guest_svn: 0,
            family_id: [0; 16],
            image_id: [0; 16],
            id_key_digest: [0; 48],
            platform_info: 0x25, // SMT, ECC, alias check complete
            version: 3,
            mit_vectors: (0x3f, 0x3f),
        }
    }
}

/// A simulated SEV-SNP platform with its own chain.
pub struct SimulatedTee {
    platform: SimulatedPlatform,
    report_defaults: SimulatedReport,
    ark_key: RsaKeyPair,
    vcek_key: EcdsaKeyPair,
    ark_der: Vec<u8>,
    ask_der: Vec<u8>,
    vcek_der: Vec<u8>,
}

impl std::fmt::Debug for SimulatedTee {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SimulatedTee {{ tcb: {}, keys: <redacted> }}", self.platform.tcb)
    }
}

fn name(cn: &str) -> Vec<u8> {
    der::name(&[(oids::OU, "Engineering"), (oids::O, ORG), (oids::CN, cn)])
}

fn rsa_sign(key: &RsaKeyPair, message: &[u8]) -> Result<Vec<u8>, String> {
    let mut sig = vec![0u8; key.public_modulus_len()];
    key.sign(&RSA_PSS_SHA384, &SystemRandom::new(), message, &mut sig)
        .map_err(|_| "RSA-PSS signing failed".to_owned())?;
    Ok(sig)
}

pub(crate) fn extension(oid: &[u64], critical: bool, value: &[u8]) -> Vec<u8> {
    if critical {
        der::seq(&[&der::oid(oid), &[0x01, 0x01, 0xff], &der::octet_string(value)])
    } else {
        der::seq(&[&der::oid(oid), &der::octet_string(value)])
    }
}

/// The fields of a simulated certificate.
pub(crate) struct CertSpec<'a> {
    pub serial: &'a [u8],
    pub issuer: &'a [u8],
    pub subject: &'a [u8],
    pub spki: &'a [u8],
    pub extensions: &'a [Vec<u8>],
    pub not_before: UnixTime,
    pub not_after: UnixTime,
}

/// Signs the to-be-signed bytes of a certificate.
pub(crate) type Signer<'a> = &'a dyn Fn(&[u8]) -> Result<Vec<u8>, String>;

/// A v3 certificate signed with `sign` under the signature algorithm identifier `alg`.
pub(crate) fn certificate(spec: &CertSpec<'_>, alg: &[u8], sign: Signer<'_>) -> Result<Vec<u8>, String> {
    let validity = der::seq(&[&der::time(spec.not_before), &der::time(spec.not_after)]);
    let ext_refs: Vec<&[u8]> = spec.extensions.iter().map(Vec::as_slice).collect();
    let exts = der::explicit(3, &der::seq(&ext_refs));
    let tbs = der::seq(&[
        &der::explicit(0, &der::uint64(2)),
        &der::uint(spec.serial),
        alg,
        spec.issuer,
        &validity,
        spec.subject,
        spec.spki,
        &exts,
    ]);
    let sig = sign(&tbs)?;
    Ok(der::seq(&[&tbs, alg, &der::bit_string(&sig)]))
}

/// An AMD-style certificate: RSASSA-PSS SHA-384 by `signer`, valid over the platform's window.
fn amd_certificate(
    serial: &[u8],
    names: (&[u8], &[u8]),
    spki: &[u8],
    extensions: &[Vec<u8>],
    platform: &SimulatedPlatform,
    signer: &RsaKeyPair,
) -> Result<Vec<u8>, String> {
    let spec = CertSpec {
        serial,
        issuer: names.0,
        subject: names.1,
        spki,
        extensions,
        not_before: platform.not_before,
        not_after: platform.not_after,
    };
    certificate(&spec, &der::rsassa_pss_sha384(), &|tbs| rsa_sign(signer, tbs))
}

/// A SubjectPublicKeyInfo for an uncompressed P-384 point.
pub(crate) fn p384_spki(point: &[u8]) -> Vec<u8> {
    der::seq(&[&der::seq(&[&der::oid(oids::EC_PUBLIC_KEY), &der::oid(oids::SECP384R1)]), &der::bit_string(point)])
}

fn rsa_spki(key: &RsaKeyPair) -> Vec<u8> {
    der::seq(&[
        &der::seq(&[&der::oid(oids::RSA_ENCRYPTION), &der::null()]),
        &der::bit_string(key.public_key().as_ref()),
    ])
}

impl SimulatedTee {
    /// Generates a new chain (two RSA-4096 keys and a P-384 key: about a second).
    pub fn generate(platform: SimulatedPlatform) -> Result<Self, String> {
        let ark_key = RsaKeyPair::generate(KeySize::Rsa4096).map_err(|_| "RSA key generation failed".to_owned())?;
        let ask_key = RsaKeyPair::generate(KeySize::Rsa4096).map_err(|_| "RSA key generation failed".to_owned())?;
        let vcek_key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .map_err(|_| "P-384 key generation failed".to_owned())?;
        let mut serial = [0u8; 16];
        aws_lc_rs::rand::fill(&mut serial).map_err(|_| "random number generator failed".to_owned())?;
        serial[0] &= 0x7f;

        let ark_name = name(&format!("SIMULATED ARK-{}", platform.product));
        let ask_name = name(&format!("SIMULATED SEV-{}", platform.product));
        let ca = extension(&[2, 5, 29, 19], true, &der::seq(&[&[0x01, 0x01, 0xff]]));
        let ark_der = amd_certificate(
            &serial,
            (&ark_name, &ark_name),
            &rsa_spki(&ark_key),
            std::slice::from_ref(&ca),
            &platform,
            &ark_key,
        )?;
        serial[15] ^= 1;
        let ask_der =
            amd_certificate(&serial, (&ark_name, &ask_name), &rsa_spki(&ask_key), &[ca], &platform, &ark_key)?;

        let amd = |arc: &[u64]| -> Vec<u64> { [&[1, 3, 6, 1, 4, 1, 3704, 1][..], arc].concat() };
        let spl = |v: u8| der::uint64(u64::from(v));
        let t = platform.tcb;
        let hwid: &[u8] = if platform.product.has_fmc() { &platform.chip_id[..8] } else { &platform.chip_id };
        let mut vcek_exts = vec![
            extension(&amd(&[1]), false, &der::uint64(u64::from(platform.product.has_fmc()))),
            extension(&amd(&[2]), false, &der::ia5(platform.product_name())),
            extension(&amd(&[3, 1]), false, &spl(t.bootloader)),
            extension(&amd(&[3, 2]), false, &spl(t.tee)),
            extension(&amd(&[3, 3]), false, &spl(t.snp)),
            extension(&amd(&[3, 4]), false, &spl(0)),
            extension(&amd(&[3, 5]), false, &spl(0)),
            extension(&amd(&[3, 6]), false, &spl(0)),
            extension(&amd(&[3, 7]), false, &spl(0)),
            extension(&amd(&[3, 8]), false, &spl(t.microcode)),
            extension(&amd(&[4]), false, &der::octet_string(hwid)),
        ];
        if let Some(fmc) = t.fmc {
            vcek_exts.push(extension(&amd(&[3, 9]), false, &spl(fmc)));
        }
        let ec_spki = p384_spki(vcek_key.public_key().as_ref());
        // AMD issues VCEKs with serial number 0; so does the simulator, to exercise that path.
        let vcek_name = name("SIMULATED SEV-VCEK");
        let vcek_der = amd_certificate(&[0], (&ask_name, &vcek_name), &ec_spki, &vcek_exts, &platform, &ask_key)?;
        Ok(Self {
            platform,
            report_defaults: SimulatedReport::default(),
            ark_key,
            vcek_key,
            ark_der,
            ask_der,
            vcek_der,
        })
    }

    /// Sets the fields used by [`EvidenceSource::collect`] (all but the report data).
    pub fn with_report_defaults(mut self, defaults: SimulatedReport) -> Self {
        self.report_defaults = defaults;
        self
    }

    /// The simulated ARK (DER): what a development verifier is told to trust.
    pub fn ark_der(&self) -> &[u8] {
        &self.ark_der
    }

    /// The simulated ASK (DER).
    pub fn ask_der(&self) -> &[u8] {
        &self.ask_der
    }

    /// The simulated VCEK (DER).
    pub fn vcek_der(&self) -> &[u8] {
        &self.vcek_der
    }

    /// A verifier that trusts AMD's roots and, dangerously, this simulator's.
    pub fn dangerous_verifier(&self) -> Result<SnpVerifier, String> {
        SnpVerifier::new().dangerous_accept_simulated_roots(&self.ark_der, &self.ask_der)
    }

    /// A signed report (VCEK-signed) of the requested version with the requested fields.
    pub fn report(&self, req: &SimulatedReport) -> Result<Vec<u8>, String> {
        let mut r = vec![0u8; REPORT_LEN];
        let tcb = self.platform.tcb_raw();
        r[0x000..0x004].copy_from_slice(&req.version.to_le_bytes());
        r[0x004..0x008].copy_from_slice(&req.guest_svn.to_le_bytes());
        r[0x008..0x010].copy_from_slice(&req.policy.to_le_bytes());
        r[0x010..0x020].copy_from_slice(&req.family_id);
        r[0x020..0x030].copy_from_slice(&req.image_id);
        r[0x030..0x034].copy_from_slice(&req.vmpl.to_le_bytes());
        r[0x034..0x038].copy_from_slice(&1u32.to_le_bytes());
        r[0x038..0x040].copy_from_slice(&tcb);
        r[0x040..0x048].copy_from_slice(&req.platform_info.to_le_bytes());
        r[0x050..0x090].copy_from_slice(&req.report_data);
        r[0x090..0x0C0].copy_from_slice(&req.measurement);
        r[0x0C0..0x0E0].copy_from_slice(&req.host_data);
        r[0x0E0..0x110].copy_from_slice(&req.id_key_digest);
        aws_lc_rs::rand::fill(&mut r[0x140..0x160]).map_err(|_| "random number generator failed".to_owned())?;
        r[0x160..0x180].fill(0xff);
        r[0x180..0x188].copy_from_slice(&tcb);
        if req.version >= 3 {
            r[0x188..0x18B].copy_from_slice(&self.platform.cpuid());
        }
        r[0x1A0..0x1E0].copy_from_slice(&self.platform.chip_id);
        r[0x1E0..0x1E8].copy_from_slice(&tcb);
        r[0x1E8..0x1EB].copy_from_slice(&[29, 55, 1]);
        r[0x1EC..0x1EF].copy_from_slice(&[29, 55, 1]);
        r[0x1F0..0x1F8].copy_from_slice(&tcb);
        if req.version >= 5 {
            r[0x1F8..0x200].copy_from_slice(&req.mit_vectors.0.to_le_bytes());
            r[0x200..0x208].copy_from_slice(&req.mit_vectors.1.to_le_bytes());
        }
        let sig = self
            .vcek_key
            .sign(&SystemRandom::new(), &r[..SIGNED_LEN])
            .map_err(|_| "ECDSA signing failed".to_owned())?;
        let sig = sig.as_ref();
        for i in 0..48 {
            r[SIGNED_LEN + i] = sig[47 - i];
            r[SIGNED_LEN + 72 + i] = sig[95 - i];
        }
        Ok(r)
    }

    /// A CRL signed by the simulated ARK listing `revoked` serial numbers.
    pub fn crl(&self, revoked: &[&[u8]], this_update: UnixTime, next_update: UnixTime) -> Result<Vec<u8>, String> {
        let alg = der::rsassa_pss_sha384();
        let entries: Vec<Vec<u8>> =
            revoked.iter().map(|s| der::seq(&[&der::uint(s), &der::time(this_update)])).collect();
        let entry_refs: Vec<&[u8]> = entries.iter().map(Vec::as_slice).collect();
        let mut parts: Vec<Vec<u8>> = vec![
            der::uint64(1),
            alg.clone(),
            name(&format!("SIMULATED ARK-{}", self.platform.product)),
            der::time(this_update),
            der::time(next_update),
        ];
        if !entries.is_empty() {
            parts.push(der::seq(&entry_refs));
        }
        let part_refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
        let tbs = der::seq(&part_refs);
        let sig = rsa_sign(&self.ark_key, &tbs)?;
        Ok(der::seq(&[&tbs, &alg, &der::bit_string(&sig)]))
    }
}

impl EvidenceSource for SimulatedTee {
    fn name(&self) -> &'static str {
        "simulated"
    }

    fn collect(&self, report_data: &ReportData) -> Result<CollectedEvidence, CollectError> {
        let req = SimulatedReport { report_data: *report_data.as_bytes(), ..self.report_defaults.clone() };
        let report = self.report(&req).map_err(CollectError::Firmware)?;
        Ok(CollectedEvidence {
            report,
            certificates: vec![CertTableEntry { guid: VCEK_GUID, kind: CertKind::Vcek, der: self.vcek_der.clone() }],
            source: "simulated",
        })
    }
}
