//! C2SP chunked encryption (`c2sp.org/chunked-encryption`), the Cobblestone-256 instantiation:
//! AES-256-GCM with HKDF-Expand-SHA-512.
//!
//! ```text
//! key ‖ base nonce ‖ commitment = HKDF-Expand-SHA-512(prk = input key,
//!     info = "c2sp.org/chunked-encryption@v1+" ‖ "AEAD_AES_256_GCM" ‖ 0x00 ‖ salt ‖ context, 76)
//! body = salt (24) ‖ commitment (32) ‖ chunk 0 ‖ chunk 1 ‖ … ‖ final chunk
//! chunk k = AES-256-GCM(key, base nonce XOR be96(k), aad = "", 16 KiB of plaintext)
//! ```
//!
//! Every chunk is exactly 16 KiB of plaintext except the final one, which is always shorter (and
//! may be empty): the short chunk is the end-of-message signal, so truncation and extension are
//! detected. Chunk `k` sits at offset `56 + k·16400`, so any range can be opened alone.
//!
//! Three ways in, one engine: [`EncryptingWriter`] (streaming `Write`), [`DecryptingReader`]
//! (streaming `Read`) and [`RandomAccessReader`] (`read_at`, `Read + Seek`). All of them seal and
//! open batches of up to [`BATCH_CHUNKS`] chunks, in parallel when given a multi-threaded
//! [`Workers`], so memory stays constant whatever the message size.
//!
//! Plaintext is released only from chunks that authenticated. After any failure a streaming
//! reader keeps returning the same error.

use std::io::{self, Read, Seek, SeekFrom, Write};

use zeroize::{Zeroize, Zeroizing};

use crate::aead::{AeadNonce, Aes256Gcm, KEY_LEN, NONCE_LEN, TAG_LEN};
use crate::error::{Result, SealError};
use crate::kdf::{HkdfHash, Prk, RandomSource};
use crate::par::Workers;

/// Plaintext bytes per chunk.
pub const CHUNK_SIZE: usize = 16 * 1024;
/// Ciphertext bytes per full chunk.
pub const ENCRYPTED_CHUNK_SIZE: usize = CHUNK_SIZE + TAG_LEN;
/// Salt length.
pub const SALT_LEN: usize = 24;
/// Key commitment length.
pub const COMMITMENT_LEN: usize = 32;
/// Salt plus commitment: the fixed prefix of every body.
pub const PREFIX_LEN: usize = SALT_LEN + COMMITMENT_LEN;
/// Chunk index limit of the scheme (4 PiB).
pub const MAX_CHUNKS: u64 = 1 << 38;
/// Chunks sealed or opened per batch (4 MiB of plaintext): bounds memory, amortises threading.
pub const BATCH_CHUNKS: usize = 256;

const INFO_PREFIX: &[u8] = b"c2sp.org/chunked-encryption@v1+";
const AEAD_NAME: &[u8] = b"AEAD_AES_256_GCM";

/// The per-message AEAD key and base nonce. Wiped on drop.
pub struct BodyKey {
    aead: Aes256Gcm,
    base_nonce: Zeroizing<[u8; NONCE_LEN]>,
}

impl std::fmt::Debug for BodyKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("BodyKey(<redacted>)")
    }
}

impl BodyKey {
    /// Derives key, base nonce and commitment from the input key, salt and context.
    pub fn derive(input_key: &[u8], salt: &[u8; SALT_LEN], context: &[u8]) -> Result<(Self, [u8; COMMITMENT_LEN])> {
        if input_key.len() != KEY_LEN {
            return Err(SealError::InvalidKeyLength { expected: KEY_LEN, actual: input_key.len() });
        }
        let prk = Prk::from_uniform_key(HkdfHash::Sha512, input_key)?;
        let mut okm = Zeroizing::new([0u8; KEY_LEN + NONCE_LEN + COMMITMENT_LEN]);
        prk.expand(&[INFO_PREFIX, AEAD_NAME, &[0u8], salt, context], okm.as_mut())?;
        let aead = Aes256Gcm::new(&okm[..KEY_LEN])?;
        let mut base_nonce = Zeroizing::new([0u8; NONCE_LEN]);
        base_nonce.copy_from_slice(&okm[KEY_LEN..KEY_LEN + NONCE_LEN]);
        let mut commitment = [0u8; COMMITMENT_LEN];
        commitment.copy_from_slice(&okm[KEY_LEN + NONCE_LEN..]);
        Ok((Self { aead, base_nonce }, commitment))
    }

    /// Starts a new message: draws a salt and returns the key with the 56-byte body prefix.
    pub fn begin(input_key: &[u8], context: &[u8], rng: &mut dyn RandomSource) -> Result<(Self, [u8; PREFIX_LEN])> {
        let mut salt = [0u8; SALT_LEN];
        rng.fill(&mut salt)?;
        Self::begin_with_salt(input_key, context, &salt)
    }

