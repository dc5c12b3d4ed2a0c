//! The one error type of `coffre-seal`.
//!
//! Every way a sealed object can be wrong has its own variant, so callers (the CLI, the vault, the
//! worker) can say precisely what happened and what to do next. Errors never carry key material or
//! plaintext.

use std::{io, sync::Arc};

use crate::keys::KeyId;

/// Everything that can go wrong while sealing, opening or inspecting a sealed object.
#[derive(Debug, Clone, thiserror::Error)]
#[non_exhaustive]
pub enum SealError {
    /// The input does not start with the Coffre sealed-object magic bytes.
    #[error("not a Coffre sealed object: the magic bytes at the start are wrong")]
    BadMagic,

    /// The header declares a format version this build does not read.
    #[error("unsupported sealed-object format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version found in the header.
        found: u16,
        /// Version this build reads.
        supported: u16,
    },

    /// The header is structurally invalid (lengths, encodings, limits).
    #[error("malformed header: {0}")]
    MalformedHeader(String),

    /// The header MAC (or the recipient stanza that wraps the data key for this identity) did not
    /// verify: some header byte was modified after sealing.
    #[error("header authentication failed: {0}")]
    HeaderTampered(&'static str),

    /// None of the recipient stanzas is addressed to the given identity.
    #[error("no recipient stanza matches this key (key id {ours}); the object is sealed to {}", list_ids(.recipients))]
    NoMatchingRecipient {
        /// Key id of the identity that tried to open the object.
        ours: KeyId,
        /// Key ids of the recipients the object is sealed to.
        recipients: Vec<KeyId>,
    },

    /// The body's key commitment does not match the key and header: the salt or commitment was
    /// modified, or the body belongs to another header.
    #[error("key commitment mismatch: the body was modified or does not belong to this header")]
    CommitmentMismatch,

    /// A chunk failed AEAD authentication; no plaintext of it (or after it) is released.
    #[error("chunk {index} failed authentication: the ciphertext was modified, reordered or duplicated")]
    ChunkAuthentication {
        /// Zero-based index of the first chunk that failed.
        index: u64,
    },

    /// The ciphertext ends too early.
    #[error("ciphertext truncated: {0}")]
    Truncated(String),

    /// Bytes follow the final chunk (or the end the header declares).
    #[error("trailing data: unexpected bytes follow the final chunk")]
    TrailingData,

    /// The authenticated body length disagrees with the length the header declares, or a sealer
    /// was given a different number of bytes than it declared.
    #[error("length mismatch: the header declares {declared} plaintext bytes but there are {actual}")]
    LengthMismatch {
        /// Declared plaintext length.
        declared: u64,
        /// Actual plaintext length.
        actual: u64,
    },

    /// The message would exceed the 2^38-chunk limit of the chunked-encryption scheme.
    #[error("message too long: more than 2^38 chunks (4 PiB)")]
    TooLong,

    /// A key of the wrong length was supplied.
    #[error("invalid key length: expected {expected} bytes, got {actual}")]
    InvalidKeyLength {
        /// Required length.
        expected: usize,
        /// Supplied length.
        actual: usize,
    },

    /// A nonce of the wrong length was supplied (only 96-bit nonces are used).
    #[error("invalid nonce length: expected 12 bytes, got {0}")]
    InvalidNonceLength(usize),

    /// A public or secret key string could not be parsed.
    #[error("invalid key: {0}")]
    InvalidKey(String),

    /// A requested plaintext range lies outside the object.
    #[error("range {start}..{end} is outside the {len}-byte plaintext")]
    RangeOutOfBounds {
        /// Requested start.
        start: u64,
        /// Requested end (exclusive).
        end: u64,
        /// Plaintext length.
        len: u64,
    },

    /// An argument is out of its documented domain (e.g. an id with forbidden characters).
    #[error("invalid argument: {0}")]
    InvalidArgument(String),

    /// The system random number generator or another primitive failed unexpectedly.
    #[error("cryptographic primitive failed: {0}")]
    Crypto(&'static str),

    /// Reading or writing the underlying stream failed.
    #[error("I/O error: {0}")]
    Io(Arc<io::Error>),
}

fn list_ids(ids: &[KeyId]) -> String {
    if ids.is_empty() {
        return "no known recipient".to_owned();
    }
    ids.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
}

impl From<io::Error> for SealError {
    /// Recovers a `SealError` that travelled through an `io::Error` (our `Read`/`Write` adapters
    /// wrap their errors that way) and wraps genuine I/O errors.
    fn from(err: io::Error) -> Self {
        if err.get_ref().is_some_and(|inner| inner.is::<SealError>()) {
            if let Some(inner) = err.into_inner()
                && let Ok(seal) = inner.downcast::<SealError>()
            {
                return *seal;
            }
            return SealError::Crypto("error lost while unwrapping");
        }
        SealError::Io(Arc::new(err))
    }
}

impl From<SealError> for io::Error {
    fn from(err: SealError) -> Self {
        match err {
            SealError::Io(inner) => io::Error::new(inner.kind(), SealError::Io(inner)),
            other => {
                let kind = match other {
                    SealError::Truncated(_) => io::ErrorKind::UnexpectedEof,
                    _ => io::ErrorKind::InvalidData,
                };
                io::Error::new(kind, other)
            }
        }
    }
}

/// `Result` with [`SealError`].
pub type Result<T, E = SealError> = std::result::Result<T, E>;
