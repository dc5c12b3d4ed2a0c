//! End-to-end tests against the built binaries, each a separate process as a user runs them.
//! The tests find `coffre`, `coffred` and `coffre-worker` in the Cargo target directory, where
//! `cargo test --workspace` builds them (with the development features CI enables); run alone,
//! a test says that they are missing and skips — except under `CI=true`, where that fails.
//!
//! [`Bank`] is the state `coffre demo --keep` leaves behind — a running development vault, the
//! tenant `example-bank` with its people (tokens in `*.tok`), the development policy approved 2
//! of 3, the dataset `messages`, a job and its registered model `fraud-lora` v1 — for tests that
//! then try what must fail.

#![forbid(unsafe_code)]
#![allow(clippy::panic, clippy::unwrap_used, clippy::expect_used)] // test support: a step that fails is a test that fails

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

/// The directory holding the workspace's binaries, when all three are there.
pub fn binaries() -> Option<PathBuf> {
    let exe = std::env::current_exe().ok()?;
    // target/<profile>/deps/<test> → target/<profile>
    let dir = exe.parent()?.parent()?.to_path_buf();
    let all = ["coffre", "coffred", "coffre-worker"].iter().all(|b| dir.join(b).is_file());
    if all {
        return Some(dir);
    }
    assert!(
        std::env::var("CI").as_deref() != Ok("true"),
        "the binaries are not in {} (CI runs cargo test --workspace, which builds them)",
        dir.display()
    );
    eprintln!(
        "skipping: coffre, coffred and coffre-worker are not all in {}; run cargo test --workspace",
        dir.display()
    );
    None
}

/// Standard output and error of a finished command, together.
pub fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// What `coffre demo --keep` left: a running development vault and a bank's files.
#[derive(Debug)]
pub struct Bank {
    /// The binaries.
    pub bin: PathBuf,
    /// The demo's directory (keys, tokens, machine files, the vault's data directory `vault/`).
    pub dir: PathBuf,
    /// `https://127.0.0.1:PORT`.
    pub url: String,
    /// The vault certificate's fingerprint.
    pub fingerprint: String,
    /// The log's verifier key.
    pub log_key: String,
    /// The job the demo ran.
    pub job: String,
    /// The vault's process id.
    pub pid: i32,
    _tmp: tempfile::TempDir,
}

fn after<'a>(text: &'a str, marker: &str) -> Option<&'a str> {
    text.split(marker).nth(1).and_then(|r| r.split_whitespace().next())
}

impl Bank {
    /// Runs `coffre demo --keep` (a small dataset, two training steps) in a new directory.
    pub fn start() -> Option<Self> {
        let bin = binaries()?;
        let tmp = tempfile::tempdir().ok()?;
        let dir = tmp.path().join("bank");
        let out = Command::new(bin.join("coffre"))
            .args(["demo", "--keep", "--records", "300", "--train-steps", "2", "--dir"])
            .arg(&dir)
            .env_remove("COFFRE_TOKEN")
            .env_remove("COFFRE_VAULT")
            .output()
            .ok()?;
        let t = text(&out);
        assert!(out.status.success(), "{t}");
        let field =
            |marker: &str| after(&t, marker).map(str::to_owned).unwrap_or_else(|| panic!("no {marker:?} in:\n{t}"));
        Some(Self {
            url: field("export COFFRE_VAULT="),
            fingerprint: field("COFFRE_VAULT_FINGERPRINT="),
            log_key: field("log key           "),
            job: format!("job-{}", field("     job job-").trim_end_matches(':')),
            pid: field("stop it with: kill ")
                .trim_end_matches([')', ','])
                .parse()
                .unwrap_or_else(|_| panic!("no pid in:\n{t}")),
            bin,
            dir,
            _tmp: tmp,
        })
    }

    /// `coffre ARGS` acting as the principal whose token is in `who.tok`.
    pub fn coffre(&self, who: &str, args: &[&str]) -> Output {
        let mut c = Command::new(self.bin.join("coffre"));
        c.current_dir(&self.dir)
            .args(args)
            .env_remove("COFFRE_TOKEN")
            .env("COFFRE_CLIENT_CONFIG", self.dir.join("no-client-config.toml"))
            .env("COFFRE_VAULT", &self.url)
            .env("COFFRE_VAULT_FINGERPRINT", &self.fingerprint)
            .env("COFFRE_TOKEN_FILE", format!("{who}.tok"));
        c.output().unwrap_or_else(|e| panic!("coffre: {e}"))
    }

