//! TDX/SGX quote verification: every check, and typed claims.

use serde::Serialize;

use crate::check::{Check, Verification, Verified};
use crate::memo::{self, Memo};
use crate::snp::claims::hex_bytes;
use crate::tdx::collateral::TdxCollateral;
use crate::tdx::quote::{self, Body, QuoteLayout};
use crate::time::UnixTime;
use crate::x509::{Certificate, PublicKey};

const INTEL_ROOT: &[u8] = include_bytes!("../../roots/intel/sgx_root_ca.der");

/// TD attributes, decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct TdAttributes {
    /// The raw 64-bit value (little-endian as in the report).
    pub raw: u64,
    /// DEBUG: the host can read the TD.
    pub debug: bool,
    /// Performance profiling/debug bits of TUD set (bits 4–6).
    pub profiling: bool,
    /// SEPT_VE_DISABLE.
    pub sept_ve_disable: bool,
    /// MIGRATABLE.
    pub migratable: bool,
    /// PKS.
    pub pks: bool,
    /// KL.
    pub kl: bool,
    /// PERFMON.
    pub perfmon: bool,
    /// SERVTD_EXT (a service TD can be bound).
    pub servtd_ext: bool,
}

impl TdAttributes {
    fn from_raw(raw: u64) -> Self {
        let bit = |n: u32| raw & (1 << n) != 0;
        Self {
            raw,
            debug: bit(0),
            profiling: raw & 0x70 != 0,
            servtd_ext: bit(17),
            sept_ve_disable: bit(28),
            migratable: bit(29),
            pks: bit(30),
            kl: bit(31),
            perfmon: bit(63),
        }
    }
}

/// The fields of a TD report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdClaims {
    /// TEE_TCB_SVN.
    #[serde(serialize_with = "hex_bytes")]
    pub tee_tcb_svn: [u8; 16],
    /// MRSEAM: the TDX module's measurement.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_seam: [u8; 48],
    /// MRSIGNERSEAM.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_signer_seam: [u8; 48],
    /// TD_ATTRIBUTES.
    pub td_attributes: TdAttributes,
    /// XFAM.
    #[serde(serialize_with = "hex_bytes")]
    pub xfam: [u8; 8],
    /// MRTD: the initial TD measurement.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_td: [u8; 48],
    /// MRCONFIGID.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_config_id: [u8; 48],
    /// MROWNER.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_owner: [u8; 48],
    /// MROWNERCONFIG.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_owner_config: [u8; 48],
    /// RTMR0.
    #[serde(serialize_with = "hex_bytes")]
    pub rtmr0: [u8; 48],
    /// RTMR1.
    #[serde(serialize_with = "hex_bytes")]
    pub rtmr1: [u8; 48],
    /// RTMR2.
    #[serde(serialize_with = "hex_bytes")]
    pub rtmr2: [u8; 48],
    /// RTMR3.
    #[serde(serialize_with = "hex_bytes")]
    pub rtmr3: [u8; 48],
    /// REPORTDATA.
    #[serde(serialize_with = "hex_bytes")]
    pub report_data: [u8; 64],
    /// TEE_TCB_SVN_2 (TDX 1.5).
    pub tee_tcb_svn2: Option<String>,
    /// MRSERVICETD (TDX 1.5).
    pub mr_service_td: Option<String>,
}

/// The fields of an SGX enclave report.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EnclaveClaims {
    /// MRENCLAVE.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_enclave: [u8; 32],
    /// MRSIGNER.
    #[serde(serialize_with = "hex_bytes")]
    pub mr_signer: [u8; 32],
    /// ISVPRODID.
    pub isv_prod_id: u16,
    /// ISVSVN.
    pub isv_svn: u16,
    /// ATTRIBUTES.
    #[serde(serialize_with = "hex_bytes")]
    pub attributes: [u8; 16],
    /// DEBUG attribute.
    pub debug: bool,
    /// REPORTDATA.
    #[serde(serialize_with = "hex_bytes")]
    pub report_data: [u8; 64],
}

