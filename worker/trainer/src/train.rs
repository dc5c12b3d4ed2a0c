//! The training loop: batching, loss, gradient accumulation and clipping, AdamW with warm-up +
//! cosine schedule, DP-SGD, evaluation, checkpoints and resume.

use std::path::Path;
use std::time::Instant;

use candle_core::{DType, Device, Tensor, Var};
use rand::seq::SliceRandom;
use rand::{Rng, TryRngCore};
use rand_distr::{Distribution, Normal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::data::{Dataset, Example};
use crate::model::{Llama, Mode, Probes, weighted_nll};
use crate::optim::{AdamW, AdamWConfig, learning_rate};
use crate::output::{Checkpoint, CheckpointSink, DirCheckpoints};
use crate::weights::{BaseModel, read_safetensors_bytes, safetensors_bytes};
use crate::{Error, Result, dp, stream};

const EPOCH: u64 = 1;
const POISSON: u64 = 2;
const NOISE: u64 = 3;
const SPLIT: u64 = 4;

/// DP-SGD settings. Exactly one of `epsilon` (the noise is then calibrated to reach it after all
/// steps) and `noise_multiplier` is set.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct DpOptions {
    pub epsilon: Option<f64>,
    pub noise_multiplier: Option<f64>,
    pub delta: f64,
    /// Per-example gradient clipping norm C.
    pub clip: f64,
    /// Draw the Poisson samples and the noise from the run's seed instead of the operating
    /// system's random source. Only for tests and benchmarks: whoever knows the seed can
    /// recompute the noise and the batches, and the privacy guarantee is void.
    #[serde(default)]
    pub reproducible_noise: bool,
}

/// Everything that shapes a training run.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrainOptions {
    pub mode: Mode,
    pub steps: usize,
    /// Examples per forward/backward pass.
    pub batch_size: usize,
    /// Passes accumulated into one optimizer step.
    pub grad_accum: usize,
    /// Longest example in tokens; longer records are cut.
    pub max_len: usize,
    pub optimizer: AdamWConfig,
    pub warmup: usize,
    /// The cosine schedule ends at `lr · min_lr_ratio`.
    pub min_lr_ratio: f64,
    /// Global gradient-norm clipping (not used with DP-SGD, which clips each example).
    pub clip_norm: Option<f64>,
    pub seed: u64,
    /// Share of records held out for the evaluation loss (at most [`MAX_EVAL`] records).
    pub eval_fraction: f64,
    /// Evaluate every N steps (and always at the end); 0 for only at the end.
    pub eval_every: usize,
    /// Write a checkpoint every N steps; 0 for never.
    pub checkpoint_every: usize,
    pub dp: Option<DpOptions>,
}

impl TrainOptions {
    /// A sensible start for `mode`: 100 steps of 4 records of up to 128 tokens, AdamW at 2e-4 with
    /// 10 warm-up steps, clipping at 1, a tenth of the records held out.
    pub fn new(mode: Mode) -> Self {
        Self {
            mode,
            steps: 100,
            batch_size: 4,
            grad_accum: 1,
            max_len: 128,
            optimizer: AdamWConfig { lr: 2e-4, ..AdamWConfig::default() },
            warmup: 10,
            min_lr_ratio: 0.1,
            clip_norm: Some(1.0),
            seed: 0,
            eval_fraction: 0.1,
            eval_every: 0,
            checkpoint_every: 0,
            dp: None,
        }
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: &str| Err(Error::Input(m.into()));
        if self.steps == 0 || self.batch_size == 0 || self.grad_accum == 0 || self.max_len == 0 {
            return bad("steps, batch size, gradient accumulation and maximum length must be at least 1");
        }
        if !(self.optimizer.lr.is_finite() && self.optimizer.lr > 0.0) {
            return bad("the learning rate must be a positive number");
        }
        if !(0.0..1.0).contains(&self.eval_fraction) {
            return bad("the evaluation fraction must be in [0, 1)");
        }
        if let Mode::Lora(spec) = &self.mode {
            spec.validate()?;
        }
        if let Some(dp) = &self.dp {
            if dp.epsilon.is_some() == dp.noise_multiplier.is_some() {
                return bad("DP-SGD needs exactly one of a target ε and a noise multiplier");
            }
            if !(dp.clip.is_finite() && dp.clip > 0.0) {
                return bad("the DP-SGD clipping norm must be positive");
            }
            if !(dp.delta > 0.0 && dp.delta < 1.0) {
                return bad("δ must be between 0 and 1");
            }
        }
        Ok(())
    }
}

