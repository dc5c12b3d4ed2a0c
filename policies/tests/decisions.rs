//! The decision table: bundled policy × evidence → decision, with the exact set of failed checks.
//! Real evidence comes from the shared test data (verified at its pinned time); simulated
//! evidence has chosen claims.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use std::collections::BTreeSet;

use coffre_attestation::UnixTime;
use coffre_attestation::nvidia::input::{ReportFile, read_report_file};
use coffre_attestation::nvidia::{GpuEvidence, NvidiaVerifier};
use coffre_attestation::simulated::SimulatedReport;
use coffre_attestation::snp::{SnpEvidence, SnpVerifier};
use coffre_attestation::tdx::{TdxCollateral, TdxVerifier};
use coffre_policies::{Appraisal, Decision, Mode, Request, evaluate};
use common::{activate, at, bundled, request, simulated};

const PRODUCTION: [&str; 3] = ["bank-strict", "tdx-h100", "azure-cvm-h100"];

fn failed(d: &Decision) -> BTreeSet<String> {
    d.failed().iter().map(|c| c.name.clone()).collect()
}

fn set(names: &[&str]) -> BTreeSet<String> {
    names.iter().map(|s| (*s).to_owned()).collect()
}

fn decide(policy: &str, evidence: &Appraisal<'_>, req: &Request, now: UnixTime, mode: Mode) -> Decision {
    evaluate(&[activate(bundled(policy))], evidence, req, now, mode)
}

fn all_labels() -> Request {
    request(&["customer-pii", "tdx-approved", "azure-approved"])
}

#[test]
fn development_allows_simulated_evidence_only_in_development_mode() {
    let v = simulated(&SimulatedReport::default(), 1);
    let ev = Appraisal::from(&v);
    let now = at("2026-06-01T00:00:00Z");
    let Decision::Allow(allow) = decide("development", &ev, &request(&[]), now, Mode::Development) else {
        panic!("development policy must allow simulated evidence in development mode");
    };
    assert!(allow.is_simulated(), "the decision is marked simulated");
    assert_eq!(allow.policies()[0].id, "development");
    let d = decide("development", &ev, &request(&[]), now, Mode::Production);
    assert_eq!(failed(&d), set(&["platform.development_mode"]));
}

#[test]
fn every_production_policy_denies_simulated_evidence_in_either_mode() {
    let v = simulated(&SimulatedReport::default(), 1);
    let ev = Appraisal::from(&v);
    let now = at("2026-06-01T00:00:00Z");
    for policy in PRODUCTION {
        for mode in [Mode::Development, Mode::Production] {
            let d = decide(policy, &ev, &all_labels(), now, mode);
            let names = failed(&d);
            assert!(!d.is_allowed(), "{policy} {mode:?}");
            assert!(names.contains("platform.kind"), "{policy} {mode:?}: {names:?}");
            assert!(names.contains("gpu[0].platform"), "{policy} {mode:?}: {names:?}");
            assert_eq!(names.contains("platform.development_mode"), mode == Mode::Production, "{policy}: {names:?}");
        }
    }
    // Everything bank-strict finds wrong with the simulated machine, exactly.
    let d = decide("bank-strict", &ev, &all_labels(), now, Mode::Development);
    assert_eq!(
        failed(&d),
        set(&[
            "platform.kind",
            "platform.cpu_product",
            "snp.crl",
            "snp.min_tcb",
            "gpu[0].platform",
            "gpu[0].cc_mode",
            "gpu[0].dev_tools",
            "gpu[0].rim_match",
        ]),
        "{:#?}",
        d.failed()
    );
}

#[test]
fn development_denies_a_debuggable_simulated_guest() {
    let debug = SimulatedReport { policy: 0x3_0000 | 1 << 19, ..SimulatedReport::default() };
    let v = simulated(&debug, 0);
    let d = decide("development", &Appraisal::from(&v), &request(&[]), at("2026-06-01T00:00:00Z"), Mode::Development);
    assert_eq!(failed(&d), set(&["snp.policy.debug"]));
    let c = &d.failed()[0];
    assert_eq!((c.expected.as_str(), c.policy.as_str()), ("clear", "development@1"));
    assert!(c.actual.starts_with("set (guest policy 0xb0000)"), "{}", c.actual);
}

#[test]
fn no_applicable_policy_denies() {
    let v = simulated(&SimulatedReport::default(), 0);
    let ev = Appraisal::from(&v);
    let now = at("2026-06-01T00:00:00Z");
    let other_tenant = Request { tenant: "other-bank".into(), ..request(&[]) };
    let d = decide("development", &ev, &other_tenant, now, Mode::Development);
    assert_eq!(failed(&d), set(&["policy.applicable"]));
    assert!(d.failed()[0].expected.contains("tenant other-bank"));
    // bank-strict covers only its labels: an unlabelled dataset is not covered by it.
    let d = decide("bank-strict", &ev, &request(&["public"]), now, Mode::Development);
    assert_eq!(failed(&d), set(&["policy.applicable"]));
    // Nothing at all.
    let d = evaluate(&[], &ev, &request(&[]), now, Mode::Development);
    assert_eq!(failed(&d), set(&["policy.applicable"]));
}

