//! One CPU and its GPUs appraised together: the GPU nonce is bound to the CPU report, so GPU
//! evidence from another session is rejected; simulated GPUs need the same dangerous option as the
//! simulated CPU; real TDX and NVIDIA evidence goes through the same call.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::sync::OnceLock;

use coffre_attestation::composite::{
    CompositeEvidence, CompositeVerification, CompositeVerifier, CpuClaims, CpuEvidence, GpuInput, MAX_GPUS, gpu_nonce,
};
use coffre_attestation::nvidia::{Arch, GpuEvidence, NvidiaVerifier};
use coffre_attestation::simulated::{SimulatedGpu, SimulatedPlatform, SimulatedReport, SimulatedTee};
use coffre_attestation::snp::SnpEvidence;
use coffre_attestation::tdx::TdxCollateral;
use coffre_attestation::{Platform, UnixTime};

fn now() -> UnixTime {
    UnixTime::parse_rfc3339("2025-06-01T00:00:00Z").unwrap()
}

fn tee() -> &'static SimulatedTee {
    static TEE: OnceLock<SimulatedTee> = OnceLock::new();
    TEE.get_or_init(|| SimulatedTee::generate(SimulatedPlatform::default()).unwrap())
}

/// Nine simulated GPUs of one machine (one Blackwell among Hoppers) under one simulated root.
fn gpus() -> &'static [SimulatedGpu] {
    static GPUS: OnceLock<Vec<SimulatedGpu>> = OnceLock::new();
    GPUS.get_or_init(|| {
        let archs: Vec<Arch> = (0..=MAX_GPUS).map(|i| if i == 3 { Arch::Blackwell } else { Arch::Hopper }).collect();
        SimulatedGpu::generate_machine(&archs).unwrap()
    })
}

fn session(report_data: [u8; 64]) -> CpuEvidence {
    let report = tee().report(&SimulatedReport { report_data, ..SimulatedReport::default() }).unwrap();
    CpuEvidence::Snp(SnpEvidence::from_report_bytes(&report).unwrap().with_vek(tee().vcek_der()).unwrap())
}

/// A verifier trusting the simulated CPU and the simulated GPUs' root.
fn dangerous() -> CompositeVerifier {
    CompositeVerifier::new()
        .dangerous_accept_simulated_roots(tee().ark_der(), tee().ask_der(), gpus()[0].root_der())
        .unwrap()
}

fn gpu_input(gpu: &SimulatedGpu, nonce: &[u8; 32]) -> GpuInput {
    GpuInput { evidence: gpu.evidence(nonce).unwrap(), rims: Vec::new() }
}

fn failed(v: &CompositeVerification) -> Vec<String> {
    v.errors()
}

#[test]
fn a_cpu_and_its_eight_gpus_verify_together_and_say_simulated() {
    let report_data = [0x42; 64];
    let nonce = gpu_nonce(&report_data);
    let evidence = CompositeEvidence {
        cpu: session(report_data),
        gpus: gpus()[..MAX_GPUS].iter().map(|g| gpu_input(g, &nonce)).collect(),
    };
    let v = dangerous().verify(&evidence, Some(&report_data), now());
    assert!(v.is_verified(), "{:#?}", v.errors());
    assert_eq!(v.gpus.len(), 8);
    assert_eq!(v.gpu_nonce.as_deref(), Some(hex::encode(gpu_nonce(&report_data)).as_str()));
    assert!(v.checks.iter().any(|c| c.name == "simulated" && c.passed));
    let verified = v.into_verified().unwrap();
    assert!(verified.is_simulated());
    assert!(matches!(verified.cpu(), CpuClaims::Snp(c) if c.platform == Platform::Simulated));
    assert_eq!(verified.gpus()[0].platform, Platform::Simulated);
    assert_eq!(verified.gpus()[0].arch, Some(Arch::Hopper));
}

#[test]
fn a_gpu_report_from_another_session_is_rejected() {
    let (ours, theirs) = ([1u8; 64], [2u8; 64]);
    let gpu = &gpus()[0];
    // The GPU evidence was requested for the other session's CPU report.
    let evidence = CompositeEvidence { cpu: session(ours), gpus: vec![gpu_input(gpu, &gpu_nonce(&theirs))] };
    let v = dangerous().verify(&evidence, Some(&ours), now());
    assert!(!v.is_verified());
    let errors = failed(&v);
    assert_eq!(errors.len(), 1, "{errors:#?}");
    assert!(errors[0].starts_with("gpu[0]: nonce:") && errors[0].contains("another session"), "{errors:?}");
    assert!(v.into_verified().is_err());
}

