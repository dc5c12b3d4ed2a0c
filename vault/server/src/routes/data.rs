//! Datasets and their sealed objects, jobs, and artifacts.
//!
//! Uploads stream: the sealed header is read and checked first (its tenant and dataset are the
//! URL's, it carries a stanza for the tenant's current KEK, that stanza opens and the header MAC
//! verifies — no plaintext is read), the whole object streams to a staging location while its
//! SHA-256 is computed, and only then is it moved, create-only, under its final name and
//! registered in the log. A failed or interrupted upload leaves nothing behind.

use std::sync::Arc;

use axum::Json;
use axum::body::Body as AxumBody;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_api::provenance::{Envelope, INTOTO_PAYLOAD_TYPE, Statement};
use coffre_api::wire::{self, ArtifactView, DatasetView, JobView, Logged, ObjectView, RegisterDataset, Role};
use coffre_api::{ObjectSignature, SignedJob, WorkerKeys, job_id};
use coffre_log::{Digest, Entry};
use coffre_seal::Header;
use futures_util::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{ObjectStoreExt, WriteMultipart};
use serde::Deserialize;
use sqlx::Row;

use super::{Body, id};
use crate::app::{AppState, Principal, now};
use crate::error::{ApiError, ApiResult};

/// `POST /v1/tenants/{tenant}/datasets`: register a dataset with its labels (logged).
pub async fn register_dataset(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(req): Body<RegisterDataset>,
) -> ApiResult<(StatusCode, Json<DatasetView>)> {
    who.require(&tenant, &[Role::Owner])?;
    id("dataset id", &req.id)?;
    for l in &req.labels {
        id("label", l)?;
    }
    let (t, d, labels) = (tenant.clone(), req.id.clone(), req.labels.clone());
    app.log
        .call(move |ledger, _| {
            let at = ledger.next_at(now());
            ledger.record_pending(&Entry::DatasetRegistered { at, tenant: t, dataset: d, labels })?;
            Ok(())
        })
        .await?;
    Ok((StatusCode::CREATED, Json(DatasetView { id: req.id, labels: req.labels, versions: Vec::new() })))
}

async fn dataset_view(app: &AppState, tenant: &str, dataset: &str) -> ApiResult<DatasetView> {
    let (labels, versions) = app.log.read(|s| {
        let d = s.tenant(tenant).and_then(|t| t.datasets.get(dataset)).ok_or(ApiError::NotFound)?;
        Ok::<_, ApiError>((d.labels.clone(), d.versions.clone()))
    })?;
    let mut out = Vec::new();
    for (i, v) in versions.iter().enumerate() {
        let row = sqlx::query("SELECT size, signature FROM objects WHERE key_id = $1")
            .bind(&v.key_id)
            .fetch_optional(&app.pool)
            .await?;
        let (size, signer) = match row {
            Some(r) => {
                let sig: Option<Vec<u8>> = r.try_get("signature")?;
                let signer = sig
                    .and_then(|b| ObjectSignature::from_bytes(&b).ok())
                    .and_then(|s| s.signer.parse::<coffre_seal::VerifyingKey>().ok())
                    .map(|k| k.key_id());
                (crate::db::q::u(&r, "size")?, signer)
            }
            None => (0, None),
        };
        let log_index = app.log.read(|s| s.object_index(tenant, dataset, i as u64 + 1)).unwrap_or(0);
        out.push(ObjectView {
            version: i as u64 + 1,
            object_id: v.object_id.clone(),
            digest: v.digest.to_string(),
            size,
            key_id: v.key_id.clone(),
            signer,
            log_index,
        });
    }
    Ok(DatasetView { id: dataset.to_owned(), labels, versions: out })
}

const READERS: [Role; 4] = [Role::Owner, Role::Auditor, Role::Approver, Role::WorkerOperator];

/// `GET /v1/tenants/{tenant}/datasets`.
pub async fn list_datasets(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Vec<DatasetView>>> {
    who.require(&tenant, &READERS)?;
    let ids: Vec<String> = app.log.read(|s| s.datasets(&tenant).map(|(k, _)| k.clone()).collect());
    let mut out = Vec::new();
    for d in ids {
        out.push(dataset_view(&app, &tenant, &d).await?);
    }
    Ok(Json(out))
}

/// `GET /v1/tenants/{tenant}/datasets/{dataset}`.
pub async fn get_dataset(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset)): Path<(String, String)>,
) -> ApiResult<Json<DatasetView>> {
    who.require(&tenant, &READERS)?;
    Ok(Json(dataset_view(&app, &tenant, &dataset).await?))
}

