//! The KBS protocol's answer to `GET /resource`: the resource in a flattened JWE (RFC 7516) to
//! the TEE key the guest's evidence bound, as the guest's key-broker client decrypts it.
//!
//! - key management `RSA-OAEP-256` (SHA-256, MGF1-SHA-256; moduli of 2048 to 8192 bits), or
//!   `ECDH-ES+A256KW` on P-256 or P-521 (ephemeral key, Concat KDF with SHA-256 over
//!   AlgorithmID `ECDH-ES+A256KW`, empty PartyUInfo and PartyVInfo, 256 bits; then AES-256
//!   key wrap);
//! - content `A256GCM` under a fresh 32-byte key and 12-byte IV.
//!
//! The additional data is the ASCII of the base64url protected header, and the clients do not
//! use the header text they receive: they parse it and serialise it again (`alg`, `enc`, then
//! the other members, nested members sorted, no whitespace). The header is therefore written in
//! exactly that form, so both sides compute the same additional data.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use aws_lc_rs::agreement::{self, EphemeralPrivateKey, UnparsedPublicKey};
use aws_lc_rs::key_wrap::{AES_256, AesKek, KeyWrap};
use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::rsa::{OAEP_SHA256_MGF1SHA256, OaepPublicEncryptingKey, PublicEncryptingKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64URL;
use serde::Serialize;
use serde_json::Value;
use zeroize::Zeroizing;

/// A TEE public key a resource can be encrypted to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeeKey {
    /// RSA, for `RSA-OAEP-256`: SubjectPublicKeyInfo DER.
    Rsa(Vec<u8>),
    /// EC for `ECDH-ES+A256KW`: the curve and its uncompressed point.
    Ec(Curve, Vec<u8>),
}

/// The curves the clients support.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Curve {
    /// NIST P-256.
    P256,
    /// NIST P-521.
    P521,
}

impl Curve {
    fn name(self) -> &'static str {
        match self {
            Curve::P256 => "P-256",
            Curve::P521 => "P-521",
        }
    }

    fn coordinate_len(self) -> usize {
        match self {
            Curve::P256 => 32,
            Curve::P521 => 66,
        }
    }

    fn agreement(self) -> &'static agreement::Algorithm {
        match self {
            Curve::P256 => &agreement::ECDH_P256,
            Curve::P521 => &agreement::ECDH_P521,
        }
    }
}

/// The flattened JWE the clients read (`kbs_types::Response`): every member base64url without
/// padding, no `aad`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Jwe {
    /// The protected header.
    pub protected: String,
    /// The wrapped content key.
    pub encrypted_key: String,
    /// The IV.
    pub iv: String,
    /// The ciphertext.
    pub ciphertext: String,
    /// The tag.
    pub tag: String,
}

fn member<'a>(jwk: &'a Value, name: &str) -> Result<&'a str, String> {
    jwk.get(name).and_then(Value::as_str).ok_or_else(|| format!("tee-pubkey: no {name}"))
}

fn b64url(jwk: &Value, name: &str) -> Result<Vec<u8>, String> {
    let text = member(jwk, name)?;
    B64URL.decode(text).map_err(|_| format!("tee-pubkey: {name} is not base64url without padding"))
}

impl TeeKey {
    /// Reads the guest's JWK: `{"kty":"RSA","alg":"RSA-OAEP-256","n","e"}` or
    /// `{"kty":"EC","crv":"P-256"|"P-521","alg"?:"ECDH-ES+A256KW","x","y"}`, the point on its
    /// curve. Anything else (another algorithm, RSA1_5 among them) is refused.
    pub fn from_jwk(jwk: &Value) -> Result<Self, String> {
        coffre_attestation::kbs::check_tee_pubkey(jwk)?;
        match member(jwk, "kty")? {
            "RSA" => {
                let alg = member(jwk, "alg")?;
                if alg != "RSA-OAEP-256" {
                    return Err(format!(
                        "tee-pubkey: RSA algorithm {alg:?}; this vault encrypts with RSA-OAEP-256 only"
                    ));
                }
                let (n, e) = (b64url(jwk, "n")?, b64url(jwk, "e")?);
                let der = rsa_spki(&n, &e);
                let key =
                    PublicEncryptingKey::from_der(&der).map_err(|e| format!("tee-pubkey: RSA key refused: {e}"))?;
                if !(2048..=8192).contains(&key.key_size_bits()) {
                    return Err(format!("tee-pubkey: a {}-bit RSA key (2048 to 8192 bits)", key.key_size_bits()));
                }
                Ok(TeeKey::Rsa(der))
            }
            "EC" => {
                if let Some(alg) = jwk.get("alg").and_then(Value::as_str)
                    && alg != "ECDH-ES+A256KW"
                {
                    return Err(format!("tee-pubkey: EC algorithm {alg:?}; this vault uses ECDH-ES+A256KW"));
                }
                let curve = match member(jwk, "crv")? {
                    "P-256" => Curve::P256,
                    "P-521" => Curve::P521,
                    other => return Err(format!("tee-pubkey: curve {other:?} (P-256 or P-521)")),
                };
                let (x, y) = (b64url(jwk, "x")?, b64url(jwk, "y")?);
                if x.len() != curve.coordinate_len() || y.len() != curve.coordinate_len() {
                    return Err(format!(
                        "tee-pubkey: {} coordinates are {} bytes each",
                        curve.name(),
                        curve.coordinate_len()
                    ));
                }
                let mut point = Vec::with_capacity(1 + 2 * x.len());
                point.push(4);
                point.extend_from_slice(&x);
                point.extend_from_slice(&y);
                // Validated by an agreement with a throw-away key: a point off the curve fails.
                let probe = EphemeralPrivateKey::generate(curve.agreement(), &SystemRandom::new())
                    .map_err(|_| "random number generator failed".to_string())?;
                agreement::agree_ephemeral(probe, UnparsedPublicKey::new(curve.agreement(), &point), (), |_| Ok(()))
                    .map_err(|()| format!("tee-pubkey: the point is not on {}", curve.name()))?;
                Ok(TeeKey::Ec(curve, point))
            }
            other => Err(format!("tee-pubkey: key type {other:?}")),
        }
    }