#[test]
fn the_cpu_report_data_must_be_the_expected_one() {
    let gpu = &gpus()[0];
    let evidence = CompositeEvidence { cpu: session([3; 64]), gpus: vec![gpu_input(gpu, &gpu_nonce(&[3; 64]))] };
    let v = dangerous().verify(&evidence, Some(&[4; 64]), now());
    assert_eq!(failed(&v).len(), 1);
    assert!(failed(&v)[0].starts_with("composite: report_data:"), "{:?}", failed(&v));
}

#[test]
fn simulated_gpus_need_the_dangerous_option() {
    let gpu = &gpus()[0];
    let report_data = [5u8; 64];
    let evidence = gpu.evidence(&gpu_nonce(&report_data)).unwrap();
    let plain = NvidiaVerifier::new().verify(&evidence, None, &[], now());
    assert!(!plain.is_verified());
    assert!(plain.errors().iter().any(|e| e.starts_with("device_chain:")), "{:?}", plain.errors());
    // Trusting another machine's simulated GPU root does not make this GPU acceptable.
    let other_machine = SimulatedGpu::generate(Arch::Hopper).unwrap();
    let cpu_only = CompositeVerifier::new()
        .dangerous_accept_simulated_roots(tee().ark_der(), tee().ask_der(), other_machine.root_der())
        .unwrap();
    let v = cpu_only.verify(
        &CompositeEvidence { cpu: session(report_data), gpus: vec![GpuInput { evidence, rims: Vec::new() }] },
        None,
        now(),
    );
    assert!(failed(&v).iter().any(|e| e.starts_with("gpu[0]: device_chain:")), "{:?}", failed(&v));
    // A root whose name does not say SIMULATED is refused by the option itself.
    let real_root = coffre_testkit::read("roots/nvidia/nvidia_device_identity_ca.pem");
    if let Some(pem) = real_root {
        let der = coffre_attestation::x509::certificates_from_pem_or_der(&pem).unwrap().remove(0);
        assert!(NvidiaVerifier::new().dangerous_accept_simulated_root(&der).is_err());
    }
}

#[test]
fn simulated_gpu_evidence_verifies_for_both_architectures() {
    for gpu in &gpus()[..4] {
        let verifier = gpu.dangerous_verifier().unwrap();
        let nonce = [9u8; 32];
        let v = verifier.verify(&gpu.evidence(&nonce).unwrap(), Some(&nonce), &[], now());
        assert!(v.is_verified(), "{:#?}", v.errors());
        assert!(v.checks.iter().any(|c| c.name == "simulated_root" && c.passed));
        let c = v.claims.unwrap();
        assert_eq!((c.platform, c.driver_version.as_deref()), (Platform::Simulated, Some("580.95.05")));
        assert_eq!(c.measurements.len(), 64);
    }
}

#[test]
fn eight_gpus_at_most_and_each_device_once() {
    let report_data = [6u8; 64];
    let nonce = gpu_nonce(&report_data);
    let gpu = &gpus()[0];
    let too_many =
        CompositeEvidence { cpu: session(report_data), gpus: (0..=MAX_GPUS).map(|_| gpu_input(gpu, &nonce)).collect() };
    let v = dangerous().verify(&too_many, None, now());
    assert!(failed(&v).iter().any(|e| e.starts_with("composite: gpu_count:")), "{:?}", failed(&v));
    assert!(v.gpus.is_empty(), "no GPU work beyond the limit");

    let twice =
        CompositeEvidence { cpu: session(report_data), gpus: vec![gpu_input(gpu, &nonce), gpu_input(gpu, &nonce)] };
    let v = dangerous().verify(&twice, None, now());
    assert_eq!(
        failed(&v),
        ["composite: distinct_gpus: gpu[0] and gpu[1] are the same device (same device identity key)"]
    );
}

/// Red-team finding: duplicate GPUs were detected by the leaf certificate's bytes, so one GPU
/// whose attestation certificate was issued twice (another boot, another FWID) counted as two
/// devices towards a policy's `min_count`.
#[test]
fn attack_one_gpu_presented_twice_with_two_leaf_certificates() {
    let report_data = [8u8; 64];
    let nonce = gpu_nonce(&report_data);
    let gpu = &gpus()[0];
    let again = gpu.reissued().unwrap();
    assert_ne!(gpu.chain()[0], again.chain()[0], "the two leaf certificates differ");
    let evidence =
        CompositeEvidence { cpu: session(report_data), gpus: vec![gpu_input(gpu, &nonce), gpu_input(&again, &nonce)] };
    let v = dangerous().verify(&evidence, None, now());
    assert_eq!(
        failed(&v),
        ["composite: distinct_gpus: gpu[0] and gpu[1] are the same device (same device identity key)"]
    );
    // Two devices of one machine remain two.
    let two = CompositeEvidence {
        cpu: session(report_data),
        gpus: vec![gpu_input(&gpus()[0], &nonce), gpu_input(&gpus()[1], &nonce)],
    };
    assert!(dangerous().verify(&two, None, now()).is_verified());
}

