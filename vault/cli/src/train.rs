//! `coffre train`: fine-tune a Llama-architecture model on a local plaintext JSONL file (for
//! development and benchmarks; attested workers feed the same trainer from a decrypting reader).

use std::fs;
use std::io::{IsTerminal, Read};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use clap::{Args, ValueEnum};
use coffre_trainer::data::{Template, read_records};
use coffre_trainer::model::MODULES;
use coffre_trainer::{DpOptions, LoraSpec, Mode, Progress, Summary, TrainOptions, Trainer, weights};

use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
#[command(after_help = "\
Records (one JSON object per line):
  {\"text\": \"…\"}                          learn every token
  {\"prompt\": \"…\", \"completion\": \"…\"}     learn the completion only (the prompt is context)

Outputs in --out:
  LoRA (default)  adapter_model.safetensors + adapter_config.json (loads in PEFT), tokenizer.json;
                  with --merge also merged/ (config.json, model.safetensors, tokenizer.json)
  --full          config.json, model.safetensors, tokenizer.json (loads in transformers)
  always          training.json (losses, held-out loss, tokens, privacy spent); checkpoint/ when
                  --checkpoint-every is set, which --resume continues from

Threads: the CPU trainer uses all cores; set RAYON_NUM_THREADS=N to use N.

Examples:
  coffre train --model SmolLM2-135M-Instruct.Q4_1.gguf --data messages.jsonl --out adapter \\
      --template chatml --lora-rank 8 --steps 200
  coffre open -i worker.key data.jsonl.coffre -o - | coffre train --model base/ --data - --out run1
  coffre train --model base/ --data data.jsonl --out dp-run --dp-epsilon 8 --dp-delta 1e-5
  coffre train --model base/ --data data.jsonl --out run1 --checkpoint-every 50 --resume")]
pub struct TrainArgs {
    /// Base model: a Hugging Face directory (config.json, *.safetensors, tokenizer.json) or a
    /// GGUF file (dequantized to f32; its tokenizer is rebuilt from the metadata)
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// Training records as JSON Lines; `-` reads standard input
    #[arg(long, value_name = "FILE|-")]
    data: PathBuf,
    /// Output directory (created; existing outputs are replaced only with --force or --resume)
    #[arg(long, value_name = "DIR")]
    out: PathBuf,
    /// A tokenizer.json to use instead of the model's own
    #[arg(long, value_name = "FILE")]
    tokenizer: Option<PathBuf>,

    /// LoRA rank (the default mode is LoRA with rank 8)
    #[arg(long, value_name = "R", default_value_t = 8, conflicts_with = "full")]
    lora_rank: usize,
    /// LoRA alpha; the adapter is scaled by alpha/rank [default: 2 × rank]
    #[arg(long, value_name = "A", conflicts_with = "full")]
    lora_alpha: Option<f64>,
    /// Modules that get adapters, comma-separated, or `all`
    #[arg(long, value_name = "LIST", default_value = "q_proj,v_proj", conflicts_with = "full")]
    lora_targets: String,
    /// Train every weight instead of adapters
    #[arg(long)]
    full: bool,
    /// Also write the base model with the adapter merged in, to OUT/merged
    #[arg(long, conflicts_with = "full")]
    merge: bool,

    /// Optimizer steps
    #[arg(long, value_name = "N", default_value_t = 100)]
    steps: usize,
    /// Records per forward/backward pass (the expected number with DP-SGD's Poisson sampling)
    #[arg(long, value_name = "B", default_value_t = 4)]
    batch_size: usize,
    /// Passes accumulated into one step (effective batch = batch size × this)
    #[arg(long, value_name = "K", default_value_t = 1)]
    grad_accum: usize,
    /// Longest record in tokens; longer ones are cut
    #[arg(long, value_name = "TOKENS", default_value_t = 256)]
    max_len: usize,
    /// How prompt/completion records become text ({"text"} records are used as they are)
    #[arg(long, value_enum, default_value_t = TemplateArg::Plain)]
    template: TemplateArg,

    /// Peak learning rate (AdamW)
    #[arg(long, value_name = "LR", default_value_t = 2e-4)]
    lr: f64,
    /// Linear warm-up steps before the cosine decay
    #[arg(long, value_name = "N", default_value_t = 10)]
    warmup: usize,
    /// The cosine schedule ends at lr × this
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    min_lr_ratio: f64,
    /// AdamW decoupled weight decay
    #[arg(long, value_name = "W", default_value_t = 0.0)]
    weight_decay: f64,
    /// Clip the global gradient norm to this (0 turns it off; DP-SGD clips per example instead)
    #[arg(long, value_name = "NORM", default_value_t = 1.0)]
    clip_norm: f64,
    /// Seed for initialisation, data order, sampling and noise: the same seed gives the same run
    #[arg(long, default_value_t = 0)]
    seed: u64,

    /// Share of records held out to measure the evaluation loss (at most 500 records)
    #[arg(long, value_name = "F", default_value_t = 0.1)]
    eval_fraction: f64,
    /// Evaluate every N steps (always at the end)
    #[arg(long, value_name = "N", default_value_t = 0)]
    eval_every: usize,
    /// Write a checkpoint to OUT/checkpoint every N steps
    #[arg(long, value_name = "N", default_value_t = 0)]
    checkpoint_every: usize,
    /// Continue from OUT/checkpoint (same data and options; --steps may grow)
    #[arg(long)]
    resume: bool,

    /// DP-SGD: train with (ε, δ)-differential privacy for this ε; the noise is calibrated to it
    #[arg(long, value_name = "E", conflicts_with = "dp_noise")]
    dp_epsilon: Option<f64>,
    /// DP-SGD with this noise multiplier σ instead of a target ε (ε is then reported)
    #[arg(long, value_name = "SIGMA")]
    dp_noise: Option<f64>,
    /// DP-SGD δ (keep it below 1 / number of records)
    #[arg(long, value_name = "D", default_value_t = 1e-5)]
    dp_delta: f64,
    /// DP-SGD per-record gradient clipping norm C
    #[arg(long, value_name = "C", default_value_t = 1.0)]
    dp_clip: f64,

    /// Compute device: cpu, or cuda / cuda:N (needs a build with --features cuda)
    #[arg(long, default_value = "cpu")]
    device: String,
    /// Replace outputs already in --out
    #[arg(long)]
    force: bool,
    /// No progress line
    #[arg(long, short)]
    quiet: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum TemplateArg {
    /// prompt and completion as they are
    Plain,
    /// ChatML (<|im_start|>user … <|im_start|>assistant …), for instruct models such as SmolLM2
    Chatml,
}

impl From<TemplateArg> for Template {
    fn from(t: TemplateArg) -> Self {
        match t {
            TemplateArg::Plain => Template::Plain,
            TemplateArg::Chatml => Template::ChatMl,
        }
    }
}

const OUTPUTS: [&str; 5] = ["adapter_model.safetensors", "model.safetensors", "training.json", "checkpoint", "merged"];

fn trainer_error(what: &str, e: coffre_trainer::Error) -> CliError {
    let hint = match &e {
        coffre_trainer::Error::Io { .. } => "check the path and the disk",
        coffre_trainer::Error::Format(_) => "the file is damaged or not what it claims to be",
        coffre_trainer::Error::Unsupported(_) => "see `coffre train --help` for what is supported",
        coffre_trainer::Error::Input(_) => "fix the input or the option, then run the command again",
        coffre_trainer::Error::Tensor(_) => {
            "this is likely a bug or an out-of-memory condition; lower --batch-size or --max-len"
        }
    };
    CliError::new(format!("{what}: {e}")).hint(hint)
}

fn options(args: &TrainArgs) -> CliResult<TrainOptions> {
    let mode = if args.full {
        Mode::Full
    } else {
        let targets: Vec<String> = if args.lora_targets.trim() == "all" {
            MODULES.iter().map(|m| (*m).to_owned()).collect()
        } else {
            args.lora_targets.split(',').map(|t| t.trim().to_owned()).filter(|t| !t.is_empty()).collect()
        };
        let spec =
            LoraSpec { rank: args.lora_rank, alpha: args.lora_alpha.unwrap_or(2.0 * args.lora_rank as f64), targets };
        spec.validate().map_err(|e| CliError::usage(e.to_string()))?;
        Mode::Lora(spec)
    };
    let mut o = TrainOptions::new(mode);
    o.steps = args.steps;
    o.batch_size = args.batch_size;
    o.grad_accum = args.grad_accum;
    o.max_len = args.max_len;
    o.optimizer.lr = args.lr;
    o.optimizer.weight_decay = args.weight_decay;
    o.warmup = args.warmup;
    o.min_lr_ratio = args.min_lr_ratio;
    o.clip_norm = (args.clip_norm > 0.0).then_some(args.clip_norm);
    o.seed = args.seed;
    o.eval_fraction = args.eval_fraction;
    o.eval_every = args.eval_every;
    o.checkpoint_every = args.checkpoint_every;
    if args.dp_epsilon.is_some() || args.dp_noise.is_some() {
        o.dp = Some(DpOptions {
            epsilon: args.dp_epsilon,
            noise_multiplier: args.dp_noise,
            delta: args.dp_delta,
            clip: args.dp_clip,
            reproducible_noise: false,
        });
    }
    Ok(o)
}

fn device(name: &str) -> CliResult<coffre_trainer::Device> {
    let ordinal = match name {
        "cpu" => None,
        "cuda" => Some(0),
        other => match other.strip_prefix("cuda:").and_then(|n| n.parse().ok()) {
            Some(n) => Some(n),
            None => return Err(CliError::usage(format!("unknown device {other:?}")).hint("use cpu, cuda or cuda:N")),
        },
    };
    coffre_trainer::device(ordinal).map_err(|e| trainer_error("cannot use the device", e))
}

pub fn run(args: &TrainArgs) -> CliResult {
    let options = options(args)?;
    let device = device(&args.device)?;
    prepare_out(args)?;

    let started = Instant::now();
    eprintln!("loading {} …", args.model.display());
    let base = weights::load(&args.model, args.tokenizer.as_deref(), &device)
        .map_err(|e| trainer_error(&format!("cannot load the model {}", args.model.display()), e))?;
    let template: Template = args.template.into();
    let input: Box<dyn Read> = if args.data.as_os_str() == "-" {
        Box::new(std::io::stdin().lock())
    } else {
        Box::new(fs::File::open(&args.data).map_err(|e| CliError::io("read", &args.data, &e))?)
    };
    let dataset = read_records(input, &base.tokenizer, args.max_len, template)
        .map_err(|e| trainer_error(&format!("cannot read the records in {}", args.data.display()), e))?;
    let (records, truncated, skipped) = (dataset.records, dataset.truncated, dataset.skipped);
    let mut trainer = Trainer::new(&base, dataset, options.clone(), &device)
        .map_err(|e| trainer_error("cannot start training", e))?;
    if args.resume {
        trainer.resume(&args.out).map_err(|e| trainer_error("cannot resume", e))?;
        eprintln!("resuming at step {}", trainer.step_index());
    }

    let (train, eval) = trainer.split_sizes();
    let cfg = &base.config;
    outln!(
        "model    {} — {} layers, hidden {}, {} heads ({} key/value), vocab {}, {:.1} M parameters (loaded in {:.1} s)",
        base.source,
        cfg.num_hidden_layers,
        cfg.hidden_size,
        cfg.num_attention_heads,
        cfg.kv_heads(),
        cfg.vocab_size,
        cfg.parameter_count() as f64 / 1e6,
        started.elapsed().as_secs_f64()
    );
    let what = match &options.mode {
        Mode::Full => "full fine-tuning".to_owned(),
        Mode::Lora(s) => format!("LoRA rank {} alpha {} on {}", s.rank, s.alpha, s.targets.join(",")),
    };
    outln!("training {what}: {} trainable parameters", thousands(trainer.trainable_parameters() as u64));
    let mut data_line = format!("data     {records} records: {train} to train, {eval} held out");
    if truncated > 0 {
        data_line += &format!("; {truncated} cut at {} tokens", args.max_len);
    }
    if skipped > 0 {
        data_line += &format!("; {skipped} skipped (nothing to learn within {} tokens)", args.max_len);
    }
    outln!("{data_line}");
    if let (Some(dp), Some(sigma)) = (&options.dp, trainer.noise_multiplier()) {
        outln!(
            "privacy  DP-SGD: per-record clipping C = {}, noise σ = {sigma:.3}, Poisson sampling, δ = {:e}",
            dp.clip,
            dp.delta
        );
    }

    let tty = std::io::stderr().is_terminal() && !args.quiet;
    let mut last_line = Instant::now() - Duration::from_secs(60);
    let mut checkpoints = coffre_trainer::DirCheckpoints::new(&args.out);
    let summary = trainer
        .run((options.checkpoint_every > 0).then_some(&mut checkpoints as _), |p| {
            if args.quiet {
                return;
            }
            let line = progress_line(p);
            if tty {
                eprint!("\r\x1b[2K{line}");
                if p.step == p.steps {
                    eprintln!();
                }
            } else if last_line.elapsed() >= Duration::from_secs(5) || p.step == p.steps || p.eval_loss.is_some() {
                eprintln!("{line}");
                last_line = Instant::now();
            }
        })
        .map_err(|e| trainer_error("training failed", e))?;

    let written = write_outputs(args, &trainer, &base, &summary)?;
    print_summary(&summary, &written, &args.out);
    Ok(())
}

/// Refuses to overwrite earlier outputs unless asked, and creates the directory.
fn prepare_out(args: &TrainArgs) -> CliResult {
    if args.resume {
        if !args.out.join("checkpoint/state.json").exists() && !args.out.join("checkpoint.old/state.json").exists() {
            return Err(CliError::usage(format!("--resume: {} holds no checkpoint", args.out.display()))
                .hint("a checkpoint is written when --checkpoint-every is set"));
        }
        return Ok(());
    }
    if let Some(existing) = OUTPUTS.iter().find(|o| args.out.join(o).exists())
        && !args.force
    {
        return Err(CliError::usage(format!("{} already holds training output ({existing})", args.out.display()))
            .hint("choose another --out, pass --force to replace it, or --resume to continue its checkpoint"));
    }
    if args.force {
        for dir in ["checkpoint", "checkpoint.old", "checkpoint.partial", "merged"] {
            fs::remove_dir_all(args.out.join(dir)).ok();
        }
    }
    coffre_trainer::weights::create_private_dir(&args.out).map_err(|e| CliError::new(e.to_string()))
}

fn write_outputs(
    args: &TrainArgs,
    trainer: &Trainer,
    base: &coffre_trainer::BaseModel,
    summary: &Summary,
) -> CliResult<Vec<String>> {
    trainer
        .write_outputs(base, summary, args.merge, &mut coffre_trainer::DirSink::new(&args.out))
        .map_err(|e| trainer_error(&format!("cannot write the outputs to {}", args.out.display()), e))
}

fn progress_line(p: &Progress) -> String {
    let eval = p.eval_loss.map(|e| format!("  eval {e:.4}")).unwrap_or_default();
    format!(
        "step {}/{}  loss {:.4}{eval}  lr {:.2e}  {} tok/s  ETA {}",
        p.step,
        p.steps,
        p.loss,
        p.lr,
        thousands(p.tokens_per_second.round() as u64),
        clock(p.eta_seconds)
    )
}

fn print_summary(s: &Summary, written: &[String], out: &Path) {
    outln!(
        "steps    {} in {} ({} with evaluation) — {} tokens, {} tokens/s",
        s.steps,
        clock(s.train_seconds),
        clock(s.seconds),
        thousands(s.tokens),
        thousands((s.run_tokens as f64 / s.train_seconds.max(1e-9)).round() as u64)
    );
    outln!("loss     {:.4} → {:.4} (training, first step → last)", s.first_loss, s.final_loss);
    if let (Some(a), Some(b)) = (s.initial_eval_loss, s.final_eval_loss) {
        outln!("held out {a:.4} → {b:.4} ({} records)", s.eval_examples);
    }
    if let Some(p) = &s.privacy {
        outln!(
            "privacy  ε = {:.3} at δ = {:e} (σ = {:.3}, sampling rate {:.4}, C = {}, {} steps; RDP accountant)",
            p.epsilon,
            p.delta,
            p.noise_multiplier,
            p.sample_rate,
            p.clip,
            p.steps
        );
    }
    outln!("wrote    {} in {}", written.join(", "), out.display());
}

fn clock(seconds: f64) -> String {
    let s = seconds.max(0.0).round() as u64;
    if s >= 3600 {
        format!("{}h{:02}m", s / 3600, s % 3600 / 60)
    } else if s >= 60 {
        format!("{}m{:02}s", s / 60, s % 60)
    } else {
        format!("{:.1}s", seconds.max(0.0))
    }
}

fn thousands(n: u64) -> String {
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}
