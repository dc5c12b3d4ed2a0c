//! The vault's shared state, authentication and authorization, rate limits and metrics.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use coffre_api::pin::Fingerprint;
use coffre_api::wire::{PrincipalView, Role};
use coffre_attestation::composite::CompositeVerifier;
use object_store::ObjectStore;
use parking_lot::Mutex;
use sqlx::Row;

use crate::config::Config;
use crate::db::Pool;
use crate::error::{ApiError, ApiResult};
use crate::keys::RootKey;
use crate::sequencer::Sequencer;

/// Everything a handler needs.
pub struct App {
    /// Configuration.
    pub config: Config,
    /// Development mode: simulated roots trusted, every response marked.
    pub development: bool,
    /// The database.
    pub pool: Pool,
    /// The log's single writer.
    pub log: Sequencer,
    /// The log's verifier key text (`name+hash+base64`).
    pub log_key: String,
    /// The root key backend.
    pub root: Box<dyn RootKey>,
    /// Sealed objects and artifacts.
    pub objects: Arc<dyn ObjectStore>,
    /// Evidence verification (pinned vendor roots; simulated roots in development mode).
    pub verifier: CompositeVerifier,
    /// The TLS certificate's fingerprint.
    pub fingerprint: Fingerprint,
    /// Principals by token hash and certificate fingerprint (loaded at start, kept current).
    pub principals: Mutex<PrincipalCache>,
    /// Rate limiters.
    pub limits: RateLimits,
    /// Prometheus metrics.
    pub metrics: Metrics,
    /// Outstanding release challenges.
    pub challenges: crate::challenges::Challenges,
    /// Collateral (VCEKs, CRLs, RIMs), read through a memory cache.
    pub collateral: crate::collateral::Collateral,
    /// Tenants' KEKs as sealed by the root key, by (tenant, version): immutable rows, read once.
    pub sealed_keks: Immutable<(String, u64), Vec<u8>>,
    /// Data-key rows by key id: immutable once their object is logged, read once.
    pub data_keys: Immutable<String, DataKeyRow>,
    /// Data keys held briefly between releases of the same object.
    pub deks: DekCache,
    /// Job manifests' canonical bytes, by job id (immutable once logged).
    pub manifests: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    /// The KBS protocol's token key and attestations.
    pub kbs: crate::kbs::Kbs,
}

impl std::fmt::Debug for App {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "App {{ development: {}, root: {} }}", self.development, self.root.describe())
    }
}

/// A stored data key: the object's sealed header (its KEK stanza wraps the DEK).
#[derive(Debug)]
pub struct DataKeyRow {
    /// The tenant.
    pub tenant: String,
    /// The dataset.
    pub dataset: String,
    /// The KEK version the header is sealed to.
    pub kek_version: u64,
    /// The header bytes (no secret: the DEK inside is wrapped).
    pub header: Vec<u8>,
}

/// Database rows that never change once written, held in memory after their first read, so that
/// a release reads nothing from the database. Bounded: it starts over when full. What it holds is
/// never a plaintext secret (sealed KEKs, wrapped data keys).
#[derive(Debug)]
pub struct Immutable<K, V> {
    map: Mutex<HashMap<K, Arc<V>>>,
    max: usize,
}

impl<K: std::hash::Hash + Eq, V> Immutable<K, V> {
    /// Holds at most `max` rows.
    pub fn new(max: usize) -> Self {
        Self { map: Mutex::new(HashMap::new()), max }
    }

    /// The row, if held.
    pub fn get(&self, key: &K) -> Option<Arc<V>> {
        self.map.lock().get(key).cloned()
    }

    /// Forgets `key` (its row changed or is gone).
    pub fn forget(&self, key: &K) {
        self.map.lock().remove(key);
    }

    /// Holds `value` (as read from the database) and returns it.
    pub fn put(&self, key: K, value: V) -> Arc<V> {
        let value = Arc::new(value);
        let mut map = self.map.lock();
        if map.len() >= self.max {
            map.clear();
        }
        map.insert(key, value.clone());
        value
    }
}

