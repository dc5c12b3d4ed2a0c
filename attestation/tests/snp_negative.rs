//! Nothing tampered, mis-chained, out of time or simulated passes as genuine hardware, and each
//! failure says which check failed.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::sync::OnceLock;

use coffre_attestation::simulated::{SimulatedPlatform, SimulatedReport, SimulatedTee};
use coffre_attestation::snp::{SnpEvidence, SnpVerification, SnpVerifier};
use coffre_attestation::x509::Certificate;
use coffre_attestation::{Platform, UnixTime};

fn at(t: &str) -> UnixTime {
    UnixTime::parse_rfc3339(t).unwrap()
}

fn pinned() -> UnixTime {
    at("2025-06-01T00:00:00Z")
}

fn evidence(report: &str, vek: &str, chain: Option<&str>) -> Option<SnpEvidence> {
    let mut ev = SnpEvidence::from_report_bytes(&coffre_testkit::read(report)?)
        .unwrap()
        .with_vek(&coffre_testkit::read(vek)?)
        .unwrap();
    if let Some(c) = chain {
        ev = ev.with_chain(&coffre_testkit::read(c)?).unwrap();
    }
    Some(ev)
}

fn failed(v: &SnpVerification) -> Vec<&str> {
    v.checks.iter().filter(|c| !c.passed).map(|c| c.name.as_str()).collect()
}

/// One simulator per test binary (RSA-4096 key generation takes a moment).
fn tee() -> &'static SimulatedTee {
    static TEE: OnceLock<SimulatedTee> = OnceLock::new();
    TEE.get_or_init(|| SimulatedTee::generate(SimulatedPlatform::default()).unwrap())
}

fn simulated_evidence(req: &SimulatedReport) -> SnpEvidence {
    SnpEvidence::from_report_bytes(&tee().report(req).unwrap()).unwrap().with_vek(tee().vcek_der()).unwrap()
}

#[test]
fn every_byte_flip_of_every_valid_report_is_rejected() {
    let samples = [
        ("sev-snp/virtee-sev/report_milan.hex", "sev-snp/virtee-sev/vcek_milan.der"),
        ("vectors/trustee-evidence/snp/test-vlek-report.bin", "vectors/trustee-evidence/snp/test-vlek.der"),
        (
            "sev-snp/trustee/az-snp-vtpm/extracted/evidence-genoa.snp-report.bin",
            "sev-snp/trustee/az-snp-vtpm/extracted/evidence-genoa.vcek.der",
        ),
    ];
    let verifier = SnpVerifier::new();
    for (report, vek) in samples {
        let Some(ev) = evidence(report, vek, None) else { return };
        assert!(verifier.verify(&ev, pinned()).is_verified(), "{report}");
        for i in 0..ev.report.len() {
            for bit in [0x01u8, 0x80] {
                let mut bad = ev.clone();
                bad.report[i] ^= bit;
                let v = verifier.verify(&bad, pinned());
                assert!(!v.is_verified(), "{report}: flipping byte {i:#05x} ({bit:#04x}) was accepted");
            }
        }
    }
}

#[test]
fn every_byte_flip_of_every_certificate_is_rejected() {
    // The endorsement key, and the host-supplied ASK and ARK.
    let Some(ev) = evidence("sev-snp/trustee/az-snp-vtpm/hcl-report.bin", "sev-snp/trustee/az-snp-vtpm/vcek.pem", None)
    else {
        return;
    };
    let verifier = SnpVerifier::new();
    assert!(verifier.verify(&ev, pinned()).is_verified());
    let vek = ev.vek.clone().unwrap();
    for i in 0..vek.len() {
        let mut bad = ev.clone();
        bad.vek.as_mut().unwrap()[i] ^= 0x01;
        assert!(!verifier.verify(&bad, pinned()).is_verified(), "VCEK byte {i} flip accepted");
    }
    for c in 0..ev.chain.len() {
        for i in 0..ev.chain[c].len() {
            let mut bad = ev.clone();
            bad.chain[c][i] ^= 0x01;
            assert!(!verifier.verify(&bad, pinned()).is_verified(), "chain cert {c} byte {i} flip accepted");
        }
    }
    // And the VLEK.
    let Some(ev) = evidence(
        "vectors/trustee-evidence/snp/test-vlek-report.bin",
        "vectors/trustee-evidence/snp/test-vlek.der",
        None,
    ) else {
        return;
    };
    for i in 0..ev.vek.as_ref().unwrap().len() {
        let mut bad = ev.clone();
        bad.vek.as_mut().unwrap()[i] ^= 0x01;
        assert!(!verifier.verify(&bad, pinned()).is_verified(), "VLEK byte {i} flip accepted");
    }
}

