//! The model store: base models a tenant's jobs pin by digest, fetched by its workers.
//!
//! Content-addressed: a model is stored under the digest job manifests pin it by
//! ([`coffre_api::model`]), which the vault recomputes from the bytes it receives (a directory
//! model arrives as a tar stream and is hashed file by file as it streams, on a blocking thread)
//! and refuses on any mismatch; the worker recomputes it again from what it downloads. Base
//! models are public weights, so they are stored as they are (not sealed) and their upload is
//! not a log entry: what the log and the provenance record is the digest each job pinned.
//! Per tenant, like everything else: another tenant's models are a 404.

use axum::Json;
use axum::body::Body as AxumBody;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffre_api::model::{ModelKind, read_dir_tar};
use coffre_api::wire::{ModelView, Role};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde::Deserialize;
use sqlx::Row;

use crate::app::{AppState, Principal, now};
use crate::error::{ApiError, ApiResult};

/// Directory models hashed at once (each holds a blocking thread while its upload streams).
static DIR_HASHERS: tokio::sync::Semaphore = tokio::sync::Semaphore::const_new(4);

/// `?kind=file|dir` on an upload.
#[derive(Debug, Deserialize)]
pub struct KindQuery {
    kind: String,
}

fn digest_param(digest: &str) -> ApiResult<()> {
    let ok = digest
        .strip_prefix("sha256:")
        .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)));
    if ok {
        Ok(())
    } else {
        Err(ApiError::bad(
            "invalid_digest",
            format!("{digest:?} is not a model digest (sha256: and 64 lower-case hex digits)"),
        ))
    }
}

fn view(row: &sqlx::any::AnyRow) -> ApiResult<ModelView> {
    Ok(ModelView {
        digest: row.try_get("digest")?,
        kind: row.try_get("kind")?,
        size: crate::db::q::u(row, "size")?,
        uploaded_at: crate::db::q::u(row, "uploaded_at")?,
    })
}

async fn find(app: &AppState, tenant: &str, digest: &str) -> ApiResult<Option<(ModelView, String)>> {
    let row =
        sqlx::query("SELECT digest, kind, size, uploaded_at, location FROM models WHERE tenant = $1 AND digest = $2")
            .bind(tenant)
            .bind(digest)
            .fetch_optional(&app.pool)
            .await?;
    row.map(|r| Ok((view(&r)?, r.try_get("location")?))).transpose()
}

/// `GET /v1/tenants/{tenant}/models`.
pub async fn list_models(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Vec<ModelView>>> {
    who.require(&tenant, &[Role::Owner, Role::WorkerOperator, Role::Auditor])?;
    let rows = sqlx::query(
        "SELECT digest, kind, size, uploaded_at FROM models WHERE tenant = $1 ORDER BY uploaded_at, digest",
    )
    .bind(&tenant)
    .fetch_all(&app.pool)
    .await?;
    Ok(Json(rows.iter().map(view).collect::<ApiResult<_>>()?))
}

/// `GET /v1/tenants/{tenant}/models/{digest}`.
pub async fn get_model(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, digest)): Path<(String, String)>,
) -> ApiResult<Json<ModelView>> {
    who.require(&tenant, &[Role::Owner, Role::WorkerOperator, Role::Auditor])?;
    digest_param(&digest)?;
    Ok(Json(find(&app, &tenant, &digest).await?.ok_or(ApiError::NotFound)?.0))
}

/// `GET /v1/tenants/{tenant}/models/{digest}/content`: the file, or the directory's tar stream.
pub async fn download_model(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, digest)): Path<(String, String)>,
) -> ApiResult<Response> {
    who.require(&tenant, &[Role::Owner, Role::WorkerOperator])?;
    digest_param(&digest)?;
    let (model, location) = find(&app, &tenant, &digest).await?.ok_or(ApiError::NotFound)?;
    let got = app.objects.get(&ObjectPath::from(location)).await.map_err(ApiError::internal)?;
    let stream = got.into_stream().map(|r| r.map_err(std::io::Error::other));
    let kind = if model.kind == "dir" { "application/x-tar" } else { "application/octet-stream" };
    Ok((
        [(header::CONTENT_TYPE, kind.to_owned()), (header::CONTENT_LENGTH, model.size.to_string())],
        AxumBody::from_stream(stream),
    )
        .into_response())
}

/// Reads the chunks a channel delivers, for the blocking tar hasher (which waits on the
/// channel; the upload sends without blocking a thread, so hashers cannot starve senders).
struct ChannelReader {
    rx: tokio::sync::mpsc::Receiver<bytes::Bytes>,
    current: bytes::Bytes,
}

