//! `coffre-worker run`: one job, from the vault's challenge to the registered artifact.
//!
//! 1. Reads the job (the owner-signed manifest) and checks its recipe against its bounds.
//! 2. Loads the base model and checks its digest against the manifest's.
//! 3. Downloads every sealed dataset object into the working directory (ciphertext only) and
//!    checks its SHA-256 against the digest the manifest pins, before asking for any key.
//! 4. Generates its ephemeral HPKE and signing keys in memory, takes a challenge, collects
//!    evidence binding `nonce ‖ keys ‖ manifest`, and asks for the release. A denial prints its
//!    id and every failed check, and ends the run.
//! 5. Opens the wrapped data keys, decrypts the objects chunk by chunk straight into the
//!    trainer's record reader, trains (resuming from a sealed checkpoint when one is there), and
//!    seals the outputs into the artifact as the trainer hands them over.
//! 6. Signs an in-toto provenance statement with the attested signing key and registers the
//!    artifact with the vault.

use std::collections::BTreeMap;
use std::io::{BufReader, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_api::client::{ClientError, Options, VaultClient};
use coffre_api::job::JobManifest;
use coffre_api::provenance::{
    Envelope, INTOTO_PAYLOAD_TYPE, PREDICATE_TYPE, Predicate, PrivacySpent, STATEMENT_TYPE, Statement, Subject,
};
use coffre_api::wire::{ArtifactView, JobView, PROVENANCE_HEADER, ReleaseRequest, ReleaseResponse};
use coffre_api::{SignedJob, WorkerKeys, binding};
use coffre_log::Digest;
use coffre_seal::{DataKey, Header, RecipientPublicKey, SigningKey, Workers, hpke};
use coffre_trainer::data::{Template, read_records};
use coffre_trainer::{DpOptions, LoraSpec, Mode, Progress, TrainOptions, Trainer};

use crate::evidence::Sources;
use crate::sealing::{ArtifactSink, CheckpointKey, SealedCheckpoints};
use crate::{Failure, TRAINER_NAME};

/// Everything `run` needs.
pub struct RunOptions {
    /// Vault URL (`https://…`).
    pub vault: String,
    /// The vault's pinned certificate fingerprint.
    pub fingerprint: Option<String>,
    /// The worker-operator token.
    pub token: String,
    /// Tenant.
    pub tenant: String,
    /// Job id.
    pub job: String,
    /// The evidence sources.
    pub sources: Sources,
    /// The base model (directory or GGUF); `None`: the job's, from the vault's model store.
    pub base_model: Option<PathBuf>,
    /// The working directory (sealed files only).
    pub work_dir: PathBuf,
    /// The artifact's model name (default: the job's name).
    pub model: Option<String>,
    /// The artifact's version (default: the next after the latest registered).
    pub version: Option<u64>,
    /// Seal a checkpoint every this many steps (0: never).
    pub checkpoint_every: usize,
    /// The record template.
    pub template: Template,
    /// Also seal the merged model (LoRA).
    pub merge: bool,
    /// No progress lines.
    pub quiet: bool,
    /// Which trainer runs the job.
    pub trainer: TrainerChoice,
}

impl std::fmt::Debug for RunOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "RunOptions {{ vault: {}, tenant: {}, job: {}, token: <redacted>, .. }}",
            self.vault, self.tenant, self.job
        )
    }
}

/// Which trainer runs the job.
#[derive(Debug, Clone)]
pub enum TrainerChoice {
    /// `coffre-trainer`, in this process.
    Builtin,
    /// A command in this VM, fed the records through a pipe ([`crate::external`]).
    External {
        /// The command and its arguments.
        command: Vec<String>,
        /// Memory-backed directory its output directory is made in.
        memory_dir: PathBuf,
    },
}

/// What a finished run produced.
#[derive(Debug, Clone, serde::Serialize)]
pub struct RunReport {
    /// The release's log index.
    pub release: u64,
    /// Simulated evidence was used (development vault).
    pub simulated: bool,
    /// The registered artifact.
    pub artifact: ArtifactView,
    /// The sealed artifact in the working directory.
    pub path: PathBuf,
    /// Files inside it.
    pub files: Vec<String>,
    /// Steps resumed from a sealed checkpoint, if any.
    pub resumed_at: Option<usize>,
    /// Final training loss (as the external trainer reported it, if it did).
    pub final_loss: Option<f64>,
    /// Final held-out loss.
    pub held_out_loss: Option<f64>,
}