#[test]
fn a_genoa_chain_for_a_milan_report_is_rejected() {
    let Some(ev) = evidence("sev-snp/virtee-sev/report_milan.hex", "sev-snp/virtee-sev/vcek_milan.der", None) else {
        return;
    };
    let (Some(ask), Some(ark)) =
        (coffre_testkit::read("roots/amd/genoa/ask.pem"), coffre_testkit::read("roots/amd/genoa/ark.pem"))
    else {
        return;
    };
    let v = SnpVerifier::new().verify(&ev.with_chain(&ask).unwrap().with_chain(&ark).unwrap(), pinned());
    assert!(failed(&v).contains(&"vcek"), "{:#?}", v.errors());
    let vcek = v.checks.iter().find(|c| c.name == "vcek" && !c.passed).unwrap();
    assert!(vcek.detail.contains("SEV-Milan") && vcek.detail.contains("SEV-Genoa"), "{}", vcek.detail);
}

#[test]
fn the_vlek_does_not_verify_under_an_ask() {
    let (Some(vlek), Some(ask)) = (
        coffre_testkit::read("vectors/trustee-evidence/snp/test-vlek.der"),
        coffre_testkit::read("roots/amd/milan/ask.pem"),
    ) else {
        return;
    };
    let vlek = Certificate::from_der(&vlek).unwrap();
    let ask = Certificate::from_der(&coffre_attestation::x509::certificates_from_pem_or_der(&ask).unwrap()[0]).unwrap();
    assert!(vlek.verify_signed_by(&ask).is_err());
}

#[test]
fn a_self_made_root_is_not_trusted() {
    // The simulator's chain is a well-formed, correctly signed chain to a root nobody pinned.
    let ev = simulated_evidence(&SimulatedReport::default())
        .with_chain(tee().ask_der())
        .unwrap()
        .with_chain(tee().ark_der())
        .unwrap();
    let v = SnpVerifier::new().verify(&ev, pinned());
    assert!(!v.is_verified());
    let ark = v.checks.iter().find(|c| c.name == "ark").unwrap();
    assert!(!ark.passed && ark.detail.contains("not one of the pinned AMD roots"), "{ark:?}");
    assert!(failed(&v).contains(&"ask"), "{:#?}", v.errors());
    // Without a supplied chain, nothing pinned issues the simulated VCEK.
    let v = SnpVerifier::new().verify(&simulated_evidence(&SimulatedReport::default()), pinned());
    assert!(failed(&v).contains(&"vcek"), "{:#?}", v.errors());
}

#[test]
fn not_yet_valid_and_expired_certificates_are_rejected() {
    let Some(ev) = evidence("sev-snp/virtee-sev/report_milan.hex", "sev-snp/virtee-sev/vcek_milan.der", None) else {
        return;
    };
    let verifier = SnpVerifier::new();
    // The VCEK was fetched 2023-04-03 and is valid until 2030-04-03.
    let early = verifier.verify(&ev, at("2023-01-01T00:00:00Z"));
    assert_eq!(failed(&early), ["vcek_validity"]);
    assert!(early.errors()[0].contains("not yet valid"));
    let late = verifier.verify(&ev, at("2031-01-01T00:00:00Z"));
    assert_eq!(failed(&late), ["vcek_validity"]);
    assert!(late.errors()[0].contains("expired"));
    // Before AMD's roots existed, every certificate fails, each with its own check.
    assert_eq!(
        failed(&verifier.verify(&ev, at("2019-01-01T00:00:00Z"))),
        ["ark_validity", "ask_validity", "vcek_validity"]
    );
}

