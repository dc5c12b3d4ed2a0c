//! Evaluation: verified claims and a request against policies, to a [`Decision`].

use std::collections::BTreeMap;
use std::fmt;

use coffre_attestation::composite::{CpuClaims, VerifiedComposite};
use coffre_attestation::nvidia::{GpuClaims, VerifiedGpu};
use coffre_attestation::snp::{SigningKey, SnpClaims, Tcb, VerifiedSnp};
use coffre_attestation::tdx::{TdxClaims, VerifiedTdx};
use coffre_attestation::{Platform, UnixTime};
use serde::{Deserialize, Serialize};

use crate::approval::ActivePolicy;
use crate::document::{
    CcMode, CpuProduct, DevTools, Digest, EvidenceKind, GpuArch, GpuRules, Hex, JobKind, JobRules, Policy, PolicyRef,
    SnpRules, SnpSigner, TcbFloor, TdxRules,
};

/// How the vault runs. Simulated evidence can only ever be accepted in development mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Real hardware only.
    Production,
    /// Simulated evidence may be accepted by policies that list `simulated`; decisions are marked.
    Development,
}

#[derive(Debug, Clone, Copy)]
enum CpuView<'a> {
    Snp(&'a SnpClaims),
    Tdx(&'a TdxClaims),
    /// The KBS sample TEE: no hardware claims at all (always simulated).
    Sample,
}

/// Claims that passed verification, as evaluation sees them. Made only from the attestation
/// crate's proof types, so unverified claims cannot be evaluated.
#[derive(Debug, Clone)]
pub struct Appraisal<'a> {
    cpu: Option<CpuView<'a>>,
    gpus: Vec<&'a GpuClaims>,
}

impl<'a> From<&'a VerifiedComposite> for Appraisal<'a> {
    fn from(v: &'a VerifiedComposite) -> Self {
        let cpu = match v.cpu() {
            CpuClaims::Snp(c) => CpuView::Snp(c),
            CpuClaims::Tdx(c) => CpuView::Tdx(c),
            CpuClaims::Sample(_) => CpuView::Sample,
        };
        Self { cpu: Some(cpu), gpus: v.gpus().iter().collect() }
    }
}

impl<'a> From<&'a VerifiedSnp> for Appraisal<'a> {
    fn from(v: &'a VerifiedSnp) -> Self {
        Self { cpu: Some(CpuView::Snp(v.claims())), gpus: Vec::new() }
    }
}

impl<'a> From<&'a VerifiedTdx> for Appraisal<'a> {
    fn from(v: &'a VerifiedTdx) -> Self {
        Self { cpu: Some(CpuView::Tdx(v.claims())), gpus: Vec::new() }
    }
}

impl<'a> Appraisal<'a> {
    /// GPUs without CPU evidence (a policy always denies this: keys go to confidential VMs).
    pub fn gpus_only(gpus: &'a [VerifiedGpu]) -> Self {
        Self { cpu: None, gpus: gpus.iter().map(VerifiedGpu::claims).collect() }
    }

    /// Whether any part of it is simulated.
    pub fn is_simulated(&self) -> bool {
        matches!(self.cpu, Some(CpuView::Snp(c)) if c.platform == Platform::Simulated)
            || matches!(self.cpu, Some(CpuView::Sample))
            || self.gpus.iter().any(|g| g.platform == Platform::Simulated)
    }
}

/// The job's side of a key request, from its signed manifest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobRequest {
    /// What the job does.
    pub kind: JobKind,
    /// The trainer's measurement.
    #[serde(default)]
    pub trainer_measurement: Option<Digest>,
    /// The base model's digest.
    #[serde(default)]
    pub base_model: Option<Digest>,
    /// Epochs the job will run.
    #[serde(default)]
    pub epochs: Option<u32>,
    /// Optimiser steps the job will run.
    #[serde(default)]
    pub steps: Option<u64>,
    /// Public keys the outputs are sealed to.
    #[serde(default)]
    pub output_recipients: Vec<String>,
}

