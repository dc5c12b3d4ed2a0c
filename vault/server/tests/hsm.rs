//! The root key in a PKCS#11 HSM (SoftHSM2 from `scripts/services`): generated on the token,
//! never extractable, sealing the log key and every tenant KEK there; a whole release works
//! through it, across a restart; a wrong PIN, a shared PIN file or a second vault on the same key
//! label are refused.
//!
//! One test, in its own process: a PKCS#11 login is per application, so a wrong PIN must be
//! tried before any right one.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use std::os::unix::fs::PermissionsExt;

use coffre_vault::keys::RootKey;
use coffre_vault::pkcs11::{Pkcs11Config, Pkcs11RootKey};
use coffre_vault::server::InitOptions;
use common::*;

fn token() -> Option<Pkcs11Config> {
    let t = softhsm_token();
    if t.is_none() {
        eprintln!("SKIPPED: COFFRE_TEST_PKCS11_* unset (scripts/services start DIR creates a SoftHSM2 token)");
    }
    t
}

fn pin_file(dir: &std::path::Path, name: &str, pin: &str, mode: u32) -> std::path::PathBuf {
    let path = dir.join(name);
    std::fs::write(&path, pin).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
    path
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_root_key_taken_from_the_hsm_and_a_release_through_it() {
    let Some(config) = token() else { return };
    let scratch = tempfile::tempdir().unwrap();

    // Before any login: a wrong PIN, and a PIN file others can read, are refused by name.
    let wrong = Pkcs11Config { pin_file: Some(pin_file(scratch.path(), "wrong", "000000", 0o600)), ..config.clone() };
    let e = Pkcs11RootKey::create(&wrong).unwrap_err().to_string();
    assert!(e.contains("PIN") && e.contains("wrong"), "{e}");
    let right = std::fs::read_to_string(config.pin_file.as_ref().unwrap()).unwrap();
    let shared = Pkcs11Config { pin_file: Some(pin_file(scratch.path(), "shared", &right, 0o644)), ..config.clone() };
    let e = Pkcs11RootKey::create(&shared).unwrap_err().to_string();
    assert!(e.contains("readable by others"), "{e}");
    let e = Pkcs11RootKey::open(&Pkcs11Config { token: "no-such-token".into(), ..config.clone() }).unwrap_err();
    assert!(e.to_string().contains("no PKCS#11 token labelled"), "{e}");

    // A vault whose root key is on the token: no key file in its data directory.
    let options =
        InitOptions { pkcs11: Some(config.clone()), database_url: test_database().await, ..Default::default() };
    let v = vault_init(options, |_| {}).await;
    assert!(!v.data_dir().join("root.key").exists(), "the root key must not be in a file");
    let loaded = coffre_vault::config::Config::load(&v.data_dir()).unwrap();
    assert_eq!(loaded.pkcs11.as_ref(), Some(&config));

    // The key's value never leaves the token.
    let root = Pkcs11RootKey::open(&config).unwrap();
    root.with_session(|session, key| {
        use cryptoki::object::{Attribute, AttributeType};
        let attrs = session
            .get_attributes(key, &[AttributeType::Value, AttributeType::Extractable, AttributeType::NeverExtractable])
            .unwrap_or_default();
        assert!(!attrs.iter().any(|a| matches!(a, Attribute::Value(_))), "the token gave out the root key's value");
        assert!(attrs.contains(&Attribute::Extractable(false)), "{attrs:?}");
        assert!(attrs.contains(&Attribute::NeverExtractable(true)), "{attrs:?}");
    });

    // The whole flow through it: a tenant (its KEK sealed by the HSM), an upload, a release
    // whose data key opens the object.
    let (t, _plaintext, job) = ready(&v, "hsm-bank").await;
    let a = attempt(&t, &job, DEBUG_OFF).await;
    let resp = t.worker.release(&a.request).await.unwrap();
    assert_eq!(unwrap_keys(&t, &a, &resp).len(), 1);

    // What the vault sealed opens only under its own key and slot: the log key's sealed value
    // moved to a KEK's slot, or opened by another vault's key on the same token, does not.
    let pool = v.database().await;
    let sealed: Vec<u8> = sqlx::Row::get(
        &sqlx::query("SELECT sealed FROM secrets WHERE name = 'log-signer'").fetch_one(&pool).await.unwrap(),
        "sealed",
    );
    assert!(root.open(coffre_vault::keys::LOG_SIGNER_AAD, &sealed).is_ok());
    assert!(root.open(&coffre_vault::keys::kek_aad("hsm-bank", 1), &sealed).is_err());
    let other =
        Pkcs11RootKey::create(&Pkcs11Config { key_label: format!("{}-other", config.key_label), ..config.clone() })
            .unwrap();
    assert!(other.open(coffre_vault::keys::LOG_SIGNER_AAD, &sealed).is_err());

    // A second vault may not take (or replace) the first one's key.
    let again = tempfile::tempdir().unwrap();
    let e = coffre_vault::server::init(
        &again.path().join("vault"),
        None,
        &InitOptions { pkcs11: Some(config.clone()), ..Default::default() },
    )
    .await
    .unwrap_err();
    assert!(e.to_string().contains("already holds a key"), "{e}");

    // Across a restart, the vault opens its log key through the HSM and serves the same log.
    let v = v.restart().await;
    let report = audit(&v, &v.admin).await;
    assert!(report.ok(), "{:#?}", report.problems);
    assert_eq!(report.releases, 1);
}
