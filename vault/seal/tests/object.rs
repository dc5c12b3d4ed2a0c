//! Sealed objects end to end: round trips at the chunk boundaries, random access, property tests,
//! one test per error, and a byte-flip sweep proving no unauthenticated plaintext is released.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::io::{Cursor, Read, Write};

use coffre_seal::chunked::{self, CHUNK_SIZE, EncryptingWriter, PREFIX_LEN};
use coffre_seal::header::{self, MAGIC};
use coffre_seal::{
    DataKey, Header, HeaderFields, RecipientPublicKey, RecipientSecretKey, SealError, SystemRandom, Workers,
};
use proptest::prelude::*;

fn identity(n: u8) -> RecipientSecretKey {
    RecipientSecretKey::derive_for_tests(&[n; 48]).unwrap()
}

fn fields(len: Option<u64>) -> HeaderFields {
    HeaderFields {
        tenant: "bank-a".into(),
        dataset: "customer-messages.2026-11".into(),
        content_type: "application/jsonl".into(),
        plaintext_len: len,
    }
}

fn data(len: usize) -> Vec<u8> {
    // Distinct per position so misplaced chunks cannot compare equal.
    (0..len).map(|i| (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[1]).collect()
}

fn seal_with(plain: &[u8], to: &[RecipientPublicKey], declared: bool, threads: usize, step: usize) -> Vec<u8> {
    let len = declared.then_some(plain.len() as u64);
    let mut sealer =
        coffre_seal::seal(Vec::new(), to, &fields(len), Workers::new(threads).unwrap(), &mut SystemRandom).unwrap();
    for piece in plain.chunks(step.max(1)) {
        sealer.write_all(piece).unwrap();
    }
    sealer.finish().unwrap().0
}

fn seal(plain: &[u8], to: &RecipientSecretKey) -> Vec<u8> {
    seal_with(plain, &[to.public().clone()], true, 2, 1 << 20)
}

/// Reads of this size take the reader's zero-copy path (a whole batch straight into the caller's
/// buffer); smaller ones go through its internal buffer.
const BIG_READ: usize = coffre_seal::chunked::BATCH_CHUNKS * CHUNK_SIZE + 1;

/// Streams the object open; returns the plaintext released before the first error, and the error.
fn open_stream(sealed: &[u8], id: &RecipientSecretKey, threads: usize) -> (Vec<u8>, Option<SealError>) {
    let small = open_stream_with(sealed, id, threads, 10_000);
    let big = open_stream_with(sealed, id, threads, BIG_READ);
    assert_eq!(small.0.len(), big.0.len(), "both read paths must release the same plaintext");
    assert_eq!(
        small.1.as_ref().map(ToString::to_string),
        big.1.as_ref().map(ToString::to_string),
        "both read paths must fail the same way"
    );
    small
}

fn open_stream_with(
    sealed: &[u8],
    id: &RecipientSecretKey,
    threads: usize,
    buf_len: usize,
) -> (Vec<u8>, Option<SealError>) {
    let mut reader = match coffre_seal::open(sealed, id, Workers::new(threads).unwrap()) {
        Ok((_, reader)) => reader,
        Err(e) => return (Vec::new(), Some(e)),
    };
    let mut out = Vec::new();
    let mut buf = vec![0u8; buf_len];
    loop {
        match reader.read(&mut buf) {
            Ok(0) => return (out, None),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(e) => {
                assert!(reader.read(&mut buf).is_err(), "reader must keep failing");
                return (out, Some(SealError::from(e)));
            }
        }
    }
}

fn open_ok(sealed: &[u8], id: &RecipientSecretKey) -> Vec<u8> {
    let (out, err) = open_stream(sealed, id, 2);
    assert!(err.is_none(), "{err:?}");
    out
}

fn open_err(sealed: &[u8], id: &RecipientSecretKey) -> SealError {
    let (out, err) = open_stream(sealed, id, 2);
    let err = err.expect("opening must fail");
    assert!(out.len() % CHUNK_SIZE == 0, "a partial chunk was released before {err}");
    // Random access must fail too, at construction or when everything is read.
    match coffre_seal::open_random_access(Cursor::new(sealed), id, Workers::sequential()) {
        Err(_) => {}
        Ok((_, mut ra)) => {
            let mut all = vec![0u8; ra.len() as usize];
            assert!(ra.read_at(0, &mut all).is_err(), "random access accepted a body that streaming rejected ({err})");
        }
    }
    err
}

#[test]
fn round_trips_at_chunk_boundaries() {
    let id = identity(1);
    for len in [0, 1, 16_383, 16_384, 16_385, 3 * 16_384, 4 << 20, 9 * 1024 * 1024 + 7] {
        let plain = data(len);
        for declared in [true, false] {
            for threads in [1, 2] {
                // Writes of 65 537 bytes mix copied, realigned and zero-copy chunks; 5 MiB writes
                // are whole batches.
                let step = if threads == 1 { 65_537 } else { 5 << 20 };
                let sealed = seal_with(&plain, &[id.public().clone()], declared, threads, step);
                let header = coffre_seal::inspect(&sealed[..]).unwrap();
                assert_eq!(header.plaintext_len, declared.then_some(len as u64));
                assert_eq!(
                    sealed.len() as u64,
                    header.len() as u64 + chunked::encrypted_len(len as u64).unwrap(),
                    "len {len}"
                );
                let (out, err) = open_stream(&sealed, &id, threads);
                assert!(err.is_none(), "len {len}: {err:?}");
                assert!(out == plain, "len {len} declared {declared} threads {threads}");

                let (_, mut ra) =
                    coffre_seal::open_random_access(Cursor::new(&sealed), &id, Workers::new(threads).unwrap()).unwrap();
                assert_eq!(ra.len(), len as u64);
                let mut all = vec![0u8; len];
                ra.read_at(0, &mut all).unwrap();
                assert!(all == plain);
                let mut via_read = Vec::new();
                ra.read_to_end(&mut via_read).unwrap();
                assert!(via_read == plain);
            }
        }
    }
}

#[test]
fn random_access_reads_ranges_and_rejects_out_of_bounds() {
    let id = identity(2);
    let plain = data(200_000);
    let sealed = seal(&plain, &id);
    let (_, mut ra) = coffre_seal::open_random_access(Cursor::new(&sealed), &id, Workers::sequential()).unwrap();
    for (start, len) in [(0, 1), (16_383, 2), (16_384, 16_384), (100_000, 99_999), (199_999, 1), (5, 0), (200_000, 0)] {
        let mut buf = vec![0u8; len];
        ra.read_at(start as u64, &mut buf).unwrap();
        assert_eq!(buf, plain[start..start + len]);
    }
    let mut buf = [0u8; 2];
    assert!(matches!(ra.read_at(199_999, &mut buf), Err(SealError::RangeOutOfBounds { .. })));
    assert!(matches!(ra.read_at(u64::MAX, &mut buf), Err(SealError::RangeOutOfBounds { .. })));
    use std::io::{Seek, SeekFrom};
    ra.seek(SeekFrom::End(-10)).unwrap();
    let mut tail = Vec::new();
    ra.read_to_end(&mut tail).unwrap();
    assert_eq!(tail, plain[plain.len() - 10..]);
}

#[test]
fn every_recipient_opens_and_others_are_told_who_can() {
    let (a, b, c) = (identity(3), identity(4), identity(5));
    let plain = data(40_000);
    let sealed = seal_with(&plain, &[a.public().clone(), b.public().clone()], true, 1, 4096);
    assert_eq!(open_ok(&sealed, &a), plain);
    assert_eq!(open_ok(&sealed, &b), plain);
    match open_err(&sealed, &c) {
        SealError::NoMatchingRecipient { ours, recipients } => {
            assert_eq!(ours, c.public().key_id());
            assert_eq!(recipients, vec![a.public().key_id(), b.public().key_id()]);
        }
        other => panic!("{other}"),
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, .. ProptestConfig::default() })]

    #[test]
    fn prop_round_trip_any_length_any_write_pattern(
        len in 0usize..120_000,
        step in 1usize..40_000,
        declared in any::<bool>(),
        threads in 1usize..3,
        ranges in proptest::collection::vec((0usize..120_000, 0usize..40_000), 1..6),
    ) {
        let id = identity(6);
        let plain = data(len);
        let sealed = seal_with(&plain, &[id.public().clone()], declared, threads, step);
        let (out, err) = open_stream(&sealed, &id, threads);
        prop_assert!(err.is_none());
        prop_assert!(out == plain);
        let (_, mut ra) = coffre_seal::open_random_access(Cursor::new(&sealed), &id, Workers::new(threads).unwrap()).unwrap();
        for (start, n) in ranges {
            let start = start.min(len);
            let n = n.min(len - start);
            let mut buf = vec![0u8; n];
            ra.read_at(start as u64, &mut buf).unwrap();
            prop_assert!(buf[..] == plain[start..start + n]);
        }
    }
}

