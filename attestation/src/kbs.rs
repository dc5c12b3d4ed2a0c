//! The binding of Trustee's KBS protocol (version 0.4.0), kept apart from Coffre's own
//! ([`crate::composite::release_report_data`]): what a Confidential Containers guest puts in its
//! report data when it attests to a key broker.
//!
//! ```text
//! runtime data   = {"nonce": <the broker's nonce, base64>, "tee-pubkey": <JWK>}
//!                  (+ "additional-evidence": <string> when the guest sends GPU evidence)
//! REPORT_DATA    = SHA-384(JCS(runtime data)) ‖ 16 zero bytes          (SNP, TDX, sample)
//! GPU nonce      = SHA-384(JCS({"nonce", "tee-pubkey"}))[..32]
//! ```
//!
//! JCS is RFC 8785. The verifier never guesses a binding, pads a short value or truncates a long
//! one: the report data must be exactly the 64 bytes above. The JWK is hashed exactly as the
//! guest sent it (member values untouched), and a JWK with members this protocol does not
//! define is refused, so that nothing unbound can ride along with the key.

use std::collections::BTreeMap;
use std::fmt;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde_json::{Map, Number, Value};

use crate::{Check, Platform};

/// The protocol version this binding belongs to (the only one a broker accepts).
pub const PROTOCOL_VERSION: &str = "0.4.0";

/// Parses JSON refusing what JCS cannot reproduce or an attacker could use to make two readers
/// disagree: duplicate member names and non-integer numbers. Nesting is limited.
pub fn parse_strict(text: &[u8]) -> Result<Value, String> {
    let mut de = serde_json::Deserializer::from_slice(text);
    let v = StrictValue::deserialize_with(&mut de, 0).map_err(|e| e.to_string())?;
    de.end().map_err(|e| e.to_string())?;
    Ok(v)
}

const MAX_DEPTH: usize = 32;

struct StrictValue(Value);

impl StrictValue {
    fn deserialize_with<'de, D: Deserializer<'de>>(d: D, depth: usize) -> Result<Value, D::Error> {
        d.deserialize_any(StrictVisitor { depth }).map(|v| v.0)
    }
}

struct StrictVisitor {
    depth: usize,
}

struct Nested(usize);

impl<'de> de::DeserializeSeed<'de> for Nested {
    type Value = Value;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        StrictValue::deserialize_with(d, self.0)
    }
}

impl<'de> Visitor<'de> for StrictVisitor {
    type Value = StrictValue;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, v: bool) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Bool(v)))
    }
    fn visit_i64<E>(self, v: i64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }
    fn visit_u64<E>(self, v: u64) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Number(v.into())))
    }
    fn visit_f64<E: de::Error>(self, _: f64) -> Result<StrictValue, E> {
        Err(E::custom("non-integer numbers are refused"))
    }
    fn visit_str<E>(self, v: &str) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v.to_owned())))
    }
    fn visit_string<E>(self, v: String) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::String(v)))
    }
    fn visit_unit<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_none<E>(self) -> Result<StrictValue, E> {
        Ok(StrictValue(Value::Null))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<StrictValue, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nested too deeply"));
        }
        let mut out = Vec::new();
        while let Some(v) = seq.next_element_seed(Nested(self.depth + 1))? {
            out.push(v);
        }
        Ok(StrictValue(Value::Array(out)))
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<StrictValue, A::Error> {
        if self.depth >= MAX_DEPTH {
            return Err(de::Error::custom("nested too deeply"));
        }
        let mut out = Map::new();
        while let Some(k) = map.next_key::<String>()? {
            let v = map.next_value_seed(Nested(self.depth + 1))?;
            if out.insert(k.clone(), v).is_some() {
                return Err(de::Error::custom(format!("member {k:?} appears twice")));
            }
        }
        Ok(StrictValue(Value::Object(out)))
    }
}

/// The RFC 8785 (JCS) serialisation of `v`: members sorted by their UTF-16 code units, no
/// whitespace, strings with the minimal escapes. Numbers must be integers of magnitude below
/// 2^53 (their JCS form is then their decimal digits); anything else is refused.
pub fn jcs(v: &Value) -> Result<Vec<u8>, String> {
    let mut out = Vec::new();
    write_jcs(v, &mut out)?;
    Ok(out)
}