fn client_failure(what: &str, e: ClientError) -> Failure {
    if let Some(p) = e.problem() {
        if p.code == "release_denied" || p.denial.is_some() {
            let mut text = format!("{what}: the vault denied the release");
            if let Some(id) = p.denial {
                text.push_str(&format!(" (denial {id})"));
            }
            for f in &p.failed {
                let policy = if f.policy.is_empty() { String::new() } else { format!("[{}] ", f.policy) };
                text.push_str(&format!("\n  ✗ {policy}{}: expected {}; found {}", f.name, f.expected, f.actual));
            }
            return Failure::denied(text, p.denial);
        }
        return Failure::new(format!("{what}: {}", p.detail)).hint_opt(p.hint.clone());
    }
    Failure::new(format!("{what}: {e}"))
}

fn block_on<T>(
    rt: &tokio::runtime::Runtime,
    what: &str,
    f: impl std::future::Future<Output = Result<T, ClientError>>,
) -> Result<T, Failure> {
    rt.block_on(f).map_err(|e| client_failure(what, e))
}

/// Whether the vault refused a registration because the version no longer follows the latest.
fn version_taken(e: &ClientError) -> bool {
    e.problem().is_some_and(|p| {
        p.code == "refused_by_log_rules" && p.detail.contains("does not follow the registered version")
    })
}

/// The trainer options a manifest's recipe asks for, checked against its bounds.
pub fn train_options(m: &JobManifest, checkpoint_every: usize) -> Result<TrainOptions, Failure> {
    m.validate().map_err(|e| Failure::new(format!("the job's manifest is not within its own bounds: {e}")))?;
    let r = &m.recipe;
    let mode = match r.mode.as_str() {
        "full" => Mode::Full,
        _ => {
            let rank = r.lora_rank.unwrap_or(8) as usize;
            let spec = LoraSpec { rank, alpha: 2.0 * rank as f64, targets: r.lora_targets.clone() };
            spec.validate().map_err(|e| Failure::new(format!("the job's LoRA recipe: {e}")))?;
            Mode::Lora(spec)
        }
    };
    let mut o = TrainOptions::new(mode);
    o.steps = usize::try_from(r.steps).map_err(|_| Failure::new("recipe.steps is too large"))?;
    o.batch_size = r.batch_size as usize;
    o.max_len = r.max_seq_len as usize;
    o.optimizer.lr = r.learning_rate;
    o.seed = r.seed;
    o.checkpoint_every = checkpoint_every;
    if let Some(dp) = &r.dp {
        if m.bounds.max_epsilon.is_some_and(|max| dp.target_epsilon > max) {
            return Err(Failure::new("the recipe's ε exceeds bounds.max_epsilon"));
        }
        o.dp = Some(DpOptions {
            epsilon: Some(dp.target_epsilon),
            noise_multiplier: None,
            delta: dp.delta,
            clip: dp.max_grad_norm,
            reproducible_noise: false,
        });
    } else if m.bounds.max_epsilon.is_some() {
        return Err(Failure::new("bounds.max_epsilon requires DP-SGD but the recipe has none"));
    }
    Ok(o)
}

