//! The typed HTTPS client of the vault API, for `coffre` and `coffre-worker`.
//!
//! TLS trust is either the system's (a vault with an operator certificate) or a **pinned
//! fingerprint**, like SSH: `coffred` prints the SHA-256 of its self-signed certificate at start,
//! and the client accepts exactly that certificate, whatever name it carries. Tokens travel as
//! `Authorization: Bearer`; a client certificate can be presented for mutual TLS.

use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{DigitallySignedStruct, SignatureScheme};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::wire::{self, Problem};

/// Why a call failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The vault could not be reached or the connection failed (TLS included).
    #[error("cannot reach the vault: {0}")]
    Transport(String),
    /// The vault answered with a problem document.
    #[error("{} ({}): {}", .0.title, .0.code, .0.detail)]
    Problem(Box<Problem>),
    /// The answer is not what this client expects.
    #[error("unexpected answer from the vault: {0}")]
    Decode(String),
    /// Bad input to the client itself.
    #[error("{0}")]
    Usage(String),
}

impl ClientError {
    /// The problem document, when the vault sent one.
    pub fn problem(&self) -> Option<&Problem> {
        match self {
            ClientError::Problem(p) => Some(p),
            _ => None,
        }
    }
}

pub use crate::pin::Fingerprint;

#[derive(Debug)]
struct Pinned {
    pin: Fingerprint,
    provider: Arc<CryptoProvider>,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let got = Fingerprint::of(end_entity.as_ref());
        if aws_lc_rs::constant_time::verify_slices_are_equal(&got.0, &self.pin.0).is_ok() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(format!(
                "the vault's certificate is {got}, not the pinned {}: check --vault-fingerprint (or someone is in the middle)",
                self.pin
            )))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.provider.signature_verification_algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider.signature_verification_algorithms.supported_schemes()
    }
}

/// How to reach a vault.
#[derive(Debug, Clone, Default)]
pub struct Options {
    /// `https://host:port`.
    pub url: String,
    /// The pinned certificate fingerprint (none: the system's trust store).
    pub fingerprint: Option<Fingerprint>,
    /// The API token.
    pub token: Option<String>,
    /// A client certificate and key (PEM) for mutual TLS.
    pub identity: Option<(Vec<u8>, Vec<u8>)>,
}

/// A vault client.
#[derive(Debug, Clone)]
pub struct VaultClient {
    http: reqwest::Client,
    base: String,
    token: Option<String>,
    development: Arc<std::sync::atomic::AtomicBool>,
}

fn b64(bytes: &[u8]) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

impl VaultClient {
    /// A client for `options`.
    pub fn new(options: &Options) -> Result<Self, ClientError> {
        let url = options.url.trim_end_matches('/');
        if !url.starts_with("https://") {
            return Err(ClientError::Usage(format!("{url:?}: the vault is reached over https:// only")));
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let mut builder = reqwest::Client::builder().connect_timeout(std::time::Duration::from_secs(10));
        if let Some(pin) = options.fingerprint {
            let config = rustls::ClientConfig::builder_with_provider(provider.clone())
                .with_safe_default_protocol_versions()
                .map_err(|e| ClientError::Usage(e.to_string()))?
                .dangerous()
                .with_custom_certificate_verifier(Arc::new(Pinned { pin, provider: provider.clone() }));
            let config = match &options.identity {
                Some((cert, key)) => {
                    let certs = rustls_pem_certs(cert)?;
                    let key = rustls_pem_key(key)?;
                    config.with_client_auth_cert(certs, key).map_err(|e| ClientError::Usage(e.to_string()))?
                }
                None => config.with_no_client_auth(),
            };
            builder = builder.tls_backend_preconfigured(config);
        } else if let Some((cert, key)) = &options.identity {
            let mut pem = cert.clone();
            pem.extend_from_slice(key);
            let id = reqwest::Identity::from_pem(&pem).map_err(|e| ClientError::Usage(e.to_string()))?;
            builder = builder.identity(id);
        }
        let http = builder.build().map_err(|e| ClientError::Transport(e.to_string()))?;
        Ok(Self {
            http,
            base: url.to_owned(),
            token: options.token.clone(),
            development: Arc::new(std::sync::atomic::AtomicBool::new(false)),
        })
    }

    /// Whether the last answer came from a vault in development mode.
    pub fn saw_development_mode(&self) -> bool {
        self.development.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    fn authorize(&self, req: reqwest::RequestBuilder) -> reqwest::RequestBuilder {
        match &self.token {
            Some(t) => req.bearer_auth(t),
            None => req,
        }
    }

    async fn answer(&self, resp: Result<reqwest::Response, reqwest::Error>) -> Result<reqwest::Response, ClientError> {
        let resp = resp.map_err(|e| ClientError::Transport(error_chain(&e)))?;
        if resp.headers().contains_key(wire::DEVELOPMENT_HEADER) {
            self.development.store(true, std::sync::atomic::Ordering::Relaxed);
        }
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport(e.to_string()))?;
        match serde_json::from_slice::<Problem>(&bytes) {
            Ok(p) => Err(ClientError::Problem(Box::new(p))),
            Err(_) => Err(ClientError::Decode(format!("HTTP {status}: {}", String::from_utf8_lossy(&bytes)))),
        }
    }

    async fn json<T: DeserializeOwned>(&self, resp: reqwest::Response) -> Result<T, ClientError> {
        let bytes = resp.bytes().await.map_err(|e| ClientError::Transport(e.to_string()))?;
        serde_json::from_slice(&bytes).map_err(|e| ClientError::Decode(e.to_string()))
    }

    /// GET `path` as JSON.
    pub async fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.answer(self.authorize(self.http.get(self.url(path))).send().await).await?;
        self.json(resp).await
    }

