//! Policy documents: the TOML a security officer writes, typed.
//!
//! Every key is known (an unknown key is a load error, never silently ignored) and every value is
//! checked while it is read, so an error points at the line and column of the offending value.
//! The canonical form that approvers sign is the document re-encoded as JSON with a fixed key
//! order ([`Policy::canonical_bytes`]); comments and layout are not part of it.

use std::collections::BTreeMap;
use std::fmt;
use std::num::NonZeroU64;

use aws_lc_rs::digest;
use coffre_attestation::UnixTime;
use schemars::JsonSchema;
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::LoadError;

/// The one document format this build reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub enum Format {
    /// Version 1.
    #[serde(rename = "coffre-policy/v1")]
    V1,
}

/// Deserializes a string and validates it with `parse`, whose error message is reported at the
/// value's position.
fn parse_string<'de, D: Deserializer<'de>, T>(
    d: D,
    parse: impl FnOnce(String) -> Result<T, String>,
) -> Result<T, D::Error> {
    parse(String::deserialize(d)?).map_err(serde::de::Error::custom)
}

/// A key-release policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
#[schemars(title = "Coffre key-release policy", description = "A key-release policy (format coffre-policy/v1).")]
pub struct Policy {
    /// Always `coffre-policy/v1`.
    pub format: Format,
    /// The policy's name within its tenant, e.g. `bank-strict`.
    pub id: Name,
    /// Version, from 1; every change is a new version that needs its own approvals.
    pub version: NonZeroU64,
    /// The tenant (organisation) whose datasets this policy governs.
    pub tenant: Name,
    /// What the policy is for, in one or two sentences.
    pub description: String,
    /// Which requests the policy applies to.
    pub scope: Scope,
    /// Which kinds of hardware may receive keys.
    pub platform: PlatformRules,
    /// Rules for AMD SEV-SNP evidence (also applied to simulated evidence, which is SNP-shaped).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snp: Option<SnpRules>,
    /// Rules for Intel TDX evidence.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tdx: Option<TdxRules>,
    /// Rules for the GPUs attached to the confidential VM.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gpu: Option<GpuRules>,
    /// Rules for the job that asks for the key.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub job: Option<JobRules>,
}

/// Which requests a policy applies to. A request is covered when its dataset is listed (or
/// `"*"` is) or carries one of the labels, and its job kind is listed (or no kinds are given).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct Scope {
    /// Dataset ids, or `"*"` for every dataset of the tenant.
    #[serde(default)]
    pub datasets: Vec<DatasetPattern>,
    /// Dataset labels: a dataset carrying any of them is covered.
    #[serde(default)]
    pub dataset_labels: Vec<Name>,
    /// Job kinds covered; empty means every kind of job (`fine-tune`, `evaluate`, `inference`).
    /// `kbs-resource` requests are covered only where listed.
    #[serde(default)]
    pub job_kinds: Vec<JobKind>,
}

/// A dataset id, or `*` for all of a tenant's datasets.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct DatasetPattern(#[schemars(regex(pattern = r"^(\*|[a-z0-9][a-z0-9._-]{0,63})$"))] String);

impl DatasetPattern {
    /// Whether `dataset` matches.
    pub fn matches(&self, dataset: &str) -> bool {
        self.0 == "*" || self.0 == dataset
    }

    /// The pattern as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for DatasetPattern {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_string(d, |s| {
            if s == "*" || valid_name(&s) {
                Ok(Self(s))
            } else {
                Err(format!(
                    "{s:?} is not a dataset id or \"*\" (ids are lowercase letters, digits, '.', '_' or '-', at most 64)"
                ))
            }
        })
    }
}

/// A lowercase identifier: tenant, policy id, label, datacentre name.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Name(#[schemars(regex(pattern = r"^[a-z0-9][a-z0-9._-]{0,63}$"))] String);

