//! [`LogState`]: what the transparency log implies at an index, and the one check every entry
//! passes before it counts.
//!
//! The vault runs [`LogState::check`] on an entry **before** appending it and
//! [`LogState::apply`] after; `coffre audit verify` runs the same two calls while replaying an
//! export. One implementation, so the vault cannot write what an audit would reject, and an audit
//! cannot accept what the vault would have refused.
//!
//! What the state tracks, per tenant: the approver set in force, the active policy versions and
//! their documents, datasets with their labels and sealed-object versions, jobs, release counts
//! per policy, and the latest artifact version per model; vault-wide: development mode, every
//! key (tenant, dataset, lifecycle), every nonce ever presented, and every release.
//!
//! Rules beyond each entry's own (each is a regression test in `tests/state.rs`):
//! - entry times never go backwards;
//! - approver sets change only through [`ApproverSet::change`] (M of N of the *current* set), a
//!   first set only through [`ApproverSet::bootstrap`];
//! - a policy approval counts only when its signature verifies, it names exactly the logged
//!   version, and its key is in the current set; a policy activates only with the threshold and
//!   only to a higher version;
//! - labels come from the dataset's registration, never from a request;
//! - a release names exactly the job's datasets and the keys the registry holds for them, never
//!   a key of another tenant or dataset, and a nonce never seen before in any release or denial;
//!   its evidence was verified within [`MAX_SKEW_SECS`] before the entry, and its policies are
//!   evaluated at the entry's time.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};

use coffre_api::job::{SignedJob, VerifiedJob, job_id};
use coffre_attestation::UnixTime;
use coffre_log::{Digest, Entry, FailedCheck, PolicyVersion};
use coffre_policies::{
    ActivePolicy, Allow, Appraisal, Approval, ApprovedSetChange, ApproverSet, Decision, JobKind, JobRequest, Mode,
    Policy, PolicyRef, Request, SetChangeError, Subject, SubjectKind, evaluate,
};

use crate::release::Appraised;

/// How long before its log entry evidence may have been verified (seconds). The vault verifies
/// and appends within one request; the margin covers a queue and a slow disk, not a replay.
pub const MAX_SKEW_SECS: u64 = 300;

/// How long after its evidence was verified a KBS attestation may still fetch resources
/// (seconds): the longest token lifetime a vault may configure.
pub const KBS_ATTESTATION_MAX_SECS: u64 = 3600;

/// How far the replica that verified a KBS attestation may be ahead of the one deciding.
pub const KBS_CLOCK_SKEW_SECS: u64 = 30;

/// Reads a blob the log refers to.
pub trait Blobs {
    /// The blob's bytes (the implementation checks they hash to `digest`).
    fn get(&mut self, digest: &Digest) -> Result<Vec<u8>, String>;
}

/// A key's lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyState {
    /// In use.
    Active,
    /// Replaced by a newer key; still opens what it sealed.
    Retired,
    /// Shredding scheduled (from Active: true, from Retired: false).
    Scheduled(bool),
    /// Destroyed.
    Shredded,
}

/// A key and what it belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyInfo {
    /// Owner.
    pub tenant: String,
    /// The dataset of a data key.
    pub dataset: Option<String>,
    /// Lifecycle.
    pub state: KeyState,
    /// When a scheduled shredding may be carried out (Unix seconds).
    pub shred_not_before: Option<u64>,
}

/// One registered sealed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectVersion {
    /// Object id (hex).
    pub object_id: String,
    /// SHA-256 of the whole sealed object.
    pub digest: Digest,
    /// Its data key.
    pub key_id: String,
    /// The log index of its registration.
    pub index: u64,
}

/// A dataset.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DatasetInfo {
    /// Labels from its registration.
    pub labels: Vec<String>,
    /// Versions, from 1.
    pub versions: Vec<ObjectVersion>,
}

/// A submitted job.
#[derive(Debug, Clone, PartialEq)]
pub struct JobInfo {
    /// Owner.
    pub tenant: String,
    /// Digest of the manifest's canonical bytes (what report data binds).
    pub manifest: Digest,
    /// (dataset, key id) in manifest order.
    pub datasets: Vec<(String, String)>,
    /// The job as policies see it.
    pub request: JobRequest,
    /// No release after (Unix seconds).
    pub not_after: u64,
    /// Release limit.
    pub max_releases: u64,
    /// Releases so far.
    pub releases: u64,
    /// The log index of its submission.
    pub index: u64,
}

/// A release, for artifacts that name it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseInfo {
    /// Tenant.
    pub tenant: String,
    /// Job.
    pub job: String,
    /// Blob digest of the worker's bound keys.
    pub worker_keys: Digest,
    /// The artifact registered under this release, if any: (model, version, sealed artifact's
    /// digest). One per release: a worker trains once per release, and a second registration
    /// (a retried upload whose answer was lost, say) would list one model twice.
    pub artifact: Option<(String, u64, Digest)>,
}

/// A tenant's part of the state.
#[derive(Debug, Clone, Default)]
pub struct TenantState {
    /// Display name.
    pub name: String,
    /// The approver set in force.
    pub approvers: Option<ApproverSet>,
    /// Active policy versions (one per policy id).
    pub active: Vec<ActivePolicy>,
    /// Policy digest → document blob, for every version ever activated.
    pub documents: BTreeMap<String, Digest>,
    /// Datasets.
    pub datasets: BTreeMap<String, DatasetInfo>,
    /// Releases per policy id.
    pub release_counts: BTreeMap<String, u64>,
    /// Latest artifact version per model.
    pub models: BTreeMap<String, u64>,
    /// Proposed policy versions, by (id, version).
    pub proposals: BTreeMap<(String, u64), Proposal>,
    /// Marked for testing: the only tenants a development vault serves the KBS sample TEE.
    pub testing: bool,
}

/// A proposed policy version and the approvals logged for it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Proposal {
    /// The policy's digest.
    pub digest: String,
    /// Blob: its document.
    pub document: Digest,
    /// (approver key id, blob of the approval), in log order.
    pub approvals: Vec<(String, Digest)>,
}

/// What one entry does to the state, computed by [`LogState::check`] and carried out by
/// [`LogState::apply`] at the same index.
#[must_use = "a checked entry changes nothing until it is appended and applied"]
#[derive(Debug)]
pub struct Transition {
    index: u64,
    at: u64,
    change: Change,
    /// What an audit should know beyond "valid" (e.g. development mode switched on).
    pub notices: Vec<String>,
}

#[derive(Debug)]
enum Change {
    Proposed {
        tenant: String,
        id: String,
        version: u64,
        proposal: Proposal,
    },
    Approved {
        tenant: String,
        id: String,
        version: u64,
        approver: String,
        approval: Digest,
    },
    Development(bool),
    Tenant {
        tenant: String,
        name: String,
    },
    Approvers {
        tenant: String,
        set: Box<ApprovedSetChange>,
    },
    Activated {
        tenant: String,
        active: Box<ActivePolicy>,
        document: Digest,
    },
    Dataset {
        tenant: String,
        dataset: String,
        labels: Vec<String>,
    },
    Object {
        tenant: String,
        dataset: String,
        object: ObjectVersion,
    },
    Key {
        key_id: String,
        info: KeyInfo,
    },
    KeyState {
        key_id: String,
        state: KeyState,
        new_key: Option<(String, KeyInfo)>,
        not_before: Option<u64>,
    },
    /// Recorded, nothing in the state changes.
    Nothing,
    Job {
        id: String,
        job: Box<JobInfo>,
    },
    Released {
        tenant: String,
        job: String,
        nonce: [u8; 32],
        policies: Vec<String>,
        worker_keys: Digest,
    },
    Denied {
        nonce: Option<[u8; 32]>,
        /// A KBS resource denial: the nonce stays usable by its attestation's other resources.
        kbs_resource: bool,
    },
    KbsReleased {
        tenant: String,
        nonce: [u8; 32],
        binding: Digest,
        verified_at: Option<u64>,
        policies: Vec<String>,
    },
    Testing {
        tenant: String,
        testing: bool,
    },
    Artifact {
        tenant: String,
        model: String,
        version: u64,
        release: u64,
        artifact: Digest,
    },
}