/// Runs one job end to end.
pub fn run(o: RunOptions) -> Result<RunReport, Failure> {
    crate::harden::no_core_dumps().map_err(Failure::new)?;
    say(&o, &format!("worker   {} for job {} of {}", env!("CARGO_PKG_VERSION"), o.job, o.tenant));
    // The network runs only inside `block_on`, on this thread: no runtime thread beside the
    // trainer's while it trains.
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| Failure::new(format!("cannot start the network runtime: {e}")))?;
    let fingerprint = o
        .fingerprint
        .as_deref()
        .map(coffre_api::pin::Fingerprint::parse)
        .transpose()
        .map_err(|e| Failure::usage(format!("--fingerprint: {e}")))?;
    let client =
        VaultClient::new(&Options { url: o.vault.clone(), fingerprint, token: Some(o.token.clone()), identity: None })
            .map_err(|e| Failure::usage(e.to_string()))?;
    prepare_work_dir(&o.work_dir)?;

    // 1. The job.
    let job: JobView =
        block_on(&rt, "cannot read the job", client.get(&format!("/v1/tenants/{}/jobs/{}", o.tenant, o.job)))?;
    let signed: SignedJob =
        serde_json::from_str(&job.signed).map_err(|e| Failure::new(format!("the vault sent a malformed job: {e}")))?;
    let verified = signed.verify().map_err(|e| Failure::new(format!("the job's signature: {e}")))?;
    let manifest = verified.manifest;
    let manifest_digest = Digest::of(&verified.bytes);
    if manifest_digest.to_string() != job.manifest_digest {
        return Err(Failure::new("the vault's job view does not match the signed manifest it carries"));
    }
    if manifest.tenant != o.tenant {
        return Err(Failure::new(format!("the manifest is for tenant {}, not {}", manifest.tenant, o.tenant)));
    }
    let options = train_options(&manifest, o.checkpoint_every)?;
    let recipients: Vec<RecipientPublicKey> = manifest
        .output_recipients
        .iter()
        .map(|r| r.parse().map_err(|e| Failure::new(format!("output recipient {r}: {e}"))))
        .collect::<Result<_, _>>()?;
    let model_name = o.model.clone().unwrap_or_else(|| manifest.name.clone());
    if !id_ok(&model_name) {
        return Err(Failure::usage(format!(
            "the artifact's model name {model_name:?} is not a name the vault accepts (1-64 of a-z 0-9 . _ -)"
        ))
        .hint("give one with --model"));
    }
    say(
        &o,
        &format!(
            "job      {} ({}), {} dataset(s), {} steps of {}",
            job.id,
            manifest.name,
            manifest.datasets.len(),
            manifest.recipe.steps,
            manifest.recipe.mode
        ),
    );

    // 2. The base model.
    let base_model = match &o.base_model {
        Some(p) => p.clone(),
        None => {
            let pinned = manifest.base_model.as_ref().ok_or_else(|| {
                Failure::usage("the job pins no base model, so none can be fetched from the vault")
                    .hint("give the model with --base-model PATH")
            })?;
            fetch_model(&rt, &client, &o, &pinned.to_string())?
        }
    };
    let (_, model_digest) = coffre_api::model::digest_path(&base_model)
        .map_err(|e| Failure::new(format!("cannot read the base model: {e}")))?;
    if let Some(pinned) = &manifest.base_model
        && pinned.to_string() != model_digest
    {
        return Err(Failure::new(format!(
            "the base model {} has digest {model_digest}; the job pins {pinned}",
            base_model.display()
        ))
        .hint("use the model the owner named in the job"));
    }
    let measurement = match &o.trainer {
        TrainerChoice::Builtin => trainer_measurement()?,
        TrainerChoice::External { command, memory_dir } => {
            crate::external::check_memory(memory_dir)?;
            if manifest.trainer_measurement.is_none() {
                return Err(Failure::new(
                    "an external trainer runs only for a job that pins its measurement (trainer_measurement): otherwise any command could read the data",
                )
                .hint("the owner pins it with `coffre job submit --trainer-measurement \"$(coffre-worker measure -- CMD …)\"`"));
            }
            crate::external::measure(command)?
        }
    };
    if let Some(pinned) = &manifest.trainer_measurement
        && pinned.to_string() != measurement
    {
        return Err(Failure::new(format!("this trainer's measurement is {measurement}; the job pins {pinned}")));
    }
    let device = coffre_trainer::Device::Cpu;
    let base = match o.trainer {
        TrainerChoice::Builtin => Some(
            coffre_trainer::weights::load(&base_model, None, &device)
                .map_err(|e| Failure::new(format!("cannot load the base model {}: {e}", base_model.display())))?,
        ),
        TrainerChoice::External { .. } => None,
    };
    say(&o, &format!("model    {} ({model_digest}) loaded", base_model.display()));

    // 3. Sealed objects, checked against the manifest before any key is asked for.
    let mut objects = Vec::new();
    for d in &manifest.datasets {
        let path = o.work_dir.join(format!("{}-v{}.coffre", d.id, d.version));
        let url = format!("/v1/tenants/{}/datasets/{}/versions/{}/object", o.tenant, d.id, d.version);
        let digest = download_checked(&rt, &client, &url, &path)?;
        if digest != d.object_digest {
            std::fs::remove_file(&path).ok();
            return Err(Failure::new(format!(
                "dataset {} version {}: the object's SHA-256 is {digest}, but the signed job pins {}; refusing to train on it",
                d.id, d.version, d.object_digest
            ))
            .hint("the object was replaced or re-encrypted after the owner signed the job"));
        }
        objects.push(path);
    }
    say(&o, &format!("data     {} sealed object(s) match the job's digests", objects.len()));

    // 4. Keys, challenge, evidence, release.
    let hpke_key = hpke::p256::KeyPair::generate(&mut coffre_seal::SystemRandom)
        .map_err(|e| Failure::new(format!("cannot generate the release key: {e}")))?;
    let signing = SigningKey::generate().map_err(|e| Failure::new(format!("cannot generate the signing key: {e}")))?;
    let keys = WorkerKeys { hpke: *hpke_key.public_key(), signing: signing.verifying_key().clone() };
    let challenge = block_on(&rt, "cannot get a challenge", client.challenge(&o.tenant, &job.id))?;
    let nonce: [u8; 32] = hex::decode(&challenge.nonce)
        .ok()
        .and_then(|v| v.try_into().ok())
        .ok_or_else(|| Failure::new("the vault sent a malformed challenge"))?;
    let report_data = binding::report_data(&nonce, &keys.to_bytes(), &verified.bytes);
    let evidence = o.sources.collect(report_data).map_err(|e| {
        Failure::new(format!("cannot collect evidence: {e}"))
            .hint("run inside a confidential VM, or use --tee simulated against a development vault")
    })?;
    say(
        &o,
        &format!(
            "evidence {} report and {} GPU report(s) bound to challenge {}…",
            o.sources.cpu_name(),
            evidence.gpus.len(),
            &challenge.nonce[..16]
        ),
    );
    let request = ReleaseRequest {
        tenant: o.tenant.clone(),
        job: job.id.clone(),
        nonce: challenge.nonce.clone(),
        worker_keys: STANDARD.encode(keys.to_bytes()),
        evidence,
    };
    let released: ReleaseResponse = block_on(&rt, "release refused", client.release(&request))?;
    say(
        &o,
        &format!(
            "release  log entry {}{} by {}",
            released.log_index,
            if released.simulated { " (SIMULATED evidence, development vault)" } else { "" },
            released.policies.join(", ")
        ),
    );
    let data_keys = open_keys(&released, &o.tenant, &job.id, &hpke_key)?;
    drop(hpke_key);

    // 5. Train on the objects decrypted in memory, sealing the outputs as they come.
    let mut ordered: Vec<&DataKey> = Vec::new();
    let mut readers: Vec<Box<dyn Read + Send>> = Vec::new();
    let mut verified = Vec::new();
    for (d, path) in manifest.datasets.iter().zip(&objects) {
        let key = data_keys
            .get(&d.id)
            .ok_or_else(|| Failure::new(format!("the release holds no key for dataset {}", d.id)))?;
        ordered.push(key);
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        verified.push((d.id.clone(), flag.clone()));
        let file = std::fs::File::open(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
        let mut pinned = BufReader::with_capacity(
            1 << 20,
            Pinned {
                inner: file,
                ctx: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
                expected: d.object_digest,
                dataset: d.id.clone(),
                verified: flag,
            },
        );
        let header = Header::read_from(&mut pinned).map_err(|e| Failure::new(format!("dataset {}: {e}", d.id)))?;
        if header.tenant != o.tenant || header.dataset != d.id {
            return Err(Failure::new(format!(
                "dataset {}: the object's header names {}/{}, not {}/{}",
                d.id, header.tenant, header.dataset, o.tenant, d.id
            )));
        }
        let reader = coffre_seal::open_body(pinned, &header, key, Workers::sequential())
            .map_err(|e| Failure::new(format!("dataset {}: the released key does not open it: {e}", d.id)))?;
        // Records of consecutive datasets never run into one another (a blank line between
        // two datasets is skipped by every JSON Lines reader).
        let separator: &'static [u8] = if readers.is_empty() { b"" } else { b"\n" };
        readers.push(Box::new(separator.chain(reader)));
    }
    let chained =
        readers.into_iter().fold(Box::new(std::io::empty()) as Box<dyn Read + Send>, |acc, r| Box::new(acc.chain(r)));
    let all_verified = move || -> Result<(), Failure> {
        match verified.iter().find(|(_, f)| !f.load(std::sync::atomic::Ordering::Acquire)) {
            Some((id, _)) => Err(Failure::new(format!(
                "dataset {id}: the object was not read to its end, so its digest is unchecked; refusing the result"
            ))),
            None => Ok(()),
        }
    };
    let checkpoint_key = CheckpointKey::derive(&ordered, manifest_digest.as_bytes()).map_err(Failure::new)?;
    drop(ordered);
    // The sealed artifact is written under a name without its version: the version is chosen
    // only when it is registered, after training.
    let path = o.work_dir.join(format!("{model_name}.{}.coffre.part", job.id));
    std::fs::remove_file(&path).ok();
    say(&o, "keys     opened; decrypting in memory");
    let trained = match (&o.trainer, &base) {
        (TrainerChoice::Builtin, Some(base)) => {
            let dataset = read_records(chained, &base.tokenizer, options.max_len, o.template)
                .map_err(|e| Failure::new(format!("cannot read the decrypted records: {e}")))?;
            all_verified()?;
            say(
                &o,
                &format!(
                    "records  {} read from the decrypted stream ({} cut, {} skipped)",
                    dataset.records, dataset.truncated, dataset.skipped
                ),
            );
            // Every record is in memory now: the data keys have done their work (zeroized on drop).
            drop(data_keys);
            let checkpoints = SealedCheckpoints::new(
                &o.work_dir.join(format!("{}.checkpoint.sealed", job.id)),
                checkpoint_key,
                &job.id,
            );
            builtin(&o, base, dataset, &options, checkpoints, &path, &recipients)?
        }
        (TrainerChoice::External { command, memory_dir }, _) => {
            say(&o, &format!("trainer  {} (external), records through a pipe", command.join(" ")));
            let mut sink = ArtifactSink::create(&path, &o.tenant, &recipients).map_err(Failure::new)?;
            let (_, reported) =
                crate::external::run(command, chained, &manifest.recipe, &base_model, memory_dir, &mut sink)?;
            all_verified()?;
            drop(data_keys);
            let files = sink.finish().map_err(Failure::new)?;
            let program = command.first().map(|p| p.rsplit('/').next().unwrap_or(p).to_owned()).unwrap_or_default();
            Trained {
                files,
                resumed_at: None,
                trainer: format!("external:{program}"),
                trainer_version: String::new(),
                final_loss: reported.final_loss,
                held_out_loss: reported.held_out_loss,
                privacy: None,
            }
        }
        (TrainerChoice::Builtin, None) => return Err(Failure::new("no base model loaded")),
    };

    // 6. Sign and register. The version is the one asked for, or the next after the latest
    // registered, chosen now; when another registration took it meanwhile (the log refuses a
    // version that does not follow), the next one is signed and tried instead.
    let artifact_digest = sha256_file(&path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    let next_version = || -> Result<u64, Failure> {
        let list: Vec<ArtifactView> =
            block_on(&rt, "cannot list artifacts", client.get(&format!("/v1/tenants/{}/artifacts", o.tenant)))?;
        Ok(list.iter().filter(|a| a.model == model_name).map(|a| a.version).max().unwrap_or(0) + 1)
    };
    let mut version = match o.version {
        Some(v) => v,
        None => next_version()?,
    };
    let mut attempts = 0;
    let artifact: ArtifactView = loop {
        let statement = Statement {
            statement_type: STATEMENT_TYPE.into(),
            subject: vec![Subject {
                name: format!("{model_name}-v{version}.coffre"),
                digest: [("sha256".to_owned(), artifact_digest.hex())].into_iter().collect(),
            }],
            predicate_type: PREDICATE_TYPE.into(),
            predicate: Predicate {
                tenant: o.tenant.clone(),
                job: job.id.clone(),
                release: released.log_index,
                policies: released.policies.clone(),
                datasets: manifest.datasets.iter().map(|d| (d.id.clone(), d.object_digest.to_string())).collect(),
                base_model: Some(model_digest.clone()),
                trainer: trained.trainer.clone(),
                trainer_version: trained.trainer_version.clone(),
                trainer_measurement: Some(measurement.clone()),
                recipe: manifest.recipe.clone(),
                privacy: trained.privacy.clone(),
                final_loss: trained.final_loss,
                held_out_loss: trained.held_out_loss,
                evidence_bundle: released.evidence_bundle.clone(),
            },
        };
        let payload = serde_json::to_vec(&statement).map_err(|e| Failure::new(e.to_string()))?;
        let envelope = Envelope::sign(INTOTO_PAYLOAD_TYPE, &payload, &signing).map_err(Failure::new)?;
        let sent = rt.block_on(client.upload(
            &format!(
                "/v1/tenants/{}/artifacts/{model_name}/{version}?job={}&release={}",
                o.tenant, job.id, released.log_index
            ),
            &path,
            &[(PROVENANCE_HEADER, STANDARD.encode(envelope.to_bytes()))],
            |_| {},
        ));
        match sent {
            Ok(a) => break a,
            Err(e) if o.version.is_none() && attempts < 5 && version_taken(&e) => {
                attempts += 1;
                let next = next_version()?;
                say(&o, &format!("version  v{version} was registered meanwhile; registering as v{next}"));
                version = next;
            }
            Err(e) => return Err(client_failure("cannot register the artifact", e)),
        }
    };
    let final_path = o.work_dir.join(format!("{model_name}-v{version}.coffre"));
    std::fs::rename(&path, &final_path).map_err(|e| Failure::new(format!("{}: {e}", final_path.display())))?;
    let path = final_path;
    say(&o, &format!("registered {} v{} at log entry {}", artifact.model, artifact.version, artifact.log_index));
    // The job is done: its checkpoint and the downloaded ciphertext are no longer needed.
    std::fs::remove_file(o.work_dir.join(format!("{}.checkpoint.sealed", job.id))).ok();
    for p in &objects {
        std::fs::remove_file(p).ok();
    }
    Ok(RunReport {
        release: released.log_index,
        simulated: released.simulated,
        artifact,
        path,
        files: trained.files,
        resumed_at: trained.resumed_at,
        final_loss: trained.final_loss,
        held_out_loss: trained.held_out_loss,
    })
}

/// What training produced, for the provenance.
struct Trained {
    files: Vec<String>,
    resumed_at: Option<usize>,
    trainer: String,
    trainer_version: String,
    final_loss: Option<f64>,
    held_out_loss: Option<f64>,
    privacy: Option<PrivacySpent>,
}

/// The built-in trainer: resumes from the sealed checkpoint if there is one, trains with the
/// progress line, and seals every output into the artifact at `path`.
fn builtin(
    o: &RunOptions,
    base: &coffre_trainer::BaseModel,
    dataset: coffre_trainer::data::Dataset,
    options: &TrainOptions,
    mut checkpoints: SealedCheckpoints,
    path: &Path,
    recipients: &[RecipientPublicKey],
) -> Result<Trained, Failure> {
    let mut trainer = Trainer::new(base, dataset, options.clone(), &coffre_trainer::Device::Cpu)
        .map_err(|e| Failure::new(format!("cannot start training: {e}")))?;
    let mut resumed_at = None;
    if let Some(cp) = checkpoints.load().map_err(Failure::new)? {
        trainer.resume_from(&cp).map_err(|e| Failure::new(format!("cannot resume from the sealed checkpoint: {e}")))?;
        resumed_at = Some(trainer.step_index());
        say(o, &format!("resume   from the sealed checkpoint at step {}", trainer.step_index()));
    }
    let mut last = Instant::now() - Duration::from_secs(60);
    let quiet = o.quiet;
    let summary = trainer
        .run((options.checkpoint_every > 0).then_some(&mut checkpoints as _), |p| {
            if !quiet && (last.elapsed() >= Duration::from_secs(5) || p.step == p.steps || p.eval_loss.is_some()) {
                eprintln!("{}", progress_line(p));
                last = Instant::now();
            }
        })
        .map_err(|e| Failure::new(format!("training failed: {e}")))?;
    say(o, &format!("trained  {} steps, {} tokens", summary.steps, summary.tokens));
    let mut sink = ArtifactSink::create(path, &o.tenant, recipients).map_err(Failure::new)?;
    trainer
        .write_outputs(base, &summary, o.merge, &mut sink)
        .map_err(|e| Failure::new(format!("cannot seal the outputs: {e}")))?;
    let files = sink.finish().map_err(Failure::new)?;
    say(o, &format!("sealed   {} file(s) into {}", files.len(), path.display()));
    Ok(Trained {
        files,
        resumed_at,
        trainer: TRAINER_NAME.into(),
        trainer_version: env!("CARGO_PKG_VERSION").into(),
        final_loss: Some(summary.final_loss),
        held_out_loss: summary.final_eval_loss,
        privacy: summary.privacy.as_ref().map(|p| PrivacySpent {
            epsilon: p.epsilon,
            delta: p.delta,
            noise_multiplier: p.noise_multiplier,
            max_grad_norm: p.clip,
        }),
    })
}

/// A name the vault accepts for a model (and that is safe in a file name).
fn id_ok(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 64
        && !s.starts_with('.')
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
}

/// Reads a sealed object while hashing it; at its end, fails unless its SHA-256 is the digest the
/// signed job pins. What is decrypted is thus exactly what was checked, whatever happens to the
/// file between the download and the decryption.
struct Pinned<R> {
    inner: R,
    ctx: aws_lc_rs::digest::Context,
    expected: Digest,
    dataset: String,
    verified: std::sync::Arc<std::sync::atomic::AtomicBool>,
}

impl<R: Read> Read for Pinned<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        if n > 0 {
            self.ctx.update(&buf[..n]);
        } else if !buf.is_empty() && !self.verified.load(std::sync::atomic::Ordering::Acquire) {
            let got = self.ctx.clone().finish();
            if got.as_ref() != self.expected.as_bytes() {
                return Err(std::io::Error::other(format!(
                    "dataset {}: the object read is not the one the signed job pins ({}); refusing it",
                    self.dataset, self.expected
                )));
            }
            self.verified.store(true, std::sync::atomic::Ordering::Release);
        }
        Ok(n)
    }
}