/// A request for a dataset's key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Request {
    /// The tenant owning the dataset.
    pub tenant: String,
    /// The dataset id.
    pub dataset: String,
    /// The dataset's labels.
    #[serde(default)]
    pub dataset_labels: Vec<String>,
    /// The job.
    pub job: JobRequest,
    /// Releases already made under each policy id (the vault counts them from its log).
    #[serde(default)]
    pub prior_releases: BTreeMap<String, u64>,
}

/// One check made during evaluation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CheckOutcome {
    /// The policy (`id@version`) the check belongs to; empty for checks of the policy set.
    pub policy: String,
    /// Stable dotted name, e.g. `snp.min_tcb.microcode` or `gpu[1].rim_match`.
    pub name: String,
    /// Whether it passed.
    pub passed: bool,
    /// What the policy requires.
    pub expected: String,
    /// What was found.
    pub actual: String,
}

impl fmt::Display for CheckOutcome {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if !self.policy.is_empty() {
            write!(f, "[{}] ", self.policy)?;
        }
        write!(f, "{}: expected {}; found {}", self.name, self.expected, self.actual)
    }
}

/// Permission to release: only [`evaluate`] constructs one, and key release requires it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Allow {
    policies: Vec<PolicyRef>,
    checks: Vec<CheckOutcome>,
    simulated: bool,
    at: UnixTime,
}

impl Allow {
    /// The policies that allowed it (every applicable one).
    pub fn policies(&self) -> &[PolicyRef] {
        &self.policies
    }

    /// Every check made (all passed).
    pub fn checks(&self) -> &[CheckOutcome] {
        &self.checks
    }

    /// True when the decision rests on simulated evidence (development mode only).
    pub fn is_simulated(&self) -> bool {
        self.simulated
    }

    /// The evaluation time.
    pub fn at(&self) -> UnixTime {
        self.at
    }
}

/// A refusal, with every failed check.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Denial {
    /// The applicable policies evaluated (empty when none applied).
    pub policies: Vec<PolicyRef>,
    /// Every failed check, across all applicable policies.
    pub failed: Vec<CheckOutcome>,
    /// Every check made, passed or failed.
    pub checks: Vec<CheckOutcome>,
}

/// The outcome of [`evaluate`].
#[must_use = "a decision must be acted on: release only on Allow, and record it either way"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Every applicable policy allowed.
    Allow(Allow),
    /// At least one check failed, or no policy applied.
    Deny(Denial),
}

impl Decision {
    /// Whether it allows.
    pub fn is_allowed(&self) -> bool {
        matches!(self, Decision::Allow(_))
    }

    /// The failed checks (empty when allowed).
    pub fn failed(&self) -> &[CheckOutcome] {
        match self {
            Decision::Allow(_) => &[],
            Decision::Deny(d) => &d.failed,
        }
    }

    /// Every check made.
    pub fn checks(&self) -> &[CheckOutcome] {
        match self {
            Decision::Allow(a) => &a.checks,
            Decision::Deny(d) => &d.checks,
        }
    }
}

/// Whether `policy` governs `request`: same tenant, the dataset listed (or `*`) or one of its
/// labels listed, and the job kind listed (or no kinds given).
pub fn applies(policy: &Policy, request: &Request) -> bool {
    let scope = &policy.scope;
    policy.tenant.as_str() == request.tenant
        && (scope.datasets.iter().any(|d| d.matches(&request.dataset))
            || scope.dataset_labels.iter().any(|l| request.dataset_labels.iter().any(|r| r == l.as_str())))
        && (scope.job_kinds.contains(&request.job.kind)
            || (scope.job_kinds.is_empty() && request.job.kind != JobKind::KbsResource))
}

/// Evaluates `request` with verified `evidence` against every active policy that applies to it.
///
/// Pure: no I/O, no clock (`now` is an input). Every applicable policy must allow; no applicable
/// policy denies; a rule whose subject is missing from the evidence or the request denies.
/// Simulated evidence is denied in [`Mode::Production`] whatever the policy says.
pub fn evaluate(
    policies: &[ActivePolicy],
    evidence: &Appraisal<'_>,
    request: &Request,
    now: UnixTime,
    mode: Mode,
) -> Decision {
    let all: Vec<&Policy> = policies.iter().map(ActivePolicy::policy).collect();
    let (refs, checks) = run(&all, evidence, Some(request), now, mode);
    let failed: Vec<CheckOutcome> = checks.iter().filter(|c| !c.passed).cloned().collect();
    if failed.is_empty() && !checks.is_empty() && !refs.is_empty() {
        Decision::Allow(Allow { policies: refs, checks, simulated: evidence.is_simulated(), at: now })
    } else {
        Decision::Deny(Denial { policies: refs, failed, checks })
    }
}