fn valid_name(s: &str) -> bool {
    let bytes = s.as_bytes();
    !bytes.is_empty()
        && bytes.len() <= 64
        && (bytes[0].is_ascii_lowercase() || bytes[0].is_ascii_digit())
        && bytes.iter().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'_' | b'-'))
}

impl Name {
    /// A name, when `s` is a valid one.
    pub fn new(s: &str) -> Option<Self> {
        valid_name(s).then(|| Self(s.to_owned()))
    }

    /// The name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Name {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Name {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_string(d, |s| {
            Name::new(&s).ok_or_else(|| {
                format!(
                    "{s:?} is not a valid name (lowercase letters, digits, '.', '_' or '-', starting with a letter or digit, at most 64)"
                )
            })
        })
    }
}

/// What a job does with the data.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "kebab-case")]
pub enum JobKind {
    /// Fine-tuning a model (full, LoRA or DP-SGD).
    FineTune,
    /// Evaluating a model on the data.
    Evaluate,
    /// Running inference over the data.
    Inference,
    /// A Confidential Containers guest fetching a data key through the KBS protocol
    /// (`/kbs/v0/resource`). Covered only by policies that list it: a policy written for
    /// training jobs never covers a key broker's clients by leaving `job_kinds` empty.
    KbsResource,
}

impl fmt::Display for JobKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            JobKind::FineTune => "fine-tune",
            JobKind::Evaluate => "evaluate",
            JobKind::Inference => "inference",
            JobKind::KbsResource => "kbs-resource",
        })
    }
}

/// Kinds of CPU evidence.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum EvidenceKind {
    /// AMD SEV-SNP.
    Snp,
    /// Intel TDX.
    Tdx,
    /// The simulated TEE: honoured only when the vault runs in development mode.
    Simulated,
}

impl fmt::Display for EvidenceKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            EvidenceKind::Snp => "snp",
            EvidenceKind::Tdx => "tdx",
            EvidenceKind::Simulated => "simulated",
        })
    }
}

/// AMD EPYC generations.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CpuProduct {
    /// Zen 3.
    Milan,
    /// Zen 4.
    Genoa,
    /// Zen 5.
    Turin,
}

impl CpuProduct {
    /// The attestation crate's product.
    pub fn of(p: coffre_attestation::snp::Product) -> Self {
        use coffre_attestation::snp::Product;
        match p {
            Product::Milan => CpuProduct::Milan,
            Product::Genoa => CpuProduct::Genoa,
            Product::Turin => CpuProduct::Turin,
        }
    }
}

impl fmt::Display for CpuProduct {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            CpuProduct::Milan => "milan",
            CpuProduct::Genoa => "genoa",
            CpuProduct::Turin => "turin",
        })
    }
}

/// Which hardware may receive keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct PlatformRules {
    /// Allowed kinds of CPU evidence.
    pub kinds: Vec<EvidenceKind>,
    /// Allowed AMD products (SNP evidence); absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu_products: Option<Vec<CpuProduct>>,
}

/// Guest policy bits a policy can forbid.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "snake_case")]
pub enum PolicyBit {
    /// The host may debug the guest (read its memory).
    Debug,
    /// A migration agent may be associated.
    MigrateMa,
    /// SMT (hyper-threading) allowed.
    Smt,
    /// CXL allowed.
    CxlAllow,
    /// May run on more than one socket (the single-socket bit is clear).
    MultiSocket,
}

impl PolicyBit {
    /// Whether `policy` has this bit (or, for `multi_socket`, lacks the single-socket bit).
    pub fn is_set(self, policy: &coffre_attestation::snp::GuestPolicy) -> bool {
        match self {
            PolicyBit::Debug => policy.debug,
            PolicyBit::MigrateMa => policy.migrate_ma,
            PolicyBit::Smt => policy.smt,
            PolicyBit::CxlAllow => policy.cxl_allow,
            PolicyBit::MultiSocket => !policy.single_socket,
        }
    }

