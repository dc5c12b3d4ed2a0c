//! NVIDIA GPU evidence through NVML (feature `nvml`, `--gpu nvml`): on a confidential VM with
//! H100/Blackwell GPUs in confidential-computing mode, each GPU signs an SPDM
//! GET_MEASUREMENTS exchange over the 32-byte nonce derived from the CPU report data, and hands
//! out its attestation certificate chain (PEM, leaf first; the chain NVIDIA's own verifier
//! checks, not the other `cert_chain` NVML returns).
//!
//! `libnvidia-ml.so.1` is loaded at run time, so this builds where no driver is installed; it
//! runs only where one is. The vault verifies what comes back against NVIDIA's root and RIMs
//! like any other GPU evidence; nothing here decides anything.

use std::sync::Arc;

use coffre_api::RawGpu;
use nvml_wrapper::Nvml;

use crate::evidence::GpuSource;

/// One GPU, by NVML index.
pub struct NvmlGpu {
    nvml: Arc<Nvml>,
    index: u32,
}

impl std::fmt::Debug for NvmlGpu {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "NvmlGpu({})", self.index)
    }
}

/// Every GPU NVML sees, after checking that confidential computing is on and in production
/// mode (a GPU in CC dev mode or with CC off signs nothing a production policy would accept;
/// better to say so here than to collect evidence the vault must deny).
pub fn open_all() -> Result<Vec<Box<dyn GpuSource>>, String> {
    let nvml = Nvml::init().map_err(|e| {
        format!("--gpu nvml: cannot load NVML ({e}); is the NVIDIA driver installed in this confidential VM?")
    })?;
    let count = nvml.device_count().map_err(|e| format!("--gpu nvml: {e}"))?;
    if count == 0 {
        return Err("--gpu nvml: NVML sees no GPU".into());
    }
    let nvml = Arc::new(nvml);
    let first = nvml.device_by_index(0).map_err(|e| format!("--gpu nvml: GPU 0: {e}"))?;
    if !first.is_cc_enabled().map_err(|e| format!("--gpu nvml: confidential-computing settings: {e}"))? {
        return Err("--gpu nvml: confidential computing is off on this system's GPUs".into());
    }
    if first.is_cc_dev_mode_enabled().unwrap_or(false) {
        return Err("--gpu nvml: the GPUs are in confidential-computing DEVELOPMENT mode".into());
    }
    Ok((0..count).map(|index| Box::new(NvmlGpu { nvml: nvml.clone(), index }) as Box<dyn GpuSource>).collect())
}

/// The first `size` bytes of an NVML buffer (NVML returns fixed-size buffers with a length).
fn sized(buf: &[u8], size: u32, what: &str) -> Result<Vec<u8>, String> {
    let n = usize::try_from(size).map_err(|_| format!("{what}: bad size"))?;
    buf.get(..n)
        .map(<[u8]>::to_vec)
        .ok_or_else(|| format!("{what}: NVML says {n} bytes of a {}-byte buffer", buf.len()))
}

impl GpuSource for NvmlGpu {
    fn evidence(&self, nonce: &[u8; 32]) -> Result<RawGpu, String> {
        let at = |e: nvml_wrapper::error::NvmlError| format!("GPU {}: {e}", self.index);
        let dev = self.nvml.device_by_index(self.index).map_err(at)?;
        let report = dev.confidential_compute_gpu_attestation_report(*nonce).map_err(at)?;
        let report = sized(&report.attestation_report, report.attestation_report_size, "attestation report")?;
        let certs = dev.confidential_compute_gpu_certificate().map_err(at)?;
        let pem =
            sized(&certs.attestation_cert_chain, certs.attestation_cert_chain_size, "attestation certificate chain")?;
        let chain = coffre_attestation::x509::certificates_from_pem_or_der(&pem)
            .map_err(|e| format!("GPU {}: attestation certificate chain: {e}", self.index))?;
        Ok(RawGpu { report, chain, rims: Vec::new() })
    }
}
