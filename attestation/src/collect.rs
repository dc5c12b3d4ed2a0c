//! Guest-side evidence collection, for the worker inside a confidential VM.
//!
//! One trait, [`EvidenceSource`], over the ways a guest gets a report: Linux configfs-tsm
//! (`/sys/kernel/config/tsm/report`, the current interface), the `/dev/sev-guest` ioctl (older
//! kernels), and the simulated attester (feature `simulated`). Report data is always exactly 64
//! bytes: the [`ReportData`] type cannot be built from anything else, so nothing is ever padded or
//! truncated.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The 64 bytes a report binds (for key release: nonce ‖ worker key ‖ manifest digest).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct ReportData([u8; 64]);

impl std::fmt::Debug for ReportData {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ReportData({})", hex::encode(self.0))
    }
}

impl ReportData {
    /// Exactly 64 bytes.
    pub fn new(bytes: [u8; 64]) -> Self {
        Self(bytes)
    }

    /// Accepts exactly 64 bytes and nothing else.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, CollectError> {
        bytes.try_into().map(Self).map_err(|_| {
            CollectError::InvalidInput(format!("report data must be exactly 64 bytes, got {}", bytes.len()))
        })
    }

    /// The bytes.
    pub fn as_bytes(&self) -> &[u8; 64] {
        &self.0
    }
}

/// Why evidence could not be collected.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CollectError {
    /// This interface does not exist here (not a confidential VM, or an older kernel).
    #[error("{0}")]
    NotAvailable(String),
    /// Reading or writing the interface failed.
    #[error("{what} {path}: {source}")]
    Io {
        /// What was being done.
        what: &'static str,
        /// The file involved.
        path: PathBuf,
        /// The error.
        source: std::io::Error,
    },
    /// The firmware or kernel refused the request.
    #[error("the firmware refused the report request: {0}")]
    Firmware(String),
    /// The interface returned something that is not a report.
    #[error("malformed response: {0}")]
    Malformed(String),
    /// The caller's input is wrong.
    #[error("{0}")]
    InvalidInput(String),
}

/// What a source collected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CollectedEvidence {
    /// The raw report.
    pub report: Vec<u8>,
    /// Certificates the host supplied (the extended report's certificate table), if any.
    pub certificates: Vec<CertTableEntry>,
    /// Which source produced it.
    pub source: &'static str,
}

/// A source of attestation evidence inside a guest.
pub trait EvidenceSource: Send + Sync {
    /// A short name (`configfs-tsm`, `sev-guest`, `simulated`).
    fn name(&self) -> &'static str;

    /// Asks for a report binding `report_data`.
    fn collect(&self, report_data: &ReportData) -> Result<CollectedEvidence, CollectError>;
}

/// The first available hardware source: configfs-tsm, else `/dev/sev-guest`.
pub fn detect() -> Option<Box<dyn EvidenceSource>> {
    let tsm = ConfigFsTsm::default();
    if tsm.root.is_dir() {
        return Some(Box::new(tsm));
    }
    let dev = SevGuestDevice::default();
    if dev.path.exists() {
        return Some(Box::new(dev));
    }
    None
}

/// Which key a certificate-table entry holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CertKind {
    /// VCEK.
    Vcek,
    /// VLEK.
    Vlek,
    /// ASK (also used for the ASVK).
    Ask,
    /// ARK.
    Ark,
    /// Another GUID.
    Other,
}

/// One entry of the GHCB extended-report certificate table.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CertTableEntry {
    /// The entry's GUID (as stored: little-endian fields).
    pub guid: [u8; 16],
    /// What the GUID says it is.
    pub kind: CertKind,
    /// The certificate (DER).
    pub der: Vec<u8>,
}

