//! `coffre-api`: the protocol between the vault, its clients and its workers.
//!
//! - [`artifact`]: the files inside a sealed model artifact (a tar stream of plain files).
//! - [`evidence`]: evidence as a worker sends it, and the bundle roles it is recorded under.
//! - [`job`]: job manifests (canonical bytes, owner signatures).
//! - [`binding`]: the worker's ephemeral keys and the REPORT_DATA that binds nonce, keys and job.
//! - [`model`]: base models' digests, and their form in the vault's model store (the one
//!   module that reads and writes files).
//! - [`object`]: detached owner signatures over sealed objects, and streaming SHA-256.
//! - [`provenance`]: in-toto statements in DSSE envelopes, signed by a worker's attested key.
//! - [`wire`]: the vault's HTTP API bodies (and, with `openapi`, their schema).
//! - `client` (feature): the typed HTTPS client, pinning the vault's certificate.
//!
//! # Trust boundary
//!
//! Everything here is a description of bytes: parsing is strict (exact lengths, canonical
//! encodings, unknown fields refused), and nothing here decides anything. Verifying evidence is
//! `coffre-attestation`'s job, deciding is `coffre-broker`'s. No I/O.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod artifact;
mod b64;
pub mod binding;
pub mod evidence;
pub mod job;
pub mod model;
pub mod object;
pub mod pin;
pub mod provenance;
pub mod wire;

#[cfg(feature = "client")]
pub mod client;

pub use binding::{WorkerKeys, report_data};
pub use evidence::{RawCpu, RawEvidence, RawGpu, role};
pub use job::{JobDataset, JobManifest, SignedJob, VerifiedJob, job_id};
pub use object::ObjectSignature;
