//! `coffre artifact open` (the owner decrypts a trained model into a directory) and
//! `coffre artifact verify` (anyone with the log traces a sealed artifact back to the attested
//! release it was trained under).

use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

use clap::Args;
use coffre_api::WorkerKeys;
use coffre_api::provenance::{Envelope, Statement};
use coffre_attestation::composite::CompositeVerifier;
use coffre_broker::audit::{Audience, audit};
use coffre_log::{BlobStore, Digest, DirStore, Entry, EntryStore};
use serde::Serialize;

use crate::error::{CliError, CliResult};
use crate::recorded::SimulatedRoots;

/// `coffre artifact open`.
#[derive(Debug, Args)]
#[command(after_help = "\
The artifact is the sealed model a worker registered (`coffre artifact download`). It opens with
the secret key the job sealed its outputs to, into a new directory that `transformers`/PEFT and
`coffre train` load: adapter_model.safetensors + adapter_config.json (LoRA) or model.safetensors +
config.json (full), tokenizer.json and training.json (losses, held-out loss, privacy spent).

Example:
  coffre artifact open -i owner.key fraud-lora-v1.coffre -o fraud-lora/")]
pub struct OpenArgs {
    /// Your secret key (`coffre keygen`), one of the job's output recipients
    #[arg(short = 'i', long = "identity", value_name = "KEY")]
    pub identity: PathBuf,
    /// The sealed artifact
    pub artifact: PathBuf,
    /// The directory to create (must not exist)
    #[arg(short = 'o', long)]
    pub output: PathBuf,
}

/// `coffre artifact verify`.
#[derive(Debug, Args)]
#[command(after_help = "\
Checks, offline over the log (exported with --vault, or a directory the vault exported):
  1. the whole log audits clean: signed, consistent, every release's evidence re-verified at its
     time and its policies re-evaluated (as `coffre audit verify`), model versions increasing;
  2. an ArtifactRegistered entry names this file's SHA-256;
  3. its provenance is a DSSE envelope whose one signature verifies under the signing key the
     release's report data bound (the key the attested worker generated);
  4. the in-toto statement's subject is this file, and its tenant, job, release, datasets and
     evidence bundle are the release's.

Exit status: 0 traced; 1 any check failed (each printed) or the artifact cannot be read; 2 bad
usage or an unreadable log directory.

Example:
  coffre artifact verify fraud-lora-v1.coffre --vault https://vault:8443 --log-key log.pub")]
pub struct VerifyArgs {
    /// The sealed artifact
    pub artifact: PathBuf,
    /// An exported log directory (used rather than the vault when both are given, so that
    /// COFFRE_VAULT in the environment does not get in the way)
    #[arg(long, value_name = "DIR")]
    pub log: Option<PathBuf>,
    /// Export the log of this vault (as your principal may see it) and use that
    #[arg(long, value_name = "URL", env = "COFFRE_VAULT")]
    pub vault: Option<String>,
    /// The vault certificate's SHA-256 fingerprint (pins it)
    #[arg(long, value_name = "SHA256", env = "COFFRE_VAULT_FINGERPRINT")]
    pub vault_fingerprint: Option<String>,
    /// The log's verifier key (name+hash+base64), or a file holding it
    #[arg(long, value_name = "PUB")]
    pub log_key: String,
    /// DEVELOPMENT ONLY: trust the simulated roots in this file
    #[arg(long, value_name = "FILE")]
    pub dangerous_accept_simulated_roots: Option<PathBuf>,
    /// Print the trace as JSON
    #[arg(long)]
    pub json: bool,
}

/// What `verify` traced.
#[derive(Debug, Serialize)]
pub struct Trace {
    pub artifact: String,
    pub model: String,
    pub version: u64,
    pub registered_at: u64,
    pub tenant: String,
    pub job: String,
    pub release: u64,
    pub simulated: bool,
    pub policies: Vec<String>,
    pub signer: String,
    pub datasets: Vec<(String, String)>,
    pub base_model: Option<String>,
    pub trainer: String,
    pub final_loss: Option<f64>,
    pub held_out_loss: Option<f64>,
    pub epsilon: Option<f64>,
}