/// What a dry-run found: the same checks as [`evaluate`], but no [`Allow`] token, since the
/// policy evaluated need not be approved.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DryRun {
    /// Whether the policy would allow.
    pub allowed: bool,
    /// Every failed check.
    pub failed: Vec<CheckOutcome>,
    /// Every check made.
    pub checks: Vec<CheckOutcome>,
    /// Whether the job rules were evaluated (only with a request).
    pub job_rules_evaluated: bool,
}

/// Evaluates a proposed (not necessarily approved) policy against verified evidence, with or
/// without a request. Without one, only the hardware rules (`platform`, `snp`, `tdx`, `gpu`) are
/// evaluated; with one, the scope and job rules too.
pub fn dry_run(
    policy: &Policy,
    evidence: &Appraisal<'_>,
    request: Option<&Request>,
    now: UnixTime,
    mode: Mode,
) -> DryRun {
    let (_, checks) = run(&[policy], evidence, request, now, mode);
    let failed: Vec<CheckOutcome> = checks.iter().filter(|c| !c.passed).cloned().collect();
    DryRun { allowed: failed.is_empty() && !checks.is_empty(), failed, checks, job_rules_evaluated: request.is_some() }
}

/// Dry-run verdict for evidence that did not verify: every failed verification check becomes a
/// failed check named `evidence.<name>`.
pub fn dry_run_unverified<'a, I: IntoIterator<Item = (&'a str, &'a str)>>(policy: &Policy, failures: I) -> DryRun {
    let failed: Vec<CheckOutcome> = failures
        .into_iter()
        .map(|(name, detail)| CheckOutcome {
            policy: policy.label(),
            name: format!("evidence.{name}"),
            passed: false,
            expected: "evidence that verifies against the pinned vendor roots".into(),
            actual: detail.to_owned(),
        })
        .collect();
    DryRun { allowed: false, checks: failed.clone(), failed, job_rules_evaluated: false }
}

fn run(
    policies: &[&Policy],
    evidence: &Appraisal<'_>,
    request: Option<&Request>,
    now: UnixTime,
    mode: Mode,
) -> (Vec<PolicyRef>, Vec<CheckOutcome>) {
    let applicable: Vec<&Policy> = match request {
        Some(r) => policies.iter().copied().filter(|p| applies(p, r)).collect(),
        None => policies.to_vec(),
    };
    if let (Some(request), true) = (request, applicable.is_empty()) {
        return (Vec::new(), vec![not_applicable(request, policies.len())]);
    }
    let checks = applicable.iter().flat_map(|p| evaluate_policy(p, evidence, request, now, mode)).collect();
    (applicable.iter().map(|p| p.reference()).collect(), checks)
}

/// The one failed check when no policy governs `request`.
fn not_applicable(request: &Request, given: usize) -> CheckOutcome {
    let labels = if request.dataset_labels.is_empty() {
        String::new()
    } else {
        format!(" (labels {})", request.dataset_labels.join(", "))
    };
    CheckOutcome {
        policy: String::new(),
        name: "policy.applicable".into(),
        passed: false,
        expected: format!(
            "an active policy of tenant {} covering dataset {}{labels} for {} jobs",
            request.tenant, request.dataset, request.job.kind
        ),
        actual: format!("none of the {given} policies given applies"),
    }
}

struct Checks {
    policy: String,
    out: Vec<CheckOutcome>,
}

impl Checks {
    fn add(&mut self, name: impl Into<String>, passed: bool, expected: impl Into<String>, actual: impl Into<String>) {
        self.out.push(CheckOutcome {
            policy: self.policy.clone(),
            name: name.into(),
            passed,
            expected: expected.into(),
            actual: actual.into(),
        });
    }

    fn allowlist<const N: usize>(&mut self, name: &str, allowed: &Option<Vec<Hex<N>>>, actual: &[u8; N]) {
        if let Some(list) = allowed {
            let ok = list.iter().any(|h| &h.0 == actual);
            self.add(name, ok, one_of(list.iter().map(|h| h.to_string())), hex::encode(actual));
        }
    }
}

