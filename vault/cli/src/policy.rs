//! `coffre policy`: check, sign, verify and dry-run key-release policies.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use clap::{Args, Subcommand};
use coffre_attestation::UnixTime;
use coffre_policies::{
    Approval, ApproverSecretKey, ApproverSet, DryRun, LoadError, Mode, Policy, Request, Severity, Subject, dry_run,
    dry_run_unverified, explain, json_schema, lint,
};

use crate::error::{CliError, CliResult};
use crate::recorded;

#[derive(Debug, Subcommand)]
pub enum PolicyCommand {
    /// Lint a policy and explain in plain words what it allows
    #[command(after_help = "\
Prints the policy's digest (what approvers sign), what it allows, and every finding: errors are
contradictions (rules that make some or all requests impossible), warnings are weak spots a
reviewer should see (no launch measurement pinned, debug not forbidden, …).

Exit status: 0 no errors (warnings allowed), 1 contradictions found, 2 the file does not load.

Example:
  coffre policy check policies/bundled/bank-strict.toml")]
    Check(CheckArgs),
    /// Approve a policy (or a new approver set) with your approver key: a detached signature
    #[command(after_help = "\
The approval signs the document's tenant, id, version and the SHA-384 of its canonical form;
any later change to the policy, even of one number, needs new approvals. A policy with
contradictions is refused. Make an approver key with `coffre keygen --approver -o KEY`.

Example:
  coffre policy sign bank-strict.toml -i alice.approver.key -o bank-strict.v1.alice.approval")]
    Sign(SignArgs),
    /// Check approvals against the tenant's approver set (M of N)
    #[command(after_help = "\
For a policy, --approvers is the tenant's current approver set. For a new approver set (a file
with format = \"coffre-approvers/v1\"), --approvers is the set it replaces: a set changes only
with the threshold of the previous one.

Every approval is either counted once or rejected with its reason: stale (an older version),
another version, changed since approved, another tenant or document, a key outside the set, a
duplicate, or a bad signature.

Exit status: 0 the threshold is met, 1 it is not, 2 a file does not load.

Example:
  coffre policy verify bank-strict.toml *.approval --approvers example-bank.approvers.toml")]
    Verify(VerifyArgs),
    /// Evaluate a proposed policy against recorded evidence: what would be allowed, and why not
    #[command(after_help = "\
Each --evidence is either an evidence manifest (TOML, format = \"coffre-evidence/v1\", naming
the files of one appraisal relative to itself) or a self-contained evidence file: Trustee's Azure
SEV-SNP JSON (it carries the VCEK) or NVIDIA's JSON evidence list. A manifest:

