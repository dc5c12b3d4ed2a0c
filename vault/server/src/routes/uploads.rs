//! Resumable uploads of large sealed objects: an interrupted upload continues where it stopped.
//!
//! ```text
//! POST   /v1/tenants/{t}/datasets/{d}/uploads                   {size, part_size?} → UploadView
//! GET    /v1/tenants/{t}/datasets/{d}/uploads/{id}              what the vault holds (parts, SHA-256 each)
//! PUT    /v1/tenants/{t}/datasets/{d}/uploads/{id}/parts/{n}    one part (exactly part_size bytes, the last fewer)
//! POST   /v1/tenants/{t}/datasets/{d}/uploads/{id}/complete     assembles and registers, as a one-shot upload
//! DELETE /v1/tenants/{t}/datasets/{d}/uploads/{id}              abandons it
//! ```
//!
//! Parts are stored as staging objects (`staging/uploads/{id}/{n}`), each streamed and hashed;
//! a part sent again replaces the earlier one (a retry of a broken part). Completion streams
//! the parts in order through exactly the path of `PUT …/objects` — header checks, KEK, owner
//! signature, create-only placement, log entry — so an assembled object is held to every rule
//! of a direct upload. Only the principal that started an upload may continue it. Uploads
//! untouched for a week are removed at start.

use axum::Json;
use axum::body::Body as AxumBody;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use coffre_api::wire::{ObjectView, Role, StartUpload, UploadView, UploadedPart};
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use sqlx::Row;

use super::Body;
use crate::app::{AppState, Principal, now};
use crate::error::{ApiError, ApiResult};

/// The default part size.
pub const DEFAULT_PART_SIZE: u64 = 64 << 20;
/// The smallest and largest part sizes accepted.
pub const PART_SIZE_RANGE: std::ops::RangeInclusive<u64> = (64 << 10)..=(1 << 30);
/// Uploads untouched for this long are removed at start.
pub const ABANDONED_AFTER_SECS: u64 = 7 * 24 * 3600;

fn part_path(id: &str, part: u64) -> ObjectPath {
    ObjectPath::from(format!("staging/uploads/{id}/{part:08}"))
}

struct Upload {
    size: u64,
    part_size: u64,
}

impl Upload {
    fn parts_total(&self) -> u64 {
        self.size.div_ceil(self.part_size).max(1)
    }

    fn part_len(&self, part: u64) -> u64 {
        let start = part * self.part_size;
        self.size.saturating_sub(start).min(self.part_size)
    }
}

/// The upload `id` of `tenant`'s `dataset`, started by `who`.
async fn upload_of(app: &AppState, who: &Principal, tenant: &str, dataset: &str, id: &str) -> ApiResult<Upload> {
    let row =
        sqlx::query("SELECT principal, size, part_size FROM uploads WHERE id = $1 AND tenant = $2 AND dataset = $3")
            .bind(id)
            .bind(tenant)
            .bind(dataset)
            .fetch_optional(&app.pool)
            .await?
            .ok_or(ApiError::NotFound)?;
    let principal: String = row.try_get("principal")?;
    if principal != who.id {
        return Err(ApiError::Forbidden("only the principal that started an upload continues it".into()));
    }
    Ok(Upload { size: crate::db::q::u(&row, "size")?, part_size: crate::db::q::u(&row, "part_size")? })
}

async fn view(app: &AppState, id: &str, upload: &Upload) -> ApiResult<UploadView> {
    let rows = sqlx::query("SELECT part, size, sha256 FROM upload_parts WHERE upload_id = $1 ORDER BY part")
        .bind(id)
        .fetch_all(&app.pool)
        .await?;
    let parts = rows
        .iter()
        .map(|r| {
            Ok(UploadedPart {
                part: crate::db::q::u(r, "part")?,
                size: crate::db::q::u(r, "size")?,
                sha256: r.try_get("sha256")?,
            })
        })
        .collect::<ApiResult<Vec<_>>>()?;
    Ok(UploadView {
        id: id.to_owned(),
        size: upload.size,
        part_size: upload.part_size,
        parts_total: upload.parts_total(),
        parts,
    })
}