fn one_of<I: IntoIterator<Item = String>>(items: I) -> String {
    let items: Vec<String> = items.into_iter().collect();
    match items.len() {
        0 => "one of an empty list (nothing is allowed)".into(),
        1 => items[0].clone(),
        _ => format!("one of {}", items.join(", ")),
    }
}

fn evaluate_policy(
    policy: &Policy,
    evidence: &Appraisal<'_>,
    request: Option<&Request>,
    now: UnixTime,
    mode: Mode,
) -> Vec<CheckOutcome> {
    let mut c = Checks { policy: policy.label(), out: Vec::new() };
    let kinds = &policy.platform.kinds;
    let kinds_text = one_of(kinds.iter().map(ToString::to_string));
    if evidence.is_simulated() {
        c.add(
            "platform.development_mode",
            mode == Mode::Development,
            "a vault in development mode (the evidence is SIMULATED)",
            match mode {
                Mode::Development => "development mode",
                Mode::Production => "production mode",
            },
        );
    }
    match evidence.cpu {
        None => c.add("platform.kind", false, kinds_text, "no CPU evidence (keys go only to confidential VMs)"),
        Some(CpuView::Snp(s)) => {
            let kind = if s.platform == Platform::Simulated { EvidenceKind::Simulated } else { EvidenceKind::Snp };
            c.add("platform.kind", kinds.contains(&kind), kinds_text, kind.to_string());
            if let Some(products) = &policy.platform.cpu_products {
                let actual = s.product.map(CpuProduct::of);
                c.add(
                    "platform.cpu_product",
                    actual.is_some_and(|p| products.contains(&p)),
                    one_of(products.iter().map(ToString::to_string)),
                    actual.map_or("unknown".into(), |p| p.to_string()),
                );
            }
            match &policy.snp {
                Some(rules) => snp_checks(&mut c, rules, s),
                None => c.add("snp", false, "[snp] rules for SNP evidence", "this policy has no [snp] section"),
            }
        }
        Some(CpuView::Sample) => {
            c.add(
                "platform.kind",
                kinds.contains(&EvidenceKind::Simulated),
                kinds_text,
                "simulated (the KBS sample TEE)",
            );
            // A rule about the hardware cannot be met by evidence that has none.
            if policy.snp.is_some() || policy.tdx.is_some() || policy.platform.cpu_products.is_some() {
                c.add(
                    "platform.sample",
                    false,
                    "no [snp] or [tdx] rules and no cpu_products (the sample TEE makes no hardware claims)",
                    "the policy has rules about the CPU",
                );
            }
        }
        Some(CpuView::Tdx(t)) => {
            c.add("platform.kind", kinds.contains(&EvidenceKind::Tdx), kinds_text, "tdx");
            match &policy.tdx {
                Some(rules) => tdx_checks(&mut c, rules, t),
                None => c.add("tdx", false, "[tdx] rules for TDX evidence", "this policy has no [tdx] section"),
            }
        }
    }
    match &policy.gpu {
        Some(rules) => gpu_checks(&mut c, rules, &evidence.gpus, kinds.contains(&EvidenceKind::Simulated)),
        None if !evidence.gpus.is_empty() => c.add(
            "gpu",
            false,
            format!("[gpu] rules for the {} GPU(s) presented", evidence.gpus.len()),
            "this policy has no [gpu] section",
        ),
        None => {}
    }
    if let (Some(request), Some(rules)) = (request, &policy.job) {
        job_checks(&mut c, rules, request, policy.id.as_str(), now);
    }
    c.out
}