/// Data keys unwrapped for a release, held briefly for the next release of the same object: a
/// fleet attesting at once asks for the same few keys thousands of times, and each unwrap is a
/// P-384 key agreement. Entries live at most `ttl` (then they are dropped and wiped; `DataKey`
/// zeroizes), the count is bounded, and a zero `ttl` holds nothing. The process holding them
/// already holds the root key that opens every KEK; SECURITY.md says what this changes.
#[derive(Debug)]
pub struct DekCache {
    ttl: std::time::Duration,
    held: Mutex<HashMap<String, (Instant, Arc<coffre_seal::DataKey>)>>,
}

/// The most data keys held at once.
const MAX_HELD_DEKS: usize = 4_096;

impl DekCache {
    /// Holds keys for `ttl`.
    pub fn new(ttl: std::time::Duration) -> Self {
        Self { ttl, held: Mutex::new(HashMap::new()) }
    }

    /// The key `key_id` if held and fresh; a stale one is dropped here.
    pub fn get(&self, key_id: &str) -> Option<Arc<coffre_seal::DataKey>> {
        let mut held = self.held.lock();
        match held.get(key_id) {
            Some((at, key)) if at.elapsed() < self.ttl => Some(key.clone()),
            Some(_) => {
                held.remove(key_id);
                None
            }
            None => None,
        }
    }

    /// Holds `key` (when holding is enabled), dropping expired keys first.
    pub fn put(&self, key_id: &str, key: Arc<coffre_seal::DataKey>) {
        if self.ttl.is_zero() {
            return;
        }
        self.sweep();
        let mut held = self.held.lock();
        if held.len() >= MAX_HELD_DEKS {
            held.clear();
        }
        held.insert(key_id.to_owned(), (Instant::now(), key));
    }

    /// Drops (and so wipes) `key_id` now (its key is being shredded).
    pub fn forget(&self, key_id: &str) {
        self.held.lock().remove(key_id);
    }

    /// Drops (and so wipes) every expired key; the server calls this every few seconds.
    pub fn sweep(&self) {
        let ttl = self.ttl;
        self.held.lock().retain(|_, (at, _)| at.elapsed() < ttl);
    }

    /// How many keys are held (for tests and metrics).
    pub fn len(&self) -> usize {
        self.held.lock().len()
    }

    /// Whether no key is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Runs CPU-bound work (signature verification, key wrapping) on the compute pool, one thread
/// per core, off the threads that serve connections. One pool for all requests keeps a fleet's
/// burst from becoming hundreds of threads contending for two cores.
pub async fn compute<R: Send + 'static>(f: impl FnOnce() -> R + Send + 'static) -> ApiResult<R> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    rayon::spawn(move || {
        // A panic on the pool would abort the process (rayon's default): caught here, it fails
        // this request only.
        let _ = tx.send(std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)));
    });
    match rx.await {
        Ok(Ok(r)) => Ok(r),
        Ok(Err(_)) => Err(ApiError::internal("a verification task panicked; nothing was released")),
        Err(_) => Err(ApiError::internal("a verification task was lost")),
    }
}

/// Shared application state.
pub type AppState = Arc<App>;

/// An authenticated principal.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Principal {
    /// Id.
    pub id: String,
    /// Tenant; `None` for the vault administrator.
    pub tenant: Option<String>,
    /// Name.
    pub name: String,
    /// Roles.
    pub roles: Vec<Role>,
    /// Signing key (owners).
    pub signing_key: Option<String>,
    /// Client certificate fingerprint, when registered.
    pub cert_sha256: Option<String>,
}

impl Principal {
    /// The API view.
    pub fn view(&self) -> PrincipalView {
        PrincipalView {
            id: self.id.clone(),
            tenant: self.tenant.clone(),
            name: self.name.clone(),
            roles: self.roles.clone(),
            signing_key: self.signing_key.clone(),
            client_cert_sha256: self.cert_sha256.clone(),
        }
    }

    /// Whether this is the vault administrator.
    pub fn is_vault_admin(&self) -> bool {
        self.tenant.is_none() && self.roles.contains(&Role::Admin)
    }

