//! The Coffre sealed-object header, format version 1.
//!
//! The specification below (`docs/sealed-object-v1.md` in the repository) is the only normative
//! description of the format; this module implements its header half, [`crate::chunked`] the body.
#![doc = include_str!("../../../docs/sealed-object-v1.md")]

use std::fmt;
use std::io::Read;

use aws_lc_rs::{digest, hmac};
use zeroize::Zeroizing;

use crate::chunked::read_full;
use crate::error::{Result, SealError};
use crate::hpke;
use crate::kdf::{HkdfHash, RandomSource, hkdf};
use crate::keys::{DATA_KEY_LEN, DataKey, KeyId, RecipientPublicKey, RecipientSecretKey};

/// Magic bytes at the start of every sealed object.
pub const MAGIC: [u8; 8] = *b"\x89COFFRE\n";
/// The format version this build writes and reads.
pub const FORMAT_VERSION: u16 = 1;
/// Largest header accepted.
pub const MAX_HEADER_LEN: u32 = 1 << 20;
/// Most stanzas accepted.
pub const MAX_STANZAS: u16 = 1024;
/// Largest stanza body accepted.
pub const MAX_STANZA_BODY: u32 = 64 * 1024;
/// Length of the header MAC.
pub const MAC_LEN: usize = 48;
/// Stanza type of an HPKE P-384 recipient.
pub const STANZA_HPKE_P384: u16 = 1;

const FIXED_LEN: usize = 14;
const HPKE_STANZA_LEN: usize = 32 + hpke::PUBLIC_KEY_LEN + DATA_KEY_LEN + 16;
const MAC_INFO: &[u8] = b"coffre/seal/v1/header-mac";
const WRAP_INFO: &[u8] = b"coffre/seal/v1/dek-wrap";
const MAX_ID_LEN: usize = 64;

/// A 128-bit random object id.
#[derive(Clone, Copy, PartialEq, Eq, Hash)]
pub struct ObjectId(pub [u8; 16]);

impl fmt::Display for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

impl fmt::Debug for ObjectId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ObjectId({self})")
    }
}

/// A recipient stanza.
#[derive(Clone, PartialEq, Eq)]
pub enum Stanza {
    /// The data key wrapped with HPKE to a P-384 recipient key.
    HpkeP384 {
        /// Which recipient key can open it.
        key_id: KeyId,
        /// HPKE encapsulated key.
        enc: [u8; hpke::PUBLIC_KEY_LEN],
        /// The sealed data key (ciphertext ‖ tag).
        wrapped: [u8; DATA_KEY_LEN + 16],
    },
    /// A stanza type this build does not know; skipped when opening.
    Unknown {
        /// Its type number.
        kind: u16,
        /// Its body.
        body: Vec<u8>,
    },
}

impl fmt::Debug for Stanza {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Stanza::HpkeP384 { key_id, .. } => write!(f, "HpkeP384 {{ key_id: {key_id} }}"),
            Stanza::Unknown { kind, body } => {
                write!(f, "Unknown {{ kind: {kind}, len: {} }}", body.len())
            }
        }
    }
}

/// A parsed (or freshly built) header. Parsing checks structure only: the MAC can be checked
/// only with the data key, see [`Header::unwrap_data_key`].
#[derive(Clone, PartialEq, Eq)]
pub struct Header {
    /// Random id of the object.
    pub object_id: ObjectId,
    /// Tenant id (empty when not set).
    pub tenant: String,
    /// Dataset id (empty when not set).
    pub dataset: String,
    /// Media type of the plaintext.
    pub content_type: String,
    /// Plaintext length, when it was known at sealing time.
    pub plaintext_len: Option<u64>,
    /// Recipient stanzas, in order.
    pub stanzas: Vec<Stanza>,
    raw: Vec<u8>,
}

impl fmt::Debug for Header {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Header")
            .field("object_id", &self.object_id)
            .field("tenant", &self.tenant)
            .field("dataset", &self.dataset)
            .field("content_type", &self.content_type)
            .field("plaintext_len", &self.plaintext_len)
            .field("stanzas", &self.stanzas)
            .field("len", &self.raw.len())
            .finish()
    }
}

