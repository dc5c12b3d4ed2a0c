//! Trustee's KBS protocol (version 0.4.0), so that Confidential Containers guests — the
//! attestation agent, the Confidential Data Hub, `kbs-client` — fetch a tenant's data keys from
//! `coffred` unchanged, under Coffre's tenants, policies, single-use nonces and log.
//!
//! A guest's configured KBS URL is `https://<vault>/tenants/<tenant>`; its client appends
//! `/kbs/v0/…`:
//!
//! ```text
//! POST /tenants/{t}/kbs/v0/auth      {version: "0.4.0", tee, extra-params}
//!      → {nonce: base64(32 bytes), extra-params: ""} + cookie kbs-session-id
//! POST /tenants/{t}/kbs/v0/attest    {init-data, runtime-data: {nonce, tee-pubkey}, tee-evidence}
//!      → {token}            (the nonce is used up here, whether the evidence passes or not)
//! GET  /tenants/{t}/kbs/v0/resource/<dataset>/key/<version|latest>
//!      (cookie or `Authorization: Bearer <token>`) → flattened JWE of the 32-byte data key
//! ```
//!
//! **Decisions.** `/attest` verifies the evidence under the KBS binding
//! ([`coffre_attestation::kbs`]); evidence that fails is a logged denial (403, every failed
//! check). Each `/resource` is a decision of its own: the tenant's active policies that list
//! `kbs-resource` in their scope, evaluated on the attested claims, logged as
//! `coffre.kbs_released/v1` or a denial naming the resource — before any key is opened.
//!
//! **Replicas.** Sessions, attestations and the token-signing key are in the database (the key
//! sealed by the root key), so a session begun on one replica and a token issued by one are
//! honoured by every other; attestations are re-appraised from their stored evidence where
//! they are not in memory.
//!
//! **Errors** are `{"type", "detail"}`: 401 makes the clients start again at `/auth` (no
//! session, an expired one, a used nonce), 403 is a denial (clients do not retry it), 404 what
//! the tenant cannot see, 429 a flood.

pub mod jwe;

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use aws_lc_rs::rand::{SecureRandom, SystemRandom};
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair};
use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use coffre_api::{RawCpu, RawEvidence, RawGpu};
use coffre_attestation::kbs::{PROTOCOL_VERSION, RuntimeData, parse_strict};
use coffre_broker::{Appraised, KbsDecided, appraise_kbs};
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::Row;

use crate::app::{AppState, now};
use jwe::TeeKey;

/// The session cookie's name (the clients keep it in their cookie store).
pub const COOKIE: &str = "kbs-session-id";
/// AAD of the token-signing key sealed under the root key.
pub const TOKEN_KEY_AAD: &[u8] = b"coffre/kbs-token-signer/v1";
/// The most unexpired, unused sessions one tenant may hold (each `/auth` makes one).
pub const MAX_SESSIONS_PER_TENANT: i64 = 10_000;
/// The most one client address may hold, so that no single client fills a tenant's share.
pub const MAX_SESSIONS_PER_ADDRESS: i64 = 1_000;
/// The largest KBS request body: a CPU report and eight GPUs' evidence take some 100 KiB.
pub const MAX_BODY: usize = 512 << 10;
/// Seconds between sweeps of expired sessions and attestations (per process).
const SWEEP_EVERY_SECS: u64 = 10;
/// The most attestations kept in memory (each is re-appraised from the database otherwise).
const CACHED_ATTESTATIONS: usize = 4_096;
/// The TEEs this vault verifies.
const TEES: [&str; 3] = ["snp", "tdx", "sample"];

/// An answer the KBS clients understand: `{"type", "detail"}`.
#[derive(Debug)]
pub struct KbsError {
    status: StatusCode,
    kind: &'static str,
    detail: String,
}

impl KbsError {
    fn new(status: StatusCode, kind: &'static str, detail: impl Into<String>) -> Self {
        Self { status, kind, detail: detail.into() }
    }
    fn bad(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "InvalidRequest", detail)
    }
    fn unauthorized(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
    }
    fn not_found(detail: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "ResourceNotFound", detail)
    }
    fn internal(e: impl std::fmt::Display) -> Self {
        tracing::error!(target: "coffred::kbs", error = %e, "internal error");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "InternalError", "the vault failed; see its log")
    }
}

