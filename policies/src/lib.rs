//! `coffre-policies`: key-release policies that security teams can read, test, approve and
//! dry-run.
//!
//! # Documents
//!
//! A policy is a TOML document (format `coffre-policy/v1`, JSON Schema from [`json_schema`],
//! published as `policies/schema/coffre-policy-v1.schema.json`). Every key is known: an unknown
//! key, a wrong type or a malformed value is a [`LoadError`] with line, column and a hint.
//! [`lint`] flags contradictions (rules that make some or all requests impossible) and weak
//! spots; [`explain`] says in plain words what a policy allows.
//!
//! # Semantics of evaluation
//!
//! [`evaluate`]`(policies, evidence, request, now, mode)` is pure (no I/O, no clock):
//!
//! 1. **Applicability.** A policy applies to a request when its `tenant` is the request's, its
//!    `scope.datasets` lists the dataset (or `"*"`) or its `scope.dataset_labels` shares a label
//!    with it, and its `scope.job_kinds` lists the job's kind (or is empty).
//! 2. **Default deny.** When no policy applies, the request is denied (`policy.applicable`).
//! 3. **Conjunction.** Every applicable policy must allow; the denial lists every failed check
//!    of every policy, each with its name (`snp.min_tcb.microcode`, `gpu[1].rim_match`, …),
//!    what the policy expects and what was found.
//! 4. **Missing means deny.** Evidence of a kind the policy has no section for (`[snp]`,
//!    `[tdx]`, GPUs without `[gpu]`), a product without a minimum TCB when `snp.min_tcb` is
//!    given, a claim the evidence lacks (a TDX quote without TCB status), or a job rule whose
//!    value the manifest does not state: each is a failed check. A key that is *absent* from the
//!    document sets no constraint (an absent `snp.measurements` allows any measurement); an
//!    *empty list* allows nothing. `policy check` warns about every absent safeguard.
//! 5. **Simulated evidence** (the development TEE) passes only when the vault runs in
//!    [`Mode::Development`] *and* the policy lists `simulated` in `platform.kinds`; the
//!    resulting [`Allow`] says [`Allow::is_simulated`]. In [`Mode::Production`] it is denied by
//!    `platform.development_mode` whatever the policy says.
//! 6. **GPU modes.** NVIDIA's SPDM evidence does not state CC or developer-tools mode; when the
//!    evidence lacks them, `cc_mode = "on"` and `dev_tools = "off"` hold only if the GPU's
//!    driver and VBIOS measurements matched NVIDIA-signed RIMs.
//!
//! Only [`evaluate`] constructs an [`Allow`], and it accepts only [`ActivePolicy`]s, which only
//! [`ApproverSet::activate`] constructs (M of N approvals). [`dry_run`] evaluates a proposed
//! policy and returns a [`DryRun`], never an `Allow`. Evidence enters only as an [`Appraisal`],
//! built from the attestation crate's verified types.
//!
//! # Approvals
//!
//! Approvers hold ECDSA P-384 keys ([`ApproverSecretKey`]). An [`Approval`] signs a
//! [`Subject`]: kind, tenant, id, version and the SHA-384 of the document's canonical bytes.
//! Approvals of an older version (stale), another version, another tenant or document, changed
//! content, from a key outside the set, or repeated by one approver do not count, each with its
//! [`Rejection`] reason. An approver set changes only with the previous set's threshold:
//! [`ApproverSet::change`] returns an [`ApprovedSetChange`] token only then (a tenant's first set
//! comes from [`ApproverSet::bootstrap`]); [`ApproverSet::review_change`] only describes.

#![warn(missing_docs)]

mod approval;
mod document;
mod error;
mod eval;
mod lint;

pub use approval::{
    ActivePolicy, Approval, ApprovalReport, ApprovedSetChange, Approver, ApproverPublicKey, ApproverSecretKey,
    ApproverSet, Rejection, SetChangeError, SetFormat, Subject, SubjectKind,
};
pub use document::{
    AdvisoryId, CcMode, ChipId, CpuProduct, DatasetPattern, DevTools, Digest, EvidenceKind, Format, GpuArch, GpuRules,
    Hex, JobKind, JobRules, Name, PlatformRules, Policy, PolicyBit, PolicyRef, RecipientKey, Scope, SnpRules,
    SnpSigner, TcbFloor, TcbStatus, TdxRules, Timestamp, json_schema,
};
pub use error::LoadError;
pub use eval::{
    Allow, Appraisal, CheckOutcome, Decision, Denial, DryRun, JobRequest, Mode, Request, applies, dry_run,
    dry_run_unverified, evaluate,
};
pub use lint::{Finding, Severity, explain, lint};
