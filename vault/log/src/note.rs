//! C2SP `signed-note` with Ed25519 keys, and the C2SP `tlog-checkpoint` body it carries.
//!
//! A note is a UTF-8 text body of complete lines, a blank line, and one or more signature lines
//! `— <key name> <base64(key hash ‖ signature)>`. An Ed25519 key hash is the first four bytes of
//! `SHA-256(name ‖ "\n" ‖ 0x01 ‖ public key)`. Verifier keys are written `name+hash+base64(0x01 ‖
//! public key)` and signer keys `PRIVATE+KEY+name+hash+base64(0x01 ‖ seed)`, the forms the Go
//! `note` package and the transparency tooling built on it read.
//!
//! A checkpoint body is the log's origin, the tree size in decimal and the base64 root hash, one
//! per line, optionally followed by extension lines.

use aws_lc_rs::digest;
use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::merkle::Hash;

const ED25519_ALG: u8 = 0x01;
/// More signature lines than this is not a note this log reads (the Go package's limit).
const MAX_SIGNATURES: usize = 100;
/// A note larger than this is refused before parsing.
pub const MAX_NOTE_LEN: usize = 1 << 16;

/// Why a note or a key was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoteError {
    /// The text does not have the shape of a signed note.
    #[error("malformed note: {0}")]
    Malformed(String),
    /// The text does not have the shape of a checkpoint body.
    #[error("malformed checkpoint: {0}")]
    Checkpoint(String),
    /// A key in text form is malformed.
    #[error("malformed key: {0}")]
    Key(String),
    /// No signature line is by the pinned key.
    #[error("no signature by {0}")]
    Unsigned(String),
    /// A signature by the pinned key does not verify.
    #[error("the signature by {0} does not verify: the note was altered or forged")]
    BadSignature(String),
    /// The random number generator or signing failed.
    #[error("signing failed: {0}")]
    Sign(&'static str),
}

fn valid_name(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(|c| c.is_whitespace() || c == '+' || c.is_control())
}

fn key_hash(name: &str, public: &[u8; 32]) -> [u8; 4] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    ctx.update(name.as_bytes());
    ctx.update(b"\n");
    ctx.update(&[ED25519_ALG]);
    ctx.update(public);
    let d = ctx.finish();
    let mut out = [0u8; 4];
    out.copy_from_slice(&d.as_ref()[..4]);
    out
}

/// A log's Ed25519 signing key. The seed is zeroized on drop and never printed.
pub struct NoteSigner {
    name: String,
    seed: Zeroizing<[u8; 32]>,
    pair: Ed25519KeyPair,
    verifier: NoteVerifier,
}

impl std::fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NoteSigner").field("name", &self.name).field("seed", &"<secret>").finish()
    }
}

impl NoteSigner {
    /// A new random key named `name` (the log's origin, e.g. `vault.example.com/coffre/log`).
    pub fn generate(name: &str) -> Result<Self, NoteError> {
        let mut seed = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(seed.as_mut()).map_err(|_| NoteError::Sign("random number generator failed"))?;
        Self::from_seed(name, seed)
    }

    fn from_seed(name: &str, seed: Zeroizing<[u8; 32]>) -> Result<Self, NoteError> {
        if !valid_name(name) {
            return Err(NoteError::Key(format!("key name {name:?} must be non-empty without spaces or '+'")));
        }
        let pair = Ed25519KeyPair::from_seed_unchecked(seed.as_ref())
            .map_err(|_| NoteError::Key("not an Ed25519 seed".into()))?;
        let mut public = [0u8; 32];
        public.copy_from_slice(pair.public_key().as_ref());
        let verifier = NoteVerifier { name: name.to_owned(), hash: key_hash(name, &public), public };
        Ok(Self { name: name.to_owned(), seed, pair, verifier })
    }

    /// Reads `PRIVATE+KEY+name+hash+base64(0x01 ‖ seed)`.
    pub fn from_text(text: &str) -> Result<Self, NoteError> {
        let text = Zeroizing::new(text.trim().to_owned());
        let rest = text
            .strip_prefix("PRIVATE+KEY+")
            .ok_or_else(|| NoteError::Key("a signer key starts with PRIVATE+KEY+".into()))?;
        let (name, hash, key) = split_key(rest)?;
        let raw = Zeroizing::new(STANDARD.decode(key).map_err(|_| NoteError::Key("key is not base64".into()))?);
        let [alg, seed @ ..] = raw.as_slice() else {
            return Err(NoteError::Key("empty key".into()));
        };
        if *alg != ED25519_ALG || seed.len() != 32 {
            return Err(NoteError::Key("not an Ed25519 signer key (algorithm 1, 32-byte seed)".into()));
        }
        let mut s = Zeroizing::new([0u8; 32]);
        s.copy_from_slice(seed);
        let signer = Self::from_seed(name, s)?;
        if signer.verifier.hash != hash {
            return Err(NoteError::Key("the key hash does not match the key".into()));
        }
        Ok(signer)
    }

