//! `coffre`: the command line of the Coffre confidential-computing data vault.
//!
//! Data owners seal datasets on their own machines (`keygen`, `seal`, `open`, `inspect`); later
//! releases add policies, jobs, audits and attestation. `bench` measures this machine and `demo`
//! runs the whole flow locally.
//!
//! Errors print what happened and what to do next. Exit status: 0 success, 1 failure, 2 usage.

#![forbid(unsafe_code)]

/// `println!` that never panics: a closed standard output (`coffre … | head`) ends the process
/// with status 141, as a SIGPIPE would, instead of a panic.
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = writeln!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

/// `print!` counterpart of [`outln!`].
macro_rules! out {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        if let Err(e) = write!(std::io::stdout(), $($arg)*) {
            $crate::stdout_failed(e);
        }
    }};
}

/// Standard output cannot be written: the reader went away (exit 141) or it failed (exit 1).
fn stdout_failed(e: std::io::Error) -> ! {
    if e.kind() == std::io::ErrorKind::BrokenPipe {
        std::process::exit(141);
    }
    eprintln!("error: cannot write to standard output: {e}");
    std::process::exit(1);
}

mod artifact;
mod attest;
mod audit;
mod bench;
mod bench_log;
mod bench_release;
mod bench_train;
mod bench_worker;
mod demo;
mod demo_data;
mod demo_train;
mod demo_vault;
mod error;
mod generate;
mod io;
mod keys;
mod policy;
mod recorded;
mod remote;
mod report;
mod sealing;
mod train;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::error::{CliError, CliResult};

#[derive(Debug, Parser)]
#[command(
    name = "coffre",
    version,
    about = "Seal datasets so that only attested confidential-computing workers can read them",
    long_about = "Seal datasets so that only attested confidential-computing workers can read them.\n\n\
        A data owner seals a file on their own machine: it is encrypted under a fresh data key, and \
        that key is wrapped to each recipient's public key. Only ciphertext ever needs to leave the \
        machine. Recipients open it with their secret key.",
    after_help = "\
Getting started:
  coffre keygen -o me.key                              # make a key pair; prints the public key
  coffre seal -r coffre-p384-pub-… data.jsonl -o data.jsonl.coffre
  coffre inspect data.jsonl.coffre                     # what the header says (no key needed)
  coffre open -i me.key data.jsonl.coffre -o data.jsonl
  coffre train --model base.gguf --data data.jsonl --out run1   # LoRA fine-tuning (see --help)
  coffre demo                                          # the whole flow on this machine

With a vault (coffred; set COFFRE_VAULT, COFFRE_VAULT_FINGERPRINT and COFFRE_TOKEN):
  coffre tenant show bank-a                            # the KEK public key to seal datasets to
  coffre dataset register cards --tenant bank-a --label customer-pii
  coffre dataset upload cards cards.jsonl.coffre --tenant bank-a
  coffre policy propose --tenant bank-a bank-strict.toml
  coffre job submit --tenant bank-a --dataset cards --output-recipient … --sign me.sign.key
  coffre audit verify --vault https://… --log-key KEY  # the live log, audited offline"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a recipient key pair (P-384) or an approver key (--approver), or print a public key
    Keygen(keys::KeygenArgs),
    /// Seal a file to one or more recipients
    Seal(sealing::SealArgs),
    /// Open a sealed file with your secret key
    Open(sealing::OpenArgs),
    /// Show a sealed file's header (no key needed; nothing in it is secret)
    Inspect(sealing::InspectArgs),
    /// Key-release policies: check, approve (M of N), verify approvals, dry-run over evidence
    #[command(subcommand)]
    Policy(policy::PolicyCommand),
    /// Verify hardware attestation evidence offline (for auditors)
    #[command(subcommand)]
    Attest(attest::AttestCommand),
    /// Audit an exported transparency log offline (for auditors)
    #[command(subcommand)]
    Audit(audit::AuditCommand),
    /// Measure this machine (sealing throughput, memory) next to its own baseline
    #[command(subcommand)]
    Bench(bench::BenchCommand),
    /// Fine-tune a Llama-architecture model (LoRA, full or DP-SGD) on a local JSONL file
    Train(Box<train::TrainArgs>),
    /// A model's answers to prompts, with or without a LoRA adapter
    Generate(generate::GenerateArgs),
    /// Run the end-to-end demo on this machine
    Demo(demo::DemoArgs),
    /// On a vault: tenants and their KEKs
    #[command(subcommand)]
    Tenant(remote::TenantCommand),
    /// On a vault: principals and their tokens
    #[command(subcommand)]
    Principal(remote::PrincipalCommand),
    /// On a vault: the tenant's approver set
    #[command(subcommand)]
    Approvers(remote::ApproversCommand),
    /// On a vault: datasets and their sealed objects
    #[command(subcommand)]
    Dataset(remote::DatasetCommand),
    /// On a vault: signed job manifests
    #[command(subcommand)]
    Job(remote::JobCommand),
    /// On a vault: trained, sealed artifacts
    #[command(subcommand)]
    Artifact(remote::ArtifactCommand),
    /// On a vault: denied releases and why
    #[command(subcommand)]
    Denial(remote::DenialCommand),
    /// On a vault: the tenant's base models, by digest
    #[command(subcommand)]
    Model(remote::ModelCommand),
}

