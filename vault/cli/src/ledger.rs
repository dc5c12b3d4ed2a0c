//! Key-release decisions in the transparency log: evidence bundles made from the raw evidence a
//! worker sent (the vault's side, [`Recorder`]) and read back into verifier inputs (the
//! auditor's side, [`RawEvidence::from_bundle`]). Both sides use the one mapping here, so what is
//! recorded is exactly what an audit re-verifies.
//!
//! The recorder is what `coffre demo` and `coffre bench log` run as the vault today; the vault
//! service records its decisions through the same steps.

// Until the vault service exists, only the simulated-TEE demo and benchmark record decisions.
#![cfg_attr(not(feature = "simulated"), allow(dead_code))]

use std::collections::BTreeMap;

use coffre_attestation::UnixTime;
use coffre_attestation::composite::{CompositeEvidence, CompositeVerifier, CpuEvidence, GpuInput, release_report_data};
use coffre_attestation::nvidia::GpuEvidence;
use coffre_attestation::snp::SnpEvidence;
use coffre_attestation::tdx::TdxCollateral;
use coffre_log::bundle::{self, Bundle, BundledPolicy, Decision as BundleDecision, Item};
use coffre_log::{BlobStore, Digest, Entry, EntryStore, FailedCheck, Log, PolicyVersion};
use coffre_policies::{
    ActivePolicy, Approval, ApproverSet, CheckOutcome, Decision, Mode, Policy, PolicyRef, Request, evaluate,
};

use crate::error::{CliError, CliResult};
use crate::recorded::{Verified, verify_composite};

/// Bundle item roles.
pub mod role {
    pub const SNP_REPORT: &str = "cpu.snp.report";
    pub const SNP_VEK: &str = "cpu.snp.vek";
    pub const SNP_CHAIN: &str = "cpu.snp.chain";
    pub const SNP_CRL: &str = "cpu.snp.crl";
    pub const TDX_QUOTE: &str = "cpu.tdx.quote";
    pub const TDX_COLLATERAL: &str = "cpu.tdx.collateral";
    pub const GPU_REPORT: &str = "gpu.report";
    pub const GPU_CHAIN: &str = "gpu.chain";
    pub const GPU_RIM: &str = "gpu.rim";
}

/// CPU evidence as received: every byte the verifier uses.
#[derive(Debug, Clone)]
pub enum RawCpu {
    /// SEV-SNP: report, VCEK/VLEK, intermediates (DER, each), CRL.
    Snp { report: Vec<u8>, vek: Option<Vec<u8>>, chain: Vec<Vec<u8>>, crl: Option<Vec<u8>> },
    /// TDX: the quote and its collateral (dcap-qvl JSON).
    Tdx { quote: Vec<u8>, collateral: Vec<u8> },
}

/// One GPU's evidence as received.
#[derive(Debug, Clone)]
pub struct RawGpu {
    pub report: Vec<u8>,
    /// The device chain, one DER certificate each.
    pub chain: Vec<Vec<u8>>,
    pub rims: Vec<Vec<u8>>,
}

/// A worker's evidence as received.
#[derive(Debug, Clone)]
pub struct RawEvidence {
    pub cpu: RawCpu,
    pub gpus: Vec<RawGpu>,
}