/// Checks a tenant or dataset id: at most 64 of `[A-Za-z0-9._:-]`, possibly empty.
pub fn validate_id(what: &str, id: &str) -> Result<()> {
    if id.len() > MAX_ID_LEN {
        return Err(SealError::InvalidArgument(format!("{what} id is longer than {MAX_ID_LEN} characters")));
    }
    if let Some(c) = id.chars().find(|c| !(c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | ':' | '-'))) {
        return Err(SealError::InvalidArgument(format!(
            "{what} id contains {c:?}; use letters, digits and . _ : - only"
        )));
    }
    Ok(())
}

/// Checks a content type: lowercase `type/subtype` of RFC 6838 token characters, at most 127 bytes.
pub fn validate_content_type(ct: &str) -> Result<()> {
    let token = |s: &str| {
        !s.is_empty() && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"!#$&^_.+-".contains(&b))
    };
    match ct.split_once('/') {
        Some((t, s)) if ct.len() <= 127 && token(t) && token(s) => Ok(()),
        _ => Err(SealError::InvalidArgument(format!(
            "content type {ct:?} is not a lowercase media type such as application/jsonl"
        ))),
    }
}

struct Cursor<'a> {
    buf: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.buf.len());
        let Some(end) = end else {
            return Err(SealError::MalformedHeader(format!("{what} runs past the end of the header")));
        };
        let out = &self.buf[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn array<const N: usize>(&mut self, what: &str) -> Result<[u8; N]> {
        let mut out = [0u8; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8> {
        Ok(self.array::<1>(what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16> {
        Ok(u16::from_be_bytes(self.array(what)?))
    }

    fn u32(&mut self, what: &str) -> Result<u32> {
        Ok(u32::from_be_bytes(self.array(what)?))
    }

    fn u64(&mut self, what: &str) -> Result<u64> {
        Ok(u64::from_be_bytes(self.array(what)?))
    }

    fn short_str(&mut self, what: &str) -> Result<String> {
        let len = usize::from(self.u8(what)?);
        let bytes = self.take(len, what)?;
        String::from_utf8(bytes.to_vec()).map_err(|_| SealError::MalformedHeader(format!("{what} is not UTF-8")))
    }
}

fn put_short_str(out: &mut Vec<u8>, s: &str) -> Result<()> {
    let len =
        u8::try_from(s.len()).map_err(|_| SealError::InvalidArgument("header string longer than 255 bytes".into()))?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

impl Header {
    /// Reads exactly one header from `reader`, leaving it positioned at the body.
    pub fn read_from<R: Read + ?Sized>(reader: &mut R) -> Result<Self> {
        let mut fixed = [0u8; FIXED_LEN];
        let got = read_full(reader, &mut fixed)?;
        check_magic(&fixed[..got])?;
        let (version, len) = parse_fixed(&fixed[..got])?;
        check_version_and_len(version, len)?;
        let mut raw = vec![0u8; len as usize];
        raw[..FIXED_LEN].copy_from_slice(&fixed);
        let got = read_full(reader, &mut raw[FIXED_LEN..])?;
        if got < raw.len() - FIXED_LEN {
            return Err(SealError::Truncated(format!(
                "the header declares {len} bytes but the input ends after {}",
                FIXED_LEN + got
            )));
        }
        Self::parse_exact(raw)
    }

    /// Parses a header from the start of `bytes`; returns it and the number of bytes it used.
    pub fn parse_prefix(bytes: &[u8]) -> Result<(Self, usize)> {
        let fixed = &bytes[..bytes.len().min(FIXED_LEN)];
        check_magic(fixed)?;
        let (version, len) = parse_fixed(fixed)?;
        check_version_and_len(version, len)?;
        let len = len as usize;
        if bytes.len() < len {
            return Err(SealError::Truncated(format!(
                "the header declares {len} bytes but the input ends after {}",
                bytes.len()
            )));
        }
        Ok((Self::parse_exact(bytes[..len].to_vec())?, len))
    }

    fn parse_exact(raw: Vec<u8>) -> Result<Self> {
        let body_end = raw.len() - MAC_LEN;
        let mut c = Cursor { buf: &raw[..body_end], at: FIXED_LEN };
        let object_id = ObjectId(c.array("object id")?);
        let flags = c.u8("flags")?;
        if flags & !1 != 0 {
            return Err(SealError::MalformedHeader(format!("unknown flag bits {flags:#04x}")));
        }
        let len_field = c.u64("plaintext length")?;
        let plaintext_len = if flags & 1 == 1 {
            Some(len_field)
        } else if len_field != 0 {
            return Err(SealError::MalformedHeader("plaintext length set without its flag".into()));
        } else {
            None
        };
        let tenant = c.short_str("tenant id")?;
        validate_id("tenant", &tenant).map_err(as_malformed)?;
        let dataset = c.short_str("dataset id")?;
        validate_id("dataset", &dataset).map_err(as_malformed)?;
        let content_type = c.short_str("content type")?;
        validate_content_type(&content_type).map_err(as_malformed)?;
        let count = c.u16("stanza count")?;
        if count == 0 || count > MAX_STANZAS {
            return Err(SealError::MalformedHeader(format!("{count} recipient stanzas (1 to {MAX_STANZAS} allowed)")));
        }
        let mut stanzas = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            let kind = c.u16("stanza type")?;
            let len = c.u32("stanza length")?;
            if len > MAX_STANZA_BODY {
                return Err(SealError::MalformedHeader(format!("stanza of {len} bytes exceeds {MAX_STANZA_BODY}")));
            }
            let body = c.take(len as usize, "stanza body")?;
            stanzas.push(parse_stanza(kind, body)?);
        }
        if c.at != body_end {
            return Err(SealError::MalformedHeader(format!(
                "{} unexpected byte(s) between the last stanza and the MAC",
                body_end - c.at
            )));
        }
        let header = Self { object_id, tenant, dataset, content_type, plaintext_len, stanzas, raw };
        Ok(header)
    }

    /// The exact header bytes (MAC included).
    pub fn as_bytes(&self) -> &[u8] {
        &self.raw
    }

    /// Header length in bytes; the body starts at this offset.
    pub fn len(&self) -> usize {
        self.raw.len()
    }

    /// Always false: a header has at least its fixed fields.
    pub fn is_empty(&self) -> bool {
        self.raw.is_empty()
    }

    /// SHA-384 of the header bytes: the chunked-encryption context of the body.
    pub fn digest(&self) -> [u8; 48] {
        let mut out = [0u8; 48];
        out.copy_from_slice(digest::digest(&digest::SHA384, &self.raw).as_ref());
        out
    }

    /// Key ids of the HPKE recipients.
    pub fn recipients(&self) -> Vec<KeyId> {
        self.stanzas
            .iter()
            .filter_map(|s| match s {
                Stanza::HpkeP384 { key_id, .. } => Some(*key_id),
                Stanza::Unknown { .. } => None,
            })
            .collect()
    }

    /// Finds this identity's stanza, unwraps the data key and verifies the header MAC with it.
    /// Only after this returns is any header field authenticated.
    pub fn unwrap_data_key(&self, identity: &RecipientSecretKey) -> Result<DataKey> {
        let ours = identity.public().key_id();
        let mut matched = false;
        for stanza in &self.stanzas {
            if let Stanza::HpkeP384 { key_id, enc, wrapped } = stanza {
                if *key_id != ours {
                    continue;
                }
                matched = true;
                if let Some(dek) = hpke::open(identity.hpke(), enc, WRAP_INFO, &self.object_id.0, wrapped) {
                    let dek = DataKey::from_bytes(&dek)?;
                    self.verify_mac(&dek)?;
                    return Ok(dek);
                }
            }
        }
        if matched {
            return Err(SealError::HeaderTampered("the recipient stanza for this key does not decrypt"));
        }
        // No key id matched. If a stanza nevertheless opens with this key, its key id was altered.
        for stanza in &self.stanzas {
            if let Stanza::HpkeP384 { enc, wrapped, .. } = stanza
                && hpke::open(identity.hpke(), enc, WRAP_INFO, &self.object_id.0, wrapped).is_some()
            {
                return Err(SealError::HeaderTampered("a recipient key id was modified"));
            }
        }
        Err(SealError::NoMatchingRecipient { ours, recipients: self.recipients() })
    }

    fn verify_mac(&self, dek: &DataKey) -> Result<()> {
        let key = mac_key(&self.object_id, dek)?;
        let (data, mac) = self.raw.split_at(self.raw.len() - MAC_LEN);
        hmac::verify(&key, data, mac).map_err(|_| SealError::HeaderTampered("header MAC mismatch"))
    }
}

fn as_malformed(e: SealError) -> SealError {
    match e {
        SealError::InvalidArgument(msg) => SealError::MalformedHeader(msg),
        other => other,
    }
}

fn check_magic(prefix: &[u8]) -> Result<()> {
    let n = prefix.len().min(MAGIC.len());
    if prefix[..n] != MAGIC[..n] {
        return Err(SealError::BadMagic);
    }
    if n < MAGIC.len() {
        return Err(if n == 0 {
            SealError::Truncated("the input is empty".into())
        } else {
            SealError::Truncated("the input ends inside the magic bytes".into())
        });
    }
    Ok(())
}

fn parse_fixed(fixed: &[u8]) -> Result<(u16, u32)> {
    if fixed.len() < 10 {
        return Err(SealError::Truncated("the input ends inside the header".into()));
    }
    let version = u16::from_be_bytes([fixed[8], fixed[9]]);
    if version != FORMAT_VERSION {
        return Err(SealError::UnsupportedVersion { found: version, supported: FORMAT_VERSION });
    }
    if fixed.len() < FIXED_LEN {
        return Err(SealError::Truncated("the input ends inside the header".into()));
    }
    Ok((version, u32::from_be_bytes([fixed[10], fixed[11], fixed[12], fixed[13]])))
}

fn check_version_and_len(version: u16, len: u32) -> Result<()> {
    debug_assert_eq!(version, FORMAT_VERSION);
    let min = (FIXED_LEN + 16 + 1 + 8 + 3 + 2 + MAC_LEN) as u32;
    if len < min || len > MAX_HEADER_LEN {
        return Err(SealError::MalformedHeader(format!("header length {len} is outside {min}..={MAX_HEADER_LEN}")));
    }
    Ok(())
}

fn parse_stanza(kind: u16, body: &[u8]) -> Result<Stanza> {
    if kind != STANZA_HPKE_P384 {
        return Ok(Stanza::Unknown { kind, body: body.to_vec() });
    }
    if body.len() != HPKE_STANZA_LEN {
        return Err(SealError::MalformedHeader(format!(
            "hpke-p384 stanza is {} bytes, expected {HPKE_STANZA_LEN}",
            body.len()
        )));
    }
    let mut c = Cursor { buf: body, at: 0 };
    let key_id = KeyId(c.array("key id")?);
    let enc = c.array("enc")?;
    let wrapped = c.array("wrapped key")?;
    Ok(Stanza::HpkeP384 { key_id, enc, wrapped })
}

fn mac_key(object_id: &ObjectId, dek: &DataKey) -> Result<hmac::Key> {
    let mut k = Zeroizing::new([0u8; MAC_LEN]);
    hkdf(HkdfHash::Sha384, &object_id.0, dek.expose_secret(), &[MAC_INFO], k.as_mut())?;
    Ok(hmac::Key::new(hmac::HMAC_SHA384, k.as_ref()))
}

/// What a new header says, before it is bound to a data key.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct HeaderFields {
    /// Tenant id (may be empty).
    pub tenant: String,
    /// Dataset id (may be empty).
    pub dataset: String,
    /// Media type of the plaintext.
    pub content_type: String,
    /// Plaintext length, if known before sealing.
    pub plaintext_len: Option<u64>,
}

/// Builds and MACs a header for `dek`, wrapping it to every recipient.
pub fn build(
    fields: &HeaderFields,
    recipients: &[RecipientPublicKey],
    dek: &DataKey,
    rng: &mut dyn RandomSource,
) -> Result<Header> {
    validate_id("tenant", &fields.tenant)?;
    validate_id("dataset", &fields.dataset)?;
    validate_content_type(&fields.content_type)?;
    if recipients.is_empty() {
        return Err(SealError::InvalidArgument("at least one recipient is required".into()));
    }
    if recipients.len() > usize::from(MAX_STANZAS) {
        return Err(SealError::InvalidArgument(format!("at most {MAX_STANZAS} recipients")));
    }
    let mut object_id = ObjectId([0u8; 16]);
    rng.fill(&mut object_id.0)?;
    let mut stanzas = Vec::with_capacity(recipients.len());
    for r in recipients {
        stanzas.push(stanza_for(r, &object_id, dek, rng)?);
    }
    assemble(fields, object_id, stanzas, dek)
}

fn stanza_for(
    r: &RecipientPublicKey,
    object_id: &ObjectId,
    dek: &DataKey,
    rng: &mut dyn RandomSource,
) -> Result<Stanza> {
    let sealed = hpke::seal(r.sec1(), WRAP_INFO, &object_id.0, dek.expose_secret(), rng)?;
    let wrapped: [u8; DATA_KEY_LEN + 16] =
        sealed.ciphertext.as_slice().try_into().map_err(|_| SealError::Crypto("HPKE output length"))?;
    Ok(Stanza::HpkeP384 { key_id: r.key_id(), enc: sealed.enc, wrapped })
}

impl Header {
    /// The same header (object id, fields, every other recipient) with `from`'s stanza replaced
    /// by one wrapping the data key to `to`, MAC'd again: what a key-encryption-key rotation
    /// stores beside an object it does not rewrite. `from` must open this header (its data key
    /// is unwrapped and the MAC verified first).
    pub fn rewrap(
        &self,
        from: &RecipientSecretKey,
        to: &RecipientPublicKey,
        rng: &mut dyn RandomSource,
    ) -> Result<Header> {
        let dek = self.unwrap_data_key(from)?;
        let old = from.public().key_id();
        let mut stanzas = Vec::with_capacity(self.stanzas.len());
        for s in &self.stanzas {
            match s {
                Stanza::HpkeP384 { key_id, .. } if *key_id == old => {
                    stanzas.push(stanza_for(to, &self.object_id, &dek, rng)?)
                }
                Stanza::HpkeP384 { .. } => stanzas.push(s.clone()),
                Stanza::Unknown { .. } => {
                    return Err(SealError::InvalidArgument(
                        "the header has a stanza type this build does not know; it cannot be rewrapped".into(),
                    ));
                }
            }
        }
        let fields = HeaderFields {
            tenant: self.tenant.clone(),
            dataset: self.dataset.clone(),
            content_type: self.content_type.clone(),
            plaintext_len: self.plaintext_len,
        };
        assemble(&fields, self.object_id, stanzas, &dek)
    }
}

/// Serialises and MACs a header.
fn assemble(fields: &HeaderFields, object_id: ObjectId, stanzas: Vec<Stanza>, dek: &DataKey) -> Result<Header> {
    let mut raw = Vec::with_capacity(256 + stanzas.len() * (6 + HPKE_STANZA_LEN));
    raw.extend_from_slice(&MAGIC);
    raw.extend_from_slice(&FORMAT_VERSION.to_be_bytes());
    raw.extend_from_slice(&[0u8; 4]); // length, patched below
    raw.extend_from_slice(&object_id.0);
    raw.push(u8::from(fields.plaintext_len.is_some()));
    raw.extend_from_slice(&fields.plaintext_len.unwrap_or(0).to_be_bytes());
    put_short_str(&mut raw, &fields.tenant)?;
    put_short_str(&mut raw, &fields.dataset)?;
    put_short_str(&mut raw, &fields.content_type)?;
    raw.extend_from_slice(&(stanzas.len() as u16).to_be_bytes());
    for s in &stanzas {
        if let Stanza::HpkeP384 { key_id, enc, wrapped } = s {
            raw.extend_from_slice(&STANZA_HPKE_P384.to_be_bytes());
            raw.extend_from_slice(&(HPKE_STANZA_LEN as u32).to_be_bytes());
            raw.extend_from_slice(&key_id.0);
            raw.extend_from_slice(enc);
            raw.extend_from_slice(wrapped);
        }
    }
    let total =
        u32::try_from(raw.len() + MAC_LEN).map_err(|_| SealError::InvalidArgument("header too large".into()))?;
    if total > MAX_HEADER_LEN {
        return Err(SealError::InvalidArgument("header too large".into()));
    }
    raw[10..14].copy_from_slice(&total.to_be_bytes());
    let mac = hmac::sign(&mac_key(&object_id, dek)?, &raw);
    raw.extend_from_slice(mac.as_ref());
    Ok(Header {
        object_id,
        tenant: fields.tenant.clone(),
        dataset: fields.dataset.clone(),
        content_type: fields.content_type.clone(),
        plaintext_len: fields.plaintext_len,
        stanzas,
        raw,
    })
}
