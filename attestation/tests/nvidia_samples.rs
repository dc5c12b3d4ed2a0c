//! Every NVIDIA GPU sample and RIM in the shared test data gets exactly the verdict its
//! PROVENANCE.md states (nvidia-gpu §4 and vectors/trustee-evidence), at a pinned time inside
//! every signer's validity.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use coffre_attestation::nvidia::input::{ReportFile, read_report_file};
use coffre_attestation::nvidia::rim;
use coffre_attestation::nvidia::{Arch, GpuEvidence, GpuVerification, NvidiaVerifier};
use coffre_attestation::x509::Certificate;
use coffre_attestation::{Platform, UnixTime};

const SDK: &str = "nvidia-gpu/nv-attestation-sdk";
const TRUSTEE: &str = "vectors/trustee-evidence/nvidia";
/// Inside every device chain (from 2023-06-20) and the VBIOS RIM signer (2023-12-13 … 2025-12-12).
const AT: &str = "2025-06-01T00:00:00Z";
const VBIOS_RIM: &str = "rims/sample_rims/NV_GPU_VBIOS_1010_0200_882_96005E0001_measurement_mismatch.xml";

fn at(t: &str) -> UnixTime {
    UnixTime::parse_rfc3339(t).unwrap()
}

fn nonce(hex_text: &str) -> [u8; 32] {
    hex::decode(hex_text).unwrap().try_into().unwrap()
}

/// Every GPU of a report file (hex text or JSON list), with `chain` for a single report.
fn evidence(report: &str, chain: Option<&str>) -> Option<Vec<GpuEvidence>> {
    let bytes = coffre_testkit::read(report)?;
    Some(match read_report_file(&bytes).unwrap() {
        ReportFile::Single(r) => vec![GpuEvidence::new(r, &coffre_testkit::read(chain.unwrap())?).unwrap()],
        ReportFile::List(list) => list,
    })
}

/// The SDK's H100 sample (driver 535.86.09, VBIOS 96.00.5E.00.01), the one the VBIOS RIM is for.
fn sample_h100() -> Option<Vec<GpuEvidence>> {
    evidence(
        &format!("{SDK}/sample_attestation_data/hopperAttestationReport.txt"),
        Some(&format!("{SDK}/sample_attestation_data/hopperCertChain.txt")),
    )
}

/// Trustee's CoCo H100 report, with one zero byte after its signature.
fn coco_h100() -> Option<Vec<GpuEvidence>> {
    evidence(&format!("{TRUSTEE}/hopper_coco_report1.txt"), Some(&format!("{TRUSTEE}/hopper_coco_certs1.txt")))
}

fn verify(ev: &GpuEvidence, expected: Option<&[u8; 32]>, rims: &[&[u8]]) -> GpuVerification {
    NvidiaVerifier::new().verify(ev, expected, rims, at(AT))
}

fn failed(v: &GpuVerification) -> Vec<&str> {
    v.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect()
}

struct Valid {
    report: String,
    chain: Option<String>,
    nonce: &'static str,
    arch: Arch,
    driver: &'static str,
    vbios: &'static str,
    gpus: usize,
}

