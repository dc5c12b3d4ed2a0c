//! What must fail, tried against the running binaries on the state the demo leaves: a production
//! policy against the simulated worker, a tampered dataset object, a replayed nonce, another
//! tenant's job, a policy raised between challenge and release, a log entry altered on disk,
//! an artifact rolled back to an older version. Each fails closed, saying why.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::path::{Path, PathBuf};

use coffre_api::client::{ClientError, VaultClient};
use coffre_api::wire::ReleaseRequest;
use coffre_e2e::{Bank, text};

const TENANT: &str = "example-bank";

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            files_under(&p, out);
        } else {
            out.push(p);
        }
    }
}

#[test]
fn attack_tampered_dataset_object_in_the_vaults_store_trains_nothing() {
    let Some(bank) = Bank::start() else { return };
    // The stored object is the very file the owner uploaded; flip one ciphertext byte of it.
    let uploaded = std::fs::read(bank.dir.join("messages.jsonl.coffre")).unwrap();
    let mut files = Vec::new();
    files_under(&bank.dir.join("vault"), &mut files);
    let stored = files.iter().find(|p| std::fs::read(p).is_ok_and(|b| b == uploaded)).expect("the stored object");
    let mut bytes = uploaded.clone();
    let at = bytes.len() - 40;
    bytes[at] ^= 1;
    std::fs::write(stored, &bytes).unwrap();
    let out = bank.worker("worker.tok", TENANT, &bank.job, "machine.json", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("refusing to train on it"), "{}", text(&out));
    // Refused before any key was asked for: still the demo's one release.
    let job: serde_json::Value =
        serde_json::from_str(&bank.ok("owner", &["job", "show", &bank.job, "--tenant", TENANT, "--json"])).unwrap();
    assert_eq!(job["releases"], 1, "{job}");
}

