//! The single writer of the transparency log.
//!
//! One thread owns the [`Ledger`]: every entry is checked against the log state, appended and
//! applied there, in one order. Release decisions arriving together are appended one by one and
//! made durable by **one** commit (group commit); only then are their release tokens handed back,
//! so no key can leave before its entry is durable. Reads of the state (listings) take a shared
//! lock for a moment; the writer holds it only while it appends.
//!
//! **Replicas.** When other `coffred` processes share the database ([`SqlStore::is_shared`]),
//! each batch that writes first takes the database's writer lock and replays what the others
//! appended ([`Ledger::catch_up`]), so every decision is made on the whole log, appended after
//! it in one sequence, and committed before the lock is let go. [`Sequencer::fresh`] catches up
//! without the lock, so that a request sees everything committed before it arrived, whichever
//! replica committed it; an idle writer also catches up every half second.

use std::sync::Arc;
use std::sync::mpsc;

use coffre_api::RawEvidence;
use coffre_broker::{Appraised, Decided, Ledger, LedgerError, LogState, Pending};
use coffre_log::NoteSigner;
use parking_lot::RwLock;
use tokio::sync::oneshot;

use crate::db::{SqlStore, WriterLock};

/// The ledger, shared for reading.
pub type Shared = Arc<RwLock<Ledger<SqlStore>>>;

/// A release to decide.
#[allow(missing_debug_implementations)] // carries evidence and a reply channel; nothing to print
pub struct ReleaseJob {
    /// Unix seconds now.
    pub now: u64,
    /// Tenant.
    pub tenant: String,
    /// Job.
    pub job: String,
    /// The evidence as received (filled with collateral).
    pub evidence: RawEvidence,
    /// Its appraisal.
    pub appraised: Appraised,
    /// The worker's bound keys.
    pub worker_keys: Vec<u8>,
    /// Where the outcome goes: the decision and a checkpoint covering it.
    pub reply: Reply,
}

type Task = Box<dyn FnOnce(&mut Ledger<SqlStore>, &NoteSigner) + Send>;
type Reply = oneshot::Sender<Result<(Decided, String), LedgerError>>;

enum Command {
    Release(Box<ReleaseJob>),
    Task(Task),
    /// Catch up with the other replicas, then answer.
    Fresh(oneshot::Sender<Result<(), LedgerError>>),
}

/// The handle the request handlers use.
#[derive(Clone)]
pub struct Sequencer {
    tx: mpsc::Sender<Command>,
    shared: Shared,
    replicated: bool,
}

/// How often an idle writer of a shared log looks for the other replicas' entries.
const IDLE_CATCH_UP: std::time::Duration = std::time::Duration::from_millis(500);

/// The most decisions one commit carries.
const MAX_BATCH: usize = 256;

impl Sequencer {
    /// Starts the writer thread over `ledger`.
    /// `lock`: the replicas' writer lock, for a log other replicas write too.
    pub fn start(ledger: Ledger<SqlStore>, signer: NoteSigner, lock: Option<WriterLock>) -> Self {
        let replicated = lock.is_some();
        let shared: Shared = Arc::new(RwLock::new(ledger));
        let (tx, rx) = mpsc::channel::<Command>();
        let writer = shared.clone();
        std::thread::Builder::new()
            .name("coffre-log-writer".into())
            .spawn(move || run(&writer, &signer, &rx, lock))
            .map(drop)
            .unwrap_or_else(|e| tracing::error!(error = %e, "cannot start the log writer"));
        Self { tx, shared, replicated }
    }

    /// Whether other replicas write the same log.
    pub fn replicated(&self) -> bool {
        self.replicated
    }

    /// Takes in whatever the other replicas committed before now (nothing to do for a vault that
    /// is the log's only writer).
    pub async fn fresh(&self) -> Result<(), LedgerError> {
        if !self.replicated {
            return Ok(());
        }
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Fresh(reply)).map_err(|_| LedgerError::Poisoned)?;
        rx.await.map_err(|_| LedgerError::Poisoned)?
    }

    /// Reads the log state.
    pub fn read<R>(&self, f: impl FnOnce(&LogState) -> R) -> R {
        f(self.shared.read().state())
    }

    /// Runs `f` on the writer thread (after which everything it appended is synced).
    pub async fn call<R: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Ledger<SqlStore>, &NoteSigner) -> Result<R, LedgerError> + Send + 'static,
    ) -> Result<R, LedgerError> {
        let (reply, rx) = oneshot::channel();
        let task: Task = Box::new(move |ledger, signer| {
            // Synced even when `f` failed part way: whatever it appended was checked and applied,
            // and must not wait for a later batch (another replica may append in between).
            let result = f(ledger, signer);
            let synced = ledger.sync();
            let result = result.and_then(|r| synced.map(|()| r));
            let _ = reply.send(result);
        });
        self.tx.send(Command::Task(task)).map_err(|_| LedgerError::Poisoned)?;
        rx.await.map_err(|_| LedgerError::Poisoned)?
    }

    /// Decides a release (batched with whatever else is waiting).
    pub async fn release(&self, job: ReleaseJob) -> Result<(Decided, String), LedgerError> {
        let (reply, rx) = oneshot::channel();
        self.tx.send(Command::Release(Box::new(ReleaseJob { reply, ..job }))).map_err(|_| LedgerError::Poisoned)?;
        rx.await.map_err(|_| LedgerError::Poisoned)?
    }
}

