//! Every SEV-SNP sample in the shared test data, checked against exactly the verdict and claims
//! its PROVENANCE.md states, at the pinned time 2025-06-01T00:00:00Z.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use coffre_attestation::snp::{Product, SigningKey, SnpEvidence, SnpVerification, SnpVerifier, Tcb};
use coffre_attestation::{Platform, UnixTime};

fn at(t: &str) -> UnixTime {
    UnixTime::parse_rfc3339(t).unwrap()
}

fn pinned() -> UnixTime {
    at("2025-06-01T00:00:00Z")
}

fn read(rel: &str) -> Option<Vec<u8>> {
    coffre_testkit::read(rel)
}

/// Builds evidence from a report file (any accepted form), an optional VEK file and chain file.
fn evidence(report: &str, vek: Option<&str>, chain: Option<&str>) -> Option<SnpEvidence> {
    let mut ev = SnpEvidence::from_report_bytes(&read(report)?).unwrap();
    if let Some(v) = vek {
        ev = ev.with_vek(&read(v)?).unwrap();
    }
    if let Some(c) = chain {
        ev = ev.with_chain(&read(c)?).unwrap();
    }
    Some(ev)
}

fn verify(ev: &SnpEvidence, t: UnixTime) -> SnpVerification {
    SnpVerifier::new().verify(ev, t)
}

struct Expect {
    product: Product,
    version: u32,
    firmware: (u8, u8, u8),
    policy: u64,
    vmpl: u32,
    key: SigningKey,
    reported: (u8, u8, u8, u8),
    cpuid: Option<(u8, u8, u8)>,
    csp: Option<&'static str>,
}

fn assert_valid(name: &str, v: &SnpVerification, e: &Expect) {
    assert!(v.is_verified(), "{name} must verify: {:#?}", v.errors());
    let c = v.claims.as_ref().unwrap();
    assert_eq!(c.platform, Platform::Snp, "{name}");
    assert_eq!(c.product, Some(e.product), "{name}");
    assert_eq!(c.version, e.version, "{name}");
    assert_eq!((c.current_firmware.major, c.current_firmware.minor, c.current_firmware.build), e.firmware, "{name}");
    assert_eq!(c.policy.raw, e.policy, "{name}");
    assert_eq!(c.vmpl, e.vmpl, "{name}");
    assert_eq!(c.signing_key, e.key, "{name}");
    let (bootloader, tee, snp, microcode) = e.reported;
    assert_eq!(c.reported_tcb, Tcb { bootloader, tee, snp, microcode, fmc: None }, "{name}");
    assert_eq!(c.cpuid.map(|x| (x.family, x.model, x.stepping)), e.cpuid, "{name}");
    assert_eq!(c.vlek_csp_id.as_deref(), e.csp, "{name}");
}

const MILAN_152: Expect = Expect {
    product: Product::Milan,
    version: 2,
    firmware: (1, 52, 4),
    policy: 0x30000,
    vmpl: 0,
    key: SigningKey::Vcek,
    reported: (3, 0, 8, 115),
    cpuid: None,
    csp: None,
};

#[test]
fn virtee_milan_report_hex_is_valid() {
    let Some(ev) = evidence("sev-snp/virtee-sev/report_milan.hex", Some("sev-snp/virtee-sev/vcek_milan.der"), None)
    else {
        return;
    };
    assert_valid("virtee milan", &verify(&ev, pinned()), &MILAN_152);
    // The same with the host-supplied chain (checked against the pinned ARK).
    let Some(ev) = evidence(
        "sev-snp/virtee-sev/report_milan.hex",
        Some("sev-snp/virtee-sev/vcek_milan.der"),
        Some("sev-snp/virtee-sev/cert_chain_milan.pem"),
    ) else {
        return;
    };
    assert_valid("virtee milan + chain", &verify(&ev, pinned()), &MILAN_152);
    // Upstream's negatives: byte 21 of the report, byte 40 of the VCEK.
    let mut bad = ev.clone();
    bad.report[21] ^= 1;
    assert!(!verify(&bad, pinned()).is_verified());
    let mut bad = ev.clone();
    bad.vek.as_mut().unwrap()[40] ^= 1;
    assert!(!verify(&bad, pinned()).is_verified());
}