fn write_jcs(v: &Value, out: &mut Vec<u8>) -> Result<(), String> {
    match v {
        Value::Null => out.extend_from_slice(b"null"),
        Value::Bool(b) => out.extend_from_slice(if *b { b"true" } else { b"false" }),
        Value::Number(n) => write_number(n, out)?,
        Value::String(s) => write_string(s, out),
        Value::Array(a) => {
            out.push(b'[');
            for (i, x) in a.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_jcs(x, out)?;
            }
            out.push(b']');
        }
        Value::Object(m) => {
            let sorted: BTreeMap<Vec<u16>, (&String, &Value)> =
                m.iter().map(|(k, v)| (k.encode_utf16().collect(), (k, v))).collect();
            out.push(b'{');
            for (i, (k, v)) in sorted.values().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                write_string(k, out);
                out.push(b':');
                write_jcs(v, out)?;
            }
            out.push(b'}');
        }
    }
    Ok(())
}

const MAX_SAFE_INTEGER: u64 = (1 << 53) - 1;

fn write_number(n: &Number, out: &mut Vec<u8>) -> Result<(), String> {
    if let Some(u) = n.as_u64().filter(|u| *u <= MAX_SAFE_INTEGER) {
        out.extend_from_slice(u.to_string().as_bytes());
    } else if let Some(i) = n.as_i64().filter(|i| i.unsigned_abs() <= MAX_SAFE_INTEGER) {
        out.extend_from_slice(i.to_string().as_bytes());
    } else {
        return Err(format!("the number {n} has no exact JCS form here (only integers below 2^53)"));
    }
    Ok(())
}

fn write_string(s: &str, out: &mut Vec<u8>) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            '\r' => out.extend_from_slice(b"\\r"),
            c if (c as u32) < 0x20 => out.extend_from_slice(format!("\\u{:04x}", c as u32).as_bytes()),
            c => {
                let mut buf = [0u8; 4];
                out.extend_from_slice(c.encode_utf8(&mut buf).as_bytes());
            }
        }
    }
    out.push(b'"');
}

/// Members a TEE public key (JWK) may have, by key type.
const RSA_MEMBERS: [&str; 4] = ["alg", "e", "kty", "n"];
const EC_MEMBERS: [&str; 5] = ["alg", "crv", "kty", "x", "y"];

/// Checks that `jwk` is a key this protocol defines, with no other member: an RSA key
/// (`kty`, `alg`, `n`, `e`) or an EC key (`kty`, `crv`, `x`, `y`, optional `alg`), every member
/// a string. Whether the key is usable is the JWE encrypter's question; this is the binding's.
pub fn check_tee_pubkey(jwk: &Value) -> Result<(), String> {
    let m = jwk.as_object().ok_or("tee-pubkey: expected a JSON object (a JWK)")?;
    let allowed: &[&str] = match m.get("kty").and_then(Value::as_str) {
        Some("RSA") => &RSA_MEMBERS,
        Some("EC") => &EC_MEMBERS,
        Some(other) => return Err(format!("tee-pubkey: key type {other:?} is not RSA or EC")),
        None => return Err("tee-pubkey: no kty".into()),
    };
    if let Some(k) = m.keys().find(|k| !allowed.contains(&k.as_str())) {
        return Err(format!("tee-pubkey: unknown member {k:?}"));
    }
    if let Some((k, _)) = m.iter().find(|(_, v)| !v.is_string()) {
        return Err(format!("tee-pubkey: member {k:?} is not a string"));
    }
    Ok(())
}

/// What a KBS guest binds: the broker's nonce (as sent, base64 text), its TEE public key (the
/// JWK exactly as received) and the additional evidence (a JSON text), when it sent any.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeData {
    /// The nonce, as the broker sent it in its challenge.
    pub nonce: String,
    /// The JWK, as received.
    pub tee_pubkey: Value,
    /// The additional evidence: a JSON document as a string, or `""` when the guest has no
    /// device (clients always send the member).
    pub additional_evidence: String,
}

impl RuntimeData {
    /// The JCS bytes of the runtime data, as the guest hashed them for its report data.
    pub fn binding_document(&self) -> Result<Vec<u8>, String> {
        check_tee_pubkey(&self.tee_pubkey)?;
        let mut m = Map::new();
        m.insert("additional-evidence".into(), Value::String(self.additional_evidence.clone()));
        m.insert("nonce".into(), Value::String(self.nonce.clone()));
        m.insert("tee-pubkey".into(), self.tee_pubkey.clone());
        jcs(&Value::Object(m))
    }