/// The decision a release's evidence and the state imply.
#[derive(Debug, Clone, PartialEq)]
pub struct Verdict {
    /// The job.
    pub job: String,
    /// Its datasets.
    pub datasets: Vec<String>,
    /// The keys the registry holds for them.
    pub key_ids: Vec<String>,
    /// The policies evaluated (allowing or applicable).
    pub policies: Vec<PolicyRef>,
    /// Simulated evidence accepted (development mode).
    pub simulated: bool,
    /// Every failed check (empty: allowed).
    pub failed: Vec<FailedCheck>,
    /// The policies' permissions, one per dataset, when allowed.
    pub(crate) allows: Vec<Allow>,
}

impl Verdict {
    /// The verdict with every failed check: nothing is allowed (nor simulated) once one failed.
    fn with_failed(mut self, failed: Vec<FailedCheck>) -> Self {
        if !failed.is_empty() {
            self.allows.clear();
            self.simulated = false;
        }
        self.failed = failed;
        self
    }

    /// Adds a reason for every way an entry's `policies` and `simulated` differ from this verdict.
    fn matches(&self, policies: &[PolicyVersion], simulated: bool, reasons: &mut Reasons) {
        let named: Vec<PolicyVersion> = self.policies.iter().map(policy_version).collect();
        if named != policies {
            reasons.push("the policies that allow it are not the ones the entry names".into());
        }
        if self.simulated != simulated {
            reasons.push("the entry's simulated flag does not match the evidence".into());
        }
    }

    /// Whether every check passed and every dataset was allowed.
    pub fn allowed(&self) -> bool {
        self.failed.is_empty() && !self.allows.is_empty() && self.allows.len() == self.datasets.len()
    }
}

/// How a release entry is justified when checked.
#[derive(Debug)]
pub enum Justification<'a> {
    /// By evidence appraised now (the vault deciding, or an auditor re-verifying the bundle).
    Appraised(&'a Appraised),
    /// As recorded: the vault reopening its own log, whose releases it appraised when it
    /// wrote them. Every state rule is still checked; only the evidence is not re-verified.
    Recorded,
}

/// The state a log implies.
#[derive(Debug, Clone, Default)]
pub struct LogState {
    size: u64,
    last_at: u64,
    development: bool,
    tenants: BTreeMap<String, TenantState>,
    keys: HashMap<String, KeyInfo>,
    jobs: HashMap<String, JobInfo>,
    nonces: HashSet<[u8; 32]>,
    /// KBS nonces by the binding document of the attestation that used them and when its
    /// evidence was verified (one attestation may fetch several resources; no other may use its
    /// nonce, and it may not be re-dated). The time is unknown for entries taken in as recorded.
    kbs_nonces: HashMap<[u8; 32], (Digest, Option<u64>)>,
    releases: HashMap<u64, ReleaseInfo>,
    /// Keys scheduled for shredding or shredded, by (tenant, dataset; `None` for a tenant's
    /// KEKs): nothing new is stored under a dataset or tenant being shredded.
    shredding: HashMap<(String, Option<String>), usize>,
}

type Reasons = Vec<String>;

fn one(reason: impl Into<String>) -> Reasons {
    vec![reason.into()]
}

/// A policy reference as the log writes it.
pub fn policy_version(r: &PolicyRef) -> PolicyVersion {
    PolicyVersion { id: r.id.clone(), version: r.version, digest: r.digest.clone() }
}

/// Parses a hex nonce of exactly 32 bytes.
pub fn parse_nonce(text: &str) -> Result<[u8; 32], String> {
    hex::decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .filter(|_| text.bytes().all(|b| !b.is_ascii_uppercase()))
        .ok_or_else(|| format!("nonce {text:?} is not 32 bytes of lower-case hex"))
}

/// An artifact's provenance: a DSSE envelope whose one signature verifies under the signing key
/// the release bound, over an in-toto statement naming exactly this artifact (as
/// `MODEL-vVERSION.coffre`, so one envelope cannot register a file under another name or
/// version), tenant, job and release.
fn check_provenance(
    blobs: &mut dyn Blobs,
    r: &ReleaseInfo,
    (tenant, job, release): (&str, &str, u64),
    (model, version): (&str, u64),
    artifact: &Digest,
    provenance: &Digest,
) -> Result<(), String> {
    use coffre_api::provenance::{Envelope, INTOTO_PAYLOAD_TYPE, Statement};
    let keys = coffre_api::WorkerKeys::from_bytes(&blobs.get(&r.worker_keys)?)?;
    let envelope = Envelope::from_bytes(&blobs.get(provenance)?)?;
    if envelope.payload_type != INTOTO_PAYLOAD_TYPE {
        return Err(format!("provenance payload type {:?}", envelope.payload_type));
    }
    let payload = envelope.verify(&keys.signing).map_err(|e| format!("provenance: {e}"))?;
    let statement = Statement::from_bytes(&payload).map_err(|e| format!("provenance: {e}"))?;
    if !statement.names(artifact) {
        return Err(format!("the provenance's subject is not the artifact {artifact}"));
    }
    let name = format!("{model}-v{version}.coffre");
    if let [subject] = statement.subject.as_slice()
        && subject.name != name
    {
        return Err(format!("the provenance names {}, not {name}", subject.name));
    }
    let p = &statement.predicate;
    if p.tenant != tenant || p.job != job || p.release != release {
        return Err(format!(
            "the provenance is for {}'s job {} under release {}, not this registration's",
            p.tenant, p.job, p.release
        ));
    }
    Ok(())
}

fn text(blobs: &mut dyn Blobs, d: &Digest) -> Result<String, String> {
    String::from_utf8(blobs.get(d)?).map_err(|_| format!("blob {d} is not UTF-8 text"))
}

fn approvals(blobs: &mut dyn Blobs, ds: &[Digest]) -> Result<Vec<Approval>, String> {
    ds.iter()
        .map(|d| text(blobs, d).and_then(|t| Approval::from_json(&t).map_err(|e| format!("approval {d}: {e}"))))
        .collect()
}

fn valid_id(s: &str) -> bool {
    coffre_policies::Name::new(s).is_some()
}

impl LogState {
    /// The state of an empty log.
    pub fn new() -> Self {
        Self::default()
    }

    /// Entries applied.
    pub fn size(&self) -> u64 {
        self.size
    }

    /// The latest entry time.
    pub fn last_at(&self) -> u64 {
        self.last_at
    }

    /// Whether development mode is on.
    pub fn development(&self) -> bool {
        self.development
    }

    /// The mode policies are evaluated in.
    pub fn mode(&self) -> Mode {
        if self.development { Mode::Development } else { Mode::Production }
    }

    /// A tenant's state.
    pub fn tenant(&self, tenant: &str) -> Option<&TenantState> {
        self.tenants.get(tenant)
    }

    /// Every tenant id.
    pub fn tenant_ids(&self) -> impl Iterator<Item = &str> {
        self.tenants.keys().map(String::as_str)
    }

    /// A key.
    pub fn key(&self, key_id: &str) -> Option<&KeyInfo> {
        self.keys.get(key_id)
    }

    /// A job.
    pub fn job(&self, id: &str) -> Option<&JobInfo> {
        self.jobs.get(id)
    }