/// What a streamed upload produced.
struct Staged {
    path: ObjectPath,
    digest: Digest,
    size: u64,
    header: Header,
}

/// Streams `body` to a staging object, checking the sealed header with `check` as soon as it is
/// complete, hashing everything. Any failure removes the staging object.
async fn stage(app: &AppState, body: AxumBody, check: impl FnOnce(&Header) -> ApiResult<()>) -> ApiResult<Staged> {
    let mut nonce = [0u8; 16];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ApiError::internal("random number generator failed"))?;
    let path = ObjectPath::from(format!("staging/{}", hex::encode(nonce)));
    let upload = app.objects.put_multipart(&path).await.map_err(ApiError::internal)?;
    let mut writer = WriteMultipart::new_with_chunk_size(upload, 8 << 20);
    let result = async {
        let mut ctx = aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256);
        let mut size = 0u64;
        let mut head: Vec<u8> = Vec::new();
        let mut header: Option<Header> = None;
        let mut check = Some(check);
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ApiError::bad("upload_interrupted", format!("the upload broke off: {e}")))?;
            size += chunk.len() as u64;
            if size > app.config.limits.object_bytes {
                return Err(ApiError::TooLarge(format!(
                    "objects are at most {} bytes",
                    app.config.limits.object_bytes
                )));
            }
            ctx.update(&chunk);
            if header.is_none() {
                head.extend_from_slice(&chunk);
                match Header::parse_prefix(&head) {
                    Ok((h, _)) => {
                        if let Some(c) = check.take() {
                            c(&h)?;
                        }
                        header = Some(h);
                        head = Vec::new();
                    }
                    Err(coffre_seal::SealError::Truncated(_))
                        if head.len() < coffre_seal::header::MAX_HEADER_LEN as usize => {}
                    Err(e) => {
                        return Err(ApiError::bad_hint(
                            "invalid_sealed_object",
                            format!("not a Coffre sealed object: {e}"),
                            "upload the file `coffre seal` wrote",
                        ));
                    }
                }
            }
            writer.wait_for_capacity(4).await.map_err(ApiError::internal)?;
            writer.write(&chunk);
        }
        let header = header
            .ok_or_else(|| ApiError::bad("invalid_sealed_object", "the upload ends before its sealed header does"))?;
        if let Some(plain) = header.plaintext_len {
            let expected = coffre_seal::chunked::encrypted_len(plain).map(|b| b + header.len() as u64);
            if expected != Some(size) {
                return Err(ApiError::bad(
                    "length_mismatch",
                    format!(
                        "the header implies {} bytes, the upload has {size}: truncated or extended",
                        expected.unwrap_or(0)
                    ),
                ));
            }
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(ctx.finish().as_ref());
        Ok((Digest::from_bytes(d), size, header))
    }
    .await;
    match result {
        Ok((digest, size, header)) => match writer.finish().await {
            Ok(_) => Ok(Staged { path, digest, size, header }),
            Err(e) => {
                let _ = app.objects.delete(&path).await;
                Err(ApiError::internal(e))
            }
        },
        Err(e) => {
            let _ = writer.abort().await;
            let _ = app.objects.delete(&path).await;
            Err(e)
        }
    }
}

/// Moves a staged object under `to`, create-only.
async fn place(app: &AppState, staged: &Staged, to: &ObjectPath) -> ApiResult<()> {
    match app.objects.rename_if_not_exists(&staged.path, to).await {
        Ok(()) => Ok(()),
        Err(object_store::Error::AlreadyExists { .. }) => {
            let _ = app.objects.delete(&staged.path).await;
            Err(ApiError::Conflict("an object with this id was already uploaded; objects are never overwritten".into()))
        }
        Err(e) => {
            let _ = app.objects.delete(&staged.path).await;
            Err(ApiError::internal(e))
        }
    }
}

/// The KEK secret of `tenant` at `version`, unsealed into memory for one use.
pub async fn kek_secret(app: &AppState, tenant: &str, version: u64) -> ApiResult<coffre_seal::RecipientSecretKey> {
    let sealed = sealed_kek(app, tenant, version).await?;
    open_kek(app, tenant, version, &sealed).map_err(ApiError::internal)
}