#[test]
fn virtee_turin_vcek_chain_is_valid_with_fmc_and_8_byte_hwid() {
    let (Some(vcek), Some(chain)) =
        (read("sev-snp/virtee-sev/vcek_turin.der"), read("sev-snp/virtee-sev/cert_chain_turin.pem"))
    else {
        return;
    };
    let chain = coffre_attestation::x509::certificates_from_pem_or_der(&chain).unwrap();
    let verifier = SnpVerifier::new();
    for host_chain in [chain.clone(), Vec::new()] {
        let (checks, ext) = verifier.verify_endorsement_key(&vcek, &host_chain, pinned());
        assert!(checks.iter().all(|c| c.passed), "{checks:#?}");
        assert!(checks.iter().any(|c| c.name == "ark" && c.detail.contains("ARK-Turin")));
        let ext = ext.unwrap();
        assert_eq!(ext.product(), Some(Product::Turin));
        assert_eq!(ext.tcb, Some(Tcb { bootloader: 0, tee: 0, snp: 0, microcode: 9, fmc: Some(0) }));
        assert_eq!(ext.hwid.as_ref().map(Vec::len), Some(8));
        assert!(ext.issues.is_empty());
    }
}

#[test]
fn go_sev_guest_debug_report_is_cryptographically_valid() {
    let Some(ev) = evidence(
        "sev-snp/go-sev-guest/attestation.bin",
        Some("sev-snp/go-sev-guest/vcek.der"),
        Some("sev-snp/go-sev-guest/ask_ark_milan.pem"),
    ) else {
        return;
    };
    let v = verify(&ev, pinned());
    assert_valid(
        "go-sev-guest",
        &v,
        &Expect { firmware: (1, 49, 3), policy: 0xb0000, reported: (2, 0, 5, 68), ..MILAN_152 },
    );
    let c = v.claims.unwrap();
    assert!(c.policy.debug, "policy 0xb0000 allows debugging: a policy forbidding debug must reject it");
    let mut rd = [0u8; 64];
    rd[..5].copy_from_slice(&[1, 2, 3, 4, 5]);
    assert_eq!(c.report_data, rd);
}

#[test]
fn trustee_test_report_is_valid_and_upstream_flips_fail() {
    let Some(ev) = evidence(
        "vectors/trustee-evidence/snp/test-report.bin",
        Some("vectors/trustee-evidence/snp/test-vcek.der"),
        None,
    ) else {
        return;
    };
    let v = verify(&ev, pinned());
    assert_valid("trustee test-report", &v, &Expect { policy: 0x3001f, ..MILAN_152 });
    assert_eq!(v.claims.unwrap().current_tcb.microcode, 206);
    let failed = |ev: &SnpEvidence| -> Vec<String> {
        verify(ev, pinned()).checks.into_iter().filter(|c| !c.passed).map(|c| c.name).collect()
    };
    let mut sig = ev.clone();
    sig.report[42] ^= 1;
    assert_eq!(failed(&sig), ["report_signature"]);
    let mut tcb = ev.clone();
    tcb.report[384] ^= 1;
    assert_eq!(failed(&tcb), ["tcb", "report_signature"]);
    let mut vcek = ev.clone();
    vcek.vek.as_mut().unwrap()[42] ^= 1;
    assert!(failed(&vcek).contains(&"vcek".to_owned()));
}

#[test]
fn trustee_modified_vceks_parse_both_hwid_forms_but_fail() {
    for vek in ["test-vcek-invalid-legacy.der", "test-vcek-invalid-new.der"] {
        let Some(ev) = evidence(
            "vectors/trustee-evidence/snp/test-report.bin",
            Some(&format!("vectors/trustee-evidence/snp/{vek}")),
            None,
        ) else {
            return;
        };
        let v = verify(&ev, pinned());
        assert!(!v.is_verified(), "{vek}");
        let failed: Vec<&str> = v.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect();
        for must in ["vcek", "tcb", "chip_id", "report_signature"] {
            assert!(failed.contains(&must), "{vek}: {must} must fail, failed: {failed:?}");
        }
        assert!(!failed.contains(&"vcek_extensions"), "{vek}: the hwID encoding must parse");
        let (_, ext) = SnpVerifier::new().verify_endorsement_key(ev.vek.as_ref().unwrap(), &[], pinned());
        let hwid = ext.unwrap().hwid.unwrap();
        assert_eq!(hwid, (0u8..64).collect::<Vec<_>>(), "{vek}: the pattern 00 01 02 …");
    }
}

