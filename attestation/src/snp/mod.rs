//! AMD SEV-SNP: reports, endorsement-key certificates, pinned roots, verification, claims.

pub mod azure;
pub mod claims;
pub mod input;
pub mod report;
pub mod roots;
pub mod vek;
pub mod verify;

use serde::Serialize;

pub use claims::{Cpuid, FirmwareVersion, GuestPolicy, PlatformInfo, SnpClaims};
pub use input::SnpEvidence;
pub use report::{Report, SigningKey};
pub use verify::{SnpVerification, SnpVerifier, VerifiedSnp};

/// AMD EPYC generations with SEV-SNP.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Product {
    /// 3rd generation (Zen 3), family 19h models 00h–0Fh.
    Milan,
    /// 4th generation (Zen 4), family 19h models 10h–1Fh and A0h–AFh.
    Genoa,
    /// 5th generation (Zen 5), family 1Ah models 00h–1Fh.
    Turin,
}

impl Product {
    /// All products, in release order.
    pub const ALL: [Product; 3] = [Product::Milan, Product::Genoa, Product::Turin];

    /// The name AMD's Key Distribution Service and certificates use.
    pub fn name(self) -> &'static str {
        match self {
            Product::Milan => "Milan",
            Product::Genoa => "Genoa",
            Product::Turin => "Turin",
        }
    }

    /// From the report's CPUID family and (extended) model.
    pub fn from_cpuid(family: u8, model: u8) -> Option<Self> {
        match (family, model) {
            (0x19, 0x00..=0x0F) => Some(Product::Milan),
            (0x19, 0x10..=0x1F | 0xA0..=0xAF) => Some(Product::Genoa),
            (0x1A, 0x00..=0x1F) => Some(Product::Turin),
            _ => None,
        }
    }

    /// From a certificate's product name such as `Milan-B0`, `Genoa` or `Turin`.
    pub fn from_cert_name(name: &str) -> Option<Self> {
        let base = name.split('-').next().unwrap_or(name);
        Product::ALL.into_iter().find(|p| p.name().eq_ignore_ascii_case(base))
    }

    /// Turin changed the TCB_VERSION layout (FMC first, SNP in byte 3).
    pub fn has_fmc(self) -> bool {
        self == Product::Turin
    }
}

impl std::fmt::Display for Product {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// A decoded TCB_VERSION.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Tcb {
    /// AMD-SP boot loader SVN.
    pub bootloader: u8,
    /// AMD-SP OS (TEE) SVN.
    pub tee: u8,
    /// SNP firmware SVN.
    pub snp: u8,
    /// Microcode patch level.
    pub microcode: u8,
    /// Firmware management controller SVN (Turin and later; absent before).
    pub fmc: Option<u8>,
}

impl Tcb {
    /// Decodes the 64-bit TCB_VERSION for `product`; returns it and whether its reserved bytes are
    /// zero.
    pub fn decode(raw: u64, product: Product) -> (Self, bool) {
        let b = raw.to_le_bytes();
        if product.has_fmc() {
            (Self { fmc: Some(b[0]), bootloader: b[1], tee: b[2], snp: b[3], microcode: b[7] }, b[4..7] == [0, 0, 0])
        } else {
            (Self { fmc: None, bootloader: b[0], tee: b[1], snp: b[6], microcode: b[7] }, b[2..6] == [0, 0, 0, 0])
        }
    }
}

impl std::fmt::Display for Tcb {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if let Some(fmc) = self.fmc {
            write!(f, "fmc {fmc}, ")?;
        }
        write!(f, "bootloader {}, tee {}, snp {}, microcode {}", self.bootloader, self.tee, self.snp, self.microcode)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn products_from_cpuid_and_names() {
        assert_eq!(Product::from_cpuid(0x19, 0x01), Some(Product::Milan));
        assert_eq!(Product::from_cpuid(0x19, 0x11), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x19, 0xA0), Some(Product::Genoa));
        assert_eq!(Product::from_cpuid(0x1A, 0x02), Some(Product::Turin));
        assert_eq!(Product::from_cpuid(0x17, 0x31), None, "Rome has no SEV-SNP");
        assert_eq!(Product::from_cert_name("Milan-B0"), Some(Product::Milan));
        assert_eq!(Product::from_cert_name("Turin"), Some(Product::Turin));
        assert_eq!(Product::from_cert_name("Naples"), None);
    }

    #[test]
    fn tcb_layouts() {
        let raw = u64::from_le_bytes([3, 0, 0, 0, 0, 0, 8, 115]);
        assert_eq!(
            Tcb::decode(raw, Product::Milan),
            (Tcb { bootloader: 3, tee: 0, snp: 8, microcode: 115, fmc: None }, true)
        );
        let turin = u64::from_le_bytes([1, 2, 3, 4, 0, 0, 0, 9]);
        assert_eq!(
            Tcb::decode(turin, Product::Turin),
            (Tcb { fmc: Some(1), bootloader: 2, tee: 3, snp: 4, microcode: 9 }, true)
        );
        // Byte 4 is reserved on Turin but SNP-era reserved space on Milan.
        let odd = u64::from_le_bytes([0, 0, 0, 0, 5, 0, 0, 0]);
        assert!(!Tcb::decode(odd, Product::Turin).1);
        assert!(!Tcb::decode(odd, Product::Milan).1);
    }

    #[test]
    fn reserved_ranges_follow_the_version() {
        let mut r = vec![0u8; report::REPORT_LEN];
        r[0x008..0x010].copy_from_slice(&0x3_0000u64.to_le_bytes());
        r[0x034] = 1;
        r[0] = 3;
        r[0x188] = 0x19; // CPUID: allowed from version 3 on
        r[0x200] = 1; // CURRENT_MIT_VECTOR: reserved before version 5
        let issues = |r: &[u8]| report::Report::parse(r).unwrap().1;
        assert_eq!(issues(&r).len(), 1, "{:?}", issues(&r));
        r[0] = 5;
        assert!(issues(&r).is_empty(), "{:?}", issues(&r));
        r[0] = 2;
        assert_eq!(issues(&r).len(), 2, "CPUID and the vector are both reserved in version 2: {:?}", issues(&r));
        assert!(report::Report::parse(&r[..100]).is_err());
    }
}