/// A progress line, with the seconds since the run started.
fn say(o: &RunOptions, line: &str) {
    static STARTED: std::sync::OnceLock<Instant> = std::sync::OnceLock::new();
    let t = STARTED.get_or_init(Instant::now).elapsed().as_secs_f64();
    if !o.quiet {
        eprintln!("{line}  [{t:.1} s]");
    }
}

/// The job's base model from the vault's model store, kept under `WORK_DIR/models/HEX` (a file,
/// or a directory unpacked from its tar stream) for the next run. Its digest is checked here
/// against the pinned one before it takes its final name, and again by the caller, as for any
/// `--base-model` path. Base models are public weights: they are the one thing in the working
/// directory that is not sealed.
fn fetch_model(
    rt: &tokio::runtime::Runtime,
    client: &VaultClient,
    o: &RunOptions,
    digest: &str,
) -> Result<PathBuf, Failure> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    let hexpart = digest.strip_prefix("sha256:").unwrap_or(digest);
    let dir = o.work_dir.join("models");
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|e| Failure::new(format!("cannot create {}: {e}", dir.display())))?;
    let target = dir.join(hexpart);
    if std::fs::symlink_metadata(&target).is_ok() {
        match coffre_api::model::digest_path(&target) {
            Ok((_, d)) if d == digest => return Ok(target),
            _ => {
                say(o, &format!("model    {} does not match its digest: fetching it again", target.display()));
                remove_any(&target);
            }
        }
    }
    let view: coffre_api::wire::ModelView =
        rt.block_on(client.get(&format!("/v1/tenants/{}/models/{digest}", o.tenant))).map_err(|e| {
            client_failure("cannot find the job's base model in the vault's model store", e).hint(format!(
                "the owner stores it with `coffre model upload --tenant {} PATH`, or give --base-model PATH",
                o.tenant
            ))
        })?;
    say(o, &format!("model    fetching {digest} ({} bytes, {}) from the vault's model store", view.size, view.kind));
    let started = Instant::now();
    let mut tag = [0u8; 8];
    aws_lc_rs::rand::fill(&mut tag).map_err(|_| Failure::new("random number generator failed"))?;
    let tag = hex::encode(tag);
    let part = dir.join(format!(".{hexpart}.{tag}.part"));
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&part)
        .map_err(|e| Failure::new(format!("{}: {e}", part.display())))?;
    let mut out = std::io::BufWriter::new(file);
    let fetched =
        rt.block_on(client.download(&format!("/v1/tenants/{}/models/{digest}/content", o.tenant), &mut out, |_| {}));
    let flushed = std::io::Write::flush(&mut out);
    drop(out);
    let result = (|| {
        fetched.map_err(|e| client_failure("cannot download the base model", e))?;
        flushed.map_err(|e| Failure::new(format!("{}: {e}", part.display())))?;
        let (got, unpacked) = match view.kind.as_str() {
            "file" => (coffre_api::model::digest_path(&part).map_err(|e| Failure::new(e.to_string()))?.1, part.clone()),
            "dir" => {
                let unpacked = dir.join(format!(".{hexpart}.{tag}.d"));
                std::fs::DirBuilder::new()
                    .mode(0o700)
                    .create(&unpacked)
                    .map_err(|e| Failure::new(format!("{}: {e}", unpacked.display())))?;
                let input = std::fs::File::open(&part).map_err(|e| Failure::new(format!("{}: {e}", part.display())))?;
                let got = coffre_api::model::read_dir_tar(BufReader::new(input), |name| {
                    let f = std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .custom_flags(rustix::fs::OFlags::NOFOLLOW.bits() as i32)
                        .open(unpacked.join(name))?;
                    Ok(Some(Box::new(std::io::BufWriter::new(f))))
                });
                std::fs::remove_file(&part).ok();
                match got {
                    Ok(d) => (d, unpacked),
                    Err(e) => {
                        remove_any(&unpacked);
                        return Err(Failure::new(format!("the vault sent a malformed model: {e}")));
                    }
                }
            }
            other => {
                return Err(Failure::new(format!(
                    "the vault stores the model as {other:?}, which this worker does not know"
                )));
            }
        };
        if got != digest {
            remove_any(&unpacked);
            return Err(Failure::new(format!(
                "the vault sent a model with digest {got}, not the pinned {digest}; nothing was used"
            )));
        }
        std::fs::rename(&unpacked, &target).map_err(|e| Failure::new(format!("{}: {e}", target.display())))?;
        Ok(target.clone())
    })();
    if result.is_err() {
        std::fs::remove_file(&part).ok();
    } else {
        say(o, &format!("model    fetched and checked in {:.1} s", started.elapsed().as_secs_f64()));
    }
    result
}

