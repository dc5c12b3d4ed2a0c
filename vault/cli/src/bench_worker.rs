//! `coffre bench worker`: what the confidential pipeline costs. The same LoRA job, same seed and
//! steps, once through `coffre-worker` against a real `coffred --dev` (attestation, release,
//! download, decryption in memory, sealing, provenance, registration) and
//! once as `coffre train` on the plaintext file, alternating, in one run.

use std::path::PathBuf;

use clap::Args;

use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
#[command(after_help = "\
Starts `coffred --dev` (beside this binary) trusting a simulated machine, sets up a tenant, seals
and uploads a generated dataset of bank messages, submits a LoRA job (rank 8 on q/v, batch 4 x
128 tokens, AdamW 2e-4, seed 42) pinning the base model, then alternates, ROUNDS times:

  worker  coffre-worker run --tee simulated --gpu simulated (beside this binary; built with
          --features simulated), wall time from start to the registered artifact;
  plain   coffre train on the plaintext JSONL with the same options, wall time.

Prints each round, the medians, the overhead (worker / plain - 1; target <= 2 %), and whether
both produced bit-identical adapters. The base model is --model, else SmolLM2-135M-Instruct
when scripts/fetch-model has fetched it, else a generated model (hidden 256, 4 layers).

Build first: cargo build --release -p coffre-cli -p coffre-vault -p coffre-worker \\
                 --features coffre-cli/simulated,coffre-worker/simulated")]
pub struct WorkerBenchArgs {
    /// The base model (directory or GGUF)
    #[arg(long)]
    pub model: Option<PathBuf>,
    /// Optimiser steps
    #[arg(long, default_value_t = 30)]
    pub steps: u64,
    /// Records in the generated dataset
    #[arg(long, default_value_t = 2_000)]
    pub records: usize,
    /// Rounds (each runs both, alternating which goes first)
    #[arg(long, default_value_t = 2)]
    pub rounds: usize,
}

#[cfg(not(feature = "simulated"))]
pub fn run(_args: &WorkerBenchArgs) -> CliResult {
    Err(CliError::usage("bench worker needs simulated evidence: build with --features simulated"))
}

#[cfg(feature = "simulated")]
pub fn run(args: &WorkerBenchArgs) -> CliResult {
    crate::bench_release::runtime(1)?.block_on(imp::run(args))
}

#[cfg(feature = "simulated")]
mod imp {
    use std::path::Path;
    use std::process::Command;
    use std::time::Instant;

    use coffre_api::wire::*;
    use coffre_attestation::simulated::SimulatedMachine;
    use coffre_broker::development;
    use coffre_seal::{RecipientSecretKey, SystemRandom};

    use super::*;
    use crate::bench_release::imp::{Tenant, coffred_path, err, start, tenant};

    fn beside(name: &str) -> CliResult<PathBuf> {
        let exe = std::env::current_exe().map_err(err)?;
        let p = exe.with_file_name(name);
        if p.is_file() {
            Ok(p)
        } else {
            Err(CliError::usage(format!("no {name} beside {}", exe.display()))
                .hint("build it: cargo build --release -p coffre-worker --features coffre-worker/simulated"))
        }
    }

    fn base_model(given: Option<&Path>, dir: &Path) -> CliResult<PathBuf> {
        if let Some(p) = given {
            return Ok(p.to_path_buf());
        }
        let cached = std::env::var_os("COFFRE_MODELS")
            .map(PathBuf::from)
            .unwrap_or_else(|| PathBuf::from(".cache/models"))
            .join("SmolLM2-135M-Instruct.Q4_1.gguf");
        if cached.is_file() {
            return Ok(cached);
        }
        let tiny = dir.join("tiny-model");
        coffre_trainer::tiny::generate(&tiny, 256, 4, 2026).map_err(err)?;
        Ok(tiny)
    }

