//! Evidence in the forms Confidential Containers' guest components hand it out (the attestation
//! agent's `/aa/evidence` and `/aa/additional-evidence`, which Trustee's KBS protocol carries
//! too), turned back into the raw bytes the verifiers take.
//!
//! - SEV-SNP: `{"attestation_report": …, "cert_chain": [{"cert_type": "VCEK", "data": [..]}]}`,
//!   the report as the `sev` crate's serde form (numbers for the bit-field words, byte arrays
//!   as arrays of numbers). The 1,184-byte report is rebuilt field by field at the offsets of
//!   the SNP ABI; reserved bytes are zero, as the firmware writes them. Nothing is trusted from
//!   the JSON: the rebuilt bytes go through the same signature check as any report, so a field
//!   the JSON got wrong makes the signature fail, never a different claim pass.
//! - TDX: `{"cc_eventlog": base64 | null, "quote": base64}`.
//! - NVIDIA: `{"device_evidence_list": [{"arch", "uuid", "evidence": base64, "certificate":
//!   base64 of the PEM chain, leaf first}]}`, possibly under a `"nvidia"` key and possibly as a
//!   JSON string holding that document.
//!
//! Unknown members are refused where the layout is ours to check (the report's fields), so a
//! later `sev` release that adds a field is noticed rather than dropped.

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value};

use crate::collect::{CertKind, CertTableEntry, CollectedEvidence};
use crate::nvidia::GpuEvidence;

/// The length of an SNP attestation report.
pub const SNP_REPORT_LEN: usize = 0x4A0;

fn obj<'a>(v: &'a Value, what: &str) -> Result<&'a Map<String, Value>, String> {
    v.as_object().ok_or_else(|| format!("{what}: expected an object"))
}

fn num(m: &Map<String, Value>, key: &str, max: u64) -> Result<u64, String> {
    let n = m.get(key).and_then(Value::as_u64).ok_or_else(|| format!("{key}: expected a number"))?;
    if n > max {
        return Err(format!("{key}: {n} is out of range"));
    }
    Ok(n)
}

fn opt_num(m: &Map<String, Value>, key: &str, max: u64) -> Result<Option<u64>, String> {
    match m.get(key) {
        None | Some(Value::Null) => Ok(None),
        Some(_) => num(m, key, max).map(Some),
    }
}

fn bytes_into(m: &Map<String, Value>, key: &str, out: &mut [u8]) -> Result<(), String> {
    let arr = m.get(key).and_then(Value::as_array).ok_or_else(|| format!("{key}: expected an array of bytes"))?;
    if arr.len() != out.len() {
        return Err(format!("{key}: {} bytes, expected {}", arr.len(), out.len()));
    }
    for (o, v) in out.iter_mut().zip(arr) {
        *o = v.as_u64().filter(|b| *b <= 0xFF).ok_or_else(|| format!("{key}: not a byte array"))? as u8;
    }
    Ok(())
}

fn tcb(m: &Map<String, Value>, key: &str) -> Result<[u8; 8], String> {
    let t = obj(m.get(key).ok_or_else(|| format!("{key}: missing"))?, key)?;
    for k in t.keys() {
        if !["fmc", "bootloader", "tee", "snp", "microcode"].contains(&k.as_str()) {
            return Err(format!("{key}: unknown member {k:?}"));
        }
    }
    let b = |k: &str| num(t, k, 0xFF).map(|n| n as u8);
    let mut out = [0u8; 8];
    // Turin and later put FMC first and SNP in byte 3; earlier products have no FMC byte.
    match opt_num(t, "fmc", 0xFF)? {
        Some(fmc) => {
            out[0] = fmc as u8;
            out[1] = b("bootloader")?;
            out[2] = b("tee")?;
            out[3] = b("snp")?;
        }
        None => {
            out[0] = b("bootloader")?;
            out[1] = b("tee")?;
            out[6] = b("snp")?;
        }
    }
    out[7] = b("microcode")?;
    Ok(out)
}