#[test]
fn attack_artifact_rolled_back_to_an_older_version_is_refused() {
    let Some(bank) = Bank::start() else { return };
    let out =
        bank.worker("worker.tok", TENANT, &bank.job, "machine.json", &["--model", "fraud-lora", "--version", "1"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("does not follow the registered version 1"), "{}", text(&out));
    let list = bank.ok("owner", &["artifact", "list", "--tenant", TENANT]);
    assert_eq!(list.matches("fraud-lora v").count(), 1, "{list}");
}

#[test]
fn a_production_policy_denies_the_simulated_worker_and_no_tenant_reaches_anothers_job() {
    let Some(bank) = Bank::start() else { return };
    let t = "prod-bank";
    // A second tenant run like a production one: bank-strict (SEV-SNP only), approved 2 of 3.
    bank.ok("admin", &["tenant", "create", t, "--name", "Production Bank"]);
    bank.ok(
        "admin",
        &["principal", "create", "--tenant", t, "p-admin", "--role", "admin", "--token-out", "p-admin.tok"],
    );
    bank.ok("p-admin", &["keygen", "--signing", "-o", "p-owner.sign.key"]);
    let owner_pub = bank.ok("p-admin", &["keygen", "-o", "p-owner.key"]).trim().to_owned();
    bank.ok(
        "p-admin",
        &[
            "principal",
            "create",
            "--tenant",
            t,
            "p-owner",
            "--role",
            "owner",
            "--signing-key",
            "p-owner.sign.key",
            "--token-out",
            "p-owner.tok",
        ],
    );
    for who in ["alice", "bob"] {
        bank.ok(
            "p-admin",
            &[
                "principal",
                "create",
                "--tenant",
                t,
                &format!("p-{who}"),
                "--role",
                "approver",
                "--token-out",
                &format!("p-{who}.tok"),
            ],
        );
    }
    bank.ok(
        "p-admin",
        &["principal", "create", "--tenant", t, "p-worker", "--role", "worker-operator", "--token-out", "p-worker.tok"],
    );
    let set = std::fs::read_to_string(bank.dir.join("approvers.toml")).unwrap().replace(TENANT, t);
    std::fs::write(bank.dir.join("p-approvers.toml"), set).unwrap();
    bank.ok("p-admin", &["approvers", "set", "--tenant", t, "p-approvers.toml"]);
    let strict = include_str!("../../../policies/bundled/bank-strict.toml")
        .replace("tenant = \"example-bank\"", "tenant = \"prod-bank\"");
    std::fs::write(bank.dir.join("bank-strict.toml"), strict).unwrap();
    bank.ok("p-alice", &["policy", "propose", "--tenant", t, "bank-strict.toml"]);
    for who in ["alice", "bob"] {
        bank.ok(
            "p-admin",
            &["policy", "sign", "bank-strict.toml", "-i", &format!("{who}.key"), "-o", &format!("p-{who}.approval")],
        );
        bank.ok(
            &format!("p-{who}"),
            &["policy", "approve", "--tenant", t, "bank-strict", "1", &format!("p-{who}.approval")],
        );
    }
    bank.ok("p-alice", &["policy", "activate", "--tenant", t, "bank-strict", "1"]);
    let tenant: serde_json::Value =
        serde_json::from_str(&bank.ok("p-owner", &["tenant", "show", t, "--json"])).unwrap();
    let kek = tenant["kek"]["public_key"].as_str().unwrap().to_owned();
    bank.ok(
        "p-owner",
        &[
            "seal",
            "-r",
            &kek,
            "-r",
            &owner_pub,
            "--tenant",
            t,
            "--dataset",
            "cards",
            "--sign",
            "p-owner.sign.key",
            "messages.jsonl",
            "-o",
            "cards.coffre",
        ],
    );
    bank.ok("p-owner", &["dataset", "register", "cards", "--tenant", t, "--label", "customer-pii"]);
    bank.ok("p-owner", &["dataset", "upload", "cards", "cards.coffre", "--tenant", t]);
    let tiny = bank.dir.join("tiny-model").display().to_string();
    let job: serde_json::Value = serde_json::from_str(&bank.ok(
        "p-owner",
        &[
            "job",
            "submit",
            "--tenant",
            t,
            "--dataset",
            "cards",
            "--steps",
            "2",
            "--base-model",
            &tiny,
            "--output-recipient",
            "p-owner.key",
            "--sign",
            "p-owner.sign.key",
            "--json",
        ],
    ))
    .unwrap();
    let prod_job = job["id"].as_str().unwrap().to_owned();

    // The simulated worker, even on a development vault: the production policy denies it, every
    // failed check named.
    let out = bank.worker("p-worker.tok", t, &prod_job, "machine.json", &["--base-model", &tiny]);
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    assert!(text(&out).contains("[bank-strict@1] platform"), "{}", text(&out));

    // Another tenant's job, asked for with example-bank's worker token: neither as that tenant
    // nor as one's own is there anything to get.
    let out = bank.worker("worker.tok", t, &prod_job, "machine.json", &["--base-model", &tiny]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let out2 = bank.worker("worker.tok", TENANT, &prod_job, "machine.json", &["--base-model", &tiny]);
    assert_eq!(out2.status.code(), Some(1), "{}", text(&out2));
    assert!(text(&out2).contains("cannot read the job"), "{}", text(&out2));
    let job: serde_json::Value =
        serde_json::from_str(&bank.ok("p-owner", &["job", "show", &prod_job, "--tenant", t, "--json"])).unwrap();
    assert_eq!(job["releases"], 0, "no key left for prod-bank's job: {job}");
}

/// A worker of the demo's job, step by step (its keys, a challenge, evidence bound to both).
struct Attempt {
    client: VaultClient,
    request: ReleaseRequest,
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

fn attempt(bank: &Bank, rt: &tokio::runtime::Runtime) -> Attempt {
    let client = bank.client("worker.tok");
    let request = rt.block_on(bank.release_request(&client, &bank.job)).expect("a challenge");
    Attempt { client, request }
}

fn problem(e: ClientError) -> coffre_api::wire::Problem {
    e.problem().cloned().unwrap_or_else(|| panic!("expected a problem document, got {e}"))
}

#[test]
fn attack_replayed_nonce_is_refused_and_logged_once() {
    let Some(bank) = Bank::start() else { return };
    let rt = runtime();
    let a = attempt(&bank, &rt);
    let first = rt.block_on(a.client.release(&a.request)).unwrap();
    // The same request again, byte for byte (a recorded exchange replayed): refused.
    let p = problem(rt.block_on(a.client.release(&a.request)).unwrap_err());
    assert!(p.status == 403 || p.status == 409 || p.status == 422, "{p:?}");
    assert!(format!("{p:?}").contains("nonce") || format!("{p:?}").contains("challenge"), "{p:?}");
    // The log holds the one release; the audit of the whole log is clean.
    let out = bank.audit(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["releases"], 2, "the demo's release and this one: {report}");
    assert!(first.log_index > 0);
}

#[test]
fn attack_policy_raised_between_challenge_and_release_is_judged_by_the_new_policy() {
    let Some(bank) = Bank::start() else { return };
    let rt = runtime();
    let a = attempt(&bank, &rt);
    // After the challenge, the approvers raise the policy: SMT now forbidden (the simulated
    // machine's guests allow it).
    let raised = include_str!("../../../policies/bundled/development.toml")
        .replace("version = 1", "version = 2")
        .replace("forbidden_policy_bits = [\"debug\"]", "forbidden_policy_bits = [\"debug\", \"smt\"]");
    assert!(raised.contains("\"smt\""));
    std::fs::write(bank.dir.join("development-v2.toml"), raised).unwrap();
    bank.ok("alice", &["policy", "propose", "--tenant", TENANT, "development-v2.toml"]);
    for who in ["alice", "bob"] {
        bank.ok(
            who,
            &[
                "policy",
                "sign",
                "development-v2.toml",
                "-i",
                &format!("{who}.key"),
                "-o",
                &format!("{who}-v2.approval"),
            ],
        );
        bank.ok(who, &["policy", "approve", "--tenant", TENANT, "development", "2", &format!("{who}-v2.approval")]);
    }
    bank.ok("alice", &["policy", "activate", "--tenant", TENANT, "development", "2"]);
    let p = problem(rt.block_on(a.client.release(&a.request)).unwrap_err());
    assert_eq!((p.status, p.code.as_str()), (403, "release_denied"), "{p:?}");
    assert!(p.failed.iter().any(|f| f.policy == "development@2" && f.name.contains("smt")), "{p:?}");
}

#[test]
fn attack_log_entry_altered_on_disk_is_named_by_its_index() {
    let Some(bank) = Bank::start() else { return };
    // The auditor's copy: exported, one entry edited (a dataset's label), audited again.
    let exported = bank.audit(&["--export-to", "export"]);
    assert!(exported.status.success(), "{}", text(&exported));
    let entries = std::fs::read_to_string(bank.dir.join("export/entries.jsonl")).unwrap();
    let index = entries.lines().position(|l| l.contains("coffre.dataset_registered/v1")).unwrap();
    std::fs::write(bank.dir.join("export/entries.jsonl"), entries.replace("customer-pii", "public-data")).unwrap();
    let out = bank.coffre(
        "audrey",
        &[
            "audit",
            "verify",
            "--dir",
            "export",
            "--log-key",
            &bank.log_key,
            "--dangerous-accept-simulated-roots",
            "dev-roots.pem",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains(&format!("entry {index}")), "{}", text(&out));

    // The vault's own copy: the same entry edited in its database while it is stopped. It
    // refuses to start, naming the entry, rather than serve (or sign) a rewritten history.
    bank.stop();
    let db = format!("sqlite://{}", bank.dir.join("vault/coffre.db").display());
    runtime().block_on(async {
        let pool = coffre_vault::db::connect(&db).await.unwrap();
        let row: (Vec<u8>,) = sqlx::query_as("SELECT entry FROM log_entries WHERE idx = $1")
            .bind(index as i64)
            .fetch_one(&pool)
            .await
            .unwrap();
        let edited = String::from_utf8(row.0).unwrap().replace("customer-pii", "public-data");
        sqlx::query("UPDATE log_entries SET entry = $1 WHERE idx = $2")
            .bind(edited.into_bytes())
            .bind(index as i64)
            .execute(&pool)
            .await
            .unwrap();
        pool.close().await;
    });
    let out =
        bank.coffred(&["serve", "--data-dir", "vault", "--dev", "--dev-roots", "dev-roots.pem"]).output().unwrap();
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains(&format!("entry {index}: its stored leaf hash")), "{}", text(&out));
}
