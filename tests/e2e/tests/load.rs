//! Load, bounded: many simulated workers at once against one running vault on loopback, each
//! release followed by a replay of the very same request. Zero unexpected errors, no nonce ever
//! accepted twice (every replay refused; the log audits clean), memory bounded.
//! `COFFRE_LOAD_WORKERS` and `COFFRE_LOAD_RELEASES` size it (default 64 workers, 1,024 releases).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::time::Instant;

use coffre_e2e::{Bank, text};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name).ok().and_then(|v| v.parse().ok()).unwrap_or(default)
}

#[test]
fn many_workers_at_once_get_their_keys_once_and_the_vault_stays_bounded() {
    let Some(bank) = Bank::start() else { return };
    let workers = env("COFFRE_LOAD_WORKERS", 64);
    let releases = env("COFFRE_LOAD_RELEASES", 1024);
    let job_id = bank.many_release_job("load", "messages");
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let bank = std::sync::Arc::new(bank);

    let started = Instant::now();
    let per_worker = releases.div_ceil(workers);
    let tasks: Vec<_> = (0..workers)
        .map(|_| {
            let (bank, job_id) = (bank.clone(), job_id.clone());
            rt.spawn(async move {
                let c = bank.client("worker.tok");
                let (mut released, mut replays_refused, mut unexpected) = (Vec::new(), 0usize, Vec::new());
                for _ in 0..per_worker {
                    let Some(request) = bank.release_request(&c, &job_id).await else {
                        unexpected.push("no challenge".to_owned());
                        continue;
                    };
                    let nonce = request.nonce.clone();
                    match c.release(&request).await {
                        Ok(r) => released.push((nonce.clone(), r.log_index)),
                        Err(e) => unexpected.push(format!("release: {e}")),
                    }
                    // The same request again: a second release for one nonce must never happen.
                    match c.release(&request).await {
                        Ok(r) => unexpected.push(format!("REPLAY ACCEPTED: nonce {nonce} at entry {}", r.log_index)),
                        Err(e) if e.problem().is_some() => replays_refused += 1,
                        Err(e) => unexpected.push(format!("replay: {e}")),
                    }
                }
                (released, replays_refused, unexpected)
            })
        })
        .collect();
    let mut released = Vec::new();
    let mut refused = 0;
    let mut unexpected = Vec::new();
    for t in tasks {
        let (r, f, u) = rt.block_on(t).unwrap();
        released.extend(r);
        refused += f;
        unexpected.extend(u);
    }
    let elapsed = started.elapsed();
    assert!(unexpected.is_empty(), "{} unexpected: {:?}", unexpected.len(), &unexpected[..unexpected.len().min(5)]);
    assert_eq!(released.len(), per_worker * workers);
    assert_eq!(refused, released.len(), "every replay refused");
    let mut nonces: Vec<&String> = released.iter().map(|(n, _)| n).collect();
    nonces.sort();
    nonces.dedup();
    assert_eq!(nonces.len(), released.len(), "a nonce was released twice");

    // The log agrees: every release in it, once; the whole log audits clean.
    let out = bank.audit(&["--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["releases"].as_u64().unwrap(), released.len() as u64 + 1, "the demo's release and these");

    // Memory bounded: the vault's peak resident set.
    let status = std::fs::read_to_string(format!("/proc/{}/status", bank.pid)).unwrap();
    let peak_kib: u64 = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap();
    eprintln!(
        "load: {workers} workers, {} releases and {refused} replays refused in {:.1} s ({:.0} releases/s with the replays and evidence signing on the same 2 cores); coffred peak RSS {} MiB",
        released.len(),
        elapsed.as_secs_f64(),
        released.len() as f64 / elapsed.as_secs_f64(),
        peak_kib / 1024
    );
    assert!(peak_kib < 256 * 1024, "coffred peaked at {} MiB", peak_kib / 1024);
}