impl From<crate::error::ApiError> for KbsError {
    fn from(e: crate::error::ApiError) -> Self {
        use crate::error::ApiError as E;
        match e {
            E::RateLimited => Self::new(StatusCode::TOO_MANY_REQUESTS, "TooManyRequests", "rate limit exceeded"),
            E::NotFound => Self::not_found("no such resource (or it is not this tenant's)"),
            E::Unavailable(d) => {
                tracing::error!(target: "coffred::kbs", detail = %d, "log unavailable");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "LogUnavailable",
                    "the transparency log cannot be written; nothing was released",
                )
            }
            E::Refused { reasons, .. } => Self::new(StatusCode::UNPROCESSABLE_ENTITY, "Refused", reasons.join("; ")),
            other => Self::internal(format!("{other:?}")),
        }
    }
}

impl From<sqlx::Error> for KbsError {
    fn from(e: sqlx::Error) -> Self {
        Self::internal(format!("database: {e}"))
    }
}

impl From<coffre_broker::LedgerError> for KbsError {
    fn from(e: coffre_broker::LedgerError) -> Self {
        crate::error::ApiError::from(e).into()
    }
}

impl IntoResponse for KbsError {
    fn into_response(self) -> Response {
        let body = serde_json::json!({
            "type": format!("urn:coffre:kbs:{}", self.kind),
            "detail": self.detail,
        });
        let mut resp = (self.status, axum::Json(body)).into_response();
        if self.status == StatusCode::TOO_MANY_REQUESTS {
            resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("1"));
        }
        resp
    }
}

type KbsResult<T> = Result<T, KbsError>;

/// The broker's own state: the token-signing key and recently verified attestations.
pub struct Kbs {
    signer: EcdsaKeyPair,
    attested: Mutex<HashMap<String, Arc<Attested>>>,
    swept_at: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Kbs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Kbs {{ attested: {} }}", self.attested.lock().len())
    }
}

/// A verified attestation, as stored (what a replica needs to re-appraise it).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Record {
    tenant: String,
    tee: String,
    evidence: RawEvidence,
    /// The binding document (JCS of the runtime data), base64.
    document: String,
    verified_at: u64,
    expires_at: u64,
}

/// An attestation in memory: the record, its appraisal and the key to encrypt to.
#[derive(Debug)]
struct Attested {
    record: Record,
    document: Vec<u8>,
    tee_pubkey: Vec<u8>,
    key: TeeKey,
    appraised: Appraised,
}