const REPORT_FIELDS: &[&str] = &[
    "version",
    "guest_svn",
    "policy",
    "family_id",
    "image_id",
    "vmpl",
    "sig_algo",
    "current_tcb",
    "plat_info",
    "key_info",
    "report_data",
    "measurement",
    "host_data",
    "id_key_digest",
    "author_key_digest",
    "report_id",
    "report_id_ma",
    "reported_tcb",
    "cpuid_fam_id",
    "cpuid_mod_id",
    "cpuid_step",
    "chip_id",
    "committed_tcb",
    "current",
    "committed",
    "launch_tcb",
    "launch_mit_vector",
    "current_mit_vector",
    "signature",
];

/// Rebuilds the raw SNP report from the `sev` crate's serde form of `AttestationReport`.
pub fn snp_report_from_sev_json(v: &Value) -> Result<Vec<u8>, String> {
    let m = obj(v, "attestation_report")?;
    if let Some(k) = m.keys().find(|k| !REPORT_FIELDS.contains(&k.as_str())) {
        return Err(format!("attestation_report: unknown member {k:?}"));
    }
    let mut r = vec![0u8; SNP_REPORT_LEN];
    let put = |r: &mut [u8], at: usize, bytes: &[u8]| r[at..at + bytes.len()].copy_from_slice(bytes);
    let u32_max = u64::from(u32::MAX);
    put(&mut r, 0x00, &(num(m, "version", u32_max)? as u32).to_le_bytes());
    put(&mut r, 0x04, &(num(m, "guest_svn", u32_max)? as u32).to_le_bytes());
    put(&mut r, 0x08, &num(m, "policy", u64::MAX)?.to_le_bytes());
    bytes_into(m, "family_id", &mut r[0x10..0x20])?;
    bytes_into(m, "image_id", &mut r[0x20..0x30])?;
    put(&mut r, 0x30, &(num(m, "vmpl", u32_max)? as u32).to_le_bytes());
    put(&mut r, 0x34, &(num(m, "sig_algo", u32_max)? as u32).to_le_bytes());
    put(&mut r, 0x38, &tcb(m, "current_tcb")?);
    put(&mut r, 0x40, &num(m, "plat_info", u64::MAX)?.to_le_bytes());
    put(&mut r, 0x48, &(num(m, "key_info", u32_max)? as u32).to_le_bytes());
    bytes_into(m, "report_data", &mut r[0x50..0x90])?;
    bytes_into(m, "measurement", &mut r[0x90..0xC0])?;
    bytes_into(m, "host_data", &mut r[0xC0..0xE0])?;
    bytes_into(m, "id_key_digest", &mut r[0xE0..0x110])?;
    bytes_into(m, "author_key_digest", &mut r[0x110..0x140])?;
    bytes_into(m, "report_id", &mut r[0x140..0x160])?;
    bytes_into(m, "report_id_ma", &mut r[0x160..0x180])?;
    put(&mut r, 0x180, &tcb(m, "reported_tcb")?);
    for (i, k) in ["cpuid_fam_id", "cpuid_mod_id", "cpuid_step"].into_iter().enumerate() {
        if let Some(n) = opt_num(m, k, 0xFF)? {
            r[0x188 + i] = n as u8;
        }
    }
    bytes_into(m, "chip_id", &mut r[0x1A0..0x1E0])?;
    put(&mut r, 0x1E0, &tcb(m, "committed_tcb")?);
    for (at, key) in [(0x1E8, "current"), (0x1EC, "committed")] {
        let ver = obj(m.get(key).ok_or_else(|| format!("{key}: missing"))?, key)?;
        r[at] = num(ver, "build", 0xFF)? as u8;
        r[at + 1] = num(ver, "minor", 0xFF)? as u8;
        r[at + 2] = num(ver, "major", 0xFF)? as u8;
    }
    put(&mut r, 0x1F0, &tcb(m, "launch_tcb")?);
    if let Some(n) = opt_num(m, "launch_mit_vector", u64::MAX)? {
        put(&mut r, 0x1F8, &n.to_le_bytes());
    }
    if let Some(n) = opt_num(m, "current_mit_vector", u64::MAX)? {
        put(&mut r, 0x200, &n.to_le_bytes());
    }
    let sig = obj(m.get("signature").ok_or("signature: missing")?, "signature")?;
    bytes_into(sig, "r", &mut r[0x2A0..0x2E8])?;
    bytes_into(sig, "s", &mut r[0x2E8..0x330])?;
    Ok(r)
}

