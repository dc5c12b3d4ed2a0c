//! HPKE (RFC 9180), base mode, single shot, with one FIPS-approved suite:
//! DHKEM(P-384, HKDF-SHA384) / HKDF-SHA384 / AES-256-GCM (KEM 0x0011, KDF 0x0002, AEAD 0x0002).
//!
//! Built on aws-lc-rs primitives (ECDH P-384, HMAC/HKDF-SHA-384, AES-256-GCM) because the
//! RustCrypto P-384 arithmetic behind the `hpke` crate is ~15× slower here, and key release wraps
//! one data key per request. Interoperability with the `hpke` crate is checked in the tests
//! (both directions, and `DeriveKeyPair`).
//!
//! Ephemeral keys come from `DeriveKeyPair(random(Nsk))` with an injected [`RandomSource`], as
//! RFC 9180 §7.1.3 allows, so tests can be deterministic and the core stays pure.

use aws_lc_rs::agreement::{self, ECDH_P384, PrivateKey, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::aead::{AeadNonce, Aes256Gcm, TAG_LEN};
use crate::error::{Result, SealError};
use crate::kdf::{HkdfHash, Prk, RandomSource, extract_to_bytes};

/// Length of a serialized (uncompressed SEC1) P-384 public key and of `enc`.
pub const PUBLIC_KEY_LEN: usize = 97;
/// Length of a P-384 private scalar.
pub const SECRET_KEY_LEN: usize = 48;
const SHARED_SECRET_LEN: usize = 48;
const HASH_LEN: usize = 48;

const KEM_SUITE_ID: &[u8] = b"KEM\x00\x11";
const HPKE_SUITE_ID: &[u8] = b"HPKE\x00\x11\x00\x02\x00\x02";

/// Order of the P-384 group, big-endian.
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf, 0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0,
    0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// An HPKE P-384 key pair. The scalar is wiped on drop and never printed.
pub struct KeyPair {
    scalar: Zeroizing<[u8; SECRET_KEY_LEN]>,
    public: [u8; PUBLIC_KEY_LEN],
}

impl std::fmt::Debug for KeyPair {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("hpke::KeyPair(<redacted>)")
    }
}

impl KeyPair {
    /// Imports a private scalar (48 bytes, big-endian, 0 < s < n).
    pub fn from_scalar(scalar: &[u8]) -> Result<Self> {
        let arr: [u8; SECRET_KEY_LEN] = scalar
            .try_into()
            .map_err(|_| SealError::InvalidKeyLength { expected: SECRET_KEY_LEN, actual: scalar.len() })?;
        let scalar = Zeroizing::new(arr);
        if !scalar_in_range(&scalar) {
            return Err(SealError::InvalidKey("P-384 scalar out of range".into()));
        }
        let private = private_key(&scalar)?;
        let public_key = private.compute_public_key().map_err(|_| SealError::Crypto("P-384 public key computation"))?;
        let public: [u8; PUBLIC_KEY_LEN] = public_key
            .as_ref()
            .try_into()
            .map_err(|_| SealError::Crypto("P-384 public key has an unexpected encoding"))?;
        Ok(Self { scalar, public })
    }

    /// `DeriveKeyPair(ikm)` of RFC 9180 §7.1.3 for P-384 (rejection sampling, bitmask 0xff).
    pub fn derive(ikm: &[u8]) -> Result<Self> {
        // The PRK decides the secret scalar: it never exists outside aws-lc-rs's wiped storage.
        let prk = labeled_extract_prk(KEM_SUITE_ID, b"", b"dkp_prk", ikm);
        for counter in 0u8..=255 {
            let mut candidate = Zeroizing::new([0u8; SECRET_KEY_LEN]);
            labeled_expand(&prk, KEM_SUITE_ID, b"candidate", &[counter], candidate.as_mut())?;
            // The bitmask for P-384 is 0xff: nothing to clear.
            if scalar_in_range(&candidate) {
                return Self::from_scalar(candidate.as_ref());
            }
        }
        Err(SealError::Crypto("DeriveKeyPair found no valid scalar"))
    }

    /// Generates a fresh key pair from the given randomness.
    pub fn generate(rng: &mut dyn RandomSource) -> Result<Self> {
        let mut ikm = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        rng.fill(ikm.as_mut())?;
        Self::derive(ikm.as_ref())
    }

    /// The serialized public key (uncompressed SEC1 point).
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public
    }

    /// The private scalar, for serialization into a key file only.
    pub(crate) fn scalar(&self) -> &[u8; SECRET_KEY_LEN] {
        &self.scalar
    }
}

