//! Key release: appraise evidence (expensive, stateless, parallel), then decide against the log
//! state, record, and only then wrap keys.
//!
//! ```text
//! appraise(verifier, evidence, nonce, worker keys, manifest, now)      → Appraised
//! Ledger::decide(at, tenant, job, evidence, appraised, worker keys)    → Decided
//!     LogState::evaluate_release → bundle (blobs) → entry → LogState::check → append → apply
//!     Decided::Released(ReleaseToken)  |  Decided::Denied(Denied)
//! ReleaseToken::wrap(dek lookup, rng)                                  → wrapped keys
//! ```
//!
//! A [`ReleaseToken`] exists only after the release entry is in the log, owns the policies'
//! `Allow`s, and is consumed by [`ReleaseToken::wrap`]: there is no `bool` between a decision and
//! a key.

use coffre_api::RawEvidence;
use coffre_api::binding::WorkerKeys;
use coffre_attestation::UnixTime;
use coffre_attestation::composite::{
    CompositeVerifier, CpuVerification, Expected, VerifiedComposite, release_report_data,
};
use coffre_attestation::kbs::RuntimeData;
use coffre_log::bundle::{self, Bundle, BundledPolicy, Decision as BundleDecision, Item};
use coffre_log::{Digest, FailedCheck};
use coffre_policies::Allow;
use coffre_seal::{DataKey, RandomSource, hpke};

use crate::state::{LogState, Verdict};

pub use coffre_api::binding::{RELEASE_INFO, wrap_aad};

/// Evidence appraised for one release request: the verified claims or every failed check, with
/// what the report data was required to bind.
#[derive(Debug, Clone)]
pub struct Appraised {
    /// When it was verified (Unix seconds).
    pub verified_at: u64,
    /// The challenge.
    pub nonce: [u8; 32],
    /// Digest of the worker's bound keys ([`WorkerKeys::to_bytes`]).
    pub worker_keys: Digest,
    /// Digest of the job manifest's canonical bytes.
    pub manifest: Digest,
    /// The verified claims, when every check passed.
    pub verified: Option<VerifiedComposite>,
    /// Every failed check (evidence, and any the vault adds, such as the challenge's).
    pub failed: Vec<FailedCheck>,
    /// Checked under the KBS protocol's binding: then `worker_keys` is the digest of the TEE
    /// key's JWK (JCS) and `manifest` that of the KBS binding document.
    pub kbs: bool,
}

impl Appraised {
    /// Adds a failed check of the request itself (e.g. an unknown or expired challenge).
    pub fn fail(&mut self, name: &str, expected: &str, actual: impl Into<String>) {
        self.verified = None;
        self.failed.push(FailedCheck {
            policy: String::new(),
            name: name.into(),
            expected: capped(expected),
            actual: capped(&actual.into()),
        });
    }
}

/// The longest text of a failed check the log keeps; longer text (a requester's input quoted
/// back) is cut there and named by its length and SHA-256, so no request can make an entry
/// too long to read back.
pub const MAX_CHECK_TEXT: usize = 1024;

/// `text`, or its first [`MAX_CHECK_TEXT`] bytes (at a character boundary) and its digest.
pub fn capped(text: &str) -> String {
    if text.len() <= MAX_CHECK_TEXT {
        return text.to_owned();
    }
    let mut end = MAX_CHECK_TEXT;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}… ({} bytes, SHA-256 {})", &text[..end], text.len(), Digest::of(text.as_bytes()))
}

fn evidence_failure(name: &str, detail: &str) -> FailedCheck {
    FailedCheck {
        policy: String::new(),
        name: format!("evidence.{name}"),
        expected: "verified".into(),
        actual: capped(detail),
    }
}

/// Verifies `evidence` at `verified_at`, requiring REPORT_DATA = binding of `nonce`,
/// `worker_keys` and `manifest`. Pure; the expensive part of a release, safe to run in parallel.
pub fn appraise(
    verifier: &CompositeVerifier,
    evidence: &RawEvidence,
    nonce: [u8; 32],
    worker_keys: &[u8],
    manifest: &[u8],
    verified_at: u64,
) -> Appraised {
    let mut a = Appraised {
        verified_at,
        nonce,
        worker_keys: Digest::of(worker_keys),
        manifest: Digest::of(manifest),
        verified: None,
        failed: Vec::new(),
        kbs: false,
    };
    let expected = Expected::Coffre(release_report_data(&nonce, worker_keys, manifest));
    verify_into(verifier, evidence, expected, &mut a);
    a
}

