//! M-of-N approvals: approver keys (ECDSA P-384), approver sets, detached approvals, activation.
//!
//! An approval signs exactly one document version: its kind (policy or approver set), tenant, id,
//! version and the SHA-384 digest of its canonical bytes. A policy becomes an [`ActivePolicy`]
//! only through [`ApproverSet::activate`] with `threshold` valid approvals from distinct members
//! of the tenant's current set; the set itself is replaced only by [`ApproverSet::verify_change`],
//! approved by the *previous* set, through [`ApproverSet::change`], whose [`ApprovedSetChange`]
//! token exists only when that set's threshold was met.

use std::collections::BTreeSet;
use std::fmt;
use std::num::NonZeroU64;
use std::str::FromStr;

use aws_lc_rs::digest;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{self, EcdsaKeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use coffre_seal::keys::encode_checked;
use serde::{Deserialize, Deserializer, Serialize};
use zeroize::Zeroizing;

use crate::document::{Name, Policy};
use crate::error::LoadError;

const PUBLIC_PREFIX: &str = "coffre-p384-approver-";
const SECRET_PREFIX: &str = "COFFRE-P384-APPROVER-SECRET-";
const POINT_LEN: usize = 97;
const SIGNATURE_LEN: usize = 96;
const APPROVAL_FORMAT: &str = "coffre-approval/v1";

fn decode_checked(text: &str, prefix: &str, what: &str) -> Result<Zeroizing<Vec<u8>>, String> {
    coffre_seal::keys::decode_checked(text.trim(), prefix, None, what).map_err(|e| match e {
        coffre_seal::SealError::InvalidKey(m) => m,
        other => other.to_string(),
    })
}

/// An approver's public key: `coffre-p384-approver-` + base64url(uncompressed point ‖ checksum).
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ApproverPublicKey {
    point: Vec<u8>,
}

impl ApproverPublicKey {
    /// Short id: the first 8 bytes of SHA-256 of the point, hex.
    pub fn key_id(&self) -> String {
        hex::encode(&digest::digest(&digest::SHA256, &self.point).as_ref()[..8])
    }

    fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, &self.point).verify(message, signature).is_ok()
    }
}

impl fmt::Display for ApproverPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&encode_checked(PUBLIC_PREFIX, &self.point))
    }
}

impl fmt::Debug for ApproverPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApproverPublicKey({})", self.key_id())
    }
}

impl FromStr for ApproverPublicKey {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        if s.trim().starts_with("coffre-p384-pub-") {
            return Err(
                "this is a recipient (sealing) key; approvals need an approver key from `coffre keygen --approver`"
                    .into(),
            );
        }
        let point = decode_checked(s, PUBLIC_PREFIX, "approver public key")?;
        if point.len() != POINT_LEN || point[0] != 0x04 {
            return Err("the approver public key is not an uncompressed P-384 point".into());
        }
        // Reject points not on the curve now rather than at the first verification.
        if UnparsedPublicKey::new(&signature::ECDSA_P384_SHA384_FIXED, point.as_slice()).parse().is_err() {
            return Err("the approver public key is not a valid P-384 point".into());
        }
        Ok(Self { point: point.to_vec() })
    }
}

impl Serialize for ApproverPublicKey {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for ApproverPublicKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// An approver's secret signing key. Not `Clone`; `Debug` shows only the key id.
pub struct ApproverSecretKey {
    pair: EcdsaKeyPair,
    pkcs8: Zeroizing<Vec<u8>>,
    public: ApproverPublicKey,
}

impl fmt::Debug for ApproverSecretKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ApproverSecretKey({}, <redacted>)", self.public.key_id())
    }
}

impl ApproverSecretKey {
    /// A fresh key.
    pub fn generate() -> Result<Self, String> {
        let doc = EcdsaKeyPair::generate_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
            .map_err(|_| "key generation failed".to_owned())?;
        Self::from_pkcs8(doc.as_ref())
    }

    fn from_pkcs8(der: &[u8]) -> Result<Self, String> {
        let pair = EcdsaKeyPair::from_pkcs8(&signature::ECDSA_P384_SHA384_FIXED_SIGNING, der)
            .map_err(|_| "the approver secret key is not a valid P-384 key".to_owned())?;
        let public = ApproverPublicKey { point: pair.public_key().as_ref().to_vec() };
        Ok(Self { pair, pkcs8: Zeroizing::new(der.to_vec()), public })
    }

