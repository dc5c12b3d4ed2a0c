//! The metadata database: SQLite by default, PostgreSQL by URL, through one SQL dialect and one
//! set of migrations (`sqlx`'s `Any` driver; placeholders `$1…`, types both engines accept).
//!
//! What lives here: the transparency log (entries, leaf hashes, blobs, checkpoints — the
//! [`SqlStore`] the broker's ledger appends to, with group commit), principals (tokens only as
//! hashes), tenant KEKs (private halves wrapped by the root key), the wrapped data keys (each
//! object's sealed header, whose KEK stanza wraps its DEK), single-use challenges, stored objects
//! and artifacts, collateral, and sealed secrets. Everything the log implies (datasets, labels,
//! jobs, policies, approvals) is read from the log's state, never duplicated here.

use std::collections::HashMap;

use coffre_log::merkle::Hash;
use coffre_log::{BlobStore, Digest, EntryStore, StoreError};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::{AnyPool, Row};

/// The schema, in order; each step runs once (table `coffre_schema`).
const MIGRATIONS: &[&str] = &[
    "CREATE TABLE log_entries (idx BIGINT PRIMARY KEY, entry BYTEA NOT NULL, leaf BYTEA NOT NULL)",
    "CREATE TABLE log_blobs (digest TEXT PRIMARY KEY, bytes BYTEA NOT NULL)",
    "CREATE TABLE log_checkpoints (size BIGINT PRIMARY KEY, note TEXT NOT NULL)",
    "CREATE TABLE secrets (name TEXT PRIMARY KEY, sealed BYTEA NOT NULL)",
    "CREATE TABLE keks (tenant TEXT NOT NULL, version BIGINT NOT NULL, public_key TEXT NOT NULL, \
     sealed_private BYTEA NOT NULL, created_at BIGINT NOT NULL, PRIMARY KEY (tenant, version))",
    "CREATE TABLE principals (id TEXT PRIMARY KEY, tenant TEXT, name TEXT NOT NULL, roles TEXT NOT NULL, \
     token_hash TEXT UNIQUE, cert_sha256 TEXT UNIQUE, signing_key TEXT, created_at BIGINT NOT NULL)",
    "CREATE TABLE data_keys (key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, dataset TEXT NOT NULL, \
     kek_version BIGINT NOT NULL, header BYTEA NOT NULL)",
    "CREATE TABLE objects (key_id TEXT PRIMARY KEY, tenant TEXT NOT NULL, dataset TEXT NOT NULL, \
     location TEXT NOT NULL, digest TEXT NOT NULL, size BIGINT NOT NULL, signature BYTEA)",
    "CREATE TABLE challenges (nonce TEXT PRIMARY KEY, tenant TEXT NOT NULL, job TEXT NOT NULL, \
     principal TEXT NOT NULL, expires_at BIGINT NOT NULL)",
    "CREATE TABLE artifacts (tenant TEXT NOT NULL, model TEXT NOT NULL, version BIGINT NOT NULL, \
     job TEXT NOT NULL, release_index BIGINT NOT NULL, location TEXT NOT NULL, digest TEXT NOT NULL, \
     size BIGINT NOT NULL, provenance BYTEA NOT NULL, log_index BIGINT NOT NULL, \
     PRIMARY KEY (tenant, model, version))",
    "CREATE TABLE collateral (kind TEXT NOT NULL, name TEXT NOT NULL, bytes BYTEA NOT NULL, \
     PRIMARY KEY (kind, name))",
    "CREATE INDEX challenges_by_principal ON challenges (principal)",
    "CREATE TABLE models (tenant TEXT NOT NULL, digest TEXT NOT NULL, kind TEXT NOT NULL, size BIGINT NOT NULL, \
     location TEXT NOT NULL, uploaded_at BIGINT NOT NULL, PRIMARY KEY (tenant, digest))",
    // KEK rotation: the version up to which a data key's wrap is in the log (a rewrap is stored
    // first, logged next; a crash between is finished by the next call).
    "ALTER TABLE data_keys ADD COLUMN logged_version BIGINT NOT NULL DEFAULT 0",
    // Keys stored before the column existed are logged at the version that wraps them (else the
    // first rotation of an upgraded vault would only log them, and start nothing).
    "UPDATE data_keys SET logged_version = kek_version",
    "CREATE INDEX data_keys_by_tenant ON data_keys (tenant, kek_version)",
    // Resumable uploads: parts stored under staging/uploads/{id}/, assembled on completion.
    "CREATE TABLE uploads (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, dataset TEXT NOT NULL, \
     principal TEXT NOT NULL, size BIGINT NOT NULL, part_size BIGINT NOT NULL, created_at BIGINT NOT NULL)",
    "CREATE TABLE upload_parts (upload_id TEXT NOT NULL, part BIGINT NOT NULL, size BIGINT NOT NULL, \
     sha256 TEXT NOT NULL, PRIMARY KEY (upload_id, part))",
    // The KBS protocol: sessions (by the SHA-256 of their cookie) and verified attestations,
    // where every replica sees them.
    "CREATE TABLE kbs_sessions (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, tee TEXT NOT NULL, nonce TEXT NOT NULL, \
     expires_at BIGINT NOT NULL, used BIGINT NOT NULL, attestation TEXT, client TEXT NOT NULL)",
    "CREATE INDEX kbs_sessions_by_tenant ON kbs_sessions (tenant, used, expires_at)",
    "CREATE INDEX kbs_sessions_by_client ON kbs_sessions (client, used, expires_at)",
    "CREATE INDEX kbs_sessions_by_expiry ON kbs_sessions (expires_at)",
    "CREATE TABLE kbs_attestations (id TEXT PRIMARY KEY, tenant TEXT NOT NULL, record BYTEA NOT NULL, \
     sig BYTEA NOT NULL, expires_at BIGINT NOT NULL)",
    "CREATE INDEX kbs_attestations_by_expiry ON kbs_attestations (expires_at)",
];

