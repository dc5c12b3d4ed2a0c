//! Signing keys (ECDSA P-384 with SHA-384): who vouches for an object, a job or a model.
//!
//! A data owner signs the sealed objects they upload and the job manifests they submit; a worker
//! signs the provenance of what it trained with a key bound into its attestation. Every signature
//! here is over a *domain-separated* message ([`signed_message`]): a fixed context string, its
//! length, then the payload, so a signature made for one purpose never verifies for another.
//!
//! Text forms, like every Coffre key: `coffre-p384-sig-` + base64url(uncompressed point ‖
//! checksum) for the public key, and a key file whose secret line starts
//! `COFFRE-P384-SIGNING-SECRET-` (PKCS#8, checksummed).

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::rand::SystemRandom as AwsRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::error::{Result, SealError};
use crate::keys::{decode_checked, encode_checked};

const PUBLIC_PREFIX: &str = "coffre-p384-sig-";
const SECRET_PREFIX: &str = "COFFRE-P384-SIGNING-SECRET-";
/// Length of an uncompressed P-384 point.
pub const POINT_LEN: usize = 97;
/// Length of a signature (`r ‖ s`, fixed width).
pub const SIGNATURE_LEN: usize = 96;

/// The bytes actually signed for `payload` in `context`: `"coffre-signature/v1\n" ‖ len(context)
/// as u16 BE ‖ context ‖ payload`. Contexts name a purpose, e.g. `coffre/object/v1`.
pub fn signed_message(context: &str, payload: &[u8]) -> Vec<u8> {
    let mut m = Vec::with_capacity(22 + context.len() + payload.len());
    m.extend_from_slice(b"coffre-signature/v1\n");
    let len = u16::try_from(context.len()).unwrap_or(u16::MAX);
    m.extend_from_slice(&len.to_be_bytes());
    m.extend_from_slice(context.as_bytes());
    m.extend_from_slice(payload);
    m
}

/// A verifying (public) key.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct VerifyingKey {
    point: [u8; POINT_LEN],
}

impl VerifyingKey {
    /// From an uncompressed SEC1 point, checked to be on the curve.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self> {
        let point: [u8; POINT_LEN] = bytes
            .try_into()
            .map_err(|_| SealError::InvalidKey("a signing public key is a 97-byte uncompressed P-384 point".into()))?;
        if point[0] != 0x04 || UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, &point[..]).parse().is_err()
        {
            return Err(SealError::InvalidKey("the signing public key is not a valid P-384 point".into()));
        }
        Ok(Self { point })
    }

    /// The uncompressed SEC1 point.
    pub fn sec1(&self) -> &[u8; POINT_LEN] {
        &self.point
    }

    /// Short id: the first 8 bytes of SHA-256 of the point, hex.
    pub fn key_id(&self) -> String {
        let d = aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &self.point);
        hex::encode(&d.as_ref()[..8])
    }

    /// Whether `signature` signs `message` as it is, for formats that domain-separate their own
    /// messages (DSSE's pre-authentication encoding). Everything else uses [`VerifyingKey::verify`].
    pub fn verify_raw(&self, message: &[u8], signature: &[u8]) -> bool {
        signature.len() == SIGNATURE_LEN
            && UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, &self.point[..])
                .verify(message, signature)
                .is_ok()
    }

    /// Whether `signature` signs `payload` in `context` under this key.
    pub fn verify(&self, context: &str, payload: &[u8], signature: &[u8]) -> bool {
        signature.len() == SIGNATURE_LEN
            && UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, &self.point[..])
                .verify(&signed_message(context, payload), signature)
                .is_ok()
    }
}

impl fmt::Display for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_checked(PUBLIC_PREFIX, &self.point))
    }
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VerifyingKey({})", self.key_id())
    }
}

impl FromStr for VerifyingKey {
    type Err = SealError;

    fn from_str(s: &str) -> Result<Self> {
        let s = s.trim();
        if s.starts_with("coffre-p384-pub-") {
            return Err(SealError::InvalidKey(
                "this is a recipient (sealing) key; a signature needs a signing key from `coffre keygen --signing`"
                    .into(),
            ));
        }
        let point = decode_checked(s, PUBLIC_PREFIX, Some(POINT_LEN), "Coffre signing public key")?;
        Self::from_sec1(&point)
    }
}

/// A signing (secret) key. Not `Clone`; `Debug` shows only the key id; the PKCS#8 bytes are
/// wiped on drop.
pub struct SigningKey {
    pair: EcdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    public: VerifyingKey,
}