/// GUIDs of the GHCB specification, in their byte order on the wire.
fn guid_kind(guid: &[u8; 16]) -> CertKind {
    const fn g(a: u32, b: u16, c: u16, d: [u8; 8]) -> [u8; 16] {
        let a = a.to_le_bytes();
        let b = b.to_le_bytes();
        let c = c.to_le_bytes();
        [a[0], a[1], a[2], a[3], b[0], b[1], c[0], c[1], d[0], d[1], d[2], d[3], d[4], d[5], d[6], d[7]]
    }
    const VCEK: [u8; 16] = g(0x63da758d, 0xe664, 0x4564, [0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd]);
    const VLEK: [u8; 16] = g(0xa8074bc2, 0xa25a, 0x483e, [0xaa, 0xe6, 0x39, 0xc0, 0x45, 0xa0, 0xb8, 0xa1]);
    const ASK: [u8; 16] = g(0x4ab7b379, 0xbbac, 0x4fe4, [0xa0, 0x2f, 0x05, 0xae, 0xf3, 0x27, 0xc7, 0x82]);
    const ARK: [u8; 16] = g(0xc0b406a4, 0xa803, 0x4952, [0x97, 0x43, 0x3f, 0xb6, 0x01, 0x4c, 0xd0, 0xae]);
    match *guid {
        VCEK => CertKind::Vcek,
        VLEK => CertKind::Vlek,
        ASK => CertKind::Ask,
        ARK => CertKind::Ark,
        _ => CertKind::Other,
    }
}

/// Parses a certificate table: entries of (GUID, u32 offset, u32 length) ended by an all-zero
/// entry, then the certificates at their offsets. An empty input is an empty table.
pub fn parse_cert_table(bytes: &[u8]) -> Result<Vec<CertTableEntry>, CollectError> {
    let mut entries: Vec<([u8; 16], usize, usize)> = Vec::new();
    let mut at = 0usize;
    if bytes.is_empty() {
        return Ok(Vec::new());
    }
    loop {
        let entry = bytes
            .get(at..at + 24)
            .ok_or_else(|| CollectError::Malformed("certificate table is not terminated".into()))?;
        at += 24;
        let mut guid = [0u8; 16];
        guid.copy_from_slice(&entry[..16]);
        let offset = u32::from_le_bytes([entry[16], entry[17], entry[18], entry[19]]) as usize;
        let len = u32::from_le_bytes([entry[20], entry[21], entry[22], entry[23]]) as usize;
        if guid == [0u8; 16] && offset == 0 && len == 0 {
            break;
        }
        entries.push((guid, offset, len));
    }
    entries
        .into_iter()
        .map(|(guid, offset, len)| {
            if offset < at {
                return Err(CollectError::Malformed(format!("certificate offset {offset} points into the table")));
            }
            let der = bytes
                .get(offset..offset.saturating_add(len))
                .ok_or_else(|| CollectError::Malformed(format!("certificate at {offset}+{len} runs past the data")))?;
            Ok(CertTableEntry { guid, kind: guid_kind(&guid), der: der.to_vec() })
        })
        .collect()
}

/// Linux configfs-tsm (`/sys/kernel/config/tsm/report`).
#[derive(Debug, Clone)]
pub struct ConfigFsTsm {
    /// The report directory.
    pub root: PathBuf,
    /// The VMPL to request (`privlevel`), if not the kernel's default.
    pub privlevel: Option<u32>,
}

impl Default for ConfigFsTsm {
    fn default() -> Self {
        Self { root: PathBuf::from("/sys/kernel/config/tsm/report"), privlevel: None }
    }
}

fn io<'a>(what: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> CollectError + 'a {
    move |source| CollectError::Io { what, path: path.to_path_buf(), source }
}