/// What the caller is told after each step.
#[derive(Clone, Debug)]
pub struct Progress {
    pub step: usize,
    pub steps: usize,
    pub loss: f64,
    pub lr: f64,
    pub tokens_per_second: f64,
    pub eta_seconds: f64,
    pub eval_loss: Option<f64>,
}

/// The record of a finished (or resumed and finished) run, written as `training.json`.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Summary {
    pub steps: usize,
    pub first_loss: f64,
    pub final_loss: f64,
    pub initial_eval_loss: Option<f64>,
    pub final_eval_loss: Option<f64>,
    pub train_examples: usize,
    pub eval_examples: usize,
    pub tokens: u64,
    /// Wall-clock seconds of the whole run (evaluations and checkpoints included).
    pub seconds: f64,
    /// Wall-clock seconds spent in this run's training steps alone, and the tokens they processed
    /// (a resumed run counts from where it resumed).
    pub train_seconds: f64,
    pub run_tokens: u64,
    pub trainable_parameters: usize,
    /// (ε, δ, noise multiplier, sampling rate) when DP-SGD ran.
    pub privacy: Option<Privacy>,
    pub losses: Vec<f64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Privacy {
    pub epsilon: f64,
    pub delta: f64,
    pub noise_multiplier: f64,
    pub sample_rate: f64,
    pub clip: f64,
    pub steps: usize,
}

/// A model being trained.
#[derive(Debug)]
pub struct Trainer {
    pub model: Llama,
    pub params: Vec<(String, Var)>,
    optimizer: AdamW,
    options: TrainOptions,
    train: Vec<Example>,
    eval: Vec<Example>,
    step: usize,
    pad: u32,
    sigma: Option<f64>,
    tokens: u64,
    losses: Vec<f64>,
    initial_eval: Option<f64>,
    fingerprint: u64,
    epoch_cache: Option<(u64, Vec<usize>)>,
}

impl Trainer {
    /// Prepares a run: builds the model, splits the examples into training and evaluation sets,
    /// and calibrates the DP noise.
    pub fn new(base: &BaseModel, dataset: Dataset, options: TrainOptions, device: &Device) -> Result<Self> {
        options.validate()?;
        let weights = base
            .weights
            .iter()
            .map(|(n, t)| Ok((n.clone(), t.to_device(device)?)))
            .collect::<Result<crate::model::Weights>>()?;
        let (model, params) = Llama::new(base.config.clone(), &weights, &options.mode, options.seed)?;
        let optimizer = AdamW::new(options.optimizer.clone(), &params)?;
        let fingerprint = fingerprint(&dataset.examples);
        let (train, eval) = split(dataset.examples, options.eval_fraction, options.seed);
        if train.is_empty() {
            return Err(Error::Input("no records are left for training after the evaluation split".into()));
        }
        let sigma = match &options.dp {
            None => None,
            Some(dp) => {
                let q = sample_rate(&options, train.len());
                Some(match (dp.noise_multiplier, dp.epsilon) {
                    (Some(s), _) => s,
                    (None, Some(e)) => dp::noise_for_epsilon(q, options.steps as u64, e, dp.delta)?,
                    (None, None) => return Err(Error::Input("DP-SGD needs ε or a noise multiplier".into())),
                })
            }
        };
        let pad = base.tokenizer.eos.unwrap_or(0);
        Ok(Self {
            model,
            params,
            optimizer,
            options,
            train,
            eval,
            step: 0,
            pad,
            sigma,
            tokens: 0,
            losses: Vec::new(),
            initial_eval: None,
            fingerprint,
            epoch_cache: None,
        })
    }

    pub fn step_index(&self) -> usize {
        self.step
    }

    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    pub fn trainable_parameters(&self) -> usize {
        self.params.iter().map(|(_, v)| v.elem_count()).sum()
    }

    pub fn split_sizes(&self) -> (usize, usize) {
        (self.train.len(), self.eval.len())
    }

    /// The noise multiplier in use (calibrated from ε when ε was given).
    pub fn noise_multiplier(&self) -> Option<f64> {
        self.sigma
    }

    /// The privacy spent so far, as (ε, δ).
    pub fn privacy(&self) -> Option<Privacy> {
        let (dp, sigma) = (self.options.dp.as_ref()?, self.sigma?);
        let q = sample_rate(&self.options, self.train.len());
        let (epsilon, _) = dp::epsilon(q, sigma, self.step as u64, dp.delta, dp::Conversion::Improved);
        Some(Privacy {
            epsilon,
            delta: dp.delta,
            noise_multiplier: sigma,
            sample_rate: q,
            clip: dp.clip,
            steps: self.step,
        })
    }