    /// Runs `cmd`; returns its wall time and everything it printed.
    fn timed(cmd: &mut Command, what: &str) -> CliResult<(f64, String)> {
        let started = Instant::now();
        let out = cmd.output().map_err(|e| CliError::new(format!("cannot run {what}: {e}")))?;
        let secs = started.elapsed().as_secs_f64();
        let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
        if !out.status.success() {
            return Err(CliError::new(format!("{what} failed: {text}")));
        }
        Ok((secs, text))
    }

    /// The seconds the worker printed on the line starting with `prefix` (`… [12.3 s]`).
    fn at(text: &str, prefix: &str) -> Option<f64> {
        let line = text.lines().find(|l| l.starts_with(prefix))?;
        line.rsplit_once('[')?.1.trim_end_matches(" s]").parse().ok()
    }

    fn median(v: &mut [f64]) -> f64 {
        v.sort_by(f64::total_cmp);
        let n = v.len();
        if n % 2 == 1 { v[n / 2] } else { (v[n / 2 - 1] + v[n / 2]) / 2.0 }
    }

    pub async fn run(args: &WorkerBenchArgs) -> CliResult {
        let coffred = coffred_path(None)?;
        let worker = beside("coffre-worker")?;
        let coffre = std::env::current_exe().map_err(err)?;
        let tmp = tempfile::tempdir().map_err(err)?;
        let d = tmp.path();
        let model = base_model(args.model.as_deref(), d)?;
        let (_, model_digest) = coffre_api::model::digest_path(&model).map_err(err)?;
        outln!(
            "coffre bench worker: {} steps of LoRA r8 q/v, batch 4 x 128, {} records, model {}; {} CPU(s)",
            args.steps,
            args.records,
            model.display(),
            std::thread::available_parallelism().map_or(1, usize::from)
        );

        let machine = SimulatedMachine::generate(1).map_err(err)?;
        let machine_file = d.join("machine.json");
        std::fs::write(&machine_file, machine.to_json().map_err(err)?).map_err(err)?;
        let roots = d.join("roots.pem");
        std::fs::write(&roots, machine.roots_pem()).map_err(err)?;
        let server = start(&coffred, d, &roots, None)?;
        let Tenant { owner, owner_key, worker_token } = tenant(&server).await?;
        let t = development::TENANT;

        // The dataset: generated bank messages, plaintext for `coffre train`, sealed for the vault.
        let plain = d.join("messages.jsonl");
        let mut bytes = Vec::new();
        crate::demo_data::write_jsonl(&mut bytes, args.records, 7).map_err(err)?;
        std::fs::write(&plain, &bytes).map_err(err)?;
        let tenant_view: TenantView = owner.get(&format!("/v1/tenants/{t}")).await.map_err(err)?;
        let kek: coffre_seal::RecipientPublicKey = tenant_view.kek.public_key.parse().map_err(err)?;
        let fields = coffre_seal::HeaderFields {
            tenant: t.into(),
            dataset: "bench".into(),
            content_type: "application/jsonl".into(),
            plaintext_len: Some(bytes.len() as u64),
        };
        let mut sealer =
            coffre_seal::seal(Vec::new(), &[kek], &fields, coffre_seal::Workers::sequential(), &mut SystemRandom)
                .map_err(err)?;
        std::io::Write::write_all(&mut sealer, &bytes).map_err(err)?;
        let (object, _) = sealer.finish().map_err(err)?;
        let view: ObjectView =
            owner.upload_bytes(&format!("/v1/tenants/{t}/datasets/bench/objects"), object, &[]).await.map_err(err)?;
        let output = RecipientSecretKey::generate(&mut SystemRandom).map_err(err)?;
        let mut m = development::manifest(
            "bench",
            coffre_log::Digest::parse(&view.digest).map_err(err)?,
            args.steps,
            output.public(),
            4_102_444_800,
        );
        m.base_model = Some(coffre_policies::Digest::parse(&model_digest).map_err(err)?);
        let job: JobView =
            owner.post(&format!("/v1/tenants/{t}/jobs"), &m.sign(&owner_key).map_err(err)?).await.map_err(err)?;
        let r = &m.recipe;

        let fp = server.fingerprint.to_string();
        let (mut worker_times, mut plain_times) = (Vec::new(), Vec::new());
        outln!("  {:<8} {:>12} {:>12}", "round", "worker s", "plain s");
        for round in 0..args.rounds.max(1) {
            let work = d.join(format!("work-{round}"));
            let mut w = Command::new(&worker);
            w.args(["run", "--vault", &server.url, "--fingerprint", &fp, "--tenant", t, "--job", &job.id])
                .args(["--tee", "simulated", "--gpu", "simulated", "--checkpoint-every", "0"])
                .arg("--simulated-machine")
                .arg(&machine_file)
                .arg("--base-model")
                .arg(&model)
                .arg("--work-dir")
                .arg(&work)
                .env("COFFRE_TOKEN", &worker_token);
            let out = d.join(format!("plain-{round}"));
            let mut p = Command::new(&coffre);
            p.arg("train")
                .arg("--model")
                .arg(&model)
                .arg("--data")
                .arg(&plain)
                .arg("--out")
                .arg(&out)
                .args([
                    "--lora-rank",
                    &r.lora_rank.unwrap_or(8).to_string(),
                    "--lora-targets",
                    &r.lora_targets.join(","),
                ])
                .args(["--steps", &r.steps.to_string(), "--batch-size", &r.batch_size.to_string()])
                .args(["--max-len", &r.max_seq_len.to_string(), "--lr", &r.learning_rate.to_string()])
                .args(["--seed", &r.seed.to_string(), "--quiet"]);
            let ((wt, wtext), (pt, _)) = if round % 2 == 0 {
                let w = timed(&mut w, "coffre-worker")?;
                (w, timed(&mut p, "coffre train")?)
            } else {
                let p = timed(&mut p, "coffre train")?;
                (timed(&mut w, "coffre-worker")?, p)
            };
            // Where the worker's time went, from its own progress lines.
            let mark = |p: &str| at(&wtext, p);
            let phases = match (
                mark("model "),
                mark("records "),
                mark("trained "),
                mark("sealed "),
                mark("registered "),
            ) {
                (Some(m), Some(r), Some(t), Some(s), Some(g)) => format!(
                    "worker: load+digest {m:.1} s, attest+release+decrypt {:.1} s, train {:.1} s, seal {:.1} s, register {:.1} s",
                    r - m,
                    t - r,
                    s - t,
                    g - s
                ),
                _ => String::new(),
            };
            outln!("  {:<8} {:>12.2} {:>12.2}   {phases}", round + 1, wt, pt);
            worker_times.push(wt);
            plain_times.push(pt);
            // The worker's sealed adapter, opened with the job's output key, against the plain one.
            if round == 0 {
                let sealed = std::fs::read_dir(&work)
                    .map_err(err)?
                    .filter_map(|e| e.ok().map(|e| e.path()))
                    .find(|p| p.extension().is_some_and(|x| x == "coffre"))
                    .ok_or_else(|| err("the worker left no sealed artifact"))?;
                let (_, reader) = coffre_seal::open(
                    std::fs::File::open(&sealed).map_err(err)?,
                    &output,
                    coffre_seal::Workers::sequential(),
                )
                .map_err(err)?;
                let mut adapter = Vec::new();
                coffre_api::artifact::read_artifact(reader, |name, _, rd| {
                    if name == "adapter_model.safetensors" {
                        rd.read_to_end(&mut adapter)?;
                    }
                    Ok(())
                })
                .map_err(err)?;
                let same = std::fs::read(out.join("adapter_model.safetensors")).map_err(err)? == adapter;
                if !same {
                    return Err(CliError::new(
                        "the worker's adapter differs from coffre train's on the same job: the two paths did not train the same model",
                    ));
                }
                outln!("  same adapter from both paths: yes (bit-identical)");
            }
        }
        let (w, p) = (median(&mut worker_times), median(&mut plain_times));
        let overhead = (w / p - 1.0) * 100.0;
        outln!();
        outln!("  median   worker {w:.2} s   plain {p:.2} s   overhead {overhead:+.1} %   (target <= 2 %)");
        Ok(())
    }
}
