//! The offline audit of an exported log: the same [`LogState`] the vault decides with, replayed.
//!
//! Nothing in the export is trusted but the pinned log key (and a remembered checkpoint). In
//! order: the checkpoint's signature; every entry's leaf hash against the stored one (to locate
//! edits) and the tree root against the signed root; every earlier checkpoint against the same
//! entries (a second root for one size is a fork; an unreadable one is reported); consistency
//! with the remembered checkpoint; entries after the checkpoint (unsigned: reported); then a
//! replay of every entry through [`LogState::check`], every release re-appraised from its
//! evidence bundle at its recorded time and its bundle recomputed byte for byte.

use std::collections::HashSet;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_api::RawEvidence;
use coffre_attestation::composite::CompositeVerifier;
use coffre_log::merkle::{Hash, Tree, leaf_hash, verify_consistency};
use coffre_log::{BlobStore, Bundle, Checkpoint, Digest, Entry, EntryStore, NoteVerifier};
use serde::{Deserialize, Serialize};

use crate::release::{appraise, bundle_for};
use crate::state::{Blobs, Justification, LogState, parse_nonce};

/// What an audit remembers between runs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditState {
    /// Always [`STATE_FORMAT`].
    pub format: String,
    /// The pinned log key.
    pub log_key: String,
    /// The checkpoint size.
    pub size: u64,
    /// Base64 root hash.
    pub root: String,
}

/// The audit state format.
pub const STATE_FORMAT: &str = "coffre-audit-state/v1";

/// One discrepancy or notice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Problem {
    /// The entry it concerns, when one does.
    pub entry: Option<u64>,
    /// What is wrong.
    pub reason: String,
}

/// The audit's findings.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    /// The pinned log key.
    pub log: String,
    /// The latest checkpoint's size.
    pub checkpoint_size: u64,
    /// Its root, base64.
    pub root: String,
    /// Earlier checkpoints checked.
    pub checkpoints_checked: usize,
    /// How the remembered checkpoint relates (when one was given).
    pub state: Option<String>,
    /// Entries replayed.
    pub entries_audited: u64,
    /// Entries after the latest checkpoint (not signed: a discrepancy).
    pub entries_after_checkpoint: u64,
    /// Key releases.
    pub releases: u64,
    /// Of which on simulated evidence.
    pub simulated_releases: u64,
    /// Denials.
    pub denials: u64,
    /// Policy activations.
    pub policies_activated: u64,
    /// Approver-set changes.
    pub approver_set_changes: u64,
    /// Artifacts registered.
    pub artifacts: u64,
    /// Entries of other tenants, redacted to their leaf hash in a tenant-scoped export: the tree
    /// and its signatures cover them, their content was not audited.
    pub redacted: u64,
    /// Notable events that are not discrepancies (development mode in a development audit).
    pub notices: Vec<Problem>,
    /// Every discrepancy.
    pub problems: Vec<Problem>,
    /// What happened, entry by entry (only from [`audit_with_events`], for reports).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub events: Vec<Event>,
    #[serde(skip)]
    collect_events: bool,
}

/// One entry of the log as a report shows it: who, what, under which policies, on what evidence.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Event {
    /// The entry's index.
    pub index: u64,
    /// Its time (Unix seconds).
    pub at: u64,
    /// `dataset`, `object`, `job`, `approvers`, `policy_approved`, `policy_activated`,
    /// `release`, `denial`, `artifact`, `tenant`, `config`, `key`.
    pub kind: &'static str,
    /// The tenant (empty for vault-wide entries).
    pub tenant: String,
    /// The datasets it concerns.
    pub datasets: Vec<String>,
    /// The job it concerns.
    pub job: Option<String>,
    /// One line for people.
    pub summary: String,
    /// Policies (`id@version`) that allowed or applied.
    pub policies: Vec<String>,
    /// Approvers, by name where the set in force names their key.
    pub approvers: Vec<String>,
    /// Released on simulated evidence.
    pub simulated: bool,
    /// The verified claims of a release, as the audit re-derived them: `{"cpu": …, "gpus": […]}`.
    pub evidence: Option<serde_json::Value>,
    /// A denial's failed checks.
    pub failed: Vec<coffre_log::FailedCheck>,
    /// For an artifact: the release it ran under.
    pub release: Option<u64>,
    /// For an artifact: `model vVERSION` and its digest; for an object, its digest.
    pub subject: Option<String>,
}