    /// [`BodyKey::begin`] with a caller-chosen salt. The salt must never repeat for one input key;
    /// this exists for conformance tests against published vectors.
    pub fn begin_with_salt(
        input_key: &[u8],
        context: &[u8],
        salt: &[u8; SALT_LEN],
    ) -> Result<(Self, [u8; PREFIX_LEN])> {
        let (key, commitment) = Self::derive(input_key, salt, context)?;
        let mut prefix = [0u8; PREFIX_LEN];
        prefix[..SALT_LEN].copy_from_slice(salt);
        prefix[SALT_LEN..].copy_from_slice(&commitment);
        Ok((key, prefix))
    }

    /// Checks a body prefix (salt ‖ commitment) against the input key and context, in constant
    /// time, before any chunk is touched.
    pub fn open(input_key: &[u8], context: &[u8], prefix: &[u8; PREFIX_LEN]) -> Result<Self> {
        let mut salt = [0u8; SALT_LEN];
        salt.copy_from_slice(&prefix[..SALT_LEN]);
        let (key, commitment) = Self::derive(input_key, &salt, context)?;
        aws_lc_rs::constant_time::verify_slices_are_equal(&commitment, &prefix[SALT_LEN..])
            .map_err(|_| SealError::CommitmentMismatch)?;
        Ok(key)
    }

    /// Raw-mode key from an AEAD key and base nonce (the vectors' `aeadKey`/`baseNonce`).
    pub fn from_raw(aead_key: &[u8], base_nonce: &[u8]) -> Result<Self> {
        let aead = Aes256Gcm::new(aead_key)?;
        let nonce = AeadNonce::from_slice(base_nonce)?;
        Ok(Self { aead, base_nonce: Zeroizing::new(nonce.0) })
    }

    fn nonce(&self, index: u64) -> AeadNonce {
        let mut nonce = *self.base_nonce;
        for (n, c) in nonce[NONCE_LEN - 8..].iter_mut().zip(index.to_be_bytes()) {
            *n ^= c;
        }
        AeadNonce(nonce)
    }
}

/// Number of chunks (including the final short one) for a plaintext length.
pub fn chunk_count(plaintext_len: u64) -> u64 {
    plaintext_len / CHUNK_SIZE as u64 + 1
}

/// Body length (prefix and all chunks) for a plaintext length, or `None` past the chunk limit.
pub fn encrypted_len(plaintext_len: u64) -> Option<u64> {
    let chunks = chunk_count(plaintext_len);
    if chunks > MAX_CHUNKS {
        return None;
    }
    plaintext_len.checked_add(chunks * TAG_LEN as u64)?.checked_add(PREFIX_LEN as u64)
}

/// Plaintext length of a body of `body_len` bytes (prefix included), after checking that such a
/// body can exist: at least one chunk, and a final chunk between a tag and a full chunk long.
pub fn plaintext_len(body_len: u64) -> Result<u64> {
    let Some(chunks_len) = body_len.checked_sub(PREFIX_LEN as u64) else {
        return Err(SealError::Truncated(format!(
            "the body is {body_len} bytes, shorter than its {PREFIX_LEN}-byte salt and commitment"
        )));
    };
    let full = chunks_len / ENCRYPTED_CHUNK_SIZE as u64;
    let rem = chunks_len % ENCRYPTED_CHUNK_SIZE as u64;
    if let Some(problem) = final_chunk_problem(rem as usize) {
        return Err(problem);
    }
    if full >= MAX_CHUNKS {
        return Err(SealError::TooLong);
    }
    Ok(full * CHUNK_SIZE as u64 + (rem - TAG_LEN as u64))
}

/// Why a final chunk of `rem` ciphertext bytes cannot be valid, if it cannot.
fn final_chunk_problem(rem: usize) -> Option<SealError> {
    if rem == 0 {
        Some(SealError::Truncated("the final short chunk is missing (the body ends on a chunk boundary)".into()))
    } else if rem < TAG_LEN {
        Some(SealError::Truncated(format!("the final chunk is {rem} bytes, shorter than its tag")))
    } else {
        None
    }
}

/// Chunks `first ..` (`full` of them, plus the final one) must all have indices below 2^38.
fn check_chunk_range(first: u64, full: usize, with_final: bool) -> Result<()> {
    let count = full as u64 + u64::from(with_final);
    match first.checked_add(count) {
        Some(end) if end <= MAX_CHUNKS => Ok(()),
        _ => Err(SealError::TooLong),
    }
}

