//! `coffred migrate`: moves a stopped vault to another database, object store and root key — the
//! embedded default (SQLite, a directory, a key file) to PostgreSQL, an S3 bucket and a PKCS#11
//! HSM — keeping its log, log key, tenants, KEKs, principals, objects and TLS certificate.
//!
//! The new data directory is made like `coffred init` makes one, from the old configuration and
//! the new backends. Every table is copied row by row (challenges and unfinished uploads are not:
//! workers ask again); the sealed secrets (the log key, each KEK version) are opened with the old
//! root key and sealed again with the new one, under the same additional data; every object is
//! copied to the new store under the same name. The old vault must be stopped (its data-directory
//! lock is taken for the whole run) and is left untouched, so a failed migration is simply run
//! again into a fresh target. The new vault then opens the same log, signed by the same key.

use std::path::Path;

use futures_util::StreamExt;
use object_store::ObjectStoreExt;
use sqlx::Row;

use crate::config::Config;
use crate::db;
use crate::keys::{FileRootKey, LOG_SIGNER_AAD, RootKey, kek_aad};
use crate::server::InitOptions;

/// A column's type, for copying rows through the `Any` driver.
#[derive(Clone, Copy)]
enum Col {
    Text,
    NullText,
    Bytes,
    NullBytes,
    Int,
}

/// Every table the vault keeps beyond one request, with its columns (challenges and resumable
/// uploads are transient). `secrets` and `keks` are re-sealed, not copied.
const TABLES: &[(&str, &[(&str, Col)])] = &[
    ("log_entries", &[("idx", Col::Int), ("entry", Col::Bytes), ("leaf", Col::Bytes)]),
    ("log_blobs", &[("digest", Col::Text), ("bytes", Col::Bytes)]),
    ("log_checkpoints", &[("size", Col::Int), ("note", Col::Text)]),
    (
        "principals",
        &[
            ("id", Col::Text),
            ("tenant", Col::NullText),
            ("name", Col::Text),
            ("roles", Col::Text),
            ("token_hash", Col::NullText),
            ("cert_sha256", Col::NullText),
            ("signing_key", Col::NullText),
            ("created_at", Col::Int),
        ],
    ),
    (
        "data_keys",
        &[
            ("key_id", Col::Text),
            ("tenant", Col::Text),
            ("dataset", Col::Text),
            ("kek_version", Col::Int),
            ("header", Col::Bytes),
            ("logged_version", Col::Int),
        ],
    ),
    (
        "objects",
        &[
            ("key_id", Col::Text),
            ("tenant", Col::Text),
            ("dataset", Col::Text),
            ("location", Col::Text),
            ("digest", Col::Text),
            ("size", Col::Int),
            ("signature", Col::NullBytes),
        ],
    ),
    (
        "artifacts",
        &[
            ("tenant", Col::Text),
            ("model", Col::Text),
            ("version", Col::Int),
            ("job", Col::Text),
            ("release_index", Col::Int),
            ("location", Col::Text),
            ("digest", Col::Text),
            ("size", Col::Int),
            ("provenance", Col::Bytes),
            ("log_index", Col::Int),
        ],
    ),
    ("collateral", &[("kind", Col::Text), ("name", Col::Text), ("bytes", Col::Bytes)]),
    (
        "models",
        &[
            ("tenant", Col::Text),
            ("digest", Col::Text),
            ("kind", Col::Text),
            ("size", Col::Int),
            ("location", Col::Text),
            ("uploaded_at", Col::Int),
        ],
    ),
];

