//! `coffre audit verify` as an auditor runs it, on the log `coffre demo --tour` writes: a clean audit,
//! then every kind of after-the-fact change an operator could make — an edited entry, an altered
//! bundle, a rewritten and re-signed history (a fork), a denial turned into a release — each
//! detected and located.

#![cfg(feature = "simulated")]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

use coffre_log::bundle::Bundle;
use coffre_log::{Checkpoint, Digest, Entry, NoteSigner, Tree, leaf_hash};

fn coffre(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coffre")).current_dir(dir).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

/// The demo's log: development mode, tenant, approver set, policy, dataset, object, job (0-6),
/// a release (7) and a denial (8).
const RELEASE: usize = 7;
const DENIAL: usize = 8;

/// One demo run for the whole test binary; each test audits its own copy.
fn demo() -> &'static Path {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep().join("demo");
        let out = coffre(Path::new("."), &["demo", "--tour", "--records", "50", "--dir", dir.to_str().unwrap()]);
        assert!(out.status.success(), "{}", text(&out));
        dir
    })
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            copy_dir(&e.path(), &to.join(e.file_name()));
        } else {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A fresh copy of the demo's files.
fn workspace() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    copy_dir(demo(), dir.path());
    let _ = std::fs::remove_file(dir.path().join("audit-state.json"));
    dir
}

fn audit(dir: &Path, extra: &[&str]) -> Output {
    let mut args = vec![
        "audit",
        "verify",
        "--dir",
        "log",
        "--log-key",
        "log.pub",
        "--dangerous-accept-simulated-roots",
        "simulated-roots.der",
    ];
    args.extend_from_slice(extra);
    coffre(dir, &args)
}

fn entries(dir: &Path) -> Vec<Entry> {
    std::fs::read_to_string(dir.join("log/entries.jsonl"))
        .unwrap()
        .lines()
        .map(|l| Entry::from_bytes(l.as_bytes()).unwrap())
        .collect()
}

/// What a dishonest operator holding the log key can do: rewrite the entries, recompute every
/// leaf hash and sign the new tree.
fn rewrite_and_resign(dir: &Path, entries: &[Entry]) {
    let lines: Vec<Vec<u8>> = entries.iter().map(Entry::to_bytes).collect();
    let mut file = Vec::new();
    for l in &lines {
        file.extend_from_slice(l);
        file.push(b'\n');
    }
    std::fs::write(dir.join("log/entries.jsonl"), file).unwrap();
    std::fs::write(dir.join("log/leaves"), lines.iter().flat_map(|l| leaf_hash(l)).collect::<Vec<u8>>()).unwrap();
    let tree = Tree::from_leaves(lines.iter().map(|l| leaf_hash(l)));
    let signer = NoteSigner::from_text(&std::fs::read_to_string(dir.join("log.key")).unwrap()).unwrap();
    let note = Checkpoint { origin: signer.name().into(), size: tree.size(), root: tree.root(), extensions: vec![] }
        .sign(&signer)
        .unwrap();
    std::fs::write(dir.join("log/checkpoint"), &note).unwrap();
    std::fs::write(dir.join("log/checkpoints").join(tree.size().to_string()), &note).unwrap();
}

fn put_blob(dir: &Path, bytes: &[u8]) -> Digest {
    let d = Digest::of(bytes);
    std::fs::write(dir.join("log/blobs/sha256").join(d.hex()), bytes).unwrap();
    d
}

fn blob(dir: &Path, d: &Digest) -> Vec<u8> {
    std::fs::read(dir.join("log/blobs/sha256").join(d.hex())).unwrap()
}

#[test]
fn the_demo_log_audits_clean_and_the_state_follows_it() {
    let w = workspace();
    let out = audit(w.path(), &["--state", "state.json"]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains("1 releases (1 SIMULATED), 1 denials, 1 policy activations"), "{t}");
    assert!(t.contains("first audit with this state file; remembering size 9"), "{t}");

    // The vault goes on: a new entry and a new checkpoint; the next audit proves consistency.
    let mut all = entries(w.path());
    all.push(Entry::ConfigChanged {
        at: all[0].at() + 60,
        setting: "development_mode".into(),
        old: "on".into(),
        new: "off".into(),
    });
    rewrite_and_resign(w.path(), &all);
    let out = coffre(
        w.path(),
        &[
            "audit",
            "verify",
            "--dir",
            "log",
            "--state",
            "state.json",
            "--dangerous-accept-simulated-roots",
            "simulated-roots.der",
            "--json",
        ],
    );
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["checkpoint_size"], 10);
    assert!(report["state"].as_str().unwrap().contains("consistent with size 9"), "{report}");
    assert_eq!(report["problems"].as_array().unwrap().len(), 0);
}

/// Red-team finding 7: `audit verify` without `--state` said "remembering size N" and saved nothing.
#[test]
fn an_audit_without_a_state_file_says_it_remembers_nothing() {
    let w = workspace();
    let out = audit(w.path(), &[]);
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(!t.contains("remembering"), "{t}");
    assert!(t.contains("none kept (use --state FILE"), "{t}");
    assert!(!w.path().join("state.json").exists());
}

