//! NVIDIA GPU verification: the SPDM exchange, the device chain and RIMs in; every check and typed
//! claims out. No I/O, no clock, no call to NVIDIA's services.
//!
//! | check | passes when |
//! |---|---|
//! | `spdm_format` | the exchange parses strictly: versions, codes, every length, opaque fields, trailing bytes |
//! | `device_chain` | leaf first, each certificate signed by the next, every issuer a CA, ending at the pinned NVIDIA Device Identity CA (or, only with the dangerous option, a simulated one); the leaf is a P-384 end-entity key whose name gives the architecture (GH100: Hopper, GB100: Blackwell), agreeing with any stated one |
//! | `device_chain_validity` | every certificate of the chain is valid at the given time |
//! | `fwid` | the leaf's FWID (its DICE TCB Info extension) equals the report's FWID field, when the report has one |
//! | `report_signature` | ECDSA P-384/SHA-384 by the leaf over the request and the response up to the signature |
//! | `nonce` | (when a nonce is expected) the request nonce equals it |
//! | `rimN_signature`, `rimN_chain`, `rimN_validity` | the N-th RIM given (from 1) verifies to the pinned NVIDIA RIM root |
//! | `rimN_target` | that RIM is for this GPU's architecture and its driver or VBIOS version |
//! | `rim_measurements` | (when RIMs are given) every active golden measurement of the verified RIMs equals the report's; each mismatching index is named |
//! | `simulated_root` | (simulated chains) recorded so that no decision can miss it |
//!
//! RIM index `i` is the report's measurement block `i + 1` (SPDM block indices start at 1).

use std::collections::BTreeMap;
use std::sync::Arc;

use serde::Serialize;

use crate::check::{Check, Verification, Verified};
use crate::memo::{self, Memo};
use crate::nvidia::input::GpuEvidence;
use crate::nvidia::rim::{self, Rim, RimOutcome};
use crate::nvidia::spdm::{SpdmReport, Switch};
use crate::time::UnixTime;
use crate::x509::{Certificate, PublicKey};
use crate::{Platform, crypto, der};

const DEVICE_ROOT: &[u8] = include_bytes!("../../roots/nvidia/device_identity_ca.der");

/// GPU architectures with confidential computing.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Arch {
    /// H100 (GH100).
    Hopper,
    /// B200 and relatives (GB100).
    Blackwell,
}

impl Arch {
    /// The chip name certificates and RIMs use.
    pub fn chip(self) -> &'static str {
        match self {
            Arch::Hopper => "GH100",
            Arch::Blackwell => "GB100",
        }
    }

    /// The OID of the leaf certificate's DICE TCB Info extension that carries the FWID.
    pub fn fwid_oid(self) -> &'static str {
        match self {
            Arch::Hopper => "2.23.133.5.4.1",
            Arch::Blackwell => "2.23.133.5.4.1.1",
        }
    }

    /// From a certificate name holding the chip name as a word (`GH100 A01 GSP FMC LF`).
    pub fn from_cert_name(name: &str) -> Option<Self> {
        name.split_whitespace().find_map(|w| match w {
            "GH100" => Some(Arch::Hopper),
            "GB100" => Some(Arch::Blackwell),
            _ => None,
        })
    }

    /// From the name an evidence list uses (`HOPPER`, `blackwell`).
    pub fn from_name(name: &str) -> Option<Self> {
        [Arch::Hopper, Arch::Blackwell].into_iter().find(|a| format!("{a:?}").eq_ignore_ascii_case(name))
    }
}

/// What a given RIM was, as far as it verified.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RimClaim {
    /// Position among the RIMs given (from 1), as in the check names.
    pub position: usize,
    /// Whether its signature, chain and validity verified.
    pub verified: bool,
    /// `driver` or `vbios` when it names one of this GPU's versions.
    pub covers: Option<&'static str>,
    /// Its content, when verified.
    pub tag_id: Option<String>,
    /// The version it describes.
    pub version: Option<String>,
    /// Its signer.
    pub signer: Option<String>,
}

