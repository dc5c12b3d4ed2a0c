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
whole process), each from the median step. Threads: set RAYON_NUM_THREADS=N (the default is
every core).

bench/train-vs-pytorch runs this next to PyTorch (transformers + PEFT) on the same configuration,
batch and mode, for one and two threads, and prints both. Targets: >= 1.1x PyTorch on one
thread, >= 1.5x on two (tokens per CPU-second).

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

/// The thread count the trainer and `gemm` use: RAYON_NUM_THREADS, or every core.
fn threads() -> usize {
    std::env::var("RAYON_NUM_THREADS")
        .ok()
        .and_then(|t| t.parse::<usize>().ok())
        .filter(|t| *t > 0)
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, usize::from))
}

/// The median of `values` (the mean of the middle two for an even count).
fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
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
    // Per step: wall and CPU seconds; the figures are the medians over the steps, which a burst of
    // other work on a shared machine moves less than a total would.
    let (mut walls, mut cpus, mut loss) = (Vec::new(), Vec::new(), 0.0);
    for _ in 0..args.steps {
        let (wall, cpu) = (Instant::now(), cpu_seconds());
        loss = trainer.train_step().map_err(fail)?.0;
        let wall = wall.elapsed().as_secs_f64();
        walls.push(wall);
        cpus.push(match (cpu, cpu_seconds()) {
            (Some(a), Some(b)) if b > a => b - a,
            _ => wall,
        });
    }
    let (wall, cpu) = (median(&mut walls), median(&mut cpus));
    let tokens = (args.batch * args.seq) as f64;
    let threads = threads();
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
            "speed    {:.0} tokens/s, {:.0} tokens per CPU-second (median of {} steps: {:.2} s/step; loss {loss:.3})",
            tokens / wall,
            tokens / cpu,
            args.steps,
            wall
        );
    }
    Ok(())
}

