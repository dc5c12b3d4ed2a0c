//! Red-team finding 12: no bundled production policy had ever allowed a GPU. Each requires the
//! GPU's driver and VBIOS measurements to match NVIDIA-signed RIMs (that is the only way SPDM
//! evidence establishes CC mode on and developer tools off), and that path had never run.
//!
//! The shared vendor data has no real GPU report whose RIMs are included (its one driver RIM,
//! 550.144.03, matches no report there; its VBIOS RIM is a deliberate mismatch), so the matching
//! path runs on the simulator: simulated H100s with simulated RIMs signed under a simulated RIM
//! root, the real RIM verification and measurement comparison, and each production policy's own
//! GPU rules. The CPU side of those policies (Genoa/Turin, TDX, production mode) cannot be met by
//! simulated evidence, by design; it is covered by the real-evidence tests.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use coffre_attestation::composite::{CompositeEvidence, CompositeVerifier, CpuEvidence, GpuInput, gpu_nonce};
use coffre_attestation::simulated::{RimKind, SimulatedReport, SimulatedRimAuthority};
use coffre_attestation::snp::SnpEvidence;
use coffre_policies::{Appraisal, Decision, Mode, evaluate};
use common::{activate, at, bundled, machine, request};

fn gpu_checks(
    policy: &str,
    rims: impl Fn(&coffre_attestation::simulated::SimulatedGpu) -> Vec<Vec<u8>>,
) -> Result<Vec<(String, bool, String)>, Vec<String>> {
    let m = machine();
    let authority = rim_authority();
    let report = SimulatedReport { report_data: [3; 64], ..SimulatedReport::default() };
    let cpu =
        SnpEvidence::from_report_bytes(&m.tee.report(&report).unwrap()).unwrap().with_vek(m.tee.vcek_der()).unwrap();
    let nonce = gpu_nonce(&report.report_data);
    let gpu = &m.gpus[0];
    let evidence = CompositeEvidence {
        cpu: CpuEvidence::Snp(cpu),
        gpus: vec![GpuInput { evidence: gpu.evidence(&nonce).unwrap(), rims: rims(gpu) }],
    };
    let verifier = CompositeVerifier::new()
        .dangerous_accept_simulated_roots(m.tee.ark_der(), m.tee.ask_der(), gpu.root_der())
        .unwrap()
        .dangerous_accept_simulated_rim_root(authority.root_der())
        .unwrap();
    let verified = verifier.verify(&evidence, Some(&report.report_data), at("2026-06-01T00:00:00Z"));
    let verified = verified.into_verified().map_err(|v| v.errors())?;
    // One label per production policy's scope, so that each applies to the request.
    let labels = ["customer-pii", "tdx-approved", "azure-approved"];
    let policies = [activate(bundled(policy))];
    let checks = match evaluate(
        &policies,
        &Appraisal::from(&verified),
        &request(&labels),
        at("2026-06-01T00:00:00Z"),
        Mode::Development,
    ) {
        Decision::Allow(a) => a.checks().to_vec(),
        Decision::Deny(d) => d.checks,
    };
    Ok(checks.into_iter().filter(|c| c.name.starts_with("gpu")).map(|c| (c.name, c.passed, c.actual)).collect())
}

fn rim_authority() -> &'static SimulatedRimAuthority {
    static A: std::sync::OnceLock<SimulatedRimAuthority> = std::sync::OnceLock::new();
    A.get_or_init(|| SimulatedRimAuthority::generate().unwrap())
}

#[test]
fn every_production_policy_allows_a_gpu_whose_driver_and_vbios_rims_match() {
    for policy in ["bank-strict", "tdx-h100", "azure-cvm-h100"] {
        let with = gpu_checks(policy, |g| {
            vec![
                rim_authority().rim(g, RimKind::Driver, None).unwrap(),
                rim_authority().rim(g, RimKind::Vbios, None).unwrap(),
            ]
        })
        .unwrap();
        assert!(!with.is_empty(), "{policy} has GPU rules");
        // The one GPU rule a simulated GPU must fail under a production policy is its platform.
        assert!(with.iter().any(|(n, ok, a)| n == "gpu[0].platform" && !*ok && a == "simulated"), "{with:?}");
        let failed: Vec<_> = with.iter().filter(|(n, ok, _)| !ok && n != "gpu[0].platform").collect();
        assert!(failed.is_empty(), "{policy}: GPU rules failed with matching RIMs: {failed:?}");
        for rule in ["gpu[0].cc_mode", "gpu[0].dev_tools", "gpu[0].rim_match"] {
            assert!(with.iter().any(|(n, ok, _)| n == rule && *ok), "{policy}: {rule} not passed: {with:?}");
        }

        // Without RIMs, or with one whose measurement differs, the same GPU is refused.
        let without = gpu_checks(policy, |_| Vec::new()).unwrap();
        for rule in ["gpu[0].cc_mode", "gpu[0].dev_tools", "gpu[0].rim_match"] {
            assert!(without.iter().any(|(n, ok, _)| n == rule && !*ok), "{policy}: {rule} passed without RIMs");
        }
        // A RIM whose golden value differs is a failed verification, naming the index.
        let tampered = gpu_checks(policy, |g| {
            vec![
                rim_authority().rim(g, RimKind::Driver, None).unwrap(),
                rim_authority().rim(g, RimKind::Vbios, Some(40)).unwrap(),
            ]
        })
        .unwrap_err();
        assert!(tampered.iter().any(|e| e.contains("rim_measurements: index 39 (vbios RIM")), "{policy}: {tampered:?}");
    }
}