    /// Allows the call when the principal belongs to `tenant` and has one of `roles`. Another
    /// tenant's principal gets 404, exactly as for a tenant that does not exist.
    pub fn require(&self, tenant: &str, roles: &[Role]) -> ApiResult<()> {
        if self.tenant.as_deref() != Some(tenant) {
            return Err(ApiError::NotFound);
        }
        if !roles.iter().any(|r| self.roles.contains(r)) {
            return Err(ApiError::Forbidden(format!(
                "this needs one of the roles {}",
                roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
            )));
        }
        Ok(())
    }

    /// Allows the call to the vault administrator, or to `tenant`'s principals with one of `roles`.
    pub fn require_or_vault_admin(&self, tenant: &str, roles: &[Role]) -> ApiResult<()> {
        if self.is_vault_admin() { Ok(()) } else { self.require(tenant, roles) }
    }
}

/// In-memory index of principals.
#[derive(Debug, Default)]
pub struct PrincipalCache {
    by_token: HashMap<String, Principal>,
    by_cert: HashMap<String, Principal>,
}

impl PrincipalCache {
    /// Adds or replaces one.
    pub fn insert(&mut self, token_hash: Option<String>, p: Principal) {
        if let Some(c) = &p.cert_sha256 {
            self.by_cert.insert(c.clone(), p.clone());
        }
        if let Some(h) = token_hash {
            self.by_token.insert(h, p);
        }
    }
}

/// SHA-256 of a token, hex: what the database keeps.
pub fn token_hash(token: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, token.as_bytes()))
}

/// A fresh API token: `coffre_` and 32 random bytes, base64url.
pub fn new_token() -> ApiResult<String> {
    use base64::Engine;
    let mut b = [0u8; 32];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| ApiError::internal("random number generator failed"))?;
    Ok(format!("coffre_{}", base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(b)))
}

const PRINCIPAL_COLUMNS: &str = "SELECT id, tenant, name, roles, token_hash, cert_sha256, signing_key FROM principals";

fn principal_row(r: &sqlx::any::AnyRow) -> Result<(Option<String>, Principal), sqlx::Error> {
    let roles: String = r.try_get("roles")?;
    let p = Principal {
        id: r.try_get("id")?,
        tenant: r.try_get("tenant")?,
        name: r.try_get("name")?,
        roles: roles.split(',').filter_map(|s| s.parse().ok()).collect(),
        signing_key: r.try_get("signing_key")?,
        cert_sha256: r.try_get("cert_sha256")?,
    };
    Ok((r.try_get("token_hash")?, p))
}

/// Loads every principal.
pub async fn load_principals(pool: &Pool) -> ApiResult<PrincipalCache> {
    let rows = sqlx::query(PRINCIPAL_COLUMNS).fetch_all(pool).await?;
    let mut cache = PrincipalCache::default();
    for r in rows {
        let (hash, p) = principal_row(&r)?;
        cache.insert(hash, p);
    }
    Ok(cache)
}

/// Replicas: a principal another replica created since this one started, by token hash or by
/// certificate fingerprint (then kept in the cache).
async fn lookup_principal(app: &App, token_hash: Option<&str>, cert: Option<&str>) -> ApiResult<Option<Principal>> {
    let row = match (token_hash, cert) {
        (Some(h), _) => {
            sqlx::query(sqlx::AssertSqlSafe(format!("{PRINCIPAL_COLUMNS} WHERE token_hash = $1")))
                .bind(h)
                .fetch_optional(&app.pool)
                .await?
        }
        (None, Some(c)) => {
            sqlx::query(sqlx::AssertSqlSafe(format!("{PRINCIPAL_COLUMNS} WHERE cert_sha256 = $1")))
                .bind(c)
                .fetch_optional(&app.pool)
                .await?
        }
        (None, None) => None,
    };
    let Some(row) = row else { return Ok(None) };
    let (hash, p) = principal_row(&row)?;
    app.principals.lock().insert(hash, p.clone());
    Ok(Some(p))
}

/// The client certificate of the connection, when one was presented.
#[derive(Debug, Clone, Default)]
pub struct PeerCert(pub Option<String>);

/// The client's address.
#[derive(Debug, Clone, Copy)]
pub struct PeerAddr(pub IpAddr);