    /// The snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            PolicyBit::Debug => "debug",
            PolicyBit::MigrateMa => "migrate_ma",
            PolicyBit::Smt => "smt",
            PolicyBit::CxlAllow => "cxl_allow",
            PolicyBit::MultiSocket => "multi_socket",
        }
    }
}

/// Keys that may sign an SNP report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum SnpSigner {
    /// Per-chip key (VCEK).
    Vcek,
    /// Cloud-provider key (VLEK).
    Vlek,
}

/// A minimum TCB: every component of both the reported and the committed TCB must be at least this.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TcbFloor {
    /// AMD-SP boot loader SVN.
    pub bootloader: u8,
    /// AMD-SP OS (TEE) SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
    /// Firmware management controller SVN: Turin and later, where it is required.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fmc: Option<u8>,
}

/// Rules for SEV-SNP reports.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct SnpRules {
    /// Keys that may have signed the report; default both.
    #[serde(default = "both_signers")]
    pub signing_keys: Vec<SnpSigner>,
    /// An AMD CRL must have been checked (and found the chain unrevoked).
    #[serde(default)]
    pub crl_required: bool,
    /// The VMPL the report must come from; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vmpl: Option<u8>,
    /// Guest policy bits that must be clear; default `["debug"]`.
    #[serde(default = "forbid_debug")]
    pub forbidden_policy_bits: Vec<PolicyBit>,
    /// Minimum TCB per product. When present, a product without an entry is denied.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_tcb: Option<BTreeMap<CpuProduct, TcbFloor>>,
    /// Minimum guest SVN.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_guest_svn: Option<u32>,
    /// Allowed launch measurements (48-byte hex); absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub measurements: Option<Vec<Hex<48>>>,
    /// Allowed HOST_DATA values (32-byte hex); absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_data: Option<Vec<Hex<32>>>,
    /// Allowed ID key digests (48-byte hex); absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id_key_digests: Option<Vec<Hex<48>>>,
    /// Allowed author key digests (48-byte hex); absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub author_key_digests: Option<Vec<Hex<48>>>,
    /// The hardware inventory: datacentre name → chip ids (64-byte hex, or 8-byte hex for Turin).
    /// Absent means any chip; a report with a masked (zero) chip id never matches.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub chip_ids: Option<BTreeMap<Name, Vec<ChipId>>>,
}

fn both_signers() -> Vec<SnpSigner> {
    vec![SnpSigner::Vcek, SnpSigner::Vlek]
}

fn forbid_debug() -> Vec<PolicyBit> {
    vec![PolicyBit::Debug]
}

/// Intel TCB statuses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
pub enum TcbStatus {
    /// Fully up to date.
    UpToDate,
    /// Up to date, software hardening needed.
    SWHardeningNeeded,
    /// Up to date, configuration needed.
    ConfigurationNeeded,
    /// Both of the above.
    ConfigurationAndSWHardeningNeeded,
    /// Out of date.
    OutOfDate,
    /// Out of date and configuration needed.
    OutOfDateConfigurationNeeded,
}

impl TcbStatus {
    /// Intel's spelling.
    pub fn name(self) -> &'static str {
        match self {
            TcbStatus::UpToDate => "UpToDate",
            TcbStatus::SWHardeningNeeded => "SWHardeningNeeded",
            TcbStatus::ConfigurationNeeded => "ConfigurationNeeded",
            TcbStatus::ConfigurationAndSWHardeningNeeded => "ConfigurationAndSWHardeningNeeded",
            TcbStatus::OutOfDate => "OutOfDate",
            TcbStatus::OutOfDateConfigurationNeeded => "OutOfDateConfigurationNeeded",
        }
    }
}

/// An Intel security advisory id such as `INTEL-SA-00837`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct AdvisoryId(#[schemars(regex(pattern = r"^INTEL-SA-[0-9]{5}$"))] String);

