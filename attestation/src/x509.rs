//! X.509 certificates and CRLs as this crate needs them: parsed once with `x509-parser` into an
//! owned view, with exactly the signature algorithms vendor chains use. Anything else is refused,
//! never approximated: RSASSA-PSS must say SHA-384 / MGF1-SHA-384 / salt 48, the inner and outer
//! signature algorithms must agree, and no bytes may follow the certificate.

use x509_parser::oid_registry::Oid;
use x509_parser::prelude::{FromDer, X509Certificate};
use x509_parser::revocation_list::CertificateRevocationList;
use x509_parser::signature_algorithm::SignatureAlgorithm;
use x509_parser::x509::{AlgorithmIdentifier, SubjectPublicKeyInfo, X509Name};

use crate::crypto;
use crate::time::UnixTime;

/// Signature algorithms this crate verifies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SigAlg {
    /// RSASSA-PSS, SHA-384, MGF1 with SHA-384, 48-byte salt, trailer 1 (AMD).
    RsaPssSha384,
    /// ECDSA with SHA-384 (DER signature).
    EcdsaSha384,
    /// ECDSA with SHA-256 (DER signature).
    EcdsaSha256,
}

/// A subject public key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PublicKey {
    /// RSA, as the DER `RSAPublicKey` (PKCS #1).
    Rsa {
        /// DER RSAPublicKey.
        pkcs1: Vec<u8>,
    },
    /// ECDSA P-384, uncompressed point.
    P384(Vec<u8>),
    /// ECDSA P-256, uncompressed point.
    P256(Vec<u8>),
    /// Anything else (its algorithm OID), which no check here accepts.
    Unsupported(String),
}

/// An extension, undecoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Extension {
    /// Dotted OID.
    pub oid: String,
    /// Critical flag.
    pub critical: bool,
    /// The `extnValue` contents.
    pub value: Vec<u8>,
}

/// The signed part of a certificate or CRL: the exact bytes signed, the algorithm and the signature.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Signed {
    tbs: Vec<u8>,
    alg: Result<SigAlg, String>,
    signature: Vec<u8>,
}

impl Signed {
    /// Takes the signed bytes and checks that the outer algorithm repeats the signed one and that
    /// the signature BIT STRING is whole.
    fn new(
        tbs: &[u8],
        signed_alg: &AlgorithmIdentifier<'_>,
        outer_alg: &AlgorithmIdentifier<'_>,
        value: &x509_parser::der_parser::asn1_rs::BitString<'_>,
    ) -> Result<Self, String> {
        if outer_alg != signed_alg {
            return Err("the signed and outer signature algorithms differ".into());
        }
        if value.unused_bits != 0 {
            return Err("the signature BIT STRING has unused bits".into());
        }
        Ok(Self { tbs: tbs.to_vec(), alg: sig_alg(outer_alg), signature: value.data.to_vec() })
    }

    /// Whether `issuer` (whose DN must be `issuer_raw`) signed this, by name and by key.
    fn verify_by(&self, issuer_raw: &[u8], issuer_cn: &str, issuer: &Certificate) -> Result<(), String> {
        if issuer_raw != issuer.subject_raw {
            return Err(format!("issued by \"{issuer_cn}\", not by \"{}\"", issuer.subject_cn));
        }
        verify_signature(
            &issuer.public_key,
            self.alg.as_ref().ok().copied(),
            self.alg.as_ref().err().map(String::as_str),
            &self.tbs,
            &self.signature,
        )
        .map_err(|e| format!("signature by \"{}\" {e}", issuer.subject_cn))
    }
}

