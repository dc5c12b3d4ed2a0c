//! `coffre-broker`: the key broker's decisions, and the one log state the vault and the auditor
//! share.
//!
//! - [`state::LogState`]: what the transparency log implies at an index (tenants, approver sets,
//!   active policies, datasets and their labels, keys and their lifecycle, jobs, nonces, release
//!   counts, artifact versions, mode) and the check every entry passes — before the vault appends
//!   it, and while an auditor replays it.
//! - [`release`]: appraising a worker's evidence, the evidence bundle, and the release token that
//!   is the only way to wrap a data key.
//! - [`ledger::Ledger`]: the vault's side — check, append (durably), apply, then release.
//! - [`audit`]: the offline audit of an exported log.
//!
//! # Trust boundary
//!
//! The broker decides; it does not talk. No HTTP, no `async`, no clock and no randomness of its
//! own: time, randomness and stores are passed in. Evidence becomes claims only in
//! `coffre-attestation`, a decision becomes permission only through `coffre-policies`'
//! `evaluate`, and a permission becomes a wrapped key only through a [`release::ReleaseToken`]
//! minted after the decision is in the log.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod audit;
pub mod ledger;
pub mod release;
pub mod state;

#[cfg(feature = "simulated")]
pub mod development;

pub use ledger::{Ledger, LedgerError, Pending};
pub use release::{
    Appraised, Decided, Denied, KbsDecided, KbsReleaseToken, ReleaseToken, WrappedKey, appraise, appraise_kbs,
};
pub use state::{Blobs, Justification, LogState, Transition, Verdict};