    /// Runs the remaining steps, calling `progress` after each, evaluating and checkpointing as
    /// the options say; returns the summary.
    pub fn run(
        &mut self,
        mut checkpoints: Option<&mut dyn CheckpointSink>,
        mut progress: impl FnMut(&Progress),
    ) -> Result<Summary> {
        let started = Instant::now();
        let first_step = self.step;
        if self.initial_eval.is_none() {
            self.initial_eval = self.evaluate()?;
        }
        let mut tokens_this_run = 0u64;
        let mut train_seconds = 0f64;
        let mut last_eval = None;
        while self.step < self.options.steps {
            let step_started = Instant::now();
            let (loss, tokens) = self.train_step()?;
            train_seconds += step_started.elapsed().as_secs_f64();
            tokens_this_run += tokens;
            let done = self.step;
            let eval_now = self.options.eval_every > 0 && done.is_multiple_of(self.options.eval_every)
                || done == self.options.steps;
            let eval_loss = if eval_now { self.evaluate()? } else { None };
            if eval_loss.is_some() {
                last_eval = eval_loss;
            }
            if let Some(sink) = checkpoints.as_deref_mut()
                && self.options.checkpoint_every > 0
                && (done.is_multiple_of(self.options.checkpoint_every) || done == self.options.steps)
            {
                sink.save(self.checkpoint()?)?;
            }
            let elapsed = started.elapsed().as_secs_f64().max(1e-9);
            let per_step = elapsed / (done - first_step) as f64;
            progress(&Progress {
                step: done,
                steps: self.options.steps,
                loss,
                lr: self.current_lr(done - 1),
                tokens_per_second: tokens_this_run as f64 / train_seconds.max(1e-9),
                eta_seconds: per_step * (self.options.steps - done) as f64,
                eval_loss,
            });
        }
        // A run resumed from its final checkpoint trains no step: the held-out loss it reports is
        // the trained model's, evaluated now, not the one from before training.
        if last_eval.is_none() && self.step > 0 {
            last_eval = self.evaluate()?;
        }
        Ok(Summary {
            steps: self.step,
            first_loss: self.losses.first().copied().unwrap_or(f64::NAN),
            final_loss: self.losses.last().copied().unwrap_or(f64::NAN),
            initial_eval_loss: self.initial_eval,
            final_eval_loss: last_eval.or(self.initial_eval),
            train_examples: self.train.len(),
            eval_examples: self.eval.len(),
            tokens: self.tokens,
            seconds: started.elapsed().as_secs_f64(),
            train_seconds,
            run_tokens: tokens_this_run,
            trainable_parameters: self.trainable_parameters(),
            privacy: self.privacy(),
            losses: self.losses.clone(),
        })
    }

    fn current_lr(&self, step: usize) -> f64 {
        let o = &self.options;
        learning_rate(step, o.steps, o.warmup, o.optimizer.lr, o.min_lr_ratio)
    }

    /// One optimizer step; returns (training loss, tokens processed).
    pub fn train_step(&mut self) -> Result<(f64, u64)> {
        let step = self.step;
        let (loss, tokens, grads) =
            if self.options.dp.is_some() { self.dp_gradients(step)? } else { self.gradients(step)? };
        let mut grad_scale = 1.0;
        if self.options.dp.is_none()
            && let Some(max) = self.options.clip_norm
        {
            let norm = global_norm(&grads)?;
            if norm > max {
                grad_scale = max / (norm + 1e-6);
            }
        }
        if !loss.is_finite() {
            return Err(Error::Input(format!(
                "the loss diverged at step {} ({loss}); nothing was updated — lower the learning rate",
                step + 1
            )));
        }
        let lr = self.current_lr(step);
        self.optimizer.step(&self.params, &grads, lr, grad_scale)?;
        self.step += 1;
        self.tokens += tokens;
        self.losses.push(loss);
        Ok((loss, tokens))
    }

