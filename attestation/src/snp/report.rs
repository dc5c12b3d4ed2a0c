//! The SEV-SNP `ATTESTATION_REPORT` (AMD SEV-SNP firmware ABI 56860, table "Attestation Report
//! Format"): 1184 bytes, little-endian, signed over bytes 0x000–0x29F. Every version the ABI
//! defines is read, with the fields it defines:
//!
//! | version | adds |
//! |---|---|
//! | 2 | the base layout (0x188–0x19F and 0x1F8–0x29F reserved) |
//! | 3 | CPUID family, model, stepping at 0x188–0x18A (ABI 1.56) |
//! | 4 | nothing visible: the layout of version 3 (firmware 1.55.31 and later emit it) |
//! | 5 | LAUNCH_MIT_VECTOR at 0x1F8, CURRENT_MIT_VECTOR at 0x200 (ABI 1.58) |
//! | 6 | extended TCBs at 0x220 (CURRENT), 0x240 (LAUNCH), 0x260 (COMMITTED), kept raw (ABI 1.59) |
//!
//! Parsing checks structure only and collects *every* format problem (unknown version, reserved
//! bytes that must be zero, reserved guest-policy and key-info bits, reserved signing-key values);
//! the verifier reports them all as one failed check. PLATFORM_INFO is different: it describes the
//! host, newer firmware sets bits that older specifications called reserved (Turin sets bit 6), and
//! the signature covers them, so bits this version does not name are reported as a claim
//! ([`Report::platform_info_unknown_bits`]) for policy to judge, never as a format error. Fields
//! whose meaning depends on the product (the TCB layout) stay raw here and are decoded once the
//! product is known.

use crate::snp::Product;

/// Size of a report.
pub const REPORT_LEN: usize = 0x4A0;
/// Bytes covered by the signature.
pub const SIGNED_LEN: usize = 0x2A0;
/// Versions this parser understands.
pub const SUPPORTED_VERSIONS: [u32; 5] = [2, 3, 4, 5, 6];
/// PLATFORM_INFO bits this version names: SMT_EN (0), TSME_EN (1), ECC_EN (2), RAPL_DIS (3),
/// CIPHERTEXT_HIDING_DRAM_EN (4), ALIAS_CHECK_COMPLETE (5), TIO_EN (7).
pub const PLATFORM_INFO_KNOWN: u64 = 0xbf;

/// Which key signed the report (KEY_INFO.SIGNING_KEY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum SigningKey {
    /// Versioned Chip Endorsement Key (per chip, per TCB).
    Vcek,
    /// Versioned Loaded Endorsement Key (per cloud provider).
    Vlek,
    /// Not signed.
    None,
}

impl std::fmt::Display for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SigningKey::Vcek => "VCEK",
            SigningKey::Vlek => "VLEK",
            SigningKey::None => "no key",
        })
    }
}

/// A parsed report. Construct with [`Report::parse`].
#[derive(Clone, PartialEq, Eq)]
pub struct Report {
    raw: Box<[u8; REPORT_LEN]>,
}

impl std::fmt::Debug for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Report {{ version: {}, vmpl: {} }}", self.version(), self.vmpl())
    }
}

fn u32_at(b: &[u8], at: usize) -> u32 {
    let mut x = [0u8; 4];
    x.copy_from_slice(&b[at..at + 4]);
    u32::from_le_bytes(x)
}

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut x = [0u8; 8];
    x.copy_from_slice(&b[at..at + 8]);
    u64::from_le_bytes(x)
}

fn mbz(raw: &[u8], from: usize, to: usize, what: &str, issues: &mut Vec<String>) {
    if let Some(i) = raw[from..to].iter().position(|&b| b != 0) {
        issues.push(format!(
            "{what} (bytes {from:#05x}..{to:#05x}) must be zero; byte {:#05x} is {:#04x}",
            from + i,
            raw[from + i]
        ));
    }
}

impl Report {
    /// Parses exactly 1184 bytes. `Err` only when the input cannot be a report at all (wrong
    /// length); otherwise the report is returned with every format problem found in it.
    pub fn parse(bytes: &[u8]) -> Result<(Self, Vec<String>), String> {
        let raw: [u8; REPORT_LEN] = bytes
            .try_into()
            .map_err(|_| format!("an SEV-SNP report is {REPORT_LEN} bytes, this input is {}", bytes.len()))?;
        let report = Self { raw: Box::new(raw) };
        let issues = report.format_issues();
        Ok((report, issues))
    }

