//! `coffre demo`: the whole story on one machine, through the real processes — a development
//! vault (`coffred --dev`), the people of a bank using `coffre`, and an attested worker
//! (`coffre-worker --tee simulated`) — every step printed as the command a user would type, then
//! run as that command.
//!
//! Nothing happens in this process but printing, waiting and writing the synthetic dataset: each
//! step is a child process of the three binaries, which must sit beside this one (`scripts/demo`
//! builds them).

use std::collections::BTreeMap;
use std::fs;
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::demo::{DemoArgs, step};
use crate::error::{CliError, CliResult};

const TENANT: &str = "example-bank";

/// Runs the binaries, printing each command first.
struct Shell {
    dir: PathBuf,
    bin: PathBuf,
    env: BTreeMap<String, String>,
    /// Whose token the next `coffre` command uses (a file in `dir`).
    acting_as: Option<String>,
}

/// What a command printed and how it ended.
struct Ran {
    ok: bool,
    code: Option<i32>,
    stdout: String,
    /// Standard output and error together.
    output: String,
}

impl Shell {
    fn program(&self, name: &str) -> PathBuf {
        self.bin.join(name)
    }

    /// Prints `$ export NAME=VALUE` and sets it for later commands.
    fn export(&mut self, name: &str, value: &str) {
        outln!("   $ export {name}={value}");
        self.env.insert(name.into(), value.into());
    }

    /// Acts as the principal whose token is in `who.tok`.
    fn act_as(&mut self, who: &str, role: &str) {
        if self.acting_as.as_deref() != Some(who) {
            outln!("   $ export COFFRE_TOKEN_FILE={who}.tok      # acting as {role}");
            self.env.insert("COFFRE_TOKEN_FILE".into(), format!("{who}.tok"));
            self.acting_as = Some(who.into());
        }
    }

    fn command(&self, program: &str, args: &[&str]) -> Command {
        let mut c = Command::new(self.program(program));
        c.args(args).current_dir(&self.dir).env_remove("COFFRE_TOKEN").env_remove("COFFRE_CLIENT_CONFIG");
        c.env("COFFRE_CLIENT_CONFIG", self.dir.join("no-client-config.toml"));
        for (k, v) in &self.env {
            c.env(k, v);
        }
        c
    }

    /// Prints and runs `program args`, showing its output indented (at most `show` lines of
    /// it; all of it on failure).
    fn run_with(&self, prefix: &str, program: &str, args: &[&str], show: usize) -> CliResult<Ran> {
        outln!("   $ {prefix}{program} {}", args.iter().map(|a| quote(a)).collect::<Vec<_>>().join(" "));
        // Standard output alone (what a caller parses), and both streams through one pipe, in
        // the order the program wrote them (what is shown).
        let (mut both, writer) = std::io::pipe().map_err(|e| CliError::new(format!("pipe: {e}")))?;
        let mut c = self.command(program, args);
        let errors = writer.try_clone().map_err(|e| CliError::new(format!("pipe: {e}")))?;
        let mut child = c
            .stdout(Stdio::piped())
            .stderr(errors)
            .spawn()
            .map_err(|e| CliError::new(format!("cannot run {program}: {e}")))?;
        drop(c);
        let mut out_pipe = child.stdout.take().ok_or_else(|| CliError::new("no pipe"))?;
        let tee = std::thread::spawn(move || {
            let mut captured = Vec::new();
            let mut w = writer;
            let mut buf = [0u8; 8192];
            loop {
                match std::io::Read::read(&mut out_pipe, &mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => {
                        captured.extend_from_slice(&buf[..n]);
                        let _ = w.write_all(&buf[..n]);
                    }
                }
            }
            captured
        });
        // Shown as it comes (a worker's progress lines while it trains), up to `show` lines;
        // on failure, the rest too.
        let mut shown = String::new();
        let mut held_back = Vec::new();
        let mut printed = 0usize;
        for line in std::io::BufRead::lines(std::io::BufReader::new(&mut both)) {
            let line = line.map_err(|e| CliError::new(format!("pipe: {e}")))?;
            shown.push_str(&line);
            shown.push('\n');
            if line.trim().is_empty() {
                continue;
            }
            if printed < show {
                outln!("     {line}");
                printed += 1;
            } else {
                held_back.push(line);
            }
        }
        let stdout = String::from_utf8_lossy(&tee.join().unwrap_or_default()).into_owned();
        let status = child.wait().map_err(|e| CliError::new(format!("{program}: {e}")))?;
        if !status.success() {
            for l in &held_back {
                outln!("     {l}");
            }
        } else if show > 0 && !held_back.is_empty() {
            outln!("     … ({} more lines)", held_back.len());
        }
        Ok(Ran { ok: status.success(), code: status.code(), stdout, output: shown })
    }