    /// The signer key in text form (a secret: write it only to a 0600 file or an HSM).
    pub fn to_text(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(33));
        raw.push(ED25519_ALG);
        raw.extend_from_slice(self.seed.as_ref());
        Zeroizing::new(format!(
            "PRIVATE+KEY+{}+{}+{}",
            self.name,
            hex::encode(self.verifier.hash),
            Zeroizing::new(STANDARD.encode(raw.as_slice())).as_str()
        ))
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The matching verifier key.
    pub fn verifier(&self) -> &NoteVerifier {
        &self.verifier
    }

    /// Signs `body` (complete lines, at least one) and returns the whole note.
    pub fn sign(&self, body: &str) -> Result<String, NoteError> {
        check_body(body)?;
        let sig = self.pair.sign(body.as_bytes());
        let mut raw = self.verifier.hash.to_vec();
        raw.extend_from_slice(sig.as_ref());
        Ok(format!("{body}\n\u{2014} {} {}\n", self.name, STANDARD.encode(raw)))
    }
}

fn split_key(text: &str) -> Result<(&str, [u8; 4], &str), NoteError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(hash), Some(key)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::Key("expected name+hash+key".into()));
    };
    if !valid_name(name) {
        return Err(NoteError::Key(format!("bad key name {name:?}")));
    }
    let hash = hex::decode(hash)
        .ok()
        .filter(|_| hash.len() == 8 && hash.bytes().all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .and_then(|h| <[u8; 4]>::try_from(h).ok())
        .ok_or_else(|| NoteError::Key("the key hash is not 8 lower-case hex digits".into()))?;
    Ok((name, hash, key))
}

/// A log's Ed25519 verifier key: what an auditor pins.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    hash: [u8; 4],
    public: [u8; 32],
}

impl NoteVerifier {
    /// Reads `name+hash+base64(0x01 ‖ public key)`.
    pub fn from_text(text: &str) -> Result<Self, NoteError> {
        let (name, hash, key) = split_key(text.trim())?;
        let raw = STANDARD.decode(key).map_err(|_| NoteError::Key("key is not base64".into()))?;
        let [alg, public @ ..] = raw.as_slice() else {
            return Err(NoteError::Key("empty key".into()));
        };
        let public: [u8; 32] = public
            .try_into()
            .ok()
            .filter(|_| *alg == ED25519_ALG)
            .ok_or_else(|| NoteError::Key("not an Ed25519 verifier key (algorithm 1, 32-byte key)".into()))?;
        if key_hash(name, &public) != hash {
            return Err(NoteError::Key("the key hash does not match the key".into()));
        }
        Ok(Self { name: name.to_owned(), hash, public })
    }

    /// The key in text form.
    pub fn to_text(&self) -> String {
        let mut raw = vec![ED25519_ALG];
        raw.extend_from_slice(&self.public);
        format!("{}+{}+{}", self.name, hex::encode(self.hash), STANDARD.encode(raw))
    }

    /// The key's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Verifies `note` and returns its body. Signatures by other keys are ignored (witnesses
    /// may cosign); at least one must be by this key and every one by this key must verify.
    pub fn verify<'a>(&self, note: &'a str) -> Result<&'a str, NoteError> {
        let (body, signatures) = split_note(note)?;
        let mut signed = false;
        for line in signatures {
            let (name, raw) = parse_signature_line(line)?;
            if name != self.name || raw[..4] != self.hash {
                continue;
            }
            if UnparsedPublicKey::new(&ED25519, &self.public).verify(body.as_bytes(), &raw[4..]).is_err() {
                return Err(NoteError::BadSignature(self.name.clone()));
            }
            signed = true;
        }
        if signed { Ok(body) } else { Err(NoteError::Unsigned(self.name.clone())) }
    }
}

fn check_body(body: &str) -> Result<(), NoteError> {
    if body.is_empty() || !body.ends_with('\n') {
        return Err(NoteError::Malformed("the body must be one or more complete lines".into()));
    }
    if body.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("control characters in the body".into()));
    }
    if body.split_terminator('\n').any(str::is_empty) {
        return Err(NoteError::Malformed("an empty line inside the body".into()));
    }
    Ok(())
}

