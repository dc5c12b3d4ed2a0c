//! The key broker's endpoints: single-use challenges, releases, denials.
//!
//! A release, in order: consume the challenge (whatever happens next, it is used up); find the
//! job in the log's state; fill missing collateral from the store; appraise the evidence (in
//! parallel with other requests) requiring REPORT_DATA = binding(nonce, worker keys, manifest);
//! hand the appraisal to the log's single writer, which evaluates the active policies, stores the
//! evidence bundle and appends the release or the denial, durably; only with the release token
//! that comes back are the data keys unwrapped from their KEK stanzas and wrapped to the worker.

use std::sync::Arc;
use std::sync::atomic::Ordering;

use axum::Json;
use axum::extract::{Path, State};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_api::WorkerKeys;
use coffre_api::wire::{
    Challenge, ChallengeRequest, DenialView, FailedCheckView, ReleaseRequest, ReleaseResponse, Role, WrappedKeyView,
};
use coffre_broker::state::parse_nonce;
use coffre_broker::{Decided, appraise};
use coffre_log::Entry;
use coffre_seal::{DataKey, Header, SystemRandom};
use sqlx::Row;

use super::Body;
use crate::app::{AppState, DataKeyRow, Principal, now};
use crate::challenges::{IssueError, Issued, Taken};
use crate::error::{ApiError, ApiResult};
use crate::sequencer::ReleaseJob;

/// `POST /v1/challenge`: a 32-byte single-use nonce for a release of `job`.
pub async fn challenge(
    State(app): State<AppState>,
    who: Principal,
    Body(req): Body<ChallengeRequest>,
) -> ApiResult<Json<Challenge>> {
    who.require(&req.tenant, &[Role::WorkerOperator])?;
    if app.log.read(|s| s.job(&req.job).is_none_or(|j| j.tenant != req.tenant)) {
        return Err(ApiError::NotFound);
    }
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| ApiError::internal("random number generator failed"))?;
    let now = now();
    let expires_at = now + app.config.limits.challenge_ttl_secs;
    let issued = Issued { tenant: req.tenant, job: req.job, principal: who.id, expires_at };
    app.challenges.issue(nonce, issued, now).await.map_err(|e| match e {
        IssueError::Full(_) => ApiError::RateLimited,
        IssueError::Database(e) => e.into(),
    })?;
    Ok(Json(Challenge { nonce: hex::encode(nonce), expires_at }))
}

/// Consumes the challenge (exactly once: the delete must touch one row) and says what is wrong
/// with it, if anything.
async fn consume(
    app: &AppState,
    nonce: &[u8; 32],
    tenant: &str,
    job: &str,
    principal: &str,
) -> ApiResult<Option<String>> {
    let issued = match app.challenges.take(nonce, principal).await? {
        Taken::Yours(issued) => issued,
        Taken::Unknown => {
            return Ok(Some("unknown or already used (a challenge is consumed by the first release attempt)".into()));
        }
        // Not an attempt of this challenge's worker: refused before anything is decided or
        // logged, so that nobody can burn another worker's challenge (the log would remember
        // its nonce as used).
        Taken::NotYours => {
            return Err(ApiError::Forbidden("this challenge was issued to another principal".into()));
        }
    };
    let mut problems = Vec::new();
    if issued.expires_at < now() {
        problems.push(format!("expired at {}", issued.expires_at));
    }
    if issued.tenant != tenant || issued.job != job {
        problems.push(format!("issued for {}'s job {}, not {tenant}'s job {job}", issued.tenant, issued.job));
    }
    Ok(if problems.is_empty() { None } else { Some(problems.join("; ")) })
}

async fn manifest(app: &AppState, job: &str) -> ApiResult<Arc<Vec<u8>>> {
    if let Some(m) = app.manifests.lock().get(job) {
        return Ok(m.clone());
    }
    let digest = app.log.read(|s| s.job(job).map(|j| j.manifest)).ok_or(ApiError::NotFound)?;
    let bytes = crate::db::log::blob(&app.pool, &digest)
        .await?
        .ok_or_else(|| ApiError::internal("job manifest blob missing"))?;
    let bytes = Arc::new(bytes);
    app.manifests.lock().insert(job.to_owned(), bytes.clone());
    Ok(bytes)
}