fn snp_checks(c: &mut Checks, rules: &SnpRules, s: &SnpClaims) {
    let signer = match s.signing_key {
        SigningKey::Vcek => Some(SnpSigner::Vcek),
        SigningKey::Vlek => Some(SnpSigner::Vlek),
        SigningKey::None => None,
    };
    c.add(
        "snp.signing_key",
        signer.is_some_and(|k| rules.signing_keys.contains(&k)),
        one_of(rules.signing_keys.iter().map(|k| format!("{k:?}").to_lowercase())),
        format!("{:?}", s.signing_key).to_lowercase(),
    );
    if rules.crl_required {
        c.add(
            "snp.crl",
            s.crl_checked,
            "a current AMD CRL checked, chain not revoked",
            if s.crl_checked { "checked" } else { "no CRL was checked" },
        );
    }
    if let Some(vmpl) = rules.vmpl {
        c.add("snp.vmpl", s.vmpl == u32::from(vmpl), format!("VMPL {vmpl}"), format!("VMPL {}", s.vmpl));
    }
    for bit in &rules.forbidden_policy_bits {
        let set = bit.is_set(&s.policy);
        c.add(
            format!("snp.policy.{}", bit.name()),
            !set,
            "clear",
            format!("{} (guest policy {:#x})", if set { "set" } else { "clear" }, s.policy.raw),
        );
    }
    if let Some(floors) = &rules.min_tcb {
        match s.product.map(CpuProduct::of) {
            None => c.add("snp.min_tcb", false, "a known product to look up the minimum TCB", "unknown product"),
            Some(product) => match floors.get(&product) {
                None => c.add(
                    "snp.min_tcb",
                    false,
                    format!("a minimum TCB for {product}"),
                    format!("none for {product} in this policy"),
                ),
                Some(floor) => tcb_checks(c, floor, &s.reported_tcb, &s.committed_tcb, product),
            },
        }
    }
    if let Some(min) = rules.min_guest_svn {
        c.add("snp.guest_svn", s.guest_svn >= min, format!("at least {min}"), s.guest_svn.to_string());
    }
    c.allowlist("snp.measurement", &rules.measurements, &s.measurement);
    c.allowlist("snp.host_data", &rules.host_data, &s.host_data);
    c.allowlist("snp.id_key_digest", &rules.id_key_digests, &s.id_key_digest);
    c.allowlist("snp.author_key_digest", &rules.author_key_digests, &s.author_key_digest);
    if let Some(inventory) = &rules.chip_ids {
        let site = inventory.iter().find(|(_, chips)| chips.iter().any(|chip| chip.matches(&s.chip_id)));
        let names: Vec<&str> = inventory.keys().map(|n| n.as_str()).collect();
        c.add(
            "snp.chip_id",
            site.is_some(),
            format!("a chip of the inventory of {}", names.join(", ")),
            match site {
                Some((name, _)) => format!("chip {}… of {name}", hex::encode(&s.chip_id[..8])),
                None if s.chip_id.iter().all(|b| *b == 0) => "a masked (zero) chip id".into(),
                None => format!("chip {} (not in the inventory)", hex::encode(s.chip_id)),
            },
        );
    }
}

/// One check per component: the reported TCB (what the signing key was derived for) and the
/// committed TCB (what the platform cannot roll back below) must both reach the floor.
fn tcb_checks(c: &mut Checks, floor: &TcbFloor, reported: &Tcb, committed: &Tcb, product: CpuProduct) {
    let parts = [
        ("bootloader", Some(floor.bootloader), Some(reported.bootloader), Some(committed.bootloader)),
        ("tee", Some(floor.tee), Some(reported.tee), Some(committed.tee)),
        ("snp", Some(floor.snp), Some(reported.snp), Some(committed.snp)),
        ("microcode", Some(floor.microcode), Some(reported.microcode), Some(committed.microcode)),
        ("fmc", floor.fmc, reported.fmc, committed.fmc),
    ];
    let show = |v: Option<u8>| v.map_or("none".to_owned(), |v| v.to_string());
    for (name, min, r, k) in parts {
        if min.is_none() && r.is_none() && k.is_none() {
            continue;
        }
        let actual = format!("reported {}, committed {}", show(r), show(k));
        match min {
            Some(min) => c.add(
                format!("snp.min_tcb.{name}"),
                r.is_some_and(|r| r >= min) && k.is_some_and(|k| k >= min),
                format!("at least {min}"),
                actual,
            ),
            None => c.add(
                format!("snp.min_tcb.{name}"),
                false,
                format!("a minimum {name} for {product} in the policy"),
                actual,
            ),
        }
    }
}

