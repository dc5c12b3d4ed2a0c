//! The development set-up that `coffre demo`, `coffre bench log` and the tests share: a vault in
//! development mode with one tenant, a 1-of-1 approver set, the bundled `development` policy, one
//! dataset with one sealed object, and a signed job; and simulated worker evidence for it.
//!
//! Only with the `simulated` feature; nothing here is reachable in a production build.

use coffre_api::binding::WorkerKeys;
use coffre_api::job::{Bounds, JobDataset, JobManifest, Recipe};
use coffre_api::{RawCpu, RawEvidence, RawGpu, job_id};
use coffre_attestation::composite::gpu_nonce;
use coffre_attestation::simulated::{SimulatedGpu, SimulatedReport, SimulatedTee};
use coffre_log::{BlobStore, Digest, Entry, EntryStore};
use coffre_policies::{ApproverSecretKey, JobKind, Policy, Subject};
use coffre_seal::{RecipientPublicKey, SigningKey};

use crate::ledger::{Ledger, LedgerError};
use crate::state::policy_version;

/// The tenant of the development set-up.
pub const TENANT: &str = "example-bank";
/// The bundled development policy.
pub const DEVELOPMENT_POLICY: &str = include_str!("../../../policies/bundled/development.toml");

fn refused(e: impl std::fmt::Display) -> LedgerError {
    LedgerError::Refused(vec![e.to_string()])
}

/// What [`bootstrap`] created.
#[derive(Debug)]
pub struct Setup {
    /// The security officer (the approver set's one member).
    pub officer: ApproverSecretKey,
    /// The data owner's signing key.
    pub owner: SigningKey,
    /// The job id.
    pub job: String,
    /// The job manifest.
    pub manifest: JobManifest,
}

/// A fine-tuning manifest reading `dataset` version 1 (object `digest`), output sealed to `output`.
pub fn manifest(dataset: &str, digest: Digest, steps: u64, output: &RecipientPublicKey, not_after: u64) -> JobManifest {
    JobManifest {
        format: coffre_api::job::JOB_FORMAT.into(),
        tenant: TENANT.into(),
        name: format!("{dataset}-lora"),
        kind: JobKind::FineTune,
        datasets: vec![JobDataset { id: dataset.into(), version: 1, object_digest: digest }],
        base_model: None,
        trainer_measurement: None,
        recipe: Recipe {
            mode: "lora".into(),
            steps,
            epochs: None,
            learning_rate: 2e-4,
            batch_size: 4,
            max_seq_len: 128,
            lora_rank: Some(8),
            lora_targets: vec!["q_proj".into(), "v_proj".into()],
            dp: None,
            seed: 42,
        },
        bounds: Bounds { max_steps: steps.max(1000), max_learning_rate: 1e-3, max_epsilon: None },
        output_recipients: vec![output.to_string()],
        not_after,
        max_releases: u64::MAX,
    }
}

/// Logs development mode, the tenant, a 1-of-1 approver set (a fresh officer key), the activated
/// `development` policy, `dataset` with one object (`digest`, data key `key_id`) and a signed job:
/// eight entries.
pub fn bootstrap<S: EntryStore + BlobStore>(
    ledger: &mut Ledger<S>,
    at: u64,
    dataset: &str,
    digest: Digest,
    key_id: &str,
    output: &RecipientPublicKey,
) -> Result<Setup, LedgerError> {
    ledger.record(&Entry::ConfigChanged {
        at,
        setting: "development_mode".into(),
        old: "off".into(),
        new: "on".into(),
    })?;
    ledger.record(&Entry::TenantCreated { at, tenant: TENANT.into(), name: "Example Bank".into() })?;
    let officer = ApproverSecretKey::generate().map_err(refused)?;
    let set = format!(
        "format = \"coffre-approvers/v1\"\ntenant = \"{TENANT}\"\nversion = 1\nthreshold = 1\n\n\
         [[approvers]]\nname = \"officer\"\nkey = \"{}\"\n",
        officer.public()
    );
    let parsed = coffre_policies::ApproverSet::from_toml(&set).map_err(refused)?;
    let document = ledger.put_blob(set.as_bytes())?;
    ledger.record(&Entry::ApproverSetChanged {
        at,
        tenant: TENANT.into(),
        version: 1,
        digest: parsed.digest(),
        document,
        approvals: Vec::new(),
    })?;
    let policy = Policy::from_toml(DEVELOPMENT_POLICY).map_err(refused)?;
    let approval = officer.approve(&Subject::of_policy(&policy)).map_err(refused)?;
    let document = ledger.put_blob(DEVELOPMENT_POLICY.as_bytes())?;
    let approval = ledger.put_blob(approval.to_json().as_bytes())?;
    ledger.record(&Entry::PolicyActivated {
        at,
        tenant: TENANT.into(),
        policy: policy_version(&policy.reference()),
        document,
        approvals: vec![approval],
        approver_set: 1,
    })?;
    ledger.record(&Entry::DatasetRegistered {
        at,
        tenant: TENANT.into(),
        dataset: dataset.into(),
        labels: vec!["customer-messages".into()],
    })?;
    ledger.record(&Entry::ObjectRegistered {
        at,
        tenant: TENANT.into(),
        dataset: dataset.into(),
        version: 1,
        object_id: hex::encode(&digest.as_bytes()[..16]),
        digest,
        size: 0,
        key_id: key_id.into(),
        signer: None,
    })?;
    let owner = SigningKey::generate().map_err(refused)?;
    let m = manifest(dataset, digest, 100, output, at + 365 * 86_400);
    let signed = m.sign(&owner).map_err(refused)?;
    let manifest_blob = ledger.put_blob(&m.to_bytes())?;
    let signed_blob = ledger.put_blob(&signed.to_bytes())?;
    let job = job_id(&manifest_blob);
    ledger.record(&Entry::JobSubmitted { at, tenant: TENANT.into(), job: job.clone(), manifest: signed_blob })?;
    Ok(Setup { officer, owner, job, manifest: m })
}

/// A worker's fresh ephemeral keys: the HPKE secret (to open what is wrapped to it), the signing
/// key, and their bound public form.
pub fn worker_keys() -> Result<(coffre_seal::hpke::p256::KeyPair, SigningKey, WorkerKeys), String> {
    let hpke = coffre_seal::hpke::p256::KeyPair::generate(&mut coffre_seal::SystemRandom).map_err(|e| e.to_string())?;
    let signing = SigningKey::generate().map_err(|e| e.to_string())?;
    let keys = WorkerKeys { hpke: *hpke.public_key(), signing: signing.verifying_key().clone() };
    Ok((hpke, signing, keys))
}

/// Simulated evidence: a report with `report_data` and guest policy `policy_bits`, and each GPU's
/// report bound to it.
pub fn evidence(
    tee: &SimulatedTee,
    gpus: &[SimulatedGpu],
    report_data: [u8; 64],
    policy_bits: u64,
) -> Result<RawEvidence, String> {
    let report = tee.report(&SimulatedReport { report_data, policy: policy_bits, ..SimulatedReport::default() })?;
    let nonce = gpu_nonce(&report_data);
    let gpus = gpus
        .iter()
        .map(|g| g.evidence(&nonce).map(|e| RawGpu { report: e.report, chain: e.chain, rims: Vec::new() }))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(RawEvidence {
        cpu: RawCpu::Snp { report, vek: Some(tee.vcek_der().to_vec()), chain: Vec::new(), crl: None },
        gpus,
    })
}
