//! The worker end to end: a real development vault on loopback (TLS, SQLite, the real broker),
//! the `coffre-worker` binary on a simulated machine the vault trusts, a tiny model, and a sealed
//! dataset with a canary string in it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "../../../vault/server/tests/common/mod.rs"]
mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use coffre_api::wire::*;
use common::*;

const CANARY: &str = "CANARY-7f3a9c1e-do-not-leak";

struct Setup {
    v: TestVault,
    t: Tenant,
    token: String,
    dir: tempfile::TempDir,
    model: PathBuf,
    machine: PathBuf,
    plaintext: Vec<u8>,
}

fn records() -> Vec<u8> {
    let mut out = String::new();
    for i in 0..64 {
        out.push_str(&format!(
            "{{\"prompt\":\"Customer {i} writes: my card {CANARY} was declined.\",\"completion\":\"We will look into account {i} today.\"}}\n"
        ));
    }
    out.into_bytes()
}

async fn setup(id: &str) -> Setup {
    let v = vault().await;
    let t = tenant(&v, id).await;
    let created: CreatedPrincipal = t
        .admin
        .post(
            &format!("/v1/tenants/{id}/principals"),
            &CreatePrincipal {
                name: "gpu-node-1".into(),
                roles: vec![Role::WorkerOperator],
                signing_key: None,
                client_cert_sha256: None,
            },
        )
        .await
        .unwrap();
    register_dataset(&t, "messages", &["customer-messages"]).await;
    let plaintext = records();
    let (object, sig) = seal(&t, "messages", &plaintext);
    upload(&t, "messages", object, Some(&sig)).await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny-model");
    coffre_trainer::tiny::generate(&model, 64, 2, 11).unwrap();
    let machine = dir.path().join("machine.json");
    std::fs::write(&machine, hardware().to_json().unwrap()).unwrap();
    std::fs::create_dir(dir.path().join("tmp")).unwrap();
    Setup { v, t, token: created.token, dir, model, machine, plaintext }
}

async fn job(s: &Setup, steps: u64) -> JobView {
    job_with(s, steps, |_| {}).await
}

async fn job_with(s: &Setup, steps: u64, change: impl FnOnce(&mut coffre_api::JobManifest)) -> JobView {
    let d: DatasetView = s.t.owner.get(&format!("/v1/tenants/{}/datasets/messages", s.t.id)).await.unwrap();
    let object = ObjectView { ..d.versions.last().unwrap().clone() };
    let mut m = manifest(&s.t, "messages", &object, steps);
    m.name = format!("fraud-lora-{steps}");
    m.base_model = Some(coffre_policies::Digest::parse(&coffre_api::model::digest_path(&s.model).unwrap().1).unwrap());
    change(&mut m);
    submit_job(&s.t, &m).await.unwrap()
}

/// `--tee simulated --gpu simulated` on the machine the vault trusts.
fn simulated(s: &Setup) -> Vec<String> {
    ["--tee", "simulated", "--gpu", "simulated", "--simulated-machine", s.machine.to_str().unwrap()]
        .map(str::to_owned)
        .to_vec()
}

/// Runs `coffre-worker run` for `job` with extra arguments, off the test's runtime.
async fn worker(s: &Setup, job: &JobView, work: &str, extra: &[String]) -> Output {
    let mut args = vec!["--base-model".to_owned(), s.model.to_str().unwrap().to_owned()];
    args.extend_from_slice(extra);
    worker_from_store(s, job, work, &args).await
}

/// Runs `coffre-worker run` without `--base-model` (the model comes from the vault's store).
async fn worker_from_store(s: &Setup, job: &JobView, work: &str, extra: &[String]) -> Output {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffre-worker"));
    cmd.args(["run", "--vault", &s.v.url, "--fingerprint", &s.v.running.fingerprint.to_string()])
        .args(["--tenant", &s.t.id, "--job", &job.id])
        .arg("--work-dir")
        .arg(s.dir.path().join(work))
        .args(extra)
        .env("COFFRE_TOKEN", &s.token)
        .env("TMPDIR", s.dir.path().join("tmp"));
    tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap()
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn files_under(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        let t = e.file_type().unwrap();
        if t.is_dir() {
            files_under(&e.path(), out);
        } else if t.is_file() {
            out.push(e.path());
        }
    }
}

/// Every file under `dirs`, scanned for `needle`.
fn leaks(dirs: &[&Path], needle: &[u8]) -> Vec<PathBuf> {
    let mut files = Vec::new();
    for d in dirs {
        files_under(d, &mut files);
    }
    assert!(!files.is_empty());
    files.into_iter().filter(|f| std::fs::read(f).unwrap().windows(needle.len()).any(|w| w == needle)).collect()
}

