//! `coffre audit verify`: an auditor's offline check of an exported transparency log.
//!
//! Nothing in the export is trusted but the pinned log key (and the remembered checkpoint in
//! `--state`). In order: the checkpoint's signature; every entry's leaf hash against the stored
//! one (to locate edits) and the tree root against the signed root; every earlier checkpoint the
//! log signed against the same entries (a second root for one size is a fork); consistency with
//! the remembered checkpoint; then a replay of every entry: blobs present and unaltered,
//! approver sets changed only with the previous set's approvals, policies activated only with
//! enough approvals, key lifecycle in order, and for every release the evidence re-verified at
//! its recorded time, the REPORT_DATA binding recomputed, and the recorded policies re-evaluated
//! as they were active at that point of the log.

use std::collections::{BTreeMap, HashSet};
use std::fs;
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use coffre_attestation::UnixTime;
use coffre_attestation::composite::{CompositeVerifier, release_report_data};
use coffre_log::merkle::{Hash, Tree, leaf_hash, verify_consistency};
use coffre_log::{BlobStore, Bundle, Checkpoint, Digest, DirStore, Entry, EntryStore, NoteVerifier};
use coffre_policies::{ActivePolicy, Approval, ApproverSet, Decision, Mode, Policy, Request, evaluate};
use serde::{Deserialize, Serialize};

use crate::error::{CliError, CliResult};
use crate::ledger::{RawEvidence, policy_version};
use crate::recorded::{SimulatedRoots, Verified, verify_composite};

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify an exported log offline: signed, consistent, complete, and every release justified
    #[command(after_help = "\
EXPORT is a log directory as the vault exports it:
  entries.jsonl          one canonical entry per line
  leaves                 the 32-byte leaf hash of each entry (locates edited entries)
  checkpoint             the latest signed checkpoint (C2SP tlog-checkpoint, Ed25519)
  checkpoints/<size>     every checkpoint the log signed
  blobs/sha256/<hex>     evidence bundles, evidence, policy documents, approvals

Pin the log's key (`name+hash+base64`, from the vault operator through a channel you trust) with
--log-key, the key text or a file holding it. With --state FILE the audit also proves that the
log only grew since the checkpoint remembered there (a fork or a rollback is reported), then
remembers the new checkpoint; the first run creates FILE and remembers the key too.

Every release is re-verified: its evidence against the pinned vendor roots at the recorded
time, REPORT_DATA = SHA-512(label | nonce | SHA-256(ephemeral key) | SHA-256(job manifest)), and
the recorded policy versions — activated earlier in the log with enough approvals — evaluated
again. Releases on simulated evidence (development mode) verify only with
--dangerous-accept-simulated-roots.

Exit status: 0 complete, untampered and every release justified; 1 any discrepancy (each printed
with its entry index and reason); 2 the export or a file cannot be read.

Examples:
  coffre audit verify --dir export/ --log-key vault.example.com/coffre+1a2b3c4d+AW…
  coffre audit verify --dir export/ --log-key log.pub --state audit-state.json --json")]
    Verify(VerifyArgs),
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The exported log directory
    #[arg(long, value_name = "EXPORT")]
    pub dir: PathBuf,

    /// The log's verifier key (name+hash+base64), or a file holding it
    #[arg(long, value_name = "PUB")]
    pub log_key: Option<String>,

    /// The checkpoint remembered from the last audit; checked for consistency, then updated
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,

    /// DEVELOPMENT ONLY: trust the simulated roots in this file when re-verifying releases made on
    /// simulated evidence
    #[arg(long, value_name = "FILE")]
    pub dangerous_accept_simulated_roots: Option<PathBuf>,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

/// What an audit remembers between runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct State {
    pub format: String,
    pub log_key: String,
    pub size: u64,
    /// Base64 root hash.
    pub root: String,
}

const STATE_FORMAT: &str = "coffre-audit-state/v1";

/// One discrepancy.
#[derive(Debug, Clone, Serialize)]
pub struct Problem {
    /// The entry it concerns, when one does.
    pub entry: Option<u64>,
    pub reason: String,
}