/// What a DCAP quote states, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct TdxClaims {
    /// `tdx` or `sgx`.
    pub tee: &'static str,
    /// Quote version.
    pub quote_version: u16,
    /// Report body kind.
    pub body: Body,
    /// Converged TCB status (UpToDate, OutOfDate, SWHardeningNeeded, …) when verification got that far.
    pub tcb_status: Option<String>,
    /// Advisory ids of the matched TCB levels.
    pub advisory_ids: Vec<String>,
    /// FMSPC from the PCK certificate.
    pub fmspc: Option<String>,
    /// PCE SVN from the PCK certificate.
    pub pce_svn: Option<u16>,
    /// The matched platform TCB level's date.
    pub tcb_date: Option<String>,
    /// TCB evaluation data number.
    pub tcb_eval_data_number: Option<u32>,
    /// The earliest expiry of all collateral (when verification got that far).
    pub collateral_expires: Option<UnixTime>,
    /// TD report fields (TDX).
    pub td: Option<TdClaims>,
    /// Enclave report fields (SGX).
    pub enclave: Option<EnclaveClaims>,
}

impl TdxClaims {
    /// The report data the quote binds.
    pub fn report_data(&self) -> Option<[u8; 64]> {
        self.td.as_ref().map(|t| t.report_data).or(self.enclave.as_ref().map(|e| e.report_data))
    }
}

/// The outcome of verifying a quote: every check, and the claims when the quote's layout parsed.
pub type TdxVerification = Verification<TdxClaims>;

/// Claims of a quote that passed every check.
pub type VerifiedTdx = Verified<TdxClaims>;

/// The quote path's ECDSA P-256 primitive, exactly as dcap-qvl applies it to the attestation-key
/// signature and the QE report signature: the 64-byte field `r ‖ s` re-encoded to DER and checked
/// by webpki over ring with the uncompressed key `04 ‖ x ‖ y`. Public so that the Wycheproof P-256
/// vectors run through it; a quote's signature field is always 64 bytes, so other lengths fail.
pub fn quote_signature_verifies(attestation_key: &[u8], message: &[u8], signature: &[u8]) -> bool {
    if attestation_key.len() != 64 || signature.len() != 64 {
        return false;
    }
    let backend = dcap_qvl::verify::ring::backend();
    let mut key = [0x04u8; 65];
    key[1..].copy_from_slice(attestation_key);
    let Ok(der) = (backend.encode_ecdsa)(signature) else { return false };
    backend.sig_algo.verify_signature(&key, message, &der).is_ok()
}

/// Accepts every verified quote: acceptability is coffre-policies' decision, not the verifier's.
struct ReportEverything;

impl dcap_qvl::policy::Policy for ReportEverything {
    fn validate(&self, _claims: &dcap_qvl::QuoteClaims) -> anyhow::Result<()> {
        Ok(())
    }
}

fn arr<const N: usize>(b: &[u8], at: usize) -> [u8; N] {
    let mut out = [0u8; N];
    if let Some(src) = b.get(at..at + N) {
        out.copy_from_slice(src);
    }
    out
}

fn report_claims(quote: &[u8], layout: &QuoteLayout) -> (Option<TdClaims>, Option<EnclaveClaims>) {
    let (start, len) = layout.body_range;
    let b = &quote[start..start + len];
    match layout.body {
        Body::Sgx => {
            let attributes: [u8; 16] = arr(b, 48);
            (
                None,
                Some(EnclaveClaims {
                    mr_enclave: arr(b, 64),
                    mr_signer: arr(b, 128),
                    isv_prod_id: u16::from_le_bytes(arr(b, 256)),
                    isv_svn: u16::from_le_bytes(arr(b, 258)),
                    debug: attributes[0] & 0x02 != 0,
                    attributes,
                    report_data: arr(b, 320),
                }),
            )
        }
        Body::Td10 | Body::Td15 | Body::Td15Ex => {
            let td15 = layout.body != Body::Td10;
            (
                Some(TdClaims {
                    tee_tcb_svn: arr(b, 0),
                    mr_seam: arr(b, 16),
                    mr_signer_seam: arr(b, 64),
                    td_attributes: TdAttributes::from_raw(u64::from_le_bytes(arr(b, 120))),
                    xfam: arr(b, 128),
                    mr_td: arr(b, 136),
                    mr_config_id: arr(b, 184),
                    mr_owner: arr(b, 232),
                    mr_owner_config: arr(b, 280),
                    rtmr0: arr(b, 328),
                    rtmr1: arr(b, 376),
                    rtmr2: arr(b, 424),
                    rtmr3: arr(b, 472),
                    report_data: arr(b, 520),
                    tee_tcb_svn2: td15.then(|| hex::encode(arr::<16>(b, 584))),
                    mr_service_td: td15.then(|| hex::encode(arr::<48>(b, 600))),
                }),
                None,
            )
        }
    }
}

/// What the quote's own signature data establishes, independent of the body: memoized per
/// platform (PCK chain, QE report and its signature, attestation key, authentication data).
#[derive(Debug)]
struct PlatformChecks {
    pck: Check,
    certs: Vec<Certificate>,
    qe_signature: Check,
    qe_binding: Check,
}

