//! Crash safety: `coffred` killed with SIGKILL at seeded points while a dataset upload, a key
//! release, a KEK rotation or a worker's artifact registration is in flight, then restarted, again
//! and again (200 kill points by default; `COFFRE_CRASH_POINTS` and `COFFRE_CRASH_SEED` change
//! that); and the worker itself killed mid-training, then run again: it resumes from its sealed
//! checkpoint under a new release.
//!
//! After every restart: the vault starts (its log consistent with its last signed checkpoint);
//! nothing it acknowledged is lost (an upload it answered is listed and downloads to the same
//! bytes; a release it answered is a release in the log); nothing half-done is visible (an
//! upload it did not answer can be retried and succeeds, a retried registration too, an
//! interrupted rotation run again finishes and every data key still opens for a release); and at
//! the end the whole log audits clean — so no key left without its log entry.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::io::Write;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use coffre_e2e::{Bank, text};

const TENANT: &str = "example-bank";

/// SplitMix64: the seeded kill points.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

/// The vault process this test owns.
struct Vault {
    child: Option<Child>,
}

impl Vault {
    fn start(bank: &Bank, starts: u32) -> Self {
        let log = bank.dir.join(format!("vault-{starts}.log"));
        let child = bank
            .coffred(&["serve", "--data-dir", "vault", "--dev", "--dev-roots", "dev-roots.pem"])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut v = Self { child: Some(child) };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let text = std::fs::read_to_string(&log).unwrap_or_default();
            if text.contains("coffred listening on") {
                return v;
            }
            if let Ok(Some(status)) = v.child.as_mut().unwrap().try_wait() {
                panic!("coffred did not restart after kill point {starts} ({status}):\n{text}");
            }
            assert!(Instant::now() < deadline, "coffred did not start within 30 s:\n{text}");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill(); // SIGKILL
            let _ = c.wait();
        }
    }
}

