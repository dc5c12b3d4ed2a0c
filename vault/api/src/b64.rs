//! Byte fields on the wire: standard base64 (padded), one string each.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Deserializer, Serializer};

/// `Vec<u8>` as base64.
pub fn serialize<S: Serializer>(bytes: &[u8], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&STANDARD.encode(bytes))
}

/// `Vec<u8>` from base64.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    let s = String::deserialize(d)?;
    STANDARD.decode(s).map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}")))
}

/// `Vec<Vec<u8>>` as a list of base64 strings.
pub mod list {
    use super::*;

    /// Serializes.
    pub fn serialize<S: Serializer>(items: &[Vec<u8>], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(items.iter().map(|b| STANDARD.encode(b)))
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Vec<u8>>, D::Error> {
        let v = Vec::<String>::deserialize(d)?;
        v.iter()
            .map(|s| STANDARD.decode(s).map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}"))))
            .collect()
    }
}

/// `Option<Vec<u8>>` as base64 or null.
pub mod opt {
    use super::*;

    /// Serializes.
    pub fn serialize<S: Serializer>(bytes: &Option<Vec<u8>>, s: S) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&STANDARD.encode(b)),
            None => s.serialize_none(),
        }
    }

    /// Deserializes.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        Option::<String>::deserialize(d)?
            .map(|s| STANDARD.decode(s).map_err(|e| serde::de::Error::custom(format!("invalid base64: {e}"))))
            .transpose()
    }
}