impl Report {
    fn problem(&mut self, entry: Option<u64>, reason: impl Into<String>) {
        self.problems.push(Problem { entry, reason: reason.into() });
    }

    /// No discrepancy.
    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

/// How the audit treats simulated evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Audience {
    /// A production audit: switching development mode on is a discrepancy.
    Production,
    /// A development audit (simulated roots trusted): development mode is a notice.
    Development,
}

/// Audits a log in `store` against the pinned `key` (and the remembered `state`). Returns the
/// report and, when the checkpoint verified and is consistent with `state`, the state to remember.
pub fn audit<S: EntryStore + BlobStore>(
    store: &S,
    key: &NoteVerifier,
    state: Option<&AuditState>,
    verifier: &CompositeVerifier,
    audience: Audience,
) -> (Report, Option<AuditState>) {
    audit_inner(store, key, state, verifier, audience, false)
}

/// [`audit`], also keeping every entry as an [`Event`] in the report (for the auditor's report;
/// costs a copy of every release's claims).
pub fn audit_with_events<S: EntryStore + BlobStore>(
    store: &S,
    key: &NoteVerifier,
    state: Option<&AuditState>,
    verifier: &CompositeVerifier,
    audience: Audience,
) -> (Report, Option<AuditState>) {
    audit_inner(store, key, state, verifier, audience, true)
}

fn audit_inner<S: EntryStore + BlobStore>(
    store: &S,
    key: &NoteVerifier,
    state: Option<&AuditState>,
    verifier: &CompositeVerifier,
    audience: Audience,
    collect_events: bool,
) -> (Report, Option<AuditState>) {
    let mut r = Report { log: key.to_text(), collect_events, ..Report::default() };
    let note = match store.latest_checkpoint() {
        Ok(Some(n)) => n,
        Ok(None) => {
            r.problem(None, "the export holds no checkpoint: nothing in it is signed");
            return (r, None);
        }
        Err(e) => {
            r.problem(None, format!("cannot read the checkpoint: {e}"));
            return (r, None);
        }
    };
    let cp = match Checkpoint::verify(&note, key) {
        Ok(cp) => cp,
        Err(e) => {
            r.problem(None, format!("checkpoint: {e}"));
            return (r, None);
        }
    };
    r.checkpoint_size = cp.size;
    r.root = STANDARD.encode(cp.root);
    let total = store.len();
    if total < cp.size {
        r.problem(
            None,
            format!("the checkpoint covers {} entries but the export holds {total}: entries are missing", cp.size),
        );
        return (r, None);
    }
    r.entries_after_checkpoint = total - cp.size;
    if r.entries_after_checkpoint > 0 {
        r.problem(
            None,
            format!(
                "{} entries after the checkpoint (size {}) are covered by no signature: they may have been added by \
                 anyone; ask the operator for a checkpoint that covers them",
                r.entries_after_checkpoint, cp.size
            ),
        );
    }

    let mut entries = Vec::with_capacity(usize::try_from(cp.size).unwrap_or(0));
    for i in 0..cp.size {
        match store.entry(i) {
            Ok(e) => entries.push(e),
            Err(e) => {
                r.problem(Some(i), format!("cannot be read: {e}"));
                return (r, None);
            }
        }
    }
    let stored = store.leaves().unwrap_or_default();
    // A redacted entry (another tenant's, in a tenant-scoped export) enters the tree by its
    // recorded leaf hash; every other entry by the hash of its content.
    let mut leaves = Vec::with_capacity(entries.len());
    for (i, e) in (0u64..).zip(&entries) {
        if e.as_slice() == coffre_log::entry::REDACTED {
            match stored.get(i as usize) {
                Some(l) => leaves.push(*l),
                None => {
                    r.problem(Some(i), "a redacted entry without its leaf hash");
                    return (r, None);
                }
            }
        } else {
            leaves.push(leaf_hash(e));
        }
    }
    let tree = Tree::from_leaves(leaves.iter().copied());
    for (i, (ours, theirs)) in (0u64..).zip(leaves.iter().zip(stored.iter())) {
        if ours != theirs {
            r.problem(Some(i), "edited after it was logged: its content no longer matches its recorded leaf hash");
        }
    }
    let located = !r.problems.iter().all(|p| p.entry.is_none());
    let last_good = check_history(store, key, &tree, &cp, &mut r);
    let root = tree.root();
    let tree_ok = root == cp.root;
    if !tree_ok && !located {
        let from = last_good.map_or("entry 0".to_owned(), |g| format!("entry {g}"));
        r.problem(
            None,
            format!(
                "the entries hash to root {}, not the signed {}: entries were rewritten with their leaf hashes, \
                 somewhere from {from} to entry {}",
                STANDARD.encode(root),
                r.root,
                cp.size.saturating_sub(1)
            ),
        );
    }
    let new_state = if tree_ok { check_state(state, key, &tree, &cp, &mut r) } else { None };
    replay(store, &entries, verifier, audience, &mut r);
    (r, new_state)
}

