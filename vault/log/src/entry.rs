//! Log entries: one JSON object per event, canonical and versioned.
//!
//! Every entry is an object whose first member `schema` names its type and version (for example
//! `"coffre.key_released/v1"`), followed by `at` (Unix seconds) and the type's fields in a fixed
//! order. The encoding is canonical: compact JSON, members in schema order, no floats, and
//! [`Entry::from_bytes`] refuses any byte sequence that is not exactly what
//! [`Entry::to_bytes`] writes for the value it reads. So one event has one encoding, and one
//! leaf hash. A canonical entry never contains a newline, which lets the directory store keep one
//! entry per line.

use serde::{Deserialize, Serialize};

use crate::digest::Digest;

/// What a tenant-scoped export writes in place of another tenant's entry: the line carries
/// nothing, the entry's leaf hash (kept in the export) keeps the tree and the signatures
/// checkable, and an audit skips the entry's content.
pub const REDACTED: &[u8] = br#"{"schema":"coffre.redacted/v1"}"#;

/// The longest entry this log accepts (a denial with many failed checks stays far below).
pub const MAX_ENTRY_LEN: usize = 1 << 20;

/// A policy version as the log names it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PolicyVersion {
    /// Policy id.
    pub id: String,
    /// Policy version.
    pub version: u64,
    /// The policy's digest (`sha384:…` of its canonical form, as coffre-policies computes it).
    pub digest: String,
}

/// One failed check of a denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FailedCheck {
    /// The policy whose rule failed (empty for evidence checks before any policy).
    pub policy: String,
    /// The check's name, e.g. `snp.policy.debug`.
    pub name: String,
    /// What the rule wanted.
    pub expected: String,
    /// What the evidence or request showed.
    pub actual: String,
}