impl std::io::Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(b) => self.current = b,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// `PUT /v1/tenants/{tenant}/models/{digest}?kind=file|dir` (owner): stores a base model if the
/// bytes have that digest. Idempotent: a model already stored answers 200 (its bytes are read
/// and dropped, not hashed again).
pub async fn upload_model(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, digest)): Path<(String, String)>,
    Query(q): Query<KindQuery>,
    body: AxumBody,
) -> ApiResult<(StatusCode, Json<ModelView>)> {
    who.require(&tenant, &[Role::Owner])?;
    digest_param(&digest)?;
    let kind = ModelKind::parse(&q.kind)
        .ok_or_else(|| ApiError::bad("invalid_kind", format!("kind {:?}: file or dir", q.kind)))?;
    if let Some((existing, _)) = find(&app, &tenant, &digest).await? {
        // Read what the client is sending before answering (up to the size limit), so that it
        // hears the answer rather than a connection closed under its upload.
        super::data::drain(body, app.config.limits.object_bytes).await;
        return Ok((StatusCode::OK, Json(existing)));
    }
    // Directory models are hashed on a blocking thread each: at most a few at once, so that
    // uploads cannot take the blocking pool the object store also needs.
    let _permit = match kind {
        ModelKind::Dir => match DIR_HASHERS.try_acquire() {
            Ok(p) => Some(p),
            Err(_) => {
                super::data::drain(body, app.config.limits.object_bytes).await;
                return Err(ApiError::Unavailable(
                    "too many model directories are being uploaded; retry shortly".into(),
                ));
            }
        },
        ModelKind::File => None,
    };
    let mut nonce = [0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ApiError::internal("random number generator failed"))?;
    let staging = ObjectPath::from(format!("staging/{}", hex::encode(nonce)));
    let upload = app.objects.put_multipart(&staging).await.map_err(ApiError::internal)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let limit = app.config.limits.object_bytes;
    // A directory's digest needs its tar parsed: that runs beside the upload on a blocking
    // thread, fed the same chunks. A file's is the SHA-256 of the bytes.
    let (tx, hasher) = match kind {
        ModelKind::Dir => {
            let (tx, rx) = tokio::sync::mpsc::channel::<bytes::Bytes>(8);
            let reader = ChannelReader { rx, current: bytes::Bytes::new() };
            (Some(tx), Some(tokio::task::spawn_blocking(move || read_dir_tar(reader, |_| Ok(None)))))
        }
        ModelKind::File => (None, None),
    };
    let result = async {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad("upload_interrupted", format!("the upload broke off: {e}")))?;
            size += chunk.len() as u64;
            if size > limit {
                return Err(ApiError::TooLarge(format!("models are at most {limit} bytes (limits.object_bytes)")));
            }
            ctx.update(&chunk);
            if let Some(tx) = &tx {
                // The hasher stops reading on a malformed tar: then the send fails, and the
                // hasher's error is what the uploader hears.
                let _ = tx.send(chunk.clone()).await;
            }
            writer.wait_for_capacity(4).await.map_err(ApiError::internal)?;
            writer.write(&chunk);
        }
        drop(tx);
        let got = match hasher {
            Some(h) => h
                .await
                .map_err(ApiError::internal)?
                .map_err(|e| ApiError::bad("invalid_model", format!("not a model directory's tar stream: {e}")))?,
            None => format!("sha256:{}", hex::encode(ctx.finish())),
        };
        if got != digest {
            return Err(ApiError::bad_hint(
                "digest_mismatch",
                format!("the uploaded model has digest {got}, not {digest}"),
                "upload with `coffre model upload PATH`, which computes the digest",
            ));
        }
        Ok(size)
    }
    .await;
    let size = match result {
        Ok(size) => match writer.finish().await {
            Ok(_) => size,
            Err(e) => {
                let _ = app.objects.delete(&staging).await;
                return Err(ApiError::internal(e));
            }
        },
        Err(e) => {
            let _ = writer.abort().await;
            let _ = app.objects.delete(&staging).await;
            return Err(e);
        }
    };
    let location = ObjectPath::from(format!("models/{tenant}/{}", &digest["sha256:".len()..]));
    match app.objects.rename_if_not_exists(&staging, &location).await {
        // Same digest, same bytes: a concurrent upload of the same model already placed it.
        Ok(()) | Err(object_store::Error::AlreadyExists { .. }) => {}
        Err(e) => {
            let _ = app.objects.delete(&staging).await;
            return Err(ApiError::internal(e));
        }
    }
    let _ = app.objects.delete(&staging).await;
    let at = now();
    sqlx::query(
        "INSERT INTO models (tenant, digest, kind, size, location, uploaded_at) VALUES ($1, $2, $3, $4, $5, $6) \
         ON CONFLICT (tenant, digest) DO NOTHING",
    )
    .bind(&tenant)
    .bind(&digest)
    .bind(kind.as_str())
    .bind(crate::db::q::n(size))
    .bind(location.to_string())
    .bind(crate::db::q::n(at))
    .execute(&app.pool)
    .await?;
    let stored = find(&app, &tenant, &digest).await?.ok_or_else(|| ApiError::internal("the model row vanished"))?.0;
    Ok((StatusCode::CREATED, Json(stored)))
}