fn run(cli: Cli) -> CliResult {
    match cli.command {
        Command::Keygen(args) => keys::run_keygen(&args),
        Command::Seal(args) => {
            let report = sealing::run_seal(&args)?;
            sealing::print_seal_summary(&args, &report);
            Ok(())
        }
        Command::Open(args) => {
            let (header, n) = sealing::run_open(&args)?;
            if args.output.as_os_str() != "-" {
                eprintln!(
                    "opened {} ({}, {}) -> {}",
                    args.input.display(),
                    io::bytes(n),
                    header.content_type,
                    args.output.display()
                );
            }
            Ok(())
        }
        Command::Inspect(args) => sealing::run_inspect(&args),
        Command::Attest(cmd) => {
            if attest::run(&cmd)? {
                Ok(())
            } else {
                // The evidence is invalid: the report above says why. Exit 1, no extra message.
                Err(CliError { message: String::new(), hint: None, code: 1 })
            }
        }
        Command::Policy(cmd) => policy::run(&cmd),
        Command::Audit(cmd) => {
            if audit::run(&cmd)? {
                Ok(())
            } else {
                // The report above lists every discrepancy. Exit 1, no extra message.
                Err(CliError { message: String::new(), hint: None, code: 1 })
            }
        }
        Command::Bench(cmd) => bench::run(&cmd),
        Command::Train(args) => train::run(&args),
        Command::Generate(args) => generate::run(&args),
        Command::Demo(args) => demo::run(&args),
        Command::Tenant(cmd) => remote::tenant(&cmd),
        Command::Principal(cmd) => remote::principal(&cmd),
        Command::Approvers(cmd) => remote::approvers(&cmd),
        Command::Dataset(cmd) => remote::dataset(&cmd),
        Command::Job(cmd) => remote::job(&cmd),
        Command::Artifact(cmd) => remote::artifact(&cmd),
        Command::Denial(cmd) => remote::denial(&cmd),
        Command::Model(cmd) => remote::model(&cmd),
    }
}

/// `coffre train`, `coffre bench train` and `coffre demo` replace themselves once with a process
/// under the training settings ([`coffre_trainer::restart_tuned`] says which and why).
fn tuned_restart() {
    let args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    let training = match args.get(1).and_then(|a| a.to_str()) {
        Some("train" | "demo") => true,
        Some("bench") => args.get(2).and_then(|a| a.to_str()) == Some("train"),
        _ => false,
    };
    if training {
        coffre_trainer::restart_tuned();
    }
}

// Sealing, opening and the benchmarks allocate short buffers on several threads; mimalloc costs
// less CPU there than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> ExitCode {
    tuned_restart();
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            if !err.message.is_empty() {
                eprintln!("{err}");
            }
            ExitCode::from(err.code)
        }
    }
}
