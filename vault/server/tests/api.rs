//! The vault through its real router, on a real TLS listener on loopback: the whole flow a bank
//! runs, every authorization rule, and the OpenAPI document against the routes that exist.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use coffre_api::wire::*;
use common::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_seals_uploads_approves_submits_and_an_attested_worker_gets_exactly_its_keys() {
    let v = vault().await;
    let (t, plaintext, job) = ready(&v, "example-bank").await;

    // The worker: a challenge, evidence bound to it, the keys.
    let a = attempt(&t, &job, DEBUG_OFF).await;
    let resp = t.worker.release(&a.request).await.unwrap();
    assert!(resp.simulated, "development mode marks simulated releases");
    assert_eq!(resp.policies, ["development@1"]);
    assert!(resp.checkpoint.contains("coffre.localhost/log"));
    let deks = unwrap_keys(&t, &a, &resp);
    assert_eq!(deks.len(), 1);
    // The released key opens the object the vault stores, to the owner's plaintext.
    let ds: DatasetView = t.owner.get(&format!("/v1/tenants/{}/datasets/messages", t.id)).await.unwrap();
    let object =
        t.worker.get_bytes(&format!("/v1/tenants/{}/datasets/messages/versions/1/object", t.id)).await.unwrap();
    assert_eq!(coffre_log::Digest::of(&object).to_string(), ds.versions[0].digest);
    let header = coffre_seal::Header::parse_prefix(&object).unwrap();
    let mut out = Vec::new();
    let mut reader =
        coffre_seal::open_body(&object[header.1..], &header.0, &deks[0], coffre_seal::Workers::sequential()).unwrap();
    std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
    assert_eq!(out, plaintext);
    assert_eq!(ds.versions[0].signer.as_deref(), Some(t.owner_signing.verifying_key().key_id().as_str()));

    // A VM with debugging allowed: denied, every failed check named, in the log.
    let bad = attempt(&t, &job, DEBUG_ON).await;
    let p = problem(t.worker.release(&bad.request).await.unwrap_err());
    assert_eq!((p.status, p.code.as_str()), (403, "release_denied"));
    assert!(p.failed.iter().any(|f| f.name == "snp.policy.debug"), "{p:?}");
    let denial: DenialView =
        t.auditor.get(&format!("/v1/tenants/{}/denials/{}", t.id, p.denial.unwrap())).await.unwrap();
    assert_eq!(denial.failed, p.failed);

    // The auditor's audit of the live log is clean.
    let report = audit(&v, &t.auditor).await;
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!((report.releases, report.denials, report.redacted), (1, 1, 0));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_role_sees_only_what_it_may_and_no_tenant_sees_another() {
    let v = vault().await;
    let (a, _, job) = ready(&v, "example-bank").await;
    let b = tenant(&v, "other-bank").await;
    let anonymous = v.client(None);
    let status = |r: Result<serde_json::Value, coffre_api::client::ClientError>| match r {
        Ok(_) => 200,
        Err(e) => problem(e).status,
    };
    let ta = &a.id;
    // Tenant B's principals, whatever their role: the same 404 as for a tenant that does not exist.
    for who in [&b.admin, &b.owner, &b.approvers[0].0, &b.auditor, &b.worker] {
        for path in [
            format!("/v1/tenants/{ta}"),
            format!("/v1/tenants/{ta}/datasets"),
            format!("/v1/tenants/{ta}/datasets/messages"),
            format!("/v1/tenants/{ta}/datasets/messages/versions/1/object"),
            format!("/v1/tenants/{ta}/jobs"),
            format!("/v1/tenants/{ta}/jobs/{}", job.id),
            format!("/v1/tenants/{ta}/policies"),
            format!("/v1/tenants/{ta}/approvers"),
            format!("/v1/tenants/{ta}/principals"),
            format!("/v1/tenants/{ta}/artifacts"),
            format!("/v1/tenants/{ta}/denials/0"),
            "/v1/tenants/no-such-bank".to_owned(),
        ] {
            let s = if path.ends_with("/object") {
                match who.get_bytes(&path).await {
                    Ok(_) => 200,
                    Err(e) => problem(e).status,
                }
            } else {
                status(who.get(&path).await)
            };
            assert_eq!(s, 404, "{path}");
        }
        let p = problem(who.challenge(ta, &job.id).await.unwrap_err());
        assert_eq!(p.status, 404);
        let p = problem(
            who.post::<_, serde_json::Value>(
                &format!("/v1/tenants/{ta}/datasets"),
                &RegisterDataset { id: "x".into(), labels: vec![] },
            )
            .await
            .unwrap_err(),
        );
        assert_eq!(p.status, 404);
    }
    // Tenant B's worker cannot release tenant A's job, even with a challenge of its own tenant.
    let stolen = attempt_with(&a, &job, &"00".repeat(32), DEBUG_OFF, None).await;
    assert_eq!(problem(b.worker.release(&stolen.request).await.unwrap_err()).status, 404);
    // No credentials: 401; a wrong token: 401.
    assert_eq!(status(anonymous.get(&format!("/v1/tenants/{ta}")).await), 401);
    assert_eq!(status(v.client(Some("coffre_not-a-token")).get(&format!("/v1/tenants/{ta}")).await), 401);
    // Within tenant A, each role: 403 outside its duties.
    let reg = RegisterDataset { id: "y".into(), labels: vec![] };
    for who in [&a.auditor, &a.worker, &a.approvers[0].0] {
        let p =
            problem(who.post::<_, serde_json::Value>(&format!("/v1/tenants/{ta}/datasets"), &reg).await.unwrap_err());
        assert_eq!((p.status, p.code.as_str()), (403, "forbidden"));
    }
    for who in [&a.owner, &a.auditor, &a.approvers[0].0] {
        assert_eq!(problem(who.challenge(ta, &job.id).await.unwrap_err()).status, 403);
    }
    for who in [&a.owner, &a.worker] {
        assert_eq!(status(who.get(&format!("/v1/tenants/{ta}/denials/0")).await), 403);
        assert_eq!(status(who.get("/v1/log").await), 403);
    }
    let p = problem(
        a.owner
            .post::<_, serde_json::Value>("/v1/tenants", &CreateTenant { id: "mine".into(), name: "Mine".into() })
            .await
            .unwrap_err(),
    );
    assert_eq!(p.status, 403);
    // Another tenant's auditor sees A's entries only as leaf hashes: the tree checks, nothing leaks.
    let seen_by_b = audit(&v, &b.auditor).await;
    assert!(seen_by_b.ok(), "{:?}", seen_by_b.problems);
    assert!(seen_by_b.redacted > 0);
    assert!(seen_by_b.releases == 0 && seen_by_b.policies_activated == 1);
}

/// The OpenAPI document names only routes the router has, each answering with a problem document
/// or success, never "no such route".
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_openapi_document_matches_the_routes() {
    let v = vault().await;
    let doc: serde_json::Value = v.client(None).get("/v1/openapi.json").await.unwrap();
    let paths = doc["paths"].as_object().unwrap();
    assert_eq!(
        paths.len(),
        coffre_vault::openapi::ROUTES.iter().map(|r| r.path).collect::<std::collections::BTreeSet<_>>().len()
    );
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    for route in coffre_vault::openapi::ROUTES {
        let path = route
            .path
            .replace("{tenant}", "t")
            .replace("{dataset}", "d")
            .replace("{version}", "1")
            .replace("{id}", "p")
            .replace("{job}", "j")
            .replace("{model}", "m")
            .replace("{index}", "0")
            .replace("{part}", "0")
            .replace("{size}", "1")
            .replace("{digest}", &format!("sha256:{}", "0".repeat(64)));
        let url = format!("{}{path}", v.url);
        let req = match route.method {
            "post" => http.post(&url).json(&serde_json::json!({})),
            "put" => http.put(&url).json(&serde_json::json!({})),
            "delete" => http.delete(&url),
            _ => http.get(&url),
        };
        let resp = req.bearer_auth(&v.admin_token).send().await.unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        assert!(
            !body.contains("no_such_route"),
            "{} {} is in the document but not served: {status} {body}",
            route.method,
            route.path
        );
    }
    // And the converse, for one route that does not exist.
    let resp = http.get(format!("{}/v1/nothing", v.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 404);
    assert!(resp.text().await.unwrap().contains("no_such_route"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_metrics_and_the_development_marker() {
    let v = vault().await;
    let health: Health = v.client(None).get("/healthz").await.unwrap();
    assert!(health.development);
    let http = reqwest::Client::builder().danger_accept_invalid_certs(true).build().unwrap();
    let resp = http.get(format!("{}/readyz", v.url)).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    assert!(resp.headers().contains_key(DEVELOPMENT_HEADER));
    let (t, _, job) = ready(&v, "example-bank").await;
    let a = attempt(&t, &job, DEBUG_ON).await;
    let _ = t.worker.release(&a.request).await.unwrap_err();
    let metrics = http.get(format!("{}/metrics", v.url)).send().await.unwrap().text().await.unwrap();
    assert!(metrics.contains("coffre_denials_total 1"), "{metrics}");
    assert!(metrics.contains("coffre_denied_checks_total{check=\"snp.policy.debug\"} 1"), "{metrics}");
    assert!(metrics.contains("coffre_development_mode 1"));
    assert!(
        metrics.contains("coffre_http_request_duration_seconds_bucket{method=\"POST\",route=\"/v1/release\""),
        "{metrics}"
    );
    // The log records development mode: the first entry.
    let entries: LogEntries = t.auditor.get("/v1/log/entries?start=0&end=1").await.unwrap();
    assert!(
        entries.entries[0]
            .as_deref()
            .unwrap()
            .contains("\"setting\":\"development_mode\",\"old\":\"off\",\"new\":\"on\"")
    );
}

/// Artifacts: only a provenance signed by the key the release bound, for that release's job and
/// tenant, with versions per model only increasing.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn artifacts_need_the_released_workers_signature_and_increasing_versions() {
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let a = attempt(&t, &job, DEBUG_OFF).await;
    let release = t.worker.release(&a.request).await.unwrap().log_index;
    let (artifact, _) = seal(&t, "messages", b"adapter weights");
    // Signed by another key than the release bound.
    let stranger = coffre_seal::SigningKey::generate().unwrap();
    let p = problem(
        upload_artifact(
            &t,
            "fraud-lora",
            1,
            &job,
            release,
            artifact.clone(),
            provenance(&t, &job, release, &artifact, &stranger, 1),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(p.code, "provenance_refused");
    assert!(p.detail.contains("not by the key the release bound"), "{p:?}");
    // A provenance whose subject is another artifact.
    let p = problem(
        upload_artifact(
            &t,
            "fraud-lora",
            1,
            &job,
            release,
            artifact.clone(),
            provenance(&t, &job, release, b"other", &a.signing, 1),
        )
        .await
        .unwrap_err(),
    );
    assert!(p.detail.contains("subject is not this artifact"), "{p:?}");
    // A release that is not this job's (a denial index, or nothing).
    let p = problem(
        upload_artifact(
            &t,
            "fraud-lora",
            1,
            &job,
            release - 1,
            artifact.clone(),
            provenance(&t, &job, release - 1, &artifact, &a.signing, 1),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(p.status, 404);
    // The real one, then a newer version, then an older one again.
    let view = upload_artifact(
        &t,
        "fraud-lora",
        2,
        &job,
        release,
        artifact.clone(),
        provenance(&t, &job, release, &artifact, &a.signing, 2),
    )
    .await
    .unwrap();
    assert_eq!((view.version, view.release), (2, release));
    // An envelope naming version 2 sent as version 5 (under a release with no artifact yet):
    // the statement names version 2 only.
    let a2 = attempt(&t, &job, DEBUG_OFF).await;
    let release2 = t.worker.release(&a2.request).await.unwrap().log_index;
    let p = problem(
        upload_artifact(
            &t,
            "fraud-lora",
            5,
            &job,
            release2,
            artifact.clone(),
            provenance(&t, &job, release2, &artifact, &a2.signing, 2),
        )
        .await
        .unwrap_err(),
    );
    assert!(p.detail.contains("names fraud-lora-v2.coffre"), "{p:?}");
    // The same registration sent again (its answer lost): the one already made, not a second.
    let again = upload_artifact(
        &t,
        "fraud-lora",
        2,
        &job,
        release,
        artifact.clone(),
        provenance(&t, &job, release, &artifact, &a.signing, 2),
    )
    .await
    .unwrap();
    assert_eq!(again, view);
    // A second artifact under the same release: refused, one release trains one model.
    let (newer, _) = seal(&t, "messages", b"adapter weights v3");
    let p = problem(
        upload_artifact(
            &t,
            "fraud-lora",
            3,
            &job,
            release,
            newer.clone(),
            provenance(&t, &job, release, &newer, &a.signing, 3),
        )
        .await
        .unwrap_err(),
    );
    assert!(p.detail.contains("already registered its artifact (fraud-lora v2)"), "{p:?}");
    // Under a release of its own it registers.
    upload_artifact(
        &t,
        "fraud-lora",
        3,
        &job,
        release2,
        newer.clone(),
        provenance(&t, &job, release2, &newer, &a2.signing, 3),
    )
    .await
    .unwrap();
    let a3 = attempt(&t, &job, DEBUG_OFF).await;
    let release3 = t.worker.release(&a3.request).await.unwrap().log_index;
    let p = problem(
        upload_artifact(
            &t,
            "fraud-lora",
            1,
            &job,
            release3,
            artifact.clone(),
            provenance(&t, &job, release3, &artifact, &a3.signing, 1),
        )
        .await
        .unwrap_err(),
    );
    // The worker relies on this code and text to pick the next version and retry
    // (`coffre_worker::run`'s version_taken).
    assert_eq!((p.status, p.code.as_str()), (422, "refused_by_log_rules"));
    assert!(p.detail.contains("does not follow the registered version 3"), "{p:?}");
    let list: Vec<ArtifactView> = t.owner.get(&format!("/v1/tenants/{}/artifacts", t.id)).await.unwrap();
    assert_eq!(list.iter().map(|a| a.version).collect::<Vec<_>>(), [2, 3]);
    let report = audit(&v, &t.auditor).await;
    assert!(report.ok(), "{:?}", report.problems);
    assert_eq!(report.artifacts, 2);
}

/// A principal can authenticate with a client certificate (mutual TLS) instead of a token.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_registered_client_certificate_authenticates() {
    let v = vault().await;
    let t = tenant(&v, "example-bank").await;
    let cert = rcgen::generate_simple_self_signed(vec!["worker-7".into()]).unwrap();
    let fp = coffre_api::pin::Fingerprint::of(cert.cert.der());
    let _: CreatedPrincipal = t
        .admin
        .post(
            &format!("/v1/tenants/{}/principals", t.id),
            &CreatePrincipal {
                name: "auditor-mtls".into(),
                roles: vec![Role::Auditor],
                signing_key: None,
                client_cert_sha256: Some(fp.to_string()),
            },
        )
        .await
        .unwrap();
    let mtls = coffre_api::client::VaultClient::new(&coffre_api::client::Options {
        url: v.url.clone(),
        fingerprint: Some(v.running.fingerprint),
        token: None,
        identity: Some((cert.cert.pem().into_bytes(), cert.signing_key.serialize_pem().into_bytes())),
    })
    .unwrap();
    let tv: TenantView = mtls.get(&format!("/v1/tenants/{}", t.id)).await.unwrap();
    assert_eq!(tv.id, t.id);
    // An unregistered certificate is nobody.
    let other = rcgen::generate_simple_self_signed(vec!["stranger".into()]).unwrap();
    let stranger = coffre_api::client::VaultClient::new(&coffre_api::client::Options {
        url: v.url.clone(),
        fingerprint: Some(v.running.fingerprint),
        token: None,
        identity: Some((other.cert.pem().into_bytes(), other.signing_key.serialize_pem().into_bytes())),
    })
    .unwrap();
    assert_eq!(problem(stranger.get::<TenantView>(&format!("/v1/tenants/{}", t.id)).await.unwrap_err()).status, 401);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn collateral_from_the_store_completes_evidence_that_lacks_it() {
    // Real AMD evidence: a Milan report with its VCEK (go-sev-guest), and another chip's report.
    let (Some(report), Some(vcek), Some(other)) = (
        coffre_testkit::read("sev-snp/go-sev-guest/attestation.bin"),
        coffre_testkit::read("sev-snp/go-sev-guest/vcek.der"),
        coffre_testkit::read("sev-snp/trustee/az-snp-vtpm/extracted/evidence-v0.snp-report.bin"),
    ) else {
        return;
    };
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    // The operator mirrors one chip's VCEK into the collateral store, as `coffred collateral
    // import DIR` does.
    let mirror = tempfile::tempdir().unwrap();
    std::fs::write(mirror.path().join("vcek.der"), &vcek).unwrap();
    let pool = v.database().await;
    let imported = coffre_vault::collateral::import(&pool, mirror.path()).await.unwrap();
    assert_eq!(imported.stored.len(), 1, "{imported:?}");
    assert_eq!(imported.stored[0].0, "vcek");

    let without_vek = |report: Vec<u8>| coffre_api::RawCpu::Snp { report, vek: None, chain: Vec::new(), crl: None };
    // That chip's report without its VCEK: the store supplies it, so the report's signature is
    // checked (and verifies); the release is still denied, for what the real report binds.
    let mut a = attempt(&t, &job, DEBUG_OFF).await;
    a.request.evidence.cpu = without_vek(report);
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    let failed: Vec<&str> = p.failed.iter().map(|f| f.name.as_str()).collect();
    assert!(!failed.iter().any(|n| n.ends_with("collateral")), "the VCEK was in the store: {failed:?}");
    assert!(!failed.iter().any(|n| n.ends_with("report_signature")), "{failed:?}");
    assert!(failed.iter().any(|n| n.ends_with("report_data")), "{failed:?}");

    // Another chip's report, whose VCEK nobody mirrored: denied, naming the exact item to mirror.
    let mut a = attempt(&t, &job, DEBUG_OFF).await;
    a.request.evidence.cpu = without_vek(other);
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    let missing = p.failed.iter().find(|f| f.name.ends_with("collateral")).expect("a collateral failure");
    assert!(missing.actual.contains("https://kdsintf.amd.com/vcek/v1/"), "{missing:?}");
    assert!(p.failed.iter().any(|f| f.name.ends_with("report_signature")), "{p:?}");
}

/// A TDX quote sent without Intel's collateral (as a Confidential Containers pod sends it): the
/// vault completes it from its store by the FMSPC in the quote's PCK certificate, or names the
/// exact PCS item to mirror.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_tdx_quote_without_collateral_is_completed_from_the_store_by_its_fmspc() {
    let (Some(quote), Some(collateral)) = (
        coffre_testkit::read("tdx/dcap-qvl/tdx_quote"),
        coffre_testkit::read("tdx/dcap-qvl/tdx_quote_collateral.json"),
    ) else {
        return;
    };
    let quote = coffre_attestation::tdx::quote::from_bytes(&quote);
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let bare = |quote: &[u8]| coffre_api::RawCpu::Tdx { quote: quote.to_vec(), collateral: Vec::new() };

    // Nothing mirrored: denied, naming the FMSPC and the PCS URL.
    let mut a = attempt(&t, &job, DEBUG_OFF).await;
    a.request.evidence.cpu = bare(&quote);
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    let missing = p.failed.iter().find(|f| f.name.ends_with("collateral")).expect("a collateral failure");
    assert!(missing.actual.contains("FMSPC B0C06F000000"), "{missing:?}");
    assert!(
        missing.actual.contains("https://api.trustedservices.intel.com/tdx/certification/v4/tcb?fmspc="),
        "{missing:?}"
    );

    // Mirrored: the quote is appraised with it (and still denied, for what the real quote binds).
    let mirror = tempfile::tempdir().unwrap();
    std::fs::write(mirror.path().join("pcs-B0C06F000000.json"), &collateral).unwrap();
    let pool = v.database().await;
    let imported = coffre_vault::collateral::import(&pool, mirror.path()).await.unwrap();
    assert_eq!(imported.stored, [("tdx".to_owned(), "B0C06F000000".to_owned())], "{imported:?}");
    // The store's absent-item cache forgets within 5 s.
    tokio::time::sleep(std::time::Duration::from_secs(6)).await;
    let mut a = attempt(&t, &job, DEBUG_OFF).await;
    a.request.evidence.cpu = bare(&quote);
    let p = problem(t.worker.release(&a.request).await.unwrap_err());
    assert!(!p.failed.iter().any(|f| f.actual.contains("Intel PCS collateral")), "{:#?}", p.failed);
    assert!(p.failed.iter().any(|f| f.name.ends_with("report_data")), "{:#?}", p.failed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_vault_on_the_same_data_directory_is_refused() {
    let v = vault().await;
    let second = coffre_vault::server::start(coffre_vault::server::ServeOptions {
        data_dir: v.data_dir(),
        dev_roots: Some(v.roots.clone()),
        passphrase: None,
        listen: Some("127.0.0.1:0".into()),
        log_fault: Default::default(),
    })
    .await;
    let e = second.expect_err("a second writer of the same log");
    assert!(e.to_string().contains("another coffred"), "{e}");
    // The first one still serves.
    let _: Vec<TenantView> = v.admin.get("/v1/tenants").await.unwrap();
}

/// Seals `plaintext` to exactly `to`.
fn seal_to(t: &Tenant, to: &[coffre_seal::RecipientPublicKey], plaintext: &[u8]) -> Vec<u8> {
    use std::io::Write;
    let fields = coffre_seal::HeaderFields {
        tenant: t.id.clone(),
        dataset: String::new(),
        content_type: "application/x-tar".into(),
        plaintext_len: Some(plaintext.len() as u64),
    };
    let mut sealer =
        coffre_seal::seal(Vec::new(), to, &fields, coffre_seal::Workers::sequential(), &mut coffre_seal::SystemRandom)
            .unwrap();
    sealer.write_all(plaintext).unwrap();
    sealer.finish().unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_artifact_not_sealed_to_the_jobs_output_recipients_is_refused() {
    let v = vault().await;
    let (t, _, job) = ready(&v, "example-bank").await;
    let a = attempt(&t, &job, DEBUG_OFF).await;
    let release = t.worker.release(&a.request).await.unwrap().log_index;
    // A worker that seals the model to a key of its own choosing instead of the owner's.
    let stranger = coffre_seal::RecipientSecretKey::generate(&mut coffre_seal::SystemRandom).unwrap();
    let artifact = seal_to(&t, &[stranger.public().clone()], b"adapter weights");
    let p = problem(
        upload_artifact(
            &t,
            "fraud-lora",
            1,
            &job,
            release,
            artifact.clone(),
            provenance(&t, &job, release, &artifact, &a.signing, 1),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!((p.status, p.code.as_str()), (422, "artifact_recipients"), "{p:?}");
    assert!(p.detail.contains(&t.owner_key.public().key_id().to_string()), "{p:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_job_that_asks_for_the_tenant_kek_gets_an_artifact_the_vault_can_open() {
    let v = vault().await;
    let (t, _, first) = ready(&v, "example-bank").await;
    let ds: DatasetView = t.owner.get(&format!("/v1/tenants/{}/datasets/messages", t.id)).await.unwrap();
    let object = ObjectView {
        version: 1,
        object_id: ds.versions[0].object_id.clone(),
        digest: ds.versions[0].digest.clone(),
        size: ds.versions[0].size,
        key_id: ds.versions[0].key_id.clone(),
        signer: None,
        log_index: 0,
    };
    let mut m = manifest(&t, "messages", &object, 100);
    m.name = "kek-escrow".into();
    m.output_recipients.push(t.kek_public.clone());
    let job = submit_job(&t, &m).await.unwrap();
    assert_ne!(job.id, first.id);
    let a = attempt(&t, &job, DEBUG_OFF).await;
    let release = t.worker.release(&a.request).await.unwrap().log_index;
    let kek: coffre_seal::RecipientPublicKey = t.kek_public.parse().unwrap();
    // Sealed to the owner only: the KEK the job named is missing.
    let owner_only = seal_to(&t, &[t.owner_key.public().clone()], b"adapter weights");
    let p = problem(
        upload_artifact(
            &t,
            "fraud-lora",
            1,
            &job,
            release,
            owner_only.clone(),
            provenance(&t, &job, release, &owner_only, &a.signing, 1),
        )
        .await
        .unwrap_err(),
    );
    assert_eq!(p.code, "artifact_recipients", "{p:?}");
    assert!(p.detail.contains(&kek.key_id().to_string()), "{p:?}");
    // Sealed to both: registered.
    let both = seal_to(&t, &[t.owner_key.public().clone(), kek], b"adapter weights");
    let view = upload_artifact(
        &t,
        "fraud-lora",
        1,
        &job,
        release,
        both.clone(),
        provenance(&t, &job, release, &both, &a.signing, 1),
    )
    .await
    .unwrap();
    assert_eq!(view.version, 1);
    assert!(audit(&v, &t.auditor).await.ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn base_models_are_stored_under_the_digest_the_vault_recomputes_per_tenant() {
    let v = vault().await;
    let t = tenant(&v, "example-bank").await;
    let other = tenant(&v, "other-bank").await;
    let dir = std::env::temp_dir().join(format!("coffre-api-model-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.json"), b"{\"hidden_size\": 8}").unwrap();
    std::fs::write(dir.join("model.safetensors"), vec![3u8; 100_000]).unwrap();
    let mut tar = Vec::new();
    let digest = coffre_api::model::pack_dir(&dir, &mut tar).unwrap();
    assert_eq!(coffre_api::model::digest_path(&dir).unwrap().1, digest);
    let url = |t: &Tenant, d: &str| format!("/v1/tenants/{}/models/{d}", t.id);

    // A wrong digest, a malformed tar, a worker uploading: refused.
    let wrong = format!("sha256:{}", "0".repeat(64));
    let p = problem(
        t.owner
            .upload_bytes::<ModelView>(&format!("{}?kind=dir", url(&t, &wrong)), tar.clone(), &[])
            .await
            .unwrap_err(),
    );
    assert_eq!((p.status, p.code.as_str()), (400, "digest_mismatch"), "{p:?}");
    assert!(p.detail.contains(&digest), "{p:?}");
    let p = problem(
        t.owner
            .upload_bytes::<ModelView>(&format!("{}?kind=dir", url(&t, &digest)), b"not a tar".repeat(100), &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(p.code, "invalid_model", "{p:?}");
    // (An empty body: the vault answers 403 before reading any, and a large body still being
    // sent then would end in a broken pipe on the client instead of the answer.)
    let p = problem(
        t.worker
            .upload_bytes::<ModelView>(&format!("{}?kind=dir", url(&t, &digest)), Vec::new(), &[])
            .await
            .unwrap_err(),
    );
    assert_eq!(p.status, 403, "{p:?}");

    // The right one: stored; again: the same, 200.
    let view: ModelView =
        t.owner.upload_bytes(&format!("{}?kind=dir", url(&t, &digest)), tar.clone(), &[]).await.unwrap();
    assert_eq!((view.digest.as_str(), view.kind.as_str(), view.size), (digest.as_str(), "dir", tar.len() as u64));
    let again: ModelView =
        t.owner.upload_bytes(&format!("{}?kind=dir", url(&t, &digest)), tar.clone(), &[]).await.unwrap();
    assert_eq!(again, view);
    // The worker downloads exactly those bytes; another tenant sees nothing.
    let got = t.worker.get_bytes(&format!("{}/content", url(&t, &digest))).await.unwrap();
    assert_eq!(got, tar);
    let listed: Vec<ModelView> = t.worker.get(&format!("/v1/tenants/{}/models", t.id)).await.unwrap();
    assert_eq!(listed, [view]);
    let p = problem(other.owner.get::<ModelView>(&url(&other, &digest)).await.unwrap_err());
    assert_eq!(p.status, 404);
    let p = problem(other.owner.get::<ModelView>(&url(&t, &digest)).await.unwrap_err());
    assert_eq!(p.status, 404, "another tenant's model is not there for it");

    // A single-file model: the SHA-256 of its bytes.
    let gguf = b"GGUF and some weights".to_vec();
    let d = coffre_log::Digest::of(&gguf).to_string();
    let view: ModelView = t.owner.upload_bytes(&format!("{}?kind=file", url(&t, &d)), gguf.clone(), &[]).await.unwrap();
    assert_eq!(view.kind, "file");
    assert_eq!(t.worker.get_bytes(&format!("{}/content", url(&t, &d))).await.unwrap(), gguf);
    std::fs::remove_dir_all(&dir).unwrap();
}
