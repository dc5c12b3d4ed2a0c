//! Job manifests: what a data owner allows one training job to do, signed by the owner.
//!
//! The manifest's canonical bytes (compact JSON, members in the order below, nothing else) are
//! what a worker's report data binds ([`crate::binding::report_data`]) and what the log records;
//! [`JobManifest::from_bytes`] refuses any other encoding of the same value. A [`SignedJob`]
//! carries those bytes with the owner's ECDSA P-384 signature over them (context
//! [`JOB_CONTEXT`]).

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_log::Digest;
use coffre_policies::{JobKind, JobRequest};
use coffre_seal::{RecipientPublicKey, SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The manifest format.
pub const JOB_FORMAT: &str = "coffre-job/v1";
/// The signed-job format.
pub const SIGNED_JOB_FORMAT: &str = "coffre-signed-job/v1";
/// The signature context of job manifests.
pub const JOB_CONTEXT: &str = "coffre/job-manifest/v1";
/// The longest manifest accepted.
pub const MAX_MANIFEST_LEN: usize = 64 * 1024;

/// One dataset version the job reads.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobDataset {
    /// The dataset id.
    pub id: String,
    /// The version (from 1).
    pub version: u64,
    /// SHA-256 of the whole sealed object of that version, as the vault registered it. A worker
    /// refuses an object with another digest.
    pub object_digest: Digest,
}

/// Differentially private SGD parameters.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DpRecipe {
    /// Per-record clipping norm.
    pub max_grad_norm: f64,
    /// The ε to reach (σ calibrated to it).
    pub target_epsilon: f64,
    /// δ.
    pub delta: f64,
}

/// How the model is trained.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipe {
    /// `lora` or `full`.
    pub mode: String,
    /// Optimiser steps.
    pub steps: u64,
    /// Epochs, when the job counts them.
    pub epochs: Option<u32>,
    /// Peak learning rate.
    pub learning_rate: f64,
    /// Records per step.
    pub batch_size: u32,
    /// Tokens per record at most.
    pub max_seq_len: u32,
    /// LoRA rank (LoRA only).
    pub lora_rank: Option<u32>,
    /// LoRA target modules (LoRA only).
    pub lora_targets: Vec<String>,
    /// DP-SGD, when the owner asks for it.
    pub dp: Option<DpRecipe>,
    /// The seed of every random stream but DP noise.
    pub seed: u64,
}

/// Bounds the recipe must stay within (the owner's limits on what a worker may run).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Bounds {
    /// At most this many steps.
    pub max_steps: u64,
    /// At most this learning rate.
    pub max_learning_rate: f64,
    /// DP-SGD required, with ε at most this.
    pub max_epsilon: Option<f64>,
}

/// A job manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JobManifest {
    /// Always [`JOB_FORMAT`].
    pub format: String,
    /// The tenant.
    pub tenant: String,
    /// A name for people (`fraud-lora-2026-12`).
    pub name: String,
    /// What the job does.
    pub kind: JobKind,
    /// The datasets, each pinned to one sealed object.
    pub datasets: Vec<JobDataset>,
    /// The base model's digest.
    pub base_model: Option<coffre_policies::Digest>,
    /// The trainer's measurement (digest of the trainer binary or container).
    pub trainer_measurement: Option<coffre_policies::Digest>,
    /// The training recipe.
    pub recipe: Recipe,
    /// Limits on the recipe.
    pub bounds: Bounds,
    /// Keys the outputs are sealed to (`coffre-p384-pub-…`).
    pub output_recipients: Vec<String>,
    /// No release after this time (Unix seconds).
    pub not_after: u64,
    /// At most this many key releases for this job.
    pub max_releases: u64,
}

/// Why a manifest or signed job is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JobError {
    /// Not a manifest.
    #[error("not a job manifest: {0}")]
    Invalid(String),
    /// Not in canonical form.
    #[error("the job manifest is not in canonical form (compact JSON, members in schema order)")]
    NotCanonical,
    /// The signature does not verify.
    #[error("the job manifest's signature does not verify under {0}")]
    BadSignature(String),
}