impl AdvisoryId {
    /// The id.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for AdvisoryId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_string(d, |s| {
            let ok = s.strip_prefix("INTEL-SA-").is_some_and(|n| n.len() == 5 && n.bytes().all(|b| b.is_ascii_digit()));
            if ok { Ok(Self(s)) } else { Err(format!("{s:?} is not an Intel advisory id such as \"INTEL-SA-00837\"")) }
        })
    }
}

/// Rules for Intel TDX quotes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct TdxRules {
    /// Acceptable TCB statuses after collateral evaluation.
    pub tcb_statuses: Vec<TcbStatus>,
    /// Advisories that may apply; any other advisory listed for the platform denies.
    #[serde(default)]
    pub allowed_advisories: Vec<AdvisoryId>,
    /// Allow a TD with the DEBUG attribute (never for real data).
    #[serde(default)]
    pub allow_debug: bool,
    /// Allowed MRTD values (48-byte hex); absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_td: Option<Vec<Hex<48>>>,
    /// Allowed MRCONFIGID values; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_config_id: Option<Vec<Hex<48>>>,
    /// Allowed MROWNER values; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_owner: Option<Vec<Hex<48>>>,
    /// Allowed MRSEAM (TDX module) values; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mr_seam: Option<Vec<Hex<48>>>,
    /// Allowed RTMR0 values; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr0: Option<Vec<Hex<48>>>,
    /// Allowed RTMR1 values; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr1: Option<Vec<Hex<48>>>,
    /// Allowed RTMR2 values; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr2: Option<Vec<Hex<48>>>,
    /// Allowed RTMR3 values; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rtmr3: Option<Vec<Hex<48>>>,
}

/// GPU architectures.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum GpuArch {
    /// H100.
    Hopper,
    /// B200.
    Blackwell,
}

impl GpuArch {
    /// The attestation crate's architecture.
    pub fn of(a: coffre_attestation::nvidia::Arch) -> Self {
        match a {
            coffre_attestation::nvidia::Arch::Hopper => GpuArch::Hopper,
            coffre_attestation::nvidia::Arch::Blackwell => GpuArch::Blackwell,
        }
    }
}

/// Required confidential-computing mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum CcMode {
    /// CC mode must be on (the default).
    On,
    /// Not checked.
    Any,
}

/// Required developer-tools mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "lowercase")]
pub enum DevTools {
    /// Developer tools must be off (the default).
    Off,
    /// Not checked.
    Any,
}

/// Rules for GPUs.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct GpuRules {
    /// Exactly this many GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub count: Option<u32>,
    /// At least this many GPUs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub min_count: Option<u32>,
    /// Allowed architectures; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub architectures: Option<Vec<GpuArch>>,
    /// Confidential-computing mode; default `on`.
    #[serde(default = "cc_on")]
    pub cc_mode: CcMode,
    /// Developer tools; default `off`.
    #[serde(default = "dev_tools_off")]
    pub dev_tools: DevTools,
    /// Allowed driver versions, e.g. `"550.90.07"`; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub driver_versions: Option<Vec<String>>,
    /// Allowed VBIOS versions, e.g. `"96.00.9f.00.01"` (compared case-insensitively); absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub vbios_versions: Option<Vec<String>>,
    /// Every GPU's measurements must match NVIDIA-signed driver and VBIOS RIMs.
    #[serde(default)]
    pub rim_match: bool,
}

fn cc_on() -> CcMode {
    CcMode::On
}

fn dev_tools_off() -> DevTools {
    DevTools::Off
}

/// A digest written `sha256:<hex>`, `sha384:<hex>` or `sha512:<hex>`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct Digest(
    #[schemars(regex(pattern = r"^(sha256:[0-9a-f]{64}|sha384:[0-9a-f]{96}|sha512:[0-9a-f]{128})$"))] String,
);

