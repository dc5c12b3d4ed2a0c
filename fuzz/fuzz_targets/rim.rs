//! The XML parser, Canonical XML 1.1 and RIM verification on arbitrary bytes: nothing panics, and
//! nothing verifies at a time when every real RIM signer has expired (the seeds are real, validly
//! signed RIMs, so the invariant cannot be "nothing verifies" at a time inside their validity).
#![no_main]

use std::sync::OnceLock;

use coffre_attestation::UnixTime;
use coffre_attestation::nvidia::rim;
use coffre_attestation::x509::Certificate;
use coffre_attestation::xml;
use libfuzzer_sys::fuzz_target;

fn root() -> &'static Option<Certificate> {
    static R: OnceLock<Option<Certificate>> = OnceLock::new();
    R.get_or_init(|| rim::pinned_root().ok())
}

fuzz_target!(|data: &[u8]| {
    if let Ok(doc) = xml::parse(data) {
        let _ = xml::canonicalize_document(&doc, None);
    }
    if let Some(root) = root() {
        // Signature, chain and content parsing, whatever the time.
        let outcome = rim::check(data, root);
        let _ = outcome.at(UnixTime(1_750_000_000));
        // 2100-01-01: after every NVIDIA RIM signer's validity.
        assert!(outcome.at(UnixTime(4_102_444_800)).1.is_none());
    }
});