/// What a GPU's evidence states, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct GpuClaims {
    /// `nvidia`, or `simulated` for the development simulator.
    pub platform: Platform,
    /// The architecture, from the device certificate.
    pub arch: Option<Arch>,
    /// The requester's nonce in the signed request.
    pub nonce: String,
    /// Driver version.
    pub driver_version: Option<String>,
    /// VBIOS version.
    pub vbios_version: Option<String>,
    /// The FWID of the report (or of the certificate when the report has none).
    pub fwid: Option<String>,
    /// Serial number of the device certificate: the device's identity.
    pub device_serial: Option<String>,
    /// Confidential-computing mode. SPDM evidence does not carry it (the host reads it through
    /// NVML, which is not evidence), so it is always `None`: a policy cannot rely on it.
    pub cc_mode: Option<String>,
    /// Developer-tools mode: not carried either, always `None`.
    pub dev_tools_mode: Option<bool>,
    /// NVDEC0 status.
    pub nvdec0_status: Option<Switch>,
    /// Protected PCIe status.
    pub protected_pcie_status: Option<Switch>,
    /// Passthrough mode from the feature flag: `spt`, `mpt`, `ppcie`, or `unknown(n)`.
    pub feature_flag: Option<String>,
    /// Opaque data format version.
    pub opaque_data_version: Option<u16>,
    /// Board, chip and project identifiers.
    pub ids: BTreeMap<&'static str, String>,
    /// Measurement blocks by SPDM index (hex).
    pub measurements: BTreeMap<u8, String>,
    /// Measurement counts by index (from 1).
    pub measurement_counts: Vec<u32>,
    /// Opaque fields this verifier does not interpret, by type (hex).
    pub other_opaque_fields: BTreeMap<u16, String>,
    /// Zero bytes found after the signature.
    pub trailing_zero_bytes: usize,
    /// The RIMs given.
    pub rims: Vec<RimClaim>,
    /// A verified driver RIM was compared and every active measurement matched.
    pub driver_rim_matched: bool,
    /// A verified VBIOS RIM was compared and every active measurement matched.
    pub vbios_rim_matched: bool,
    /// RIM indices whose measurement did not match.
    pub mismatched_indices: Vec<u32>,
}

/// The outcome of verifying one GPU's evidence.
pub type GpuVerification = Verification<GpuClaims>;

/// Claims of GPU evidence that passed every check.
pub type VerifiedGpu = Verified<GpuClaims>;

/// The time-independent outcome of checking one device chain.
#[derive(Debug)]
struct DeviceChain {
    check: Check,
    certs: Vec<Certificate>,
    leaf_point: Option<Vec<u8>>,
    arch: Option<Arch>,
    fwid: Result<Vec<u8>, String>,
    simulated: bool,
}

/// Verifies NVIDIA GPU evidence against the pinned NVIDIA roots.
#[derive(Debug)]
pub struct NvidiaVerifier {
    root: Result<Certificate, String>,
    rim_root: Result<Certificate, String>,
    simulated_root: Option<Certificate>,
    simulated_rim_root: Option<Certificate>,
    chains: Memo<DeviceChain>,
    rims: Memo<RimOutcome>,
}

impl Default for NvidiaVerifier {
    fn default() -> Self {
        Self::new()
    }
}