    /// Encrypts `plaintext` to this key.
    pub fn encrypt(&self, plaintext: &[u8]) -> Result<Jwe, String> {
        let rng = SystemRandom::new();
        let mut cek = Zeroizing::new([0u8; 32]);
        rng.fill(cek.as_mut()).map_err(|_| "random number generator failed")?;
        let (header, encrypted_key) = match self {
            TeeKey::Rsa(der) => {
                let key = PublicEncryptingKey::from_der(der).map_err(|e| e.to_string())?;
                let key = OaepPublicEncryptingKey::new(key).map_err(|e| e.to_string())?;
                let mut out = vec![0u8; key.ciphertext_size()];
                let n = key
                    .encrypt(&OAEP_SHA256_MGF1SHA256, cek.as_ref(), &mut out, None)
                    .map_err(|e| format!("RSA-OAEP-256: {e}"))?
                    .len();
                out.truncate(n);
                (r#"{"alg":"RSA-OAEP-256","enc":"A256GCM"}"#.to_owned(), out)
            }
            TeeKey::Ec(curve, point) => {
                let eph = EphemeralPrivateKey::generate(curve.agreement(), &rng)
                    .map_err(|_| "random number generator failed".to_string())?;
                let public = eph.compute_public_key().map_err(|_| "ECDH public key".to_string())?;
                let public = public.as_ref();
                let n = curve.coordinate_len();
                let kek = agreement::agree_ephemeral(
                    eph,
                    UnparsedPublicKey::new(curve.agreement(), point),
                    "ECDH failed".to_string(),
                    |z| Ok(concat_kdf_a256kw(z)),
                )?;
                let kek = AesKek::new(&AES_256, kek.as_ref()).map_err(|_| "AES key wrap key".to_string())?;
                let mut wrapped = vec![0u8; 40];
                let len = kek.wrap(cek.as_ref(), &mut wrapped).map_err(|_| "AES key wrap failed".to_string())?.len();
                wrapped.truncate(len);
                // Members sorted and no whitespace: what the clients serialise again.
                let header = format!(
                    r#"{{"alg":"ECDH-ES+A256KW","enc":"A256GCM","epk":{{"crv":"{}","kty":"EC","x":"{}","y":"{}"}}}}"#,
                    curve.name(),
                    B64URL.encode(&public[1..=n]),
                    B64URL.encode(&public[1 + n..])
                );
                (header, wrapped)
            }
        };
        let protected = B64URL.encode(header.as_bytes());
        let mut iv = [0u8; 12];
        rng.fill(&mut iv).map_err(|_| "random number generator failed")?;
        let key = LessSafeKey::new(UnboundKey::new(&AES_256_GCM, cek.as_ref()).map_err(|_| "AES-256-GCM key")?);
        let mut body = plaintext.to_vec();
        let tag = key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(iv), Aad::from(protected.as_bytes()), &mut body)
            .map_err(|_| "AES-256-GCM failed")?;
        let jwe = Jwe {
            protected,
            encrypted_key: B64URL.encode(&encrypted_key),
            iv: B64URL.encode(iv),
            ciphertext: B64URL.encode(&body),
            tag: B64URL.encode(tag.as_ref()),
        };
        zeroize::Zeroize::zeroize(&mut body);
        Ok(jwe)
    }
}

