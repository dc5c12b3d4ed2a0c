//! HKDF (RFC 5869) and random bytes, over aws-lc-rs.
//!
//! Thin, typed helpers so every derivation in the crate goes through one audited path (and the
//! Wycheproof HKDF vectors exercise exactly that path).

use aws_lc_rs::hkdf;

use crate::error::{Result, SealError};

/// Hash functions HKDF is used with in Coffre.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HkdfHash {
    /// HKDF-SHA-256 (not used by the format; available for vector tests and callers).
    Sha256,
    /// HKDF-SHA-384: HPKE's KDF and the header MAC key.
    Sha384,
    /// HKDF-SHA-512: the chunked-encryption key schedule (Cobblestone).
    Sha512,
}

impl HkdfHash {
    fn algorithm(self) -> hkdf::Algorithm {
        match self {
            HkdfHash::Sha256 => hkdf::HKDF_SHA256,
            HkdfHash::Sha384 => hkdf::HKDF_SHA384,
            HkdfHash::Sha512 => hkdf::HKDF_SHA512,
        }
    }

    /// Digest length in bytes.
    pub fn output_len(self) -> usize {
        match self {
            HkdfHash::Sha256 => 32,
            HkdfHash::Sha384 => 48,
            HkdfHash::Sha512 => 64,
        }
    }
}

struct Len(usize);

impl hkdf::KeyType for Len {
    fn len(&self) -> usize {
        self.0
    }
}

/// A pseudorandom key: either the output of HKDF-Extract or an already-uniform input key used
/// directly with HKDF-Expand (as Cobblestone does). The bytes live inside aws-lc-rs, which wipes
/// them on drop.
pub struct Prk {
    hash: HkdfHash,
    inner: hkdf::Prk,
}

impl std::fmt::Debug for Prk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Prk({:?}, <redacted>)", self.hash)
    }
}

impl Prk {
    /// HKDF-Extract(salt, ikm). An empty salt means a string of zero bytes, as in RFC 5869.
    pub fn extract(hash: HkdfHash, salt: &[u8], ikm: &[u8]) -> Self {
        let inner = hkdf::Salt::new(hash.algorithm(), salt).extract(ikm);
        Self { hash, inner }
    }

    /// Uses `key` directly as the PRK for HKDF-Expand (no Extract step). `key` must be uniformly
    /// random and at most the hash length.
    pub fn from_uniform_key(hash: HkdfHash, key: &[u8]) -> Result<Self> {
        if key.is_empty() || key.len() > hash.output_len() {
            return Err(SealError::InvalidKeyLength { expected: hash.output_len(), actual: key.len() });
        }
        Ok(Self { hash, inner: hkdf::Prk::new_less_safe(hash.algorithm(), key) })
    }

    /// HKDF-Expand(prk, info, out.len()). `info` parts are concatenated. Fails when more than
    /// 255 × hash length bytes are asked for.
    pub fn expand(&self, info: &[&[u8]], out: &mut [u8]) -> Result<()> {
        let okm = self
            .inner
            .expand(info, Len(out.len()))
            .map_err(|_| SealError::InvalidArgument(format!("HKDF output of {} bytes is too long", out.len())))?;
        okm.fill(out).map_err(|_| SealError::Crypto("HKDF-Expand"))
    }
}

/// HKDF-Extract(salt, ikm) returned as bytes (HMAC(salt, ikm)), for protocols such as HPKE that
/// feed an Extract output into further derivations as data. `out` must be the hash length.
///
/// **Public inputs only**: aws-lc-rs's HMAC tag is a plain value that is not wiped when dropped.
/// Extract secrets with [`Prk::extract`], whose bytes stay in aws-lc-rs and are wiped.
pub fn extract_to_bytes(hash: HkdfHash, salt: &[u8], ikm: &[u8], out: &mut [u8]) -> Result<()> {
    use aws_lc_rs::hmac;
    if out.len() != hash.output_len() {
        return Err(SealError::InvalidArgument("HKDF-Extract output must be the hash length".into()));
    }
    let alg = match hash {
        HkdfHash::Sha256 => hmac::HMAC_SHA256,
        HkdfHash::Sha384 => hmac::HMAC_SHA384,
        HkdfHash::Sha512 => hmac::HMAC_SHA512,
    };
    // RFC 5869: an absent salt is HashLen zero bytes; HMAC pads short keys with zeros, so the
    // empty key is the same key.
    let tag = hmac::sign(&hmac::Key::new(alg, salt), ikm);
    out.copy_from_slice(tag.as_ref());
    Ok(())
}

/// Full HKDF (Extract then Expand) into `out`.
pub fn hkdf(hash: HkdfHash, salt: &[u8], ikm: &[u8], info: &[&[u8]], out: &mut [u8]) -> Result<()> {
    Prk::extract(hash, salt, ikm).expand(info, out)
}

/// A source of cryptographically secure random bytes, injected so the pure core stays testable.
pub trait RandomSource {
    /// Fills `dest` with random bytes.
    fn fill(&mut self, dest: &mut [u8]) -> Result<()>;
}

/// The operating system's CSPRNG through AWS-LC.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemRandom;

impl RandomSource for SystemRandom {
    fn fill(&mut self, dest: &mut [u8]) -> Result<()> {
        aws_lc_rs::rand::fill(dest).map_err(|_| SealError::Crypto("system random number generator"))
    }
}