fn valid_samples() -> Vec<Valid> {
    let v = |report: String, chain: Option<String>, nonce, arch, driver, vbios, gpus| Valid {
        report,
        chain,
        nonce,
        arch,
        driver,
        vbios,
        gpus,
    };
    vec![
        v(
            format!("{SDK}/hopper_580/hopperAttestationReport.txt"),
            Some(format!("{SDK}/hopper_580/hopperCertChain.txt")),
            "5bb22e377702d4e1",
            Arch::Hopper,
            "580.159.03",
            "96.00.74.00.20",
            1,
        ),
        v(
            format!("{SDK}/sample_attestation_data/hopperAttestationReport.txt"),
            Some(format!("{SDK}/sample_attestation_data/hopperCertChain.txt")),
            "27a328247bf7935c",
            Arch::Hopper,
            "535.86.09",
            "96.00.5E.00.01",
            1,
        ),
        v(
            format!("{SDK}/sample_attestation_data/hopperAttestationReportExpired.txt"),
            Some(format!("{SDK}/sample_attestation_data/hopperCertChainExpired.txt")),
            "931d8dd0add203ac",
            Arch::Hopper,
            "570.124.03",
            "96.00.5E.00.04",
            1,
        ),
        v(
            format!("{SDK}/sample_attestation_data/blackwellAttestationReport.txt"),
            Some(format!("{SDK}/sample_attestation_data/blackwellCertChain.txt")),
            "931d8dd0add203ac",
            Arch::Blackwell,
            "575.32",
            "97.00.88.00.0F",
            1,
        ),
        v(
            format!("{SDK}/serialized_evidence/hopper_evidence.json"),
            None,
            "e97b23a1718095a0",
            Arch::Hopper,
            "590.12",
            "96.00.A5.00.01",
            1,
        ),
        v(
            format!("{SDK}/serialized_evidence/evidence_hopper_590_12.json"),
            None,
            "e97b23a1718095a0",
            Arch::Hopper,
            "590.12",
            "96.00.A5.00.01",
            1,
        ),
        v(
            format!("{SDK}/serialized_evidence/multi_gpu_hopper.json"),
            None,
            "e97b23a1718095a0",
            Arch::Hopper,
            "590.12",
            "96.00.A5.00.01",
            4,
        ),
        // Valid offline: NVIDIA's OCSP would say "certificate hold", which no offline verifier can see.
        v(
            format!("{SDK}/serialized_evidence/hopper_evidence_cert_hold.json"),
            None,
            "931d8dd0add203ac",
            Arch::Hopper,
            "570.86.10",
            "96.00.AF.00.01",
            1,
        ),
        v(
            format!("{TRUSTEE}/hopperAttestationReport.txt"),
            Some(format!("{TRUSTEE}/hopper_cert_chain_case1.txt")),
            "931d8dd0add203ac",
            Arch::Hopper,
            "550.90.07",
            "96.00.9F.00.01",
            1,
        ),
        v(
            format!("{TRUSTEE}/hopper_coco_report1.txt"),
            Some(format!("{TRUSTEE}/hopper_coco_certs1.txt")),
            "87d8e24ab336adaf",
            Arch::Hopper,
            "580.95.05",
            "96.00.74.00.1A",
            1,
        ),
    ]
}

#[test]
fn every_valid_sample_verifies_with_its_nonce() {
    for s in valid_samples() {
        let Some(gpus) = evidence(&s.report, s.chain.as_deref()) else { return };
        assert_eq!(gpus.len(), s.gpus, "{}", s.report);
        for ev in &gpus {
            let unchecked = verify(ev, None, &[]);
            let claims = unchecked.claims.as_ref().unwrap();
            assert!(claims.nonce.starts_with(s.nonce), "{}: nonce {}", s.report, claims.nonce);
            // The nonce the verifier expects is the one the sample was requested with.
            let v = verify(ev, Some(&nonce(&claims.nonce)), &[]);
            assert!(v.is_verified(), "{}: {:#?}", s.report, v.errors());
            assert!(v.checks.iter().any(|c| c.name == "nonce" && c.passed));
            let c = v.claims.unwrap();
            assert_eq!(c.platform, Platform::Nvidia);
            assert_eq!(c.arch, Some(s.arch), "{}", s.report);
            assert_eq!(c.driver_version.as_deref(), Some(s.driver), "{}", s.report);
            assert_eq!(c.vbios_version.as_deref(), Some(s.vbios), "{}", s.report);
            assert_eq!(c.measurements.len(), 64, "{}", s.report);
            assert_eq!((c.cc_mode, c.dev_tools_mode), (None, None), "SPDM evidence does not carry them");
            assert!(c.device_serial.is_some() && c.fwid.is_some());
        }
    }
}