    /// The log index where `job` was submitted.
    pub fn job_index(&self, job: &str) -> Option<u64> {
        self.jobs.get(job).map(|j| j.index)
    }

    /// A tenant's job ids, in submission order.
    pub fn jobs_of(&self, tenant: &str) -> Vec<String> {
        let mut jobs: Vec<(&String, &JobInfo)> = self.jobs.iter().filter(|(_, j)| j.tenant == tenant).collect();
        jobs.sort_by_key(|(_, j)| j.index);
        jobs.into_iter().map(|(id, _)| id.clone()).collect()
    }

    /// The log index where `dataset` version `version` was registered.
    pub fn object_index(&self, tenant: &str, dataset: &str, version: u64) -> Option<u64> {
        let d = self.tenants.get(tenant)?.datasets.get(dataset)?;
        d.versions.get(usize::try_from(version).ok()?.checked_sub(1)?).map(|o| o.index)
    }

    /// A release entry.
    pub fn release(&self, index: u64) -> Option<&ReleaseInfo> {
        self.releases.get(&index)
    }

    /// Whether a nonce was presented before (in a release, a KBS release or a denial).
    pub fn nonce_seen(&self, nonce: &[u8; 32]) -> bool {
        self.nonces.contains(nonce) || self.kbs_nonces.contains_key(nonce)
    }

    /// The document blob of an activated policy version.
    pub fn policy_document(&self, tenant: &str, digest: &str) -> Option<Digest> {
        self.tenants.get(tenant).and_then(|t| t.documents.get(digest)).copied()
    }

    fn tenant_or(&self, tenant: &str) -> Result<&TenantState, Reasons> {
        self.tenants.get(tenant).ok_or_else(|| one(format!("tenant {tenant} was never created")))
    }

