//! SPDM 1.1 `GET_MEASUREMENTS` evidence as NVIDIA GPUs produce it: the request the verifier's
//! nonce went out in, followed by the signed response.
//!
//! ```text
//! request  (37 bytes)  0x11 0xE0 param1 param2 nonce[32] slot
//! response             0x11 0x60 param1 param2
//!                      number_of_blocks u8, record_length u24 LE, record (measurement blocks)
//!                      responder_nonce[32]
//!                      opaque_length u16 LE, opaque data (NVIDIA TLVs: type u16, length u16, value)
//!                      signature (96 bytes: ECDSA P-384 r ‖ s)
//! ```
//!
//! Every length is taken from the message itself and checked against what follows it; the
//! signature is where the parsed lengths put it, never "the last 96 bytes". Zero bytes after the
//! signature (some collection tools pad the buffer) are accepted and counted; any other trailing
//! byte is an error. The signature covers `request ‖ response` up to the signature (the SPDM 1.1
//! L1 transcript of a single exchange).

use std::collections::BTreeMap;

use serde::Serialize;

/// Length of the `GET_MEASUREMENTS` request with a nonce and slot id.
pub const REQUEST_LEN: usize = 37;
/// Length of the ECDSA P-384 signature.
pub const SIGNATURE_LEN: usize = 96;
const SPDM_1_1: u8 = 0x11;
const GET_MEASUREMENTS: u8 = 0xE0;
const MEASUREMENTS: u8 = 0x60;

/// Opaque-data field types NVIDIA GPUs put in the response.
pub mod field {
    /// Driver version (NUL-terminated text).
    pub const DRIVER_VERSION: u16 = 3;
    /// GPU information.
    pub const GPU_INFO: u16 = 4;
    /// VBIOS version (8 bytes).
    pub const VBIOS_VERSION: u16 = 6;
    /// NVDEC0 status (0xAA enabled, 0x55 disabled).
    pub const NVDEC0_STATUS: u16 = 11;
    /// Measurement counts (one u32 per measurement index).
    pub const MSRSCNT: u16 = 12;
    /// CPR information.
    pub const CPR_INFO: u16 = 13;
    /// Board id.
    pub const BOARD_ID: u16 = 14;
    /// Chip SKU.
    pub const CHIP_SKU: u16 = 15;
    /// Chip SKU modifier.
    pub const CHIP_SKU_MOD: u16 = 16;
    /// Project.
    pub const PROJECT: u16 = 17;
    /// Project SKU.
    pub const PROJECT_SKU: u16 = 18;
    /// Project SKU modifier.
    pub const PROJECT_SKU_MOD: u16 = 19;
    /// The firmware id (48 bytes) also found in the device certificate.
    pub const FWID: u16 = 20;
    /// Protected PCIe status (0xAA enabled, 0x55 disabled).
    pub const PROTECTED_PCIE_STATUS: u16 = 21;
    /// Opaque data format version.
    pub const OPAQUE_DATA_VERSION: u16 = 34;
    /// Feature flag (0 single-GPU passthrough, 1 multi-GPU passthrough, 2 protected PCIe).
    pub const FEATURE_FLAG: u16 = 36;
}

/// One measurement block (DMTF measurement specification).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MeasurementBlock {
    /// Measurement index (1-based).
    pub index: u8,
    /// DMTF measurement value type (bit 7: raw bit stream rather than a digest).
    pub value_type: u8,
    /// The value.
    pub value: Vec<u8>,
}

/// A status byte NVIDIA encodes as 0xAA / 0x55.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Switch {
    /// 0xAA.
    Enabled,
    /// 0x55.
    Disabled,
    /// Any other value (kept as it was).
    Unknown(u8),
}

impl Switch {
    fn from_byte(b: u8) -> Self {
        match b {
            0xAA => Switch::Enabled,
            0x55 => Switch::Disabled,
            other => Switch::Unknown(other),
        }
    }
}

/// The GPU's opaque data, decoded where the format is known.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OpaqueData {
    /// Driver version, e.g. `550.90.07`.
    pub driver_version: Option<String>,
    /// VBIOS version in NVIDIA's notation, e.g. `96.00.9F.00.01`.
    pub vbios_version: Option<String>,
    /// FWID (present from driver 550 on).
    pub fwid: Option<Vec<u8>>,
    /// NVDEC0 status.
    pub nvdec0_status: Option<Switch>,
    /// Protected PCIe status.
    pub protected_pcie_status: Option<Switch>,
    /// Feature flag.
    pub feature_flag: Option<u16>,
    /// Opaque data version.
    pub opaque_data_version: Option<u16>,
    /// Measurement counts by index (1-based).
    pub measurement_counts: Vec<u32>,
    /// Text fields (board id, SKUs, project…) by name.
    pub text: BTreeMap<&'static str, String>,
    /// Every field as it came: type → value.
    pub raw: BTreeMap<u16, Vec<u8>>,
}