// ------------------------------------------------------------------ one test per error

#[test]
fn error_bad_magic() {
    let id = identity(7);
    let mut sealed = seal(b"hello", &id);
    sealed[0] ^= 0x01;
    assert!(matches!(open_err(&sealed, &id), SealError::BadMagic));
    assert!(matches!(coffre_seal::inspect(&b"PK\x03\x04 a zip file"[..]), Err(SealError::BadMagic)));
    assert!(matches!(coffre_seal::inspect(&b""[..]), Err(SealError::Truncated(_))));
}

#[test]
fn error_unsupported_version() {
    let id = identity(7);
    let mut sealed = seal(b"hello", &id);
    sealed[8..10].copy_from_slice(&2u16.to_be_bytes());
    assert!(matches!(open_err(&sealed, &id), SealError::UnsupportedVersion { found: 2, supported: 1 }));
}

#[test]
fn error_malformed_header() {
    let id = identity(7);
    let sealed = seal(b"hello", &id);
    let mut huge = sealed.clone();
    huge[10..14].copy_from_slice(&u32::MAX.to_be_bytes());
    assert!(matches!(open_err(&huge, &id), SealError::MalformedHeader(_)));
    let mut flags = sealed.clone();
    flags[30] |= 0x80;
    assert!(matches!(open_err(&flags, &id), SealError::MalformedHeader(_)));
    let mut bad_char = sealed.clone();
    bad_char[40] = b'/'; // first byte of the tenant id
    assert!(matches!(open_err(&bad_char, &id), SealError::MalformedHeader(_)));
}