    /// Checks `entry` as the next one (index [`LogState::size`]). Release entries need their
    /// [`Justification`]; other entries ignore it. Returns what applying it does, or every reason
    /// it may not be logged.
    pub fn check(
        &self,
        entry: &Entry,
        blobs: &mut dyn Blobs,
        justification: &Justification<'_>,
    ) -> Result<Transition, Reasons> {
        let at = entry.at();
        if at < self.last_at {
            return Err(one(format!(
                "entry time {at} is before the previous entry's {}: log time never goes backwards",
                self.last_at
            )));
        }
        let mut notices = Vec::new();
        let change = match entry {
            Entry::ConfigChanged { setting, old, new, .. } => {
                if setting != "development_mode" {
                    return Err(one(format!("unknown setting {setting:?}")));
                }
                let current = if self.development { "on" } else { "off" };
                if old != current || (new != "on" && new != "off") {
                    return Err(one(format!(
                        "development_mode changes from {old:?} to {new:?}, but it was {current:?}"
                    )));
                }
                if new == "on" && !self.development {
                    notices.push(
                        "development mode switched ON: simulated evidence may be accepted from here on".to_owned(),
                    );
                }
                Change::Development(new == "on")
            }
            Entry::TenantCreated { tenant, name, .. } => {
                if !valid_id(tenant) {
                    return Err(one(format!("tenant id {tenant:?} is not a valid name")));
                }
                if self.tenants.contains_key(tenant) {
                    return Err(one(format!("tenant {tenant} already exists")));
                }
                Change::Tenant { tenant: tenant.clone(), name: name.clone() }
            }
            Entry::ApproverSetChanged { tenant, version, digest, document, approvals: given, .. } => {
                let t = self.tenant_or(tenant)?;
                let text = text(blobs, document).map_err(one)?;
                let set = ApproverSet::from_toml(&text).map_err(|e| one(format!("approver set: {e}")))?;
                if set.tenant.as_str() != tenant || set.version.get() != *version || set.digest() != *digest {
                    return Err(one("the approver set document is not the tenant, version and digest the entry names"));
                }
                let list = approvals(blobs, given).map_err(one)?;
                let change = match &t.approvers {
                    None => ApproverSet::bootstrap(set),
                    Some(current) => current.change(set, &list),
                };
                let approved = change.map_err(|e| match e {
                    SetChangeError::Invalid(why) => one(format!("approver set change: {why}")),
                    SetChangeError::NotApproved(report) => one(format!("approver set change not approved: {report}")),
                })?;
                Change::Approvers { tenant: tenant.clone(), set: Box::new(approved) }
            }
            Entry::PolicyProposed { tenant, policy, document, .. } => {
                let t = self.tenant_or(tenant)?;
                self.policy_doc(blobs, tenant, policy, document)?;
                if t.proposals.contains_key(&(policy.id.clone(), policy.version)) {
                    return Err(one(format!("{}@{} was already proposed", policy.id, policy.version)));
                }
                if let Some(a) = t.active.iter().find(|a| a.policy().id.as_str() == policy.id)
                    && a.policy().version.get() >= policy.version
                {
                    return Err(one(format!(
                        "{}@{} does not follow the active version {}",
                        policy.id,
                        policy.version,
                        a.policy().version
                    )));
                }
                Change::Proposed {
                    tenant: tenant.clone(),
                    id: policy.id.clone(),
                    version: policy.version,
                    proposal: Proposal { digest: policy.digest.clone(), document: *document, approvals: Vec::new() },
                }
            }
            Entry::PolicyApproved { tenant, policy, approver, approval, .. } => {
                let t = self.tenant_or(tenant)?;
                let set =
                    t.approvers.as_ref().ok_or_else(|| one(format!("tenant {tenant} has no approver set yet")))?;
                let a = approvals(blobs, &[*approval]).map_err(one)?;
                let subject = Subject {
                    kind: SubjectKind::Policy,
                    tenant: tenant.clone(),
                    id: policy.id.clone(),
                    version: policy.version,
                    digest: policy.digest.clone(),
                };
                let report = set.check(&subject, &a);
                if let Some((_, why)) = report.rejected.first() {
                    return Err(one(format!("the approval does not count: {why}")));
                }
                if a.first().map(|a| a.approver.key_id()) != Some(approver.clone()) {
                    return Err(one(format!(
                        "the entry names approver {approver}, the approval is signed by another key"
                    )));
                }
                match t.proposals.get(&(policy.id.clone(), policy.version)) {
                    Some(p) if p.digest == policy.digest => {
                        if p.approvals.iter().any(|(k, _)| k == approver) {
                            return Err(one(format!("{approver} already approved {}@{}", policy.id, policy.version)));
                        }
                    }
                    _ => {
                        return Err(one(format!(
                            "{}@{} with this digest was never proposed",
                            policy.id, policy.version
                        )));
                    }
                }
                Change::Approved {
                    tenant: tenant.clone(),
                    id: policy.id.clone(),
                    version: policy.version,
                    approver: approver.clone(),
                    approval: *approval,
                }
            }
            Entry::PolicyActivated { tenant, policy, document, approvals: given, approver_set, .. } => {
                let t = self.tenant_or(tenant)?;
                let doc = self.policy_doc(blobs, tenant, policy, document)?;
                let set =
                    t.approvers.as_ref().ok_or_else(|| one(format!("tenant {tenant} has no approver set yet")))?;
                if set.version.get() != *approver_set {
                    return Err(one(format!(
                        "activated by approver set {approver_set}, but set {} is in force",
                        set.version
                    )));
                }
                if let Some(prev) = t.active.iter().find(|a| a.policy().id == doc.id)
                    && prev.policy().version >= doc.version
                {
                    return Err(one(format!(
                        "version {} of {} does not follow the active version {}",
                        doc.version,
                        doc.id,
                        prev.policy().version
                    )));
                }
                let list = approvals(blobs, given).map_err(one)?;
                let active = set.activate(doc, &list).map_err(|report| one(format!("not activated: {report}")))?;
                Change::Activated { tenant: tenant.clone(), active: Box::new(active), document: *document }
            }
            Entry::DatasetRegistered { tenant, dataset, labels, .. } => {
                let t = self.tenant_or(tenant)?;
                if !valid_id(dataset) {
                    return Err(one(format!("dataset id {dataset:?} is not a valid name")));
                }
                if t.datasets.contains_key(dataset) {
                    return Err(one(format!("dataset {dataset} is already registered")));
                }
                if let Some(bad) = labels.iter().find(|l| !valid_id(l)) {
                    return Err(one(format!("label {bad:?} is not a valid name")));
                }
                Change::Dataset { tenant: tenant.clone(), dataset: dataset.clone(), labels: labels.clone() }
            }
            Entry::ObjectRegistered { tenant, dataset, version, object_id, digest, key_id, .. } => {
                if let Some(why) = self.shredding(tenant, Some(dataset)) {
                    return Err(one(why));
                }
                let t = self.tenant_or(tenant)?;
                let d = t
                    .datasets
                    .get(dataset)
                    .ok_or_else(|| one(format!("dataset {dataset} of {tenant} was never registered")))?;
                let next = d.versions.len() as u64 + 1;
                if *version != next {
                    return Err(one(format!("dataset {dataset} gets version {version}, but the next one is {next}")));
                }
                if self.keys.contains_key(key_id) {
                    return Err(one(format!("key {key_id} already exists")));
                }
                Change::Object {
                    tenant: tenant.clone(),
                    dataset: dataset.clone(),
                    object: ObjectVersion {
                        object_id: object_id.clone(),
                        digest: *digest,
                        key_id: key_id.clone(),
                        index: self.size,
                    },
                }
            }
            Entry::KeyCreated { tenant, key_id, dataset, .. } => {
                let t = self.tenant_or(tenant)?;
                if self.keys.contains_key(key_id) {
                    return Err(one(format!("key {key_id} was already created")));
                }
                if let Some(ds) = dataset
                    && !t.datasets.contains_key(ds)
                {
                    return Err(one(format!("key {key_id} names dataset {ds}, which {tenant} never registered")));
                }
                Change::Key {
                    key_id: key_id.clone(),
                    info: KeyInfo {
                        tenant: tenant.clone(),
                        dataset: dataset.clone(),
                        state: KeyState::Active,
                        shred_not_before: None,
                    },
                }
            }
            Entry::KeyRotated { tenant, key_id, new_key_id, .. } => {
                let info = self.own_key(tenant, key_id)?;
                if info.state != KeyState::Active {
                    return Err(one(format!("key {key_id} cannot be rotated: it is not active")));
                }
                if self.keys.contains_key(new_key_id) {
                    return Err(one(format!("key {new_key_id} already exists")));
                }
                let new = KeyInfo {
                    tenant: tenant.clone(),
                    dataset: info.dataset.clone(),
                    state: KeyState::Active,
                    shred_not_before: None,
                };
                Change::KeyState {
                    key_id: key_id.clone(),
                    state: KeyState::Retired,
                    new_key: Some((new_key_id.clone(), new)),
                    not_before: None,
                }
            }
            Entry::KeysRewrapped { tenant, kek, key_ids, .. } => {
                let k = self.own_key(tenant, kek)?;
                if k.dataset.is_some() || k.state != KeyState::Active {
                    return Err(one(format!("keys can only be rewrapped by {tenant}'s active KEK, not {kek}")));
                }
                let mut reasons = Vec::new();
                for id in key_ids {
                    match self.own_key(tenant, id) {
                        Ok(KeyInfo {
                            dataset: Some(_),
                            state: KeyState::Active | KeyState::Retired | KeyState::Scheduled(_),
                            ..
                        }) => {}
                        Ok(KeyInfo { dataset: None, .. }) => reasons.push(format!("{id} is a KEK, not a data key")),
                        Ok(_) => reasons.push(format!("data key {id} was shredded: nothing is rewrapped after that")),
                        Err(mut r) => reasons.append(&mut r),
                    }
                }
                if key_ids.is_empty() {
                    reasons.push("a rewrap names no key".into());
                }
                if !reasons.is_empty() {
                    return Err(reasons);
                }
                Change::Nothing
            }
            Entry::ShreddingScheduled { tenant, key_id, not_before, at } => {
                let state = match self.own_key(tenant, key_id)?.state {
                    KeyState::Active => KeyState::Scheduled(true),
                    KeyState::Retired => KeyState::Scheduled(false),
                    _ => return Err(one(format!("key {key_id} cannot be scheduled for shredding in its state"))),
                };
                if not_before < at {
                    return Err(one(format!(
                        "shredding of {key_id} scheduled for {not_before}, before the request at {at}"
                    )));
                }
                Change::KeyState { key_id: key_id.clone(), state, new_key: None, not_before: Some(*not_before) }
            }
            Entry::ShreddingCancelled { tenant, key_id, at } => {
                let k = self.own_key(tenant, key_id)?;
                let state = match k.state {
                    KeyState::Scheduled(true) => KeyState::Active,
                    KeyState::Scheduled(false) => KeyState::Retired,
                    _ => return Err(one(format!("key {key_id} has no shredding to cancel"))),
                };
                // Once due, the destruction may have begun: too late to take it back.
                if let Some(nb) = k.shred_not_before
                    && *at >= nb
                {
                    return Err(one(format!(
                        "the shredding of {key_id} was due at {nb}: it can no longer be cancelled"
                    )));
                }
                Change::KeyState { key_id: key_id.clone(), state, new_key: None, not_before: None }
            }
            Entry::KeyShredded { tenant, key_id, at } => {
                let k = self.own_key(tenant, key_id)?;
                if !matches!(k.state, KeyState::Scheduled(_)) {
                    return Err(one(format!("key {key_id} is shredded without a scheduled shredding")));
                }
                if let Some(nb) = k.shred_not_before
                    && *at < nb
                {
                    return Err(one(format!(
                        "key {key_id} is shredded at {at}, before its waiting period ends at {nb}"
                    )));
                }
                Change::KeyState {
                    key_id: key_id.clone(),
                    state: KeyState::Shredded,
                    new_key: None,
                    not_before: k.shred_not_before,
                }
            }
            Entry::JobSubmitted { tenant, job, manifest, .. } => {
                let verified = self.check_job(blobs, tenant, manifest)?;
                let digest = Digest::of(&verified.bytes);
                if *job != job_id(&digest) {
                    return Err(one(format!("job id {job} is not the one its manifest implies ({})", job_id(&digest))));
                }
                if self.jobs.contains_key(job) {
                    return Err(one(format!("job {job} was already submitted")));
                }
                let t = self.tenant_or(tenant)?;
                let datasets = verified
                    .manifest
                    .datasets
                    .iter()
                    .map(|d| {
                        let key = t
                            .datasets
                            .get(&d.id)
                            .and_then(|ds| ds.versions.get(usize::try_from(d.version).ok()?.checked_sub(1)?))
                            .map(|o| o.key_id.clone())
                            .unwrap_or_default();
                        (d.id.clone(), key)
                    })
                    .collect();
                Change::Job {
                    id: job.clone(),
                    job: Box::new(JobInfo {
                        tenant: tenant.clone(),
                        manifest: digest,
                        datasets,
                        request: verified.manifest.job_request(),
                        not_after: verified.manifest.not_after,
                        max_releases: verified.manifest.max_releases,
                        releases: 0,
                        index: self.size,
                    }),
                }
            }
            Entry::KeyReleased {
                tenant,
                job,
                datasets,
                policies,
                job_manifest,
                ephemeral_key,
                nonce,
                key_ids,
                simulated,
                ..
            } => {
                let nonce = parse_nonce(nonce).map_err(one)?;
                let mut reasons = Vec::new();
                let verdict = match justification {
                    Justification::Appraised(appraised) => {
                        if appraised.nonce != nonce {
                            reasons.push("the entry's nonce is not the one the evidence was appraised with".into());
                        }
                        if appraised.worker_keys != *ephemeral_key {
                            reasons.push("the entry's worker keys are not the ones the evidence binds".into());
                        }
                        if appraised.manifest != *job_manifest {
                            reasons.push("the entry's job manifest is not the one the evidence binds".into());
                        }
                        let v = self.evaluate_release(at, tenant, job, appraised);
                        if !v.allowed() {
                            let list: Vec<String> =
                                v.failed.iter().map(|f| format!("{} ({})", f.name, f.actual)).collect();
                            reasons.push(format!("not justified: {}", list.join("; ")));
                        }
                        Some(v)
                    }
                    Justification::Recorded => None,
                };
                let j = match self.release_rules(at, tenant, job, &nonce) {
                    Ok(j) => Some(j),
                    Err(r) => {
                        reasons.extend(r);
                        self.jobs.get(job).filter(|j| j.tenant == *tenant)
                    }
                };
                if let Some(j) = j {
                    let expected_sets: Vec<&String> = j.datasets.iter().map(|(d, _)| d).collect();
                    if datasets.iter().collect::<Vec<_>>() != expected_sets {
                        reasons.push(format!("the entry names datasets {datasets:?}, the job reads {expected_sets:?}"));
                    }
                    let expected_keys: Vec<&String> = j.datasets.iter().map(|(_, k)| k).collect();
                    if key_ids.iter().collect::<Vec<_>>() != expected_keys {
                        reasons.push(format!(
                            "released keys {key_ids:?}, but the registry holds {expected_keys:?} for the job's datasets"
                        ));
                    }
                    if j.manifest != *job_manifest {
                        reasons.push("the entry's job manifest is not the job's".into());
                    }
                }
                for k in key_ids {
                    match self.keys.get(k) {
                        None => reasons.push(format!("released key {k}, which was never created")),
                        Some(info) if info.tenant != *tenant => {
                            reasons
                                .push(format!("released key {k} of tenant {} in a release for {tenant}", info.tenant));
                        }
                        Some(info) if !info.dataset.as_ref().is_some_and(|d| datasets.contains(d)) => {
                            reasons.push(format!(
                                "released key {k} of dataset {:?}, not one of the release's datasets",
                                info.dataset
                            ));
                        }
                        Some(_) => {}
                    }
                }
                if let Some(v) = &verdict {
                    v.matches(policies, *simulated, &mut reasons);
                }
                let ids = self.allowing_policies(tenant, policies, *simulated, reasons)?;
                if *simulated {
                    notices.push("released on SIMULATED evidence (development mode)".into());
                }
                Change::Released {
                    tenant: tenant.clone(),
                    job: job.clone(),
                    nonce,
                    policies: ids,
                    worker_keys: *ephemeral_key,
                }
            }
            Entry::ReleaseDenied { tenant, job, nonce, failed, resource, .. } => {
                self.tenant_or(tenant)?;
                if failed.is_empty() {
                    return Err(one("a denial that names no failed check"));
                }
                if let Some(j) = job
                    && self.jobs.get(j).is_none_or(|info| info.tenant != *tenant)
                {
                    return Err(one(format!("denial names job {j}, which is not {tenant}'s")));
                }
                if job.is_some() && resource.is_some() {
                    return Err(one("a denial names both a job and a KBS resource"));
                }
                Change::Denied {
                    nonce: nonce.as_deref().map(parse_nonce).transpose().map_err(one)?,
                    kbs_resource: resource.is_some(),
                }
            }
            Entry::KbsReleased {
                tenant,
                resource,
                dataset,
                key_id,
                policies,
                binding,
                tee_pubkey,
                nonce,
                simulated,
                ..
            } => {
                let nonce = parse_nonce(nonce).map_err(one)?;
                let mut reasons = Vec::new();
                match justification {
                    Justification::Appraised(appraised) => {
                        if !appraised.kbs {
                            reasons.push("the evidence was not appraised under the KBS binding".into());
                        }
                        if appraised.nonce != nonce {
                            reasons.push("the entry's nonce is not the one the evidence binds".into());
                        }
                        if appraised.worker_keys != *tee_pubkey {
                            reasons.push("the entry's TEE key is not the one the evidence binds".into());
                        }
                        if appraised.manifest != *binding {
                            reasons.push(
                                "the entry's binding document is not the one the evidence was checked with".into(),
                            );
                        }
                        let v = self.evaluate_kbs_release(at, tenant, resource, appraised);
                        if !v.allowed() {
                            let list: Vec<String> =
                                v.failed.iter().map(|f| format!("{} ({})", f.name, f.actual)).collect();
                            reasons.push(format!("not justified: {}", list.join("; ")));
                        }
                        if v.datasets != [dataset.clone()] || v.key_ids != [key_id.clone()] {
                            reasons.push(format!(
                                "the entry releases {dataset}'s key {key_id}, but {resource} is {:?} {:?}",
                                v.datasets, v.key_ids
                            ));
                        }
                        v.matches(policies, *simulated, &mut reasons);
                    }
                    Justification::Recorded => {
                        if let Err(r) = self.kbs_rules(at, tenant, resource, &nonce, binding, None) {
                            reasons.extend(r);
                        }
                        if self.resolve_kbs(tenant, resource).ok() != Some((dataset.clone(), key_id.clone())) {
                            reasons.push(format!("{resource} does not name {dataset}'s key {key_id}"));
                        }
                    }
                }
                let ids = self.allowing_policies(tenant, policies, *simulated, reasons)?;
                if *simulated {
                    notices.push("released to a KBS client on SIMULATED evidence (development mode)".into());
                }
                let verified_at = match justification {
                    Justification::Appraised(a) => Some(a.verified_at),
                    Justification::Recorded => None,
                };
                Change::KbsReleased { tenant: tenant.clone(), nonce, binding: *binding, verified_at, policies: ids }
            }
            Entry::TenantTesting { tenant, testing, .. } => {
                self.tenant_or(tenant)?;
                if *testing && !self.development {
                    return Err(one("a tenant is marked for testing only while the vault is in development mode"));
                }
                if *testing {
                    notices.push(format!(
                        "tenant {tenant} marked for testing: a development vault may serve it the KBS sample TEE"
                    ));
                }
                Change::Testing { tenant: tenant.clone(), testing: *testing }
            }
            Entry::ArtifactRegistered { tenant, job, model, version, release, artifact, provenance, .. } => {
                self.tenant_or(tenant)?;
                let r = self.releases.get(release).ok_or_else(|| {
                    one(format!("names release entry {release}, which is not an earlier key release"))
                })?;
                if r.tenant != *tenant || r.job != *job {
                    return Err(one(format!(
                        "release {release} was for {}'s job {}, not {tenant}'s job {job}",
                        r.tenant, r.job
                    )));
                }
                if let Some((m, v, _)) = &r.artifact {
                    return Err(one(format!("release {release} already registered its artifact ({m} v{v})")));
                }
                check_provenance(blobs, r, (tenant, job, *release), (model, *version), artifact, provenance)
                    .map_err(one)?;
                if !valid_id(model) {
                    return Err(one(format!("model name {model:?} is not a valid name")));
                }
                let latest = self.tenants.get(tenant).and_then(|t| t.models.get(model)).copied().unwrap_or(0);
                if *version <= latest {
                    return Err(one(format!(
                        "model {model} version {version} does not follow the registered version {latest}"
                    )));
                }
                Change::Artifact {
                    tenant: tenant.clone(),
                    model: model.clone(),
                    version: *version,
                    release: *release,
                    artifact: *artifact,
                }
            }
        };
        Ok(Transition { index: self.size, at, change, notices })
    }

