//! Typed claims of an SEV-SNP report: what a policy decides on. Byte strings serialize as
//! lowercase hex, TCBs as `{bootloader, tee, snp, microcode, fmc}`.

use serde::{Serialize, Serializer};

use crate::Platform;
use crate::snp::report::{Report, SigningKey};
use crate::snp::{Product, Tcb};

/// Serializes byte arrays as lowercase hex.
pub(crate) fn hex_bytes<S: Serializer, const N: usize>(bytes: &[u8; N], s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&hex::encode(bytes))
}

/// The guest policy bits (POLICY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct GuestPolicy {
    /// The raw 64-bit value.
    pub raw: u64,
    /// Minimum ABI minor version.
    pub abi_minor: u8,
    /// Minimum ABI major version.
    pub abi_major: u8,
    /// SMT allowed.
    pub smt: bool,
    /// A migration agent may be associated.
    pub migrate_ma: bool,
    /// Debugging allowed (the host can read guest memory).
    pub debug: bool,
    /// Must run on a single socket.
    pub single_socket: bool,
    /// CXL allowed.
    pub cxl_allow: bool,
    /// AES-256-XTS memory encryption required.
    pub mem_aes_256_xts: bool,
    /// RAPL must be disabled.
    pub rapl_dis: bool,
    /// Ciphertext hiding required.
    pub ciphertext_hiding: bool,
    /// Page swapping disabled.
    pub page_swap_disable: bool,
}

impl GuestPolicy {
    /// Decodes POLICY.
    pub fn from_raw(raw: u64) -> Self {
        let bit = |n: u32| raw & (1 << n) != 0;
        Self {
            raw,
            abi_minor: (raw & 0xff) as u8,
            abi_major: ((raw >> 8) & 0xff) as u8,
            smt: bit(16),
            migrate_ma: bit(18),
            debug: bit(19),
            single_socket: bit(20),
            cxl_allow: bit(21),
            mem_aes_256_xts: bit(22),
            rapl_dis: bit(23),
            ciphertext_hiding: bit(24),
            page_swap_disable: bit(25),
        }
    }
}

/// Platform state (PLATFORM_INFO).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct PlatformInfo {
    /// The raw 64-bit value.
    pub raw: u64,
    /// SMT is enabled on the host.
    pub smt_enabled: bool,
    /// Transparent SME is enabled.
    pub tsme_enabled: bool,
    /// ECC memory is in use.
    pub ecc_enabled: bool,
    /// RAPL is disabled.
    pub rapl_disabled: bool,
    /// Ciphertext hiding is enabled for DRAM.
    pub ciphertext_hiding_enabled: bool,
    /// The boot-time memory alias check completed.
    pub alias_check_complete: bool,
    /// Trusted I/O is enabled.
    pub tio_enabled: bool,
    /// Bits set that this version does not name (e.g. bit 6, which Turin firmware sets):
    /// reported, not refused; a policy can forbid them.
    pub unknown_bits: u64,
}

impl PlatformInfo {
    /// Decodes PLATFORM_INFO.
    pub fn from_raw(raw: u64) -> Self {
        let bit = |n: u32| raw & (1 << n) != 0;
        Self {
            raw,
            smt_enabled: bit(0),
            tsme_enabled: bit(1),
            ecc_enabled: bit(2),
            rapl_disabled: bit(3),
            ciphertext_hiding_enabled: bit(4),
            alias_check_complete: bit(5),
            tio_enabled: bit(7),
            unknown_bits: raw & !crate::snp::report::PLATFORM_INFO_KNOWN,
        }
    }
}

/// A firmware version.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct FirmwareVersion {
    /// Major.
    pub major: u8,
    /// Minor.
    pub minor: u8,
    /// Build.
    pub build: u8,
}

/// CPUID identification (report version 3 and later).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Cpuid {
    /// Family.
    pub family: u8,
    /// Model (extended model and model).
    pub model: u8,
    /// Stepping.
    pub stepping: u8,
}

