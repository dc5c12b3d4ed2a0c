//! Two `coffred` replicas on one PostgreSQL database and one object store, hammered together:
//! one log (one sequence, no fork, no gap, every checkpoint under the one log key), challenges
//! consumed exactly once across both, and principals and jobs made on one seen by the other.
//!
//! Needs the PostgreSQL server of `scripts/services` (`COFFRE_TEST_POSTGRES`); says SKIPPED
//! without one, except under `CI=true`, where that fails.

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
    let a = vault_init(InitOptions { database_url: Some(url), replicated: true, ..Default::default() }, |_| {}).await;
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
async fn two_replicas_hammered_together_write_one_log_and_use_each_challenge_once() {
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
}