/// Seals consecutive chunks starting at `first`. Without `with_final`, `plaintext` must be whole
/// chunks; with it, the remainder (possibly empty) becomes the final chunk. `out` must be exactly
/// the sealed length.
pub fn seal_chunks(
    key: &BodyKey,
    workers: &Workers,
    first: u64,
    plaintext: &[u8],
    with_final: bool,
    out: &mut [u8],
) -> Result<()> {
    let full = plaintext.len() / CHUNK_SIZE;
    let rem = plaintext.len() % CHUNK_SIZE;
    if !with_final && rem != 0 {
        return Err(SealError::InvalidArgument("non-final chunks must be full".into()));
    }
    check_chunk_range(first, full, with_final)?;
    let expected_out = full * ENCRYPTED_CHUNK_SIZE + if with_final { rem + TAG_LEN } else { 0 };
    if out.len() != expected_out {
        return Err(SealError::InvalidArgument("sealed output buffer has the wrong length".into()));
    }
    let (full_out, final_out) = out.split_at_mut(full * ENCRYPTED_CHUNK_SIZE);
    let inputs: Vec<&[u8]> = plaintext[..full * CHUNK_SIZE].chunks_exact(CHUNK_SIZE).collect();
    let mut outputs: Vec<&mut [u8]> = full_out.chunks_exact_mut(ENCRYPTED_CHUNK_SIZE).collect();
    let failed = workers.first_failure(&inputs, &mut outputs, |i, pt, ct| {
        key.aead.seal_into(&key.nonce(first + i as u64), &[], pt, ct).is_ok()
    });
    if failed.is_some() {
        return Err(SealError::Crypto("AES-256-GCM seal"));
    }
    if with_final {
        key.aead.seal_into(&key.nonce(first + full as u64), &[], &plaintext[full * CHUNK_SIZE..], final_out)?;
    }
    Ok(())
}

/// Opens consecutive chunks starting at `first` into `out`. Without `with_final`, `ciphertext`
/// must be whole encrypted chunks; with it, the remainder is the final chunk and must be between a
/// tag and a full chunk long. On failure returns the index of the first chunk that failed; `out`
/// then holds authenticated plaintext only for the chunks before it and zeros after.
pub fn open_chunks(
    key: &BodyKey,
    workers: &Workers,
    first: u64,
    ciphertext: &[u8],
    with_final: bool,
    out: &mut [u8],
) -> Result<()> {
    let full = ciphertext.len() / ENCRYPTED_CHUNK_SIZE;
    let rem = ciphertext.len() % ENCRYPTED_CHUNK_SIZE;
    let final_ok = if with_final { rem >= TAG_LEN } else { rem == 0 };
    let plain_len = full * CHUNK_SIZE + if with_final { rem.saturating_sub(TAG_LEN) } else { 0 };
    if !final_ok || out.len() != plain_len {
        return Err(SealError::InvalidArgument("chunk layout does not match the buffers".into()));
    }
    check_chunk_range(first, full, with_final)?;
    let (full_out, final_out) = out.split_at_mut(full * CHUNK_SIZE);
    let inputs: Vec<&[u8]> = ciphertext[..full * ENCRYPTED_CHUNK_SIZE].chunks_exact(ENCRYPTED_CHUNK_SIZE).collect();
    let mut outputs: Vec<&mut [u8]> = full_out.chunks_exact_mut(CHUNK_SIZE).collect();
    let failed = workers.first_failure(&inputs, &mut outputs, |i, ct, pt| {
        key.aead.open_into(&key.nonce(first + i as u64), &[], ct, pt)
    });
    drop(outputs);
    let failed = failed.or_else(|| {
        (with_final
            && !key.aead.open_into(
                &key.nonce(first + full as u64),
                &[],
                &ciphertext[full * ENCRYPTED_CHUNK_SIZE..],
                final_out,
            ))
        .then_some(full)
    });
    match failed {
        None => Ok(()),
        Some(i) => {
            // Later chunks may have authenticated, but nothing after a failure is released.
            out[i * CHUNK_SIZE..].zeroize();
            Err(SealError::ChunkAuthentication { index: first + i as u64 })
        }
    }
}

/// Reads until `buf` is full or the stream ends; returns the bytes read.
pub(crate) fn read_full<R: Read + ?Sized>(reader: &mut R, buf: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buf.len() {
        match reader.read(&mut buf[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    Ok(filled)
}

/// Streaming encryption: write plaintext, call [`EncryptingWriter::finish`] to emit the final
/// chunk. Dropping the writer without `finish` leaves a body every reader rejects as truncated.
pub struct EncryptingWriter<W: Write> {
    inner: W,
    key: BodyKey,
    workers: Workers,
    plain: Zeroizing<Vec<u8>>,
    sealed: Vec<u8>,
    next_index: u64,
    written: u64,
    poisoned: bool,
}

impl<W: Write> std::fmt::Debug for EncryptingWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "EncryptingWriter {{ written: {}, workers: {:?} }}", self.written, self.workers)
    }
}