/// What a migration moved.
#[derive(Debug, Default)]
pub struct Migrated {
    /// Rows copied, per table.
    pub rows: Vec<(&'static str, u64)>,
    /// Sealed secrets re-sealed (the log key and each KEK version).
    pub resealed: u64,
    /// Objects copied, and their bytes.
    pub objects: (u64, u64),
}

async fn copy_table(from: &db::Pool, to: &db::Pool, table: &str, cols: &[(&str, Col)]) -> anyhow::Result<u64> {
    let names: Vec<&str> = cols.iter().map(|(n, _)| *n).collect();
    let select = format!("SELECT {} FROM {table}", names.join(", "));
    let placeholders: Vec<String> = (1..=cols.len()).map(|i| format!("${i}")).collect();
    let insert = format!("INSERT INTO {table} ({}) VALUES ({})", names.join(", "), placeholders.join(", "));
    // The statements are built from the constants above, never from input.
    let mut rows = sqlx::query(sqlx::AssertSqlSafe(select)).fetch(from);
    let mut n = 0;
    while let Some(row) = rows.next().await {
        let row = row?;
        let mut q = sqlx::query(sqlx::AssertSqlSafe(insert.clone()));
        for (name, col) in cols {
            q = match col {
                Col::Text => q.bind(row.try_get::<String, _>(*name)?),
                Col::NullText => q.bind(row.try_get::<Option<String>, _>(*name)?),
                Col::Bytes => q.bind(row.try_get::<Vec<u8>, _>(*name)?),
                Col::NullBytes => q.bind(row.try_get::<Option<Vec<u8>>, _>(*name)?),
                Col::Int => q.bind(row.try_get::<i64, _>(*name)?),
            };
        }
        q.execute(to).await.map_err(|e| anyhow::anyhow!("{table}: {e}"))?;
        n += 1;
    }
    Ok(n)
}

/// Moves the stopped vault in `old_dir` into the new data directory `new_dir`, on the backends
/// `options` names (its `database_url`, `s3`, `pkcs11`, `replicated`, `create_database`).
pub async fn migrate(
    old_dir: &Path,
    passphrase: Option<&[u8]>,
    new_dir: &Path,
    options: &InitOptions,
) -> anyhow::Result<Migrated> {
    let old = Config::load(old_dir)?;
    // The old vault must not be serving (nor be migrated twice at once).
    let lock = crate::server::lock_data_dir(old_dir).map_err(|e| {
        e.context(format!("a coffred is serving {}: stop it first (nothing was changed)", old_dir.display()))
    })?;
    if new_dir.join(crate::config::FILE).exists() {
        anyhow::bail!("{} already holds a vault; migrate into a new directory", new_dir.display());
    }
    let old_root: Box<dyn RootKey> = match &old.pkcs11 {
        Some(p) => Box::new(crate::pkcs11::Pkcs11RootKey::open(p)?),
        None => Box::new(FileRootKey::load(&old.root_key_file, passphrase)?),
    };
    let old_pool = db::connect(&old.database_url).await?;
    let old_objects = crate::objects::open(&old)?;

    {
        use std::os::unix::fs::DirBuilderExt;
        std::fs::DirBuilder::new().recursive(true).mode(0o700).create(new_dir)?;
    }
    let mut new = Config::defaults(new_dir);
    new.listen = old.listen.clone();
    new.log_origin = old.log_origin.clone();
    new.limits = old.limits.clone();
    new.challenges = old.challenges;
    new.s3 = options.s3.clone();
    new.pkcs11 = options.pkcs11.clone();
    let new_pool = crate::server::empty_database(&mut new, options).await?;
    let new_objects = crate::objects::open(&new)?;
    crate::objects::check(new_objects.as_ref(), &new).await?;
    let new_root: Box<dyn RootKey> = match &new.pkcs11 {
        Some(p) => Box::new(crate::pkcs11::Pkcs11RootKey::create(p)?),
        None => Box::new(FileRootKey::create(&new.root_key_file, passphrase)?),
    };
    // The same certificate: clients keep their pinned fingerprint.
    std::fs::create_dir_all(new.tls_cert.parent().unwrap_or(new_dir))?;
    std::fs::copy(&old.tls_cert, &new.tls_cert)?;
    let key = zeroize::Zeroizing::new(std::fs::read(&old.tls_key)?);
    crate::keys::write_new_private(&new.tls_key, &key)?;

    let mut report = Migrated::default();
    // Secrets, opened with the old root key and sealed with the new one, slot by slot.
    let sealed: Vec<u8> = sqlx::query("SELECT sealed FROM secrets WHERE name = 'log-signer'")
        .fetch_one(&old_pool)
        .await?
        .try_get("sealed")?;
    let signer = old_root.open(LOG_SIGNER_AAD, &sealed).map_err(anyhow::Error::msg)?;
    let resealed = new_root.seal(LOG_SIGNER_AAD, &signer).map_err(anyhow::Error::msg)?;
    sqlx::query("INSERT INTO secrets (name, sealed) VALUES ('log-signer', $1)")
        .bind(resealed)
        .execute(&new_pool)
        .await?;
    report.resealed += 1;
    let keks = sqlx::query("SELECT tenant, version, public_key, sealed_private, created_at FROM keks")
        .fetch_all(&old_pool)
        .await?;
    for row in keks {
        let tenant: String = row.try_get("tenant")?;
        let version = db::q::u(&row, "version").map_err(|e| anyhow::anyhow!("{e}"))?;
        let sealed: Vec<u8> = row.try_get("sealed_private")?;
        let aad = kek_aad(&tenant, version);
        let private = old_root.open(&aad, &sealed).map_err(anyhow::Error::msg)?;
        let resealed = new_root.seal(&aad, &private).map_err(anyhow::Error::msg)?;
        sqlx::query(
            "INSERT INTO keks (tenant, version, public_key, sealed_private, created_at) VALUES ($1, $2, $3, $4, $5)",
        )
        .bind(&tenant)
        .bind(db::q::n(version))
        .bind(row.try_get::<String, _>("public_key")?)
        .bind(resealed)
        .bind(row.try_get::<i64, _>("created_at")?)
        .execute(&new_pool)
        .await?;
        report.resealed += 1;
    }
    for (table, cols) in TABLES {
        let n = copy_table(&old_pool, &new_pool, table, cols).await?;
        report.rows.push((table, n));
    }
    // Objects, artifacts and models under the same names (staging files are not carried over).
    let mut listed = old_objects.list(None);
    while let Some(meta) = listed.next().await {
        let meta = meta?;
        if meta.location.as_ref().starts_with("staging/") {
            continue;
        }
        // Streamed, in 8 MiB parts: an object may be as large as the vault accepts.
        let mut stream = old_objects.get(&meta.location).await?.into_stream();
        let mut writer = object_store::WriteMultipart::new_with_chunk_size(
            new_objects.put_multipart(&meta.location).await?,
            8 << 20,
        );
        while let Some(chunk) = stream.next().await {
            let chunk = chunk?;
            report.objects.1 += chunk.len() as u64;
            writer.wait_for_capacity(4).await?;
            writer.write(&chunk);
        }
        writer.finish().await?;
        report.objects.0 += 1;
    }
    new.write_new(new_dir)?;
    drop(lock);
    Ok(report)
}