/// The DICE FWID in a leaf's TCB Info extension: the first SHA-384 `FWID` found either directly in
/// the extension's SEQUENCE (Hopper's layout) or in its `fwids [6]` list (Blackwell's, as in the
/// TCG DICE TcbInfo).
fn fwid_from_extension(value: &[u8]) -> Result<Vec<u8>, String> {
    let (tag, mut body, rest) = der::read_tlv(value)?;
    if tag != 0x30 || !rest.is_empty() {
        return Err("the TCB Info extension is not one SEQUENCE".into());
    }
    let sha384 = der::oid(der::oids::SHA384);
    let as_fwid = |content: &[u8]| -> Option<Vec<u8>> {
        let (t1, _, after) = der::read_tlv(content).ok()?;
        let oid = &content[..content.len() - after.len()];
        let (t2, digest, end) = der::read_tlv(after).ok()?;
        (t1 == 0x06 && oid == sha384.as_slice() && t2 == 0x04 && digest.len() == 48 && end.is_empty())
            .then(|| digest.to_vec())
    };
    while !body.is_empty() {
        let (tag, content, rest) = der::read_tlv(body)?;
        body = rest;
        if tag == 0x30 {
            if let Some(fwid) = as_fwid(content) {
                return Ok(fwid);
            }
        } else if tag == 0xA6 {
            let mut list = content;
            while !list.is_empty() {
                let (t, item, rest) = der::read_tlv(list)?;
                list = rest;
                if let Some(fwid) = as_fwid(item).filter(|_| t == 0x30) {
                    return Ok(fwid);
                }
            }
        }
    }
    Err("the TCB Info extension holds no SHA-384 FWID".into())
}

fn feature_flag(flag: u16) -> String {
    match flag {
        0 => "spt".into(),
        1 => "mpt".into(),
        2 => "ppcie".into(),
        n => format!("unknown({n})"),
    }
}

fn short(hex: &str) -> &str {
    hex.get(..16).unwrap_or(hex)
}

impl NvidiaVerifier {
    /// A verifier trusting NVIDIA's Device Identity CA and RIM root (pinned in this crate) and
    /// nothing else.
    pub fn new() -> Self {
        Self {
            root: Certificate::from_der(DEVICE_ROOT).map_err(|e| format!("pinned NVIDIA Device Identity CA: {e}")),
            rim_root: rim::pinned_root().map_err(|e| format!("pinned NVIDIA RIM root: {e}")),
            simulated_root: None,
            simulated_rim_root: None,
            chains: Memo::default(),
            rims: Memo::default(),
        }
    }

    /// **Development only.** Also trusts a simulated device root (see the `simulated` feature),
    /// whose name must say SIMULATED. GPUs that chain to it verify with `platform: simulated` and a
    /// `simulated_root` check; bundled production policies deny that platform.
    pub fn dangerous_accept_simulated_root(mut self, root_der: &[u8]) -> Result<Self, String> {
        let root = Certificate::from_der(root_der)?;
        if !root.subject_cn.contains("SIMULATED") {
            return Err("the dangerous option only takes a root whose name says SIMULATED".into());
        }
        root.verify_signed_by(&root).map_err(|e| format!("the simulated root is not self-signed: {e}"))?;
        self.simulated_root = Some(root);
        self.chains = Memo::default();
        Ok(self)
    }

    fn chain(&self, evidence: &GpuEvidence) -> Arc<DeviceChain> {
        let key = memo::key(evidence.chain.iter().map(Vec::as_slice));
        self.chains.get_or_insert_with(key, || self.build_chain(&evidence.chain))
    }