/// `POST /v1/release`: the job's data keys, wrapped to the worker, if the evidence verifies and
/// every applicable policy allows; the decision is in the log first either way.
pub async fn release(
    State(app): State<AppState>,
    who: Principal,
    Body(req): Body<ReleaseRequest>,
) -> ApiResult<Json<ReleaseResponse>> {
    who.require(&req.tenant, &[Role::WorkerOperator])?;
    let nonce = parse_nonce(&req.nonce).map_err(|e| ApiError::bad("invalid_nonce", e))?;
    let worker_keys = STANDARD
        .decode(&req.worker_keys)
        .map_err(|_| ApiError::bad("invalid_worker_keys", "worker_keys is not base64"))?;
    WorkerKeys::from_bytes(&worker_keys).map_err(|e| ApiError::bad("invalid_worker_keys", e))?;
    let challenge_problem = consume(&app, &nonce, &req.tenant, &req.job, &who.id).await?;
    if app.log.read(|s| s.job(&req.job).is_none_or(|j| j.tenant != req.tenant)) {
        return Err(ApiError::NotFound);
    }
    let manifest = manifest(&app, &req.job).await?;
    let mut evidence = req.evidence;
    let missing = crate::collateral::fill(&app.collateral, &mut evidence).await?;
    let verified_at = now();
    let verifier = app.clone();
    let (ev, keys, man) = (evidence.clone(), worker_keys.clone(), manifest.clone());
    let mut appraised =
        crate::app::compute(move || appraise(&verifier.verifier, &ev, nonce, &keys, &man, verified_at)).await?;
    if let Some(why) = challenge_problem {
        appraised.fail("challenge", "a challenge issued to this worker for this job, unused and unexpired", why);
    }
    for item in missing {
        appraised.fail(
            "collateral",
            "every item the evidence needs, in the request or the vault's collateral store",
            item,
        );
    }
    let (decided, checkpoint) = app
        .log
        .release(ReleaseJob {
            now: now(),
            tenant: req.tenant.clone(),
            job: req.job.clone(),
            evidence,
            appraised,
            worker_keys,
            reply: tokio::sync::oneshot::channel().0,
        })
        .await?;
    let token = match decided {
        Decided::Denied(d) => {
            app.metrics.denials.fetch_add(1, Ordering::Relaxed);
            {
                let mut checks = app.metrics.denied_checks.lock();
                for f in &d.failed {
                    *checks.entry(f.name.split(':').next_back().unwrap_or(&f.name).trim().to_owned()).or_default() += 1;
                }
            }
            tracing::info!(target: "coffred::broker", tenant = %req.tenant, job = %req.job, denial = d.index, failed = d.failed.len(), "release denied");
            return Err(ApiError::Denied {
                index: d.index,
                failed: d.failed.iter().map(FailedCheckView::from).collect(),
            });
        }
        Decided::Released(token) => token,
    };
    let index = token.index();
    let evidence_bundle = token.evidence_bundle().to_string();
    let mut policies: Vec<String> = Vec::new();
    for p in token.allows().iter().flat_map(|a| a.policies()) {
        let label = format!("{}@{}", p.id, p.version);
        if !policies.contains(&label) {
            policies.push(label);
        }
    }
    let simulated = token.allows().iter().any(coffre_policies::Allow::is_simulated);
    // Each data key: its object's header from the registry, opened with the tenant's KEK (in
    // memory, for this call only), wrapped to the worker — on a blocking thread, as all of it is
    // public-key arithmetic.
    let mut rows = Vec::with_capacity(token.key_ids().len());
    for key_id in token.key_ids() {
        let row = data_key(&app, &req.tenant, key_id).await?;
        let sealed = super::data::sealed_kek(&app, &req.tenant, row.kek_version).await?;
        rows.push((key_id.clone(), row, sealed));
    }
    let (vault, tenant) = (app.clone(), req.tenant.clone());
    let wrapped = crate::app::compute(move || {
        token.wrap(
            |id| {
                let (_, row, sealed) = rows.iter().find(|(k, _, _)| k == id).ok_or_else(|| format!("no key {id}"))?;
                let dek = open_dek(&vault, &tenant, id, row, sealed)?;
                Ok((DataKey::from_bytes(dek.expose_secret()).map_err(|e| e.to_string())?, row.dataset.clone()))
            },
            &mut SystemRandom,
        )
    })
    .await?
    .map_err(ApiError::internal)?;
    app.metrics.releases.fetch_add(1, Ordering::Relaxed);
    tracing::info!(target: "coffred::broker", tenant = %req.tenant, job = %req.job, release = index, keys = wrapped.len(), simulated, "keys released");
    Ok(Json(ReleaseResponse {
        log_index: index,
        simulated,
        policies,
        evidence_bundle,
        keys: wrapped
            .into_iter()
            .map(|w| WrappedKeyView {
                key_id: w.key_id,
                dataset: w.dataset,
                enc: STANDARD.encode(&w.enc),
                ciphertext: STANDARD.encode(&w.ciphertext),
            })
            .collect(),
        checkpoint,
    }))
}