impl FromRequestParts<AppState> for Principal {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, app: &AppState) -> Result<Self, Self::Rejection> {
        let bearer = parts
            .headers
            .get(axum::http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .map(str::trim);
        let hash = bearer.map(token_hash);
        let cert = if bearer.is_none() { parts.extensions.get::<PeerCert>().and_then(|c| c.0.clone()) } else { None };
        let found = {
            let cache = app.principals.lock();
            match (&hash, &cert) {
                (Some(h), _) => cache.by_token.get(h).cloned(),
                (None, Some(fp)) => cache.by_cert.get(fp).cloned(),
                (None, None) => None,
            }
        };
        let found = match found {
            None if app.config.replicated => lookup_principal(app, hash.as_deref(), cert.as_deref()).await?,
            found => found,
        };
        let principal = found.ok_or(ApiError::Unauthenticated)?;
        if !app.limits.principal.allow(&principal.id) {
            app.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(ApiError::RateLimited);
        }
        Ok(principal)
    }
}

/// A token bucket per key.
#[derive(Debug)]
pub struct Bucket {
    rate: f64,
    burst: f64,
    state: Mutex<HashMap<String, (f64, Instant)>>,
}

impl Bucket {
    /// `rate` per second, bursts of 4×.
    pub fn new(rate: u32) -> Self {
        Self { rate: f64::from(rate), burst: f64::from(rate) * 4.0, state: Mutex::new(HashMap::new()) }
    }

    /// Takes one token for `key`.
    pub fn allow(&self, key: &str) -> bool {
        let now = Instant::now();
        let mut s = self.state.lock();
        if s.len() > 100_000 {
            // Bounded memory under a flood of distinct keys: start over.
            s.clear();
        }
        let (tokens, at) = s.entry(key.to_owned()).or_insert((self.burst, now));
        *tokens = (*tokens + now.duration_since(*at).as_secs_f64() * self.rate).min(self.burst);
        *at = now;
        if *tokens >= 1.0 {
            *tokens -= 1.0;
            true
        } else {
            false
        }
    }
}

/// The vault's rate limits.
#[derive(Debug)]
pub struct RateLimits {
    /// Per principal.
    pub principal: Bucket,
    /// Per client address.
    pub address: Bucket,
    /// KBS `/auth` per tenant.
    pub kbs_auth: Bucket,
    /// KBS `/auth` and `/attest` per client address.
    pub kbs_address: Bucket,
}

/// Latency histogram buckets (seconds).
const BUCKETS: [f64; 12] = [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0];

/// One histogram: bucket counts, sum, count.
type Histogram = ([u64; 12], f64, u64);

/// Counters and histograms in Prometheus text form.
#[derive(Debug, Default)]
pub struct Metrics {
    /// Keys released (releases, not keys).
    pub releases: AtomicU64,
    /// Denials.
    pub denials: AtomicU64,
    /// Requests refused by a rate limit.
    pub rate_limited: AtomicU64,
    /// Denials by failed check name.
    pub denied_checks: Mutex<HashMap<String, u64>>,
    /// Latency histograms per (method, route): bucket counts, sum, count.
    pub latency: Mutex<HashMap<(String, String), Histogram>>,
    /// Responses by (route, status).
    pub responses: Mutex<HashMap<(String, u16), u64>>,
}

impl Metrics {
    /// Records one request.
    pub fn observe(&self, method: &str, route: &str, status: u16, secs: f64) {
        let mut l = self.latency.lock();
        let e = l.entry((method.to_owned(), route.to_owned())).or_insert(([0; 12], 0.0, 0));
        for (i, b) in BUCKETS.iter().enumerate() {
            if secs <= *b {
                e.0[i] += 1;
            }
        }
        e.1 += secs;
        e.2 += 1;
        drop(l);
        *self.responses.lock().entry((route.to_owned(), status)).or_default() += 1;
    }

