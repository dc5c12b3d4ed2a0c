//! Two `coffred` replicas on one PostgreSQL database, one S3 bucket and one SoftHSM2 token,
//! hammered together: one log (one sequence, no fork, no gap, every checkpoint under the one log
//! key), challenges consumed exactly once across both, principals and jobs made on one seen by
//! the other; then a KEK rotation on one and a shredding on the other, run to completion across
//! both, and an audit of the whole log.
//!
//! Needs the services of `scripts/services` (`COFFRE_TEST_POSTGRES`, and S3 and SoftHSM2 when
//! configured); says SKIPPED without PostgreSQL, except under `CI=true`, where any missing one
//! fails.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use coffre_api::wire::*;
use coffre_vault::server::InitOptions;
use common::*;

async fn replicas() -> Option<(TestVault, TestVault)> {
    let Some(url) = fresh_postgres_database().await else {
        eprintln!("SKIPPED: COFFRE_TEST_POSTGRES is unset (scripts/services start DIR starts PostgreSQL)");
        return None;
    };
    let scratch = tempfile::tempdir().unwrap().keep();
    let options = InitOptions {
        database_url: Some(url),
        replicated: true,
        s3: s3_bucket(&scratch),
        pkcs11: softhsm_token(),
        ..Default::default()
    };
    let a = vault_init(options, |c| c.limits.shred_wait_secs = 2).await;
    let b = a.replica().await;
    Some((a, b))
}

/// A principal's token, for clients of both replicas.
async fn token(by: &coffre_api::client::VaultClient, tenant: &str, name: &str, roles: &[Role]) -> String {
    let created: CreatedPrincipal = by
        .post(
            &format!("/v1/tenants/{tenant}/principals"),
            &CreatePrincipal { name: name.into(), roles: roles.to_vec(), signing_key: None, client_cert_sha256: None },
        )
        .await
        .unwrap();
    created.token
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_replicas_on_postgres_s3_and_an_hsm_release_rotate_and_shred_as_one_vault() {
    let Some((a, b)) = replicas().await else { return };
    // Set up entirely through replica A; everything is then used through B as well.
    let (t, _, job) = ready(&a, "bank-r").await;
    // A principal created on B works on A at once (found in the database, not a start-up cache).
    let worker_token = token(&b.admin, &t.id, "worker-2", &[Role::WorkerOperator]).await;
    let workers = [a.client(Some(&worker_token)), b.client(Some(&worker_token))];
    let job_on_b: JobView = workers[1].get(&format!("/v1/tenants/{}/jobs/{}", t.id, job.id)).await.unwrap();
    assert_eq!(job_on_b.id, job.id);

    // 48 workers at once: each takes its challenge from one replica and is released by the other.
    const N: usize = 48;
    let mut handles = Vec::new();
    for i in 0..N {
        let issuer = workers[i % 2].clone();
        let decider = workers[(i + 1) % 2].clone();
        let (tenant, job_view) = (t.id.clone(), job.clone());
        handles.push(tokio::spawn(async move {
            let challenge = issuer.challenge(&tenant, &job_view.id).await.unwrap();
            let attempt = attempt_of(&tenant, &job_view, &challenge.nonce, DEBUG_OFF, None);
            let resp = decider.release(&attempt.request).await.unwrap();
            // The same nonce again, now at the replica that issued it: consumed once, for both
            // (a logged denial naming the nonce).
            let again = problem(issuer.release(&attempt.request).await.unwrap_err());
            (resp.log_index, resp.checkpoint, again)
        }));
    }
    let mut indices = Vec::new();
    let key = coffre_log::NoteVerifier::from_text(&a.running.log_key).unwrap();
    for h in handles {
        let (index, checkpoint, replay) = h.await.unwrap();
        assert_eq!((replay.status, replay.code.as_str()), (403, "release_denied"), "{replay:?}");
        // Each answer's checkpoint, whichever replica signed it, verifies under the one key and covers the release.
        let signed = coffre_log::Checkpoint::verify(&checkpoint, &key).unwrap();
        assert!(signed.size > index, "checkpoint {} does not cover release {index}", signed.size);
        indices.push(index);
    }
    indices.sort_unstable();
    indices.dedup();
    assert_eq!(indices.len(), N, "two releases share a log index");

    // One log: both replicas serve the same size and root, and the audit of it passes.
    let info_a = a.admin.log_info().await.unwrap();
    let info_b = b.admin.log_info().await.unwrap();
    assert_eq!((info_a.size, &info_a.checkpoint), (info_b.size, &info_b.checkpoint), "the replicas disagree");
    let report = audit(&a, &t.auditor).await;
    assert!(report.ok(), "{:#?}", report.problems);
    assert_eq!(report.releases, N as u64, "{report:#?}");
    assert_eq!(report.denials, N as u64, "every replayed nonce is a logged denial: {report:#?}");

    // A KEK rotation through replica B, run to completion; a release through A still opens.
    let admin_token = token(&a.admin, &t.id, "admin-2", &[Role::Admin]).await;
    let admin_b = b.client(Some(&admin_token));
    loop {
        let step: KekRotation = admin_b.post(&format!("/v1/tenants/{}/kek/rotate", t.id), &()).await.unwrap();
        assert_eq!(step.version, 2, "{step:?}");
        if step.remaining == 0 {
            break;
        }
    }
    let view: TenantView = workers[0].get(&format!("/v1/tenants/{}", t.id)).await.unwrap();
    assert_eq!(view.kek.version, 2, "replica A serves the KEK replica B rotated to");
    let challenge = workers[0].challenge(&t.id, &job.id).await.unwrap();
    let attempt = attempt_of(&t.id, &job, &challenge.nonce, DEBUG_OFF, None);
    let resp = workers[0].release(&attempt.request).await.unwrap();
    assert_eq!(resp.keys.len(), 1);

    // The dataset's shredding requested through A: B refuses a release at once, and after the
    // waiting period one of the two destroys the key and the object.
    let owner_token = token(&a.admin, &t.id, "owner-2", &[Role::Owner]).await;
    let scheduled: Shredding =
        a.client(Some(&owner_token)).post(&format!("/v1/tenants/{}/datasets/messages/shred", t.id), &()).await.unwrap();
    let challenge = workers[1].challenge(&t.id, &job.id).await.unwrap();
    let attempt = attempt_of(&t.id, &job, &challenge.nonce, DEBUG_OFF, None);
    let p = problem(workers[1].release(&attempt.request).await.unwrap_err());
    assert!(p.failed.iter().any(|f| f.actual.contains("shredding request")), "{p:?}");
    let pool = a.database().await;
    let mut destroyed = false;
    for _ in 0..100 {
        let left: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM data_keys WHERE key_id = $1")
            .bind(&scheduled.keys[0])
            .fetch_one(&pool)
            .await
            .unwrap();
        if left == 0 {
            destroyed = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
    }
    assert!(destroyed, "the shredding did not run to completion");
    // Both replicas agree, and the whole log audits clean (each key shredded once).
    b.admin.get::<LogInfo>("/v1/log").await.unwrap();
    let report = audit(&b, &b.admin).await;
    assert!(report.ok(), "{:#?}", report.problems);
}