    /// Ordinary gradients: token-mean loss over the step's micro-batches, accumulated.
    fn gradients(&mut self, step: usize) -> Result<(f64, u64, Vec<Tensor>)> {
        let b = self.options.batch_size;
        let micro: Vec<Vec<Example>> = (0..self.options.grad_accum)
            .map(|j| {
                let start = (step * self.options.grad_accum + j) * b;
                (start..start + b).map(|p| self.example_at(p)).collect()
            })
            .collect();
        let total: usize = micro.iter().flatten().map(Example::targets).sum();
        // Each micro-batch is split into one shard per CPU thread, each run forward and backward
        // on its own thread: candle parallelises matrix products well but most other operations
        // poorly, so whole shards in parallel use the cores far better. The loss is a token sum
        // with global weights, so the shards' gradients add up to the batch's exactly (up to
        // floating-point order, which is fixed for a given thread count).
        let threads = if self.model.device().is_cpu() { rayon::current_num_threads() } else { 1 };
        let shards: Vec<&[Example]> = micro
            .iter()
            .flat_map(|batch| batch.chunks(batch.len().div_ceil(threads.min(batch.len()).max(1))))
            .collect();
        let weight = 1.0 / total as f32;
        let results: Vec<Result<(f64, u64, Vec<Tensor>)>> = shards
            .par_iter()
            .map(|shard| {
                let (ids, targets, weights, n) = self.tensors(shard, |_| weight)?;
                let l = self.model.forward_loss(&ids, &targets, &weights)?;
                let loss = l.to_scalar::<f32>()? as f64;
                let grads = self.collect(&l.backward()?)?;
                Ok((loss, n, grads))
            })
            .collect();
        let mut sum: Option<Vec<Tensor>> = None;
        let (mut loss, mut tokens) = (0.0, 0u64);
        for result in results {
            let (l, n, grads) = result?;
            loss += l;
            tokens += n;
            sum = Some(match sum {
                None => grads,
                Some(acc) => {
                    acc.into_iter().zip(&grads).map(|(a, g)| crate::ops::accumulate(a, g)).collect::<Result<_>>()?
                }
            });
        }
        Ok((loss, tokens, sum.unwrap_or_default()))
    }

    /// DP-SGD gradients: Poisson-sampled examples, each example's gradient clipped to norm C,
    /// summed, Gaussian noise N(0, σ²C²) added, divided by the expected batch size.
    fn dp_gradients(&mut self, step: usize) -> Result<(f64, u64, Vec<Tensor>)> {
        let (clip, sigma) = match (&self.options.dp, self.sigma) {
            (Some(dp), Some(s)) => (dp.clip, s),
            _ => return Err(Error::Input("DP-SGD is not configured".into())),
        };
        let q = sample_rate(&self.options, self.train.len());
        let mut rng = self.dp_stream(POISSON, step)?;
        let chosen: Vec<Example> = self.train.iter().filter(|_| rng.random::<f64>() < q).cloned().collect();
        let mut sum: Vec<Tensor> =
            self.params.iter().map(|(_, v)| v.zeros_like()).collect::<candle_core::Result<_>>()?;
        let (mut loss, mut tokens) = (0.0, 0u64);
        for batch in chosen.chunks(self.options.batch_size) {
            let (per_example, l, n) = self.per_example(batch, matches!(self.options.mode, Mode::Lora(_)))?;
            loss += l;
            tokens += n;
            let factors = clip_factors(&per_example, clip)?;
            for (p, acc) in sum.iter_mut().enumerate() {
                for (e, f) in factors.iter().enumerate() {
                    *acc = (&*acc + per_example[e][p].affine(*f, 0.0)?)?;
                }
            }
        }
        let expected = q * self.train.len() as f64;
        let normal = Normal::new(0.0f32, (sigma * clip) as f32).map_err(|e| Error::Input(e.to_string()))?;
        let mut noise_rng = self.dp_stream(NOISE, step)?;
        let mut out = Vec::with_capacity(sum.len());
        for acc in sum {
            let noise: Vec<f32> = (0..acc.elem_count()).map(|_| normal.sample(&mut noise_rng)).collect();
            let noise = Tensor::from_vec(noise, acc.shape(), acc.device())?;
            out.push(((acc + noise)? / expected)?);
        }
        // An empty Poisson sample has no loss of its own: the step (noise only) repeats the last one.
        let mean_loss =
            if chosen.is_empty() { self.losses.last().copied().unwrap_or(0.0) } else { loss / chosen.len() as f64 };
        Ok((mean_loss, tokens, out))
    }