#[test]
fn error_header_tampered() {
    let id = identity(7);
    let sealed = seal(b"hello", &id);
    let header = coffre_seal::inspect(&sealed[..]).unwrap();
    // A field change that still parses: the tenant id "bank-a" becomes "bank-b".
    let mut tenant = sealed.clone();
    tenant[40 + 5] = b'b';
    assert!(matches!(open_err(&tenant, &id), SealError::HeaderTampered("header MAC mismatch")));
    // The declared length (authenticated only by the MAC).
    let mut len = sealed.clone();
    len[38] ^= 1;
    assert!(matches!(open_err(&len, &id), SealError::HeaderTampered(_)));
    // The MAC itself.
    let mut mac = sealed.clone();
    mac[header.len() - 1] ^= 1;
    assert!(matches!(open_err(&mac, &id), SealError::HeaderTampered("header MAC mismatch")));
    // The object id, which the data-key wrap is bound to.
    let mut oid = sealed.clone();
    oid[14] ^= 1;
    assert!(matches!(open_err(&oid, &id), SealError::HeaderTampered(_)));
}

#[test]
fn error_commitment_mismatch_and_body_swaps() {
    let id = identity(8);
    let a = seal(&data(30_000), &id);
    let b = seal(&data(30_000), &id);
    let ha = coffre_seal::inspect(&a[..]).unwrap().len();
    let mut salt = a.clone();
    salt[ha] ^= 1;
    assert!(matches!(open_err(&salt, &id), SealError::CommitmentMismatch));
    let mut commitment = a.clone();
    commitment[ha + PREFIX_LEN - 1] ^= 1;
    assert!(matches!(open_err(&commitment, &id), SealError::CommitmentMismatch));
    // B's body under A's header: a different data key and context.
    let hb = coffre_seal::inspect(&b[..]).unwrap().len();
    let mut swapped = a[..ha].to_vec();
    swapped.extend_from_slice(&b[hb..]);
    assert!(matches!(open_err(&swapped, &id), SealError::CommitmentMismatch));
}

