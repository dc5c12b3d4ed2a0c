//! Conformance: Wycheproof AES-GCM, C2SP chunked encryption (Cobblestone-256) and HKDF vectors,
//! run through the exact code paths the sealed format uses.
//!
//! The vectors live in `../shared/testdata/vectors/wycheproof/` (see `coffre-testkit`).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::io::{Cursor, Read, Write};

use aws_lc_rs::digest;
use coffre_seal::aead::{AeadNonce, Aes256Gcm, TAG_LEN};
use coffre_seal::chunked::{
    self, BodyKey, CHUNK_SIZE, DecryptingReader, EncryptingWriter, PREFIX_LEN, RandomAccessReader, SALT_LEN,
};
use coffre_seal::kdf::{HkdfHash, hkdf};
use coffre_seal::{RandomSource, SealError, Workers};
use serde::Deserialize;

fn unhex(s: &str) -> Vec<u8> {
    hex::decode(s).unwrap()
}

fn load<T: for<'de> Deserialize<'de>>(name: &str) -> Option<T> {
    let bytes = coffre_testkit::read(&format!("vectors/wycheproof/{name}"))?;
    Some(serde_json::from_slice(&bytes).unwrap())
}

// ---------------------------------------------------------------- AES-GCM

#[derive(Deserialize)]
struct AeadFile {
    #[serde(rename = "testGroups")]
    groups: Vec<AeadGroup>,
    #[serde(rename = "numberOfTests")]
    number_of_tests: usize,
}

#[derive(Deserialize)]
struct AeadGroup {
    #[serde(rename = "keySize")]
    key_size: usize,
    #[serde(rename = "ivSize")]
    iv_size: usize,
    #[serde(rename = "tagSize")]
    tag_size: usize,
    tests: Vec<AeadTest>,
}

#[derive(Deserialize)]
struct AeadTest {
    #[serde(rename = "tcId")]
    id: u32,
    key: String,
    iv: String,
    aad: String,
    msg: String,
    ct: String,
    tag: String,
    result: String,
}

/// Every vector goes through the wrapper. Only AES-256 with 96-bit nonces and 128-bit tags is
/// supported, deliberately: for those the outcome must match exactly (seal reproduces ct‖tag,
/// open accepts valid and rejects invalid); every other key or nonce size must be refused by the
/// wrapper with its typed error, never adapted.
#[test]
fn wycheproof_aes_gcm_every_vector() {
    let Some(file) = load::<AeadFile>("aes_gcm_test.json") else {
        return;
    };
    let (mut exact, mut refused) = (0, 0);
    for g in &file.groups {
        assert_eq!(g.tag_size, 128);
        for t in &g.tests {
            let key = unhex(&t.key);
            let iv = unhex(&t.iv);
            let (aad, msg, ct, tag) = (unhex(&t.aad), unhex(&t.msg), unhex(&t.ct), unhex(&t.tag));
            let cipher = Aes256Gcm::new(&key);
            let nonce = AeadNonce::from_slice(&iv);
            if g.key_size != 256 {
                assert!(matches!(cipher, Err(SealError::InvalidKeyLength { expected: 32, .. })), "tc {}", t.id);
                refused += 1;
                continue;
            }
            if g.iv_size != 96 {
                assert!(matches!(nonce, Err(SealError::InvalidNonceLength(_))), "tc {}", t.id);
                refused += 1;
                continue;
            }
            let (cipher, nonce) = (cipher.unwrap(), nonce.unwrap());
            let mut ct_tag = ct.clone();
            ct_tag.extend_from_slice(&tag);
            let mut out = vec![0u8; msg.len()];
            let opened = cipher.open_into(&nonce, &aad, &ct_tag, &mut out);
            match t.result.as_str() {
                "valid" => {
                    assert!(opened, "tc {} must open", t.id);
                    assert_eq!(out, msg, "tc {}", t.id);
                    let mut sealed = vec![0u8; msg.len() + TAG_LEN];
                    cipher.seal_into(&nonce, &aad, &msg, &mut sealed).unwrap();
                    assert_eq!(sealed, ct_tag, "tc {} seal", t.id);
                }
                "invalid" => {
                    assert!(!opened, "tc {} must be rejected", t.id);
                    assert!(out.iter().all(|&b| b == 0), "tc {}: rejected open left bytes behind", t.id);
                }
                other => panic!("tc {}: unexpected result {other}", t.id),
            }
            exact += 1;
        }
    }
    assert_eq!(exact + refused, file.number_of_tests, "every vector must be accounted for");
    assert!(exact > 60, "AES-256/96-bit vectors ran: {exact}");
}