    /// The random stream for DP-SGD's sampling and noise: fresh from the operating system, unless
    /// the options ask for reproducible noise (tests).
    fn dp_stream(&self, purpose: u64, step: usize) -> Result<rand_chacha::ChaCha8Rng> {
        if self.options.dp.as_ref().is_some_and(|d| d.reproducible_noise) {
            return Ok(stream(self.options.seed, purpose, step as u64));
        }
        let mut seed = [0u8; 32];
        rand::rngs::OsRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| Error::Input(format!("the operating system's random source failed: {e}")))?;
        Ok(rand::SeedableRng::from_seed(seed))
    }

    /// Per-example gradients of each example's mean token loss, for every trainable parameter:
    /// `result[example][parameter]`, plus the summed loss and the tokens processed. With
    /// `vectorized` (LoRA only) one forward/backward pass and probe gradients give them all;
    /// otherwise each example runs alone (the reference the vectorized path is tested against).
    pub fn per_example(&self, batch: &[Example], vectorized: bool) -> Result<(Vec<Vec<Tensor>>, f64, u64)> {
        if !vectorized {
            let mut all = Vec::with_capacity(batch.len());
            let (mut loss, mut tokens) = (0.0, 0u64);
            for example in batch {
                let one = std::slice::from_ref(example);
                let count = example.targets() as f32;
                let (ids, targets, weights, n) = self.tensors(one, |_| 1.0 / count)?;
                let l = self.model.forward_loss(&ids, &targets, &weights)?;
                loss += l.to_scalar::<f32>()? as f64;
                tokens += n;
                all.push(self.collect(&l.backward()?)?);
            }
            return Ok((all, loss, tokens));
        }
        if !matches!(self.options.mode, Mode::Lora(_)) {
            return Err(Error::Unsupported("vectorized per-example gradients exist for LoRA only".into()));
        }
        let counts: Vec<f32> = batch.iter().map(|e| e.targets() as f32).collect();
        let (ids, targets, weights, tokens) = self.tensors(batch, |e| 1.0 / counts[e])?;
        let mut probes = Probes::default();
        let l = weighted_nll(&self.model.forward(&ids, Some(&mut probes))?, &targets, &weights)?;
        let loss = l.to_scalar::<f32>()? as f64;
        let store = l.backward()?;
        let (b, t) = ids.dims2()?;
        // Parameters are (A, B) per adapter, in the order the forward pass met them.
        let mut per_param: Vec<Tensor> = Vec::with_capacity(probes.taps.len() * 2);
        for tap in &probes.taps {
            let grad = |v: &Var| -> Result<Tensor> {
                store
                    .get(v.as_tensor())
                    .cloned()
                    .ok_or_else(|| Error::Format("a LoRA probe received no gradient".into()))
            };
            let dh = grad(&tap.probe_h)?;
            let dz = grad(&tap.probe_z)?;
            let per = |m: &Tensor| -> Result<Tensor> {
                let cols = m.dim(1)?;
                Ok(m.reshape((b, t, cols))?)
            };
            let (x, h, dh, dz) = (per(&tap.x)?, per(&tap.h)?, per(&dh)?, per(&dz)?);
            per_param.push(dh.transpose(1, 2)?.matmul(&x)?); // [b, rank, in]
            per_param.push(dz.transpose(1, 2)?.matmul(&h)?); // [b, out, rank]
        }
        if per_param.len() != self.params.len() {
            return Err(Error::Format("adapter probes do not match the trainable parameters".into()));
        }
        let mut all = Vec::with_capacity(b);
        for e in 0..b {
            all.push(per_param.iter().map(|g| g.get(e)).collect::<candle_core::Result<Vec<_>>>()?);
        }
        Ok((all, loss, tokens))
    }

    /// Token-mean loss on the held-out split; `None` when there is none.
    pub fn evaluate(&self) -> Result<Option<f64>> {
        if self.eval.is_empty() {
            return Ok(None);
        }
        let (mut sum, mut count) = (0.0f64, 0usize);
        for batch in self.eval.chunks(self.options.batch_size) {
            let (ids, targets, weights, _) = self.tensors(batch, |_| 1.0)?;
            let logits = self.model.forward(&ids, None)?.detach();
            sum += weighted_nll(&logits, &targets, &weights)?.to_scalar::<f32>()? as f64;
            count += batch.iter().map(Example::targets).sum::<usize>();
        }
        Ok(Some(sum / count as f64))
    }

    /// Gradients for every parameter, in order (zeros where one received none).
    fn collect(&self, store: &candle_core::backprop::GradStore) -> Result<Vec<Tensor>> {
        self.params
            .iter()
            .map(|(_, v)| match store.get(v.as_tensor()) {
                Some(g) => Ok(g.clone()),
                None => Ok(v.zeros_like()?),
            })
            .collect()
    }

    /// Input ids `[b, t]`, flat targets (`b·t`), flat token weights (`b·t`; weight(example) on
    /// learned targets, zero elsewhere) and the number of real input tokens.
    fn tensors(&self, batch: &[Example], weight: impl Fn(usize) -> f32) -> Result<(Tensor, Vec<u32>, Vec<f32>, u64)> {
        let t = batch.iter().map(|e| e.ids.len() - 1).max().unwrap_or(1).max(1);
        let mut ids = vec![self.pad; batch.len() * t];
        let mut targets = vec![self.pad; batch.len() * t];
        let mut weights = vec![0f32; batch.len() * t];
        let mut real = 0u64;
        for (e, ex) in batch.iter().enumerate() {
            let n = ex.ids.len() - 1;
            real += n as u64;
            ids[e * t..e * t + n].copy_from_slice(&ex.ids[..n]);
            targets[e * t..e * t + n].copy_from_slice(&ex.ids[1..]);
            let w = weight(e);
            for (i, m) in ex.target_mask.iter().enumerate() {
                if *m {
                    weights[e * t + i] = w;
                }
            }
        }
        let device = self.model.device();
        Ok((Tensor::from_vec(ids, (batch.len(), t), device)?, targets, weights, real))
    }

    /// The training example at position `p` of the endless sequence of seeded epoch shuffles.
    fn example_at(&mut self, p: usize) -> Example {
        let n = self.train.len();
        let epoch = (p / n) as u64;
        let fresh = !matches!(&self.epoch_cache, Some((e, _)) if *e == epoch);
        if fresh {
            let mut order: Vec<usize> = (0..n).collect();
            order.shuffle(&mut stream(self.options.seed, EPOCH, epoch));
            self.epoch_cache = Some((epoch, order));
        }
        let index = self.epoch_cache.as_ref().map_or(p % n, |(_, order)| order[p % n]);
        self.train[index].clone()
    }

    /// Hands the finished run's outputs to `sink`: the PEFT adapter (`adapter_model.safetensors`,
    /// `adapter_config.json`) and, with `merge`, the merged model under `merged/`, for LoRA; the
    /// whole model (`model.safetensors`, `config.json`) for full fine-tuning; then
    /// `tokenizer.json` and `training.json` (the summary, the options and the base model).
    /// Returns the names written.
    pub fn write_outputs(
        &self,
        base: &BaseModel,
        summary: &Summary,
        merge: bool,
        sink: &mut dyn crate::output::Sink,
    ) -> Result<Vec<String>> {
        let mut written = Vec::new();
        match &self.options.mode {
            Mode::Lora(spec) => {
                crate::lora::save_adapter_to(sink, spec, &self.params, &base.source)?;
                written.extend(["adapter_model.safetensors".to_owned(), "adapter_config.json".to_owned()]);
                if merge {
                    let merged = self.model.merged_weights()?;
                    crate::weights::save_model_to(sink, "merged/", &base.config, &merged, &base.tokenizer)?;
                    written.push("merged/".into());
                }
            }
            Mode::Full => {
                let merged = self.model.merged_weights()?;
                let tensors: Vec<(String, Tensor)> = merged.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
                sink.put("model.safetensors", &safetensors_bytes(&tensors)?)?;
                sink.put("config.json", base.config.to_json().as_bytes())?;
                written.extend(["model.safetensors".to_owned(), "config.json".to_owned()]);
            }
        }
        sink.put("tokenizer.json", base.tokenizer.to_json()?.as_bytes())?;
        written.push("tokenizer.json".into());
        let mut record = serde_json::to_value(summary).map_err(|e| Error::Format(e.to_string()))?;
        if let Some(map) = record.as_object_mut() {
            map.insert("format".into(), "coffre-training-summary/v1".into());
            map.insert("base_model".into(), base.source.clone().into());
            map.insert(
                "options".into(),
                serde_json::to_value(&self.options).map_err(|e| Error::Format(e.to_string()))?,
            );
        }
        let json = serde_json::to_string_pretty(&record).map_err(|e| Error::Format(e.to_string()))?;
        sink.put("training.json", json.as_bytes())?;
        written.push("training.json".into());
        Ok(written)
    }

    /// The current state as a [`Checkpoint`]: trainable weights, optimizer moments, step,
    /// options and a data fingerprint.
    pub fn checkpoint(&self) -> Result<Checkpoint> {
        let params: Vec<(String, Tensor)> =
            self.params.iter().map(|(n, v)| (n.clone(), v.as_tensor().clone())).collect();
        let mut moments = Vec::new();
        for (i, (n, _)) in self.params.iter().enumerate() {
            moments.push((format!("m.{n}"), self.optimizer.m[i].as_tensor().clone()));
            moments.push((format!("v.{n}"), self.optimizer.v[i].as_tensor().clone()));
        }
        let state = CheckpointState {
            format: CHECKPOINT_FORMAT.into(),
            step: self.step,
            adam_steps: self.optimizer.t,
            tokens: self.tokens,
            options: self.options.clone(),
            data_fingerprint: format!("{:016x}", self.fingerprint),
            losses: self.losses.clone(),
            initial_eval_loss: self.initial_eval,
            noise_multiplier: self.sigma,
        };
        let json = serde_json::to_string_pretty(&state).map_err(|e| Error::Format(e.to_string()))?;
        Ok(Checkpoint {
            files: vec![
                ("trainable.safetensors".into(), safetensors_bytes(&params)?),
                ("optimizer.safetensors".into(), safetensors_bytes(&moments)?),
                ("state.json".into(), json.into_bytes()),
            ],
            step: self.step,
        })
    }

    /// Writes `dir/checkpoint` atomically: the previous checkpoint stays until the new one is
    /// complete ([`DirCheckpoints`]).
    pub fn save_checkpoint(&self, dir: &Path) -> Result<()> {
        DirCheckpoints::new(dir).save(self.checkpoint()?)
    }

    /// Continues from `dir/checkpoint` (or the previous one if a crash interrupted a write).
    /// Refuses a checkpoint made with other options or other data.
    pub fn resume(&mut self, dir: &Path) -> Result<()> {
        let cp = DirCheckpoints::new(dir)
            .load()?
            .ok_or_else(|| Error::Input(format!("{} holds no checkpoint", dir.display())))?;
        self.resume_from(&cp)
    }

    /// Continues from `cp`. Refuses a checkpoint made with other options or other data.
    pub fn resume_from(&mut self, cp: &Checkpoint) -> Result<()> {
        let state = parse_state(cp.file("state.json")?)?;
        let mut theirs = state.options.clone();
        theirs.steps = self.options.steps;
        theirs.checkpoint_every = self.options.checkpoint_every;
        theirs.eval_every = self.options.eval_every;
        if theirs != self.options {
            return Err(Error::Input(
                "the checkpoint was made with other training options; resume with the same ones (only --steps, checkpoint and evaluation intervals may change)".into(),
            ));
        }
        if self.options.dp.is_some() && state.options.steps != self.options.steps {
            return Err(Error::Input(
                "DP-SGD runs cannot change --steps on resume: the noise was calibrated for them".into(),
            ));
        }
        if state.data_fingerprint != format!("{:016x}", self.fingerprint) {
            return Err(Error::Input("the checkpoint was made on other training data".into()));
        }
        if state.step > self.options.steps {
            return Err(Error::Input(format!(
                "the checkpoint is at step {}, beyond --steps {}",
                state.step, self.options.steps
            )));
        }
        let device = self.model.device().clone();
        let params = read_safetensors_bytes(cp.file("trainable.safetensors")?, &device)?;
        let moments = read_safetensors_bytes(cp.file("optimizer.safetensors")?, &device)?;
        for (i, (name, var)) in self.params.iter().enumerate() {
            let get = |map: &crate::model::Weights, key: &str| -> Result<Tensor> {
                let t = map.get(key).ok_or_else(|| Error::Format(format!("checkpoint lacks {key}")))?;
                if t.shape() != var.shape() {
                    return Err(Error::Format(format!("checkpoint tensor {key} has another shape")));
                }
                Ok(t.clone())
            };
            var.set(&get(&params, name)?)?;
            self.optimizer.m[i].set(&get(&moments, &format!("m.{name}"))?)?;
            self.optimizer.v[i].set(&get(&moments, &format!("v.{name}"))?)?;
        }
        self.optimizer.t = state.adam_steps;
        self.step = state.step;
        self.tokens = state.tokens;
        self.losses = state.losses;
        self.initial_eval = state.initial_eval_loss;
        if state.noise_multiplier.is_some() {
            self.sigma = state.noise_multiplier;
        }
        Ok(())
    }
}

