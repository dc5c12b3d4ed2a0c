//! Signed notes (including a real sum.golang.org tree head), checkpoints, canonical entries and
//! bundles, the log's refusal to sign two roots for one size, and the directory store's crash
//! recovery.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use coffre_log::bundle::{Bundle, Decision, FORMAT, Item};
use coffre_log::{
    BlobStore, Checkpoint, Digest, DirStore, Entry, EntryStore, Log, LogError, MemoryStore, NoteError, NoteSigner,
    NoteVerifier, PolicyVersion,
};

/// The Go checksum database's public key and a tree head it served (public data).
const SUMDB_KEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";
const SUMDB_NOTE: &str = "go.sum database tree\n65209736\n5+uGFjx6xBZG8ip1+wi77v+grwbhhukIrxEUS8PXvRo=\n\n\
\u{2014} sum.golang.org Az3grnbssgK7ubgFX36gVETtNv0U23qxyAhAMai2QUfeGa3nB/akvkMdlUErfcZz7l/R3cVtYspg3dxXABkGZZKdsQ8=\n";

#[test]
fn verifies_a_note_signed_by_the_go_checksum_database() {
    let key = NoteVerifier::from_text(SUMDB_KEY).unwrap();
    assert_eq!(key.to_text(), SUMDB_KEY);
    let body = key.verify(SUMDB_NOTE).unwrap();
    let cp = Checkpoint::from_body(body).unwrap();
    assert_eq!(cp.origin, "go.sum database tree");
    assert_eq!(cp.size, 65_209_736);
    assert_eq!(cp.body(), body);
    // One changed digit of the size, and the signature no longer verifies.
    let altered = SUMDB_NOTE.replace("65209736", "65209737");
    assert!(matches!(key.verify(&altered), Err(NoteError::BadSignature(_))));
}

#[test]
fn signer_round_trip_and_witness_cosignatures() {
    let signer = NoteSigner::generate("vault.example/coffre").unwrap();
    let secret = signer.to_text();
    assert!(secret.starts_with("PRIVATE+KEY+vault.example/coffre+"));
    assert!(!format!("{signer:?}").contains(&secret[20..]));
    let again = NoteSigner::from_text(&secret).unwrap();
    assert_eq!(again.verifier(), signer.verifier());
    let vkey = NoteVerifier::from_text(&signer.verifier().to_text()).unwrap();

    let cp = Checkpoint { origin: "vault.example/coffre".into(), size: 42, root: [7; 32], extensions: vec![] };
    let note = cp.sign(&signer).unwrap();
    assert_eq!(Checkpoint::verify(&note, &vkey).unwrap(), cp);

    // A witness adds its cosignature: still verifies with the log key; the witness key verifies
    // its own line.
    let witness = NoteSigner::generate("witness.example").unwrap();
    let witnessed = format!("{note}{}", witness.sign(&cp.body()).unwrap().split("\n\n").nth(1).unwrap());
    assert_eq!(Checkpoint::verify(&witnessed, &vkey).unwrap(), cp);
    assert!(witness.verifier().verify(&witnessed).is_ok());

    // Signed by someone else only: refused.
    let other = NoteSigner::generate("vault.example/coffre").unwrap();
    assert!(matches!(Checkpoint::verify(&cp.sign(&other).unwrap(), &vkey), Err(NoteError::Unsigned(_))));
    // A log whose origin is not the pinned key's name: refused.
    let elsewhere = Checkpoint { origin: "elsewhere".into(), ..cp.clone() };
    assert!(Checkpoint::verify(&signer.sign(&elsewhere.body()).unwrap(), &vkey).is_err());
}

#[test]
fn malformed_notes_and_keys_are_refused() {
    let signer = NoteSigner::generate("log").unwrap();
    let good = Checkpoint { origin: "log".into(), size: 1, root: [1; 32], extensions: vec![] }.sign(&signer).unwrap();
    let key = signer.verifier();
    for bad in [
        good.replace("\n\n", "\n"),
        good.trim_end().to_owned(),
        good.replace('\u{2014}', "-"),
        format!("\n{good}"),
        good.replace("log\n1\n", "log\n\n1\n"),
    ] {
        assert!(key.verify(&bad).is_err(), "{bad:?}");
    }
    for body in ["log\n01\nAQ==\n", "log\n1\nAQ==\n", "log\n-1\n", "log\n18446744073709551616\nAA==\n", "log\n"] {
        assert!(Checkpoint::from_body(body).is_err(), "{body:?}");
    }
    for k in ["log", "log+0000000+AQ==", "a b+00000000+AQ==", "log+00000000+AQ=="] {
        assert!(NoteVerifier::from_text(k).is_err(), "{k}");
    }
    assert!(NoteSigner::generate("has space").is_err());
}