impl std::fmt::Debug for Sequencer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Sequencer")
    }
}

fn run(shared: &Shared, signer: &NoteSigner, rx: &mpsc::Receiver<Command>, mut lock: Option<WriterLock>) {
    let replicated = lock.is_some();
    loop {
        let first = if replicated {
            match rx.recv_timeout(IDLE_CATCH_UP) {
                Ok(c) => c,
                Err(mpsc::RecvTimeoutError::Timeout) => {
                    if let Err(e) = shared.write().catch_up() {
                        tracing::error!(error = %e, "cannot take in the other replicas' log entries");
                    }
                    continue;
                }
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        } else {
            match rx.recv() {
                Ok(c) => c,
                Err(_) => break,
            }
        };
        let mut batch = vec![first];
        while batch.len() < MAX_BATCH {
            match rx.try_recv() {
                Ok(c) => batch.push(c),
                Err(_) => break,
            }
        }
        let writes = batch.iter().any(|c| !matches!(c, Command::Fresh(_)));
        // The database's writer lock before the in-process one: while another replica's batch
        // holds it, readers here are not kept waiting.
        let mut locked = false;
        let mut ready = Ok(());
        if writes && let Some(l) = lock.as_mut() {
            match l.lock() {
                Ok(()) => locked = true,
                Err(e) => ready = Err(LedgerError::Log(e.into())),
            }
        }
        let mut ledger = shared.write();
        if replicated {
            // The other replicas' entries first: this batch's decisions follow every committed
            // entry.
            if ready.is_ok() {
                ready = ledger.catch_up().map(drop);
            }
            if let Err(e) = ready {
                tracing::error!(error = %e, "the log is not current: nothing in this batch is decided");
                drop(ledger);
                if locked && let Some(l) = lock.as_mut() {
                    l.unlock();
                }
                // Dropped tasks answer their callers with an error.
                for command in batch {
                    match command {
                        Command::Release(job) => {
                            let _ = job.reply.send(Err(LedgerError::Poisoned));
                        }
                        Command::Fresh(reply) => {
                            let _ = reply.send(Err(LedgerError::Poisoned));
                        }
                        Command::Task(_) => {}
                    }
                }
                continue;
            }
        }
        let mut releases: Vec<(Pending, Reply)> = Vec::new();
        for command in batch {
            match command {
                Command::Fresh(reply) => {
                    let _ = reply.send(Ok(()));
                }
                Command::Task(task) => {
                    // Tasks sync what they wrote, which also makes earlier pending decisions
                    // durable: those are committed with the rest below.
                    task(&mut ledger, signer);
                }
                Command::Release(job) => {
                    let ReleaseJob { now, tenant, job: id, evidence, appraised, worker_keys, reply } = *job;
                    match ledger.decide_pending(now, &tenant, &id, &evidence, &appraised, &worker_keys) {
                        Ok(p) => releases.push((p, reply)),
                        Err(e) => {
                            let _ = reply.send(Err(e));
                        }
                    }
                }
            }
        }
        if releases.is_empty() {
            drop(ledger);
            if locked && let Some(l) = lock.as_mut() {
                l.unlock();
            }
            continue;
        }
        let (pending, replies): (Vec<Pending>, Vec<_>) = releases.into_iter().unzip();
        // One transaction: the batch's entries, their evidence and the checkpoint over them.
        let outcome = ledger.commit_signed(pending, signer);
        drop(ledger);
        if locked && let Some(l) = lock.as_mut() {
            l.unlock();
        }
        match outcome {
            Ok((decided, note)) => {
                for (d, reply) in decided.into_iter().zip(replies) {
                    let _ = reply.send(Ok((d, note.clone())));
                }
            }
            Err(e) => {
                tracing::error!(error = %e, "the log could not be committed: no key released from this batch");
                for reply in replies {
                    let _ = reply.send(Err(LedgerError::Poisoned));
                }
            }
        }
    }
}
