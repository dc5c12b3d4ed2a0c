//! Starting the vault: the data directory (`init`), opening everything (`open`), and serving TLS
//! with graceful shutdown (`serve`).

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use coffre_api::pin::Fingerprint;
use coffre_attestation::composite::CompositeVerifier;
use coffre_broker::Ledger;
use coffre_log::{Entry, NoteSigner};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::graceful::GracefulShutdown;
use sqlx::Row;
use tokio::net::TcpListener;
use tower::ServiceExt;

use crate::app::{
    App, AppState, Bucket, Metrics, PeerAddr, PeerCert, RateLimits, load_principals, new_token, now, token_hash,
};
use crate::config::Config;
use crate::db::{self, SqlStore, WriterLock};
use crate::keys::{FileRootKey, LOG_SIGNER_AAD, RootKey};
use crate::pkcs11::Pkcs11RootKey;
use crate::sequencer::Sequencer;

/// What `coffred init` prints once.
#[derive(Debug)]
pub struct Initialized {
    /// The TLS certificate's fingerprint (clients pin it).
    pub fingerprint: Fingerprint,
    /// The vault administrator's token (shown once).
    pub admin_token: String,
    /// The log's verifier key (auditors pin it).
    pub log_key: String,
    /// Where the configuration is.
    pub config_file: PathBuf,
}

/// What `coffred init` may set beyond the defaults. (`Debug` shows the database URL without
/// its password.)
#[derive(Clone, Default)]
pub struct InitOptions {
    /// Extra DNS names or addresses for the self-signed certificate.
    pub names: Vec<String>,
    /// The address to listen on.
    pub listen: Option<String>,
    /// The database (`postgres://…`); the data directory's SQLite file when `None`.
    pub database_url: Option<String>,
    /// Other replicas will serve from the same database (PostgreSQL only).
    pub replicated: bool,
    /// Create the PostgreSQL database named in `database_url` when it does not exist.
    pub create_database: bool,
    /// Generate the root key in this PKCS#11 token instead of a file.
    pub pkcs11: Option<crate::pkcs11::Pkcs11Config>,
    /// Store objects in this S3 bucket instead of the data directory.
    pub s3: Option<crate::objects::S3Config>,
}

/// Creates a data directory: configuration, root key, TLS certificate, database with the log's
/// signing key and the vault administrator.
pub async fn init(data_dir: &Path, passphrase: Option<&[u8]>, options: &InitOptions) -> anyhow::Result<Initialized> {
    let names = &options.names;
    if data_dir.join(crate::config::FILE).exists() {
        anyhow::bail!(
            "{} already holds a vault (coffred.toml exists); nothing was changed\n  hint: serve it with `coffred serve --data-dir {}`",
            data_dir.display(),
            data_dir.display()
        );
    }
    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(data_dir)?;
    }
    let mut config = Config::defaults(data_dir);
    if let Some(l) = &options.listen {
        config.listen = l.clone();
    }
    let pool = empty_database(&mut config, options).await?;
    // The bucket must answer before anything is created.
    config.s3 = options.s3.clone();
    let objects = crate::objects::open(&config)?;
    crate::objects::check(objects.as_ref(), &config).await?;
    let root: Box<dyn RootKey> = match &options.pkcs11 {
        Some(p) => {
            if passphrase.is_some() {
                anyhow::bail!("a passphrase protects a root key file; the HSM's root key is protected by its PIN");
            }
            config.pkcs11 = Some(p.clone());
            Box::new(Pkcs11RootKey::create(p)?)
        }
        None => Box::new(FileRootKey::create(&config.root_key_file, passphrase)?),
    };
    let mut all_names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    all_names.extend(names.iter().cloned());
    all_names.dedup();
    let fingerprint = crate::tls::create_self_signed(&config.tls_cert, &config.tls_key, &all_names)?;
    let signer = NoteSigner::generate(&config.log_origin).map_err(|e| anyhow::anyhow!("{e}"))?;
    let sealed = root.seal(LOG_SIGNER_AAD, signer.to_text().as_bytes()).map_err(anyhow::Error::msg)?;
    sqlx::query("INSERT INTO secrets (name, sealed) VALUES ('log-signer', $1)").bind(sealed).execute(&pool).await?;
    let token = new_token().map_err(|_| anyhow::anyhow!("random number generator failed"))?;
    sqlx::query(
        "INSERT INTO principals (id, tenant, name, roles, token_hash, cert_sha256, signing_key, created_at) \
         VALUES ('p-vault-admin', NULL, 'vault-admin', 'admin', $1, NULL, NULL, $2)",
    )
    .bind(token_hash(&token))
    .bind(db::q::n(now()))
    .execute(&pool)
    .await?;
    config.write_new(data_dir)?;
    Ok(Initialized {
        fingerprint,
        admin_token: token,
        log_key: signer.verifier().to_text(),
        config_file: data_dir.join(crate::config::FILE),
    })
}