/// Why the database failed.
#[derive(Debug, thiserror::Error)]
#[error("database: {0}")]
pub struct DbError(pub String);

impl From<sqlx::Error> for DbError {
    fn from(e: sqlx::Error) -> Self {
        DbError(e.to_string())
    }
}

/// Connects to `url` (`sqlite://PATH` or `postgres://…`) and brings the schema up to date.
pub async fn connect(url: &str) -> Result<AnyPool, DbError> {
    connect_with(url, if url.starts_with("sqlite:") { 4 } else { 16 }).await
}

async fn connect_with(url: &str, max_connections: u32) -> Result<AnyPool, DbError> {
    sqlx::any::install_default_drivers();
    let sqlite = url.starts_with("sqlite:");
    let pool = AnyPoolOptions::new()
        .max_connections(max_connections)
        .after_connect(move |conn, _| {
            Box::pin(async move {
                if sqlite {
                    // 16 KiB pages for a new database (a 4 KiB GPU report would spill onto an
                    // overflow page of its own at SQLite's default 4 KiB); durable commits (one
                    // fsync each, shared by a whole batch); readers alongside the writer; a writer
                    // that waits instead of failing.
                    for pragma in [
                        "PRAGMA page_size = 16384",
                        "PRAGMA journal_mode = WAL",
                        "PRAGMA synchronous = FULL",
                        "PRAGMA busy_timeout = 10000",
                        // Statement journals (multi-row inserts) in memory, not temporary files.
                        "PRAGMA temp_store = MEMORY",
                    ] {
                        sqlx::query(pragma).execute(&mut *conn).await?;
                    }
                }
                Ok(())
            })
        })
        .connect(&if sqlite && !url.contains("mode=") { format!("{url}?mode=rwc") } else { url.to_owned() })
        .await?;
    migrate(&pool).await?;
    Ok(pool)
}

/// PostgreSQL advisory-lock keys: schema migrations, and the log's single writer at a time.
const MIGRATION_LOCK: i64 = 0x636f_6666_7265_6d67; // "coffremg"
const WRITER_LOCK: i64 = 0x636f_6666_7265_6c67; // "coffrelg"