impl ConfigFsTsm {
    /// Collects from an entry directory that already exists (configfs creates its files on
    /// `mkdir`): checks the provider, writes the report data, reads the report and certificates,
    /// and checks that nobody else wrote to the entry meanwhile (its generation advanced by one).
    pub fn collect_in(&self, entry: &Path, report_data: &ReportData) -> Result<CollectedEvidence, CollectError> {
        let provider_path = entry.join("provider");
        let provider = fs::read_to_string(&provider_path).map_err(io("read", &provider_path))?;
        if provider.trim() != "sev_guest" {
            return Err(CollectError::NotAvailable(format!(
                "configfs-tsm provider is {:?}, not sev_guest",
                provider.trim()
            )));
        }
        let generation = |path: &Path| -> Result<u64, CollectError> {
            let text = fs::read_to_string(path).map_err(io("read", path))?;
            text.trim()
                .parse()
                .map_err(|_| CollectError::Malformed(format!("generation {:?} is not a number", text.trim())))
        };
        let generation_path = entry.join("generation");
        let before = generation(&generation_path)?;
        if let Some(level) = self.privlevel {
            let path = entry.join("privlevel");
            fs::write(&path, level.to_string()).map_err(io("write", &path))?;
        }
        let inblob = entry.join("inblob");
        fs::write(&inblob, report_data.as_bytes()).map_err(io("write", &inblob))?;
        let outblob = entry.join("outblob");
        let report = fs::read(&outblob).map_err(io("read", &outblob))?;
        let auxblob = entry.join("auxblob");
        let certificates = match fs::read(&auxblob) {
            Ok(bytes) => parse_cert_table(&bytes)?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(io("read", &auxblob)(e)),
        };
        let after = generation(&generation_path)?;
        let writes = if self.privlevel.is_some() { 2 } else { 1 };
        if after != before + writes {
            return Err(CollectError::Malformed(format!(
                "the report entry was written concurrently (generation {before} -> {after}); retry"
            )));
        }
        if report.len() != crate::snp::report::REPORT_LEN {
            return Err(CollectError::Malformed(format!(
                "outblob holds {} bytes, not an SEV-SNP report",
                report.len()
            )));
        }
        Ok(CollectedEvidence { report, certificates, source: "configfs-tsm" })
    }
}

impl EvidenceSource for ConfigFsTsm {
    fn name(&self) -> &'static str {
        "configfs-tsm"
    }

    fn collect(&self, report_data: &ReportData) -> Result<CollectedEvidence, CollectError> {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        if !self.root.is_dir() {
            return Err(CollectError::NotAvailable(format!(
                "{} does not exist (kernel without configfs-tsm)",
                self.root.display()
            )));
        }
        let entry = self.root.join(format!("coffre-{}-{}", std::process::id(), NEXT.fetch_add(1, Ordering::Relaxed)));
        fs::create_dir(&entry).map_err(io("create", &entry))?;
        let result = self.collect_in(&entry, report_data);
        // configfs removes the entry's attribute files with the directory.
        let _ = fs::remove_dir(&entry);
        result
    }
}

/// The `/dev/sev-guest` character device (SNP_GET_REPORT ioctl), for kernels without configfs-tsm.
#[derive(Debug, Clone)]
pub struct SevGuestDevice {
    /// The device path.
    pub path: PathBuf,
    /// The VMPL to request.
    pub vmpl: u32,
}

impl Default for SevGuestDevice {
    fn default() -> Self {
        Self { path: PathBuf::from("/dev/sev-guest"), vmpl: 0 }
    }
}

/// Extracts the report from an SNP `MSG_REPORT_RSP` (status, size, 24 reserved bytes, report).
pub fn parse_report_response(resp: &[u8]) -> Result<Vec<u8>, CollectError> {
    let header =
        resp.get(..32).ok_or_else(|| CollectError::Malformed("report response shorter than its header".into()))?;
    let status = u32::from_le_bytes([header[0], header[1], header[2], header[3]]);
    let size = u32::from_le_bytes([header[4], header[5], header[6], header[7]]) as usize;
    if status != 0 {
        return Err(CollectError::Firmware(format!("MSG_REPORT_RSP status {status:#x}")));
    }
    if size != crate::snp::report::REPORT_LEN {
        return Err(CollectError::Malformed(format!(
            "report size {size}, expected {}",
            crate::snp::report::REPORT_LEN
        )));
    }
    resp.get(32..32 + size)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| CollectError::Malformed("report runs past the response".into()))
}

