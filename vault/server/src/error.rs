//! One error type for every handler, and the one place that maps it to an HTTP status and an RFC
//! 7807 problem document with a stable code.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use coffre_api::wire::{FailedCheckView, Problem};
use coffre_broker::LedgerError;

/// What a handler can answer besides success.
#[derive(Debug)]
pub enum ApiError {
    /// 400: the request is malformed (with what to fix).
    BadRequest { code: &'static str, detail: String, hint: Option<String> },
    /// 401: no or unknown credentials.
    Unauthenticated,
    /// 403: authenticated, but the role does not allow it.
    Forbidden(String),
    /// 404: does not exist — or is another tenant's (the same answer, on purpose).
    NotFound,
    /// 404: no such route in API version 1.
    NoRoute,
    /// 409: conflicts with what exists (an object id already uploaded, a version already there).
    Conflict(String),
    /// 413: too large.
    TooLarge(String),
    /// 422: well-formed but refused by the log's rules or a check (every reason).
    Refused { code: &'static str, reasons: Vec<String> },
    /// 403: a release denied, with its denial id and every failed check.
    Denied { index: u64, failed: Vec<FailedCheckView> },
    /// 429: too many requests.
    RateLimited,
    /// 503: the log cannot be written (nothing was released).
    Unavailable(String),
    /// 500: a fault on the vault's side (details logged, not sent).
    Internal(String),
}

impl ApiError {
    /// A 400 with a code and detail.
    pub fn bad(code: &'static str, detail: impl Into<String>) -> Self {
        ApiError::BadRequest { code, detail: detail.into(), hint: None }
    }

    /// A 400 with a hint.
    pub fn bad_hint(code: &'static str, detail: impl Into<String>, hint: impl Into<String>) -> Self {
        ApiError::BadRequest { code, detail: detail.into(), hint: Some(hint.into()) }
    }

    /// A 500 whose detail is logged only.
    pub fn internal(e: impl std::fmt::Display) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<crate::db::DbError> for ApiError {
    fn from(e: crate::db::DbError) -> Self {
        ApiError::Internal(e.to_string())
    }
}

impl From<sqlx::Error> for ApiError {
    fn from(e: sqlx::Error) -> Self {
        ApiError::Internal(format!("database: {e}"))
    }
}

impl From<LedgerError> for ApiError {
    fn from(e: LedgerError) -> Self {
        match e {
            LedgerError::Refused(reasons) => ApiError::Refused { code: "refused_by_log_rules", reasons },
            LedgerError::NotFound(_) => ApiError::NotFound,
            LedgerError::Poisoned | LedgerError::Log(_) | LedgerError::Corrupt { .. } => {
                ApiError::Unavailable(e.to_string())
            }
        }
    }
}

fn problem(status: StatusCode, code: &str, title: &str, detail: String) -> Problem {
    Problem {
        kind: format!("urn:coffre:problem:{code}"),
        title: title.into(),
        status: status.as_u16(),
        detail,
        code: code.into(),
        hint: None,
        denial: None,
        failed: Vec::new(),
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let p = match self {
            ApiError::BadRequest { code, detail, hint } => {
                Problem { hint, ..problem(StatusCode::BAD_REQUEST, code, "Bad request", detail) }
            }
            ApiError::Unauthenticated => Problem {
                hint: Some("send `Authorization: Bearer <token>` or a registered client certificate".into()),
                ..problem(StatusCode::UNAUTHORIZED, "unauthenticated", "Unauthenticated", "no valid credentials".into())
            },
            ApiError::Forbidden(d) => problem(StatusCode::FORBIDDEN, "forbidden", "Forbidden", d),
            ApiError::NotFound => {
                problem(StatusCode::NOT_FOUND, "not_found", "Not found", "no such resource (or it is not yours)".into())
            }
            ApiError::NoRoute => Problem {
                hint: Some("see /v1/openapi.json".into()),
                ..problem(
                    StatusCode::NOT_FOUND,
                    "no_such_route",
                    "No such route",
                    "no such route or method in API version 1".into(),
                )
            },
            ApiError::Conflict(d) => problem(StatusCode::CONFLICT, "conflict", "Conflict", d),
            ApiError::TooLarge(d) => problem(StatusCode::PAYLOAD_TOO_LARGE, "too_large", "Too large", d),
            ApiError::Refused { code, reasons } => {
                problem(StatusCode::UNPROCESSABLE_ENTITY, code, "Refused", reasons.join("; "))
            }
            ApiError::Denied { index, failed } => Problem {
                denial: Some(index),
                failed: failed.clone(),
                hint: Some(format!(
                    "the denial is entry {index} of the transparency log; the tenant's approvers and auditors can read it at /v1/tenants/<tenant>/denials/{index}"
                )),
                ..problem(
                    StatusCode::FORBIDDEN,
                    "release_denied",
                    "Release denied",
                    format!(
                        "{} check(s) failed: {}",
                        failed.len(),
                        failed.iter().map(|f| f.name.as_str()).collect::<Vec<_>>().join(", ")
                    ),
                )
            },
            ApiError::RateLimited => Problem {
                hint: Some("slow down and retry after a second".into()),
                ..problem(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    "Too many requests",
                    "rate limit exceeded".into(),
                )
            },
            ApiError::Unavailable(d) => {
                tracing::error!(detail = %d, "log unavailable");
                problem(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "log_unavailable",
                    "Log unavailable",
                    "the transparency log cannot be written; nothing was released".into(),
                )
            }
            ApiError::Internal(d) => {
                tracing::error!(detail = %d, "internal error");
                problem(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "internal",
                    "Internal error",
                    "the vault failed; see its log".into(),
                )
            }
        };
        let status = StatusCode::from_u16(p.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
        let mut resp = (status, Json(p)).into_response();
        resp.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/problem+json"));
        if status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

/// Handler results.
pub type ApiResult<T> = Result<T, ApiError>;
