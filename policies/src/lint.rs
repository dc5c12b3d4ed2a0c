//! Linting (contradictions and weak spots) and plain-words explanations of policies.

use std::fmt;

use serde::Serialize;

use crate::document::{CcMode, CpuProduct, DevTools, EvidenceKind, Policy, PolicyBit, SnpSigner, TcbStatus};

/// How serious a finding is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    /// A contradiction: some or all requests the policy seems to allow are always denied.
    Error,
    /// A weak spot a reviewer should see.
    Warning,
}

/// One lint finding.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Finding {
    /// Error or warning.
    pub severity: Severity,
    /// The key concerned, e.g. `snp.min_tcb`.
    pub key: String,
    /// What is wrong, in plain words.
    pub message: String,
}

impl fmt::Display for Finding {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let level = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
        };
        write!(f, "{level}: {}: {}", self.key, self.message)
    }
}

struct Findings(Vec<Finding>);

impl Findings {
    fn error(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Finding { severity: Severity::Error, key: key.into(), message: message.into() });
    }

    fn warn(&mut self, key: &str, message: impl Into<String>) {
        self.0.push(Finding { severity: Severity::Warning, key: key.into(), message: message.into() });
    }

    fn empty_list<T>(&mut self, key: &str, list: &Option<Vec<T>>) {
        if list.as_ref().is_some_and(Vec::is_empty) {
            self.error(
                key,
                "an empty list allows nothing; remove the key to allow any value, or list the allowed values",
            );
        }
    }
}