#[test]
fn trustee_vlek_report_is_valid_only_under_the_asvk() {
    let Some(ev) = evidence(
        "vectors/trustee-evidence/snp/test-vlek-report.bin",
        Some("vectors/trustee-evidence/snp/test-vlek.der"),
        None,
    ) else {
        return;
    };
    assert_valid(
        "vlek",
        &verify(&ev, pinned()),
        &Expect {
            version: 3,
            firmware: (1, 55, 29),
            vmpl: 1,
            key: SigningKey::Vlek,
            reported: (4, 0, 24, 217),
            cpuid: Some((0x19, 0x01, 0x01)),
            csp: Some("cc-us-east-2.amazonaws.com"),
            ..MILAN_152
        },
    );
    // Checked under the ASK, or under Genoa's ASVK, it must fail.
    for chain in ["roots/amd/milan/ask.pem", "roots/amd/genoa/asvk_ark_vlek_chain.pem"] {
        let Some(c) = read(chain) else { return };
        let v = verify(&ev.clone().with_chain(&c).unwrap(), pinned());
        assert!(!v.is_verified(), "{chain}");
        assert!(v.checks.iter().any(|c| c.name == "vlek" && !c.passed), "{chain}: {:#?}", v.errors());
    }
    // The VLEK is valid only 2024-12-10 .. 2025-12-10.
    for (t, word) in [("2024-12-01T00:00:00Z", "not yet valid"), ("2026-01-01T00:00:00Z", "expired")] {
        let v = verify(&ev, at(t));
        let check = v.checks.iter().find(|c| c.name == "vlek_validity").unwrap();
        assert!(!check.passed && check.detail.contains(word), "{t}: {check:?}");
    }
}

#[test]
fn azure_hcl_report_binds_runtime_data() {
    let Some(ev) =
        evidence("sev-snp/trustee/az-snp-vtpm/hcl-report.bin", Some("sev-snp/trustee/az-snp-vtpm/vcek.pem"), None)
    else {
        return;
    };
    assert_eq!(ev.chain.len(), 2, "vcek.pem carries VCEK, ASK and ARK: the latter two are the host's chain");
    let v = verify(&ev, pinned());
    assert_valid("hcl", &v, &Expect { policy: 0x3001f, ..MILAN_152 });
    assert!(v.checks.iter().any(|c| c.name == "azure_runtime_data" && c.passed));
    // Tampering with the runtime data breaks the binding (and only that).
    let mut bad = ev.clone();
    bad.hcl.as_mut().unwrap().runtime_data[10] ^= 1;
    let failed: Vec<String> = verify(&bad, pinned()).errors();
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0].starts_with("azure_runtime_data"));
    // The derived slice is the same report, without the Azure binding.
    let Some(raw) = evidence(
        "sev-snp/trustee/az-snp-vtpm/extracted/hcl-report.snp-report.bin",
        Some("sev-snp/trustee/az-snp-vtpm/vcek.pem"),
        None,
    ) else {
        return;
    };
    assert_eq!(raw.report, ev.report);
    assert_valid("hcl slice", &verify(&raw, pinned()), &Expect { policy: 0x3001f, ..MILAN_152 });
}

#[test]
fn azure_json_evidence_genoa_and_milan() {
    let genoa = Expect {
        product: Product::Genoa,
        version: 3,
        firmware: (1, 55, 40),
        policy: 0x3001f,
        reported: (10, 0, 23, 84),
        cpuid: Some((0x19, 0x11, 0x01)),
        ..MILAN_152
    };
    let milan_v3 = Expect {
        version: 3,
        firmware: (1, 55, 29),
        policy: 0x3001f,
        reported: (4, 0, 24, 219),
        cpuid: Some((0x19, 0x01, 0x01)),
        ..MILAN_152
    };
    for (file, expect) in
        [("evidence-genoa", &genoa), ("evidence-v0", &milan_v3), ("evidence-v1", &milan_v3), ("evidence-v2", &milan_v3)]
    {
        let Some(ev) = evidence(&format!("sev-snp/trustee/az-snp-vtpm/{file}.json"), None, None) else { return };
        assert!(ev.vek.is_some(), "{file}: the JSON carries the VCEK");
        let v = verify(&ev, pinned());
        assert_valid(file, &v, expect);
        assert!(v.checks.iter().any(|c| c.name == "azure_runtime_data" && c.passed), "{file}");
        // The derived slices verify the same way.
        let Some(slice) = evidence(
            &format!("sev-snp/trustee/az-snp-vtpm/extracted/{file}.snp-report.bin"),
            Some(&format!("sev-snp/trustee/az-snp-vtpm/extracted/{file}.vcek.der")),
            None,
        ) else {
            return;
        };
        assert_eq!(slice.report, ev.report, "{file}");
        assert_valid(file, &verify(&slice, pinned()), expect);
    }
    let Some(ev) = evidence(
        "sev-snp/trustee/az-snp-vtpm/evidence-genoa.json",
        Some("sev-snp/trustee/az-snp-vtpm/vcek-genoa.pem"),
        None,
    ) else {
        return;
    };
    assert_valid("genoa + vcek-genoa.pem", &verify(&ev, pinned()), &genoa);
}