    /// GET `path` as bytes.
    pub async fn get_bytes(&self, path: &str) -> Result<Vec<u8>, ClientError> {
        let resp = self.answer(self.authorize(self.http.get(self.url(path))).send().await).await?;
        Ok(resp.bytes().await.map_err(|e| ClientError::Transport(e.to_string()))?.to_vec())
    }

    /// POST `body` as JSON to `path`.
    pub async fn post<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self.answer(self.authorize(self.http.post(self.url(path))).json(body).send().await).await?;
        self.json(resp).await
    }

    /// POST a JSON body serialized ahead of time (a request prepared before a deadline).
    pub async fn post_json_bytes<T: DeserializeOwned>(&self, path: &str, body: Vec<u8>) -> Result<T, ClientError> {
        let req = self.http.post(self.url(path)).header(reqwest::header::CONTENT_TYPE, "application/json").body(body);
        let resp = self.answer(self.authorize(req).send().await).await?;
        self.json(resp).await
    }

    /// POST `body` as JSON to `path` with extra headers.
    pub async fn post_with_headers<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
        headers: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let mut req = self.authorize(self.http.post(self.url(path))).json(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = self.answer(req.send().await).await?;
        self.json(resp).await
    }

    /// DELETE `path`, answered with JSON.
    pub async fn delete<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        let resp = self.answer(self.authorize(self.http.delete(self.url(path))).send().await).await?;
        self.json(resp).await
    }

    /// PUT `body` as JSON to `path`.
    pub async fn put<B: Serialize + ?Sized, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let resp = self.answer(self.authorize(self.http.put(self.url(path))).json(body).send().await).await?;
        self.json(resp).await
    }

    /// Streams the file at `file` to `path` (PUT), with extra headers, calling `progress` with
    /// the bytes sent so far. Memory use is one buffer, whatever the file's size.
    pub async fn upload<T: DeserializeOwned>(
        &self,
        path: &str,
        file: &std::path::Path,
        headers: &[(&str, String)],
        progress: impl Fn(u64) + Send + Sync + 'static,
    ) -> Result<T, ClientError> {
        let f =
            tokio::fs::File::open(file).await.map_err(|e| ClientError::Usage(format!("{}: {e}", file.display())))?;
        let len = f.metadata().await.map_err(|e| ClientError::Usage(e.to_string()))?.len();
        let progress = Arc::new(progress);
        let stream = futures_util::stream::unfold((f, 0u64, progress), |(mut f, sent, progress)| async move {
            use tokio::io::AsyncReadExt;
            let mut buf = vec![0u8; 1 << 20];
            match f.read(&mut buf).await {
                Ok(0) => None,
                Ok(n) => {
                    buf.truncate(n);
                    let sent = sent + n as u64;
                    progress(sent);
                    Some((Ok::<_, std::io::Error>(bytes::Bytes::from(buf)), (f, sent, progress)))
                }
                Err(e) => Some((Err(e), (f, sent, progress))),
            }
        });
        let mut req = self
            .authorize(self.http.put(self.url(path)))
            .header(reqwest::header::CONTENT_TYPE, "application/vnd.coffre.sealed")
            .header(reqwest::header::CONTENT_LENGTH, len)
            .body(reqwest::Body::wrap_stream(stream));
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = self.answer(req.send().await).await?;
        self.json(resp).await
    }

    /// Uploads bytes held in memory (small objects, tests).
    pub async fn upload_bytes<T: DeserializeOwned>(
        &self,
        path: &str,
        body: Vec<u8>,
        headers: &[(&str, String)],
    ) -> Result<T, ClientError> {
        let mut req = self
            .authorize(self.http.put(self.url(path)))
            .header(reqwest::header::CONTENT_TYPE, "application/vnd.coffre.sealed")
            .body(body);
        for (k, v) in headers {
            req = req.header(*k, v);
        }
        let resp = self.answer(req.send().await).await?;
        self.json(resp).await
    }

    /// Downloads `path` into `to`, calling `progress` with the bytes received so far.
    pub async fn download(
        &self,
        path: &str,
        to: &mut dyn std::io::Write,
        progress: impl Fn(u64),
    ) -> Result<u64, ClientError> {
        use futures_util::StreamExt;
        let resp = self.answer(self.authorize(self.http.get(self.url(path))).send().await).await?;
        let mut stream = resp.bytes_stream();
        let mut got = 0u64;
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| ClientError::Transport(e.to_string()))?;
            to.write_all(&chunk).map_err(|e| ClientError::Usage(e.to_string()))?;
            got += chunk.len() as u64;
            progress(got);
        }
        Ok(got)
    }

    // --- Typed calls ---------------------------------------------------------------------------

    /// `POST /v1/challenge`.
    pub async fn challenge(&self, tenant: &str, job: &str) -> Result<wire::Challenge, ClientError> {
        self.post("/v1/challenge", &wire::ChallengeRequest { tenant: tenant.into(), job: job.into() }).await
    }

    /// `POST /v1/release`.
    pub async fn release(&self, req: &wire::ReleaseRequest) -> Result<wire::ReleaseResponse, ClientError> {
        self.post("/v1/release", req).await
    }

    /// `GET /v1/log`.
    pub async fn log_info(&self) -> Result<wire::LogInfo, ClientError> {
        self.get("/v1/log").await
    }

    /// The worker keys' bytes as the release request carries them.
    pub fn encode_worker_keys(keys: &crate::binding::WorkerKeys) -> String {
        b64(&keys.to_bytes())
    }
}

fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        source = s.source();
    }
    out
}

fn rustls_pem_certs(pem: &[u8]) -> Result<Vec<CertificateDer<'static>>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    CertificateDer::pem_slice_iter(pem)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| ClientError::Usage(format!("client certificate: {e}")))
}

fn rustls_pem_key(pem: &[u8]) -> Result<PrivateKeyDer<'static>, ClientError> {
    use rustls::pki_types::pem::PemObject;
    PrivateKeyDer::from_pem_slice(pem).map_err(|e| ClientError::Usage(format!("client key: {e}")))
}

/// The marker an export writes for an entry of another tenant: the line says nothing, its leaf
/// hash (in `leaves`) keeps the tree checkable.
pub const REDACTED: &[u8] = coffre_log::entry::REDACTED;

impl VaultClient {
    /// Exports the log into `dir` in the directory layout `coffre audit verify --dir` reads:
    /// every entry visible to this principal (others redacted to their leaf hash), every blob
    /// those entries and their evidence bundles name, and every signed checkpoint. Returns the
    /// log's size.
    pub async fn export_log(&self, dir: &std::path::Path, progress: impl Fn(u64, u64)) -> Result<u64, ClientError> {
        use base64::Engine as _;
        use coffre_log::{BlobStore, Bundle, Digest, DirStore, Entry, EntryStore};
        let info = self.log_info().await?;
        let io = |e: coffre_log::StoreError| ClientError::Usage(format!("{}: {e}", dir.display()));
        let mut store = DirStore::open(dir).map_err(io)?;
        if store.len() != 0 {
            return Err(ClientError::Usage(format!(
                "{} already holds a log; export into an empty directory",
                dir.display()
            )));
        }
        let mut wanted: Vec<Digest> = Vec::new();
        let mut start = 0u64;
        while start < info.size {
            let end = (start + 1024).min(info.size);
            let page: wire::LogEntries = self.get(&format!("/v1/log/entries?start={start}&end={end}")).await?;
            for (entry, leaf) in page.entries.iter().zip(&page.leaves) {
                let leaf = base64::engine::general_purpose::STANDARD
                    .decode(leaf)
                    .ok()
                    .and_then(|l| <[u8; 32]>::try_from(l).ok())
                    .ok_or_else(|| ClientError::Decode("a leaf hash is not 32 bytes of base64".into()))?;
                match entry {
                    Some(text) => {
                        if let Ok(e) = Entry::from_bytes(text.as_bytes()) {
                            wanted.extend(e.blobs());
                        }
                        store.append(text.as_bytes(), &leaf).map_err(io)?;
                    }
                    None => store.append(REDACTED, &leaf).map_err(io)?,
                }
            }
            start = end;
            progress(start, info.size);
        }
        let mut seen = std::collections::HashSet::new();
        while let Some(d) = wanted.pop() {
            if !seen.insert(d) {
                continue;
            }
            let bytes = match self.get_bytes(&format!("/v1/log/blobs/{d}")).await {
                Ok(b) => b,
                Err(ClientError::Problem(p)) if p.status == 404 => continue, // the audit reports it missing
                Err(e) => return Err(e),
            };
            if let Ok(b) = Bundle::from_bytes(&bytes) {
                wanted.extend(b.blobs());
            }
            store.put_blob(&bytes).map_err(io)?;
        }
        for size in &info.checkpoints {
            let note = String::from_utf8(self.get_bytes(&format!("/v1/log/checkpoints/{size}")).await?)
                .map_err(|_| ClientError::Decode("a checkpoint is not text".into()))?;
            store.put_checkpoint(*size, &note).map_err(io)?;
        }
        store.put_checkpoint(info.size, &info.checkpoint).map_err(io)?;
        Ok(info.size)
    }
}
