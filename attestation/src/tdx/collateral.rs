//! DCAP collateral in the two forms it arrives in: dcap-qvl's JSON (the raw signed TCB Info and
//! QE Identity JSON texts, hex signatures and CRLs, PEM issuer chains) and raw Intel PCS
//! responses (`{"tcbInfo": …, "signature": …}` bodies, DER CRLs, PEM chains from the HTTP
//! headers). The signed JSON is kept as the exact bytes Intel signed.

use serde_json::value::RawValue;

use crate::time::UnixTime;
use crate::x509::{Certificate, Crl, certificates_from_pem_or_der};

/// A validity window: from, until.
pub(crate) type Window = (UnixTime, UnixTime);

/// One collateral item's window, with the check name and message prepared once.
#[derive(Debug, Clone)]
pub(crate) struct CollateralWindow {
    /// The check name, `<item>_validity`.
    pub check: String,
    /// The item, for messages (`tcb_info`, `pck_crl_issuer_chain "Intel SGX Root CA"`).
    pub name: String,
    /// The window, or why it could not be read.
    pub window: Result<Window, String>,
    /// The message when `now` is inside the window.
    pub inside: String,
}

/// Collateral for one quote, ready for verification. Its validity windows and a fingerprint of
/// its exact contents are computed once, when it is made.
#[derive(Clone)]
pub struct TdxCollateral {
    pub(crate) inner: dcap_qvl::QuoteCollateralV3,
    windows: Vec<CollateralWindow>,
    fingerprint: [u8; 32],
}

impl std::fmt::Debug for TdxCollateral {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "TdxCollateral {{ tcb_info: {} bytes, qe_identity: {} bytes }}",
            self.inner.tcb_info.len(),
            self.inner.qe_identity.len()
        )
    }
}

/// Raw Intel PCS responses (and the issuer chains PCS sends in HTTP headers).
#[derive(Debug, Clone, Copy)]
pub struct PcsCollateral<'a> {
    /// `GET /tdx/certification/v4/tcb` (or `/sgx/…`) response body.
    pub tcb_info_response: &'a [u8],
    /// `GET /…/qe/identity` response body.
    pub qe_identity_response: &'a [u8],
    /// The PCK CRL (DER, PEM or hex).
    pub pck_crl: &'a [u8],
    /// The root CA CRL (DER, PEM or hex).
    pub root_crl: &'a [u8],
    /// TCB-Info-Issuer-Chain (PEM).
    pub tcb_info_issuer_chain: &'a [u8],
    /// SGX-Enclave-Identity-Issuer-Chain (PEM).
    pub qe_identity_issuer_chain: &'a [u8],
    /// SGX-PCK-CRL-Issuer-Chain (PEM).
    pub pck_crl_issuer_chain: &'a [u8],
}

fn hex_field(doc: &serde_json::Value, key: &str) -> Result<Vec<u8>, String> {
    let text = doc.get(key).and_then(|v| v.as_str()).ok_or_else(|| format!("collateral has no \"{key}\" string"))?;
    hex::decode(text.trim()).map_err(|_| format!("collateral \"{key}\" is not hex"))
}

fn str_field(doc: &serde_json::Value, key: &str) -> Result<String, String> {
    doc.get(key)
        .and_then(|v| v.as_str())
        .map(str::to_owned)
        .ok_or_else(|| format!("collateral has no \"{key}\" string"))
}

/// A CRL given as DER, PEM (`X509 CRL`) or hex text, returned as DER.
fn crl_der(bytes: &[u8]) -> Result<Vec<u8>, String> {
    if bytes.starts_with(b"-----") {
        let pem = x509_parser::pem::Pem::iter_from_buffer(bytes).next().ok_or("no PEM block in the CRL")?;
        return pem.map(|p| p.contents).map_err(|e| format!("bad PEM CRL: {e}"));
    }
    if bytes.first() == Some(&0x30) {
        return Ok(bytes.to_vec());
    }
    let text = std::str::from_utf8(bytes).map_err(|_| "the CRL is neither DER, PEM nor hex")?;
    hex::decode(text.trim()).map_err(|_| "the CRL is neither DER, PEM nor hex".to_owned())
}

/// The exact text of `"key"`'s value in a JSON document (the bytes Intel signed).
fn raw_member(doc: &[u8], key: &str) -> Result<(String, Vec<u8>), String> {
    #[derive(serde::Deserialize)]
    struct Signed<'a> {
        #[serde(borrow, rename = "tcbInfo")]
        tcb_info: Option<&'a RawValue>,
        #[serde(borrow, rename = "enclaveIdentity")]
        enclave_identity: Option<&'a RawValue>,
        signature: Option<String>,
    }
    let signed: Signed<'_> = serde_json::from_slice(doc).map_err(|e| format!("not a PCS {key} response: {e}"))?;
    let body = match key {
        "tcbInfo" => signed.tcb_info,
        _ => signed.enclave_identity,
    }
    .ok_or_else(|| format!("the PCS response has no \"{key}\""))?;
    let sig = signed.signature.ok_or("the PCS response has no \"signature\"")?;
    let sig = hex::decode(sig.trim()).map_err(|_| "the PCS signature is not hex".to_owned())?;
    Ok((body.get().to_owned(), sig))
}

fn pem_text(bytes: &[u8], what: &str) -> Result<String, String> {
    let text = std::str::from_utf8(bytes).map_err(|_| format!("the {what} is not PEM text"))?;
    certificates_from_pem_or_der(bytes).map_err(|e| format!("the {what}: {e}"))?;
    Ok(text.to_owned())
}