/// Contradictions (errors) and weak spots (warnings) of `policy`, errors first.
pub fn lint(policy: &Policy) -> Vec<Finding> {
    let mut f = Findings(Vec::new());
    let kinds = &policy.platform.kinds;
    let snp_like = kinds.contains(&EvidenceKind::Snp) || kinds.contains(&EvidenceKind::Simulated);
    let scope = &policy.scope;
    if scope.datasets.is_empty() && scope.dataset_labels.is_empty() {
        f.error("scope", "neither datasets nor dataset_labels are given: the policy applies to no request");
    }
    if kinds.is_empty() {
        f.error("platform.kinds", "no evidence kind is allowed: every request is denied");
    }
    if kinds.contains(&EvidenceKind::Simulated) {
        f.warn(
            "platform.kinds",
            "\"simulated\" evidence is honoured only while the vault runs in development mode; never approve this for real data",
        );
    }
    f.empty_list("platform.cpu_products", &policy.platform.cpu_products);
    if policy.platform.cpu_products.is_some() && !snp_like {
        f.warn(
            "platform.cpu_products",
            "AMD products are listed but SNP evidence is not allowed: this rule never applies",
        );
    }
    if snp_like && policy.snp.is_none() {
        f.error("snp", "SNP evidence is allowed but there is no [snp] section: SNP evidence is always denied");
    }
    if kinds.contains(&EvidenceKind::Tdx) && policy.tdx.is_none() {
        f.error("tdx", "TDX evidence is allowed but there is no [tdx] section: TDX evidence is always denied");
    }
    if policy.snp.is_some() && !snp_like {
        f.warn("snp", "[snp] rules are given but SNP evidence is not in platform.kinds: they never apply");
    }
    if policy.tdx.is_some() && !kinds.contains(&EvidenceKind::Tdx) {
        f.warn("tdx", "[tdx] rules are given but \"tdx\" is not in platform.kinds: they never apply");
    }
    if let (Some(snp), true) = (&policy.snp, snp_like) {
        if snp.signing_keys.is_empty() {
            f.error("snp.signing_keys", "no signing key is allowed: every SNP report is denied");
        }
        if !snp.forbidden_policy_bits.contains(&PolicyBit::Debug) {
            f.warn("snp.forbidden_policy_bits", "debug is not forbidden: the host could read the guest's memory");
        }
        if !snp.forbidden_policy_bits.contains(&PolicyBit::MigrateMa) {
            f.warn(
                "snp.forbidden_policy_bits",
                "migrate_ma is not forbidden: a migration agent could export the guest",
            );
        }
        match &snp.min_tcb {
            None => f.warn("snp.min_tcb", "no minimum TCB: firmware with known vulnerabilities is accepted"),
            Some(floors) => {
                let allowed: Vec<CpuProduct> = policy
                    .platform
                    .cpu_products
                    .clone()
                    .unwrap_or_else(|| vec![CpuProduct::Milan, CpuProduct::Genoa, CpuProduct::Turin]);
                for product in &allowed {
                    if !floors.contains_key(product) {
                        f.error(
                            "snp.min_tcb",
                            format!(
                                "{product} is allowed but has no minimum TCB: {product} evidence is always denied (add [snp.min_tcb.{product}] or restrict platform.cpu_products)"
                            ),
                        );
                    }
                }
                for (product, floor) in floors {
                    let key = format!("snp.min_tcb.{product}");
                    if *product == CpuProduct::Turin && floor.fmc.is_none() {
                        f.error(&key, "Turin TCBs have an FMC component: add fmc, or Turin evidence is always denied");
                    }
                    if *product != CpuProduct::Turin && floor.fmc.is_some() {
                        f.error(&key, format!("{product} TCBs have no FMC component: remove fmc, or {product} evidence is always denied"));
                    }
                    if !allowed.contains(product) {
                        f.warn(&key, format!("{product} is not in platform.cpu_products: this minimum never applies"));
                    }
                }
            }
        }
        f.empty_list("snp.measurements", &snp.measurements);
        f.empty_list("snp.host_data", &snp.host_data);
        f.empty_list("snp.id_key_digests", &snp.id_key_digests);
        f.empty_list("snp.author_key_digests", &snp.author_key_digests);
        if snp.measurements.is_none() {
            f.warn("snp.measurements", "any launch measurement: any guest image can receive keys");
        }
        if let Some(inventory) = &snp.chip_ids {
            if inventory.is_empty() {
                f.error("snp.chip_ids", "an empty inventory allows no chip");
            }
            for (site, chips) in inventory {
                if chips.is_empty() {
                    f.error(&format!("snp.chip_ids.{site}"), "no chips listed for this datacentre");
                }
            }
        }
    }
    if let (Some(tdx), true) = (&policy.tdx, kinds.contains(&EvidenceKind::Tdx)) {
        if tdx.tcb_statuses.is_empty() {
            f.error("tdx.tcb_statuses", "no TCB status is allowed: every TDX quote is denied");
        }
        if tdx.tcb_statuses.iter().any(|s| matches!(s, TcbStatus::OutOfDate | TcbStatus::OutOfDateConfigurationNeeded))
        {
            f.warn("tdx.tcb_statuses", "out-of-date platforms are accepted: known vulnerabilities are not patched");
        }
        if tdx.allow_debug {
            f.warn("tdx.allow_debug", "debug TDs are accepted: the host could read the guest's memory");
        }
        for (key, list) in [
            ("tdx.mr_td", &tdx.mr_td),
            ("tdx.mr_config_id", &tdx.mr_config_id),
            ("tdx.mr_owner", &tdx.mr_owner),
            ("tdx.mr_seam", &tdx.mr_seam),
            ("tdx.rtmr0", &tdx.rtmr0),
            ("tdx.rtmr1", &tdx.rtmr1),
            ("tdx.rtmr2", &tdx.rtmr2),
            ("tdx.rtmr3", &tdx.rtmr3),
        ] {
            f.empty_list(key, list);
        }
        if tdx.mr_td.is_none() {
            f.warn("tdx.mr_td", "any MRTD: any TD image can receive keys");
        }
    }
    match &policy.gpu {
        None => f.warn("gpu", "no [gpu] section: evidence with GPUs is denied; GPU-less machines are allowed"),
        Some(gpu) => {
            if let (Some(count), Some(min)) = (gpu.count, gpu.min_count) {
                if count < min {
                    f.error("gpu.count", format!("exactly {count} GPU(s) and at least {min} cannot both hold"));
                } else {
                    f.warn("gpu.min_count", "both count and min_count are given: count alone decides");
                }
            }
            if gpu.count.is_none() && gpu.min_count.is_none() {
                f.warn("gpu.count", "no GPU count: machines without any GPU are allowed");
            }
            f.empty_list("gpu.architectures", &gpu.architectures);
            f.empty_list("gpu.driver_versions", &gpu.driver_versions);
            f.empty_list("gpu.vbios_versions", &gpu.vbios_versions);
            if gpu.cc_mode == CcMode::Any {
                f.warn("gpu.cc_mode", "CC mode is not required: GPU memory and transfers may be in the clear");
            }
            if gpu.dev_tools == DevTools::Any {
                f.warn("gpu.dev_tools", "developer tools are not forbidden: the GPU's state can be inspected");
            }
            if !gpu.rim_match && gpu.driver_versions.is_none() {
                f.warn(
                    "gpu.rim_match",
                    "neither RIM match nor driver versions are required: any GPU firmware is accepted",
                );
            }
        }
    }
    match &policy.job {
        None => f.warn("job", "no [job] section: any trainer, model and hyper-parameters, without limit on releases"),
        Some(job) => {
            f.empty_list("job.trainer_measurements", &job.trainer_measurements);
            f.empty_list("job.base_models", &job.base_models);
            if let (Some(nb), Some(na)) = (job.not_before, job.not_after)
                && nb > na
            {
                f.error(
                    "job.not_after",
                    format!("the window is empty: not_before {} is after not_after {}", nb.0, na.0),
                );
            }
            if job.max_releases == Some(0) {
                f.error("job.max_releases", "0 releases allowed: every request is denied");
            }
            if job.max_epochs == Some(0) || job.max_steps == Some(0) {
                f.error("job", "a bound of 0 epochs or steps denies every training job");
            }
            if job.trainer_measurements.is_none() {
                f.warn("job.trainer_measurements", "any trainer may receive the key");
            }
        }
    }
    f.0.sort_by_key(|x| x.severity);
    f.0
}