fn remove_any(path: &Path) {
    match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => {
            std::fs::remove_dir_all(path).ok();
        }
        Ok(_) => {
            std::fs::remove_file(path).ok();
        }
        Err(_) => {}
    }
}

fn prepare_work_dir(dir: &Path) -> Result<(), Failure> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| Failure::new(format!("cannot create the working directory {}: {e}", dir.display())))
}

/// SHA-256 of this executable: the built-in trainer's measurement.
pub fn trainer_measurement() -> Result<String, Failure> {
    let exe = std::env::current_exe().map_err(|e| Failure::new(format!("cannot find this executable: {e}")))?;
    sha256_file(&exe).map(|d| d.to_string()).map_err(|e| Failure::new(format!("cannot measure {}: {e}", exe.display())))
}

fn download_checked(
    rt: &tokio::runtime::Runtime,
    client: &VaultClient,
    url: &str,
    path: &Path,
) -> Result<Digest, Failure> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::remove_file(path).ok();
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    let mut out = std::io::BufWriter::new(file);
    block_on(rt, "cannot download a sealed object", client.download(url, &mut out, |_| {}))?;
    let file = out.into_inner().map_err(|e| Failure::new(format!("{}: {}", path.display(), e.error())))?;
    file.sync_all().map_err(|e| Failure::new(format!("{}: {e}", path.display())))?;
    sha256_file(path).map_err(|e| Failure::new(format!("{}: {e}", path.display())))
}