    /// Why nothing new may be stored under `tenant`'s `dataset` (or the tenant, for `None`): a
    /// shredding of the dataset's keys or of the tenant's KEKs was requested.
    pub fn shredding(&self, tenant: &str, dataset: Option<&str>) -> Option<String> {
        if self.shredding.contains_key(&(tenant.to_owned(), None)) {
            return Some(format!("tenant {tenant} is being shredded: nothing new is stored for it"));
        }
        let d = dataset?;
        self.shredding
            .contains_key(&(tenant.to_owned(), Some(d.to_owned())))
            .then(|| format!("dataset {d} of {tenant} is being shredded: nothing new is stored in it"))
    }

    /// Keys whose scheduled shredding is due at `now`: (tenant, key id, dataset).
    pub fn due_shredding(&self, now: u64) -> Vec<(String, String, Option<String>)> {
        if self.shredding.is_empty() {
            return Vec::new();
        }
        let mut due: Vec<_> = self
            .keys
            .iter()
            .filter(|(_, k)| {
                matches!(k.state, KeyState::Scheduled(_)) && k.shred_not_before.is_some_and(|nb| nb <= now)
            })
            .map(|(id, k)| (k.tenant.clone(), id.clone(), k.dataset.clone()))
            .collect();
        // Data keys before KEKs: a tenant's objects go before the keys that wrap them.
        due.sort_by(|a, b| (a.2.is_none(), &a.1).cmp(&(b.2.is_none(), &b.1)));
        due
    }

