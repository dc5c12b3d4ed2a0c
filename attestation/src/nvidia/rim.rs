//! NVIDIA Reference Integrity Manifests: SWID tags (ISO/IEC 19770-2) with golden GPU measurements,
//! signed with enveloped XML-DSig (Canonical XML 1.1, ECDSA P-384/SHA-384) by a certificate
//! chaining to the pinned NVIDIA RIM root.
//!
//! The signature is accepted only in exactly the expected shape, which rules out signature
//! wrapping: one `ds:Signature`, a child of the document element; one `ds:Reference` with
//! `URI=""`; transforms exactly enveloped-signature then C14N 1.1; SHA-384; ECDSA-SHA384. The
//! measurements are then read from that same, now verified, document.

use aws_lc_rs::digest;
use base64::Engine as _;
use serde::Serialize;

use crate::check::Check;
use crate::crypto;
use crate::time::UnixTime;
use crate::x509::{Certificate, PublicKey};
use crate::xml::{self, Element, Namespaces};

const DSIG: &str = "http://www.w3.org/2000/09/xmldsig#";
const C14N11: &str = "http://www.w3.org/2006/12/xml-c14n11";
const ENVELOPED: &str = "http://www.w3.org/2000/09/xmldsig#enveloped-signature";
const ECDSA_SHA384: &str = "http://www.w3.org/2001/04/xmldsig-more#ecdsa-sha384";
const SHA384: [&str; 2] = ["http://www.w3.org/2001/04/xmldsig-more#sha384", "http://www.w3.org/2001/04/xmlenc#sha384"];

/// One golden measurement.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct RimMeasurement {
    /// Index (0-based; the report's measurement block index is this plus one).
    pub index: u32,
    /// Whether the report must match it.
    pub active: bool,
    /// Acceptable values (hex).
    pub alternatives: Vec<String>,
}

/// A verified RIM's content.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Rim {
    /// `tagId`.
    pub tag_id: String,
    /// `name` (e.g. `GH100`).
    pub name: String,
    /// The firmware version it describes (`colloquialVersion`: a driver or VBIOS version).
    pub version: String,
    /// `Meta/@product`.
    pub product: String,
    /// Golden measurements.
    pub measurements: Vec<RimMeasurement>,
    /// The signing certificate's name.
    pub signer: String,
}

fn find<'a>(el: &'a Element, scope: &Namespaces, ns: &str, local: &str) -> Result<(&'a Element, Namespaces), String> {
    let mut found = el.elements().filter_map(|c| {
        let s = c.scope(scope);
        (c.local() == local && c.namespace(&s) == Some(ns)).then_some((c, s))
    });
    let first = found.next().ok_or_else(|| format!("no {local} element"))?;
    if found.next().is_some() {
        return Err(format!("more than one {local} element"));
    }
    Ok(first)
}

fn algorithm<'a>(el: &'a Element, scope: &Namespaces, local: &str) -> Result<&'a str, String> {
    let (e, _) = find(el, scope, DSIG, local)?;
    e.attr("Algorithm").ok_or_else(|| format!("{local} has no Algorithm"))
}

fn b64(text: &str) -> Result<Vec<u8>, String> {
    // XML whitespace only (space, tab, line ends): anything else is not base64.
    let clean: String = text.chars().filter(|c| !matches!(c, ' ' | '\t' | '\n' | '\r')).collect();
    base64::engine::general_purpose::STANDARD.decode(clean).map_err(|_| "not base64".to_owned())
}

/// Checks the enveloped signature of `doc`. Returns the certificate chain from KeyInfo when it
/// parsed (so that the chain is judged even when the signature fails), and the outcome of the
/// digest and signature checks.
fn check_signature(doc: &xml::Document) -> (Option<Vec<Certificate>>, Result<String, String>) {
    let root_scope = doc.root.scope(&Namespaces::new());
    let (sig, sig_scope) = match find(&doc.root, &root_scope, DSIG, "Signature") {
        Ok(found) => found,
        Err(e) => return (None, Err(e)),
    };
    let chain = key_info_chain(sig, &sig_scope);
    let outcome = match &chain {
        Ok(chain) => check_signed_info(doc, sig, &sig_scope, chain),
        Err(e) => Err(e.clone()),
    };
    (chain.ok(), outcome)
}

