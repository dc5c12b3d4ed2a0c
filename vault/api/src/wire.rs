//! The vault's HTTP API, version 1: every request and response body, as JSON.
//!
//! Bytes travel as standard base64, digests as `sha256:<hex>`, nonces as lower-case hex, times as
//! Unix seconds. Every non-2xx response is a [`Problem`] (RFC 7807) whose `code` is stable.
//! The OpenAPI document at `/v1/openapi.json` is generated from these types.

use serde::{Deserialize, Serialize};

use crate::evidence::RawEvidence;

#[cfg(feature = "openapi")]
use utoipa::ToSchema;

/// The header that marks every response of a vault in development mode.
pub const DEVELOPMENT_HEADER: &str = "coffre-development-mode";
/// The header carrying an owner's object signature (base64 of the `coffre-object-signature/v1`
/// JSON) on an upload.
pub const OBJECT_SIGNATURE_HEADER: &str = "coffre-object-signature";
/// The header carrying an artifact's provenance (base64 of the DSSE envelope JSON) on upload.
pub const PROVENANCE_HEADER: &str = "coffre-provenance";

/// An RFC 7807 problem document.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Problem {
    /// `urn:coffre:problem:<code>`.
    #[serde(rename = "type")]
    pub kind: String,
    /// A short summary.
    pub title: String,
    /// The HTTP status.
    pub status: u16,
    /// What happened, for people.
    pub detail: String,
    /// Stable machine-readable code, e.g. `not_found`, `release_denied`, `challenge_expired`.
    pub code: String,
    /// What to do next, when there is something to do.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hint: Option<String>,
    /// For a denied release: its log index (the denial id).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub denial: Option<u64>,
    /// For a denied release: every failed check.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub failed: Vec<FailedCheckView>,
}

/// One failed check of a denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct FailedCheckView {
    /// The policy (`id@version`), empty for evidence and request checks.
    pub policy: String,
    /// The check's stable name.
    pub name: String,
    /// What was required.
    pub expected: String,
    /// What was found.
    pub actual: String,
}

impl From<&coffre_log::FailedCheck> for FailedCheckView {
    fn from(f: &coffre_log::FailedCheck) -> Self {
        Self { policy: f.policy.clone(), name: f.name.clone(), expected: f.expected.clone(), actual: f.actual.clone() }
    }
}

/// A principal's role within its tenant (`admin` without a tenant is the vault administrator).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// Uploads datasets, submits jobs, opens artifacts.
    Owner,
    /// Signs policy and approver-set approvals.
    Approver,
    /// Reads the log, denials and evidence.
    Auditor,
    /// Runs workers: asks for challenges and releases, registers artifacts.
    WorkerOperator,
    /// Manages the tenant's principals (or, without a tenant, the vault).
    Admin,
}

impl Role {
    /// Every role.
    pub const ALL: [Role; 5] = [Role::Owner, Role::Approver, Role::Auditor, Role::WorkerOperator, Role::Admin];

    /// The role's name as written.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::Owner => "owner",
            Role::Approver => "approver",
            Role::Auditor => "auditor",
            Role::WorkerOperator => "worker-operator",
            Role::Admin => "admin",
        }
    }
}

impl std::str::FromStr for Role {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        Role::ALL
            .into_iter()
            .find(|r| r.as_str() == s)
            .ok_or_else(|| format!("unknown role {s:?} (owner, approver, auditor, worker-operator, admin)"))
    }
}

/// Create a tenant (vault administrators).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreateTenant {
    /// Tenant id: lower-case letters, digits, `.`, `_`, `-`; at most 64.
    pub id: String,
    /// Display name.
    pub name: String,
}

/// Marks a tenant for testing, or unmarks it (vault administrator; marking needs development
/// mode): only such a tenant may be served the KBS sample TEE.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct MarkTesting {
    /// `true` to mark, `false` to unmark.
    pub testing: bool,
}

/// A tenant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct TenantView {
    /// Id.
    pub id: String,
    /// Display name.
    pub name: String,
    /// The key-encryption key owners seal datasets to.
    pub kek: KekView,
    /// The approver set version in force (none yet: 0).
    pub approver_set: u64,
}

/// A tenant's KEK (public half).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KekView {
    /// Version, from 1.
    pub version: u64,
    /// `coffre-p384-pub-…`: seal datasets to it (`coffre seal -r`).
    pub public_key: String,
    /// Its key id.
    pub key_id: String,
}

/// Start a resumable upload of a sealed object (`POST …/datasets/{dataset}/uploads`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct StartUpload {
    /// The whole object's size in bytes.
    pub size: u64,
    /// Bytes per part (every part but the last has exactly this many) [default: 64 MiB].
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub part_size: Option<u64>,
}

