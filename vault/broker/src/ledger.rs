//! [`Ledger`]: the vault's side of the log. Every entry passes [`LogState::check`] before it is
//! appended and [`LogState::apply`] after, so what the vault writes is what an audit accepts.

use coffre_api::RawEvidence;
use coffre_api::binding::WorkerKeys;
use coffre_log::{BlobStore, Digest, Entry, EntryStore, Log, LogError, NoteSigner};

use crate::release::{Appraised, Decided, Denied, KbsDecided, KbsReleaseToken, bundle_for, token};
use crate::state::{Blobs, Justification, LogState, Verdict, policy_version};

/// Why the ledger refused or failed.
#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    /// The log or its store failed: nothing was recorded, nothing may be released.
    #[error("transparency log: {0}")]
    Log(#[from] LogError),
    /// The entry breaks a rule of the log state (each reason).
    #[error("refused by the log's rules: {}", .0.join("; "))]
    Refused(Vec<String>),
    /// The stored log does not replay (it was not written by this vault's rules).
    #[error("the stored log does not replay at entry {index}: {}", reasons.join("; "))]
    Corrupt {
        /// The entry.
        index: u64,
        /// Why.
        reasons: Vec<String>,
    },
    /// The request names something the tenant does not have.
    #[error("{0}")]
    NotFound(String),
    /// An earlier write failed half way: the in-memory state may be ahead of the durable log, so
    /// nothing more is decided until the vault restarts and replays what is durable.
    #[error("the log is unavailable after a failed write; restart the vault")]
    Poisoned,
}

/// A decision appended to the log but not yet durable: nothing can be released from it until
/// [`Ledger::commit`] made it durable.
#[derive(Debug)]
pub struct Pending {
    index: u64,
    verdict: crate::state::Verdict,
    tenant: String,
    worker: WorkerKeys,
    bundle: Digest,
}

impl Pending {
    /// The entry's index.
    pub fn index(&self) -> u64 {
        self.index
    }
}

/// Blobs read from a store the vault wrote itself.
#[derive(Debug)]
pub struct StoreBlobs<'a, S>(pub &'a S);

impl<S: BlobStore> Blobs for StoreBlobs<'_, S> {
    fn get(&mut self, digest: &Digest) -> Result<Vec<u8>, String> {
        match self.0.blob(digest) {
            Ok(Some(b)) => Ok(b),
            Ok(None) => Err(format!("blob {digest} is missing")),
            Err(e) => Err(format!("blob {digest}: {e}")),
        }
    }
}

/// The log with its state.
#[derive(Debug)]
pub struct Ledger<S> {
    log: Log<S>,
    state: LogState,
    poisoned: bool,
}

impl<S: EntryStore + BlobStore> Ledger<S> {
    /// Opens the log in `store` and replays it through the state's rules (releases as recorded:
    /// their evidence was appraised when they were written).
    pub fn open(store: S) -> Result<Self, LedgerError> {
        let log = Log::open(store)?;
        let mut state = LogState::new();
        let mut failure = None;
        log.store()
            .scan(&mut |index, bytes| {
                if failure.is_some() {
                    return Ok(());
                }
                let checked = Entry::from_bytes(bytes)
                    .map_err(|e| vec![e.to_string()])
                    .and_then(|entry| state.check(&entry, &mut StoreBlobs(log.store()), &Justification::Recorded));
                match checked.and_then(|t| state.apply(t).map_err(|r| vec![r])) {
                    Ok(()) => {}
                    Err(reasons) => failure = Some(LedgerError::Corrupt { index, reasons }),
                }
                Ok(())
            })
            .map_err(|e| LedgerError::Log(e.into()))?;
        if let Some(e) = failure {
            return Err(e);
        }
        Ok(Self { log, state, poisoned: false })
    }

    /// Replays what other writers of a shared store (replicas on one database) appended since
    /// this ledger last looked, through the same rules as [`Ledger::open`]; returns how many.
    /// Call before deciding anything, with the store's writer lock held, so that every decision
    /// sees every entry before it. A failure poisons the ledger.
    pub fn catch_up(&mut self) -> Result<usize, LedgerError> {
        self.guard()?;
        let fresh = match self.log.refresh() {
            Ok(f) => f,
            Err(e) => {
                self.poisoned = true;
                return Err(e.into());
            }
        };
        for (index, bytes) in &fresh {
            let checked = Entry::from_bytes(bytes).map_err(|e| vec![e.to_string()]).and_then(|entry| {
                self.state.check(&entry, &mut StoreBlobs(self.log.store()), &Justification::Recorded)
            });
            if let Err(reasons) = checked.and_then(|t| self.state.apply(t).map_err(|r| vec![r])) {
                self.poisoned = true;
                return Err(LedgerError::Corrupt { index: *index, reasons });
            }
        }
        Ok(fresh.len())
    }