impl std::fmt::Debug for InitOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("InitOptions")
            .field("names", &self.names)
            .field("listen", &self.listen)
            .field("database_url", &self.database_url.as_deref().map(redact_url))
            .field("replicated", &self.replicated)
            .field("create_database", &self.create_database)
            .field("pkcs11", &self.pkcs11)
            .field("s3", &self.s3)
            .finish()
    }
}

/// Applies the database options of `init` (or `migrate`) to `config` and connects to that
/// database, which must not hold a vault yet.
pub(crate) async fn empty_database(config: &mut Config, options: &InitOptions) -> anyhow::Result<db::Pool> {
    if let Some(url) = &options.database_url {
        config.database_url = url.clone();
    }
    if options.replicated {
        if !db::is_postgres(&config.database_url) {
            anyhow::bail!("--replicated needs a PostgreSQL --database-url (SQLite serves one vault process)");
        }
        config.replicated = true;
        config.challenges = crate::challenges::ChallengeStore::Database;
    }
    if options.create_database {
        db::ensure_postgres_database(&config.database_url).await?;
    }
    let pool = db::connect(&config.database_url).await?;
    let taken = sqlx::query("SELECT 1 FROM secrets WHERE name = 'log-signer'").fetch_optional(&pool).await?.is_some();
    if taken {
        anyhow::bail!(
            "the database at {} already holds a vault; nothing was changed\n  hint: a replica serves with a copy of the \
             first vault's data directory (coffred.toml, the root key, tls/), and a migration needs an empty database",
            redact_url(&config.database_url)
        );
    }
    Ok(pool)
}

/// A database URL without its password, for messages.
pub fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme), Some(at)) if at > scheme => {
            let userinfo = &url[scheme + 3..at];
            let user = userinfo.split(':').next().unwrap_or("");
            format!("{}{user}:…{}", &url[..scheme + 3], &url[at..])
        }
        _ => url.to_owned(),
    }
}