/// `POST /v1/tenants/{tenant}/datasets/{dataset}/uploads`: starts a resumable upload.
pub async fn start(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset)): Path<(String, String)>,
    Body(req): Body<StartUpload>,
) -> ApiResult<(StatusCode, Json<UploadView>)> {
    who.require(&tenant, &[Role::Owner])?;
    let shredding = app.log.read(|s| {
        s.tenant(&tenant).and_then(|t| t.datasets.get(&dataset)).map(|_| s.shredding(&tenant, Some(&dataset)))
    });
    match shredding {
        None => return Err(ApiError::NotFound),
        Some(Some(why)) => return Err(ApiError::Conflict(why)),
        Some(None) => {}
    }
    let part_size = req.part_size.unwrap_or(DEFAULT_PART_SIZE);
    if !PART_SIZE_RANGE.contains(&part_size) {
        return Err(ApiError::bad(
            "invalid_part_size",
            format!("part_size must be {} to {} bytes", PART_SIZE_RANGE.start(), PART_SIZE_RANGE.end()),
        ));
    }
    if req.size == 0 || req.size > app.config.limits.object_bytes {
        return Err(ApiError::TooLarge(format!(
            "objects are 1 to {} bytes; this one would be {}",
            app.config.limits.object_bytes, req.size
        )));
    }
    let mut id = [0u8; 16];
    aws_lc_rs::rand::fill(&mut id).map_err(|_| ApiError::internal("random number generator failed"))?;
    let id = hex::encode(id);
    sqlx::query(
        "INSERT INTO uploads (id, tenant, dataset, principal, size, part_size, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&id)
    .bind(&tenant)
    .bind(&dataset)
    .bind(&who.id)
    .bind(crate::db::q::n(req.size))
    .bind(crate::db::q::n(part_size))
    .bind(crate::db::q::n(now()))
    .execute(&app.pool)
    .await?;
    let upload = Upload { size: req.size, part_size };
    Ok((StatusCode::CREATED, Json(view(&app, &id, &upload).await?)))
}

/// `GET /v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}`: the parts the vault holds.
pub async fn status(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset, id)): Path<(String, String, String)>,
) -> ApiResult<Json<UploadView>> {
    who.require(&tenant, &[Role::Owner])?;
    let upload = upload_of(&app, &who, &tenant, &dataset, &id).await?;
    Ok(Json(view(&app, &id, &upload).await?))
}

/// `PUT /v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}/parts/{part}`: one part, streamed.
pub async fn put_part(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset, id, part)): Path<(String, String, String, u64)>,
    body: AxumBody,
) -> ApiResult<Json<UploadedPart>> {
    who.require(&tenant, &[Role::Owner])?;
    let upload = upload_of(&app, &who, &tenant, &dataset, &id).await?;
    if part >= upload.parts_total() {
        return Err(ApiError::bad(
            "invalid_part",
            format!("this upload has parts 0 to {}; there is no part {part}", upload.parts_total() - 1),
        ));
    }
    let expected = upload.part_len(part);
    let path = part_path(&id, part);
    let sink = app.objects.put_multipart(&path).await.map_err(ApiError::internal)?;
    let mut writer = WriteMultipart::new_with_chunk_size(sink, 8 << 20);
    let streamed = async {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut size = 0u64;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad("upload_interrupted", format!("the part broke off: {e}")))?;
            size += chunk.len() as u64;
            if size > expected {
                return Err(ApiError::bad(
                    "length_mismatch",
                    format!("part {part} is {expected} bytes; more was sent"),
                ));
            }
            ctx.update(&chunk);
            writer.wait_for_capacity(4).await.map_err(ApiError::internal)?;
            writer.write(&chunk);
        }
        if size != expected {
            return Err(ApiError::bad(
                "length_mismatch",
                format!("part {part} is {expected} bytes; {size} arrived (send it again)"),
            ));
        }
        Ok(hex::encode(ctx.finish().as_ref()))
    }
    .await;
    let sha256 = match streamed {
        Ok(d) => {
            writer.finish().await.map_err(ApiError::internal)?;
            d
        }
        Err(e) => {
            let _ = writer.abort().await;
            return Err(e);
        }
    };
    sqlx::query(
        "INSERT INTO upload_parts (upload_id, part, size, sha256) VALUES ($1, $2, $3, $4) \
         ON CONFLICT (upload_id, part) DO UPDATE SET size = excluded.size, sha256 = excluded.sha256",
    )
    .bind(&id)
    .bind(crate::db::q::n(part))
    .bind(crate::db::q::n(expected))
    .bind(&sha256)
    .execute(&app.pool)
    .await?;
    Ok(Json(UploadedPart { part, size: expected, sha256 }))
}