    /// Keys already shredded (their destruction is retried at start, in case a crash came
    /// between the log entry and the deletion): (tenant, key id, dataset).
    pub fn shredded_keys(&self) -> Vec<(String, String, Option<String>)> {
        if self.shredding.is_empty() {
            return Vec::new();
        }
        self.keys
            .iter()
            .filter(|(_, k)| k.state == KeyState::Shredded)
            .map(|(id, k)| (k.tenant.clone(), id.clone(), k.dataset.clone()))
            .collect()
    }

    /// `tenant`'s keys (id and info): its KEKs and its data keys.
    pub fn keys_of<'a>(&'a self, tenant: &'a str) -> impl Iterator<Item = (&'a String, &'a KeyInfo)> + 'a {
        self.keys.iter().filter(move |(_, k)| k.tenant == tenant)
    }

    fn own_key(&self, tenant: &str, key_id: &str) -> Result<&KeyInfo, Reasons> {
        match self.keys.get(key_id) {
            None => Err(one(format!("key {key_id} was never created"))),
            Some(k) if k.tenant != tenant => Err(one(format!("key {key_id} belongs to {}, not {tenant}", k.tenant))),
            Some(k) => Ok(k),
        }
    }

    fn policy_doc(
        &self,
        blobs: &mut dyn Blobs,
        tenant: &str,
        policy: &PolicyVersion,
        document: &Digest,
    ) -> Result<Policy, Reasons> {
        let text = text(blobs, document).map_err(one)?;
        let doc = Policy::from_toml(&text).map_err(|e| one(format!("policy document: {e}")))?;
        let r = doc.reference();
        if r.tenant != tenant || policy_version(&r) != *policy {
            return Err(one(format!(
                "the document is {} {}@{} ({}), not the {}@{} ({}) the entry names",
                r.tenant, r.id, r.version, r.digest, policy.id, policy.version, policy.digest
            )));
        }
        Ok(doc)
    }

    /// A signed job's checks against the state: signature, tenant, and every dataset version
    /// registered to the tenant with the digest the manifest pins.
    pub fn check_job(&self, blobs: &mut dyn Blobs, tenant: &str, signed: &Digest) -> Result<VerifiedJob, Reasons> {
        let bytes = blobs.get(signed).map_err(one)?;
        let verified = SignedJob::from_bytes(&bytes).and_then(|s| s.verify()).map_err(|e| one(e.to_string()))?;
        let t = self.tenant_or(tenant)?;
        let m = &verified.manifest;
        let mut reasons = Vec::new();
        if m.tenant != tenant {
            reasons.push(format!("the manifest is for tenant {}, not {tenant}", m.tenant));
        }
        for d in &m.datasets {
            match t.datasets.get(&d.id) {
                None => reasons.push(format!("dataset {} is not {tenant}'s", d.id)),
                Some(ds) => match usize::try_from(d.version).ok().and_then(|v| ds.versions.get(v.checked_sub(1)?)) {
                    None => reasons.push(format!("dataset {} has no version {}", d.id, d.version)),
                    Some(o) if o.digest != d.object_digest => reasons.push(format!(
                        "dataset {} version {}: the manifest pins object {}, the vault registered {}",
                        d.id, d.version, d.object_digest, o.digest
                    )),
                    Some(_) => {}
                },
            }
        }
        if reasons.is_empty() { Ok(verified) } else { Err(reasons) }
    }

    /// The state rules of a release: the job is the tenant's, live, under its limit; the nonce
    /// is fresh; every key is active. Returns the job.
    fn release_rules(&self, at: u64, tenant: &str, job: &str, nonce: &[u8; 32]) -> Result<&JobInfo, Reasons> {
        self.tenant_or(tenant)?;
        let j = match self.jobs.get(job) {
            Some(j) if j.tenant == tenant => j,
            _ => return Err(one(format!("job {job} is not {tenant}'s"))),
        };
        let mut reasons = Vec::new();
        if self.nonces.contains(nonce) || self.kbs_nonces.contains_key(nonce) {
            reasons.push(format!("nonce {} was presented before: a replay", hex::encode(nonce)));
        }
        if at > j.not_after {
            reasons.push(format!("job {job} expired at {}", j.not_after));
        }
        if j.releases >= j.max_releases {
            reasons.push(format!("job {job} already had its {} release(s)", j.max_releases));
        }
        for (dataset, k) in &j.datasets {
            match self.keys.get(k).map(|i| i.state) {
                Some(KeyState::Active | KeyState::Retired) => {}
                Some(s) => reasons.push(format!("key {k} is {s:?}: no release after a shredding request")),
                None => reasons.push(format!("key {k} does not exist")),
            }
            // The scope too: a key registered while its dataset's (or tenant's) shredding was
            // being requested is not released either.
            if let Some(why) = self.shredding(tenant, Some(dataset)) {
                reasons.push(format!("{why}: no release after a shredding request"));
            }
        }
        if reasons.is_empty() { Ok(j) } else { Err(reasons) }
    }