    /// The JCS bytes of the TEE public key (what an evidence bundle records as the key).
    pub fn tee_pubkey_bytes(&self) -> Result<Vec<u8>, String> {
        check_tee_pubkey(&self.tee_pubkey)?;
        jcs(&self.tee_pubkey)
    }

    /// The 64 bytes of report data an SNP, TDX or sample guest must present:
    /// SHA-384 of the binding document followed by exactly 16 zero bytes.
    pub fn report_data(&self) -> Result<[u8; 64], String> {
        Ok(report_data_of(&self.binding_document()?))
    }

    /// SHA-384(JCS({nonce, tee-pubkey})): what a device beside the TEE binds (its first 32
    /// bytes are a GPU's nonce; a sample device carries all 48).
    pub fn device_hash(&self) -> Result<[u8; 48], String> {
        check_tee_pubkey(&self.tee_pubkey)?;
        let mut m = Map::new();
        m.insert("nonce".into(), Value::String(self.nonce.clone()));
        m.insert("tee-pubkey".into(), self.tee_pubkey.clone());
        let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, &jcs(&Value::Object(m))?);
        let mut out = [0u8; 48];
        out.copy_from_slice(digest.as_ref());
        Ok(out)
    }

    /// What the evidence must carry under this binding.
    pub fn expected(&self) -> Result<KbsExpected, String> {
        Ok(KbsExpected { report_data: self.report_data()?, device_hash: self.device_hash()? })
    }

    /// Reads a binding document back (an auditor holding only the bundle's blob): exactly the
    /// members above, in JCS form.
    pub fn from_binding_document(doc: &[u8]) -> Result<Self, String> {
        let v = parse_strict(doc).map_err(|e| format!("KBS binding document: {e}"))?;
        if jcs(&v)? != doc {
            return Err("KBS binding document: not in JCS form".into());
        }
        let m = v.as_object().ok_or("KBS binding document: not an object")?;
        if let Some(k) = m.keys().find(|k| !["additional-evidence", "nonce", "tee-pubkey"].contains(&k.as_str())) {
            return Err(format!("KBS binding document: unknown member {k:?}"));
        }
        let nonce = m.get("nonce").and_then(Value::as_str).ok_or("KBS binding document: no nonce")?.to_owned();
        let tee_pubkey = m.get("tee-pubkey").cloned().ok_or("KBS binding document: no tee-pubkey")?;
        let additional_evidence = m
            .get("additional-evidence")
            .and_then(Value::as_str)
            .ok_or("KBS binding document: additional-evidence missing or not a string")?
            .to_owned();
        let r = Self { nonce, tee_pubkey, additional_evidence };
        check_tee_pubkey(&r.tee_pubkey)?;
        Ok(r)
    }
}

/// What evidence bound under the KBS binding must carry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct KbsExpected {
    /// The CPU's REPORT_DATA: SHA-384 of the binding document ‖ 16 zero bytes.
    pub report_data: [u8; 64],
    /// SHA-384(JCS({nonce, tee-pubkey})): GPUs sign its first 32 bytes.
    pub device_hash: [u8; 48],
}

impl KbsExpected {
    /// The nonce every GPU must sign.
    pub fn gpu_nonce(&self) -> [u8; 32] {
        let mut out = [0u8; 32];
        out.copy_from_slice(&self.device_hash[..32]);
        out
    }
}

/// The sample TEE's claims: nothing about hardware, only what the guest bound. Always
/// [`Platform::Simulated`]: a policy must list `simulated` and the vault must be in
/// development mode for it to count.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SampleClaims {
    /// Always [`Platform::Simulated`].
    pub platform: Platform,
    /// The sample attester's SVN, as sent.
    pub svn: String,
    /// The report data it carried (48 bytes: a SHA-384).
    #[serde(serialize_with = "hex_vec")]
    pub report_data: Vec<u8>,
    /// The sample device's SVN, when the guest sent one (`ENABLE_SAMPLE_DEVICE`).
    pub device_svn: Option<String>,
}

impl SampleClaims {
    /// The report data as the 64 bytes the binding compares: the 48-byte hash and 16 zero
    /// bytes. `None` unless it is exactly 48 bytes (nothing is padded or cut).
    pub fn report_data_64(&self) -> Option<[u8; 64]> {
        (self.report_data.len() == 48).then(|| {
            let mut out = [0u8; 64];
            out[..48].copy_from_slice(&self.report_data);
            out
        })
    }
}