    /// The Prometheus exposition.
    pub fn render(&self, log_size: u64, development: bool) -> String {
        let mut out = String::new();
        let mut line = |s: String| {
            out.push_str(&s);
            out.push('\n');
        };
        line("# HELP coffre_releases_total Key releases (each logged before any key left).".into());
        line("# TYPE coffre_releases_total counter".into());
        line(format!("coffre_releases_total {}", self.releases.load(Ordering::Relaxed)));
        line("# HELP coffre_denials_total Release denials.".into());
        line("# TYPE coffre_denials_total counter".into());
        line(format!("coffre_denials_total {}", self.denials.load(Ordering::Relaxed)));
        line("# HELP coffre_denied_checks_total Failed checks of denials, by check.".into());
        line("# TYPE coffre_denied_checks_total counter".into());
        let mut checks: Vec<(String, u64)> = self.denied_checks.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        checks.sort();
        for (k, v) in checks {
            line(format!("coffre_denied_checks_total{{check=\"{}\"}} {v}", k.replace('"', "'")));
        }
        line("# HELP coffre_rate_limited_total Requests refused by a rate limit.".into());
        line("# TYPE coffre_rate_limited_total counter".into());
        line(format!("coffre_rate_limited_total {}", self.rate_limited.load(Ordering::Relaxed)));
        line("# HELP coffre_log_entries Entries in the transparency log.".into());
        line("# TYPE coffre_log_entries gauge".into());
        line(format!("coffre_log_entries {log_size}"));
        line("# HELP coffre_development_mode 1 when simulated evidence may be accepted.".into());
        line("# TYPE coffre_development_mode gauge".into());
        line(format!("coffre_development_mode {}", u8::from(development)));
        line("# HELP coffre_http_request_duration_seconds Request latency by route.".into());
        line("# TYPE coffre_http_request_duration_seconds histogram".into());
        let mut hist: Vec<_> = self.latency.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        hist.sort_by(|a, b| a.0.cmp(&b.0));
        for ((method, route), (buckets, sum, count)) in hist {
            let labels = format!("method=\"{method}\",route=\"{route}\"");
            for (b, n) in BUCKETS.iter().zip(buckets) {
                line(format!("coffre_http_request_duration_seconds_bucket{{{labels},le=\"{b}\"}} {n}"));
            }
            line(format!("coffre_http_request_duration_seconds_bucket{{{labels},le=\"+Inf\"}} {count}"));
            line(format!("coffre_http_request_duration_seconds_sum{{{labels}}} {sum}"));
            line(format!("coffre_http_request_duration_seconds_count{{{labels}}} {count}"));
        }
        line("# HELP coffre_http_responses_total Responses by route and status.".into());
        line("# TYPE coffre_http_responses_total counter".into());
        let mut resp: Vec<_> = self.responses.lock().iter().map(|(k, v)| (k.clone(), *v)).collect();
        resp.sort();
        for ((route, status), n) in resp {
            line(format!("coffre_http_responses_total{{route=\"{route}\",status=\"{status}\"}} {n}"));
        }
        out
    }
}

/// Unix seconds now.
pub fn now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn held_data_keys_are_dropped_when_they_expire_even_if_never_asked_for_again() {
        let deks = DekCache::new(std::time::Duration::from_millis(50));
        let key = Arc::new(coffre_seal::DataKey::generate(&mut coffre_seal::SystemRandom).unwrap());
        deks.put("dek-1", key);
        assert!(deks.get("dek-1").is_some());
        std::thread::sleep(std::time::Duration::from_millis(80));
        deks.sweep();
        assert!(deks.is_empty(), "an expired key stayed in memory");
        let off = DekCache::new(std::time::Duration::ZERO);
        off.put("dek-1", Arc::new(coffre_seal::DataKey::generate(&mut coffre_seal::SystemRandom).unwrap()));
        assert!(off.is_empty(), "holding 0 s holds nothing");
    }

    #[tokio::test]
    #[allow(clippy::panic)] // the panic is the point
    async fn attack_evidence_that_panics_the_verifier_fails_its_request_only() {
        let r = compute(|| -> u32 { panic!("a parser bug") }).await;
        assert!(matches!(r, Err(ApiError::Internal(_))));
        // The pool (and the process) still work.
        assert_eq!(compute(|| 7).await.unwrap(), 7);
    }
}