/// The owner's view: download the sealed artifact, open it with the owner key, return its files.
async fn open_artifact(s: &Setup, a: &ArtifactView) -> Vec<(String, Vec<u8>)> {
    let mut sealed = Vec::new();
    s.t.owner
        .download(&format!("/v1/tenants/{}/artifacts/{}/{}/object", s.t.id, a.model, a.version), &mut sealed, |_| {})
        .await
        .unwrap();
    assert_eq!(coffre_log::Digest::of(&sealed).to_string(), a.digest);
    let (_, reader) = coffre_seal::open(sealed.as_slice(), &s.t.owner_key, coffre_seal::Workers::sequential()).unwrap();
    let mut files = Vec::new();
    coffre_api::artifact::read_artifact(reader, |name, _, r| {
        let mut b = Vec::new();
        r.read_to_end(&mut b)?;
        files.push((name.to_owned(), b));
        Ok(())
    })
    .unwrap();
    files
}

/// The same recipe trained in this process on the plaintext: what the worker must reproduce.
fn plain_training(s: &Setup, job: &JobView) -> Vec<u8> {
    let signed: coffre_api::SignedJob = serde_json::from_str(&job.signed).unwrap();
    let manifest = signed.verify().unwrap().manifest;
    let options = coffre_worker::run::train_options(&manifest, 0).unwrap();
    let base = coffre_trainer::weights::load(&s.model, None, &coffre_trainer::Device::Cpu).unwrap();
    let data = coffre_trainer::data::read_records(
        s.plaintext.as_slice(),
        &base.tokenizer,
        options.max_len,
        coffre_trainer::data::Template::Plain,
    )
    .unwrap();
    let mut t = coffre_trainer::Trainer::new(&base, data, options, &coffre_trainer::Device::Cpu).unwrap();
    let summary = t.run(None, |_| {}).unwrap();
    struct Mem(Vec<(String, Vec<u8>)>);
    impl coffre_trainer::Sink for Mem {
        fn put(&mut self, name: &str, bytes: &[u8]) -> coffre_trainer::Result<()> {
            self.0.push((name.into(), bytes.to_vec()));
            Ok(())
        }
    }
    let mut mem = Mem(Vec::new());
    t.write_outputs(&base, &summary, false, &mut mem).unwrap();
    mem.0.into_iter().find(|(n, _)| n == "adapter_model.safetensors").unwrap().1
}

fn file<'a>(files: &'a [(String, Vec<u8>)], name: &str) -> &'a [u8] {
    &files.iter().find(|(n, _)| n == name).unwrap_or_else(|| panic!("no {name}")).1
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_fine_tunes_on_sealed_data_and_the_owner_opens_the_model() {
    let s = setup("bank-a").await;
    let job = job(&s, 6).await;
    let mut args = simulated(&s);
    args.extend(["--json", "--checkpoint-every", "2"].map(str::to_owned));
    let out = worker(&s, &job, "work", &args).await;
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["simulated"], true);
    let artifact: ArtifactView = serde_json::from_value(report["artifact"].clone()).unwrap();
    assert_eq!((artifact.model.as_str(), artifact.version), ("fraud-lora-6", 1));
    assert!(text(&out).contains("step 6/6"), "progress shown: {}", text(&out));

    // Nothing the worker wrote, nor anything the vault stored, holds the plaintext (the scan
    // finds a planted copy, so it is looking).
    let planted = s.dir.path().join("tmp/planted");
    std::fs::write(&planted, format!("x{CANARY}y")).unwrap();
    assert_eq!(leaks(&[s.dir.path()], CANARY.as_bytes()), std::slice::from_ref(&planted));
    std::fs::remove_file(&planted).unwrap();
    let found = leaks(&[s.dir.path(), s.v.dir.path()], CANARY.as_bytes());
    assert!(found.is_empty(), "plaintext found in {found:?}");
    // The working directory holds only the sealed artifact (objects and checkpoint are gone).
    let mut left = Vec::new();
    files_under(&s.dir.path().join("work"), &mut left);
    assert_eq!(left.len(), 1, "{left:?}");
    assert!(coffre_seal::inspect(std::fs::File::open(&left[0]).unwrap()).is_ok());

    // The owner opens it: a PEFT adapter, exactly what training on the plaintext gives.
    let files = open_artifact(&s, &artifact).await;
    let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(names, ["adapter_model.safetensors", "adapter_config.json", "tokenizer.json", "training.json"]);
    assert_eq!(file(&files, "adapter_model.safetensors"), plain_training(&s, &job));
    let summary: serde_json::Value = serde_json::from_slice(file(&files, "training.json")).unwrap();
    assert_eq!(summary["steps"], 6);

    // The registration is in the log with a provenance statement the audit accepts.
    let report = audit(&s.v, &s.t.auditor).await;
    assert!(report.problems.is_empty(), "{:?}", report.problems);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_without_evidence_or_with_denied_evidence_gets_no_key() {
    let s = setup("bank-b").await;
    let job = job(&s, 2).await;
    // Not a confidential VM: configfs-tsm is absent here, so nothing is collected or asked.
    let out = worker(&s, &job, "work-none", &["--tee".into(), "configfs-tsm".into()]).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    // A machine the vault does not trust: denied, with its id and every failed check.
    let stranger = s.dir.path().join("stranger.json");
    std::fs::write(&stranger, coffre_attestation::simulated::SimulatedMachine::generate(1).unwrap().to_json().unwrap())
        .unwrap();
    let args =
        ["--tee", "simulated", "--gpu", "simulated", "--quiet", "--simulated-machine", stranger.to_str().unwrap()];
    let out = worker(&s, &job, "work-denied", &args.map(str::to_owned)).await;
    assert_eq!(out.status.code(), Some(3), "{}", text(&out));
    let t = text(&out);
    assert!(t.contains("denial id:") && t.contains("✗"), "{t}");
    let artifacts: Vec<ArtifactView> = s.t.owner.get(&format!("/v1/tenants/{}/artifacts", s.t.id)).await.unwrap();
    assert!(artifacts.is_empty());
    let seen: JobView = s.t.owner.get(&format!("/v1/tenants/{}/jobs/{}", s.t.id, job.id)).await.unwrap();
    assert_eq!(seen.releases, 0, "no key was released");
}