impl<W: Write> EncryptingWriter<W> {
    /// Writes the body prefix (fresh salt and commitment) to `inner` and returns the writer.
    pub fn new(
        mut inner: W,
        input_key: &[u8],
        context: &[u8],
        workers: Workers,
        rng: &mut dyn RandomSource,
    ) -> Result<Self> {
        let (key, prefix) = BodyKey::begin(input_key, context, rng)?;
        inner.write_all(&prefix)?;
        Ok(Self {
            inner,
            key,
            workers,
            plain: Zeroizing::new(Vec::new()),
            sealed: Vec::new(),
            next_index: 0,
            written: 0,
            poisoned: false,
        })
    }

    /// Plaintext bytes accepted so far.
    pub fn plaintext_written(&self) -> u64 {
        self.written
    }

    /// Seals `plaintext` (whole chunks, plus the final chunk when `with_final`) and writes it.
    fn seal_and_write(&mut self, plaintext: Option<&[u8]>, with_final: bool) -> Result<()> {
        let plain: &[u8] = plaintext.unwrap_or(&self.plain);
        let full = plain.len() / CHUNK_SIZE;
        let rem = plain.len() % CHUNK_SIZE;
        let out_len = full * ENCRYPTED_CHUNK_SIZE + if with_final { rem + TAG_LEN } else { 0 };
        self.sealed.resize(out_len, 0);
        seal_chunks(&self.key, &self.workers, self.next_index, plain, with_final, &mut self.sealed)?;
        self.inner.write_all(&self.sealed)?;
        self.next_index += full as u64;
        if plaintext.is_none() {
            // Overwritten by the next batch and wiped on drop: no per-batch wipe, which would
            // cost as much as the encryption itself (zeroize writes byte by byte).
            self.plain.clear();
        }
        Ok(())
    }

    /// Seals the remaining plaintext as full chunks plus the short final chunk, flushes, and
    /// returns the inner writer.
    pub fn finish(mut self) -> Result<W> {
        if self.poisoned {
            return Err(SealError::InvalidArgument("an earlier write failed; the body is incomplete".into()));
        }
        self.seal_and_write(None, true)?;
        self.inner.flush()?;
        Ok(self.inner)
    }
}

impl<W: Write> Write for EncryptingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if self.poisoned {
            return Err(SealError::InvalidArgument("an earlier write failed; the body is incomplete".into()).into());
        }
        let batch = BATCH_CHUNKS * CHUNK_SIZE;
        // Whole chunks straight from the caller's buffer: a full chunk is never the final one,
        // so it can be sealed as soon as it is seen, without copying it first.
        let direct = if self.plain.is_empty() { (buf.len() / CHUNK_SIZE).min(BATCH_CHUNKS) * CHUNK_SIZE } else { 0 };
        // Buffered data is topped up to a chunk boundary and flushed when more follows, so the
        // next call is aligned and can take the direct path.
        let to_boundary = CHUNK_SIZE - self.plain.len() % CHUNK_SIZE;
        let realign = !self.plain.is_empty() && buf.len() >= to_boundary + CHUNK_SIZE;
        let take = if direct > 0 {
            direct
        } else if realign {
            to_boundary
        } else {
            buf.len().min(batch - self.plain.len())
        };
        let result = if direct > 0 {
            self.seal_and_write(Some(&buf[..direct]), false)
        } else {
            self.plain.extend_from_slice(&buf[..take]);
            if self.plain.len() == batch || realign { self.seal_and_write(None, false) } else { Ok(()) }
        };
        if let Err(e) = result {
            self.poisoned = true;
            return Err(e.into());
        }
        self.written += take as u64;
        Ok(take)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

enum ReadState {
    Reading,
    Done,
    Failed(SealError),
}

/// Streaming decryption as a `Read`.
///
/// When the plaintext length is known in advance (an authenticated header declares it), the
/// reader knows where the body must end and reports [`SealError::Truncated`] and
/// [`SealError::TrailingData`] precisely; otherwise the short final chunk alone delimits the
/// message, as in the C2SP scheme.
pub struct DecryptingReader<R: Read> {
    inner: R,
    key: BodyKey,
    workers: Workers,
    sealed: Vec<u8>,
    plain: Zeroizing<Vec<u8>>,
    pos: usize,
    avail: usize,
    next_index: u64,
    declared: Option<u64>,
    remaining: Option<u64>,
    state: ReadState,
    pending: Option<SealError>,
}

impl<R: Read> std::fmt::Debug for DecryptingReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DecryptingReader {{ next_chunk: {} }}", self.next_index)
    }
}