fn tdx_checks(c: &mut Checks, rules: &TdxRules, t: &TdxClaims) {
    let statuses = one_of(rules.tcb_statuses.iter().map(|s| s.name().to_owned()));
    let status_ok = t.tcb_status.as_deref().is_some_and(|s| rules.tcb_statuses.iter().any(|r| r.name() == s));
    c.add(
        "tdx.tcb_status",
        status_ok,
        statuses,
        t.tcb_status.clone().unwrap_or_else(|| "unknown (quote verified without collateral)".into()),
    );
    let unexpected: Vec<&String> =
        t.advisory_ids.iter().filter(|a| !rules.allowed_advisories.iter().any(|r| r.as_str() == *a)).collect();
    c.add(
        "tdx.advisories",
        unexpected.is_empty(),
        if rules.allowed_advisories.is_empty() {
            "no advisories".to_owned()
        } else {
            format!("only {}", rules.allowed_advisories.iter().map(|a| a.as_str()).collect::<Vec<_>>().join(", "))
        },
        if t.advisory_ids.is_empty() { "none".to_owned() } else { t.advisory_ids.join(", ") },
    );
    let Some(td) = &t.td else {
        c.add("tdx.td", false, "a TD quote", format!("a {} quote without a TD report", t.tee));
        return;
    };
    if !rules.allow_debug {
        c.add(
            "tdx.debug",
            !td.td_attributes.debug,
            "DEBUG attribute clear",
            if td.td_attributes.debug { "set" } else { "clear" },
        );
    }
    c.allowlist("tdx.mr_td", &rules.mr_td, &td.mr_td);
    c.allowlist("tdx.mr_config_id", &rules.mr_config_id, &td.mr_config_id);
    c.allowlist("tdx.mr_owner", &rules.mr_owner, &td.mr_owner);
    c.allowlist("tdx.mr_seam", &rules.mr_seam, &td.mr_seam);
    c.allowlist("tdx.rtmr0", &rules.rtmr0, &td.rtmr0);
    c.allowlist("tdx.rtmr1", &rules.rtmr1, &td.rtmr1);
    c.allowlist("tdx.rtmr2", &rules.rtmr2, &td.rtmr2);
    c.allowlist("tdx.rtmr3", &rules.rtmr3, &td.rtmr3);
}

/// Whether the GPU's driver and VBIOS measurements both matched NVIDIA-signed RIMs.
fn rims_matched(g: &GpuClaims) -> bool {
    g.driver_rim_matched && g.vbios_rim_matched
}

fn rim_text(g: &GpuClaims) -> String {
    let state = |m: bool| if m { "matched" } else { "not matched" };
    format!("driver RIM {}, VBIOS RIM {}", state(g.driver_rim_matched), state(g.vbios_rim_matched))
}

fn gpu_checks(c: &mut Checks, rules: &GpuRules, gpus: &[&GpuClaims], simulated_allowed: bool) {
    let n = gpus.len();
    if let Some(count) = rules.count {
        c.add("gpu.count", n == count as usize, format!("exactly {count} GPU(s)"), format!("{n} GPU(s)"));
    }
    if let Some(min) = rules.min_count {
        c.add("gpu.min_count", n >= min as usize, format!("at least {min} GPU(s)"), format!("{n} GPU(s)"));
    }
    for (i, g) in gpus.iter().enumerate() {
        let p = format!("gpu[{i}]");
        if g.platform == Platform::Simulated {
            c.add(
                format!("{p}.platform"),
                simulated_allowed,
                "an NVIDIA GPU (simulated not listed in platform.kinds)",
                "simulated",
            );
        }
        if let Some(archs) = &rules.architectures {
            let actual = g.arch.map(GpuArch::of);
            c.add(
                format!("{p}.arch"),
                actual.is_some_and(|a| archs.contains(&a)),
                one_of(archs.iter().map(|a| format!("{a:?}").to_lowercase())),
                actual.map_or("unknown".into(), |a| format!("{a:?}").to_lowercase()),
            );
        }
        if rules.cc_mode == CcMode::On {
            let (ok, actual) = match &g.cc_mode {
                Some(mode) => (mode == "on", mode.clone()),
                None => (
                    rims_matched(g),
                    format!("not stated by SPDM evidence; {} (a match is required to establish it)", rim_text(g)),
                ),
            };
            c.add(format!("{p}.cc_mode"), ok, "on", actual);
        }
        if rules.dev_tools == DevTools::Off {
            let (ok, actual) = match g.dev_tools_mode {
                Some(on) => (!on, if on { "on".to_owned() } else { "off".to_owned() }),
                None => (
                    rims_matched(g),
                    format!("not stated by SPDM evidence; {} (a match is required to establish it)", rim_text(g)),
                ),
            };
            c.add(format!("{p}.dev_tools"), ok, "off", actual);
        }
        if let Some(versions) = &rules.driver_versions {
            let actual = g.driver_version.clone();
            c.add(
                format!("{p}.driver_version"),
                actual.as_ref().is_some_and(|v| versions.iter().any(|a| a == v)),
                one_of(versions.iter().cloned()),
                actual.unwrap_or_else(|| "not stated".into()),
            );
        }
        if let Some(versions) = &rules.vbios_versions {
            let actual = g.vbios_version.clone();
            c.add(
                format!("{p}.vbios_version"),
                actual.as_ref().is_some_and(|v| versions.iter().any(|a| a.eq_ignore_ascii_case(v))),
                one_of(versions.iter().cloned()),
                actual.unwrap_or_else(|| "not stated".into()),
            );
        }
        if rules.rim_match {
            c.add(format!("{p}.rim_match"), rims_matched(g), "driver and VBIOS RIMs matched", rim_text(g));
        }
    }
}

