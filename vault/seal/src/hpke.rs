//! HPKE (RFC 9180), base mode, single shot, with two FIPS-approved suites:
//!
//! - DHKEM(P-384, HKDF-SHA384) / HKDF-SHA384 / AES-256-GCM (KEM 0x0011, KDF 0x0002, AEAD 0x0002):
//!   the sealed-object format's key wrapping ([`KeyPair`], [`seal`], [`open`]);
//! - DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM (KEM 0x0010, KDF 0x0001, AEAD 0x0002):
//!   the key broker's release wrapping to a worker's ephemeral key ([`p256`]), chosen for speed
//!   (one wrap per release, every release of a fleet; see SECURITY.md).
//!
//! Built on aws-lc-rs primitives (ECDH, HMAC/HKDF, AES-256-GCM) because the RustCrypto
//! arithmetic behind the `hpke` crate is ~15× slower here. Interoperability with the `hpke` crate
//! is checked in the tests (both suites, both directions, and `DeriveKeyPair`).
//!
//! Ephemeral keys come from `DeriveKeyPair(random(Nsk))` with an injected [`RandomSource`], as
//! RFC 9180 §7.1.3 allows, so tests can be deterministic and the core stays pure. A key pair
//! keeps its parsed aws-lc private key, so each use costs one scalar multiplication, not three.