/// Every earlier checkpoint the log signed must verify and match the entries at its size (a
/// second root for one size is a fork). Returns the largest size whose signed root matches, which
/// brackets where a rewrite begins.
fn check_history<S: EntryStore>(
    store: &S,
    key: &NoteVerifier,
    tree: &Tree,
    latest: &Checkpoint,
    r: &mut Report,
) -> Option<u64> {
    let sizes = match store.checkpoint_sizes() {
        Ok(s) => s,
        Err(e) => {
            r.problem(None, format!("cannot list earlier checkpoints: {e}"));
            return None;
        }
    };
    let mut last_good = None;
    for size in sizes {
        r.checkpoints_checked += 1;
        let cp = match store.checkpoint(size) {
            Ok(Some(note)) => Checkpoint::verify(&note, key),
            Ok(None) => {
                r.problem(None, format!("checkpoints/{size} is listed but holds nothing"));
                continue;
            }
            Err(e) => {
                r.problem(None, format!("checkpoints/{size} cannot be read: {e}"));
                continue;
            }
        };
        let cp = match cp {
            Ok(cp) if cp.size == size => cp,
            Ok(cp) => {
                r.problem(None, format!("checkpoints/{size} holds a checkpoint of size {}", cp.size));
                continue;
            }
            Err(e) => {
                r.problem(None, format!("checkpoint of size {size}: {e}"));
                continue;
            }
        };
        if size > latest.size {
            r.problem(
                None,
                format!(
                    "rollback: the log signed size {size} earlier, but its latest checkpoint is size {}",
                    latest.size
                ),
            );
        } else if size == latest.size && cp.root != latest.root {
            r.problem(
                None,
                format!(
                    "fork: the log signed two roots for size {size}: {} and {}",
                    STANDARD.encode(cp.root),
                    STANDARD.encode(latest.root)
                ),
            );
        } else if tree.root_at(size).ok() == Some(cp.root) {
            last_good = Some(size);
        } else if size < latest.size {
            r.problem(
                None,
                format!(
                    "the checkpoint signed for size {size} (root {}) does not match the entries: \
                     the first {size} entries were changed after it was signed",
                    STANDARD.encode(cp.root)
                ),
            );
        }
    }
    last_good
}

/// Consistency with the remembered checkpoint, by a consistency proof over our own tree.
fn check_state(
    state: Option<&AuditState>,
    key: &NoteVerifier,
    tree: &Tree,
    cp: &Checkpoint,
    r: &mut Report,
) -> Option<AuditState> {
    let next = AuditState {
        format: STATE_FORMAT.into(),
        log_key: key.to_text(),
        size: cp.size,
        root: STANDARD.encode(cp.root),
    };
    let Some(s) = state else {
        return Some(next);
    };
    let Some(old_root) = STANDARD.decode(&s.root).ok().and_then(|b| <Hash>::try_from(b).ok()) else {
        r.problem(None, "the state file's root is not a base64 hash");
        return None;
    };
    if s.size > cp.size {
        r.problem(
            None,
            format!("rollback: the log had {} entries when last audited, and now signs {}", s.size, cp.size),
        );
        return None;
    }
    let proof = tree.consistency_proof(s.size, cp.size).unwrap_or_default();
    match verify_consistency(s.size, cp.size, &old_root, &cp.root, &proof) {
        Ok(()) => {
            r.state = Some(format!("consistent with size {} seen before ({} hashes of proof)", s.size, proof.len()));
            Some(next)
        }
        Err(e) => {
            r.problem(
                None,
                format!(
                    "fork: the checkpoint remembered at size {} (root {}) is not a prefix of this log: {e}",
                    s.size, s.root
                ),
            );
            None
        }
    }
}

