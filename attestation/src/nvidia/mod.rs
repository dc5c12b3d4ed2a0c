//! NVIDIA GPU attestation (Hopper and Blackwell): SPDM 1.1 GET_MEASUREMENTS evidence signed by the
//! GPU's device key, its certificate chain to the pinned NVIDIA Device Identity CA, and RIMs
//! signed to the pinned NVIDIA RIM root. Local verification only: no call to NVIDIA's services.

pub mod input;
pub mod rim;
pub mod spdm;
pub mod verify;

pub use input::GpuEvidence;
pub use verify::{Arch, GpuClaims, GpuVerification, NvidiaVerifier, VerifiedGpu};