// ---------------------------------------------------------------- HKDF

#[derive(Deserialize)]
struct HkdfFile {
    #[serde(rename = "testGroups")]
    groups: Vec<HkdfGroup>,
    #[serde(rename = "numberOfTests")]
    number_of_tests: usize,
}

#[derive(Deserialize)]
struct HkdfGroup {
    tests: Vec<HkdfTest>,
}

#[derive(Deserialize)]
struct HkdfTest {
    #[serde(rename = "tcId")]
    id: u32,
    ikm: String,
    salt: String,
    info: String,
    size: usize,
    okm: String,
    result: String,
}

fn run_hkdf(name: &str, hash: HkdfHash) {
    let Some(file) = load::<HkdfFile>(name) else {
        return;
    };
    let mut n = 0;
    for t in file.groups.iter().flat_map(|g| &g.tests) {
        let mut out = vec![0u8; t.size];
        let r = hkdf(hash, &unhex(&t.salt), &unhex(&t.ikm), &[&unhex(&t.info)], &mut out);
        match t.result.as_str() {
            "valid" => {
                r.unwrap_or_else(|e| panic!("{name} tc {}: {e}", t.id));
                assert_eq!(out, unhex(&t.okm), "{name} tc {}", t.id);
            }
            _ => assert!(r.is_err(), "{name} tc {} must be rejected", t.id),
        }
        n += 1;
    }
    assert_eq!(n, file.number_of_tests);
}

#[test]
fn wycheproof_hkdf_sha384() {
    run_hkdf("hkdf_sha384_test.json", HkdfHash::Sha384);
}

#[test]
fn wycheproof_hkdf_sha512() {
    run_hkdf("hkdf_sha512_test.json", HkdfHash::Sha512);
}

#[test]
fn wycheproof_hkdf_sha256() {
    run_hkdf("hkdf_sha256_test.json", HkdfHash::Sha256);
}

// ---------------------------------------------------------------- C2SP chunked encryption

#[derive(Deserialize)]
struct ChunkedFile {
    #[serde(rename = "testGroups")]
    groups: Vec<ChunkedGroup>,
    #[serde(rename = "numberOfTests")]
    number_of_tests: usize,
}

#[derive(Deserialize)]
struct ChunkedGroup {
    aead: String,
    sha: String,
    tests: Vec<ChunkedTest>,
}

#[derive(Deserialize)]
struct ChunkedTest {
    #[serde(rename = "tcId")]
    id: u32,
    comment: String,
    key: String,
    ctx: String,
    ct: String,
    #[serde(rename = "aeadKey")]
    aead_key: Option<String>,
    #[serde(rename = "baseNonce")]
    base_nonce: Option<String>,
    #[serde(rename = "msgLength")]
    msg_length: Option<usize>,
    #[serde(rename = "msgSha512")]
    msg_sha512: Option<String>,
    result: String,
    flags: Vec<String>,
}

impl ChunkedTest {
    fn has(&self, flag: &str) -> bool {
        self.flags.iter().any(|f| f == flag)
    }

    fn ciphertext(&self) -> Vec<u8> {
        let mut out = Vec::new();
        flate2::read::ZlibDecoder::new(&unhex(&self.ct)[..]).read_to_end(&mut out).unwrap();
        out
    }

    fn name(&self) -> String {
        format!("tc {} ({})", self.id, self.comment)
    }