    /// The public key.
    pub fn public(&self) -> &ApproverPublicKey {
        &self.public
    }

    /// Key file text: comments with the public key, then the secret line.
    pub fn to_key_file(&self) -> Zeroizing<String> {
        let secret = encode_checked(SECRET_PREFIX, &self.pkcs8);
        Zeroizing::new(format!(
            "# Coffre approver secret key (ECDSA P-384): signs policy approvals. Keep this file secret.\n\
             # public key: {}\n\
             # key id: {}\n\
             {}\n",
            self.public,
            self.public.key_id(),
            secret.as_str()
        ))
    }

    /// Parses a key file written by [`ApproverSecretKey::to_key_file`].
    pub fn from_key_file(text: &str) -> Result<Self, String> {
        let mut lines = text.lines().map(str::trim).filter(|l| !l.is_empty() && !l.starts_with('#'));
        let line = lines.next().ok_or_else(|| "the key file holds no secret key line".to_owned())?;
        if lines.next().is_some() {
            return Err("the key file holds more than one key line".into());
        }
        if line.starts_with("COFFRE-P384-SECRET-") {
            return Err(
                "this is a recipient (sealing) key; approvals need an approver key from `coffre keygen --approver`"
                    .into(),
            );
        }
        let der = decode_checked(line, SECRET_PREFIX, "approver secret key")?;
        Self::from_pkcs8(&der)
    }

    /// Signs `subject`.
    pub fn approve(&self, subject: &Subject) -> Result<Approval, String> {
        let sig =
            self.pair.sign(&SystemRandom::new(), &subject.signed_bytes()).map_err(|_| "signing failed".to_owned())?;
        Ok(Approval {
            format: APPROVAL_FORMAT.into(),
            subject: subject.clone(),
            approver: self.public.clone(),
            signature: URL_SAFE_NO_PAD.encode(sig.as_ref()),
        })
    }
}

/// What kind of document an approval covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SubjectKind {
    /// A key-release policy.
    Policy,
    /// An approver set.
    ApproverSet,
}

impl fmt::Display for SubjectKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SubjectKind::Policy => "policy",
            SubjectKind::ApproverSet => "approver set",
        })
    }
}

/// Exactly what an approval signs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Subject {
    /// Policy or approver set.
    pub kind: SubjectKind,
    /// Tenant.
    pub tenant: String,
    /// Policy id (`approvers` for an approver set).
    pub id: String,
    /// Version.
    pub version: u64,
    /// `sha384:<hex>` of the document's canonical bytes.
    pub digest: String,
}

impl Subject {
    /// The subject for a policy.
    pub fn of_policy(policy: &Policy) -> Self {
        Self {
            kind: SubjectKind::Policy,
            tenant: policy.tenant.to_string(),
            id: policy.id.to_string(),
            version: policy.version.get(),
            digest: policy.digest(),
        }
    }

    /// The subject for an approver set.
    pub fn of_set(set: &ApproverSet) -> Self {
        Self {
            kind: SubjectKind::ApproverSet,
            tenant: set.tenant.to_string(),
            id: "approvers".into(),
            version: set.version.get(),
            digest: set.digest(),
        }
    }

    /// The signed bytes: a domain line and one line per field. Tenant and id are names without
    /// newlines, so the encoding is unambiguous.
    pub fn signed_bytes(&self) -> Vec<u8> {
        let kind = match self.kind {
            SubjectKind::Policy => "policy",
            SubjectKind::ApproverSet => "approver-set",
        };
        format!("{APPROVAL_FORMAT}\n{kind}\n{}\n{}\n{}\n{}\n", self.tenant, self.id, self.version, self.digest)
            .into_bytes()
    }
}

impl fmt::Display for Subject {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}/{} v{}", self.kind, self.tenant, self.id, self.version)
    }
}

/// A detached approval (JSON file).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approval {
    /// Always `coffre-approval/v1`.
    pub format: String,
    /// What was approved.
    pub subject: Subject,
    /// Who approved it.
    pub approver: ApproverPublicKey,
    /// ECDSA P-384/SHA-384 over [`Subject::signed_bytes`], `r ‖ s`, base64url.
    pub signature: String,
}

