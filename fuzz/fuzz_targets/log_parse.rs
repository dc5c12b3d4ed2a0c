//! Checkpoints, signed notes, proofs, entries and evidence bundles as an auditor reads them from
//! an untrusted export: never panic; whatever parses re-encodes to the same bytes; no proof
//! verifies against a root it was not made for.
#![no_main]

use coffre_log::bundle::Bundle;
use coffre_log::proof::Proof;
use coffre_log::{Checkpoint, Entry, NoteVerifier};
use libfuzzer_sys::fuzz_target;

/// The Go checksum database's key: a real Ed25519 note key the parser must handle.
const KEY: &str = "sum.golang.org+033de0ae+Ac4zctda0e5eza+HJyk9SxEdh+s3Ux18htTTAD8OuAn8";

fuzz_target!(|data: &[u8]| {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(cp) = Checkpoint::from_body(text) {
            assert_eq!(cp.body(), text, "a checkpoint body re-encodes to itself");
        }
        if let Ok(key) = NoteVerifier::from_text(KEY) {
            let _ = key.verify(text);
            let _ = Checkpoint::verify(text, &key);
        }
        let _ = NoteVerifier::from_text(text);
        let _ = coffre_log::NoteSigner::from_text(text);
    }
    if let Ok(proof) = Proof::from_json(data) {
        let back = Proof::from_json(proof.to_json().as_bytes());
        assert_eq!(back.as_ref().ok(), Some(&proof));
        let _ = proof.verify_inclusion(&[0; 32], &[1; 32]);
        let _ = proof.verify_consistency(&[0; 32], &[1; 32]);
    }
    if let Ok(entry) = Entry::from_bytes(data) {
        assert_eq!(entry.to_bytes(), data);
        assert!(!data.contains(&b'\n'), "a canonical entry has no newline");
    }
    if let Ok(bundle) = Bundle::from_bytes(data) {
        assert_eq!(bundle.to_bytes(), data);
    }
});
