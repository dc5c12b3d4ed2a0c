//! Helpers shared by the policy tests: bundled policies, approvals, requests, and simulated
//! evidence with chosen claims.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::OnceLock;

use coffre_attestation::UnixTime;
use coffre_attestation::composite::{
    CompositeEvidence, CompositeVerifier, CpuEvidence, GpuInput, VerifiedComposite, gpu_nonce,
};
use coffre_attestation::nvidia::Arch;
use coffre_attestation::simulated::{SimulatedGpu, SimulatedPlatform, SimulatedReport, SimulatedTee};
use coffre_attestation::snp::SnpEvidence;
use coffre_policies::{
    ActivePolicy, Approver, ApproverSecretKey, ApproverSet, JobKind, JobRequest, Name, Policy, Request, SetFormat,
    Subject,
};

pub fn bundled(name: &str) -> Policy {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bundled").join(format!("{name}.toml"));
    Policy::from_toml(&std::fs::read_to_string(path).unwrap()).unwrap()
}

pub fn at(t: &str) -> UnixTime {
    UnixTime::parse_rfc3339(t).unwrap()
}

/// Approves `policy` with a fresh 1-of-1 approver set of its tenant.
pub fn activate(policy: Policy) -> ActivePolicy {
    let key = ApproverSecretKey::generate().unwrap();
    let set = ApproverSet {
        format: SetFormat::V1,
        tenant: policy.tenant.clone(),
        version: 1.try_into().unwrap(),
        threshold: 1,
        approvers: vec![Approver { name: Name::new("officer").unwrap(), key: key.public().clone() }],
    };
    let approval = key.approve(&Subject::of_policy(&policy)).unwrap();
    set.activate(policy, &[approval]).unwrap()
}

/// A fine-tune request of tenant `example-bank` for a dataset with `labels`.
pub fn request(labels: &[&str]) -> Request {
    Request {
        tenant: "example-bank".into(),
        dataset: "cards-2026".into(),
        dataset_labels: labels.iter().map(|s| (*s).to_owned()).collect(),
        job: JobRequest {
            kind: JobKind::FineTune,
            trainer_measurement: None,
            base_model: None,
            epochs: Some(3),
            steps: Some(1000),
            output_recipients: Vec::new(),
        },
        prior_releases: Default::default(),
    }
}

pub struct Machine {
    pub tee: SimulatedTee,
    pub gpus: Vec<SimulatedGpu>,
}

/// One simulated machine for the whole test binary (generating the RSA-4096 ARK is slow).
pub fn machine() -> &'static Machine {
    static MACHINE: OnceLock<Machine> = OnceLock::new();
    MACHINE.get_or_init(|| Machine {
        tee: SimulatedTee::generate(SimulatedPlatform::default()).unwrap(),
        gpus: SimulatedGpu::generate_machine(&[Arch::Hopper, Arch::Hopper]).unwrap(),
    })
}

/// Verified simulated evidence: a report with `report`'s fields and `gpus` simulated H100s bound
/// to it.
pub fn simulated(report: &SimulatedReport, gpus: usize) -> VerifiedComposite {
    let m = machine();
    let bytes = m.tee.report(report).unwrap();
    let cpu = SnpEvidence::from_report_bytes(&bytes).unwrap().with_vek(m.tee.vcek_der()).unwrap();
    let nonce = gpu_nonce(&report.report_data);
    let gpus =
        m.gpus[..gpus].iter().map(|g| GpuInput { evidence: g.evidence(&nonce).unwrap(), rims: Vec::new() }).collect();
    let verifier = CompositeVerifier::new()
        .dangerous_accept_simulated_roots(m.tee.ark_der(), m.tee.ask_der(), m.gpus[0].root_der())
        .unwrap();
    let evidence = CompositeEvidence { cpu: CpuEvidence::Snp(cpu), gpus };
    verifier.verify(&evidence, Some(&report.report_data), at("2026-06-01T00:00:00Z")).into_verified().unwrap()
}