/// The events the vault records.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "schema", deny_unknown_fields)]
pub enum Entry {
    /// A security officer proposed a policy version.
    #[serde(rename = "coffre.policy_proposed/v1")]
    PolicyProposed {
        at: u64,
        tenant: String,
        policy: PolicyVersion,
        /// Blob: the policy document as written (TOML).
        document: Digest,
        /// Who proposed it (an approver key id or an operator name).
        proposer: String,
    },
    /// One approver signed a policy version.
    #[serde(rename = "coffre.policy_approved/v1")]
    PolicyApproved {
        at: u64,
        tenant: String,
        policy: PolicyVersion,
        /// The approver's key id.
        approver: String,
        /// Blob: the approval (coffre-approval/v1 JSON).
        approval: Digest,
    },
    /// A policy version took effect: its approvals met the approver set's threshold.
    #[serde(rename = "coffre.policy_activated/v1")]
    PolicyActivated {
        at: u64,
        tenant: String,
        policy: PolicyVersion,
        /// Blob: the policy document.
        document: Digest,
        /// Blobs: the approvals that met the threshold.
        approvals: Vec<Digest>,
        /// The approver set version that checked them.
        approver_set: u64,
    },
    /// The tenant's approver set changed (version 1: its first set).
    #[serde(rename = "coffre.approver_set_changed/v1")]
    ApproverSetChanged {
        at: u64,
        tenant: String,
        version: u64,
        /// The set's digest, as coffre-policies computes it.
        digest: String,
        /// Blob: the set document (coffre-approvers/v1 TOML).
        document: Digest,
        /// Blobs: approvals by the previous set (none for version 1).
        approvals: Vec<Digest>,
    },
    /// A tenant was created.
    #[serde(rename = "coffre.tenant_created/v1")]
    TenantCreated {
        at: u64,
        tenant: String,
        /// The tenant's display name.
        name: String,
    },
    /// A dataset was registered with the labels that decide which policies cover it. Labels are
    /// taken from here, never from a release request.
    #[serde(rename = "coffre.dataset_registered/v1")]
    DatasetRegistered { at: u64, tenant: String, dataset: String, labels: Vec<String> },
    /// A sealed object was stored as the next version of a dataset; its data key (wrapped to
    /// the tenant's KEK, kept in the vault's metadata) gets the id `key_id`, bound to this tenant
    /// and dataset.
    #[serde(rename = "coffre.object_registered/v1")]
    ObjectRegistered {
        at: u64,
        tenant: String,
        dataset: String,
        version: u64,
        /// The object id from the sealed header (hex).
        object_id: String,
        /// SHA-256 of the whole sealed object, as uploaded.
        digest: Digest,
        /// Length of the sealed object in bytes.
        size: u64,
        /// The data key's id.
        key_id: String,
        /// The owner's signing key id when the object carries an owner signature.
        signer: Option<String>,
    },
    /// A data owner submitted a signed job manifest.
    #[serde(rename = "coffre.job_submitted/v1")]
    JobSubmitted {
        at: u64,
        tenant: String,
        job: String,
        /// Blob: the signed job (coffre-signed-job/v1 JSON).
        manifest: Digest,
    },
    /// Keys were released to an attested worker.
    #[serde(rename = "coffre.key_released/v1")]
    KeyReleased {
        at: u64,
        tenant: String,
        job: String,
        /// The job's datasets, in manifest order.
        datasets: Vec<String>,
        /// The policies that allowed it.
        policies: Vec<PolicyVersion>,
        /// Blob: the evidence bundle the decision was made on.
        evidence_bundle: Digest,
        /// Blob: the job manifest (canonical bytes, which the report data binds).
        job_manifest: Digest,
        /// Blob: the worker's ephemeral public keys the keys were wrapped to.
        ephemeral_key: Digest,
        /// The vault's single-use challenge (hex), never accepted twice.
        nonce: String,
        /// The released data keys, one per dataset, from the vault's registry.
        key_ids: Vec<String>,
        /// Whether simulated evidence was accepted (development mode only).
        simulated: bool,
    },
    /// A release was refused, with every failed check.
    #[serde(rename = "coffre.release_denied/v1")]
    ReleaseDenied {
        at: u64,
        tenant: String,
        /// The job asked for, when the request named one the tenant has.
        job: Option<String>,
        /// The policies that applied.
        policies: Vec<PolicyVersion>,
        /// Blob: the evidence bundle, when the request got that far.
        evidence_bundle: Option<Digest>,
        /// Blob: the job manifest, when the job is known.
        job_manifest: Option<Digest>,
        /// The challenge presented (hex), when one was.
        nonce: Option<String>,
        failed: Vec<FailedCheck>,
        /// For a KBS client (`/kbs/v0`): the resource path asked for (`dataset/key/version`),
        /// when the request got as far as naming one. A denial at `/attest` names none and uses
        /// its nonce up; a denied resource leaves the attestation's other resources to their
        /// own decisions.
        #[serde(default, skip_serializing_if = "Option::is_none")]
        resource: Option<String>,
    },
    /// A data key was released to a Confidential Containers guest through the KBS protocol
    /// (`GET /kbs/v0/resource/<dataset>/key/<version>`), encrypted to the TEE key the guest's
    /// evidence binds.
    #[serde(rename = "coffre.kbs_released/v1")]
    KbsReleased {
        at: u64,
        tenant: String,
        /// The resource path as asked for.
        resource: String,
        dataset: String,
        /// The released data key.
        key_id: String,
        /// The policies that allowed it.
        policies: Vec<PolicyVersion>,
        /// Blob: the evidence bundle (binding `kbs/0.4.0`).
        evidence_bundle: Digest,
        /// Blob: the KBS binding document (JCS of the runtime data) the report data hashes.
        binding: Digest,
        /// Blob: the TEE public key (JWK, JCS) the key was encrypted to.
        tee_pubkey: Digest,
        /// The broker's nonce (hex); one attestation may fetch several resources with it.
        nonce: String,
        /// Whether simulated evidence (the sample TEE) was accepted (development mode only).
        simulated: bool,
    },
    /// A tenant was marked for testing (or unmarked): only such a tenant may be served the KBS
    /// sample TEE, and only by a development vault.
    #[serde(rename = "coffre.tenant_testing/v1")]
    TenantTesting { at: u64, tenant: String, testing: bool },
    /// A trained model artifact and its provenance were registered.
    #[serde(rename = "coffre.artifact_registered/v1")]
    ArtifactRegistered {
        at: u64,
        tenant: String,
        /// The job that produced it.
        job: String,
        /// The model name; versions per (tenant, model) only increase.
        model: String,
        version: u64,
        /// SHA-256 of the sealed artifact.
        artifact: Digest,
        /// Blob: the provenance statement (DSSE envelope).
        provenance: Digest,
        /// The log index of the release the job ran under.
        release: u64,
    },
    /// A key was created (a tenant KEK, or a data key outside a dataset upload).
    #[serde(rename = "coffre.key_created/v1")]
    KeyCreated {
        at: u64,
        tenant: String,
        key_id: String,
        purpose: String,
        /// The dataset the key belongs to, for data keys.
        dataset: Option<String>,
    },
    /// A key was rotated: `key_id` is retired in favour of `new_key_id`.
    #[serde(rename = "coffre.key_rotated/v1")]
    KeyRotated { at: u64, tenant: String, key_id: String, new_key_id: String },
    /// Data keys of a tenant are now wrapped (in the vault's metadata) by the tenant's KEK `kek`
    /// (a step of a KEK rotation; the sealed objects are untouched).
    #[serde(rename = "coffre.keys_rewrapped/v1")]
    KeysRewrapped { at: u64, tenant: String, kek: String, key_ids: Vec<String> },
    /// Crypto-shredding of a key was scheduled for `not_before`.
    #[serde(rename = "coffre.shredding_scheduled/v1")]
    ShreddingScheduled { at: u64, tenant: String, key_id: String, not_before: u64 },
    /// A scheduled shredding was cancelled.
    #[serde(rename = "coffre.shredding_cancelled/v1")]
    ShreddingCancelled { at: u64, tenant: String, key_id: String },
    /// A key was destroyed; nothing sealed under it can be opened again.
    #[serde(rename = "coffre.key_shredded/v1")]
    KeyShredded { at: u64, tenant: String, key_id: String },
    /// A vault setting changed (e.g. `development_mode` from `off` to `on`).
    #[serde(rename = "coffre.config_changed/v1")]
    ConfigChanged { at: u64, setting: String, old: String, new: String },
}