/// The tenant's KEK `version` as the root key sealed it (read once, then held: the row never
/// changes).
pub async fn sealed_kek(app: &AppState, tenant: &str, version: u64) -> ApiResult<Arc<Vec<u8>>> {
    let key = (tenant.to_owned(), version);
    if let Some(sealed) = app.sealed_keks.get(&key) {
        return Ok(sealed);
    }
    let row = sqlx::query("SELECT sealed_private FROM keks WHERE tenant = $1 AND version = $2")
        .bind(tenant)
        .bind(crate::db::q::n(version))
        .fetch_optional(&app.pool)
        .await?
        .ok_or_else(|| ApiError::internal(format!("tenant {tenant} has no KEK version {version}")))?;
    Ok(app.sealed_keks.put(key, row.try_get("sealed_private")?))
}

/// Unseals a KEK with the root key (in memory, for the caller's use only; wiped on drop).
pub fn open_kek(
    app: &AppState,
    tenant: &str,
    version: u64,
    sealed: &[u8],
) -> Result<coffre_seal::RecipientSecretKey, String> {
    let text = app.root.open(&crate::keys::kek_aad(tenant, version), sealed)?;
    let text = std::str::from_utf8(&text).map_err(|_| format!("tenant {tenant}'s KEK {version} is not text"))?;
    coffre_seal::RecipientSecretKey::from_key_file(text).map_err(|e| e.to_string())
}