/// `POST /v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}/complete`: assembles the parts and
/// registers the object exactly as `PUT …/objects` would (the owner signature header goes here).
pub async fn complete(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset, id)): Path<(String, String, String)>,
    headers: HeaderMap,
) -> ApiResult<(StatusCode, Json<ObjectView>)> {
    who.require(&tenant, &[Role::Owner])?;
    let upload = upload_of(&app, &who, &tenant, &dataset, &id).await?;
    let held = view(&app, &id, &upload).await?;
    let missing: Vec<u64> = (0..upload.parts_total()).filter(|n| !held.parts.iter().any(|p| p.part == *n)).collect();
    if !missing.is_empty() {
        let shown: Vec<String> = missing.iter().take(10).map(u64::to_string).collect();
        return Err(ApiError::bad(
            "upload_incomplete",
            format!(
                "{} of {} parts are missing (first: {}{})",
                missing.len(),
                upload.parts_total(),
                shown.join(", "),
                if missing.len() > 10 { ", …" } else { "" }
            ),
        ));
    }
    // The parts, one after another, as one body.
    let (objects, parts_of) = (app.objects.clone(), id.clone());
    let total = upload.parts_total();
    let assembled = futures_util::stream::iter(0..total)
        .then(move |n| {
            let (objects, path) = (objects.clone(), part_path(&parts_of, n));
            async move {
                match objects.get(&path).await {
                    Ok(got) => got.into_stream().map(|r| r.map_err(std::io::Error::other)).boxed(),
                    Err(e) => futures_util::stream::once(async move { Err(std::io::Error::other(e)) }).boxed(),
                }
            }
        })
        .flatten();
    let outcome = super::data::upload_object(
        State(app.clone()),
        who,
        Path((tenant.clone(), dataset.clone())),
        headers,
        AxumBody::from_stream(assembled),
    )
    .await;
    // Done, or refused for what the object is (it never will be accepted): the parts go. A
    // failure of the vault's own keeps them for another try.
    let keep = matches!(&outcome, Err(ApiError::Internal(_) | ApiError::Unavailable(_)));
    if !keep {
        remove(&app, &id, total).await;
    }
    outcome
}

/// `DELETE /v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}`: abandons an upload.
pub async fn abandon(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset, id)): Path<(String, String, String)>,
) -> ApiResult<StatusCode> {
    who.require(&tenant, &[Role::Owner])?;
    let upload = upload_of(&app, &who, &tenant, &dataset, &id).await?;
    remove(&app, &id, upload.parts_total()).await;
    Ok(StatusCode::NO_CONTENT)
}

/// Removes an upload's parts and rows (best effort for the files; rows last).
pub async fn remove(app: &AppState, id: &str, parts: u64) {
    for n in 0..parts {
        let _ = app.objects.delete(&part_path(id, n)).await;
    }
    let _ = sqlx::query("DELETE FROM upload_parts WHERE upload_id = $1").bind(id).execute(&app.pool).await;
    let _ = sqlx::query("DELETE FROM uploads WHERE id = $1").bind(id).execute(&app.pool).await;
}

/// At start: removes uploads untouched for [`ABANDONED_AFTER_SECS`].
pub async fn remove_abandoned(app: &AppState) -> ApiResult<usize> {
    let cutoff = now().saturating_sub(ABANDONED_AFTER_SECS);
    let rows = sqlx::query("SELECT id, size, part_size FROM uploads WHERE created_at < $1")
        .bind(crate::db::q::n(cutoff))
        .fetch_all(&app.pool)
        .await?;
    for r in &rows {
        let id: String = r.try_get("id")?;
        let upload = Upload { size: crate::db::q::u(r, "size")?, part_size: crate::db::q::u(r, "part_size")?.max(1) };
        remove(app, &id, upload.parts_total()).await;
    }
    Ok(rows.len())
}