impl TdxCollateral {
    /// dcap-qvl's JSON collateral layout.
    pub fn from_dcap_json(bytes: &[u8]) -> Result<Self, String> {
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("collateral is not JSON: {e}"))?;
        Ok(Self::new(dcap_qvl::QuoteCollateralV3 {
            pck_crl_issuer_chain: str_field(&doc, "pck_crl_issuer_chain")?,
            root_ca_crl: hex_field(&doc, "root_ca_crl")?,
            pck_crl: hex_field(&doc, "pck_crl")?,
            tcb_info_issuer_chain: str_field(&doc, "tcb_info_issuer_chain")?,
            tcb_info: str_field(&doc, "tcb_info")?,
            tcb_info_signature: hex_field(&doc, "tcb_info_signature")?,
            qe_identity_issuer_chain: str_field(&doc, "qe_identity_issuer_chain")?,
            qe_identity: str_field(&doc, "qe_identity")?,
            qe_identity_signature: hex_field(&doc, "qe_identity_signature")?,
            pck_certificate_chain: doc.get("pck_certificate_chain").and_then(|v| v.as_str()).map(str::to_owned),
        }))
    }

    /// Raw Intel PCS responses.
    pub fn from_pcs(parts: &PcsCollateral<'_>) -> Result<Self, String> {
        let (tcb_info, tcb_info_signature) = raw_member(parts.tcb_info_response, "tcbInfo")?;
        let (qe_identity, qe_identity_signature) = raw_member(parts.qe_identity_response, "enclaveIdentity")?;
        Ok(Self::new(dcap_qvl::QuoteCollateralV3 {
            pck_crl_issuer_chain: pem_text(parts.pck_crl_issuer_chain, "PCK CRL issuer chain")?,
            root_ca_crl: crl_der(parts.root_crl)?,
            pck_crl: crl_der(parts.pck_crl)?,
            tcb_info_issuer_chain: pem_text(parts.tcb_info_issuer_chain, "TCB Info issuer chain")?,
            tcb_info,
            tcb_info_signature,
            qe_identity_issuer_chain: pem_text(parts.qe_identity_issuer_chain, "QE Identity issuer chain")?,
            qe_identity,
            qe_identity_signature,
            pck_certificate_chain: None,
        }))
    }

    fn new(inner: dcap_qvl::QuoteCollateralV3) -> Self {
        let c = &inner;
        let fingerprint = crate::memo::key([
            c.pck_crl_issuer_chain.as_bytes(),
            &c.root_ca_crl,
            &c.pck_crl,
            c.tcb_info_issuer_chain.as_bytes(),
            c.tcb_info.as_bytes(),
            &c.tcb_info_signature,
            c.qe_identity_issuer_chain.as_bytes(),
            c.qe_identity.as_bytes(),
            &c.qe_identity_signature,
            c.pck_certificate_chain.as_deref().unwrap_or("").as_bytes(),
        ]);
        let windows = Self::compute_windows(c)
            .into_iter()
            .map(|(name, window)| CollateralWindow {
                check: format!("{}_validity", name.split(' ').next().unwrap_or(&name)),
                inside: match &window {
                    Ok((from, until)) => format!("{name} valid {from} .. {until}"),
                    Err(_) => String::new(),
                },
                name,
                window,
            })
            .collect();
        Self { inner, windows, fingerprint }
    }

    /// Every collateral item with its validity window (from, until), or a parse problem.
    pub(crate) fn windows(&self) -> &[CollateralWindow] {
        &self.windows
    }

    /// A digest of the exact collateral contents.
    pub(crate) fn fingerprint(&self) -> &[u8; 32] {
        &self.fingerprint
    }

    fn compute_windows(c: &dcap_qvl::QuoteCollateralV3) -> Vec<(String, Result<Window, String>)> {
        let json_window = |text: &str| -> Result<Window, String> {
            let doc: serde_json::Value = serde_json::from_str(text).map_err(|e| format!("not JSON: {e}"))?;
            let time = |k: &str| {
                doc.get(k).and_then(|v| v.as_str()).ok_or(format!("no {k}")).and_then(UnixTime::parse_rfc3339)
            };
            Ok((time("issueDate")?, time("nextUpdate")?))
        };
        let crl_window = |der: &[u8]| -> Result<Window, String> {
            let crl = Crl::from_der(der)?;
            Ok((crl.this_update, crl.next_update.ok_or("the CRL has no nextUpdate")?))
        };
        let mut out = vec![
            ("tcb_info".to_owned(), json_window(&c.tcb_info)),
            ("qe_identity".to_owned(), json_window(&c.qe_identity)),
            ("pck_crl".to_owned(), crl_window(&c.pck_crl)),
            ("root_ca_crl".to_owned(), crl_window(&c.root_ca_crl)),
        ];
        for (name, chain) in [
            ("tcb_info_issuer_chain", &c.tcb_info_issuer_chain),
            ("qe_identity_issuer_chain", &c.qe_identity_issuer_chain),
            ("pck_crl_issuer_chain", &c.pck_crl_issuer_chain),
        ] {
            match certificates_from_pem_or_der(chain.as_bytes()) {
                Ok(certs) => {
                    for der in certs {
                        out.push(match Certificate::from_der(&der) {
                            Ok(cert) => {
                                (format!("{name} \"{}\"", cert.subject_cn), Ok((cert.not_before, cert.not_after)))
                            }
                            Err(e) => (name.to_owned(), Err(e)),
                        });
                    }
                }
                Err(e) => out.push((name.to_owned(), Err(e))),
            }
        }
        out
    }
}