/// `PUT /v1/tenants/{tenant}/datasets/{dataset}/objects`: upload a sealed object as the next
/// version (optionally with the owner's signature in the `coffre-object-signature` header).
pub async fn upload_object(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset)): Path<(String, String)>,
    headers: HeaderMap,
    body: AxumBody,
) -> ApiResult<(StatusCode, Json<ObjectView>)> {
    who.require(&tenant, &[Role::Owner])?;
    if app.log.read(|s| s.tenant(&tenant).and_then(|t| t.datasets.get(&dataset)).is_none()) {
        return Err(ApiError::NotFound);
    }
    let signature = match headers.get(wire::OBJECT_SIGNATURE_HEADER) {
        None => None,
        Some(v) => {
            let bytes = STANDARD
                .decode(v.as_bytes())
                .map_err(|_| ApiError::bad("invalid_signature", "the coffre-object-signature header is not base64"))?;
            let sig = ObjectSignature::from_bytes(&bytes).map_err(|e| ApiError::bad("invalid_signature", e))?;
            // The signer must be an owner of this tenant.
            let known = sqlx::query("SELECT roles FROM principals WHERE tenant = $1 AND signing_key = $2")
                .bind(&tenant)
                .bind(&sig.signer)
                .fetch_all(&app.pool)
                .await?
                .iter()
                .any(|r| r.try_get::<String, _>("roles").is_ok_and(|roles| roles.split(',').any(|x| x == "owner")));
            if !known {
                return Err(ApiError::bad_hint(
                    "unknown_signer",
                    "the object is signed by a key no owner of this tenant registered",
                    "register the owner's signing key (`coffre principal create --signing-key`)",
                ));
            }
            Some((sig, bytes))
        }
    };
    let kek = super::tenants::kek_view(&app, &tenant).await?;
    let kek_secret = kek_secret(&app, &tenant, kek.version).await?;
    let (t, d) = (tenant.clone(), dataset.clone());
    let staged = stage(&app, body, |h| {
        let mut problems = Vec::new();
        if h.tenant != t {
            problems.push(format!("the header names tenant {:?}, the URL {t:?}", h.tenant));
        }
        if h.dataset != d {
            problems.push(format!("the header names dataset {:?}, the URL {d:?}", h.dataset));
        }
        if !problems.is_empty() {
            return Err(ApiError::bad_hint(
                "header_mismatch",
                problems.join("; "),
                "seal with --tenant and --dataset set to this dataset",
            ));
        }
        match h.unwrap_data_key(&kek_secret) {
            Ok(_dek) => Ok(()),
            Err(coffre_seal::SealError::NoMatchingRecipient { .. }) => Err(ApiError::bad_hint(
                "not_sealed_to_kek",
                format!("the object is not sealed to the tenant's KEK (version {})", kek.version),
                format!("add -r {} when sealing (`coffre tenant show` prints it)", kek.public_key),
            )),
            Err(e) => Err(ApiError::bad("header_tampered", format!("the sealed header does not verify: {e}"))),
        }
    })
    .await?;
    if let Some((sig, _)) = &signature
        && let Err(e) = sig.verify(&staged.digest)
    {
        let _ = app.objects.delete(&staged.path).await;
        return Err(ApiError::bad("invalid_signature", format!("owner signature refused: {e}")));
    }
    let object_id = staged.header.object_id.to_string();
    let key_id = format!("dek-{object_id}");
    let location = ObjectPath::from(format!("datasets/{tenant}/{dataset}/{object_id}.coffre"));
    place(&app, &staged, &location).await?;
    // Removes what this upload stored: its file, and the rows it inserted (by key id *and*
    // tenant: a key id is unique in the vault, and another tenant's row is never ours to touch).
    let cleanup = |app: AppState, location: ObjectPath, key_id: String, tenant: String| async move {
        let _ = app.objects.delete(&location).await;
        for table in [
            "DELETE FROM objects WHERE key_id = $1 AND tenant = $2",
            "DELETE FROM data_keys WHERE key_id = $1 AND tenant = $2",
        ] {
            let _ = sqlx::query(table).bind(&key_id).bind(&tenant).execute(&app.pool).await;
        }
    };
    // The wrapped data key (its header) first: if its key id exists (the same object id uploaded
    // before, here or by another tenant), nothing of this upload is in the database yet.
    let key_row = sqlx::query(
        "INSERT INTO data_keys (key_id, tenant, dataset, kek_version, header, logged_version) \
             VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(&key_id)
    .bind(&tenant)
    .bind(&dataset)
    .bind(crate::db::q::n(kek.version))
    .bind(staged.header.as_bytes())
    .bind(crate::db::q::n(kek.version))
    .execute(&app.pool)
    .await;
    if let Err(e) = key_row {
        let _ = app.objects.delete(&location).await;
        return Err(match &e {
            sqlx::Error::Database(d) if d.is_unique_violation() => ApiError::Conflict(format!(
                "object {object_id} is already in the vault; objects are never overwritten (seal again for a new id)"
            )),
            _ => e.into(),
        });
    }
    // Then the object's location, then the log.
    let object_row = sqlx::query(
        "INSERT INTO objects (key_id, tenant, dataset, location, digest, size, signature) VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .bind(&key_id)
    .bind(&tenant)
    .bind(&dataset)
    .bind(location.to_string())
    .bind(staged.digest.to_string())
    .bind(crate::db::q::n(staged.size))
    .bind(signature.as_ref().map(|(_, b)| b.clone()))
    .execute(&app.pool)
    .await;
    if let Err(e) = object_row {
        cleanup(app.clone(), location, key_id, tenant).await;
        return Err(e.into());
    }
    let signer =
        signature.as_ref().and_then(|(s, _)| s.signer.parse::<coffre_seal::VerifyingKey>().ok()).map(|k| k.key_id());
    let (t, d, oid, kid, digest, size, sgn) = (
        tenant.clone(),
        dataset.clone(),
        object_id.clone(),
        key_id.clone(),
        staged.digest,
        staged.size,
        signer.clone(),
    );
    let logged = app
        .log
        .call(move |ledger, _| {
            let version =
                ledger.state().tenant(&t).and_then(|x| x.datasets.get(&d)).map_or(0, |x| x.versions.len() as u64) + 1;
            let at = ledger.next_at(now());
            let (index, _) = ledger.record_pending(&Entry::ObjectRegistered {
                at,
                tenant: t,
                dataset: d,
                version,
                object_id: oid,
                digest,
                size,
                key_id: kid,
                signer: sgn,
            })?;
            Ok((index, version))
        })
        .await;
    let (log_index, version) = match logged {
        Ok(v) => v,
        Err(e) => {
            cleanup(app.clone(), location, key_id, tenant).await;
            return Err(e.into());
        }
    };
    Ok((
        StatusCode::CREATED,
        Json(ObjectView {
            version,
            object_id,
            digest: staged.digest.to_string(),
            size: staged.size,
            key_id,
            signer,
            log_index,
        }),
    ))
}

async fn stream_object(app: &AppState, location: &str) -> ApiResult<Response> {
    let got = app.objects.get(&ObjectPath::from(location)).await.map_err(ApiError::internal)?;
    let size = got.meta.size;
    let stream = got.into_stream().map(|r| r.map_err(std::io::Error::other));
    Ok((
        [
            (header::CONTENT_TYPE, "application/vnd.coffre.sealed".to_owned()),
            (header::CONTENT_LENGTH, size.to_string()),
        ],
        AxumBody::from_stream(stream),
    )
        .into_response())
}

/// `GET /v1/tenants/{tenant}/datasets/{dataset}/versions/{version}/object`: the sealed object
/// (ciphertext only; a worker checks its digest against the job manifest).
pub async fn download_object(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, dataset, version)): Path<(String, String, u64)>,
) -> ApiResult<Response> {
    who.require(&tenant, &[Role::Owner, Role::WorkerOperator])?;
    let key_id = app
        .log
        .read(|s| {
            let v = s.tenant(&tenant)?.datasets.get(&dataset)?;
            v.versions.get(usize::try_from(version).ok()?.checked_sub(1)?).map(|o| o.key_id.clone())
        })
        .ok_or(ApiError::NotFound)?;
    let row = sqlx::query("SELECT location FROM objects WHERE key_id = $1")
        .bind(&key_id)
        .fetch_optional(&app.pool)
        .await?
        .ok_or(ApiError::NotFound)?;
    let location: String = row.try_get("location")?;
    stream_object(&app, &location).await
}