impl<R: Read> DecryptingReader<R> {
    /// Reads and checks the body prefix. `declared_len` is the plaintext length when it is known
    /// from an authenticated source.
    pub fn new(
        mut inner: R,
        input_key: &[u8],
        context: &[u8],
        declared_len: Option<u64>,
        workers: Workers,
    ) -> Result<Self> {
        if input_key.len() != KEY_LEN {
            return Err(SealError::InvalidKeyLength { expected: KEY_LEN, actual: input_key.len() });
        }
        let mut prefix = [0u8; PREFIX_LEN];
        let got = read_full(&mut inner, &mut prefix)?;
        if got < PREFIX_LEN {
            return Err(SealError::Truncated(format!(
                "the body is {got} bytes, shorter than its {PREFIX_LEN}-byte salt and commitment"
            )));
        }
        let key = BodyKey::open(input_key, context, &prefix)?;
        let remaining = match declared_len {
            None => None,
            Some(len) => Some(encrypted_len(len).ok_or(SealError::TooLong)? - PREFIX_LEN as u64),
        };
        Ok(Self {
            inner,
            key,
            workers,
            sealed: Vec::new(),
            plain: Zeroizing::new(Vec::new()),
            pos: 0,
            avail: 0,
            next_index: 0,
            declared: declared_len,
            remaining,
            state: ReadState::Reading,
            pending: None,
        })
    }

    /// Reads the next batch of ciphertext and opens it, into `direct` when given (returning the
    /// bytes placed there) or else into the internal buffer (returning 0).
    fn fill(&mut self, direct: Option<&mut [u8]>) -> Result<usize> {
        let cap = BATCH_CHUNKS * ENCRYPTED_CHUNK_SIZE;
        let want = match self.remaining {
            Some(r) => usize::try_from(r).map_or(cap, |r| r.min(cap)),
            None => cap,
        };
        self.sealed.resize(want, 0);
        let got = read_full(&mut self.inner, &mut self.sealed)?;
        self.sealed.truncate(got);
        let ends_here = match self.remaining.as_mut() {
            None => got < want,
            Some(r) => {
                *r -= got as u64;
                got < want || *r == 0
            }
        };
        if !ends_here {
            // A whole batch of full chunks: none of them can be the final one.
            return self.open_batch(got, false, direct);
        }
        let (full, rem) = (got / ENCRYPTED_CHUNK_SIZE, got % ENCRYPTED_CHUNK_SIZE);
        let problem = match self.remaining {
            Some(r) if r > 0 => Some(self.classify_early_end(full, rem)),
            Some(_) => {
                let mut probe = [0u8; 1];
                (read_full(&mut self.inner, &mut probe)? != 0).then_some(SealError::TrailingData)
            }
            None => None,
        }
        .or_else(|| final_chunk_problem(rem));
        match problem {
            None => {
                let produced = self.open_batch(got, true, direct)?;
                if self.pending.is_none() {
                    self.state = ReadState::Done;
                }
                Ok(produced)
            }
            Some(err) => {
                // Release the whole chunks that authenticate (never the final chunk of a body
                // that is wrong at its end), then report the error, unless a chunk failed first.
                let produced = self.open_batch(full * ENCRYPTED_CHUNK_SIZE, false, direct)?;
                self.pending.get_or_insert(err);
                Ok(produced)
            }
        }
    }

    /// The body ended before the declared length: a complete but shorter message (its final chunk
    /// authenticates where it stands) is a length mismatch; anything else is truncation.
    fn classify_early_end(&self, full: usize, rem: usize) -> SealError {
        let declared = self.declared.unwrap_or(0);
        if rem >= TAG_LEN {
            let index = self.next_index + full as u64;
            let mut scratch = Zeroizing::new(vec![0u8; rem - TAG_LEN]);
            let tail = &self.sealed[full * ENCRYPTED_CHUNK_SIZE..];
            if self.key.aead.open_into(&self.key.nonce(index), &[], tail, &mut scratch) {
                let actual = index * CHUNK_SIZE as u64 + (rem - TAG_LEN) as u64;
                return SealError::LengthMismatch { declared, actual };
            }
        }
        SealError::Truncated(format!(
            "the body ends {} byte(s) before the length the header declares",
            self.remaining.unwrap_or(0)
        ))
    }