    /// `coffre ARGS` that must succeed; its standard output.
    pub fn ok(&self, who: &str, args: &[&str]) -> String {
        let out = self.coffre(who, args);
        assert!(out.status.success(), "coffre {}:\n{}", args.join(" "), text(&out));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// `coffre-worker run` for `tenant`'s `job` with the token in `token_file`, on `machine`.
    pub fn worker(&self, token_file: &str, tenant: &str, job: &str, machine: &str, extra: &[&str]) -> Output {
        let token = std::fs::read_to_string(self.dir.join(token_file)).unwrap_or_default();
        static RUNS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
        let work = format!("work-e2e-{}", RUNS.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        Command::new(self.bin.join("coffre-worker"))
            .current_dir(&self.dir)
            .args(["run", "--vault", &self.url, "--fingerprint", &self.fingerprint, "--tenant", tenant, "--job", job])
            .args(["--tee", "simulated", "--gpu", "simulated", "--simulated-machine", machine, "--template", "chatml"])
            .args(["--work-dir", &work])
            .args(extra)
            .env("COFFRE_TOKEN", token.trim())
            .output()
            .unwrap_or_else(|e| panic!("coffre-worker: {e}"))
    }

    /// Stops the vault (SIGTERM) and waits until it is gone.
    pub fn stop(&self) {
        let _ = Command::new("kill").arg(self.pid.to_string()).stderr(std::process::Stdio::null()).status();
        let deadline = Instant::now() + Duration::from_secs(20);
        while Path::new(&format!("/proc/{}", self.pid)).exists() && Instant::now() < deadline {
            // A zombie of an exited child of the (exited) demo is reaped by init; a live one
            // still answers.
            if std::fs::read_to_string(format!("/proc/{}/stat", self.pid)).is_ok_and(|s| s.contains(") Z ")) {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// `coffred ARGS` in the bank's directory (the vault's data directory is `vault`).
    pub fn coffred(&self, args: &[&str]) -> Command {
        let mut c = Command::new(self.bin.join("coffred"));
        c.current_dir(&self.dir).args(args);
        c
    }
}

impl Bank {
    /// A typed client of the vault with the token in `token_file`.
    pub fn client(&self, token_file: &str) -> coffre_api::client::VaultClient {
        let token = std::fs::read_to_string(self.dir.join(token_file)).unwrap_or_default();
        coffre_api::client::VaultClient::new(&coffre_api::client::Options {
            url: self.url.clone(),
            fingerprint: Some(coffre_api::pin::Fingerprint::parse(&self.fingerprint).unwrap()),
            token: Some(token.trim().to_owned()),
            identity: None,
        })
        .unwrap()
    }

    /// What a worker of `job` (of `example-bank`) sends, step by step: fresh keys, a challenge
    /// taken from the vault with `client`, the simulated machine's evidence bound to both.
    /// `None` when the vault gives no challenge.
    pub async fn release_request(
        &self,
        client: &coffre_api::client::VaultClient,
        job: &str,
    ) -> Option<coffre_api::wire::ReleaseRequest> {
        use base64::Engine;
        const TENANT: &str = "example-bank";
        let view: coffre_api::wire::JobView = client.get(&format!("/v1/tenants/{TENANT}/jobs/{job}")).await.ok()?;
        let manifest = serde_json::from_str::<coffre_api::SignedJob>(&view.signed).ok()?.verify().ok()?.bytes;
        let hpke = coffre_seal::hpke::p256::KeyPair::generate(&mut coffre_seal::SystemRandom).unwrap();
        let signing = coffre_seal::SigningKey::generate().unwrap();
        let keys = coffre_api::WorkerKeys { hpke: *hpke.public_key(), signing: signing.verifying_key().clone() };
        let challenge = client.challenge(TENANT, job).await.ok()?;
        let nonce: [u8; 32] = hex::decode(&challenge.nonce).ok()?.try_into().ok()?;
        let sources = coffre_worker::evidence::Sources::open(
            coffre_worker::evidence::TeeKind::Simulated,
            coffre_worker::evidence::GpuKind::Simulated,
            Some(&self.dir.join("machine.json")),
            "",
        )
        .unwrap();
        let evidence = sources.collect(coffre_api::binding::report_data(&nonce, &keys.to_bytes(), &manifest)).unwrap();
        Some(coffre_api::wire::ReleaseRequest {
            tenant: TENANT.into(),
            job: job.to_owned(),
            nonce: challenge.nonce,
            worker_keys: base64::engine::general_purpose::STANDARD.encode(keys.to_bytes()),
            evidence,
        })
    }

    /// Submits (as the owner) a two-step job on `dataset` (`ID` or `ID@VERSION`) with the
    /// stored base model, that may be released to 100,000 times (the demo's allows 10); its id.
    pub fn many_release_job(&self, name: &str, dataset: &str) -> String {
        self.many_release_job_with_steps(name, dataset, 2)
    }

    /// [`Bank::many_release_job`] training for `steps` steps.
    pub fn many_release_job_with_steps(&self, name: &str, dataset: &str, steps: u32) -> String {
        let steps = steps.to_string();
        let models: serde_json::Value =
            serde_json::from_str(&self.ok("owner", &["model", "list", "--tenant", "example-bank", "--json"])).unwrap();
        let model = models[0]["digest"].as_str().unwrap().to_owned();
        let job: serde_json::Value = serde_json::from_str(&self.ok(
            "owner",
            &[
                "job",
                "submit",
                "--tenant",
                "example-bank",
                "--name",
                name,
                "--dataset",
                dataset,
                "--steps",
                &steps,
                "--base-model",
                &model,
                "--output-recipient",
                "owner.key",
                "--sign",
                "owner.sign.key",
                "--max-releases",
                "100000",
                "--json",
            ],
        ))
        .unwrap();
        job["id"].as_str().unwrap().to_owned()
    }

    /// `coffre audit verify` of the live log as the auditor, trusting the demo's simulated
    /// roots, with `extra` arguments.
    pub fn audit(&self, extra: &[&str]) -> Output {
        let mut args = vec![
            "audit",
            "verify",
            "--vault",
            &self.url,
            "--log-key",
            &self.log_key,
            "--dangerous-accept-simulated-roots",
            "dev-roots.pem",
        ];
        args.extend_from_slice(extra);
        self.coffre("audrey", &args)
    }
}

impl Drop for Bank {
    fn drop(&mut self) {
        self.stop();
    }
}