impl Approval {
    /// Parses an approval file.
    pub fn from_json(text: &str) -> Result<Self, String> {
        let a: Approval = serde_json::from_str(text).map_err(|e| format!("not a Coffre approval: {e}"))?;
        if a.format != APPROVAL_FORMAT {
            return Err(format!("unknown approval format {:?} (this build reads {APPROVAL_FORMAT})", a.format));
        }
        Ok(a)
    }

    /// The approval as a JSON document.
    pub fn to_json(&self) -> String {
        let mut s = serde_json::to_string_pretty(self).unwrap_or_default();
        s.push('\n');
        s
    }

    fn signature_valid(&self) -> bool {
        URL_SAFE_NO_PAD
            .decode(&self.signature)
            .is_ok_and(|sig| sig.len() == SIGNATURE_LEN && self.approver.verify(&self.subject.signed_bytes(), &sig))
    }
}

/// One member of an approver set.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Approver {
    /// Display name, e.g. `alice`.
    pub name: Name,
    /// Public key.
    pub key: ApproverPublicKey,
}

/// The one approver-set format this build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum SetFormat {
    /// Version 1.
    #[serde(rename = "coffre-approvers/v1")]
    V1,
}

/// A tenant's approvers and how many must approve.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApproverSet {
    /// Always `coffre-approvers/v1`.
    pub format: SetFormat,
    /// Tenant.
    pub tenant: Name,
    /// Version, from 1; each change needs the previous set's approval.
    pub version: NonZeroU64,
    /// Approvals needed (M).
    pub threshold: u32,
    /// The approvers (N).
    pub approvers: Vec<Approver>,
}

/// Why one approval does not count.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "problem", rename_all = "snake_case")]
pub enum Rejection {
    /// Signed for another tenant.
    WrongTenant {
        /// The tenant in the approval.
        signed: String,
    },
    /// Signed for another document.
    WrongDocument {
        /// The document in the approval.
        signed: String,
    },
    /// Signed for an older version: it does not carry over to the new one.
    Stale {
        /// The version in the approval.
        signed: u64,
    },
    /// Signed for another (newer) version.
    OtherVersion {
        /// The version in the approval.
        signed: u64,
    },
    /// Same version, different content: the document changed after it was signed.
    DigestMismatch {
        /// The digest in the approval.
        signed: String,
    },
    /// The key is not in the approver set.
    NotAnApprover {
        /// Its key id.
        key_id: String,
    },
    /// The approver already approved (counted once).
    Duplicate {
        /// The approver's name.
        name: String,
    },
    /// The signature does not verify.
    BadSignature,
}

impl fmt::Display for Rejection {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Rejection::WrongTenant { signed } => write!(f, "it approves a document of tenant {signed:?}"),
            Rejection::WrongDocument { signed } => write!(f, "it approves another document ({signed})"),
            Rejection::Stale { signed } => {
                write!(f, "stale: it approves version {signed}; approvals do not carry over to a new version")
            }
            Rejection::OtherVersion { signed } => write!(f, "it approves another version ({signed})"),
            Rejection::DigestMismatch { signed } => {
                write!(f, "the document changed after it was approved (approved content {signed})")
            }
            Rejection::NotAnApprover { key_id } => write!(f, "key {key_id} is not in the approver set"),
            Rejection::Duplicate { name } => write!(f, "{name} already approved; each approver counts once"),
            Rejection::BadSignature => write!(f, "the signature does not verify"),
        }
    }
}

/// The result of checking approvals: a description, never a permission. Installing a set or
/// activating a policy takes the tokens [`ApproverSet::change`] and [`ApproverSet::activate`]
/// return.
#[must_use = "a report grants nothing; check is_met() or use the token-returning calls"]
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct ApprovalReport {
    /// What had to be approved.
    pub subject: Subject,
    /// Approvals needed.
    pub threshold: u32,
    /// Members of the set.
    pub of: usize,
    /// Names of the approvers whose approvals count, in the order given.
    pub accepted: Vec<String>,
    /// Approvals that do not count: (position among those given, from 0; why).
    pub rejected: Vec<(usize, Rejection)>,
}