    /// Opens `usable` bytes of `sealed` (whole chunks, and the final one when `with_final`).
    /// Authenticated plaintext goes to `direct` (its length is returned) or to the internal
    /// buffer (0 is returned). A failing chunk leaves only the chunks before it and a pending error.
    fn open_batch(&mut self, usable: usize, with_final: bool, direct: Option<&mut [u8]>) -> Result<usize> {
        let full = usable / ENCRYPTED_CHUNK_SIZE;
        let plain_len = full * CHUNK_SIZE + if with_final { usable % ENCRYPTED_CHUNK_SIZE - TAG_LEN } else { 0 };
        let is_direct = direct.is_some();
        let target: &mut [u8] = match direct {
            Some(d) => &mut d[..plain_len],
            None => {
                if self.plain.len() < plain_len {
                    // Allocated once; later batches overwrite it (wiped on drop).
                    self.plain.resize(BATCH_CHUNKS * CHUNK_SIZE, 0);
                }
                &mut self.plain[..plain_len]
            }
        };
        let produced =
            match open_chunks(&self.key, &self.workers, self.next_index, &self.sealed[..usable], with_final, target) {
                Ok(()) => {
                    self.next_index += full as u64;
                    plain_len
                }
                Err(SealError::ChunkAuthentication { index }) => {
                    self.pending = Some(SealError::ChunkAuthentication { index });
                    usize::try_from(index - self.next_index).unwrap_or(0) * CHUNK_SIZE
                }
                Err(e) => return Err(e),
            };
        if is_direct {
            return Ok(produced);
        }
        self.pos = 0;
        self.avail = produced;
        Ok(0)
    }
}

impl<R: Read> Read for DecryptingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            if self.pos < self.avail {
                let n = buf.len().min(self.avail - self.pos);
                buf[..n].copy_from_slice(&self.plain[self.pos..self.pos + n]);
                self.pos += n;
                return Ok(n);
            }
            if let Some(err) = self.pending.take() {
                self.state = ReadState::Failed(err);
            }
            match &self.state {
                ReadState::Done => return Ok(0),
                ReadState::Failed(err) => return Err(err.clone().into()),
                ReadState::Reading => {
                    // A caller buffer that holds a whole batch gets the plaintext directly.
                    let direct = (buf.len() >= BATCH_CHUNKS * CHUNK_SIZE).then_some(&mut *buf);
                    match self.fill(direct) {
                        Ok(0) => {}
                        Ok(n) => return Ok(n),
                        Err(err) => {
                            self.state = ReadState::Failed(err.clone());
                            return Err(err.into());
                        }
                    }
                }
            }
        }
    }
}

/// Random-access decryption over a seekable body.
///
/// Construction checks the commitment and authenticates the final chunk, so the plaintext length
/// is known to be genuine before any read. Reads open only the chunks they cover.
pub struct RandomAccessReader<R: Read + Seek> {
    inner: R,
    key: BodyKey,
    workers: Workers,
    chunks_start: u64,
    len: u64,
    pos: u64,
    sealed: Vec<u8>,
    cache: Zeroizing<Vec<u8>>,
    cache_index: Option<u64>,
}

impl<R: Read + Seek> std::fmt::Debug for RandomAccessReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RandomAccessReader {{ len: {}, pos: {} }}", self.len, self.pos)
    }
}

impl<R: Read + Seek> RandomAccessReader<R> {
    /// The body starts at `body_offset` in `inner` and runs to its end. `declared_len` is the
    /// plaintext length from an authenticated header, if any.
    pub fn new(
        mut inner: R,
        body_offset: u64,
        input_key: &[u8],
        context: &[u8],
        declared_len: Option<u64>,
        workers: Workers,
    ) -> Result<Self> {
        if input_key.len() != KEY_LEN {
            return Err(SealError::InvalidKeyLength { expected: KEY_LEN, actual: input_key.len() });
        }
        let end = inner.seek(SeekFrom::End(0))?;
        let body_len = end.saturating_sub(body_offset);
        let mut prefix = [0u8; PREFIX_LEN];
        inner.seek(SeekFrom::Start(body_offset))?;
        let got = read_full(&mut inner, &mut prefix)?;
        if got < PREFIX_LEN {
            return Err(SealError::Truncated(format!(
                "the body is {got} bytes, shorter than its {PREFIX_LEN}-byte salt and commitment"
            )));
        }
        let key = BodyKey::open(input_key, context, &prefix)?;
        let expected = declared_len.map(|d| encrypted_len(d).ok_or(SealError::TooLong)).transpose()?;
        let len = match (plaintext_len(body_len), expected) {
            (Ok(len), _) => len,
            (Err(_), Some(expected)) if body_len > expected => return Err(SealError::TrailingData),
            (Err(e), _) => return Err(e),
        };
        let mut reader = Self {
            inner,
            key,
            workers,
            chunks_start: body_offset + PREFIX_LEN as u64,
            len,
            pos: 0,
            sealed: Vec::new(),
            cache: Zeroizing::new(Vec::new()),
            cache_index: None,
        };
        // Authenticate the length: the final chunk must open at its index.
        let authenticated = reader.load_chunk(len / CHUNK_SIZE as u64);
        match (declared_len, expected) {
            (Some(declared), Some(expected)) if body_len != expected => Err(match authenticated {
                // A complete message of another length than the header says.
                Ok(()) => SealError::LengthMismatch { declared, actual: len },
                Err(_) if body_len < expected => SealError::Truncated(format!(
                    "the body is {body_len} bytes but the header declares a plaintext that needs {expected}"
                )),
                Err(_) => SealError::TrailingData,
            }),
            _ => authenticated.map(|()| reader),
        }
    }

