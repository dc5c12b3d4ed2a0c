//! SEV-SNP report and certificate parsing, and the whole verifier, on arbitrary bytes: nothing
//! panics, and nothing arbitrary verifies.
#![no_main]

use std::sync::OnceLock;

use coffre_attestation::UnixTime;
use coffre_attestation::snp::input::ReportForm;
use coffre_attestation::snp::{Report, SnpEvidence, SnpVerifier, vek};
use coffre_attestation::x509::{Certificate, Crl, certificates_from_pem_or_der, public_key_from_spki};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static SnpVerifier {
    static V: OnceLock<SnpVerifier> = OnceLock::new();
    V.get_or_init(SnpVerifier::new)
}

fuzz_target!(|data: &[u8]| {
    let _ = Report::parse(data);
    let _ = SnpEvidence::from_report_bytes(data);
    if let Ok(cert) = Certificate::from_der(data) {
        let _ = vek::parse(&cert);
        let _ = cert.verify_signed_by(&cert);
    }
    let _ = Crl::from_der(data);
    let _ = certificates_from_pem_or_der(data);
    let _ = public_key_from_spki(data);
    // As a report and as its own endorsement key: must never verify.
    let split = data.len().min(1184);
    let ev = SnpEvidence {
        report: data[..split].to_vec(),
        vek: Some(data[split..].to_vec()),
        chain: Vec::new(),
        crl: None,
        hcl: None,
        form: ReportForm::Raw,
    };
    assert!(!verifier().verify(&ev, UnixTime(1_750_000_000)).is_verified());
});