#[test]
fn trustee_sample_with_its_full_nonce_and_claims() {
    let Some(gpus) = evidence(
        &format!("{TRUSTEE}/hopperAttestationReport.txt"),
        Some(&format!("{TRUSTEE}/hopper_cert_chain_case1.txt")),
    ) else {
        return;
    };
    let Some(expected) = coffre_testkit::read(&format!("{TRUSTEE}/hopperAttestationReport-claims.txt")) else { return };
    let expected: serde_json::Value = serde_json::from_slice(&expected).unwrap();
    let v = verify(&gpus[0], Some(&nonce("931d8dd0add203ac3d8b4fbde75e115278eefcdceac5b87671a748f32364dfcb")), &[]);
    assert!(v.is_verified(), "{:#?}", v.errors());
    let c = v.claims.unwrap();
    let cfg = &expected["config"];
    assert_eq!(c.driver_version.as_deref(), cfg["driver_version"].as_str());
    assert!(c.vbios_version.as_deref().unwrap().eq_ignore_ascii_case(cfg["vbios_version"].as_str().unwrap()));
    assert_eq!(c.fwid.as_deref(), cfg["fwid"].as_str());
    for (ours, theirs) in [
        ("board_id", "board_id"),
        ("chip_sku", "chip_sku"),
        ("chip_sku_mod", "chip_sku_mod"),
        ("project", "project"),
        ("project_sku", "project_sku"),
        ("gpu_info", "gpu_info"),
        ("cpr_info", "cpr_info"),
    ] {
        assert_eq!(c.ids.get(ours).map(String::as_str), cfg[theirs].as_str(), "{ours}");
    }
    // Trustee prints project_sku_mod as hex of its two bytes; they are NULs, an empty text.
    assert_eq!((cfg["project_sku_mod"].as_str(), c.ids["project_sku_mod"].as_str()), (Some("0000"), ""));
    // Trustee prints 0x55 as the character "U": disabled.
    assert_eq!(cfg["nvdec0_status"], "U");
    assert_eq!(c.nvdec0_status, Some(coffre_attestation::nvidia::spdm::Switch::Disabled));
    let measurements = expected["measurements"].as_object().unwrap();
    assert_eq!(measurements.len(), c.measurements.len());
    for (index, value) in measurements {
        assert_eq!(c.measurements[&index.parse::<u8>().unwrap()], value.as_str().unwrap(), "measurement {index}");
    }
    for (index, count) in cfg["measurement_count"].as_object().unwrap() {
        assert_eq!(
            u64::from(c.measurement_counts[index.parse::<usize>().unwrap() - 1]),
            count.as_u64().unwrap(),
            "count {index}"
        );
    }
}

#[test]
fn bad_nonce_fails_only_the_nonce_check() {
    let Some(gpus) = sample_h100() else { return };
    let v = verify(&gpus[0], Some(&[0u8; 32]), &[]);
    assert_eq!(failed(&v), ["nonce"]);
    assert!(v.errors()[0].contains("another session"), "{:?}", v.errors());
}

#[test]
fn tampered_report_fails_its_signature() {
    let Some(gpus) = evidence(
        &format!("{SDK}/sample_attestation_data/hopperAttestationReportInvalidSignature.txt"),
        Some(&format!("{SDK}/sample_attestation_data/hopperCertChainExpired.txt")),
    ) else {
        return;
    };
    let v = verify(&gpus[0], None, &[]);
    let failed = failed(&v);
    assert!(failed.contains(&"report_signature"), "{failed:?}");
    // The tampered report also claims another device's firmware id.
    assert!(failed.contains(&"fwid"), "{failed:?}");
}

#[test]
fn broken_trustee_chains_fail() {
    let report = format!("{TRUSTEE}/hopperAttestationReport.txt");
    let cases = [
        ("hopper_cert_chain_case2.txt", "is a CA, not the GPU's attestation key"),
        ("hopper_cert_chain_case3.txt", "not by \"NVIDIA GH100 Identity\""),
        ("hopper_cert_chain_case4.txt", "the leaf is missing"),
    ];
    for (chain, why) in cases {
        let Some(gpus) = evidence(&report, Some(&format!("{TRUSTEE}/{chain}"))) else { return };
        let v = verify(&gpus[0], None, &[]);
        assert!(!v.is_verified(), "{chain}");
        let dc = v.checks.iter().find(|c| c.name == "device_chain").unwrap();
        assert!(!dc.passed && dc.detail.contains(why), "{chain}: {dc:?}");
    }
    // Case 4 lacks the leaf: no FWID extension where one must be.
    let gpus = evidence(&report, Some(&format!("{TRUSTEE}/hopper_cert_chain_case4.txt"))).unwrap();
    let v = verify(&gpus[0], None, &[]);
    assert!(failed(&v).contains(&"fwid") && failed(&v).contains(&"report_signature"));
}

