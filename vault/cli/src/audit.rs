//! `coffre audit verify`: an auditor's offline check of an exported transparency log.
//!
//! The checks themselves are `coffre_broker::audit`, which replays the log through the same
//! `LogState` the vault decides with; this module reads arguments and files, and prints.

use std::fs;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use coffre_attestation::composite::CompositeVerifier;
use coffre_broker::audit::{Audience, AuditState, Report, STATE_FORMAT, audit, audit_with_events};
use coffre_log::{DirStore, NoteVerifier};

use crate::error::{CliError, CliResult};
use crate::recorded::SimulatedRoots;

#[derive(Debug, Subcommand)]
pub enum AuditCommand {
    /// Verify an exported log offline: signed, consistent, complete, and every release justified
    #[command(after_help = "\
EXPORT is a log directory as the vault exports it:
  entries.jsonl          one canonical entry per line
  leaves                 the 32-byte leaf hash of each entry (locates edited entries)
  checkpoint             the latest signed checkpoint (C2SP tlog-checkpoint, Ed25519)
  checkpoints/<size>     every checkpoint the log signed
  blobs/sha256/<hex>     evidence bundles, evidence, policy documents, approvals

Pin the log's key (`name+hash+base64`, from the vault operator through a channel you trust) with
--log-key, the key text or a file holding it. With --state FILE the audit also proves that the
log only grew since the checkpoint remembered there (a fork or a rollback is reported), then
remembers the new checkpoint; the first run creates FILE and remembers the key too.

Every entry is replayed through the rules the vault itself applies before logging (one shared
state machine): entry times never go backwards; approver sets change only with M of N of the
set in force; each policy approval's signature is checked; policies activate only with enough
approvals and only to a higher version; labels come from the dataset's registration; a release
names exactly its job's datasets and the keys registered for them (never another tenant's or
dataset's), a nonce never seen before, evidence verified at most 300 s before the entry, and
policies evaluated at the entry's time; artifacts name an earlier release of their own job with
an increasing version. Every release's evidence is re-verified against the pinned vendor roots
at its recorded time, REPORT_DATA = SHA-512(label | nonce | SHA-256(worker keys) | SHA-256(job
manifest)) recomputed, and its evidence bundle recomputed byte for byte. Entries after the
latest checkpoint are unsigned and reported. Releases on simulated evidence verify only with
--dangerous-accept-simulated-roots; without it, a log that ever enables development mode fails.

Exit status: 0 complete, untampered and every release justified; 1 any discrepancy (each printed
with its entry index and reason); 2 the export or a file cannot be read.

Examples:
  coffre audit verify --dir export/ --log-key vault.example.com/coffre+1a2b3c4d+AW…
  coffre audit verify --dir export/ --log-key log.pub --state audit-state.json --json")]
    Verify(VerifyArgs),
    /// The audit as one self-contained HTML page for compliance officers: the verdict first, each
    /// dataset's timeline, each release's hardware and policies, each denial's failed checks,
    /// the lineage from dataset to model, the log's checkpoint
    #[command(after_help = "\
The page holds no script and loads nothing: open it in any browser, print it, or keep it as
evidence. It is written even when the audit finds discrepancies (they come first, each naming its
entry); the exit status is then 1, as for `coffre audit verify`.

Examples:
  coffre audit report --vault https://vault.bank.example:8443 --log-key log.pub -o audit.html
  coffre audit report --dir export/ --log-key log.pub --state audit-state.json -o audit.html")]
    Report(ReportArgs),
}

#[derive(Debug, Args)]
pub struct ReportArgs {
    #[command(flatten)]
    pub audit: VerifyArgs,
    /// Where to write the HTML page
    #[arg(short = 'o', long, value_name = "FILE")]
    pub output: PathBuf,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The exported log directory
    #[arg(long, value_name = "EXPORT", required_unless_present = "vault")]
    pub dir: Option<PathBuf>,

    /// Audit a live vault's log: export it (as this principal may see it) into a temporary
    /// directory, then audit that offline (--dir, when given too, wins: COFFRE_VAULT in the
    /// environment does not get in the way of an offline audit)
    #[arg(long, value_name = "URL", env = "COFFRE_VAULT")]
    pub vault: Option<String>,

    /// The vault certificate's SHA-256 fingerprint (pins it)
    #[arg(long, value_name = "SHA256", env = "COFFRE_VAULT_FINGERPRINT")]
    pub vault_fingerprint: Option<String>,

    /// Keep the exported log in DIR (with --vault) instead of a temporary directory
    #[arg(long, value_name = "DIR", requires = "vault")]
    pub export_to: Option<PathBuf>,

    /// The log's verifier key (name+hash+base64), or a file holding it
    #[arg(long, value_name = "PUB")]
    pub log_key: Option<String>,

