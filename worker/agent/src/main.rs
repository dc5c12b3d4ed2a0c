//! `coffre-worker`: see `coffre-worker --help`.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand, ValueEnum};
use coffre_trainer::data::Template;
use coffre_worker::Failure;
use coffre_worker::evidence::{GpuKind, Sources, TeeKind};
use coffre_worker::run::{RunOptions, TrainerChoice, run};

#[derive(Debug, Parser)]
#[command(
    name = "coffre-worker",
    version,
    about = "The attested Coffre worker: fetches a job's keys by attestation, fine-tunes inside the confidential VM, and returns a sealed, signed model",
    after_help = "\
Inside a confidential VM (SEV-SNP):
  coffre-worker run --vault https://vault.bank.example:8443 --tenant bank-a --job job-3f2a… \\
      --tee configfs-tsm --base-model /models/smollm2-135m --work-dir /run/coffre

In a Confidential Containers pod (the attestation agent's REST API on 127.0.0.1:8006):
  coffre-worker run --vault https://vault.bank.example:8443 --tenant bank-a --job job-3f2a… \\
      --tee coco --gpu coco --work-dir /run/coffre

Against a development vault (simulated hardware, never real data):
  coffre-worker simulate init --out dev-machine.json --roots dev-roots.pem --gpus 1
  coffred serve --data-dir vault --dev --dev-roots dev-roots.pem
  coffre-worker run … --tee simulated --gpu simulated --simulated-machine dev-machine.json

Exit status: 0 done, 1 failed, 2 bad usage, 3 the vault denied the release (its id is printed)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run one job: attest, obtain the keys, train on the data decrypted in memory, seal and register the model
    Run(Box<RunArgs>),
    /// Development hardware: a simulated SEV-SNP machine with GPUs, kept in a file
    #[command(subcommand)]
    Simulate(SimulateCommand),
    /// Print the digest a job manifest pins a base model by (`coffre job submit --base-model`)
    ModelDigest {
        /// A model directory (config.json, *.safetensors, tokenizer.json) or a GGUF file
        path: PathBuf,
    },
    /// Print the measurement of a trainer: this worker's own (no command), or an external
    /// trainer command's (`coffre job submit --trainer-measurement`)
    #[command(after_help = "\
An external command's measurement is SHA-256 over `coffre-trainer-command/v1`, then a line per word:
`file SHA256` for the executable (found on PATH) and every argument naming an existing file,
`arg WORD` for any other argument. Measure it on the image the worker runs, with the same paths.

Example:
  coffre-worker measure -- torchrun --nproc-per-node 8 /opt/train/peft_lora.py")]
    Measure {
        /// The external trainer command
        #[arg(last = true)]
        command: Vec<String>,
    },
}

