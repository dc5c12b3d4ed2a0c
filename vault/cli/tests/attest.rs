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

const JUNE_2025: &str = "2025-06-19T11:32:27Z";
const FEB_2026: &str = "2026-02-18T11:58:51Z";
const SPR_2023: &str = "2023-06-18T09:42:58Z";

/// How a TDX case gets its collateral.
enum Collateral {
    Json(&'static str),
    /// go-tdx-guest's raw PCS responses, given as a directory with the names `--help` documents.
    GoTdxGuest2023,
    /// Trustee's TCB Info and QE Identity with the 2025 dcap-qvl issuer chains and CRLs.
    Trustee2025,
    None,
}

/// A directory of raw PCS responses in the layout `coffre attest verify --collateral DIR` takes.
fn pcs_dir(c: &Collateral, dir: &std::path::Path) -> Option<String> {
    let write = |name: &str, bytes: Vec<u8>| std::fs::write(dir.join(name), bytes).unwrap();
    match c {
        Collateral::GoTdxGuest2023 => {
            let r = |f: &str| coffre_testkit::read(&format!("tdx/go-tdx-guest/{f}"));
            write("tcb_info.json", r("sample_tcbInfo_response")?);
            write("qe_identity.json", r("sample_qeIdentity_response")?);
            write("pck_crl.der", r("pckcrl")?);
            write("root_crl.der", r("rootcrl.der")?);
            write("tcb_info_issuer_chain.pem", r("tcb_info_issuer_chain.pem")?);
            write("qe_identity_issuer_chain.pem", r("qe_identity_issuer_chain.pem")?);
            write("pck_crl_issuer_chain.pem", r("pck_crl_issuer_chain.pem")?);
        }
        Collateral::Trustee2025 => {
            let base: serde_json::Value =
                serde_json::from_slice(&coffre_testkit::read("tdx/dcap-qvl/near_quote_collateral.json")?).unwrap();
            let s = |k: &str| base[k].as_str().unwrap().as_bytes().to_vec();
            write("tcb_info.json", coffre_testkit::read("vectors/trustee-evidence/tdx/tcbInfo.json")?);
            write("qe_identity.json", coffre_testkit::read("vectors/trustee-evidence/tdx/enclaveIdentity.json")?);
            write("pck_crl.der", s("pck_crl"));
            write("root_crl.der", s("root_ca_crl"));
            write("tcb_info_issuer_chain.pem", s("tcb_info_issuer_chain"));
            write("qe_identity_issuer_chain.pem", s("qe_identity_issuer_chain"));
            write("pck_crl_issuer_chain.pem", s("pck_crl_issuer_chain"));
        }
        _ => unreachable!(),
    }
    Some(dir.to_string_lossy().into_owned())
}

/// Quote, collateral, time, and the TCB status when verified or the checks that must fail.
type TdxCase = (&'static str, Collateral, &'static str, Result<&'static str, &'static [&'static str]>);

/// Every TDX/SGX sample of PROVENANCE.md §3 through the CLI, with its documented verdict.
#[test]
fn every_tdx_sample_gets_its_documented_verdict_through_the_cli() {
    let cases: &[TdxCase] = &[
        (
            "tdx/dcap-qvl/tdx_quote",
            Collateral::Json("tdx/dcap-qvl/tdx_quote_collateral.json"),
            JUNE_2025,
            Ok("UpToDate"),
        ),
        (
            "tdx/dcap-qvl/tdx_quote_outdated",
            Collateral::Json("tdx/dcap-qvl/tdx_quote_outdated_collateral.json"),
            FEB_2026,
            Err(&["dcap_verification"]),
        ),
        (
            "tdx/dcap-qvl/sgx_quote",
            Collateral::Json("tdx/dcap-qvl/sgx_quote_collateral.json"),
            "2025-06-19T11:56:11Z",
            Ok("ConfigurationAndSWHardeningNeeded"),
        ),
        (
            "tdx/dcap-qvl/quote-from-tappd.hex",
            Collateral::Json("tdx/dcap-qvl/tdx_quote_collateral.json"),
            JUNE_2025,
            Err(&["dcap_verification"]),
        ),
        (
            "tdx/dcap-qvl/tdx-quote.hex",
            Collateral::Json("tdx/dcap-qvl/tdx_quote_collateral.json"),
            JUNE_2025,
            Err(&["dcap_verification"]),
        ),
        (
            "tdx/dcap-qvl/near_quote.hex",
            Collateral::Json("tdx/dcap-qvl/near_quote_collateral.json"),
            "2025-09-02T08:41:59Z",
            Ok("UpToDate"),
        ),
        (
            "tdx/go-tdx-guest/tdx_prod_quote_SPR_E4.dat",
            Collateral::GoTdxGuest2023,
            SPR_2023,
            Err(&["quote_format", "dcap_verification"]),
        ),
        (
            "tdx/go-tdx-guest/quote_v5_sample.dat",
            Collateral::Json("tdx/dcap-qvl/tdx_quote_outdated_collateral.json"),
            FEB_2026,
            Ok("UpToDate"),
        ),
        ("tdx/go-tdx-guest/cos-113-tdx-quote.dat", Collateral::None, AT, Err(&["collateral"])),
        ("vectors/trustee-evidence/tdx/tdx_quote_4.dat", Collateral::GoTdxGuest2023, SPR_2023, Ok("UpToDate")),
        (
            "vectors/trustee-evidence/tdx/tdx_quote_5.dat",
            Collateral::Json("tdx/dcap-qvl/tdx_quote_outdated_collateral.json"),
            FEB_2026,
            Err(&["dcap_verification"]),
        ),
        (
            "vectors/trustee-evidence/tdx/tdx_quote_6.dat",
            Collateral::Trustee2025,
            "2025-10-28T07:45:09Z",
            Err(&["pck_crl_validity", "dcap_verification"]),
        ),
        ("tdx/trustee/az-tdx-vtpm-td-quote.bin", Collateral::None, AT, Err(&["collateral"])),
        ("tdx/trustee/occlum_quote.dat", Collateral::None, AT, Err(&["collateral"])),
    ];
    for (quote, collateral, at, expected) in cases {
        let Some(quote_path) = td(quote) else { return };
        let dir = tempfile::tempdir().unwrap();
        let collateral_path = match collateral {
            Collateral::Json(rel) => match td(rel) {
                Some(p) => Some(p),
                None => return,
            },
            Collateral::None => None,
            other => match pcs_dir(other, dir.path()) {
                Some(p) => Some(p),
                None => return,
            },
        };
        let mut args = vec!["attest", "verify", "--kind", "tdx", "--quote", &quote_path, "--at", at, "--json"];
        if let Some(c) = &collateral_path {
            args.extend(["--collateral", c.as_str()]);
        }
        let out = coffre(&args);
        let v = json(&out);
        let failed: Vec<&str> = v["checks"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["passed"] == false)
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        match expected {
            Ok(status) => {
                assert_eq!(out.status.code(), Some(0), "{quote}: {failed:?} {}", v["errors"]);
                assert_eq!(v["claims"]["tcb_status"], *status, "{quote}");
            }
            Err(checks) => {
                assert_eq!(out.status.code(), Some(1), "{quote}");
                assert_eq!(&failed, checks, "{quote}: {}", v["errors"]);
                // Crypto is valid in every one of these: the quote's own signatures pass.
                for own in ["attestation_key_signature", "qe_report_signature", "qe_report_binding", "pck_chain"] {
                    assert!(!failed.contains(&own), "{quote}: {own}");
                }
            }
        }
        assert_eq!(v["kind"], "tdx");
    }
}

const SDK: &str = "nvidia-gpu/nv-attestation-sdk";
const TRUSTEE_NV: &str = "vectors/trustee-evidence/nvidia";

fn gpu(report: &str, chain: Option<&str>, extra: &[&str]) -> Option<(Output, serde_json::Value)> {
    let report = td(report)?;
    let mut args: Vec<String> =
        ["attest", "verify", "--kind", "nvidia", "--report", &report, "--at", AT, "--json"].map(String::from).to_vec();
    if let Some(c) = chain {
        args.extend(["--chain".to_owned(), td(c)?]);
    }
    args.extend(extra.iter().map(|s| s.to_string()));
    let refs: Vec<&str> = args.iter().map(String::as_str).collect();
    let out = coffre(&refs);
    let v = json(&out);
    Some((out, v))
}

fn failed_checks(v: &serde_json::Value) -> Vec<String> {
    v["checks"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["passed"] == false)
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect()
}

/// Every NVIDIA sample of PROVENANCE.md §4 through the CLI, with its documented verdict.
#[test]
fn every_nvidia_sample_gets_its_documented_verdict_through_the_cli() {
    let hopper = (
        format!("{SDK}/sample_attestation_data/hopperAttestationReport.txt"),
        format!("{SDK}/sample_attestation_data/hopperCertChain.txt"),
    );
    let valid: Vec<(String, Option<String>, &str)> = vec![
        (
            format!("{SDK}/hopper_580/hopperAttestationReport.txt"),
            Some(format!("{SDK}/hopper_580/hopperCertChain.txt")),
            "5bb22e377702d4e1",
        ),
        (hopper.0.clone(), Some(hopper.1.clone()), "27a328247bf7935c"),
        (
            format!("{SDK}/sample_attestation_data/hopperAttestationReportExpired.txt"),
            Some(format!("{SDK}/sample_attestation_data/hopperCertChainExpired.txt")),
            "931d8dd0add203ac",
        ),
        (
            format!("{SDK}/sample_attestation_data/blackwellAttestationReport.txt"),
            Some(format!("{SDK}/sample_attestation_data/blackwellCertChain.txt")),
            "931d8dd0add203ac",
        ),
        (
            format!("{TRUSTEE_NV}/hopperAttestationReport.txt"),
            Some(format!("{TRUSTEE_NV}/hopper_cert_chain_case1.txt")),
            "931d8dd0add203ac",
        ),
        (
            format!("{TRUSTEE_NV}/hopper_coco_report1.txt"),
            Some(format!("{TRUSTEE_NV}/hopper_coco_certs1.txt")),
            "87d8e24ab336adaf",
        ),
    ];
    for (report, chain, prefix) in &valid {
        // First without a nonce, to learn the one each sample was requested with…
        let Some((out, v)) = gpu(report, chain.as_deref(), &[]) else { return };
        assert_eq!(out.status.code(), Some(0), "{report}: {}", v["errors"]);
        assert!(String::from_utf8_lossy(&out.stderr).contains("not that it is fresh"));
        let nonce = v["claims"]["nonce"].as_str().unwrap().to_owned();
        assert!(nonce.starts_with(prefix), "{report}: {nonce}");
        // …then as a verifier that asked for it.
        let (out, v) = gpu(report, chain.as_deref(), &["--nonce", &nonce]).unwrap();
        assert_eq!(out.status.code(), Some(0), "{report}: {}", v["errors"]);
        assert!(v["checks"].as_array().unwrap().iter().any(|c| c["name"] == "nonce" && c["passed"] == true));
        assert_eq!((v["kind"].as_str(), v["claims"]["platform"].as_str()), (Some("nvidia"), Some("nvidia")));
    }
    // The evidence lists: one entry per GPU under "devices".
    let lists = [
        ("hopper_evidence.json", 1, "e97b23a1718095a0e9e35edca810768c70a6a5a389b705e753b197912bc11576"),
        ("evidence_hopper_590_12.json", 1, "e97b23a1718095a0e9e35edca810768c70a6a5a389b705e753b197912bc11576"),
        ("multi_gpu_hopper.json", 4, "e97b23a1718095a0e9e35edca810768c70a6a5a389b705e753b197912bc11576"),
        // Valid offline; only NVIDIA's OCSP would show the certificate hold.
        ("hopper_evidence_cert_hold.json", 1, ""),
    ];
    for (file, n, nonce) in lists {
        let extra: Vec<&str> = if nonce.is_empty() { vec![] } else { vec!["--nonce", nonce] };
        let Some((out, v)) = gpu(&format!("{SDK}/serialized_evidence/{file}"), None, &extra) else { return };
        assert_eq!(out.status.code(), Some(0), "{file}: {}", v["errors"]);
        let devices = v["devices"].as_array().unwrap();
        assert_eq!(devices.len(), n, "{file}");
        assert!(devices.iter().all(|d| d["verified"] == true && d["claims"]["driver_version"].is_string()), "{file}");
    }
    // The bad-nonce scenario.
    let zeros = "0".repeat(64);
    let (out, v) = gpu(&hopper.0, Some(&hopper.1), &["--nonce", &zeros]).unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(failed_checks(&v), ["nonce"]);
    // The tampered report.
    let (out, v) = gpu(
        &format!("{SDK}/sample_attestation_data/hopperAttestationReportInvalidSignature.txt"),
        Some(&format!("{SDK}/sample_attestation_data/hopperCertChainExpired.txt")),
        &[],
    )
    .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(failed_checks(&v).contains(&"report_signature".to_owned()), "{}", v["errors"]);
    // Trustee's broken chains.
    for case in ["hopper_cert_chain_case2.txt", "hopper_cert_chain_case3.txt", "hopper_cert_chain_case4.txt"] {
        let (out, v) =
            gpu(&format!("{TRUSTEE_NV}/hopperAttestationReport.txt"), Some(&format!("{TRUSTEE_NV}/{case}")), &[])
                .unwrap();
        assert_eq!(out.status.code(), Some(1), "{case}");
        assert!(failed_checks(&v).contains(&"device_chain".to_owned()), "{case}: {}", v["errors"]);
    }
}

/// Every RIM of PROVENANCE.md §4 through `--rim`, next to the sample H100 report it was made for.
#[test]
fn every_rim_gets_its_documented_verdict_through_the_cli() {
    let report = format!("{SDK}/sample_attestation_data/hopperAttestationReport.txt");
    let chain = format!("{SDK}/sample_attestation_data/hopperCertChain.txt");
    let cases: &[(&str, &[&str])] = &[
        // Valid, but for a driver no report here runs.
        ("rims/NV_GPU_DRIVER_GH100_550.144.03.xml", &["rim1_target", "rim_measurements"]),
        ("rims/incorrect_signature_driver_rim.xml", &["rim1_signature", "rim_measurements"]),
        ("rims/incorrect_cert_chain_driver_rim.xml", &["rim1_chain", "rim_measurements"]),
        (
            "rims/sample_rims/NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml",
            &["rim1_signature", "rim_measurements"],
        ),
        (
            "rims/sample_rims/NV_GPU_DRIVER_GH100_570.124.03_expired.xml",
            &["rim1_signature", "rim1_validity", "rim_measurements"],
        ),
        // Validly signed, for this GPU's VBIOS: index 9 differs.
        ("rims/sample_rims/NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml", &["rim_measurements"]),
    ];
    for (rim, expected) in cases {
        let Some(rim_path) = td(&format!("{SDK}/{rim}")) else { return };
        let Some((out, v)) = gpu(&report, Some(&chain), &["--rim", &rim_path]) else { return };
        assert_eq!(out.status.code(), Some(1), "{rim}");
        assert_eq!(failed_checks(&v), *expected, "{rim}: {}", v["errors"]);
    }
    let vbios =
        td(&format!("{SDK}/rims/sample_rims/NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml")).unwrap();
    let (_, v) = gpu(&report, Some(&chain), &["--rim", &vbios]).unwrap();
    assert_eq!(v["claims"]["mismatched_indices"], serde_json::json!([9]));
    // The table form names the mismatching index.
    let out = coffre(&[
        "attest",
        "verify",
        "--kind",
        "nvidia",
        "--report",
        &td(&report).unwrap(),
        "--chain",
        &td(&chain).unwrap(),
        "--rim",
        &vbios,
        "--at",
        AT,
    ]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("✗ rim_measurements") && text.contains("index 9 (vbios RIM 96.00.5E.00.01)"), "{text}");
}

#[test]
fn tdx_and_nvidia_usage_errors_exit_2() {
    let Some(report) = td(&format!("{SDK}/sample_attestation_data/hopperAttestationReport.txt")) else { return };
    let Some(quote) = td("tdx/dcap-qvl/tdx_quote") else { return };
    let cases: Vec<Vec<&str>> = vec![
        vec!["--kind", "tdx", "--at", AT],
        vec!["--kind", "tdx", "--quote", &quote, "--report", &report, "--at", AT],
        vec!["--kind", "tdx", "--quote", &quote, "--collateral", &report, "--at", AT],
        vec!["--kind", "nvidia", "--report", &report, "--at", AT],
        vec!["--kind", "nvidia", "--report", &report, "--chain", &report, "--at", AT],
        vec!["--kind", "nvidia", "--report", &quote, "--at", AT],
        vec!["--kind", "nvidia", "--report", &report, "--nonce", "abc", "--at", AT],
        vec!["--kind", "snp", "--report", &report, "--rim", &report, "--at", AT],
    ];
    for case in cases {
        let out = coffre(&[&["attest", "verify"], case.as_slice()].concat());
        assert_eq!(out.status.code(), Some(2), "{case:?}: {}", String::from_utf8_lossy(&out.stdout));
        assert!(String::from_utf8_lossy(&out.stderr).contains("error"), "{case:?}");
    }
}

#[test]
fn simulated_gpu_evidence_needs_the_dangerous_flag_and_says_simulated() {
    use coffre_attestation::nvidia::Arch;
    use coffre_attestation::simulated::SimulatedGpu;
    let dir = tempfile::tempdir().unwrap();
    let gpu = SimulatedGpu::generate(Arch::Hopper).unwrap();
    let tee = SimulatedTee::generate(SimulatedPlatform::default()).unwrap();
    let nonce = [0x3c; 32];
    let (report, chain, roots) =
        (dir.path().join("gpu.hex"), dir.path().join("chain.der"), dir.path().join("roots.der"));
    std::fs::write(&report, hex::encode(gpu.report(&nonce).unwrap())).unwrap();
    std::fs::write(&chain, gpu.chain().concat()).unwrap();
    // One file of simulated roots serves both kinds.
    std::fs::write(&roots, [tee.ark_der(), tee.ask_der(), gpu.root_der()].concat()).unwrap();
    let (r, c, k) = (report.to_str().unwrap(), chain.to_str().unwrap(), roots.to_str().unwrap());
    let n = hex::encode(nonce);
    let base =
        ["attest", "verify", "--kind", "nvidia", "--report", r, "--chain", c, "--nonce", &n, "--at", "now", "--json"];
    let production = coffre(&base);
    assert_eq!(production.status.code(), Some(1));
    assert!(failed_checks(&json(&production)).contains(&"device_chain".to_owned()));
    let dev = coffre(&[&base[..], &["--dangerous-accept-simulated-roots", k]].concat());
    assert_eq!(dev.status.code(), Some(0), "{}", String::from_utf8_lossy(&dev.stdout));
    assert_eq!(json(&dev)["claims"]["platform"], "simulated");
    assert!(String::from_utf8_lossy(&dev.stderr).contains("SIMULATED"));
}