#[test]
fn every_gpu_failure_and_the_cpu_failure_are_reported_together() {
    let report_data = [7u8; 64];
    let gpu = &gpus()[0];
    let mut cpu_report = tee().report(&SimulatedReport { report_data, ..SimulatedReport::default() }).unwrap();
    cpu_report[0x90] ^= 1; // the measurement: the CPU signature no longer verifies
    let cpu =
        CpuEvidence::Snp(SnpEvidence::from_report_bytes(&cpu_report).unwrap().with_vek(tee().vcek_der()).unwrap());
    let mut bad_gpu = gpu_input(gpu, &gpu_nonce(&report_data));
    let last = bad_gpu.evidence.report.len() - 1;
    bad_gpu.evidence.report[last] ^= 1;
    let evidence = CompositeEvidence { cpu, gpus: vec![gpu_input(gpu, &gpu_nonce(&report_data)), bad_gpu] };
    let errors = failed(&dangerous().verify(&evidence, None, now()));
    assert!(errors.iter().any(|e| e.starts_with("cpu: report_signature:")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("gpu[1]: report_signature:")), "{errors:?}");
    assert!(errors.iter().any(|e| e.starts_with("composite: distinct_gpus:")), "{errors:?}");
}

#[test]
fn real_tdx_and_real_gpus_go_through_the_same_call() {
    let (Some(quote), Some(collateral)) = (
        coffre_testkit::read("tdx/dcap-qvl/tdx_quote"),
        coffre_testkit::read("tdx/dcap-qvl/tdx_quote_collateral.json"),
    ) else {
        return;
    };
    let Some(list) = coffre_testkit::read("nvidia-gpu/nv-attestation-sdk/serialized_evidence/multi_gpu_hopper.json")
    else {
        return;
    };
    let collateral = TdxCollateral::from_dcap_json(&collateral).unwrap();
    let at = UnixTime::parse_rfc3339("2025-06-19T11:32:27Z").unwrap();
    let cpu = CpuEvidence::Tdx { quote, collateral };
    let alone = CompositeVerifier::new().verify(&CompositeEvidence { cpu: cpu.clone(), gpus: Vec::new() }, None, at);
    assert!(alone.is_verified(), "{:#?}", alone.errors());
    assert!(matches!(alone.into_verified().unwrap().cpu(), CpuClaims::Tdx(_)));

    // Real GPUs, verified for real, but requested with NVIDIA's test nonce rather than this
    // quote's: every one of them is refused for that reason alone.
    let gpus: Vec<GpuInput> = GpuEvidence::list_from_json(&list)
        .unwrap()
        .into_iter()
        .map(|evidence| GpuInput { evidence, rims: Vec::new() })
        .collect();
    let v = CompositeVerifier::new().verify(&CompositeEvidence { cpu, gpus }, None, at);
    let errors = failed(&v);
    assert_eq!(errors.len(), 4, "{errors:#?}");
    for (i, e) in errors.iter().enumerate() {
        assert!(e.starts_with(&format!("gpu[{i}]: nonce:")), "{e}");
    }
    assert!(v.gpus.iter().all(|g| g.claims.as_ref().unwrap().platform == Platform::Nvidia));
}

#[test]
fn the_nonce_derivation_is_stable() {
    // SECURITY.md documents this derivation; workers in other languages must match it.
    assert_eq!(
        hex::encode(gpu_nonce(&[0u8; 64])),
        hex::encode(aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            &[b"coffre/gpu-nonce/v1".as_slice(), &[0u8; 64]].concat()
        ))
    );
    assert_ne!(gpu_nonce(&[0u8; 64]), gpu_nonce(&[1u8; 64]));
}

/// Coffre's own release binding, beside the KBS one (`kbs::tests`): fixed inputs and the values
/// computed independently (Python's hashlib), so neither binding can drift into the other.
#[test]
fn golden_vector_of_coffres_release_binding() {
    use coffre_attestation::composite::{gpu_nonce, release_report_data};
    let rd = release_report_data(&[7; 32], b"worker keys", b"job manifest");
    assert_eq!(
        hex::encode(rd),
        "4e39869685482586090782e124b29c2c9e6574310732d1dd7572aa01139ac01a9ec34ce06721dbc3195543028a6f0a9b6c941ce1670fe696c9c7cbdde5cc6ee8"
    );
    assert_eq!(hex::encode(gpu_nonce(&rd)), "b9089b69b99b1c05b75803c9b0e57a9b379d05809ef466d811d46c959abe2783");
}