    fn format_issues(&self) -> Vec<String> {
        let r = &self.raw[..];
        let mut issues = Vec::new();
        let version = self.version();
        if !SUPPORTED_VERSIONS.contains(&version) {
            issues.push(format!("report version {version} is not supported (2 to 6 are)"));
        }
        if self.signature_algo() != 1 {
            issues.push(format!(
                "signature algorithm {} is unknown (1 = ECDSA P-384 with SHA-384)",
                self.signature_algo()
            ));
        }
        let policy = self.policy_raw();
        if policy & (1 << 17) == 0 {
            issues.push("guest policy bit 17 is reserved and must be 1".into());
        }
        if policy >> 26 != 0 {
            issues.push(format!("guest policy {policy:#x} sets reserved bits 26..63"));
        }
        let key_info = self.key_info_raw();
        if key_info >> 5 != 0 {
            issues.push(format!("key info {key_info:#x} sets reserved bits 5..31"));
        }
        if matches!((key_info >> 2) & 7, 2..=6) {
            issues.push(format!("signing key value {} is reserved", (key_info >> 2) & 7));
        }
        if self.vmpl() > 3 {
            issues.push(format!("VMPL {} is out of range (0..3)", self.vmpl()));
        }
        mbz(r, 0x04C, 0x050, "reserved field after KEY_INFO", &mut issues);
        if version >= 3 {
            mbz(r, 0x18B, 0x1A0, "reserved field after CPUID", &mut issues);
        } else {
            mbz(r, 0x188, 0x1A0, "reserved field after REPORTED_TCB", &mut issues);
        }
        mbz(r, 0x1EB, 0x1EC, "reserved byte after CURRENT_MAJOR", &mut issues);
        mbz(r, 0x1EF, 0x1F0, "reserved byte after COMMITTED_MAJOR", &mut issues);
        // Versions the ABI does not define are held to the oldest layout that has these bytes.
        if version == 6 {
            mbz(r, 0x208, 0x220, "reserved field after CURRENT_MIT_VECTOR", &mut issues);
            mbz(r, 0x280, SIGNED_LEN, "reserved field after COMMITTED_ETCB", &mut issues);
        } else if version == 5 {
            mbz(r, 0x208, SIGNED_LEN, "reserved field after CURRENT_MIT_VECTOR", &mut issues);
        } else {
            mbz(r, 0x1F8, SIGNED_LEN, "reserved field after LAUNCH_TCB", &mut issues);
        }
        mbz(r, SIGNED_LEN + 144, REPORT_LEN, "reserved part of the signature", &mut issues);
        issues
    }

    /// The raw report.
    pub fn as_bytes(&self) -> &[u8; REPORT_LEN] {
        &self.raw
    }

    /// The bytes the signature covers.
    pub fn signed_bytes(&self) -> &[u8] {
        &self.raw[..SIGNED_LEN]
    }

    /// `r` of the signature, 72 bytes little-endian.
    pub fn signature_r(&self) -> &[u8; 72] {
        self.raw[SIGNED_LEN..SIGNED_LEN + 72].try_into().unwrap_or(&[0u8; 72])
    }

    /// `s` of the signature, 72 bytes little-endian.
    pub fn signature_s(&self) -> &[u8; 72] {
        self.raw[SIGNED_LEN + 72..SIGNED_LEN + 144].try_into().unwrap_or(&[0u8; 72])
    }

    fn bytes<const N: usize>(&self, at: usize) -> [u8; N] {
        let mut out = [0u8; N];
        out.copy_from_slice(&self.raw[at..at + N]);
        out
    }