fn scalar_in_range(s: &[u8; SECRET_KEY_LEN]) -> bool {
    // Lexicographic comparison of equal-length big-endian integers.
    s.iter().any(|&b| b != 0) && s[..] < P384_ORDER[..]
}

fn private_key(scalar: &[u8; SECRET_KEY_LEN]) -> Result<PrivateKey> {
    PrivateKey::from_private_key(&ECDH_P384, scalar).map_err(|_| SealError::InvalidKey("P-384 scalar rejected".into()))
}

/// Checks that `bytes` is a valid uncompressed P-384 point (on the curve, not infinity).
pub fn validate_public_key(bytes: &[u8]) -> Result<()> {
    if bytes.len() != PUBLIC_KEY_LEN || bytes[0] != 0x04 {
        return Err(SealError::InvalidKey("expected an uncompressed P-384 point (97 bytes starting with 0x04)".into()));
    }
    agreement::ParsedPublicKey::try_from(UnparsedPublicKey::new(&ECDH_P384, bytes))
        .map(|_| ())
        .map_err(|_| SealError::InvalidKey("not a point on P-384".into()))
}

fn labeled_ikm(suite_id: &[u8], label: &[u8], ikm: &[u8]) -> Zeroizing<Vec<u8>> {
    let mut labeled = Zeroizing::new(Vec::with_capacity(7 + suite_id.len() + label.len() + ikm.len()));
    labeled.extend_from_slice(b"HPKE-v1");
    labeled.extend_from_slice(suite_id);
    labeled.extend_from_slice(label);
    labeled.extend_from_slice(ikm);
    labeled
}

/// `LabeledExtract` of public inputs (the key schedule's `psk_id_hash` and `info_hash`), as bytes.
fn labeled_extract_public(suite_id: &[u8], label: &[u8], ikm: &[u8], out: &mut [u8]) -> Result<()> {
    extract_to_bytes(HkdfHash::Sha384, b"", &labeled_ikm(suite_id, label, ikm), out)
}

/// `LabeledExtract` of secret inputs, kept as a PRK inside aws-lc-rs (wiped on drop) and only
/// ever expanded: no copy of a secret PRK is left in our memory.
fn labeled_extract_prk(suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Prk {
    Prk::extract(HkdfHash::Sha384, salt, &labeled_ikm(suite_id, label, ikm))
}

fn labeled_expand(prk: &Prk, suite_id: &[u8], label: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    let len = u16::try_from(out.len()).map_err(|_| SealError::InvalidArgument("HPKE expand too long".into()))?;
    prk.expand(&[&len.to_be_bytes(), b"HPKE-v1", suite_id, label, info], out)
}

fn dh(private: &[u8; SECRET_KEY_LEN], peer: &[u8]) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
    validate_public_key(peer)?;
    let private = private_key(private)?;
    agreement::agree(
        &private,
        UnparsedPublicKey::new(&ECDH_P384, peer),
        SealError::InvalidKey("ECDH with this public key failed".into()),
        |secret| {
            let arr: [u8; SHARED_SECRET_LEN] =
                secret.try_into().map_err(|_| SealError::Crypto("unexpected ECDH output length"))?;
            Ok(Zeroizing::new(arr))
        },
    )
}

fn extract_and_expand(dh: &[u8], kem_context: &[u8]) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
    let prk = labeled_extract_prk(KEM_SUITE_ID, b"", b"eae_prk", dh);
    let mut shared = Zeroizing::new([0u8; SHARED_SECRET_LEN]);
    labeled_expand(&prk, KEM_SUITE_ID, b"shared_secret", kem_context, shared.as_mut())?;
    Ok(shared)
}

fn encap(ephemeral: &KeyPair, pk_r: &[u8]) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
    let dh = dh(&ephemeral.scalar, pk_r)?;
    let mut kem_context = [0u8; 2 * PUBLIC_KEY_LEN];
    kem_context[..PUBLIC_KEY_LEN].copy_from_slice(&ephemeral.public);
    kem_context[PUBLIC_KEY_LEN..].copy_from_slice(pk_r);
    extract_and_expand(dh.as_ref(), &kem_context)
}

fn decap(enc: &[u8], recipient: &KeyPair) -> Result<Zeroizing<[u8; SHARED_SECRET_LEN]>> {
    let dh = dh(&recipient.scalar, enc)?;
    let mut kem_context = [0u8; 2 * PUBLIC_KEY_LEN];
    kem_context[..PUBLIC_KEY_LEN].copy_from_slice(enc);
    kem_context[PUBLIC_KEY_LEN..].copy_from_slice(&recipient.public);
    extract_and_expand(dh.as_ref(), &kem_context)
}

