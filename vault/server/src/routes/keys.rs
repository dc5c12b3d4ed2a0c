//! The key lifecycle: KEK rotation and crypto-shredding.
//!
//! **Rotation** (`POST /v1/tenants/{tenant}/kek/rotate`, tenant administrators): a new KEK
//! version, logged (`key_rotated`), becomes the one uploads must be sealed to; then every data
//! key's wrap in the vault's metadata is rewrapped to it in batches — the stored header beside
//! each object gets a new KEK stanza (`Header::rewrap`), the object itself is untouched — each
//! batch stored, then logged (`keys_rewrapped`). Old KEK versions are kept (retired): they still
//! open whatever was not yet rewrapped, so a crash at any point leaves every data key openable,
//! and the next call resumes where the last stopped.
//!
//! **Shredding** (`POST …/datasets/{dataset}/shred` by owners or administrators, `POST
//! /v1/tenants/{tenant}/shred` by administrators): every key in scope is scheduled
//! (`shredding_scheduled`) for the end of the waiting period (`limits.shred_wait_secs`, 7 days by
//! default). From that entry on, the shared state machine refuses releases of those keys and new
//! objects in that scope, in the vault and in every audit. The tenant's approvers may cancel
//! (`DELETE …/shred`) until then. When due, [`shred_due`] destroys the wrapped data keys and
//! deletes the objects (for a tenant: its KEKs' sealed private halves, its artifacts and models
//! too), then logs each key's `key_shredded`; it runs every few seconds, on every replica (a key
//! another replica shredded first is skipped).

use axum::Json;
use axum::extract::{Path, State};
use coffre_api::wire::{KekRotation, Role, Shredding};
use coffre_broker::LedgerError;
use coffre_broker::state::KeyState;
use coffre_log::Entry;
use coffre_seal::{Header, RecipientSecretKey, SystemRandom};
use object_store::ObjectStoreExt;
use object_store::path::Path as ObjectPath;
use sqlx::Row;

use super::tenants::{active_kek, kek_key_id};
use crate::app::{AppState, Principal, now};
use crate::error::{ApiError, ApiResult};
use crate::keys::kek_aad;

/// Data keys rewrapped (and logged in one entry) per call.
const REWRAP_BATCH: i64 = 256;

/// Data keys of `tenant` whose wrap is older than `version`, or not yet logged at it.
async fn pending_rewraps(app: &AppState, tenant: &str, version: u64) -> ApiResult<u64> {
    let n: i64 =
        sqlx::query("SELECT COUNT(*) FROM data_keys WHERE tenant = $1 AND (kek_version < $2 OR logged_version < $2)")
            .bind(tenant)
            .bind(crate::db::q::n(version))
            .fetch_one(&app.pool)
            .await?
            .try_get(0)?;
    Ok(u64::try_from(n).unwrap_or(0))
}