    fn build_chain(&self, ders: &[Vec<u8>]) -> DeviceChain {
        let mut out = DeviceChain {
            check: Check::fail("device_chain", "no certificate chain was given"),
            certs: Vec::new(),
            leaf_point: None,
            arch: None,
            fwid: Err("cannot be read: no usable device certificate".into()),
            simulated: false,
        };
        let certs = match ders.iter().map(|d| Certificate::from_der(d)).collect::<Result<Vec<_>, _>>() {
            Ok(c) => c,
            Err(e) => {
                out.check = Check::fail("device_chain", e);
                return out;
            }
        };
        let Some(leaf) = certs.first() else { return out };
        let root = match &self.root {
            Ok(r) => r,
            Err(e) => {
                out.check = Check::fail("device_chain", e.clone());
                return out;
            }
        };
        let mut problems = crate::x509::chain_problems(&certs, root, "NVIDIA Device Identity CA");
        if !problems.is_empty()
            && let Some(sim) = &self.simulated_root
            && crate::x509::chain_problems(&certs, sim, "simulated root").is_empty()
        {
            problems.clear();
            out.simulated = true;
        }
        match &leaf.public_key {
            PublicKey::P384(point) => out.leaf_point = Some(point.clone()),
            _ => problems.push(format!("the leaf \"{}\" does not hold a P-384 key", leaf.subject_cn)),
        }
        if leaf.is_ca() {
            problems.push(format!(
                "the first certificate \"{}\" is a CA, not the GPU's attestation key: the leaf is missing",
                leaf.subject_cn
            ));
        }
        out.arch = Arch::from_cert_name(&leaf.subject_cn);
        match out.arch {
            Some(arch) => {
                out.fwid = match leaf.extension(arch.fwid_oid()) {
                    Ok(Some(value)) => fwid_from_extension(value),
                    Ok(None) => Err(format!("\"{}\" has no FWID extension ({})", leaf.subject_cn, arch.fwid_oid())),
                    Err(e) => Err(e),
                };
            }
            None => {
                out.fwid = Err(format!("cannot be read: \"{}\" names no known GPU", leaf.subject_cn));
                problems.push(format!("the leaf \"{}\" names no known GPU (GH100 or GB100)", leaf.subject_cn));
            }
        }
        let root_name =
            if out.simulated { "a SIMULATED development root" } else { "the pinned NVIDIA Device Identity CA" };
        out.check = if problems.is_empty() {
            Check::pass(
                "device_chain",
                format!("{} certificates from \"{}\" chain to {root_name}", certs.len(), leaf.subject_cn),
            )
        } else {
            Check::fail("device_chain", problems.join("; "))
        };
        out.certs = certs;
        out
    }

    /// **Development only.** Also trusts a simulated RIM root (see the `simulated` feature),
    /// whose name must say SIMULATED: RIMs chaining to it verify. Bundled production policies
    /// deny the simulated GPUs such RIMs describe.
    pub fn dangerous_accept_simulated_rim_root(mut self, root_der: &[u8]) -> Result<Self, String> {
        let root = Certificate::from_der(root_der)?;
        if !root.subject_cn.contains("SIMULATED") {
            return Err("the dangerous option only takes a root whose name says SIMULATED".into());
        }
        root.verify_signed_by(&root).map_err(|e| format!("the simulated RIM root is not self-signed: {e}"))?;
        self.simulated_rim_root = Some(root);
        self.rims = Memo::default();
        Ok(self)
    }

    fn rim(&self, xml: &[u8]) -> Result<Arc<RimOutcome>, String> {
        let root = self.rim_root.as_ref().map_err(Clone::clone)?;
        Ok(self.rims.get_or_insert_with(memo::key([xml]), || {
            let pinned = rim::check(xml, root);
            match &self.simulated_rim_root {
                Some(sim) if !pinned.chains() => {
                    let simulated = rim::check(xml, sim);
                    if simulated.chains() { simulated } else { pinned }
                }
                _ => pinned,
            }
        }))
    }

