//! Where the worker's evidence comes from: the CPU TEE (configfs-tsm or `/dev/sev-guest` on a
//! confidential VM; the attestation agent in a Confidential Containers pod; the simulated
//! machine in development) and the GPUs (the agent's; simulated in development; none). The CPU report binds the 64-byte report data; each GPU report binds the
//! nonce derived from it ([`coffre_attestation::composite::gpu_nonce`]).

use coffre_api::{RawCpu, RawEvidence, RawGpu};
use coffre_attestation::collect::{ConfigFsTsm, EvidenceSource, ReportData, SevGuestDevice};
use coffre_attestation::composite::gpu_nonce;

/// The CPU TEE to collect from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum TeeKind {
    /// Linux configfs-tsm (`/sys/kernel/config/tsm/report`), SEV-SNP guests on kernels ≥ 6.7
    #[value(name = "configfs-tsm")]
    ConfigfsTsm,
    /// The `/dev/sev-guest` ioctl (older SEV-SNP guest kernels)
    #[value(name = "sev-guest")]
    SevGuest,
    /// The attestation agent of a Confidential Containers pod (SEV-SNP or TDX; --aa-url)
    Coco,
    /// The simulated machine of `coffre-worker simulate init` (development vaults only)
    Simulated,
}

/// The GPUs to attest.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum GpuKind {
    /// No GPU evidence (CPU-only jobs; policies that require GPUs deny them)
    None,
    /// The GPUs the Confidential Containers attestation agent attests (its NVIDIA attester)
    Coco,
    /// Every GPU NVML sees, in confidential-computing mode (builds with the `nvml` feature)
    Nvml,
    /// The simulated machine's GPUs (development vaults only)
    Simulated,
}

/// A GPU that produces SPDM evidence for a nonce.
pub trait GpuSource: Send + Sync {
    /// Evidence binding `nonce`.
    fn evidence(&self, nonce: &[u8; 32]) -> Result<RawGpu, String>;
}

#[cfg(feature = "simulated")]
impl GpuSource for coffre_attestation::simulated::SimulatedGpu {
    fn evidence(&self, nonce: &[u8; 32]) -> Result<RawGpu, String> {
        let e = coffre_attestation::simulated::SimulatedGpu::evidence(self, nonce)?;
        Ok(RawGpu { report: e.report, chain: e.chain, rims: Vec::new() })
    }
}

/// Where the CPU evidence comes from.
enum Cpu {
    /// This VM's own interface (or the simulated machine).
    Local(Box<dyn EvidenceSource>),
    /// The Confidential Containers attestation agent.
    Agent(crate::coco::Agent),
}

/// The configured evidence sources.
pub struct Sources {
    cpu: Cpu,
    gpus: Vec<Box<dyn GpuSource>>,
    /// The attestation agent, for `--gpu coco`.
    gpu_agent: Option<crate::coco::Agent>,
}

impl std::fmt::Debug for Sources {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Sources {{ cpu: {}, gpus: {} }}", self.cpu_name(), self.gpus.len())
    }
}

impl Sources {
    /// Opens the sources. `machine` is the simulated machine file, for `simulated`; `aa_url` the
    /// attestation agent, for `coco`.
    pub fn open(tee: TeeKind, gpu: GpuKind, machine: Option<&std::path::Path>, aa_url: &str) -> Result<Self, String> {
        let mut cpu: Option<Cpu> = match tee {
            TeeKind::Coco => Some(Cpu::Agent(crate::coco::Agent::new(aa_url)?)),
            TeeKind::ConfigfsTsm => {
                let tsm = ConfigFsTsm::default();
                if !tsm.root.is_dir() {
                    return Err(format!(
                        "configfs-tsm is not available here ({} is missing): not a confidential VM, or a kernel before 6.7 (try --tee sev-guest)",
                        tsm.root.display()
                    ));
                }
                Some(Cpu::Local(Box::new(tsm)))
            }
            TeeKind::SevGuest => {
                let dev = SevGuestDevice::default();
                if !dev.path.exists() {
                    return Err(format!(
                        "{} is missing: not an SEV-SNP guest (try --tee configfs-tsm)",
                        dev.path.display()
                    ));
                }
                Some(Cpu::Local(Box::new(dev)))
            }
            TeeKind::Simulated => None,
        };
        let mut gpus: Vec<Box<dyn GpuSource>> = Vec::new();
        if tee == TeeKind::Simulated || gpu == GpuKind::Simulated {
            let (tee_sim, gpu_sim) = simulated(machine)?;
            if cpu.is_none() {
                cpu = Some(Cpu::Local(tee_sim));
            }
            if gpu == GpuKind::Simulated {
                gpus = gpu_sim;
            }
        }
        if gpu == GpuKind::Nvml {
            gpus = nvml_gpus()?;
        }
        let gpu_agent = if gpu == GpuKind::Coco { Some(crate::coco::Agent::new(aa_url)?) } else { None };
        let cpu = cpu.ok_or("no CPU evidence source")?;
        Ok(Self { cpu, gpus, gpu_agent })
    }

    /// Collects CPU evidence binding `report_data` and each GPU's evidence binding the nonce
    /// derived from it.
    pub fn collect(&self, report_data: [u8; 64]) -> Result<RawEvidence, String> {
        let cpu = match &self.cpu {
            Cpu::Agent(agent) => agent.cpu(&report_data)?,
            Cpu::Local(src) => RawCpu::from_collected(
                src.collect(&ReportData::new(report_data)).map_err(|e| format!("{}: {e}", src.name()))?,
            ),
        };
        let nonce = gpu_nonce(&report_data);
        let mut gpus = self.gpus.iter().map(|g| g.evidence(&nonce)).collect::<Result<Vec<_>, _>>()?;
        if let Some(agent) = &self.gpu_agent {
            gpus.extend(agent.gpus(&nonce)?);
        }
        Ok(RawEvidence { cpu, gpus })
    }

    /// The CPU source's name.
    pub fn cpu_name(&self) -> &'static str {
        match &self.cpu {
            Cpu::Local(src) => src.name(),
            Cpu::Agent(_) => "coco",
        }
    }
}

#[cfg(feature = "nvml")]
fn nvml_gpus() -> Result<Vec<Box<dyn GpuSource>>, String> {
    crate::nvml::open_all()
}

#[cfg(not(feature = "nvml"))]
fn nvml_gpus() -> Result<Vec<Box<dyn GpuSource>>, String> {
    Err("--gpu nvml: this build has no NVML support; build coffre-worker with `--features nvml`".into())
}

type Simulated = (Box<dyn EvidenceSource>, Vec<Box<dyn GpuSource>>);

#[cfg(feature = "simulated")]
fn simulated(machine: Option<&std::path::Path>) -> Result<Simulated, String> {
    let path = machine.ok_or(
        "--tee simulated and --gpu simulated need --simulated-machine FILE (from `coffre-worker simulate init`)",
    )?;
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let m = coffre_attestation::simulated::SimulatedMachine::from_json(&text)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    Ok((Box::new(m.tee), m.gpus.into_iter().map(|g| Box::new(g) as Box<dyn GpuSource>).collect()))
}

#[cfg(not(feature = "simulated"))]
fn simulated(_: Option<&std::path::Path>) -> Result<Simulated, String> {
    Err("this build has no simulated TEE or GPUs; they exist only in development builds (`--features simulated`)"
        .into())
}