/// A part the vault holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UploadedPart {
    /// Its number, from 0.
    pub part: u64,
    /// Its size.
    pub size: u64,
    /// SHA-256 of its bytes, hex (a client compares it with its own before skipping the part).
    pub sha256: String,
}

/// A resumable upload: what the vault already holds of it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct UploadView {
    /// The upload's id.
    pub id: String,
    /// The object's size.
    pub size: u64,
    /// Bytes per part.
    pub part_size: u64,
    /// How many parts make the object.
    pub parts_total: u64,
    /// The parts received, by number.
    pub parts: Vec<UploadedPart>,
}

/// One step of a KEK rotation (`POST /v1/tenants/{tenant}/kek/rotate`; call again while
/// `remaining` is not 0: each call rewraps one batch, and a call after a crash resumes).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct KekRotation {
    /// The KEK version data keys are being rewrapped to (the active one).
    pub version: u64,
    /// Whether this call started the rotation (created the version).
    pub started: bool,
    /// Data keys rewrapped by this call.
    pub rewrapped: u64,
    /// Data keys still wrapped by an older version (or not yet logged).
    pub remaining: u64,
    /// The log entries this call appended.
    pub log_indices: Vec<u64>,
}

/// A shredding request's outcome (`POST …/shred`) or its cancellation (`DELETE …/shred`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Shredding {
    /// The keys concerned (data keys; for a tenant, its KEKs too).
    pub keys: Vec<String>,
    /// When the keys will be destroyed (Unix seconds; absent for a cancellation).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<u64>,
    /// The log entries appended.
    pub log_indices: Vec<u64>,
}

/// Create a principal of a tenant (tenant administrators; the vault administrator for `admin`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct CreatePrincipal {
    /// A name (`alice`).
    pub name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// The principal's signing key (`coffre-p384-sig-…`): owners sign objects and jobs with it.
    #[serde(default)]
    pub signing_key: Option<String>,
    /// SHA-256 of a client certificate (hex) to authenticate with mutual TLS instead of a token.
    #[serde(default)]
    pub client_cert_sha256: Option<String>,
}

/// A principal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PrincipalView {
    /// Id.
    pub id: String,
    /// Tenant (none for the vault administrator).
    pub tenant: Option<String>,
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Signing key, when registered.
    pub signing_key: Option<String>,
    /// Client certificate fingerprint, when registered.
    pub client_cert_sha256: Option<String>,
}

/// A principal just created, with its token: shown once, stored only hashed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct CreatedPrincipal {
    /// The principal.
    pub principal: PrincipalView,
    /// The API token (`coffre_…`). Keep it secret; it is not shown again.
    pub token: String,
}

/// Install a new approver set (version 1 by an administrator; later versions with the current
/// set's approvals).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChangeApprovers {
    /// The set (`coffre-approvers/v1` TOML).
    pub document: String,
    /// Approvals of the new set by members of the current one (`coffre policy sign` JSON).
    #[serde(default)]
    pub approvals: Vec<String>,
}

/// An approver set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApproverSetView {
    /// Version.
    pub version: u64,
    /// Approvals needed.
    pub threshold: u32,
    /// Members: (name, key id).
    pub approvers: Vec<ApproverView>,
}

/// One approver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ApproverView {
    /// Name.
    pub name: String,
    /// Key id.
    pub key_id: String,
}

/// Propose a policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ProposePolicy {
    /// The policy (`coffre-policy/v1` TOML).
    pub document: String,
}

/// Add an approval to a proposed policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ApprovePolicy {
    /// The approval (`coffre policy sign` JSON).
    pub approval: String,
}

/// A policy version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct PolicyView {
    /// Id.
    pub id: String,
    /// Version.
    pub version: u64,
    /// `sha384:…` of its canonical form.
    pub digest: String,
    /// `proposed`, `active` or `superseded`.
    pub state: String,
    /// Key ids of the approvers whose approvals are logged for it.
    pub approvals: Vec<String>,
    /// What it allows, in plain words.
    pub description: String,
}

/// Register a dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct RegisterDataset {
    /// Dataset id (a name).
    pub id: String,
    /// Labels that decide which policies cover it (recorded in the log; never taken from a release
    /// request).
    #[serde(default)]
    pub labels: Vec<String>,
}

/// A dataset.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DatasetView {
    /// Id.
    pub id: String,
    /// Labels.
    pub labels: Vec<String>,
    /// Sealed objects, by version.
    pub versions: Vec<ObjectView>,
}

/// A sealed object stored as a dataset version.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ObjectView {
    /// Version.
    pub version: u64,
    /// Object id (hex, from the sealed header).
    pub object_id: String,
    /// SHA-256 of the whole sealed object.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The data key's id.
    pub key_id: String,
    /// Key id of the owner who signed it, when it carried a signature.
    pub signer: Option<String>,
    /// The `coffre.object_registered/v1` entry.
    pub log_index: u64,
}

