//! Key types: data keys (DEKs), recipient key pairs and their text encodings, key ids.
//!
//! A **data key** encrypts exactly one object's body. It is wrapped to one or more **recipients**
//! (a tenant's key-encryption key or a person's key) with HPKE; each recipient is a P-384 key pair.
//! Secrets are kept in `Zeroizing` buffers, are neither `Clone` nor printable, and only leave as the
//! explicit text of a secret key file.

use std::fmt;
use std::str::FromStr;

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

use crate::error::{Result, SealError};
use crate::hpke;
use crate::kdf::RandomSource;

/// Length of a data key (AES-256 / Cobblestone-256 input key).
pub const DATA_KEY_LEN: usize = 32;

const PUBLIC_PREFIX: &str = "coffre-p384-pub-";
const SECRET_PREFIX: &str = "COFFRE-P384-SECRET-";
const CHECKSUM_LEN: usize = 4;
const KEY_ID_DOMAIN: &[u8] = b"coffre/recipient-key-id/v1\0hpke-p384\0";

/// A 256-bit data encryption key. Wiped on drop; no `Clone`, `Debug` shows nothing.
pub struct DataKey(Zeroizing<[u8; DATA_KEY_LEN]>);

impl fmt::Debug for DataKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("DataKey(<redacted>)")
    }
}

impl DataKey {
    /// A fresh random key.
    pub fn generate(rng: &mut dyn RandomSource) -> Result<Self> {
        let mut key = Zeroizing::new([0u8; DATA_KEY_LEN]);
        rng.fill(key.as_mut())?;
        Ok(Self(key))
    }

    /// Takes key bytes from another secret source (an unwrapped stanza, a vault release).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self> {
        let arr: [u8; DATA_KEY_LEN] = bytes
            .try_into()
            .map_err(|_| SealError::InvalidKeyLength { expected: DATA_KEY_LEN, actual: bytes.len() })?;
        Ok(Self(Zeroizing::new(arr)))
    }

    /// The raw key, for the crate's own derivations and for wrapping.
    pub fn expose_secret(&self) -> &[u8; DATA_KEY_LEN] {
        &self.0
    }
}

/// Identifies a recipient public key: SHA-256 over a domain string and the key. Shown in headers
/// and errors so people can tell which key an object is sealed to.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct KeyId(pub [u8; 32]);

impl KeyId {
    /// Key id of an uncompressed P-384 public key.
    pub fn of_p384(public: &[u8; hpke::PUBLIC_KEY_LEN]) -> Self {
        let mut ctx = digest::Context::new(&digest::SHA256);
        ctx.update(KEY_ID_DOMAIN);
        ctx.update(public);
        let mut id = [0u8; 32];
        id.copy_from_slice(ctx.finish().as_ref());
        Self(id)
    }

    /// All 64 hex digits.
    pub fn to_hex(&self) -> String {
        hex::encode(self.0)
    }
}

impl fmt::Display for KeyId {
    /// The first 16 hex digits (64 bits), enough for people to tell keys apart.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(&self.0[..8]))
    }
}

impl fmt::Debug for KeyId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "KeyId({self})")
    }
}

fn checksum(prefix: &str, body: &[u8]) -> [u8; CHECKSUM_LEN] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(prefix.as_bytes());
    ctx.update(body);
    let mut out = [0u8; CHECKSUM_LEN];
    out.copy_from_slice(&ctx.finish().as_ref()[..CHECKSUM_LEN]);
    out
}

/// Decodes a copyable key string `PREFIX + base64url(body ‖ 4-byte checksum)`, the checksum
/// being the first 4 bytes of SHA-256(prefix ‖ body). `body_len`, when given, is the exact body
/// length. Every Coffre key text (recipient and approver keys) uses this form, so a typo or a
/// truncated copy is caught before it names another valid key.
pub fn decode_checked(text: &str, prefix: &str, body_len: Option<usize>, what: &str) -> Result<Zeroizing<Vec<u8>>> {
    let Some(encoded) = text.strip_prefix(prefix) else {
        return Err(SealError::InvalidKey(format!("a {what} starts with \"{prefix}\"")));
    };
    let raw = Zeroizing::new(
        URL_SAFE_NO_PAD
            .decode(encoded)
            .map_err(|_| SealError::InvalidKey(format!("the {what} is not valid base64url; was it copied whole?")))?,
    );
    let fits = match body_len {
        Some(n) => raw.len() == n + CHECKSUM_LEN,
        None => raw.len() > CHECKSUM_LEN,
    };
    if !fits {
        return Err(SealError::InvalidKey(format!("the {what} has the wrong length; was it copied whole?")));
    }
    let (body, sum) = raw.split_at(raw.len() - CHECKSUM_LEN);
    if checksum(prefix, body) != sum {
        return Err(SealError::InvalidKey(format!("the {what} checksum does not match; it was mistyped or truncated")));
    }
    Ok(Zeroizing::new(body.to_vec()))
}

/// Encodes `body` as `PREFIX + base64url(body ‖ checksum)`; see [`decode_checked`].
pub fn encode_checked(prefix: &str, body: &[u8]) -> Zeroizing<String> {
    let mut raw = Zeroizing::new(Vec::with_capacity(body.len() + CHECKSUM_LEN));
    raw.extend_from_slice(body);
    raw.extend_from_slice(&checksum(prefix, body));
    Zeroizing::new(format!("{prefix}{}", URL_SAFE_NO_PAD.encode(raw.as_slice())))
}

/// A recipient's public key (HPKE DHKEM(P-384)). Its text form is one copyable string:
/// `coffre-p384-pub-` followed by base64url of the uncompressed point and a 4-byte checksum.
#[derive(Clone, PartialEq, Eq)]
pub struct RecipientPublicKey {
    point: [u8; hpke::PUBLIC_KEY_LEN],
    id: KeyId,
}