fn parse_state(bytes: &[u8]) -> Result<CheckpointState> {
    let state: CheckpointState =
        serde_json::from_slice(bytes).map_err(|e| Error::Format(format!("checkpoint state.json: {e}")))?;
    if state.format != CHECKPOINT_FORMAT {
        return Err(Error::Format(format!("not a {CHECKPOINT_FORMAT} checkpoint")));
    }
    Ok(state)
}

/// The step recorded in a checkpoint's `state.json`.
pub(crate) fn checkpoint_step(files: &[(String, Vec<u8>)]) -> Result<usize> {
    let (_, state) = files
        .iter()
        .find(|(n, _)| n == "state.json")
        .ok_or_else(|| Error::Format("the checkpoint lacks state.json".into()))?;
    Ok(parse_state(state)?.step)
}

/// The most records held out for the evaluation loss: enough for a stable figure, few enough that
/// evaluating a large dataset does not take longer than training on it.
pub const MAX_EVAL: usize = 500;

const CHECKPOINT_FORMAT: &str = "coffre-trainer-checkpoint/v1";

#[derive(Serialize, Deserialize)]
struct CheckpointState {
    format: String,
    step: usize,
    adam_steps: u64,
    tokens: u64,
    options: TrainOptions,
    data_fingerprint: String,
    losses: Vec<f64>,
    initial_eval_loss: Option<f64>,
    noise_multiplier: Option<f64>,
}