/// The audit's findings.
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub log: String,
    pub checkpoint_size: u64,
    pub root: String,
    pub checkpoints_checked: usize,
    pub state: Option<String>,
    pub entries_audited: u64,
    pub entries_after_checkpoint: u64,
    pub releases: u64,
    pub simulated_releases: u64,
    pub denials: u64,
    pub policies_activated: u64,
    pub approver_set_changes: u64,
    pub problems: Vec<Problem>,
}

impl Report {
    fn problem(&mut self, entry: Option<u64>, reason: impl Into<String>) {
        self.problems.push(Problem { entry, reason: reason.into() });
    }

    pub fn ok(&self) -> bool {
        self.problems.is_empty()
    }
}

fn read_key(text: &str) -> CliResult<NoteVerifier> {
    let path = Path::new(text);
    let text = if path.is_file() {
        fs::read_to_string(path).map_err(|e| CliError::io("read", path, &e))?
    } else {
        text.to_owned()
    };
    NoteVerifier::from_text(&text).map_err(|e| {
        CliError::usage(format!("--log-key: {e}"))
            .hint("give the log's verifier key `name+hash+base64` (or a file holding it) as the operator published it")
    })
}

fn read_state(path: &Path) -> CliResult<Option<State>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::io("read", path, &e)),
    };
    let state: State = serde_json::from_slice(&bytes)
        .ok()
        .filter(|s: &State| s.format == STATE_FORMAT)
        .ok_or_else(|| CliError::usage(format!("{} is not an audit state file ({STATE_FORMAT})", path.display())))?;
    Ok(Some(state))
}

fn write_state(path: &Path, state: &State) -> CliResult {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(state).unwrap_or_default() + "\n";
    fs::write(&tmp, text).map_err(|e| CliError::io("write", &tmp, &e))?;
    fs::rename(&tmp, path).map_err(|e| CliError::io("write", path, &e))
}

pub fn run(cmd: &AuditCommand) -> CliResult<bool> {
    let AuditCommand::Verify(args) = cmd;
    let state = args.state.as_deref().map(read_state).transpose()?.flatten();
    let key = match (&args.log_key, &state) {
        (Some(k), Some(s)) => {
            let key = read_key(k)?;
            if key.to_text() != s.log_key {
                return Err(CliError::usage(format!(
                    "--log-key is not the key remembered in the state file ({})",
                    s.log_key
                ))
                .hint("a log's key does not change; if it really did, start a new state file after checking why"));
            }
            key
        }
        (Some(k), None) => read_key(k)?,
        (None, Some(s)) => read_key(&s.log_key)?,
        (None, None) => {
            return Err(CliError::usage(
                "no log key: pin one with --log-key (or use a --state file that remembers it)",
            )
            .hint("the log key comes from the vault operator through a channel you trust, never from the export"));
        }
    };
    let roots = args.dangerous_accept_simulated_roots.as_deref().map(SimulatedRoots::load).transpose()?;
    let verifier = match &roots {
        Some(r) => r.composite_verifier()?,
        None => CompositeVerifier::new(),
    };
    let store = DirStore::open_read_only(&args.dir).map_err(|e| {
        CliError::usage(e.to_string()).hint("give the directory the vault exported (it holds entries.jsonl)")
    })?;
    let (report, new_state) = audit(&store, &key, state.as_ref(), &verifier);
    if let (Some(path), Some(s)) = (&args.state, &new_state) {
        write_state(path, s)?;
    }
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print_report(&report, roots.is_some());
    }
    Ok(report.ok())
}

fn print_report(r: &Report, simulated_roots: bool) {
    outln!("Log         {}", r.log);
    outln!("Checkpoint  size {}, root {}", r.checkpoint_size, r.root);
    outln!("History     {} signed checkpoint(s) checked against the entries", r.checkpoints_checked);
    if let Some(s) = &r.state {
        outln!("State       {s}");
    }
    outln!(
        "Entries     {} audited; {} releases ({} SIMULATED), {} denials, {} policy activations, {} approver-set changes",
        r.entries_audited,
        r.releases,
        r.simulated_releases,
        r.denials,
        r.policies_activated,
        r.approver_set_changes
    );
    if r.entries_after_checkpoint > 0 {
        outln!(
            "            {} entries after the checkpoint are not signed yet and were not audited",
            r.entries_after_checkpoint
        );
    }
    if simulated_roots {
        outln!("WARNING     simulated roots trusted (--dangerous-accept-simulated-roots): development only");
    }
    for p in &r.problems {
        match p.entry {
            Some(i) => outln!("  ✗ entry {i}: {}", p.reason),
            None => outln!("  ✗ {}", p.reason),
        }
    }
    if r.ok() {
        outln!("Result      OK: complete, untampered, and every release justified by its evidence and policy");
    } else {
        outln!("Result      {} DISCREPANCIES", r.problems.len());
    }
}