/// The KBS binding's nonce: the 32 bytes whose standard base64 the broker sent.
pub fn kbs_nonce(text: &str) -> Result<[u8; 32], String> {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD
        .decode(text)
        .ok()
        .and_then(|b| <[u8; 32]>::try_from(b).ok())
        .ok_or_else(|| format!("nonce {text:?} is not the base64 of 32 bytes"))
}

/// Verifies evidence a KBS client sent at `verified_at` under the KBS protocol's binding, given
/// the binding document (the JCS bytes of its runtime data); `evidence` is why it could not be
/// read when it could not. Pure, like [`appraise`].
pub fn appraise_kbs(
    verifier: &CompositeVerifier,
    evidence: Result<&RawEvidence, &str>,
    document: &[u8],
    verified_at: u64,
) -> Appraised {
    let mut a = Appraised {
        verified_at,
        nonce: [0; 32],
        worker_keys: Digest::of(b""),
        manifest: Digest::of(document),
        verified: None,
        failed: Vec::new(),
        kbs: true,
    };
    let parsed = RuntimeData::from_binding_document(document).and_then(|r| {
        let nonce = kbs_nonce(&r.nonce)?;
        Ok((nonce, r.tee_pubkey_bytes()?, r.expected()?))
    });
    match parsed {
        Ok((nonce, key, expected)) => {
            a.nonce = nonce;
            a.worker_keys = Digest::of(&key);
            match evidence {
                Ok(evidence) => verify_into(verifier, evidence, Expected::Kbs(expected), &mut a),
                Err(e) => a.failed.push(evidence_failure("parse", e)),
            }
        }
        Err(e) => a.failed.push(evidence_failure("binding", &e)),
    }
    a
}

fn verify_into(verifier: &CompositeVerifier, evidence: &RawEvidence, expected: Expected, a: &mut Appraised) {
    let verified_at = a.verified_at;
    let composite = match evidence.composite() {
        Ok(c) => c,
        Err(e) => {
            a.failed.push(evidence_failure("parse", &e));
            return;
        }
    };
    let at = UnixTime(i64::try_from(verified_at).unwrap_or(i64::MAX));
    match verifier.verify_bound(&composite, Some(expected), at).into_verified() {
        Ok(v) => a.verified = Some(v),
        Err(v) => {
            let mut add = |prefix: &str, checks: &[coffre_attestation::Check]| {
                for c in checks.iter().filter(|c| !c.passed) {
                    a.failed.push(evidence_failure(&format!("{prefix}{}", c.name), &c.detail));
                }
            };
            add("", &v.checks);
            match &v.cpu {
                CpuVerification::Snp(s) => add("cpu.", &s.checks),
                CpuVerification::Tdx(t) => add("cpu.", &t.checks),
                CpuVerification::Sample(s) => add("cpu.sample.", &s.checks),
            }
            for (i, g) in v.gpus.iter().enumerate() {
                add(&format!("gpu[{i}]."), &g.checks);
            }
            if a.failed.is_empty() {
                a.failed.push(evidence_failure("verification", "the evidence did not parse far enough to be checked"));
            }
        }
    }
}

