//! Intel DCAP quote structure (Intel SGX/TDX DCAP Quote Generation Library and Quote Verification
//! Library, quote formats v3, v4 and v5): enough to check the layout, find where the signed quote
//! ends, and read the report fields. Signatures, chains and TCB levels are verified by dcap-qvl.
//!
//! ```text
//! header (48): version u16, attestation key type u16 (2 = ECDSA P-256), TEE type u32
//!              (0 SGX, 0x81 TDX), QE SVN u16, PCE SVN u16, QE vendor id [16], user data [20]
//! body:        v3: SGX enclave report (384)
//!              v4: TD report 1.0 (584)
//!              v5: body type u16 (1 SGX, 2 TD 1.0, 3 TD 1.5, 4 TD 1.5ex), size u32, body
//! signature data length u32, signature data
//! ```
//!
//! Trailing bytes: Intel's quote generation returns fixed-size buffers, so zero padding after the
//! signature data is normal and accepted; any non-zero byte there is rejected (it is not signed,
//! and a careless consumer might read it).

/// TEE types.
pub const TEE_SGX: u32 = 0x0000_0000;
/// TEE types.
pub const TEE_TDX: u32 = 0x0000_0081;
const HEADER_LEN: usize = 48;
const SGX_REPORT_LEN: usize = 384;
const TD10_LEN: usize = 584;
const TD15_LEN: usize = 648;

/// Which report a quote carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Body {
    /// An SGX enclave report.
    Sgx,
    /// A TDX 1.0 TD report.
    Td10,
    /// A TDX 1.5 TD report.
    Td15,
    /// A TDX 1.5 TD report with the extension fields.
    Td15Ex,
}

/// A parsed quote layout.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QuoteLayout {
    /// Quote version (3, 4 or 5).
    pub version: u16,
    /// TEE type.
    pub tee_type: u32,
    /// The report kind.
    pub body: Body,
    /// Offset and length of the report body.
    pub body_range: (usize, usize),
    /// Where the signed quote (signature data included) ends.
    pub end: usize,
    /// QE SVN and PCE SVN from the header.
    pub qe_svn: u16,
    /// PCE SVN from the header.
    pub pce_svn: u16,
    /// Where the PEM PCK certificate chain sits in the quote (certification data type 5).
    pub pck_chain: Option<(usize, usize)>,
    /// Offset and length of the signature data (the signed quote is everything before it, less
    /// its 4-byte length).
    pub signature_data: (usize, usize),
}

impl QuoteLayout {
    /// The bytes the attestation key signs: header and body.
    pub fn signed<'a>(&self, quote: &'a [u8]) -> &'a [u8] {
        &quote[..self.signature_data.0 - 4]
    }

    /// The signature data's parts: (ECDSA signature, attestation key, QE report, QE report
    /// signature, QE authentication data). The layout was checked by [`parse`].
    pub fn signature_parts<'a>(&self, quote: &'a [u8]) -> Option<SignatureParts<'a>> {
        let (at, len) = self.signature_data;
        let sig = quote.get(at..at + len)?;
        let qe = if self.version == 3 { 128 } else { 134 };
        let auth_len = usize::from(u16_at(sig, qe + SGX_REPORT_LEN + 64)?);
        let auth_at = qe + SGX_REPORT_LEN + 66;
        Some(SignatureParts {
            signature: sig.get(..64)?,
            attestation_key: sig.get(64..128)?,
            qe_report: sig.get(qe..qe + SGX_REPORT_LEN)?,
            qe_report_signature: sig.get(qe + SGX_REPORT_LEN..qe + SGX_REPORT_LEN + 64)?,
            auth_data: sig.get(auth_at..auth_at + auth_len)?,
        })
    }
}

/// The parts of the signature data that bind the quote to the PCK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SignatureParts<'a> {
    /// ECDSA P-256 `r ‖ s` over header and body, by the attestation key.
    pub signature: &'a [u8],
    /// The attestation key, `x ‖ y`.
    pub attestation_key: &'a [u8],
    /// The Quoting Enclave's report.
    pub qe_report: &'a [u8],
    /// ECDSA P-256 `r ‖ s` over the QE report, by the PCK.
    pub qe_report_signature: &'a [u8],
    /// QE authentication data.
    pub auth_data: &'a [u8],
}

fn u16_at(b: &[u8], at: usize) -> Option<u16> {
    Some(u16::from_le_bytes(b.get(at..at + 2)?.try_into().ok()?))
}