#[test]
fn error_chunk_authentication_names_the_chunk_and_releases_only_earlier_chunks() {
    let id = identity(9);
    let plain = data(5 * CHUNK_SIZE + 100);
    let sealed = seal(&plain, &id);
    let body = coffre_seal::inspect(&sealed[..]).unwrap().len() + PREFIX_LEN;
    let mut bad = sealed.clone();
    bad[body + 2 * (CHUNK_SIZE + 16) + 77] ^= 0x40;
    let (out, err) = open_stream(&bad, &id, 2);
    assert!(matches!(err, Some(SealError::ChunkAuthentication { index: 2 })), "{err:?}");
    assert_eq!(out, plain[..2 * CHUNK_SIZE]);
    // The same deep inside a second batch, on both read paths (checked inside open_stream).
    let long = data(300 * CHUNK_SIZE + 5);
    let sealed_long = seal(&long, &id);
    let mut bad = sealed_long.clone();
    bad[body + 260 * (CHUNK_SIZE + 16) + 1] ^= 1;
    let (out, err) = open_stream(&bad, &id, 2);
    assert!(matches!(err, Some(SealError::ChunkAuthentication { index: 260 })), "{err:?}");
    assert!(out == long[..260 * CHUNK_SIZE]);
    // Swapping two chunks is caught at the first of them.
    let mut swapped = sealed.clone();
    let (c1, c3) = (body + (CHUNK_SIZE + 16), body + 3 * (CHUNK_SIZE + 16));
    let chunk1 = sealed[c1..c1 + CHUNK_SIZE + 16].to_vec();
    swapped.copy_within(c3..c3 + CHUNK_SIZE + 16, c1);
    swapped[c3..c3 + CHUNK_SIZE + 16].copy_from_slice(&chunk1);
    assert!(matches!(open_err(&swapped, &id), SealError::ChunkAuthentication { index: 1 }));
}

#[test]
fn error_truncated() {
    let id = identity(10);
    let plain = data(3 * CHUNK_SIZE + 5);
    let sealed = seal(&plain, &id);
    let header_len = coffre_seal::inspect(&sealed[..]).unwrap().len();
    for cut in [1, 5, 21, CHUNK_SIZE + 16 + 5 + 16 - 1, sealed.len() - header_len, sealed.len() - 3] {
        let short = &sealed[..sealed.len() - cut];
        assert!(matches!(open_err(short, &id), SealError::Truncated(_)), "cut {cut}");
    }
    // Undeclared length: the short final chunk alone delimits the message.
    let undeclared = seal_with(&plain, &[id.public().clone()], false, 1, 999);
    let boundary = &undeclared[..undeclared.len() - (5 + 16)];
    assert!(matches!(open_err(boundary, &id), SealError::Truncated(_)));
}

#[test]
fn error_trailing_data() {
    let id = identity(11);
    let mut sealed = seal(&data(20_000), &id);
    sealed.extend_from_slice(b"appended");
    assert!(matches!(open_err(&sealed, &id), SealError::TrailingData));
}