/// The evidence bundle of a decision: what the vault stores and what an audit recomputes.
/// `items` are the evidence blobs' digests in [`RawEvidence::items`] order.
pub fn bundle_for(
    state: &LogState,
    tenant: &str,
    appraised: &Appraised,
    items: &[(&'static str, Option<u32>, Digest)],
    verdict: &Verdict,
) -> Result<Bundle, String> {
    let policies = verdict
        .policies
        .iter()
        .map(|p| {
            let document = state
                .policy_document(tenant, &p.digest)
                .ok_or_else(|| format!("policy {}@{} has no activated document", p.id, p.version))?;
            Ok(BundledPolicy { policy: crate::state::policy_version(p), document })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Bundle {
        format: bundle::FORMAT.into(),
        verified_at: appraised.verified_at,
        nonce: hex::encode(appraised.nonce),
        ephemeral_key: appraised.worker_keys,
        job_manifest: appraised.manifest,
        mode: if state.development() { "development" } else { "production" }.into(),
        items: items
            .iter()
            .map(|(role, gpu, digest)| Item { role: (*role).into(), gpu: *gpu, digest: *digest })
            .collect(),
        policies,
        decision: BundleDecision {
            allowed: verdict.allowed(),
            simulated: verdict.simulated,
            failed: verdict.failed.clone(),
        },
        binding: appraised.kbs.then(|| KBS_BINDING.to_owned()),
    })
}

/// The bundle's name for the KBS protocol's binding.
pub const KBS_BINDING: &str = "kbs/0.4.0";

/// Permission to hand one data key to a KBS client: exists only once the release is in the log.
#[must_use = "a KBS release token must be used to open the key (or dropped deliberately)"]
#[derive(Debug)]
pub struct KbsReleaseToken {
    pub(crate) index: u64,
    pub(crate) key_id: String,
    pub(crate) dataset: String,
    pub(crate) simulated: bool,
    pub(crate) policies: Vec<String>,
}

impl KbsReleaseToken {
    /// The release's log index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The key to release.
    pub fn key_id(&self) -> &str {
        &self.key_id
    }

    /// Its dataset.
    pub fn dataset(&self) -> &str {
        &self.dataset
    }

    /// Whether it rests on simulated evidence.
    pub fn simulated(&self) -> bool {
        self.simulated
    }

    /// The policies (`id@version`) that allowed it.
    pub fn policies(&self) -> &[String] {
        &self.policies
    }

    /// Opens the key (unwrapped from the tenant's KEK by `dek`), consuming the token.
    pub fn open<T>(self, dek: impl FnOnce(&str) -> Result<T, String>) -> Result<T, String> {
        dek(&self.key_id)
    }
}

/// The outcome of a recorded KBS decision.
#[derive(Debug)]
pub enum KbsDecided {
    /// In the log; open the key with the token.
    Released(KbsReleaseToken),
    /// In the log; nothing leaves.
    Denied(Denied),
}

/// Permission to wrap a release's data keys: exists only once the release is in the log.
#[must_use = "a release token must be used to wrap the keys (or dropped deliberately)"]
#[derive(Debug)]
pub struct ReleaseToken {
    allows: Vec<Allow>,
    index: u64,
    tenant: String,
    job: String,
    key_ids: Vec<String>,
    worker: WorkerKeys,
    evidence_bundle: Digest,
}

/// One data key, wrapped to the worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WrappedKey {
    /// The key's id.
    pub key_id: String,
    /// The dataset it opens.
    pub dataset: String,
    /// HPKE `enc`.
    pub enc: Vec<u8>,
    /// HPKE ciphertext of the 32-byte data key.
    pub ciphertext: Vec<u8>,
}

impl ReleaseToken {
    /// The release's log index.
    pub fn index(&self) -> u64 {
        self.index
    }

    /// The evidence bundle the release was decided on (a log blob).
    pub fn evidence_bundle(&self) -> Digest {
        self.evidence_bundle
    }

    /// The policies' permissions this release rests on.
    pub fn allows(&self) -> &[Allow] {
        &self.allows
    }

    /// The keys to wrap.
    pub fn key_ids(&self) -> &[String] {
        &self.key_ids
    }

    /// Wraps each data key to the worker's HPKE key, consuming the token. `dek` returns a key's
    /// plaintext (unwrapped from the tenant's KEK only now, in memory) and its dataset.
    pub fn wrap(
        self,
        mut dek: impl FnMut(&str) -> Result<(DataKey, String), String>,
        rng: &mut dyn RandomSource,
    ) -> Result<Vec<WrappedKey>, String> {
        let mut out = Vec::with_capacity(self.key_ids.len());
        for id in &self.key_ids {
            let (key, dataset) = dek(id)?;
            let sealed = hpke::p256::seal(
                &self.worker.hpke,
                RELEASE_INFO,
                &wrap_aad(self.index, &self.tenant, &self.job, id),
                key.expose_secret(),
                rng,
            )
            .map_err(|e| format!("wrapping key {id}: {e}"))?;
            out.push(WrappedKey {
                key_id: id.clone(),
                dataset,
                enc: sealed.enc.to_vec(),
                ciphertext: sealed.ciphertext,
            });
        }
        Ok(out)
    }
}

/// A recorded denial.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Denied {
    /// Its log index (the denial id).
    pub index: u64,
    /// Every failed check.
    pub failed: Vec<FailedCheck>,
}

/// The outcome of a recorded decision.
#[derive(Debug)]
pub enum Decided {
    /// In the log; wrap the keys with the token.
    Released(Box<ReleaseToken>),
    /// In the log; nothing leaves.
    Denied(Denied),
}

pub(crate) fn token(
    verdict: Verdict,
    index: u64,
    tenant: &str,
    worker: WorkerKeys,
    evidence_bundle: Digest,
) -> Box<ReleaseToken> {
    Box::new(ReleaseToken {
        evidence_bundle,
        allows: verdict.allows,
        index,
        tenant: tenant.to_owned(),
        job: verdict.job,
        key_ids: verdict.key_ids,
        worker,
    })
}