/// An owned, parsed certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Certificate {
    /// The whole DER encoding.
    pub der: Vec<u8>,
    signed: Signed,
    /// Subject DN, raw DER (compared byte for byte when chaining).
    pub subject_raw: Vec<u8>,
    /// Issuer DN, raw DER.
    pub issuer_raw: Vec<u8>,
    /// Subject common name (first CN), for messages.
    pub subject_cn: String,
    /// Issuer common name, for messages.
    pub issuer_cn: String,
    /// Serial number, big-endian magnitude as encoded.
    pub serial: Vec<u8>,
    /// Start of validity.
    pub not_before: UnixTime,
    /// End of validity.
    pub not_after: UnixTime,
    /// Subject public key.
    pub public_key: PublicKey,
    /// Extensions in order.
    pub extensions: Vec<Extension>,
    /// Basic Constraints: (cA, pathLenConstraint); `None` when absent.
    pub basic_constraints: Option<(bool, Option<u32>)>,
    /// Key Usage bits (bit 0 = digitalSignature … bit 5 = keyCertSign, bit 6 = cRLSign, in
    /// x509-parser's numbering); `None` when absent (no restriction, RFC 5280 §4.2.1.3).
    pub key_usage: Option<u16>,
    /// Problems found while reading the extensions (a duplicate or malformed Basic Constraints
    /// or Key Usage); reported by [`path_problems`].
    pub extension_issues: Vec<String>,
}

/// Critical extensions this crate acts on. Any other extension marked critical makes a
/// certificate unusable here (RFC 5280 §4.2): Key Usage and Basic Constraints are the only
/// critical ones in AMD's, Intel's and NVIDIA's chains.
pub const UNDERSTOOD_CRITICAL: [&str; 2] = ["2.5.29.15", "2.5.29.19"];

const OID_SHA384: &str = "2.16.840.1.101.3.4.2.2";
const OID_MGF1: &str = "1.2.840.113549.1.1.8";
const OID_EC_PUBLIC_KEY: &str = "1.2.840.10045.2.1";
const OID_RSA: &str = "1.2.840.113549.1.1.1";
const OID_RSASSA_PSS: &str = "1.2.840.113549.1.1.10";
const OID_P384: &str = "1.3.132.0.34";
const OID_P256: &str = "1.2.840.10045.3.1.7";

fn sig_alg(alg: &AlgorithmIdentifier<'_>) -> Result<SigAlg, String> {
    let oid = alg.algorithm.to_id_string();
    match SignatureAlgorithm::try_from(alg) {
        Ok(SignatureAlgorithm::RSASSA_PSS(params)) => {
            let hash = params.hash_algorithm_oid().to_id_string();
            let mgf = params.mask_gen_algorithm().map_err(|_| "RSASSA-PSS without a readable MGF".to_owned())?;
            let mgf_ok = mgf.mgf.to_id_string() == OID_MGF1 && mgf.hash.to_id_string() == OID_SHA384;
            if hash == OID_SHA384 && mgf_ok && params.salt_length() == 48 && params.trailer_field() == 1 {
                Ok(SigAlg::RsaPssSha384)
            } else {
                Err(format!(
                    "RSASSA-PSS with hash {hash}, salt {} and trailer {}: only SHA-384/MGF1-SHA-384/salt 48 is accepted",
                    params.salt_length(),
                    params.trailer_field()
                ))
            }
        }
        Ok(SignatureAlgorithm::ECDSA) if oid == "1.2.840.10045.4.3.3" => Ok(SigAlg::EcdsaSha384),
        Ok(SignatureAlgorithm::ECDSA) if oid == "1.2.840.10045.4.3.2" => Ok(SigAlg::EcdsaSha256),
        _ => Err(format!("signature algorithm {oid} is not supported")),
    }
}