/// A parsed `GET_MEASUREMENTS` exchange.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SpdmReport {
    /// The requester's nonce: what proves freshness.
    pub nonce: [u8; 32],
    /// The slot of the certificate chain the GPU signed with.
    pub slot: u8,
    /// Request param2 (0xFF: all measurements).
    pub requested: u8,
    /// Measurement blocks in order.
    pub blocks: Vec<MeasurementBlock>,
    /// The responder's nonce.
    pub responder_nonce: [u8; 32],
    /// Opaque data.
    pub opaque: OpaqueData,
    /// Number of bytes covered by the signature (request and response up to the signature).
    pub signed_len: usize,
    /// The signature, `r ‖ s`.
    pub signature: [u8; SIGNATURE_LEN],
    /// Zero bytes after the signature.
    pub trailing_zeros: usize,
}

struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize, what: &str) -> Result<&'a [u8], String> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.bytes.len()).ok_or_else(|| {
            format!("truncated: {what} needs {n} bytes at offset {}, {} remain", self.at, self.bytes.len() - self.at)
        })?;
        let out = &self.bytes[self.at..end];
        self.at = end;
        Ok(out)
    }

    fn u8(&mut self, what: &str) -> Result<u8, String> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &str) -> Result<u16, String> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u24(&mut self, what: &str) -> Result<usize, String> {
        let b = self.take(3, what)?;
        Ok(usize::from(b[0]) | usize::from(b[1]) << 8 | usize::from(b[2]) << 16)
    }
}

fn text(value: &[u8]) -> Result<String, String> {
    let end = value.iter().position(|&b| b == 0).unwrap_or(value.len());
    if value[end..].iter().any(|&b| b != 0) {
        return Err("text with bytes after its terminating NUL".into());
    }
    std::str::from_utf8(&value[..end])
        .ok()
        .filter(|t| t.chars().all(|c| c.is_ascii_graphic()))
        .map(str::to_owned)
        .ok_or_else(|| "text that is not printable ASCII".into())
}

/// NVIDIA's VBIOS notation: the first half of the field reversed, then the byte after it, each as
/// two upper-case hex digits joined by dots (`00 5e 00 96 01 00 00 00` → `96.00.5E.00.01`).
pub fn vbios_version(value: &[u8]) -> Result<String, String> {
    if value.len() != 8 {
        return Err(format!("a VBIOS version of {} bytes (8 expected)", value.len()));
    }
    let half = value.len() / 2;
    let mut parts: Vec<String> = value[..half].iter().rev().map(|b| format!("{b:02X}")).collect();
    parts.push(format!("{:02X}", value[half]));
    Ok(parts.join("."))
}

fn u16_field(value: &[u8]) -> Result<u16, String> {
    match value {
        [a, b] => Ok(u16::from_le_bytes([*a, *b])),
        _ => Err(format!("{} bytes where 2 were expected", value.len())),
    }
}

fn one_byte(value: &[u8]) -> Result<Switch, String> {
    match value {
        [b] => Ok(Switch::from_byte(*b)),
        _ => Err(format!("{} bytes where 1 was expected", value.len())),
    }
}

fn parse_opaque(bytes: &[u8]) -> Result<OpaqueData, String> {
    let mut r = Reader { bytes, at: 0 };
    let mut out = OpaqueData::default();
    while r.at < bytes.len() {
        let kind = r.u16("an opaque field type")?;
        let len = usize::from(r.u16("an opaque field length")?);
        let value = r.take(len, "an opaque field")?;
        if out.raw.insert(kind, value.to_vec()).is_some() {
            return Err(format!("opaque field {kind} appears twice"));
        }
        let named = |name: &'static str| -> Result<(&'static str, String), String> {
            Ok((name, text(value).map_err(|e| format!("opaque field {name}: {e}"))?))
        };
        let err = |name: &str, e: String| format!("opaque field {name}: {e}");
        match kind {
            field::DRIVER_VERSION => out.driver_version = Some(named("driver_version")?.1),
            field::VBIOS_VERSION => out.vbios_version = Some(vbios_version(value).map_err(|e| err("vbios", e))?),
            field::FWID => {
                if value.len() != 48 {
                    return Err(format!("opaque field fwid: {} bytes (48 expected)", value.len()));
                }
                out.fwid = Some(value.to_vec());
            }
            field::NVDEC0_STATUS => out.nvdec0_status = Some(one_byte(value).map_err(|e| err("nvdec0_status", e))?),
            field::PROTECTED_PCIE_STATUS => {
                out.protected_pcie_status = Some(one_byte(value).map_err(|e| err("protected_pcie_status", e))?);
            }
            field::FEATURE_FLAG => out.feature_flag = Some(u16_field(value).map_err(|e| err("feature_flag", e))?),
            field::OPAQUE_DATA_VERSION => {
                out.opaque_data_version = Some(u16_field(value).map_err(|e| err("opaque_data_version", e))?);
            }
            field::MSRSCNT => {
                if value.len() % 4 != 0 {
                    return Err(format!("opaque field msrscnt: {} bytes, not a multiple of 4", value.len()));
                }
                out.measurement_counts =
                    value.chunks_exact(4).map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]])).collect();
            }
            field::BOARD_ID | field::GPU_INFO | field::CPR_INFO => {
                let name = match kind {
                    field::BOARD_ID => "board_id",
                    field::GPU_INFO => "gpu_info",
                    _ => "cpr_info",
                };
                out.text.insert(name, hex::encode(value));
            }
            field::CHIP_SKU | field::CHIP_SKU_MOD | field::PROJECT | field::PROJECT_SKU | field::PROJECT_SKU_MOD => {
                let name = match kind {
                    field::CHIP_SKU => "chip_sku",
                    field::CHIP_SKU_MOD => "chip_sku_mod",
                    field::PROJECT => "project",
                    field::PROJECT_SKU => "project_sku",
                    _ => "project_sku_mod",
                };
                let (name, value) = named(name)?;
                out.text.insert(name, value);
            }
            _ => {} // kept in `raw`; unknown fields are reported, never interpreted
        }
    }
    Ok(out)
}