/// What a successful dcap-qvl verification established about the platform's TCB.
#[derive(Debug, Clone)]
struct TcbSummary {
    status: String,
    advisory_ids: Vec<String>,
    fmspc: String,
    pce_svn: u16,
    tcb_date: String,
    eval_data_number: u32,
    expires: Option<UnixTime>,
}

/// Verifies DCAP quotes against the pinned Intel SGX Root CA.
///
/// A key broker sees many quotes from few platforms, so the work that does not depend on a
/// quote's measurements is remembered: the PCK chain and QE report checks per platform, and
/// dcap-qvl's verdict per (collateral, everything in the quote that TCB evaluation reads). A
/// remembered verdict is used only when this quote's own checks (layout, attestation-key
/// signature, PCK chain) and every collateral window pass at the time asked; only successful
/// verdicts are remembered. Every other quote goes through dcap-qvl in full.
#[derive(Debug, Default)]
pub struct TdxVerifier {
    platforms: Memo<PlatformChecks>,
    tcb: Memo<TcbSummary>,
}

impl TdxVerifier {
    /// A verifier trusting Intel's SGX Root CA (pinned in this crate) and nothing else.
    pub fn new() -> Self {
        Self::default()
    }

    /// Verifies `quote` with `collateral` at `now`, reporting every check.
    pub fn verify(&self, quote_bytes: &[u8], collateral: &TdxCollateral, now: UnixTime) -> TdxVerification {
        self.verify_inner(quote_bytes, Some(collateral), now)
    }

    /// Checks what can be checked without collateral (layout, the attestation-key and QE report
    /// signatures, the QE report binding, the PCK chain), and fails a `collateral` check: without
    /// TCB Info, QE Identity and CRLs nothing says whether the platform is up to date or revoked,
    /// so such a quote is never verified. For diagnosis of quotes whose collateral is missing.
    pub fn verify_without_collateral(&self, quote_bytes: &[u8], now: UnixTime) -> TdxVerification {
        self.verify_inner(quote_bytes, None, now)
    }

    fn verify_inner(&self, quote_bytes: &[u8], collateral: Option<&TdxCollateral>, now: UnixTime) -> TdxVerification {
        let mut checks = Vec::new();
        let layout = match quote::parse(quote_bytes) {
            Ok((l, problems)) => {
                checks.push(if problems.is_empty() {
                    Check::pass(
                        "quote_format",
                        format!("quote v{}, {:?} body, {} bytes signed", l.version, l.body, l.end),
                    )
                } else {
                    Check::fail("quote_format", problems.join("; "))
                });
                Some(l)
            }
            Err(e) => {
                checks.push(Check::fail("quote_format", e));
                None
            }
        };
        if let Some(collateral) = collateral {
            checks.extend(collateral_windows(collateral, now));
        }
        if let Some(layout) = &layout {
            checks.extend(self.own_signature_checks(quote_bytes, layout, now));
        }
        let Some(collateral) = collateral else {
            checks.push(Check::fail(
                "collateral",
                "no collateral was given: TCB status, QE identity and revocation cannot be checked",
            ));
            let claims = layout.map(|l| base_claims(quote_bytes, &l));
            return TdxVerification { checks, claims };
        };
        let Some(layout) = layout else {
            if let Err(e) = dcap_verify(quote_bytes, collateral, now) {
                checks.push(Check::fail("dcap_verification", e));
            }
            return TdxVerification { checks, claims: None };
        };
        let key = tcb_key(quote_bytes, &layout, collateral);
        let remembered = checks.iter().all(|c| c.passed).then(|| self.tcb.get(&key)).flatten();
        let tcb = match remembered {
            Some(hit) => Ok((*hit).clone()),
            None => {
                let fresh = dcap_verify(quote_bytes, collateral, now);
                if let Ok(summary) = &fresh {
                    self.tcb.insert(key, summary.clone());
                }
                fresh
            }
        };
        let mut claims = base_claims(quote_bytes, &layout);
        match tcb {
            Ok(t) => {
                checks.push(Check::pass(
                    "dcap_verification",
                    format!(
                        "signatures, PCK chain to the pinned Intel SGX Root CA, CRLs, TCB Info and QE Identity verify; TCB {}",
                        t.status
                    ),
                ));
                claims.tcb_status = Some(t.status);
                claims.advisory_ids = t.advisory_ids;
                claims.fmspc = Some(t.fmspc);
                claims.pce_svn = Some(t.pce_svn);
                claims.tcb_date = Some(t.tcb_date);
                claims.tcb_eval_data_number = Some(t.eval_data_number);
                claims.collateral_expires = t.expires;
            }
            Err(e) => checks.push(Check::fail("dcap_verification", e)),
        }
        TdxVerification { checks, claims: Some(claims) }
    }