#[test]
fn without_a_pinned_key_or_with_another_key_nothing_is_trusted() {
    let w = workspace();
    let out = coffre(w.path(), &["audit", "verify", "--dir", "log"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("pin one with --log-key"));

    let other = NoteSigner::generate("coffre-demo.local/log").unwrap();
    std::fs::write(w.path().join("other.pub"), other.verifier().to_text()).unwrap();
    let out = coffre(w.path(), &["audit", "verify", "--dir", "log", "--log-key", "other.pub"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no signature by coffre-demo.local/log"), "{}", text(&out));
}

#[test]
fn an_edited_entry_is_located() {
    let w = workspace();
    let path = w.path().join("log/entries.jsonl");
    let edited = std::fs::read_to_string(&path)
        .unwrap()
        .replace("\"datasets\":[\"customer-messages-2026-11\"]", "\"datasets\":[\"payroll-2026\"]");
    std::fs::write(&path, edited).unwrap();
    let out = audit(w.path(), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("entry {RELEASE}: edited after it was logged")), "{t}");
    assert!(!t.contains("entry 6:"), "{t}");
}

#[test]
fn an_altered_evidence_item_is_located_at_its_release() {
    let w = workspace();
    let Entry::KeyReleased { evidence_bundle, .. } = &entries(w.path())[RELEASE] else { panic!("not the release") };
    let bundle = Bundle::from_bytes(&blob(w.path(), evidence_bundle)).unwrap();
    let report = bundle.items.iter().find(|i| i.role == "cpu.snp.report").unwrap().digest;
    let mut bytes = blob(w.path(), &report);
    bytes[0x90] ^= 1; // MEASUREMENT
    std::fs::write(w.path().join("log/blobs/sha256").join(report.hex()), bytes).unwrap();
    let out = audit(w.path(), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("entry {RELEASE}: evidence bundle: blob {report} was altered")), "{t}");
}

#[test]
fn a_rewritten_history_is_a_fork_for_an_auditor_who_remembers() {
    let w = workspace();
    assert!(audit(w.path(), &["--state", "state.json"]).status.success());
    // The operator drops the denial and re-signs a tree of the same size without it.
    let mut all = entries(w.path());
    all[DENIAL] = Entry::ConfigChanged {
        at: all[DENIAL].at(),
        setting: "development_mode".into(),
        old: "on".into(),
        new: "off".into(),
    };
    rewrite_and_resign(w.path(), &all);
    // On its own the rewritten log is consistent: only the remembered checkpoint reveals the fork.
    let fresh = audit(w.path(), &[]);
    assert!(fresh.status.success(), "{}", text(&fresh));
    let out = audit(w.path(), &["--state", "state.json"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains("fork: the checkpoint remembered at size 9"), "{t}");
    let state = std::fs::read_to_string(w.path().join("state.json")).unwrap();
    assert!(state.contains(r#""size": 9"#), "the state keeps the last good checkpoint: {state}");
}

#[test]
fn a_release_its_policy_denies_is_reported() {
    let w = workspace();
    // The operator turns the denial (debug on) into a release, with a bundle that says "allowed",
    // and re-signs everything: the signatures and the tree are now all valid.
    let mut all = entries(w.path());
    let Entry::ReleaseDenied {
        at,
        tenant,
        job: Some(job),
        policies,
        evidence_bundle: Some(b),
        job_manifest: Some(manifest),
        nonce: Some(nonce),
        ..
    } = all[DENIAL].clone()
    else {
        panic!("not the denial")
    };
    let mut bundle = Bundle::from_bytes(&blob(w.path(), &b)).unwrap();
    bundle.decision.allowed = true;
    bundle.decision.simulated = true;
    bundle.decision.failed.clear();
    let Entry::KeyReleased { policies: allowed, key_ids, datasets, .. } = all[RELEASE].clone() else { panic!() };
    assert_eq!(policies, allowed);
    let forged = put_blob(w.path(), &bundle.to_bytes());
    all[DENIAL] = Entry::KeyReleased {
        at,
        tenant,
        job,
        datasets,
        policies,
        evidence_bundle: forged,
        job_manifest: manifest,
        ephemeral_key: bundle.ephemeral_key,
        nonce,
        key_ids,
        simulated: true,
    };
    rewrite_and_resign(w.path(), &all);
    let out = audit(w.path(), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("entry {DENIAL}: not justified")), "{t}");
    assert!(t.contains("snp.policy.debug"), "{t}");
    assert!(!t.contains(&format!("✗ entry {RELEASE}")), "{t}");
}

#[test]
fn a_release_whose_report_data_does_not_bind_its_key_is_reported() {
    let w = workspace();
    // Same evidence, but the operator claims the keys went to another ephemeral key.
    let mut all = entries(w.path());
    let Entry::KeyReleased { evidence_bundle, .. } = &all[RELEASE] else { panic!() };
    let mut bundle = Bundle::from_bytes(&blob(w.path(), evidence_bundle)).unwrap();
    bundle.ephemeral_key = put_blob(w.path(), b"coffre-p384-pub-someone-else");
    let forged = put_blob(w.path(), &bundle.to_bytes());
    if let Entry::KeyReleased { evidence_bundle, ephemeral_key, .. } = &mut all[RELEASE] {
        *evidence_bundle = forged;
        *ephemeral_key = bundle.ephemeral_key;
    }
    rewrite_and_resign(w.path(), &all);
    let out = audit(w.path(), &[]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(t.contains(&format!("entry {RELEASE}: not justified")) && t.contains("report_data"), "{t}");
}
