//! coffre-log: the transparency log auditors re-verify offline.
//!
//! - [`merkle`]: the RFC 6962 / RFC 9162 Merkle tree, inclusion and consistency proofs.
//! - [`note`]: C2SP `signed-note` (Ed25519) and `tlog-checkpoint`: what the log signs and
//!   auditors or witnesses pin.
//! - [`entry`]: the canonical, versioned entries (policy changes, releases, denials,
//!   artifacts, key lifecycle, configuration).
//! - [`bundle`]: content-addressed evidence bundles a release entry commits to.
//! - [`store`]: append-only storage traits, with in-memory and directory implementations (the
//!   directory layout is also the export format).
//! - [`log`]: appending and signing checkpoints, never two roots for one size.
//! - [`proof`]: proofs in a portable JSON form.
//!
//! Nothing here does network I/O; only the directory store touches files. The crate depends
//! on no other Coffre crate, so an auditor's tooling can use it alone.

#![forbid(unsafe_code)]

pub mod bundle;
pub mod digest;
pub mod entry;
pub mod log;
pub mod merkle;
pub mod note;
pub mod proof;
pub mod store;

pub use bundle::Bundle;
pub use digest::Digest;
pub use entry::{Entry, FailedCheck, PolicyVersion};
pub use log::{Log, LogError};
pub use merkle::{Hash, ProofError, Tree, leaf_hash, node_hash, verify_consistency, verify_inclusion};
pub use note::{Checkpoint, NoteError, NoteSigner, NoteVerifier};
pub use store::{BlobStore, DirStore, EntryStore, MemoryStore, StoreError};