/// The certificates of `KeyInfo/X509Data`, signer first.
fn key_info_chain(sig: &Element, sig_scope: &Namespaces) -> Result<Vec<Certificate>, String> {
    let (key_info, ki_scope) = find(sig, sig_scope, DSIG, "KeyInfo")?;
    let (x509_data, xd_scope) = find(key_info, &ki_scope, DSIG, "X509Data")?;
    let chain = x509_data
        .elements()
        .filter(|c| c.local() == "X509Certificate" && c.namespace(&c.scope(&xd_scope)) == Some(DSIG))
        .map(|c| b64(&c.text()).and_then(|der| Certificate::from_der(&der)))
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| format!("KeyInfo certificate: {e}"))?;
    if chain.is_empty() {
        return Err("KeyInfo carries no certificate".into());
    }
    Ok(chain)
}

/// The exact expected shape of `SignedInfo`, the document digest, and the signature by the
/// chain's first certificate.
fn check_signed_info(
    doc: &xml::Document,
    sig: &Element,
    sig_scope: &Namespaces,
    chain: &[Certificate],
) -> Result<String, String> {
    let (signed_info, si_scope) = find(sig, sig_scope, DSIG, "SignedInfo")?;
    if algorithm(signed_info, &si_scope, "CanonicalizationMethod")? != C14N11 {
        return Err("SignedInfo is not canonicalised with C14N 1.1".into());
    }
    if algorithm(signed_info, &si_scope, "SignatureMethod")? != ECDSA_SHA384 {
        return Err("the signature method is not ECDSA-SHA384".into());
    }
    let (reference, ref_scope) = find(signed_info, &si_scope, DSIG, "Reference")?;
    if reference.attr("URI") != Some("") {
        return Err("the reference is not to the whole document (URI=\"\")".into());
    }
    let (transforms, _) = find(reference, &ref_scope, DSIG, "Transforms")?;
    let algs: Vec<&str> = transforms.elements().filter_map(|t| t.attr("Algorithm")).collect();
    if algs != [ENVELOPED, C14N11] || transforms.elements().count() != 2 {
        return Err(format!("unexpected transforms {algs:?}"));
    }
    if !SHA384.contains(&algorithm(reference, &ref_scope, "DigestMethod")?) {
        return Err("the digest method is not SHA-384".into());
    }
    let (digest_value, _) = find(reference, &ref_scope, DSIG, "DigestValue")?;
    let expected = b64(&digest_value.text()).map_err(|e| format!("DigestValue {e}"))?;
    let (value, _) = find(sig, sig_scope, DSIG, "SignatureValue")?;
    let signature = b64(&value.text()).map_err(|e| format!("SignatureValue {e}"))?;
    let leaf = &chain[0];
    let PublicKey::P384(point) = &leaf.public_key else {
        return Err("the signing certificate's key is not P-384".into());
    };
    let mut problems = Vec::new();
    let canonical = xml::canonicalize_document(doc, Some(sig));
    if digest::digest(&digest::SHA384, canonical.as_bytes()).as_ref() != expected.as_slice() {
        problems.push("the document digest does not match DigestValue: the RIM was modified after signing".to_owned());
    }
    let signed = xml::canonicalize_subtree(signed_info, sig_scope);
    if !crypto::verify_ecdsa_p384_sha384_fixed(point, signed.as_bytes(), &signature) {
        problems.push(format!("the signature by \"{}\" does not verify", leaf.subject_cn));
    }
    if problems.is_empty() {
        Ok(format!("digest and ECDSA-SHA384 signature by \"{}\" verify", leaf.subject_cn))
    } else {
        Err(problems.join("; "))
    }
}