#[test]
fn zero_padding_is_accepted_other_trailing_bytes_are_not() {
    let Some(gpus) = coco_h100() else { return };
    let ev = &gpus[0];
    let v = verify(ev, None, &[]);
    assert!(v.is_verified(), "{:#?}", v.errors());
    assert_eq!(v.claims.unwrap().trailing_zero_bytes, 1);
    // Taking "the last 96 bytes" as the signature would have failed on this report.
    assert_eq!(*ev.report.last().unwrap(), 0);
    let mut extra = ev.clone();
    extra.report.push(0x01);
    assert_eq!(failed(&verify(&extra, None, &[])), ["spdm_format"]);
}

#[test]
fn the_stated_architecture_must_match_the_certificate() {
    let Some(mut gpus) = evidence(&format!("{SDK}/serialized_evidence/hopper_evidence.json"), None) else { return };
    assert_eq!(gpus[0].stated_arch.as_deref(), Some("HOPPER"));
    gpus[0].stated_arch = Some("BLACKWELL".into());
    let v = verify(&gpus[0], None, &[]);
    assert_eq!(failed(&v), ["device_chain"]);
}

#[test]
fn the_single_gpu_file_is_the_first_gpu_of_the_machine() {
    let (Some(one), Some(all)) = (
        evidence(&format!("{SDK}/serialized_evidence/hopper_evidence.json"), None),
        evidence(&format!("{SDK}/serialized_evidence/multi_gpu_hopper.json"), None),
    ) else {
        return;
    };
    assert_eq!(one[0].chain[0], all[0].chain[0]);
    let serials: std::collections::BTreeSet<_> = all.iter().map(|g| g.chain[0].clone()).collect();
    assert_eq!(serials.len(), 4, "four distinct devices");
}

fn rim_root() -> Certificate {
    rim::pinned_root().unwrap()
}

fn rim_failures(rel: &str, root: &Certificate, t: &str) -> Option<Vec<String>> {
    let xml = coffre_testkit::read(&format!("{SDK}/{rel}"))?;
    let (checks, _) = rim::verify(&xml, root, at(t));
    Some(checks.into_iter().filter(|c| !c.passed).map(|c| format!("{}: {}", c.name, c.detail)).collect())
}

#[test]
fn every_rim_gets_its_documented_verdict() {
    let root = rim_root();
    let cases: [(&str, &[&str]); 6] = [
        ("rims/NV_GPU_DRIVER_GH100_550.144.03.xml", &[]),
        ("rims/incorrect_signature_driver_rim.xml", &["rim_signature: the signature by"]),
        ("rims/incorrect_cert_chain_driver_rim.xml", &["rim_chain:"]),
        (
            "rims/sample_rims/NV_GPU_DRIVER_GH100_535.86.09_measurement_mismatch.xml",
            &["rim_signature: the document digest does not match"],
        ),
        (
            "rims/sample_rims/NV_GPU_DRIVER_GH100_570.124.03_expired.xml",
            &["rim_signature: the document digest does not match", "rim_validity: \"RIM L4 Signer\" is expired"],
        ),
        (VBIOS_RIM, &[]),
    ];
    for (rel, expected) in cases {
        let Some(failures) = rim_failures(rel, &root, AT) else { return };
        assert_eq!(failures.len(), expected.len(), "{rel}: {failures:#?}");
        for (f, e) in failures.iter().zip(expected) {
            assert!(f.starts_with(e), "{rel}: {f} does not start with {e}");
        }
    }
    // The valid driver RIM's signer is valid 2024-12-30 … 2026-12-30.
    let before = rim_failures("rims/NV_GPU_DRIVER_GH100_550.144.03.xml", &root, "2024-06-01T00:00:00Z").unwrap();
    assert!(before.len() == 1 && before[0].starts_with("rim_validity"), "{before:?}");
    let xml = coffre_testkit::read(&format!("{SDK}/rims/NV_GPU_DRIVER_GH100_550.144.03.xml")).unwrap();
    let (_, content) = rim::verify(&xml, &root, at(AT));
    let content = content.unwrap();
    assert_eq!((content.version.as_str(), content.product.as_str()), ("550.144.03", "GH100"));
    assert_eq!(content.measurements.iter().filter(|m| m.active).count(), 21);
}

