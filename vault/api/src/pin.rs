//! TLS certificate pinning by SHA-256 fingerprint, like SSH host keys.

/// A SHA-256 certificate fingerprint: `sha256:` and 64 hex digits (colons allowed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Parses `sha256:<hex>` (colons and case ignored).
    pub fn parse(text: &str) -> Result<Self, String> {
        let t = text.trim();
        let hexpart: String = t.strip_prefix("sha256:").unwrap_or(t).chars().filter(|c| *c != ':').collect();
        let mut out = [0u8; 32];
        hex::decode_to_slice(hexpart.to_ascii_lowercase(), &mut out)
            .map_err(|_| format!("{text:?} is not a SHA-256 fingerprint (sha256: and 64 hex digits)"))?;
        Ok(Self(out))
    }

    /// The fingerprint of a DER certificate.
    pub fn of(der: &[u8]) -> Self {
        let mut out = [0u8; 32];
        out.copy_from_slice(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, der).as_ref());
        Self(out)
    }
}

impl std::fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sha256:{}", hex::encode(self.0))
    }
}