impl Kbs {
    /// Opens (or, the first time, creates) the token-signing key: one ECDSA P-256 key for every
    /// replica, sealed by the root key in the database.
    pub async fn open(pool: &crate::db::Pool, root: &dyn crate::keys::RootKey) -> anyhow::Result<Self> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow::anyhow!("cannot generate the KBS token key"))?;
        let sealed = root.seal(TOKEN_KEY_AAD, pkcs8.as_ref()).map_err(anyhow::Error::msg)?;
        // Replicas starting together: the first row wins, every replica reads it back.
        sqlx::query("INSERT INTO secrets (name, sealed) VALUES ('kbs-token-signer', $1) ON CONFLICT (name) DO NOTHING")
            .bind(sealed)
            .execute(pool)
            .await?;
        let sealed: Vec<u8> = sqlx::query("SELECT sealed FROM secrets WHERE name = 'kbs-token-signer'")
            .fetch_one(pool)
            .await?
            .try_get("sealed")?;
        let pkcs8 = root.open(TOKEN_KEY_AAD, &sealed).map_err(anyhow::Error::msg)?;
        let signer = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P256_SHA256_FIXED_SIGNING, &pkcs8)
            .map_err(|e| anyhow::anyhow!("the KBS token key does not open: {e}"))?;
        Ok(Self { signer, attested: Mutex::new(HashMap::new()), swept_at: std::sync::atomic::AtomicU64::new(0) })
    }

    /// A signed token (ES256 JWT) naming an attestation.
    fn token(&self, tenant: &str, id: &str, iat: u64, exp: u64) -> KbsResult<String> {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"ES256","typ":"JWT"}"#);
        let claims = serde_json::json!({"iss": "coffred", "sub": tenant, "jti": id, "iat": iat, "exp": exp});
        let claims = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{claims}");
        let sig = self.signer.sign(&SystemRandom::new(), input.as_bytes()).map_err(KbsError::internal)?;
        Ok(format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref())))
    }

    /// The attestation a token names, when its signature is this vault's and it is unexpired.
    fn verify_token(&self, token: &str, tenant: &str, now: u64) -> KbsResult<String> {
        let bad = || KbsError::unauthorized("the token is not one this vault issued, or it has expired: attest again");
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad());
        };
        let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| bad())?;
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.signer.public_key().as_ref())
            .verify(format!("{h}.{c}").as_bytes(), &sig)
            .map_err(|_| bad())?;
        let claims: Value =
            serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).map_err(|_| bad())?).map_err(|_| bad())?;
        if claims.get("exp").and_then(Value::as_u64).is_none_or(|exp| exp < now) {
            return Err(bad());
        }
        if claims.get("sub").and_then(Value::as_str) != Some(tenant) {
            return Err(KbsError::not_found("this token was issued for another tenant"));
        }
        claims.get("jti").and_then(Value::as_str).map(str::to_owned).ok_or_else(bad)
    }

    /// Signs a stored attestation record (`id` and its bytes), so that a row altered in the
    /// database (another tenant, a later `verified_at`) is refused, not used.
    fn seal_record(&self, id: &str, bytes: &[u8]) -> KbsResult<Vec<u8>> {
        let sig = self.signer.sign(&SystemRandom::new(), &record_message(id, bytes)).map_err(KbsError::internal)?;
        Ok(sig.as_ref().to_vec())
    }

    fn record_sealed(&self, id: &str, bytes: &[u8], sig: &[u8]) -> bool {
        signature::UnparsedPublicKey::new(&signature::ECDSA_P256_SHA256_FIXED, self.signer.public_key().as_ref())
            .verify(&record_message(id, bytes), sig)
            .is_ok()
    }

    /// Drops expired sessions and attestations, at most every few seconds.
    async fn sweep(&self, pool: &crate::db::Pool, now: u64, session_ttl: u64) -> KbsResult<()> {
        let last = self.swept_at.load(Ordering::Relaxed);
        if now < last + SWEEP_EVERY_SECS
            || self.swept_at.compare_exchange(last, now, Ordering::Relaxed, Ordering::Relaxed).is_err()
        {
            return Ok(());
        }
        sqlx::query("DELETE FROM kbs_sessions WHERE expires_at < $1")
            .bind(crate::db::q::n(now.saturating_sub(session_ttl)))
            .execute(pool)
            .await?;
        sqlx::query("DELETE FROM kbs_attestations WHERE expires_at < $1")
            .bind(crate::db::q::n(now))
            .execute(pool)
            .await?;
        Ok(())
    }

    fn remember(&self, id: &str, a: Arc<Attested>) {
        let mut held = self.attested.lock();
        if held.len() >= CACHED_ATTESTATIONS {
            let now = now();
            held.retain(|_, a| a.record.expires_at >= now);
            if held.len() >= CACHED_ATTESTATIONS {
                held.clear();
            }
        }
        held.insert(id.to_owned(), a);
    }
}

/// The KBS routes, under `/tenants/{tenant}/kbs/v0`.
pub fn router() -> Router<AppState> {
    Router::new()
        .route("/tenants/{tenant}/kbs/v0/auth", post(auth))
        .route("/tenants/{tenant}/kbs/v0/attest", post(attest))
        .route("/tenants/{tenant}/kbs/v0/resource/{repo}/{kind}/{tag}", get(resource))
        .route("/tenants/{tenant}/kbs/v0/{*rest}", get(unknown).post(unknown))
        .layer(axum::extract::DefaultBodyLimit::max(MAX_BODY))
}

async fn unknown() -> KbsError {
    KbsError::not_found(
        "this vault serves /auth, /attest and /resource/<dataset>/key/<version|latest> of KBS protocol 0.4.0",
    )
}

fn record_message(id: &str, bytes: &[u8]) -> Vec<u8> {
    [b"coffre/kbs-attestation/v1\n".as_slice(), id.as_bytes(), b"\n", bytes].concat()
}