impl RawEvidence {
    /// Every item, in bundle order: (role, GPU index, bytes).
    pub fn items(&self) -> Vec<(&'static str, Option<u32>, &[u8])> {
        let mut out: Vec<(&'static str, Option<u32>, &[u8])> = Vec::new();
        match &self.cpu {
            RawCpu::Snp { report, vek, chain, crl } => {
                out.push((role::SNP_REPORT, None, report));
                out.extend(vek.iter().map(|v| (role::SNP_VEK, None, v.as_slice())));
                out.extend(chain.iter().map(|c| (role::SNP_CHAIN, None, c.as_slice())));
                out.extend(crl.iter().map(|c| (role::SNP_CRL, None, c.as_slice())));
            }
            RawCpu::Tdx { quote, collateral } => {
                out.push((role::TDX_QUOTE, None, quote));
                out.push((role::TDX_COLLATERAL, None, collateral));
            }
        }
        for (i, g) in self.gpus.iter().enumerate() {
            let i = Some(i as u32);
            out.push((role::GPU_REPORT, i, &g.report));
            out.extend(g.chain.iter().map(|c| (role::GPU_CHAIN, i, c.as_slice())));
            out.extend(g.rims.iter().map(|r| (role::GPU_RIM, i, r.as_slice())));
        }
        out
    }

    /// Reads the evidence back from a bundle; `blob` fetches (and checks) each item.
    pub fn from_bundle(b: &Bundle, mut blob: impl FnMut(&Digest) -> Result<Vec<u8>, String>) -> Result<Self, String> {
        let mut all = |role: &str, gpu: Option<u32>| -> Result<Vec<Vec<u8>>, String> {
            b.items(role, gpu).map(&mut blob).collect()
        };
        let one = |mut v: Vec<Vec<u8>>, role: &str| -> Result<Option<Vec<u8>>, String> {
            if v.len() > 1 {
                return Err(format!("more than one {role} item"));
            }
            Ok(v.pop())
        };
        let known = [
            role::SNP_REPORT,
            role::SNP_VEK,
            role::SNP_CHAIN,
            role::SNP_CRL,
            role::TDX_QUOTE,
            role::TDX_COLLATERAL,
            role::GPU_REPORT,
            role::GPU_CHAIN,
            role::GPU_RIM,
        ];
        if let Some(i) = b.items.iter().find(|i| !known.contains(&i.role.as_str())) {
            return Err(format!("unknown evidence role {:?}", i.role));
        }
        let snp = one(all(role::SNP_REPORT, None)?, role::SNP_REPORT)?;
        let tdx = one(all(role::TDX_QUOTE, None)?, role::TDX_QUOTE)?;
        let cpu = match (snp, tdx) {
            (Some(report), None) => RawCpu::Snp {
                report,
                vek: one(all(role::SNP_VEK, None)?, role::SNP_VEK)?,
                chain: all(role::SNP_CHAIN, None)?,
                crl: one(all(role::SNP_CRL, None)?, role::SNP_CRL)?,
            },
            (None, Some(quote)) => RawCpu::Tdx {
                quote,
                collateral: one(all(role::TDX_COLLATERAL, None)?, role::TDX_COLLATERAL)?
                    .ok_or("a TDX quote without its collateral")?,
            },
            _ => return Err("the bundle must hold exactly one CPU report or quote".into()),
        };
        let mut gpus = Vec::new();
        for i in 0..b.gpu_count() {
            let report =
                one(all(role::GPU_REPORT, Some(i))?, role::GPU_REPORT)?.ok_or(format!("GPU {i} has no report"))?;
            gpus.push(RawGpu { report, chain: all(role::GPU_CHAIN, Some(i))?, rims: all(role::GPU_RIM, Some(i))? });
        }
        Ok(Self { cpu, gpus })
    }

    /// The verifier's input.
    pub fn composite(&self) -> Result<CompositeEvidence, String> {
        let cpu = match &self.cpu {
            RawCpu::Snp { report, vek, chain, crl } => {
                let mut e = SnpEvidence::from_report_bytes(report)?;
                if let Some(v) = vek {
                    e = e.with_vek(v)?;
                }
                for c in chain {
                    e = e.with_chain(c)?;
                }
                if let Some(c) = crl {
                    e = e.with_crl(c)?;
                }
                CpuEvidence::Snp(e)
            }
            RawCpu::Tdx { quote, collateral } => CpuEvidence::Tdx {
                quote: coffre_attestation::tdx::quote::from_bytes(quote),
                collateral: TdxCollateral::from_dcap_json(collateral)?,
            },
        };
        let gpus = self
            .gpus
            .iter()
            .map(|g| {
                Ok(GpuInput { evidence: GpuEvidence::new(g.report.clone(), &g.chain.concat())?, rims: g.rims.clone() })
            })
            .collect::<Result<_, String>>()?;
        Ok(CompositeEvidence { cpu, gpus })
    }
}

/// The job manifest a release binds: the request's canonical JSON, without the release counts
/// (the vault adds those from its log).
pub fn job_manifest(request: &Request) -> Vec<u8> {
    let mut r = request.clone();
    r.prior_releases.clear();
    serde_json::to_vec(&r).unwrap_or_default()
}

/// A policy reference as the log writes it.
pub fn policy_version(r: &PolicyRef) -> PolicyVersion {
    PolicyVersion { id: r.id.clone(), version: r.version, digest: r.digest.clone() }
}

/// Failed checks as the log writes them.
pub fn failed_checks(checks: &[CheckOutcome]) -> Vec<FailedCheck> {
    checks
        .iter()
        .filter(|c| !c.passed)
        .map(|c| FailedCheck {
            policy: c.policy.clone(),
            name: c.name.clone(),
            expected: c.expected.clone(),
            actual: c.actual.clone(),
        })
        .collect()
}

/// Log times are Unix seconds, never before 1970.
pub fn secs(at: UnixTime) -> u64 {
    u64::try_from(at.0).unwrap_or(0)
}

fn log_err(e: impl std::fmt::Display) -> CliError {
    CliError::new(format!("transparency log: {e}"))
}

/// The outcome of one recorded request.
#[derive(Debug)]
pub struct Recorded {
    pub index: u64,
    pub allowed: bool,
    pub failed: Vec<FailedCheck>,
}

/// The vault's side of the log: every decision appended before any key would leave.
pub struct Recorder<S> {
    pub log: Log<S>,
    verifier: CompositeVerifier,
    mode: Mode,
    sets: BTreeMap<String, ApproverSet>,
    active: Vec<ActivePolicy>,
    documents: BTreeMap<String, Digest>,
    releases: BTreeMap<(String, String), u64>,
}

impl<S: EntryStore + BlobStore> Recorder<S> {
    /// A recorder in production mode over `log`, verifying with `verifier`.
    pub fn new(log: Log<S>, verifier: CompositeVerifier) -> Self {
        Self {
            log,
            verifier,
            mode: Mode::Production,
            sets: BTreeMap::new(),
            active: Vec::new(),
            documents: BTreeMap::new(),
            releases: BTreeMap::new(),
        }
    }