/// Builds an object whose authenticated header declares `declared` bytes but whose body holds
/// `actual`: only someone holding the data key can do that.
fn forged_length(id: &RecipientSecretKey, declared: u64, actual: usize) -> Vec<u8> {
    let dek = DataKey::generate(&mut SystemRandom).unwrap();
    let header: Header =
        header::build(&fields(Some(declared)), &[id.public().clone()], &dek, &mut SystemRandom).unwrap();
    let mut out = header.as_bytes().to_vec();
    let mut w = EncryptingWriter::new(
        &mut out,
        dek.expose_secret(),
        &header.digest(),
        Workers::sequential(),
        &mut SystemRandom,
    )
    .unwrap();
    w.write_all(&data(actual)).unwrap();
    w.finish().unwrap();
    out
}

fn declaring_100(id: &RecipientSecretKey) -> coffre_seal::Sealer<Vec<u8>> {
    coffre_seal::seal(Vec::new(), &[id.public().clone()], &fields(Some(100)), Workers::sequential(), &mut SystemRandom)
        .unwrap()
}

#[test]
fn error_length_mismatch() {
    let id = identity(12);
    // Sealing: fewer or more bytes than declared.
    let mut sealer = declaring_100(&id);
    sealer.write_all(&[0u8; 50]).unwrap();
    assert!(matches!(sealer.finish(), Err(SealError::LengthMismatch { declared: 100, actual: 50 })));
    let mut sealer = declaring_100(&id);
    let err = sealer.write_all(&[0u8; 150]).unwrap_err();
    assert!(matches!(SealError::from(err), SealError::LengthMismatch { declared: 100, actual: 150 }));
    // Opening: a complete body of another length than the header declares.
    for (declared, actual) in [(40_000, 20_000), (20_000, 40_000), (16_384, 0)] {
        let forged = forged_length(&id, declared, actual);
        let (out, err) = open_stream(&forged, &id, 1);
        assert!(out.len() <= actual.min(declared as usize));
        let err = err.unwrap();
        assert!(
            matches!(err, SealError::LengthMismatch { .. } | SealError::TrailingData),
            "declared {declared} actual {actual}: {err}"
        );
        let ra = coffre_seal::open_random_access(Cursor::new(&forged), &id, Workers::sequential());
        assert!(
            matches!(ra, Err(SealError::LengthMismatch { declared: d, actual: a }) if d == declared && a == actual as u64),
            "declared {declared} actual {actual}: {ra:?}"
        );
    }
}

#[test]
fn error_invalid_keys() {
    assert!(matches!("coffre-p384-pub-AAAA".parse::<RecipientPublicKey>(), Err(SealError::InvalidKey(_))));
    assert!(matches!(
        "age1qyqszqgpqyqszqgpqyqszqgpqyqszqgp".parse::<RecipientPublicKey>(),
        Err(SealError::InvalidKey(_))
    ));
    assert!(matches!(RecipientSecretKey::from_key_file("garbage"), Err(SealError::InvalidKey(_))));
    assert!(matches!(
        coffre_seal::seal(Vec::new(), &[], &fields(None), Workers::sequential(), &mut SystemRandom),
        Err(SealError::InvalidArgument(_))
    ));
    let bad = HeaderFields { tenant: "bank a".into(), ..fields(None) };
    assert!(matches!(
        coffre_seal::seal(Vec::new(), &[identity(1).public().clone()], &bad, Workers::sequential(), &mut SystemRandom),
        Err(SealError::InvalidArgument(_))
    ));
}

#[test]
fn magic_is_what_the_docs_say() {
    assert_eq!(&MAGIC, b"\x89COFFRE\n");
}