fn activated(at: u64) -> Entry {
    Entry::PolicyActivated {
        at,
        tenant: "example-bank".into(),
        policy: PolicyVersion { id: "bank-strict".into(), version: 3, digest: "sha384:00".into() },
        document: Digest::of(b"policy"),
        approvals: vec![Digest::of(b"a1"), Digest::of(b"a2")],
        approver_set: 1,
    }
}

#[test]
fn entries_are_canonical() {
    let e = activated(1_700_000_000);
    let bytes = e.to_bytes();
    assert!(bytes.starts_with(br#"{"schema":"coffre.policy_activated/v1","at":1700000000,"#));
    assert_eq!(Entry::from_bytes(&bytes).unwrap(), e);
    let text = String::from_utf8(bytes).unwrap();
    for other in [
        text.replace(",\"at\"", ", \"at\""),
        text.replace(
            "{\"schema\":\"coffre.policy_activated/v1\",\"at\":1700000000,",
            "{\"at\":1700000000,\"schema\":\"coffre.policy_activated/v1\",",
        ),
        format!("{text}\n"),
        text.replace("1700000000", "1.7e9"),
    ] {
        assert!(Entry::from_bytes(other.as_bytes()).is_err(), "{other}");
    }
    assert!(Entry::from_bytes(text.replace("\"approver_set\":1", "\"approver_set\":1,\"x\":2").as_bytes()).is_err());
}

#[test]
fn bundles_are_canonical_and_content_addressed() {
    let b = Bundle {
        format: FORMAT.into(),
        verified_at: 1,
        nonce: "00".repeat(32),
        ephemeral_key: Digest::of(b"k"),
        job_manifest: Digest::of(b"j"),
        mode: "development".into(),
        items: vec![Item { role: "cpu.snp.report".into(), gpu: None, digest: Digest::of(b"r") }],
        policies: vec![],
        decision: Decision { allowed: true, simulated: true, failed: vec![] },
        binding: None,
    };
    let bytes = b.to_bytes();
    assert_eq!(Bundle::from_bytes(&bytes).unwrap(), b);
    assert_eq!(b.digest(), Digest::of(&bytes));
    let other = Bundle { mode: "lenient".into(), ..b.clone() };
    assert!(Bundle::from_bytes(&other.to_bytes()).is_err());
    let mut spaced = bytes.clone();
    spaced.insert(1, b' ');
    assert!(Bundle::from_bytes(&spaced).is_err());
}

/// Red-team finding 7: `Bundle::gpu_count` computed `index + 1` and overflowed on a crafted
/// `gpu: 4294967295` (a panic in a debug build, zero GPUs in a release build, and a loop over four
/// billion GPUs for whoever used the count).
#[test]
fn attack_bundle_with_a_crafted_gpu_index_is_refused() {
    let item = |gpu| Item { role: "gpu.report".into(), gpu: Some(gpu), digest: Digest::of(b"g") };
    let b = Bundle {
        format: FORMAT.into(),
        verified_at: 1,
        nonce: "00".repeat(32),
        ephemeral_key: Digest::of(b"k"),
        job_manifest: Digest::of(b"j"),
        mode: "production".into(),
        items: vec![item(u32::MAX)],
        policies: vec![],
        decision: Decision { allowed: false, simulated: false, failed: vec![] },
        binding: None,
    };
    assert_eq!(b.gpu_count(), u32::MAX, "saturates instead of overflowing");
    let err = Bundle::from_bytes(&b.to_bytes()).unwrap_err();
    assert!(err.to_string().contains("names GPU 4294967295"), "{err}");
    let ok = Bundle { items: vec![item(7)], ..b };
    assert_eq!(Bundle::from_bytes(&ok.to_bytes()).unwrap().gpu_count(), 8);
}

#[test]
fn the_log_never_signs_two_roots_for_one_size() {
    let signer = NoteSigner::generate("log").unwrap();
    let mut log = Log::open(MemoryStore::new()).unwrap();
    log.append(&activated(1)).unwrap();
    let first = log.sign_checkpoint(&signer).unwrap();
    assert_eq!(log.sign_checkpoint(&signer).unwrap(), first, "same tree: same note");
    log.append(&activated(2)).unwrap();
    log.sign_checkpoint(&signer).unwrap();

    // The storage is rolled back and rewritten with other entries: both refusals.
    let mut store = MemoryStore::new();
    for size in log.store().checkpoint_sizes().unwrap() {
        store.put_checkpoint(size, &log.store().checkpoint(size).unwrap().unwrap()).unwrap();
    }
    let mut forked = Log::open(store).unwrap();
    forked.append(&activated(9)).unwrap();
    assert!(matches!(forked.sign_checkpoint(&signer), Err(LogError::Rollback { signed: 2, size: 1 })));
    forked.append(&activated(10)).unwrap();
    assert!(matches!(forked.sign_checkpoint(&signer), Err(LogError::Rewritten { size: 2 })));
}

/// Red-team finding (medium): `sign_checkpoint` never checked that the tree at the last signed
/// size still had the signed root, and `Log::open` trusted stored leaf hashes. Whoever could
/// write the entry store rewrote history (entries and leaf hashes alike), appended one entry, and
/// got the fork signed with the real key at the next size.
#[test]
fn attack_rewritten_store_gets_no_signature_at_the_next_size() {
    let signer = NoteSigner::generate("log").unwrap();
    let mut log = Log::open(MemoryStore::new()).unwrap();
    log.append(&activated(1)).unwrap();
    log.append(&activated(2)).unwrap();
    log.sign_checkpoint(&signer).unwrap();
    let mut store = log.store().clone();
    // Rewritten consistently: the entry and its leaf hash both changed.
    store.rewrite_entry(0, activated(99).to_bytes());
    let mut forked = Log::open(store).unwrap();
    forked.append(&activated(3)).unwrap();
    assert!(matches!(forked.sign_checkpoint(&signer), Err(LogError::Rewritten { size: 2 })));
    assert!(matches!(forked.check_signed_history(signer.verifier()), Err(LogError::Rewritten { size: 2 })));

    // Rewritten carelessly (the leaf hash left as it was): refused at open, with the index.
    let mut store = log.store().clone();
    store.tamper_entry(1, activated(77).to_bytes());
    assert!(matches!(Log::open(store), Err(LogError::LeafMismatch { index: 1 })));
}

#[test]
fn directory_store_survives_a_torn_append() {
    let dir = tempfile::tempdir().unwrap();
    let signer = NoteSigner::generate("log").unwrap();
    {
        let mut log = Log::open(DirStore::open(dir.path()).unwrap()).unwrap();
        for at in 0..5 {
            log.append(&activated(at)).unwrap();
        }
        log.sign_checkpoint(&signer).unwrap();
        let d = log.store_mut().put_blob(b"evidence").unwrap();
        assert_eq!(log.store().blob(&d).unwrap().unwrap(), b"evidence");
    }
    // A crash in the middle of the sixth append: half a line, no leaf hash.
    let path = dir.path().join("entries.jsonl");
    let mut bytes = std::fs::read(&path).unwrap();
    let whole = bytes.len();
    bytes.extend_from_slice(&activated(5).to_bytes()[..40]);
    std::fs::write(&path, &bytes).unwrap();
    // And a leaf hash file one hash short of the complete entries.
    let leaves = dir.path().join("leaves");
    let l = std::fs::read(&leaves).unwrap();
    std::fs::write(&leaves, &l[..l.len() - 32]).unwrap();

    let ro = DirStore::open_read_only(dir.path()).unwrap();
    assert_eq!(ro.len(), 5);
    assert_eq!(ro.stored_leaves().len(), 4);
    drop(ro);

    let mut log = Log::open(DirStore::open(dir.path()).unwrap()).unwrap();
    assert_eq!(log.size(), 5);
    assert_eq!(std::fs::read(&path).unwrap().len(), whole, "the torn line is gone");
    assert_eq!(std::fs::read(&leaves).unwrap(), l, "the missing hash is recomputed");
    assert_eq!(log.entry(4).unwrap(), activated(4));
    log.append(&activated(6)).unwrap();
    log.sign_checkpoint(&signer).unwrap();
    assert_eq!(log.store().checkpoint_sizes().unwrap(), vec![5, 6]);
    let cp = Checkpoint::verify(&log.store().latest_checkpoint().unwrap().unwrap(), signer.verifier()).unwrap();
    assert_eq!((cp.size, cp.root), (6, log.root()));
}