fn id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

impl JobManifest {
    /// The canonical bytes.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// The digest the log names it by (SHA-256 of the canonical bytes).
    pub fn digest(&self) -> Digest {
        Digest::of(&self.to_bytes())
    }

    /// Reads canonical bytes and checks the manifest's own consistency ([`JobManifest::validate`]).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, JobError> {
        if bytes.len() > MAX_MANIFEST_LEN {
            return Err(JobError::Invalid(format!("longer than {MAX_MANIFEST_LEN} bytes")));
        }
        let m: JobManifest = serde_json::from_slice(bytes).map_err(|e| JobError::Invalid(e.to_string()))?;
        if m.to_bytes() != bytes {
            return Err(JobError::NotCanonical);
        }
        m.validate().map_err(JobError::Invalid)?;
        Ok(m)
    }

    /// Every problem of the manifest taken alone, joined: format, ids, recipe within bounds,
    /// recipients. (Whether its datasets exist is the vault's check.)
    pub fn validate(&self) -> Result<(), String> {
        let mut problems = Vec::new();
        if self.format != JOB_FORMAT {
            problems.push(format!("format {:?}, expected {JOB_FORMAT:?}", self.format));
        }
        if !id_ok(&self.tenant) {
            problems.push(format!("tenant {:?} is not an id", self.tenant));
        }
        if self.name.is_empty() || self.name.len() > 128 || self.name.chars().any(char::is_control) {
            problems.push("name must be 1-128 printable characters".into());
        }
        if self.kind == JobKind::KbsResource {
            problems.push("kind kbs-resource is for key-broker clients, not a job".into());
        }
        if self.datasets.is_empty() {
            problems.push("a job reads at least one dataset".into());
        }
        let mut seen = std::collections::BTreeSet::new();
        for d in &self.datasets {
            if !id_ok(&d.id) {
                problems.push(format!("dataset {:?} is not an id", d.id));
            }
            if !seen.insert(&d.id) {
                problems.push(format!("dataset {} is listed twice", d.id));
            }
            if d.version == 0 {
                problems.push(format!("dataset {}: versions start at 1", d.id));
            }
        }
        let r = &self.recipe;
        if r.mode != "lora" && r.mode != "full" {
            problems.push(format!("recipe.mode {:?}: lora or full", r.mode));
        }
        if r.mode == "lora" && r.lora_rank.is_none_or(|k| k == 0) {
            problems.push("recipe.lora_rank: LoRA needs a rank of at least 1".into());
        }
        if r.steps == 0 || r.steps > self.bounds.max_steps {
            problems.push(format!("recipe.steps {} must be 1..={} (bounds.max_steps)", r.steps, self.bounds.max_steps));
        }
        if !(r.learning_rate.is_finite() && r.learning_rate > 0.0 && r.learning_rate <= self.bounds.max_learning_rate) {
            problems.push(format!(
                "recipe.learning_rate {} must be in (0, {}] (bounds.max_learning_rate)",
                r.learning_rate, self.bounds.max_learning_rate
            ));
        }
        if r.batch_size == 0 || r.max_seq_len == 0 {
            problems.push("recipe.batch_size and recipe.max_seq_len are at least 1".into());
        }
        match (&self.bounds.max_epsilon, &r.dp) {
            (Some(max), None) => problems.push(format!("bounds require DP-SGD with ε ≤ {max}, the recipe has none")),
            (Some(max), Some(dp)) if !(dp.target_epsilon > 0.0 && dp.target_epsilon <= *max) => {
                problems.push(format!("recipe.dp.target_epsilon {} must be in (0, {max}]", dp.target_epsilon));
            }
            _ => {}
        }
        if let Some(dp) = &r.dp
            && !(dp.max_grad_norm > 0.0 && dp.delta > 0.0 && dp.delta < 1.0 && dp.target_epsilon > 0.0)
        {
            problems.push("recipe.dp: max_grad_norm > 0, 0 < delta < 1 and target_epsilon > 0".into());
        }
        for k in &self.output_recipients {
            if let Err(e) = k.parse::<RecipientPublicKey>() {
                problems.push(format!("output recipient {k:?}: {e}"));
            }
        }
        if self.output_recipients.is_empty() {
            problems.push("at least one output recipient: the trained model is sealed to it".into());
        }
        if self.max_releases == 0 {
            problems.push("max_releases is at least 1".into());
        }
        if problems.is_empty() { Ok(()) } else { Err(problems.join("; ")) }
    }

    /// The job as a policy sees it.
    pub fn job_request(&self) -> JobRequest {
        JobRequest {
            kind: self.kind,
            trainer_measurement: self.trainer_measurement.clone(),
            base_model: self.base_model.clone(),
            epochs: self.recipe.epochs,
            steps: Some(self.recipe.steps),
            output_recipients: self.output_recipients.clone(),
        }
    }

    /// Signs the canonical bytes.
    pub fn sign(&self, key: &SigningKey) -> Result<SignedJob, String> {
        let bytes = self.to_bytes();
        let sig = key.sign(JOB_CONTEXT, &bytes).map_err(|e| e.to_string())?;
        Ok(SignedJob {
            format: SIGNED_JOB_FORMAT.into(),
            manifest: STANDARD.encode(&bytes),
            signer: key.verifying_key().to_string(),
            signature: STANDARD.encode(sig),
        })
    }
}

