//! The Azure confidential-VM wrapper: an HCL report carries the SNP report at offset 0x20 and,
//! after it, the "runtime data" (a JSON document with the vTPM key) whose hash the SNP report's
//! REPORT_DATA must hold.
//!
//! ```text
//! 0x000  32  HCL header: "HCLA", version, size, request type, status, reserved
//! 0x020  1184  SNP ATTESTATION_REPORT
//! 0x4C0  20  IGVM request data: data size, version, report type (2 = SNP), hash type
//!            (1 = SHA-256, 2 = SHA-384, 3 = SHA-512), runtime data size
//! 0x4D4  n   runtime data
//! ```

use aws_lc_rs::digest;

use crate::snp::report::REPORT_LEN;

const HEADER_LEN: usize = 0x20;
const REQUEST_AT: usize = HEADER_LEN + REPORT_LEN;
const REQUEST_HEADER_LEN: usize = 20;

/// A parsed HCL report.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HclReport {
    /// The embedded SNP report.
    pub snp_report: Vec<u8>,
    /// The runtime data REPORT_DATA must bind.
    pub runtime_data: Vec<u8>,
    /// The hash type (1 SHA-256, 2 SHA-384, 3 SHA-512).
    pub hash_type: u32,
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

/// Whether `bytes` starts like an HCL report.
pub fn looks_like_hcl(bytes: &[u8]) -> bool {
    bytes.starts_with(b"HCLA")
}

/// Parses an HCL report (trailing padding after the runtime data is allowed).
pub fn parse(bytes: &[u8]) -> Result<HclReport, String> {
    if !looks_like_hcl(bytes) {
        return Err("not an HCL report (no \"HCLA\" signature)".into());
    }
    if bytes.len() < REQUEST_AT + REQUEST_HEADER_LEN {
        return Err(format!("HCL report of {} bytes is too short", bytes.len()));
    }
    let report_type = u32_at(bytes, REQUEST_AT + 8);
    if report_type != 2 {
        return Err(format!("HCL report type {report_type} is not SEV-SNP (2)"));
    }
    let data_size = u32_at(bytes, REQUEST_AT) as usize;
    let hash_type = u32_at(bytes, REQUEST_AT + 12);
    let runtime_len = u32_at(bytes, REQUEST_AT + 16) as usize;
    if data_size != REQUEST_HEADER_LEN + runtime_len {
        return Err(format!("HCL request data size {data_size} disagrees with runtime data size {runtime_len}"));
    }
    let start = REQUEST_AT + REQUEST_HEADER_LEN;
    let runtime = bytes.get(start..start + runtime_len).ok_or("HCL runtime data runs past the end")?;
    Ok(HclReport { snp_report: bytes[HEADER_LEN..REQUEST_AT].to_vec(), runtime_data: runtime.to_vec(), hash_type })
}

/// Checks that `report_data` holds the hash of the runtime data, zero-padded to 64 bytes.
pub fn check_binding(hcl: &HclReport, report_data: &[u8; 64]) -> Result<(), String> {
    let (alg, name) = match hcl.hash_type {
        1 => (&digest::SHA256, "SHA-256"),
        2 => (&digest::SHA384, "SHA-384"),
        3 => (&digest::SHA512, "SHA-512"),
        other => return Err(format!("HCL hash type {other} is unknown")),
    };
    let hash = digest::digest(alg, &hcl.runtime_data);
    let n = hash.as_ref().len();
    if report_data[..n] != *hash.as_ref() {
        return Err(format!(
            "REPORT_DATA[0..{n}] is {}, but the {name} of the runtime data is {}",
            hex::encode(&report_data[..n]),
            hex::encode(hash.as_ref())
        ));
    }
    if report_data[n..].iter().any(|&b| b != 0) {
        return Err(format!("REPORT_DATA[{n}..64] must be zero after the runtime-data hash"));
    }
    Ok(())
}