    fn append(&mut self, entry: &Entry) -> CliResult<u64> {
        self.log.append(entry).map_err(log_err)
    }

    fn blob(&mut self, bytes: &[u8]) -> CliResult<Digest> {
        self.log.store_mut().put_blob(bytes).map_err(log_err)
    }

    /// Turns development mode on (logged first).
    pub fn enable_development_mode(&mut self, at: UnixTime) -> CliResult<u64> {
        let i = self.append(&Entry::ConfigChanged {
            at: secs(at),
            setting: "development_mode".into(),
            old: "off".into(),
            new: "on".into(),
        })?;
        self.mode = Mode::Development;
        Ok(i)
    }

    /// Installs a tenant's approver set: version 1 bootstraps, later versions need the
    /// previous set's approvals.
    pub fn change_approvers(&mut self, at: UnixTime, document: &str, approvals: &[Approval]) -> CliResult<u64> {
        let set = ApproverSet::from_toml(document).map_err(|e| CliError::new(e.to_string()))?;
        let tenant = set.tenant.to_string();
        if let Some(prev) = self.sets.get(&tenant) {
            prev.verify_change(&set, approvals).map_err(CliError::new)?;
        } else if set.version.get() != 1 {
            return Err(CliError::new("the first approver set of a tenant is version 1"));
        }
        let doc = self.blob(document.as_bytes())?;
        let approvals = approvals.iter().map(|a| self.blob(a.to_json().as_bytes())).collect::<CliResult<Vec<_>>>()?;
        let i = self.append(&Entry::ApproverSetChanged {
            at: secs(at),
            tenant: tenant.clone(),
            version: set.version.get(),
            digest: set.digest(),
            document: doc,
            approvals,
        })?;
        self.sets.insert(tenant, set);
        Ok(i)
    }

