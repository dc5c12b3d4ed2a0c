//! External trainers: how a job goes past the built-in trainer (PyTorch + PEFT under `torchrun`
//! across a node's GPUs, for instance). The command runs inside the same confidential VM:
//!
//! - the decrypted records (JSON Lines) arrive on its **standard input**, through a pipe — never a
//!   file;
//! - it writes its outputs into `COFFRE_OUTPUT_DIR`, a fresh owner-only directory on
//!   memory-backed storage (tmpfs, refused otherwise), which is also its `TMPDIR`;
//! - `COFFRE_RECIPE` holds the job's recipe (JSON) and `COFFRE_BASE_MODEL` the base model's path;
//! - when it exits 0, every regular file it left is sealed into the artifact, overwritten with
//!   zeros and removed; links and other special files are refused.
//!
//! The command's measurement ([`measure`]) is what the job's `trainer_measurement` pins and what
//! the provenance records.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use coffre_log::Digest;
use coffre_trainer::Sink;

use crate::Failure;

/// tmpfs and ramfs: memory-backed file systems.
const MEMORY_FS: [u64; 2] = [0x0102_1994, 0x8584_58f6];

/// The measurement of a trainer command: SHA-256 of `coffre-trainer-command/v1\n` followed by one
/// line per word of the command — `file SHA256HEX` for the executable (resolved through `PATH`)
/// and for every argument naming an existing regular file, `arg WORD` for any other argument.
/// A script and the interpreter named on the command line are measured with their options; what
/// they load in turn (an interpreter named by a script's `#!` line, site-packages, libraries) is
/// not.
pub fn measure(command: &[String]) -> Result<String, Failure> {
    let (program, args) = command.split_first().ok_or_else(|| Failure::usage("no trainer command after --"))?;
    if command.iter().any(|w| w.contains(['\n', '\0'])) {
        return Err(Failure::usage("a trainer command's words may not contain newlines"));
    }
    let exe = resolve(program)?;
    let mut text = String::from("coffre-trainer-command/v1\n");
    text.push_str(&format!("file {}\n", file_digest(&exe)?.hex()));
    for a in args {
        let p = Path::new(a);
        if p.is_file() {
            text.push_str(&format!("file {}\n", file_digest(p)?.hex()));
        } else {
            text.push_str(&format!("arg {a}\n"));
        }
    }
    Ok(Digest::of(text.as_bytes()).to_string())
}

fn file_digest(p: &Path) -> Result<Digest, Failure> {
    crate::run::sha256_file(p).map_err(|e| Failure::new(format!("{}: {e}", p.display())))
}