impl ApprovalReport {
    /// Whether the threshold is met.
    pub fn is_met(&self) -> bool {
        self.accepted.len() >= self.threshold as usize && self.threshold > 0
    }
}

/// A policy with enough approvals: the only form evaluation for key release accepts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ActivePolicy {
    policy: Policy,
    approved_by: Vec<String>,
    approver_set_version: u64,
}

impl ActivePolicy {
    /// The policy.
    pub fn policy(&self) -> &Policy {
        &self.policy
    }

    /// Who approved it.
    pub fn approved_by(&self) -> &[String] {
        &self.approved_by
    }

    /// The version of the approver set that approved it.
    pub fn approver_set_version(&self) -> u64 {
        self.approver_set_version
    }
}

impl ApproverSet {
    /// Parses and validates an approver set from TOML.
    pub fn from_toml(text: &str) -> Result<Self, LoadError> {
        let set: ApproverSet = toml::from_str(text).map_err(|e| LoadError::from_toml(text, &e))?;
        set.validate()?;
        Ok(set)
    }

    fn validate(&self) -> Result<(), LoadError> {
        let n = self.approvers.len();
        if self.threshold == 0 || self.threshold as usize > n {
            return Err(LoadError::new(
                format!("threshold {} is impossible with {n} approver(s)", self.threshold),
                Some("set threshold between 1 and the number of [[approvers]]; 2 of 3 is a common choice".into()),
            ));
        }
        let mut names = BTreeSet::new();
        let mut keys = BTreeSet::new();
        for a in &self.approvers {
            if !names.insert(a.name.as_str()) {
                return Err(LoadError::new(format!("approver {} is listed twice", a.name), None));
            }
            if !keys.insert(&a.key) {
                return Err(LoadError::new(
                    format!("approver {}'s key is also another approver's", a.name),
                    Some("each approver needs their own key, or one person would count twice".into()),
                ));
            }
        }
        Ok(())
    }