    /// Verifies one GPU's `evidence` at `now`: the nonce is checked when `expected_nonce` is
    /// given, and the report's measurements are compared with every RIM in `rims` (XML).
    pub fn verify(
        &self,
        evidence: &GpuEvidence,
        expected_nonce: Option<&[u8; 32]>,
        rims: &[&[u8]],
        now: UnixTime,
    ) -> GpuVerification {
        let mut checks = Vec::new();
        let report = match SpdmReport::parse(&evidence.report) {
            Ok(r) => {
                checks.push(Check::pass(
                    "spdm_format",
                    format!(
                        "SPDM 1.1 GET_MEASUREMENTS, {} measurement blocks, {} bytes signed{}",
                        r.blocks.len(),
                        r.signed_len,
                        if r.trailing_zeros > 0 {
                            format!(", {} zero bytes after the signature", r.trailing_zeros)
                        } else {
                            String::new()
                        }
                    ),
                ));
                r
            }
            Err(e) => {
                checks.push(Check::fail("spdm_format", e));
                return GpuVerification { checks, claims: None };
            }
        };
        let chain = self.chain(evidence);
        let mut chain_check = chain.check.clone();
        if let Some(stated) = &evidence.stated_arch {
            let agrees = Arch::from_name(stated).is_some_and(|a| Some(a) == chain.arch);
            if !agrees {
                chain_check = Check::fail(
                    "device_chain",
                    format!(
                        "{}{}the evidence says arch \"{stated}\" but the device certificate is for {}",
                        if chain_check.passed { "" } else { &chain_check.detail },
                        if chain_check.passed { "" } else { "; " },
                        chain.arch.map_or("an unknown GPU", Arch::chip)
                    ),
                );
            }
        }
        checks.push(chain_check);
        if !chain.certs.is_empty() {
            checks.push(crate::x509::validity_check("device_chain_validity", "device chain", &chain.certs, now));
        }
        checks.push(match (&chain.fwid, &report.opaque.fwid) {
            (Ok(cert), Some(rep)) if cert == rep => Check::pass(
                "fwid",
                format!("the report's FWID equals the device certificate's ({})", short(&hex::encode(cert))),
            ),
            (Ok(cert), Some(rep)) => Check::fail(
                "fwid",
                format!(
                    "the report's FWID {} differs from the device certificate's {}",
                    short(&hex::encode(rep)),
                    short(&hex::encode(cert))
                ),
            ),
            (Ok(_), None) => Check::pass(
                "fwid",
                "the report carries no FWID (drivers before 550); the certificate's is in the claims",
            ),
            (Err(e), _) => Check::fail("fwid", e.clone()),
        });
        checks.push(match &chain.leaf_point {
            Some(point) => {
                if crypto::verify_ecdsa_p384_sha384_fixed(
                    point,
                    &evidence.report[..report.signed_len],
                    &report.signature,
                ) {
                    Check::pass("report_signature", "ECDSA P-384/SHA-384 signature by the device key verifies")
                } else {
                    Check::fail("report_signature", "the signature does not verify with the device certificate's key")
                }
            }
            None => Check::fail("report_signature", "cannot be checked without a usable device certificate"),
        });
        if let Some(expected) = expected_nonce {
            checks.push(if &report.nonce == expected {
                Check::pass("nonce", "the request nonce is the expected one")
            } else {
                Check::fail(
                    "nonce",
                    format!(
                        "the request nonce {} is not the expected {}: evidence from another session, or replayed",
                        hex::encode(report.nonce),
                        hex::encode(expected)
                    ),
                )
            });
        }
        if chain.simulated {
            checks.push(Check::pass(
                "simulated_root",
                "the device chain ends at a SIMULATED development root, trusted only through the dangerous option",
            ));
        }
        let mut claims = self.claims(&report, &chain);
        self.appraise(&report, &chain, rims, now, &mut checks, &mut claims);
        GpuVerification { checks, claims: Some(claims) }
    }

    fn claims(&self, report: &SpdmReport, chain: &DeviceChain) -> GpuClaims {
        let op = &report.opaque;
        let known = [3u16, 4, 6, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 34, 36];
        GpuClaims {
            platform: if chain.simulated { Platform::Simulated } else { Platform::Nvidia },
            arch: chain.arch,
            nonce: hex::encode(report.nonce),
            driver_version: op.driver_version.clone(),
            vbios_version: op.vbios_version.clone(),
            fwid: op.fwid.as_ref().or(chain.fwid.as_ref().ok()).map(hex::encode),
            device_serial: chain.certs.first().map(|c| hex::encode(&c.serial)),
            cc_mode: None,
            dev_tools_mode: None,
            nvdec0_status: op.nvdec0_status,
            protected_pcie_status: op.protected_pcie_status,
            feature_flag: op.feature_flag.map(feature_flag),
            opaque_data_version: op.opaque_data_version,
            ids: op.text.clone(),
            measurements: report.blocks.iter().map(|b| (b.index, hex::encode(&b.value))).collect(),
            measurement_counts: op.measurement_counts.clone(),
            other_opaque_fields: op
                .raw
                .iter()
                .filter(|(k, _)| !known.contains(k))
                .map(|(k, v)| (*k, hex::encode(v)))
                .collect(),
            trailing_zero_bytes: report.trailing_zeros,
            rims: Vec::new(),
            driver_rim_matched: false,
            vbios_rim_matched: false,
            mismatched_indices: Vec::new(),
        }
    }