/// Blobs of an export: present, and hashing to their names (each checked once).
struct Checked<'a, S> {
    store: &'a S,
    checked: HashSet<Digest>,
}

impl<S: BlobStore> Blobs for Checked<'_, S> {
    fn get(&mut self, d: &Digest) -> Result<Vec<u8>, String> {
        let bytes = match self.store.blob(d) {
            Ok(Some(b)) => b,
            Ok(None) => return Err(format!("blob {d} is missing from the export")),
            Err(e) => return Err(format!("blob {d} cannot be read: {e}")),
        };
        if !self.checked.contains(d) {
            let actual = Digest::of(&bytes);
            if actual != *d {
                return Err(format!("blob {d} was altered: its content hashes to {actual}"));
            }
            self.checked.insert(*d);
        }
        Ok(bytes)
    }
}

/// Replays `entries` through a fresh [`LogState`], reporting every discrepancy.
pub fn replay<S: BlobStore>(
    store: &S,
    entries: &[Vec<u8>],
    verifier: &CompositeVerifier,
    audience: Audience,
    r: &mut Report,
) -> LogState {
    let mut state = LogState::new();
    let mut blobs = Checked { store, checked: HashSet::new() };
    for (i, bytes) in (0u64..).zip(entries) {
        if bytes.as_slice() == coffre_log::entry::REDACTED {
            r.redacted += 1;
            state.skip();
            continue;
        }
        r.entries_audited += 1;
        let entry = match Entry::from_bytes(bytes) {
            Ok(e) => e,
            Err(e) => {
                r.problem(Some(i), e.to_string());
                state.skip();
                continue;
            }
        };
        for d in entry.blobs() {
            if let Err(e) = blobs.get(&d) {
                r.problem(Some(i), e);
            }
        }
        match &entry {
            Entry::KeyReleased { simulated, .. } | Entry::KbsReleased { simulated, .. } => {
                r.releases += 1;
                r.simulated_releases += u64::from(*simulated);
            }
            Entry::ReleaseDenied { .. } => r.denials += 1,
            Entry::PolicyActivated { .. } => r.policies_activated += 1,
            Entry::ApproverSetChanged { .. } => r.approver_set_changes += 1,
            Entry::ArtifactRegistered { .. } => r.artifacts += 1,
            _ => {}
        }
        let released = match &entry {
            Entry::KeyReleased { tenant, job, evidence_bundle, .. } => {
                Some((tenant, Released::Job(job), evidence_bundle))
            }
            Entry::KbsReleased { tenant, resource, evidence_bundle, .. } => {
                Some((tenant, Released::Kbs(resource), evidence_bundle))
            }
            _ => None,
        };
        let appraised = if let Some((tenant, what, bundle)) = released {
            match reappraise(&state, &mut blobs, verifier, tenant, what, bundle, entry.at()) {
                Ok((a, bundle_problems)) => {
                    bundle_problems.into_iter().for_each(|why| r.problem(Some(i), why));
                    Some(a)
                }
                Err(reasons) => {
                    reasons.into_iter().for_each(|why| r.problem(Some(i), why));
                    None
                }
            }
        } else {
            if let Entry::ReleaseDenied { evidence_bundle: Some(b), nonce, .. } = &entry {
                match blobs.get(b).and_then(|b| Bundle::from_bytes(&b).map_err(|e| e.to_string())) {
                    Ok(b) if b.decision.allowed => r.problem(Some(i), "its evidence bundle records an allow"),
                    Ok(b) if Some(&b.nonce) != nonce.as_ref() => {
                        r.problem(Some(i), "its evidence bundle holds another nonce")
                    }
                    Ok(_) => {}
                    Err(e) => r.problem(Some(i), e),
                }
            }
            None
        };
        let justification = match &appraised {
            Some(a) => Justification::Appraised(a),
            None => Justification::Recorded,
        };
        let checked = state.check(&entry, &mut blobs, &justification);
        let t = match checked {
            Ok(t) => t,
            Err(reasons) => {
                reasons.into_iter().for_each(|why| r.problem(Some(i), why));
                // Keep replaying on what the entry says, so that later entries are judged in a
                // state as close as possible to the vault's.
                match state.check(&entry, &mut blobs, &Justification::Recorded) {
                    Ok(t) => t,
                    Err(_) => {
                        state.skip();
                        continue;
                    }
                }
            }
        };
        if r.collect_events {
            r.events.push(event(i, &entry, &state, appraised.as_ref()));
        }
        for notice in &t.notices {
            let is_dev_switch = matches!(&entry, Entry::ConfigChanged { .. });
            if is_dev_switch && audience == Audience::Production {
                r.problem(
                    Some(i),
                    format!("{notice}; a production log never enables development mode (audit with simulated roots only for development logs)"),
                );
            } else {
                r.notices.push(Problem { entry: Some(i), reason: notice.clone() });
            }
        }
        if let Err(e) = state.apply(t) {
            r.problem(Some(i), e);
        }
    }
    state
}