/// Why bytes are not an entry.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryError {
    /// Not JSON of a known schema.
    #[error("not a log entry: {0}")]
    Invalid(String),
    /// Valid, but not in canonical form.
    #[error("not in canonical form (re-encoding gives other bytes)")]
    NotCanonical,
    /// Too long.
    #[error("longer than {MAX_ENTRY_LEN} bytes")]
    TooLong,
}

impl Entry {
    /// The canonical encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        // Serializing these types cannot fail: no maps with non-string keys, no floats.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads a canonical encoding.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, EntryError> {
        if bytes.len() > MAX_ENTRY_LEN {
            return Err(EntryError::TooLong);
        }
        let entry: Entry = serde_json::from_slice(bytes).map_err(|e| EntryError::Invalid(e.to_string()))?;
        if entry.to_bytes() != bytes {
            return Err(EntryError::NotCanonical);
        }
        Ok(entry)
    }

    /// The schema name, e.g. `coffre.key_released/v1`.
    pub fn schema(&self) -> &'static str {
        match self {
            Entry::PolicyProposed { .. } => "coffre.policy_proposed/v1",
            Entry::PolicyApproved { .. } => "coffre.policy_approved/v1",
            Entry::PolicyActivated { .. } => "coffre.policy_activated/v1",
            Entry::ApproverSetChanged { .. } => "coffre.approver_set_changed/v1",
            Entry::TenantCreated { .. } => "coffre.tenant_created/v1",
            Entry::DatasetRegistered { .. } => "coffre.dataset_registered/v1",
            Entry::ObjectRegistered { .. } => "coffre.object_registered/v1",
            Entry::JobSubmitted { .. } => "coffre.job_submitted/v1",
            Entry::KeyReleased { .. } => "coffre.key_released/v1",
            Entry::ReleaseDenied { .. } => "coffre.release_denied/v1",
            Entry::KbsReleased { .. } => "coffre.kbs_released/v1",
            Entry::TenantTesting { .. } => "coffre.tenant_testing/v1",
            Entry::ArtifactRegistered { .. } => "coffre.artifact_registered/v1",
            Entry::KeyCreated { .. } => "coffre.key_created/v1",
            Entry::KeyRotated { .. } => "coffre.key_rotated/v1",
            Entry::KeysRewrapped { .. } => "coffre.keys_rewrapped/v1",
            Entry::ShreddingScheduled { .. } => "coffre.shredding_scheduled/v1",
            Entry::ShreddingCancelled { .. } => "coffre.shredding_cancelled/v1",
            Entry::KeyShredded { .. } => "coffre.key_shredded/v1",
            Entry::ConfigChanged { .. } => "coffre.config_changed/v1",
        }
    }

    /// The tenant the entry concerns (`None` for vault-wide settings).
    pub fn tenant(&self) -> Option<&str> {
        match self {
            Entry::PolicyProposed { tenant, .. }
            | Entry::PolicyApproved { tenant, .. }
            | Entry::PolicyActivated { tenant, .. }
            | Entry::ApproverSetChanged { tenant, .. }
            | Entry::TenantCreated { tenant, .. }
            | Entry::DatasetRegistered { tenant, .. }
            | Entry::ObjectRegistered { tenant, .. }
            | Entry::JobSubmitted { tenant, .. }
            | Entry::KeyReleased { tenant, .. }
            | Entry::ReleaseDenied { tenant, .. }
            | Entry::KbsReleased { tenant, .. }
            | Entry::TenantTesting { tenant, .. }
            | Entry::ArtifactRegistered { tenant, .. }
            | Entry::KeyCreated { tenant, .. }
            | Entry::KeyRotated { tenant, .. }
            | Entry::KeysRewrapped { tenant, .. }
            | Entry::ShreddingScheduled { tenant, .. }
            | Entry::ShreddingCancelled { tenant, .. }
            | Entry::KeyShredded { tenant, .. } => Some(tenant),
            Entry::ConfigChanged { .. } => None,
        }
    }

    /// When the event happened (Unix seconds).
    pub fn at(&self) -> u64 {
        match self {
            Entry::PolicyProposed { at, .. }
            | Entry::PolicyApproved { at, .. }
            | Entry::PolicyActivated { at, .. }
            | Entry::ApproverSetChanged { at, .. }
            | Entry::TenantCreated { at, .. }
            | Entry::DatasetRegistered { at, .. }
            | Entry::ObjectRegistered { at, .. }
            | Entry::JobSubmitted { at, .. }
            | Entry::KeyReleased { at, .. }
            | Entry::ReleaseDenied { at, .. }
            | Entry::KbsReleased { at, .. }
            | Entry::TenantTesting { at, .. }
            | Entry::ArtifactRegistered { at, .. }
            | Entry::KeyCreated { at, .. }
            | Entry::KeyRotated { at, .. }
            | Entry::KeysRewrapped { at, .. }
            | Entry::ShreddingScheduled { at, .. }
            | Entry::ShreddingCancelled { at, .. }
            | Entry::KeyShredded { at, .. }
            | Entry::ConfigChanged { at, .. } => *at,
        }
    }

    /// Every blob the entry refers to (their absence from an export is a discrepancy).
    pub fn blobs(&self) -> Vec<Digest> {
        match self {
            Entry::PolicyProposed { document, .. } => vec![*document],
            Entry::PolicyApproved { approval, .. } => vec![*approval],
            Entry::PolicyActivated { document, approvals, .. }
            | Entry::ApproverSetChanged { document, approvals, .. } => {
                std::iter::once(*document).chain(approvals.iter().copied()).collect()
            }
            Entry::KeyReleased { evidence_bundle, job_manifest, ephemeral_key, .. } => {
                vec![*evidence_bundle, *job_manifest, *ephemeral_key]
            }
            Entry::JobSubmitted { manifest, .. } => vec![*manifest],
            Entry::KbsReleased { evidence_bundle, binding, tee_pubkey, .. } => {
                vec![*evidence_bundle, *binding, *tee_pubkey]
            }
            Entry::ReleaseDenied { evidence_bundle, job_manifest, .. } => {
                evidence_bundle.iter().chain(job_manifest.iter()).copied().collect()
            }
            Entry::ArtifactRegistered { provenance, .. } => vec![*provenance],
            _ => Vec::new(),
        }
    }
}