    /// Canonical bytes (compact JSON, fixed key order).
    pub fn canonical_bytes(&self) -> Vec<u8> {
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `sha384:<hex>` of the canonical bytes.
    pub fn digest(&self) -> String {
        format!("sha384:{}", hex::encode(digest::digest(&digest::SHA384, &self.canonical_bytes())))
    }

    fn member(&self, key: &ApproverPublicKey) -> Option<&Approver> {
        self.approvers.iter().find(|a| &a.key == key)
    }

    /// Checks `approvals` of `subject` against this set: every approval is either counted once or
    /// rejected with its reason.
    pub fn check(&self, subject: &Subject, approvals: &[Approval]) -> ApprovalReport {
        let mut accepted: Vec<String> = Vec::new();
        let mut rejected = Vec::new();
        for (i, a) in approvals.iter().enumerate() {
            let s = &a.subject;
            let problem = if s.tenant != subject.tenant || self.tenant.as_str() != subject.tenant {
                Some(Rejection::WrongTenant { signed: s.tenant.clone() })
            } else if s.kind != subject.kind || s.id != subject.id {
                Some(Rejection::WrongDocument { signed: format!("{} {}", s.kind, s.id) })
            } else if s.version < subject.version {
                Some(Rejection::Stale { signed: s.version })
            } else if s.version > subject.version {
                Some(Rejection::OtherVersion { signed: s.version })
            } else if s.digest != subject.digest {
                Some(Rejection::DigestMismatch { signed: s.digest.clone() })
            } else if !a.signature_valid() {
                Some(Rejection::BadSignature)
            } else {
                match self.member(&a.approver) {
                    None => Some(Rejection::NotAnApprover { key_id: a.approver.key_id() }),
                    Some(m) if accepted.iter().any(|n| n == m.name.as_str()) => {
                        Some(Rejection::Duplicate { name: m.name.to_string() })
                    }
                    Some(m) => {
                        accepted.push(m.name.to_string());
                        None
                    }
                }
            };
            if let Some(p) = problem {
                rejected.push((i, p));
            }
        }
        ApprovalReport {
            subject: subject.clone(),
            threshold: self.threshold,
            of: self.approvers.len(),
            accepted,
            rejected,
        }
    }

    /// Activates `policy` when this set's threshold of valid approvals is met.
    pub fn activate(&self, policy: Policy, approvals: &[Approval]) -> Result<ActivePolicy, Box<ApprovalReport>> {
        let report = self.check(&Subject::of_policy(&policy), approvals);
        if !report.is_met() {
            return Err(Box::new(report));
        }
        Ok(ActivePolicy { policy, approved_by: report.accepted, approver_set_version: self.version.get() })
    }

    /// Reviews a proposed change to `next` without installing it: the report says which
    /// approvals count. For display (`coffre policy verify`); installing a set takes
    /// [`ApproverSet::change`], whose token exists only when the threshold is met.
    pub fn review_change(&self, next: &ApproverSet, approvals: &[Approval]) -> Result<ApprovalReport, String> {
        self.follows(next)?;
        Ok(self.check(&Subject::of_set(next), approvals))
    }

    /// Approves the replacement of this set by `next`: same tenant, the next version, and this
    /// set's threshold of valid approvals of `next` from this set's members. The only way to
    /// obtain an [`ApprovedSetChange`] for a version after 1.
    pub fn change(&self, next: ApproverSet, approvals: &[Approval]) -> Result<ApprovedSetChange, SetChangeError> {
        self.follows(&next).map_err(SetChangeError::Invalid)?;
        let report = self.check(&Subject::of_set(&next), approvals);
        if !report.is_met() {
            return Err(SetChangeError::NotApproved(Box::new(report)));
        }
        Ok(ApprovedSetChange { set: next, approved_by: report.accepted, by_version: Some(self.version.get()) })
    }

    /// A tenant's first approver set (version 1), installed by the vault's administrator with no
    /// approvals: there is no earlier set to approve it. Every later version needs
    /// [`ApproverSet::change`].
    pub fn bootstrap(first: ApproverSet) -> Result<ApprovedSetChange, SetChangeError> {
        if first.version.get() != 1 {
            return Err(SetChangeError::Invalid(format!(
                "a tenant's first approver set is version 1, not {}; later versions need the previous set's approvals",
                first.version
            )));
        }
        Ok(ApprovedSetChange { set: first, approved_by: Vec::new(), by_version: None })
    }

    fn follows(&self, next: &ApproverSet) -> Result<(), String> {
        if next.tenant != self.tenant {
            return Err(format!("the new set is for tenant {}, the current one for {}", next.tenant, self.tenant));
        }
        if next.version.get() != self.version.get() + 1 {
            return Err(format!(
                "the new set must be version {} (the current one is {}); it is {}",
                self.version.get() + 1,
                self.version,
                next.version
            ));
        }
        Ok(())
    }
}

/// An approver set that may be installed: either a tenant's first set
/// ([`ApproverSet::bootstrap`]) or one approved by the threshold of the set it replaces
/// ([`ApproverSet::change`]). Nothing else constructs one.
#[must_use = "an approved set change does nothing until it is installed"]
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApprovedSetChange {
    set: ApproverSet,
    approved_by: Vec<String>,
    by_version: Option<u64>,
}

impl ApprovedSetChange {
    /// The set to install.
    pub fn set(&self) -> &ApproverSet {
        &self.set
    }

    /// The members of the previous set whose approvals counted (empty for a first set).
    pub fn approved_by(&self) -> &[String] {
        &self.approved_by
    }

    /// The version of the set that approved the change (`None` for a first set).
    pub fn approved_by_version(&self) -> Option<u64> {
        self.by_version
    }

    /// The set, installed.
    pub fn into_set(self) -> ApproverSet {
        self.set
    }
}

/// Why an approver-set change is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetChangeError {
    /// The new set cannot follow the current one (tenant or version).
    Invalid(String),
    /// Too few valid approvals: every approval with its reason.
    NotApproved(Box<ApprovalReport>),
}

impl fmt::Display for SetChangeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SetChangeError::Invalid(why) => f.write_str(why),
            SetChangeError::NotApproved(report) => write!(f, "{report}"),
        }
    }
}

impl std::error::Error for SetChangeError {}

impl fmt::Display for ApprovalReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}: {} valid approval(s) of {} needed ({} approvers in the set)",
            self.subject,
            self.accepted.len(),
            self.threshold,
            self.of
        )?;
        for (i, why) in &self.rejected {
            write!(f, "; approval {i}: {why}")?;
        }
        Ok(())
    }
}