    /// Evaluates a release of `job` for `tenant` at log time `at` on appraised evidence: every
    /// state rule and every policy check, all failures together. Pure; the vault decides with it
    /// and [`LogState::check`] re-derives it.
    pub fn evaluate_release(&self, at: u64, tenant: &str, job: &str, appraised: &Appraised) -> Verdict {
        let mut failed = appraised.failed.clone();
        let fail = |failed: &mut Vec<FailedCheck>, name: &str, expected: &str, actual: String| {
            failed.push(FailedCheck { policy: String::new(), name: name.into(), expected: expected.into(), actual });
        };
        if appraised.verified_at > at || at - appraised.verified_at > MAX_SKEW_SECS {
            fail(
                &mut failed,
                "evidence.fresh",
                &format!("verified at most {MAX_SKEW_SECS} s before the decision"),
                format!("verified at {}, decided at {at}", appraised.verified_at),
            );
        }
        let mut verdict = Verdict {
            job: job.to_owned(),
            datasets: Vec::new(),
            key_ids: Vec::new(),
            policies: Vec::new(),
            simulated: false,
            failed: Vec::new(),
            allows: Vec::new(),
        };
        if let Err(reasons) = self.release_rules(at, tenant, job, &appraised.nonce) {
            for r in reasons {
                fail(&mut failed, "release", "a live job of the tenant, a fresh nonce, active keys", r);
            }
        }
        let (Some(t), Some(j)) = (self.tenants.get(tenant), self.jobs.get(job).filter(|j| j.tenant == tenant)) else {
            verdict.failed = failed;
            return verdict;
        };
        if appraised.manifest != j.manifest {
            fail(&mut failed, "job.manifest", &j.manifest.to_string(), appraised.manifest.to_string());
        }
        verdict.datasets = j.datasets.iter().map(|(d, _)| d.clone()).collect();
        verdict.key_ids = j.datasets.iter().map(|(_, k)| k.clone()).collect();
        if let Some(verified) = &appraised.verified {
            let evidence = Appraisal::from(verified);
            let now = UnixTime(i64::try_from(at).unwrap_or(i64::MAX));
            for (dataset, _) in &j.datasets {
                let request = Request {
                    tenant: tenant.to_owned(),
                    dataset: dataset.clone(),
                    dataset_labels: t.datasets.get(dataset).map(|d| d.labels.clone()).unwrap_or_default(),
                    job: j.request.clone(),
                    prior_releases: t.release_counts.clone(),
                };
                match evaluate(&t.active, &evidence, &request, now, self.mode()) {
                    Decision::Allow(a) => {
                        for p in a.policies() {
                            if !verdict.policies.contains(p) {
                                verdict.policies.push(p.clone());
                            }
                        }
                        verdict.simulated |= a.is_simulated();
                        verdict.allows.push(a);
                    }
                    Decision::Deny(d) => {
                        for p in &d.policies {
                            if !verdict.policies.contains(p) {
                                verdict.policies.push(p.clone());
                            }
                        }
                        failed.extend(d.failed.iter().filter(|c| !c.passed).map(|c| FailedCheck {
                            policy: c.policy.clone(),
                            name: if j.datasets.len() > 1 { format!("{dataset}: {}", c.name) } else { c.name.clone() },
                            expected: c.expected.clone(),
                            actual: c.actual.clone(),
                        }));
                    }
                }
            }
        }
        verdict.with_failed(failed)
    }

    /// The ids of a release's allowing `policies`, each active for `tenant` as named, after
    /// `reasons` (the rules already broken; simulated evidence outside development mode is
    /// one) came out empty.
    fn allowing_policies(
        &self,
        tenant: &str,
        policies: &[PolicyVersion],
        simulated: bool,
        mut reasons: Reasons,
    ) -> Result<Vec<String>, Reasons> {
        if simulated && !self.development {
            reasons.push("a release on simulated evidence outside development mode".into());
        }
        if !reasons.is_empty() {
            return Err(reasons);
        }
        let t = self.tenant_or(tenant)?;
        let mut ids = Vec::new();
        for p in policies {
            let active = t.active.iter().find(|a| a.policy().id.as_str() == p.id);
            if active.is_none_or(|a| a.policy().digest() != p.digest) {
                return Err(one(format!("policy {}@{} is not active for {tenant}", p.id, p.version)));
            }
            ids.push(p.id.clone());
        }
        Ok(ids)
    }

    /// The dataset and data key a KBS resource path names: `<dataset>/key/<version>` or
    /// `<dataset>/key/latest`, the tenant's own datasets only.
    pub fn resolve_kbs(&self, tenant: &str, resource: &str) -> Result<(String, String), String> {
        let parts: Vec<&str> = resource.split('/').collect();
        let [dataset, kind, tag] = parts.as_slice() else {
            return Err(format!("{resource:?} is not <dataset>/key/<version>"));
        };
        if *kind != "key" {
            return Err(format!("resource type {kind:?}: this vault serves \"key\" (a dataset version's data key)"));
        }
        let d = self
            .tenants
            .get(tenant)
            .and_then(|t| t.datasets.get(*dataset))
            .ok_or_else(|| format!("{tenant} has no dataset {dataset}"))?;
        let object = match *tag {
            "latest" => d.versions.last(),
            v => v
                .strip_prefix('v')
                .unwrap_or(v)
                .parse::<usize>()
                .ok()
                .filter(|n| *n >= 1)
                .and_then(|n| d.versions.get(n - 1)),
        }
        .ok_or_else(|| format!("dataset {dataset} has no version {tag}"))?;
        Ok(((*dataset).to_owned(), object.key_id.clone()))
    }

    /// The state rules of a KBS release: the resource is the tenant's, its key releasable, the
    /// nonce not used by anything but this attestation, the attestation young enough.
    fn kbs_rules(
        &self,
        at: u64,
        tenant: &str,
        resource: &str,
        nonce: &[u8; 32],
        binding: &Digest,
        verified_at: Option<u64>,
    ) -> Result<(String, String), Reasons> {
        self.tenant_or(tenant)?;
        let (dataset, key_id) = self.resolve_kbs(tenant, resource).map_err(one)?;
        let mut reasons = Vec::new();
        let first = self.kbs_nonces.get(nonce);
        if self.nonces.contains(nonce) || first.is_some_and(|(b, _)| b != binding) {
            reasons.push(format!("nonce {} was used by another attestation or a denial: a replay", hex::encode(nonce)));
        }
        if let (Some(v), Some((_, Some(w)))) = (verified_at, first)
            && v != *w
        {
            reasons.push(format!("the attestation was verified at {w}, not {v}: its evidence cannot be re-dated"));
        }
        // Replicas' clocks may differ by a little: the evidence may be dated up to
        // KBS_CLOCK_SKEW_SECS after the decision.
        if let Some(v) = verified_at
            && (v > at + KBS_CLOCK_SKEW_SECS || at.saturating_sub(v) > KBS_ATTESTATION_MAX_SECS)
        {
            reasons.push(format!(
                "attested at {v}, released at {at}: an attestation serves at most {KBS_ATTESTATION_MAX_SECS} s"
            ));
        }
        match self.keys.get(&key_id).map(|i| i.state) {
            Some(KeyState::Active | KeyState::Retired) => {}
            Some(s) => reasons.push(format!("key {key_id} is {s:?}: no release after a shredding request")),
            None => reasons.push(format!("key {key_id} does not exist")),
        }
        if let Some(why) = self.shredding(tenant, Some(&dataset)) {
            reasons.push(format!("{why}: no release after a shredding request"));
        }
        if reasons.is_empty() { Ok((dataset, key_id)) } else { Err(reasons) }
    }

