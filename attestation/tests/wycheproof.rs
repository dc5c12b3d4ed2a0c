//! Wycheproof ECDSA P-384 (DER and P1363), ECDSA P-256 (P1363) and RSASSA-PSS
//! 4096/SHA-384/MGF1/48 vectors, through the exact functions the verifiers call: keys parsed by the
//! certificate parser's SPKI code, P-384 P1363 signatures additionally re-encoded as an SEV-SNP
//! report signature (72-byte little-endian r and s), P-256 ones through the DCAP quote path's
//! primitive (the NVIDIA SPDM signature is the P-384 P1363 form).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use coffre_attestation::crypto;
use coffre_attestation::x509::{PublicKey, public_key_from_spki};
use serde::Deserialize;

#[derive(Deserialize)]
struct File {
    #[serde(rename = "numberOfTests")]
    number_of_tests: usize,
    #[serde(rename = "testGroups")]
    groups: Vec<Group>,
}

#[derive(Deserialize)]
struct Group {
    #[serde(rename = "publicKeyDer")]
    public_key_der: String,
    tests: Vec<Test>,
}

#[derive(Deserialize)]
struct Test {
    #[serde(rename = "tcId")]
    id: u32,
    msg: String,
    sig: String,
    result: String,
}

fn load(name: &str) -> Option<File> {
    let bytes = coffre_testkit::read(&format!("vectors/wycheproof/{name}"))?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn expect(t: &Test) -> bool {
    match t.result.as_str() {
        "valid" => true,
        "invalid" => false,
        other => panic!("tc {}: result {other} needs a deliberate decision", t.id),
    }
}

fn p384_point(group: &Group) -> Vec<u8> {
    match public_key_from_spki(&unhex(&group.public_key_der)).unwrap() {
        PublicKey::P384(point) => point,
        other => panic!("expected a P-384 key, got {other:?}"),
    }
}

#[test]
fn ecdsa_p384_sha384_der() {
    let Some(file) = load("ecdsa_secp384r1_sha384_test.json") else { return };
    let mut n = 0;
    for g in &file.groups {
        let point = p384_point(g);
        for t in &g.tests {
            let ok = crypto::verify_ecdsa_p384_sha384_der(&point, &unhex(&t.msg), &unhex(&t.sig));
            assert_eq!(ok, expect(t), "tc {}", t.id);
            n += 1;
        }
    }
    assert_eq!(n, file.number_of_tests);
}

/// P1363 vectors: through the fixed-width verifier, and (where the signature is 96 bytes, the
/// only size a report can carry) through the SEV-SNP report-signature path.
#[test]
fn ecdsa_p384_sha384_p1363_and_snp_encoding() {
    let Some(file) = load("ecdsa_secp384r1_sha384_p1363_test.json") else { return };
    let (mut n, mut through_snp) = (0, 0);
    for g in &file.groups {
        let point = p384_point(g);
        for t in &g.tests {
            let (msg, sig) = (unhex(&t.msg), unhex(&t.sig));
            assert_eq!(crypto::verify_ecdsa_p384_sha384_fixed(&point, &msg, &sig), expect(t), "tc {}", t.id);
            if sig.len() == 96 {
                let (mut r, mut s) = ([0u8; 72], [0u8; 72]);
                for i in 0..48 {
                    r[i] = sig[47 - i];
                    s[i] = sig[95 - i];
                }
                assert_eq!(
                    crypto::verify_snp_report_signature(&point, &msg, &r, &s),
                    expect(t),
                    "tc {} (SNP form)",
                    t.id
                );
                // A non-zero byte in the 24-byte zero extension is never a valid signature.
                r[60] = 1;
                assert!(!crypto::verify_snp_report_signature(&point, &msg, &r, &s), "tc {} (extension)", t.id);
                through_snp += 1;
            }
            n += 1;
        }
    }
    assert_eq!(n, file.number_of_tests);
    assert!(through_snp > 150, "{through_snp}");
}

#[test]
fn rsa_pss_4096_sha384_mgf1_48() {
    let Some(file) = load("rsa_pss_4096_sha384_mgf1_48_test.json") else { return };
    let mut n = 0;
    for g in &file.groups {
        let PublicKey::Rsa { pkcs1 } = public_key_from_spki(&unhex(&g.public_key_der)).unwrap() else {
            panic!("expected an RSA key");
        };
        for t in &g.tests {
            let ok = crypto::verify_rsa_pss_sha384(&pkcs1, &unhex(&t.msg), &unhex(&t.sig));
            assert_eq!(ok, expect(t), "tc {}", t.id);
            n += 1;
        }
    }
    assert_eq!(n, file.number_of_tests);
}

/// P-256 P1363 vectors: the quote path (attestation-key and QE report signatures, as dcap-qvl
/// checks them) and this crate's own P-256 verifier must both give Wycheproof's verdict.
#[test]
fn ecdsa_p256_sha256_p1363_through_the_quote_path() {
    let Some(file) = load("ecdsa_secp256r1_sha256_p1363_test.json") else { return };
    let (mut n, mut through_quote) = (0, 0);
    for g in &file.groups {
        let point = match public_key_from_spki(&unhex(&g.public_key_der)).unwrap() {
            PublicKey::P256(point) => point,
            other => panic!("expected a P-256 key, got {other:?}"),
        };
        for t in &g.tests {
            let (msg, sig) = (unhex(&t.msg), unhex(&t.sig));
            assert_eq!(crypto::verify_ecdsa_p256_sha256_fixed(&point, &msg, &sig), expect(t), "tc {}", t.id);
            assert_eq!(
                coffre_attestation::tdx::verify::quote_signature_verifies(&point[1..], &msg, &sig),
                expect(t),
                "tc {} (quote path)",
                t.id
            );
            through_quote += usize::from(sig.len() == 64);
            n += 1;
        }
    }
    assert_eq!(n, file.number_of_tests);
    assert!(through_quote > 150, "{through_quote}");
}