/// Everything an SEV-SNP report states, typed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SnpClaims {
    /// `snp`, or `simulated` when the chain ends at a development root.
    pub platform: Platform,
    /// Report version.
    pub version: u32,
    /// Product, from CPUID (version 3+) or the certificate chain.
    pub product: Option<Product>,
    /// Guest SVN.
    pub guest_svn: u32,
    /// VMPL that requested the report.
    pub vmpl: u32,
    /// Guest policy.
    pub policy: GuestPolicy,
    /// FAMILY_ID.
    #[serde(serialize_with = "hex_bytes")]
    pub family_id: [u8; 16],
    /// IMAGE_ID.
    #[serde(serialize_with = "hex_bytes")]
    pub image_id: [u8; 16],
    /// Launch measurement.
    #[serde(serialize_with = "hex_bytes")]
    pub measurement: [u8; 48],
    /// HOST_DATA.
    #[serde(serialize_with = "hex_bytes")]
    pub host_data: [u8; 32],
    /// REPORT_DATA (exactly 64 bytes).
    #[serde(serialize_with = "hex_bytes")]
    pub report_data: [u8; 64],
    /// ID_KEY_DIGEST.
    #[serde(serialize_with = "hex_bytes")]
    pub id_key_digest: [u8; 48],
    /// AUTHOR_KEY_DIGEST.
    #[serde(serialize_with = "hex_bytes")]
    pub author_key_digest: [u8; 48],
    /// REPORT_ID.
    #[serde(serialize_with = "hex_bytes")]
    pub report_id: [u8; 32],
    /// REPORT_ID_MA.
    #[serde(serialize_with = "hex_bytes")]
    pub report_id_ma: [u8; 32],
    /// CHIP_ID (all zeros when the host masked it with MASK_CHIP_ID; on Turin only the first 8
    /// bytes are used and the rest are zero).
    #[serde(serialize_with = "hex_bytes")]
    pub chip_id: [u8; 64],
    /// REPORTED_TCB: the TCB the signing key was derived for.
    pub reported_tcb: Tcb,
    /// CURRENT_TCB.
    pub current_tcb: Tcb,
    /// COMMITTED_TCB.
    pub committed_tcb: Tcb,
    /// LAUNCH_TCB.
    pub launch_tcb: Tcb,
    /// PLATFORM_INFO.
    pub platform_info: PlatformInfo,
    /// Which key signed the report.
    pub signing_key: SigningKey,
    /// AUTHOR_KEY_EN.
    pub author_key_en: bool,
    /// MASK_CHIP_KEY: the VCEK was not used to sign.
    pub mask_chip_key: bool,
    /// The cloud provider named in a VLEK certificate.
    pub vlek_csp_id: Option<String>,
    /// Current firmware version.
    pub current_firmware: FirmwareVersion,
    /// Committed firmware version.
    pub committed_firmware: FirmwareVersion,
    /// CPUID identification (version 3+).
    pub cpuid: Option<Cpuid>,
    /// LAUNCH_MIT_VECTOR (version 5).
    pub launch_mit_vector: Option<u64>,
    /// CURRENT_MIT_VECTOR (version 5).
    pub current_mit_vector: Option<u64>,
    /// Extended TCBs (version 6): CURRENT, LAUNCH, COMMITTED, 32 bytes each as hex; their layout
    /// is not decoded by this version.
    pub extended_tcbs: Option<[String; 3]>,
    /// Whether an AMD CRL was checked and found the chain unrevoked (a policy can require it).
    pub crl_checked: bool,
}

impl SnpClaims {
    /// The claims of `report`, decoding TCBs for `product` (Milan/Genoa layout when unknown).
    pub fn from_report(
        report: &Report,
        product: Option<Product>,
        platform: Platform,
        vlek_csp_id: Option<String>,
    ) -> Self {
        let layout = product.unwrap_or(Product::Milan);
        let tcb = |raw| Tcb::decode(raw, layout).0;
        let (cmaj, cmin, cbuild) = report.current_version();
        let (kmaj, kmin, kbuild) = report.committed_version();
        Self {
            platform,
            version: report.version(),
            product,
            guest_svn: report.guest_svn(),
            vmpl: report.vmpl(),
            policy: GuestPolicy::from_raw(report.policy_raw()),
            family_id: report.family_id(),
            image_id: report.image_id(),
            measurement: report.measurement(),
            host_data: report.host_data(),
            report_data: report.report_data(),
            id_key_digest: report.id_key_digest(),
            author_key_digest: report.author_key_digest(),
            report_id: report.report_id(),
            report_id_ma: report.report_id_ma(),
            chip_id: report.chip_id(),
            reported_tcb: tcb(report.reported_tcb_raw()),
            current_tcb: tcb(report.current_tcb_raw()),
            committed_tcb: tcb(report.committed_tcb_raw()),
            launch_tcb: tcb(report.launch_tcb_raw()),
            platform_info: PlatformInfo::from_raw(report.platform_info_raw()),
            signing_key: report.signing_key(),
            author_key_en: report.author_key_en(),
            mask_chip_key: report.mask_chip_key(),
            vlek_csp_id,
            current_firmware: FirmwareVersion { major: cmaj, minor: cmin, build: cbuild },
            committed_firmware: FirmwareVersion { major: kmaj, minor: kmin, build: kbuild },
            cpuid: report.cpuid().map(|(family, model, stepping)| Cpuid { family, model, stepping }),
            launch_mit_vector: report.launch_mit_vector(),
            current_mit_vector: report.current_mit_vector(),
            extended_tcbs: report.extended_tcbs().map(|e| e.map(hex::encode)),
            crl_checked: false,
        }
    }
}
