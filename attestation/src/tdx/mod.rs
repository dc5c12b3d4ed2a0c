//! Intel TDX (and SGX) DCAP quotes: quote formats v3, v4 and v5, verified offline against the
//! pinned Intel SGX Root CA with collateral passed in.
//!
//! The cryptographic core (attestation-key signature, QE report signed by the PCK, QE report data
//! binding, PCK chain and CRLs, TCB Info and QE Identity signatures and issuer chains, TCB level
//! matching including TDX module identity, Revoked) is dcap-qvl, wrapped here. Around it, this
//! module adds its own checks so that independent failures are all reported: the quote layout and
//! trailing bytes, and the validity window of every collateral item at the given time.
//!
//! TD attributes that are a matter of policy (DEBUG, service TDs) are reported as claims, not
//! rejected here. dcap-qvl itself refuses migratable TDs, TDs without SEPT_VE_DISABLE and
//! reserved attribute bits (fail closed).

pub mod collateral;
pub mod quote;
pub mod verify;

pub use collateral::{PcsCollateral, TdxCollateral};
pub use verify::{TdxClaims, TdxVerification, TdxVerifier, VerifiedTdx};