/// How to serve.
#[derive(Debug, Clone, Default)]
pub struct ServeOptions {
    /// The data directory.
    pub data_dir: PathBuf,
    /// Development mode: trust the simulated roots in this file (DER certificates: ARK, ASK, GPU
    /// root, and optionally a RIM root).
    pub dev_roots: Option<PathBuf>,
    /// The root key's passphrase, when it has one.
    pub passphrase: Option<Vec<u8>>,
    /// Override the listen address (tests use `127.0.0.1:0`).
    pub listen: Option<String>,
    /// Fault injection for tests: while set, every log commit fails.
    pub log_fault: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

fn simulated_verifier(path: &Path) -> anyhow::Result<CompositeVerifier> {
    use coffre_attestation::x509::{Certificate, certificates_from_pem_or_der};
    let bytes = std::fs::read(path).map_err(|e| anyhow::anyhow!("--dev-roots {}: {e}", path.display()))?;
    let certs: Vec<Certificate> = certificates_from_pem_or_der(&bytes)
        .and_then(|d| d.iter().map(|c| Certificate::from_der(c)).collect())
        .map_err(|e| anyhow::anyhow!("--dev-roots {}: {e}", path.display()))?;
    let amd: Vec<&Certificate> = certs.iter().filter(|c| !c.subject_cn.contains("NVIDIA")).collect();
    let [ark, ask] = amd.as_slice() else {
        anyhow::bail!(
            "--dev-roots {} must hold the simulated ARK and ASK (and the simulated GPU root)",
            path.display()
        );
    };
    let gpu = certs
        .iter()
        .find(|c| c.subject_cn.contains("NVIDIA") && c.subject_cn.contains("Device"))
        .ok_or_else(|| anyhow::anyhow!("--dev-roots {}: no simulated GPU root", path.display()))?;
    let mut v = CompositeVerifier::new()
        .dangerous_accept_simulated_roots(&ark.der, &ask.der, &gpu.der)
        .map_err(anyhow::Error::msg)?;
    if let Some(rim) = certs.iter().find(|c| c.subject_cn.contains("NVIDIA RIM")) {
        v = v.dangerous_accept_simulated_rim_root(&rim.der).map_err(anyhow::Error::msg)?;
    }
    Ok(v)
}

/// A running vault.
#[derive(Debug)]
pub struct Running {
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its certificate's fingerprint.
    pub fingerprint: Fingerprint,
    /// The log key.
    pub log_key: String,
    /// Stops it gracefully (in-flight requests finish).
    pub shutdown: tokio::sync::watch::Sender<bool>,
    /// Ends when it has stopped.
    pub done: tokio::task::JoinHandle<()>,
}

/// Takes the data directory's lock (`coffred.lock`): held by a serving vault (and by a
/// migration) for as long as the returned file is open.
pub(crate) fn lock_data_dir(dir: &Path) -> anyhow::Result<std::fs::File> {
    let lock_path = dir.join("coffred.lock");
    let lock = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| anyhow::anyhow!("cannot open {}: {e}", lock_path.display()))?;
    lock.try_lock().map_err(|_| anyhow::anyhow!("{} is held", lock_path.display()))?;
    Ok(lock)
}