/// The key-encryption key of `ECDH-ES+A256KW` from the shared secret `z` (RFC 7518 §4.6.2: one
/// round of the Concat KDF with SHA-256; AlgorithmID "ECDH-ES+A256KW", empty PartyUInfo and
/// PartyVInfo, SuppPubInfo 256).
pub fn concat_kdf_a256kw(z: &[u8]) -> Zeroizing<[u8; 32]> {
    concat_kdf(z, b"ECDH-ES+A256KW", 256)
}

/// One round of the Concat KDF (NIST SP 800-56A) with SHA-256, as JWA uses it, for a key of at
/// most 256 bits.
pub fn concat_kdf(z: &[u8], algorithm_id: &[u8], bits: u32) -> Zeroizing<[u8; 32]> {
    let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
    ctx.update(&1u32.to_be_bytes());
    ctx.update(z);
    ctx.update(&(algorithm_id.len() as u32).to_be_bytes());
    ctx.update(algorithm_id);
    ctx.update(&0u32.to_be_bytes());
    ctx.update(&0u32.to_be_bytes());
    ctx.update(&bits.to_be_bytes());
    let mut out = Zeroizing::new([0u8; 32]);
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn der_len(len: usize, out: &mut Vec<u8>) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

fn der(tag: u8, content: &[u8]) -> Vec<u8> {
    let mut out = vec![tag];
    der_len(content.len(), &mut out);
    out.extend_from_slice(content);
    out
}

fn der_uint(bytes: &[u8]) -> Vec<u8> {
    let trimmed: Vec<u8> = bytes.iter().copied().skip_while(|b| *b == 0).collect();
    let mut content = Vec::with_capacity(trimmed.len() + 1);
    if trimmed.first().is_none_or(|b| b & 0x80 != 0) {
        content.push(0);
    }
    content.extend_from_slice(&trimmed);
    der(0x02, &content)
}

/// SubjectPublicKeyInfo DER of an RSA key from its modulus and exponent (big-endian).
pub fn rsa_spki(n: &[u8], e: &[u8]) -> Vec<u8> {
    const RSA_ALGORITHM: &[u8] =
        &[0x30, 0x0d, 0x06, 0x09, 0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01, 0x05, 0x00];
    let key = der(0x30, &[der_uint(n), der_uint(e)].concat());
    let mut bits = vec![0u8];
    bits.extend_from_slice(&key);
    der(0x30, &[RSA_ALGORITHM.to_vec(), der(0x03, &bits)].concat())
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    /// RFC 7518 Appendix C: ECDH-ES with the Concat KDF, AlgorithmID "A128GCM", PartyUInfo
    /// "Alice" and PartyVInfo "Bob". The KDF here takes empty party infos, so the vector is
    /// recomputed through the same steps with its own infos: the derived key must be the RFC's.
    #[test]
    fn concat_kdf_matches_rfc_7518_appendix_c() {
        let z: [u8; 32] = [
            158, 86, 217, 29, 129, 113, 53, 211, 114, 131, 66, 131, 191, 132, 38, 156, 251, 49, 110, 163, 218, 128,
            106, 72, 246, 218, 167, 121, 140, 254, 144, 196,
        ];
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        ctx.update(&1u32.to_be_bytes());
        ctx.update(&z);
        for part in [&b"A128GCM"[..], b"Alice", b"Bob"] {
            ctx.update(&(part.len() as u32).to_be_bytes());
            ctx.update(part);
        }
        ctx.update(&128u32.to_be_bytes());
        let digest = ctx.finish();
        assert_eq!(B64URL.encode(&digest.as_ref()[..16]), "VqqN6vgjbSBcIijNcacQGg");
        // And the function used for A256KW hashes the same layout with empty infos.
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        for part in
            [&1u32.to_be_bytes()[..], &z, &14u32.to_be_bytes(), b"ECDH-ES+A256KW", &[0; 8], &256u32.to_be_bytes()]
        {
            ctx.update(part);
        }
        assert_eq!(concat_kdf_a256kw(&z).as_ref(), ctx.finish().as_ref());
    }

    #[test]
    fn rsa_keys_outside_the_allowed_sizes_and_other_algorithms_are_refused() {
        let jwk = serde_json::json!({"kty": "RSA", "alg": "RSA1_5", "n": "AQAB", "e": "AQAB"});
        assert!(TeeKey::from_jwk(&jwk).unwrap_err().contains("RSA-OAEP-256"));
        let jwk = serde_json::json!({"kty": "EC", "crv": "P-384", "x": "AA", "y": "AA"});
        assert!(TeeKey::from_jwk(&jwk).unwrap_err().contains("curve"));
        let off_curve = serde_json::json!({"kty": "EC", "crv": "P-256", "x": B64URL.encode([1u8; 32]), "y": B64URL.encode([2u8; 32])});
        assert!(TeeKey::from_jwk(&off_curve).unwrap_err().contains("not on P-256"));
    }
}