/// SNP evidence as the attestation agent returns it (`SnpEvidence`): the report, and the host's
/// certificate table when it has one.
pub fn snp_from_aa(json: &[u8]) -> Result<CollectedEvidence, String> {
    let v: Value = serde_json::from_slice(json).map_err(|e| format!("SNP evidence: {e}"))?;
    let m = obj(&v, "SNP evidence")?;
    if let Some(k) = m.keys().find(|k| !["attestation_report", "cert_chain"].contains(&k.as_str())) {
        return Err(format!("SNP evidence: unknown member {k:?}"));
    }
    let report = snp_report_from_sev_json(m.get("attestation_report").ok_or("SNP evidence: no attestation_report")?)?;
    let mut certificates = Vec::new();
    if let Some(list) = m.get("cert_chain").filter(|c| !c.is_null()) {
        for e in list.as_array().ok_or("cert_chain: expected an array")? {
            let e = obj(e, "cert_chain entry")?;
            let kind = match e.get("cert_type") {
                Some(Value::String(s)) => match s.as_str() {
                    "VCEK" => CertKind::Vcek,
                    "VLEK" => CertKind::Vlek,
                    "ASK" => CertKind::Ask,
                    "ARK" => CertKind::Ark,
                    // The CRL and empty entries carry nothing a verifier takes from the guest.
                    _ => CertKind::Other,
                },
                _ => CertKind::Other,
            };
            let arr = e.get("data").and_then(Value::as_array).ok_or("cert_chain entry: no data")?;
            let der = arr
                .iter()
                .map(|b| b.as_u64().filter(|b| *b <= 0xFF).map(|b| b as u8))
                .collect::<Option<Vec<u8>>>()
                .ok_or("cert_chain entry: data is not a byte array")?;
            if kind != CertKind::Other {
                certificates.push(CertTableEntry { guid: [0; 16], kind, der });
            }
        }
    }
    Ok(CollectedEvidence { report, certificates, source: "coco" })
}

/// TDX evidence as the attestation agent returns it: the quote, and the CC event log if any.
pub fn tdx_from_aa(json: &[u8]) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    #[derive(serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    struct TdxEvidence {
        cc_eventlog: Option<String>,
        quote: String,
    }
    let e: TdxEvidence = serde_json::from_slice(json).map_err(|e| format!("TDX evidence: {e}"))?;
    let quote = STANDARD.decode(e.quote.trim()).map_err(|e| format!("TDX evidence: quote: {e}"))?;
    let log = e
        .cc_eventlog
        .map(|l| STANDARD.decode(l.trim()).map_err(|e| format!("TDX evidence: cc_eventlog: {e}")))
        .transpose()?;
    Ok((quote, log))
}

/// NVIDIA evidence from the attestation agent: `{"device_evidence_list": […]}`, also accepted
/// under a `"nvidia"` key (the additional-evidence map) and as a JSON string holding either. The
/// list's entries are NVIDIA's own evidence-list form ([`GpuEvidence::list_from_json`]).
pub fn nvidia_from_aa(json: &[u8]) -> Result<Vec<GpuEvidence>, String> {
    let mut v: Value = serde_json::from_slice(json).map_err(|e| format!("NVIDIA evidence: {e}"))?;
    // At most a string around a map around the document.
    for _ in 0..3 {
        v = match v {
            Value::String(s) => serde_json::from_str(&s).map_err(|e| format!("NVIDIA evidence: {e}"))?,
            Value::Object(mut m) if m.len() == 1 && m.contains_key("nvidia") => m.remove("nvidia").unwrap_or_default(),
            other => other,
        };
    }
    let m = obj(&v, "NVIDIA evidence")?;
    if let Some(k) = m.keys().find(|k| k.as_str() != "device_evidence_list") {
        return Err(format!("NVIDIA evidence: unknown member {k:?}"));
    }
    let list = m.get("device_evidence_list").ok_or("NVIDIA evidence: no device_evidence_list")?;
    GpuEvidence::list_from_json(list.to_string().as_bytes())
}
