//! [`Ledger`]: the vault's side of the log. Every entry passes [`LogState::check`] before it is
//! appended and [`LogState::apply`] after, so what the vault writes is what an audit accepts.

use coffre_api::RawEvidence;
use coffre_api::binding::WorkerKeys;
use coffre_log::{BlobStore, Digest, Entry, EntryStore, Log, LogError, NoteSigner};

use crate::release::{Appraised, Decided, Denied, bundle_for, token};
use crate::state::{Blobs, Justification, LogState, policy_version};

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
}

impl<S: EntryStore + BlobStore> Ledger<S> {
    /// Opens the log in `store` and replays it through the state's rules (releases as recorded:
    /// their evidence was appraised when they were written).
    pub fn open(store: S) -> Result<Self, LedgerError> {
        let log = Log::open(store)?;
        let mut state = LogState::new();
        for index in 0..log.size() {
            let entry = log.entry(index)?;
            let t = state
                .check(&entry, &mut StoreBlobs(log.store()), &Justification::Recorded)
                .map_err(|reasons| LedgerError::Corrupt { index, reasons })?;
            state.apply(t).map_err(|r| LedgerError::Corrupt { index, reasons: vec![r] })?;
        }
        Ok(Self { log, state })
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
        self.log.store_mut().put_blob(bytes).map_err(|e| LedgerError::Log(e.into()))
    }

    /// The time the next entry gets: `now`, or the last entry's time when the clock stepped back.
    pub fn next_at(&self, now: u64) -> u64 {
        now.max(self.state.last_at())
    }

    /// Checks, appends and applies a non-release entry; returns its index and the audit notices.
    /// Releases go through [`Ledger::decide`].
    pub fn record(&mut self, entry: &Entry) -> Result<(u64, Vec<String>), LedgerError> {
        if matches!(entry, Entry::KeyReleased { .. }) {
            return Err(LedgerError::Refused(vec!["a release is recorded only by deciding on its evidence".into()]));
        }
        let t = self
            .state
            .check(entry, &mut StoreBlobs(self.log.store()), &Justification::Recorded)
            .map_err(LedgerError::Refused)?;
        let notices = t.notices.clone();
        let index = self.log.append(entry)?;
        self.state.apply(t).map_err(|r| LedgerError::Corrupt { index, reasons: vec![r] })?;
        Ok((index, notices))
    }

    /// Decides a release of `job` for `tenant` on `appraised` evidence at `now`: evaluates it
    /// against the state, stores the evidence bundle, appends the release or the denial (durable
    /// when this returns), and only then hands out a [`crate::ReleaseToken`].
    pub fn decide(
        &mut self,
        now: u64,
        tenant: &str,
        job: &str,
        evidence: &RawEvidence,
        appraised: &Appraised,
        worker_keys: &[u8],
    ) -> Result<Decided, LedgerError> {
        let at = self.next_at(now);
        let Some(info) = self.state.job(job).filter(|j| j.tenant == tenant) else {
            return Err(LedgerError::NotFound(format!("job {job} not found")));
        };
        let manifest = info.manifest;
        let worker = WorkerKeys::from_bytes(worker_keys).map_err(|e| LedgerError::Refused(vec![e]))?;
        let verdict = self.state.evaluate_release(at, tenant, job, appraised);
        let mut items = Vec::new();
        for (role, gpu, bytes) in evidence.items() {
            items.push((role, gpu, self.put_blob(bytes)?));
        }
        let keys = self.put_blob(worker_keys)?;
        let bundle =
            bundle_for(&self.state, tenant, appraised, &items, &verdict).map_err(|e| LedgerError::Refused(vec![e]))?;
        let evidence_bundle = self.put_blob(&bundle.to_bytes())?;
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
            let t = self
                .state
                .check(&entry, &mut StoreBlobs(self.log.store()), &Justification::Appraised(appraised))
                .map_err(LedgerError::Refused)?;
            let index = self.log.append(&entry)?;
            self.state.apply(t).map_err(|r| LedgerError::Corrupt { index, reasons: vec![r] })?;
            Ok(Decided::Released(token(verdict, index, tenant, worker)))
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
            };
            let (index, _) = self.record(&entry)?;
            Ok(Decided::Denied(Denied { index, failed: verdict.failed }))
        }
    }

    /// Signs a checkpoint of the current log (refused when the stored history was rewritten).
    pub fn sign_checkpoint(&mut self, signer: &NoteSigner) -> Result<String, LedgerError> {
        Ok(self.log.sign_checkpoint(signer)?)
    }
}