    /// The quote's own signatures, checked here independently of dcap-qvl (so that a failure is
    /// named precisely, and so that quotes without collateral can still be diagnosed): the
    /// attestation-key signature over header and body (every time), and, remembered per
    /// platform, the PCK chain, the QE report signed by the PCK and the QE report binding the
    /// attestation key and authentication data.
    fn own_signature_checks(&self, quote_bytes: &[u8], layout: &QuoteLayout, now: UnixTime) -> Vec<Check> {
        let pem = layout.pck_chain.map_or(&[][..], |(at, len)| &quote_bytes[at..at + len]);
        let Some(parts) = layout.signature_parts(quote_bytes) else {
            let (pck, _) = pck_chain_check(pem);
            return vec![pck, Check::fail("attestation_key_signature", "the signature data could not be read")];
        };
        let platform =
            self.platforms.get_or_insert_with(platform_key(quote_bytes, layout), || platform_checks(pem, &parts));
        let mut checks = vec![platform.pck.clone()];
        if !platform.certs.is_empty() {
            checks.push(crate::x509::validity_check("pck_chain_validity", "PCK chain", &platform.certs, now));
        }
        let mut point = [0x04u8; 65];
        point[1..].copy_from_slice(parts.attestation_key);
        let signed = layout.signed(quote_bytes);
        checks.push(if crate::crypto::verify_ecdsa_p256_sha256_fixed(&point, signed, parts.signature) {
            Check::pass(
                "attestation_key_signature",
                "ECDSA P-256 signature over header and body by the attestation key verifies",
            )
        } else {
            Check::fail("attestation_key_signature", "the quote's signature does not verify with its attestation key")
        });
        checks.push(platform.qe_signature.clone());
        checks.push(platform.qe_binding.clone());
        checks
    }
}

/// dcap-qvl's full verification, summarised.
fn dcap_verify(quote_bytes: &[u8], collateral: &TdxCollateral, now: UnixTime) -> Result<TcbSummary, String> {
    let now_secs = u64::try_from(now.0).unwrap_or(0);
    let verifier = dcap_qvl::verify::QuoteVerifier::new(INTEL_ROOT.to_vec()).allow_debug(true).allow_service_td(true);
    let q = verifier
        .verify_with_policy(quote_bytes, &collateral.inner, now_secs, &ReportEverything)
        .map_err(|e| format!("{e:#}"))?;
    Ok(TcbSummary {
        status: q.tcb.status.to_string(),
        advisory_ids: q.tcb.advisory_ids.clone(),
        fmspc: hex::encode(q.platform.pck.fmspc),
        pce_svn: q.platform.pck.pce_svn,
        tcb_date: q.platform.tcb_level.tcb_date.clone(),
        eval_data_number: q.tcb.eval_data_number,
        expires: i64::try_from(q.earliest_expiration_date).ok().map(UnixTime),
    })
}

/// The memo key of dcap-qvl's verdict: the collateral, and every byte of the quote except the
/// attestation-key signature and the TD's measurements and report data (MRTD, MRCONFIGID,
/// MROWNER, MROWNERCONFIG, RTMR0–3, REPORTDATA) or an enclave's REPORTDATA: those differ from
/// quote to quote of one platform and play no part in TCB evaluation, and the signature over
/// them is checked for every quote.
fn tcb_key(quote_bytes: &[u8], layout: &QuoteLayout, collateral: &TdxCollateral) -> [u8; 32] {
    let (body_at, _) = layout.body_range;
    let (skip_from, skip_to) = match layout.body {
        Body::Sgx => (body_at + 320, body_at + 384),
        Body::Td10 | Body::Td15 | Body::Td15Ex => (body_at + 136, body_at + 584),
    };
    memo::key([
        collateral.fingerprint().as_slice(),
        &quote_bytes[..skip_from],
        &quote_bytes[skip_to..layout.signature_data.0],
        &platform_key(quote_bytes, layout),
    ])
}

/// The memo key of a platform: the signature data after the quote's own signature (attestation
/// key, QE report and its signature, authentication data, PCK certification data).
fn platform_key(quote_bytes: &[u8], layout: &QuoteLayout) -> [u8; 32] {
    let (at, len) = layout.signature_data;
    memo::key([quote_bytes.get(at + 64..at + len).unwrap_or_default()])
}