#[test]
fn claims_json_shape() {
    let Some(ev) = evidence(
        "vectors/trustee-evidence/snp/test-vlek-report.bin",
        Some("vectors/trustee-evidence/snp/test-vlek.der"),
        None,
    ) else {
        return;
    };
    let v = verify(&ev, pinned());
    let json = serde_json::to_value(v.claims.as_ref().unwrap()).unwrap();
    assert_eq!(json["platform"], "snp");
    assert_eq!(json["product"], "milan");
    assert_eq!(json["signing_key"], "vlek");
    assert_eq!(json["vlek_csp_id"], "cc-us-east-2.amazonaws.com");
    assert_eq!(
        json["reported_tcb"],
        serde_json::json!({"bootloader": 4, "tee": 0, "snp": 24, "microcode": 217, "fmc": null})
    );
    assert_eq!(json["policy"]["debug"], false);
    assert_eq!(json["policy"]["migrate_ma"], false);
    let measurement = json["measurement"].as_str().unwrap();
    assert_eq!(measurement.len(), 96);
    assert!(measurement.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
    assert_eq!(json["report_data"].as_str().unwrap().len(), 128);
    assert_eq!(json["chip_id"].as_str().unwrap().len(), 128);
}

/// roots/amd/: the certificates pinned in the crate are AMD's, byte for byte, as both shared copies
/// have them; each ARK is self-signed and signed its ASK and ASVK.
#[test]
fn pinned_roots_are_amds_and_chain() {
    use coffre_attestation::x509::{Certificate, certificates_from_pem_or_der};
    let pinned = |p: &str, role: &str| {
        std::fs::read(format!("{}/roots/amd/{p}_{role}.der", env!("CARGO_MANIFEST_DIR"))).unwrap()
    };
    for product in ["milan", "genoa", "turin"] {
        let (Some(ark), Some(ask), Some(vlek_chain), Some(trustee)) = (
            read(&format!("roots/amd/{product}/ark.pem")),
            read(&format!("roots/amd/{product}/ask.pem")),
            read(&format!("roots/amd/{product}/asvk_ark_vlek_chain.pem")),
            read(&format!("vectors/trustee-evidence/amd-vendor-certs/{product}_ask_ark_asvk.pem")),
        ) else {
            return;
        };
        let one = |pem: &[u8]| certificates_from_pem_or_der(pem).unwrap().remove(0);
        let vlek_chain = certificates_from_pem_or_der(&vlek_chain).unwrap();
        let trustee = certificates_from_pem_or_der(&trustee).unwrap();
        assert_eq!(one(&ark), pinned(product, "ark"), "{product} ARK");
        assert_eq!(one(&ask), pinned(product, "ask"), "{product} ASK");
        assert_eq!(vlek_chain[0], pinned(product, "asvk"), "{product} ASVK");
        assert_eq!(vlek_chain[1], pinned(product, "ark"), "{product} ARK in the VLEK chain");
        assert_eq!(
            trustee,
            [pinned(product, "ask"), pinned(product, "ark"), pinned(product, "asvk")],
            "{product} trustee copy"
        );
        let (ark, ask, asvk) = (
            Certificate::from_der(&pinned(product, "ark")).unwrap(),
            Certificate::from_der(&pinned(product, "ask")).unwrap(),
            Certificate::from_der(&pinned(product, "asvk")).unwrap(),
        );
        assert!(
            ark.verify_signed_by(&ark).is_ok()
                && ask.verify_signed_by(&ark).is_ok()
                && asvk.verify_signed_by(&ark).is_ok()
        );
        assert!(ark.subject_cn.ends_with(&product[1..]), "{}", ark.subject_cn);
    }
    // And the verifier's own copy parsed and checked them.
    assert_eq!(coffre_attestation::snp::roots::amd().as_ref().map(Vec::len), Ok(3));
}