    /// Activates a policy version with its approvals (logged).
    pub fn activate(&mut self, at: UnixTime, document: &str, approvals: &[Approval]) -> CliResult<u64> {
        let policy = Policy::from_toml(document).map_err(|e| CliError::new(e.to_string()))?;
        let set = self
            .sets
            .get(&policy.tenant.to_string())
            .ok_or_else(|| CliError::new(format!("tenant {} has no approver set", policy.tenant)))?;
        let set_version = set.version.get();
        let active = set
            .activate(policy, approvals)
            .map_err(|r| CliError::new(format!("not enough valid approvals: {:?}", r.rejected)))?;
        let reference = active.policy().reference();
        let doc = self.blob(document.as_bytes())?;
        let approvals = approvals.iter().map(|a| self.blob(a.to_json().as_bytes())).collect::<CliResult<Vec<_>>>()?;
        let i = self.append(&Entry::PolicyActivated {
            at: secs(at),
            tenant: reference.tenant.clone(),
            policy: policy_version(&reference),
            document: doc,
            approvals,
            approver_set: set_version,
        })?;
        self.documents.insert(reference.digest.clone(), doc);
        self.active.retain(|a| !(a.policy().tenant == active.policy().tenant && a.policy().id == active.policy().id));
        self.active.push(active);
        Ok(i)
    }

    /// Records a new data key.
    pub fn create_key(&mut self, at: UnixTime, tenant: &str, key_id: &str, purpose: &str) -> CliResult<u64> {
        self.append(&Entry::KeyCreated {
            at: secs(at),
            tenant: tenant.into(),
            key_id: key_id.into(),
            purpose: purpose.into(),
        })
    }

    /// Verifies the evidence (REPORT_DATA must bind nonce, ephemeral key and job manifest),
    /// evaluates the active policies, stores the bundle and appends the decision. The caller
    /// releases keys only when `allowed`, after this returned.
    pub fn decide(
        &mut self,
        at: UnixTime,
        nonce: &[u8; 32],
        ephemeral_key: &[u8],
        request: &Request,
        evidence: &RawEvidence,
        key_ids: &[String],
    ) -> CliResult<Recorded> {
        let manifest = job_manifest(request);
        let expected = release_report_data(nonce, ephemeral_key, &manifest);
        let mut request = request.clone();
        request.prior_releases = self
            .releases
            .iter()
            .filter(|((tenant, _), _)| *tenant == request.tenant)
            .map(|((_, id), n)| (id.clone(), *n))
            .collect();
        let (allowed, simulated, failed, policies) = match evidence.composite() {
            Err(e) => (false, false, vec![evidence_failure("parse", &e)], Vec::new()),
            Ok(composite) => match verify_composite(&self.verifier, &composite, Some(&expected), at) {
                Verified::Failed(f) => {
                    (false, false, f.iter().map(|(n, d)| evidence_failure(n, d)).collect(), Vec::new())
                }
                Verified::Ok(v) => match evaluate(&self.active, &v.appraisal(), &request, at, self.mode) {
                    Decision::Allow(a) => (true, a.is_simulated(), Vec::new(), a.policies().to_vec()),
                    Decision::Deny(d) => (false, false, failed_checks(&d.failed), d.policies),
                },
            },
        };
        let mut items = Vec::new();
        for (role, gpu, bytes) in evidence.items() {
            items.push(Item { role: role.into(), gpu, digest: self.blob(bytes)? });
        }
        let job = self.blob(&manifest)?;
        let key = self.blob(ephemeral_key)?;
        let bundled = policies
            .iter()
            .map(|p| {
                let document =
                    self.documents.get(&p.digest).copied().ok_or_else(|| CliError::new("policy without document"))?;
                Ok(BundledPolicy { policy: policy_version(p), document })
            })
            .collect::<CliResult<Vec<_>>>()?;
        let b = Bundle {
            format: bundle::FORMAT.into(),
            verified_at: secs(at),
            nonce: hex::encode(nonce),
            ephemeral_key: key,
            job_manifest: job,
            mode: if self.mode == Mode::Development { "development" } else { "production" }.into(),
            items,
            policies: bundled,
            decision: BundleDecision { allowed, simulated, failed: failed.clone() },
        };
        let evidence_bundle = self.blob(&b.to_bytes())?;
        let versions: Vec<PolicyVersion> = policies.iter().map(policy_version).collect();
        let entry = if allowed {
            Entry::KeyReleased {
                at: secs(at),
                tenant: request.tenant.clone(),
                dataset: request.dataset.clone(),
                policies: versions,
                evidence_bundle,
                job_manifest: job,
                ephemeral_key: key,
                key_ids: key_ids.to_vec(),
                simulated,
            }
        } else {
            Entry::ReleaseDenied {
                at: secs(at),
                tenant: request.tenant.clone(),
                dataset: request.dataset.clone(),
                policies: versions,
                evidence_bundle: Some(evidence_bundle),
                job_manifest: Some(job),
                failed: failed.clone(),
            }
        };
        let index = self.append(&entry)?;
        if allowed {
            for p in &policies {
                *self.releases.entry((p.tenant.clone(), p.id.clone())).or_default() += 1;
            }
        }
        Ok(Recorded { index, allowed, failed })
    }
}

/// An evidence verification failure as a failed check of the decision.
pub fn evidence_failure(name: &str, detail: &str) -> FailedCheck {
    FailedCheck {
        policy: String::new(),
        name: format!("evidence.{name}"),
        expected: "verified".into(),
        actual: detail.into(),
    }
}

/// The development set-up `coffre demo` and `coffre bench log` share: a vault in development mode
/// with a 1-of-1 approver set, the bundled `development` policy and one data key, and simulated
/// worker evidence bound to a release request.
#[cfg(feature = "simulated")]
pub mod development {
    use coffre_attestation::UnixTime;
    use coffre_attestation::composite::gpu_nonce;
    use coffre_attestation::simulated::{SimulatedGpu, SimulatedReport, SimulatedTee};
    use coffre_log::{BlobStore, EntryStore};
    use coffre_policies::{ApproverSecretKey, JobKind, JobRequest, Policy, Request, Subject};