fn sha256_hex(text: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, text.as_bytes()))
}

fn random_hex(n: usize) -> KbsResult<String> {
    let mut b = vec![0u8; n];
    SystemRandom::new().fill(&mut b).map_err(|_| KbsError::internal("random number generator failed"))?;
    Ok(hex::encode(b))
}

fn cookie(headers: &HeaderMap) -> Option<String> {
    headers.get_all(header::COOKIE).iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|c| {
        let (name, value) = c.trim().split_once('=')?;
        (name == COOKIE && !value.is_empty()).then(|| value.to_owned())
    })
}

fn tenant_exists(app: &AppState, tenant: &str) -> KbsResult<()> {
    if app.log.read(|s| s.tenant(tenant).is_some()) {
        Ok(())
    } else {
        Err(KbsError::not_found("no such tenant on this vault"))
    }
}

/// A tenant serves KBS clients only while one of its active policies lists `kbs-resource`:
/// the others are not reachable through this protocol at all.
fn serves_kbs(app: &AppState, tenant: &str) -> KbsResult<()> {
    let serves = app.log.read(|s| {
        s.tenant(tenant).is_some_and(|t| {
            t.active.iter().any(|a| a.policy().scope.job_kinds.contains(&coffre_policies::JobKind::KbsResource))
        })
    });
    if serves {
        Ok(())
    } else {
        Err(KbsError::not_found("this tenant serves no KBS clients (none of its active policies lists kbs-resource)"))
    }
}