impl fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SigningKey({}, <redacted>)", self.public.key_id())
    }
}

impl SigningKey {
    /// A fresh key from the operating system's random source.
    pub fn generate() -> Result<Self> {
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &AwsRandom::new())
            .map_err(|_| SealError::Crypto("signing key generation"))?;
        Self::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self> {
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der)
            .map_err(|_| SealError::InvalidKey("the signing secret key is not a valid P-384 key".into()))?;
        let public = VerifyingKey::from_sec1(pair.public_key().as_ref())?;
        Ok(Self { pair, pkcs8: Zeroizing::new(der.to_vec()), public })
    }

    /// The public half.
    pub fn verifying_key(&self) -> &VerifyingKey {
        &self.public
    }

    /// Signs `payload` in `context`.
    pub fn sign(&self, context: &str, payload: &[u8]) -> Result<[u8; SIGNATURE_LEN]> {
        let sig = self
            .pair
            .sign(&AwsRandom::new(), &signed_message(context, payload))
            .map_err(|_| SealError::Crypto("signing"))?;
        sig.as_ref().try_into().map_err(|_| SealError::Crypto("signature length"))
    }

    /// Signs `message` as it is, for formats that domain-separate their own messages (DSSE's
    /// pre-authentication encoding). Everything else uses [`SigningKey::sign`].
    pub fn sign_raw(&self, message: &[u8]) -> Result<[u8; SIGNATURE_LEN]> {
        let sig = self.pair.sign(&AwsRandom::new(), message).map_err(|_| SealError::Crypto("signing"))?;
        sig.as_ref().try_into().map_err(|_| SealError::Crypto("signature length"))
    }

    /// Key file text: comments with the public key, then the secret line. The caller writes it
    /// readable by its owner only.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let secret = encode_checked(SECRET_PREFIX, &self.pkcs8);
        Zeroizing::new(format!(
            "# Coffre signing secret key (ECDSA P-384): signs sealed objects and job manifests. Keep it secret.\n\
             # public key: {}\n\
             # key id: {}\n\
             {}\n",
            self.public,
            self.public.key_id(),
            secret.as_str()
        ))
    }

    /// Parses a key file written by [`SigningKey::to_key_file`].
    pub fn from_key_file(text: &str) -> Result<Self> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines.next().ok_or_else(|| SealError::InvalidKey("the key file holds no secret key line".into()))?;
        if lines.next().is_some() {
            return Err(SealError::InvalidKey("the key file holds more than one key line".into()));
        }
        if !line.starts_with(SECRET_PREFIX) {
            return Err(SealError::InvalidKey(
                "this is not a signing key file; make one with `coffre keygen --signing`".into(),
            ));
        }
        let der = decode_checked(line, SECRET_PREFIX, None, "Coffre signing secret key")?;
        Self::from_pkcs8(&der)
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn signatures_bind_their_context_and_payload() {
        let k = SigningKey::generate().unwrap();
        let sig = k.sign("coffre/object/v1", b"payload").unwrap();
        let v = k.verifying_key();
        assert!(v.verify("coffre/object/v1", b"payload", &sig));
        assert!(!v.verify("coffre/job/v1", b"payload", &sig));
        assert!(!v.verify("coffre/object/v1", b"payloaD", &sig));
        let other = SigningKey::generate().unwrap();
        assert!(!other.verifying_key().verify("coffre/object/v1", b"payload", &sig));
        // Context and payload cannot be shifted into each other.
        assert_ne!(signed_message("ab", b"c"), signed_message("a", b"bc"));
    }

    #[test]
    fn text_forms_round_trip_and_secrets_stay_out_of_debug() {
        let k = SigningKey::generate().unwrap();
        let text = k.verifying_key().to_string();
        assert_eq!(&text.parse::<VerifyingKey>().unwrap(), k.verifying_key());
        let file = k.to_key_file();
        let back = SigningKey::from_key_file(&file).unwrap();
        assert_eq!(back.verifying_key(), k.verifying_key());
        let secret = file.lines().find(|l| l.starts_with(SECRET_PREFIX)).unwrap();
        assert!(!format!("{k:?}{back:?}").contains(&secret[SECRET_PREFIX.len()..SECRET_PREFIX.len() + 20]));
        assert!(SigningKey::from_key_file(&text).is_err());
    }
}