/// Flips one bit at many positions of a sealed object (every header and prefix byte, both ends and
/// a stride through every chunk): each must be rejected with a format error, and nothing but whole
/// authenticated chunks of the original may come out before the error.
#[test]
fn byte_flip_sweep_never_releases_unauthenticated_plaintext() {
    let id = identity(13);
    let plain = data(2 * CHUNK_SIZE + 3000);
    let sealed = seal(&plain, &id);
    let body = coffre_seal::inspect(&sealed[..]).unwrap().len() + PREFIX_LEN;
    let mut positions: Vec<usize> = (0..body).collect();
    positions.extend((body..sealed.len()).step_by(101));
    for c in 0..3 {
        let start = body + c * (CHUNK_SIZE + 16);
        let end = (start + CHUNK_SIZE + 16).min(sealed.len());
        positions.extend(start..start + 24);
        positions.extend(end - 24..end);
    }
    for &pos in &positions {
        for bit in [0x01u8, 0x80] {
            let mut bad = sealed.clone();
            bad[pos] ^= bit;
            let (out, err) = open_stream(&bad, &id, 1);
            let Some(err) = err else { panic!("flip at {pos} ({bit:#x}) was accepted") };
            assert!(!matches!(err, SealError::Io(_) | SealError::Crypto(_)), "flip at {pos}: {err}");
            assert!(out.len() % CHUNK_SIZE == 0 && plain.starts_with(&out), "flip at {pos} released bad plaintext");
        }
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, .. ProptestConfig::default() })]

    /// Several mutations at once (the byte-flip sweep does one): opening never panics, success
    /// means the original came back, and failures release only whole authenticated chunks.
    #[test]
    fn prop_mutated_objects_fail_closed(
        len in 0usize..(2 * CHUNK_SIZE + 100),
        declared in any::<bool>(),
        flips in proptest::collection::vec((any::<u32>(), 1u8..), 0..4),
        truncate in proptest::option::of(any::<u32>()),
        append in proptest::collection::vec(any::<u8>(), 0..20),
    ) {
        let id = identity(14);
        let plain = data(len);
        let mut sealed = seal_with(&plain, &[id.public().clone()], declared, 1, 7000);
        let original = sealed.clone();
        let n = sealed.len() as u32;
        for (at, mask) in &flips {
            sealed[(at % n) as usize] ^= mask; // two equal flips at one place cancel: compare below
        }
        if let Some(to) = truncate {
            sealed.truncate((to % n) as usize);
        }
        sealed.extend_from_slice(&append);
        let changed = sealed != original;
        let (out, err) = open_stream_with(&sealed, &id, 1, 10_000);
        match err {
            None => prop_assert!(!changed && out == plain),
            Some(_) => prop_assert!(changed && out.len() % CHUNK_SIZE == 0 && plain.starts_with(&out)),
        }
    }
}