fn executable(p: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The executable `program` names, as an absolute path: the path given, or the first executable
/// match on `PATH` (the one `exec` would run). The worker runs exactly this path.
pub fn resolve(program: &str) -> Result<PathBuf, Failure> {
    let found = if program.contains('/') {
        Some(PathBuf::from(program)).filter(|p| executable(p))
    } else {
        std::env::var_os("PATH").iter().flat_map(std::env::split_paths).map(|d| d.join(program)).find(|p| executable(p))
    };
    let found =
        found.ok_or_else(|| Failure::usage(format!("trainer command {program:?} is not an executable (on PATH)")))?;
    std::fs::canonicalize(&found).map_err(|e| Failure::usage(format!("{}: {e}", found.display())))
}

/// Environment variables that load code the measurement does not cover; removed for the trainer.
/// (A deny-list: it narrows what an operator can slip in, it does not make the environment
/// measured.)
const CODE_INJECTING: [&str; 12] = [
    "LD_PRELOAD",
    "LD_LIBRARY_PATH",
    "LD_AUDIT",
    "PYTHONPATH",
    "PYTHONSTARTUP",
    "PYTHONHOME",
    "PYTHONUSERBASE",
    "PERL5LIB",
    "PERL5OPT",
    "RUBYOPT",
    "BASH_ENV",
    "NODE_OPTIONS",
];

/// Refuses `parent` unless it is memory-backed (tmpfs or ramfs).
pub fn check_memory(parent: &Path) -> Result<(), Failure> {
    let fs =
        rustix::fs::statfs(parent).map_err(|e| Failure::usage(format!("--memory-dir {}: {e}", parent.display())))?;
    #[allow(clippy::unnecessary_cast)]
    let kind = fs.f_type as u64;
    if !MEMORY_FS.contains(&kind) {
        return Err(Failure::usage(format!(
            "{} is not memory-backed (file system type {kind:#x}); an external trainer's outputs must never reach a disk",
            parent.display()
        ))
        .hint("give --memory-dir a tmpfs mount (such as /dev/shm)"));
    }
    Ok(())
}

/// A fresh owner-only directory under `parent`, which must be memory-backed, named after this
/// process. Directories left by earlier workers that are gone (killed before they could wipe
/// them) are wiped first: they may hold an earlier run's records.
fn memory_dir(parent: &Path) -> Result<(PathBuf, std::fs::File), Failure> {
    check_memory(parent)?;
    sweep_stale(parent);
    let mut random = [0u8; 8];
    aws_lc_rs::rand::fill(&mut random).map_err(|_| Failure::new("random number generator failed"))?;
    let dir = parent.join(format!("coffre-trainer-{}-{}", std::process::id(), hex::encode(random)));
    // Beside it, a lock this worker holds while it lives: another worker's sweep (perhaps in
    // another PID namespace, sharing /dev/shm in one pod) tells a live directory by it.
    let lock = lock_path(&dir);
    let held = {
        use std::os::unix::fs::OpenOptionsExt;
        std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&lock)
            .map_err(|e| Failure::new(format!("cannot create {}: {e}", lock.display())))?
    };
    held.try_lock().map_err(|e| Failure::new(format!("cannot lock {}: {e}", lock.display())))?;
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", dir.display())))?;
    std::fs::DirBuilder::new()
        .mode(0o700)
        .create(dir.join(".tmp"))
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", dir.display())))?;
    Ok((dir, held))
}

fn lock_path(dir: &Path) -> PathBuf {
    let mut name = dir.as_os_str().to_owned();
    name.push(".lock");
    PathBuf::from(name)
}

/// Wipes `coffre-trainer-PID-…` directories under `parent` that this user owns and that no
/// live worker holds: its lock beside it can be taken (or, for a directory without one, its
/// worker's process no longer exists here).
fn sweep_stale(parent: &Path) {
    use std::os::unix::fs::MetadataExt;
    let Ok(entries) = std::fs::read_dir(parent) else { return };
    let me = rustix::process::geteuid().as_raw();
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let Some(pid) = name.strip_prefix("coffre-trainer-").and_then(|r| r.split('-').next()?.parse::<i32>().ok())
        else {
            continue;
        };
        let Ok(meta) = std::fs::symlink_metadata(e.path()) else { continue };
        if !meta.is_dir() || meta.uid() != me {
            continue;
        }
        let lock = lock_path(&e.path());
        let alive = match std::fs::OpenOptions::new().write(true).open(&lock) {
            // Held by a live worker, whichever PID namespace it runs in.
            Ok(f) => f.try_lock().is_err(),
            Err(_) => rustix::process::Pid::from_raw(pid)
                .is_some_and(|p| rustix::process::test_kill_process(p).is_ok() || pid == std::process::id() as i32),
        };
        if !alive {
            wipe(&e.path());
            std::fs::remove_file(&lock).ok();
        }
    }
}