#[derive(Debug, Subcommand)]
enum SimulateCommand {
    /// Generate a simulated machine and the roots a development vault must trust
    Init {
        /// Where to write the machine (its simulated keys; written owner-only)
        #[arg(long)]
        out: PathBuf,
        /// Where to write the roots for `coffred serve --dev --dev-roots`
        #[arg(long)]
        roots: PathBuf,
        /// Simulated H100 GPUs
        #[arg(long, default_value_t = 1)]
        gpus: usize,
    },
    /// Write a copy of a simulated machine whose guests are launched with debugging allowed (its
    /// evidence verifies, and every policy that checks the debug bit denies it)
    DebugGuest {
        /// The simulated machine
        #[arg(long)]
        machine: PathBuf,
        /// Where to write the copy (owner-only)
        #[arg(long)]
        out: PathBuf,
    },
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum TemplateArg {
    /// prompt and completion as they are
    Plain,
    /// ChatML, for instruct models such as SmolLM2
    Chatml,
}

#[derive(Debug, Args)]
struct RunArgs {
    /// The vault (https://host:port)
    #[arg(long, env = "COFFRE_VAULT")]
    vault: String,
    /// The vault's certificate fingerprint (sha256:…), pinned
    #[arg(long, env = "COFFRE_VAULT_FINGERPRINT")]
    fingerprint: Option<String>,
    /// The tenant
    #[arg(long)]
    tenant: String,
    /// The job id (`coffre job list`)
    #[arg(long)]
    job: String,
    /// Where the CPU evidence comes from
    #[arg(long, value_enum)]
    tee: TeeKind,
    /// GPU evidence
    #[arg(long, value_enum, default_value = "none")]
    gpu: GpuKind,
    /// The Confidential Containers attestation agent's REST API, for --tee/--gpu coco
    /// (guest-components v0.21 or later; loopback only)
    #[arg(long, env = "COFFRE_AA_URL", default_value = coffre_worker::coco::DEFAULT_URL)]
    aa_url: String,
    /// The simulated machine (`coffre-worker simulate init`), for --tee/--gpu simulated
    #[arg(long, env = "COFFRE_SIMULATED_MACHINE")]
    simulated_machine: Option<PathBuf>,
    /// The base model: a directory (config.json, *.safetensors, tokenizer.json) or a GGUF file;
    /// its digest must equal the job's. Without it, the model the job pins is fetched from the
    /// vault's model store (`coffre model upload`) into WORK_DIR/models, checked, and reused
    #[arg(long)]
    base_model: Option<PathBuf>,
    /// Working directory: downloaded sealed objects, the sealed checkpoint and the sealed
    /// artifact (nothing in the clear). A run killed midway resumes from its checkpoint here.
    #[arg(long, default_value = "coffre-work")]
    work_dir: PathBuf,
    /// The artifact's model name (default: the job's name)
    #[arg(long)]
    model: Option<String>,
    /// The artifact's version (default: one after the latest registered)
    #[arg(long)]
    version: Option<u64>,
    /// Seal a checkpoint every N steps (0: never)
    #[arg(long, default_value_t = 25)]
    checkpoint_every: usize,
    /// How records become text
    #[arg(long, value_enum, default_value = "plain")]
    template: TemplateArg,
    /// Also seal the merged model (LoRA jobs)
    #[arg(long)]
    merge: bool,
    /// No progress lines
    #[arg(long, short)]
    quiet: bool,
    /// Print the result as JSON
    #[arg(long)]
    json: bool,
    /// `builtin` (coffre-trainer) or `external` (the command after `--`)
    #[arg(long, value_enum, default_value = "builtin")]
    trainer: TrainerArg,
    /// A memory-backed directory (tmpfs) the external trainer's output directory is made in
    #[arg(long, default_value = "/dev/shm")]
    memory_dir: PathBuf,
    /// The external trainer: it reads the decrypted records (JSON Lines) on standard input and
    /// writes its outputs into $COFFRE_OUTPUT_DIR; $COFFRE_RECIPE is the job's recipe (JSON),
    /// $COFFRE_BASE_MODEL the base model's path
    #[arg(last = true, value_name = "CMD")]
    command: Vec<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TrainerArg {
    /// coffre-trainer, in this process (LoRA, full, DP-SGD; sealed checkpoints)
    Builtin,
    /// the command after `--`, in this VM
    External,
}

// Training allocates and frees tensor buffers on every thread at every step; the same allocator
// as `coffre train`, so the confidential path costs no more than the plain one.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    let cli = Cli::parse();
    // `run` with the built-in trainer trains in this process: it becomes one under the training
    // settings (exec, same process) before any key or record exists in it. An external trainer
    // gets the environment as the operator set it.
    if let Command::Run(a) = &cli.command
        && a.trainer == TrainerArg::Builtin
    {
        coffre_trainer::restart_tuned();
    }
    let result = match cli.command {
        Command::Run(a) => run_command(*a),
        Command::Simulate(SimulateCommand::Init { out, roots, gpus }) => simulate_init(&out, &roots, gpus),
        Command::Simulate(SimulateCommand::DebugGuest { machine, out }) => simulate_debug_guest(&machine, &out),
        Command::Measure { command } => {
            let m = if command.is_empty() {
                coffre_worker::run::trainer_measurement()
            } else {
                coffre_worker::external::measure(&command)
            };
            m.map(|m| println!("{m}"))
        }
        Command::ModelDigest { path } => {
            coffre_api::model::digest_path(&path).map(|(_, d)| println!("{d}")).map_err(|e| Failure::new(e.to_string()))
        }
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(f) => {
            eprintln!("error: {f}");
            if let Some(id) = f.denial {
                eprintln!("denial id: {id}");
            }
            ExitCode::from(u8::try_from(f.code).unwrap_or(1))
        }
    }
}

fn run_command(a: RunArgs) -> Result<(), Failure> {
    let trainer = match (a.trainer, a.command.is_empty()) {
        (TrainerArg::Builtin, true) => TrainerChoice::Builtin,
        (TrainerArg::Builtin, false) => {
            return Err(Failure::usage("a command after -- needs --trainer external"));
        }
        (TrainerArg::External, true) => return Err(Failure::usage("--trainer external needs the command after --")),
        (TrainerArg::External, false) => {
            TrainerChoice::External { command: a.command.clone(), memory_dir: a.memory_dir.clone() }
        }
    };
    let token = std::env::var("COFFRE_TOKEN")
        .map_err(|_| Failure::usage("set COFFRE_TOKEN to a worker-operator token for the tenant"))?;
    let sources = Sources::open(a.tee, a.gpu, a.simulated_machine.as_deref(), &a.aa_url).map_err(Failure::usage)?;
    let report = run(RunOptions {
        vault: a.vault,
        fingerprint: a.fingerprint,
        token,
        tenant: a.tenant,
        job: a.job,
        sources,
        base_model: a.base_model,
        work_dir: a.work_dir,
        model: a.model,
        version: a.version,
        checkpoint_every: a.checkpoint_every,
        template: match a.template {
            TemplateArg::Plain => Template::Plain,
            TemplateArg::Chatml => Template::ChatMl,
        },
        merge: a.merge,
        quiet: a.quiet,
        trainer,
    })?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        println!(
            "artifact {} v{} registered at log entry {} (release {}{})",
            report.artifact.model,
            report.artifact.version,
            report.artifact.log_index,
            report.release,
            if report.simulated { ", SIMULATED evidence" } else { "" }
        );
        println!("  sealed  {} ({} bytes, {})", report.path.display(), report.artifact.size, report.artifact.digest);
        println!("  files   {}", report.files.join(", "));
        let held = report.held_out_loss.map(|l| format!(", held-out {l:.4}")).unwrap_or_default();
        if let Some(loss) = report.final_loss {
            println!("  loss    {loss:.4}{held}");
        }
    }
    Ok(())
}