/// Opens the vault and starts serving; returns once it listens.
pub async fn start(options: ServeOptions) -> anyhow::Result<Running> {
    let mut config = Config::load(&options.data_dir)?;
    // One vault per data directory: the log has a single writer (held until the server stops).
    let lock = lock_data_dir(&options.data_dir).map_err(|e| {
        e.context(format!("another coffred is serving {}; one vault writes one log", options.data_dir.display()))
    })?;
    if let Some(l) = &options.listen {
        config.listen = l.clone();
    }
    let root: Box<dyn RootKey> = match &config.pkcs11 {
        Some(p) => Box::new(Pkcs11RootKey::open(p)?),
        None => Box::new(FileRootKey::load(&config.root_key_file, options.passphrase.as_deref())?),
    };
    tracing::info!(root = %root.describe(), "root key opened");
    let pool = db::connect(&config.database_url).await?;
    let sealed: Vec<u8> = sqlx::query("SELECT sealed FROM secrets WHERE name = 'log-signer'")
        .fetch_one(&pool)
        .await
        .map_err(|e| anyhow::anyhow!("the log signing key is missing from the database: {e}"))?
        .try_get("sealed")?;
    let signer_text = root.open(LOG_SIGNER_AAD, &sealed).map_err(anyhow::Error::msg)?;
    let signer = NoteSigner::from_text(std::str::from_utf8(&signer_text)?).map_err(|e| anyhow::anyhow!("{e}"))?;
    let log_key = signer.verifier().to_text();
    let development = options.dev_roots.is_some();
    let verifier = match &options.dev_roots {
        Some(p) => simulated_verifier(p)?,
        None => CompositeVerifier::new(),
    };
    // The KBS sample TEE: a development vault of a build with the feature, and no other.
    let verifier = if development && cfg!(feature = "kbs-sample") {
        tracing::warn!("development mode: the KBS sample TEE is accepted for tenants marked for testing");
        verifier.dangerous_accept_sample()
    } else {
        verifier
    };
    // The ledger opens on its own thread (its store blocks on the database).
    let url = config.database_url.clone();
    let fault = options.log_fault.clone();
    let replicated = config.replicated;
    type Opened = (Ledger<SqlStore>, NoteSigner, Option<WriterLock>);
    let (ledger, signer, writer_lock) = tokio::task::spawn_blocking(move || -> anyhow::Result<Opened> {
        // Replicas: the ledger is read under the writer lock, so that no other replica commits
        // between the tree, the checkpoint and the state it replays.
        let mut writer_lock =
            if replicated { Some(WriterLock::new(&url).map_err(|e| anyhow::anyhow!("{e}"))?) } else { None };
        if let Some(l) = writer_lock.as_mut() {
            l.lock().map_err(|e| anyhow::anyhow!("the replicas' log writer lock: {e}"))?;
        }
        let store =
            if replicated { SqlStore::open_shared(&url, fault) } else { SqlStore::open_with_fault(&url, fault) }
                .map_err(|e| anyhow::anyhow!("{e}"))?;
        let ledger = Ledger::open(store).map_err(|e| anyhow::anyhow!("the log does not open: {e}"))?;
        // A store rewritten since the last signature is refused here, before anything is served.
        ledger.log().check_signed_history(signer.verifier()).map_err(|e| anyhow::anyhow!("{e}"))?;
        if let Some(l) = writer_lock.as_mut() {
            l.unlock();
        }
        Ok((ledger, signer, writer_lock))
    })
    .await??;
    let was_development = ledger.state().development();
    let log = Sequencer::start(ledger, signer, writer_lock);
    if development != was_development {
        let (old, new) = if development { ("off", "on") } else { ("on", "off") };
        log.call(move |ledger, _| {
            let at = ledger.next_at(now());
            ledger.record_pending(&Entry::ConfigChanged {
                at,
                setting: "development_mode".into(),
                old: old.into(),
                new: new.into(),
            })?;
            Ok(())
        })
        .await
        .map_err(|e| anyhow::anyhow!("{e}"))?;
    }
    let objects = crate::objects::open(&config)?;
    crate::objects::check(objects.as_ref(), &config).await?;
    let (tls, fingerprint) = crate::tls::server_config(&config.tls_cert, &config.tls_key)?;
    let principals = load_principals(&pool).await.map_err(|e| anyhow::anyhow!("{e:?}"))?;
    if replicated {
        // Other replicas may be mid-upload: only what no live request can still own is removed.
        cleanup_stale_staging(objects.as_ref()).await;
    } else {
        cleanup_orphans(&pool, &log, objects.as_ref()).await?;
    }
    let kbs = crate::kbs::Kbs::open(&pool, root.as_ref()).await?;
    let app: AppState = Arc::new(App {
        deks: crate::app::DekCache::new(Duration::from_secs(config.limits.hold_data_keys_secs)),
        challenges: crate::challenges::Challenges::new(config.challenges, &pool),
        limits: RateLimits {
            principal: Bucket::new(config.limits.per_principal_rps),
            address: Bucket::new(config.limits.per_address_rps),
            kbs_auth: Bucket::new(config.limits.kbs_auth_rps),
            kbs_address: Bucket::new(config.limits.kbs_auth_rps),
        },
        kbs,
        config,
        development,
        collateral: crate::collateral::Collateral::new(pool.clone()),
        pool,
        log,
        log_key: log_key.clone(),
        root,
        objects,
        verifier,
        fingerprint,
        principals: parking_lot::Mutex::new(principals),
        metrics: Metrics::default(),
        manifests: parking_lot::Mutex::new(Default::default()),
        sealed_keks: crate::app::Immutable::new(4_096),
        data_keys: crate::app::Immutable::new(65_536),
    });
    let listener = TcpListener::bind(&app.config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", app.config.listen))?;
    let addr = listener.local_addr()?;
    let (shutdown, mut stop) = tokio::sync::watch::channel(false);
    let router = crate::routes::router(app.clone());
    let acceptor = tokio_rustls::TlsAcceptor::from(tls);
    // Data keys held between releases are dropped once expired, whether or not asked for again.
    let held = Arc::downgrade(&app);
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            match held.upgrade() {
                Some(app) => app.deks.sweep(),
                None => break,
            }
        }
    });
    // Shredded keys whose destruction a crash cut short are destroyed now, before serving.
    crate::routes::keys::destroy_shredded(&app).await.map_err(|e| anyhow::anyhow!("finishing shreddings: {e:?}"))?;
    match crate::routes::uploads::remove_abandoned(&app).await {
        Ok(0) => {}
        Ok(n) => tracing::warn!(uploads = n, "removed resumable uploads untouched for a week"),
        Err(e) => tracing::error!(error = ?e, "cannot remove abandoned uploads"),
    }
    // Shreddings whose waiting period ended are carried out within seconds (and at start).
    let held = Arc::downgrade(&app);
    tokio::spawn(async move {
        loop {
            match held.upgrade() {
                Some(app) => {
                    if let Err(e) = crate::routes::keys::shred_due(&app).await {
                        tracing::error!(error = ?e, "a due shredding failed; retrying");
                    }
                }
                None => break,
            }
            tokio::time::sleep(Duration::from_secs(2)).await;
        }
    });
    let done = tokio::spawn(async move {
        let _lock = lock;
        let graceful = GracefulShutdown::new();
        loop {
            tokio::select! {
                accepted = listener.accept() => {
                    let Ok((tcp, peer)) = accepted else { continue };
                    let acceptor = acceptor.clone();
                    let router = router.clone();
                    let watcher = graceful.watcher();
                    tokio::spawn(async move {
                        let Ok(Ok(tls)) = tokio::time::timeout(Duration::from_secs(10), acceptor.accept(tcp)).await else {
                            return;
                        };
                        let cert = tls
                            .get_ref()
                            .1
                            .peer_certificates()
                            .and_then(|c| c.first())
                            .map(|c| hex::encode(Fingerprint::of(c.as_ref()).0));
                        let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                            let mut req = req.map(axum::body::Body::new);
                            req.extensions_mut().insert(PeerCert(cert.clone()));
                            req.extensions_mut().insert(PeerAddr(peer.ip()));
                            router.clone().oneshot(req)
                        });
                        let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
                        let conn = builder.serve_connection(TokioIo::new(tls), service);
                        let _ = watcher.watch(conn.into_owned()).await;
                    });
                }
                _ = stop.changed() => break,
            }
        }
        // In-flight requests finish; a release is either committed or not started.
        let _ = tokio::time::timeout(Duration::from_secs(30), graceful.shutdown()).await;
    });
    Ok(Running { addr, fingerprint, log_key, shutdown, done })
}