    /// Asserts `prefix` is the valid message prefix the vector describes.
    fn check_prefix(&self, produced: &[u8], what: &str) {
        match (self.msg_length, &self.msg_sha512) {
            (Some(len), Some(sha)) => {
                assert!(
                    produced.len() <= len,
                    "{}: {what} released {} bytes beyond the valid prefix",
                    self.name(),
                    produced.len()
                );
                let whole = produced.len() == len;
                if whole {
                    assert_eq!(hex::encode(digest::digest(&digest::SHA512, produced)), *sha, "{}: {what}", self.name());
                }
                // Only whole authenticated chunks can come out.
                assert!(
                    whole || produced.len().is_multiple_of(CHUNK_SIZE),
                    "{}: {what} released a partial chunk",
                    self.name()
                );
            }
            _ => assert!(
                produced.is_empty(),
                "{}: {what} released plaintext of a vector with no valid prefix",
                self.name()
            ),
        }
    }
}

/// Reads a streaming decryptor to the end in odd-sized steps; returns what came out and the error.
fn drain<R: Read>(mut reader: R) -> (Vec<u8>, Option<std::io::Error>) {
    let mut out = Vec::new();
    let mut buf = vec![0u8; 7777];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                // Keep failing: a later read must not report a clean end of message.
                for _ in 0..3 {
                    assert!(reader.read(&mut buf).is_err(), "decryptor recovered after an error");
                }
                return (out, Some(e));
            }
        }
    }
}

struct FixedSalt(Vec<u8>);

impl RandomSource for FixedSalt {
    fn fill(&mut self, dest: &mut [u8]) -> coffre_seal::Result<()> {
        assert_eq!(dest.len(), self.0.len(), "the writer draws exactly one salt");
        dest.copy_from_slice(&self.0);
        Ok(())
    }
}

fn workers(threads: usize) -> Workers {
    Workers::new(threads).unwrap()
}

#[test]
fn c2sp_chunked_encryption_every_vector() {
    let Some(file) = load::<ChunkedFile>("c2sp_chunked_encryption_aes_256_gcm_test.json") else {
        return;
    };
    let mut n = 0;
    for g in &file.groups {
        assert_eq!((g.aead.as_str(), g.sha.as_str()), ("AEAD_AES_256_GCM", "SHA-512"));
        for t in &g.tests {
            check_chunked_vector(t);
            n += 1;
        }
    }
    assert_eq!(n, file.number_of_tests);
}