/// The object in the vault's store was replaced after the owner signed the job (by whoever holds
/// the storage): the worker refuses it before asking for any key.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_object_replaced_in_the_vaults_store_after_the_job_was_signed() {
    let s = setup("bank-f").await;
    let job = job(&s, 2).await;
    let d: DatasetView = s.t.owner.get(&format!("/v1/tenants/{}/datasets/messages", s.t.id)).await.unwrap();
    let size = d.versions.last().unwrap().size;
    let mut stored = Vec::new();
    files_under(s.v.dir.path(), &mut stored);
    let object = stored
        .into_iter()
        .find(|f| f.extension().is_some_and(|x| x == "coffre") && std::fs::metadata(f).unwrap().len() == size)
        .expect("the stored object");
    let mut bytes = std::fs::read(&object).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 1;
    std::fs::write(&object, bytes).unwrap();
    let out = worker(&s, &job, "work", &simulated(&s)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("but the signed job pins"), "{}", text(&out));
    let seen: JobView = s.t.owner.get(&format!("/v1/tenants/{}/jobs/{}", s.t.id, job.id)).await.unwrap();
    assert_eq!(seen.releases, 0, "refused before any release");
}

/// A base model directory with a linked weight file would load weights its digest never covered.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_linked_weight_file_beside_the_pinned_model() {
    let s = setup("bank-g").await;
    let job = job(&s, 2).await;
    let other = s.dir.path().join("other-model");
    coffre_trainer::tiny::generate(&other, 64, 2, 99).unwrap();
    std::os::unix::fs::symlink(other.join("model.safetensors"), s.model.join("zz.safetensors")).unwrap();
    let out = worker(&s, &job, "work", &simulated(&s)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("is a link or a special file"), "{}", text(&out));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_training_resumes_from_its_sealed_checkpoint() {
    let s = setup("bank-c").await;
    let job = job(&s, 300).await;
    let work = s.dir.path().join("work");
    let mut args = simulated(&s);
    args.extend(["--json", "--checkpoint-every", "5"].map(str::to_owned));

    // First attempt: killed (SIGKILL, no clean-up) as soon as a sealed checkpoint exists.
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffre-worker"));
    cmd.args(["run", "--vault", &s.v.url, "--fingerprint", &s.v.running.fingerprint.to_string()])
        .args(["--tenant", &s.t.id, "--job", &job.id, "--base-model"])
        .arg(&s.model)
        .arg("--work-dir")
        .arg(&work)
        .args(&args)
        .env("COFFRE_TOKEN", &s.token)
        .env("TMPDIR", s.dir.path().join("tmp"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null());
    let mut child = cmd.spawn().unwrap();
    let checkpoint = work.join(format!("{}.checkpoint.sealed", job.id));
    let killed = tokio::task::spawn_blocking(move || {
        let started = std::time::Instant::now();
        while !checkpoint.exists() {
            assert!(started.elapsed().as_secs() < 120, "no checkpoint appeared");
            assert!(child.try_wait().unwrap().is_none(), "the worker ended before its first checkpoint");
            std::thread::sleep(std::time::Duration::from_millis(2));
        }
        child.kill().unwrap();
        child.wait().unwrap()
    })
    .await
    .unwrap();
    assert!(!killed.success());
    let checkpoint = work.join(format!("{}.checkpoint.sealed", job.id));
    assert!(checkpoint.exists());
    // The checkpoint is sealed: no safetensors header, no JSON state in the clear.
    let sealed = std::fs::read(&checkpoint).unwrap();
    assert!(!sealed.windows(10).any(|w| w == b"adam_steps"), "checkpoint state in the clear");

    // Second attempt: a fresh attested release, then it continues where the first stopped.
    let out = worker(&s, &job, "work", &args).await;
    assert!(out.status.success(), "{}", text(&out));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let resumed = report["resumed_at"].as_u64().expect("resumed from the checkpoint");
    assert!(resumed > 0 && resumed < 300 && resumed.is_multiple_of(5), "resumed at {resumed}");
    let artifact: ArtifactView = serde_json::from_value(report["artifact"].clone()).unwrap();
    // The same model as an uninterrupted run of the same seed.
    let files = open_artifact(&s, &artifact).await;
    assert_eq!(file(&files, "adapter_model.safetensors"), plain_training(&s, &job));
    assert!(!checkpoint.exists());
}

/// The `coffre` binary built beside this one (`cargo test --workspace` builds every binary
/// before running tests); `None`, with a message, when it is absent outside CI.
fn coffre_bin() -> Option<PathBuf> {
    let bin = Path::new(env!("CARGO_BIN_EXE_coffre-worker")).with_file_name("coffre");
    if bin.exists() {
        return Some(bin);
    }
    assert!(std::env::var("CI").as_deref() != Ok("true"), "{} is missing under CI", bin.display());
    eprintln!("skipping the `coffre artifact` checks: build coffre-cli first ({} is missing)", bin.display());
    None
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_owner_opens_the_model_and_an_auditor_traces_it_to_its_release() {
    let s = setup("bank-d").await;
    // The job asks for the model sealed to the tenant's KEK too, and the worker fetches the base
    // model from the vault's model store.
    let kek = s.t.kek_public.clone();
    let job = job_with(&s, 4, |m| m.output_recipients.push(kek)).await;
    let mut args = simulated(&s);
    args.push("--json".into());
    let out = worker_from_store(&s, &job, "work", &args).await;
    assert_eq!(out.status.code(), Some(1), "not in the store yet: {}", text(&out));
    assert!(text(&out).contains("coffre model upload"), "{}", text(&out));
    let mut tar = Vec::new();
    let digest = coffre_api::model::pack_dir(&s.model, &mut tar).unwrap();
    let _: ModelView =
        s.t.owner.upload_bytes(&format!("/v1/tenants/{}/models/{digest}?kind=dir", s.t.id), tar, &[]).await.unwrap();
    let out = worker_from_store(&s, &job, "work", &args).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("from the vault's model store"), "{}", text(&out));
    let stored = s.dir.path().join("work/models").join(&digest["sha256:".len()..]);
    assert_eq!(coffre_api::model::digest_path(&stored).unwrap().1, digest);
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let artifact: ArtifactView = serde_json::from_value(report["artifact"].clone()).unwrap();
    let Some(coffre) = coffre_bin() else { return };
    let d = s.dir.path();
    let sealed = d.join("model.coffre");
    let mut bytes = Vec::new();
    s.t.owner
        .download(
            &format!("/v1/tenants/{}/artifacts/{}/{}/object", s.t.id, artifact.model, artifact.version),
            &mut bytes,
            |_| {},
        )
        .await
        .unwrap();
    std::fs::write(&sealed, &bytes).unwrap();
    let key = d.join("owner.key");
    std::fs::write(&key, s.t.owner_key.to_key_file().as_bytes()).unwrap();
    std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600)).unwrap();
    let auditor: CreatedPrincipal =
        s.t.admin
            .post(
                &format!("/v1/tenants/{}/principals", s.t.id),
                &CreatePrincipal {
                    name: "auditor-2".into(),
                    roles: vec![Role::Auditor],
                    signing_key: None,
                    client_cert_sha256: None,
                },
            )
            .await
            .unwrap();
    let run = |args: Vec<std::ffi::OsString>| {
        let mut cmd = Command::new(&coffre);
        cmd.args(args).env("COFFRE_TOKEN", &auditor.token).env_remove("COFFRE_VAULT");
        async move { tokio::task::spawn_blocking(move || cmd.output().unwrap()).await.unwrap() }
    };
    let os = |v: &[&dyn AsRef<std::ffi::OsStr>]| v.iter().map(|a| a.as_ref().to_owned()).collect::<Vec<_>>();
    let fp = s.v.running.fingerprint.to_string();
    let verify = |file: &Path| {
        os(&[
            &"artifact",
            &"verify",
            &file.as_os_str(),
            &"--vault",
            &s.v.url.as_str(),
            &"--vault-fingerprint",
            &fp.as_str(),
            &"--log-key",
            &s.v.running.log_key.as_str(),
            &"--dangerous-accept-simulated-roots",
            &s.v.roots.as_os_str(),
        ])
    };

    // The auditor traces it: registration → release → attested signing key → datasets.
    let out = run(verify(&sealed)).await;
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(t.contains(&format!("release     log entry {}", report["release"])), "{t}");
    assert!(t.contains("SIMULATED") && t.contains("dataset     messages") && t.contains("✓ traced"), "{t}");

    // A tampered artifact (one ciphertext byte) traces to nothing.
    let tampered = d.join("tampered.coffre");
    let mut b = bytes.clone();
    let at = b.len() - 40;
    b[at] ^= 1;
    std::fs::write(&tampered, &b).unwrap();
    let out = run(verify(&tampered)).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("no artifact with SHA-256"), "{}", text(&out));

    // The owner opens it; the adapter loads in the trainer and answers as the worker's model did.
    let dir = d.join("opened");
    let out =
        run(os(&[&"artifact", &"open", &"-i", &key.as_os_str(), &sealed.as_os_str(), &"-o", &dir.as_os_str()])).await;
    assert!(out.status.success(), "{}", text(&out));
    let device = coffre_trainer::Device::Cpu;
    let base = coffre_trainer::weights::load(&s.model, None, &device).unwrap();
    let (spec, adapter) = coffre_trainer::lora::load_adapter(&dir, &device).unwrap();
    let tuned = coffre_trainer::lora::with_adapter(&base, &spec, &adapter, &device).unwrap();
    let prompt = base.tokenizer.encode("Customer 3 writes:").unwrap();
    let answer = tuned.generate(&prompt, 12, None).unwrap();
    // What the trainer produced before sealing (the same recipe on the plaintext) answers alike.
    let before = coffre_trainer::weights::read_safetensors_bytes(&plain_training(&s, &job), &device).unwrap();
    let untouched = coffre_trainer::lora::with_adapter(&base, &spec, &before, &device).unwrap();
    assert_eq!(untouched.generate(&prompt, 12, None).unwrap(), answer);
    assert_eq!(std::fs::read(dir.join("adapter_model.safetensors")).unwrap(), plain_training(&s, &job));
    // Opening again into the same directory refuses to overwrite.
    let out =
        run(os(&[&"artifact", &"open", &"-i", &key.as_os_str(), &sealed.as_os_str(), &"-o", &dir.as_os_str()])).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
}