fn policy_names(policies: &[coffre_log::PolicyVersion]) -> Vec<String> {
    policies.iter().map(|p| format!("{}@{}", p.id, p.version)).collect()
}

/// An entry as a report shows it, read against the state before it applies.
/// The verified claims of a re-appraised release, for the report.
fn verified_claims(appraised: Option<&crate::release::Appraised>) -> Option<serde_json::Value> {
    appraised.and_then(|a| a.verified.as_ref()).map(|v| {
        serde_json::json!({
            "cpu": serde_json::to_value(v.cpu()).unwrap_or_default(),
            "gpus": v.gpus().iter().map(|g| serde_json::to_value(g).unwrap_or_default()).collect::<Vec<_>>(),
        })
    })
}

/// What a re-appraised release was for.
#[derive(Debug, Clone, Copy)]
enum Released<'a> {
    /// A worker's job.
    Job(&'a str),
    /// A KBS client's resource.
    Kbs(&'a str),
}

fn event(index: u64, entry: &Entry, state: &LogState, appraised: Option<&crate::release::Appraised>) -> Event {
    let mut e = Event { index, at: entry.at(), ..Event::default() };
    let job_datasets = |job: &str| -> Vec<String> {
        state.job(job).map(|j| j.datasets.iter().map(|(d, _)| d.clone()).collect()).unwrap_or_default()
    };
    match entry {
        Entry::TenantCreated { tenant, name, .. } => {
            e.kind = "tenant";
            e.tenant = tenant.clone();
            e.summary = format!("tenant {tenant} ({name}) created");
        }
        Entry::DatasetRegistered { tenant, dataset, labels, .. } => {
            e.kind = "dataset";
            e.tenant = tenant.clone();
            e.datasets = vec![dataset.clone()];
            e.summary = format!("dataset {dataset} registered, labels: {}", labels.join(", "));
        }
        Entry::ObjectRegistered { tenant, dataset, version, digest, size, signer, .. } => {
            e.kind = "object";
            e.tenant = tenant.clone();
            e.datasets = vec![dataset.clone()];
            e.subject = Some(digest.to_string());
            e.summary = format!(
                "{dataset} v{version}: sealed object of {size} bytes uploaded{}",
                signer.as_ref().map(|s| format!(", signed by owner key {s}")).unwrap_or_default()
            );
        }
        Entry::JobSubmitted { tenant, job, .. } => {
            e.kind = "job";
            e.tenant = tenant.clone();
            e.job = Some(job.clone());
            e.summary = format!("signed job {job} submitted");
        }
        Entry::ApproverSetChanged { tenant, version, .. } => {
            e.kind = "approvers";
            e.tenant = tenant.clone();
            e.summary = format!("approver set version {version} installed");
        }
        Entry::PolicyApproved { tenant, policy, approver, .. } => {
            e.kind = "policy_approved";
            e.tenant = tenant.clone();
            e.policies = vec![format!("{}@{}", policy.id, policy.version)];
            let name = state
                .tenant(tenant)
                .and_then(|t| t.approvers.as_ref())
                .and_then(|set| set.approvers.iter().find(|a| a.key.key_id() == *approver))
                .map_or_else(|| approver.clone(), |a| a.name.to_string());
            e.approvers = vec![name.clone()];
            e.summary = format!("{} approved by {name}", e.policies[0]);
        }
        Entry::PolicyActivated { tenant, policy, approver_set, .. } => {
            e.kind = "policy_activated";
            e.tenant = tenant.clone();
            e.policies = vec![format!("{}@{}", policy.id, policy.version)];
            e.summary = format!("{} activated (approver set v{approver_set})", e.policies[0]);
        }
        Entry::KeyReleased { tenant, job, datasets, policies, simulated, .. } => {
            e.kind = "release";
            e.tenant = tenant.clone();
            e.job = Some(job.clone());
            e.datasets = datasets.clone();
            e.policies = policy_names(policies);
            e.simulated = *simulated;
            e.evidence = verified_claims(appraised);
            e.summary = format!(
                "keys for {} released to an attested worker{}",
                datasets.join(", "),
                if *simulated { " (SIMULATED evidence)" } else { "" }
            );
        }
        Entry::ReleaseDenied { tenant, job, policies, failed, resource, .. } => {
            e.kind = "denial";
            e.tenant = tenant.clone();
            e.job = job.clone();
            e.datasets = job.as_deref().map(job_datasets).unwrap_or_default();
            e.policies = policy_names(policies);
            e.failed = failed.clone();
            e.subject = resource.clone();
            e.summary = match resource {
                Some(r) => format!("KBS resource {r} denied: {} failed check(s)", failed.len()),
                None => format!("release denied: {} failed check(s)", failed.len()),
            };
        }
        Entry::KbsReleased { tenant, resource, dataset, policies, simulated, .. } => {
            e.kind = "release";
            e.tenant = tenant.clone();
            e.datasets = vec![dataset.clone()];
            e.policies = policy_names(policies);
            e.simulated = *simulated;
            e.subject = Some(resource.clone());
            e.evidence = verified_claims(appraised);
            e.summary = format!(
                "key of {resource} released to a Confidential Containers guest (KBS){}",
                if *simulated { " (SIMULATED evidence)" } else { "" }
            );
        }
        Entry::TenantTesting { tenant, testing, .. } => {
            e.kind = "config";
            e.tenant = tenant.clone();
            e.summary = format!("tenant {tenant} {} for testing", if *testing { "marked" } else { "no longer marked" });
        }
        Entry::ArtifactRegistered { tenant, job, model, version, artifact, release, .. } => {
            e.kind = "artifact";
            e.tenant = tenant.clone();
            e.job = Some(job.clone());
            e.datasets = job_datasets(job);
            e.release = Some(*release);
            e.subject = Some(format!("{model} v{version} {artifact}"));
            e.summary = format!("artifact {model} v{version} registered, trained under release {release}");
        }
        Entry::ConfigChanged { setting, old, new, .. } => {
            e.kind = "config";
            e.summary = format!("vault setting {setting}: {old} → {new}");
        }
        Entry::KeyCreated { tenant, purpose, dataset, .. } => {
            e.kind = "key";
            e.tenant = tenant.clone();
            e.datasets = dataset.iter().cloned().collect();
            e.summary = format!("key created ({purpose})");
        }
        Entry::KeyRotated { tenant, key_id, new_key_id, .. } => {
            e.kind = "key";
            e.tenant = tenant.clone();
            e.summary = format!("KEK rotated: {key_id} retired, {new_key_id} active");
        }
        Entry::KeysRewrapped { tenant, kek, key_ids, .. } => {
            e.kind = "key";
            e.tenant = tenant.clone();
            e.summary = format!("{} data key(s) rewrapped by {kek}", key_ids.len());
        }
        Entry::ShreddingScheduled { tenant, key_id, not_before, .. } => {
            e.kind = "key";
            e.tenant = tenant.clone();
            e.subject = Some(key_id.clone());
            e.summary =
                format!("crypto-shredding of {key_id} requested: releases refused, destroyed after {not_before}");
        }
        Entry::ShreddingCancelled { tenant, key_id, .. } => {
            e.kind = "key";
            e.tenant = tenant.clone();
            e.subject = Some(key_id.clone());
            e.summary = format!("crypto-shredding of {key_id} cancelled by the tenant's approvers");
        }
        Entry::KeyShredded { tenant, key_id, .. } => {
            e.kind = "key";
            e.tenant = tenant.clone();
            e.subject = Some(key_id.clone());
            e.summary = format!("{key_id} destroyed: nothing sealed under it can be opened again");
        }
        other => {
            e.kind = "key";
            e.tenant = other.tenant().unwrap_or_default().to_owned();
            e.summary = other.schema().to_owned();
        }
    }
    e
}

/// Re-appraises a release from its bundle: evidence re-verified at the recorded time with the
/// recorded nonce, worker keys and manifest; the verdict re-derived from the state; the bundle
/// recomputed and compared byte for byte with the stored one. Returns the appraisal and every
/// way the stored bundle differs; an error when the evidence cannot even be read.
fn reappraise<S: BlobStore>(
    state: &LogState,
    blobs: &mut Checked<'_, S>,
    verifier: &CompositeVerifier,
    tenant: &str,
    released: Released<'_>,
    bundle_digest: &Digest,
    at: u64,
) -> Result<(crate::release::Appraised, Vec<String>), Vec<String>> {
    let one = |s: String| vec![s];
    let b = blobs.get(bundle_digest).and_then(|b| Bundle::from_bytes(&b).map_err(|e| e.to_string())).map_err(one)?;
    let nonce = parse_nonce(&b.nonce).map_err(one)?;
    let keys = blobs.get(&b.ephemeral_key).map_err(one)?;
    let manifest = blobs.get(&b.job_manifest).map_err(one)?;
    let raw = RawEvidence::from_bundle(&b, |d| blobs.get(d)).map_err(|e| one(format!("evidence bundle: {e}")))?;
    let (appraised, verdict) = match released {
        Released::Job(job) => {
            if b.binding.is_some() {
                return Err(one(format!("a job's release bundle names the binding {:?}", b.binding)));
            }
            let appraised = appraise(verifier, &raw, nonce, &keys, &manifest, b.verified_at);
            let verdict = state.evaluate_release(at, tenant, job, &appraised);
            (appraised, verdict)
        }
        Released::Kbs(resource) => {
            if b.binding.as_deref() != Some(crate::release::KBS_BINDING) {
                return Err(one(format!("a KBS release bundle names the binding {:?}", b.binding)));
            }
            let appraised = crate::release::appraise_kbs(verifier, Ok(&raw), &manifest, b.verified_at);
            if appraised.nonce != nonce || appraised.worker_keys != b.ephemeral_key {
                return Err(one("the bundle's nonce or TEE key is not the binding document's".into()));
            }
            let verdict = state.evaluate_kbs_release(at, tenant, resource, &appraised);
            (appraised, verdict)
        }
    };
    let items: Vec<(&'static str, Option<u32>, Digest)> =
        raw.items().into_iter().map(|(role, gpu, bytes)| (role, gpu, Digest::of(bytes))).collect();
    let mut why = Vec::new();
    let expected = match bundle_for(state, tenant, &appraised, &items, &verdict) {
        Ok(e) => e,
        Err(e) => return Ok((appraised, vec![e])),
    };
    if expected != b {
        if expected.decision != b.decision {
            let failed: Vec<String> =
                expected.decision.failed.iter().map(|f| format!("{}: {}", f.name, f.actual)).collect();
            why.push(format!(
                "the bundle records allowed={} with {} failed check(s); re-verification gives allowed={}{}{}",
                b.decision.allowed,
                b.decision.failed.len(),
                expected.decision.allowed,
                if failed.is_empty() { "" } else { ": " },
                failed.join("; ")
            ));
        }
        if expected.mode != b.mode {
            why.push(format!("the bundle says {} mode, but the log was in {} mode", b.mode, expected.mode));
        }
        if expected.policies != b.policies {
            why.push("the bundle's policies are not the ones in force for this release".into());
        }
        if why.is_empty() {
            why.push("the evidence bundle is not the one the vault's rules produce for this release".into());
        }
    }
    Ok((appraised, why))
}