fn hex_vec<S: serde::Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// The sample TEE's verification.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct SampleVerification {
    /// Every check.
    pub checks: Vec<Check>,
    /// The claims, when the evidence parsed and the verifier accepts the sample TEE.
    pub claims: Option<SampleClaims>,
}

impl SampleVerification {
    /// Whether every check passed.
    pub fn is_verified(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.passed) && self.claims.is_some()
    }

    /// Every failed check.
    pub fn errors(&self) -> Vec<String> {
        self.checks.iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.detail)).collect()
    }
}

fn sample_doc(json: &[u8], what: &str) -> Result<(String, Vec<u8>), String> {
    let v = parse_strict(json).map_err(|e| format!("{what}: {e}"))?;
    let m = v.as_object().ok_or_else(|| format!("{what}: expected an object"))?;
    if let Some(k) = m.keys().find(|k| !["svn", "report_data"].contains(&k.as_str())) {
        return Err(format!("{what}: unknown member {k:?}"));
    }
    let svn = m.get("svn").and_then(Value::as_str).ok_or_else(|| format!("{what}: no svn"))?.to_owned();
    let rd = m.get("report_data").and_then(Value::as_str).ok_or_else(|| format!("{what}: no report_data"))?;
    let rd = base64::Engine::decode(&base64::engine::general_purpose::STANDARD, rd)
        .map_err(|e| format!("{what}: report_data: {e}"))?;
    Ok((svn, rd))
}

/// Verifies the sample TEE's evidence (`{"svn", "report_data"}`, report data base64 of the raw
/// SHA-384) and the sample device's when given. There is no signature to check: `accepted`
/// says whether this verifier takes the sample TEE at all (a development vault built with the
/// feature that allows it); without it the verification fails. `device_hash`, when known, is
/// what the sample device must carry, exactly.
pub fn verify_sample(
    evidence: &[u8],
    device: Option<&[u8]>,
    accepted: bool,
    device_hash: Option<&[u8; 48]>,
) -> SampleVerification {
    let mut checks = vec![if accepted {
        Check::pass("sample_accepted", "the sample TEE (no hardware, no signature): development and testing only")
    } else {
        Check::fail(
            "sample_accepted",
            "the sample TEE proves nothing about hardware; this verifier does not accept it (a development vault built with the kbs-sample feature does, for tenants marked for testing)",
        )
    }];
    let (svn, report_data) = match sample_doc(evidence, "sample evidence") {
        Ok(x) => x,
        Err(e) => {
            checks.push(Check::fail("parse", e));
            return SampleVerification { checks, claims: None };
        }
    };
    checks.push(Check::pass("parse", "sample evidence"));
    checks.push(if report_data.len() == 48 {
        Check::pass("report_data_length", "48 bytes (SHA-384)")
    } else {
        Check::fail(
            "report_data_length",
            format!("{} bytes; the binding is exactly a 48-byte SHA-384", report_data.len()),
        )
    });
    let mut device_svn = None;
    if let Some(d) = device {
        match sample_doc(d, "sample device evidence") {
            Ok((dsvn, drd)) => {
                checks.push(match device_hash {
                    Some(h) if drd.as_slice() == h.as_slice() => {
                        Check::pass("device_report_data", "the sample device binds the nonce and TEE key")
                    }
                    Some(h) => Check::fail(
                        "device_report_data",
                        format!("the sample device carries {}, not the expected {}", hex::encode(&drd), hex::encode(h)),
                    ),
                    None => {
                        Check::fail("device_report_data", "no binding to compare the sample device's report data with")
                    }
                });
                device_svn = Some(dsvn);
            }
            Err(e) => checks.push(Check::fail("device_parse", e)),
        }
    }
    let claims = accepted.then_some(SampleClaims { platform: Platform::Simulated, svn, report_data, device_svn });
    SampleVerification { checks, claims }
}