impl SpdmReport {
    /// Parses `request ‖ response` strictly.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let mut r = Reader { bytes, at: 0 };
        let head = r.take(4, "the request header")?;
        if head[0] != SPDM_1_1 || head[1] != GET_MEASUREMENTS {
            return Err(format!(
                "not an SPDM 1.1 GET_MEASUREMENTS request (version {:#04x}, code {:#04x})",
                head[0], head[1]
            ));
        }
        if head[2] & 1 == 0 {
            return Err("the request did not ask for a signature (param1 bit 0 clear)".into());
        }
        let requested = head[3];
        let mut nonce = [0u8; 32];
        nonce.copy_from_slice(r.take(32, "the request nonce")?);
        let slot = r.u8("the request slot id")?;
        if slot > 7 {
            return Err(format!("request slot id {slot} (SPDM has slots 0 to 7)"));
        }

        let head = r.take(4, "the response header")?;
        if head[0] != SPDM_1_1 || head[1] != MEASUREMENTS {
            return Err(format!(
                "not an SPDM 1.1 MEASUREMENTS response (version {:#04x}, code {:#04x})",
                head[0], head[1]
            ));
        }
        if head[3] & 0x0f != slot {
            return Err(format!("the response names slot {} but the request asked for slot {slot}", head[3] & 0x0f));
        }
        let count = usize::from(r.u8("the number of blocks")?);
        let record_len = r.u24("the measurement record length")?;
        let record = r.take(record_len, "the measurement record")?;
        let blocks = parse_record(record)?;
        if blocks.len() != count {
            return Err(format!("the response announces {count} measurement blocks but carries {}", blocks.len()));
        }
        let mut responder_nonce = [0u8; 32];
        responder_nonce.copy_from_slice(r.take(32, "the responder nonce")?);
        let opaque_len = usize::from(r.u16("the opaque data length")?);
        if opaque_len > 1024 {
            return Err(format!("opaque data of {opaque_len} bytes (SPDM allows at most 1024)"));
        }
        let opaque = parse_opaque(r.take(opaque_len, "the opaque data")?)?;
        let signed_len = r.at;
        let mut signature = [0u8; SIGNATURE_LEN];
        signature.copy_from_slice(r.take(SIGNATURE_LEN, "the signature")?);
        let rest = &bytes[r.at..];
        if let Some(pos) = rest.iter().position(|&b| b != 0) {
            return Err(format!(
                "{} bytes follow the signature, not all zero (first non-zero at offset {})",
                rest.len(),
                r.at + pos
            ));
        }
        Ok(Self {
            nonce,
            slot,
            requested,
            blocks,
            responder_nonce,
            opaque,
            signed_len,
            signature,
            trailing_zeros: rest.len(),
        })
    }

    /// The measurement with this (1-based) index.
    pub fn measurement(&self, index: u8) -> Option<&[u8]> {
        self.blocks.iter().find(|b| b.index == index).map(|b| b.value.as_slice())
    }
}