    /// VERSION.
    pub fn version(&self) -> u32 {
        u32_at(&self.raw[..], 0x000)
    }
    /// GUEST_SVN.
    pub fn guest_svn(&self) -> u32 {
        u32_at(&self.raw[..], 0x004)
    }
    /// POLICY, raw.
    pub fn policy_raw(&self) -> u64 {
        u64_at(&self.raw[..], 0x008)
    }
    /// FAMILY_ID.
    pub fn family_id(&self) -> [u8; 16] {
        self.bytes(0x010)
    }
    /// IMAGE_ID.
    pub fn image_id(&self) -> [u8; 16] {
        self.bytes(0x020)
    }
    /// VMPL.
    pub fn vmpl(&self) -> u32 {
        u32_at(&self.raw[..], 0x030)
    }
    /// SIGNATURE_ALGO.
    pub fn signature_algo(&self) -> u32 {
        u32_at(&self.raw[..], 0x034)
    }
    /// CURRENT_TCB, raw.
    pub fn current_tcb_raw(&self) -> u64 {
        u64_at(&self.raw[..], 0x038)
    }
    /// PLATFORM_INFO, raw.
    pub fn platform_info_raw(&self) -> u64 {
        u64_at(&self.raw[..], 0x040)
    }
    /// PLATFORM_INFO bits set that this version does not name (e.g. bit 6 on Turin firmware):
    /// informational, covered by the signature, reported for policy to judge.
    pub fn platform_info_unknown_bits(&self) -> u64 {
        self.platform_info_raw() & !PLATFORM_INFO_KNOWN
    }
    /// KEY_INFO (AUTHOR_KEY_EN, MASK_CHIP_KEY, SIGNING_KEY), raw.
    pub fn key_info_raw(&self) -> u32 {
        u32_at(&self.raw[..], 0x048)
    }
    /// AUTHOR_KEY_EN.
    pub fn author_key_en(&self) -> bool {
        self.key_info_raw() & 1 != 0
    }
    /// MASK_CHIP_KEY: the VCEK was not used (the host's SNP_CONFIG); the firmware then writes zeros
    /// for the signature. (Hiding CHIP_ID is MASK_CHIP_ID, which leaves no bit here: CHIP_ID is
    /// simply all zeros.)
    pub fn mask_chip_key(&self) -> bool {
        self.key_info_raw() & 2 != 0
    }
    /// SIGNING_KEY; reserved values read as `None` (and are a format issue).
    pub fn signing_key(&self) -> SigningKey {
        match (self.key_info_raw() >> 2) & 7 {
            0 => SigningKey::Vcek,
            1 => SigningKey::Vlek,
            _ => SigningKey::None,
        }
    }
    /// REPORT_DATA.
    pub fn report_data(&self) -> [u8; 64] {
        self.bytes(0x050)
    }
    /// MEASUREMENT.
    pub fn measurement(&self) -> [u8; 48] {
        self.bytes(0x090)
    }
    /// HOST_DATA.
    pub fn host_data(&self) -> [u8; 32] {
        self.bytes(0x0C0)
    }
    /// ID_KEY_DIGEST.
    pub fn id_key_digest(&self) -> [u8; 48] {
        self.bytes(0x0E0)
    }
    /// AUTHOR_KEY_DIGEST.
    pub fn author_key_digest(&self) -> [u8; 48] {
        self.bytes(0x110)
    }
    /// REPORT_ID.
    pub fn report_id(&self) -> [u8; 32] {
        self.bytes(0x140)
    }
    /// REPORT_ID_MA.
    pub fn report_id_ma(&self) -> [u8; 32] {
        self.bytes(0x160)
    }
    /// REPORTED_TCB, raw.
    pub fn reported_tcb_raw(&self) -> u64 {
        u64_at(&self.raw[..], 0x180)
    }
    /// CPUID family, model, stepping (version 3 and later).
    pub fn cpuid(&self) -> Option<(u8, u8, u8)> {
        (self.version() >= 3).then(|| (self.raw[0x188], self.raw[0x189], self.raw[0x18A]))
    }
    /// The product named by CPUID (version 3 and later).
    pub fn cpuid_product(&self) -> Option<Product> {
        self.cpuid().and_then(|(family, model, _)| Product::from_cpuid(family, model))
    }
    /// CHIP_ID.
    pub fn chip_id(&self) -> [u8; 64] {
        self.bytes(0x1A0)
    }
    /// COMMITTED_TCB, raw.
    pub fn committed_tcb_raw(&self) -> u64 {
        u64_at(&self.raw[..], 0x1E0)
    }
    /// CURRENT_{MAJOR,MINOR,BUILD}.
    pub fn current_version(&self) -> (u8, u8, u8) {
        (self.raw[0x1EA], self.raw[0x1E9], self.raw[0x1E8])
    }
    /// COMMITTED_{MAJOR,MINOR,BUILD}.
    pub fn committed_version(&self) -> (u8, u8, u8) {
        (self.raw[0x1EE], self.raw[0x1ED], self.raw[0x1EC])
    }
    /// LAUNCH_TCB, raw.
    pub fn launch_tcb_raw(&self) -> u64 {
        u64_at(&self.raw[..], 0x1F0)
    }
    /// LAUNCH_MIT_VECTOR (version 5).
    pub fn launch_mit_vector(&self) -> Option<u64> {
        (self.version() >= 5).then(|| u64_at(&self.raw[..], 0x1F8))
    }
    /// CURRENT_MIT_VECTOR (version 5).
    pub fn current_mit_vector(&self) -> Option<u64> {
        (self.version() >= 5).then(|| u64_at(&self.raw[..], 0x200))
    }
    /// Extended TCBs (version 6): CURRENT_ETCB, LAUNCH_ETCB, COMMITTED_ETCB, 32 bytes each, raw.
    pub fn extended_tcbs(&self) -> Option<[[u8; 32]; 3]> {
        (self.version() >= 6).then(|| [self.bytes(0x220), self.bytes(0x240), self.bytes(0x260)])
    }
}