    /// The checkpoint remembered from the last audit; checked for consistency, then updated
    #[arg(long, value_name = "FILE")]
    pub state: Option<PathBuf>,

    /// DEVELOPMENT ONLY: trust the simulated roots in this file when re-verifying releases made on
    /// simulated evidence
    #[arg(long, value_name = "FILE")]
    pub dangerous_accept_simulated_roots: Option<PathBuf>,

    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

fn read_key(text: &str) -> CliResult<NoteVerifier> {
    let path = Path::new(text);
    let text = if path.is_file() {
        fs::read_to_string(path).map_err(|e| CliError::io("read", path, &e))?
    } else {
        text.to_owned()
    };
    NoteVerifier::from_text(&text).map_err(|e| {
        CliError::usage(format!("--log-key: {e}"))
            .hint("give the log's verifier key `name+hash+base64` (or a file holding it) as the operator published it")
    })
}

fn read_state(path: &Path) -> CliResult<Option<AuditState>> {
    let bytes = match fs::read(path) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(CliError::io("read", path, &e)),
    };
    let state: AuditState = serde_json::from_slice(&bytes)
        .ok()
        .filter(|s: &AuditState| s.format == STATE_FORMAT)
        .ok_or_else(|| CliError::usage(format!("{} is not an audit state file ({STATE_FORMAT})", path.display())))?;
    Ok(Some(state))
}

fn write_state(path: &Path, state: &AuditState) -> CliResult {
    let tmp = path.with_extension("tmp");
    let text = serde_json::to_string_pretty(state).unwrap_or_default() + "\n";
    fs::write(&tmp, text).map_err(|e| CliError::io("write", &tmp, &e))?;
    fs::rename(&tmp, path).map_err(|e| CliError::io("write", path, &e))
}

/// The log directory to audit: `dir` as given, or the log of the vault at `vault` exported into
/// `export_to` or a temporary directory (returned, to be kept alive while the log is read).
pub fn obtain(
    dir: Option<&PathBuf>,
    vault: Option<&String>,
    fingerprint: Option<String>,
    export_to: Option<&PathBuf>,
    quiet: bool,
) -> CliResult<(Option<tempfile::TempDir>, PathBuf)> {
    match (dir, vault) {
        (Some(d), _) => Ok((None, d.clone())),
        (None, Some(url)) => {
            let mut temporary = None;
            let target = match export_to {
                Some(d) => d.clone(),
                None => {
                    let t = tempfile::tempdir().map_err(|e| CliError::new(format!("temporary directory: {e}")))?;
                    let target = t.path().join("log");
                    temporary = Some(t);
                    target
                }
            };
            let v = crate::remote::VaultArgs {
                vault: Some(url.clone()),
                vault_fingerprint: fingerprint,
                token_file: std::env::var_os("COFFRE_TOKEN_FILE").map(std::path::PathBuf::from),
                client_config: None,
                json: false,
            };
            let size = crate::remote::export_log(&v, &target)?;
            if !quiet {
                outln!("Exported    {size} entries from {url} into {}", target.display());
            }
            Ok((temporary, target))
        }
        (None, None) => Err(CliError::usage("give --dir EXPORT or --vault URL")),
    }
}

/// The pinned log key from `--log-key` (text or file).
pub fn log_key(text: &str) -> CliResult<NoteVerifier> {
    read_key(text)
}

pub fn run(cmd: &AuditCommand) -> CliResult<bool> {
    match cmd {
        AuditCommand::Verify(args) => verify(args),
        AuditCommand::Report(args) => report(args),
    }
}

fn report(args: &ReportArgs) -> CliResult<bool> {
    let a = &args.audit;
    let (report, roots, remembered) = audited(a, true)?;
    let source = crate::report::Source {
        from: a.vault.clone().or_else(|| a.dir.as_ref().map(|d| d.display().to_string())).unwrap_or_default(),
        made_at: std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0),
        simulated_roots: roots,
    };
    let page = crate::report::html(&report, &source);
    let tmp = args.output.with_extension("html.tmp");
    fs::write(&tmp, page).map_err(|e| CliError::io("write", &tmp, &e))?;
    fs::rename(&tmp, &args.output).map_err(|e| CliError::io("write", &args.output, &e))?;
    if a.json {
        outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        outln!(
            "{} {} ({} entries, {} release(s), {} denial(s), {} model(s)){}",
            if report.ok() { "OK:" } else { "DISCREPANCIES:" },
            args.output.display(),
            report.entries_audited,
            report.releases,
            report.denials,
            report.artifacts,
            remembered.map(|r| format!("; {r}")).unwrap_or_default()
        );
        for p in &report.problems {
            outln!("  ✗ {}{}", p.entry.map(|e| format!("entry {e}: ")).unwrap_or_default(), p.reason);
        }
    }
    Ok(report.ok())
}