    /// Verifies each RIM, checks it is for this GPU, and compares the measurements.
    fn appraise(
        &self,
        report: &SpdmReport,
        chain: &DeviceChain,
        rims: &[&[u8]],
        now: UnixTime,
        checks: &mut Vec<Check>,
        claims: &mut GpuClaims,
    ) {
        if rims.is_empty() {
            return;
        }
        let driver = report.opaque.driver_version.as_deref();
        let vbios = report.opaque.vbios_version.as_deref();
        let outcomes: Vec<Result<Arc<RimOutcome>, String>> = rims.iter().map(|x| self.rim(x)).collect();
        let mut usable: Vec<(&'static str, &Rim)> = Vec::new();
        for (i, outcome) in outcomes.iter().enumerate() {
            let n = i + 1;
            let mut claim =
                RimClaim { position: n, verified: false, covers: None, tag_id: None, version: None, signer: None };
            let rim = match outcome {
                Ok(outcome) => {
                    let (rim_checks, rim) = outcome.at(now);
                    checks.extend(
                        rim_checks
                            .into_iter()
                            .map(|c| Check { name: c.name.replacen("rim", &format!("rim{n}"), 1), ..c }),
                    );
                    rim
                }
                Err(e) => {
                    checks.push(Check::fail(format!("rim{n}_signature"), e.clone()));
                    None
                }
            };
            if let Some(rim) = rim {
                claim.verified = true;
                claim.tag_id = Some(rim.tag_id.clone());
                claim.version = Some(rim.version.clone());
                claim.signer = Some(rim.signer.clone());
                let covers = if driver.is_some_and(|d| d.eq_ignore_ascii_case(&rim.version)) {
                    Some("driver")
                } else if vbios.is_some_and(|v| v.eq_ignore_ascii_case(&rim.version)) {
                    Some("vbios")
                } else {
                    None
                };
                let chip = chain.arch.map(Arch::chip);
                let target = match (covers, chip) {
                    (_, Some(chip))
                        if !rim.product.eq_ignore_ascii_case(chip) || !rim.name.eq_ignore_ascii_case(chip) =>
                    {
                        Check::fail(
                            format!("rim{n}_target"),
                            format!("the RIM is for {} but the GPU is a {chip}", rim.product),
                        )
                    }
                    (_, None) => Check::fail(format!("rim{n}_target"), "the GPU's architecture is unknown"),
                    (None, _) => Check::fail(
                        format!("rim{n}_target"),
                        format!(
                            "the RIM describes version {} but the GPU runs driver {} and VBIOS {}",
                            rim.version,
                            driver.unwrap_or("(none)"),
                            vbios.unwrap_or("(none)")
                        ),
                    ),
                    (Some(kind), Some(chip)) => {
                        usable.push((kind, rim));
                        Check::pass(format!("rim{n}_target"), format!("{chip} {kind} RIM for version {}", rim.version))
                    }
                };
                claim.covers = covers;
                checks.push(target);
            }
            claims.rims.push(claim);
        }
        checks.push(compare(report, &usable, claims));
    }
}

/// Compares the report's measurements with the active golden measurements of the usable RIMs.
fn compare(report: &SpdmReport, usable: &[(&'static str, &Rim)], claims: &mut GpuClaims) -> Check {
    if usable.is_empty() {
        return Check::fail("rim_measurements", "no verified RIM for this GPU to compare the measurements with");
    }
    let mut problems = Vec::new();
    let mut owner: BTreeMap<u32, &'static str> = BTreeMap::new();
    let mut failed_kinds: Vec<&'static str> = Vec::new();
    let mut compared = 0usize;
    for (kind, rim) in usable {
        if usable.iter().filter(|(k, _)| k == kind).count() > 1 {
            if !failed_kinds.contains(kind) {
                problems.push(format!("more than one {kind} RIM was given"));
                failed_kinds.push(kind);
            }
            continue;
        }
        for m in rim.measurements.iter().filter(|m| m.active) {
            if let Some(other) = owner.insert(m.index, kind) {
                problems.push(format!("index {} is active in both the {other} and the {kind} RIM", m.index));
                failed_kinds.extend([*kind, other]);
                continue;
            }
            compared += 1;
            let actual = u8::try_from(m.index + 1).ok().and_then(|i| report.measurement(i)).map(hex::encode);
            let ok = actual.as_ref().is_some_and(|a| m.alternatives.iter().any(|alt| alt == a));
            if !ok {
                claims.mismatched_indices.push(m.index);
                failed_kinds.push(kind);
                problems.push(match actual {
                    Some(a) => format!(
                        "index {} ({kind} RIM {}): the GPU measured {}…, the RIM allows {}",
                        m.index,
                        rim.version,
                        short(&a),
                        m.alternatives.iter().map(|x| format!("{}…", short(x))).collect::<Vec<_>>().join(" or ")
                    ),
                    None => format!(
                        "index {} ({kind} RIM {}): the report has no measurement block {}",
                        m.index,
                        rim.version,
                        m.index + 1
                    ),
                });
            }
        }
    }
    claims.mismatched_indices.sort_unstable();
    claims.mismatched_indices.dedup();
    let matched = |kind: &str| usable.iter().any(|(k, _)| *k == kind) && !failed_kinds.contains(&kind);
    claims.driver_rim_matched = matched("driver");
    claims.vbios_rim_matched = matched("vbios");
    if problems.is_empty() {
        Check::pass("rim_measurements", format!("all {compared} active golden measurements match"))
    } else {
        Check::fail("rim_measurements", problems.join("; "))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arch_names() {
        assert_eq!(Arch::from_cert_name("GH100 A01 GSP FMC LF"), Some(Arch::Hopper));
        assert_eq!(Arch::from_cert_name("SIMULATED GB100 A01 GSP FMC LF"), Some(Arch::Blackwell));
        assert_eq!(Arch::from_cert_name("NVIDIA Device Identity CA"), None);
        assert_eq!(Arch::from_name("HOPPER"), Some(Arch::Hopper));
        assert_eq!(Arch::from_name("blackwell"), Some(Arch::Blackwell));
        assert_eq!(Arch::from_name("ampere"), None);
    }

    #[test]
    fn fwid_layouts() {
        let fwid = der::seq(&[&der::oid(der::oids::SHA384), &der::octet_string(&[7; 48])]);
        let hopper = der::seq(&[&der::uint64(1), &der::seq(&[&der::null()]), &fwid]);
        assert_eq!(fwid_from_extension(&hopper).unwrap(), vec![7; 48]);
        let blackwell = der::seq(&[&der::tlv(0x80, b"NVIDIA"), &der::tlv(0xA6, &fwid)]);
        assert_eq!(fwid_from_extension(&blackwell).unwrap(), vec![7; 48]);
        let sha256 = der::seq(&[&der::oid(&[2, 16, 840, 1, 101, 3, 4, 2, 1]), &der::octet_string(&[7; 32])]);
        assert!(fwid_from_extension(&der::seq(&[&sha256])).is_err());
        assert!(fwid_from_extension(&[0x30, 0x05]).is_err());
    }
}
