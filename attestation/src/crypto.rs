//! The signature checks every verifier in this crate uses, over aws-lc-rs. They are public so the
//! Wycheproof tests drive exactly these functions: a vector that passes here passes in the
//! verifiers, and one that fails here fails there.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_ASN1, ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_ASN1, ECDSA_P384_SHA384_FIXED,
    RSA_PSS_2048_8192_SHA384, UnparsedPublicKey,
};

/// RSASSA-PSS with SHA-384, MGF1-SHA-384 and a 48-byte salt (AMD's certificate signatures).
/// `pkcs1` is the DER `RSAPublicKey`; keys of 2048 to 8192 bits.
pub fn verify_rsa_pss_sha384(pkcs1: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&RSA_PSS_2048_8192_SHA384, pkcs1).verify(message, signature).is_ok()
}

/// ECDSA P-384 with SHA-384, signature as fixed-width `r ‖ s` (96 bytes, IEEE P1363).
/// `point` is an uncompressed SEC1 point.
pub fn verify_ecdsa_p384_sha384_fixed(point: &[u8], message: &[u8], signature: &[u8]) -> bool {
    signature.len() == 96 && UnparsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, point).verify(message, signature).is_ok()
}

/// ECDSA P-384 with SHA-384, signature DER-encoded (X.509 certificates, NVIDIA chains).
pub fn verify_ecdsa_p384_sha384_der(point: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P384_SHA384_ASN1, point).verify(message, signature).is_ok()
}

/// ECDSA P-256 with SHA-256, fixed-width `r ‖ s` (64 bytes; Intel DCAP quotes).
pub fn verify_ecdsa_p256_sha256_fixed(point: &[u8], message: &[u8], signature: &[u8]) -> bool {
    signature.len() == 64 && UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(message, signature).is_ok()
}

/// ECDSA P-256 with SHA-256, DER signature (Intel PCK and TCB signing certificates).
pub fn verify_ecdsa_p256_sha256_der(point: &[u8], message: &[u8], signature: &[u8]) -> bool {
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_ASN1, point).verify(message, signature).is_ok()
}

/// The SEV-SNP report signature: `r` and `s` as 72-byte little-endian fields (zero-extended). The
/// upper 24 bytes of each must be zero; the rest is reversed into P1363 form and verified with
/// [`verify_ecdsa_p384_sha384_fixed`].
pub fn verify_snp_report_signature(point: &[u8], signed: &[u8], r_le: &[u8; 72], s_le: &[u8; 72]) -> bool {
    match snp_signature_to_p1363(r_le, s_le) {
        Some(sig) => verify_ecdsa_p384_sha384_fixed(point, signed, &sig),
        None => false,
    }
}

/// Converts the report's little-endian `r`, `s` into big-endian `r ‖ s`, or `None` when a value
/// does not fit in 48 bytes.
pub fn snp_signature_to_p1363(r_le: &[u8; 72], s_le: &[u8; 72]) -> Option<[u8; 96]> {
    if r_le[48..].iter().chain(&s_le[48..]).any(|&b| b != 0) {
        return None;
    }
    let mut out = [0u8; 96];
    for i in 0..48 {
        out[i] = r_le[47 - i];
        out[48 + i] = s_le[47 - i];
    }
    Some(out)
}