#[derive(Debug, Args)]
#[command(after_help = "\
Times each matrix product of one training step of the configuration, on the layouts the trainer
uses (candle's CPU matmul, the `gemm` crate underneath), and prints GFLOP/s per shape:
  x·Wᵀ   a projection's forward pass (x: tokens × in, W: out × in, as stored)
  g·W    its input gradient (every mode)
  gᵀ·x   its weight gradient (full fine-tuning only)
  q·kᵀ, p·v  attention, batched over sequences and key/value heads; beyond 128 tokens one pair
             per block of 128 query positions, against the keys up to the block's end
Threads: RAYON_NUM_THREADS=N (gemm splits one product across them). The trainer instead runs one
shard of the batch per thread, so each core mostly runs its own shard's products of batch × seq ÷ N
rows: RAYON_NUM_THREADS=1 with --tokens 256 is one core's share of a 512-token step on two threads.

bench/train-vs-pytorch runs this first on one thread and times torch.mm on the same shapes
(bench/torch_train.py --matmul), so the gap is known per shape before the whole step is compared.

Example:
  RAYON_NUM_THREADS=1 coffre bench matmul --config smollm2-135m --tokens 512")]
pub struct MatmulBenchArgs {
    /// Model configuration
    #[arg(long, value_enum, default_value_t = BenchConfig::Smollm2135m)]
    config: BenchConfig,
    /// Rows of the activations (tokens in one shard: batch × seq ÷ threads in a training step)
    #[arg(long, default_value_t = 512)]
    tokens: usize,
    /// Sequence length, for the attention products (tokens must be a multiple of it)
    #[arg(long, default_value_t = 128)]
    seq: usize,
    /// Seconds to time each shape for
    #[arg(long, default_value_t = 0.3)]
    seconds: f64,
    /// Print one JSON object per shape instead of a table
    #[arg(long)]
    json: bool,
}

/// One matrix product of a training step: `batch` products of `[m, k] × [k, n]`.
struct Product {
    name: String,
    pass: &'static str,
    batch: usize,
    m: usize,
    k: usize,
    n: usize,
}

/// The distinct products of one training step of `cfg` on `tokens` rows in sequences of `seq`.
fn step_products(cfg: &LlamaConfig, tokens: usize, seq: usize) -> Vec<Product> {
    let (h, i, v) = (cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size);
    let (kv, hd) = (cfg.kv_heads(), cfg.head_dim());
    let rep = cfg.num_attention_heads / kv.max(1);
    let mut out = Vec::new();
    for (name, o, k) in [
        ("q_proj/o_proj", h, h),
        ("k_proj/v_proj", kv * hd, h),
        ("gate_proj/up_proj", i, h),
        ("down_proj", h, i),
        ("lm_head", v, h),
    ] {
        out.push(Product { name: name.into(), pass: "x·Wᵀ", batch: 1, m: tokens, k, n: o });
        out.push(Product { name: name.into(), pass: "g·W", batch: 1, m: tokens, k: o, n: k });
        out.push(Product { name: name.into(), pass: "gᵀ·x", batch: 1, m: o, k: tokens, n: k });
    }
    // Attention in the trainer's blocks of query positions, each against the keys up to its end.
    let seqs = (tokens / seq.max(1)).max(1);
    let block = coffre_trainer::ops::ATTENTION_BLOCK;
    for start in (0..seq).step_by(block) {
        let end = (start + block).min(seq);
        let name = if end - start == seq { "attention".to_owned() } else { format!("attn q {start}..{end}") };
        let (batch, m) = (seqs * kv, rep * (end - start));
        out.push(Product { name: name.clone(), pass: "q·kᵀ", batch, m, k: hd, n: end });
        out.push(Product { name, pass: "p·v", batch, m, k: end, n: hd });
    }
    out
}

/// Operands laid out as the trainer's: `x·Wᵀ` multiplies by a transposed view of the stored
/// weight, `gᵀ·x` by a transposed view of the gradient.
fn operands(
    p: &Product,
    device: &coffre_trainer::Device,
) -> candle_core::Result<(candle_core::Tensor, candle_core::Tensor)> {
    use candle_core::Tensor;
    let fill = |rows: usize, cols: usize| {
        let data: Vec<f32> = (0..p.batch * rows * cols).map(|j| ((j * 7919 % 1000) as f32 - 500.0) * 1e-3).collect();
        Tensor::from_vec(data, (p.batch, rows, cols), device)
    };
    let (a, b) = match p.pass {
        "x·Wᵀ" | "q·kᵀ" => (fill(p.m, p.k)?, fill(p.n, p.k)?.transpose(1, 2)?),
        "gᵀ·x" => (fill(p.k, p.m)?.transpose(1, 2)?, fill(p.k, p.n)?),
        _ => (fill(p.m, p.k)?, fill(p.k, p.n)?),
    };
    if p.batch == 1 { Ok((a.squeeze(0)?, b.squeeze(0)?)) } else { Ok((a, b)) }
}

pub fn run_matmul(args: &MatmulBenchArgs) -> CliResult {
    if args.tokens == 0 || args.seq == 0 || !args.tokens.is_multiple_of(args.seq) {
        return Err(CliError::usage("--tokens must be a positive multiple of --seq"));
    }
    if !(args.seconds > 0.0 && args.seconds <= 60.0) {
        return Err(CliError::usage("--seconds must be between 0 and 60"));
    }
    let fail = |e: candle_core::Error| CliError::new(format!("benchmark failed: {e}"));
    let cfg = config(args.config);
    let device = coffre_trainer::Device::Cpu;
    let threads = threads();
    if !args.json {
        outln!("machine  {}", crate::bench::machine());
        outln!("shapes   {:?}, {} tokens, sequences of {}; {threads} thread(s)", args.config, args.tokens, args.seq);
        outln!("{:<18} {:<6} {:>22} {:>9}", "product", "pass", "shape (batch·m·k·n)", "GFLOP/s");
    }
    for p in step_products(&cfg, args.tokens, args.seq) {
        let (a, b) = operands(&p, &device).map_err(fail)?;
        let flop = 2.0 * (p.batch * p.m * p.k * p.n) as f64;
        a.matmul(&b).map_err(fail)?; // warm-up
        let (start, mut runs) = (Instant::now(), 0u32);
        while start.elapsed().as_secs_f64() < args.seconds || runs < 3 {
            std::hint::black_box(a.matmul(&b).map_err(fail)?);
            runs += 1;
        }
        let gflops = flop * f64::from(runs) / start.elapsed().as_secs_f64() / 1e9;
        let shape = format!("{}·{}·{}·{}", p.batch, p.m, p.k, p.n);
        if args.json {
            outln!(
                "{}",
                serde_json::json!({"product": p.name, "pass": p.pass, "batch": p.batch, "m": p.m, "k": p.k,
                    "n": p.n, "threads": threads, "gflops": gflops})
            );
        } else {
            outln!("{:<18} {:<6} {:>22} {:>9.1}", p.name, p.pass, shape, gflops);
        }
    }
    Ok(())
}