/// One token from the client address's bucket (`/auth` and `/attest`).
fn address_allowed(app: &AppState, addr: Option<&axum::Extension<crate::app::PeerAddr>>) -> KbsResult<()> {
    let key = addr.map_or_else(String::new, |a| a.0.0.to_string());
    if app.limits.kbs_address.allow(&key) {
        Ok(())
    } else {
        app.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        Err(crate::error::ApiError::RateLimited.into())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AuthRequest {
    version: String,
    tee: String,
    #[serde(rename = "extra-params", default)]
    _extra_params: Value,
}

/// `POST /auth`: a nonce for one attestation, and the session that holds it.
async fn auth(
    State(app): State<AppState>,
    Path(tenant): Path<String>,
    addr: Option<axum::Extension<crate::app::PeerAddr>>,
    body: Bytes,
) -> KbsResult<Response> {
    tenant_exists(&app, &tenant)?;
    serves_kbs(&app, &tenant)?;
    address_allowed(&app, addr.as_ref())?;
    let client = addr.map_or_else(String::new, |a| a.0.0.to_string());
    let req: AuthRequest =
        serde_json::from_slice(&body).map_err(|e| KbsError::bad(format!("not a KBS auth request: {e}")))?;
    if req.version != PROTOCOL_VERSION {
        return Err(KbsError::new(
            StatusCode::BAD_REQUEST,
            "ProtocolVersion",
            format!("protocol version {:?}: this vault speaks exactly {PROTOCOL_VERSION}", req.version),
        ));
    }
    if !TEES.contains(&req.tee.as_str()) {
        return Err(KbsError::bad(format!("TEE {:?}: this vault verifies {}", req.tee, TEES.join(", "))));
    }
    if req.tee == "sample" && !app.verifier.accepts_sample() {
        return Err(KbsError::new(
            StatusCode::FORBIDDEN,
            "PolicyDeny",
            "the sample TEE proves nothing about hardware: only a development vault built with the kbs-sample feature takes it",
        ));
    }
    if !app.limits.kbs_auth.allow(&tenant) {
        app.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Err(crate::error::ApiError::RateLimited.into());
    }
    let now = now();
    let ttl = app.config.limits.kbs_session_ttl_secs;
    // Expired sessions go now and then; the rest are capped per tenant and per address.
    app.kbs.sweep(&app.pool, now, ttl).await?;
    let caps = [
        (
            "SELECT COUNT(*) FROM kbs_sessions WHERE client = $1 AND used = 0 AND expires_at >= $2",
            &client,
            MAX_SESSIONS_PER_ADDRESS,
            "from this address",
        ),
        (
            "SELECT COUNT(*) FROM kbs_sessions WHERE tenant = $1 AND used = 0 AND expires_at >= $2",
            &tenant,
            MAX_SESSIONS_PER_TENANT,
            "for this tenant",
        ),
    ];
    for (sql, key, max, whose) in caps {
        let open: i64 = sqlx::query(sql).bind(key).bind(crate::db::q::n(now)).fetch_one(&app.pool).await?.try_get(0)?;
        if open >= max {
            app.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(KbsError::new(
                StatusCode::TOO_MANY_REQUESTS,
                "TooManyRequests",
                format!("{open} unused sessions are open {whose}; retry when some have been used or have expired"),
            ));
        }
    }
    let mut nonce = [0u8; 32];
    SystemRandom::new().fill(&mut nonce).map_err(|_| KbsError::internal("random number generator failed"))?;
    let nonce = STANDARD.encode(nonce);
    let session = random_hex(32)?;
    sqlx::query(
        "INSERT INTO kbs_sessions (id, tenant, tee, nonce, expires_at, used, attestation, client) \
         VALUES ($1, $2, $3, $4, $5, 0, NULL, $6)",
    )
    .bind(sha256_hex(&session))
    .bind(&tenant)
    .bind(&req.tee)
    .bind(&nonce)
    .bind(crate::db::q::n(now + ttl))
    .bind(&client)
    .execute(&app.pool)
    .await?;
    let mut resp = axum::Json(serde_json::json!({"nonce": nonce, "extra-params": ""})).into_response();
    let set = format!("{COOKIE}={session}; Max-Age={ttl}; Secure; HttpOnly");
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&set).map_err(KbsError::internal)?);
    Ok(resp)
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct AttestRequest {
    #[serde(rename = "init-data", default)]
    init_data: Option<Value>,
    #[serde(rename = "runtime-data")]
    runtime_data: Value,
    #[serde(rename = "tee-evidence")]
    tee_evidence: TeeEvidence,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct TeeEvidence {
    primary_evidence: Value,
    #[serde(default)]
    additional_evidence: String,
}

/// The runtime data exactly as the guest sent it: `{nonce, tee-pubkey}` and nothing else.
fn runtime_data(v: &Value, additional_evidence: &str) -> Result<RuntimeData, String> {
    let m = v.as_object().ok_or("runtime-data: expected an object")?;
    if let Some(k) = m.keys().find(|k| !["nonce", "tee-pubkey"].contains(&k.as_str())) {
        return Err(format!("runtime-data: unknown member {k:?}"));
    }
    let nonce = m.get("nonce").and_then(Value::as_str).ok_or("runtime-data: no nonce")?.to_owned();
    let tee_pubkey = m.get("tee-pubkey").cloned().ok_or("runtime-data: no tee-pubkey")?;
    Ok(RuntimeData { nonce, tee_pubkey, additional_evidence: additional_evidence.to_owned() })
}

/// The evidence a KBS client sent, as the verifiers take it: the primary evidence of `tee`
/// and the additional devices (NVIDIA GPUs; the sample device beside the sample TEE only).
fn evidence(tee: &str, e: &TeeEvidence) -> Result<RawEvidence, String> {
    let primary = serde_json::to_vec(&e.primary_evidence).map_err(|e| e.to_string())?;
    let mut gpus = Vec::new();
    let mut sample_device = None;
    if !e.additional_evidence.is_empty() {
        let extra = parse_strict(e.additional_evidence.as_bytes()).map_err(|e| format!("additional evidence: {e}"))?;
        let m = extra.as_object().ok_or("additional evidence: expected a JSON object of devices")?;
        for (device, value) in m {
            match device.as_str() {
                "nvidia" => {
                    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
                    gpus = coffre_attestation::coco::nvidia_from_aa(&bytes)?
                        .into_iter()
                        .map(|g| RawGpu { report: g.report, chain: g.chain, rims: Vec::new() })
                        .collect();
                }
                "sampledevice" if tee == "sample" => {
                    sample_device = Some(serde_json::to_vec(value).map_err(|e| e.to_string())?);
                }
                "sampledevice" => return Err("a sample device beside real hardware evidence is refused".into()),
                other => return Err(format!("additional evidence: device {other:?} (this vault verifies nvidia)")),
            }
        }
    }
    let cpu = match tee {
        "snp" => RawCpu::from_collected(coffre_attestation::coco::snp_from_aa(&primary)?),
        // The vault completes the quote with Intel's collateral from its store.
        "tdx" => RawCpu::Tdx { quote: coffre_attestation::coco::tdx_from_aa(&primary)?.0, collateral: Vec::new() },
        "sample" => RawCpu::Sample { evidence: primary, device: sample_device },
        other => return Err(format!("TEE {other:?}")),
    };
    Ok(RawEvidence { cpu, gpus })
}

fn denied(index: u64, failed: &[coffre_log::FailedCheck], what: &str) -> KbsError {
    let checks: Vec<String> = failed.iter().map(|f| format!("{} ({})", f.name, f.actual)).collect();
    KbsError::new(
        StatusCode::FORBIDDEN,
        "PolicyDeny",
        format!(
            "{what} denied: entry {index} of the transparency log; {} check(s) failed: {}",
            failed.len(),
            checks.join("; ")
        ),
    )
}

/// `POST /attest`: the guest's evidence under the KBS binding. The session's nonce is used up
/// first, whatever follows.
async fn attest(
    State(app): State<AppState>,
    Path(tenant): Path<String>,
    addr: Option<axum::Extension<crate::app::PeerAddr>>,
    headers: HeaderMap,
    body: Bytes,
) -> KbsResult<Response> {
    tenant_exists(&app, &tenant)?;
    address_allowed(&app, addr.as_ref())?;
    let session = cookie(&headers).ok_or_else(|| KbsError::unauthorized("no KBS session: start at /auth"))?;
    let id = sha256_hex(&session);
    let row = sqlx::query(
        "UPDATE kbs_sessions SET used = 1 WHERE id = $1 AND tenant = $2 AND used = 0 RETURNING tee, nonce, expires_at",
    )
    .bind(&id)
    .bind(&tenant)
    .fetch_optional(&app.pool)
    .await?
    .ok_or_else(|| {
        KbsError::unauthorized("no unused KBS session: its nonce serves one /attest only; start again at /auth")
    })?;
    let tee: String = row.try_get("tee")?;
    let nonce: String = row.try_get("nonce")?;
    let session_nonce = coffre_broker::release::kbs_nonce(&nonce).map_err(KbsError::internal)?;
    let now = now();
    if crate::db::q::u(&row, "expires_at").map_err(KbsError::internal)? < now {
        return Err(KbsError::unauthorized("the KBS session expired: start again at /auth"));
    }
    // The body, strictly: a member twice or a fraction is refused rather than read one way
    // here and another way by whoever hashed it.
    let strict = parse_strict(&body).map_err(|e| KbsError::bad(format!("not a KBS attestation: {e}")))?;
    let req: AttestRequest =
        serde_json::from_value(strict).map_err(|e| KbsError::bad(format!("not a KBS attestation: {e}")))?;
    let _ = req.init_data; // Not bound by this vault's policies (yet): see the README.
    let rd = runtime_data(&req.runtime_data, &req.tee_evidence.additional_evidence).map_err(KbsError::bad)?;
    let document = rd.binding_document().map_err(KbsError::bad)?;
    let tee_pubkey = rd.tee_pubkey_bytes().map_err(KbsError::bad)?;
    let key = TeeKey::from_jwk(&rd.tee_pubkey).map_err(KbsError::bad)?;
    let mut raw = evidence(&tee, &req.tee_evidence);
    let missing = match raw.as_mut() {
        Ok(r) => crate::collateral::fill(&app.collateral, r).await?,
        Err(_) => Vec::new(),
    };
    let verifier = app.clone();
    let (ev, doc) = (raw.clone(), document.clone());
    let mut appraised =
        crate::app::compute(move || appraise_kbs(&verifier.verifier, ev.as_ref().map_err(String::as_str), &doc, now))
            .await?;
    // What the log keeps of a request that is not even well formed: the failed checks under the
    // session's own nonce, and none of its bytes.
    let well_formed = rd.nonce == nonce && raw.is_ok();
    if rd.nonce != nonce {
        appraised.fail("nonce", "the nonce this session was given at /auth", format!("{:?}", rd.nonce));
    }
    for item in missing {
        appraised.fail("collateral", "every item the evidence needs, in the vault's collateral store", item);
    }
    if appraised.verified.is_none() {
        appraised.nonce = session_nonce;
        let (t, a) = (tenant.clone(), appraised.clone());
        let (ev, d) = if well_formed { (raw.clone().ok(), Some(document.clone())) } else { (None, None) };
        let denial =
            app.log.call(move |ledger, _| ledger.deny_kbs_attestation(now, &t, ev.as_ref(), &a, d.as_deref())).await?;
        app.metrics.denials.fetch_add(1, Ordering::Relaxed);
        tracing::info!(target: "coffred::kbs", tenant = %tenant, tee = %tee, denial = denial.index, failed = denial.failed.len(), "KBS attestation denied");
        return Err(denied(denial.index, &denial.failed, "attestation"));
    }
    let raw = raw.map_err(KbsError::internal)?;
    let expires_at = now + app.config.limits.kbs_token_ttl_secs;
    let attestation = random_hex(16)?;
    let record = Record {
        tenant: tenant.clone(),
        tee: tee.clone(),
        evidence: raw,
        document: STANDARD.encode(&document),
        verified_at: now,
        expires_at,
    };
    let bytes = serde_json::to_vec(&record).map_err(KbsError::internal)?;
    let sig = app.kbs.seal_record(&attestation, &bytes)?;
    sqlx::query("INSERT INTO kbs_attestations (id, tenant, record, sig, expires_at) VALUES ($1, $2, $3, $4, $5)")
        .bind(&attestation)
        .bind(&tenant)
        .bind(bytes)
        .bind(sig)
        .bind(crate::db::q::n(expires_at))
        .execute(&app.pool)
        .await?;
    sqlx::query("UPDATE kbs_sessions SET attestation = $1, expires_at = $2 WHERE id = $3")
        .bind(&attestation)
        .bind(crate::db::q::n(expires_at))
        .bind(&id)
        .execute(&app.pool)
        .await?;
    let simulated =
        appraised.verified.as_ref().is_some_and(coffre_attestation::composite::VerifiedComposite::is_simulated);
    app.kbs.remember(&attestation, Arc::new(Attested { record, document, tee_pubkey, key, appraised }));
    let token = app.kbs.token(&tenant, &attestation, now, expires_at)?;
    tracing::info!(target: "coffred::kbs", tenant = %tenant, tee = %tee, simulated, "KBS guest attested");
    let mut resp = axum::Json(serde_json::json!({ "token": token })).into_response();
    // The cookie lives as long as the attestation it now names.
    let set = format!("{COOKIE}={session}; Max-Age={}; Secure; HttpOnly", app.config.limits.kbs_token_ttl_secs);
    resp.headers_mut().insert(header::SET_COOKIE, HeaderValue::from_str(&set).map_err(KbsError::internal)?);
    Ok(resp)
}

/// The attestation a request presents: `Authorization: Bearer <token>` or the session cookie.
async fn presented(app: &AppState, tenant: &str, headers: &HeaderMap, now: u64) -> KbsResult<Arc<Attested>> {
    let bearer = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer ").map(str::trim).map(str::to_owned));
    let id = match bearer {
        Some(token) => app.kbs.verify_token(&token, tenant, now)?,
        None => {
            let session =
                cookie(headers).ok_or_else(|| KbsError::unauthorized("no KBS session or token: attest first"))?;
            let row =
                sqlx::query("SELECT attestation FROM kbs_sessions WHERE id = $1 AND tenant = $2 AND expires_at >= $3")
                    .bind(sha256_hex(&session))
                    .bind(tenant)
                    .bind(crate::db::q::n(now))
                    .fetch_optional(&app.pool)
                    .await?;
            row.and_then(|r| r.try_get::<Option<String>, _>("attestation").ok().flatten()).ok_or_else(|| {
                KbsError::unauthorized("this KBS session has not attested (or has expired): attest first")
            })?
        }
    };
    let cached = app.kbs.attested.lock().get(&id).cloned();
    let a = match cached {
        Some(a) => a,
        None => {
            let row = sqlx::query("SELECT record, sig FROM kbs_attestations WHERE id = $1 AND tenant = $2")
                .bind(&id)
                .bind(tenant)
                .fetch_optional(&app.pool)
                .await?
                .ok_or_else(|| KbsError::unauthorized("this attestation is unknown or expired: attest again"))?;
            let bytes: Vec<u8> = row.try_get("record")?;
            let sig: Vec<u8> = row.try_get("sig")?;
            if !app.kbs.record_sealed(&id, &bytes, &sig) {
                return Err(KbsError::internal(format!("KBS attestation {id} was altered in the database")));
            }
            let record: Record = serde_json::from_slice(&bytes).map_err(KbsError::internal)?;
            let document = STANDARD.decode(&record.document).map_err(KbsError::internal)?;
            let rd = RuntimeData::from_binding_document(&document).map_err(KbsError::internal)?;
            let tee_pubkey = rd.tee_pubkey_bytes().map_err(KbsError::internal)?;
            let key = TeeKey::from_jwk(&rd.tee_pubkey).map_err(KbsError::internal)?;
            // Another replica verified it: appraised again here, at the time it was verified,
            // so that both decide on the same claims.
            let (verifier, ev, doc, at) = (app.clone(), record.evidence.clone(), document.clone(), record.verified_at);
            let appraised = crate::app::compute(move || appraise_kbs(&verifier.verifier, Ok(&ev), &doc, at)).await?;
            let a = Arc::new(Attested { record, document, tee_pubkey, key, appraised });
            app.kbs.remember(&id, a.clone());
            a
        }
    };
    if a.record.tenant != tenant {
        return Err(KbsError::not_found("this attestation was made for another tenant"));
    }
    if a.record.expires_at < now {
        return Err(KbsError::unauthorized("the attestation expired: attest again"));
    }
    Ok(a)
}

/// `GET /resource/<dataset>/key/<version|latest>`: one data key, if the tenant's policies allow
/// it for this attestation; the decision is in the log first either way.
async fn resource(
    State(app): State<AppState>,
    Path((tenant, repo, kind, tag)): Path<(String, String, String, String)>,
    headers: HeaderMap,
) -> KbsResult<Response> {
    tenant_exists(&app, &tenant)?;
    let now = now();
    let a = presented(&app, &tenant, &headers, now).await?;
    let tag_ok = tag.len() <= 24 && tag.bytes().all(|b| b.is_ascii_alphanumeric());
    if coffre_policies::Name::new(&repo).is_none() || kind != "key" || !tag_ok {
        return Err(KbsError::not_found("resources are <dataset>/key/<version|latest>"));
    }
    let path = format!("{repo}/{kind}/{tag}");
    app.log.read(|s| s.resolve_kbs(&tenant, &path)).map_err(KbsError::not_found)?;
    let (t, p, attested) = (tenant.clone(), path.clone(), a.clone());
    let decided = app
        .log
        .call(move |ledger, _| {
            ledger.decide_kbs(
                now,
                &t,
                &p,
                &attested.record.evidence,
                &attested.appraised,
                (&attested.document, &attested.tee_pubkey),
            )
        })
        .await?;
    let token = match decided {
        KbsDecided::Denied(d) => {
            app.metrics.denials.fetch_add(1, Ordering::Relaxed);
            tracing::info!(target: "coffred::kbs", tenant = %tenant, resource = %path, denial = d.index, failed = d.failed.len(), "KBS resource denied");
            return Err(denied(d.index, &d.failed, &format!("resource {path}")));
        }
        KbsDecided::Released(token) => token,
    };
    let (index, simulated) = (token.index(), token.simulated());
    let row = crate::routes::broker::data_key(&app, &tenant, token.key_id()).await?;
    let sealed = crate::routes::data::sealed_kek(&app, &tenant, row.kek_version).await?;
    let (vault, t) = (app.clone(), tenant.clone());
    let jwe = crate::app::compute(move || {
        token.open(|key_id| {
            let dek = crate::routes::broker::open_dek(&vault, &t, key_id, &row, &sealed)?;
            a.key.encrypt(dek.expose_secret())
        })
    })
    .await?
    .map_err(KbsError::internal)?;
    app.metrics.releases.fetch_add(1, Ordering::Relaxed);
    tracing::info!(target: "coffred::kbs", tenant = %tenant, resource = %path, release = index, simulated, "key released to a KBS client");
    Ok(axum::Json(jwe).into_response())
}