    /// Like [`Shell::run_with`], failing the demo when the command fails.
    fn run(&self, program: &str, args: &[&str], show: usize) -> CliResult<String> {
        let r = self.run_with("", program, args, show)?;
        if !r.ok {
            return Err(CliError::new(format!("demo: `{program} {}` failed", args.join(" "))));
        }
        Ok(r.stdout)
    }
}

fn quote(a: &str) -> String {
    if !a.is_empty() && a.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+".contains(c)) {
        a.to_owned()
    } else {
        format!("'{}'", a.replace('\'', "'\\''"))
    }
}

fn json(text: &str, what: &str) -> CliResult<serde_json::Value> {
    serde_json::from_str(text).map_err(|e| CliError::new(format!("demo: {what} is not JSON: {e}")))
}

fn write_private(path: &Path, text: &str) -> CliResult {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| CliError::io("create", path, &e))?;
    f.write_all(text.as_bytes()).map_err(|e| CliError::io("write", path, &e))
}

/// The running development vault; stopped (SIGTERM, then waited for) on drop unless kept.
struct Vault {
    child: Option<Child>,
}

impl Drop for Vault {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            if let Some(pid) = rustix::process::Pid::from_raw(c.id() as i32) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            }
            let _ = c.wait();
        }
    }
}

fn free_port() -> CliResult<u16> {
    let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(|e| CliError::new(format!("no free port: {e}")))?;
    Ok(l.local_addr().map_err(|e| CliError::new(e.to_string()))?.port())
}

/// The three binaries, beside this one.
fn binaries() -> CliResult<PathBuf> {
    let exe = std::env::current_exe().map_err(|e| CliError::new(format!("cannot find this executable: {e}")))?;
    let bin = exe.parent().map(Path::to_path_buf).unwrap_or_default();
    for name in ["coffred", "coffre-worker"] {
        if !bin.join(name).is_file() {
            return Err(CliError::new(format!("demo: {name} is not beside {}", exe.display())).hint(
                "build all three with: cargo build --release -p coffre-cli -p coffre-vault -p coffre-worker --features coffre-cli/simulated,coffre-worker/simulated (scripts/demo does)",
            ));
        }
    }
    Ok(bin)
}