impl Digest {
    /// Parses `alg:hex` (hex normalised to lowercase).
    pub fn parse(s: &str) -> Result<Self, String> {
        let (alg, hex_part) =
            s.split_once(':').ok_or_else(|| format!("{s:?} is not a digest such as \"sha256:<64 hex digits>\""))?;
        let len = match alg {
            "sha256" => 64,
            "sha384" => 96,
            "sha512" => 128,
            _ => return Err(format!("{s:?}: unknown digest algorithm {alg:?} (sha256, sha384 or sha512)")),
        };
        if hex_part.len() != len || !hex_part.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(format!("{s:?}: a {alg} digest is {len} hex digits"));
        }
        Ok(Self(format!("{alg}:{}", hex_part.to_ascii_lowercase())))
    }

    /// The digest as written (lowercase).
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Digest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for Digest {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_string(d, |s| Digest::parse(&s))
    }
}

/// A recipient public key (`coffre-p384-pub-…`), checked when the policy loads.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct RecipientKey(#[schemars(regex(pattern = r"^coffre-p384-pub-[A-Za-z0-9_-]+$"))] String);

impl RecipientKey {
    /// Parses and checks a recipient public key.
    pub fn parse(s: &str) -> Result<Self, String> {
        s.parse::<coffre_seal::RecipientPublicKey>().map_err(|e| format!("{e}"))?;
        Ok(Self(s.trim().to_owned()))
    }

    /// The key text.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for RecipientKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        parse_string(d, |s| RecipientKey::parse(&s))
    }
}

/// A point in time, written as a TOML date-time with an offset (`2026-12-31T23:59:59Z`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Timestamp(pub UnixTime);

impl Serialize for Timestamp {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0.to_rfc3339())
    }
}

impl<'de> Deserialize<'de> for Timestamp {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let dt = toml::value::Datetime::deserialize(d)?;
        if dt.offset.is_none() || dt.time.is_none() || dt.date.is_none() {
            return Err(serde::de::Error::custom(format!(
                "{dt} needs a date, a time and a time zone, such as 2026-12-31T23:59:59Z"
            )));
        }
        UnixTime::parse_rfc3339(&dt.to_string()).map(Timestamp).map_err(serde::de::Error::custom)
    }
}

impl JsonSchema for Timestamp {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "Timestamp".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "format": "date-time"})
    }
}

/// Rules for the job that asks for the key (from its signed manifest).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
#[serde(deny_unknown_fields)]
pub struct JobRules {
    /// Allowed trainer measurements; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub trainer_measurements: Option<Vec<Digest>>,
    /// Allowed base-model digests; absent means any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base_models: Option<Vec<Digest>>,
    /// At most this many epochs.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_epochs: Option<u32>,
    /// At most this many optimiser steps.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_steps: Option<u64>,
    /// Keys every job output must be sealed to (e.g. the bank's own model-registry key).
    #[serde(default)]
    pub output_recipients: Vec<RecipientKey>,
    /// At most this many key releases under this policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_releases: Option<u64>,
    /// No release before this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_before: Option<Timestamp>,
    /// No release after this time.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub not_after: Option<Timestamp>,
}

/// `N` bytes written as hex (either case; stored and shown lowercase).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Hex<const N: usize>(pub [u8; N]);

impl<const N: usize> fmt::Debug for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> fmt::Display for Hex<N> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl<const N: usize> Serialize for Hex<N> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(self.0))
    }
}

impl<'de, const N: usize> Deserialize<'de> for Hex<N> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        let mut out = [0u8; N];
        match hex::decode_to_slice(&s, &mut out) {
            Ok(()) => Ok(Self(out)),
            Err(_) => Err(serde::de::Error::custom(format!(
                "expected {} hex digits ({N} bytes), found {:?} ({} characters)",
                2 * N,
                shorten(&s),
                s.len()
            ))),
        }
    }
}