fn public_key(spki: &SubjectPublicKeyInfo<'_>) -> PublicKey {
    let oid = spki.algorithm.algorithm.to_id_string();
    let bits = spki.subject_public_key.data.to_vec();
    match oid.as_str() {
        OID_RSA | OID_RSASSA_PSS => PublicKey::Rsa { pkcs1: bits },
        OID_EC_PUBLIC_KEY => {
            let curve =
                spki.algorithm.parameters.as_ref().and_then(|p| p.as_oid().ok()).map(|o: Oid<'_>| o.to_id_string());
            match curve.as_deref() {
                Some(OID_P384) => PublicKey::P384(bits),
                Some(OID_P256) => PublicKey::P256(bits),
                other => PublicKey::Unsupported(format!("EC curve {}", other.unwrap_or("unspecified"))),
            }
        }
        _ => PublicKey::Unsupported(oid),
    }
}

/// Parses a DER SubjectPublicKeyInfo with the same code the certificate parser uses.
pub fn public_key_from_spki(der: &[u8]) -> Result<PublicKey, String> {
    let (rest, spki) =
        SubjectPublicKeyInfo::from_der(der).map_err(|e| format!("not a DER SubjectPublicKeyInfo: {e}"))?;
    if !rest.is_empty() {
        return Err(format!("{} unexpected bytes after the key", rest.len()));
    }
    Ok(public_key(&spki))
}

fn common_name(name: &X509Name<'_>) -> String {
    name.iter_common_name().next().and_then(|cn| cn.as_str().ok()).unwrap_or("").to_owned()
}

impl Certificate {
    /// Parses one DER certificate; trailing bytes are an error.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        crate::der::check_signed_envelope(der, true).map_err(|e| format!("malformed certificate: {e}"))?;
        let (rest, cert) = X509Certificate::from_der(der).map_err(|e| format!("not a DER X.509 certificate: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} unexpected bytes after the certificate", rest.len()));
        }
        let signed = Signed::new(
            cert.tbs_certificate.as_ref(),
            &cert.tbs_certificate.signature,
            &cert.signature_algorithm,
            &cert.signature_value,
        )?;
        let validity = cert.validity();
        let mut extension_issues = Vec::new();
        let basic_constraints = match cert.basic_constraints() {
            Ok(b) => b.map(|b| (b.value.ca, b.value.path_len_constraint)),
            Err(e) => {
                extension_issues.push(format!("Basic Constraints cannot be read: {e}"));
                None
            }
        };
        let key_usage = match cert.key_usage() {
            Ok(k) => k.map(|k| k.value.flags),
            Err(e) => {
                extension_issues.push(format!("Key Usage cannot be read: {e}"));
                None
            }
        };
        Ok(Self {
            der: der.to_vec(),
            signed,
            subject_raw: cert.subject().as_raw().to_vec(),
            issuer_raw: cert.issuer().as_raw().to_vec(),
            subject_cn: common_name(cert.subject()),
            issuer_cn: common_name(cert.issuer()),
            serial: cert.raw_serial().to_vec(),
            not_before: UnixTime(validity.not_before.timestamp()),
            not_after: UnixTime(validity.not_after.timestamp()),
            public_key: public_key(cert.public_key()),
            extensions: cert
                .extensions()
                .iter()
                .map(|e| Extension { oid: e.oid.to_id_string(), critical: e.critical, value: e.value.to_vec() })
                .collect(),
            basic_constraints,
            key_usage,
            extension_issues,
        })
    }

    /// The value of the one extension with this OID; `Err` when it appears more than once.
    pub fn extension(&self, oid: &str) -> Result<Option<&[u8]>, String> {
        let mut found = self.extensions.iter().filter(|e| e.oid == oid);
        let first = found.next();
        if found.next().is_some() {
            return Err(format!("extension {oid} appears more than once"));
        }
        Ok(first.map(|e| e.value.as_slice()))
    }

    /// Whether `issuer`'s key signed this certificate (and the names chain).
    pub fn verify_signed_by(&self, issuer: &Certificate) -> Result<(), String> {
        self.signed.verify_by(&self.issuer_raw, &self.issuer_cn, issuer)
    }

    /// The signature algorithm, when this crate supports it.
    pub fn sig_alg(&self) -> Option<SigAlg> {
        self.signed.alg.as_ref().ok().copied()
    }

    /// Whether Basic Constraints says this is a CA (`cA` TRUE). Absent or malformed: not a CA.
    pub fn is_ca(&self) -> bool {
        matches!(self.basic_constraints, Some((true, _)))
    }

    /// Whether Key Usage allows `bit` (absent Key Usage allows everything).
    fn key_usage_allows(&self, bit: u16) -> bool {
        self.key_usage.is_none_or(|k| k & (1 << bit) != 0)
    }

    /// Whether the certificate is self-issued (subject = issuer).
    pub fn is_self_issued(&self) -> bool {
        self.subject_raw == self.issuer_raw
    }

    /// Validity at `now`: `Err` says "not yet valid" or "expired" with the window.
    pub fn check_validity(&self, now: UnixTime) -> Result<(), String> {
        if now < self.not_before {
            Err(format!("not yet valid: valid from {} (checked at {now})", self.not_before))
        } else if now > self.not_after {
            Err(format!("expired: valid until {} (checked at {now})", self.not_after))
        } else {
            Ok(())
        }
    }
}