fn digest_rule(c: &mut Checks, name: &str, allowed: &Option<Vec<Digest>>, actual: &Option<Digest>) {
    if let Some(list) = allowed {
        let ok = actual.as_ref().is_some_and(|a| list.contains(a));
        c.add(
            name,
            ok,
            one_of(list.iter().map(ToString::to_string)),
            actual.as_ref().map_or("not stated in the job manifest".into(), ToString::to_string),
        );
    }
}

fn job_checks(c: &mut Checks, rules: &JobRules, request: &Request, policy_id: &str, now: UnixTime) {
    let job = &request.job;
    digest_rule(c, "job.trainer_measurement", &rules.trainer_measurements, &job.trainer_measurement);
    digest_rule(c, "job.base_model", &rules.base_models, &job.base_model);
    if let Some(max) = rules.max_epochs {
        c.add(
            "job.epochs",
            job.epochs.is_some_and(|e| e <= max),
            format!("at most {max}"),
            job.epochs.map_or("not stated in the job manifest".into(), |e| e.to_string()),
        );
    }
    if let Some(max) = rules.max_steps {
        c.add(
            "job.steps",
            job.steps.is_some_and(|s| s <= max),
            format!("at most {max}"),
            job.steps.map_or("not stated in the job manifest".into(), |s| s.to_string()),
        );
    }
    if !rules.output_recipients.is_empty() {
        let missing: Vec<&str> = rules
            .output_recipients
            .iter()
            .map(|k| k.as_str())
            .filter(|k| !job.output_recipients.iter().any(|r| r.trim() == *k))
            .collect();
        c.add(
            "job.output_recipients",
            missing.is_empty(),
            format!(
                "outputs sealed to {}",
                rules.output_recipients.iter().map(|k| short_key(k.as_str())).collect::<Vec<_>>().join(", ")
            ),
            if missing.is_empty() {
                "all required recipients present".to_owned()
            } else {
                format!("missing {}", missing.iter().map(|k| short_key(k)).collect::<Vec<_>>().join(", "))
            },
        );
    }
    if let Some(max) = rules.max_releases {
        let prior = request.prior_releases.get(policy_id).copied().unwrap_or(0);
        c.add(
            "job.releases",
            prior < max,
            format!("fewer than {max} releases so far"),
            format!("{prior} release(s) so far"),
        );
    }
    if let Some(t) = rules.not_before {
        c.add("job.not_before", now >= t.0, format!("not before {}", t.0), now.to_string());
    }
    if let Some(t) = rules.not_after {
        c.add("job.not_after", now <= t.0, format!("not after {}", t.0), now.to_string());
    }
}

fn short_key(k: &str) -> String {
    if k.len() > 28 { format!("{}…", &k[..28]) } else { k.to_owned() }
}