/// Poisson sampling rate: the expected batch (batch size × accumulation) over the training set.
fn sample_rate(options: &TrainOptions, n: usize) -> f64 {
    ((options.batch_size * options.grad_accum) as f64 / n as f64).min(1.0)
}

/// min(1, C / ‖g_e‖) for each example's full gradient.
fn clip_factors(per_example: &[Vec<Tensor>], clip: f64) -> Result<Vec<f64>> {
    per_example.iter().map(|grads| Ok((clip / (global_norm(grads)? + 1e-6)).min(1.0))).collect()
}

/// The Euclidean norm of all gradients together. On the CPU, one pass over each gradient's own
/// memory (no squared copy), summed in f64 per block.
fn global_norm(grads: &[Tensor]) -> Result<f64> {
    let mut sq = 0f64;
    for g in grads {
        let fast = {
            let (storage, layout) = g.storage_and_layout();
            match (&*storage, layout.contiguous_offsets()) {
                (candle_core::Storage::Cpu(candle_core::CpuStorage::F32(all)), Some((a, b))) => Some(
                    all[a..b]
                        .par_chunks(1 << 14)
                        .map(|block| f64::from(crate::ops::sum_of_squares(block)))
                        .sum::<f64>(),
                ),
                _ => None,
            }
        };
        sq += match fast {
            Some(s) => s,
            None => g.sqr()?.sum_all()?.to_dtype(DType::F64)?.to_scalar::<f64>()?,
        };
    }
    Ok(sq.sqrt())
}