#[test]
fn missing_vcek_says_where_to_get_it() {
    let Some(report) = coffre_testkit::read("sev-snp/virtee-sev/report_milan.hex") else { return };
    let ev = SnpEvidence::from_report_bytes(&report).unwrap();
    let v = SnpVerifier::new().verify(&ev, pinned());
    let vcek = v.checks.iter().find(|c| c.name == "vcek").unwrap();
    assert!(vcek.detail.contains("https://kdsintf.amd.com/vcek/v1/Milan/"), "{}", vcek.detail);
    assert!(vcek.detail.contains("blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"), "{}", vcek.detail);
    assert!(failed(&v).contains(&"report_signature"));
    assert!(v.claims.is_some(), "claims are still shown for an unverified report");
}

#[test]
fn format_violations_are_all_listed() {
    let Some(ev) = evidence("sev-snp/virtee-sev/report_milan.hex", "sev-snp/virtee-sev/vcek_milan.der", None) else {
        return;
    };
    let verifier = SnpVerifier::new();
    let mut bad = ev.clone();
    bad.report[0] = 7; // version 7: not defined by the ABI
    bad.report[0x4C] = 1; // reserved
    bad.report[0x1F8] = 1; // reserved below version 5
    bad.report[0x4A0 - 1] = 1; // signature reserved area
    let v = verifier.verify(&bad, pinned());
    let format = v.checks.iter().find(|c| c.name == "report_format").unwrap();
    assert!(!format.passed);
    for needle in ["version 7", "0x04c", "0x1f8", "0x49f"] {
        assert!(format.detail.contains(needle), "{needle} missing from: {}", format.detail);
    }
    let mut short = ev.clone();
    short.report.truncate(1000);
    let v = verifier.verify(&short, pinned());
    assert_eq!(failed(&v), ["report_format"]);
    assert!(v.claims.is_none());
    // A VCEK-signed report claiming a VLEK signed it.
    let mut key = ev.clone();
    key.report[0x48] |= 1 << 2;
    assert_eq!(failed(&verifier.verify(&key, pinned())), ["signing_key", "report_signature"]);
}

#[test]
fn simulated_reports_verify_only_with_the_dangerous_option_and_say_so() {
    let req = SimulatedReport { report_data: [0x42; 64], ..SimulatedReport::default() };
    let ev = simulated_evidence(&req);
    assert!(!SnpVerifier::new().verify(&ev, pinned()).is_verified());
    let verifier = tee().dangerous_verifier().unwrap();
    let v = verifier.verify(&ev, pinned());
    assert!(v.is_verified(), "{:#?}", v.errors());
    let claims = v.claims.as_ref().unwrap();
    assert_eq!(claims.platform, Platform::Simulated);
    assert_eq!(claims.report_data, [0x42; 64]);
    assert!(v.checks.iter().any(|c| c.name == "simulated_root" && c.passed));
    let verified = v.into_verified().unwrap();
    assert_eq!(verified.claims().platform, Platform::Simulated);
    // Real AMD evidence through the same verifier stays `snp`.
    if let Some(real) = evidence("sev-snp/virtee-sev/report_milan.hex", "sev-snp/virtee-sev/vcek_milan.der", None) {
        assert_eq!(verifier.verify(&real, pinned()).claims.unwrap().platform, Platform::Snp);
    }
    // The dangerous option refuses roots that do not say SIMULATED.
    if let (Some(ark), Some(ask)) =
        (coffre_testkit::read("roots/amd/milan/ark.pem"), coffre_testkit::read("roots/amd/milan/ask.pem"))
    {
        let der = |pem: &[u8]| coffre_attestation::x509::certificates_from_pem_or_der(pem).unwrap().remove(0);
        assert!(SnpVerifier::new().dangerous_accept_simulated_roots(&der(&ark), &der(&ask)).is_err());
    }
    // Tampering with a simulated report is caught like any other.
    let mut bad = ev.clone();
    bad.report[0x90] ^= 1;
    assert_eq!(failed(&verifier.verify(&bad, pinned())), ["report_signature"]);
}