/// A manifest with its owner's signature (the form submitted and logged).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SignedJob {
    /// Always [`SIGNED_JOB_FORMAT`].
    pub format: String,
    /// The manifest's canonical bytes, base64.
    pub manifest: String,
    /// The owner's signing public key (`coffre-p384-sig-…`).
    pub signer: String,
    /// ECDSA P-384/SHA-384 over the manifest bytes in context [`JOB_CONTEXT`], `r ‖ s`, base64.
    pub signature: String,
}

/// A signed job whose signature verified.
#[derive(Debug, Clone, PartialEq)]
pub struct VerifiedJob {
    /// The manifest.
    pub manifest: JobManifest,
    /// Its canonical bytes.
    pub bytes: Vec<u8>,
    /// Who signed it.
    pub signer: VerifyingKey,
}

impl SignedJob {
    /// The canonical JSON form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Parses a signed job (JSON).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, JobError> {
        let s: SignedJob = serde_json::from_slice(bytes).map_err(|e| JobError::Invalid(e.to_string()))?;
        if s.format != SIGNED_JOB_FORMAT {
            return Err(JobError::Invalid(format!("format {:?}, expected {SIGNED_JOB_FORMAT:?}", s.format)));
        }
        Ok(s)
    }

    /// Checks the signature and the manifest.
    pub fn verify(&self) -> Result<VerifiedJob, JobError> {
        let signer: VerifyingKey = self.signer.parse().map_err(|e| JobError::Invalid(format!("signer: {e}")))?;
        let bytes = STANDARD.decode(&self.manifest).map_err(|e| JobError::Invalid(format!("manifest: {e}")))?;
        let sig = STANDARD.decode(&self.signature).map_err(|e| JobError::Invalid(format!("signature: {e}")))?;
        if !signer.verify(JOB_CONTEXT, &bytes, &sig) {
            return Err(JobError::BadSignature(signer.key_id()));
        }
        let manifest = JobManifest::from_bytes(&bytes)?;
        Ok(VerifiedJob { manifest, bytes, signer })
    }
}

/// The id the vault gives a job: `job-` and the first 16 hex digits of its manifest digest, so a
/// retried submission of the same manifest names the same job.
pub fn job_id(manifest_digest: &Digest) -> String {
    format!("job-{}", &manifest_digest.hex()[..16])
}
