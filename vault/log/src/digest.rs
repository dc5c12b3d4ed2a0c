//! `sha256:<hex>`: how the log names content (entries' references, blobs, bundles).

use std::fmt;

use aws_lc_rs::digest;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// A SHA-256 content address, written `sha256:` and 64 lower-case hex digits.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Digest([u8; 32]);

impl Digest {
    /// The digest of `bytes`.
    pub fn of(bytes: &[u8]) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(digest::digest(&digest::SHA256, bytes).as_ref());
        Self(out)
    }

    /// A digest computed elsewhere (e.g. while streaming an object).
    pub fn from_bytes(bytes: [u8; 32]) -> Self {
        Self(bytes)
    }

    /// The raw 32 bytes.
    pub fn as_bytes(&self) -> &[u8; 32] {
        &self.0
    }

    /// The hex part alone (file names).
    pub fn hex(&self) -> String {
        hex::encode(self.0)
    }

    /// Reads `sha256:<64 lower-case hex digits>`.
    pub fn parse(text: &str) -> Result<Self, String> {
        let hexpart = text.strip_prefix("sha256:").ok_or_else(|| format!("{text:?} does not start with sha256:"))?;
        if hexpart.len() != 64 || !hexpart.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)) {
            return Err(format!("{text:?} is not sha256: and 64 lower-case hex digits"));
        }
        let mut out = [0u8; 32];
        hex::decode_to_slice(hexpart, &mut out).map_err(|e| e.to_string())?;
        Ok(Self(out))
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}

impl fmt::Debug for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl Serialize for Digest {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Self::parse(&s).map_err(serde::de::Error::custom)
    }
}