    /// Evaluates a KBS release of `resource` for `tenant` at log time `at` on evidence appraised
    /// under the KBS binding: every state rule and every policy covering `kbs-resource`
    /// requests, all failures together. Pure; the vault decides with it and
    /// [`LogState::check`] re-derives it.
    pub fn evaluate_kbs_release(&self, at: u64, tenant: &str, resource: &str, appraised: &Appraised) -> Verdict {
        let mut failed = appraised.failed.clone();
        let fail = |failed: &mut Vec<FailedCheck>, name: &str, expected: &str, actual: String| {
            failed.push(FailedCheck { policy: String::new(), name: name.into(), expected: expected.into(), actual });
        };
        let mut verdict = Verdict {
            job: resource.to_owned(),
            datasets: Vec::new(),
            key_ids: Vec::new(),
            policies: Vec::new(),
            simulated: false,
            failed: Vec::new(),
            allows: Vec::new(),
        };
        if !appraised.kbs {
            fail(&mut failed, "evidence.binding", "the KBS binding", "Coffre's release binding".into());
        }
        match self.kbs_rules(at, tenant, resource, &appraised.nonce, &appraised.manifest, Some(appraised.verified_at)) {
            Ok((dataset, key_id)) => {
                verdict.datasets.push(dataset);
                verdict.key_ids.push(key_id);
            }
            Err(reasons) => {
                for r in reasons {
                    fail(&mut failed, "release", "a dataset key of the tenant, a fresh nonce, a live attestation", r);
                }
            }
        }
        let t = self.tenants.get(tenant);
        if let Some(v) = &appraised.verified
            && matches!(v.cpu(), coffre_attestation::composite::CpuClaims::Sample(_))
            && !t.is_some_and(|t| t.testing)
        {
            fail(
                &mut failed,
                "platform.sample_tenant",
                "a tenant marked for testing (the sample TEE proves nothing about hardware)",
                format!("{tenant} is not marked for testing"),
            );
        }
        if let (Some(t), Some(dataset), Some(verified)) = (t, verdict.datasets.first(), &appraised.verified) {
            let request = Request {
                tenant: tenant.to_owned(),
                dataset: dataset.clone(),
                dataset_labels: t.datasets.get(dataset).map(|d| d.labels.clone()).unwrap_or_default(),
                job: JobRequest {
                    kind: JobKind::KbsResource,
                    trainer_measurement: None,
                    base_model: None,
                    epochs: None,
                    steps: None,
                    output_recipients: Vec::new(),
                },
                prior_releases: t.release_counts.clone(),
            };
            let evidence = Appraisal::from(verified);
            match evaluate(&t.active, &evidence, &request, UnixTime(i64::try_from(at).unwrap_or(i64::MAX)), self.mode())
            {
                Decision::Allow(a) => {
                    verdict.policies.extend(a.policies().iter().cloned());
                    verdict.simulated = a.is_simulated();
                    verdict.allows.push(a);
                }
                Decision::Deny(d) => {
                    verdict.policies.extend(d.policies.iter().cloned());
                    failed.extend(d.failed.iter().filter(|c| !c.passed).map(|c| FailedCheck {
                        policy: c.policy.clone(),
                        name: c.name.clone(),
                        expected: c.expected.clone(),
                        actual: c.actual.clone(),
                    }));
                }
            }
        }
        verdict.with_failed(failed)
    }

    /// Carries out a checked entry. `t` must come from [`LogState::check`] at this size.
    pub fn apply(&mut self, t: Transition) -> Result<(), String> {
        if t.index != self.size {
            return Err(format!("a transition checked at index {} applied at {}", t.index, self.size));
        }
        let index = t.index;
        match t.change {
            Change::Proposed { tenant, id, version, proposal } => {
                if let Some(ts) = self.tenants.get_mut(&tenant) {
                    ts.proposals.insert((id, version), proposal);
                }
            }
            Change::Approved { tenant, id, version, approver, approval } => {
                if let Some(p) = self.tenants.get_mut(&tenant).and_then(|ts| ts.proposals.get_mut(&(id, version))) {
                    p.approvals.push((approver, approval));
                }
            }
            Change::Development(on) => self.development = on,
            Change::Tenant { tenant, name } => {
                self.tenants.insert(tenant, TenantState { name, ..TenantState::default() });
            }
            Change::Approvers { tenant, set } => {
                if let Some(ts) = self.tenants.get_mut(&tenant) {
                    ts.approvers = Some(set.into_set());
                }
            }
            Change::Activated { tenant, active, document } => {
                if let Some(ts) = self.tenants.get_mut(&tenant) {
                    ts.documents.insert(active.policy().digest(), document);
                    ts.active.retain(|a| a.policy().id != active.policy().id);
                    ts.active.push(*active);
                }
            }
            Change::Dataset { tenant, dataset, labels } => {
                if let Some(ts) = self.tenants.get_mut(&tenant) {
                    ts.datasets.insert(dataset, DatasetInfo { labels, versions: Vec::new() });
                }
            }
            Change::Object { tenant, dataset, object } => {
                self.keys.insert(
                    object.key_id.clone(),
                    KeyInfo {
                        tenant: tenant.clone(),
                        dataset: Some(dataset.clone()),
                        state: KeyState::Active,
                        shred_not_before: None,
                    },
                );
                if let Some(d) = self.tenants.get_mut(&tenant).and_then(|ts| ts.datasets.get_mut(&dataset)) {
                    d.versions.push(object);
                }
            }
            Change::Key { key_id, info } => {
                self.keys.insert(key_id, info);
            }
            Change::Nothing => {}
            Change::KeyState { key_id, state, new_key, not_before } => {
                if let Some(k) = self.keys.get_mut(&key_id) {
                    let gone = |s: KeyState| matches!(s, KeyState::Scheduled(_) | KeyState::Shredded);
                    let scope = (k.tenant.clone(), k.dataset.clone());
                    match (gone(k.state), gone(state)) {
                        (false, true) => *self.shredding.entry(scope).or_default() += 1,
                        (true, false) => {
                            if let Some(n) = self.shredding.get_mut(&scope) {
                                *n = n.saturating_sub(1);
                                if *n == 0 {
                                    self.shredding.remove(&scope);
                                }
                            }
                        }
                        _ => {}
                    }
                    k.state = state;
                    k.shred_not_before = not_before;
                }
                if let Some((id, info)) = new_key {
                    self.keys.insert(id, info);
                }
            }
            Change::Job { id, job } => {
                self.jobs.insert(id, *job);
            }
            Change::Released { tenant, job, nonce, policies, worker_keys } => {
                self.nonces.insert(nonce);
                if let Some(ts) = self.tenants.get_mut(&tenant) {
                    for p in policies {
                        *ts.release_counts.entry(p).or_default() += 1;
                    }
                }
                if let Some(j) = self.jobs.get_mut(&job) {
                    j.releases += 1;
                }
                self.releases.insert(index, ReleaseInfo { tenant, job, worker_keys, artifact: None });
            }
            Change::Denied { nonce, kbs_resource } => {
                if let Some(n) = nonce
                    && !kbs_resource
                {
                    self.nonces.insert(n);
                }
            }
            Change::KbsReleased { tenant, nonce, binding, verified_at, policies } => {
                let first = self.kbs_nonces.entry(nonce).or_insert((binding, verified_at));
                if first.1.is_none() {
                    first.1 = verified_at;
                }
                if let Some(ts) = self.tenants.get_mut(&tenant) {
                    for p in policies {
                        *ts.release_counts.entry(p).or_default() += 1;
                    }
                }
            }
            Change::Testing { tenant, testing } => {
                if let Some(ts) = self.tenants.get_mut(&tenant) {
                    ts.testing = testing;
                }
            }
            Change::Artifact { tenant, model, version, release, artifact } => {
                if let Some(r) = self.releases.get_mut(&release) {
                    r.artifact = Some((model.clone(), version, artifact));
                }
                if let Some(ts) = self.tenants.get_mut(&tenant) {
                    ts.models.insert(model, version);
                }
            }
        }
        self.last_at = t.at;
        self.size += 1;
        Ok(())
    }

    /// Counts an entry that could not be checked at all (an audit continuing past it).
    pub fn skip(&mut self) {
        self.size += 1;
    }

    /// Datasets of a tenant with their labels (for listing).
    pub fn datasets(&self, tenant: &str) -> impl Iterator<Item = (&String, &DatasetInfo)> {
        self.tenants.get(tenant).into_iter().flat_map(|t| t.datasets.iter())
    }

    /// Every label any dataset of the tenant carries.
    pub fn labels(&self, tenant: &str) -> BTreeSet<&str> {
        self.datasets(tenant).flat_map(|(_, d)| d.labels.iter().map(String::as_str)).collect()
    }
}