impl RecipientPublicKey {
    /// From an uncompressed SEC1 point; the point is validated.
    pub fn from_sec1(bytes: &[u8]) -> Result<Self> {
        hpke::validate_public_key(bytes)?;
        let mut point = [0u8; hpke::PUBLIC_KEY_LEN];
        point.copy_from_slice(bytes);
        Ok(Self { point, id: KeyId::of_p384(&point) })
    }

    /// The uncompressed SEC1 point.
    pub fn sec1(&self) -> &[u8; hpke::PUBLIC_KEY_LEN] {
        &self.point
    }

    /// The key id.
    pub fn key_id(&self) -> KeyId {
        self.id
    }
}

impl fmt::Display for RecipientPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_checked(PUBLIC_PREFIX, &self.point))
    }
}

impl fmt::Debug for RecipientPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipientPublicKey({})", self.id)
    }
}

impl FromStr for RecipientPublicKey {
    type Err = SealError;

    fn from_str(s: &str) -> Result<Self> {
        let body = decode_checked(s.trim(), PUBLIC_PREFIX, Some(hpke::PUBLIC_KEY_LEN), "Coffre public key")?;
        Self::from_sec1(&body)
    }
}

/// A recipient's secret key (an "identity"): opens objects sealed to its public key.
///
/// Not `Clone`; `Debug` shows only the key id. Its text form is the content of a key file.
pub struct RecipientSecretKey {
    pair: hpke::KeyPair,
    public: RecipientPublicKey,
}

impl fmt::Debug for RecipientSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RecipientSecretKey({}, <redacted>)", self.public.id)
    }
}

impl RecipientSecretKey {
    /// A fresh key pair.
    pub fn generate(rng: &mut dyn RandomSource) -> Result<Self> {
        Self::from_pair(hpke::KeyPair::generate(rng)?)
    }

    fn from_pair(pair: hpke::KeyPair) -> Result<Self> {
        let public = RecipientPublicKey::from_sec1(pair.public_key())?;
        Ok(Self { pair, public })
    }

    /// Deterministic key pair from input keying material (HPKE `DeriveKeyPair`); for tests and
    /// reproducible fixtures, never for real keys.
    pub fn derive_for_tests(ikm: &[u8]) -> Result<Self> {
        Self::from_pair(hpke::KeyPair::derive(ikm)?)
    }

    /// The matching public key.
    pub fn public(&self) -> &RecipientPublicKey {
        &self.public
    }

    pub(crate) fn hpke(&self) -> &hpke::KeyPair {
        &self.pair
    }

    /// The key file text: comment lines with the public key and key id, then the secret line.
    /// The caller writes it to a file readable by its owner only.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let secret = encode_checked(SECRET_PREFIX, self.pair.scalar());
        Zeroizing::new(format!(
            "# Coffre recipient secret key (HPKE DHKEM(P-384, HKDF-SHA384)). Keep this file secret.\n\
             # public key: {}\n\
             # key id: {}\n\
             {}\n",
            self.public,
            self.public.id.to_hex(),
            secret.as_str()
        ))
    }

    /// Parses a key file: `#` comment lines and blank lines are ignored; exactly one secret-key
    /// line must remain.
    pub fn from_key_file(text: &str) -> Result<Self> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let Some(line) = lines.next() else {
            return Err(SealError::InvalidKey("the key file holds no secret key line".into()));
        };
        if lines.next().is_some() {
            return Err(SealError::InvalidKey("the key file holds more than one key line".into()));
        }
        if line.starts_with(PUBLIC_PREFIX) {
            return Err(SealError::InvalidKey(
                "this is a public key; opening needs the secret key file made by `coffre keygen`".into(),
            ));
        }
        let scalar = decode_checked(line, SECRET_PREFIX, Some(hpke::SECRET_KEY_LEN), "Coffre secret key")?;
        Self::from_pair(hpke::KeyPair::from_scalar(&scalar)?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kdf::SystemRandom;

    #[test]
    fn public_key_text_round_trip_and_typos() {
        let sk = RecipientSecretKey::generate(&mut SystemRandom).unwrap();
        let text = sk.public().to_string();
        assert!(text.starts_with(PUBLIC_PREFIX));
        let back: RecipientPublicKey = text.parse().unwrap();
        assert_eq!(&back, sk.public());
        // One changed character anywhere after the prefix is caught by the checksum or decoding.
        let mut chars: Vec<char> = text.chars().collect();
        let i = PUBLIC_PREFIX.len() + 10;
        chars[i] = if chars[i] == 'A' { 'B' } else { 'A' };
        let typo: String = chars.into_iter().collect();
        assert!(typo.parse::<RecipientPublicKey>().is_err());
        assert!(text[..text.len() - 3].parse::<RecipientPublicKey>().is_err());
    }

    #[test]
    fn key_file_round_trip_and_no_secret_in_debug() {
        let sk = RecipientSecretKey::generate(&mut SystemRandom).unwrap();
        let file = sk.to_key_file();
        let back = RecipientSecretKey::from_key_file(&file).unwrap();
        assert_eq!(back.public(), sk.public());
        let secret_line = file.lines().find(|l| l.starts_with(SECRET_PREFIX)).unwrap();
        let debug = format!("{sk:?} {back:?}");
        assert!(!debug.contains(&secret_line[SECRET_PREFIX.len()..]));
        assert!(RecipientSecretKey::from_key_file(&sk.public().to_string()).is_err());
        assert!(RecipientSecretKey::from_key_file("# nothing\n").is_err());
        let twice = format!("{}{}", file.as_str(), file.as_str());
        assert!(RecipientSecretKey::from_key_file(&twice).is_err());
    }
}
