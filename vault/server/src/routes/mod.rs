//! The HTTP routes of API version 1. Every route authenticates (but the health and metrics
//! endpoints), checks tenant and role, and answers problems through [`crate::error::ApiError`].

use std::sync::atomic::Ordering;
use std::time::Instant;

use axum::Json;
use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use coffre_api::wire::{self, Health};

use crate::app::{AppState, PeerAddr};
use crate::error::{ApiError, ApiResult};

pub mod broker;
pub mod data;
pub mod keys;
pub mod log;
pub mod models;
pub mod tenants;
pub mod uploads;

/// The router with every route, limit and marker.
pub fn router(app: AppState) -> Router {
    let json_limit = app.config.limits.json_body_bytes;
    let uploads = Router::new()
        .route("/v1/tenants/{tenant}/datasets/{dataset}/objects", put(data::upload_object))
        .route("/v1/tenants/{tenant}/artifacts/{model}/{version}", put(data::upload_artifact))
        .route("/v1/tenants/{tenant}/models/{digest}", put(models::upload_model).get(models::get_model))
        .route("/v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}/parts/{part}", put(uploads::put_part))
        .layer(DefaultBodyLimit::disable());
    Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .route("/v1/openapi.json", get(openapi))
        .route("/v1/tenants", post(tenants::create_tenant).get(tenants::list_tenants))
        .route("/v1/tenants/{tenant}", get(tenants::get_tenant))
        .route("/v1/tenants/{tenant}/testing", put(tenants::mark_testing))
        .route("/v1/tenants/{tenant}/principals", post(tenants::create_principal).get(tenants::list_principals))
        .route("/v1/tenants/{tenant}/approvers", put(tenants::change_approvers).get(tenants::get_approvers))
        .route("/v1/tenants/{tenant}/policies", post(tenants::propose_policy).get(tenants::list_policies))
        .route("/v1/tenants/{tenant}/policies/{id}/{version}/approvals", post(tenants::approve_policy))
        .route("/v1/tenants/{tenant}/policies/{id}/{version}/activate", post(tenants::activate_policy))
        .route("/v1/tenants/{tenant}/datasets", post(data::register_dataset).get(data::list_datasets))
        .route("/v1/tenants/{tenant}/datasets/{dataset}", get(data::get_dataset))
        .route(
            "/v1/tenants/{tenant}/datasets/{dataset}/shred",
            post(keys::shred_dataset).delete(keys::cancel_dataset_shred),
        )
        .route("/v1/tenants/{tenant}/shred", post(keys::shred_tenant).delete(keys::cancel_tenant_shred))
        .route("/v1/tenants/{tenant}/datasets/{dataset}/uploads", post(uploads::start))
        .route("/v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}", get(uploads::status).delete(uploads::abandon))
        .route("/v1/tenants/{tenant}/datasets/{dataset}/uploads/{id}/complete", post(uploads::complete))
        .route("/v1/tenants/{tenant}/kek/rotate", post(keys::rotate_kek))
        .route("/v1/tenants/{tenant}/datasets/{dataset}/versions/{version}/object", get(data::download_object))
        .route("/v1/tenants/{tenant}/jobs", post(data::submit_job).get(data::list_jobs))
        .route("/v1/tenants/{tenant}/jobs/{job}", get(data::get_job))
        .route("/v1/tenants/{tenant}/artifacts", get(data::list_artifacts))
        .route("/v1/tenants/{tenant}/models", get(models::list_models))
        .route("/v1/tenants/{tenant}/models/{digest}/content", get(models::download_model))
        .route("/v1/tenants/{tenant}/artifacts/{model}/{version}/object", get(data::download_artifact))
        .route("/v1/tenants/{tenant}/denials/{index}", get(broker::get_denial))
        .route("/v1/challenge", post(broker::challenge))
        .route("/v1/release", post(broker::release))
        .route("/v1/log", get(log::info))
        .route("/v1/log/entries", get(log::entries))
        .route("/v1/log/blobs/{digest}", get(log::blob))
        .route("/v1/log/checkpoints/{size}", get(log::checkpoint))
        .layer(DefaultBodyLimit::max(json_limit))
        .merge(uploads)
        .merge(crate::kbs::router().layer(DefaultBodyLimit::max(json_limit)))
        .fallback(|| async { ApiError::NoRoute })
        .method_not_allowed_fallback(|| async { ApiError::NoRoute })
        .layer(middleware::from_fn_with_state(app.clone(), frame))
        .with_state(app)
}

/// Around every request: the per-address rate limit, the development-mode marker, metrics and a
/// structured access log line (method, route, status, latency; never a body or a header value).
async fn frame(State(app): State<AppState>, req: Request, next: Next) -> Response {
    let started = Instant::now();
    let method = req.method().to_string();
    let route = req.extensions().get::<MatchedPath>().map_or("unmatched".to_owned(), |m| m.as_str().to_owned());
    let addr = req.extensions().get::<PeerAddr>().map(|a| a.0.to_string());
    let limited = addr.as_deref().is_some_and(|a| !app.limits.address.allow(a));
    let mut resp = if limited {
        app.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        ApiError::RateLimited.into_response()
    } else if let Err(e) = app.log.fresh().await {
        // Replicas: a request sees every entry committed before it arrived, whichever replica
        // wrote it, or it is not served.
        ApiError::from(e).into_response()
    } else {
        next.run(req).await
    };
    if app.development {
        resp.headers_mut()
            .insert(wire::DEVELOPMENT_HEADER, HeaderValue::from_static("on; simulated evidence may be accepted"));
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    let secs = started.elapsed().as_secs_f64();
    let status = resp.status().as_u16();
    app.metrics.observe(&method, &route, status, secs);
    tracing::info!(target: "coffred::access", method, route, status, ms = secs * 1000.0, client = addr.unwrap_or_default());
    resp
}

async fn healthz(State(app): State<AppState>) -> Json<Health> {
    let log_size = app.log.read(|s| s.size());
    Json(Health { status: "ok".into(), development: app.development, log_size })
}

async fn readyz(State(app): State<AppState>) -> ApiResult<Json<Health>> {
    sqlx::query("SELECT 1").execute(&app.pool).await?;
    let log_size = app.log.read(|s| s.size());
    Ok(Json(Health { status: "ready".into(), development: app.development, log_size }))
}

async fn metrics(State(app): State<AppState>) -> impl IntoResponse {
    let size = app.log.read(|s| s.size());
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4")], app.metrics.render(size, app.development))
}

async fn openapi() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "application/json")], crate::openapi::document())
}

/// Reads a JSON body with a problem document on failure (instead of axum's plain text).
#[derive(Debug)]
pub struct Body<T>(pub T);

impl<T: serde::de::DeserializeOwned, S: Send + Sync> axum::extract::FromRequest<S> for Body<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(Body(v)),
            Err(e) if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE => Err(ApiError::TooLarge(e.body_text())),
            Err(e) => Err(ApiError::bad_hint(
                "malformed_body",
                e.body_text(),
                "send JSON as the OpenAPI document at /v1/openapi.json describes",
            )),
        }
    }
}

/// Validates an id (tenant, dataset, model).
pub fn id(what: &str, value: &str) -> ApiResult<()> {
    if coffre_policies::Name::new(value).is_some() {
        Ok(())
    } else {
        Err(ApiError::bad(
            "invalid_id",
            format!("{what} {value:?} is not an id (lower-case letters, digits, '.', '_', '-'; at most 64)"),
        ))
    }
}
