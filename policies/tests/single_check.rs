//! Property: starting from a request that a policy allows, any single rule the request breaks
//! is a denial that names exactly that check, and nothing else.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

mod common;

use coffre_attestation::UnixTime;
use coffre_attestation::simulated::SimulatedReport;
use coffre_policies::{Appraisal, Decision, Digest, Mode, Policy, Request, evaluate};
use common::{activate, at, machine, request, simulated};
use proptest::prelude::*;

const TRAINER: &str = "sha256:1111111111111111111111111111111111111111111111111111111111111111";
const MODEL: &str = "sha256:2222222222222222222222222222222222222222222222222222222222222222";

fn recipient() -> String {
    coffre_seal::RecipientSecretKey::derive_for_tests(b"model registry").unwrap().public().to_string()
}

/// A policy every rule of which the baseline simulated machine and request satisfy.
fn baseline_policy() -> String {
    let chip = hex::encode(machine_chip_id());
    format!(
        r#"
format = "coffre-policy/v1"
id = "everything"
version = 1
tenant = "example-bank"
description = "Every kind of rule, each satisfied by the baseline."

[scope]
datasets = ["cards-2026"]
job_kinds = ["fine-tune"]

[platform]
kinds = ["simulated"]
cpu_products = ["milan"]

[snp]
signing_keys = ["vcek"]
vmpl = 0
forbidden_policy_bits = ["debug", "migrate_ma"]
min_guest_svn = 2
measurements = ["{m}"]
host_data = ["{h}"]
id_key_digests = ["{i}"]

[snp.min_tcb.milan]
bootloader = 9
tee = 0
snp = 23
microcode = 213

[snp.chip_ids]
lab-1 = ["{chip}"]

[gpu]
count = 1
architectures = ["hopper"]
cc_mode = "any"
dev_tools = "any"
driver_versions = ["{driver}"]

[job]
trainer_measurements = ["{TRAINER}"]
base_models = ["{MODEL}"]
max_epochs = 3
max_steps = 1000
output_recipients = ["{r}"]
max_releases = 5
not_before = 2026-01-01T00:00:00Z
not_after = 2026-12-31T00:00:00Z
"#,
        m = "11".repeat(48),
        h = "22".repeat(32),
        i = "33".repeat(48),
        driver = machine().gpus[0].driver_version,
        r = recipient(),
    )
}

fn machine_chip_id() -> [u8; 64] {
    let mut chip = [0u8; 64];
    for (i, b) in chip.iter_mut().enumerate() {
        *b = 0x5a ^ i as u8;
    }
    chip
}

fn baseline_report() -> SimulatedReport {
    SimulatedReport {
        measurement: [0x11; 48],
        host_data: [0x22; 32],
        id_key_digest: [0x33; 48],
        guest_svn: 2,
        ..SimulatedReport::default()
    }
}

fn baseline_request() -> Request {
    let mut r = request(&[]);
    r.job.trainer_measurement = Some(Digest::parse(TRAINER).unwrap());
    r.job.base_model = Some(Digest::parse(MODEL).unwrap());
    r.job.output_recipients = vec![recipient()];
    r.prior_releases.insert("everything".into(), 4);
    r
}

const NOW: &str = "2026-06-01T00:00:00Z";

/// One way to break exactly one rule; `n` varies the value used.
#[derive(Debug, Clone, Copy)]
enum Break {
    Measurement,
    HostData,
    IdKey,
    Vmpl,
    Debug,
    MigrationAgent,
    GuestSvn,
    Microcode,
    Bootloader,
    Snp,
    Product,
    SigningKey,
    Crl,
    ChipId,
    GpuCount,
    GpuArch,
    Driver,
    Trainer,
    BaseModel,
    Epochs,
    Steps,
    Recipient,
    Releases,
    TooEarly,
    TooLate,
    ProductionMode,
}

const ALL: [Break; 26] = [
    Break::Measurement,
    Break::HostData,
    Break::IdKey,
    Break::Vmpl,
    Break::Debug,
    Break::MigrationAgent,
    Break::GuestSvn,
    Break::Microcode,
    Break::Bootloader,
    Break::Snp,
    Break::Product,
    Break::SigningKey,
    Break::Crl,
    Break::ChipId,
    Break::GpuCount,
    Break::GpuArch,
    Break::Driver,
    Break::Trainer,
    Break::BaseModel,
    Break::Epochs,
    Break::Steps,
    Break::Recipient,
    Break::Releases,
    Break::TooEarly,
    Break::TooLate,
    Break::ProductionMode,
];

struct Case {
    policy: String,
    report: SimulatedReport,
    gpus: usize,
    request: Request,
    now: UnixTime,
    mode: Mode,
}