/// Forward compatibility: a stanza of a type this version does not know is skipped (and still
/// authenticated by the MAC). The header is re-encoded here from the specification in
/// docs/sealed-object-v1.md, MAC included, as an independent check of the documented layout.
#[test]
fn unknown_stanza_types_are_skipped_but_authenticated() {
    use aws_lc_rs::{hkdf as lc_hkdf, hmac};

    let id = identity(15);
    let dek = DataKey::generate(&mut SystemRandom).unwrap();
    let plain = data(20_000);
    let header: Header =
        header::build(&fields(Some(plain.len() as u64)), &[id.public().clone()], &dek, &mut SystemRandom).unwrap();
    let raw = header.as_bytes();
    // Fixed part up to the stanza count: 39 bytes + three length-prefixed strings.
    let mut at = 39;
    for _ in 0..3 {
        at += 1 + usize::from(raw[at]);
    }
    assert_eq!(u16::from_be_bytes([raw[at], raw[at + 1]]), 1);
    let stanzas = &raw[at + 2..raw.len() - 48];
    let unknown: &[u8] = &[0x7f, 0x01, 0, 0, 0, 5, b'l', b'a', b't', b'e', b'r'];
    let mut forged = raw[..at].to_vec();
    forged.extend_from_slice(&2u16.to_be_bytes());
    forged.extend_from_slice(unknown);
    forged.extend_from_slice(stanzas);
    let total = (forged.len() + 48) as u32;
    forged[10..14].copy_from_slice(&total.to_be_bytes());
    // K_mac = HKDF-SHA-384(salt = object id, ikm = DEK, info = "coffre/seal/v1/header-mac").
    struct L48;
    impl lc_hkdf::KeyType for L48 {
        fn len(&self) -> usize {
            48
        }
    }
    let mut k_mac = [0u8; 48];
    lc_hkdf::Salt::new(lc_hkdf::HKDF_SHA384, &raw[14..30])
        .extract(dek.expose_secret())
        .expand(&[b"coffre/seal/v1/header-mac"], L48)
        .unwrap()
        .fill(&mut k_mac)
        .unwrap();
    let mac = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA384, &k_mac), &forged);
    forged.extend_from_slice(mac.as_ref());

    let reparsed = coffre_seal::inspect(&forged[..]).unwrap();
    assert!(matches!(&reparsed.stanzas[0], coffre_seal::Stanza::Unknown { kind: 0x7f01, body } if body == b"later"));
    assert_eq!(reparsed.recipients(), vec![id.public().key_id()]);
    let mut object = forged.clone();
    let mut w = EncryptingWriter::new(
        &mut object,
        dek.expose_secret(),
        &reparsed.digest(),
        Workers::sequential(),
        &mut SystemRandom,
    )
    .unwrap();
    w.write_all(&plain).unwrap();
    w.finish().unwrap();
    assert_eq!(open_ok(&object, &id), plain);
    // The unknown stanza is covered by the MAC like every other header byte.
    let mut tampered = object.clone();
    tampered[at + 2 + 6] ^= 1;
    assert!(matches!(open_err(&tampered, &id), SealError::HeaderTampered("header MAC mismatch")));
}

/// A KEK rotation rewraps the header it keeps beside an object: the new KEK opens it (to the same
/// data key, which opens the untouched object with the object's own header — the body is bound
/// to that header, never to the rewrapped copy), the old one no longer finds its stanza, the
/// other recipients are kept, and a header altered before the rewrap is refused.
#[test]
fn a_rewrapped_header_opens_the_untouched_object_with_the_new_kek_only() {
    let (old, new, owner) = (identity(1), identity(2), identity(3));
    let plain = data(3 * CHUNK_SIZE + 17);
    let object = seal_with(&plain, &[old.public().clone(), owner.public().clone()], true, 1, 4096);
    let (header, body_at) = Header::parse_prefix(&object).unwrap();
    let rewrapped = header.rewrap(&old, new.public(), &mut SystemRandom).unwrap();
    assert_eq!(rewrapped.object_id, header.object_id);
    let reparsed = Header::parse_prefix(rewrapped.as_bytes()).unwrap().0;
    let dek = reparsed.unwrap_data_key(&new).unwrap();
    assert_eq!(dek.expose_secret(), header.unwrap_data_key(&old).unwrap().expose_secret());
    assert_eq!(
        reparsed.unwrap_data_key(&owner).unwrap().expose_secret(),
        dek.expose_secret(),
        "other recipients keep their stanza"
    );
    assert!(matches!(reparsed.unwrap_data_key(&old), Err(SealError::NoMatchingRecipient { .. })));
    let mut out = Vec::new();
    assert!(coffre_seal::open_body(&object[body_at..], &reparsed, &dek, Workers::sequential()).is_err());
    coffre_seal::open_body(&object[body_at..], &header, &dek, Workers::sequential())
        .unwrap()
        .read_to_end(&mut out)
        .unwrap();
    assert_eq!(out, plain);
    // Only the key that opens a header can rewrap it.
    assert!(header.rewrap(&new, owner.public(), &mut SystemRandom).is_err());
}