#[cfg(target_os = "linux")]
#[allow(unsafe_code)]
mod sev_guest {
    //! The one place in Coffre with `unsafe`: the SNP_GET_REPORT ioctl on `/dev/sev-guest`.

    use std::os::fd::AsRawFd;

    use super::{CollectError, ReportData, SevGuestDevice, io, parse_report_response};

    /// `struct snp_report_req` (linux/sev-guest.h).
    #[repr(C)]
    struct ReportReq {
        user_data: [u8; 64],
        vmpl: u32,
        rsvd: [u8; 28],
    }

    /// `struct snp_report_resp`.
    #[repr(C)]
    struct ReportResp {
        data: [u8; 4000],
    }

    /// `struct snp_guest_request_ioctl`.
    #[repr(C)]
    struct GuestRequest {
        msg_version: u8,
        req_data: u64,
        resp_data: u64,
        exitinfo2: u64,
    }

    /// `_IOWR('S', 0x0, struct snp_guest_request_ioctl)`.
    const SNP_GET_REPORT: u64 = (3 << 30) | ((std::mem::size_of::<GuestRequest>() as u64) << 16) | ((b'S' as u64) << 8);

    pub(super) fn get_report(dev: &SevGuestDevice, data: &ReportData) -> Result<Vec<u8>, CollectError> {
        let file = std::fs::OpenOptions::new().read(true).write(true).open(&dev.path).map_err(io("open", &dev.path))?;
        let req = ReportReq { user_data: *data.as_bytes(), vmpl: dev.vmpl, rsvd: [0; 28] };
        let mut resp = Box::new(ReportResp { data: [0; 4000] });
        let mut request = GuestRequest {
            msg_version: 1,
            req_data: &req as *const ReportReq as u64,
            resp_data: &mut *resp as *mut ReportResp as u64,
            exitinfo2: 0,
        };
        // SAFETY: `file` is an open descriptor for the lifetime of the call. `request` is a
        // properly initialised `snp_guest_request_ioctl` whose `req_data` and `resp_data` point to
        // live, correctly sized `snp_report_req` and `snp_report_resp` values that outlive the
        // call; the kernel writes only within `resp` and `request.exitinfo2`.
        let rc = unsafe { libc::ioctl(file.as_raw_fd(), SNP_GET_REPORT as _, &mut request as *mut GuestRequest) };
        if rc != 0 {
            return Err(CollectError::Firmware(format!(
                "SNP_GET_REPORT failed: {} (firmware {:#x}, VMM {:#x})",
                std::io::Error::last_os_error(),
                request.exitinfo2 & 0xffff_ffff,
                request.exitinfo2 >> 32
            )));
        }
        parse_report_response(&resp.data)
    }
}