fn platform_checks(pem: &[u8], parts: &quote::SignatureParts<'_>) -> PlatformChecks {
    let (pck, certs) = if pem.is_empty() {
        (Check::fail("pck_chain", "the quote carries no PEM PCK chain (certification data type 5)"), Vec::new())
    } else {
        pck_chain_check(pem)
    };
    let qe_signature = match certs.first().map(|c| &c.public_key) {
        Some(PublicKey::P256(point))
            if crate::crypto::verify_ecdsa_p256_sha256_fixed(point, parts.qe_report, parts.qe_report_signature) =>
        {
            Check::pass("qe_report_signature", "the QE report is signed by the PCK")
        }
        Some(_) => {
            Check::fail("qe_report_signature", "the QE report signature does not verify with the PCK certificate's key")
        }
        None => Check::fail("qe_report_signature", "no PCK certificate to check the QE report with"),
    };
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(parts.attestation_key);
    ctx.update(parts.auth_data);
    let expected = ctx.finish();
    let report_data = &parts.qe_report[320..384];
    let qe_binding = if &report_data[..32] == expected.as_ref() && report_data[32..].iter().all(|&b| b == 0) {
        Check::pass("qe_report_binding", "the QE report data is SHA-256(attestation key ‖ authentication data)")
    } else {
        Check::fail("qe_report_binding", "the QE report does not bind this attestation key and authentication data")
    };
    PlatformChecks { pck, certs, qe_signature, qe_binding }
}

/// The claims a quote's layout gives, before any collateral is looked at.
fn base_claims(quote_bytes: &[u8], layout: &QuoteLayout) -> TdxClaims {
    let (td, enclave) = report_claims(quote_bytes, layout);
    TdxClaims {
        tee: if layout.tee_type == quote::TEE_TDX { "tdx" } else { "sgx" },
        quote_version: layout.version,
        body: layout.body,
        tcb_status: None,
        advisory_ids: Vec::new(),
        fmspc: None,
        pce_svn: None,
        tcb_date: None,
        tcb_eval_data_number: None,
        collateral_expires: None,
        td,
        enclave,
    }
}

/// Each collateral item's validity window at `now`.
fn collateral_windows(collateral: &TdxCollateral, now: UnixTime) -> Vec<Check> {
    collateral
        .windows()
        .iter()
        .map(|w| match &w.window {
            Ok((from, _)) if now < *from => {
                Check::fail(w.check.clone(), format!("{} is not valid before {from} (checked at {now})", w.name))
            }
            Ok((_, until)) if now > *until => {
                Check::fail(w.check.clone(), format!("{} expired at {until} (checked at {now})", w.name))
            }
            Ok(_) => Check::pass(w.check.clone(), w.inside.clone()),
            Err(e) => Check::fail(w.check.clone(), format!("{}: {e}", w.name)),
        })
        .collect()
}

/// The quote's PCK chain must be exactly a chain: each certificate signed by the next, ending at
/// the pinned Intel SGX Root CA (included byte for byte, or signing the last certificate).
/// dcap-qvl anchors on the pinned root and may ignore certificates it does not need; here every
/// certificate the quote carries must be used and intact. Returns the certificates, leaf first.
fn pck_chain_check(pem: &[u8]) -> (Check, Vec<Certificate>) {
    use crate::x509::certificates_from_pem_or_der;
    if let Err(e) = quote::strict_pem_chain(pem) {
        return (Check::fail("pck_chain", format!("the PCK certificate chain is not exactly PEM: {e}")), Vec::new());
    }
    let text = pem.strip_suffix(b"\0").unwrap_or(pem);
    let parsed: Result<Vec<Certificate>, String> = certificates_from_pem_or_der(text)
        .and_then(|ders| ders.iter().map(|d| Certificate::from_der(d)).collect::<Result<Vec<_>, _>>());
    let (certs, root) = match (parsed, Certificate::from_der(INTEL_ROOT)) {
        (Ok(c), Ok(r)) => (c, r),
        (Err(e), _) | (_, Err(e)) => return (Check::fail("pck_chain", e), Vec::new()),
    };
    let problems = crate::x509::chain_problems(&certs, &root, "Intel SGX Root CA");
    let check = if problems.is_empty() {
        Check::pass("pck_chain", format!("{} certificates chain to the pinned Intel SGX Root CA", certs.len()))
    } else {
        Check::fail("pck_chain", problems.join("; "))
    };
    (check, certs)
}