/// Whether `url` names a PostgreSQL database.
pub fn is_postgres(url: &str) -> bool {
    url.starts_with("postgres://") || url.starts_with("postgresql://")
}

async fn migrate(pool: &AnyPool) -> Result<(), DbError> {
    // Replicas starting together: each step runs once, under a lock the database holds for the
    // step's transaction (SQLite's own write lock does the same for one file).
    let postgres = pool.connect_options().database_url.scheme().starts_with("postgres");
    let locked = async |tx: &mut sqlx::Transaction<'_, sqlx::Any>| -> Result<(), sqlx::Error> {
        if postgres {
            sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(MIGRATION_LOCK).execute(&mut **tx).await?;
        }
        Ok(())
    };
    let mut tx = pool.begin().await?;
    locked(&mut tx).await?;
    sqlx::query("CREATE TABLE IF NOT EXISTS coffre_schema (step BIGINT PRIMARY KEY)").execute(&mut *tx).await?;
    tx.commit().await?;
    for (step, sql) in MIGRATIONS.iter().enumerate() {
        let mut tx = pool.begin().await?;
        locked(&mut tx).await?;
        let done = sqlx::query("SELECT 1 FROM coffre_schema WHERE step = $1")
            .bind(step as i64)
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
        if !done {
            // The migrations are constants of this file, never input.
            sqlx::query(sqlx::AssertSqlSafe(*sql)).execute(&mut *tx).await?;
            sqlx::query("INSERT INTO coffre_schema (step) VALUES ($1)").bind(step as i64).execute(&mut *tx).await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Rows in one multi-row INSERT (far below both engines' bound-parameter limits).
const ROWS_PER_STATEMENT: usize = 128;
/// How many committed blob digests the store remembers before it starts over.
const MAX_REMEMBERED_BLOBS: usize = 200_000;

/// `head ($1, $2), ($3, $4), …`: `rows` tuples of `columns` placeholders (no input in the text).
fn multi_row_insert(head: &str, columns: usize, rows: usize) -> String {
    let mut sql = String::with_capacity(head.len() + rows * columns * 6);
    sql.push_str(head);
    for r in 0..rows {
        sql.push_str(if r == 0 { " (" } else { ", (" });
        for c in 0..columns {
            if c > 0 {
                sql.push_str(", ");
            }
            sql.push('$');
            sql.push_str(&(r * columns + c + 1).to_string());
        }
        sql.push(')');
    }
    sql
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn u64_of(row: &AnyRow, col: &str) -> Result<u64, sqlx::Error> {
    let v: i64 = row.try_get(col)?;
    Ok(u64::try_from(v).unwrap_or(0))
}

/// The transparency log in the database: entries, leaf hashes, blobs and checkpoints, with group
/// commit (appends and blobs are buffered until [`EntryStore::sync`], which writes them in one
/// transaction). Used from the ledger's own thread: each call blocks on the async driver.
///
/// The store has its **own** single-threaded runtime and its own connection, never the
/// server's: the writer holds the ledger's lock while it commits, and request handlers wait for
/// that lock, so a commit that needed the server's runtime could wait on the very threads that
/// wait on it.
pub struct SqlStore {
    pool: AnyPool,
    rt: Option<tokio::runtime::Runtime>,
    len: u64,
    leaves: Vec<Hash>,
    pending: Vec<(u64, Vec<u8>, Hash)>,
    pending_blobs: HashMap<Digest, Vec<u8>>,
    /// Digests of blobs this process has committed (bounded): certificates and collateral
    /// repeat in every release of a fleet, and need not be sent to the database again.
    committed_blobs: std::collections::HashSet<Digest>,
    /// A checkpoint to write with the pending appends (one transaction).
    pending_checkpoint: Option<(u64, String)>,
    /// The latest durable checkpoint (this store is the log's only writer).
    latest: Option<(u64, String)>,
    /// Set by a failed commit: what it held is gone from the buffers, so every later commit
    /// fails too rather than report success for writes it never made.
    failed: bool,
    fault: std::sync::Arc<std::sync::atomic::AtomicBool>,
    /// Set when other replicas write this log too (PostgreSQL): see [`WriterLock`].
    shared: bool,
}

/// The writer lock of a log that several replicas share: a PostgreSQL advisory lock, held by a
/// connection of its own from [`WriterLock::lock`] to [`WriterLock::unlock`]. The log writer
/// takes it before its in-process lock, replays the others' entries, appends, commits, and lets
/// go; at start a replica opens its ledger under it, so that nothing is committed while it
/// reads. Were the lock ever lost mid-batch (its connection dropped), the entries' primary key
/// still refuses a second entry at an index: the later commit fails and that replica stops
/// deciding — no fork, no gap.
pub struct WriterLock {
    url: String,
    conn: Option<sqlx::AnyConnection>,
    rt: Option<tokio::runtime::Runtime>,
}

impl std::fmt::Debug for WriterLock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WriterLock(connected: {})", self.conn.is_some())
    }
}

/// How long a replica waits for another's batch before it gives up on a batch of its own.
const WRITER_LOCK_TIMEOUT: &str = "SET lock_timeout = '30s'";

impl WriterLock {
    /// The lock of the log in the PostgreSQL database at `url` (not taken yet).
    pub fn new(url: &str) -> Result<Self, StoreError> {
        if !is_postgres(url) {
            return Err(StoreError::Corrupt(
                "replicas share a PostgreSQL database; SQLite serves one vault process".into(),
            ));
        }
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(store_err)?;
        Ok(Self { url: url.to_owned(), conn: None, rt: Some(rt) })
    }

    /// Takes the lock (waiting at most 30 s for another replica's batch).
    pub fn lock(&mut self) -> Result<(), StoreError> {
        let held = self.conn.take();
        let url = self.url.clone();
        let Some(rt) = &self.rt else { return Err(StoreError::Corrupt("the writer lock is closed".into())) };
        let result = rt.block_on(async move {
            use sqlx::Connection;
            let mut conn = match held {
                Some(c) => c,
                None => {
                    let mut c = sqlx::AnyConnection::connect(&url).await?;
                    sqlx::query(WRITER_LOCK_TIMEOUT).execute(&mut c).await?;
                    c
                }
            };
            sqlx::query("SELECT pg_advisory_lock($1)").bind(WRITER_LOCK).execute(&mut conn).await?;
            Ok::<_, sqlx::Error>(conn)
        });
        // On failure the connection is dropped: a session in an unknown state holds nothing we
        // can rely on.
        self.conn = Some(result.map_err(store_err)?);
        Ok(())
    }

    /// Lets the lock go.
    pub fn unlock(&mut self) {
        if let (Some(mut conn), Some(rt)) = (self.conn.take(), &self.rt) {
            let unlocked = rt.block_on(async {
                sqlx::query("SELECT pg_advisory_unlock($1)").bind(WRITER_LOCK).execute(&mut conn).await
            });
            // On failure the connection is dropped, and its session's lock with it.
            if unlocked.is_ok() {
                self.conn = Some(conn);
            }
        }
    }
}

impl Drop for WriterLock {
    fn drop(&mut self) {
        self.conn = None;
        // Dropping a runtime inside another one panics; this one may be dropped anywhere.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl std::fmt::Debug for SqlStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SqlStore({} entries, {} pending)", self.len, self.pending.len())
    }
}

fn store_err(e: impl std::fmt::Display) -> StoreError {
    StoreError::Corrupt(format!("database: {e}"))
}

impl Drop for SqlStore {
    fn drop(&mut self) {
        // Dropping a runtime inside another one panics; this one may be dropped anywhere.
        if let Some(rt) = self.rt.take() {
            rt.shutdown_background();
        }
    }
}

impl SqlStore {
    /// Opens the log tables of the database at `url` with a connection of its own (call from a
    /// thread that is not running async code).
    pub fn open(url: &str) -> Result<Self, StoreError> {
        Self::open_with_fault(url, std::sync::Arc::default())
    }

    /// [`SqlStore::open`] with a fault switch: while it is set, every commit fails as a full
    /// disk or a lost database would (fault-injection tests of "no key without its log entry").
    pub fn open_with_fault(
        url: &str,
        fault: std::sync::Arc<std::sync::atomic::AtomicBool>,
    ) -> Result<Self, StoreError> {
        Self::open_inner(url, fault, false)
    }

    /// Opens a log that other `coffred` replicas write too (PostgreSQL only), with the
    /// [`WriterLock`] held (so that nothing is committed while it reads): every batch of appends
    /// is then made under that lock, after taking in what the others wrote.
    pub fn open_shared(url: &str, fault: std::sync::Arc<std::sync::atomic::AtomicBool>) -> Result<Self, StoreError> {
        if !is_postgres(url) {
            return Err(StoreError::Corrupt(
                "replicas share a PostgreSQL database; SQLite serves one vault process".into(),
            ));
        }
        Self::open_inner(url, fault, true)
    }

    fn open_inner(
        url: &str,
        fault: std::sync::Arc<std::sync::atomic::AtomicBool>,
        shared: bool,
    ) -> Result<Self, StoreError> {
        let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(store_err)?;
        let pool = rt.block_on(connect_with(url, 1)).map_err(store_err)?;
        let rows = rt
            .block_on(sqlx::query("SELECT idx, leaf FROM log_entries ORDER BY idx").fetch_all(&pool))
            .map_err(store_err)?;
        let mut leaves = Vec::with_capacity(rows.len());
        for (i, row) in rows.iter().enumerate() {
            let idx = u64_of(row, "idx").map_err(store_err)?;
            if idx != i as u64 {
                return Err(StoreError::Corrupt(format!("entry {i} is missing from the database")));
            }
            let leaf: Vec<u8> = row.try_get("leaf").map_err(store_err)?;
            leaves.push(<Hash>::try_from(leaf).map_err(|_| StoreError::Corrupt(format!("entry {i}: bad leaf")))?);
        }
        let latest = rt
            .block_on(
                sqlx::query("SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1").fetch_optional(&pool),
            )
            .map_err(store_err)?
            .map(|r| Ok::<_, sqlx::Error>((u64_of(&r, "size")?, r.try_get("note")?)))
            .transpose()
            .map_err(store_err)?;
        Ok(Self {
            pool,
            rt: Some(rt),
            len: leaves.len() as u64,
            leaves,
            pending: Vec::new(),
            pending_blobs: HashMap::new(),
            committed_blobs: std::collections::HashSet::new(),
            pending_checkpoint: None,
            latest,
            failed: false,
            fault,
            shared,
        })
    }

    /// Whether other replicas write this log too.
    pub fn is_shared(&self) -> bool {
        self.shared
    }
}

impl SqlStore {
    /// Writes every buffered blob, entry and checkpoint in one transaction.
    fn commit_pending(&mut self) -> Result<(), StoreError> {
        if self.fault.load(std::sync::atomic::Ordering::SeqCst) {
            return Err(StoreError::Corrupt("database: injected commit failure".into()));
        }
        let pending = std::mem::take(&mut self.pending);
        let blobs = std::mem::take(&mut self.pending_blobs);
        let checkpoint = self.pending_checkpoint.take();
        let pool = self.pool.clone();
        // Multi-row statements: one round trip per chunk instead of one per row (a release
        // carries some fifty evidence blobs, and the writer is the log's only thread).
        let blob_rows: Vec<(&Digest, &Vec<u8>)> = blobs.iter().collect();
        self.block_on(async {
            let mut tx = pool.begin().await?;
            for chunk in blob_rows.chunks(ROWS_PER_STATEMENT) {
                let sql = multi_row_insert("INSERT INTO log_blobs (digest, bytes) VALUES", 2, chunk.len())
                    + " ON CONFLICT (digest) DO NOTHING";
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (digest, bytes) in chunk {
                    q = q.bind(digest.to_string()).bind(bytes.as_slice());
                }
                q.execute(&mut *tx).await?;
            }
            for chunk in pending.chunks(ROWS_PER_STATEMENT) {
                let sql = multi_row_insert("INSERT INTO log_entries (idx, entry, leaf) VALUES", 3, chunk.len());
                let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
                for (idx, entry, leaf) in chunk {
                    q = q.bind(i64_of(*idx)).bind(entry.as_slice()).bind(leaf.as_slice());
                }
                q.execute(&mut *tx).await?;
            }
            if let Some((size, note)) = &checkpoint {
                sqlx::query("INSERT INTO log_checkpoints (size, note) VALUES ($1, $2) ON CONFLICT (size) DO NOTHING")
                    .bind(i64_of(*size))
                    .bind(note.as_str())
                    .execute(&mut *tx)
                    .await?;
            }
            tx.commit().await
        })
        .map_err(store_err)?;
        if self.committed_blobs.len() + blobs.len() > MAX_REMEMBERED_BLOBS {
            self.committed_blobs.clear();
        }
        self.committed_blobs.extend(blobs.into_keys());
        if checkpoint.is_some() {
            self.latest = checkpoint;
        }
        Ok(())
    }

    /// Committed entries from `from` on, at most 4,096 (so that a large log is never held in
    /// memory at once).
    fn page(&self, from: u64) -> Result<Vec<AnyRow>, StoreError> {
        self.block_on(
            sqlx::query("SELECT idx, entry, leaf FROM log_entries WHERE idx >= $1 ORDER BY idx LIMIT 4096")
                .bind(i64_of(from))
                .fetch_all(&self.pool),
        )
        .map_err(store_err)
    }

    fn block_on<F: std::future::Future>(&self, f: F) -> F::Output {
        match &self.rt {
            Some(rt) => rt.block_on(f),
            None => unreachable!("the runtime is only taken on drop"),
        }
    }
}

impl EntryStore for SqlStore {
    fn len(&self) -> u64 {
        self.len
    }

    fn append(&mut self, entry: &[u8], leaf: &Hash) -> Result<(), StoreError> {
        self.pending.push((self.len, entry.to_vec(), *leaf));
        self.leaves.push(*leaf);
        self.len += 1;
        Ok(())
    }

    fn sync(&mut self) -> Result<(), StoreError> {
        if self.failed {
            return Err(StoreError::Corrupt("database: an earlier commit failed; restart the vault".into()));
        }
        if self.pending.is_empty() && self.pending_blobs.is_empty() && self.pending_checkpoint.is_none() {
            return Ok(());
        }
        let result = self.commit_pending();
        if result.is_err() {
            self.failed = true;
        }
        result
    }

    fn entry(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        if let Some((_, e, _)) = self.pending.iter().find(|(i, _, _)| *i == index) {
            return Ok(e.clone());
        }
        let row = self
            .block_on(
                sqlx::query("SELECT entry FROM log_entries WHERE idx = $1")
                    .bind(i64_of(index))
                    .fetch_optional(&self.pool),
            )
            .map_err(store_err)?
            .ok_or_else(|| StoreError::NotFound(format!("entry {index}")))?;
        row.try_get("entry").map_err(store_err)
    }

    fn scan(&self, f: &mut coffre_log::store::Visit<'_>) -> Result<(), StoreError> {
        // In pages, so that a large log is never held in memory at once.
        let mut from = 0u64;
        loop {
            let rows = self.page(from)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let idx = u64_of(row, "idx").map_err(store_err)?;
                let entry: Vec<u8> = row.try_get("entry").map_err(store_err)?;
                f(idx, &entry)?;
                from = idx + 1;
            }
        }
        for (idx, entry, _) in &self.pending {
            f(*idx, entry)?;
        }
        Ok(())
    }

    fn leaves(&self) -> Result<Vec<Hash>, StoreError> {
        Ok(self.leaves.clone())
    }

    fn refresh(&mut self) -> Result<Vec<(Vec<u8>, Hash)>, StoreError> {
        if !self.shared {
            return Ok(Vec::new());
        }
        if !self.pending.is_empty() {
            return Err(StoreError::Corrupt("refresh with appends pending".into()));
        }
        let mut out = Vec::new();
        loop {
            let rows = self.page(self.len)?;
            if rows.is_empty() {
                break;
            }
            for row in &rows {
                let idx = u64_of(row, "idx").map_err(store_err)?;
                if idx != self.len {
                    return Err(StoreError::Corrupt(format!("entry {} is missing from the database", self.len)));
                }
                let entry: Vec<u8> = row.try_get("entry").map_err(store_err)?;
                let leaf: Vec<u8> = row.try_get("leaf").map_err(store_err)?;
                let leaf = <Hash>::try_from(leaf).map_err(|_| StoreError::Corrupt(format!("entry {idx}: bad leaf")))?;
                self.leaves.push(leaf);
                self.len += 1;
                out.push((entry, leaf));
            }
        }
        if !out.is_empty() {
            self.latest = self
                .block_on(
                    sqlx::query("SELECT size, note FROM log_checkpoints ORDER BY size DESC LIMIT 1")
                        .fetch_optional(&self.pool),
                )
                .map_err(store_err)?
                .map(|r| Ok::<_, sqlx::Error>((u64_of(&r, "size")?, r.try_get("note")?)))
                .transpose()
                .map_err(store_err)?;
        }
        Ok(out)
    }

    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), StoreError> {
        // With everything appended before it, in one transaction.
        self.pending_checkpoint = Some((size, note.to_owned()));
        self.sync()
    }

    const CHECKPOINT_COMMITS_APPENDS: bool = true;

    fn checkpoint(&self, size: u64) -> Result<Option<String>, StoreError> {
        if let Some((latest, note)) = &self.latest {
            if *latest == size {
                return Ok(Some(note.clone()));
            }
            if *latest < size {
                return Ok(None);
            }
        }
        let row = self
            .block_on(
                sqlx::query("SELECT note FROM log_checkpoints WHERE size = $1")
                    .bind(i64_of(size))
                    .fetch_optional(&self.pool),
            )
            .map_err(store_err)?;
        row.map(|r| r.try_get("note")).transpose().map_err(store_err)
    }

    fn latest_checkpoint(&self) -> Result<Option<String>, StoreError> {
        Ok(self.latest.as_ref().map(|(_, note)| note.clone()))
    }

    fn checkpoint_sizes(&self) -> Result<Vec<u64>, StoreError> {
        let rows = self
            .block_on(sqlx::query("SELECT size FROM log_checkpoints ORDER BY size").fetch_all(&self.pool))
            .map_err(store_err)?;
        rows.iter().map(|r| u64_of(r, "size").map_err(store_err)).collect()
    }
}

