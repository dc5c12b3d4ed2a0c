//! `coffre bench train`: training throughput in tokens per second and per CPU-second, on a
//! random-initialised Llama of a named configuration, with the same batch, mode and optimizer as
//! `bench/torch_train.py` (run side by side by `bench/train-vs-pytorch`).

use std::time::Instant;

use clap::{Args, ValueEnum};
use coffre_trainer::data::{Dataset, Example};
use coffre_trainer::{BaseModel, LlamaConfig, LoraSpec, Mode, TrainOptions, Trainer, tiny, tokenizer::Tokenizer};

use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
#[command(after_help = "\
Trains STEPS optimizer steps (after one warm-up step) on random token ids, batch × seq tokens per
step, and reports tokens per wall-clock second and per CPU-second (user + system time of the
whole process). Threads: set RAYON_NUM_THREADS=N (the default is every core).

bench/train-vs-pytorch runs this next to PyTorch (transformers + PEFT) on the same configuration,
batch and mode, for one and two threads, and prints both. Target: >= 1.0x PyTorch.

Example:
  RAYON_NUM_THREADS=1 coffre bench train --config smollm2-135m --mode lora --batch 4 --seq 128")]
pub struct TrainBenchArgs {
    /// Model configuration
    #[arg(long, value_enum, default_value_t = BenchConfig::Smollm2135m)]
    config: BenchConfig,
    /// LoRA (rank --rank on q_proj,v_proj) or full fine-tuning
    #[arg(long, value_enum, default_value_t = BenchMode::Lora)]
    mode: BenchMode,
    #[arg(long, default_value_t = 4)]
    batch: usize,
    #[arg(long, default_value_t = 128)]
    seq: usize,
    #[arg(long, default_value_t = 3)]
    steps: usize,
    #[arg(long, default_value_t = 8)]
    rank: usize,
    /// Print one JSON object instead of text
    #[arg(long)]
    json: bool,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchConfig {
    /// SmolLM2-135M: 30 layers, hidden 576, 9/3 heads, vocab 49152, tied head
    #[value(name = "smollm2-135m")]
    Smollm2135m,
    /// 4 layers, hidden 256, 8/4 heads, vocab 8192
    Small,
}

#[derive(Clone, Copy, Debug, ValueEnum)]
enum BenchMode {
    Lora,
    Full,
}

fn config(c: BenchConfig) -> LlamaConfig {
    let mut cfg = tiny::config(576, 30);
    match c {
        BenchConfig::Smollm2135m => {
            cfg.vocab_size = 49152;
            cfg.intermediate_size = 1536;
            cfg.num_attention_heads = 9;
            cfg.num_key_value_heads = Some(3);
            cfg.rope_theta = 100_000.0;
            cfg.tie_word_embeddings = true;
        }
        BenchConfig::Small => {
            cfg.vocab_size = 8192;
            cfg.hidden_size = 256;
            cfg.intermediate_size = 688;
            cfg.num_hidden_layers = 4;
            cfg.num_attention_heads = 8;
            cfg.num_key_value_heads = Some(4);
        }
    }
    cfg.max_position_embeddings = 2048;
    cfg
}

/// User + system CPU seconds of this process (all threads), from /proc/self/stat.
fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let after = &stat[stat.rfind(')')? + 2..];
    let fields: Vec<&str> = after.split_whitespace().collect();
    let (utime, stime): (f64, f64) = (fields.get(11)?.parse().ok()?, fields.get(12)?.parse().ok()?);
    Some((utime + stime) / 100.0) // USER_HZ is 100 on Linux
}

pub fn run(args: &TrainBenchArgs) -> CliResult {
    let fail = |e: coffre_trainer::Error| CliError::new(format!("benchmark failed: {e}"));
    if args.batch == 0 || args.seq == 0 || args.steps == 0 {
        return Err(CliError::usage("--batch, --seq and --steps must be at least 1"));
    }
    let cfg = config(args.config);
    let device = coffre_trainer::Device::Cpu;
    let weights = tiny::random_weights(&cfg, 0, &device).map_err(fail)?;
    let base = BaseModel {
        config: cfg.clone(),
        weights,
        tokenizer: Tokenizer::byte_level(&tiny::SPECIALS).map_err(fail)?,
        source: "random".into(),
    };
    // Random token ids, every target learned: the same work per step as the PyTorch script.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut next = || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state % cfg.vocab_size as u64) as u32
    };
    let examples: Vec<Example> = (0..args.batch)
        .map(|_| Example { ids: (0..=args.seq).map(|_| next()).collect(), target_mask: vec![true; args.seq] })
        .collect();
    let dataset = Dataset { examples, records: args.batch, truncated: 0, skipped: 0 };
    let mode = match args.mode {
        BenchMode::Lora => Mode::Lora(LoraSpec::new(args.rank)),
        BenchMode::Full => Mode::Full,
    };
    let mut options = TrainOptions::new(mode);
    options.steps = args.steps + 1;
    options.batch_size = args.batch;
    options.max_len = args.seq;
    options.eval_fraction = 0.0;
    options.warmup = 0;
    let mut trainer = Trainer::new(&base, dataset, options, &device).map_err(fail)?;
    trainer.train_step().map_err(fail)?; // warm-up
    let (wall, cpu) = (Instant::now(), cpu_seconds());
    let mut loss = 0.0;
    for _ in 0..args.steps {
        loss = trainer.train_step().map_err(fail)?.0;
    }
    let wall = wall.elapsed().as_secs_f64();
    let cpu = match (cpu, cpu_seconds()) {
        (Some(a), Some(b)) if b > a => b - a,
        _ => wall,
    };
    let tokens = (args.batch * args.seq * args.steps) as f64;
    let threads = std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from));
    let name = format!("{:?}", args.config).to_lowercase();
    if args.json {
        outln!(
            "{}",
            serde_json::json!({
                "impl": format!("coffre-trainer {}", env!("CARGO_PKG_VERSION")),
                "config": name, "mode": format!("{:?}", args.mode).to_lowercase(), "threads": threads,
                "batch": args.batch, "seq": args.seq, "steps": args.steps,
                "trainable": trainer.trainable_parameters(), "loss": loss,
                "tokens_per_second": tokens / wall, "tokens_per_cpu_second": tokens / cpu,
            })
        );
    } else {
        outln!("machine  {}", crate::bench::machine());
        outln!(
            "model    {} ({:.1} M parameters), {:?}, {} trainable; batch {} × {} tokens; {threads} thread(s)",
            name,
            cfg.parameter_count() as f64 / 1e6,
            args.mode,
            trainer.trainable_parameters(),
            args.batch,
            args.seq
        );
        outln!(
            "speed    {:.0} tokens/s, {:.0} tokens per CPU-second ({} steps, {:.2} s/step, loss {loss:.3})",
            tokens / wall,
            tokens / cpu,
            args.steps,
            wall / args.steps as f64
        );
    }
    Ok(())
}