fn list<T: fmt::Display>(items: &[T], sep: &str) -> String {
    let items: Vec<String> = items.iter().map(ToString::to_string).collect();
    match items.len() {
        0 => "nothing".into(),
        1 => items[0].clone(),
        n => format!("{} {sep} {}", items[..n - 1].join(", "), items[n - 1]),
    }
}

fn allowlist<T>(what: &str, items: &Option<Vec<T>>) -> Option<String> {
    items.as_ref().map(|l| match l.len() {
        1 => format!("{what} must be the one listed"),
        n => format!("{what} must be one of the {n} listed"),
    })
}

/// What `policy` allows, in plain words: one paragraph per aspect.
pub fn explain(policy: &Policy) -> Vec<String> {
    let mut out = Vec::new();
    out.push(format!(
        "Policy \"{}\" version {} of tenant \"{}\": {}",
        policy.id,
        policy.version,
        policy.tenant,
        policy.description.trim()
    ));
    let scope = &policy.scope;
    let mut covered = Vec::new();
    if scope.datasets.iter().any(|d| d.as_str() == "*") {
        covered.push("every dataset of the tenant".to_owned());
    } else if !scope.datasets.is_empty() {
        covered
            .push(format!("datasets {}", list(&scope.datasets.iter().map(|d| d.as_str()).collect::<Vec<_>>(), "and")));
    }
    if !scope.dataset_labels.is_empty() {
        covered.push(format!("datasets labelled {}", list(&scope.dataset_labels, "or")));
    }
    let jobs = if scope.job_kinds.is_empty() {
        "jobs of any kind".to_owned()
    } else {
        format!("{} jobs", list(&scope.job_kinds, "or"))
    };
    out.push(format!(
        "It governs {} for {jobs}. Every policy that governs a request must allow it.",
        list(&covered, "and")
    ));

    let kinds = &policy.platform.kinds;
    let mut hw: Vec<String> = kinds
        .iter()
        .filter(|k| **k != EvidenceKind::Simulated)
        .map(|k| match k {
            EvidenceKind::Snp => "AMD SEV-SNP".to_owned(),
            _ => "Intel TDX".to_owned(),
        })
        .collect();
    if hw.is_empty() {
        hw.push("no real hardware".into());
    }
    let mut platform = format!("Keys go only to confidential VMs on {}", list(&hw, "or"));
    if let Some(products) = &policy.platform.cpu_products {
        platform.push_str(&format!(" with {} processors", list(products, "or")));
    }
    platform.push('.');
    if kinds.contains(&EvidenceKind::Simulated) {
        platform.push_str(" SIMULATED evidence is accepted too, but only while the vault runs in development mode.");
    } else {
        platform.push_str(" Simulated evidence is always refused.");
    }
    out.push(platform);

    if let Some(snp) = &policy.snp {
        let mut s = vec![format!(
            "the report must be signed by a {}",
            list(
                &snp.signing_keys
                    .iter()
                    .map(|k| match k {
                        SnpSigner::Vcek => "VCEK (per-chip key)",
                        SnpSigner::Vlek => "VLEK (cloud-provider key)",
                    })
                    .collect::<Vec<_>>(),
                "or"
            )
        )];
        if snp.crl_required {
            s.push("an AMD CRL must have been checked".into());
        }
        if let Some(v) = snp.vmpl {
            s.push(format!("the report must come from VMPL {v}"));
        }
        if !snp.forbidden_policy_bits.is_empty() {
            s.push(format!(
                "the guest policy must not allow {}",
                list(
                    &snp.forbidden_policy_bits
                        .iter()
                        .map(|b| match b {
                            PolicyBit::Debug => "debugging",
                            PolicyBit::MigrateMa => "a migration agent",
                            PolicyBit::Smt => "SMT",
                            PolicyBit::CxlAllow => "CXL",
                            PolicyBit::MultiSocket => "more than one socket",
                        })
                        .collect::<Vec<_>>(),
                    "or"
                )
            ));
        }
        if let Some(floors) = &snp.min_tcb {
            for (product, t) in floors {
                s.push(format!(
                    "on {product} the reported and committed TCB must be at least boot loader {}, TEE {}, SNP {}, microcode {}{}",
                    t.bootloader,
                    t.tee,
                    t.snp,
                    t.microcode,
                    t.fmc.map(|f| format!(", FMC {f}")).unwrap_or_default()
                ));
            }
        }
        if let Some(min) = snp.min_guest_svn {
            s.push(format!("the guest SVN must be at least {min}"));
        }
        s.extend(allowlist("the launch measurement", &snp.measurements));
        s.extend(allowlist("HOST_DATA", &snp.host_data));
        s.extend(allowlist("the ID key digest", &snp.id_key_digests));
        s.extend(allowlist("the author key digest", &snp.author_key_digests));
        if let Some(inv) = &snp.chip_ids {
            let sites: Vec<String> = inv.iter().map(|(n, c)| format!("{n} ({} chips)", c.len())).collect();
            s.push(format!("the chip must be in the inventory of {}", list(&sites, "or")));
        }
        out.push(format!("SEV-SNP: {}.", s.join("; ")));
    }
    if let Some(tdx) = &policy.tdx {
        let mut s = vec![format!(
            "Intel must rate the platform's TCB {}",
            list(&tdx.tcb_statuses.iter().map(|t| t.name()).collect::<Vec<_>>(), "or")
        )];
        if tdx.allowed_advisories.is_empty() {
            s.push("no security advisory may apply".into());
        } else {
            s.push(format!(
                "no advisory other than {} may apply",
                list(&tdx.allowed_advisories.iter().map(|a| a.as_str()).collect::<Vec<_>>(), "and")
            ));
        }
        s.push(if tdx.allow_debug { "debug TDs are accepted".into() } else { "debug TDs are refused".into() });
        s.extend(allowlist("MRTD", &tdx.mr_td));
        s.extend(allowlist("MRCONFIGID", &tdx.mr_config_id));
        s.extend(allowlist("MROWNER", &tdx.mr_owner));
        s.extend(allowlist("MRSEAM", &tdx.mr_seam));
        s.extend(allowlist("RTMR0", &tdx.rtmr0));
        s.extend(allowlist("RTMR1", &tdx.rtmr1));
        s.extend(allowlist("RTMR2", &tdx.rtmr2));
        s.extend(allowlist("RTMR3", &tdx.rtmr3));
        out.push(format!("TDX: {}.", s.join("; ")));
    }
    match &policy.gpu {
        None => out.push("GPUs: none may be attached (no [gpu] section).".into()),
        Some(g) => {
            let mut s = Vec::new();
            match (g.count, g.min_count) {
                (Some(c), _) => s.push(format!("exactly {c} GPU(s)")),
                (None, Some(m)) => s.push(format!("at least {m} GPU(s)")),
                (None, None) => s.push("any number of GPUs, including none".into()),
            }
            if let Some(a) = &g.architectures {
                s.push(format!("{} only", list(&a.iter().map(|x| format!("{x:?}")).collect::<Vec<_>>(), "or")));
            }
            if g.cc_mode == CcMode::On {
                s.push("confidential-computing mode on".into());
            }
            if g.dev_tools == DevTools::Off {
                s.push("developer tools off".into());
            }
            if g.cc_mode == CcMode::On || g.dev_tools == DevTools::Off {
                s.push("(GPU evidence does not state these modes, so they are established by NVIDIA-signed driver and VBIOS RIMs matching the measurements)".into());
            }
            if let Some(v) = &g.driver_versions {
                s.push(format!("driver {}", list(v, "or")));
            }
            if let Some(v) = &g.vbios_versions {
                s.push(format!("VBIOS {}", list(v, "or")));
            }
            if g.rim_match {
                s.push("every measurement must match NVIDIA's signed driver and VBIOS RIMs".into());
            }
            out.push(format!("GPUs: {}.", s.join("; ")));
        }
    }
    match &policy.job {
        None => out.push("Jobs: any trainer, base model and hyper-parameters; no limit on releases.".into()),
        Some(j) => {
            let mut s = Vec::new();
            s.extend(allowlist("the trainer measurement", &j.trainer_measurements));
            s.extend(allowlist("the base model", &j.base_models));
            if let Some(e) = j.max_epochs {
                s.push(format!("at most {e} epochs"));
            }
            if let Some(st) = j.max_steps {
                s.push(format!("at most {st} steps"));
            }
            if !j.output_recipients.is_empty() {
                s.push(format!("outputs must be sealed to {} required key(s)", j.output_recipients.len()));
            }
            if let Some(m) = j.max_releases {
                s.push(format!("at most {m} key releases under this policy"));
            }
            if let Some(t) = j.not_before {
                s.push(format!("not before {}", t.0));
            }
            if let Some(t) = j.not_after {
                s.push(format!("not after {}", t.0));
            }
            if s.is_empty() {
                s.push("no constraint".into());
            }
            out.push(format!("Jobs: {}.", s.join("; ")));
        }
    }
    out.push("Anything not described above is denied. A denial lists every check that failed.".into());
    out
}
