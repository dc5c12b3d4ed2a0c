//! TLS: a self-signed certificate made at `coffred init` (clients pin its SHA-256 fingerprint, like
//! SSH) or an operator's certificate; TLS 1.3 and 1.2 with AWS-LC; client certificates accepted
//! (not required) and mapped to principals by fingerprint.

use std::path::Path;
use std::sync::Arc;

use coffre_api::pin::Fingerprint;
use rustls::DistinguishedName;
use rustls::client::danger::HandshakeSignatureValid;
use rustls::crypto::CryptoProvider;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, UnixTime};
use rustls::server::danger::{ClientCertVerified, ClientCertVerifier};
use rustls::{DigitallySignedStruct, SignatureScheme};

/// Writes a new self-signed certificate for `names` (DNS names or IP addresses) and its key.
pub fn create_self_signed(cert: &Path, key: &Path, names: &[String]) -> anyhow::Result<Fingerprint> {
    let certified = rcgen::generate_simple_self_signed(names.to_vec())?;
    if let Some(dir) = cert.parent() {
        std::fs::create_dir_all(dir)?;
    }
    crate::keys::write_new_private(key, certified.signing_key.serialize_pem().as_bytes())?;
    std::fs::write(cert, certified.cert.pem())?;
    Ok(Fingerprint::of(certified.cert.der()))
}

/// The certificate chain and its leaf's fingerprint.
pub fn load_certs(path: &Path) -> anyhow::Result<(Vec<CertificateDer<'static>>, Fingerprint)> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| anyhow::anyhow!("TLS certificate {}: {e}", path.display()))?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| anyhow::anyhow!("TLS certificate {}: {e}", path.display()))?;
    let leaf = certs.first().ok_or_else(|| anyhow::anyhow!("TLS certificate {}: no certificate", path.display()))?;
    let fp = Fingerprint::of(leaf.as_ref());
    Ok((certs, fp))
}

/// Accepts any client certificate whose handshake signature verifies; who it is, is decided by
/// its fingerprint against the principals table. No client certificate is fine too (tokens).
#[derive(Debug)]
struct AnyClientCert {
    provider: Arc<CryptoProvider>,
}

impl ClientCertVerifier for AnyClientCert {
    fn offer_client_auth(&self) -> bool {
        true
    }

    fn client_auth_mandatory(&self) -> bool {
        false
    }

    fn root_hint_subjects(&self) -> &[DistinguishedName] {
        &[]
    }

    fn verify_client_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _now: UnixTime,
    ) -> Result<ClientCertVerified, rustls::Error> {
        Ok(ClientCertVerified::assertion())
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

/// The server configuration for `cert` and `key`.
pub fn server_config(cert: &Path, key: &Path) -> anyhow::Result<(Arc<rustls::ServerConfig>, Fingerprint)> {
    let (certs, fp) = load_certs(cert)?;
    let key = PrivateKeyDer::from_pem_file(key).map_err(|e| anyhow::anyhow!("TLS key {}: {e}", key.display()))?;
    let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()?
        .with_client_cert_verifier(Arc::new(AnyClientCert { provider }))
        .with_single_cert(certs, key)?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok((Arc::new(config), fp))
}
