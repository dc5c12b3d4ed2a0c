//! The transparency log, exported for auditors: its signed checkpoint (signed on demand so that it
//! covers every entry), entries with their leaf hashes, blobs, and every earlier checkpoint.
//!
//! Tenant isolation: a tenant's principals see their own tenant's entries and the vault-wide ones
//! (settings); every other entry is redacted to its leaf hash, which is enough to check the
//! tree and the signatures but says nothing about another tenant. The vault administrator sees
//! every entry.

use axum::Json;
use axum::extract::{Path, Query, State};
use axum::http::header;
use axum::response::IntoResponse;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_api::wire::{LogEntries, LogInfo, Role};
use coffre_log::{Digest, Entry};
use serde::Deserialize;

use crate::app::{AppState, Principal};
use crate::error::{ApiError, ApiResult};

const LOG_READERS: [Role; 3] = [Role::Auditor, Role::Approver, Role::Admin];

fn may_read_log(who: &Principal) -> ApiResult<()> {
    if who.is_vault_admin() || LOG_READERS.iter().any(|r| who.roles.contains(r)) {
        Ok(())
    } else {
        Err(ApiError::Forbidden("the log is read by auditors, approvers and administrators".into()))
    }
}

/// A committed entry (never one still in the writer's buffer).
pub async fn committed_entry(app: &AppState, index: u64) -> ApiResult<Option<Entry>> {
    let rows = crate::db::log::entries(&app.pool, index, index + 1).await?;
    Ok(rows.into_iter().next().and_then(|(_, bytes, _)| Entry::from_bytes(&bytes).ok()))
}

/// `GET /v1/log`: size, a checkpoint covering every entry, the key to pin.
pub async fn info(State(app): State<AppState>, who: Principal) -> ApiResult<Json<LogInfo>> {
    may_read_log(&who)?;
    let checkpoint = app.log.call(|ledger, signer| ledger.sign_checkpoint(signer)).await?;
    let checkpoints = crate::db::log::checkpoint_sizes(&app.pool).await?;
    let size = crate::db::log::size(&app.pool).await?;
    Ok(Json(LogInfo { size, checkpoint, log_key: app.log_key.clone(), checkpoints }))
}

/// The range of an entries request.
#[derive(Debug, Deserialize)]
pub struct Range {
    /// First index.
    pub start: u64,
    /// One past the last index (at most 1024 entries a call).
    pub end: u64,
}

/// `GET /v1/log/entries?start=&end=`.
pub async fn entries(
    State(app): State<AppState>,
    who: Principal,
    Query(r): Query<Range>,
) -> ApiResult<Json<LogEntries>> {
    may_read_log(&who)?;
    if r.end < r.start || r.end - r.start > 1024 {
        return Err(ApiError::bad("invalid_range", "ask for at most 1024 entries, start <= end"));
    }
    let rows = crate::db::log::entries(&app.pool, r.start, r.end).await?;
    let mut entries = Vec::with_capacity(rows.len());
    let mut leaves = Vec::with_capacity(rows.len());
    for (_, bytes, leaf) in rows {
        let visible = who.is_vault_admin()
            || Entry::from_bytes(&bytes).is_ok_and(|e| e.tenant().is_none_or(|t| Some(t) == who.tenant.as_deref()));
        entries.push(visible.then(|| String::from_utf8_lossy(&bytes).into_owned()));
        leaves.push(STANDARD.encode(leaf));
    }
    Ok(Json(LogEntries { start: r.start, entries, leaves }))
}

/// `GET /v1/log/blobs/{digest}`.
pub async fn blob(
    State(app): State<AppState>,
    who: Principal,
    Path(digest): Path<String>,
) -> ApiResult<impl IntoResponse> {
    may_read_log(&who)?;
    let d = Digest::parse(&digest).map_err(|e| ApiError::bad("invalid_digest", e))?;
    let bytes = crate::db::log::blob(&app.pool, &d).await?.ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "application/octet-stream")], bytes))
}

/// `GET /v1/log/checkpoints/{size}`.
pub async fn checkpoint(
    State(app): State<AppState>,
    who: Principal,
    Path(size): Path<u64>,
) -> ApiResult<impl IntoResponse> {
    may_read_log(&who)?;
    let note = crate::db::log::checkpoint(&app.pool, size).await?.ok_or(ApiError::NotFound)?;
    Ok(([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], note))
}