impl EvidenceSource for SevGuestDevice {
    fn name(&self) -> &'static str {
        "sev-guest"
    }

    fn collect(&self, report_data: &ReportData) -> Result<CollectedEvidence, CollectError> {
        if !self.path.exists() {
            return Err(CollectError::NotAvailable(format!(
                "{} does not exist (not an SEV-SNP guest)",
                self.path.display()
            )));
        }
        #[cfg(target_os = "linux")]
        {
            let report = sev_guest::get_report(self, report_data)?;
            Ok(CollectedEvidence { report, certificates: Vec::new(), source: "sev-guest" })
        }
        #[cfg(not(target_os = "linux"))]
        {
            let _ = report_data;
            Err(CollectError::NotAvailable("/dev/sev-guest exists only on Linux".into()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn report_data_is_exactly_64_bytes() {
        assert!(ReportData::from_slice(&[0u8; 63]).is_err());
        assert!(ReportData::from_slice(&[0u8; 65]).is_err());
        assert!(ReportData::from_slice(&[7u8; 64]).is_ok());
    }

    #[test]
    fn ioctl_number_matches_the_kernel_header() {
        // _IOWR('S', 0, struct snp_guest_request_ioctl) with a 32-byte struct.
        #[cfg(target_os = "linux")]
        assert_eq!(sev_guest_ioctl_for_tests(), 0xC020_5300);
    }

    #[cfg(target_os = "linux")]
    fn sev_guest_ioctl_for_tests() -> u64 {
        (3 << 30) | (32 << 16) | ((b'S' as u64) << 8)
    }

    fn table(entries: &[([u8; 16], &[u8])]) -> Vec<u8> {
        let header = (entries.len() + 1) * 24;
        let mut out = vec![0u8; header];
        let mut at = header;
        for (i, (guid, der)) in entries.iter().enumerate() {
            out[i * 24..i * 24 + 16].copy_from_slice(guid);
            out[i * 24 + 16..i * 24 + 20].copy_from_slice(&(at as u32).to_le_bytes());
            out[i * 24 + 20..i * 24 + 24].copy_from_slice(&(der.len() as u32).to_le_bytes());
            out.extend_from_slice(der);
            at += der.len();
        }
        out
    }

    #[test]
    fn cert_table_round_trip_and_errors() {
        let vcek_guid =
            [0x8d, 0x75, 0xda, 0x63, 0x64, 0xe6, 0x64, 0x45, 0xad, 0xc5, 0xf4, 0xb9, 0x3b, 0xe8, 0xac, 0xcd];
        let bytes = table(&[(vcek_guid, b"vcek-der"), ([9u8; 16], b"other")]);
        let entries = parse_cert_table(&bytes).unwrap();
        assert_eq!(entries[0].kind, CertKind::Vcek);
        assert_eq!(entries[0].der, b"vcek-der");
        assert_eq!(entries[1].kind, CertKind::Other);
        assert!(parse_cert_table(&bytes[..30]).is_err(), "unterminated");
        let mut bad = bytes.clone();
        bad[16..20].copy_from_slice(&10u32.to_le_bytes());
        assert!(parse_cert_table(&bad).is_err(), "offset into the table");
        assert!(parse_cert_table(&[]).unwrap().is_empty());
    }

    #[test]
    fn configfs_entry_protocol() {
        let dir = tempfile::tempdir().unwrap();
        let entry = dir.path();
        fs::write(entry.join("provider"), "sev_guest\n").unwrap();
        fs::write(entry.join("outblob"), vec![0u8; 1184]).unwrap();
        // A real configfs bumps the generation on each write; a plain directory does not, so the
        // race check fires: exactly what must happen if someone else wrote meanwhile.
        fs::write(entry.join("generation"), "4\n").unwrap();
        let tsm = ConfigFsTsm { root: dir.path().to_path_buf(), privlevel: None };
        let err = tsm.collect_in(entry, &ReportData::new([0xab; 64])).unwrap_err();
        assert!(matches!(err, CollectError::Malformed(m) if m.contains("concurrently")));
        assert_eq!(fs::read(entry.join("inblob")).unwrap(), vec![0xab; 64], "exactly the 64 bytes, unpadded");
        fs::write(entry.join("provider"), "tdx_guest\n").unwrap();
        assert!(matches!(tsm.collect_in(entry, &ReportData::new([0; 64])), Err(CollectError::NotAvailable(_))));
    }

    #[test]
    fn report_response_parsing() {
        let mut resp = vec![0u8; 4000];
        resp[4..8].copy_from_slice(&1184u32.to_le_bytes());
        resp[32] = 3;
        assert_eq!(parse_report_response(&resp).unwrap()[0], 3);
        resp[0] = 0x16;
        assert!(matches!(parse_report_response(&resp), Err(CollectError::Firmware(_))));
    }
}
