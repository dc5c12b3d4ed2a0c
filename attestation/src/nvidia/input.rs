//! What a GPU verifier is given: the SPDM exchange and the device certificate chain, alone or as
//! NVIDIA's JSON evidence list `[{"arch", "nonce", "evidence": base64, "certificate": base64 PEM}]`.

use base64::Engine as _;

use crate::encoding::{hex_text, trim_start};
use crate::x509::certificates_from_pem_or_der;

/// One GPU's evidence, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GpuEvidence {
    /// SPDM `GET_MEASUREMENTS` request ‖ response.
    pub report: Vec<u8>,
    /// The device certificate chain (DER), leaf first, as the GPU returned it.
    pub chain: Vec<Vec<u8>>,
    /// The architecture the submitter states (`arch` of the JSON list): checked against the
    /// certificate chain, never believed.
    pub stated_arch: Option<String>,
}

/// A report file: one exchange (whose chain comes separately) or an evidence list.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ReportFile {
    /// One SPDM exchange, raw or from hex text.
    Single(Vec<u8>),
    /// NVIDIA's JSON evidence list: one entry per GPU, each with its chain.
    List(Vec<GpuEvidence>),
}

fn b64(value: Option<&serde_json::Value>, what: &str, entry: usize) -> Result<Vec<u8>, String> {
    let text = value.and_then(|v| v.as_str()).ok_or_else(|| format!("entry {entry}: no \"{what}\" string"))?;
    base64::engine::general_purpose::STANDARD
        .decode(text.trim())
        .map_err(|_| format!("entry {entry}: \"{what}\" is not base64"))
}

impl GpuEvidence {
    /// Evidence from an exchange and a chain given as PEM or DER.
    pub fn new(report: Vec<u8>, chain_pem_or_der: &[u8]) -> Result<Self, String> {
        Ok(Self { report, chain: certificates_from_pem_or_der(chain_pem_or_der)?, stated_arch: None })
    }

    /// Parses NVIDIA's JSON evidence list.
    pub fn list_from_json(bytes: &[u8]) -> Result<Vec<Self>, String> {
        let doc: serde_json::Value =
            serde_json::from_slice(bytes).map_err(|e| format!("not a JSON evidence list: {e}"))?;
        let items = doc.as_array().ok_or("the JSON evidence is not a list")?;
        if items.is_empty() {
            return Err("the JSON evidence list is empty".into());
        }
        items
            .iter()
            .enumerate()
            .map(|(i, item)| {
                let report = b64(item.get("evidence"), "evidence", i)?;
                let chain_text = b64(item.get("certificate"), "certificate", i)?;
                let chain = certificates_from_pem_or_der(&chain_text).map_err(|e| format!("entry {i}: {e}"))?;
                let stated_arch = item.get("arch").and_then(|a| a.as_str()).map(str::to_owned);
                Ok(Self { report, chain, stated_arch })
            })
            .collect()
    }
}

/// Reads a report file: the JSON evidence list, hex text, or raw bytes.
pub fn read_report_file(bytes: &[u8]) -> Result<ReportFile, String> {
    let trimmed = trim_start(bytes);
    if trimmed.starts_with(b"[") {
        return GpuEvidence::list_from_json(trimmed).map(ReportFile::List);
    }
    if bytes.starts_with(&[0x11, 0xE0]) {
        return Ok(ReportFile::Single(bytes.to_vec()));
    }
    hex_text(bytes)
        .map(ReportFile::Single)
        .ok_or_else(|| "neither an SPDM exchange (raw or hex text) nor a JSON evidence list".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        assert_eq!(read_report_file(b"11e0 01ff\n").unwrap(), ReportFile::Single(vec![0x11, 0xe0, 0x01, 0xff]));
        assert_eq!(read_report_file(&[0x11, 0xe0, 0x00]).unwrap(), ReportFile::Single(vec![0x11, 0xe0, 0]));
        assert!(read_report_file(b"hello").is_err());
        assert!(read_report_file(b"[]").unwrap_err().contains("empty"));
        assert!(read_report_file(br#"[{"evidence": "!!"}]"#).unwrap_err().contains("not base64"));
        assert!(read_report_file(br#"[{"evidence": "EeA=", "certificate": "aGk="}]"#).is_err());
    }
}
