//! The AMD extensions of VCEK and VLEK certificates (AMD 57230, "VCEK Certificate and KDS
//! Interface Specification"): product name, the TCB the key was derived for, the chip's hwID
//! (VCEK) or the cloud provider's id (VLEK).

use crate::snp::{Product, Tcb};
use crate::x509::Certificate;

const OID_PRODUCT_NAME: &str = "1.3.6.1.4.1.3704.1.2";
const OID_BL_SPL: &str = "1.3.6.1.4.1.3704.1.3.1";
const OID_TEE_SPL: &str = "1.3.6.1.4.1.3704.1.3.2";
const OID_SNP_SPL: &str = "1.3.6.1.4.1.3704.1.3.3";
const OID_UCODE_SPL: &str = "1.3.6.1.4.1.3704.1.3.8";
const OID_FMC_SPL: &str = "1.3.6.1.4.1.3704.1.3.9";
const OID_HWID: &str = "1.3.6.1.4.1.3704.1.4";
const OID_CSP_ID: &str = "1.3.6.1.4.1.3704.1.5";

/// Whether a leaf is a VCEK or a VLEK.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VekKind {
    /// Chip key (ARK → ASK → VCEK).
    Vcek,
    /// Loaded key (ARK → ASVK → VLEK).
    Vlek,
}

impl VekKind {
    /// `vcek` or `vlek`, as check names use it.
    pub fn name(self) -> &'static str {
        match self {
            VekKind::Vcek => "vcek",
            VekKind::Vlek => "vlek",
        }
    }

    /// The intermediate's role name: `ask` or `asvk`.
    pub fn intermediate(self) -> &'static str {
        match self {
            VekKind::Vcek => "ask",
            VekKind::Vlek => "asvk",
        }
    }
}

/// The decoded AMD extensions of a VCEK or VLEK.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VekExtensions {
    /// VCEK or VLEK (from the subject and the CSP id extension).
    pub kind: VekKind,
    /// `productName`, e.g. `Milan-B0`.
    pub product_name: Option<String>,
    /// The TCB the key was derived for (`fmc` only when the certificate has `fmcSPL`).
    pub tcb: Option<Tcb>,
    /// hwID: 64 bytes (Milan, Genoa) or 8 (Turin); VCEK only.
    pub hwid: Option<Vec<u8>>,
    /// The cloud provider's id; VLEK only.
    pub csp_id: Option<String>,
    /// Problems decoding the extensions.
    pub issues: Vec<String>,
}

impl VekExtensions {
    /// The product named by `productName`.
    pub fn product(&self) -> Option<Product> {
        self.product_name.as_deref().and_then(Product::from_cert_name)
    }
}

/// DER INTEGER holding 0..=255.
fn spl(value: &[u8]) -> Result<u8, String> {
    match value {
        [0x02, 0x01, v] if *v < 0x80 => Ok(*v),
        [0x02, 0x02, 0x00, v] if *v >= 0x80 => Ok(*v),
        _ => Err(format!("not a DER INTEGER in 0..=255: {}", hex::encode(value))),
    }
}

/// A DER IA5String, UTF8String or PrintableString.
fn string(value: &[u8]) -> Result<String, String> {
    match value {
        [tag, len, rest @ ..]
            if matches!(tag, 0x16 | 0x0c | 0x13) && usize::from(*len) == rest.len() && *len < 0x80 =>
        {
            String::from_utf8(rest.to_vec()).map_err(|_| "string is not UTF-8".to_owned())
        }
        _ => Err(format!("not a short DER string: {}", hex::encode(value))),
    }
}

/// hwID: the raw bytes (the legacy form) or a DER OCTET STRING around them (the current form).
fn hwid(value: &[u8]) -> Result<Vec<u8>, String> {
    match value {
        [0x04, len, rest @ ..] if usize::from(*len) == rest.len() && matches!(rest.len(), 8 | 64) => Ok(rest.to_vec()),
        raw if matches!(raw.len(), 8 | 64) => Ok(raw.to_vec()),
        _ => Err(format!("hwID has an unexpected form ({} bytes)", value.len())),
    }
}