/// A released data key in memory: held from a recent release, or unwrapped now from its
/// object's header with the tenant's KEK (public-key work: call it on a blocking thread).
pub(crate) fn open_dek(
    vault: &AppState,
    tenant: &str,
    key_id: &str,
    row: &DataKeyRow,
    sealed_kek: &[u8],
) -> Result<Arc<DataKey>, String> {
    if let Some(dek) = vault.deks.get(key_id) {
        return Ok(dek);
    }
    let kek = super::data::open_kek(vault, tenant, row.kek_version, sealed_kek)?;
    let header = Header::parse_prefix(&row.header).map_err(|e| e.to_string())?.0;
    let dek = Arc::new(header.unwrap_data_key(&kek).map_err(|e| e.to_string())?);
    vault.deks.put(key_id, dek.clone());
    Ok(dek)
}

/// A logged object's data-key row (read once, then held: the row never changes).
pub(crate) async fn data_key(app: &AppState, tenant: &str, key_id: &str) -> ApiResult<Arc<DataKeyRow>> {
    if let Some(row) = app.data_keys.get(&key_id.to_owned()).filter(|r| r.tenant == tenant) {
        return Ok(row);
    }
    let row = sqlx::query("SELECT dataset, kek_version, header FROM data_keys WHERE key_id = $1 AND tenant = $2")
        .bind(key_id)
        .bind(tenant)
        .fetch_optional(&app.pool)
        .await?
        .ok_or_else(|| ApiError::internal(format!("data key {key_id} is logged but not stored")))?;
    Ok(app.data_keys.put(
        key_id.to_owned(),
        DataKeyRow {
            tenant: tenant.to_owned(),
            dataset: row.try_get("dataset")?,
            kek_version: crate::db::q::u(&row, "kek_version")?,
            header: row.try_get("header")?,
        },
    ))
}

/// `GET /v1/tenants/{tenant}/denials/{index}`: a denial's every failed check (approvers and
/// auditors of the tenant).
pub async fn get_denial(
    State(app): State<AppState>,
    who: Principal,
    Path((tenant, index)): Path<(String, u64)>,
) -> ApiResult<Json<DenialView>> {
    who.require(&tenant, &[Role::Approver, Role::Auditor])?;
    match crate::routes::log::committed_entry(&app, index).await? {
        Some(Entry::ReleaseDenied { at, tenant: t, job, failed, .. }) if t == tenant => {
            Ok(Json(DenialView { index, at, job, failed: failed.iter().map(FailedCheckView::from).collect() }))
        }
        _ => Err(ApiError::NotFound),
    }
}
