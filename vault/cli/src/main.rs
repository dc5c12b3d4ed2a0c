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

mod attest;
mod audit;
mod bench;
mod bench_log;
mod demo;
mod demo_data;
mod error;
mod io;
mod keys;
mod ledger;
mod policy;
mod recorded;
mod sealing;

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
  coffre demo                                          # the whole flow on this machine"
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
    /// Run the end-to-end demo on this machine
    Demo(demo::DemoArgs),
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
        Command::Demo(args) => demo::run(&args),
    }
}

fn main() -> ExitCode {
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
