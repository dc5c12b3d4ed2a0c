//! Evidence as Confidential Containers' attestation agent hands it out: the `sev` crate's serde
//! form of an SNP report (what the agent serialises) turns back into exactly the bytes the
//! hardware signed, for every shared real report and simulated reports of every version.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use coffre_attestation::UnixTime;
use coffre_attestation::coco::{nvidia_from_aa, snp_from_aa, snp_report_from_sev_json, tdx_from_aa};
use coffre_attestation::collect::CertKind;
use coffre_attestation::simulated::{SimulatedPlatform, SimulatedReport, SimulatedTee};
use coffre_attestation::snp::SnpEvidence;
use sev::parser::ByteParser;

/// The JSON the attestation agent would send for `report` (it serialises the `sev` crate's
/// `AttestationReport` with serde).
fn as_agent_json(report: &[u8]) -> serde_json::Value {
    let parsed = sev::firmware::guest::AttestationReport::from_bytes(report).unwrap();
    serde_json::to_value(parsed).unwrap()
}

#[test]
fn every_report_survives_the_agents_json_byte_for_byte() {
    let shared = [
        "sev-snp/virtee-sev/report_milan.hex",
        "sev-snp/go-sev-guest/attestation.bin",
        "vectors/trustee-evidence/snp/test-report.bin",
        "vectors/trustee-evidence/snp/test-vlek-report.bin",
        "sev-snp/trustee/az-snp-vtpm/extracted/hcl-report.snp-report.bin",
        "sev-snp/trustee/az-snp-vtpm/extracted/evidence-genoa.snp-report.bin",
        "sev-snp/trustee/az-snp-vtpm/extracted/evidence-v0.snp-report.bin",
        "sev-snp/trustee/az-snp-vtpm/extracted/evidence-v1.snp-report.bin",
        "sev-snp/trustee/az-snp-vtpm/extracted/evidence-v2.snp-report.bin",
    ];
    let mut reports: Vec<(String, Vec<u8>)> = Vec::new();
    for path in shared {
        // Without the shared data (outside CI), the simulated reports below are still checked.
        let Some(bytes) = coffre_testkit::read(path) else { continue };
        reports.push((path.into(), SnpEvidence::from_report_bytes(&bytes).unwrap().report.clone()));
    }
    for (platform, name) in [(SimulatedPlatform::default(), "Milan"), (SimulatedPlatform::turin(), "Turin")] {
        let tee = SimulatedTee::generate(platform).unwrap();
        for version in 2..=5u32 {
            let req = SimulatedReport { version, platform_info: 0x25, ..SimulatedReport::default() };
            reports.push((format!("simulated {name} v{version}"), tee.report(&req).unwrap()));
        }
    }
    for (name, bytes) in &reports {
        let rebuilt = snp_report_from_sev_json(&as_agent_json(bytes)).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(hex(&rebuilt), hex(bytes), "{name}: the rebuilt report differs");
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn the_agents_snp_evidence_verifies_and_a_field_changed_in_the_json_breaks_the_signature() {
    let tee = SimulatedTee::generate(SimulatedPlatform::turin()).unwrap();
    let mut report_data = [0u8; 64];
    report_data[..5].copy_from_slice(b"bound");
    let report = tee.report(&SimulatedReport { report_data, ..SimulatedReport::default() }).unwrap();
    let vcek: Vec<u8> = tee.vcek_der().to_vec();
    let json = serde_json::json!({
        "attestation_report": as_agent_json(&report),
        "cert_chain": [{"cert_type": "VCEK", "data": vcek}, {"cert_type": "Empty", "data": []}],
    });
    let collected = snp_from_aa(json.to_string().as_bytes()).unwrap();
    assert_eq!(collected.report, report);
    assert_eq!(collected.certificates.len(), 1);
    assert_eq!(collected.certificates[0].kind, CertKind::Vcek);
    let now = UnixTime::parse_rfc3339("2026-06-01T00:00:00Z").unwrap();
    let verify = |bytes: &[u8]| {
        let ev = SnpEvidence::from_report_bytes(bytes).unwrap().with_vek(tee.vcek_der()).unwrap();
        tee.dangerous_verifier().unwrap().verify(&ev, now)
    };
    assert!(verify(&collected.report).is_verified());
    assert_eq!(&collected.report[0x50..0x55], b"bound");

    // The JSON claims another measurement: the bytes differ, the signature no longer verifies.
    let mut forged = json.clone();
    forged["attestation_report"]["measurement"][0] = serde_json::json!(0xAA);
    let collected = snp_from_aa(forged.to_string().as_bytes()).unwrap();
    assert!(!verify(&collected.report).is_verified());

    // A member nobody knows is refused, not dropped.
    let mut extra = json.clone();
    extra["attestation_report"]["new_field"] = serde_json::json!(1);
    assert!(snp_from_aa(extra.to_string().as_bytes()).unwrap_err().contains("new_field"));
    let mut bad = json;
    bad["attestation_report"]["report_data"] = serde_json::json!([1, 2, 3]);
    assert!(snp_from_aa(bad.to_string().as_bytes()).unwrap_err().contains("report_data"));
}

#[test]
fn tdx_and_nvidia_evidence_from_the_agent() {
    let (quote, log) = tdx_from_aa(br#"{"cc_eventlog":null,"quote":"AQIDBA=="}"#).unwrap();
    assert_eq!((quote, log), (vec![1, 2, 3, 4], None));
    assert!(tdx_from_aa(br#"{"quote":"AQIDBA==","extra":1}"#).is_err());

    // Real Hopper evidence (NVIDIA's SDK sample list) in each form the agent may wrap it in.
    let Some(list) = coffre_testkit::read("nvidia-gpu/nv-attestation-sdk/serialized_evidence/multi_gpu_hopper.json")
    else {
        return;
    };
    let list: serde_json::Value = serde_json::from_slice(&list).unwrap();
    let expected = coffre_attestation::nvidia::GpuEvidence::list_from_json(list.to_string().as_bytes()).unwrap();
    let doc = serde_json::json!({ "device_evidence_list": list });
    for form in [doc.clone(), serde_json::json!({ "nvidia": doc.clone() }), serde_json::Value::String(doc.to_string())]
    {
        assert_eq!(nvidia_from_aa(form.to_string().as_bytes()).unwrap(), expected);
    }
    assert_eq!(expected.len(), 4);
    assert!(nvidia_from_aa(br#"{"device_evidence_list":[],"x":1}"#).unwrap_err().contains("unknown member"));
}

/// The FMSPC a vault looks Intel's collateral up by, read from the PCK certificate inside a real
/// quote, equals the one in the collateral Intel published for it.
#[test]
fn the_fmspc_of_a_real_quote_names_its_collateral() {
    let (Some(quote), Some(collateral)) = (
        coffre_testkit::read("tdx/dcap-qvl/tdx_quote"),
        coffre_testkit::read("tdx/dcap-qvl/tdx_quote_collateral.json"),
    ) else {
        return;
    };
    let quote = coffre_attestation::tdx::quote::from_bytes(&quote);
    let fmspc = coffre_attestation::tdx::quote::pck_fmspc(&quote).unwrap();
    let doc: serde_json::Value = serde_json::from_slice(&collateral).unwrap();
    let tcb: serde_json::Value = serde_json::from_str(doc["tcb_info"].as_str().unwrap()).unwrap();
    assert_eq!(fmspc, tcb["fmspc"].as_str().unwrap());
    assert!(coffre_attestation::tdx::quote::pck_fmspc(&quote[..quote.len() / 2]).is_err());
}