pub fn open(a: &OpenArgs) -> CliResult {
    let identity = crate::keys::load_identity(&a.identity)?;
    if a.output.exists() {
        return Err(CliError::usage(format!("{} already exists", a.output.display()))
            .hint("name a new directory; nothing is overwritten"));
    }
    let input = fs::File::open(&a.artifact).map_err(|e| CliError::io("read", &a.artifact, &e))?;
    let (_, reader) = coffre_seal::open(std::io::BufReader::new(input), &identity, coffre_seal::Workers::sequential())
        .map_err(|e| {
            CliError::new(format!("{}: {e}", a.artifact.display()))
                .hint("open it with a key the job sealed its outputs to")
        })?;
    let parent = a.output.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let staging = tempfile::Builder::new()
        .prefix(".coffre-artifact-")
        .tempdir_in(parent)
        .map_err(|e| CliError::io("create a directory in", parent, &e))?;
    // A model trained on confidential data is confidential too: owner-only, like its files.
    std::fs::set_permissions(staging.path(), std::os::unix::fs::PermissionsExt::from_mode(0o700))
        .map_err(|e| CliError::io("restrict", staging.path(), &e))?;
    let files = coffre_api::artifact::read_artifact(reader, |name, _, r| write_file(staging.path(), name, r))
        .map_err(|e| CliError::new(format!("{}: {e}", a.artifact.display())))?;
    let staged = staging.keep();
    fs::rename(&staged, &a.output).map_err(|e| {
        fs::remove_dir_all(&staged).ok();
        CliError::io("create", &a.output, &e)
    })?;
    eprintln!("opened {} files into {}: {}", files.len(), a.output.display(), files.join(", "));
    Ok(())
}

fn write_file(dir: &Path, name: &str, r: &mut dyn Read) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let path = dir.join(name);
    if let Some(p) = path.parent() {
        fs::DirBuilder::new().recursive(true).mode(0o700).create(p)?;
    }
    let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&path)?;
    std::io::copy(r, &mut f)?;
    f.sync_all()
}

pub fn verify(a: &VerifyArgs) -> CliResult<bool> {
    let key = crate::audit::log_key(&a.log_key)?;
    let roots = a.dangerous_accept_simulated_roots.as_deref().map(SimulatedRoots::load).transpose()?;
    let verifier = match &roots {
        Some(r) => r.composite_verifier()?,
        None => CompositeVerifier::new(),
    };
    let digest = {
        let f = fs::File::open(&a.artifact).map_err(|e| CliError::io("read", &a.artifact, &e))?;
        coffre_api::object::digest_of(std::io::BufReader::new(f)).map_err(|e| CliError::io("read", &a.artifact, &e))?
    };
    let (_tmp, dir) =
        crate::audit::obtain(a.log.as_ref(), a.vault.as_ref(), a.vault_fingerprint.clone(), None, a.json)?;
    let store = DirStore::open_read_only(&dir)
        .map_err(|e| CliError::usage(e.to_string()).hint("give the directory the vault exported"))?;
    let audience = if roots.is_some() { Audience::Development } else { Audience::Production };
    let (report, _) = audit(&store, &key, None, &verifier, audience);
    let mut problems: Vec<String> = report
        .problems
        .iter()
        .map(|p| match p.entry {
            Some(i) => format!("log entry {i}: {}", p.reason),
            None => format!("log: {}", p.reason),
        })
        .collect();
    let traced = match trace(&store, &digest) {
        Ok(t) => Some(t),
        Err(e) => {
            problems.push(e);
            None
        }
    };
    if a.json {
        let out = serde_json::json!({ "artifact": digest.to_string(), "ok": problems.is_empty(), "problems": problems, "trace": traced });
        outln!("{}", serde_json::to_string_pretty(&out).unwrap_or_default());
    } else {
        if let Some(t) = &traced {
            outln!("artifact    {} = {} v{}", t.artifact, t.model, t.version);
            outln!("registered  log entry {} by tenant {}, job {}", t.registered_at, t.tenant, t.job);
            outln!(
                "release     log entry {}{}, allowed by {}",
                t.release,
                if t.simulated { " (SIMULATED evidence: development only)" } else { "" },
                t.policies.join(", ")
            );
            outln!("signed by   {} (the key the release's report data bound)", t.signer);
            for (d, o) in &t.datasets {
                outln!("dataset     {d}: object {o}");
            }
            if let Some(b) = &t.base_model {
                outln!("base model  {b}");
            }
            let loss = t.final_loss.map(|l| format!("final loss {l:.4}")).unwrap_or_default();
            let held = t.held_out_loss.map(|l| format!(", held-out {l:.4}")).unwrap_or_default();
            let eps = t.epsilon.map(|e| format!(", DP-SGD ε = {e:.3}")).unwrap_or_default();
            outln!("trained by  {}: {loss}{held}{eps}", t.trainer);
        }
        if problems.is_empty() {
            outln!("✓ traced to an attested release in a log that audits clean");
        } else {
            for p in &problems {
                outln!("✗ {p}");
            }
        }
    }
    Ok(problems.is_empty())
}

