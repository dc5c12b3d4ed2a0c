//! `coffre-vault`: `coffred`, the Coffre vault as a service.
//!
//! HTTPS (rustls, AWS-LC) over axum; tenants and principals with tokens (stored hashed) or
//! client certificates; the key hierarchy (a root key backend sealing each tenant's KEK and the
//! log's signing key); datasets uploaded as sealed objects, checked without reading plaintext;
//! policies proposed, approved and activated in the log; signed jobs; the key broker (single-use
//! challenges, evidence appraised against pinned roots and the collateral store, decisions
//! appended to the transparency log — durably, in groups — before any key is wrapped to an
//! attested worker); artifacts with provenance; the log exported to auditors.
//!
//! # Trust boundary
//!
//! The vault holds KEKs and releases data keys; it never holds plaintext data. Every decision is
//! made by `coffre-broker` against the log's state, the same code an auditor replays. This crate
//! adds transport, identity, storage and limits; it decides nothing on its own.

#![forbid(unsafe_code)]

pub mod app;
pub mod challenges;
pub mod collateral;
pub mod config;
pub mod db;
pub mod error;
pub mod kbs;
pub mod keys;
pub mod migrate;
pub mod objects;
pub mod openapi;
pub mod pkcs11;
pub mod routes;
pub mod sequencer;
pub mod server;
pub mod tls;
