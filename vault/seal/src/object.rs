//! Sealed objects: a [`Header`] followed by a chunked-encryption body keyed by the object's data
//! key. This is the API the CLI, the vault and the worker use.

use std::io::{self, Read, Seek, SeekFrom, Write};

use crate::chunked::{DecryptingReader, EncryptingWriter, RandomAccessReader};
use crate::error::{Result, SealError};
use crate::header::{self, Header, HeaderFields};
use crate::kdf::RandomSource;
use crate::keys::{DataKey, RecipientPublicKey, RecipientSecretKey};
use crate::par::Workers;

/// Streaming sealer: write the plaintext, then call [`Sealer::finish`].
///
/// If the header declares a plaintext length, writing more than that, or finishing with less, is a
/// [`SealError::LengthMismatch`].
pub struct Sealer<W: Write> {
    body: EncryptingWriter<W>,
    header: Header,
}

impl<W: Write> std::fmt::Debug for Sealer<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sealer {{ object: {}, body: {:?} }}", self.header.object_id, self.body)
    }
}

/// Starts sealing to `recipients`: draws a data key, writes the header and the body prefix.
pub fn seal<W: Write>(
    mut out: W,
    recipients: &[RecipientPublicKey],
    fields: &HeaderFields,
    workers: Workers,
    rng: &mut dyn RandomSource,
) -> Result<Sealer<W>> {
    let dek = DataKey::generate(rng)?;
    seal_with_data_key(&mut out, &dek, recipients, fields, rng)
        .and_then(|header| Sealer::start(out, &dek, header, workers, rng))
}

fn seal_with_data_key<W: Write>(
    out: &mut W,
    dek: &DataKey,
    recipients: &[RecipientPublicKey],
    fields: &HeaderFields,
    rng: &mut dyn RandomSource,
) -> Result<Header> {
    let header = header::build(fields, recipients, dek, rng)?;
    out.write_all(header.as_bytes())?;
    Ok(header)
}

impl<W: Write> Sealer<W> {
    fn start(out: W, dek: &DataKey, header: Header, workers: Workers, rng: &mut dyn RandomSource) -> Result<Self> {
        let body = EncryptingWriter::new(out, dek.expose_secret(), &header.digest(), workers, rng)?;
        Ok(Self { body, header })
    }

    /// The header that was written.
    pub fn header(&self) -> &Header {
        &self.header
    }

    /// Plaintext bytes accepted so far.
    pub fn plaintext_written(&self) -> u64 {
        self.body.plaintext_written()
    }

    /// Emits the final chunk and returns the output and the header.
    pub fn finish(self) -> Result<(W, Header)> {
        if let Some(declared) = self.header.plaintext_len {
            let actual = self.body.plaintext_written();
            if actual != declared {
                return Err(SealError::LengthMismatch { declared, actual });
            }
        }
        let out = self.body.finish()?;
        Ok((out, self.header))
    }
}

impl<W: Write> Write for Sealer<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        if let Some(declared) = self.header.plaintext_len {
            let written = self.body.plaintext_written();
            if written + buf.len() as u64 > declared {
                return Err(SealError::LengthMismatch { declared, actual: written + buf.len() as u64 }.into());
            }
        }
        self.body.write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.body.flush()
    }
}

/// Opens a sealed object as a stream: reads and authenticates the header with `identity`, checks
/// the body commitment, and returns a reader of authenticated plaintext.
pub fn open<R: Read>(
    mut input: R,
    identity: &RecipientSecretKey,
    workers: Workers,
) -> Result<(Header, DecryptingReader<R>)> {
    let header = Header::read_from(&mut input)?;
    let dek = header.unwrap_data_key(identity)?;
    let reader = open_body(input, &header, &dek, workers)?;
    Ok((header, reader))
}

/// Opens the body that follows an already-authenticated header with its data key.
pub fn open_body<R: Read>(input: R, header: &Header, dek: &DataKey, workers: Workers) -> Result<DecryptingReader<R>> {
    DecryptingReader::new(input, dek.expose_secret(), &header.digest(), header.plaintext_len, workers)
}

/// Opens a sealed object for random access. `input` must be positioned at the header's start.
pub fn open_random_access<R: Read + Seek>(
    mut input: R,
    identity: &RecipientSecretKey,
    workers: Workers,
) -> Result<(Header, RandomAccessReader<R>)> {
    let start = input.stream_position()?;
    let header = Header::read_from(&mut input)?;
    let dek = header.unwrap_data_key(identity)?;
    let body_offset = start + header.len() as u64;
    input.seek(SeekFrom::Start(body_offset))?;
    let reader = RandomAccessReader::new(
        input,
        body_offset,
        dek.expose_secret(),
        &header.digest(),
        header.plaintext_len,
        workers,
    )?;
    Ok((header, reader))
}

/// Reads only the header, for inspection. Nothing in it is authenticated without a key.
pub fn inspect<R: Read>(mut input: R) -> Result<Header> {
    Header::read_from(&mut input)
}
