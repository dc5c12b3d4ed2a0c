//! The README's first command, for real: `coffre demo` drives a development vault, the bank's
//! people and an attested worker as separate processes, end to end.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::process::Command;

#[test]
fn the_demo_runs_the_whole_story_through_the_real_processes() {
    let Some(bin) = coffre_e2e::binaries() else { return };
    let dir = tempfile::tempdir().unwrap();
    let out = Command::new(bin.join("coffre"))
        .args(["demo", "--dir"])
        .arg(dir.path().join("demo"))
        .args(["--records", "400", "--train-steps", "2"])
        .env_remove("COFFRE_TOKEN")
        .env_remove("COFFRE_VAULT")
        .output()
        .unwrap();
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
    assert!(out.status.success(), "{text}");
    for expected in [
        // Each step as the command a user types.
        "$ coffred serve --data-dir vault --dev --dev-roots dev-roots.pem",
        "$ coffre policy activate --tenant example-bank development 1",
        "$ coffre dataset upload messages messages.jsonl.coffre --tenant example-bank",
        "coffre-worker run --tenant example-bank",
        // The attested worker's release and registration.
        "release  log entry",
        "registered fraud-lora v1",
        // The debug-enabled VM: denied, with the failed check, from the worker and from the vault.
        "snp.policy.debug: expected clear; found set",
        "$ coffre denial show",
        // The owner opens the model; the auditor traces it and audits the log.
        "opened 4 files into fraud-lora",
        "✓ traced to an attested release in a log that audits clean",
        "Result      OK",
        "The vault was stopped",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    // No vault left running on that directory.
    let demo_dir = dir.path().join("demo");
    let running: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|e| std::fs::read_link(e.path().join("cwd")).is_ok_and(|cwd| cwd == demo_dir))
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains("coffred"))
        .collect();
    assert!(running.is_empty(), "{running:?}");
}
