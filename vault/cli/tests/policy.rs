//! `coffre policy` as a security officer uses it: write a policy, read what it allows, get two
//! colleagues to approve it, dry-run it against recorded evidence, read why it denies.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coffre_attestation::composite::gpu_nonce;
use coffre_attestation::nvidia::Arch;
use coffre_attestation::simulated::{SimulatedGpu, SimulatedPlatform, SimulatedReport, SimulatedTee};

fn bundled(name: &str) -> String {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../policies/bundled")
        .join(format!("{name}.toml"))
        .to_string_lossy()
        .into_owned()
}

fn coffre(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_coffre")).current_dir(dir).args(args).output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn json(out: &Output) -> serde_json::Value {
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)))
}

fn failed_names(entry: &serde_json::Value) -> Vec<String> {
    entry["failed_checks"].as_array().unwrap().iter().map(|c| c["name"].as_str().unwrap().to_owned()).collect()
}

#[test]
fn check_explains_lints_and_locates_errors() {
    let dir = tempfile::tempdir().unwrap();
    let out = coffre(dir.path(), &["policy", "check", &bundled("bank-strict")]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("AMD SEV-SNP with genoa or turin processors") && t.contains("0 error(s)"), "{t}");
    assert!(t.contains("warning: snp.measurements"), "{t}");

    let bad = dir.path().join("bad.toml");
    std::fs::write(
        &bad,
        std::fs::read_to_string(bundled("bank-strict")).unwrap().replace("vmpl = 0", "vmpl = \"zero\""),
    )
    .unwrap();
    let out = coffre(dir.path(), &["policy", "check", "bad.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("bad.toml:33:8: invalid type: string \"zero\", expected u8"), "{t}");
    assert!(t.contains("hint: write numbers without quotes"), "{t}");

    let contradiction = dir.path().join("contradiction.toml");
    std::fs::write(
        &contradiction,
        std::fs::read_to_string(bundled("bank-strict"))
            .unwrap()
            .replace("kinds = [\"snp\"]", "kinds = [\"snp\", \"tdx\"]"),
    )
    .unwrap();
    let out = coffre(dir.path(), &["policy", "check", "contradiction.toml", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json(&out);
    assert!(doc["findings"].as_array().unwrap().iter().any(|f| f["severity"] == "error" && f["key"] == "tdx"), "{doc}");
    assert!(doc["digest"].as_str().unwrap().starts_with("sha384:"));
}

#[test]
fn two_of_three_approvers_make_a_policy_approved() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let mut set =
        String::from("format = \"coffre-approvers/v1\"\ntenant = \"example-bank\"\nversion = 1\nthreshold = 2\n");
    for name in ["alice", "bob", "carol"] {
        let out = coffre(d, &["keygen", "--approver", "-o", &format!("{name}.key")]);
        assert!(out.status.success(), "{}", text(&out));
        let public = String::from_utf8(out.stdout).unwrap();
        assert!(public.starts_with("coffre-p384-approver-"));
        set.push_str(&format!("\n[[approvers]]\nname = \"{name}\"\nkey = \"{}\"\n", public.trim()));
    }
    std::fs::write(d.join("approvers.toml"), &set).unwrap();
    std::fs::copy(bundled("bank-strict"), d.join("bank-strict.toml")).unwrap();
    for (name, file) in [("alice", "a.approval"), ("carol", "c.approval")] {
        let out = coffre(d, &["policy", "sign", "bank-strict.toml", "-i", &format!("{name}.key"), "-o", file]);
        assert!(out.status.success(), "{}", text(&out));
        assert!(text(&out).contains("You are approving:"), "the approver sees what they sign");
    }
    let verify = |args: &[&str]| coffre(d, &[&["policy", "verify"], args, &["--approvers", "approvers.toml"]].concat());
    let out = verify(&["bank-strict.toml", "a.approval"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("NOT APPROVED: 1 of the 2"), "{}", text(&out));
    let out = verify(&["bank-strict.toml", "a.approval", "c.approval"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert!(text(&out).contains("approved by alice") && text(&out).contains("approved by carol"));

    // One number changed after approval: both approvals stop counting, and say why.
    let edited =
        std::fs::read_to_string(d.join("bank-strict.toml")).unwrap().replace("microcode = 84", "microcode = 80");
    std::fs::write(d.join("edited.toml"), edited).unwrap();
    let out = verify(&["edited.toml", "a.approval", "c.approval", "--json"]);
    assert_eq!(out.status.code(), Some(1));
    let doc = json(&out);
    assert_eq!(doc["met"], false);
    assert_eq!(doc["rejected"][0]["detail"]["problem"], "digest_mismatch", "{doc}");

    // A recipient key cannot approve; a contradictory policy cannot be approved.
    coffre(d, &["keygen", "-o", "sealing.key"]);
    let out = coffre(d, &["policy", "sign", "bank-strict.toml", "-i", "sealing.key"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out).contains("recipient (sealing) key"), "{}", text(&out));
    let bad = std::fs::read_to_string(d.join("bank-strict.toml")).unwrap().replace("kinds = [\"snp\"]", "kinds = []");
    std::fs::write(d.join("bad.toml"), bad).unwrap();
    let out = coffre(d, &["policy", "sign", "bad.toml", "-i", "alice.key"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(text(&out).contains("refusing to approve"), "{}", text(&out));

    // The approver set itself changes only with two of the current three.
    let next = set.replace("version = 1", "version = 2").replace("threshold = 2", "threshold = 3");
    std::fs::write(d.join("approvers-v2.toml"), next).unwrap();
    coffre(d, &["policy", "sign", "approvers-v2.toml", "-i", "bob.key", "-o", "b2.approval"]);
    let out = coffre(d, &["policy", "verify", "approvers-v2.toml", "b2.approval", "--approvers", "approvers.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    coffre(d, &["policy", "sign", "approvers-v2.toml", "-i", "alice.key", "-o", "a2.approval"]);
    let out = coffre(
        d,
        &["policy", "verify", "approvers-v2.toml", "b2.approval", "a2.approval", "--approvers", "approvers.toml"],
    );
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
}

/// Writes a simulated SNP + H100 appraisal and its manifest into `dir`; returns the manifest path.
fn simulated_evidence(dir: &Path, report: &SimulatedReport) -> PathBuf {
    let tee = SimulatedTee::generate(SimulatedPlatform::default()).unwrap();
    let gpu = SimulatedGpu::generate(Arch::Hopper).unwrap();
    let nonce = gpu_nonce(&report.report_data);
    std::fs::write(dir.join("report.bin"), tee.report(report).unwrap()).unwrap();
    std::fs::write(dir.join("vcek.der"), tee.vcek_der()).unwrap();
    std::fs::write(dir.join("roots.der"), [tee.ark_der(), tee.ask_der(), gpu.root_der()].concat()).unwrap();
    std::fs::write(dir.join("gpu.bin"), gpu.report(&nonce).unwrap()).unwrap();
    std::fs::write(dir.join("gpu-chain.der"), gpu.chain().concat()).unwrap();
    let manifest = dir.join("simulated.toml");
    std::fs::write(
        &manifest,
        "format = \"coffre-evidence/v1\"\nat = 2026-06-01T00:00:00Z\n\n[cpu]\nkind = \"snp\"\nreport = \"report.bin\"\n\
         cert = \"vcek.der\"\n\n[[gpus]]\nreport = \"gpu.bin\"\nchain = \"gpu-chain.der\"\n",
    )
    .unwrap();
    manifest
}

#[test]
fn dry_run_over_simulated_evidence_in_development_and_production() {
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    simulated_evidence(d, &SimulatedReport::default());
    let run = |policy: &str, extra: &[&str]| {
        coffre(
            d,
            &[
                &["policy", "dry-run", &bundled(policy), "--evidence", "simulated.toml"],
                extra,
                &["--dangerous-accept-simulated-roots", "roots.der", "--json"],
            ]
            .concat(),
        )
    };
    let out = run("development", &["--development"]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(doc[0]["evidence"], "simulated.toml");
    assert_eq!(doc[0]["allowed"], true);
    assert_eq!(doc[0]["failed_checks"].as_array().unwrap().len(), 0);

    let out = run("development", &[]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(failed_names(&json(&out)[0]), ["platform.development_mode"]);

    for policy in ["bank-strict", "tdx-h100", "azure-cvm-h100"] {
        let out = run(policy, &["--development"]);
        assert_eq!(out.status.code(), Some(1), "{policy}: {}", text(&out));
        let names = failed_names(&json(&out)[0]);
        assert!(
            names.contains(&"platform.kind".to_owned()) && names.contains(&"gpu[0].platform".to_owned()),
            "{names:?}"
        );
    }

    // A request for another tenant: no policy applies.
    std::fs::write(
        d.join("request.toml"),
        "tenant = \"other-bank\"\ndataset = \"cards\"\n[job]\nkind = \"fine-tune\"\nepochs = 1\n",
    )
    .unwrap();
    let out = run("development", &["--development", "--request", "request.toml"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert_eq!(failed_names(&json(&out)[0]), ["policy.applicable"]);

    // Evidence that does not verify (no simulated roots trusted) is denied with its failures.
    let out =
        coffre(d, &["policy", "dry-run", &bundled("development"), "--evidence", "simulated.toml", "--development"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        text(&out).contains("✗ evidence.cpu.vcek") && text(&out).contains("✗ evidence.gpu[0].device_chain"),
        "{}",
        text(&out)
    );
}

#[test]
fn dry_run_over_real_evidence_says_why() {
    let Some(genoa) = coffre_testkit::require("sev-snp/trustee/az-snp-vtpm/evidence-genoa.json") else { return };
    let dir = tempfile::tempdir().unwrap();
    let genoa = genoa.to_string_lossy().into_owned();
    let out = coffre(
        dir.path(),
        &[
            "policy",
            "dry-run",
            &bundled("azure-cvm-h100"),
            "--evidence",
            &genoa,
            "--at",
            "2025-06-01T00:00:00Z",
            "--json",
        ],
    );
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let doc = json(&out);
    assert_eq!(failed_names(&doc[0]), ["gpu.count"]);
    assert_eq!(doc[0]["failed_checks"][0]["expected"], "exactly 1 GPU(s)");
    assert_eq!(doc[0]["failed_checks"][0]["actual"], "0 GPU(s)");

    let out = coffre(
        dir.path(),
        &["policy", "dry-run", &bundled("bank-strict"), "--evidence", &genoa, "--at", "2025-06-01T00:00:00Z"],
    );
    let t = text(&out);
    assert!(t.contains("DENIED") && t.contains("✗ snp.crl: expected a current AMD CRL checked"), "{t}");
    assert!(t.contains("0 allowed, 1 denied, of 1 evidence."), "{t}");

    // Usage errors exit 2: a missing evidence file, a policy that does not load.
    let out = coffre(dir.path(), &["policy", "dry-run", &bundled("bank-strict"), "--evidence", "missing.toml"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    let out = coffre(dir.path(), &["policy", "dry-run", "missing-policy.toml", "--evidence", &genoa]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

#[test]
fn the_schema_is_printed_for_editors() {
    let dir = tempfile::tempdir().unwrap();
    let out = coffre(dir.path(), &["policy", "schema"]);
    assert!(out.status.success());
    let schema = json(&out);
    assert_eq!(schema["title"], "Coffre key-release policy");
}

/// Red-team finding 11: `coffre policy dry-run --evidence <NVIDIA JSON list>` always failed with
/// "an SNP report without its VCEK or VLEK" (the SNP reader claimed the JSON first, so the NVIDIA
/// branch was unreachable). Every kind of evidence goes through dry-run, each to a verdict that
/// names the policy's checks, never to a loading error.
#[test]
fn dry_run_reads_every_kind_of_evidence() {
    let Some(root) = coffre_testkit::require("nvidia-gpu") else { return };
    let shared = root.parent().unwrap().to_path_buf();
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    let at = |p: &str| shared.join(p).to_string_lossy().into_owned();
    std::fs::write(
        d.join("snp.toml"),
        format!(
            "format = \"coffre-evidence/v1\"\nat = 2025-06-01T00:00:00Z\n[cpu]\nkind = \"snp\"\nreport = \"{}\"\ncert = \"{}\"\n",
            at("sev-snp/virtee-sev/report_milan.hex"),
            at("sev-snp/virtee-sev/vcek_milan.der")
        ),
    )
    .unwrap();
    std::fs::write(
        d.join("tdx.toml"),
        format!(
            "format = \"coffre-evidence/v1\"\nat = 2025-06-19T11:32:27Z\n[cpu]\nkind = \"tdx\"\nquote = \"{}\"\ncollateral = \"{}\"\n",
            at("tdx/dcap-qvl/tdx_quote"),
            at("tdx/dcap-qvl/tdx_quote_collateral.json")
        ),
    )
    .unwrap();
    let june = "2025-06-01T00:00:00Z";
    let cases = [
        ("snp.toml".to_owned(), "bank-strict", "snp.", june),
        (at("sev-snp/trustee/az-snp-vtpm/evidence-genoa.json"), "azure-cvm-h100", "gpu.count", june),
        ("tdx.toml".to_owned(), "tdx-h100", "gpu.", "2025-06-19T11:32:27Z"),
        (
            at("nvidia-gpu/nv-attestation-sdk/serialized_evidence/hopper_evidence.json"),
            "azure-cvm-h100",
            "platform.kind",
            june,
        ),
        (
            at("nvidia-gpu/nv-attestation-sdk/serialized_evidence/multi_gpu_hopper.json"),
            "azure-cvm-h100",
            "gpu.count",
            june,
        ),
        (
            at("nvidia-gpu/nv-attestation-sdk/serialized_evidence/evidence_hopper_590_12.json"),
            "tdx-h100",
            "platform.kind",
            june,
        ),
    ];
    for (evidence, policy, expected, when) in cases {
        let out = coffre(d, &["policy", "dry-run", &bundled(policy), "--evidence", &evidence, "--at", when, "--json"]);
        assert_eq!(out.status.code(), Some(1), "{evidence}: {}", text(&out));
        let doc = json(&out);
        let names = failed_names(&doc[0]);
        assert!(names.iter().any(|n| n.starts_with(expected)), "{evidence} under {policy}: {names:?}");
        assert!(!text(&out).contains("without its VCEK"), "{evidence}: {}", text(&out));
    }
}