/// A small external trainer: keeps the records in its TMPDIR (memory-backed), counts them, and
/// writes an "adapter" and a training summary into its output directory.
const SCRIPT: &str = r#"#!/bin/sh
set -eu
cat > "$TMPDIR/records.jsonl"
n=$(wc -l < "$TMPDIR/records.jsonl")
steps=$(printf '%s' "$COFFRE_RECIPE" | sed 's/.*"steps":\([0-9]*\).*/\1/')
mkdir -p "$COFFRE_OUTPUT_DIR/adapter"
printf '{"records":%s,"steps":%s}' "$n" "$steps" > "$COFFRE_OUTPUT_DIR/adapter/summary.json"
printf '{"final_loss":0.25,"held_out_loss":0.5}' > "$COFFRE_OUTPUT_DIR/training.json"
"#;

fn shm_entries() -> std::collections::BTreeSet<String> {
    std::fs::read_dir("/dev/shm")
        .map(|d| d.flatten().map(|e| e.file_name().to_string_lossy().into_owned()).collect())
        .unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_external_trainer_gets_the_records_through_a_pipe_and_its_outputs_are_sealed() {
    if !Path::new("/dev/shm").is_dir() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no /dev/shm under CI");
        eprintln!("skipping: no /dev/shm (memory-backed storage) here");
        return;
    }
    let s = setup("bank-e").await;
    let script = s.dir.path().join("train.sh");
    std::fs::write(&script, SCRIPT).unwrap();
    std::fs::set_permissions(&script, std::os::unix::fs::PermissionsExt::from_mode(0o700)).unwrap();
    let command = vec!["sh".to_owned(), script.to_str().unwrap().to_owned()];
    let measurement = coffre_worker::external::measure(&command).unwrap();

    // A job pinning another trainer is refused before any key is asked for.
    let d: DatasetView = s.t.owner.get(&format!("/v1/tenants/{}/datasets/messages", s.t.id)).await.unwrap();
    let object = d.versions.last().unwrap().clone();
    let mut m = manifest(&s.t, "messages", &object, 3);
    m.name = "external-pinned-elsewhere".into();
    m.base_model = Some(coffre_policies::Digest::parse(&coffre_api::model::digest_path(&s.model).unwrap().1).unwrap());
    m.trainer_measurement = Some(coffre_policies::Digest::parse(&format!("sha256:{}", "ab".repeat(32))).unwrap());
    let other = submit_job(&s.t, &m).await.unwrap();
    let mut args = simulated(&s);
    args.extend(["--trainer", "external", "--"].map(str::to_owned));
    args.extend(command.iter().cloned());
    let out = worker(&s, &other, "work-other", &args).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("the job pins"), "{}", text(&out));
    let seen: JobView = s.t.owner.get(&format!("/v1/tenants/{}/jobs/{}", s.t.id, other.id)).await.unwrap();
    assert_eq!(seen.releases, 0);

    // A job pinning no trainer does not run an external one: any command could read the data.
    m.name = "external-unpinned".into();
    m.trainer_measurement = None;
    let unpinned = submit_job(&s.t, &m).await.unwrap();
    let out = worker(&s, &unpinned, "work-unpinned", &args).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("pins its measurement"), "{}", text(&out));

    // The job pinning this command runs it.
    m.name = "external".into();
    m.trainer_measurement = Some(coffre_policies::Digest::parse(&measurement).unwrap());
    let job = submit_job(&s.t, &m).await.unwrap();
    let before = shm_entries();
    let mut json = args.clone();
    json.insert(0, "--json".into());
    let out = worker(&s, &job, "work", &json).await;
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(shm_entries(), before, "the memory-backed output directory is removed");
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let artifact: ArtifactView = serde_json::from_value(report["artifact"].clone()).unwrap();
    let files = open_artifact(&s, &artifact).await;
    let summary: serde_json::Value = serde_json::from_slice(file(&files, "adapter/summary.json")).unwrap();
    assert_eq!(summary["records"], 64, "every record went through the pipe");
    assert_eq!(summary["steps"], 3);
    assert_eq!(report["final_loss"], 0.25);
    let found = leaks(&[s.dir.path(), s.v.dir.path()], CANARY.as_bytes());
    assert!(found.is_empty(), "plaintext found in {found:?}");

    // A directory on disk is refused as the trainer's output place.
    let on_disk = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let mut disk = simulated(&s);
    disk.extend(["--memory-dir", on_disk.path().to_str().unwrap(), "--trainer", "external", "--"].map(str::to_owned));
    disk.extend(command.iter().cloned());
    let out = worker(&s, &job, "work-disk", &disk).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("not memory-backed"), "{}", text(&out));
    let seen: JobView = s.t.owner.get(&format!("/v1/tenants/{}/jobs/{}", s.t.id, job.id)).await.unwrap();
    assert_eq!(seen.releases, 1, "refused before asking for a release");
}