#[test]
fn a_wrong_rim_root_breaks_the_chain() {
    let Some(wrong) = coffre_testkit::read(&format!("{SDK}/rims/incorrect_rim_root.crt")) else { return };
    let ders = coffre_attestation::x509::certificates_from_pem_or_der(&wrong).unwrap();
    let wrong = Certificate::from_der(&ders[0]).unwrap();
    let failures = rim_failures("rims/NV_GPU_DRIVER_GH100_550.144.03.xml", &wrong, AT).unwrap();
    assert!(failures.len() == 1 && failures[0].starts_with("rim_chain"), "{failures:?}");
}

#[test]
fn vbios_rim_mismatch_is_reported_at_index_9() {
    let Some(gpus) = sample_h100() else { return };
    let Some(rim) = coffre_testkit::read(&format!("{SDK}/{VBIOS_RIM}")) else { return };
    let v = verify(&gpus[0], None, &[&rim]);
    assert_eq!(failed(&v), ["rim_measurements"], "{:#?}", v.errors());
    let detail = &v.checks.iter().find(|c| c.name == "rim_measurements").unwrap().detail;
    assert!(detail.starts_with("index 9 (vbios RIM 96.00.5E.00.01)"), "{detail}");
    let c = v.claims.unwrap();
    assert_eq!(c.mismatched_indices, [9]);
    assert!(!c.vbios_rim_matched && !c.driver_rim_matched);
    assert_eq!(c.rims[0].covers, Some("vbios"));
    assert!(v.checks.iter().any(|c| c.name == "rim1_target" && c.passed));

    // After the RIM signer expired, the RIM is no longer usable at all.
    let later = NvidiaVerifier::new().verify(&gpus[0], None, &[&rim], at("2026-01-01T00:00:00Z"));
    let failed_later: Vec<&str> = later.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
    assert_eq!(failed_later, ["rim1_validity", "rim_measurements"]);
}

#[test]
fn a_rim_for_another_gpu_or_version_is_rejected() {
    let Some(rim) = coffre_testkit::read(&format!("{SDK}/{VBIOS_RIM}")) else { return };
    let Some(bw) = evidence(
        &format!("{SDK}/sample_attestation_data/blackwellAttestationReport.txt"),
        Some(&format!("{SDK}/sample_attestation_data/blackwellCertChain.txt")),
    ) else {
        return;
    };
    let v = verify(&bw[0], None, &[&rim]);
    let target = v.checks.iter().find(|c| c.name == "rim1_target").unwrap();
    assert!(!target.passed && target.detail.contains("for GH100 but the GPU is a GB100"), "{target:?}");
    let Some(h580) = evidence(
        &format!("{SDK}/hopper_580/hopperAttestationReport.txt"),
        Some(&format!("{SDK}/hopper_580/hopperCertChain.txt")),
    ) else {
        return;
    };
    let v = verify(&h580[0], None, &[&rim]);
    let target = v.checks.iter().find(|c| c.name == "rim1_target").unwrap();
    assert!(!target.passed && target.detail.contains("driver 580.159.03 and VBIOS 96.00.74.00.20"), "{target:?}");
    assert!(failed(&v).contains(&"rim_measurements"));
}