/// How old a staging upload must be before a replica removes it at start: far beyond any request
/// (uploads stream within the request; a resumed one restarts its part).
const STALE_STAGING_SECS: u64 = 24 * 3600;

/// Replicas: removes staging uploads older than a day (a crashed replica's), nothing newer.
async fn cleanup_stale_staging(objects: &dyn object_store::ObjectStore) {
    use futures_util::StreamExt;
    use object_store::ObjectStoreExt;
    let cutoff = i64::try_from(now().saturating_sub(STALE_STAGING_SECS)).unwrap_or(0);
    let mut staged = objects.list(Some(&object_store::path::Path::from("staging")));
    while let Some(meta) = staged.next().await {
        if let Ok(meta) = meta
            && meta.last_modified.timestamp() < cutoff
            && !meta.location.as_ref().starts_with("staging/uploads/")
        {
            let _ = objects.delete(&meta.location).await;
        }
    }
}

/// Removes what a crash can leave, so that nothing half-done is visible or stands in the way
/// of a retry: staging uploads; data keys, object rows and files whose registration never
/// reached the log; artifact files never registered. A registration that reached the log
/// but not its artifact row (killed in between) gets its row back from the log.
async fn cleanup_orphans(
    pool: &db::Pool,
    log: &Sequencer,
    objects: &dyn object_store::ObjectStore,
) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    use object_store::ObjectStoreExt;
    // One-shot uploads' staging files; a resumable upload's parts stay for the client to resume
    // (those of uploads the database does not know are removed).
    let uploads: std::collections::HashSet<String> = sqlx::query("SELECT id FROM uploads")
        .fetch_all(pool)
        .await?
        .iter()
        .filter_map(|r| r.try_get::<String, _>("id").ok())
        .collect();
    let mut staged = objects.list(Some(&object_store::path::Path::from("staging")));
    while let Some(meta) = staged.next().await {
        if let Ok(meta) = meta {
            let known_upload = meta
                .location
                .as_ref()
                .strip_prefix("staging/uploads/")
                .and_then(|rest| rest.split('/').next())
                .is_some_and(|id| uploads.contains(id));
            if !known_upload {
                let _ = objects.delete(&meta.location).await;
            }
        }
    }
    let rows = sqlx::query("SELECT key_id, location FROM objects").fetch_all(pool).await?;
    for row in rows {
        let key_id: String = row.try_get("key_id")?;
        if log.read(|s| s.key(&key_id).is_none()) {
            let location: String = row.try_get("location")?;
            let _ = objects.delete(&object_store::path::Path::from(location)).await;
            sqlx::query("DELETE FROM objects WHERE key_id = $1").bind(&key_id).execute(pool).await?;
            sqlx::query("DELETE FROM data_keys WHERE key_id = $1").bind(&key_id).execute(pool).await?;
            tracing::warn!(key_id, "removed an object whose registration never reached the log");
        }
    }
    // A data key stored before its object row (killed in between).
    let rows = sqlx::query("SELECT key_id FROM data_keys").fetch_all(pool).await?;
    for row in rows {
        let key_id: String = row.try_get("key_id")?;
        if log.read(|s| s.key(&key_id).is_none()) {
            sqlx::query("DELETE FROM data_keys WHERE key_id = $1").bind(&key_id).execute(pool).await?;
            tracing::warn!(key_id, "removed a data key whose object never reached the log");
        }
    }
    // Artifacts logged without their row: the row again, from the log entry.
    let logged = sqlx::query("SELECT idx, entry FROM log_entries WHERE entry LIKE $1")
        .bind("%coffre.artifact_registered/v1%".as_bytes().to_vec())
        .fetch_all(pool)
        .await?;
    for row in logged {
        let idx = db::q::u(&row, "idx")?;
        let bytes: Vec<u8> = row.try_get("entry")?;
        let Ok(coffre_log::Entry::ArtifactRegistered {
            tenant,
            job,
            model,
            version,
            artifact,
            provenance,
            release,
            ..
        }) = coffre_log::Entry::from_bytes(&bytes)
        else {
            continue;
        };
        let present = sqlx::query("SELECT 1 FROM artifacts WHERE tenant = $1 AND model = $2 AND version = $3")
            .bind(&tenant)
            .bind(&model)
            .bind(db::q::n(version))
            .fetch_optional(pool)
            .await?
            .is_some();
        if present {
            continue;
        }
        let location = object_store::path::Path::from(format!("artifacts/{tenant}/{model}/{version}.coffre"));
        let envelope = db::log::blob(pool, &provenance).await.map_err(|e| anyhow::anyhow!("{e}"))?;
        match (objects.head(&location).await, envelope) {
            (Ok(meta), Some(envelope)) => {
                sqlx::query(
                    "INSERT INTO artifacts (tenant, model, version, job, release_index, location, digest, size, provenance, log_index) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
                )
                .bind(&tenant)
                .bind(&model)
                .bind(db::q::n(version))
                .bind(&job)
                .bind(db::q::n(release))
                .bind(location.to_string())
                .bind(artifact.to_string())
                .bind(db::q::n(meta.size))
                .bind(envelope)
                .bind(db::q::n(idx))
                .execute(pool)
                .await?;
                tracing::warn!(model, version, "restored the row of an artifact registered just before a crash");
            }
            _ => anyhow::bail!(
                "log entry {idx} registers {model} v{version}, whose stored file or provenance is missing"
            ),
        }
    }
    // Files nothing refers to (killed between storing and recording them).
    for prefix in ["datasets", "artifacts"] {
        let mut listed = objects.list(Some(&object_store::path::Path::from(prefix)));
        let mut files = Vec::new();
        while let Some(meta) = listed.next().await {
            if let Ok(meta) = meta {
                files.push(meta.location);
            }
        }
        for location in files {
            let sql = if prefix == "datasets" {
                "SELECT 1 FROM objects WHERE location = $1"
            } else {
                "SELECT 1 FROM artifacts WHERE location = $1"
            };
            let known = sqlx::query(sql).bind(location.to_string()).fetch_optional(pool).await?.is_some();
            if !known {
                let _ = objects.delete(&location).await;
                tracing::warn!(location = %location, "removed a stored file nothing registered");
            }
        }
    }
    Ok(())
}
