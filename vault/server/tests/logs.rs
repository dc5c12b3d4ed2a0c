//! coffred's own log, captured at `debug` for every target through a whole release flow, never
//! carries a secret: no token, no root key, no data key (plain, hex or base64), no wrapped key,
//! no plaintext byte.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_api::wire::*;
use common::*;

#[derive(Clone, Default)]
struct Capture(Arc<Mutex<Vec<u8>>>);

impl std::io::Write for Capture {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_secrets_read_from_the_vaults_own_log() {
    let capture = Capture::default();
    let writer = capture.clone();
    // The same JSON format coffred's main installs, at debug for every crate.
    tracing_subscriber::fmt()
        .json()
        .with_env_filter(tracing_subscriber::EnvFilter::new("debug"))
        .with_writer(move || writer.clone())
        .init();

    let v = vault().await;
    let (t, plaintext, job) = ready(&v, "example-bank").await;
    let extra: CreatedPrincipal = t
        .admin
        .post(
            "/v1/tenants/example-bank/principals",
            &CreatePrincipal {
                name: "ops".into(),
                roles: vec![Role::Auditor],
                signing_key: None,
                client_cert_sha256: None,
            },
        )
        .await
        .unwrap();
    // A release (keys out), a denial, a wrong token.
    let a = attempt(&t, &job, DEBUG_OFF).await;
    let released = t.worker.release(&a.request).await.unwrap();
    let deks = unwrap_keys(&t, &a, &released);
    assert!(!deks.is_empty());
    let denied = attempt(&t, &job, DEBUG_ON).await;
    assert!(t.worker.release(&denied.request).await.is_err());
    let stranger = v.client(Some("coffre_not-a-token-but-it-looks-like-one-0123456789"));
    assert!(stranger.get::<TenantView>("/v1/tenants/example-bank").await.is_err());

    let root: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(v.data_dir().join("root.key")).unwrap()).unwrap();
    let root_key = root["key"].as_str().unwrap().to_owned();
    let mut secrets: Vec<(String, String)> = vec![
        ("the admin token".into(), v.admin_token.clone()),
        ("a principal's token".into(), extra.token.clone()),
        ("a rejected token".into(), "coffre_not-a-token-but-it-looks-like-one-0123456789".into()),
        ("the root key".into(), root_key),
        ("plaintext".into(), String::from_utf8_lossy(&plaintext[..40]).into_owned()),
    ];
    for (i, dek) in deks.iter().enumerate() {
        secrets.push((format!("data key {i} (hex)"), hex::encode(dek.expose_secret())));
        secrets.push((format!("data key {i} (base64)"), STANDARD.encode(dek.expose_secret())));
    }
    for k in &released.keys {
        secrets.push((format!("wrapped key {}", k.key_id), k.ciphertext.clone()));
    }

    let log = String::from_utf8(capture.0.lock().unwrap().clone()).unwrap();
    // The capture works: it saw the flow.
    assert!(log.contains("keys released"), "nothing captured:\n{log}");
    assert!(log.contains("release denied"));
    for (what, secret) in &secrets {
        assert!(!log.contains(secret.as_str()), "{what} is in coffred's log");
    }
}