    use super::{RawCpu, RawEvidence, RawGpu, Recorder};
    use crate::error::{CliError, CliResult};

    /// The tenant of the development set-up.
    pub const TENANT: &str = "example-bank";

    /// Logs development mode, a 1-of-1 approver set (a fresh officer key), the activated
    /// `development` policy and the creation of `key_id`: four entries.
    pub fn bootstrap<S: EntryStore + BlobStore>(vault: &mut Recorder<S>, at: UnixTime, key_id: &str) -> CliResult {
        vault.enable_development_mode(at)?;
        let officer = ApproverSecretKey::generate().map_err(CliError::new)?;
        let set = format!(
            "format = \"coffre-approvers/v1\"\ntenant = \"{TENANT}\"\nversion = 1\nthreshold = 1\n\n\
             [[approvers]]\nname = \"officer\"\nkey = \"{}\"\n",
            officer.public()
        );
        vault.change_approvers(at, &set, &[])?;
        let text = include_str!("../../../policies/bundled/development.toml");
        let policy = Policy::from_toml(text).map_err(|e| CliError::new(e.to_string()))?;
        let approval = officer.approve(&Subject::of_policy(&policy)).map_err(CliError::new)?;
        vault.activate(at, text, &[approval])?;
        vault.create_key(at, TENANT, key_id, "dataset")?;
        Ok(())
    }

    /// A fine-tuning request for `dataset`.
    pub fn request(dataset: &str, steps: u64) -> Request {
        Request {
            tenant: TENANT.into(),
            dataset: dataset.into(),
            dataset_labels: Vec::new(),
            job: JobRequest {
                kind: JobKind::FineTune,
                trainer_measurement: None,
                base_model: None,
                epochs: Some(1),
                steps: Some(steps),
                output_recipients: Vec::new(),
            },
            prior_releases: Default::default(),
        }
    }

    /// Simulated evidence: a report with `report_data` and guest policy `policy_bits`, and each
    /// GPU's report bound to it.
    pub fn evidence(
        tee: &SimulatedTee,
        gpus: &[SimulatedGpu],
        report_data: [u8; 64],
        policy_bits: u64,
    ) -> CliResult<RawEvidence> {
        let report = tee
            .report(&SimulatedReport { report_data, policy: policy_bits, ..SimulatedReport::default() })
            .map_err(CliError::new)?;
        let nonce = gpu_nonce(&report_data);
        let gpus = gpus
            .iter()
            .map(|g| g.evidence(&nonce).map(|e| RawGpu { report: e.report, chain: e.chain, rims: Vec::new() }))
            .collect::<Result<Vec<_>, _>>()
            .map_err(CliError::new)?;
        Ok(RawEvidence {
            cpu: RawCpu::Snp { report, vek: Some(tee.vcek_der().to_vec()), chain: Vec::new(), crl: None },
            gpus,
        })
    }
}
