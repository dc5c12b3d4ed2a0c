//! The vault under attack, each threat of the vault issue as a test named after it: replayed and
//! stale challenges, evidence bound to something else, a policy changed mid-flight, another
//! tenant's data in a job, a log that cannot be written, broken uploads and bodies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use std::sync::atomic::Ordering;

use coffre_api::wire::*;
use common::*;

fn failed(p: &Problem) -> Vec<&str> {
    p.failed.iter().map(|f| f.name.as_str()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_replayed_nonce() {
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let a = attempt(&t, &job, DEBUG_OFF).await;
    t.worker.release(&a.request).await.unwrap();
    // The same request again (a recorded exchange replayed): denied, and no key.
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert_eq!(p.status, 403);
    assert!(failed(&p).contains(&"challenge"), "{p:?}");
    assert!(failed(&p).contains(&"release"), "the log state refuses the nonce too: {p:?}");
    assert!(audit(&v, &t.auditor).await.ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_nonce_reused_after_a_failed_attempt() {
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let challenge = t.worker.challenge(&t.id, &job.id).await.unwrap();
    let first = attempt_with(&t, &job, &challenge.nonce, DEBUG_ON, None).await;
    assert_eq!(problem(t.worker.release(&first.request).await.unwrap_err()).status, 403);
    // Good evidence under the consumed nonce: the first attempt used it up.
    let second = attempt_with(&t, &job, &challenge.nonce, DEBUG_OFF, None).await;
    let p = problem(t.worker.release(&second.request).await.unwrap_err());
    assert!(failed(&p).contains(&"challenge"), "{p:?}");
    assert!(p.failed.iter().any(|f| f.actual.contains("already used")), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_expired_nonce() {
    // In memory (the default): a challenge that lives 0 s, used a second later.
    let v = vault_with(|c| c.limits.challenge_ttl_secs = 0).await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let challenge = t.worker.challenge(&t.id, &job.id).await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let a = attempt_with(&t, &job, &challenge.nonce, DEBUG_OFF, None).await;
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert!(p.failed.iter().any(|f| f.name == "challenge" && f.actual.contains("expired")), "{p:?}");

    // In the database (replicas): the row's expiry is in the past.
    let v = vault_with(|c| c.challenges = coffre_vault::challenges::ChallengeStore::Database).await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let challenge = t.worker.challenge(&t.id, &job.id).await.unwrap();
    let pool = v.database().await;
    let updated = sqlx::query("UPDATE challenges SET expires_at = 1 WHERE nonce = $1")
        .bind(&challenge.nonce)
        .execute(&pool)
        .await
        .unwrap();
    assert_eq!(updated.rows_affected(), 1, "the database store holds the challenge");
    let a = attempt_with(&t, &job, &challenge.nonce, DEBUG_OFF, None).await;
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert!(p.failed.iter().any(|f| f.name == "challenge" && f.actual.contains("expired")), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_report_data_bound_to_another_key_or_another_job() {
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    // Evidence bound to other worker keys than the ones the keys would be wrapped to.
    let mut a = attempt(&t, &job, DEBUG_OFF).await;
    let (_, _, other) = coffre_broker::development::worker_keys().unwrap();
    a.request.worker_keys = coffre_api::client::VaultClient::encode_worker_keys(&other);
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert!(failed(&p).iter().any(|n| n.contains("report_data")), "{p:?}");
    // Evidence bound to another job's manifest.
    let challenge = t.worker.challenge(&t.id, &job.id).await.unwrap();
    let b = attempt_with(&t, &job, &challenge.nonce, DEBUG_OFF, Some(b"another job's manifest")).await;
    let p = problem(t.worker.release(&b.request).await.unwrap_err());
    assert!(failed(&p).iter().any(|n| n.contains("report_data")), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_policy_changed_between_challenge_and_release() {
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let a = attempt(&t, &job, DEBUG_OFF).await;
    // While the worker collects evidence, the security team activates a stricter version.
    let stricter = coffre_broker::development::DEVELOPMENT_POLICY.replace("version = 1", "version = 2")
        + "\n[job]\nmax_steps = 10\n";
    activate_policy(&t, &stricter, 2).await.unwrap();
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert!(p.failed.iter().any(|f| f.policy == "development@2" && f.name == "job.steps"), "{p:?}");
    // Below the threshold, a policy does not activate at all.
    let lax = coffre_broker::development::DEVELOPMENT_POLICY.replace("version = 1", "version = 3");
    let p = problem(activate_policy(&t, &lax, 1).await.unwrap_err());
    assert_eq!(p.status, 422);
    assert!(p.detail.contains("1 valid approval(s) of 2 needed"), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_another_tenants_dataset_in_a_job() {
    let v = vault().await;
    let (a, _, _) = ready(&v, "example-bank").await;
    let (b, _, _) = ready(&v, "other-bank").await;
    let theirs: DatasetView = b.owner.get(&format!("/v1/tenants/{}/datasets/messages", b.id)).await.unwrap();
    // Tenant A names B's object (same dataset id, B's digest): refused, nothing logged.
    let mut m = manifest(&a, "messages", &theirs.versions[0], 10);
    m.name = "borrowed".into();
    let p = problem(submit_job(&a, &m).await.unwrap_err());
    assert_eq!(p.status, 422);
    assert!(p.detail.contains("the manifest pins object"), "{p:?}");
    // A manifest for tenant B submitted to A.
    let mut m = manifest(&a, "messages", &theirs.versions[0], 10);
    m.tenant = b.id.clone();
    let p = problem(submit_job(&a, &m).await.unwrap_err());
    assert!(p.detail.contains("is for tenant other-bank"), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_log_append_failure_releases_no_key() {
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let a = attempt(&t, &job, DEBUG_OFF).await;
    v.fault.store(true, Ordering::SeqCst);
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert_eq!((p.status, p.code.as_str()), (503, "log_unavailable"));
    assert!(p.failed.is_empty());
    // The vault stays closed until it restarts and replays what is durable.
    v.fault.store(false, Ordering::SeqCst);
    let b = attempt(&t, &job, DEBUG_OFF).await;
    assert_eq!(problem(t.worker.release(&b.request).await.unwrap_err()).status, 503);
    let v = v.restart().await;
    let report = audit(&v, &v.admin).await;
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.releases, 0, "the release whose entry never became durable is not in the log");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_killed_upload_leaves_no_object() {
    let v = vault().await;
    let t = tenant(&v, "example-bank").await;
    register_dataset(&t, "messages", &[]).await;
    let (object, _) = seal(&t, "messages", &vec![7u8; 3 << 20]);
    // The client dies half way through the body.
    let token = {
        let created: CreatedPrincipal = t
            .admin
            .post(
                &format!("/v1/tenants/{}/principals", t.id),
                &CreatePrincipal {
                    name: "owner2".into(),
                    roles: vec![Role::Owner],
                    signing_key: None,
                    client_cert_sha256: None,
                },
            )
            .await
            .unwrap();
        created.token
    };
    let half = object[..object.len() / 2].to_vec();
    let stream = futures_util::stream::iter(vec![
        Ok::<_, std::io::Error>(bytes::Bytes::from(half)),
        Err(std::io::Error::other("client killed")),
    ]);
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let r = http
        .put(format!("{}/v1/tenants/{}/datasets/messages/objects", v.url, t.id))
        .bearer_auth(&token)
        .header("content-length", object.len())
        .body(reqwest::Body::wrap_stream(stream))
        .send()
        .await;
    assert!(r.is_err() || !r.unwrap().status().is_success());
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    let ds: DatasetView = t.owner.get(&format!("/v1/tenants/{}/datasets/messages", t.id)).await.unwrap();
    assert!(ds.versions.is_empty());
    let leftovers: Vec<_> = walk(&v.data_dir().join("objects"));
    assert!(leftovers.is_empty(), "files left behind: {leftovers:?}");
    // A truncated object sent whole is refused for its length, and leaves nothing either.
    let p = problem(upload(&t, "messages", object[..object.len() - 1].to_vec(), None).await.unwrap_err());
    assert_eq!(p.code, "length_mismatch");
    assert!(walk(&v.data_dir().join("objects")).is_empty());
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(dir) {
        for e in rd.flatten() {
            if e.path().is_dir() {
                out.extend(walk(&e.path()));
            } else {
                out.push(e.path());
            }
        }
    }
    out
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn uploads_are_checked_without_reading_plaintext() {
    let v = vault().await;
    let t = tenant(&v, "example-bank").await;
    register_dataset(&t, "messages", &[]).await;
    register_dataset(&t, "cards", &[]).await;
    // Sealed for another dataset than the URL's.
    let (object, _) = seal(&t, "cards", b"x");
    assert_eq!(problem(upload(&t, "messages", object, None).await.unwrap_err()).code, "header_mismatch");
    // Not sealed to the tenant's KEK.
    let other = t.owner_key.public().clone();
    let fields = coffre_seal::HeaderFields {
        tenant: t.id.clone(),
        dataset: "messages".into(),
        content_type: "text/plain".into(),
        plaintext_len: Some(1),
    };
    let mut sealer = coffre_seal::seal(
        Vec::new(),
        &[other],
        &fields,
        coffre_seal::Workers::sequential(),
        &mut coffre_seal::SystemRandom,
    )
    .unwrap();
    std::io::Write::write_all(&mut sealer, b"x").unwrap();
    let (no_kek, _) = sealer.finish().unwrap();
    let p = problem(upload(&t, "messages", no_kek, None).await.unwrap_err());
    assert_eq!(p.code, "not_sealed_to_kek");
    assert!(p.hint.unwrap().contains(&t.kek_public));
    // A header byte changed: its MAC fails under the KEK's key.
    let (mut tampered, _) = seal(&t, "messages", b"hello");
    let header_len = coffre_seal::Header::parse_prefix(&tampered).unwrap().1;
    tampered[header_len - 1] ^= 1; // the header MAC
    assert_eq!(problem(upload(&t, "messages", tampered, None).await.unwrap_err()).code, "header_tampered");
    // Not a sealed object at all.
    assert_eq!(
        problem(upload(&t, "messages", b"plain text!".repeat(10), None).await.unwrap_err()).code,
        "invalid_sealed_object"
    );
    // A signature over other bytes.
    let (object, sig) = seal(&t, "messages", b"hello");
    let (other_object, _) = seal(&t, "messages", b"hello");
    assert_eq!(problem(upload(&t, "messages", other_object, Some(&sig)).await.unwrap_err()).code, "invalid_signature");
    // The good one, then the same object again: never overwritten.
    let first = upload(&t, "messages", object.clone(), Some(&sig)).await.unwrap();
    assert_eq!(first.version, 1);
    assert_eq!(problem(upload(&t, "messages", object, Some(&sig)).await.unwrap_err()).status, 409);
    assert!(audit(&v, &t.auditor).await.ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn oversized_and_malformed_bodies_get_problem_documents() {
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    // No connection reuse: the vault closes the connection after refusing the oversized body.
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).pool_max_idle_per_host(0).build().unwrap();
    let url = format!("{}/v1/release", v.url);
    let big = format!("{{\"pad\":\"{}\"}}", "x".repeat(9 << 20));
    let r = http
        .post(&url)
        .bearer_auth(&v.admin_token)
        .header("content-type", "application/json")
        .body(big)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 413);
    assert_eq!(r.headers()["content-type"], "application/problem+json");
    for body in ["{", "[]", "{\"tenant\":1}", "not json"] {
        let r = http
            .post(&url)
            .bearer_auth(&v.admin_token)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status().as_u16(), 400, "{body}");
        let p: Problem = r.json().await.unwrap();
        assert_eq!(p.code, "malformed_body");
    }
    // A release naming garbage evidence is a denial with the parse failure, not a crash.
    let challenge = t.worker.challenge(&t.id, "job-0000000000000000").await;
    assert_eq!(problem(challenge.unwrap_err()).status, 404);
    let mut a = attempt(&t, &job, DEBUG_OFF).await;
    if let coffre_api::RawCpu::Snp { report, .. } = &mut a.request.evidence.cpu {
        report.truncate(100);
    }
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert!(p.failed.iter().any(|f| f.actual.contains("an SEV-SNP report is 1184 bytes")), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_another_principal_burns_a_workers_challenge() {
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let a = attempt(&t, &job, DEBUG_OFF).await;
    // Another worker-operator of the same tenant learns the nonce and presents it first.
    let other = principal(&v, &t.admin, &t.id, "other-operator", &[Role::WorkerOperator], None).await;
    let p = problem(other.release(&a.request).await.unwrap_err());
    assert_eq!(p.status, 403, "{p:?}");
    assert!(p.detail.contains("another principal"), "{p:?}");
    // Nothing was decided with that nonce: the worker it was issued to still gets its keys.
    let released = t.worker.release(&a.request).await.unwrap();
    assert_eq!(unwrap_keys(&t, &a, &released).len(), 1);
    assert!(audit(&v, &t.auditor).await.ok());
}

/// A random source whose first 16-byte draw is a chosen object id (the rest is the system's).
struct ObjectIdFirst(Option<[u8; 16]>);

impl coffre_seal::RandomSource for ObjectIdFirst {
    fn fill(&mut self, dest: &mut [u8]) -> coffre_seal::Result<()> {
        match self.0.take() {
            Some(id) if dest.len() == 16 => {
                dest.copy_from_slice(&id);
                Ok(())
            }
            other => {
                self.0 = other;
                coffre_seal::SystemRandom.fill(dest)
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_another_tenant_uploads_an_object_with_a_victims_object_id() {
    use std::io::Write;
    let v = vault().await;
    let (victim, _, job) = ready(&v, "victim-bank").await;
    let dataset: DatasetView = victim.owner.get("/v1/tenants/victim-bank/datasets/messages").await.unwrap();
    let id: [u8; 16] = hex::decode(&dataset.versions[0].object_id).unwrap().try_into().unwrap();
    // The attacker seals its own object (to its own KEK, naming itself) under the victim's
    // object id, which every header shows.
    let attacker = tenant(&v, "attacker-bank").await;
    register_dataset(&attacker, "messages", &[]).await;
    let kek: coffre_seal::RecipientPublicKey = attacker.kek_public.parse().unwrap();
    let fields = coffre_seal::HeaderFields {
        tenant: attacker.id.clone(),
        dataset: "messages".into(),
        content_type: "application/jsonl".into(),
        plaintext_len: Some(5),
    };
    let mut sealer = coffre_seal::seal(
        Vec::new(),
        &[kek],
        &fields,
        coffre_seal::Workers::sequential(),
        &mut ObjectIdFirst(Some(id)),
    )
    .unwrap();
    sealer.write_all(b"hello").unwrap();
    let (object, _) = sealer.finish().unwrap();
    assert_eq!(coffre_seal::inspect(&object[..]).unwrap().object_id.0, id);
    let p = problem(upload(&attacker, "messages", object, None).await.unwrap_err());
    assert_eq!(p.status, 409, "{p:?}");
    // The victim's data key is still stored: its release opens.
    let a = attempt(&victim, &job, DEBUG_OFF).await;
    let released = victim.worker.release(&a.request).await.unwrap();
    assert_eq!(unwrap_keys(&victim, &a, &released).len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_worker_presents_an_old_crl_from_before_a_revocation() {
    use coffre_attestation::UnixTime;
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let tee = &hardware().tee;
    let ask = coffre_attestation::x509::Certificate::from_der(tee.ask_der()).unwrap();
    let now = i64::try_from(coffre_vault::app::now()).unwrap();
    let (day, month) = (86_400, 30 * 86_400);
    let before = tee.crl(&[], UnixTime(now - 2 * day), UnixTime(now + month)).unwrap();
    let current = tee.crl(&[&ask.serial], UnixTime(now - 3600), UnixTime(now + month)).unwrap();
    // The operator mirrors the current CRL, which revokes this platform's ASK.
    let mirror = tempfile::tempdir().unwrap();
    std::fs::write(mirror.path().join("ark.crl"), &current).unwrap();
    let pool = v.database().await;
    let imported = coffre_vault::collateral::import(&pool, mirror.path()).await.unwrap();
    assert_eq!(imported.stored.len(), 1, "{imported:?}");
    // The worker attaches the older CRL, from before the revocation: the newer one decides.
    let mut a = attempt(&t, &job, DEBUG_OFF).await;
    let coffre_api::RawCpu::Snp { crl, .. } = &mut a.request.evidence.cpu else { unreachable!() };
    *crl = Some(before);
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert!(p.failed.iter().any(|f| f.name.ends_with("crl") && f.actual.contains("revoked")), "{p:?}");
}