fn job_view(app: &AppState, tenant: &str, job: &str, signed: String) -> ApiResult<JobView> {
    app.log.read(|s| {
        let j = s.job(job).filter(|j| j.tenant == tenant).ok_or(ApiError::NotFound)?;
        Ok(JobView {
            id: job.to_owned(),
            manifest_digest: j.manifest.to_string(),
            signed,
            datasets: j.datasets.iter().map(|(d, _)| d.clone()).collect(),
            not_after: j.not_after,
            max_releases: j.max_releases,
            releases: j.releases,
        })
    })
}

/// `POST /v1/tenants/{tenant}/jobs`: submit a signed job manifest (logged; idempotent).
pub async fn submit_job(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
    Body(signed): Body<SignedJob>,
) -> ApiResult<(StatusCode, Json<JobView>)> {
    who.require(&tenant, &[Role::Owner])?;
    let verified = signed.verify().map_err(|e| ApiError::bad("invalid_job", e.to_string()))?;
    let signer = verified.signer.to_string();
    let registered = sqlx::query("SELECT roles FROM principals WHERE tenant = $1 AND signing_key = $2")
        .bind(&tenant)
        .bind(&signer)
        .fetch_all(&app.pool)
        .await?
        .iter()
        .any(|r| r.try_get::<String, _>("roles").is_ok_and(|roles| roles.split(',').any(|x| x == "owner")));
    if !registered {
        return Err(ApiError::bad_hint(
            "unknown_signer",
            format!("the job is signed by {}, which no owner of {tenant} registered", verified.signer.key_id()),
            "sign with the signing key registered for your principal",
        ));
    }
    if verified.manifest.not_after <= now() {
        return Err(ApiError::bad("job_expired", "the manifest's not_after is in the past"));
    }
    let manifest_digest = Digest::of(&verified.bytes);
    let job = job_id(&manifest_digest);
    let signed_bytes = signed.to_bytes();
    let signed_text = String::from_utf8_lossy(&signed_bytes).into_owned();
    if app.log.read(|s| s.job(&job).is_some()) {
        return Ok((StatusCode::OK, Json(job_view(&app, &tenant, &job, signed_text)?)));
    }
    let (t, j, bytes) = (tenant.clone(), job.clone(), verified.bytes.clone());
    app.log
        .call(move |ledger, _| {
            ledger.put_blob(&bytes)?;
            let manifest = ledger.put_blob(&signed_bytes)?;
            let at = ledger.next_at(now());
            ledger.record_pending(&Entry::JobSubmitted { at, tenant: t, job: j, manifest })?;
            Ok(())
        })
        .await?;
    Ok((StatusCode::CREATED, Json(job_view(&app, &tenant, &job, signed_text)?)))
}

async fn signed_job_text(app: &AppState, job: &str) -> ApiResult<String> {
    let signed = match app.log.read(|s| s.job_index(job)) {
        Some(idx) => match crate::routes::log::committed_entry(app, idx).await? {
            Some(Entry::JobSubmitted { manifest, .. }) => Some(manifest),
            _ => None,
        },
        None => None,
    };
    match signed {
        Some(d) => {
            let bytes = crate::db::log::blob(&app.pool, &d).await?.unwrap_or_default();
            Ok(String::from_utf8_lossy(&bytes).into_owned())
        }
        None => Ok(String::new()),
    }
}