    /// The authenticated plaintext length.
    pub fn len(&self) -> u64 {
        self.len
    }

    /// Whether the plaintext is empty.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    fn last_index(&self) -> u64 {
        self.len / CHUNK_SIZE as u64
    }

    /// Reads and opens chunks `first..first+count` into `out`.
    fn open_run(&mut self, first: u64, count: u64, out: &mut [u8]) -> Result<()> {
        let last = first + count - 1;
        let with_final = last == self.last_index();
        let full = if with_final { count - 1 } else { count };
        let final_ct = if with_final { (self.len % CHUNK_SIZE as u64) as usize + TAG_LEN } else { 0 };
        let ct_len = usize::try_from(full).map_err(|_| SealError::TooLong)? * ENCRYPTED_CHUNK_SIZE + final_ct;
        self.sealed.resize(ct_len, 0);
        self.inner.seek(SeekFrom::Start(self.chunks_start + first * ENCRYPTED_CHUNK_SIZE as u64))?;
        let got = read_full(&mut self.inner, &mut self.sealed)?;
        if got != ct_len {
            return Err(SealError::Truncated("the body shrank while it was being read".into()));
        }
        open_chunks(&self.key, &self.workers, first, &self.sealed, with_final, out)
    }

    fn load_chunk(&mut self, index: u64) -> Result<()> {
        if self.cache_index == Some(index) {
            return Ok(());
        }
        self.cache_index = None;
        let size = if index == self.last_index() { (self.len % CHUNK_SIZE as u64) as usize } else { CHUNK_SIZE };
        let mut cache = std::mem::take(&mut self.cache);
        cache.resize(size, 0);
        let result = self.open_run(index, 1, &mut cache);
        self.cache = cache;
        result?;
        self.cache_index = Some(index);
        Ok(())
    }

    /// Fills `buf` with plaintext starting at `offset`. The whole range must lie inside the
    /// plaintext. On error `buf` is zeroed.
    pub fn read_at(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let result = self.read_at_inner(offset, buf);
        if result.is_err() {
            buf.zeroize();
        }
        result
    }

    fn read_at_inner(&mut self, offset: u64, buf: &mut [u8]) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(SealError::RangeOutOfBounds { start: offset, end: end.unwrap_or(u64::MAX), len: self.len });
        }
        let chunk = CHUNK_SIZE as u64;
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            let index = at / chunk;
            let within = (at % chunk) as usize;
            let want = buf.len() - done;
            if within == 0 && want >= CHUNK_SIZE && self.cache_index != Some(index) {
                // Whole chunks straight into the caller's buffer, a batch at a time.
                let count = (want / CHUNK_SIZE).min(BATCH_CHUNKS) as u64;
                let n = count as usize * CHUNK_SIZE;
                let out = &mut buf[done..done + n];
                if index + count - 1 == self.last_index() {
                    // Cannot happen: the final chunk is short, so `want` cannot cover it whole.
                    return Err(SealError::InvalidArgument("range layout".into()));
                }
                self.open_run(index, count, out)?;
                done += n;
            } else {
                self.load_chunk(index)?;
                let n = want.min(self.cache.len() - within);
                buf[done..done + n].copy_from_slice(&self.cache[within..within + n]);
                done += n;
            }
        }
        Ok(())
    }

    /// Gives back the underlying reader.
    pub fn into_inner(self) -> R {
        self.inner
    }
}

impl<R: Read + Seek> Read for RandomAccessReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = usize::try_from(self.len.saturating_sub(self.pos)).map_or(buf.len(), |left| left.min(buf.len()));
        if n == 0 {
            return Ok(0);
        }
        self.read_at(self.pos, &mut buf[..n])?;
        self.pos += n as u64;
        Ok(n)
    }
}

impl<R: Read + Seek> Seek for RandomAccessReader<R> {
    fn seek(&mut self, pos: SeekFrom) -> io::Result<u64> {
        let target = match pos {
            SeekFrom::Start(p) => Some(p),
            SeekFrom::End(d) => self.len.checked_add_signed(d),
            SeekFrom::Current(d) => self.pos.checked_add_signed(d),
        };
        match target {
            Some(p) => {
                self.pos = p;
                Ok(p)
            }
            None => Err(io::Error::new(io::ErrorKind::InvalidInput, "seek before the start of the plaintext")),
        }
    }
}

