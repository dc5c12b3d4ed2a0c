//! `coffred migrate`: the embedded default (SQLite, a directory, a root key file) moved to
//! PostgreSQL, S3 and a SoftHSM2 root key. The new vault serves the same log under the same log
//! key and certificate, audits clean, and releases keys that open the moved objects.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use coffre_api::wire::*;
use coffre_vault::server::InitOptions;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_embedded_vault_moves_to_postgres_s3_and_an_hsm_with_its_log_and_keys() {
    let Some(url) = fresh_postgres_database().await else {
        eprintln!("SKIPPED: COFFRE_TEST_POSTGRES is unset (scripts/services start DIR starts PostgreSQL)");
        return;
    };
    let old = vault_with(|_| {}).await;
    let (t, plaintext, job) = ready(&old, "moving-bank").await;
    let a = attempt(&t, &job, DEBUG_OFF).await;
    t.worker.release(&a.request).await.unwrap();
    let before = old.admin.log_info().await.unwrap();

    let scratch = tempfile::tempdir().unwrap();
    let options = InitOptions {
        database_url: Some(url),
        replicated: true,
        s3: s3_bucket(scratch.path()),
        pkcs11: softhsm_token(),
        ..Default::default()
    };
    let target = tempfile::tempdir().unwrap();
    let new_data = target.path().join("vault");
    // Not while it serves.
    let e = coffre_vault::migrate::migrate(&old.data_dir(), None, &new_data, &options).await.unwrap_err();
    assert!(e.to_string().contains("stop it first"), "{e}");
    let _ = old.running.shutdown.send(true);
    let old_data = old.data_dir();
    let (roots, admin_token) = (old.roots.clone(), old.admin_token.clone());
    let _ = old.running.done.await;

    let moved = coffre_vault::migrate::migrate(&old_data, None, &new_data, &options).await.unwrap();
    assert!(moved.resealed >= 2, "{moved:?}");
    assert!(moved.objects.0 >= 1, "{moved:?}");
    let new = serve(target, new_data, roots, admin_token).await;
    assert_eq!(new.running.fingerprint, old.running.fingerprint, "clients keep their pinned certificate");
    assert_eq!(new.running.log_key, old.running.log_key, "auditors keep their pinned log key");
    let after = new.admin.log_info().await.unwrap();
    assert_eq!((after.size, after.checkpoint), (before.size, before.checkpoint), "the same log");
    let report = audit(&new, &new.admin).await;
    assert!(report.ok(), "{:#?}", report.problems);

    // The moved vault releases the moved data key (its KEK now sealed by the HSM), and it opens
    // the moved object.
    let admin = principal(&new, &new.admin, &t.id, "admin-after-move", &[Role::Admin], None).await;
    let worker = principal(&new, &admin, &t.id, "worker-after-move", &[Role::WorkerOperator], None).await;
    let challenge = worker.challenge(&t.id, &job.id).await.unwrap();
    let a = attempt_of(&t.id, &job, &challenge.nonce, DEBUG_OFF, None);
    let resp = worker.release(&a.request).await.unwrap();
    let deks = unwrap_keys(&t, &a, &resp);
    let object = worker.get_bytes(&format!("/v1/tenants/{}/datasets/messages/versions/1/object", t.id)).await.unwrap();
    let out = open_object(&object, &deks[0]);
    assert_eq!(out, plaintext);
    // Into a database that holds a vault: refused.
    let again = tempfile::tempdir().unwrap();
    let e = coffre_vault::migrate::migrate(&old_data, None, &again.path().join("vault"), &options).await.unwrap_err();
    assert!(e.to_string().contains("already holds a vault"), "{e}");
}