/// Key Usage bits, in x509-parser's numbering.
const KU_DIGITAL_SIGNATURE: u16 = 0;
const KU_KEY_CERT_SIGN: u16 = 5;
/// cRLSign.
pub const KU_CRL_SIGN: u16 = 6;

/// Every RFC 5280 path constraint `path` (leaf first, ending at the trust anchor) breaks, beyond
/// signatures: a critical extension not understood here, on any certificate; an issuer that is
/// not a CA or whose Key Usage lacks keyCertSign; a CA whose pathLenConstraint is exceeded by the
/// non-self-issued intermediates below it; a leaf whose Key Usage lacks digitalSignature (every
/// leaf here signs evidence, collateral or RIMs). Empty when the path is sound.
pub fn path_problems(path: &[&Certificate]) -> Vec<String> {
    let mut problems = Vec::new();
    for (i, cert) in path.iter().enumerate() {
        for issue in &cert.extension_issues {
            problems.push(format!("\"{}\": {issue}", cert.subject_cn));
        }
        for e in cert.extensions.iter().filter(|e| e.critical && !UNDERSTOOD_CRITICAL.contains(&e.oid.as_str())) {
            problems.push(format!(
                "\"{}\" has a critical extension {} this verifier does not understand",
                cert.subject_cn, e.oid
            ));
        }
        if i == 0 {
            if !cert.key_usage_allows(KU_DIGITAL_SIGNATURE) {
                problems.push(format!("\"{}\": its Key Usage does not allow digitalSignature", cert.subject_cn));
            }
            continue;
        }
        if !cert.is_ca() {
            problems.push(format!("\"{}\" signs a certificate but is not a CA", cert.subject_cn));
        }
        if !cert.key_usage_allows(KU_KEY_CERT_SIGN) {
            problems.push(format!("\"{}\" signs a certificate but its Key Usage lacks keyCertSign", cert.subject_cn));
        }
        if let Some((_, Some(max))) = cert.basic_constraints {
            let below = path[1..i].iter().filter(|c| !c.is_self_issued()).count();
            if below > max as usize {
                problems.push(format!(
                    "\"{}\" allows {max} intermediate(s) below it (pathLenConstraint) but the path has {below}",
                    cert.subject_cn
                ));
            }
        }
    }
    problems
}

/// Every reason `chain` (leaf first) is not a path to `root`, named `root_name` in messages: each
/// certificate must be signed by the next, and the last certificate must be `root` itself, byte
/// for byte, or be signed by it; and the whole path (with the root) must meet [`path_problems`].
/// Empty when the chain is sound. Validity periods are the caller's to check (they depend on the
/// time and are reported apart); [`validity_check`] covers the pinned root too.
pub fn chain_problems(chain: &[Certificate], root: &Certificate, root_name: &str) -> Vec<String> {
    let mut problems = Vec::new();
    for pair in chain.windows(2) {
        if let Err(e) = pair[0].verify_signed_by(&pair[1]) {
            problems.push(format!("\"{}\": {e}", pair[0].subject_cn));
        }
    }
    let mut path: Vec<&Certificate> = chain.iter().collect();
    if chain.last().is_some_and(|last| last.der != root.der) {
        path.push(root);
    }
    problems.extend(path_problems(&path));
    match chain.last() {
        Some(last) if last.der == root.der => {}
        Some(last) => {
            if let Err(e) = last.verify_signed_by(root) {
                problems.push(format!("\"{}\" does not chain to the pinned {root_name}: {e}", last.subject_cn));
            }
        }
        None => problems.push("no certificate".into()),
    }
    problems
}

/// The check `name`: every certificate of `chain` (the `what`, for messages) is valid at `now`;
/// on failure each certificate that is not is named with its window.
pub fn validity_check(name: &str, what: &str, chain: &[Certificate], now: UnixTime) -> crate::Check {
    let problems: Vec<String> = chain
        .iter()
        .filter_map(|c| c.check_validity(now).err().map(|e| format!("\"{}\" is {e}", c.subject_cn)))
        .collect();
    if problems.is_empty() {
        crate::Check::pass(name, format!("every certificate of the {what} is valid"))
    } else {
        crate::Check::fail(name, problems.join("; "))
    }
}