fn entry_at(store: &DirStore, index: u64) -> Result<Entry, String> {
    let bytes = store.entry(index).map_err(|e| format!("entry {index}: {e}"))?;
    Entry::from_bytes(&bytes).map_err(|e| format!("entry {index}: {e}"))
}

fn blob(store: &DirStore, d: &Digest, what: &str) -> Result<Vec<u8>, String> {
    store.blob(d).map_err(|e| format!("{what}: {e}"))?.ok_or_else(|| format!("{what} {d} is not in the log"))
}

/// Follows the artifact's registration back to its release.
fn trace(store: &DirStore, digest: &Digest) -> Result<Trace, String> {
    let mut found = None;
    for i in 0..store.len() {
        let Ok(bytes) = store.entry(i) else { continue };
        if let Ok(e @ Entry::ArtifactRegistered { .. }) = Entry::from_bytes(&bytes)
            && matches!(&e, Entry::ArtifactRegistered { artifact, .. } if artifact == digest)
        {
            found = Some((i, e));
        }
    }
    let Some((registered_at, Entry::ArtifactRegistered { tenant, job, model, version, provenance, release, .. })) =
        found
    else {
        return Err(format!("no artifact with SHA-256 {digest} is registered in this log"));
    };
    let Entry::KeyReleased {
        tenant: r_tenant,
        job: r_job,
        policies,
        evidence_bundle,
        job_manifest,
        ephemeral_key,
        simulated,
        ..
    } = entry_at(store, release)?
    else {
        return Err(format!("entry {registered_at} names release {release}, which is not a key release"));
    };
    let mut problems = Vec::new();
    if r_tenant != tenant || r_job != job {
        problems.push(format!("release {release} was for {r_tenant}'s job {r_job}, not {tenant}'s job {job}"));
    }
    let keys = WorkerKeys::from_bytes(&blob(store, &ephemeral_key, "the release's worker keys")?)?;
    let envelope = Envelope::from_bytes(&blob(store, &provenance, "the provenance")?)?;
    let payload = envelope.verify(&keys.signing).map_err(|e| format!("provenance: {e}"))?;
    let statement = Statement::from_bytes(&payload).map_err(|e| format!("provenance: {e}"))?;
    let p = &statement.predicate;
    if !statement.names(digest) {
        problems.push("the provenance's subject is not this artifact".into());
    }
    if p.tenant != tenant || p.job != job || p.release != release {
        problems.push(format!(
            "the provenance is for {}'s job {} release {}, not this registration's ({tenant}, {job}, {release})",
            p.tenant, p.job, p.release
        ));
    }
    if p.evidence_bundle != evidence_bundle.to_string() {
        problems.push(format!(
            "the provenance names evidence bundle {}, the release was decided on {evidence_bundle}",
            p.evidence_bundle
        ));
    }
    let manifest = coffre_api::JobManifest::from_bytes(&blob(store, &job_manifest, "the job manifest")?)
        .map_err(|e| e.to_string())?;
    let pinned: std::collections::BTreeMap<String, String> =
        manifest.datasets.iter().map(|d| (d.id.clone(), d.object_digest.to_string())).collect();
    if p.datasets != pinned {
        problems.push("the provenance's dataset digests are not the ones the job pinned".into());
    }
    if manifest.base_model.as_ref().is_some_and(|b| p.base_model.as_deref() != Some(b.to_string().as_str())) {
        problems.push("the provenance's base model is not the one the job pinned".into());
    }
    if manifest
        .trainer_measurement
        .as_ref()
        .is_some_and(|m| p.trainer_measurement.as_deref() != Some(m.to_string().as_str()))
    {
        problems.push("the provenance's trainer is not the one the job pinned".into());
    }
    if let [subject] = statement.subject.as_slice()
        && subject.name != format!("{model}-v{version}.coffre")
    {
        problems
            .push(format!("the provenance names {}, but the registration is {model} version {version}", subject.name));
    }
    if !problems.is_empty() {
        return Err(problems.join("; "));
    }
    Ok(Trace {
        artifact: digest.to_string(),
        model,
        version,
        registered_at,
        tenant,
        job,
        release,
        simulated,
        policies: policies.iter().map(|p| format!("{}@{}", p.id, p.version)).collect(),
        signer: keys.signing.key_id(),
        datasets: pinned.into_iter().collect(),
        base_model: p.base_model.clone(),
        trainer: format!("{} {}", p.trainer, p.trainer_version),
        final_loss: p.final_loss,
        held_out_loss: p.held_out_loss,
        epsilon: p.privacy.as_ref().map(|x| x.epsilon),
    })
}