/// Deterministic split: a seeded shuffle, the first `fraction` held out (at least one record when
/// there are ten or more and a fraction was asked for, at most [`MAX_EVAL`]).
fn split(mut examples: Vec<Example>, fraction: f64, seed: u64) -> (Vec<Example>, Vec<Example>) {
    let mut order: Vec<usize> = (0..examples.len()).collect();
    order.shuffle(&mut stream(seed, SPLIT, 0));
    let mut held = ((examples.len() as f64 * fraction).round() as usize).min(MAX_EVAL);
    if fraction > 0.0 && held == 0 && examples.len() >= 10 {
        held = 1;
    }
    let mut is_eval = vec![false; examples.len()];
    for &i in &order[..held.min(examples.len())] {
        is_eval[i] = true;
    }
    let mut train = Vec::new();
    let mut eval = Vec::new();
    for (i, e) in examples.drain(..).enumerate() {
        if is_eval[i] { eval.push(e) } else { train.push(e) }
    }
    (train, eval)
}

/// FNV-1a over every example's ids and mask: detects a resume on other data.
fn fingerprint(examples: &[Example]) -> u64 {
    let mut h = 0xcbf2_9ce4_8422_2325u64;
    let mut eat = |x: u32| {
        for b in x.to_le_bytes() {
            h ^= u64::from(b);
            h = h.wrapping_mul(0x0100_0000_01b3);
        }
    };
    for e in examples {
        eat(e.ids.len() as u32);
        e.ids.iter().for_each(|i| eat(*i));
        e.target_mask.iter().for_each(|m| eat(u32::from(*m)));
    }
    h
}