impl BlobStore for SqlStore {
    fn put_blob(&mut self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        if !self.committed_blobs.contains(&d) {
            self.pending_blobs.entry(d).or_insert_with(|| bytes.to_vec());
        }
        Ok(d)
    }

    fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        if let Some(b) = self.pending_blobs.get(digest) {
            return Ok(Some(b.clone()));
        }
        let row = self
            .block_on(
                sqlx::query("SELECT bytes FROM log_blobs WHERE digest = $1")
                    .bind(digest.to_string())
                    .fetch_optional(&self.pool),
            )
            .map_err(store_err)?;
        row.map(|r| r.try_get("bytes")).transpose().map_err(store_err)
    }
}

/// Committed log reads for the export endpoints (never the ledger's pending buffer).
pub mod log {
    use super::*;

    /// Entries `[start, end)` with their leaf hashes.
    pub async fn entries(pool: &AnyPool, start: u64, end: u64) -> Result<Vec<(u64, Vec<u8>, Vec<u8>)>, DbError> {
        let rows = sqlx::query("SELECT idx, entry, leaf FROM log_entries WHERE idx >= $1 AND idx < $2 ORDER BY idx")
            .bind(i64_of(start))
            .bind(i64_of(end))
            .fetch_all(pool)
            .await?;
        rows.iter()
            .map(|r| Ok((u64_of(r, "idx")?, r.try_get("entry")?, r.try_get("leaf")?)))
            .collect::<Result<_, sqlx::Error>>()
            .map_err(Into::into)
    }