/// `POST /v1/tenants/{tenant}/kek/rotate`: starts a KEK rotation, or resumes an unfinished one,
/// and rewraps one batch of data keys.
pub async fn rotate_kek(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<KekRotation>> {
    who.require_or_vault_admin(&tenant, &[Role::Admin])?;
    let (known, shredding) = app.log.read(|s| (s.tenant(&tenant).is_some(), s.shredding(&tenant, None)));
    if !known {
        return Err(ApiError::NotFound);
    }
    if let Some(why) = shredding {
        return Err(ApiError::Conflict(why));
    }
    let mut version = app.log.read(|s| active_kek(s, &tenant)).ok_or(ApiError::NotFound)?;
    let mut log_indices = Vec::new();
    let mut started = false;
    if pending_rewraps(&app, &tenant, version).await? == 0 {
        let next = version + 1;
        // The new version first (a row a crashed attempt stored is reused: it was never logged,
        // so nothing was sealed to it); then the log makes it the active one.
        let stored = sqlx::query("SELECT 1 FROM keks WHERE tenant = $1 AND version = $2")
            .bind(&tenant)
            .bind(crate::db::q::n(next))
            .fetch_optional(&app.pool)
            .await?
            .is_some();
        if !stored {
            let kek = RecipientSecretKey::generate(&mut SystemRandom).map_err(ApiError::internal)?;
            let sealed =
                app.root.seal(&kek_aad(&tenant, next), kek.to_key_file().as_bytes()).map_err(ApiError::internal)?;
            sqlx::query(
                "INSERT INTO keks (tenant, version, public_key, sealed_private, created_at) VALUES ($1, $2, $3, $4, $5) \
                 ON CONFLICT (tenant, version) DO NOTHING",
            )
            .bind(&tenant)
            .bind(crate::db::q::n(next))
            .bind(kek.public().to_string())
            .bind(sealed)
            .bind(crate::db::q::n(now()))
            .execute(&app.pool)
            .await?;
        }
        let t = tenant.clone();
        let logged = app
            .log
            .call(move |ledger, _| {
                // Another administrator (or replica) may have rotated meanwhile.
                if active_kek(ledger.state(), &t) != Some(version) {
                    return Ok(None);
                }
                let at = ledger.next_at(now());
                let entry = Entry::KeyRotated {
                    at,
                    tenant: t.clone(),
                    key_id: kek_key_id(&t, version),
                    new_key_id: kek_key_id(&t, next),
                };
                Ok(Some(ledger.record_pending(&entry)?.0))
            })
            .await?;
        started = logged.is_some();
        log_indices.extend(logged);
        version = app.log.read(|s| active_kek(s, &tenant)).ok_or(ApiError::NotFound)?;
    }
    let new_public: coffre_seal::RecipientPublicKey = {
        let row = sqlx::query("SELECT public_key FROM keks WHERE tenant = $1 AND version = $2")
            .bind(&tenant)
            .bind(crate::db::q::n(version))
            .fetch_one(&app.pool)
            .await?;
        row.try_get::<String, _>("public_key")?.parse().map_err(ApiError::internal)?
    };
    let rows = sqlx::query(
        "SELECT key_id, kek_version, header FROM data_keys WHERE tenant = $1 AND (kek_version < $2 OR logged_version < $2) \
         ORDER BY key_id LIMIT $3",
    )
    .bind(&tenant)
    .bind(crate::db::q::n(version))
    .bind(REWRAP_BATCH)
    .fetch_all(&app.pool)
    .await?;
    let mut rewrapped = 0u64;
    let mut ids = Vec::with_capacity(rows.len());
    for row in rows {
        let key_id: String = row.try_get("key_id")?;
        let from = crate::db::q::u(&row, "kek_version")?;
        if from < version {
            let old = super::data::kek_secret(&app, &tenant, from).await?;
            let header: Vec<u8> = row.try_get("header")?;
            let to = new_public.clone();
            let new_header = crate::app::compute(move || {
                let h = Header::parse_prefix(&header).map_err(|e| e.to_string())?.0;
                h.rewrap(&old, &to, &mut SystemRandom).map(|h| h.as_bytes().to_vec()).map_err(|e| e.to_string())
            })
            .await?
            .map_err(|e| ApiError::internal(format!("data key {key_id} does not rewrap: {e}")))?;
            // Only from the version read: a concurrent rotation's rewrap is never undone.
            let done = sqlx::query(
                "UPDATE data_keys SET header = $1, kek_version = $2 WHERE key_id = $3 AND tenant = $4 AND kek_version = $5",
            )
            .bind(new_header)
            .bind(crate::db::q::n(version))
            .bind(&key_id)
            .bind(&tenant)
            .bind(crate::db::q::n(from))
            .execute(&app.pool)
            .await?;
            rewrapped += done.rows_affected();
            app.data_keys.forget(&key_id);
        }
        ids.push(key_id);
    }
    // Only keys the log knows are named in it; a row whose object never reached the log (a crash
    // mid-upload, or an upload still in flight) is rewrapped all the same, and marked done.
    let logged_ids: Vec<String> = app.log.read(|s| {
        ids.iter()
            .filter(|id| {
                s.key(id).is_some_and(|k| k.tenant == tenant && k.dataset.is_some() && k.state != KeyState::Shredded)
            })
            .cloned()
            .collect()
    });
    if !logged_ids.is_empty() {
        let (t, kek, key_ids) = (tenant.clone(), kek_key_id(&tenant, version), logged_ids);
        let index = app
            .log
            .call(move |ledger, _| {
                let at = ledger.next_at(now());
                Ok(ledger.record_pending(&Entry::KeysRewrapped { at, tenant: t, kek, key_ids })?.0)
            })
            .await?;
        log_indices.push(index);
    }
    if !ids.is_empty() {
        for key_id in &ids {
            sqlx::query(
                "UPDATE data_keys SET logged_version = $1 WHERE key_id = $2 AND tenant = $3 AND kek_version = $1",
            )
            .bind(crate::db::q::n(version))
            .bind(key_id)
            .bind(&tenant)
            .execute(&app.pool)
            .await?;
        }
    }
    let remaining = pending_rewraps(&app, &tenant, version).await?;
    tracing::info!(target: "coffred::keys", tenant, version, rewrapped, remaining, "KEK rotation step");
    Ok(Json(KekRotation { version, started, rewrapped, remaining, log_indices }))
}

/// What a shredding request covers.
#[derive(Clone)]
enum Scope {
    Dataset(String),
    Tenant,
}

/// The keys of `scope` in a state `want` accepts, read from `state` (inside the log writer, so
/// that no key registered meanwhile is missed).
fn keys_in(
    state: &coffre_broker::LogState,
    tenant: &str,
    scope: &Scope,
    want: fn(KeyState) -> bool,
) -> Result<Vec<String>, LedgerError> {
    let t = state.tenant(tenant).ok_or_else(|| LedgerError::NotFound(format!("tenant {tenant}")))?;
    let mut keys: Vec<String> = match scope {
        Scope::Dataset(d) => {
            let ds = t.datasets.get(d).ok_or_else(|| LedgerError::NotFound(format!("dataset {d}")))?;
            ds.versions
                .iter()
                .filter(|v| state.key(&v.key_id).is_some_and(|k| want(k.state)))
                .map(|v| v.key_id.clone())
                .collect()
        }
        Scope::Tenant => state.keys_of(tenant).filter(|(_, k)| want(k.state)).map(|(id, _)| id.clone()).collect(),
    };
    keys.sort();
    Ok(keys)
}

/// Schedules every live key of `scope` for shredding after the waiting period.
async fn schedule(app: &AppState, tenant: &str, scope: Scope) -> ApiResult<Json<Shredding>> {
    let wait = app.config.limits.shred_wait_secs;
    let t = tenant.to_owned();
    let (keys, not_before, log_indices) = app
        .log
        .call(move |ledger, _| {
            let keys = keys_in(ledger.state(), &t, &scope, live)?;
            let at = ledger.next_at(now());
            let not_before = at.saturating_add(wait);
            let mut indices = Vec::with_capacity(keys.len());
            for key_id in &keys {
                let entry = Entry::ShreddingScheduled { at, tenant: t.clone(), key_id: key_id.clone(), not_before };
                indices.push(ledger.record_pending(&entry)?.0);
            }
            Ok((keys, not_before, indices))
        })
        .await?;
    if keys.is_empty() {
        return Err(ApiError::Conflict("nothing to shred: every key in scope is already scheduled or shredded".into()));
    }
    for key_id in &keys {
        app.deks.forget(key_id);
    }
    tracing::warn!(target: "coffred::keys", tenant, keys = keys.len(), not_before, "shredding scheduled");
    Ok(Json(Shredding { keys, not_before: Some(not_before), log_indices }))
}

/// Cancels the scheduled shredding of every key of `scope` not yet due.
async fn cancel(app: &AppState, tenant: &str, scope: Scope) -> ApiResult<Json<Shredding>> {
    let t = tenant.to_owned();
    let (keys, log_indices) = app
        .log
        .call(move |ledger, _| {
            let keys = keys_in(ledger.state(), &t, &scope, scheduled)?;
            let at = ledger.next_at(now());
            let mut indices = Vec::with_capacity(keys.len());
            for key_id in &keys {
                let entry = Entry::ShreddingCancelled { at, tenant: t.clone(), key_id: key_id.clone() };
                indices.push(ledger.record_pending(&entry)?.0);
            }
            Ok((keys, indices))
        })
        .await?;
    if keys.is_empty() {
        return Err(ApiError::Conflict("no shredding is scheduled here".into()));
    }
    tracing::warn!(target: "coffred::keys", tenant, keys = keys.len(), "shredding cancelled");
    Ok(Json(Shredding { keys, not_before: None, log_indices }))
}

fn live(s: KeyState) -> bool {
    matches!(s, KeyState::Active | KeyState::Retired)
}

fn scheduled(s: KeyState) -> bool {
    matches!(s, KeyState::Scheduled(_))
}

fn known(app: &AppState, tenant: &str, dataset: Option<&str>) -> ApiResult<()> {
    let found = app.log.read(|s| match dataset {
        Some(d) => s.tenant(tenant).is_some_and(|t| t.datasets.contains_key(d)),
        None => s.tenant(tenant).is_some(),
    });
    if found { Ok(()) } else { Err(ApiError::NotFound) }
}

/// `POST /v1/tenants/{tenant}/datasets/{dataset}/shred`: schedules every version's data key.
pub async fn shred_dataset(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset)): Path<(String, String)>,
) -> ApiResult<Json<Shredding>> {
    who.require(&tenant, &[Role::Owner, Role::Admin])?;
    known(&app, &tenant, Some(&dataset))?;
    schedule(&app, &tenant, Scope::Dataset(dataset)).await
}