fn open_keys(
    released: &ReleaseResponse,
    tenant: &str,
    job: &str,
    key: &hpke::p256::KeyPair,
) -> Result<BTreeMap<String, DataKey>, Failure> {
    let mut out = BTreeMap::new();
    for k in &released.keys {
        let enc = STANDARD.decode(&k.enc).map_err(|e| Failure::new(format!("wrapped key {}: {e}", k.key_id)))?;
        let ct = STANDARD.decode(&k.ciphertext).map_err(|e| Failure::new(format!("wrapped key {}: {e}", k.key_id)))?;
        let aad = binding::wrap_aad(released.log_index, tenant, job, &k.key_id);
        let dek = hpke::p256::open(key, &enc, binding::RELEASE_INFO, &aad, &ct)
            .ok_or_else(|| Failure::new(format!("wrapped key {} does not open with this worker's key", k.key_id)))?;
        let dek = DataKey::from_bytes(&dek).map_err(|e| Failure::new(format!("wrapped key {}: {e}", k.key_id)))?;
        out.insert(k.dataset.clone(), dek);
    }
    Ok(out)
}

fn progress_line(p: &Progress) -> String {
    let eval = p.eval_loss.map(|e| format!("  held-out {e:.4}")).unwrap_or_default();
    let eta = p.eta_seconds.max(0.0).round() as u64;
    format!(
        "step {}/{}  loss {:.4}{eval}  {:.0} tok/s  ETA {}m{:02}s",
        p.step,
        p.steps,
        p.loss,
        p.tokens_per_second,
        eta / 60,
        eta % 60
    )
}