use aws_lc_rs::agreement::{self, PrivateKey, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::aead::{AeadNonce, Aes256Gcm, TAG_LEN};
use crate::error::{Result, SealError};
use crate::kdf::{HkdfHash, Prk, RandomSource, extract_to_bytes};

/// Length of a serialized (uncompressed SEC1) P-384 public key and of `enc`.
pub const PUBLIC_KEY_LEN: usize = 97;
/// Length of a P-384 private scalar.
pub const SECRET_KEY_LEN: usize = 48;

/// One HPKE suite's constants.
struct Suite {
    name: &'static str,
    kem_suite_id: &'static [u8],
    hpke_suite_id: &'static [u8],
    alg: &'static agreement::Algorithm,
    hash: HkdfHash,
    /// Nsk, Npk, Nsecret.
    secret_key_len: usize,
    public_key_len: usize,
    shared_secret_len: usize,
    /// The group order, big-endian (Nsk bytes).
    order: &'static [u8],
}

static P384: Suite = Suite {
    name: "P-384",
    kem_suite_id: b"KEM\x00\x11",
    hpke_suite_id: b"HPKE\x00\x11\x00\x02\x00\x02",
    alg: &agreement::ECDH_P384,
    hash: HkdfHash::Sha384,
    secret_key_len: SECRET_KEY_LEN,
    public_key_len: PUBLIC_KEY_LEN,
    shared_secret_len: 48,
    order: &P384_ORDER,
};

static P256: Suite = Suite {
    name: "P-256",
    kem_suite_id: b"KEM\x00\x10",
    hpke_suite_id: b"HPKE\x00\x10\x00\x01\x00\x02",
    alg: &agreement::ECDH_P256,
    hash: HkdfHash::Sha256,
    secret_key_len: p256::SECRET_KEY_LEN,
    public_key_len: p256::PUBLIC_KEY_LEN,
    shared_secret_len: 32,
    order: &P256_ORDER,
};

/// Order of the P-384 group, big-endian.
const P384_ORDER: [u8; 48] = [
    0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
    0xff, 0xff, 0xff, 0xff, 0xff, 0xc7, 0x63, 0x4d, 0x81, 0xf4, 0x37, 0x2d, 0xdf, 0x58, 0x1a, 0x0d, 0xb2, 0x48, 0xb0,
    0xa7, 0x7a, 0xec, 0xec, 0x19, 0x6a, 0xcc, 0xc5, 0x29, 0x73,
];

/// Order of the P-256 group, big-endian.
const P256_ORDER: [u8; 32] = [
    0xff, 0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xbc, 0xe6, 0xfa,
    0xad, 0xa7, 0x17, 0x9e, 0x84, 0xf3, 0xb9, 0xca, 0xc2, 0xfc, 0x63, 0x25, 0x51,
];

/// A suite's key pair: the scalar (wiped on drop), its public key, and the parsed private key
/// (aws-lc wipes it when freed).
struct Pair {
    suite: &'static Suite,
    scalar: Zeroizing<Vec<u8>>,
    public: Vec<u8>,
    private: PrivateKey,
}

impl Pair {
    fn from_scalar(suite: &'static Suite, scalar: &[u8]) -> Result<Self> {
        if scalar.len() != suite.secret_key_len {
            return Err(SealError::InvalidKeyLength { expected: suite.secret_key_len, actual: scalar.len() });
        }
        let scalar = Zeroizing::new(scalar.to_vec());
        if !scalar_in_range(suite, &scalar) {
            return Err(SealError::InvalidKey(format!("{} scalar out of range", suite.name)));
        }
        let private = PrivateKey::from_private_key(suite.alg, &scalar)
            .map_err(|_| SealError::InvalidKey(format!("{} scalar rejected", suite.name)))?;
        let public =
            private.compute_public_key().map_err(|_| SealError::Crypto("public key computation"))?.as_ref().to_vec();
        if public.len() != suite.public_key_len {
            return Err(SealError::Crypto("public key has an unexpected encoding"));
        }
        Ok(Self { suite, scalar, public, private })
    }

    /// `DeriveKeyPair(ikm)` of RFC 9180 §7.1.3 (rejection sampling; the bitmask is 0xff for
    /// both curves, so nothing is cleared).
    fn derive(suite: &'static Suite, ikm: &[u8]) -> Result<Self> {
        // The PRK decides the secret scalar: it never exists outside aws-lc-rs's wiped storage.
        let prk = labeled_extract_prk(suite, suite.kem_suite_id, b"", b"dkp_prk", ikm);
        let mut candidate = Zeroizing::new(vec![0u8; suite.secret_key_len]);
        for counter in 0u8..=255 {
            labeled_expand(&prk, suite.kem_suite_id, b"candidate", &[counter], candidate.as_mut())?;
            if scalar_in_range(suite, &candidate) {
                return Self::from_scalar(suite, &candidate);
            }
        }
        Err(SealError::Crypto("DeriveKeyPair found no valid scalar"))
    }

    fn generate(suite: &'static Suite, rng: &mut dyn RandomSource) -> Result<Self> {
        let mut ikm = Zeroizing::new(vec![0u8; suite.secret_key_len]);
        rng.fill(ikm.as_mut())?;
        Self::derive(suite, &ikm)
    }
}

fn scalar_in_range(suite: &Suite, s: &[u8]) -> bool {
    // Lexicographic comparison of equal-length big-endian integers.
    s.iter().any(|&b| b != 0) && s < suite.order
}

fn validate(suite: &Suite, bytes: &[u8]) -> Result<()> {
    if bytes.len() != suite.public_key_len || bytes[0] != 0x04 {
        return Err(SealError::InvalidKey(format!(
            "expected an uncompressed {} point ({} bytes starting with 0x04)",
            suite.name, suite.public_key_len
        )));
    }
    agreement::ParsedPublicKey::try_from(UnparsedPublicKey::new(suite.alg, bytes))
        .map(|_| ())
        .map_err(|_| SealError::InvalidKey(format!("not a point on {}", suite.name)))
}

/// Checks that `bytes` is a valid uncompressed P-384 point (on the curve, not infinity).
pub fn validate_public_key(bytes: &[u8]) -> Result<()> {
    validate(&P384, bytes)
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
fn labeled_extract_public(suite: &Suite, label: &[u8], ikm: &[u8], out: &mut [u8]) -> Result<()> {
    extract_to_bytes(suite.hash, b"", &labeled_ikm(suite.hpke_suite_id, label, ikm), out)
}

/// `LabeledExtract` of secret inputs, kept as a PRK inside aws-lc-rs (wiped on drop) and only
/// ever expanded: no copy of a secret PRK is left in our memory.
fn labeled_extract_prk(suite: &Suite, suite_id: &[u8], salt: &[u8], label: &[u8], ikm: &[u8]) -> Prk {
    Prk::extract(suite.hash, salt, &labeled_ikm(suite_id, label, ikm))
}

fn labeled_expand(prk: &Prk, suite_id: &[u8], label: &[u8], info: &[u8], out: &mut [u8]) -> Result<()> {
    let len = u16::try_from(out.len()).map_err(|_| SealError::InvalidArgument("HPKE expand too long".into()))?;
    prk.expand(&[&len.to_be_bytes(), b"HPKE-v1", suite_id, label, info], out)
}

/// `ExtractAndExpand(DH(own, peer), enc || pkR)`: the KEM shared secret.
fn kem_shared_secret(own: &Pair, peer: &[u8], enc: &[u8], pk_r: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let suite = own.suite;
    validate(suite, peer)?;
    let dh = agreement::agree(
        &own.private,
        UnparsedPublicKey::new(suite.alg, peer),
        SealError::InvalidKey("ECDH with this public key failed".into()),
        |secret| Ok(Zeroizing::new(secret.to_vec())),
    )?;
    let prk = labeled_extract_prk(suite, suite.kem_suite_id, b"", b"eae_prk", &dh);
    let mut kem_context = Vec::with_capacity(enc.len() + pk_r.len());
    kem_context.extend_from_slice(enc);
    kem_context.extend_from_slice(pk_r);
    let mut shared = Zeroizing::new(vec![0u8; suite.shared_secret_len]);
    labeled_expand(&prk, suite.kem_suite_id, b"shared_secret", &kem_context, shared.as_mut())?;
    Ok(shared)
}

/// `KeySchedule(mode_base, shared_secret, info, "", "")`: the AEAD key and base nonce.
fn key_schedule(suite: &Suite, shared_secret: &[u8], info: &[u8]) -> Result<(Aes256Gcm, AeadNonce)> {
    let nh = suite.hash.output_len();
    let mut context = vec![0u8; 1 + 2 * nh];
    context[0] = 0x00; // mode_base
    labeled_extract_public(suite, b"psk_id_hash", b"", &mut context[1..1 + nh])?;
    labeled_extract_public(suite, b"info_hash", info, &mut context[1 + nh..])?;
    let prk = labeled_extract_prk(suite, suite.hpke_suite_id, shared_secret, b"secret", b"");
    let mut key = Zeroizing::new([0u8; 32]);
    labeled_expand(&prk, suite.hpke_suite_id, b"key", &context, key.as_mut())?;
    let mut nonce = [0u8; 12];
    labeled_expand(&prk, suite.hpke_suite_id, b"base_nonce", &context, &mut nonce)?;
    Ok((Aes256Gcm::new(key.as_ref())?, AeadNonce(nonce)))
}

fn seal_core(ephemeral: &Pair, pk_r: &[u8], info: &[u8], aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>> {
    let shared = kem_shared_secret(ephemeral, pk_r, &ephemeral.public, pk_r)?;
    let (key, nonce) = key_schedule(ephemeral.suite, &shared, info)?;
    let mut ciphertext = vec![0u8; plaintext.len() + TAG_LEN];
    key.seal_into(&nonce, aad, plaintext, &mut ciphertext)?;
    Ok(ciphertext)
}

fn open_core(recipient: &Pair, enc: &[u8], info: &[u8], aad: &[u8], ciphertext: &[u8]) -> Option<Zeroizing<Vec<u8>>> {
    let shared = kem_shared_secret(recipient, enc, enc, &recipient.public).ok()?;
    let (key, nonce) = key_schedule(recipient.suite, &shared, info).ok()?;
    let mut plaintext = Zeroizing::new(vec![0u8; ciphertext.len().checked_sub(TAG_LEN)?]);
    key.open_into(&nonce, aad, ciphertext, &mut plaintext).then_some(plaintext)
}

/// A suite's public API: its key pair (with the public key as an array), `Sealed`, `seal`,
/// `seal_with_ephemeral`, `open`. One definition for both suites.
macro_rules! suite_api {
    ($suite:expr, $curve:literal, $npk:expr, $debug:literal) => {
        #[doc = concat!("An HPKE ", $curve, " key pair. The scalar is wiped on drop and never printed.")]
        pub struct KeyPair {
            pair: Pair,
            public: [u8; $npk],
        }

        impl std::fmt::Debug for KeyPair {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.write_str($debug)
            }
        }

        impl KeyPair {
            fn wrap(pair: Pair) -> Result<Self> {
                let public = pair
                    .public
                    .as_slice()
                    .try_into()
                    .map_err(|_| SealError::Crypto(concat!($curve, " public key length")))?;
                Ok(Self { pair, public })
            }

            #[doc = concat!("Imports a private scalar (big-endian, 0 < s < n) on ", $curve, ".")]
            pub fn from_scalar(scalar: &[u8]) -> Result<Self> {
                Self::wrap(Pair::from_scalar(&$suite, scalar)?)
            }

            #[doc = concat!("`DeriveKeyPair(ikm)` of RFC 9180 §7.1.3 for ", $curve, ".")]
            pub fn derive(ikm: &[u8]) -> Result<Self> {
                Self::wrap(Pair::derive(&$suite, ikm)?)
            }

            /// Generates a fresh key pair from the given randomness.
            pub fn generate(rng: &mut dyn RandomSource) -> Result<Self> {
                Self::wrap(Pair::generate(&$suite, rng)?)
            }

            /// The serialized public key (uncompressed SEC1 point).
            pub fn public_key(&self) -> &[u8; $npk] {
                &self.public
            }
        }

        /// The output of [`seal`]: the encapsulated key and the ciphertext (with tag).
        #[derive(Debug, Clone, PartialEq, Eq)]
        pub struct Sealed {
            /// `enc`, the ephemeral public key.
            pub enc: [u8; $npk],
            /// AEAD ciphertext followed by its 16-byte tag.
            pub ciphertext: Vec<u8>,
        }

        /// Single-shot base-mode seal of `plaintext` to `pk_r`.
        pub fn seal(
            pk_r: &[u8],
            info: &[u8],
            aad: &[u8],
            plaintext: &[u8],
            rng: &mut dyn RandomSource,
        ) -> Result<Sealed> {
            seal_with_ephemeral(&KeyPair::generate(rng)?, pk_r, info, aad, plaintext)
        }

        /// [`seal`] with a caller-chosen ephemeral key pair (deterministic; for tests and vectors).
        pub fn seal_with_ephemeral(
            ephemeral: &KeyPair,
            pk_r: &[u8],
            info: &[u8],
            aad: &[u8],
            plaintext: &[u8],
        ) -> Result<Sealed> {
            let ciphertext = seal_core(&ephemeral.pair, pk_r, info, aad, plaintext)?;
            Ok(Sealed { enc: ephemeral.public, ciphertext })
        }

        /// Single-shot base-mode open. Any failure (bad `enc`, wrong key, modified ciphertext) is
        /// `None`: callers decide how to report it.
        pub fn open(
            recipient: &KeyPair,
            enc: &[u8],
            info: &[u8],
            aad: &[u8],
            ciphertext: &[u8],
        ) -> Option<Zeroizing<Vec<u8>>> {
            open_core(&recipient.pair, enc, info, aad, ciphertext)
        }
    };
}

suite_api!(P384, "P-384", PUBLIC_KEY_LEN, "hpke::KeyPair(<redacted>)");

impl KeyPair {
    /// The private scalar, for serialization into a key file only.
    pub(crate) fn scalar(&self) -> &[u8] {
        &self.pair.scalar
    }
}

/// The release suite: DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM.
pub mod p256 {
    use zeroize::Zeroizing;

    use super::{P256, Pair, open_core, seal_core, validate};
    use crate::error::{Result, SealError};
    use crate::kdf::RandomSource;

    /// Length of a serialized (uncompressed SEC1) P-256 public key and of `enc`.
    pub const PUBLIC_KEY_LEN: usize = 65;
    /// Length of a P-256 private scalar.
    pub const SECRET_KEY_LEN: usize = 32;
    /// The HPKE KEM identifier, DHKEM(P-256, HKDF-SHA256).
    pub const KEM_ID: u16 = 0x0010;

    suite_api!(P256, "P-256", PUBLIC_KEY_LEN, "hpke::p256::KeyPair(<redacted>)");

    /// Checks that `bytes` is a valid uncompressed P-256 point (on the curve, not infinity).
    pub fn validate_public_key(bytes: &[u8]) -> Result<()> {
        validate(&P256, bytes)
    }
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
        assert!(p256::validate_public_key(&[0x04; 65]).is_err());
        assert!(p256::validate_public_key(KeyPair::derive(b"x").unwrap().public_key()).is_err());
        assert!(p256::KeyPair::from_scalar(&P256_ORDER).is_err());
        assert!(p256::KeyPair::from_scalar(&[0u8; 48]).is_err());
        assert!(KeyPair::from_scalar(&[0u8; 48]).is_err());
        assert!(KeyPair::from_scalar(&P384_ORDER).is_err());
        assert!(KeyPair::from_scalar(&[0xff; 48]).is_err());
        let mut below = P384_ORDER;
        below[47] -= 1;
        assert!(KeyPair::from_scalar(&below).is_ok());
    }
}