impl<const N: usize> JsonSchema for Hex<N> {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        format!("Hex{N}").into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        let pattern = format!("^[0-9a-fA-F]{{{}}}$", 2 * N);
        schemars::json_schema!({"type": "string", "pattern": pattern, "description": format!("{N} bytes as hex")})
    }
}

/// A chip id: 64 bytes, or the 8 bytes Turin certificates use (the rest of CHIP_ID is zero).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ChipId(pub Vec<u8>);

impl ChipId {
    /// Whether a report's CHIP_ID is this chip. A zero (masked) CHIP_ID matches nothing.
    pub fn matches(&self, chip_id: &[u8; 64]) -> bool {
        if chip_id.iter().all(|b| *b == 0) {
            return false;
        }
        match self.0.len() {
            64 => self.0 == chip_id[..],
            8 => self.0 == chip_id[..8] && chip_id[8..].iter().all(|b| *b == 0),
            _ => false,
        }
    }
}

impl Serialize for ChipId {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&hex::encode(&self.0))
    }
}

impl<'de> Deserialize<'de> for ChipId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        match hex::decode(&s) {
            Ok(bytes) if bytes.len() == 64 || bytes.len() == 8 => Ok(Self(bytes)),
            _ => Err(serde::de::Error::custom(format!(
                "expected a chip id of 128 hex digits (64 bytes), or 16 for Turin's 8-byte ids; found {:?} ({} characters)",
                shorten(&s),
                s.len()
            ))),
        }
    }
}

impl JsonSchema for ChipId {
    fn schema_name() -> std::borrow::Cow<'static, str> {
        "ChipId".into()
    }

    fn json_schema(_: &mut schemars::SchemaGenerator) -> schemars::Schema {
        schemars::json_schema!({"type": "string", "pattern": "^([0-9a-fA-F]{128}|[0-9a-fA-F]{16})$"})
    }
}

fn shorten(s: &str) -> String {
    if s.chars().count() > 24 { format!("{}…", s.chars().take(24).collect::<String>()) } else { s.to_owned() }
}

/// A policy's identity as approvals and logs name it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct PolicyRef {
    /// Tenant.
    pub tenant: String,
    /// Policy id.
    pub id: String,
    /// Version.
    pub version: u64,
    /// `sha384:<hex>` of the canonical bytes.
    pub digest: String,
}

impl fmt::Display for PolicyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{} v{}", self.tenant, self.id, self.version)
    }
}

impl Policy {
    /// Parses a policy from TOML. Errors carry the line and column and a hint.
    pub fn from_toml(text: &str) -> Result<Self, LoadError> {
        toml::from_str(text).map_err(|e| LoadError::from_toml(text, &e))
    }

    /// The bytes approvers sign: the document as compact JSON, keys in a fixed order, optional
    /// sections omitted when absent. Comments and formatting of the TOML are not part of it.
    pub fn canonical_bytes(&self) -> Vec<u8> {
        // Serializing plain data (strings, integers, maps with string keys) cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }

    /// `sha384:<hex>` of [`Policy::canonical_bytes`].
    pub fn digest(&self) -> String {
        format!("sha384:{}", hex::encode(digest::digest(&digest::SHA384, &self.canonical_bytes())))
    }

    /// Tenant, id, version and digest.
    pub fn reference(&self) -> PolicyRef {
        PolicyRef {
            tenant: self.tenant.to_string(),
            id: self.id.to_string(),
            version: self.version.get(),
            digest: self.digest(),
        }
    }

    /// `id@version`, as failed checks name their policy.
    pub fn label(&self) -> String {
        format!("{}@{}", self.id, self.version)
    }
}

/// The JSON Schema of policy documents (draft 2020-12), for editors.
pub fn json_schema() -> String {
    let schema = schemars::schema_for!(Policy);
    let mut text = serde_json::to_string_pretty(&schema).unwrap_or_default();
    text.push('\n');
    text
}