/// Overwrites every regular file under `dir` with zeros, then removes the directory.
fn wipe(dir: &Path) {
    use std::os::unix::fs::OpenOptionsExt;
    fn zero_all(dir: &Path) {
        let Ok(entries) = std::fs::read_dir(dir) else { return };
        for e in entries.flatten() {
            let Ok(t) = e.file_type() else { continue };
            if t.is_dir() {
                zero_all(&e.path());
            } else if t.is_file()
                && let Ok(mut f) = std::fs::OpenOptions::new().write(true).custom_flags(NOFOLLOW).open(e.path())
                && let Ok(m) = f.metadata()
            {
                let zeros = vec![0u8; 1 << 16];
                let mut left = m.len();
                while left > 0 {
                    let n = left.min(zeros.len() as u64) as usize;
                    if f.write_all(&zeros[..n]).is_err() {
                        break;
                    }
                    left -= n as u64;
                }
            }
        }
    }
    zero_all(dir);
    std::fs::remove_dir_all(dir).ok();
}

/// What the external trainer reported in its `training.json`, if it wrote one.
#[derive(Debug, Default)]
pub struct Reported {
    /// `final_loss`.
    pub final_loss: Option<f64>,
    /// `final_eval_loss` or `held_out_loss`.
    pub held_out_loss: Option<f64>,
}

/// Runs `command` on `records`, then hands every file it wrote to `sink`. Returns the names and
/// what its `training.json` reported.
pub fn run(
    command: &[String],
    records: Box<dyn Read + Send>,
    recipe: &coffre_api::job::Recipe,
    base_model: &Path,
    memory: &Path,
    sink: &mut dyn Sink,
) -> Result<(Vec<String>, Reported), Failure> {
    let (program, args) = command.split_first().ok_or_else(|| Failure::usage("no trainer command after --"))?;
    let exe = resolve(program)?;
    let (dir, held) = memory_dir(memory)?;
    let result = (|| {
        use std::os::unix::process::CommandExt;
        // The trainer is in its own process group, so a Ctrl-C at the terminal reaches only
        // the worker: on SIGINT, SIGTERM or SIGHUP the worker kills the trainer's whole group
        // and wipes its directory before it exits, so no trainer goes on holding the records.
        // Watched from before the trainer starts; the watcher stays for the rest of the run (a
        // signal later still ends the worker, as without it) and touches the trainer's group
        // only while the trainer runs, so a recycled group id is never signalled.
        let mut signals = signal_hook::iterator::Signals::new([
            signal_hook::consts::SIGINT,
            signal_hook::consts::SIGTERM,
            signal_hook::consts::SIGHUP,
        ])
        .map_err(|e| Failure::new(format!("cannot watch for signals: {e}")))?;
        let group_id = std::sync::Arc::new(std::sync::atomic::AtomicI32::new(0));
        let running = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(true));
        let (watched, still, gid) = (dir.clone(), running.clone(), group_id.clone());
        std::thread::spawn(move || {
            if let Some(sig) = signals.forever().next() {
                if still.swap(false, std::sync::atomic::Ordering::SeqCst) {
                    if let Some(g) = rustix::process::Pid::from_raw(gid.load(std::sync::atomic::Ordering::SeqCst)) {
                        let _ = rustix::process::kill_process_group(g, rustix::process::Signal::KILL);
                    }
                    wipe(&watched);
                    eprintln!("coffre-worker: stopped by signal {sig}; the trainer was killed and its directory wiped");
                } else {
                    wipe(&watched);
                    eprintln!("coffre-worker: stopped by signal {sig}");
                }
                std::process::exit(128 + sig);
            }
        });
        let mut cmd = Command::new(&exe);
        for var in CODE_INJECTING {
            cmd.env_remove(var);
        }
        let mut child = cmd
            .args(args)
            // Its own process group, killed whole when it is done: nothing it started outlives it.
            .process_group(0)
            // Its output goes to the worker's standard error (logs), never into --json output.
            .stdout(Stdio::from(std::io::stderr()))
            .env("COFFRE_OUTPUT_DIR", &dir)
            .env("TMPDIR", dir.join(".tmp"))
            .env("COFFRE_RECIPE", serde_json::to_string(recipe).unwrap_or_default())
            .env("COFFRE_BASE_MODEL", base_model)
            .env_remove("COFFRE_TOKEN")
            .stdin(Stdio::piped())
            .spawn()
            .map_err(|e| Failure::new(format!("cannot start the trainer {program}: {e}")))?;
        let group = rustix::process::Pid::from_raw(child.id() as i32);
        group_id.store(child.id() as i32, std::sync::atomic::Ordering::SeqCst);
        let mut stdin = child.stdin.take().ok_or_else(|| Failure::new("no pipe to the trainer"))?;
        let mut records = records;
        // The pipe is fed from its own thread, so a trainer that writes a lot before reading
        // everything cannot deadlock with us.
        let feeder = std::thread::spawn(move || -> std::io::Result<u64> {
            let n = std::io::copy(&mut records, &mut stdin);
            drop(stdin);
            match n {
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(0),
                other => other,
            }
        });
        let status = child.wait().map_err(|e| Failure::new(format!("the trainer: {e}")));
        if !running.swap(false, std::sync::atomic::Ordering::SeqCst) {
            // A signal stopped the trainer: the watcher is wiping and ends the process.
            loop {
                std::thread::park();
            }
        }
        if let Some(group) = group {
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
        }
        let status = status?;
        let fed = feeder.join().map_err(|_| Failure::new("the record pipe's thread failed"))?;
        fed.map_err(|e| Failure::new(format!("feeding the decrypted records to the trainer: {e}")))?;
        if !status.success() {
            return Err(Failure::new(format!("the trainer {program} failed ({status}); nothing is sealed")));
        }
        collect(&dir, sink)
    })();
    wipe(&dir);
    std::fs::remove_file(lock_path(&dir)).ok();
    drop(held);
    result
}