    /// Stops every further decision until the vault restarts (the store's writer lock was lost,
    /// say): nothing is decided on a state that may be behind the log.
    pub fn poison(&mut self) {
        self.poisoned = true;
    }

    fn guard(&self) -> Result<(), LedgerError> {
        if self.poisoned { Err(LedgerError::Poisoned) } else { Ok(()) }
    }

    /// Appends a checked entry and applies it; a failure poisons the ledger.
    fn append_checked(&mut self, entry: &Entry, t: crate::state::Transition) -> Result<u64, LedgerError> {
        // Refused before anything is written: an entry the log could not read back would stop
        // every later opening of it.
        let len = entry.to_bytes().len();
        if len > coffre_log::entry::MAX_ENTRY_LEN {
            return Err(LedgerError::Refused(vec![format!(
                "a {} entry of {len} bytes (at most {})",
                entry.schema(),
                coffre_log::entry::MAX_ENTRY_LEN
            )]));
        }
        let index = match self.log.append(entry) {
            Ok(i) => i,
            Err(e) => {
                self.poisoned = true;
                return Err(e.into());
            }
        };
        if let Err(r) = self.state.apply(t) {
            self.poisoned = true;
            return Err(LedgerError::Corrupt { index, reasons: vec![r] });
        }
        Ok(index)
    }

    /// Checks a release entry on the evidence it was decided on, appends and applies it.
    fn append_appraised(&mut self, entry: &Entry, appraised: &Appraised) -> Result<u64, LedgerError> {
        let t = self
            .state
            .check(entry, &mut StoreBlobs(self.log.store()), &Justification::Appraised(appraised))
            .map_err(LedgerError::Refused)?;
        self.append_checked(entry, t)
    }

    /// Makes everything appended so far durable; a failure poisons the ledger.
    pub fn sync(&mut self) -> Result<(), LedgerError> {
        self.guard()?;
        self.log.sync().map_err(|e| {
            self.poisoned = true;
            LedgerError::from(e)
        })
    }

    /// Makes the pending decisions durable (one sync for all: group commit), then mints their
    /// release tokens. Nothing is released unless this returns `Ok`.
    pub fn commit(&mut self, pending: Vec<Pending>) -> Result<Vec<Decided>, LedgerError> {
        self.sync()?;
        Ok(pending
            .into_iter()
            .map(|p| {
                if p.verdict.allowed() {
                    Decided::Released(token(p.verdict, p.index, &p.tenant, p.worker, p.bundle))
                } else {
                    Decided::Denied(Denied { index: p.index, failed: p.verdict.failed })
                }
            })
            .collect())
    }

    /// What the log implies now.
    pub fn state(&self) -> &LogState {
        &self.state
    }

    /// The log.
    pub fn log(&self) -> &Log<S> {
        &self.log
    }

    /// The log, to sign checkpoints or read proofs.
    pub fn log_mut(&mut self) -> &mut Log<S> {
        &mut self.log
    }

    /// Stores a blob (idempotent).
    pub fn put_blob(&mut self, bytes: &[u8]) -> Result<Digest, LedgerError> {
        self.guard()?;
        self.log.store_mut().put_blob(bytes).map_err(|e| LedgerError::Log(e.into()))
    }

    /// The time the next entry gets: `now`, or the last entry's time when the clock stepped back.
    pub fn next_at(&self, now: u64) -> u64 {
        now.max(self.state.last_at())
    }

    /// Checks, appends, applies and syncs a non-release entry; returns its index and the audit
    /// notices. Releases go through [`Ledger::decide`].
    pub fn record(&mut self, entry: &Entry) -> Result<(u64, Vec<String>), LedgerError> {
        let (index, notices) = self.record_pending(entry)?;
        self.sync()?;
        Ok((index, notices))
    }

    /// [`Ledger::record`] without the sync: durable at the next [`Ledger::sync`] or
    /// [`Ledger::commit`] (for batches).
    pub fn record_pending(&mut self, entry: &Entry) -> Result<(u64, Vec<String>), LedgerError> {
        self.guard()?;
        if matches!(entry, Entry::KeyReleased { .. } | Entry::KbsReleased { .. }) {
            return Err(LedgerError::Refused(vec!["a release is recorded only by deciding on its evidence".into()]));
        }
        let t = self
            .state
            .check(entry, &mut StoreBlobs(self.log.store()), &Justification::Recorded)
            .map_err(LedgerError::Refused)?;
        let notices = t.notices.clone();
        let index = self.append_checked(entry, t)?;
        Ok((index, notices))
    }