/// `GET /v1/tenants/{tenant}/jobs`.
pub async fn list_jobs(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Vec<JobView>>> {
    who.require(&tenant, &READERS)?;
    let ids: Vec<String> = app.log.read(|s| s.jobs_of(&tenant));
    let mut out = Vec::new();
    for j in ids {
        let text = signed_job_text(&app, &j).await?;
        out.push(job_view(&app, &tenant, &j, text)?);
    }
    Ok(Json(out))
}

/// `GET /v1/tenants/{tenant}/jobs/{job}`.
pub async fn get_job(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, job)): Path<(String, String)>,
) -> ApiResult<Json<JobView>> {
    who.require(&tenant, &READERS)?;
    job_view(&app, &tenant, &job, String::new())?;
    let text = signed_job_text(&app, &job).await?;
    Ok(Json(job_view(&app, &tenant, &job, text)?))
}

/// Query of an artifact upload.
#[derive(Debug, Deserialize)]
pub struct ArtifactQuery {
    /// The job that produced it.
    pub job: String,
    /// The release it ran under.
    pub release: u64,
}

/// `PUT /v1/tenants/{tenant}/artifacts/{model}/{version}?job=…&release=…`: a sealed artifact and
/// its provenance (header `coffre-provenance`: base64 of the DSSE envelope), signed by the key
/// the release bound; the job must be live and versions per model only increase.
pub async fn upload_artifact(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, model, version)): Path<(String, String, u64)>,
    Query(q): Query<ArtifactQuery>,
    headers: HeaderMap,
    body: AxumBody,
) -> ApiResult<(StatusCode, Json<ArtifactView>)> {
    who.require(&tenant, &[Role::WorkerOperator])?;
    id("model name", &model)?;
    let envelope =
        headers.get(wire::PROVENANCE_HEADER).and_then(|v| STANDARD.decode(v.as_bytes()).ok()).ok_or_else(|| {
            ApiError::bad(
                "missing_provenance",
                "send the DSSE provenance envelope in the coffre-provenance header, base64",
            )
        })?;
    let env = Envelope::from_bytes(&envelope).map_err(|e| ApiError::bad("invalid_provenance", e))?;
    if env.payload_type != INTOTO_PAYLOAD_TYPE {
        return Err(ApiError::bad("invalid_provenance", format!("payload type {:?}", env.payload_type)));
    }
    // The release named must be this tenant's release of this job, the job live, and the
    // provenance signed by the key that release's report data bound.
    let (release, job) = app.log.read(|s| (s.release(q.release).cloned(), s.job(&q.job).cloned()));
    let release = release.filter(|r| r.tenant == tenant && r.job == q.job).ok_or(ApiError::NotFound)?;
    let job = job.ok_or(ApiError::NotFound)?;
    if now() > job.not_after {
        return Err(ApiError::Refused {
            code: "job_expired",
            reasons: vec![format!("job {} expired at {}", q.job, job.not_after)],
        });
    }
    let keys = crate::db::log::blob(&app.pool, &release.worker_keys).await?.ok_or(ApiError::NotFound)?;
    let worker = WorkerKeys::from_bytes(&keys).map_err(ApiError::internal)?;
    let payload =
        env.verify(&worker.signing).map_err(|e| ApiError::Refused { code: "provenance_refused", reasons: vec![e] })?;
    let statement = Statement::from_bytes(&payload).map_err(|e| ApiError::bad("invalid_provenance", e))?;
    let p = &statement.predicate;
    if p.tenant != tenant || p.job != q.job || p.release != q.release {
        return Err(ApiError::Refused {
            code: "provenance_refused",
            reasons: vec!["the provenance is for another tenant, job or release".into()],
        });
    }
    // The log's rules, checked before the upload is read: one artifact per release, and versions
    // of a model that only increase (the same registration sent again is answered below, once
    // its bytes show it is the same).
    let (earlier, latest) = app.log.read(|s| {
        (
            s.release(q.release).and_then(|r| r.artifact.clone()),
            s.tenant(&tenant).and_then(|t| t.models.get(&model).copied()).unwrap_or(0),
        )
    });
    let refused = |reason: String| ApiError::Refused { code: "refused_by_log_rules", reasons: vec![reason] };
    let early = match &earlier {
        Some((m, v, _)) if (m.as_str(), *v) != (model.as_str(), version) => {
            Some(refused(format!("release {} already registered its artifact ({m} v{v})", q.release)))
        }
        Some(_) => None,
        None if version <= latest => {
            Some(refused(format!("model {model} version {version} does not follow the registered version {latest}")))
        }
        None => None,
    };
    if let Some(e) = early {
        // Read the upload first: a worker still sending its artifact must hear this answer (and
        // register under the next version), not a connection closed under it.
        drain(body, app.config.limits.object_bytes).await;
        return Err(e);
    }
    // The artifact must be sealed to every output recipient the owner signed into the job, and
    // where one of them is the tenant's KEK (the job asked for the vault to hold the model's
    // key), that stanza must open with it: otherwise the vault could never release it later.
    let signed: SignedJob = serde_json::from_str(&signed_job_text(&app, &q.job).await?)
        .map_err(|e| ApiError::internal(format!("job {} as logged: {e}", q.job)))?;
    let manifest = signed.verify().map_err(|e| ApiError::internal(format!("job {} as logged: {e}", q.job)))?.manifest;
    let mut wanted = Vec::new();
    for r in &manifest.output_recipients {
        let key: coffre_seal::RecipientPublicKey =
            r.parse().map_err(|e| ApiError::internal(format!("job {} output recipient: {e}", q.job)))?;
        wanted.push(key.key_id());
    }
    let kek = super::tenants::kek_view(&app, &tenant).await?;
    let kek_secret = if manifest.output_recipients.iter().any(|r| r.trim() == kek.public_key) {
        Some(kek_secret(&app, &tenant, kek.version).await?)
    } else {
        None
    };
    let staged = stage(&app, body, |h| {
        let missing: Vec<String> = wanted
            .iter()
            .filter(|id| {
                !h.stanzas
                    .iter()
                    .any(|s| matches!(s, coffre_seal::header::Stanza::HpkeP384 { key_id, .. } if key_id == *id))
            })
            .map(ToString::to_string)
            .collect();
        if !missing.is_empty() {
            return Err(ApiError::Refused {
                code: "artifact_recipients",
                reasons: vec![format!(
                    "the artifact is not sealed to the job's output recipient(s) {}",
                    missing.join(", ")
                )],
            });
        }
        if let Some(secret) = &kek_secret
            && h.unwrap_data_key(secret).is_err()
        {
            return Err(ApiError::Refused {
                code: "artifact_recipients",
                reasons: vec![format!(
                    "the job asks for the tenant's KEK (version {}), whose stanza does not open",
                    kek.version
                )],
            });
        }
        Ok(())
    })
    .await?;
    if !statement.names(&staged.digest) {
        let _ = app.objects.delete(&staged.path).await;
        return Err(ApiError::Refused {
            code: "provenance_refused",
            reasons: vec![format!("the provenance's subject is not this artifact ({})", staged.digest)],
        });
    }
    let name = format!("{model}-v{version}.coffre");
    if let [subject] = statement.subject.as_slice()
        && subject.name != name
    {
        let _ = app.objects.delete(&staged.path).await;
        return Err(ApiError::Refused {
            code: "provenance_refused",
            reasons: vec![format!("the provenance names {}, not {name}", subject.name)],
        });
    }
    // The same artifact sent again for the same release, model and version (a retry whose
    // answer was lost): the registration already made, not a second one.
    if let Some((m, v, d)) = earlier {
        if d != staged.digest {
            let _ = app.objects.delete(&staged.path).await;
            return Err(refused(format!("release {} already registered its artifact ({m} v{v})", q.release)));
        }
        let _ = app.objects.delete(&staged.path).await;
        let row =
            sqlx::query("SELECT size, log_index FROM artifacts WHERE tenant = $1 AND model = $2 AND version = $3")
                .bind(&tenant)
                .bind(&model)
                .bind(crate::db::q::n(version))
                .fetch_optional(&app.pool)
                .await?
                .ok_or_else(|| ApiError::internal("a logged artifact has no stored row"))?;
        return Ok((
            StatusCode::OK,
            Json(ArtifactView {
                model,
                version,
                job: q.job,
                release: q.release,
                digest: staged.digest.to_string(),
                size: crate::db::q::u(&row, "size")?,
                log_index: crate::db::q::u(&row, "log_index")?,
            }),
        ));
    }
    // Stored, logged and recorded in one task of its own: a client that hangs up cannot cut
    // the sequence between the log entry and the row (the entry would stand without its row).
    tokio::spawn(async move {
        let location = ObjectPath::from(format!("artifacts/{tenant}/{model}/{version}.coffre"));
        place(&app, &staged, &location).await?;
        let (t, m, j, digest, rel) = (tenant.clone(), model.clone(), q.job.clone(), staged.digest, q.release);
        let env_bytes = envelope.clone();
        let logged = app
            .log
            .call(move |ledger, _| {
                let provenance = ledger.put_blob(&env_bytes)?;
                let at = ledger.next_at(now());
                let (index, _) = ledger.record_pending(&Entry::ArtifactRegistered {
                    at,
                    tenant: t,
                    job: j,
                    model: m,
                    version,
                    artifact: digest,
                    provenance,
                    release: rel,
                })?;
                Ok(index)
            })
            .await;
        let log_index = match logged {
            Ok(i) => i,
            Err(e) => {
                let _ = app.objects.delete(&location).await;
                return Err(e.into());
            }
        };
        sqlx::query(
            "INSERT INTO artifacts (tenant, model, version, job, release_index, location, digest, size, provenance, log_index) \
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
        )
        .bind(&tenant)
        .bind(&model)
        .bind(crate::db::q::n(version))
        .bind(&q.job)
        .bind(crate::db::q::n(q.release))
        .bind(location.to_string())
        .bind(staged.digest.to_string())
        .bind(crate::db::q::n(staged.size))
        .bind(envelope)
        .bind(crate::db::q::n(log_index))
        .execute(&app.pool)
        .await?;
        Ok((
            StatusCode::CREATED,
            Json(ArtifactView {
                model,
                version,
                job: q.job,
                release: q.release,
                digest: staged.digest.to_string(),
                size: staged.size,
                log_index,
            }),
        ))
    })
    .await
    .map_err(ApiError::internal)?
}

