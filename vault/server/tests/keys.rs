//! The key lifecycle through the API: a KEK rotation that rewraps every data key (resuming
//! after a crash between its steps), and crypto-shredding of a dataset and of a tenant — refused
//! releases from the request on, cancellation by approvers, destruction after the waiting period,
//! an audit that passes over all of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use coffre_api::wire::*;
use common::*;

async fn upload_version(t: &Tenant, plaintext: &[u8]) -> Result<ObjectView, coffre_api::client::ClientError> {
    let (object, sig) = seal(t, "messages", plaintext);
    upload(t, "messages", object, Some(&sig)).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kek_rotation_rewraps_every_data_key_resumes_after_a_crash_and_releases_still_open_the_data() {
    let v = vault().await;
    let (t, plaintext, job) = ready(&v, "rotating-bank").await;
    upload_version(&t, b"{\"text\":\"version 2\"}\n").await.unwrap();
    let old_kek = t.kek_public.clone();

    // A data-key row whose object never reached the log (a crash mid-upload): rewrapped with the
    // rest, never named in the log, and no obstacle to finishing.
    let pool = v.database().await;
    sqlx::query(
        "INSERT INTO data_keys (key_id, tenant, dataset, kek_version, header, logged_version) \
         SELECT 'dek-orphan', tenant, dataset, kek_version, header, logged_version FROM data_keys WHERE tenant = $1 LIMIT 1",
    )
    .bind(&t.id)
    .execute(&pool)
    .await
    .unwrap();
    // One call: a new KEK version, logged, and every data key rewrapped to it.
    let first: RotationProbe = rotate(&t).await;
    assert!(first.0.started && first.0.version == 2, "{:?}", first.0);
    assert_eq!((first.0.rewrapped, first.0.remaining), (3, 0), "{:?}", first.0);
    // A crash between storing a rewrap and logging it: the next call logs it, starts nothing.
    sqlx::query("UPDATE data_keys SET logged_version = 1 WHERE tenant = $1").bind(&t.id).execute(&pool).await.unwrap();
    let resumed = rotate(&t).await.0;
    assert!(!resumed.started && resumed.version == 2, "{resumed:?}");
    assert_eq!((resumed.rewrapped, resumed.remaining, resumed.log_indices.len()), (0, 0, 1), "{resumed:?}");
    let rows: Vec<i64> = sqlx::query_scalar("SELECT kek_version FROM data_keys WHERE tenant = $1 ORDER BY key_id")
        .bind(&t.id)
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(rows, [2, 2, 2], "every data key is wrapped by the new KEK");

    // Uploads must now be sealed to the new KEK; the old one is refused by name.
    let view: TenantView = t.owner.get(&format!("/v1/tenants/{}", t.id)).await.unwrap();
    assert_eq!(view.kek.version, 2);
    assert_ne!(view.kek.public_key, old_kek);
    let p = problem(upload_version(&t, b"sealed to the old KEK\n").await.unwrap_err());
    assert_eq!(p.code, "not_sealed_to_kek", "{p:?}");
    let t2 = Tenant { kek_public: view.kek.public_key.clone(), ..t };
    upload_version(&t2, b"{\"text\":\"version 3\"}\n").await.unwrap();

    // A release after the rotation: the data key comes from the rewrapped header and opens the
    // untouched object.
    let a = attempt(&t2, &job, DEBUG_OFF).await;
    let resp = t2.worker.release(&a.request).await.unwrap();
    let deks = unwrap_keys(&t2, &a, &resp);
    let object =
        t2.worker.get_bytes(&format!("/v1/tenants/{}/datasets/messages/versions/1/object", t2.id)).await.unwrap();
    let out = open_object(&object, &deks[0]);
    assert_eq!(out, plaintext);

    // Only the tenant's administrators rotate; a second rotation starts version 3.
    assert_eq!(problem(t2.owner.post::<_, KekRotation>(&rotate_path(&t2), &()).await.unwrap_err()).status, 403);
    let third = rotate(&t2).await.0;
    assert!(third.started && third.version == 3 && third.rewrapped == 4, "{third:?}");
    let report = audit(&v, &t2.auditor).await;
    assert!(report.ok(), "{:#?}", report.problems);
}

#[derive(Debug)]
struct RotationProbe(KekRotation);

fn rotate_path(t: &Tenant) -> String {
    format!("/v1/tenants/{}/kek/rotate", t.id)
}

async fn rotate(t: &Tenant) -> RotationProbe {
    RotationProbe(t.admin.post(&rotate_path(t), &()).await.unwrap())
}

async fn wait_shredded(v: &TestVault, by: &coffre_api::client::VaultClient, key: &str) {
    for _ in 0..100 {
        if shredded(v, key).await {
            let report = audit(v, by).await;
            assert!(report.ok(), "{:#?}", report.problems);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("{key} was not shredded within 20 s of its waiting period");
}

async fn shredded(v: &TestVault, key: &str) -> bool {
    let pool = v.database().await;
    let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM data_keys WHERE key_id = $1")
        .bind(key)
        .fetch_one(&pool)
        .await
        .unwrap();
    left == 0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_release_after_a_shredding_request_then_the_keys_are_destroyed() {
    let v = vault_with(|c| c.limits.shred_wait_secs = 2).await;
    let (t, _plaintext, job) = ready(&v, "leaving-bank").await;
    let shred_path = format!("/v1/tenants/{}/datasets/messages/shred", t.id);

    // Requested by the owner: from here on no release, no new object in the dataset.
    let scheduled: Shredding = t.owner.post(&shred_path, &()).await.unwrap();
    assert_eq!(scheduled.keys.len(), 1);
    let a = attempt(&t, &job, DEBUG_OFF).await;
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert_eq!((p.status, p.code.as_str()), (403, "release_denied"), "{p:?}");
    assert!(p.failed.iter().any(|f| f.actual.contains("shredding request")), "{p:?}");
    let p = problem(upload_version(&t, b"one more\n").await.unwrap_err());
    assert!(p.detail.contains("being shredded"), "{p:?}");

    // The owner cannot take it back; an approver can, and releases work again.
    assert_eq!(problem(t.owner.delete::<Shredding>(&shred_path).await.unwrap_err()).status, 403);
    let cancelled: Shredding = t.approvers[0].0.delete(&shred_path).await.unwrap();
    assert_eq!(cancelled.keys, scheduled.keys);
    let a = attempt(&t, &job, DEBUG_OFF).await;
    t.worker.release(&a.request).await.unwrap();

    // Requested again and left to run: after the waiting period the wrapped key and the object
    // are gone, and every step is in the log, which audits clean.
    let scheduled: Shredding = t.owner.post(&shred_path, &()).await.unwrap();
    let key = scheduled.keys[0].clone();
    wait_shredded(&v, &t.auditor, &key).await;
    let p = problem(
        t.owner.get_bytes(&format!("/v1/tenants/{}/datasets/messages/versions/1/object", t.id)).await.unwrap_err(),
    );
    assert!(p.status == 404 || p.status == 410, "{p:?}");
    let a = attempt(&t, &job, DEBUG_OFF).await;
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert!(p.failed.iter().any(|f| f.actual.contains("Shredded")), "{p:?}");
    let report = audit(&v, &t.auditor).await;
    assert!(report.ok(), "{:#?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tenant_shredding_destroys_its_keks_and_every_object() {
    let v = vault_with(|c| c.limits.shred_wait_secs = 1).await;
    let (t, _plaintext, _job) = ready(&v, "closing-bank").await;
    let scheduled: Shredding = t.admin.post(&format!("/v1/tenants/{}/shred", t.id), &()).await.unwrap();
    assert!(scheduled.keys.iter().any(|k| k.starts_with("kek-")), "{scheduled:?}");
    let pool = v.database().await;
    for _ in 0..100 {
        let keks: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keks WHERE tenant = $1")
            .bind(&t.id)
            .fetch_one(&pool)
            .await
            .unwrap();
        let objects: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM objects WHERE tenant = $1")
            .bind(&t.id)
            .fetch_one(&pool)
            .await
            .unwrap();
        if keks == 0 && objects == 0 {
            let report = audit(&v, &t.auditor).await;
            assert!(report.ok(), "{:#?}", report.problems);
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    panic!("the tenant's KEKs and objects were not destroyed");
}