/// Verifies `signature` over `message` with `key` for a supported algorithm.
pub fn verify_signature(
    key: &PublicKey,
    alg: Option<SigAlg>,
    unsupported: Option<&str>,
    message: &[u8],
    signature: &[u8],
) -> Result<(), String> {
    let ok = match (alg, key) {
        (Some(SigAlg::RsaPssSha384), PublicKey::Rsa { pkcs1 }) => {
            crypto::verify_rsa_pss_sha384(pkcs1, message, signature)
        }
        (Some(SigAlg::EcdsaSha384), PublicKey::P384(point)) => {
            crypto::verify_ecdsa_p384_sha384_der(point, message, signature)
        }
        (Some(SigAlg::EcdsaSha256), PublicKey::P256(point)) => {
            crypto::verify_ecdsa_p256_sha256_der(point, message, signature)
        }
        (None, _) => return Err(unsupported.unwrap_or("uses an unsupported algorithm").to_owned()),
        (Some(a), k) => {
            return Err(format!("uses {a:?}, which does not match the issuer's key type ({})", key_kind(k)));
        }
    };
    if ok { Ok(()) } else { Err("does not verify".into()) }
}

fn key_kind(k: &PublicKey) -> String {
    match k {
        PublicKey::Rsa { .. } => "RSA".into(),
        PublicKey::P384(_) => "P-384".into(),
        PublicKey::P256(_) => "P-256".into(),
        PublicKey::Unsupported(o) => o.clone(),
    }
}

/// An owned, parsed CRL.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Crl {
    signed: Signed,
    /// Issuer DN, raw DER.
    pub issuer_raw: Vec<u8>,
    /// Issuer common name.
    pub issuer_cn: String,
    /// thisUpdate.
    pub this_update: UnixTime,
    /// nextUpdate, when present.
    pub next_update: Option<UnixTime>,
    /// Serial numbers of revoked certificates (big-endian magnitudes).
    pub revoked: Vec<Vec<u8>>,
    /// Critical CRL or entry extensions this verifier does not understand (RFC 5280 §5.2: such a
    /// CRL must not be used to decide revocation).
    pub unknown_critical: Vec<String>,
}

/// CRL extensions understood here: CRL Number and Authority Key Identifier (informational).
const UNDERSTOOD_CRL_CRITICAL: [&str; 2] = ["2.5.29.20", "2.5.29.35"];
/// CRL entry extensions understood here: reason code and invalidity date (informational).
const UNDERSTOOD_ENTRY_CRITICAL: [&str; 2] = ["2.5.29.21", "2.5.29.24"];

impl Crl {
    /// Parses one DER CRL; trailing bytes are an error.
    pub fn from_der(der: &[u8]) -> Result<Self, String> {
        crate::der::check_signed_envelope(der, false).map_err(|e| format!("malformed CRL: {e}"))?;
        let (rest, crl) = CertificateRevocationList::from_der(der).map_err(|e| format!("not a DER CRL: {e}"))?;
        if !rest.is_empty() {
            return Err(format!("{} unexpected bytes after the CRL", rest.len()));
        }
        let signed = Signed::new(
            crl.tbs_cert_list.as_ref(),
            &crl.tbs_cert_list.signature,
            &crl.signature_algorithm,
            &crl.signature_value,
        )?;
        Ok(Self {
            signed,
            issuer_raw: crl.tbs_cert_list.issuer.as_raw().to_vec(),
            issuer_cn: common_name(&crl.tbs_cert_list.issuer),
            this_update: UnixTime(crl.last_update().timestamp()),
            next_update: crl.next_update().map(|t| UnixTime(t.timestamp())),
            revoked: crl.iter_revoked_certificates().map(|r| r.raw_serial().to_vec()).collect(),
            unknown_critical: crl
                .extensions()
                .iter()
                .filter(|e| e.critical && !UNDERSTOOD_CRL_CRITICAL.contains(&e.oid.to_id_string().as_str()))
                .map(|e| format!("CRL extension {}", e.oid.to_id_string()))
                .chain(crl.iter_revoked_certificates().flat_map(|r| {
                    r.extensions()
                        .iter()
                        .filter(|e| e.critical && !UNDERSTOOD_ENTRY_CRITICAL.contains(&e.oid.to_id_string().as_str()))
                        .map(|e| format!("CRL entry extension {}", e.oid.to_id_string()))
                        .collect::<Vec<_>>()
                }))
                .collect(),
        })
    }