/// Runs the audit `args` describe; returns the report, whether simulated roots were trusted,
/// and what was remembered in the state file.
fn audited(args: &VerifyArgs, events: bool) -> CliResult<(Report, bool, Option<String>)> {
    let state = args.state.as_deref().map(read_state).transpose()?.flatten();
    let key = match (&args.log_key, &state) {
        (Some(k), Some(s)) => {
            let key = read_key(k)?;
            if key.to_text() != s.log_key {
                return Err(CliError::usage(format!(
                    "--log-key is not the key remembered in the state file ({})",
                    s.log_key
                ))
                .hint("a log's key does not change; if it really did, start a new state file after checking why"));
            }
            key
        }
        (Some(k), None) => read_key(k)?,
        (None, Some(s)) => read_key(&s.log_key)?,
        (None, None) => {
            return Err(CliError::usage(
                "no log key: pin one with --log-key (or use a --state file that remembers it)",
            )
            .hint("the log key comes from the vault operator through a channel you trust, never from the export"));
        }
    };
    let roots = args.dangerous_accept_simulated_roots.as_deref().map(SimulatedRoots::load).transpose()?;
    let verifier = match &roots {
        // A development log may hold KBS releases on the sample TEE; they re-verify only
        // here, never in a production audit.
        Some(r) => r.composite_verifier()?.dangerous_accept_sample(),
        None => CompositeVerifier::new(),
    };
    let (_temporary, dir) = obtain(
        args.dir.as_ref(),
        args.vault.as_ref(),
        args.vault_fingerprint.clone(),
        args.export_to.as_ref(),
        args.json,
    )?;
    let store = DirStore::open_read_only(&dir).map_err(|e| {
        CliError::usage(e.to_string()).hint("give the directory the vault exported (it holds entries.jsonl)")
    })?;
    let audience = if roots.is_some() { Audience::Development } else { Audience::Production };
    let (report, new_state) = if events {
        audit_with_events(&store, &key, state.as_ref(), &verifier, audience)
    } else {
        audit(&store, &key, state.as_ref(), &verifier, audience)
    };
    let remembered = match (&args.state, &new_state) {
        (Some(path), Some(s)) => {
            write_state(path, s)?;
            Some(format!("remembering size {} in {}", s.size, path.display()))
        }
        (Some(path), None) => Some(format!("{} left unchanged (the log did not verify)", path.display())),
        (None, _) => None,
    };
    Ok((report, roots.is_some(), remembered))
}

fn verify(args: &VerifyArgs) -> CliResult<bool> {
    let first = args.state.as_deref().map(read_state).transpose()?.flatten().is_none();
    let (report, simulated_roots, remembered) = audited(args, false)?;
    if args.json {
        outln!("{}", serde_json::to_string_pretty(&report).unwrap_or_default());
    } else {
        print_report(&report, simulated_roots, remembered.as_deref(), first);
    }
    Ok(report.ok())
}

fn print_report(r: &Report, simulated_roots: bool, remembered: Option<&str>, first: bool) {
    outln!("Log         {}", r.log);
    outln!("Checkpoint  size {}, root {}", r.checkpoint_size, r.root);
    outln!("History     {} signed checkpoint(s) checked against the entries", r.checkpoints_checked);
    match (&r.state, remembered) {
        (Some(s), Some(m)) => outln!("State       {s}; {m}"),
        (None, Some(m)) if first => outln!("State       first audit with this state file; {m}"),
        (None, Some(m)) => outln!("State       {m}"),
        (_, None) => outln!("State       none kept (use --state FILE to detect forks and rollbacks between audits)"),
    }
    outln!(
        "Entries     {} audited; {} releases ({} SIMULATED), {} denials, {} policy activations, {} approver-set \
         changes, {} artifacts",
        r.entries_audited,
        r.releases,
        r.simulated_releases,
        r.denials,
        r.policies_activated,
        r.approver_set_changes,
        r.artifacts
    );
    if r.redacted > 0 {
        outln!(
            "            {} entries of other tenants are redacted to their leaf hash: the tree and its signatures cover \
             them, their content was not audited here",
            r.redacted
        );
    }
    for n in &r.notices {
        match n.entry {
            Some(i) => outln!("  ! entry {i}: {}", n.reason),
            None => outln!("  ! {}", n.reason),
        }
    }
    if simulated_roots {
        outln!("WARNING     simulated roots trusted (--dangerous-accept-simulated-roots): development only");
    }
    for p in &r.problems {
        match p.entry {
            Some(i) => outln!("  ✗ entry {i}: {}", p.reason),
            None => outln!("  ✗ {}", p.reason),
        }
    }
    if r.ok() {
        outln!("Result      OK: complete, untampered, and every release justified by its evidence and policy");
    } else {
        outln!("Result      {} DISCREPANCIES", r.problems.len());
    }
}