fn content(doc: &xml::Document, signer: String) -> Result<Rim, String> {
    let root = &doc.root;
    let scope = root.scope(&Namespaces::new());
    let mut rim = Rim {
        tag_id: root.attr("tagId").unwrap_or_default().to_owned(),
        name: root.attr("name").unwrap_or_default().to_owned(),
        version: String::new(),
        product: String::new(),
        measurements: Vec::new(),
        signer,
    };
    for el in root.elements() {
        match el.local() {
            "Meta" => {
                rim.version = el.attr("colloquialVersion").unwrap_or_default().to_owned();
                rim.product = el.attr("product").unwrap_or_default().to_owned();
            }
            "Payload" => {
                for r in el.elements().filter(|r| r.local() == "Resource" && r.attr("type") == Some("Measurement")) {
                    let index: u32 =
                        r.attr("index").and_then(|i| i.parse().ok()).ok_or("a measurement has no index")?;
                    let active = match r.attr("active") {
                        Some(a) if a.eq_ignore_ascii_case("true") => true,
                        Some(a) if a.eq_ignore_ascii_case("false") => false,
                        other => return Err(format!("measurement {index}: active={other:?}")),
                    };
                    let n: usize = r
                        .attr("alternatives")
                        .and_then(|a| a.parse().ok())
                        .ok_or("a measurement has no alternatives count")?;
                    let rscope = r.scope(&el.scope(&scope));
                    let mut alternatives = Vec::with_capacity(n);
                    for k in 0..n {
                        let value = r
                            .attrs
                            .iter()
                            .find(|(q, _)| {
                                let (prefix, local) = q.split_once(':').unwrap_or(("", q));
                                local == format!("Hash{k}")
                                    && rscope.get(prefix).is_some_and(|u| SHA384.contains(&u.as_str()))
                            })
                            .map(|(_, v)| v.to_ascii_lowercase())
                            .ok_or_else(|| format!("measurement {index} lacks Hash{k}"))?;
                        alternatives.push(value);
                    }
                    if rim.measurements.iter().any(|m| m.index == index) {
                        return Err(format!("measurement index {index} appears twice"));
                    }
                    rim.measurements.push(RimMeasurement { index, active, alternatives });
                }
            }
            _ => {}
        }
    }
    if rim.version.is_empty() || rim.measurements.is_empty() {
        return Err("the RIM has no version or no measurements".into());
    }
    Ok(rim)
}

/// The time-independent part of verifying a RIM (format, signature, chain), kept so that a
/// verifier can cache it; [`RimOutcome::at`] adds the validity of the signer's chain at a time.
#[derive(Debug, Clone)]
pub struct RimOutcome {
    checks: Vec<Check>,
    chain: Vec<Certificate>,
    rim: Option<Rim>,
}

impl RimOutcome {
    /// Whether the signer's chain leads to the root it was checked against.
    pub fn chains(&self) -> bool {
        self.checks.iter().any(|c| c.name == "rim_chain" && c.passed)
    }

    /// Every check at `now`, and the RIM's content when it verified.
    pub fn at(&self, now: UnixTime) -> (Vec<Check>, Option<&Rim>) {
        let mut checks = self.checks.clone();
        if !self.chain.is_empty() {
            checks.push(crate::x509::validity_check("rim_validity", "RIM signer's chain", &self.chain, now));
        }
        let verified = checks.iter().all(|c| c.passed);
        (checks, self.rim.as_ref().filter(|_| verified))
    }
}

/// Checks a RIM's format, signature and chain to `root` (no time involved).
pub fn check(xml_bytes: &[u8], root: &Certificate) -> RimOutcome {
    let mut checks = Vec::new();
    let doc = match xml::parse(xml_bytes) {
        Ok(d) => d,
        Err(e) => {
            checks.push(Check::fail("rim_format", e));
            return RimOutcome { checks, chain: Vec::new(), rim: None };
        }
    };
    let (chain, outcome) = check_signature(&doc);
    let signature_ok = outcome.is_ok();
    checks.push(match outcome {
        Ok(detail) => Check::pass("rim_signature", detail),
        Err(e) => Check::fail("rim_signature", e),
    });
    let Some(chain) = chain else {
        return RimOutcome { checks, chain: Vec::new(), rim: None };
    };
    let chain_problems = crate::x509::chain_problems(&chain, root, "NVIDIA RIM root");
    checks.push(if chain_problems.is_empty() {
        Check::pass("rim_chain", format!("{} certificates chain to \"{}\"", chain.len(), root.subject_cn))
    } else {
        Check::fail("rim_chain", chain_problems.join("; "))
    });
    // Content that did not verify is never returned, not even for diagnosis.
    let rim = if signature_ok {
        match content(&doc, chain[0].subject_cn.clone()) {
            Ok(rim) => Some(rim),
            Err(e) => {
                checks.push(Check::fail("rim_format", e));
                None
            }
        }
    } else {
        None
    };
    RimOutcome { checks, chain, rim }
}

/// Verifies a RIM at `now` against `root`: every check, and its content when it verified.
pub fn verify(xml_bytes: &[u8], root: &Certificate, now: UnixTime) -> (Vec<Check>, Option<Rim>) {
    let outcome = check(xml_bytes, root);
    let (checks, rim) = outcome.at(now);
    (checks, rim.cloned())
}

/// The pinned NVIDIA RIM root ("NVIDIA CoRIM signing Root CA").
pub fn pinned_root() -> Result<Certificate, String> {
    Certificate::from_der(include_bytes!("../../roots/nvidia/rim_root_ca.der"))
}