/// A stand-in for the Confidential Containers attestation agent's REST API on loopback, backed
/// by the simulated machine: it answers `/aa/evidence` and `/aa/additional-evidence` in the
/// agent's formats (the `sev` crate's serde form of the SNP report, NVIDIA's evidence list), or
/// like an agent older than guest-components v0.21 that knows no `encoding=base64`.
fn fake_agent(machine: &Path, old: bool) -> String {
    use base64::Engine;
    use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
    use coffre_attestation::collect::{CertKind, EvidenceSource, ReportData};
    use sev::parser::ByteParser;
    use std::io::{BufRead, Write};
    let m =
        coffre_attestation::simulated::SimulatedMachine::from_json(&std::fs::read_to_string(machine).unwrap()).unwrap();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let mut line = String::new();
            let mut r = std::io::BufReader::new(stream.try_clone().unwrap());
            r.read_line(&mut line).unwrap();
            loop {
                let mut h = String::new();
                if r.read_line(&mut h).unwrap() == 0 || h.trim().is_empty() {
                    break;
                }
            }
            let target = line.split_whitespace().nth(1).unwrap_or("").to_owned();
            let (path, query) = target.split_once('?').unwrap_or((&target, ""));
            let param = |k: &str| query.split('&').find_map(|kv| kv.strip_prefix(&format!("{k}="))).map(str::to_owned);
            let (status, body) = if old && param("encoding").is_some() {
                (400, "BAD REQUEST".to_owned())
            } else {
                let data = URL_SAFE_NO_PAD.decode(param("runtime_data").unwrap_or_default()).unwrap();
                match path {
                    "/aa/evidence" => {
                        let mut rd = [0u8; 64];
                        rd[..data.len()].copy_from_slice(&data);
                        let c = m.tee.collect(&ReportData::new(rd)).unwrap();
                        let report = sev::firmware::guest::AttestationReport::from_bytes(&c.report).unwrap();
                        let certs: Vec<serde_json::Value> = c
                            .certificates
                            .iter()
                            .map(|e| {
                                let kind = match e.kind {
                                    CertKind::Vcek => "VCEK",
                                    CertKind::Vlek => "VLEK",
                                    CertKind::Ask => "ASK",
                                    CertKind::Ark => "ARK",
                                    CertKind::Other => "Empty",
                                };
                                serde_json::json!({ "cert_type": kind, "data": e.der })
                            })
                            .collect();
                        (200, serde_json::json!({ "attestation_report": report, "cert_chain": certs }).to_string())
                    }
                    "/aa/additional-evidence" => {
                        let mut nonce = [0u8; 32];
                        nonce.copy_from_slice(&data[..32]);
                        let list: Vec<serde_json::Value> = m
                            .gpus
                            .iter()
                            .enumerate()
                            .map(|(i, g)| {
                                let e = g.evidence(&nonce).unwrap();
                                let pem: String = e
                                    .chain
                                    .iter()
                                    .map(|der| {
                                        let b = STANDARD.encode(der);
                                        let lines: Vec<&str> =
                                            b.as_bytes().chunks(64).map(|c| std::str::from_utf8(c).unwrap()).collect();
                                        format!(
                                            "-----BEGIN CERTIFICATE-----\n{}\n-----END CERTIFICATE-----\n",
                                            lines.join("\n")
                                        )
                                    })
                                    .collect();
                                serde_json::json!({
                                    "arch": e.stated_arch, "uuid": format!("GPU-{i}"),
                                    "evidence": STANDARD.encode(&e.report), "certificate": STANDARD.encode(pem),
                                })
                            })
                            .collect();
                        (200, serde_json::json!({ "nvidia": { "device_evidence_list": list } }).to_string())
                    }
                    _ => (404, "not found".to_owned()),
                }
            };
            let _ = write!(
                stream,
                "HTTP/1.1 {status} X\r\ncontent-type: application/octet-stream\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                body.len()
            );
        }
    });
    url
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_in_a_confidential_containers_pod_attests_through_the_attestation_agent() {
    let s = setup("bank-coco").await;
    let job = job(&s, 2).await;
    let coco = |url: &str| ["--tee", "coco", "--gpu", "coco", "--aa-url", url].map(str::to_owned).to_vec();

    // An agent before guest-components v0.21 cannot carry the 64-byte binding: refused, and said.
    let out = worker(&s, &job, "old", &coco(&fake_agent(&s.machine, true))).await;
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(text(&out).contains("guest-components v0.21"), "{}", text(&out));

    // A current one: the report and the GPUs' evidence come from it, bound as on a plain VM.
    let out = worker(&s, &job, "pod", &coco(&fake_agent(&s.machine, false))).await;
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("evidence coco report and 2 GPU report(s)"), "{}", text(&out));

    // A remote "agent" is somebody else's machine.
    let out = worker(&s, &job, "remote", &coco("http://10.0.0.1:8006")).await;
    assert_eq!(out.status.code(), Some(2), "{}", text(&out));
    assert!(text(&out).contains("loopback"), "{}", text(&out));
}

