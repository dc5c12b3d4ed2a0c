//! Owner signatures over sealed objects (`coffre-object-signature/v1`), detached.
//!
//! A sealed object's header MAC proves only that whoever wrote it knew the data key: anyone with
//! the recipients' *public* keys can seal an object claiming any tenant, dataset or object id,
//! and a co-recipient (who can unwrap the data key) can seal a different body under a
//! byte-identical header. What proves origin is a signature by the data owner over the SHA-256 of
//! the whole sealed object, kept beside it (`FILE.coffre.sig`). Detached, so that every sealed
//! object stays a byte-exact format-v1 object and v1 readers are unaffected.
//!
//! The vault checks it at upload and logs the object's digest with the signer's key id; a job
//! manifest pins the digest; a worker refuses any object with another digest.

use std::io::{Read, Write};

use aws_lc_rs::digest;
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_log::Digest;
use coffre_seal::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

/// The signature document format.
pub const OBJECT_SIGNATURE_FORMAT: &str = "coffre-object-signature/v1";
/// The signing context.
pub const OBJECT_CONTEXT: &str = "coffre/sealed-object/v1";

/// A detached owner signature over a sealed object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ObjectSignature {
    /// Always [`OBJECT_SIGNATURE_FORMAT`].
    pub format: String,
    /// SHA-256 of the whole sealed object (header and body).
    pub object: Digest,
    /// The owner's signing public key (`coffre-p384-sig-…`).
    pub signer: String,
    /// ECDSA P-384/SHA-384 over the 32 digest bytes in context [`OBJECT_CONTEXT`], base64.
    pub signature: String,
}

impl ObjectSignature {
    /// Signs the object with digest `object`.
    pub fn sign(key: &SigningKey, object: Digest) -> Result<Self, String> {
        let sig = key.sign(OBJECT_CONTEXT, object.as_bytes()).map_err(|e| e.to_string())?;
        Ok(Self {
            format: OBJECT_SIGNATURE_FORMAT.into(),
            object,
            signer: key.verifying_key().to_string(),
            signature: STANDARD.encode(sig),
        })
    }

    /// The file form (pretty JSON and a newline).
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut v = serde_json::to_vec_pretty(self).unwrap_or_default();
        v.push(b'\n');
        v
    }

    /// Reads the file form.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let s: ObjectSignature =
            serde_json::from_slice(bytes).map_err(|e| format!("not a Coffre object signature: {e}"))?;
        if s.format != OBJECT_SIGNATURE_FORMAT {
            return Err(format!("format {:?}, expected {OBJECT_SIGNATURE_FORMAT:?}", s.format));
        }
        Ok(s)
    }

    /// Checks that this signs `object` and verifies; returns the signer.
    pub fn verify(&self, object: &Digest) -> Result<VerifyingKey, String> {
        let signer: VerifyingKey = self.signer.parse().map_err(|e| format!("signer: {e}"))?;
        if self.object != *object {
            return Err(format!(
                "the signature is for object {}, but this object's SHA-256 is {object}: the object was changed or replaced",
                self.object
            ));
        }
        let sig = STANDARD.decode(&self.signature).map_err(|e| format!("signature: {e}"))?;
        if !signer.verify(OBJECT_CONTEXT, object.as_bytes(), &sig) {
            return Err(format!("the signature by {} does not verify", signer.key_id()));
        }
        Ok(signer)
    }
}

/// A `Write` that hashes (SHA-256) what passes through it.
pub struct HashingWriter<W> {
    inner: W,
    ctx: digest::Context,
}

impl<W> std::fmt::Debug for HashingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HashingWriter")
    }
}

impl<W: Write> HashingWriter<W> {
    /// Wraps `inner`.
    pub fn new(inner: W) -> Self {
        Self { inner, ctx: digest::Context::new(&digest::SHA256) }
    }

    /// The inner writer and the digest of everything written.
    pub fn finish(self) -> (W, Digest) {
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ctx.finish().as_ref());
        (self.inner, Digest::from_bytes(out))
    }

    /// The inner writer.
    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.ctx.update(&buf[..n]);
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// A `Read` that hashes (SHA-256) what passes through it.
pub struct HashingReader<R> {
    inner: R,
    ctx: digest::Context,
    len: u64,
}

impl<R> std::fmt::Debug for HashingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "HashingReader({} bytes)", self.len)
    }
}

impl<R: Read> HashingReader<R> {
    /// Wraps `inner`.
    pub fn new(inner: R) -> Self {
        Self { inner, ctx: digest::Context::new(&digest::SHA256), len: 0 }
    }

    /// Bytes read so far.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether nothing was read.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Reads the rest of the input (so the digest covers all of it) and returns the digest.
    pub fn finish(mut self) -> std::io::Result<Digest> {
        std::io::copy(&mut self, &mut std::io::sink())?;
        let mut out = [0u8; 32];
        out.copy_from_slice(self.ctx.finish().as_ref());
        Ok(Digest::from_bytes(out))
    }
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }
}

/// The SHA-256 of everything `r` yields.
pub fn digest_of(r: impl Read) -> std::io::Result<Digest> {
    HashingReader::new(r).finish()
}