/// Splits a note into its body (with its final newline) and its signature lines.
fn split_note(note: &str) -> Result<(&str, Vec<&str>), NoteError> {
    if note.len() > MAX_NOTE_LEN {
        return Err(NoteError::Malformed(format!("longer than {MAX_NOTE_LEN} bytes")));
    }
    let split = note.find("\n\n").ok_or_else(|| NoteError::Malformed("no blank line before the signatures".into()))?;
    let body = &note[..=split];
    check_body(body)?;
    let sigs = &note[split + 2..];
    if !sigs.ends_with('\n') {
        return Err(NoteError::Malformed("the last signature line does not end with a newline".into()));
    }
    let lines: Vec<&str> = sigs.split_terminator('\n').collect();
    if lines.is_empty() {
        return Err(NoteError::Malformed("no signature lines".into()));
    }
    if lines.len() > MAX_SIGNATURES {
        return Err(NoteError::Malformed(format!("more than {MAX_SIGNATURES} signatures")));
    }
    Ok((body, lines))
}

fn parse_signature_line(line: &str) -> Result<(&str, Vec<u8>), NoteError> {
    let rest = line
        .strip_prefix("\u{2014} ")
        .ok_or_else(|| NoteError::Malformed(format!("signature line {line:?} does not start with an em dash")))?;
    let (name, sig) = rest
        .split_once(' ')
        .ok_or_else(|| NoteError::Malformed(format!("signature line {line:?} has no signature")))?;
    if !valid_name(name) {
        return Err(NoteError::Malformed(format!("bad key name {name:?}")));
    }
    let raw = STANDARD.decode(sig).map_err(|_| NoteError::Malformed(format!("signature of {name} is not base64")))?;
    if raw.len() < 5 {
        return Err(NoteError::Malformed(format!("signature of {name} is too short")));
    }
    Ok((name, raw))
}

/// A tree head: what a checkpoint says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The log's origin line (unique per log; equals its key name here).
    pub origin: String,
    /// The tree size.
    pub size: u64,
    /// The root hash of the tree of that size.
    pub root: Hash,
    /// Extension lines, opaque.
    pub extensions: Vec<String>,
}

impl Checkpoint {
    /// The note body.
    pub fn body(&self) -> String {
        let mut s = format!("{}\n{}\n{}\n", self.origin, self.size, STANDARD.encode(self.root));
        for e in &self.extensions {
            s.push_str(e);
            s.push('\n');
        }
        s
    }

    /// Reads a checkpoint body.
    pub fn from_body(body: &str) -> Result<Self, NoteError> {
        let bad = |m: &str| NoteError::Checkpoint(m.to_owned());
        check_body(body).map_err(|e| NoteError::Checkpoint(e.to_string()))?;
        let mut lines = body.split_terminator('\n');
        let origin = lines.next().ok_or_else(|| bad("no origin line"))?;
        let size = lines.next().ok_or_else(|| bad("no tree size line"))?;
        let root = lines.next().ok_or_else(|| bad("no root hash line"))?;
        if size.is_empty() || !size.bytes().all(|b| b.is_ascii_digit()) || (size.len() > 1 && size.starts_with('0')) {
            return Err(bad("the tree size is not a decimal number without leading zeros"));
        }
        let size: u64 = size.parse().map_err(|_| bad("the tree size does not fit 64 bits"))?;
        let root = STANDARD
            .decode(root)
            .ok()
            .and_then(|r| <Hash>::try_from(r).ok())
            .ok_or_else(|| bad("the root hash is not 32 bytes of base64"))?;
        Ok(Self { origin: origin.to_owned(), size, root, extensions: lines.map(str::to_owned).collect() })
    }

    /// Signs this checkpoint.
    pub fn sign(&self, signer: &NoteSigner) -> Result<String, NoteError> {
        signer.sign(&self.body())
    }

    /// Verifies a checkpoint note with `key` and reads it; the origin must be the key's name.
    pub fn verify(note: &str, key: &NoteVerifier) -> Result<Self, NoteError> {
        let cp = Self::from_body(key.verify(note)?)?;
        if cp.origin != key.name {
            return Err(NoteError::Checkpoint(format!("origin {:?} is not the pinned log {:?}", cp.origin, key.name)));
        }
        Ok(cp)
    }
}