fn check_chunked_vector(t: &ChunkedTest) {
    let key = unhex(&t.key);
    let ctx = unhex(&t.ctx);
    let ct = t.ciphertext();
    let valid = match t.result.as_str() {
        "valid" => true,
        "invalid" => false,
        other => panic!("{}: unexpected result {other}", t.name()),
    };

    if t.has("InvalidKeySize") {
        assert!(matches!(chunked::decrypt(&key, &ctx, &ct, &workers(1)), Err(SealError::InvalidKeyLength { .. })));
        assert!(matches!(
            DecryptingReader::new(&ct[..], &key, &ctx, None, workers(1)),
            Err(SealError::InvalidKeyLength { .. })
        ));
        assert!(matches!(
            RandomAccessReader::new(Cursor::new(&ct), 0, &key, &ctx, None, workers(1)),
            Err(SealError::InvalidKeyLength { .. })
        ));
        return;
    }

    // 1. Whole-message decryption, one and two threads.
    for threads in [1, 2] {
        let whole = chunked::decrypt(&key, &ctx, &ct, &workers(threads));
        if valid {
            let pt = whole.unwrap_or_else(|e| panic!("{}: {e}", t.name()));
            assert_eq!(Some(pt.len()), t.msg_length, "{}", t.name());
            t.check_prefix(&pt, "whole decryption");
        } else {
            assert!(whole.is_err(), "{} must fail", t.name());
        }
    }
    if t.has("HeaderFailure") {
        let header_err = chunked::decrypt(&key, &ctx, &ct, &workers(1)).unwrap_err();
        assert!(
            matches!(header_err, SealError::CommitmentMismatch | SealError::Truncated(_)),
            "{}: header failure reported as {header_err}",
            t.name()
        );
    }

    // 2. Streaming decryption: the valid prefix at most, then an error that sticks.
    for threads in [1, 2] {
        match DecryptingReader::new(&ct[..], &key, &ctx, None, workers(threads)) {
            Ok(reader) => {
                let (out, err) = drain(reader);
                if valid {
                    assert!(err.is_none(), "{}: {err:?}", t.name());
                    t.check_prefix(&out, "streaming");
                } else {
                    assert!(err.is_some(), "{}: streaming must fail", t.name());
                    assert!(!t.has("HeaderFailure"), "{}: header failure not caught before chunks", t.name());
                    t.check_prefix(&out, "streaming");
                }
            }
            Err(e) => assert!(!valid && t.has("HeaderFailure"), "{}: prefix rejected: {e}", t.name()),
        }
    }

    // 3. Random access: length authentication at construction, then the whole range.
    match RandomAccessReader::new(Cursor::new(&ct), 0, &key, &ctx, None, workers(2)) {
        Ok(mut ra) => {
            assert!(valid || t.has("ValidFinalChunk"), "{}: final chunk must not authenticate", t.name());
            let mut all = vec![0u8; ra.len() as usize];
            let r = ra.read_at(0, &mut all);
            if valid {
                r.unwrap_or_else(|e| panic!("{}: {e}", t.name()));
                t.check_prefix(&all, "random access");
                // A range in the middle, crossing a chunk boundary when there is one.
                if all.len() > CHUNK_SIZE + 10 {
                    let mut mid = vec![0u8; 20];
                    ra.read_at(CHUNK_SIZE as u64 - 10, &mut mid).unwrap();
                    assert_eq!(mid, all[CHUNK_SIZE - 10..CHUNK_SIZE + 10]);
                }
            } else {
                assert!(r.is_err(), "{}: random-access read of everything must fail", t.name());
                assert!(all.iter().all(|&b| b == 0), "{}: failed read left plaintext behind", t.name());
            }
        }
        Err(e) => assert!(!valid, "{}: {e}", t.name()),
    }

    // 4. Raw mode: drop the 56-byte prefix and use aeadKey/baseNonce directly.
    if let (Some(ak), Some(bn)) = (&t.aead_key, &t.base_nonce) {
        assert!(!t.has("HeaderFailure"));
        let raw_key = BodyKey::from_raw(&unhex(ak), &unhex(bn)).unwrap();
        let chunks = &ct[PREFIX_LEN.min(ct.len())..];
        let raw = chunked::plaintext_len(chunks.len() as u64 + PREFIX_LEN as u64).and_then(|len| {
            let mut out = vec![0u8; len as usize];
            chunked::open_chunks(&raw_key, &workers(1), 0, chunks, true, &mut out).map(|()| out)
        });
        assert_eq!(raw.is_ok(), valid, "{}: raw mode", t.name());

        // 5. Encryption: raw mode is deterministic, and with the vector's salt injected the
        //    streaming writer must reproduce the ciphertext byte for byte.
        if let Ok(msg) = raw {
            let mut again = vec![0u8; chunks.len()];
            chunked::seal_chunks(&raw_key, &workers(2), 0, &msg, true, &mut again).unwrap();
            assert_eq!(again, chunks, "{}: raw re-encryption", t.name());

            let salt = ct[..SALT_LEN].to_vec();
            for step in [1usize, 1000, 16384, usize::MAX] {
                if step == 1 && msg.len() > 40_000 {
                    continue;
                }
                let mut w =
                    EncryptingWriter::new(Vec::new(), &key, &ctx, workers(2), &mut FixedSalt(salt.clone())).unwrap();
                for piece in msg.chunks(step.min(msg.len().max(1))) {
                    w.write_all(piece).unwrap();
                }
                assert_eq!(w.finish().unwrap(), ct, "{}: streaming encryption, writes of {step}", t.name());
            }
        }
    }
}
