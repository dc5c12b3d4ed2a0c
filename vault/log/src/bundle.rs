//! Evidence bundles: everything a key-release decision was made on, content-addressed.
//!
//! A bundle is a canonical JSON manifest (`coffre-evidence-bundle/v1`) naming by digest every
//! input of the decision — the raw CPU and GPU evidence, every certificate, CRL, collateral item
//! and RIM used, the worker's ephemeral public key, the job manifest and the policy documents —
//! plus the verification time, the nonce, the vault mode and the decision itself. The items are
//! blobs stored beside it; the bundle's own digest is what the log entry commits to, so changing
//! any byte of any item changes a digest the signed tree covers.
//!
//! Item roles are strings the vault and the auditor agree on (`cpu.snp.report`, `cpu.snp.vek`,
//! `cpu.snp.chain`, `cpu.snp.crl`, `cpu.tdx.quote`, `cpu.tdx.collateral`, `gpu.report`,
//! `gpu.chain`, `gpu.rim`), so this crate stays independent of evidence formats.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;
use crate::entry::{FailedCheck, PolicyVersion};

/// The bundle format name.
pub const FORMAT: &str = "coffre-evidence-bundle/v1";
/// The longest bundle manifest accepted.
pub const MAX_BUNDLE_LEN: usize = 1 << 20;
/// The highest GPU index + 1 a bundle may name (a node has at most 8 GPUs; the margin keeps
/// this crate independent of the attestation limit while bounding every loop over GPUs).
pub const MAX_GPU_INDEX: u32 = 64;

/// One input of the decision, stored as a blob.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Item {
    /// What it is, e.g. `cpu.snp.report`.
    pub role: String,
    /// For GPU items, which GPU (0-based); absent otherwise.
    pub gpu: Option<u32>,
    /// The blob.
    pub digest: Digest,
}

/// A policy the decision evaluated, with its document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BundledPolicy {
    /// Which version.
    pub policy: PolicyVersion,
    /// Blob: the document (TOML) as activated.
    pub document: Digest,
}

/// The decision as the vault made it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Decision {
    /// Released or not.
    pub allowed: bool,
    /// Simulated evidence was accepted (development mode only).
    pub simulated: bool,
    /// Every failed check (empty when allowed).
    pub failed: Vec<FailedCheck>,
}

/// An evidence bundle.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bundle {
    /// Always [`FORMAT`].
    pub format: String,
    /// When the evidence was verified (Unix seconds): the time an audit verifies it at.
    pub verified_at: u64,
    /// The vault's single-use challenge, hex.
    pub nonce: String,
    /// Blob: the worker's ephemeral public key.
    pub ephemeral_key: Digest,
    /// Blob: the job manifest.
    pub job_manifest: Digest,
    /// `production` or `development`.
    pub mode: String,
    /// The evidence, in order.
    pub items: Vec<Item>,
    /// The policies evaluated.
    pub policies: Vec<BundledPolicy>,
    /// The decision.
    pub decision: Decision,
    /// The binding the evidence was checked under when it is not Coffre's own: `kbs/0.4.0`
    /// (then `ephemeral_key` is the TEE key's JWK and `job_manifest` the KBS binding document).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub binding: Option<String>,
}

/// Why bytes are not a bundle.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BundleError {
    /// Not JSON of this format.
    #[error("not an evidence bundle: {0}")]
    Invalid(String),
    /// Valid, but not in canonical form.
    #[error("the bundle is not in canonical form")]
    NotCanonical,
}

impl Bundle {
    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The digest the log entry commits to.
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    /// Reads a canonical encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, BundleError> {
        if bytes.len() > MAX_BUNDLE_LEN {
            return Err(BundleError::Invalid(format!("longer than {MAX_BUNDLE_LEN} bytes")));
        }
        let b: Bundle = serde_json::from_slice(bytes).map_err(|e| BundleError::Invalid(e.to_string()))?;
        if b.format != FORMAT {
            return Err(BundleError::Invalid(format!("format {:?}, expected {FORMAT:?}", b.format)));
        }
        if b.mode != "production" && b.mode != "development" {
            return Err(BundleError::Invalid(format!("mode {:?}: production or development", b.mode)));
        }
        if let Some(i) = b.items.iter().find(|i| i.gpu.is_some_and(|g| g >= MAX_GPU_INDEX)) {
            return Err(BundleError::Invalid(format!(
                "item {:?} names GPU {}; a bundle holds GPUs 0..{MAX_GPU_INDEX}",
                i.role,
                i.gpu.unwrap_or_default()
            )));
        }
        if b.to_bytes() != bytes {
            return Err(BundleError::NotCanonical);
        }
        Ok(b)
    }

    /// Every blob the bundle names (items, key, manifest, policy documents).
    pub fn blobs(&self) -> Vec<Digest> {
        let mut out = vec![self.ephemeral_key, self.job_manifest];
        out.extend(self.items.iter().map(|i| i.digest));
        out.extend(self.policies.iter().map(|p| p.document));
        out
    }

    /// The items with `role` (for GPU roles, of GPU `gpu`).
    pub fn items<'a>(&'a self, role: &'a str, gpu: Option<u32>) -> impl Iterator<Item = &'a Digest> + 'a {
        self.items.iter().filter(move |i| i.role == role && i.gpu == gpu).map(|i| &i.digest)
    }

    /// The number of GPUs with evidence in the bundle: one more than the highest GPU index
    /// (saturating, so a crafted index cannot overflow; [`Bundle::from_bytes`] refuses indices
    /// from [`MAX_GPU_INDEX`] on).
    pub fn gpu_count(&self) -> u32 {
        self.items.iter().filter_map(|i| i.gpu).map(|g| g.saturating_add(1)).max().unwrap_or(0)
    }
}
