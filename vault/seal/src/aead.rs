//! AES-256-GCM, the one AEAD of the sealed format, over aws-lc-rs.
//!
//! Only 256-bit keys and 96-bit nonces are accepted: the chunked body, HPKE and every other use in
//! Coffre are built on exactly that. Other key or nonce sizes are rejected with a typed error rather
//! than silently adapted. Opening never leaves unauthenticated plaintext behind: on failure the
//! output buffer is wiped.

use std::fmt;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, Nonce, UnboundKey};
use zeroize::Zeroize;

use crate::error::{Result, SealError};

/// Key length of AES-256-GCM in bytes.
pub const KEY_LEN: usize = 32;
/// Nonce length in bytes (96 bits).
pub const NONCE_LEN: usize = 12;
/// Authentication tag length in bytes.
pub const TAG_LEN: usize = 16;

/// A 96-bit AES-GCM nonce.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct AeadNonce(pub [u8; NONCE_LEN]);

impl AeadNonce {
    /// Accepts exactly 12 bytes.
    pub fn from_slice(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; NONCE_LEN] = bytes.try_into().map_err(|_| SealError::InvalidNonceLength(bytes.len()))?;
        Ok(Self(arr))
    }
}

impl fmt::Debug for AeadNonce {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Nonces are not secret, but derived base nonces are key material in spirit: keep them out.
        f.write_str("AeadNonce(..)")
    }
}

/// An AES-256-GCM key. Not `Clone`, not printable; AWS-LC wipes its key schedule on drop.
pub struct Aes256Gcm {
    key: LessSafeKey,
}

impl fmt::Debug for Aes256Gcm {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Aes256Gcm(<redacted>)")
    }
}

impl Aes256Gcm {
    /// Builds the key; anything but 32 bytes is an [`SealError::InvalidKeyLength`].
    pub fn new(key: &[u8]) -> Result<Self> {
        if key.len() != KEY_LEN {
            return Err(SealError::InvalidKeyLength { expected: KEY_LEN, actual: key.len() });
        }
        let unbound = UnboundKey::new(&AES_256_GCM, key).map_err(|_| SealError::Crypto("AES-256-GCM key setup"))?;
        Ok(Self { key: LessSafeKey::new(unbound) })
    }

    /// Encrypts `buf` in place and returns the tag.
    pub fn seal_in_place(&self, nonce: &AeadNonce, aad: &[u8], buf: &mut [u8]) -> Result<[u8; TAG_LEN]> {
        let tag = self
            .key
            .seal_in_place_separate_tag(Nonce::assume_unique_for_key(nonce.0), Aad::from(aad), buf)
            .map_err(|_| SealError::Crypto("AES-256-GCM seal"))?;
        let mut out = [0u8; TAG_LEN];
        out.copy_from_slice(tag.as_ref());
        Ok(out)
    }

    /// Encrypts `plaintext` into `out`, which must be exactly `plaintext.len() + TAG_LEN` bytes
    /// (ciphertext followed by the tag).
    pub fn seal_into(&self, nonce: &AeadNonce, aad: &[u8], plaintext: &[u8], out: &mut [u8]) -> Result<()> {
        if out.len() != plaintext.len() + TAG_LEN {
            return Err(SealError::InvalidArgument("AEAD output buffer has the wrong length".into()));
        }
        let (ct, tag) = out.split_at_mut(plaintext.len());
        self.key
            .seal_out_of_place_scatter(Nonce::assume_unique_for_key(nonce.0), Aad::from(aad), plaintext, ct, &[], tag)
            .map_err(|_| SealError::Crypto("AES-256-GCM seal"))
    }

    /// Decrypts `ciphertext_and_tag` into `out` (exactly `ciphertext_and_tag.len() - TAG_LEN`
    /// bytes). Returns `false` when authentication fails; `out` is then zeroed.
    #[must_use = "an unchecked open releases nothing authenticated"]
    pub fn open_into(&self, nonce: &AeadNonce, aad: &[u8], ciphertext_and_tag: &[u8], out: &mut [u8]) -> bool {
        let Some(ct_len) = ciphertext_and_tag.len().checked_sub(TAG_LEN) else {
            out.zeroize();
            return false;
        };
        if out.len() != ct_len {
            out.zeroize();
            return false;
        }
        let (ct, tag) = ciphertext_and_tag.split_at(ct_len);
        let ok =
            self.key.open_separate_gather(Nonce::assume_unique_for_key(nonce.0), Aad::from(aad), ct, tag, out).is_ok();
        if !ok {
            out.zeroize();
        }
        ok
    }

    /// Decrypts in place: `buf` holds ciphertext followed by the tag; on success the plaintext
    /// prefix is returned. On failure the whole buffer is zeroed.
    pub fn open_in_place<'a>(&self, nonce: &AeadNonce, aad: &[u8], buf: &'a mut [u8]) -> Option<&'a mut [u8]> {
        if buf.len() < TAG_LEN {
            buf.zeroize();
            return None;
        }
        let ok = self.key.open_in_place(Nonce::assume_unique_for_key(nonce.0), Aad::from(aad), buf).is_ok();
        if !ok {
            buf.zeroize();
            return None;
        }
        let len = buf.len() - TAG_LEN;
        Some(&mut buf[..len])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_tamper() {
        let key = Aes256Gcm::new(&[7u8; 32]).unwrap();
        let nonce = AeadNonce([1u8; 12]);
        let mut out = vec![0u8; 5 + TAG_LEN];
        key.seal_into(&nonce, b"aad", b"hello", &mut out).unwrap();
        let mut pt = [0u8; 5];
        assert!(key.open_into(&nonce, b"aad", &out, &mut pt));
        assert_eq!(&pt, b"hello");
        out[0] ^= 1;
        assert!(!key.open_into(&nonce, b"aad", &out, &mut pt));
        assert_eq!(pt, [0u8; 5], "failed open must wipe the output");
    }

    #[test]
    fn rejects_wrong_sizes() {
        assert!(matches!(Aes256Gcm::new(&[0u8; 16]), Err(SealError::InvalidKeyLength { expected: 32, actual: 16 })));
        assert!(matches!(AeadNonce::from_slice(&[0u8; 16]), Err(SealError::InvalidNonceLength(16))));
    }
}