#[cfg(feature = "simulated")]
fn write_machine(m: &coffre_attestation::simulated::SimulatedMachine, out: &std::path::Path) -> Result<(), Failure> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let json = m.to_json().map_err(Failure::new)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(out)
        .map_err(|e| Failure::new(format!("{}: {e}", out.display())).hint("choose a new file name"))?;
    f.write_all(json.as_bytes()).map_err(|e| Failure::new(format!("{}: {e}", out.display())))
}

#[cfg(feature = "simulated")]
fn simulate_debug_guest(machine: &std::path::Path, out: &std::path::Path) -> Result<(), Failure> {
    let text = std::fs::read_to_string(machine).map_err(|e| Failure::new(format!("{}: {e}", machine.display())))?;
    let m = coffre_attestation::simulated::SimulatedMachine::from_json(&text)
        .map_err(|e| Failure::new(format!("{}: {e}", machine.display())))?;
    write_machine(&m.with_debug_guest(), out)?;
    eprintln!(
        "wrote {}: the SIMULATED machine {} with debugging allowed in its guests",
        out.display(),
        machine.display()
    );
    Ok(())
}

#[cfg(not(feature = "simulated"))]
fn simulate_debug_guest(_: &std::path::Path, _: &std::path::Path) -> Result<(), Failure> {
    simulate_init(std::path::Path::new(""), std::path::Path::new(""), 0)
}

#[cfg(feature = "simulated")]
fn simulate_init(out: &std::path::Path, roots: &std::path::Path, gpus: usize) -> Result<(), Failure> {
    let m = coffre_attestation::simulated::SimulatedMachine::generate(gpus).map_err(Failure::new)?;
    write_machine(&m, out)?;
    std::fs::write(roots, m.roots_pem()).map_err(|e| Failure::new(format!("{}: {e}", roots.display())))?;
    eprintln!(
        "wrote the SIMULATED machine {} (SEV-SNP, {gpus} H100) and its roots {}\n\
         start a development vault with: coffred serve --dev --dev-roots {}",
        out.display(),
        roots.display(),
        roots.display()
    );
    Ok(())
}

#[cfg(not(feature = "simulated"))]
fn simulate_init(_: &std::path::Path, _: &std::path::Path, _: usize) -> Result<(), Failure> {
    Err(Failure::usage(
        "this build has no simulated hardware; it exists only in development builds (`--features simulated`)",
    ))
}
