//! DCAP quote layout parsing and the quote's own signature checks on arbitrary bytes: nothing
//! panics, and nothing arbitrary verifies (without collateral nothing ever does; the signature
//! checks must still run to the end on any input).
#![no_main]

use coffre_attestation::UnixTime;
use coffre_attestation::tdx::{TdxCollateral, TdxVerifier, quote};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let bytes = quote::from_bytes(data);
    if let Ok((layout, _)) = quote::parse(&bytes) {
        let _ = layout.signature_parts(&bytes);
        let _ = layout.signed(&bytes);
    }
    let v = TdxVerifier::new().verify_without_collateral(&bytes, UnixTime(1_750_000_000));
    assert!(!v.is_verified());
    let _ = TdxCollateral::from_dcap_json(data);
});
