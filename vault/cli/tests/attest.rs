//! `coffre attest verify` as an auditor runs it: real vendor evidence, exit statuses, JSON shape.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::path::PathBuf;
use std::process::{Command, Output};

use coffre_attestation::simulated::{SimulatedPlatform, SimulatedReport, SimulatedTee};

const AT: &str = "2025-06-01T00:00:00Z";

fn td(rel: &str) -> Option<String> {
    coffre_testkit::require(rel).map(|p: PathBuf| p.to_string_lossy().into_owned())
}

fn coffre(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coffre")).args(args).output().unwrap()
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
}

#[test]
fn every_valid_shared_sample_verifies_through_the_cli() {
    let cases: &[(&str, Option<&str>)] = &[
        ("sev-snp/virtee-sev/report_milan.hex", Some("sev-snp/virtee-sev/vcek_milan.der")),
        ("sev-snp/go-sev-guest/attestation.bin", Some("sev-snp/go-sev-guest/vcek.der")),
        ("vectors/trustee-evidence/snp/test-report.bin", Some("vectors/trustee-evidence/snp/test-vcek.der")),
        ("vectors/trustee-evidence/snp/test-vlek-report.bin", Some("vectors/trustee-evidence/snp/test-vlek.der")),
        ("sev-snp/trustee/az-snp-vtpm/hcl-report.bin", Some("sev-snp/trustee/az-snp-vtpm/vcek.pem")),
        ("sev-snp/trustee/az-snp-vtpm/evidence-genoa.json", None),
        ("sev-snp/trustee/az-snp-vtpm/evidence-v0.json", None),
        ("sev-snp/trustee/az-snp-vtpm/evidence-v1.json", None),
        ("sev-snp/trustee/az-snp-vtpm/evidence-v2.json", None),
    ];
    for (report, cert) in cases {
        let Some(report_path) = td(report) else { return };
        let mut args = vec!["attest", "verify", "--kind", "snp", "--report", &report_path, "--at", AT, "--json"];
        let cert_path;
        if let Some(c) = cert {
            let Some(p) = td(c) else { return };
            cert_path = p;
            args.extend(["--cert", &cert_path]);
        }
        let out = coffre(&args);
        assert_eq!(out.status.code(), Some(0), "{report}: {}", String::from_utf8_lossy(&out.stdout));
        let v = json(&out);
        assert_eq!(v["verified"], true, "{report}");
        assert_eq!(v["kind"], "snp");
        assert_eq!(v["errors"], serde_json::json!([]));
        assert_eq!(v["claims"]["platform"], "snp");
        for key in ["bootloader", "tee", "snp", "microcode", "fmc"] {
            assert!(v["claims"]["reported_tcb"].get(key).is_some(), "{report}: reported_tcb.{key}");
        }
    }
}

#[test]
fn invalid_evidence_exits_1_and_lists_every_failure() {
    let (Some(report), Some(cert)) = (
        td("vectors/trustee-evidence/snp/test-report.bin"),
        td("vectors/trustee-evidence/snp/test-vcek-invalid-legacy.der"),
    ) else {
        return;
    };
    let out =
        coffre(&["attest", "verify", "--kind", "snp", "--report", &report, "--cert", &cert, "--at", AT, "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let v = json(&out);
    assert_eq!(v["verified"], false);
    let errors: Vec<String> = v["errors"].as_array().unwrap().iter().map(|e| e.as_str().unwrap().to_owned()).collect();
    for name in ["vcek:", "tcb:", "chip_id:", "report_signature:"] {
        assert!(errors.iter().any(|e| e.starts_with(name)), "{name} missing from {errors:?}");
    }
    // The table form marks each check.
    let out = coffre(&["attest", "verify", "--kind", "snp", "--report", &report, "--cert", &cert, "--at", AT]);
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("NOT VERIFIED") && text.contains("✗ vcek") && text.contains("✓ report_format"), "{text}");
}

#[test]
fn usage_errors_exit_2() {
    let Some(report) = td("sev-snp/virtee-sev/report_milan.hex") else { return };
    let bad_time = coffre(&["attest", "verify", "--kind", "snp", "--report", &report, "--at", "yesterday"]);
    assert_eq!(bad_time.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&bad_time.stderr).contains("hint:"));
    let missing = coffre(&["attest", "verify", "--kind", "snp", "--report", "/nonexistent/report.bin", "--at", AT]);
    assert_eq!(missing.status.code(), Some(2));
    let not_a_cert = coffre(&["attest", "verify", "--kind", "snp", "--report", &report, "--cert", &report, "--at", AT]);
    assert_eq!(not_a_cert.status.code(), Some(2));
    let no_kind = coffre(&["attest", "verify", "--report", &report, "--at", AT]);
    assert_eq!(no_kind.status.code(), Some(2));
}

#[test]
fn simulated_evidence_needs_the_dangerous_flag_and_says_simulated() {
    let dir = tempfile::tempdir().unwrap();
    let tee = SimulatedTee::generate(SimulatedPlatform::default()).unwrap();
    let report = dir.path().join("report.bin");
    let vcek = dir.path().join("vcek.der");
    let roots = dir.path().join("simulated-roots.der");
    std::fs::write(&report, tee.report(&SimulatedReport::default()).unwrap()).unwrap();
    std::fs::write(&vcek, tee.vcek_der()).unwrap();
    std::fs::write(&roots, [tee.ark_der(), tee.ask_der()].concat()).unwrap();
    let (r, c, k) = (report.to_str().unwrap(), vcek.to_str().unwrap(), roots.to_str().unwrap());
    let production =
        coffre(&["attest", "verify", "--kind", "snp", "--report", r, "--cert", c, "--at", "now", "--json"]);
    assert_eq!(production.status.code(), Some(1));
    let dev = coffre(&[
        "attest",
        "verify",
        "--kind",
        "snp",
        "--report",
        r,
        "--cert",
        c,
        "--at",
        "now",
        "--json",
        "--dangerous-accept-simulated-roots",
        k,
    ]);
    assert_eq!(dev.status.code(), Some(0), "{}", String::from_utf8_lossy(&dev.stdout));
    assert_eq!(json(&dev)["claims"]["platform"], "simulated");
    assert!(String::from_utf8_lossy(&dev.stderr).contains("SIMULATED"));
}
