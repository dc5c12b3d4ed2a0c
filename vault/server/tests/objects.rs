//! The S3 object store against a real S3 server on loopback (s3s-fs from `scripts/services`):
//! create-only names (a second write under a name is refused, the first kept), multipart
//! uploads of large objects through the vault's API, and the configuration's refusals.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use std::os::unix::fs::PermissionsExt;

use coffre_vault::server::InitOptions;
use common::*;
use object_store::path::Path;
use object_store::{ObjectStoreExt, PutPayload};

fn config_with(s3: coffre_vault::objects::S3Config) -> coffre_vault::config::Config {
    let mut c = coffre_vault::config::Config::defaults(std::path::Path::new("/nonexistent"));
    c.s3 = Some(s3);
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_object_overwritten_in_the_bucket_is_refused_by_create_only_names() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(s3) = s3_bucket(scratch.path()) else {
        eprintln!("SKIPPED: COFFRE_TEST_S3_* unset (scripts/services start DIR starts an S3 server)");
        return;
    };
    let store = coffre_vault::objects::open(&config_with(s3)).unwrap();
    let first = Path::from("staging/first");
    let second = Path::from("staging/second");
    store.put(&first, PutPayload::from(b"the owner's sealed object".to_vec())).await.unwrap();
    store.put(&second, PutPayload::from(b"a replacement".to_vec())).await.unwrap();
    let name = Path::from("datasets/t/d/object.coffre");
    store.rename_if_not_exists(&first, &name).await.unwrap();
    match store.rename_if_not_exists(&second, &name).await {
        Err(object_store::Error::AlreadyExists { .. }) => {}
        other => panic!("a second object under a taken name must be refused, got {other:?}"),
    }
    let kept = store.get(&name).await.unwrap().bytes().await.unwrap();
    assert_eq!(kept.as_ref(), b"the owner's sealed object");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_large_object_goes_to_s3_in_parts_and_comes_back_whole() {
    let scratch = tempfile::tempdir().unwrap();
    let Some(s3) = s3_bucket(scratch.path()) else {
        eprintln!("SKIPPED: COFFRE_TEST_S3_* unset (scripts/services start DIR starts an S3 server)");
        return;
    };
    let v = vault_init(InitOptions { s3: Some(s3), ..Default::default() }, |_| {}).await;
    let t = tenant(&v, "big-bank").await;
    register_dataset(&t, "ledger", &["transactions"]).await;
    // 20 MiB: three 8 MiB parts.
    let plaintext: Vec<u8> = (0..20u32 << 20).map(|i| (i % 251) as u8).collect();
    let (object, sig) = seal(&t, "ledger", &plaintext);
    let view = upload(&t, "ledger", object.clone(), Some(&sig)).await.unwrap();
    let back = t.owner.get_bytes(&format!("/v1/tenants/{}/datasets/ledger/versions/1/object", t.id)).await.unwrap();
    assert_eq!(back.len(), object.len());
    assert!(back == object, "the object came back different");
    assert_eq!(view.digest, coffre_log::Digest::of(&object).to_string());
    // Nothing stays in the vault's data directory: the object is in the bucket, under its prefix.
    assert!(!v.data_dir().join("objects").join("datasets").exists());
}

#[test]
fn s3_configurations_that_would_leak_are_refused() {
    let scratch = tempfile::tempdir().unwrap();
    let secret = scratch.path().join("secret");
    std::fs::write(&secret, "s3cr3t").unwrap();
    let s3 = coffre_vault::objects::S3Config {
        bucket: "b".into(),
        prefix: None,
        endpoint: Some("http://s3.example.com".into()),
        region: "eu-central-1".into(),
        access_key_id: Some("id".into()),
        secret_access_key_file: Some(secret.clone()),
    };
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o600)).unwrap();
    let e = coffre_vault::objects::open(&config_with(s3.clone())).err().unwrap().to_string();
    assert!(e.contains("plain HTTP"), "{e}");
    std::fs::set_permissions(&secret, std::fs::Permissions::from_mode(0o644)).unwrap();
    let local = coffre_vault::objects::S3Config { endpoint: Some("http://127.0.0.1:9".into()), ..s3.clone() };
    let e = coffre_vault::objects::open(&config_with(local.clone())).err().unwrap().to_string();
    assert!(e.contains("readable by others"), "{e}");
    let half = coffre_vault::objects::S3Config { secret_access_key_file: None, ..local };
    let e = coffre_vault::objects::open(&config_with(half)).err().unwrap().to_string();
    assert!(e.contains("go together"), "{e}");
}