/// Audits a log in `store` against the pinned `key` (and the remembered `state`). Returns the
/// report and, when the checkpoint verified and is consistent with `state`, the state to remember.
pub fn audit<S: EntryStore + BlobStore>(
    store: &S,
    key: &NoteVerifier,
    state: Option<&State>,
    verifier: &CompositeVerifier,
) -> (Report, Option<State>) {
    let mut r = Report { log: key.to_text(), ..Report::default() };
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

    let mut entries = Vec::with_capacity(cp.size as usize);
    for i in 0..cp.size {
        match store.entry(i) {
            Ok(e) => entries.push(e),
            Err(e) => {
                r.problem(Some(i), format!("cannot be read: {e}"));
                return (r, None);
            }
        }
    }
    let tree = Tree::from_leaves(entries.iter().map(|e| leaf_hash(e)));
    let stored = store.leaves().unwrap_or_default();
    for (i, (ours, theirs)) in (0u64..).zip(tree_leaves(&tree, cp.size).zip(stored.iter())) {
        if ours != *theirs {
            r.problem(Some(i), "edited after it was logged: its content no longer matches its recorded leaf hash");
        }
    }
    let located = !r.problems.is_empty();
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
    replay(store, &entries, verifier, &mut r);
    (r, new_state)
}

fn tree_leaves(tree: &Tree, size: u64) -> impl Iterator<Item = Hash> + '_ {
    (0..size).filter_map(|i| tree.leaf(i))
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
            _ => continue,
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
    state: Option<&State>,
    key: &NoteVerifier,
    tree: &Tree,
    cp: &Checkpoint,
    r: &mut Report,
) -> Option<State> {
    let next =
        State { format: STATE_FORMAT.into(), log_key: key.to_text(), size: cp.size, root: STANDARD.encode(cp.root) };
    let Some(s) = state else {
        r.state = Some(format!("first audit: remembering size {}", cp.size));
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
            r.state = Some(format!(
                "consistent with size {} seen before ({} hashes of proof); remembering size {}",
                s.size,
                proof.len(),
                cp.size
            ));
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum KeyState {
    Active,
    Retired,
    Scheduled(bool),
    Shredded,
}

struct Replay<'a, S> {
    store: &'a S,
    verifier: &'a CompositeVerifier,
    development: bool,
    sets: BTreeMap<String, ApproverSet>,
    active: Vec<ActivePolicy>,
    documents: BTreeMap<String, Digest>,
    releases: BTreeMap<(String, String), u64>,
    release_entries: HashSet<u64>,
    keys: BTreeMap<String, KeyState>,
    checked_blobs: HashSet<Digest>,
}

pub fn replay<S: BlobStore>(store: &S, entries: &[Vec<u8>], verifier: &CompositeVerifier, r: &mut Report) {
    let mut ctx = Replay {
        store,
        verifier,
        development: false,
        sets: BTreeMap::new(),
        active: Vec::new(),
        documents: BTreeMap::new(),
        releases: BTreeMap::new(),
        release_entries: HashSet::new(),
        keys: BTreeMap::new(),
        checked_blobs: HashSet::new(),
    };
    for (i, bytes) in (0u64..).zip(entries) {
        r.entries_audited += 1;
        let entry = match Entry::from_bytes(bytes) {
            Ok(e) => e,
            Err(e) => {
                r.problem(Some(i), e.to_string());
                continue;
            }
        };
        if let Err(reasons) = ctx.entry(i, &entry, r) {
            for reason in reasons {
                r.problem(Some(i), reason);
            }
        }
    }
}

type Reasons = Vec<String>;

fn one(reason: impl Into<String>) -> Reasons {
    vec![reason.into()]
}

impl<S: BlobStore> Replay<'_, S> {
    /// A blob, present and unaltered.
    fn blob(&mut self, d: &Digest) -> Result<Vec<u8>, String> {
        let bytes = match self.store.blob(d) {
            Ok(Some(b)) => b,
            Ok(None) => return Err(format!("blob {d} is missing from the export")),
            Err(e) => return Err(format!("blob {d} cannot be read: {e}")),
        };
        if !self.checked_blobs.contains(d) {
            let actual = Digest::of(&bytes);
            if actual != *d {
                return Err(format!("blob {d} was altered: its content hashes to {actual}"));
            }
            self.checked_blobs.insert(*d);
        }
        Ok(bytes)
    }

    fn text(&mut self, d: &Digest) -> Result<String, String> {
        String::from_utf8(self.blob(d)?).map_err(|_| format!("blob {d} is not UTF-8 text"))
    }

    fn approvals(&mut self, ds: &[Digest]) -> Result<Vec<Approval>, String> {
        ds.iter()
            .map(|d| self.text(d).and_then(|t| Approval::from_json(&t).map_err(|e| format!("approval {d}: {e}"))))
            .collect()
    }

    fn entry(&mut self, i: u64, entry: &Entry, r: &mut Report) -> Result<(), Reasons> {
        match entry {
            Entry::ConfigChanged { setting, old, new, .. } => {
                if setting == "development_mode" {
                    let current = if self.development { "on" } else { "off" };
                    if old != current || (new != "on" && new != "off") {
                        return Err(one(format!(
                            "development_mode changes from {old:?} to {new:?}, but it was {current:?}"
                        )));
                    }
                    self.development = new == "on";
                }
                Ok(())
            }
            Entry::ApproverSetChanged { tenant, version, digest, document, approvals, .. } => {
                r.approver_set_changes += 1;
                let text = self.text(document).map_err(one)?;
                let set = ApproverSet::from_toml(&text).map_err(|e| one(format!("approver set: {e}")))?;
                if set.tenant.to_string() != *tenant || set.version.get() != *version || set.digest() != *digest {
                    return Err(one("the approver set document is not the tenant, version and digest the entry names"));
                }
                let approvals = self.approvals(approvals).map_err(one)?;
                match self.sets.get(tenant) {
                    None if *version == 1 => {}
                    None => {
                        return Err(one(format!("tenant {tenant}'s first approver set is version {version}, not 1")));
                    }
                    Some(prev) => {
                        prev.verify_change(&set, &approvals).map_err(|e| one(format!("approver set change: {e}")))?;
                    }
                }
                self.sets.insert(tenant.clone(), set);
                Ok(())
            }
            Entry::PolicyProposed { document, .. } => self.blob(document).map(drop).map_err(one),
            Entry::PolicyApproved { approval, .. } => self.approvals(&[*approval]).map(drop).map_err(one),
            Entry::PolicyActivated { tenant, policy, document, approvals, approver_set, .. } => {
                r.policies_activated += 1;
                let text = self.text(document).map_err(one)?;
                let doc = Policy::from_toml(&text).map_err(|e| one(format!("policy document: {e}")))?;
                let reference = doc.reference();
                if reference.tenant != *tenant || policy_version(&reference) != *policy {
                    return Err(one(format!(
                        "the document is {} {}@{} ({}), not the {}@{} ({}) the entry names",
                        reference.tenant,
                        reference.id,
                        reference.version,
                        reference.digest,
                        policy.id,
                        policy.version,
                        policy.digest
                    )));
                }
                let approvals = self.approvals(approvals).map_err(one)?;
                let set =
                    self.sets.get(tenant).ok_or_else(|| one(format!("tenant {tenant} has no approver set yet")))?;
                if set.version.get() != *approver_set {
                    return Err(one(format!(
                        "activated by approver set {approver_set}, but set {} was in force",
                        set.version
                    )));
                }
                if let Some(prev) =
                    self.active.iter().find(|a| a.policy().tenant == doc.tenant && a.policy().id == doc.id)
                {
                    if prev.policy().version >= doc.version {
                        return Err(one(format!(
                            "version {} does not follow the active version {}",
                            doc.version,
                            prev.policy().version
                        )));
                    }
                }
                let active = set.activate(doc, &approvals).map_err(|report| {
                    let why: Vec<String> =
                        report.rejected.iter().map(|(n, why)| format!("approval {n}: {why}")).collect();
                    one(format!(
                        "activated with {} valid approval(s) of {} needed{}{}",
                        report.accepted.len(),
                        report.threshold,
                        if why.is_empty() { "" } else { ": " },
                        why.join("; ")
                    ))
                })?;
                self.documents.insert(policy.digest.clone(), *document);
                self.active
                    .retain(|a| !(a.policy().tenant == active.policy().tenant && a.policy().id == active.policy().id));
                self.active.push(active);
                Ok(())
            }
            Entry::KeyCreated { key_id, .. } => {
                if self.keys.insert(key_id.clone(), KeyState::Active).is_some() {
                    return Err(one(format!("key {key_id} was already created")));
                }
                Ok(())
            }
            Entry::KeyRotated { key_id, new_key_id, .. } => {
                self.transition(key_id, |s| matches!(s, KeyState::Active).then_some(KeyState::Retired))?;
                self.keys.entry(new_key_id.clone()).or_insert(KeyState::Active);
                Ok(())
            }
            Entry::ShreddingScheduled { key_id, .. } => self.transition(key_id, |s| match s {
                KeyState::Active => Some(KeyState::Scheduled(true)),
                KeyState::Retired => Some(KeyState::Scheduled(false)),
                _ => None,
            }),
            Entry::ShreddingCancelled { key_id, .. } => self.transition(key_id, |s| match s {
                KeyState::Scheduled(true) => Some(KeyState::Active),
                KeyState::Scheduled(false) => Some(KeyState::Retired),
                _ => None,
            }),
            Entry::KeyShredded { key_id, .. } => {
                self.transition(key_id, |s| matches!(s, KeyState::Scheduled(_)).then_some(KeyState::Shredded))
            }
            Entry::ArtifactRegistered { provenance, release, .. } => {
                self.blob(provenance).map_err(one)?;
                if !self.release_entries.contains(release) || *release >= i {
                    return Err(one(format!("names release entry {release}, which is not an earlier key release")));
                }
                Ok(())
            }
            Entry::ReleaseDenied { evidence_bundle, job_manifest, failed, .. } => {
                r.denials += 1;
                let mut reasons = Vec::new();
                if failed.is_empty() {
                    reasons.push("a denial that names no failed check".to_owned());
                }
                if let Some(d) = job_manifest {
                    self.blob(d).err().into_iter().for_each(|e| reasons.push(e));
                }
                if let Some(d) = evidence_bundle {
                    match self.blob(d).and_then(|b| Bundle::from_bytes(&b).map_err(|e| e.to_string())) {
                        Ok(b) if b.decision.allowed => reasons.push("its evidence bundle records an allow".into()),
                        Ok(_) => {}
                        Err(e) => reasons.push(e),
                    }
                }
                if reasons.is_empty() { Ok(()) } else { Err(reasons) }
            }
            Entry::KeyReleased { tenant, policies, .. } => {
                r.releases += 1;
                self.release_entries.insert(i);
                let result = self.release(entry);
                // Every recorded release counts against its policies' limits, justified or not.
                for p in policies {
                    *self.releases.entry((tenant.clone(), p.id.clone())).or_default() += 1;
                }
                if result? {
                    r.simulated_releases += 1;
                }
                Ok(())
            }
        }
    }

    fn transition(&mut self, key_id: &str, next: impl Fn(KeyState) -> Option<KeyState>) -> Result<(), Reasons> {
        let state = self.keys.get(key_id).copied().ok_or_else(|| one(format!("key {key_id} was never created")))?;
        let to = next(state).ok_or_else(|| one(format!("key {key_id} cannot make this change in its state")))?;
        self.keys.insert(key_id.to_owned(), to);
        Ok(())
    }

    /// Re-justifies a release; returns whether it rested on simulated evidence.
    fn release(&mut self, entry: &Entry) -> Result<bool, Reasons> {
        let Entry::KeyReleased {
            at,
            tenant,
            dataset,
            policies,
            evidence_bundle,
            job_manifest,
            ephemeral_key,
            key_ids,
            simulated,
        } = entry
        else {
            return Ok(false);
        };
        let b =
            self.blob(evidence_bundle).and_then(|b| Bundle::from_bytes(&b).map_err(|e| e.to_string())).map_err(one)?;
        let mut reasons = Vec::new();
        let mut check = |ok: bool, reason: &dyn Fn() -> String| {
            if !ok {
                reasons.push(reason());
            }
        };
        check(b.job_manifest == *job_manifest, &|| "the bundle's job manifest is not the entry's".into());
        check(b.ephemeral_key == *ephemeral_key, &|| "the bundle's ephemeral key is not the entry's".into());
        check(b.verified_at <= *at, &|| "the evidence was verified after the release".into());
        check(b.decision.allowed && b.decision.failed.is_empty(), &|| "the bundle does not record an allow".into());
        check(b.decision.simulated == *simulated, &|| "the entry and its bundle disagree on simulated evidence".into());
        let mode = if self.development { "development" } else { "production" };
        check(b.mode == mode, &|| format!("the bundle says {} mode, but the log was in {mode} mode", b.mode));
        let bundled: Vec<_> = b.policies.iter().map(|p| p.policy.clone()).collect();
        check(bundled == *policies, &|| "the bundle's policies are not the entry's".into());
        for p in &b.policies {
            let activated = self.documents.get(&p.policy.digest);
            check(activated == Some(&p.document), &|| {
                format!(
                    "policy {}@{} ({}) was not activated earlier in the log",
                    p.policy.id, p.policy.version, p.policy.digest
                )
            });
        }
        for k in key_ids {
            match self.keys.get(k) {
                None => reasons.push(format!("released key {k}, which was never created")),
                Some(KeyState::Shredded) => reasons.push(format!("released key {k} after it was shredded")),
                Some(_) => {}
            }
        }
        let manifest = self.blob(job_manifest).map_err(one)?;
        let key = self.blob(ephemeral_key).map_err(one)?;
        let mut request: Request =
            serde_json::from_slice(&manifest).map_err(|e| one(format!("the job manifest is not a request: {e}")))?;
        if request.tenant != *tenant || request.dataset != *dataset {
            reasons.push("the job manifest's tenant or dataset is not the entry's".into());
        }
        let nonce = hex::decode(&b.nonce).ok().and_then(|n| <[u8; 32]>::try_from(n).ok());
        let Some(nonce) = nonce else {
            reasons.push("the bundle's nonce is not 32 bytes of hex".into());
            return Err(reasons);
        };
        let expected = release_report_data(&nonce, &key, &manifest);
        let evidence = RawEvidence::from_bundle(&b, |d| self.blob(d)).and_then(|raw| raw.composite()).map_err(|e| {
            reasons.push(format!("evidence bundle: {e}"));
        });
        let Ok(evidence) = evidence else {
            return Err(reasons);
        };
        let at_time = UnixTime(i64::try_from(b.verified_at).unwrap_or(i64::MAX));
        let verified = match verify_composite(self.verifier, &evidence, Some(&expected), at_time) {
            Verified::Ok(v) => v,
            Verified::Failed(f) => {
                let list: Vec<String> = f.iter().map(|(n, d)| format!("{n} ({d})")).collect();
                reasons
                    .push(format!("the evidence does not verify at its recorded time {at_time}: {}", list.join("; ")));
                return Err(reasons);
            }
        };
        request.prior_releases =
            self.releases.iter().filter(|((t, _), _)| t == tenant).map(|((_, id), n)| (id.clone(), *n)).collect();
        let mode = if self.development { Mode::Development } else { Mode::Production };
        let simulated_now = match evaluate(&self.active, &verified.appraisal(), &request, at_time, mode) {
            Decision::Allow(a) => {
                let allowed_by: Vec<_> = a.policies().iter().map(policy_version).collect();
                if allowed_by != *policies {
                    reasons.push("the policies in force allow it, but not as the policies the entry names".into());
                }
                a.is_simulated()
            }
            Decision::Deny(d) => {
                let list: Vec<String> = d.failed.iter().map(ToString::to_string).collect();
                reasons.push(format!("not justified: the recorded policies deny it: {}", list.join("; ")));
                false
            }
        };
        if simulated_now != *simulated && reasons.is_empty() {
            reasons.push("the entry's simulated flag does not match the evidence".into());
        }
        if reasons.is_empty() { Ok(*simulated) } else { Err(reasons) }
    }
}