/// SHA-384 of a binding document followed by exactly 16 zero bytes.
pub fn report_data_of(binding_document: &[u8]) -> [u8; 64] {
    let digest = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA384, binding_document);
    let mut out = [0u8; 64];
    out[..48].copy_from_slice(digest.as_ref());
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// The golden vector: the runtime data of a guest with no device, its JCS form and its
    /// SHA-384, computed independently of this crate (Python's json with sorted keys and
    /// compact separators, which is JCS for ASCII strings, and hashlib).
    #[test]
    fn golden_vector_of_the_kbs_binding() {
        let r = RuntimeData {
            nonce: "bm9uY2U=".into(),
            tee_pubkey: serde_json::json!({"kty": "EC", "crv": "P-256", "alg": "ECDH-ES+A256KW", "x": "XX", "y": "YY"}),
            additional_evidence: String::new(),
        };
        let doc = r.binding_document().unwrap();
        assert_eq!(
            String::from_utf8(doc.clone()).unwrap(),
            r#"{"additional-evidence":"","nonce":"bm9uY2U=","tee-pubkey":{"alg":"ECDH-ES+A256KW","crv":"P-256","kty":"EC","x":"XX","y":"YY"}}"#
        );
        let rd = r.report_data().unwrap();
        assert_eq!(
            hex::encode(&rd[..48]),
            "9b1786a8d774775bc721e0161c877eb491165165f41f9852805a9e26524fc7f712767589188fc11548da6466ee037d7e"
        );
        assert_eq!(rd[48..], [0u8; 16]);
        assert_eq!(RuntimeData::from_binding_document(&doc).unwrap(), r);
        assert_eq!(
            hex::encode(r.device_hash().unwrap()),
            "8c9ee2f8a84204dc894c3aec341d73d81e05905c5885993e2b458837ab8ed6817f13d30ab8ce448189b111006ac0236e"
        );
        // An RSA key and additional evidence (a JSON text inside the string, escaped).
        let r = RuntimeData {
            nonce: "bm9uY2U=".into(),
            tee_pubkey: serde_json::json!({"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQAB", "e": "AQAB"}),
            additional_evidence: r#"{"nvidia":{"device_evidence_list":[]}}"#.into(),
        };
        assert_eq!(
            hex::encode(&r.report_data().unwrap()[..48]),
            "f38cc420e6fbc060a1bcb85a7cb60276e63a22ebbc172b67c423ecaac06e22a2a932d6b506a0f20e83174249828a9312"
        );
    }

    #[test]
    fn jcs_sorts_by_utf16_and_escapes_minimally() {
        // RFC 8785 §3.2.3's sorting example (UTF-16 order puts U+1F600's surrogates before
        // U+FB33), and §3.2.2.2's string escapes.
        let v = parse_strict(
            "{\"\\u20ac\":\"Euro Sign\",\"\\r\":\"Carriage Return\",\"\\ufb33\":\"Hebrew Letter Dalet With Dagesh\",\"1\":\"One\",\"\\ud83d\\ude00\":\"Emoji: Grinning Face\",\"\\u0080\":\"Control\",\"\\u00f6\":\"Latin Small Letter O With Diaeresis\"}"
                .as_bytes(),
        )
        .unwrap_or_default();
        let out = String::from_utf8(jcs(&v).unwrap_or_default()).unwrap_or_default();
        let order: Vec<&str> =
            ["Carriage Return", "One", "Control", "Latin Small", "Euro Sign", "Emoji", "Hebrew"].into_iter().collect();
        let mut last = 0;
        for o in order {
            let at = out.find(o).unwrap_or(0);
            assert!(at > last, "{o} out of order in {out}");
            last = at;
        }
        let s = jcs(&Value::String("\u{8}\t\n\u{c}\r\u{1f}\"\\/é\u{2028}".into())).unwrap_or_default();
        assert_eq!(s, "\"\\b\\t\\n\\f\\r\\u001f\\\"\\\\/é\u{2028}\"".as_bytes());
    }

    #[test]
    fn strict_parsing_refuses_duplicates_and_fractions() {
        assert!(parse_strict(br#"{"a":1,"a":2}"#).is_err());
        assert!(parse_strict(br#"{"a":1.5}"#).is_err());
        assert!(parse_strict(br#"{"a":[1,{"b":null}]}"#).is_ok());
        assert!(jcs(&Value::Number(u64::MAX.into())).is_err());
    }

    #[test]
    fn a_jwk_with_an_unknown_member_is_refused() {
        let ok: Value = serde_json::json!({"kty": "EC", "crv": "P-256", "x": "AA", "y": "AA"});
        assert!(check_tee_pubkey(&ok).is_ok());
        let extra: Value = serde_json::json!({"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQ", "e": "AQAB", "kid": "x"});
        assert!(check_tee_pubkey(&extra).unwrap_err().contains("kid"));
        let number: Value = serde_json::json!({"kty": "RSA", "alg": "RSA-OAEP-256", "n": "AQ", "e": 65537});
        assert!(check_tee_pubkey(&number).is_err());
    }
}