#[test]
fn every_flipped_report_byte_is_rejected() {
    let Some(gpus) = coco_h100() else { return };
    let verifier = NvidiaVerifier::new();
    let expected = nonce(&verifier.verify(&gpus[0], None, &[], at(AT)).claims.unwrap().nonce);
    let mut ev = gpus[0].clone();
    for i in 0..ev.report.len() {
        ev.report[i] ^= 0x01;
        assert!(!verifier.verify(&ev, Some(&expected), &[], at(AT)).is_verified(), "flip at byte {i} accepted");
        ev.report[i] ^= 0x01;
    }
    assert!(verifier.verify(&ev, Some(&expected), &[], at(AT)).is_verified());
}

#[test]
fn every_flipped_leaf_certificate_byte_is_rejected() {
    let Some(gpus) = coco_h100() else { return };
    let verifier = NvidiaVerifier::new();
    let mut ev = gpus[0].clone();
    for i in 0..ev.chain[0].len() {
        ev.chain[0][i] ^= 0x01;
        assert!(!verifier.verify(&ev, None, &[], at(AT)).is_verified(), "flip at leaf byte {i} accepted");
        ev.chain[0][i] ^= 0x01;
    }
}

#[test]
fn every_flipped_rim_byte_is_rejected() {
    let Some(xml) = coffre_testkit::read(&format!("{SDK}/{VBIOS_RIM}")) else { return };
    let root = rim_root();
    let mut xml = xml;
    let mut accepted = Vec::new();
    // Every byte of the signature element (the part not covered by the document digest), and a
    // sample of the signed body to keep the run short.
    let signature_at = xml.windows(13).position(|w| w == b"<ds:Signature").unwrap();
    for i in (0..xml.len()).filter(|&i| i >= signature_at || i % 7 == 0) {
        xml[i] ^= 0x01;
        if rim::verify(&xml, &root, at(AT)).1.is_some() {
            accepted.push(i);
        }
        xml[i] ^= 0x01;
    }
    assert!(accepted.is_empty(), "flips accepted at {accepted:?}");
    assert!(rim::verify(&xml, &root, at(AT)).1.is_some());
}

/// roots/nvidia/: the roots pinned in the crate are NVIDIA's, byte for byte, as the shared copies
/// (and Trustee's copy of the device root) hold them.
#[test]
fn pinned_nvidia_roots_are_the_shared_ones() {
    let pinned = |f: &str| std::fs::read(format!("{}/roots/nvidia/{f}", env!("CARGO_MANIFEST_DIR"))).unwrap();
    let shared = |rel: &str| {
        coffre_testkit::read(rel)
            .map(|pem| coffre_attestation::x509::certificates_from_pem_or_der(&pem).unwrap().remove(0))
    };
    let cases = [
        ("device_identity_ca.der", "roots/nvidia/nvidia_device_identity_ca.pem"),
        ("device_identity_ca.der", "vectors/trustee-evidence/nvidia/nvidia_device_root.pem"),
        ("rim_root_ca.der", "roots/nvidia/nvidia_rim_root_ca.pem"),
    ];
    for (ours, theirs) in cases {
        let Some(theirs_der) = shared(theirs) else { return };
        assert_eq!(pinned(ours), theirs_der, "{ours} vs {theirs}");
    }
    // Every valid device chain ends in the pinned root itself.
    let Some(chain) = coffre_testkit::read(&format!("{SDK}/sample_attestation_data/blackwellCertChain.txt")) else {
        return;
    };
    let ders = coffre_attestation::x509::certificates_from_pem_or_der(&chain).unwrap();
    assert_eq!(ders.last().unwrap(), &pinned("device_identity_ca.der"));
}

#[test]
fn the_same_kind_of_rim_twice_is_refused_once() {
    let Some(gpus) = sample_h100() else { return };
    let Some(rim) = coffre_testkit::read(&format!("{SDK}/{VBIOS_RIM}")) else { return };
    let v = verify(&gpus[0], None, &[&rim, &rim]);
    let detail = &v.checks.iter().find(|c| c.name == "rim_measurements").unwrap().detail;
    assert_eq!(detail, "more than one vbios RIM was given");
    assert!(!v.is_verified());
}