impl Drop for Vault {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Seals `n` small objects of the dataset `messages` (each different), signed by the owner.
fn seal_object(bank: &Bank, n: u32, kek: &str, owner: &str) -> std::path::PathBuf {
    let plain = bank.dir.join(format!("crash-{n}.jsonl"));
    let mut f = std::fs::File::create(&plain).unwrap();
    for i in 0..200 {
        writeln!(f, "{{\"text\":\"crash point {n}, customer {i} asks about card 4111 1111 1111 {i:04}\"}}").unwrap();
    }
    let sealed = bank.dir.join(format!("crash-{n}.coffre"));
    let p = plain.file_name().unwrap().to_str().unwrap().to_owned();
    let s = sealed.file_name().unwrap().to_str().unwrap().to_owned();
    bank.ok("owner", &["seal", "-r", kek, "-r", owner, "--tenant", TENANT, "--dataset", "messages", &p, "-o", &s]);
    sealed
}

#[test]
fn killing_the_vault_at_seeded_points_loses_nothing_acknowledged_and_leaves_no_half_state() {
    let Some(bank) = Bank::start() else { return };
    let points: u32 = std::env::var("COFFRE_CRASH_POINTS").ok().and_then(|p| p.parse().ok()).unwrap_or(200);
    let seed: u64 = std::env::var("COFFRE_CRASH_SEED").ok().and_then(|p| p.parse().ok()).unwrap_or(2026);
    eprintln!("crash harness: {points} kill points, seed {seed} (COFFRE_CRASH_POINTS, COFFRE_CRASH_SEED)");
    let mut rng = Rng(seed);
    bank.stop();
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let mut vault = Vault::start(&bank, 0);
    let owner_pub = bank.ok("owner", &["keygen", "-y", "owner.key"]).trim().to_owned();
    let current_kek = || {
        serde_json::from_str::<serde_json::Value>(&bank.ok("owner", &["tenant", "show", TENANT, "--json"])).unwrap()
            ["kek"]["public_key"]
            .as_str()
            .unwrap()
            .to_owned()
    };
    let mut kek = current_kek();
    let mut rotations = 0u32;
    let mut resumed_runs = 0u32;
    // A job that may be released to many times (the demo's allows 10): the one every kill
    // point's release and worker run is for.
    let job_id = bank.many_release_job("crash-lora", "messages@1");
    // A longer job for the worker killed mid-training (checkpoints every 2 steps).
    let long_job = bank.many_release_job_with_steps("crash-long", "messages@1", 8);
    let worker = bank.client("worker.tok");
    let mut acked_uploads: Vec<(std::path::PathBuf, String)> = Vec::new();
    let mut acked_releases: Vec<u64> = Vec::new();
    let started = Instant::now();
    let mut outcomes = [0u32; 2];

    for point in 1..=points {
        // What is in flight when the vault dies: mostly uploads and releases (fast), every
        // tenth a whole worker run (release, training, sealed artifact, registration), every
        // tenth a KEK rotation; three times, the worker dies instead, mid-training.
        let op = if point % 80 == 15 {
            4
        } else if point % 10 == 5 {
            3
        } else if point % 10 == 0 {
            2
        } else {
            point % 2
        };
        match op {
            3 => {
                let mut rotate = Command::new(bank.bin.join("coffre"));
                rotate
                    .current_dir(&bank.dir)
                    .args(["tenant", "rotate-kek", TENANT])
                    .env("COFFRE_VAULT", &bank.url)
                    .env("COFFRE_VAULT_FINGERPRINT", &bank.fingerprint)
                    .env("COFFRE_TOKEN_FILE", "tenant-admin.tok")
                    .env("COFFRE_CLIENT_CONFIG", bank.dir.join("none.toml"))
                    .env_remove("COFFRE_TOKEN");
                let child = rotate.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
                std::thread::sleep(Duration::from_millis(rng.below(60)));
                vault.kill();
                let out = child.wait_with_output().unwrap();
                vault = Vault::start(&bank, point);
                outcomes[usize::from(!out.status.success())] += 1;
                // Run again, it finishes (resuming, or rotating once more when the first had
                // finished); then every data key still opens: a release unwraps the job's.
                let again = bank.coffre("tenant-admin", &["tenant", "rotate-kek", TENANT]);
                assert!(again.status.success(), "kill point {point}: the rerun rotation failed:\n{}", text(&again));
                rotations += 1;
                kek = current_kek();
                let request = rt.block_on(bank.release_request(&worker, &job_id)).unwrap();
                let released = rt.block_on(bank.client("worker.tok").release(&request));
                match released {
                    Ok(r) => acked_releases.push(r.log_index),
                    Err(e) => panic!("kill point {point}: no release after an interrupted rotation: {e}"),
                }
            }
            4 => {
                let token = std::fs::read_to_string(bank.dir.join("worker.tok")).unwrap();
                let work = bank.dir.join(format!("killed-worker-{point}"));
                let run = || {
                    let mut c = Command::new(bank.bin.join("coffre-worker"));
                    c.current_dir(&bank.dir)
                        .args(["run", "--vault", &bank.url, "--fingerprint", &bank.fingerprint, "--tenant", TENANT])
                        .args(["--job", &long_job, "--tee", "simulated", "--gpu", "simulated"])
                        .args([
                            "--simulated-machine",
                            "machine.json",
                            "--template",
                            "chatml",
                            "--checkpoint-every",
                            "2",
                        ])
                        .arg("--work-dir")
                        .arg(&work)
                        .env("COFFRE_TOKEN", token.trim())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped());
                    c
                };
                let mut child = run().spawn().unwrap();
                let checkpoint = work.join(format!("{long_job}.checkpoint.sealed"));
                let deadline = Instant::now() + Duration::from_secs(300);
                while !checkpoint.exists() && Instant::now() < deadline && child.try_wait().unwrap().is_none() {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = child.kill(); // SIGKILL, mid-training
                let first = child.wait_with_output().unwrap();
                if !first.status.success() {
                    let again = run().output().unwrap();
                    let t = text(&again);
                    assert!(again.status.success(), "kill point {point}: the rerun worker failed:\n{t}");
                    assert!(t.contains("from the sealed checkpoint at step"), "kill point {point}: no resume:\n{t}");
                    resumed_runs += 1;
                }
            }
            0 => {
                let sealed = seal_object(&bank, point, &kek, &owner_pub);
                let name = sealed.file_name().unwrap().to_str().unwrap().to_owned();
                let mut cmd = Command::new(bank.bin.join("coffre"));
                cmd.current_dir(&bank.dir)
                    .args(["dataset", "upload", "messages", &name, "--tenant", TENANT])
                    .env("COFFRE_VAULT", &bank.url)
                    .env("COFFRE_VAULT_FINGERPRINT", &bank.fingerprint)
                    .env("COFFRE_TOKEN_FILE", "owner.tok")
                    .env("COFFRE_CLIENT_CONFIG", bank.dir.join("none.toml"))
                    .env_remove("COFFRE_TOKEN");
                let upload = cmd.stdout(Stdio::piped()).stderr(Stdio::piped()).spawn().unwrap();
                std::thread::sleep(Duration::from_millis(rng.below(40)));
                vault.kill();
                let out = upload.wait_with_output().unwrap();
                vault = Vault::start(&bank, point);
                if out.status.success() {
                    outcomes[0] += 1;
                    let digest = String::from_utf8_lossy(&out.stdout)
                        .split("sha256:")
                        .nth(1)
                        .and_then(|r| r.split(|c: char| !c.is_ascii_hexdigit()).next())
                        .map(|h| format!("sha256:{h}"))
                        .unwrap();
                    acked_uploads.push((sealed, digest));
                } else {
                    outcomes[1] += 1;
                    // Not acknowledged: no half state may stand in the way of the retry.
                    let retry = bank.coffre("owner", &["dataset", "upload", "messages", &name, "--tenant", TENANT]);
                    let t = text(&retry);
                    assert!(
                        retry.status.success() || t.contains("already uploaded"),
                        "kill point {point}: the retried upload failed:\n{t}"
                    );
                    if retry.status.success() {
                        let d =
                            t.split("sha256:").nth(1).unwrap().split(|c: char| !c.is_ascii_hexdigit()).next().unwrap();
                        acked_uploads.push((sealed, format!("sha256:{d}")));
                    } else {
                        // It was stored and logged after all (the answer was lost): listed.
                        let digest = coffre_log::Digest::of(&std::fs::read(&sealed).unwrap()).to_string();
                        acked_uploads.push((sealed, digest));
                    }
                }
            }
            1 => {
                let Some(request) = rt.block_on(bank.release_request(&worker, &job_id)) else {
                    panic!("kill point {point}: no challenge from a freshly started vault");
                };
                let w = bank.client("worker.tok");
                let handle = rt.spawn(async move { w.release(&request).await });
                std::thread::sleep(Duration::from_millis(rng.below(15)));
                vault.kill();
                let answer = rt.block_on(handle).unwrap();
                vault = Vault::start(&bank, point);
                match answer {
                    Ok(r) => {
                        outcomes[0] += 1;
                        acked_releases.push(r.log_index);
                    }
                    Err(_) => outcomes[1] += 1,
                }
            }
            _ => {
                let token = std::fs::read_to_string(bank.dir.join("worker.tok")).unwrap();
                let work = format!("crash-work-{point}");
                let run = |work: &str| {
                    let mut c = Command::new(bank.bin.join("coffre-worker"));
                    c.current_dir(&bank.dir)
                        .args(["run", "--vault", &bank.url, "--fingerprint", &bank.fingerprint, "--tenant", TENANT])
                        .args(["--job", &job_id, "--tee", "simulated", "--gpu", "simulated"])
                        .args(["--simulated-machine", "machine.json", "--template", "chatml", "--work-dir", work])
                        .env("COFFRE_TOKEN", token.trim())
                        .stdout(Stdio::piped())
                        .stderr(Stdio::piped());
                    c
                };
                let child = run(&work).spawn().unwrap();
                std::thread::sleep(Duration::from_millis(200 + rng.below(1800)));
                vault.kill();
                let out = child.wait_with_output().unwrap();
                vault = Vault::start(&bank, point);
                if out.status.success() {
                    outcomes[0] += 1;
                } else {
                    outcomes[1] += 1;
                    // The worker run again (a fresh attested release; it resumes from its sealed
                    // checkpoint when it got that far) must register its model.
                    let again = run(&work).output().unwrap();
                    assert!(again.status.success(), "kill point {point}: the rerun worker failed:\n{}", text(&again));
                }
            }
        }

        // After each restart: what was acknowledged is there, whole.
        let shown: serde_json::Value =
            serde_json::from_str(&bank.ok("owner", &["dataset", "show", "messages", "--tenant", TENANT, "--json"]))
                .unwrap();
        let listed: Vec<&str> =
            shown["versions"].as_array().unwrap().iter().map(|v| v["digest"].as_str().unwrap()).collect();
        for (path, digest) in &acked_uploads {
            assert!(listed.contains(&digest.as_str()), "kill point {point}: acknowledged {} is lost", path.display());
        }
        if point % 25 == 0 || point == points {
            audit_clean(&bank, point, &acked_releases);
        }
    }
    // Every version listed downloads to exactly its digest.
    let shown: serde_json::Value =
        serde_json::from_str(&bank.ok("owner", &["dataset", "show", "messages", "--tenant", TENANT, "--json"]))
            .unwrap();
    for v in shown["versions"].as_array().unwrap() {
        let url = format!("/v1/tenants/{TENANT}/datasets/messages/versions/{}/object", v["version"]);
        let bytes = rt.block_on(bank.client("owner.tok").get_bytes(&url)).unwrap();
        assert_eq!(coffre_log::Digest::of(&bytes).to_string(), v["digest"].as_str().unwrap());
    }
    drop(vault);
    eprintln!(
        "crash harness: {points} kill points in {:.0} s; {} operations answered before the kill, {} cut off; {} uploads and {} releases acknowledged, all kept; {rotations} interrupted rotations finished; {resumed_runs} killed workers resumed from their checkpoint",
        started.elapsed().as_secs_f64(),
        outcomes[0],
        outcomes[1],
        acked_uploads.len(),
        acked_releases.len()
    );
    if points >= 80 {
        assert!(resumed_runs > 0, "no killed worker was caught mid-training (all finished before the kill)");
    }
}

/// The whole log audits clean, and every release the vault acknowledged is a release in it.
fn audit_clean(bank: &Bank, point: u32, acked_releases: &[u64]) {
    let out = bank.audit(&["--export-to", &format!("audit-{point}")]);
    assert!(out.status.success(), "kill point {point}: the log does not audit clean:\n{}", text(&out));
    let entries = std::fs::read_to_string(bank.dir.join(format!("audit-{point}/entries.jsonl"))).unwrap();
    let lines: Vec<&str> = entries.lines().collect();
    for i in acked_releases {
        let line = lines.get(usize::try_from(*i).unwrap()).copied().unwrap_or("");
        assert!(
            line.contains("coffre.key_released/v1"),
            "kill point {point}: acknowledged release {i} is not in the log"
        );
    }
    std::fs::remove_dir_all(bank.dir.join(format!("audit-{point}"))).ok();
}
