//! `coffre` against a running vault, as a bank's people use it: an administrator creates the
//! tenant and its principals, approvers approve a policy 2 of 3, the owner seals, signs, uploads
//! and submits a job, and the auditor audits the live log — every step the `coffre` binary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::path::Path;
use std::process::{Command, Output};

fn coffre(dir: &Path, env: &[(&str, &str)], args: &[&str]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_coffre"));
    c.current_dir(dir).args(args).env_remove("COFFRE_TOKEN").env("COFFRE_CLIENT_CONFIG", dir.join("none.toml"));
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn ok(o: Output) -> String {
    assert!(o.status.success(), "{}", text(&o));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_bank_runs_its_vault_with_the_coffre_command() {
    let tmp = tempfile::tempdir().unwrap();
    let d = tmp.path();
    let init = coffre_vault::server::init(&d.join("vault"), None, &coffre_vault::server::InitOptions::default())
        .await
        .unwrap();
    let running = coffre_vault::server::start(coffre_vault::server::ServeOptions {
        data_dir: d.join("vault"),
        listen: Some("127.0.0.1:0".into()),
        ..Default::default()
    })
    .await
    .unwrap();
    let url = format!("https://{}", running.addr);
    let fp = running.fingerprint.to_string();
    let base = [("COFFRE_VAULT", url.as_str()), ("COFFRE_VAULT_FINGERPRINT", fp.as_str())];
    let as_token = |file: &str| std::fs::read_to_string(d.join(file)).unwrap().trim().to_owned();
    let run = |token: &str, args: &[&str]| coffre(d, &[base[0], base[1], ("COFFRE_TOKEN", token)], args);

    ok(run(&init.admin_token, &["tenant", "create", "example-bank", "--name", "Example Bank"]));
    ok(run(
        &init.admin_token,
        &["principal", "create", "--tenant", "example-bank", "tadmin", "--role", "admin", "--token-out", "tadmin.tok"],
    ));
    let tadmin = as_token("tadmin.tok");
    ok(coffre(d, &[], &["keygen", "--signing", "-o", "owner.sign.key"]));
    let owner_pub = ok(coffre(d, &[], &["keygen", "-o", "owner.key"])).trim().to_owned();
    ok(run(
        &tadmin,
        &[
            "principal",
            "create",
            "--tenant",
            "example-bank",
            "owner",
            "--role",
            "owner",
            "--signing-key",
            "owner.sign.key",
            "--token-out",
            "owner.tok",
        ],
    ));
    let mut set =
        "format = \"coffre-approvers/v1\"\ntenant = \"example-bank\"\nversion = 1\nthreshold = 2\n".to_owned();
    for a in ["alice", "bob", "carol"] {
        let public = ok(coffre(d, &[], &["keygen", "--approver", "-o", &format!("{a}.key")])).trim().to_owned();
        set.push_str(&format!("\n[[approvers]]\nname = \"{a}\"\nkey = \"{public}\"\n"));
        ok(run(
            &tadmin,
            &[
                "principal",
                "create",
                "--tenant",
                "example-bank",
                a,
                "--role",
                "approver",
                "--role",
                "auditor",
                "--token-out",
                &format!("{a}.tok"),
            ],
        ));
    }
    std::fs::write(d.join("set.toml"), set).unwrap();
    ok(run(&tadmin, &["approvers", "set", "--tenant", "example-bank", "set.toml"]));
    let policy = concat!(env!("CARGO_MANIFEST_DIR"), "/../../policies/bundled/bank-strict.toml");
    let alice = as_token("alice.tok");
    ok(run(&alice, &["policy", "propose", "--tenant", "example-bank", policy]));
    // One approval is not enough.
    ok(coffre(d, &[], &["policy", "sign", policy, "-i", "alice.key", "-o", "alice.approval"]));
    ok(run(&alice, &["policy", "approve", "--tenant", "example-bank", "bank-strict", "1", "alice.approval"]));
    let refused = run(&alice, &["policy", "activate", "--tenant", "example-bank", "bank-strict", "1"]);
    assert_eq!(refused.status.code(), Some(1));
    assert!(text(&refused).contains("1 valid approval(s) of 2 needed"), "{}", text(&refused));
    ok(coffre(d, &[], &["policy", "sign", policy, "-i", "bob.key", "-o", "bob.approval"]));
    ok(run(
        &as_token("bob.tok"),
        &["policy", "approve", "--tenant", "example-bank", "bank-strict", "1", "bob.approval"],
    ));
    ok(run(&alice, &["policy", "activate", "--tenant", "example-bank", "bank-strict", "1"]));
    assert!(ok(run(&alice, &["policy", "list", "--tenant", "example-bank"])).contains("active"));

    // The owner: the KEK, a sealed and signed dataset, its upload, a signed job.
    let owner = as_token("owner.tok");
    let tenant: serde_json::Value =
        serde_json::from_str(&ok(run(&owner, &["tenant", "show", "example-bank", "--json"]))).unwrap();
    let kek = tenant["kek"]["public_key"].as_str().unwrap().to_owned();
    std::fs::write(d.join("cards.jsonl"), "{\"text\":\"card 4111 1111 1111 1111 disputed\"}\n".repeat(1000)).unwrap();
    ok(coffre(
        d,
        &[],
        &[
            "seal",
            "-r",
            &kek,
            "-r",
            &owner_pub,
            "--tenant",
            "example-bank",
            "--dataset",
            "cards",
            "--sign",
            "owner.sign.key",
            "cards.jsonl",
            "-o",
            "cards.jsonl.coffre",
        ],
    ));
    ok(run(&owner, &["dataset", "register", "cards", "--tenant", "example-bank", "--label", "customer-pii"]));
    let up = ok(run(&owner, &["dataset", "upload", "cards", "cards.jsonl.coffre", "--tenant", "example-bank"]));
    assert!(up.contains("cards v1") && up.contains("signed by"), "{up}");
    let job = ok(run(
        &owner,
        &[
            "job",
            "submit",
            "--tenant",
            "example-bank",
            "--dataset",
            "cards",
            "--steps",
            "200",
            "--output-recipient",
            "owner.key",
            "--sign",
            "owner.sign.key",
        ],
    ));
    assert!(job.contains("job job-"), "{job}");

    // A large object, resumably: the upload is killed part way, and the same command run again
    // sends only the parts the vault lacks.
    let big: String = (0..60_000).map(|i| format!("{{\"text\":\"payment {i} cleared\"}}\n")).collect();
    std::fs::write(d.join("payments.jsonl"), big).unwrap();
    ok(coffre(
        d,
        &[],
        &[
            "seal",
            "-r",
            &kek,
            "--tenant",
            "example-bank",
            "--dataset",
            "payments",
            "--sign",
            "owner.sign.key",
            "payments.jsonl",
            "-o",
            "payments.coffre",
        ],
    ));
    ok(run(&owner, &["dataset", "register", "payments", "--tenant", "example-bank", "--label", "transactions"]));
    let sealed = std::fs::read(d.join("payments.coffre")).unwrap();
    let parts = sealed.len().div_ceil(65_536);
    let upload_args =
        ["dataset", "upload", "payments", "payments.coffre", "--tenant", "example-bank", "--part-size", "65536"];
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffre"))
        .current_dir(d)
        .args(upload_args)
        .env("COFFRE_CLIENT_CONFIG", d.join("none.toml"))
        .envs([base[0], base[1], ("COFFRE_TOKEN", owner.as_str())])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    let client = coffre_api::client::VaultClient::new(&coffre_api::client::Options {
        url: url.clone(),
        fingerprint: Some(running.fingerprint),
        token: Some(owner.clone()),
        identity: None,
    })
    .unwrap();
    let mut held_at_kill = 0;
    for _ in 0..2_000 {
        if let Ok(text) = std::fs::read_to_string(d.join("payments.coffre.coffre-upload")) {
            let state: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if let Some(id) = state["id"].as_str() {
                let view: coffre_api::wire::UploadView =
                    client.get(&format!("/v1/tenants/example-bank/datasets/payments/uploads/{id}")).await.unwrap();
                if view.parts.len() >= 4 {
                    child.kill().unwrap();
                    let _ = child.wait();
                    held_at_kill = client
                        .get::<coffre_api::wire::UploadView>(&format!(
                            "/v1/tenants/example-bank/datasets/payments/uploads/{id}"
                        ))
                        .await
                        .unwrap()
                        .parts
                        .len();
                    break;
                }
            }
        }
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    // Never left running, whatever the loop above saw.
    let _ = child.kill();
    let _ = child.wait();
    assert!(held_at_kill >= 4 && held_at_kill < parts, "killed with {held_at_kill} of {parts} parts sent");
    let resumed = run(&owner, &upload_args);
    let t = text(&resumed);
    assert!(resumed.status.success(), "{t}");
    assert!(t.contains(&format!("{held_at_kill} of {parts} parts are already in the vault")), "{t}");
    assert!(t.contains("payments v1") && t.contains(&coffre_log::Digest::of(&sealed).to_string()), "{t}");
    assert!(!d.join("payments.coffre.coffre-upload").exists());

    // The tenant administrator rotates the KEK: both data keys rewrapped, the new version shown.
    let rotated = ok(run(&tadmin, &["tenant", "rotate-kek", "example-bank"]));
    assert!(rotated.contains("KEK of example-bank is version 2: 2 data key(s) rewrapped"), "{rotated}");
    // Marking a tenant for testing (the KBS sample TEE) is refused by a production vault's log.
    let refused = run(&init.admin_token, &["tenant", "mark-testing", "example-bank"]);
    assert!(!refused.status.success() && text(&refused).contains("development mode"), "{}", text(&refused));
    // The owner asks for a dataset's shredding; an approver cancels it.
    let shred = ok(run(&owner, &["dataset", "shred", "cards", "--tenant", "example-bank"]));
    assert!(shred.contains("shredding scheduled for 1 key(s)"), "{shred}");
    let cancelled = ok(run(&alice, &["dataset", "shred", "cards", "--tenant", "example-bank", "--cancel"]));
    assert!(cancelled.contains("shredding cancelled for 1 key(s)"), "{cancelled}");

    // The auditor audits the live log.
    let audit = run(&alice, &["audit", "verify", "--vault", &url, "--log-key", &init.log_key, "--state", "audit.json"]);
    let t = text(&audit);
    assert!(audit.status.success(), "{t}");
    assert!(t.contains("Result      OK"), "{t}");
    assert!(t.contains("1 policy activations, 1 approver-set changes"), "{t}");

    // What a user sees when something is off.
    let wrong_pin = coffre(
        d,
        &[base[0], ("COFFRE_VAULT_FINGERPRINT", &format!("sha256:{}", "00".repeat(32))), ("COFFRE_TOKEN", &owner)],
        &["tenant", "show", "example-bank"],
    );
    assert!(text(&wrong_pin).contains("not the pinned"), "{}", text(&wrong_pin));
    let no_token = coffre(d, &base, &["tenant", "show", "example-bank"]);
    assert!(text(&no_token).contains("COFFRE_TOKEN"), "{}", text(&no_token));
    let no_vault = coffre(d, &[], &["tenant", "list"]);
    assert_eq!(no_vault.status.code(), Some(2), "{}", text(&no_vault));
    let _ = running.shutdown.send(true);
}