    /// A committed blob.
    pub async fn blob(pool: &AnyPool, digest: &Digest) -> Result<Option<Vec<u8>>, DbError> {
        let row = sqlx::query("SELECT bytes FROM log_blobs WHERE digest = $1")
            .bind(digest.to_string())
            .fetch_optional(pool)
            .await?;
        Ok(row.map(|r| r.try_get("bytes")).transpose()?)
    }

    /// Every checkpoint size, ascending.
    pub async fn checkpoint_sizes(pool: &AnyPool) -> Result<Vec<u64>, DbError> {
        let rows = sqlx::query("SELECT size FROM log_checkpoints ORDER BY size").fetch_all(pool).await?;
        rows.iter().map(|r| u64_of(r, "size").map_err(Into::into)).collect()
    }

    /// The checkpoint of `size`.
    pub async fn checkpoint(pool: &AnyPool, size: u64) -> Result<Option<String>, DbError> {
        let row = sqlx::query("SELECT note FROM log_checkpoints WHERE size = $1")
            .bind(i64_of(size))
            .fetch_optional(pool)
            .await?;
        Ok(row.map(|r| r.try_get("note")).transpose()?)
    }

    /// Number of committed entries.
    pub async fn size(pool: &AnyPool) -> Result<u64, DbError> {
        let n: i64 = sqlx::query("SELECT COUNT(*) FROM log_entries").fetch_one(pool).await?.try_get(0)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

pub use sqlx::AnyPool as Pool;

/// Creates the PostgreSQL database `url` names when it does not exist (`coffred init
/// --create-database`), through the server's `postgres` database.
pub async fn ensure_postgres_database(url: &str) -> Result<(), DbError> {
    use sqlx::Connection;
    if !is_postgres(url) {
        return Err(DbError("--create-database needs a postgres:// database URL".into()));
    }
    let (base, rest) = url.rsplit_once('/').ok_or_else(|| DbError(format!("{url}: no database name")))?;
    let (name, query) = rest.split_once('?').map_or((rest, ""), |(n, q)| (n, q));
    let admin = if query.is_empty() { format!("{base}/postgres") } else { format!("{base}/postgres?{query}") };
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(&admin).await?;
    let exists = sqlx::query("SELECT 1 FROM pg_database WHERE datname = $1")
        .bind(name)
        .fetch_optional(&mut conn)
        .await?
        .is_some();
    if !exists {
        create_postgres_database(&admin, name).await?;
    }
    Ok(())
}

/// Creates the empty database `name` on the PostgreSQL server at `admin_url` (a connection to any
/// database there, with the right to create one) and returns its URL. `name` is lower-case
/// letters, digits and `_` (it is not a bound parameter: PostgreSQL does not take one there).
pub async fn create_postgres_database(admin_url: &str, name: &str) -> Result<String, DbError> {
    use sqlx::Connection;
    if name.is_empty() || !name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_') {
        return Err(DbError(format!("{name:?} is not a database name of lower-case letters, digits and _")));
    }
    sqlx::any::install_default_drivers();
    let mut conn = sqlx::AnyConnection::connect(admin_url).await?;
    // Checked above: the name cannot carry SQL.
    sqlx::query(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}"))).execute(&mut conn).await?;
    let base = admin_url.split('?').next().unwrap_or(admin_url);
    let base = base.rsplit_once('/').map_or(base, |(b, _)| b);
    Ok(format!("{base}/{name}"))
}

/// Small helpers the handlers use.
pub mod q {
    use super::*;

    /// Converts for binding.
    pub fn n(v: u64) -> i64 {
        i64_of(v)
    }

    /// Reads an unsigned column.
    pub fn u(row: &AnyRow, col: &str) -> Result<u64, DbError> {
        u64_of(row, col).map_err(Into::into)
    }

    /// Reads a column.
    pub fn get<'r, T>(row: &'r AnyRow, col: &str) -> Result<T, DbError>
    where
        T: sqlx::Decode<'r, sqlx::Any> + sqlx::Type<sqlx::Any>,
    {
        row.try_get(col).map_err(Into::into)
    }
}
