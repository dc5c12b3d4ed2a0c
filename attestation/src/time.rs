//! Time as an explicit input. Verifiers never read the clock: callers pass the moment at which
//! evidence and certificates must be valid (an auditor re-verifying years later passes the
//! recorded time).

use std::fmt;

use serde::Serialize;

/// Seconds since the Unix epoch, UTC.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct UnixTime(pub i64);

impl UnixTime {
    /// Parses an RFC 3339 timestamp such as `2025-06-01T00:00:00Z`.
    pub fn parse_rfc3339(text: &str) -> Result<Self, String> {
        time::OffsetDateTime::parse(text.trim(), &time::format_description::well_known::Rfc3339)
            .map(|t| Self(t.unix_timestamp()))
            .map_err(|e| format!("{text:?} is not an RFC 3339 time such as 2025-06-01T00:00:00Z ({e})"))
    }

    /// The current time, for callers at the edge (CLIs, services); verifiers take it as input.
    pub fn now() -> Self {
        Self(time::OffsetDateTime::now_utc().unix_timestamp())
    }

    /// RFC 3339 rendering in UTC.
    pub fn to_rfc3339(self) -> String {
        time::OffsetDateTime::from_unix_timestamp(self.0)
            .ok()
            .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
            .unwrap_or_else(|| format!("@{}", self.0))
    }
}

impl fmt::Display for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_rfc3339())
    }
}

impl fmt::Debug for UnixTime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "UnixTime({})", self.to_rfc3339())
    }
}

impl Serialize for UnixTime {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_rfc3339())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc3339_round_trip() {
        let t = UnixTime::parse_rfc3339("2025-06-01T00:00:00Z").unwrap();
        assert_eq!(t.0, 1_748_736_000);
        assert_eq!(t.to_rfc3339(), "2025-06-01T00:00:00Z");
        assert!(UnixTime::parse_rfc3339("2025-06-01").is_err());
        assert_eq!(UnixTime::parse_rfc3339("2025-06-01T02:00:00+02:00").unwrap(), t);
    }
}