/// Encrypts a whole message held in memory: the returned body is prefix ‖ chunks.
pub fn encrypt(
    input_key: &[u8],
    context: &[u8],
    plaintext: &[u8],
    workers: &Workers,
    rng: &mut dyn RandomSource,
) -> Result<Vec<u8>> {
    let (key, prefix) = BodyKey::begin(input_key, context, rng)?;
    let total = encrypted_len(plaintext.len() as u64).ok_or(SealError::TooLong)?;
    let mut out = vec![0u8; usize::try_from(total).map_err(|_| SealError::TooLong)?];
    out[..PREFIX_LEN].copy_from_slice(&prefix);
    seal_chunks(&key, workers, 0, plaintext, true, &mut out[PREFIX_LEN..])?;
    Ok(out)
}

/// Decrypts a whole body held in memory. Nothing is returned unless every chunk authenticated.
pub fn decrypt(input_key: &[u8], context: &[u8], body: &[u8], workers: &Workers) -> Result<Zeroizing<Vec<u8>>> {
    if input_key.len() != KEY_LEN {
        return Err(SealError::InvalidKeyLength { expected: KEY_LEN, actual: input_key.len() });
    }
    let Some(prefix) = body.first_chunk::<PREFIX_LEN>() else {
        return Err(SealError::Truncated(format!(
            "the body is {} bytes, shorter than its {PREFIX_LEN}-byte salt and commitment",
            body.len()
        )));
    };
    let key = BodyKey::open(input_key, context, prefix)?;
    let len = plaintext_len(body.len() as u64)?;
    let mut out = Zeroizing::new(vec![0u8; usize::try_from(len).map_err(|_| SealError::TooLong)?]);
    open_chunks(&key, workers, 0, &body[PREFIX_LEN..], true, &mut out)?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn open_chunks_wipes_everything_from_the_first_failure_on() {
        let key = BodyKey::from_raw(&[3u8; 32], &[9u8; 12]).unwrap();
        let plain = vec![0x5au8; 4 * CHUNK_SIZE + 10];
        for threads in [1, 2] {
            let workers = Workers::new(threads).unwrap();
            let mut sealed = vec![0u8; 4 * ENCRYPTED_CHUNK_SIZE + 10 + TAG_LEN];
            seal_chunks(&key, &workers, 0, &plain, true, &mut sealed).unwrap();
            sealed[ENCRYPTED_CHUNK_SIZE + 3] ^= 1; // chunk 1
            let mut out = vec![0u8; plain.len()];
            let err = open_chunks(&key, &workers, 0, &sealed, true, &mut out).unwrap_err();
            assert!(matches!(err, SealError::ChunkAuthentication { index: 1 }));
            assert_eq!(out[..CHUNK_SIZE], plain[..CHUNK_SIZE]);
            assert!(out[CHUNK_SIZE..].iter().all(|&b| b == 0), "chunks 2.. authenticated but must not be released");
        }
    }

    #[test]
    fn nonce_is_base_xor_big_endian_counter() {
        let key = BodyKey::from_raw(&[0u8; 32], &[0xffu8; 12]).unwrap();
        let n = key.nonce(0x01_0203_0405);
        assert_eq!(n.0, [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xfe, 0xfd, 0xfc, 0xfb, 0xfa]);
    }

    #[test]
    fn lengths() {
        assert_eq!(encrypted_len(0), Some(56 + 16));
        assert_eq!(encrypted_len(16_384), Some(56 + 16_400 + 16));
        assert_eq!(plaintext_len(56 + 16_400 + 17).unwrap(), 16_385);
        assert!(matches!(plaintext_len(56 + 16_400), Err(SealError::Truncated(_))));
        assert!(matches!(plaintext_len(55), Err(SealError::Truncated(_))));
        assert!(encrypted_len(MAX_CHUNKS * CHUNK_SIZE as u64).is_none());
        assert!(encrypted_len(MAX_CHUNKS * CHUNK_SIZE as u64 - 1).is_some());
    }

    #[test]
    fn chunk_limit_is_enforced() {
        let key = BodyKey::from_raw(&[0u8; 32], &[0u8; 12]).unwrap();
        let mut out = vec![0u8; TAG_LEN];
        assert!(matches!(
            seal_chunks(&key, &Workers::sequential(), MAX_CHUNKS, &[], true, &mut out),
            Err(SealError::TooLong)
        ));
        assert!(seal_chunks(&key, &Workers::sequential(), MAX_CHUNKS - 1, &[], true, &mut out).is_ok());
    }
}