    /// Whether `issuer` signed this CRL, may sign CRLs (Key Usage cRLSign when present), and the
    /// CRL carries no critical extension this verifier does not understand.
    pub fn verify_signed_by(&self, issuer: &Certificate) -> Result<(), String> {
        self.signed.verify_by(&self.issuer_raw, &self.issuer_cn, issuer)?;
        if !issuer.key_usage_allows(KU_CRL_SIGN) {
            return Err(format!("\"{}\" signed the CRL but its Key Usage lacks cRLSign", issuer.subject_cn));
        }
        if !self.unknown_critical.is_empty() {
            return Err(format!(
                "the CRL has critical extensions this verifier does not understand: {}",
                self.unknown_critical.join(", ")
            ));
        }
        Ok(())
    }

    /// Whether a serial number is listed (leading zeros ignored).
    pub fn is_revoked(&self, serial: &[u8]) -> bool {
        let strip = |s: &[u8]| -> Vec<u8> { s.iter().skip_while(|&&b| b == 0).copied().collect() };
        let wanted = strip(serial);
        self.revoked.iter().any(|r| strip(r) == wanted)
    }
}

/// Splits PEM text into DER certificates (`CERTIFICATE` blocks), or accepts DER (one certificate,
/// or several concatenated).
pub fn certificates_from_pem_or_der(bytes: &[u8]) -> Result<Vec<Vec<u8>>, String> {
    if bytes.iter().take(64).any(|b| *b == b'-') && std::str::from_utf8(bytes).is_ok() {
        let mut out = Vec::new();
        for pem in x509_parser::pem::Pem::iter_from_buffer(bytes) {
            let pem = pem.map_err(|e| format!("bad PEM: {e}"))?;
            if pem.label == "CERTIFICATE" {
                out.push(pem.contents);
            }
        }
        if out.is_empty() {
            return Err("no CERTIFICATE block in the PEM text".into());
        }
        return Ok(out);
    }
    // Split on the DER envelopes only: every certificate is parsed in full where it is used
    // ([`Certificate::from_der`], whose chains the verifiers remember), so parsing it here too
    // would double the work for each new piece of evidence.
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (_, _, after) = crate::der::read_tlv(rest).map_err(|e| format!("not PEM and not DER certificates: {e}"))?;
        let one = &rest[..rest.len() - after.len()];
        crate::der::check_signed_envelope(one, true).map_err(|e| format!("not PEM and not DER certificates: {e}"))?;
        out.push(one.to_vec());
        rest = after;
    }
    if out.is_empty() {
        return Err("no certificate in the input".into());
    }
    Ok(out)
}

#[cfg(all(test, feature = "simulated"))]
mod tests {
    //! Red-team finding 10: chains were checked for signatures and the CA bit only. Each path
    //! constraint of RFC 5280 that vendor chains rely on, broken once.
    #![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P384_SHA384_ASN1_SIGNING, EcdsaKeyPair, KeyPair};

    use super::*;
    use crate::der::{self, oids};
    use crate::simulated::{CertSpec, certificate, extension, p384_spki};

    struct Issued {
        key: EcdsaKeyPair,
        cert: Certificate,
    }

