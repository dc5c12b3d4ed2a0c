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
        "OK: audit-report.html",
        "The vault was stopped",
    ] {
        assert!(text.contains(expected), "missing {expected:?} in:\n{text}");
    }
    report_reads_well(&dir.path().join("demo/audit-report.html"));
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

/// The auditor's report: self-contained, with the elements a compliance officer looks for, and
/// (where Chromium is installed, as `scripts/test` does) rendered headless to a screenshot that
/// is not blank and printed to a PDF.
fn report_reads_well(path: &std::path::Path) {
    let html = std::fs::read_to_string(path).unwrap();
    for expected in [
        "<section id=\"verdict\" class=\"verdict ok\"><h2>Verdict: OK</h2>",
        "Timeline per dataset",
        "Dataset <code>messages</code>",
        "Release at entry",
        "AMD SEV-SNP (simulated)",
        "GPU 0",
        "approved by alice, bob",
        "Denial at entry",
        "snp.policy.debug",
        "Lineage: dataset",
        "fraud-lora v1",
        "Signed checkpoint",
    ] {
        assert!(html.contains(expected), "the report lacks {expected:?}");
    }
    // Nothing to run and nothing to fetch.
    let lower = html.to_ascii_lowercase();
    for forbidden in ["<script", "src=", "href=", "@import", "url("] {
        assert!(!lower.contains(forbidden), "the report holds {forbidden:?}");
    }

    let chromium = std::env::var("COFFRE_CHROMIUM")
        .ok()
        .or_else(|| std::path::Path::new("/usr/bin/chromium").is_file().then(|| "/usr/bin/chromium".to_owned()));
    let Some(chromium) = chromium else {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no chromium under CI (scripts/test installs it)");
        eprintln!("skipping the browser check: chromium is not installed (scripts/test installs it)");
        return;
    };
    let out_dir = tempfile::tempdir().unwrap();
    let url = format!("file://{}", path.display());
    let headless = |extra: &[String]| {
        let profile = out_dir.path().join(format!("profile-{}", extra.len()));
        let out = Command::new(&chromium)
            .args([
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-quic",
                "--no-first-run",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--hide-scrollbars",
            ])
            .arg(format!("--user-data-dir={}", profile.display()))
            .args(extra)
            .arg(&url)
            .output()
            .unwrap();
        assert!(out.status.success(), "chromium: {}", String::from_utf8_lossy(&out.stderr));
        out
    };
    // What the browser made of it: the verdict and the sections are there as rendered text.
    let dom = headless(&["--dump-dom".to_owned()]);
    let dom = String::from_utf8_lossy(&dom.stdout);
    assert!(dom.contains("Verdict: OK") && dom.contains("Lineage: dataset"), "{dom}");
    // A screenshot that is not blank: many distinct colours, not one.
    let shot = out_dir.path().join("report.png");
    headless(&[format!("--screenshot={}", shot.display()), "--window-size=1200,1600".to_owned()]);
    let decoder = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&shot).unwrap()));
    let mut reader = decoder.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf).unwrap();
    let bytes = &buf[..info.buffer_size()];
    let step = info.color_type.samples();
    let colours: std::collections::HashSet<&[u8]> = bytes.chunks(step).collect();
    assert!(info.width >= 1000 && colours.len() > 20, "{}x{}, {} colours", info.width, info.height, colours.len());
    // And it prints.
    let pdf = out_dir.path().join("report.pdf");
    headless(&[format!("--print-to-pdf={}", pdf.display()), "--no-pdf-header-footer".to_owned()]);
    let pdf_bytes = std::fs::read(&pdf).unwrap();
    assert!(pdf_bytes.starts_with(b"%PDF-") && pdf_bytes.len() > 10_000, "{} bytes", pdf_bytes.len());
}