    /// Decides a release of `job` for `tenant` on `appraised` evidence at `now`: evaluates it
    /// against the state, stores the evidence bundle, appends the release or the denial, makes it
    /// durable, and only then hands out a [`crate::ReleaseToken`].
    pub fn decide(
        &mut self,
        now: u64,
        tenant: &str,
        job: &str,
        evidence: &RawEvidence,
        appraised: &Appraised,
        worker_keys: &[u8],
    ) -> Result<Decided, LedgerError> {
        let pending = self.decide_pending(now, tenant, job, evidence, appraised, worker_keys)?;
        let mut decided = self.commit(vec![pending])?;
        decided.pop().ok_or(LedgerError::Poisoned)
    }

    /// [`Ledger::decide`] up to the append: the decision is in the log's buffer but not yet durable,
    /// and nothing can be released from it until [`Ledger::commit`].
    pub fn decide_pending(
        &mut self,
        now: u64,
        tenant: &str,
        job: &str,
        evidence: &RawEvidence,
        appraised: &Appraised,
        worker_keys: &[u8],
    ) -> Result<Pending, LedgerError> {
        self.guard()?;
        let at = self.next_at(now);
        let Some(info) = self.state.job(job).filter(|j| j.tenant == tenant) else {
            return Err(LedgerError::NotFound(format!("job {job} not found")));
        };
        let manifest = info.manifest;
        let worker = WorkerKeys::from_bytes(worker_keys).map_err(|e| LedgerError::Refused(vec![e]))?;
        let verdict = self.state.evaluate_release(at, tenant, job, appraised);
        let keys = self.put_blob(worker_keys)?;
        let evidence_bundle = self.store_bundle(tenant, evidence, appraised, &verdict)?;
        let policies = verdict.policies.iter().map(policy_version).collect();
        if verdict.allowed() {
            let entry = Entry::KeyReleased {
                at,
                tenant: tenant.to_owned(),
                job: job.to_owned(),
                datasets: verdict.datasets.clone(),
                policies,
                evidence_bundle,
                job_manifest: manifest,
                ephemeral_key: keys,
                nonce: hex::encode(appraised.nonce),
                key_ids: verdict.key_ids.clone(),
                simulated: verdict.simulated,
            };
            let index = self.append_appraised(&entry, appraised)?;
            Ok(Pending { index, verdict, tenant: tenant.to_owned(), worker, bundle: evidence_bundle })
        } else {
            let entry = Entry::ReleaseDenied {
                at,
                tenant: tenant.to_owned(),
                job: Some(job.to_owned()),
                policies,
                evidence_bundle: Some(evidence_bundle),
                job_manifest: Some(manifest),
                nonce: Some(hex::encode(appraised.nonce)),
                failed: verdict.failed.clone(),
                resource: None,
            };
            let (index, _) = self.record_pending(&entry)?;
            Ok(Pending { index, verdict, tenant: tenant.to_owned(), worker, bundle: evidence_bundle })
        }
    }

    /// Stores the evidence's items and the bundle of the decision on it; the bundle's digest.
    fn store_bundle(
        &mut self,
        tenant: &str,
        evidence: &RawEvidence,
        appraised: &Appraised,
        verdict: &Verdict,
    ) -> Result<Digest, LedgerError> {
        let mut items = Vec::new();
        for (role, gpu, bytes) in evidence.items() {
            items.push((role, gpu, self.put_blob(bytes)?));
        }
        let bundle =
            bundle_for(&self.state, tenant, appraised, &items, verdict).map_err(|e| LedgerError::Refused(vec![e]))?;
        self.put_blob(&bundle.to_bytes())
    }