/// A submitted job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct JobView {
    /// Id (`job-` and 16 hex digits of the manifest digest).
    pub id: String,
    /// The manifest's digest (what report data binds).
    pub manifest_digest: String,
    /// The signed job as submitted (`coffre-signed-job/v1` JSON).
    pub signed: String,
    /// Datasets it reads.
    pub datasets: Vec<String>,
    /// No release after (Unix seconds).
    pub not_after: u64,
    /// Release limit.
    pub max_releases: u64,
    /// Releases so far.
    pub releases: u64,
}

/// Ask for a single-use challenge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ChallengeRequest {
    /// The tenant.
    pub tenant: String,
    /// The job the release will be for.
    pub job: String,
}

/// A single-use challenge: consumed by the first release attempt, successful or not.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Challenge {
    /// 32 random bytes, hex.
    pub nonce: String,
    /// Unix seconds after which it is refused.
    pub expires_at: u64,
}

/// Ask for a job's data keys with attestation evidence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    /// The tenant.
    pub tenant: String,
    /// The job.
    pub job: String,
    /// The challenge (hex).
    pub nonce: String,
    /// The worker's bound keys ([`crate::binding::WorkerKeys::to_bytes`]), base64.
    pub worker_keys: String,
    /// CPU and GPU evidence whose REPORT_DATA binds nonce, worker keys and job manifest.
    #[cfg_attr(feature = "openapi", schema(value_type = Object))]
    pub evidence: RawEvidence,
}

/// One data key, wrapped to the worker's HPKE key (info `coffre/key-release/v1`, aad
/// `coffre-release/v1\n<index>\n<tenant>\n<job>\n<key id>\n`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct WrappedKeyView {
    /// The key's id.
    pub key_id: String,
    /// The dataset it opens.
    pub dataset: String,
    /// HPKE `enc`, base64.
    pub enc: String,
    /// HPKE ciphertext of the 32-byte data key, base64.
    pub ciphertext: String,
}

/// A release: the keys, and the log entry that recorded it first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ReleaseResponse {
    /// The release's log index.
    pub log_index: u64,
    /// Released on simulated evidence (development mode only).
    pub simulated: bool,
    /// The policies that allowed it (`id@version`).
    pub policies: Vec<String>,
    /// The evidence bundle the release was decided on (`sha256:…`, a log blob): what the
    /// worker's provenance names.
    pub evidence_bundle: String,
    /// The wrapped keys.
    pub keys: Vec<WrappedKeyView>,
    /// A signed checkpoint covering the release (C2SP tlog-checkpoint).
    pub checkpoint: String,
}

/// A recorded denial.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct DenialView {
    /// Its log index (the denial id).
    pub index: u64,
    /// When.
    pub at: u64,
    /// The job asked for.
    pub job: Option<String>,
    /// Every failed check.
    pub failed: Vec<FailedCheckView>,
}

/// A registered artifact.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ArtifactView {
    /// Model name.
    pub model: String,
    /// Version.
    pub version: u64,
    /// The job that produced it.
    pub job: String,
    /// The release it ran under.
    pub release: u64,
    /// SHA-256 of the sealed artifact.
    pub digest: String,
    /// Size in bytes.
    pub size: u64,
    /// The `coffre.artifact_registered/v1` entry.
    pub log_index: u64,
}

/// A base model in a tenant's model store (content-addressed; models are public weights, so
/// they are stored as they are, not sealed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct ModelView {
    /// The digest job manifests pin it by (`sha256:…`, see `coffre_api::model`).
    pub digest: String,
    /// `file` (sent as itself) or `dir` (sent as a tar stream of its files).
    pub kind: String,
    /// Size of what is stored, in bytes.
    pub size: u64,
    /// Unix time of the upload.
    pub uploaded_at: u64,
}

/// A log entry index and a stored result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Logged {
    /// The entry's index.
    pub log_index: u64,
}

/// The log's size and latest checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LogInfo {
    /// Entries.
    pub size: u64,
    /// The latest signed checkpoint.
    pub checkpoint: String,
    /// The verifier key (`name+hash+base64`) to pin.
    pub log_key: String,
    /// Every signed checkpoint size.
    pub checkpoints: Vec<u64>,
}

/// Entries of the log (as the export layout: canonical JSON lines), with their leaf hashes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct LogEntries {
    /// Index of the first entry.
    pub start: u64,
    /// The canonical entries; `null` for an entry of another tenant (redacted).
    pub entries: Vec<Option<String>>,
    /// Each entry's leaf hash, base64.
    pub leaves: Vec<String>,
}

/// Liveness and readiness.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "openapi", derive(ToSchema))]
pub struct Health {
    /// `ok`.
    pub status: String,
    /// Development mode.
    pub development: bool,
    /// Log size.
    pub log_size: u64,
}