#[test]
fn simulated_policy_bits_and_fields_come_through() {
    let req = SimulatedReport {
        policy: 0x3_0000 | (1 << 19) | (1 << 18),
        measurement: [0xab; 48],
        host_data: [7; 32],
        vmpl: 2,
        ..SimulatedReport::default()
    };
    let v = tee().dangerous_verifier().unwrap().verify(&simulated_evidence(&req), pinned());
    assert!(v.is_verified(), "{:#?}", v.errors());
    let c = v.claims.unwrap();
    assert!(c.policy.debug && c.policy.migrate_ma && c.policy.smt);
    assert_eq!((c.measurement, c.host_data, c.vmpl), ([0xab; 48], [7; 32], 2));
}

#[test]
fn crl_checks() {
    let verifier = tee().dangerous_verifier().unwrap();
    let ev = simulated_evidence(&SimulatedReport::default());
    let ask = Certificate::from_der(tee().ask_der()).unwrap();
    let (from, to) = (at("2025-05-01T00:00:00Z"), at("2025-07-01T00:00:00Z"));

    let good = tee().crl(&[], from, to).unwrap();
    let v = verifier.verify(&ev.clone().with_crl(&good).unwrap(), pinned());
    assert!(v.is_verified(), "{:#?}", v.errors());
    assert!(v.checks.iter().any(|c| c.name == "crl" && c.passed));
    assert!(v.claims.as_ref().unwrap().crl_checked, "a policy can require a checked CRL");
    assert!(!verifier.verify(&ev, pinned()).claims.unwrap().crl_checked, "no CRL given, none checked");

    let revoked = tee().crl(&[&ask.serial], from, to).unwrap();
    let v = verifier.verify(&ev.clone().with_crl(&revoked).unwrap(), pinned());
    assert_eq!(failed(&v), ["crl"]);
    assert!(v.errors()[0].contains("revoked"));

    let v = verifier.verify(&ev.clone().with_crl(&good).unwrap(), at("2025-08-01T00:00:00Z"));
    assert_eq!(failed(&v), ["crl"]);
    assert!(v.errors()[0].contains("expired"));

    let mut forged = good.clone();
    let n = forged.len();
    forged[n - 5] ^= 1;
    let v = verifier.verify(&ev.clone().with_crl(&forged).unwrap(), pinned());
    assert_eq!(failed(&v), ["crl"]);

    // A CRL from another root (here: a second simulator) is not AMD's, nor this chain's.
    let other = SimulatedTee::generate(SimulatedPlatform::default()).unwrap();
    let foreign = other.crl(&[], from, to).unwrap();
    let v = verifier.verify(&ev.with_crl(&foreign).unwrap(), pinned());
    assert_eq!(failed(&v), ["crl"]);
}

#[test]
fn collected_simulated_evidence_round_trips() {
    use coffre_attestation::collect::{CertKind, EvidenceSource, ReportData};
    let data = ReportData::new([9; 64]);
    let collected = tee().collect(&data).unwrap();
    assert_eq!(collected.source, "simulated");
    assert_eq!(collected.certificates[0].kind, CertKind::Vcek);
    let ev =
        SnpEvidence::from_report_bytes(&collected.report).unwrap().with_vek(&collected.certificates[0].der).unwrap();
    let v = tee().dangerous_verifier().unwrap().verify(&ev, pinned());
    assert!(v.is_verified(), "{:#?}", v.errors());
    assert_eq!(v.claims.unwrap().report_data, [9; 64]);
}