/// SHA-256 of a file, read in 1 MiB blocks.
pub(crate) fn sha256_file(path: &Path) -> std::io::Result<Digest> {
    coffre_api::object::digest_of(BufReader::with_capacity(1 << 20, std::fs::File::open(path)?))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn pinned(
        bytes: &'static [u8],
        expected: Digest,
    ) -> (Pinned<&'static [u8]>, std::sync::Arc<std::sync::atomic::AtomicBool>) {
        let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let r = Pinned {
            inner: bytes,
            ctx: aws_lc_rs::digest::Context::new(&aws_lc_rs::digest::SHA256),
            expected,
            dataset: "messages".into(),
            verified: flag.clone(),
        };
        (r, flag)
    }

    #[test]
    fn attack_object_swapped_between_the_digest_check_and_the_decryption() {
        // What is read is hashed as it is read: another object fails at its end.
        let (mut r, flag) = pinned(b"the object the owner signed for", Digest::of(b"the object the owner signed"));
        let mut out = Vec::new();
        let err = r.read_to_end(&mut out).unwrap_err();
        assert!(err.to_string().contains("not the one the signed job pins"), "{err}");
        assert!(!flag.load(std::sync::atomic::Ordering::Acquire));
        // The pinned object passes, and only once it was read to its end.
        let (mut r, flag) = pinned(b"the object", Digest::of(b"the object"));
        let mut head = [0u8; 4];
        r.read_exact(&mut head).unwrap();
        assert!(!flag.load(std::sync::atomic::Ordering::Acquire));
        r.read_to_end(&mut Vec::new()).unwrap();
        assert!(flag.load(std::sync::atomic::Ordering::Acquire));
    }

    #[test]
    fn model_names_that_are_not_vault_names_are_refused() {
        for bad in ["", "../x", "Fraud", "a/b", "a?b", ".hidden", &"x".repeat(65)] {
            assert!(!id_ok(bad), "{bad:?}");
        }
        assert!(id_ok("fraud-lora_v2.1"));
    }

    fn problem(code: &str, detail: &str) -> ClientError {
        ClientError::Problem(Box::new(coffre_api::wire::Problem {
            kind: format!("urn:coffre:problem:{code}"),
            title: "Refused".into(),
            status: 422,
            detail: detail.into(),
            code: code.into(),
            hint: None,
            denial: None,
            failed: Vec::new(),
        }))
    }

    /// The vault's answer when another registration took the version (pinned by
    /// vault/server/tests/api.rs) is retried with the next version; nothing else is.
    #[test]
    fn only_a_taken_version_is_retried() {
        assert!(version_taken(&problem(
            "refused_by_log_rules",
            "model fraud-lora version 1 does not follow the registered version 3"
        )));
        assert!(!version_taken(&problem("refused_by_log_rules", "the release is not this job's")));
        assert!(!version_taken(&problem("provenance_refused", "does not follow the registered version 3")));
        assert!(!version_taken(&ClientError::Transport("reset".into())));
    }
}
