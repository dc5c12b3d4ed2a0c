//! `coffre-seal`: the sealed-object format of Coffre, version 1.
//!
//! A data owner seals a dataset on their own machine; only the sealed object ever leaves it. A
//! sealed object is a versioned, MAC-authenticated [header] followed by a body in
//! [C2SP chunked encryption](chunked) (Cobblestone-256: AES-256-GCM, HKDF-SHA-512, 16 KiB chunks).
//! The body is keyed by a fresh 256-bit data key (DEK) that the header wraps to one or more
//! recipients with [HPKE](hpke) (DHKEM(P-384, HKDF-SHA384), HKDF-SHA384, AES-256-GCM).
//!
//! # Trust boundary
//!
//! Everything here runs where plaintext is allowed to exist: the data owner's machine or an
//! attested worker. The crate authenticates everything it releases: header fields only after
//! the MAC verified under the unwrapped data key, plaintext only chunk by chunk after each chunk's
//! tag verified. Truncation, extension, reordering and moving a body under another header are
//! detected. Keys are zeroized on drop and have no `Debug`/`Display`/`Clone`.
//!
//! # What it does not do
//!
//! No file or network I/O (only `Read`/`Write`/`Seek` given by the caller), no key storage, no
//! policy: deciding *who* may receive a data key is the vault's job. Headers are readable without
//! a key by design (`coffre inspect`), so tenant, dataset, content type, length and recipient key
//! ids are not confidential.

#![forbid(unsafe_code)]
#![warn(missing_docs)]

pub mod aead;
pub mod chunked;
mod error;
pub mod header;
pub mod hpke;
pub mod kdf;
pub mod keys;
pub mod object;
mod par;
pub mod sign;

pub use error::{Result, SealError};
pub use header::{Header, HeaderFields, ObjectId, Stanza};
pub use kdf::{RandomSource, SystemRandom};
pub use keys::{DataKey, KeyId, RecipientPublicKey, RecipientSecretKey};
pub use object::{Sealer, inspect, open, open_body, open_random_access, seal};
pub use par::Workers;
pub use sign::{SigningKey, VerifyingKey};
