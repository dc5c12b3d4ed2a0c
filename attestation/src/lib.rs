//! `coffre-attestation`: verify hardware evidence, so that a data key is only ever released to code
//! proven to run inside a confidential VM.
//!
//! # What is here
//!
//! * [`snp`]: AMD SEV-SNP. Report parsing (versions 2, 3, 5), the ARK → ASK → VCEK and
//!   ARK → ASVK → VLEK chains to AMD roots **pinned in this crate**, TCB and chip binding, the
//!   Azure HCL wrapper, optional AMD CRLs, and typed [`snp::SnpClaims`].
//! * [`tdx`]: Intel DCAP quotes (TDX v4/v5, SGX v3) against the pinned Intel SGX Root CA, with
//!   collateral passed in; dcap-qvl wrapped behind our own checks and [`tdx::TdxClaims`].
//! * [`nvidia`]: NVIDIA Hopper and Blackwell GPUs: SPDM 1.1 measurements, the device chain to the
//!   pinned NVIDIA Device Identity CA, RIMs (XML-DSig) to the pinned NVIDIA RIM root, and
//!   [`nvidia::GpuClaims`].
//! * [`composite`]: one CPU and up to 8 GPUs in one appraisal, the GPU nonce bound to the CPU
//!   report's REPORT_DATA.
//! * [`collect`]: guest-side evidence collection for the worker (configfs-tsm, `/dev/sev-guest`).
//! * `simulated` (feature): a software SEV-SNP attester and simulated GPUs for development, tests
//!   and the demo.
//! * [`x509`], [`xml`], [`der`], [`crypto`]: the strict parsers and signature primitives the
//!   verifiers share.

//! # Trust boundary
//!
//! Verifiers are pure: evidence bytes, certificates, collateral and the time go in; a list of
//! checks and claims come out. They open no file or socket and never read the clock. A host's
//! certificates are only intermediates to be chained to a pinned root. Trust is a type: only a
//! verification in which every check passed yields a [`Verified`] (or a
//! [`composite::VerifiedComposite`]). Every failure is reported, not just the first.
//!
//! # What it does not do
//!
//! It does not decide whether verified claims are *acceptable* (that is `coffre-policies`), fetch
//! certificates or collateral from vendor services, or talk to the vault.

#![deny(unsafe_code)]
#![warn(missing_docs)]

mod check;
pub mod coco;
pub mod collect;
pub mod composite;
pub mod crypto;
pub mod der;
mod encoding;
pub mod kbs;
mod memo;
pub mod nvidia;
#[cfg(feature = "simulated")]
pub mod simulated;
pub mod snp;
pub mod tdx;
mod time;
pub mod x509;
pub mod xml;

pub use check::{Check, Verification, Verified};
pub use time::UnixTime;

/// Where evidence came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Platform {
    /// AMD SEV-SNP hardware.
    Snp,
    /// Intel TDX hardware.
    Tdx,
    /// An NVIDIA GPU in confidential-computing mode.
    Nvidia,
    /// The simulated TEE: development only, never acceptable to a production policy.
    Simulated,
}