fn broken(b: Break, n: u8) -> (Case, &'static str) {
    let mut c = Case {
        policy: baseline_policy(),
        report: baseline_report(),
        gpus: 1,
        request: baseline_request(),
        now: at(NOW),
        mode: Mode::Development,
    };
    let other = n.max(1);
    let name = match b {
        Break::Measurement => {
            c.report.measurement[usize::from(n) % 48] ^= other;
            "snp.measurement"
        }
        Break::HostData => {
            c.report.host_data[usize::from(n) % 32] ^= other;
            "snp.host_data"
        }
        Break::IdKey => {
            c.report.id_key_digest[usize::from(n) % 48] ^= other;
            "snp.id_key_digest"
        }
        Break::Vmpl => {
            c.report.vmpl = 1 + u32::from(n % 3);
            "snp.vmpl"
        }
        Break::Debug => {
            c.report.policy |= 1 << 19;
            "snp.policy.debug"
        }
        Break::MigrationAgent => {
            c.report.policy |= 1 << 18;
            "snp.policy.migrate_ma"
        }
        Break::GuestSvn => {
            c.report.guest_svn = u32::from(n % 2);
            "snp.guest_svn"
        }
        Break::Microcode => {
            c.policy = c.policy.replace("microcode = 213", &format!("microcode = {}", 214 + u16::from(n % 42)));
            "snp.min_tcb.microcode"
        }
        Break::Bootloader => {
            c.policy = c.policy.replace("bootloader = 9", &format!("bootloader = {}", 10 + n % 100));
            "snp.min_tcb.bootloader"
        }
        Break::Snp => {
            c.policy = c.policy.replace("snp = 23", &format!("snp = {}", 24 + n % 100));
            "snp.min_tcb.snp"
        }
        Break::Product => {
            c.policy = c.policy.replace("cpu_products = [\"milan\"]", "cpu_products = [\"genoa\"]");
            "platform.cpu_product"
        }
        Break::SigningKey => {
            c.policy = c.policy.replace("signing_keys = [\"vcek\"]", "signing_keys = [\"vlek\"]");
            "snp.signing_key"
        }
        Break::Crl => {
            c.policy = c.policy.replace("vmpl = 0", "vmpl = 0\ncrl_required = true");
            "snp.crl"
        }
        Break::ChipId => {
            let mut chip = machine_chip_id();
            chip[usize::from(n) % 64] ^= other;
            c.policy = c.policy.replace(&hex::encode(machine_chip_id()), &hex::encode(chip));
            "snp.chip_id"
        }
        Break::GpuCount => {
            c.gpus = if n.is_multiple_of(2) { 0 } else { 2 };
            "gpu.count"
        }
        Break::GpuArch => {
            c.policy = c.policy.replace("architectures = [\"hopper\"]", "architectures = [\"blackwell\"]");
            "gpu[0].arch"
        }
        Break::Driver => {
            c.policy = c.policy.replace(
                &format!("driver_versions = [\"{}\"]", machine().gpus[0].driver_version),
                &format!("driver_versions = [\"999.{n}\"]"),
            );
            "gpu[0].driver_version"
        }
        Break::Trainer => {
            c.request.job.trainer_measurement =
                if n.is_multiple_of(2) { None } else { Some(Digest::parse(MODEL).unwrap()) };
            "job.trainer_measurement"
        }
        Break::BaseModel => {
            c.request.job.base_model = if n.is_multiple_of(2) { None } else { Some(Digest::parse(TRAINER).unwrap()) };
            "job.base_model"
        }
        Break::Epochs => {
            c.request.job.epochs = if n.is_multiple_of(2) { None } else { Some(4 + u32::from(n)) };
            "job.epochs"
        }
        Break::Steps => {
            c.request.job.steps = if n.is_multiple_of(2) { None } else { Some(1001 + u64::from(n)) };
            "job.steps"
        }
        Break::Recipient => {
            c.request.job.output_recipients =
                if n.is_multiple_of(2) { Vec::new() } else { vec!["coffre-p384-pub-other".into()] };
            "job.output_recipients"
        }
        Break::Releases => {
            c.request.prior_releases.insert("everything".into(), 5 + u64::from(n));
            "job.releases"
        }
        Break::TooEarly => {
            c.now = at("2025-12-31T23:59:59Z");
            "job.not_before"
        }
        Break::TooLate => {
            c.now = at("2026-12-31T00:00:01Z");
            "job.not_after"
        }
        Break::ProductionMode => {
            c.mode = Mode::Production;
            "platform.development_mode"
        }
    };
    (c, name)
}

fn decide(c: &Case) -> Decision {
    let policy = activate(Policy::from_toml(&c.policy).unwrap());
    let evidence = simulated(&c.report, c.gpus);
    evaluate(&[policy], &Appraisal::from(&evidence), &c.request, c.now, c.mode)
}

#[test]
fn the_baseline_is_allowed_and_every_rule_was_checked() {
    let (mut c, _) = broken(Break::Measurement, 0);
    c.report = baseline_report();
    let d = decide(&c);
    assert!(d.is_allowed(), "{:#?}", d.failed());
    let names: Vec<&str> = d.checks().iter().map(|c| c.name.as_str()).collect();
    // The baseline sets every rule except `crl_required` (simulated evidence carries no AMD CRL).
    for b in ALL.into_iter().filter(|b| !matches!(b, Break::Crl)) {
        let (_, name) = broken(b, 1);
        assert!(names.contains(&name), "{name} was not checked on the baseline: {names:?}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 96, ..ProptestConfig::default() })]

    #[test]
    fn one_broken_rule_is_one_named_failed_check(which in 0..ALL.len(), n in any::<u8>()) {
        let (case, name) = broken(ALL[which], n);
        let d = decide(&case);
        prop_assert!(!d.is_allowed());
        let failed: Vec<&str> = d.failed().iter().map(|c| c.name.as_str()).collect();
        prop_assert_eq!(failed, vec![name]);
        let check = &d.failed()[0];
        prop_assert!(!check.expected.is_empty() && !check.actual.is_empty());
        prop_assert_eq!(check.policy.as_str(), "everything@1");
    }
}