/// Red-team: the external trainer runs in its own process group, so a Ctrl-C at the terminal
/// reached only the worker, which died and left the trainer running with the decrypted records.
/// Now the worker kills the trainer's group and wipes its directory on SIGINT/SIGTERM/SIGHUP,
/// and a later worker wipes what a SIGKILLed one left behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_ctrl_c_on_the_worker_leaves_no_trainer_holding_the_records() {
    if !Path::new("/dev/shm").is_dir() {
        assert!(std::env::var("CI").as_deref() != Ok("true"), "no /dev/shm under CI");
        return;
    }
    let s = setup("bank-sigint").await;
    let script = s.dir.path().join("slow-train.sh");
    std::fs::write(&script, "#!/bin/sh\ncat > \"$TMPDIR/records.jsonl\"\nsleep 120\n").unwrap();
    let command = vec!["sh".to_owned(), script.to_str().unwrap().to_owned()];
    let measurement = coffre_worker::external::measure(&command).unwrap();
    let job = job_with(&s, 3, |m| {
        m.name = "slow-external".into();
        m.trainer_measurement = Some(coffre_policies::Digest::parse(&measurement).unwrap());
    })
    .await;
    // What a SIGKILLed worker would have left: a directory named after a process that is gone.
    let gone = Command::new("true").spawn().unwrap();
    let gone_pid = gone.id();
    let mut gone = gone;
    gone.wait().unwrap();
    let stale = Path::new("/dev/shm").join(format!("coffre-trainer-{gone_pid}-0000000000000000"));
    std::fs::create_dir_all(stale.join(".tmp")).unwrap();
    std::fs::write(stale.join(".tmp/records.jsonl"), CANARY).unwrap();
    // A live worker in another PID namespace (containers of one pod share /dev/shm): its PID
    // means nothing here, but it holds the lock beside its directory, so it is left alone.
    let elsewhere = Path::new("/dev/shm").join(format!("coffre-trainer-{gone_pid}-1111111111111111"));
    std::fs::create_dir_all(elsewhere.join(".tmp")).unwrap();
    std::fs::write(elsewhere.join(".tmp/records.jsonl"), b"another pod's records").unwrap();
    let held = std::fs::File::create(format!("{}.lock", elsewhere.display())).unwrap();
    held.try_lock().unwrap();

    let mut cmd = Command::new(env!("CARGO_BIN_EXE_coffre-worker"));
    cmd.args(["run", "--vault", &s.v.url, "--fingerprint", &s.v.running.fingerprint.to_string()])
        .args(["--tenant", &s.t.id, "--job", &job.id, "--base-model"])
        .arg(&s.model)
        .arg("--work-dir")
        .arg(s.dir.path().join("work"))
        .args(simulated(&s))
        .args(["--trainer", "external", "--"])
        .args(&command)
        .env("COFFRE_TOKEN", &s.token)
        .env("TMPDIR", s.dir.path().join("tmp"))
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped());
    let mut child = cmd.spawn().unwrap();
    let pid = child.id();
    // Wait until the trainer holds the records in its memory-backed directory.
    let mine = format!("coffre-trainer-{pid}-");
    let records = loop {
        let found = std::fs::read_dir("/dev/shm")
            .unwrap()
            .flatten()
            .find(|e| e.file_name().to_string_lossy().starts_with(&mine))
            .map(|e| e.path().join(".tmp/records.jsonl"));
        if let Some(r) = found.filter(|r| std::fs::metadata(r).is_ok_and(|m| m.len() > 0)) {
            break r;
        }
        assert!(child.try_wait().unwrap().is_none(), "the worker ended before training");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(!stale.exists(), "the directory a dead worker left is wiped before a new one is made");
    assert_eq!(
        std::fs::read(elsewhere.join(".tmp/records.jsonl")).unwrap(),
        b"another pod's records",
        "a directory whose lock is held is a live worker's"
    );
    drop(held);
    std::fs::remove_dir_all(&elsewhere).unwrap();
    std::fs::remove_file(format!("{}.lock", elsewhere.display())).unwrap();
    rustix::process::kill_process(rustix::process::Pid::from_raw(pid as i32).unwrap(), rustix::process::Signal::INT)
        .unwrap();
    let out = tokio::task::spawn_blocking(move || child.wait_with_output().unwrap()).await.unwrap();
    assert_eq!(out.status.code(), Some(130), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("the trainer was killed"));
    assert!(!records.exists(), "the trainer's directory is wiped");
    // No process is left running the trainer script.
    let script_name = script.to_str().unwrap().to_owned();
    let survivors: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| std::fs::read(e.path().join("cmdline")).ok())
        .map(|c| String::from_utf8_lossy(&c).replace('\0', " "))
        .filter(|c| c.contains(&script_name))
        .collect();
    assert!(survivors.is_empty(), "still running: {survivors:?}");
}
