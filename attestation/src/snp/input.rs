//! What a verifier is given: the report in one of the forms it comes in, the endorsement key
//! certificate, optional host-supplied intermediates and an optional CRL.

use base64::Engine as _;

use crate::encoding::{hex_text, trim_start};
use crate::snp::azure::{self, HclReport};
use crate::snp::report::REPORT_LEN;
use crate::x509::certificates_from_pem_or_der;

/// How the report was given.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ReportForm {
    /// The 1184 raw bytes.
    Raw,
    /// Hex text of the raw bytes.
    Hex,
    /// An Azure HCL report.
    AzureHcl,
    /// Trustee's `az-snp-vtpm` JSON evidence (HCL report and VCEK).
    AzureJson,
}

/// SEV-SNP evidence: everything the verifier looks at, as bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnpEvidence {
    /// The 1184-byte report.
    pub report: Vec<u8>,
    /// The VCEK or VLEK certificate (DER), if available.
    pub vek: Option<Vec<u8>>,
    /// Host-supplied intermediates (ASK or ASVK, and optionally the ARK), DER. When empty the
    /// pinned intermediates are used.
    pub chain: Vec<Vec<u8>>,
    /// An AMD CRL (DER), checked when present.
    pub crl: Option<Vec<u8>>,
    /// The Azure HCL report the SNP report came in, whose runtime data REPORT_DATA must bind.
    pub hcl: Option<HclReport>,
    /// How the report was given.
    pub form: ReportForm,
}

fn bytes_field(value: &serde_json::Value) -> Result<Vec<u8>, String> {
    match value {
        serde_json::Value::Array(items) => items
            .iter()
            .map(|v| v.as_u64().and_then(|n| u8::try_from(n).ok()).ok_or("a byte array holds a non-byte"))
            .collect::<Result<Vec<u8>, _>>()
            .map_err(str::to_owned),
        serde_json::Value::String(s) if s.contains("-----BEGIN") => Ok(s.as_bytes().to_vec()),
        serde_json::Value::String(s) => base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(s.trim_end_matches('='))
            .or_else(|_| base64::engine::general_purpose::STANDARD.decode(s))
            .map_err(|_| "a string field is neither base64 nor PEM".to_owned()),
        _ => Err("expected a byte array or a base64 string".into()),
    }
}

impl SnpEvidence {
    /// Reads a report given as raw bytes, hex text, an Azure HCL report, or Trustee's
    /// `az-snp-vtpm` JSON evidence (which also carries the VCEK).
    pub fn from_report_bytes(bytes: &[u8]) -> Result<Self, String> {
        let trimmed = trim_start(bytes);
        if trimmed.starts_with(b"{") {
            return Self::from_azure_json(trimmed);
        }
        if azure::looks_like_hcl(bytes) {
            return Self::from_hcl(bytes, ReportForm::AzureHcl);
        }
        if bytes.len() == REPORT_LEN {
            return Ok(Self::raw(bytes.to_vec(), ReportForm::Raw));
        }
        if let Some(decoded) = hex_text(bytes) {
            if azure::looks_like_hcl(&decoded) {
                return Self::from_hcl(&decoded, ReportForm::AzureHcl);
            }
            return Ok(Self::raw(decoded, ReportForm::Hex));
        }
        Ok(Self::raw(bytes.to_vec(), ReportForm::Raw))
    }

    fn raw(report: Vec<u8>, form: ReportForm) -> Self {
        Self { report, vek: None, chain: Vec::new(), crl: None, hcl: None, form }
    }

    fn from_hcl(bytes: &[u8], form: ReportForm) -> Result<Self, String> {
        let hcl = azure::parse(bytes)?;
        Ok(Self { report: hcl.snp_report.clone(), hcl: Some(hcl), ..Self::raw(Vec::new(), form) })
    }

    fn from_azure_json(text: &[u8]) -> Result<Self, String> {
        let doc: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| format!("not valid JSON evidence: {e}"))?;
        let report = doc.get("hcl_report").or_else(|| doc.get("report")).ok_or("JSON evidence has no report")?;
        let mut evidence = Self::from_hcl(&bytes_field(report)?, ReportForm::AzureJson)?;
        if let Some(vek) = doc.get("vcek") {
            let certs = certificates_from_pem_or_der(&bytes_field(vek)?)?;
            evidence.vek = certs.into_iter().next();
        }
        Ok(evidence)
    }

    /// Sets the endorsement key certificate from PEM or DER (the first certificate; any further
    /// certificates in a PEM bundle are taken as the host's chain).
    pub fn with_vek(mut self, pem_or_der: &[u8]) -> Result<Self, String> {
        let mut certs = certificates_from_pem_or_der(pem_or_der)?.into_iter();
        self.vek = certs.next();
        self.chain.extend(certs);
        Ok(self)
    }

    /// Adds host-supplied chain certificates from PEM or DER.
    pub fn with_chain(mut self, pem_or_der: &[u8]) -> Result<Self, String> {
        self.chain.extend(certificates_from_pem_or_der(pem_or_der)?);
        Ok(self)
    }

    /// Sets the CRL (DER, or PEM `X509 CRL`).
    pub fn with_crl(mut self, bytes: &[u8]) -> Result<Self, String> {
        let der = if bytes.starts_with(b"-----") {
            let pem = x509_parser::pem::Pem::iter_from_buffer(bytes)
                .next()
                .ok_or("no PEM block in the CRL file")?
                .map_err(|e| format!("bad PEM CRL: {e}"))?;
            pem.contents
        } else {
            bytes.to_vec()
        };
        self.crl = Some(der);
        Ok(self)
    }
}