pub fn run(args: &DemoArgs, dir: &Path, records: usize) -> CliResult {
    let started = Instant::now();
    let bin = binaries()?;
    let mut sh = Shell { dir: dir.to_path_buf(), bin: bin.clone(), env: BTreeMap::new(), acting_as: None };
    outln!("Coffre, end to end on this machine: a development vault, a bank's people, an attested worker.");
    outln!("Working directory: {}   (every command below runs there)", dir.display());
    outln!("Binaries: {}", bin.display());

    step(1, "Development hardware: a simulated SEV-SNP machine with one H100, and the roots a --dev vault trusts");
    sh.run(
        "coffre-worker",
        &["simulate", "init", "--out", "machine.json", "--roots", "dev-roots.pem", "--gpus", "1"],
        4,
    )?;

    step(
        2,
        "The vault: initialise a data directory, serve it in development mode (simulated evidence accepted, marked, logged)",
    );
    let port = free_port()?;
    let listen = format!("127.0.0.1:{port}");
    outln!("   $ coffred init --data-dir vault --listen {listen}");
    let init = sh.command("coffred", &["init", "--data-dir", "vault", "--listen", &listen]).output();
    let init = init.map_err(|e| CliError::new(format!("cannot run coffred: {e}")))?;
    let text = String::from_utf8_lossy(&init.stdout).into_owned();
    if !init.status.success() {
        return Err(CliError::new(format!("demo: coffred init failed: {}", String::from_utf8_lossy(&init.stderr))));
    }
    let field = |name: &str| {
        text.lines()
            .find(|l| l.trim_start().starts_with(name))
            .and_then(|l| l.trim_start()[name.len()..].split_whitespace().next())
            .map(str::to_owned)
            .ok_or_else(|| CliError::new(format!("demo: coffred init printed no {name}")))
    };
    let fingerprint = field("TLS fingerprint")?;
    let log_key = field("log key")?;
    let admin = text
        .lines()
        .skip_while(|l| !l.starts_with("Vault administrator token"))
        .nth(1)
        .map(|l| l.trim().to_owned())
        .ok_or_else(|| CliError::new("demo: coffred init printed no administrator token"))?;
    write_private(&dir.join("admin.tok"), &admin)?;
    for l in text.lines().filter(|l| !l.trim().is_empty() && !l.contains(&admin)) {
        outln!("     {l}");
    }
    outln!("     (the administrator token is in admin.tok)");
    outln!("   $ coffred serve --data-dir vault --dev --dev-roots dev-roots.pem 2> vault.log &");
    let log =
        fs::File::create(dir.join("vault.log")).map_err(|e| CliError::io("create", &dir.join("vault.log"), &e))?;
    let child = sh
        .command("coffred", &["serve", "--data-dir", "vault", "--dev", "--dev-roots", "dev-roots.pem"])
        .stdout(Stdio::null())
        .stderr(log)
        .spawn()
        .map_err(|e| CliError::new(format!("cannot start coffred: {e}")))?;
    let mut vault = Vault { child: Some(child) };
    wait_listening(dir, &mut vault)?;
    sh.export("COFFRE_VAULT", &format!("https://{listen}"));
    sh.export("COFFRE_VAULT_FINGERPRINT", &fingerprint);

    step(3, "The vault administrator creates the tenant; its administrator creates the bank's people");
    sh.act_as("admin", "the vault administrator");
    sh.run("coffre", &["tenant", "create", TENANT, "--name", "Example Bank"], 3)?;
    sh.run(
        "coffre",
        &[
            "principal",
            "create",
            "--tenant",
            TENANT,
            "tenant-admin",
            "--role",
            "admin",
            "--token-out",
            "tenant-admin.tok",
        ],
        2,
    )?;
    sh.act_as("tenant-admin", "the bank's administrator");
    sh.run("coffre", &["keygen", "--signing", "-o", "owner.sign.key"], 2)?;
    let owner_pub = sh.run("coffre", &["keygen", "-o", "owner.key"], 2)?.trim().to_owned();
    sh.run(
        "coffre",
        &[
            "principal",
            "create",
            "--tenant",
            TENANT,
            "owner",
            "--role",
            "owner",
            "--signing-key",
            "owner.sign.key",
            "--token-out",
            "owner.tok",
        ],
        2,
    )?;
    let mut set = format!("format = \"coffre-approvers/v1\"\ntenant = \"{TENANT}\"\nversion = 1\nthreshold = 2\n");
    for a in ["alice", "bob", "carol"] {
        let public = sh.run("coffre", &["keygen", "--approver", "-o", &format!("{a}.key")], 2)?.trim().to_owned();
        set.push_str(&format!("\n[[approvers]]\nname = \"{a}\"\nkey = \"{public}\"\n"));
        sh.run(
            "coffre",
            &["principal", "create", "--tenant", TENANT, a, "--role", "approver", "--token-out", &format!("{a}.tok")],
            2,
        )?;
    }
    sh.run(
        "coffre",
        &["principal", "create", "--tenant", TENANT, "audrey", "--role", "auditor", "--token-out", "audrey.tok"],
        2,
    )?;
    sh.run(
        "coffre",
        &[
            "principal",
            "create",
            "--tenant",
            TENANT,
            "worker",
            "--role",
            "worker-operator",
            "--token-out",
            "worker.tok",
        ],
        2,
    )?;
    fs::write(dir.join("approvers.toml"), &set).map_err(|e| CliError::io("write", &dir.join("approvers.toml"), &e))?;
    outln!("   (approvers.toml: alice, bob and carol, any 2 of 3)");
    sh.run("coffre", &["approvers", "set", "--tenant", TENANT, "approvers.toml"], 3)?;

    step(4, "The security team: the development policy proposed, approved by two of three approvers, activated");
    let policy = dir.join("development.toml");
    fs::write(&policy, include_str!("../../../policies/bundled/development.toml"))
        .map_err(|e| CliError::io("write", &policy, &e))?;
    sh.act_as("alice", "alice, an approver");
    sh.run("coffre", &["policy", "propose", "--tenant", TENANT, "development.toml"], 4)?;
    for who in ["alice", "bob"] {
        sh.act_as(who, &format!("{who}, an approver"));
        sh.run(
            "coffre",
            &["policy", "sign", "development.toml", "-i", &format!("{who}.key"), "-o", &format!("{who}.approval")],
            2,
        )?;
        sh.run(
            "coffre",
            &["policy", "approve", "--tenant", TENANT, "development", "1", &format!("{who}.approval")],
            2,
        )?;
    }
    sh.run("coffre", &["policy", "activate", "--tenant", TENANT, "development", "1"], 3)?;

    step(
        5,
        "The data owner: synthetic customer messages sealed on the bank's machine to the tenant KEK and the owner, signed, uploaded",
    );
    let data = dir.join("messages.jsonl");
    {
        let mut f = std::io::BufWriter::new(fs::File::create(&data).map_err(|e| CliError::io("create", &data, &e))?);
        crate::demo_data::write_jsonl(&mut f, records, 2026).map_err(|e| CliError::io("write", &data, &e))?;
        f.flush().map_err(|e| CliError::io("write", &data, &e))?;
    }
    outln!("   ({records} synthetic messages with names, IBANs and card numbers in messages.jsonl)");
    sh.act_as("owner", "the data owner");
    let tenant = json(&sh.run("coffre", &["tenant", "show", TENANT, "--json"], 0)?, "coffre tenant show")?;
    let kek = tenant["kek"]["public_key"].as_str().unwrap_or_default().to_owned();
    outln!("     KEK {}…", &kek.chars().take(40).collect::<String>());
    sh.run(
        "coffre",
        &[
            "seal",
            "-r",
            &kek,
            "-r",
            &owner_pub,
            "--tenant",
            TENANT,
            "--dataset",
            "messages",
            "--sign",
            "owner.sign.key",
            "messages.jsonl",
            "-o",
            "messages.jsonl.coffre",
        ],
        4,
    )?;
    sh.run("coffre", &["dataset", "register", "messages", "--tenant", TENANT, "--label", "customer-pii"], 2)?;
    sh.run("coffre", &["dataset", "upload", "messages", "messages.jsonl.coffre", "--tenant", TENANT], 2)?;

    step(6, "The base model into the vault's model store, and a signed job pinning data, model and recipe");
    let (model, model_name) = match &args.model {
        Some(m) => (m.clone(), m.file_name().map_or("the model".into(), |f| f.to_string_lossy().into_owned())),
        None => {
            let tiny = dir.join("tiny-model");
            coffre_trainer::tiny::generate(&tiny, 64, 2, 2026)
                .map_err(|e| CliError::new(format!("demo: cannot generate the tiny model: {e}")))?;
            outln!("   (no --model: a tiny random Llama in tiny-model/; its answers are noise, but its loss falls)");
            (tiny, "a tiny random Llama".into())
        }
    };
    let model_arg = model.display().to_string();
    let stored = json(
        &sh.run("coffre", &["model", "upload", "--tenant", TENANT, &model_arg, "--json"], 0)?,
        "coffre model upload",
    )?;
    let digest = stored["digest"].as_str().unwrap_or_default().to_owned();
    outln!("     {digest} ({model_name})");
    let steps = args.train_steps.to_string();
    let job = json(
        &sh.run(
            "coffre",
            &[
                "job",
                "submit",
                "--tenant",
                TENANT,
                "--name",
                "fraud-lora",
                "--dataset",
                "messages",
                "--steps",
                &steps,
                "--learning-rate",
                "2e-3",
                "--base-model",
                &digest,
                "--output-recipient",
                "owner.key",
                "--sign",
                "owner.sign.key",
                "--json",
            ],
            0,
        )?,
        "coffre job submit",
    )?;
    let job_id = job["id"].as_str().unwrap_or_default().to_owned();
    outln!("     job {job_id}: manifest {}", job["manifest_digest"].as_str().unwrap_or_default());

    step(
        7,
        "The attested worker: evidence bound to the vault's challenge, the keys, training on data decrypted in memory, a sealed and signed model back",
    );
    let worker_token =
        fs::read_to_string(dir.join("worker.tok")).map_err(|e| CliError::io("read", &dir.join("worker.tok"), &e))?;
    let worker_args = |machine: &str, work: &str| -> Vec<String> {
        [
            "run",
            "--tenant",
            TENANT,
            "--job",
            &job_id,
            "--tee",
            "simulated",
            "--gpu",
            "simulated",
            "--simulated-machine",
            machine,
            "--template",
            "chatml",
            "--work-dir",
            work,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect()
    };
    let run_worker = |sh: &Shell, machine: &str, work: &str| -> CliResult<Ran> {
        let a = worker_args(machine, work);
        let refs: Vec<&str> = a.iter().map(String::as_str).collect();
        let mut sh2 = Shell { dir: sh.dir.clone(), bin: sh.bin.clone(), env: sh.env.clone(), acting_as: None };
        sh2.env.insert("COFFRE_TOKEN".into(), worker_token.trim().to_owned());
        sh2.env.remove("COFFRE_TOKEN_FILE");
        sh2.run_with("COFFRE_TOKEN=$(cat worker.tok) ", "coffre-worker", &refs, usize::MAX)
    };
    let ran = run_worker(&sh, "machine.json", "work")?;
    if !ran.ok {
        return Err(CliError::new("demo: the worker failed"));
    }

    step(8, "A worker whose VM allows debugging (the host could read its memory) asks for the same keys");
    sh.run(
        "coffre-worker",
        &["simulate", "debug-guest", "--machine", "machine.json", "--out", "debug-machine.json"],
        2,
    )?;
    let denied = run_worker(&sh, "debug-machine.json", "work-debug")?;
    if denied.code != Some(3) {
        return Err(CliError::new("demo: the debug-enabled worker was not denied"));
    }
    let denial = denied
        .output
        .split("(denial ")
        .nth(1)
        .and_then(|r| r.split(')').next())
        .map(str::to_owned)
        .ok_or_else(|| CliError::new("demo: the denial printed no id"))?;
    outln!("   The worker exited 3 and got no key. An approver or auditor reads why, from the vault:");
    sh.act_as("audrey", "audrey, the auditor");
    sh.run("coffre", &["denial", "show", &denial, "--tenant", TENANT], 20)?;

    step(9, "The owner downloads the sealed model, opens it with the owner key, and sees what training changed");
    sh.act_as("owner", "the data owner");
    sh.run("coffre", &["artifact", "list", "--tenant", TENANT], 3)?;
    sh.run(
        "coffre",
        &["artifact", "download", "fraud-lora", "1", "--tenant", TENANT, "-o", "fraud-lora-v1.coffre"],
        2,
    )?;
    sh.run("coffre", &["artifact", "open", "-i", "owner.key", "fraud-lora-v1.coffre", "-o", "fraud-lora"], 8)?;
    let mut rng = crate::demo_data::SplitMix::new(99);
    let unseen: Vec<String> = (0..3).map(|_| crate::demo_data::record(&mut rng).0).collect();
    let mut base_args: Vec<String> = ["generate", "--model", &model_arg, "--template", "chatml", "--max-tokens", "8"]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
    base_args.extend(unseen.iter().cloned());
    let refs: Vec<&str> = base_args.iter().map(String::as_str).collect();
    outln!("   Before (the base model):");
    sh.run("coffre", &refs, 12)?;
    let mut tuned = base_args.clone();
    tuned.splice(3..3, ["--adapter".to_owned(), "fraud-lora".to_owned()]);
    let refs: Vec<&str> = tuned.iter().map(String::as_str).collect();
    outln!("   After (with the adapter the worker trained):");
    sh.run("coffre", &refs, 12)?;

    step(
        10,
        "The auditor: the model traced to its attested release, the whole log verified, and the report for compliance",
    );
    sh.act_as("audrey", "audrey, the auditor");
    sh.run(
        "coffre",
        &[
            "artifact",
            "verify",
            "fraud-lora-v1.coffre",
            "--log-key",
            &log_key,
            "--dangerous-accept-simulated-roots",
            "dev-roots.pem",
        ],
        30,
    )?;
    sh.run(
        "coffre",
        &[
            "audit",
            "verify",
            "--vault",
            &format!("https://{listen}"),
            "--log-key",
            &log_key,
            "--dangerous-accept-simulated-roots",
            "dev-roots.pem",
        ],
        30,
    )?;

    sh.run(
        "coffre",
        &[
            "audit",
            "report",
            "--vault",
            &format!("https://{listen}"),
            "--log-key",
            &log_key,
            "--dangerous-accept-simulated-roots",
            "dev-roots.pem",
            "-o",
            "audit-report.html",
        ],
        4,
    )?;
    outln!(
        "   Open {} in a browser: the verdict, each dataset's timeline, each release's hardware and approvers, the denial, the lineage.",
        dir.join("audit-report.html").display()
    );

    outln!("\nDone in {:.0} s. Everything is in {}.", started.elapsed().as_secs_f64(), dir.display());
    if args.keep {
        if let Some(c) = vault.child.take() {
            outln!("The vault keeps running (stop it with: kill {}), logging to vault.log. To explore:", c.id());
            // Not waited for: it outlives this process on purpose.
            drop(c);
        }
        outln!("  cd {}", dir.display());
        outln!(
            "  export COFFRE_VAULT=https://{listen} COFFRE_VAULT_FINGERPRINT={fingerprint} COFFRE_TOKEN_FILE=owner.tok"
        );
        outln!(
            "  coffre dataset list --tenant {TENANT}; coffre job list --tenant {TENANT}; coffre artifact list --tenant {TENANT}"
        );
    } else {
        outln!("The vault was stopped (--keep leaves it running to explore).");
    }
    Ok(())
}

/// Waits until `coffred serve` says it listens (or exits).
fn wait_listening(dir: &Path, vault: &mut Vault) -> CliResult {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let log =
            fs::File::open(dir.join("vault.log")).map_err(|e| CliError::io("read", &dir.join("vault.log"), &e))?;
        for line in std::io::BufReader::new(log).lines().map_while(Result::ok) {
            if line.starts_with("coffred listening on") {
                outln!("     {line}");
                return Ok(());
            }
        }
        if let Some(c) = vault.child.as_mut()
            && let Ok(Some(status)) = c.try_wait()
        {
            let text = fs::read_to_string(dir.join("vault.log")).unwrap_or_default();
            return Err(CliError::new(format!("demo: coffred exited ({status}):\n{text}")));
        }
        if Instant::now() > deadline {
            return Err(CliError::new("demo: coffred did not start within a minute; see vault.log"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}