/// Decodes the AMD extensions of `cert`.
pub fn parse(cert: &Certificate) -> VekExtensions {
    let mut issues = Vec::new();
    let mut get = |oid: &str, what: &str| match cert.extension(oid) {
        Ok(v) => v.map(<[u8]>::to_vec),
        Err(e) => {
            issues.push(format!("{what}: {e}"));
            None
        }
    };
    let product_raw = get(OID_PRODUCT_NAME, "productName");
    let bl = get(OID_BL_SPL, "blSPL");
    let tee = get(OID_TEE_SPL, "teeSPL");
    let snp = get(OID_SNP_SPL, "snpSPL");
    let ucode = get(OID_UCODE_SPL, "ucodeSPL");
    let fmc = get(OID_FMC_SPL, "fmcSPL");
    let hwid_raw = get(OID_HWID, "hwID");
    let csp_raw = get(OID_CSP_ID, "cspID");
    let mut decode = |what: &str, v: Option<Vec<u8>>| -> Option<u8> {
        let v = v?;
        spl(&v).map_err(|e| issues.push(format!("{what}: {e}"))).ok()
    };
    let (bl, tee, snp, ucode, fmc) = (
        decode("blSPL", bl),
        decode("teeSPL", tee),
        decode("snpSPL", snp),
        decode("ucodeSPL", ucode),
        decode("fmcSPL", fmc),
    );
    let tcb = match (bl, tee, snp, ucode) {
        (Some(bootloader), Some(tee), Some(snp), Some(microcode)) => Some(Tcb { bootloader, tee, snp, microcode, fmc }),
        _ => {
            issues.push("the certificate lacks one of blSPL, teeSPL, snpSPL, ucodeSPL".into());
            None
        }
    };
    let product_name = product_raw.and_then(|v| string(&v).map_err(|e| issues.push(format!("productName: {e}"))).ok());
    let hwid = hwid_raw.and_then(|v| hwid(&v).map_err(|e| issues.push(e)).ok());
    // AMD writes the provider as "CN=<id>"; the claim is the id.
    let csp_id = csp_raw
        .and_then(|v| string(&v).map_err(|e| issues.push(format!("cspID: {e}"))).ok())
        .map(|s| s.strip_prefix("CN=").map(str::to_owned).unwrap_or(s));
    let kind = if csp_id.is_some() || cert.subject_cn.contains("VLEK") { VekKind::Vlek } else { VekKind::Vcek };
    VekExtensions { kind, product_name, tcb, hwid, csp_id, issues }
}

/// AMD KDS URL where the VCEK for this chip and TCB can be fetched (shown in hints).
pub fn kds_vcek_url(product: Product, chip_id: &[u8; 64], tcb: &Tcb) -> String {
    let hwid = if product.has_fmc() { hex::encode(&chip_id[..8]) } else { hex::encode(chip_id) };
    let fmc = tcb.fmc.map(|f| format!("fmcSPL={f}&")).unwrap_or_default();
    format!(
        "https://kdsintf.amd.com/vcek/v1/{}/{hwid}?{fmc}blSPL={}&teeSPL={}&snpSPL={}&ucodeSPL={}",
        product.name(),
        tcb.bootloader,
        tcb.tee,
        tcb.snp,
        tcb.microcode
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extension_value_decoders() {
        assert_eq!(spl(&[0x02, 0x01, 0x73]), Ok(115));
        assert_eq!(spl(&[0x02, 0x02, 0x00, 0xdb]), Ok(219));
        assert!(spl(&[0x02, 0x02, 0x00, 0x05]).is_err(), "non-minimal");
        assert!(spl(&[0x02, 0x02, 0x01, 0x00]).is_err(), "above 255");
        assert!(spl(&[0x02, 0x01, 0x80]).is_err(), "negative");
        assert_eq!(string(&[0x16, 0x05, b'M', b'i', b'l', b'a', b'n']).as_deref(), Ok("Milan"));
        assert!(string(&[0x16, 0x09, b'M']).is_err());
        assert_eq!(hwid(&[0xaa; 64]).map(|h| h.len()), Ok(64));
        let mut wrapped = vec![0x04, 0x40];
        wrapped.extend([0xbb; 64]);
        assert_eq!(hwid(&wrapped), Ok(vec![0xbb; 64]));
        let mut turin = vec![0x04, 0x08];
        turin.extend([0xcc; 8]);
        assert_eq!(hwid(&turin), Ok(vec![0xcc; 8]));
        assert!(hwid(&[0u8; 32]).is_err());
    }

    #[test]
    fn kds_urls() {
        let tcb = Tcb { bootloader: 3, tee: 0, snp: 8, microcode: 115, fmc: None };
        let url = kds_vcek_url(Product::Milan, &[0xab; 64], &tcb);
        assert!(url.starts_with("https://kdsintf.amd.com/vcek/v1/Milan/abab"));
        assert!(url.ends_with("?blSPL=3&teeSPL=0&snpSPL=8&ucodeSPL=115"));
        let turin = kds_vcek_url(Product::Turin, &[0xcd; 64], &Tcb { fmc: Some(1), ..tcb });
        assert!(turin.contains("/Turin/cdcdcdcdcdcdcdcd?fmcSPL=1&"), "{turin}");
    }
}