    /// Decides a KBS client's request for `resource` on evidence appraised under the KBS binding
    /// ([`crate::release::appraise_kbs`]) with `document` (the binding document) and `tee_pubkey`
    /// (the JWK's JCS bytes): evaluates it, stores the bundle, appends the release or the denial,
    /// makes it durable, and only then hands out a [`KbsReleaseToken`].
    pub fn decide_kbs(
        &mut self,
        now: u64,
        tenant: &str,
        resource: &str,
        evidence: &RawEvidence,
        appraised: &Appraised,
        (document, tee_pubkey): (&[u8], &[u8]),
    ) -> Result<KbsDecided, LedgerError> {
        self.guard()?;
        let at = self.next_at(now);
        let verdict = self.state.evaluate_kbs_release(at, tenant, resource, appraised);
        let binding = self.put_blob(document)?;
        let key = self.put_blob(tee_pubkey)?;
        let evidence_bundle = self.store_bundle(tenant, evidence, appraised, &verdict)?;
        let policies: Vec<_> = verdict.policies.iter().map(policy_version).collect();
        let decided = if verdict.allowed() {
            let (Some(dataset), Some(key_id)) = (verdict.datasets.first(), verdict.key_ids.first()) else {
                return Err(LedgerError::Refused(vec!["an allowed KBS release without its key".into()]));
            };
            let labels = policies.iter().map(|p| format!("{}@{}", p.id, p.version)).collect();
            let entry = Entry::KbsReleased {
                at,
                tenant: tenant.to_owned(),
                resource: resource.to_owned(),
                dataset: dataset.clone(),
                key_id: key_id.clone(),
                policies,
                evidence_bundle,
                binding,
                tee_pubkey: key,
                nonce: hex::encode(appraised.nonce),
                simulated: verdict.simulated,
            };
            let index = self.append_appraised(&entry, appraised)?;
            KbsDecided::Released(KbsReleaseToken {
                index,
                key_id: key_id.clone(),
                dataset: dataset.clone(),
                simulated: verdict.simulated,
                policies: labels,
            })
        } else {
            let entry = Entry::ReleaseDenied {
                at,
                tenant: tenant.to_owned(),
                job: None,
                policies,
                evidence_bundle: Some(evidence_bundle),
                job_manifest: Some(binding),
                nonce: Some(hex::encode(appraised.nonce)),
                failed: verdict.failed.clone(),
                resource: Some(resource.to_owned()),
            };
            let (index, _) = self.record_pending(&entry)?;
            KbsDecided::Denied(Denied { index, failed: verdict.failed })
        };
        self.sync()?;
        Ok(decided)
    }

    /// Records a KBS attestation whose evidence did not verify (at `/attest`): a denial with
    /// every failed check, which uses its nonce (`appraised.nonce`, the session's) up. The
    /// evidence and the binding document are kept when the request was well formed.
    pub fn deny_kbs_attestation(
        &mut self,
        now: u64,
        tenant: &str,
        evidence: Option<&RawEvidence>,
        appraised: &Appraised,
        document: Option<&[u8]>,
    ) -> Result<Denied, LedgerError> {
        self.guard()?;
        let at = self.next_at(now);
        let verdict = Verdict {
            job: String::new(),
            datasets: Vec::new(),
            key_ids: Vec::new(),
            policies: Vec::new(),
            simulated: false,
            failed: appraised.failed.clone(),
            allows: Vec::new(),
        };
        if verdict.failed.is_empty() {
            return Err(LedgerError::Refused(vec!["a KBS attestation denial that names no failed check".into()]));
        }
        let evidence_bundle = evidence.map(|e| self.store_bundle(tenant, e, appraised, &verdict)).transpose()?;
        let entry = Entry::ReleaseDenied {
            at,
            tenant: tenant.to_owned(),
            job: None,
            policies: Vec::new(),
            evidence_bundle,
            job_manifest: document.map(|d| self.put_blob(d)).transpose()?,
            nonce: Some(hex::encode(appraised.nonce)),
            failed: verdict.failed.clone(),
            resource: None,
        };
        let (index, _) = self.record(&entry)?;
        Ok(Denied { index, failed: verdict.failed })
    }

    /// [`Ledger::commit`] and [`Ledger::sign_checkpoint`] in one durable write where the store
    /// can (see [`coffre_log::EntryStore::CHECKPOINT_COMMITS_APPENDS`]): the decisions and a
    /// checkpoint covering them. Nothing is released unless this returns `Ok`; a failure poisons.
    pub fn commit_signed(
        &mut self,
        pending: Vec<Pending>,
        signer: &NoteSigner,
    ) -> Result<(Vec<Decided>, String), LedgerError> {
        self.guard()?;
        if !S::CHECKPOINT_COMMITS_APPENDS {
            self.sync()?;
        }
        let note = self.log.sign_checkpoint(signer).map_err(|e| {
            self.poisoned = true;
            LedgerError::from(e)
        })?;
        // Durable now (with the checkpoint, or by the sync above): minting is all that is left.
        let decided = self.commit(pending)?;
        Ok((decided, note))
    }

    /// Signs a checkpoint of the current log, synced first (refused when the stored history was
    /// rewritten).
    pub fn sign_checkpoint(&mut self, signer: &NoteSigner) -> Result<String, LedgerError> {
        self.sync()?;
        Ok(self.log.sign_checkpoint(signer)?)
    }
}
