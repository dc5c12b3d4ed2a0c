//! Provenance of a trained model: an in-toto Statement v1 whose subject is the sealed artifact,
//! with a Coffre predicate, in a DSSE envelope signed by the worker's attested signing key (the
//! key whose public half the release's report data bound).

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_log::Digest;
use coffre_seal::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The DSSE payload type of an in-toto statement.
pub const INTOTO_PAYLOAD_TYPE: &str = "application/vnd.in-toto+json";
/// The statement type.
pub const STATEMENT_TYPE: &str = "https://in-toto.io/Statement/v1";
/// Coffre's predicate type.
pub const PREDICATE_TYPE: &str = "https://coffre.dev/provenance/v1";
/// The longest envelope accepted.
pub const MAX_ENVELOPE_LEN: usize = 1 << 20;

/// DSSE's pre-authentication encoding.
pub fn pae(payload_type: &str, payload: &[u8]) -> Vec<u8> {
    let mut out = format!("DSSEv1 {} {} {} ", payload_type.len(), payload_type, payload.len()).into_bytes();
    out.extend_from_slice(payload);
    out
}

/// One DSSE signature.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Signature {
    /// The signer's key (`coffre-p384-sig-…`).
    pub keyid: String,
    /// ECDSA P-384/SHA-384 over the PAE, `r ‖ s`, base64.
    pub sig: String,
}

/// A DSSE envelope.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Envelope {
    /// The payload's type.
    #[serde(rename = "payloadType")]
    pub payload_type: String,
    /// The payload, base64.
    pub payload: String,
    /// Signatures.
    pub signatures: Vec<Signature>,
}

impl Envelope {
    /// Signs `payload` with `key`.
    pub fn sign(payload_type: &str, payload: &[u8], key: &SigningKey) -> Result<Self, String> {
        let sig = key.sign_raw(&pae(payload_type, payload)).map_err(|e| e.to_string())?;
        Ok(Self {
            payload_type: payload_type.into(),
            payload: STANDARD.encode(payload),
            signatures: vec![Signature { keyid: key.verifying_key().to_string(), sig: STANDARD.encode(sig) }],
        })
    }

    /// The JSON form.
    pub fn to_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// Reads the JSON form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        if bytes.len() > MAX_ENVELOPE_LEN {
            return Err(format!("a provenance envelope is at most {MAX_ENVELOPE_LEN} bytes"));
        }
        serde_json::from_slice(bytes).map_err(|e| format!("not a DSSE envelope: {e}"))
    }

    /// The payload if exactly one signature, by `key`, verifies over it.
    pub fn verify(&self, key: &VerifyingKey) -> Result<Vec<u8>, String> {
        let payload = STANDARD.decode(&self.payload).map_err(|e| format!("payload: {e}"))?;
        let [sig] = self.signatures.as_slice() else {
            return Err(format!("{} signatures; a Coffre provenance carries exactly one", self.signatures.len()));
        };
        let signer: VerifyingKey = sig.keyid.parse().map_err(|e| format!("signer: {e}"))?;
        if signer != *key {
            return Err(format!("signed by {}, not by the key the release bound ({})", signer.key_id(), key.key_id()));
        }
        let raw = STANDARD.decode(&sig.sig).map_err(|e| format!("signature: {e}"))?;
        if !key.verify_raw(&pae(&self.payload_type, &payload), &raw) {
            return Err(format!("the signature by {} does not verify", key.key_id()));
        }
        Ok(payload)
    }
}

/// An in-toto subject.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// A name (`fraud-lora/3.coffre`).
    pub name: String,
    /// Digests by algorithm (`sha256` → hex).
    pub digest: BTreeMap<String, String>,
}

/// DP-SGD as run.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PrivacySpent {
    /// ε spent.
    pub epsilon: f64,
    /// δ.
    pub delta: f64,
    /// Noise multiplier σ.
    pub noise_multiplier: f64,
    /// Per-record clipping norm.
    pub max_grad_norm: f64,
}

/// Coffre's provenance predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Predicate {
    /// The tenant.
    pub tenant: String,
    /// The job.
    pub job: String,
    /// The release's log index.
    pub release: u64,
    /// The policies that allowed it (`id@version`).
    pub policies: Vec<String>,
    /// SHA-256 of each sealed dataset object read, by dataset id.
    pub datasets: BTreeMap<String, String>,
    /// The base model's digest.
    pub base_model: Option<String>,
    /// Trainer name.
    pub trainer: String,
    /// Trainer version.
    pub trainer_version: String,
    /// Trainer measurement.
    pub trainer_measurement: Option<String>,
    /// Hyper-parameters as run (the manifest's recipe).
    pub recipe: crate::job::Recipe,
    /// DP-SGD, when run.
    pub privacy: Option<PrivacySpent>,
    /// Final training loss.
    pub final_loss: Option<f64>,
    /// Final held-out loss.
    pub held_out_loss: Option<f64>,
    /// Digests of the evidence bundle the release was decided on.
    pub evidence_bundle: String,
}

/// An in-toto Statement v1 with the Coffre predicate.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Statement {
    /// Always [`STATEMENT_TYPE`].
    #[serde(rename = "_type")]
    pub statement_type: String,
    /// The sealed artifact.
    pub subject: Vec<Subject>,
    /// Always [`PREDICATE_TYPE`].
    #[serde(rename = "predicateType")]
    pub predicate_type: String,
    /// What made it.
    pub predicate: Predicate,
}

impl Statement {
    /// Parses and checks the types.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let s: Statement =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Coffre provenance statement: {e}"))?;
        if s.statement_type != STATEMENT_TYPE || s.predicate_type != PREDICATE_TYPE {
            return Err(format!(
                "statement type {:?} / predicate {:?} are not Coffre's",
                s.statement_type, s.predicate_type
            ));
        }
        Ok(s)
    }

    /// Whether the subject is exactly the artifact with `digest`.
    pub fn names(&self, digest: &Digest) -> bool {
        matches!(self.subject.as_slice(), [s] if s.digest.get("sha256").map(String::as_str) == Some(digest.hex().as_str()))
    }
}