fn parse_record(record: &[u8]) -> Result<Vec<MeasurementBlock>, String> {
    let mut r = Reader { bytes: record, at: 0 };
    let mut blocks: Vec<MeasurementBlock> = Vec::new();
    while r.at < record.len() {
        let index = r.u8("a measurement index")?;
        let spec = r.u8("a measurement specification")?;
        let size = usize::from(r.u16("a measurement size")?);
        let body = r.take(size, "a measurement")?;
        if spec != 1 {
            return Err(format!("measurement {index}: specification {spec:#04x} (only DMTF, 0x01, is known)"));
        }
        let mut m = Reader { bytes: body, at: 0 };
        let value_type = m.u8("a DMTF value type")?;
        let value_len = usize::from(m.u16("a DMTF value size")?);
        let value = m.take(value_len, "a DMTF value")?;
        if m.at != body.len() {
            return Err(format!("measurement {index}: {} bytes after its value", body.len() - m.at));
        }
        if index == 0 || blocks.last().is_some_and(|b| b.index >= index) {
            return Err(format!("measurement index {index} is zero, repeated or out of order"));
        }
        blocks.push(MeasurementBlock { index, value_type, value: value.to_vec() });
    }
    Ok(blocks)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal well-formed exchange with one 48-byte block and the given opaque fields.
    pub(crate) fn exchange(opaque: &[(u16, &[u8])]) -> Vec<u8> {
        let mut b = vec![0x11, 0xE0, 0x01, 0xFF];
        b.extend([7u8; 32]);
        b.push(0);
        b.extend([0x11, 0x60, 0x00, 0x00, 1]);
        let mut block = vec![1u8, 1, 51, 0, 0x01, 48, 0];
        block.extend([9u8; 48]);
        b.extend(&(block.len() as u32).to_le_bytes()[..3]);
        b.extend(&block);
        b.extend([3u8; 32]);
        let mut op = Vec::new();
        for (t, v) in opaque {
            op.extend(t.to_le_bytes());
            op.extend((v.len() as u16).to_le_bytes());
            op.extend(*v);
        }
        b.extend((op.len() as u16).to_le_bytes());
        b.extend(op);
        b.extend([0x5a; 96]);
        b
    }

    #[test]
    fn parses_and_locates_the_signature_from_lengths() {
        let bytes = exchange(&[(3, b"550.90.07\0"), (6, &[0x00, 0x9f, 0x00, 0x96, 0x01, 0, 0, 0]), (11, &[0x55])]);
        let r = SpdmReport::parse(&bytes).unwrap();
        assert_eq!(r.nonce, [7; 32]);
        assert_eq!(r.blocks.len(), 1);
        assert_eq!(r.measurement(1), Some(&[9u8; 48][..]));
        assert_eq!(r.opaque.driver_version.as_deref(), Some("550.90.07"));
        assert_eq!(r.opaque.vbios_version.as_deref(), Some("96.00.9F.00.01"));
        assert_eq!(r.opaque.nvdec0_status, Some(Switch::Disabled));
        assert_eq!(r.signed_len, bytes.len() - 96);
        assert_eq!(r.trailing_zeros, 0);

        let mut padded = bytes.clone();
        padded.extend([0, 0]);
        assert_eq!(SpdmReport::parse(&padded).unwrap().trailing_zeros, 2);
        padded.push(1);
        assert!(SpdmReport::parse(&padded).unwrap_err().contains("not all zero"));
        for cut in [1, 96, 97, bytes.len() - 1] {
            assert!(SpdmReport::parse(&bytes[..bytes.len() - cut]).is_err(), "cut {cut}");
        }
    }

    #[test]
    fn rejects_malformed_structure() {
        let good = exchange(&[(3, b"1.0\0")]);
        let with = |at: usize, v: u8| {
            let mut b = good.clone();
            b[at] = v;
            SpdmReport::parse(&b).unwrap_err()
        };
        assert!(with(0, 0x10).contains("SPDM 1.1"));
        assert!(with(1, 0xE1).contains("GET_MEASUREMENTS"));
        assert!(with(2, 0x00).contains("signature"));
        assert!(with(36, 9).contains("slot"));
        assert!(with(38, 0x61).contains("MEASUREMENTS"));
        assert!(with(40, 1).contains("slot"));
        assert!(with(41, 2).contains("announces"));
        assert!(with(46, 2).contains("specification"));
        let dup = exchange(&[(3, b"1.0\0"), (3, b"1.0\0")]);
        assert!(SpdmReport::parse(&dup).unwrap_err().contains("twice"));
        let bad_text = exchange(&[(3, b"1.0\0x")]);
        assert!(SpdmReport::parse(&bad_text).unwrap_err().contains("after its terminating NUL"));
        let bad_fwid = exchange(&[(20, &[0; 47])]);
        assert!(SpdmReport::parse(&bad_fwid).unwrap_err().contains("fwid"));
    }

    #[test]
    fn vbios_notation() {
        assert_eq!(vbios_version(&[0x00, 0x74, 0x00, 0x96, 0x20, 0, 0, 0]).unwrap(), "96.00.74.00.20");
        assert!(vbios_version(&[0; 7]).is_err());
    }
}
