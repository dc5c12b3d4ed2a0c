//! `coffre-worker`: the attested worker. Inside a confidential VM it collects hardware
//! evidence, obtains a job's dataset keys from the vault, trains on the data decrypted in memory,
//! and seals the trained model back with a provenance statement signed by its attested key.
//!
//! - [`harden`]: core dumps and ptrace off before any key arrives.
//! - [`evidence`]: CPU (configfs-tsm, `/dev/sev-guest`, simulated) and GPU (simulated) evidence.
//! - [`external`]: external trainers (records through a pipe, outputs from memory-backed storage).
//! - [`sealing`]: the artifact sealed as the trainer writes it; sealed checkpoints.
//! - [`run`]: one job, from the challenge to the registered artifact.
//!
//! Nothing decrypted is ever written to disk: the working directory holds the downloaded sealed
//! objects, the sealed checkpoint and the sealed artifact, and nothing else.

pub mod coco;
pub mod evidence;
pub mod external;
pub mod harden;
#[cfg(feature = "nvml")]
pub mod nvml;
pub mod run;
pub mod sealing;

/// The built-in trainer's name in provenance statements.
pub const TRAINER_NAME: &str = "coffre-trainer";

/// Why a run stopped, in words for the operator, with the process exit code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    /// What went wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// 1: failed; 2: bad usage; 3: the vault denied the release.
    pub code: i32,
    /// The denial id, for a denied release.
    pub denial: Option<u64>,
}

impl Failure {
    /// A failure (exit 1).
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None, code: 1, denial: None }
    }

    /// Bad usage (exit 2).
    pub fn usage(message: impl Into<String>) -> Self {
        Self { code: 2, ..Self::new(message) }
    }

    /// A denied release (exit 3).
    pub fn denied(message: impl Into<String>, denial: Option<u64>) -> Self {
        Self {
            code: 3,
            denial,
            hint: Some("`coffre denial show ID --tenant T` shows it to the tenant's approvers and auditors".into()),
            ..Self::new(message)
        }
    }

    /// With a hint.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// With a hint, if any.
    pub fn hint_opt(mut self, hint: Option<String>) -> Self {
        self.hint = hint;
        self
    }
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)?;
        if let Some(h) = &self.hint {
            write!(f, "\n  hint: {h}")?;
        }
        Ok(())
    }
}

impl std::error::Error for Failure {}