/// `DELETE /v1/tenants/{tenant}/datasets/{dataset}/shred`: the tenant's approvers cancel it.
pub async fn cancel_dataset_shred(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset)): Path<(String, String)>,
) -> ApiResult<Json<Shredding>> {
    who.require(&tenant, &[Role::Approver])?;
    known(&app, &tenant, Some(&dataset))?;
    cancel(&app, &tenant, Scope::Dataset(dataset)).await
}

/// `POST /v1/tenants/{tenant}/shred`: schedules every data key and KEK of the tenant.
pub async fn shred_tenant(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Shredding>> {
    who.require_or_vault_admin(&tenant, &[Role::Admin])?;
    known(&app, &tenant, None)?;
    schedule(&app, &tenant, Scope::Tenant).await
}

/// `DELETE /v1/tenants/{tenant}/shred`: the tenant's approvers cancel every scheduled shredding.
pub async fn cancel_tenant_shred(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Shredding>> {
    who.require(&tenant, &[Role::Approver])?;
    known(&app, &tenant, None)?;
    cancel(&app, &tenant, Scope::Tenant).await
}

/// Carries out every shredding that is due: logs `key_shredded` (from then on nothing can cancel
/// it), then destroys. Returns how many keys. A destruction that failed, or that a crash cut
/// short, is finished by [`destroy_shredded`] at the next start.
pub async fn shred_due(app: &AppState) -> ApiResult<usize> {
    app.log.fresh().await?;
    let due = app.log.read(|s| s.due_shredding(now()));
    let mut done = 0;
    for (tenant, key_id, dataset) in due {
        let (t, k) = (tenant.clone(), key_id.clone());
        let logged = app
            .log
            .call(move |ledger, _| {
                // Still scheduled and due (another replica may have shredded it, or an approver
                // cancelled it, since the list was read).
                let at = ledger.next_at(now());
                let due = ledger.state().key(&k).is_some_and(|i| {
                    matches!(i.state, KeyState::Scheduled(_)) && i.shred_not_before.is_some_and(|nb| nb <= at)
                });
                if !due {
                    return Ok(None);
                }
                Ok(Some(ledger.record_pending(&Entry::KeyShredded { at, tenant: t, key_id: k })?.0))
            })
            .await?;
        let Some(index) = logged else { continue };
        destroy(app, &tenant, &key_id, dataset.as_deref()).await?;
        tracing::warn!(target: "coffred::keys", tenant, key_id, log_index = index, "key shredded");
        done += 1;
    }
    Ok(done)
}

/// At start: finishes destroying every key the log says is shredded (idempotent).
pub async fn destroy_shredded(app: &AppState) -> ApiResult<()> {
    for (tenant, key_id, dataset) in app.log.read(|s| s.shredded_keys()) {
        destroy(app, &tenant, &key_id, dataset.as_deref()).await?;
    }
    Ok(())
}

/// Destroys a shredded key: a data key's wrapped copy and its object; a KEK version's sealed
/// private half (and, with it, the tenant's artifacts and models). Idempotent.
async fn destroy(app: &AppState, tenant: &str, key_id: &str, dataset: Option<&str>) -> ApiResult<()> {
    match dataset {
        Some(_) => {
            let location = sqlx::query("SELECT location FROM objects WHERE key_id = $1 AND tenant = $2")
                .bind(key_id)
                .bind(tenant)
                .fetch_optional(&app.pool)
                .await?
                .map(|r| r.try_get::<String, _>("location"))
                .transpose()?;
            if let Some(location) = location {
                match app.objects.delete(&ObjectPath::from(location)).await {
                    Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                    Err(e) => return Err(ApiError::internal(format!("cannot delete the object of {key_id}: {e}"))),
                }
            }
            for sql in [
                "DELETE FROM data_keys WHERE key_id = $1 AND tenant = $2",
                "DELETE FROM objects WHERE key_id = $1 AND tenant = $2",
            ] {
                sqlx::query(sql).bind(key_id).bind(tenant).execute(&app.pool).await?;
            }
            app.deks.forget(key_id);
            app.data_keys.forget(&key_id.to_owned());
        }
        None => {
            let version = key_id.rsplit_once("-v").and_then(|(_, v)| v.parse::<u64>().ok()).unwrap_or(0);
            sqlx::query("DELETE FROM keks WHERE tenant = $1 AND version = $2")
                .bind(tenant)
                .bind(crate::db::q::n(version))
                .execute(&app.pool)
                .await?;
            app.sealed_keks.forget(&(tenant.to_owned(), version));
            delete_tenant_files(app, tenant).await?;
        }
    }
    Ok(())
}

/// A tenant's artifacts and base models (rows and files), when its KEKs are shredded.
async fn delete_tenant_files(app: &AppState, tenant: &str) -> ApiResult<()> {
    for (select, delete) in [
        ("SELECT location FROM artifacts WHERE tenant = $1", "DELETE FROM artifacts WHERE tenant = $1"),
        ("SELECT location FROM models WHERE tenant = $1", "DELETE FROM models WHERE tenant = $1"),
        ("SELECT location FROM objects WHERE tenant = $1", "DELETE FROM objects WHERE tenant = $1"),
    ] {
        for row in sqlx::query(select).bind(tenant).fetch_all(&app.pool).await? {
            let location: String = row.try_get("location")?;
            match app.objects.delete(&ObjectPath::from(location)).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(ApiError::internal(format!("cannot delete a file of {tenant}: {e}"))),
            }
        }
        sqlx::query(delete).bind(tenant).execute(&app.pool).await?;
    }
    sqlx::query("DELETE FROM data_keys WHERE tenant = $1").bind(tenant).execute(&app.pool).await?;
    Ok(())
}