    /// Basic Constraints (cA, pathLen) and Key Usage (DER bit string content) as given.
    fn issue(
        cn: &str,
        issuer: Option<&Issued>,
        ca: Option<Option<u64>>,
        ku: Option<&[u8]>,
        extra: Vec<Vec<u8>>,
    ) -> Issued {
        let key = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_ASN1_SIGNING).unwrap();
        let subject = der::name(&[(oids::CN, cn)]);
        let mut exts = extra;
        if let Some(path_len) = ca {
            let mut parts: Vec<Vec<u8>> = vec![vec![0x01, 0x01, 0xff]];
            if let Some(n) = path_len {
                parts.push(der::uint64(n));
            }
            let refs: Vec<&[u8]> = parts.iter().map(Vec::as_slice).collect();
            exts.push(extension(&[2, 5, 29, 19], true, &der::seq(&refs)));
        }
        if let Some(bits) = ku {
            exts.push(extension(&[2, 5, 29, 15], true, &der::tlv(0x03, bits)));
        }
        let issuer_name = issuer.map_or(subject.clone(), |i| i.cert.subject_raw.clone());
        let signer = issuer.map_or(&key, |i| &i.key);
        let alg = der::seq(&[&der::oid(oids::ECDSA_SHA384)]);
        let spki = p384_spki(key.public_key().as_ref());
        let der = certificate(
            &CertSpec {
                serial: &[1, 2, 3],
                issuer: &issuer_name,
                subject: &subject,
                spki: &spki,
                extensions: &exts,
                not_before: UnixTime(1_577_836_800),
                not_after: UnixTime(4_102_444_800),
            },
            &alg,
            &|tbs| Ok(signer.sign(&SystemRandom::new(), tbs).unwrap().as_ref().to_vec()),
        )
        .unwrap();
        Issued { key, cert: Certificate::from_der(&der).unwrap() }
    }

    /// keyCertSign + cRLSign; keyCertSign alone; digitalSignature alone.
    const CA_KU: &[u8] = &[0x01, 0x06];
    const CERT_SIGN_ONLY: &[u8] = &[0x02, 0x04];
    const SIGN_KU: &[u8] = &[0x07, 0x80];

    fn problems(chain: &[&Issued], root: &Issued) -> Vec<String> {
        let certs: Vec<Certificate> = chain.iter().map(|i| i.cert.clone()).collect();
        chain_problems(&certs, &root.cert, "test root")
    }

    #[test]
    fn a_sound_path_passes() {
        let root = issue("root", None, Some(Some(1)), Some(CA_KU), vec![]);
        let inter = issue("inter", Some(&root), Some(Some(0)), Some(CERT_SIGN_ONLY), vec![]);
        let leaf = issue("leaf", Some(&inter), None, Some(SIGN_KU), vec![]);
        assert_eq!(problems(&[&leaf, &inter, &root], &root), Vec::<String>::new());
        assert_eq!(problems(&[&leaf, &inter], &root), Vec::<String>::new(), "the root may be left out");
    }

    #[test]
    fn attack_intermediate_whose_key_usage_forbids_certificate_signing_signs_a_leaf() {
        let root = issue("root", None, Some(None), Some(CA_KU), vec![]);
        let inter = issue("inter", Some(&root), Some(None), Some(SIGN_KU), vec![]);
        let leaf = issue("leaf", Some(&inter), None, None, vec![]);
        let p = problems(&[&leaf, &inter], &root);
        assert!(p.iter().any(|p| p.contains("\"inter\"") && p.contains("lacks keyCertSign")), "{p:?}");
        // And one without Basic Constraints at all is no CA.
        let not_ca = issue("not-ca", Some(&root), None, None, vec![]);
        let leaf = issue("leaf", Some(&not_ca), None, None, vec![]);
        let p = problems(&[&leaf, &not_ca], &root);
        assert!(p.iter().any(|p| p.contains("is not a CA")), "{p:?}");
    }

    #[test]
    fn attack_path_longer_than_the_roots_path_length_allows() {
        let root = issue("root", None, Some(Some(0)), Some(CA_KU), vec![]);
        let inter = issue("inter", Some(&root), Some(None), Some(CA_KU), vec![]);
        let leaf = issue("leaf", Some(&inter), None, None, vec![]);
        let p = problems(&[&leaf, &inter], &root);
        assert!(p.iter().any(|p| p.contains("\"root\" allows 0 intermediate(s)")), "{p:?}");
    }

    #[test]
    fn attack_certificate_with_a_critical_extension_nobody_checks() {
        let root = issue("root", None, Some(None), Some(CA_KU), vec![]);
        let policy = extension(&[2, 5, 29, 30], true, &der::seq(&[])); // nameConstraints
        let inter = issue("inter", Some(&root), Some(None), Some(CA_KU), vec![policy]);
        let leaf = issue("leaf", Some(&inter), None, None, vec![]);
        let p = problems(&[&leaf, &inter], &root);
        assert!(p.iter().any(|p| p.contains("critical extension 2.5.29.30")), "{p:?}");
        // A leaf limited to another use (key agreement only) cannot sign evidence.
        let agree = issue("agree", Some(&root), None, Some(&[0x03, 0x08]), vec![]);
        let p = problems(&[&agree], &root);
        assert!(p.iter().any(|p| p.contains("does not allow digitalSignature")), "{p:?}");
    }
}