#[test]
fn every_applicable_policy_must_allow() {
    let v = simulated(&SimulatedReport::default(), 1);
    let ev = Appraisal::from(&v);
    let now = at("2026-06-01T00:00:00Z");
    let both = [activate(bundled("development")), activate(bundled("bank-strict"))];
    let d = evaluate(&both, &ev, &request(&["customer-pii"]), now, Mode::Development);
    assert!(!d.is_allowed());
    assert!(d.failed().iter().all(|c| c.policy == "bank-strict@1"), "{:#?}", d.failed());
    // Without the label only the development policy applies, and allows.
    assert!(evaluate(&both, &ev, &request(&[]), now, Mode::Development).is_allowed());
}

fn genoa_azure() -> Option<coffre_attestation::snp::VerifiedSnp> {
    let bytes = coffre_testkit::read("sev-snp/trustee/az-snp-vtpm/evidence-genoa.json")?;
    let ev = SnpEvidence::from_report_bytes(&bytes).unwrap();
    Some(SnpVerifier::new().verify(&ev, at("2025-06-01T00:00:00Z")).into_verified().unwrap())
}

#[test]
fn real_azure_genoa_evidence_meets_the_azure_cpu_rules_but_has_no_gpu() {
    let Some(v) = genoa_azure() else { return };
    let ev = Appraisal::from(&v);
    let now = at("2025-06-01T00:00:00Z");
    let d = decide("azure-cvm-h100", &ev, &all_labels(), now, Mode::Production);
    assert_eq!(failed(&d), set(&["gpu.count"]), "{:#?}", d.failed());
    assert!(
        d.checks()
            .iter()
            .any(|c| c.name == "snp.min_tcb.microcode" && c.passed && c.actual == "reported 84, committed 84")
    );
    // bank-strict also wants a checked CRL and at least one GPU.
    let d = decide("bank-strict", &ev, &all_labels(), now, Mode::Production);
    assert_eq!(failed(&d), set(&["snp.crl", "gpu.min_count"]), "{:#?}", d.failed());
    // tdx-h100 wants TDX.
    let d = decide("tdx-h100", &ev, &all_labels(), now, Mode::Production);
    assert_eq!(failed(&d), set(&["platform.kind", "snp", "gpu.min_count"]), "{:#?}", d.failed());
}

#[test]
fn real_milan_debug_evidence_is_denied_by_bank_strict_for_every_reason() {
    let (Some(report), Some(vcek), Some(chain)) = (
        coffre_testkit::read("sev-snp/go-sev-guest/attestation.bin"),
        coffre_testkit::read("sev-snp/go-sev-guest/vcek.der"),
        coffre_testkit::read("sev-snp/go-sev-guest/ask_ark_milan.pem"),
    ) else {
        return;
    };
    let ev = SnpEvidence::from_report_bytes(&report).unwrap().with_vek(&vcek).unwrap().with_chain(&chain).unwrap();
    let v = SnpVerifier::new().verify(&ev, at("2025-06-01T00:00:00Z")).into_verified().unwrap();
    let d = decide("bank-strict", &Appraisal::from(&v), &all_labels(), at("2025-06-01T00:00:00Z"), Mode::Production);
    assert_eq!(
        failed(&d),
        set(&["platform.cpu_product", "snp.crl", "snp.policy.debug", "snp.min_tcb", "gpu.min_count"]),
        "{:#?}",
        d.failed()
    );
}

#[test]
fn real_up_to_date_tdx_quote_meets_tdx_rules_but_has_no_gpu() {
    let (Some(q), Some(c)) = (
        coffre_testkit::read("tdx/dcap-qvl/tdx_quote"),
        coffre_testkit::read("tdx/dcap-qvl/tdx_quote_collateral.json"),
    ) else {
        return;
    };
    let now = at("2025-06-19T11:32:27Z");
    let v = TdxVerifier::new().verify(&q, &TdxCollateral::from_dcap_json(&c).unwrap(), now).into_verified().unwrap();
    let ev = Appraisal::from(&v);
    let d = decide("tdx-h100", &ev, &all_labels(), now, Mode::Production);
    assert_eq!(failed(&d), set(&["gpu.min_count"]), "{:#?}", d.failed());
    let d = decide("bank-strict", &ev, &all_labels(), now, Mode::Production);
    assert_eq!(failed(&d), set(&["platform.kind", "tdx", "gpu.min_count"]), "{:#?}", d.failed());
}

#[test]
fn real_h100_evidence_alone_is_never_enough() {
    let sdk = "nvidia-gpu/nv-attestation-sdk/sample_attestation_data";
    let (Some(report), Some(chain)) = (
        coffre_testkit::read(&format!("{sdk}/hopperAttestationReport.txt")),
        coffre_testkit::read(&format!("{sdk}/hopperCertChain.txt")),
    ) else {
        return;
    };
    let ReportFile::Single(r) = read_report_file(&report).unwrap() else { panic!("one report") };
    let gpu = GpuEvidence::new(r, &chain).unwrap();
    let now = at("2025-06-01T00:00:00Z");
    let v = vec![NvidiaVerifier::new().verify(&gpu, None, &[], now).into_verified().unwrap()];
    let d = decide("tdx-h100", &Appraisal::gpus_only(&v), &all_labels(), now, Mode::Production);
    // No CPU evidence, and without RIMs the GPU's modes cannot be established.
    assert_eq!(
        failed(&d),
        set(&["platform.kind", "gpu[0].cc_mode", "gpu[0].dev_tools", "gpu[0].rim_match"]),
        "{:#?}",
        d.failed()
    );
    assert!(d.checks().iter().any(|c| c.name == "gpu[0].arch" && c.passed));
}