/// Reads and drops a request body (up to `limit` bytes), so that the client hears the answer.
pub async fn drain(body: AxumBody, limit: u64) {
    let mut stream = body.into_data_stream();
    let mut seen = 0u64;
    while let Some(Ok(chunk)) = stream.next().await {
        seen += chunk.len() as u64;
        if seen > limit {
            break;
        }
    }
}

/// `GET /v1/tenants/{tenant}/artifacts`.
pub async fn list_artifacts(
    State(app): State<AppState>,
    who: Principal,
    Path(tenant): Path<String>,
) -> ApiResult<Json<Vec<ArtifactView>>> {
    who.require(&tenant, &[Role::Owner, Role::Auditor, Role::WorkerOperator])?;
    let rows = sqlx::query(
        "SELECT model, version, job, release_index, digest, size, log_index FROM artifacts WHERE tenant = $1 ORDER BY model, version",
    )
    .bind(&tenant)
    .fetch_all(&app.pool)
    .await?;
    let mut out = Vec::new();
    for r in rows {
        out.push(ArtifactView {
            model: r.try_get("model")?,
            version: crate::db::q::u(&r, "version")?,
            job: r.try_get("job")?,
            release: crate::db::q::u(&r, "release_index")?,
            digest: r.try_get("digest")?,
            size: crate::db::q::u(&r, "size")?,
            log_index: crate::db::q::u(&r, "log_index")?,
        });
    }
    Ok(Json(out))
}

/// `GET /v1/tenants/{tenant}/artifacts/{model}/{version}/object`.
pub async fn download_artifact(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, model, version)): Path<(String, String, u64)>,
) -> ApiResult<Response> {
    who.require(&tenant, &[Role::Owner, Role::Auditor])?;
    let row = sqlx::query("SELECT location FROM artifacts WHERE tenant = $1 AND model = $2 AND version = $3")
        .bind(&tenant)
        .bind(&model)
        .bind(crate::db::q::n(version))
        .fetch_optional(&app.pool)
        .await?
        .ok_or(ApiError::NotFound)?;
    let location: String = row.try_get("location")?;
    stream_object(&app, &location).await
}

/// Logged, re-exported for the OpenAPI document.
pub type LoggedView = Logged;