fn collect(dir: &Path, sink: &mut dyn Sink) -> Result<(Vec<String>, Reported), Failure> {
    let mut files = Vec::new();
    walk(dir, dir, &mut files)?;
    files.sort();
    if files.is_empty() {
        return Err(Failure::new("the trainer wrote no output into COFFRE_OUTPUT_DIR"));
    }
    let mut reported = Reported::default();
    let mut names = Vec::new();
    for (name, path) in files {
        let bytes = zeroize::Zeroizing::new(read_no_follow(&path).map_err(|e| Failure::new(format!("{name}: {e}")))?);
        if name == "training.json"
            && let Ok(v) = serde_json::from_slice::<serde_json::Value>(&bytes)
        {
            reported.final_loss = v["final_loss"].as_f64();
            reported.held_out_loss = v["final_eval_loss"].as_f64().or(v["held_out_loss"].as_f64());
        }
        sink.put(&name, &bytes).map_err(|e| Failure::new(format!("cannot seal {name}: {e}")))?;
        names.push(name);
    }
    Ok((names, reported))
}

const NOFOLLOW: i32 = rustix::fs::OFlags::NOFOLLOW.bits() as i32;

/// Reads a file without following a link put in its place after it was listed.
fn read_no_follow(path: &Path) -> std::io::Result<Vec<u8>> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new().read(true).custom_flags(NOFOLLOW).open(path)?;
    if !f.metadata()?.is_file() {
        return Err(std::io::Error::other("not a regular file"));
    }
    let mut out = Vec::new();
    f.read_to_end(&mut out)?;
    Ok(out)
}

fn walk(root: &Path, dir: &Path, out: &mut Vec<(String, PathBuf)>) -> Result<(), Failure> {
    for e in std::fs::read_dir(dir).map_err(|e| Failure::new(format!("{}: {e}", dir.display())))? {
        let e = e.map_err(|e| Failure::new(e.to_string()))?;
        let path = e.path();
        let rel = path.strip_prefix(root).map_err(|e| Failure::new(e.to_string()))?.to_string_lossy().into_owned();
        if rel == ".tmp" {
            continue;
        }
        let t = e.file_type().map_err(|e| Failure::new(e.to_string()))?;
        if t.is_dir() {
            walk(root, &path, out)?;
        } else if t.is_file() {
            out.push((rel, path));
        } else {
            return Err(Failure::new(format!("the trainer left {rel}, which is not a regular file; refused")));
        }
    }
    Ok(())
}