  format = \"coffre-evidence/v1\"
  at = 2025-06-01T00:00:00Z            # when it was recorded: verification and policy time
  [cpu]
  kind = \"snp\"                         # snp: report, cert, chain, crl; tdx: quote, collateral
  report = \"report.bin\"
  cert = \"vcek.der\"
  [[gpus]]                             # optional, bound to the CPU report's REPORT_DATA
  report = \"gpu.hex\"
  chain = \"gpu-chain.pem\"
  rims = [\"driver.xml\", \"vbios.xml\"]

Evidence is verified against the pinned vendor roots at its recorded time (or --at), then the
policy's hardware rules are evaluated. With --request (a TOML or JSON key request: tenant,
dataset, dataset_labels, job, prior_releases) the scope and job rules are evaluated too.
Evidence that does not verify is denied with its failed verification checks (evidence.*).

--json prints one JSON array: {\"evidence\", \"allowed\", \"failed_checks\": [{\"name\", \"expected\",
\"actual\"}]} per evidence.

Exit status: 0 all allowed, 1 any denied, 2 a policy, evidence file or usage error.

Example:
  coffre policy dry-run bank-strict.toml --evidence recorded/*.toml")]
    DryRun(DryRunArgs),
    /// Print the JSON Schema of policy documents (for editors)
    Schema,
    /// On a vault: propose a policy version (logged)
    Propose(crate::remote::ProposeArgs),
    /// On a vault: add your approval of a proposed version (logged)
    Approve(crate::remote::ApproveArgs),
    /// On a vault: activate a proposed version with its logged approvals (M of N)
    Activate(crate::remote::ActivateArgs),
    /// On a vault: list the tenant's policy versions
    List(crate::remote::ListPoliciesArgs),
}

#[derive(Debug, Args)]
pub struct CheckArgs {
    /// The policy (TOML)
    pub file: PathBuf,
    /// Print {"policy", "digest", "explanation", "findings"} as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct SignArgs {
    /// The policy or approver set (TOML) to approve
    pub file: PathBuf,
    /// Your approver secret key (from `coffre keygen --approver`)
    #[arg(short = 'i', long = "identity", value_name = "KEY")]
    pub identity: PathBuf,
    /// Where to write the approval (default: FILE.<key id>.approval); `-` for standard output
    #[arg(short = 'o', long = "output", value_name = "APPROVAL")]
    pub output: Option<PathBuf>,
}

#[derive(Debug, Args)]
pub struct VerifyArgs {
    /// The policy or new approver set (TOML)
    pub file: PathBuf,
    /// Approval files
    #[arg(value_name = "APPROVAL", required = true)]
    pub approvals: Vec<PathBuf>,
    /// The tenant's approver set (for a new set: the set it replaces)
    #[arg(long, value_name = "FILE")]
    pub approvers: PathBuf,
    /// Print the report as JSON
    #[arg(long)]
    pub json: bool,
}

#[derive(Debug, Args)]
pub struct DryRunArgs {
    /// The proposed policy (TOML)
    pub file: PathBuf,
    /// Recorded evidence: manifests or self-contained evidence files; repeatable
    #[arg(long = "evidence", value_name = "PATH", required = true, num_args = 1..)]
    pub evidence: Vec<PathBuf>,
    /// A key request (TOML or JSON) to evaluate the scope and job rules with
    #[arg(long, value_name = "FILE")]
    pub request: Option<PathBuf>,
    /// Override the verification and evaluation time: RFC 3339 or `now` (default: each
    /// manifest's `at`, else now)
    #[arg(long, value_name = "RFC3339")]
    pub at: Option<String>,
    /// Evaluate as a vault in development mode (simulated evidence can then be allowed)
    #[arg(long)]
    pub development: bool,
    /// DEVELOPMENT ONLY: also trust the simulated roots in this file (simulated ARK, ASK and GPU root)
    #[arg(long, value_name = "PEM")]
    pub dangerous_accept_simulated_roots: Option<PathBuf>,
    /// Print one JSON array, one object per evidence
    #[arg(long)]
    pub json: bool,
}

pub fn run(cmd: &PolicyCommand) -> CliResult {
    match cmd {
        PolicyCommand::Check(a) => check(a),
        PolicyCommand::Sign(a) => sign(a),
        PolicyCommand::Verify(a) => verify(a),
        PolicyCommand::DryRun(a) => dry(a),
        PolicyCommand::Schema => {
            out!("{}", json_schema());
            Ok(())
        }
        PolicyCommand::Propose(a) => crate::remote::propose(a),
        PolicyCommand::Approve(a) => crate::remote::approve(a),
        PolicyCommand::Activate(a) => crate::remote::activate(a),
        PolicyCommand::List(a) => crate::remote::list_policies(a),
    }
}

fn read_text(path: &Path, what: &str) -> CliResult<String> {
    fs::read_to_string(path).map_err(|e| {
        let mut err = CliError::io(&format!("read the {what}"), path, &e);
        err.code = 2;
        err
    })
}

/// A load error as the CLI shows it: `FILE:LINE:COLUMN: message`, the line, a caret, the hint.
pub fn load_error(path: &Path, e: &LoadError) -> CliError {
    let mut message = if e.line > 0 {
        format!("{}:{}:{}: {}", path.display(), e.line, e.column, e.message)
    } else {
        format!("{}: {}", path.display(), e.message)
    };
    if let Some(line) = &e.source_line {
        message.push_str(&format!("\n  | {line}\n  | {}^", " ".repeat(e.column.saturating_sub(1))));
    }
    let mut err = CliError::usage(message);
    if let Some(h) = &e.hint {
        err = err.hint(h.clone());
    }
    err
}

pub fn load_policy(path: &Path) -> CliResult<Policy> {
    let text = read_text(path, "policy")?;
    Policy::from_toml(&text).map_err(|e| load_error(path, &e))
}

fn load_set(path: &Path) -> CliResult<ApproverSet> {
    let text = read_text(path, "approver set")?;
    ApproverSet::from_toml(&text).map_err(|e| load_error(path, &e))
}

enum Document {
    Policy(Box<Policy>),
    Set(ApproverSet),
}

/// A policy or an approver set, told apart by their `format` line.
fn load_document(path: &Path) -> CliResult<Document> {
    let text = read_text(path, "document")?;
    let format =
        text.parse::<toml::Table>().ok().and_then(|t| t.get("format").and_then(|f| f.as_str().map(str::to_owned)));
    if format.as_deref() == Some("coffre-approvers/v1") {
        return ApproverSet::from_toml(&text).map(Document::Set).map_err(|e| load_error(path, &e));
    }
    Policy::from_toml(&text).map(|p| Document::Policy(Box::new(p))).map_err(|e| load_error(path, &e))
}

fn check(args: &CheckArgs) -> CliResult {
    let policy = load_policy(&args.file)?;
    let findings = lint(&policy);
    let errors = findings.iter().filter(|f| f.severity == Severity::Error).count();
    if args.json {
        let doc = serde_json::json!({
            "policy": policy.reference(),
            "digest": policy.digest(),
            "explanation": explain(&policy),
            "findings": findings,
        });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        outln!("{}: {} (digest {})", args.file.display(), policy.reference(), policy.digest());
        outln!();
        for paragraph in explain(&policy) {
            outln!("{}", wrap(&paragraph, 100, ""));
        }
        outln!();
        if findings.is_empty() {
            outln!("No findings.");
        }
        for f in &findings {
            outln!("{}", wrap(&f.to_string(), 100, "    "));
        }
        let warnings = findings.len() - errors;
        outln!();
        outln!("{errors} error(s), {warnings} warning(s).");
    }
    if errors > 0 {
        return Err(CliError { message: String::new(), hint: None, code: 1 });
    }
    Ok(())
}

/// Wraps `text` at `width` columns, keeping its leading indentation; continuation lines are
/// indented by `indent`.
fn wrap(text: &str, width: usize, indent: &str) -> String {
    let lead = &text[..text.len() - text.trim_start().len()];
    let mut out = String::new();
    let mut line = lead.to_owned();
    let mut fresh = true;
    for word in text.split_whitespace() {
        if !fresh && line.chars().count() + 1 + word.chars().count() > width {
            out.push_str(&line);
            out.push('\n');
            line = indent.to_owned();
            fresh = true;
        }
        if !fresh {
            line.push(' ');
        }
        line.push_str(word);
        fresh = false;
    }
    out.push_str(&line);
    out
}

fn load_approver_key(path: &Path) -> CliResult<ApproverSecretKey> {
    let text = zeroize::Zeroizing::new(read_text(path, "approver key")?);
    ApproverSecretKey::from_key_file(&text).map_err(|e| {
        CliError::usage(format!("{}: {e}", path.display()))
            .hint("approvals are signed with an approver key: `coffre keygen --approver -o KEY`")
    })
}

fn sign(args: &SignArgs) -> CliResult {
    let key = load_approver_key(&args.identity)?;
    let subject = match load_document(&args.file)? {
        Document::Policy(policy) => {
            let errors: Vec<String> =
                lint(&policy).into_iter().filter(|f| f.severity == Severity::Error).map(|f| f.to_string()).collect();
            if !errors.is_empty() {
                return Err(CliError::new(format!(
                    "{} has contradictions; refusing to approve it:\n  {}",
                    args.file.display(),
                    errors.join("\n  ")
                ))
                .hint(format!("run `coffre policy check {}` and fix them first", args.file.display())));
            }
            eprintln!("You are approving:");
            for paragraph in explain(&policy) {
                eprintln!("  {}", wrap(&paragraph, 98, "  "));
            }
            Subject::of_policy(&policy)
        }
        Document::Set(set) => {
            eprintln!(
                "You are approving approver set version {} of {}: {} of {} ({})",
                set.version,
                set.tenant,
                set.threshold,
                set.approvers.len(),
                set.approvers.iter().map(|a| a.name.as_str()).collect::<Vec<_>>().join(", ")
            );
            Subject::of_set(&set)
        }
    };
    let approval = key.approve(&subject).map_err(CliError::new)?;
    let output = args.output.clone().unwrap_or_else(|| {
        let mut name = args.file.clone().into_os_string();
        name.push(format!(".{}.approval", key.public().key_id()));
        PathBuf::from(name)
    });
    let mut out = crate::io::Output::create(&output, false, false)?;
    out.write_all(approval.to_json().as_bytes()).map_err(|e| CliError::io("write", &output, &e))?;
    out.commit()?;
    eprintln!(
        "approved {subject} ({}) as {}; approval written to {}",
        subject.digest,
        key.public().key_id(),
        out_name(&output)
    );
    Ok(())
}

fn out_name(path: &Path) -> String {
    if path.as_os_str() == "-" { "standard output".into() } else { path.display().to_string() }
}

fn verify(args: &VerifyArgs) -> CliResult {
    let set = load_set(&args.approvers)?;
    let mut approvals = Vec::new();
    for path in &args.approvals {
        let text = read_text(path, "approval")?;
        approvals.push(Approval::from_json(&text).map_err(|e| {
            CliError::usage(format!("{}: {e}", path.display())).hint("approval files are made by `coffre policy sign`")
        })?);
    }
    let report = match load_document(&args.file)? {
        Document::Policy(policy) => {
            if policy.tenant != set.tenant {
                return Err(CliError::usage(format!(
                    "{} is a policy of tenant {}, but {} is the approver set of {}",
                    args.file.display(),
                    policy.tenant,
                    args.approvers.display(),
                    set.tenant
                )));
            }
            set.check(&Subject::of_policy(&policy), &approvals)
        }
        Document::Set(next) => set.review_change(&next, &approvals).map_err(CliError::usage)?,
    };
    if args.json {
        let doc = serde_json::json!({
            "subject": report.subject,
            "threshold": report.threshold,
            "of": report.of,
            "met": report.is_met(),
            "accepted": report.accepted,
            "rejected": report.rejected.iter().map(|(i, r)| serde_json::json!({
                "approval": args.approvals[*i].display().to_string(),
                "reason": r.to_string(),
                "detail": r,
            })).collect::<Vec<_>>(),
        });
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        outln!("{} ({})", report.subject, report.subject.digest);
        for name in &report.accepted {
            outln!("  approved by {name}");
        }
        for (i, r) in &report.rejected {
            outln!("  rejected {}: {r}", args.approvals[*i].display());
        }
        outln!(
            "{}: {} of the {} required approvals ({} approvers in set version {})",
            if report.is_met() { "APPROVED" } else { "NOT APPROVED" },
            report.accepted.len(),
            report.threshold,
            report.of,
            set.version
        );
    }
    if report.is_met() { Ok(()) } else { Err(CliError { message: String::new(), hint: None, code: 1 }) }
}

fn load_request(path: &Path) -> CliResult<Request> {
    let text = read_text(path, "request")?;
    let parsed = if text.trim_start().starts_with('{') {
        serde_json::from_str(&text).map_err(|e| e.to_string())
    } else {
        toml::from_str(&text).map_err(|e| LoadError::from_toml(&text, &e).to_string())
    };
    parsed.map_err(|e| {
        CliError::usage(format!("{}: {e}", path.display()))
            .hint("a request has tenant, dataset, dataset_labels, [job] (kind, trainer_measurement, base_model, epochs, steps, output_recipients) and prior_releases")
    })
}

fn dry(args: &DryRunArgs) -> CliResult {
    let policy = load_policy(&args.file)?;
    let request = args.request.as_deref().map(load_request).transpose()?;
    let at_override = match args.at.as_deref() {
        None => None,
        Some("now") => Some(UnixTime::now()),
        Some(t) => Some(
            UnixTime::parse_rfc3339(t)
                .map_err(|e| CliError::usage(e).hint("use --at 2025-06-01T00:00:00Z, or --at now"))?,
        ),
    };
    let mode = if args.development { Mode::Development } else { Mode::Production };
    let roots = args.dangerous_accept_simulated_roots.as_deref().map(recorded::SimulatedRoots::load).transpose()?;
    let mut results: Vec<(PathBuf, String, DryRun)> = Vec::new();
    for path in &args.evidence {
        let loaded = recorded::load(path)?;
        let at = at_override.or(loaded.at).unwrap_or_else(UnixTime::now);
        let (summary, outcome) = match recorded::verify(&loaded, at, roots.as_ref())? {
            recorded::Verified::Ok(v) => {
                let appraisal = v.appraisal();
                (v.summary(at), dry_run(&policy, &appraisal, request.as_ref(), at, mode))
            }
            recorded::Verified::Failed(failures) => (
                format!("did NOT verify at {at}"),
                dry_run_unverified(&policy, failures.iter().map(|(n, d)| (n.as_str(), d.as_str()))),
            ),
        };
        results.push((path.clone(), summary, outcome));
    }
    let denied = results.iter().filter(|(_, _, r)| !r.allowed).count();
    if args.json {
        let doc: Vec<serde_json::Value> = results
            .iter()
            .map(|(path, _, r)| {
                serde_json::json!({
                    "evidence": path.display().to_string(),
                    "allowed": r.allowed,
                    "failed_checks": r.failed.iter().map(|c| serde_json::json!({
                        "name": c.name, "expected": c.expected, "actual": c.actual,
                    })).collect::<Vec<_>>(),
                })
            })
            .collect();
        outln!("{}", serde_json::to_string_pretty(&doc).unwrap_or_default());
    } else {
        outln!(
            "Dry-run of {} ({}), {} mode; {}",
            policy.reference(),
            policy.digest(),
            match mode {
                Mode::Production => "production",
                Mode::Development => "development",
            },
            if request.is_some() {
                "scope and job rules evaluated with the request given"
            } else {
                "hardware rules only (give --request to evaluate the scope and job rules)"
            }
        );
        for (path, summary, r) in &results {
            outln!();
            if r.allowed {
                outln!("ALLOWED  {} ({summary}): {} checks passed", path.display(), r.checks.len());
            } else {
                outln!(
                    "DENIED   {} ({summary}): {} of {} checks failed",
                    path.display(),
                    r.failed.len(),
                    r.checks.len()
                );
                for c in &r.failed {
                    outln!(
                        "{}",
                        wrap(&format!("  ✗ {}: expected {}; found {}", c.name, c.expected, c.actual), 100, "      ")
                    );
                }
            }
        }
        outln!();
        outln!("{} allowed, {denied} denied, of {} evidence.", results.len() - denied, results.len());
    }
    if denied > 0 {
        return Err(CliError { message: String::new(), hint: None, code: 1 });
    }
    Ok(())
}