fn u32_at(b: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_le_bytes(b.get(at..at + 4)?.try_into().ok()?))
}

/// A quote as files carry it: hex text (with or without `0x`, any whitespace) is decoded,
/// anything else is taken as the raw quote (which starts with a binary version, never hex).
pub fn from_bytes(bytes: &[u8]) -> Vec<u8> {
    crate::encoding::hex_text(bytes).unwrap_or_else(|| bytes.to_vec())
}

/// Parses the layout. `Err` when the structure cannot be followed at all; otherwise the layout
/// and every problem found in it (an empty list for a well-formed quote), so that the quote's
/// signatures can still be checked and every failure reported.
pub fn parse(quote: &[u8]) -> Result<(QuoteLayout, Vec<String>), String> {
    let short = || format!("the quote ({} bytes) ends inside its structure", quote.len());
    let version = u16_at(quote, 0).ok_or_else(short)?;
    let key_type = u16_at(quote, 2).ok_or_else(short)?;
    let tee_type = u32_at(quote, 4).ok_or_else(short)?;
    let qe_svn = u16_at(quote, 8).ok_or_else(short)?;
    let pce_svn = u16_at(quote, 10).ok_or_else(short)?;
    let mut problems = Vec::new();
    if key_type != 2 {
        problems.push(format!("attestation key type {key_type} is not ECDSA P-256 (2)"));
    }
    let (body, body_start, body_len) = match (version, tee_type) {
        (3, TEE_SGX) => (Body::Sgx, HEADER_LEN, SGX_REPORT_LEN),
        (4, TEE_TDX) => (Body::Td10, HEADER_LEN, TD10_LEN),
        (5, TEE_TDX | TEE_SGX) => {
            let kind = u16_at(quote, HEADER_LEN).ok_or_else(short)?;
            let size = u32_at(quote, HEADER_LEN + 2).ok_or_else(short)? as usize;
            let (body, expected) = match kind {
                1 => (Body::Sgx, SGX_REPORT_LEN),
                2 => (Body::Td10, TD10_LEN),
                3 => (Body::Td15, TD15_LEN),
                4 => (Body::Td15Ex, size),
                other => return Err(format!("quote v5 body type {other} is unknown")),
            };
            if size != expected || size < TD15_LEN && body == Body::Td15Ex {
                problems.push(format!("quote v5 body of type {kind} has size {size}, expected {expected}"));
            }
            (body, HEADER_LEN + 6, size)
        }
        (v, t) => return Err(format!("quote version {v} with TEE type {t:#x} is not supported (v3 SGX, v4/v5 TDX)")),
    };
    let sig_len_at = body_start + body_len;
    let sig_len = u32_at(quote, sig_len_at).ok_or_else(short)? as usize;
    let end = sig_len_at + 4 + sig_len;
    if quote.len() < end {
        return Err(format!(
            "the quote declares {sig_len} bytes of signature data but ends {} bytes early",
            end - quote.len()
        ));
    }
    if let Some(i) = quote[end..].iter().position(|&b| b != 0) {
        problems.push(format!(
            "{} unsigned byte(s) follow the signature data and byte {} of them is not zero padding",
            quote.len() - end,
            i
        ));
    }
    let pck_chain = match check_signature_data(&quote[sig_len_at + 4..end], version) {
        Ok(range) => range.map(|(at, len)| (sig_len_at + 4 + at, len)),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    Ok((
        QuoteLayout {
            version,
            tee_type,
            body,
            body_range: (body_start, body_len),
            end,
            qe_svn,
            pce_svn,
            pck_chain,
            signature_data: (sig_len_at + 4, sig_len),
        },
        problems,
    ))
}

/// The signature data's own lengths must add up exactly; returns where a PEM PCK chain sits.
fn check_signature_data(sig: &[u8], version: u16) -> Result<Option<(usize, usize)>, String> {
    let bad = |what: &str| format!("signature data: {what}");
    // ECDSA signature (64) and attestation key (64).
    let mut at = 128;
    // QE report, its signature, QE authentication data, then the PCK certification data; in v4/v5
    // all of that is nested in certification data of type 6.
    if version != 3 {
        let kind = u16_at(sig, at).ok_or_else(|| bad("certification data type missing"))?;
        let size = u32_at(sig, at + 2).ok_or_else(|| bad("certification data size missing"))? as usize;
        if kind != 6 {
            return Err(bad(&format!("certification data type {kind} is not QE report certification data (6)")));
        }
        at += 6;
        if at + size != sig.len() {
            return Err(bad("the QE report certification data does not end where the signature data ends"));
        }
    }
    at += SGX_REPORT_LEN + 64;
    let auth = u16_at(sig, at).ok_or_else(|| bad("QE authentication data length missing"))? as usize;
    at += 2 + auth;
    let kind = u16_at(sig, at).ok_or_else(|| bad("PCK certification data type missing"))?;
    let size = u32_at(sig, at + 2).ok_or_else(|| bad("PCK certification data size missing"))? as usize;
    at += 6;
    if sig.get(at..at + size).is_none() {
        return Err(bad("PCK certification data runs past the end"));
    }
    // Its exact PEM form is checked with the chain (`strict_pem_chain`), once per platform.
    let chain = (kind == 5).then_some((at, size));
    at += size;
    match at.cmp(&sig.len()) {
        std::cmp::Ordering::Equal => Ok(chain),
        std::cmp::Ordering::Greater => Err(bad("the declared lengths run past the end")),
        std::cmp::Ordering::Less => Err(bad(&format!("{} bytes are not accounted for", sig.len() - at))),
    }
}

/// The PEM text of the PCK chain is not covered by any signature, so it must be exactly PEM:
/// BEGIN/END lines and base64 lines of at most 64 characters, each ended by a newline, optionally
/// followed by one NUL (Intel's quote generation adds it). Anything else (a changed whitespace
/// byte, stray text) is tampering, even if the certificates would still decode the same.
pub(crate) fn strict_pem_chain(data: &[u8]) -> Result<(), String> {
    let text = data.strip_suffix(b"\0").unwrap_or(data);
    let body = text.strip_suffix(b"\n").ok_or("does not end with a newline")?;
    let mut inside = false;
    let mut certs = 0;
    for line in body.split(|&b| b == b'\n') {
        match (line, inside) {
            (b"-----BEGIN CERTIFICATE-----", false) => inside = true,
            (b"-----END CERTIFICATE-----", true) => {
                inside = false;
                certs += 1;
            }
            (l, true)
                if !l.is_empty()
                    && l.len() <= 64
                    && l.iter().all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/' || b == b'=') => {}
            (l, _) => {
                let shown: String = String::from_utf8_lossy(&l[..l.len().min(40)]).into_owned();
                return Err(format!("unexpected line {shown:?}"));
            }
        }
    }
    if inside || certs == 0 {
        return Err("not a complete sequence of PEM certificates".into());
    }
    Ok(())
}

/// The FMSPC (6 bytes, upper-case hex as Intel's PCS spells it) in the SGX extension of the PCK
/// certificate the quote carries: the key under which Intel publishes the platform's TCB info,
/// so a verifier can look its collateral up. Read, not trusted: the quote's verification
/// checks the PCK chain and the collateral's own signatures.
pub fn pck_fmspc(quote: &[u8]) -> Result<String, String> {
    use x509_parser::der_parser::ber::BerObjectContent;
    use x509_parser::der_parser::parse_der;
    const SGX_EXTENSIONS: &str = "1.2.840.113741.1.13.1";
    const FMSPC: &str = "1.2.840.113741.1.13.1.4";
    let (layout, _) = parse(quote)?;
    let (at, len) = layout.pck_chain.ok_or("the quote carries no PCK certificate chain")?;
    let pem = quote.get(at..at + len).ok_or("the quote's PCK chain is out of bounds")?;
    let certs = crate::x509::certificates_from_pem_or_der(pem)?;
    let leaf = crate::x509::Certificate::from_der(certs.first().ok_or("the quote's PCK chain is empty")?)?;
    let ext = leaf.extension(SGX_EXTENSIONS)?.ok_or("the PCK certificate has no SGX extension")?;
    let (_, seq) = parse_der(ext).map_err(|e| format!("the PCK certificate's SGX extension: {e}"))?;
    for item in seq.as_sequence().map_err(|e| format!("the SGX extension: {e}"))? {
        let Ok(parts) = item.as_sequence() else { continue };
        let (Some(oid), Some(value)) = (parts.first(), parts.get(1)) else { continue };
        if oid.as_oid().is_ok_and(|o| o.to_id_string() == FMSPC)
            && let BerObjectContent::OctetString(bytes) = &value.content
        {
            if bytes.len() != 6 {
                return Err(format!("the PCK certificate's FMSPC is {} bytes, not 6", bytes.len()));
            }
            return Ok(hex::encode_upper(bytes));
        }
    }
    Err("the PCK certificate's SGX extension has no FMSPC".into())
}