/// `KeySchedule(mode_base, shared_secret, info, "", "")`: the AEAD key and base nonce.
fn key_schedule(shared_secret: &[u8], info: &[u8]) -> Result<(Aes256Gcm, AeadNonce)> {
    let mut context = [0u8; 1 + 2 * HASH_LEN];
    context[0] = 0x00; // mode_base
    labeled_extract_public(HPKE_SUITE_ID, b"psk_id_hash", b"", &mut context[1..1 + HASH_LEN])?;
    labeled_extract_public(HPKE_SUITE_ID, b"info_hash", info, &mut context[1 + HASH_LEN..])?;
    let prk = labeled_extract_prk(HPKE_SUITE_ID, shared_secret, b"secret", b"");
    let mut key = Zeroizing::new([0u8; 32]);
    labeled_expand(&prk, HPKE_SUITE_ID, b"key", &context, key.as_mut())?;
    let mut nonce = [0u8; 12];
    labeled_expand(&prk, HPKE_SUITE_ID, b"base_nonce", &context, &mut nonce)?;
    Ok((Aes256Gcm::new(key.as_ref())?, AeadNonce(nonce)))
}

/// The output of [`seal`]: the encapsulated key and the ciphertext (with tag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Sealed {
    /// `enc`, the ephemeral public key.
    pub enc: [u8; PUBLIC_KEY_LEN],
    /// AEAD ciphertext followed by its 16-byte tag.
    pub ciphertext: Vec<u8>,
}

/// Single-shot base-mode seal of `plaintext` to `pk_r`.
pub fn seal(pk_r: &[u8], info: &[u8], aad: &[u8], plaintext: &[u8], rng: &mut dyn RandomSource) -> Result<Sealed> {
    let ephemeral = KeyPair::generate(rng)?;
    seal_with_ephemeral(&ephemeral, pk_r, info, aad, plaintext)
}

/// [`seal`] with a caller-chosen ephemeral key pair (deterministic; for tests and vectors).
pub fn seal_with_ephemeral(
    ephemeral: &KeyPair,
    pk_r: &[u8],
    info: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Sealed> {
    let shared = encap(ephemeral, pk_r)?;
    let (key, nonce) = key_schedule(shared.as_ref(), info)?;
    let mut ciphertext = vec![0u8; plaintext.len() + TAG_LEN];
    key.seal_into(&nonce, aad, plaintext, &mut ciphertext)?;
    Ok(Sealed { enc: ephemeral.public, ciphertext })
}

/// Single-shot base-mode open. Any failure (bad `enc`, wrong key, modified ciphertext) is `None`:
/// callers decide how to report it.
pub fn open(recipient: &KeyPair, enc: &[u8], info: &[u8], aad: &[u8], ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let shared = decap(enc, recipient).ok()?;
    let (key, nonce) = key_schedule(shared.as_ref(), info).ok()?;
    let mut plaintext = Zeroizing::new(vec![0u8; ciphertext.len().checked_sub(TAG_LEN)?]);
    key.open_into(&nonce, aad, ciphertext, &mut plaintext).then_some(plaintext)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        let r = KeyPair::derive(b"recipient ikm for a round trip test....").unwrap();
        let e = KeyPair::derive(b"ephemeral").unwrap();
        let sealed = seal_with_ephemeral(&e, r.public_key(), b"info", b"aad", b"data key").unwrap();
        let pt = open(&r, &sealed.enc, b"info", b"aad", &sealed.ciphertext).unwrap();
        assert_eq!(&pt[..], b"data key");
        assert!(open(&r, &sealed.enc, b"other info", b"aad", &sealed.ciphertext).is_none());
        assert!(open(&r, &sealed.enc, b"info", b"other aad", &sealed.ciphertext).is_none());
        let other = KeyPair::derive(b"someone else").unwrap();
        assert!(open(&other, &sealed.enc, b"info", b"aad", &sealed.ciphertext).is_none());
    }

    #[test]
    fn rejects_bad_points_and_scalars() {
        assert!(validate_public_key(&[0x04; 97]).is_err());
        assert!(validate_public_key(&[0u8; 49]).is_err());
        assert!(KeyPair::from_scalar(&[0u8; 48]).is_err());
        assert!(KeyPair::from_scalar(&P384_ORDER).is_err());
        assert!(KeyPair::from_scalar(&[0xff; 48]).is_err());
        let mut below = P384_ORDER;
        below[47] -= 1;
        assert!(KeyPair::from_scalar(&below).is_ok());
    }
}
