//! NVIDIA SPDM evidence: the report parser, the report-file reader (raw, hex, JSON evidence
//! lists) and the whole GPU verifier on arbitrary bytes: nothing panics, nothing arbitrary
//! verifies.
#![no_main]

use std::sync::OnceLock;

use coffre_attestation::UnixTime;
use coffre_attestation::nvidia::input::{ReportFile, read_report_file};
use coffre_attestation::nvidia::spdm::SpdmReport;
use coffre_attestation::nvidia::{GpuEvidence, NvidiaVerifier};
use libfuzzer_sys::fuzz_target;

fn verifier() -> &'static NvidiaVerifier {
    static V: OnceLock<NvidiaVerifier> = OnceLock::new();
    V.get_or_init(NvidiaVerifier::new)
}

fuzz_target!(|data: &[u8]| {
    let _ = SpdmReport::parse(data);
    let evidence = match read_report_file(data) {
        Ok(ReportFile::List(list)) => list,
        // The first bytes as the report, the rest as a DER chain.
        _ => {
            let split = data.len().min(4200);
            let chain = if split < data.len() { vec![data[split..].to_vec()] } else { Vec::new() };
            vec![GpuEvidence { report: data[..split].to_vec(), chain, stated_arch: None }]
        }
    };
    for ev in &evidence {
        assert!(!verifier().verify(ev, Some(&[0; 32]), &[data], UnixTime(1_750_000_000)).is_verified());
    }
});
