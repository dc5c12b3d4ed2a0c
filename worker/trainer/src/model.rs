//! The Llama decoder, written for training: every operation here has a backward pass.
//!
//! candle's fused kernels (`softmax_last_dim`, fused `rms_norm`, fused `rope`, `sdpa`) have no
//! gradient, and `candle-transformers` uses them, so training those models silently updates only
//! the head. This module owns its definitions and builds them from differentiable primitives
//! (matmul, narrow, cat, exp, sum, broadcast arithmetic); `tests/gradients.rs` checks that every
//! trainable parameter receives a non-zero gradient.

use std::collections::BTreeMap;

use candle_core::{D, DType, Device, Tensor, Var};

use crate::config::LlamaConfig;
use crate::lora::{LoraLayer, LoraSpec};
use crate::{Error, Result};

/// The modules of a block by their Hugging Face names.
pub const MODULES: [&str; 7] = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"];

/// A projection `y = x Wᵀ`, optionally with a LoRA branch `+ scale · (x Aᵀ) Bᵀ`.
#[derive(Debug)]
pub struct Linear {
    pub(crate) weight: Tensor,
    pub(crate) lora: Option<LoraLayer>,
}

impl Linear {
    /// `x` is `[tokens, in]`; the result `[tokens, out]`.
    fn forward(&self, x: &Tensor, probes: Option<&mut Probes>) -> Result<Tensor> {
        let base = crate::ops::linear(x, &self.weight)?;
        match &self.lora {
            None => Ok(base),
            Some(lora) => Ok((base + lora.forward(x, probes)?)?),
        }
    }
}

/// Per-example gradient probes for DP-SGD on LoRA adapters: for each adapter, the layer input `x`,
/// the low-rank activation `h = x Aᵀ`, and two zero variables added to `h` and to `z = h Bᵀ` whose
/// gradients are `∂L/∂h` and `∂L/∂z`. From those, per-example adapter gradients are two batched
/// matmuls, with one backward pass for the whole batch.
#[derive(Debug, Default)]
pub struct Probes {
    pub(crate) taps: Vec<Tap>,
}

#[derive(Debug)]
pub(crate) struct Tap {
    pub x: Tensor,
    pub h: Tensor,
    pub probe_h: Var,
    pub probe_z: Var,
}

#[derive(Debug)]
struct Block {
    attn_norm: Tensor,
    q: Linear,
    k: Linear,
    v: Linear,
    o: Linear,
    mlp_norm: Tensor,
    gate: Linear,
    up: Linear,
    down: Linear,
}

/// A Llama-architecture causal language model.
#[derive(Debug)]
pub struct Llama {
    pub config: LlamaConfig,
    embed: Tensor,
    blocks: Vec<Block>,
    norm: Tensor,
    head: Option<Tensor>,
    cos: Tensor,
    sin: Tensor,
}

/// How the parameters are trained.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Mode {
    /// Every weight is trainable.
    Full,
    /// Base weights are frozen; low-rank adapters on the target modules are trained.
    Lora(LoraSpec),
}

/// Named weights in Hugging Face layout (`model.layers.0.self_attn.q_proj.weight`, …), all f32.
pub type Weights = BTreeMap<String, Tensor>;

impl Llama {
    /// Builds the model from `weights`. Returns the trainable variables by name: every weight in
    /// [`Mode::Full`], the adapters' `lora_A`/`lora_B` in [`Mode::Lora`] (B starts at zero, so the
    /// untrained adapter leaves the model unchanged).
    pub fn new(config: LlamaConfig, weights: &Weights, mode: &Mode, seed: u64) -> Result<(Self, Vec<(String, Var)>)> {
        config.validate()?;
        let device = weights.values().next().map(|t| t.device().clone()).unwrap_or(Device::Cpu);
        let mut trainable = Vec::new();
        let full = matches!(mode, Mode::Full);
        let mut take = |name: &str, shape: &[usize]| -> Result<Tensor> {
            let t = weights.get(name).ok_or_else(|| Error::Format(format!("weights lack tensor {name}")))?;
            if t.dims() != shape {
                return Err(Error::Format(format!(
                    "tensor {name} has shape {:?}, the config implies {shape:?}",
                    t.dims()
                )));
            }
            let t = t.to_dtype(DType::F32)?;
            if full {
                let var = Var::from_tensor(&t)?;
                let t = var.as_tensor().clone();
                trainable.push((name.to_owned(), var));
                Ok(t)
            } else {
                Ok(t)
            }
        };
        let (h, i, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
        let kvd = config.kv_heads() * config.head_dim();
        let embed = take("model.embed_tokens.weight", &[v, h])?;
        let mut raw_blocks = Vec::new();
        for l in 0..config.num_hidden_layers {
            let p = format!("model.layers.{l}");
            let mut proj = |m: &str, kind: &str, shape: &[usize]| take(&format!("{p}.{kind}.{m}.weight"), shape);
            raw_blocks.push([
                proj("q_proj", "self_attn", &[h, h])?,
                proj("k_proj", "self_attn", &[kvd, h])?,
                proj("v_proj", "self_attn", &[kvd, h])?,
                proj("o_proj", "self_attn", &[h, h])?,
                proj("gate_proj", "mlp", &[i, h])?,
                proj("up_proj", "mlp", &[i, h])?,
                proj("down_proj", "mlp", &[h, i])?,
                take(&format!("{p}.input_layernorm.weight"), &[h])?,
                take(&format!("{p}.post_attention_layernorm.weight"), &[h])?,
            ]);
        }
        let norm = take("model.norm.weight", &[h])?;
        let head = if config.tie_word_embeddings { None } else { Some(take("lm_head.weight", &[v, h])?) };

        let mut rng = crate::rng(seed ^ 0x4c6f_5241);
        let mut blocks = Vec::with_capacity(raw_blocks.len());
        for (l, [q, k, vv, o, gate, up, down, attn_norm, mlp_norm]) in raw_blocks.into_iter().enumerate() {
            let mut linear = |module: &str, kind: &str, weight: Tensor| -> Result<Linear> {
                let lora = match mode {
                    Mode::Lora(spec) if spec.targets.iter().any(|t| t == module) => {
                        let name = format!("base_model.model.model.layers.{l}.{kind}.{module}");
                        let layer = LoraLayer::init(spec, &weight, &mut rng)?;
                        trainable.push((format!("{name}.lora_A.weight"), layer.a.clone()));
                        trainable.push((format!("{name}.lora_B.weight"), layer.b.clone()));
                        Some(layer)
                    }
                    _ => None,
                };
                Ok(Linear { weight, lora })
            };
            blocks.push(Block {
                q: linear("q_proj", "self_attn", q)?,
                k: linear("k_proj", "self_attn", k)?,
                v: linear("v_proj", "self_attn", vv)?,
                o: linear("o_proj", "self_attn", o)?,
                gate: linear("gate_proj", "mlp", gate)?,
                up: linear("up_proj", "mlp", up)?,
                down: linear("down_proj", "mlp", down)?,
                attn_norm,
                mlp_norm,
            });
        }
        let (cos, sin) = rope_tables(&config, &device)?;
        Ok((Self { config, embed, blocks, norm, head, cos, sin }, trainable))
    }

    pub fn device(&self) -> &Device {
        self.embed.device()
    }

    /// Logits `[batch·seq, vocab]` for token ids `[batch, seq]` (u32). Positions start at 0 and
    /// attention is causal, so right padding never influences real tokens.
    pub fn forward(&self, ids: &Tensor, probes: Option<&mut Probes>) -> Result<Tensor> {
        let x = self.hidden(ids, probes)?;
        crate::ops::linear(&x, self.head())
    }

    /// [`weighted_nll`] of [`Llama::forward`]'s logits for `targets` (flat, `batch·seq`), with the
    /// output projection and the loss fused (see [`crate::ops::head_cross_entropy`]). Meant for
    /// training: on the CPU the loss holds its gradient (tokens × vocabulary floats) until its
    /// backward pass, which can run once; for a loss alone use [`Llama::forward`] and
    /// [`weighted_nll`].
    pub fn forward_loss(&self, ids: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
        let x = self.hidden(ids, None)?;
        crate::ops::head_cross_entropy(&x, self.head(), targets, weights)
    }

    /// The output projection: its own weight, or the tied input embedding.
    fn head(&self) -> &Tensor {
        self.head.as_ref().unwrap_or(&self.embed)
    }

    /// The final normalised hidden states `[batch·seq, hidden]`.
    fn hidden(&self, ids: &Tensor, mut probes: Option<&mut Probes>) -> Result<Tensor> {
        let (b, t) = ids.dims2()?;
        if t > self.cos.dim(0)? {
            return Err(Error::Input(format!(
                "sequence of {t} tokens is longer than the model's {} positions",
                self.cos.dim(0)?
            )));
        }
        let cfg = &self.config;
        let (nh, nkv, hd) = (cfg.num_attention_heads, cfg.kv_heads(), cfg.head_dim());
        let rep = nh / nkv;
        let attention = crate::ops::CausalAttention::new(t, rep, crate::ops::ATTENTION_BLOCK, self.device())?;
        let scale = 1.0 / (hd as f64).sqrt();

        let mut x = self.embed.index_select(&ids.flatten_all()?, 0)?; // [b·t, h]
        for block in &self.blocks {
            let n = rms_norm(&x, &block.attn_norm, cfg.rms_norm_eps)?;
            let q = block.q.forward(&n, probes.as_deref_mut())?;
            let k = block.k.forward(&n, probes.as_deref_mut())?;
            let v = block.v.forward(&n, probes.as_deref_mut())?;
            // Queries grouped by their key/value head, position-major: [b, kv, t·rep, hd];
            // keys and values [b, kv, t, hd].
            let q = crate::ops::rope_heads(&q, &self.cos, &self.sin, b, nh, rep, scale)?;
            let k = crate::ops::rope_heads(&k, &self.cos, &self.sin, b, nkv, 1, 1.0)?;
            let v = v.reshape((b, t, nkv, hd))?.transpose(1, 2)?.contiguous()?;
            let attn = attention.apply(&q, &k, &v)?; // [b, kv, t·rep, hd]
            let attn = attn.reshape((b, nkv, t, rep, hd))?.transpose(1, 2)?.reshape((b * t, nh * hd))?;
            x = (x + block.o.forward(&attn, probes.as_deref_mut())?)?;

            let n = rms_norm(&x, &block.mlp_norm, cfg.rms_norm_eps)?;
            let gate = block.gate.forward(&n, probes.as_deref_mut())?;
            let up = block.up.forward(&n, probes.as_deref_mut())?;
            x = (x + block.down.forward(&crate::ops::swiglu(&gate, &up)?, probes.as_deref_mut())?)?;
        }
        rms_norm(&x, &self.norm, cfg.rms_norm_eps)
    }

    /// The model's current weights in Hugging Face layout, with LoRA adapters merged in
    /// (`W + scale · B A`).
    pub fn merged_weights(&self) -> Result<Weights> {
        let mut out = Weights::new();
        let plain = |t: &Tensor| t.detach().contiguous();
        out.insert("model.embed_tokens.weight".into(), plain(&self.embed)?);
        for (l, b) in self.blocks.iter().enumerate() {
            let p = format!("model.layers.{l}");
            out.insert(format!("{p}.input_layernorm.weight"), plain(&b.attn_norm)?);
            out.insert(format!("{p}.post_attention_layernorm.weight"), plain(&b.mlp_norm)?);
            for (module, kind, lin) in [
                ("q_proj", "self_attn", &b.q),
                ("k_proj", "self_attn", &b.k),
                ("v_proj", "self_attn", &b.v),
                ("o_proj", "self_attn", &b.o),
                ("gate_proj", "mlp", &b.gate),
                ("up_proj", "mlp", &b.up),
                ("down_proj", "mlp", &b.down),
            ] {
                let w = match &lin.lora {
                    None => plain(&lin.weight)?,
                    Some(lora) => (lin.weight.detach() + lora.delta()?)?,
                };
                out.insert(format!("{p}.{kind}.{module}.weight"), w);
            }
        }
        out.insert("model.norm.weight".into(), plain(&self.norm)?);
        if let Some(head) = &self.head {
            out.insert("lm_head.weight".into(), plain(head)?);
        }
        Ok(out)
    }
}

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension (fused on the CPU, see [`crate::ops`]).
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    crate::ops::rms_norm(x, w, eps)
}

/// Softmax over the last dimension (fused on the CPU, see [`crate::ops`]).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    crate::ops::softmax(x)
}

fn rope_tables(cfg: &LlamaConfig, device: &Device) -> Result<(Tensor, Tensor)> {
    let half = cfg.head_dim() / 2;
    let positions = cfg.max_position_embeddings.min(1 << 16);
    let mut cos = Vec::with_capacity(positions * half);
    let mut sin = Vec::with_capacity(positions * half);
    for p in 0..positions {
        for i in 0..half {
            let freq = 1.0 / cfg.rope_theta.powf(2.0 * i as f64 / cfg.head_dim() as f64);
            let angle = p as f64 * freq;
            cos.push(angle.cos() as f32);
            sin.push(angle.sin() as f32);
        }
    }
    Ok((Tensor::from_vec(cos, (positions, half), device)?, Tensor::from_vec(sin, (positions, half), device)?))
}

/// Token-weighted negative log-likelihood: `Σ weights[i] · −log p(targets[i])` for logits
/// `[n, vocab]` (weights are zero on prompt and padding tokens).
pub fn weighted_nll(logits: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
    crate::ops::cross_entropy(logits, targets, weights)
}

impl Llama {
    /// Greedy decoding of up to `max_new` tokens after `prompt`, stopping at `stop`. Recomputes the
    /// whole sequence per token (no cache): meant for short answers such as checking what a
    /// fine-tuned model learned.
    pub fn generate(&self, prompt: &[u32], max_new: usize, stop: Option<u32>) -> Result<Vec<u32>> {
        let mut ids = prompt.to_vec();
        let mut out = Vec::new();
        for _ in 0..max_new {
            let input = Tensor::from_vec(ids.clone(), (1, ids.len()), self.device())?;
            let logits = self.forward(&input, None)?.detach();
            let last = logits.get(ids.len() - 1)?;
            let next = last.argmax(D::Minus1)?.to_scalar::<u32>()?;
            if Some(next) == stop {
                break;
            }
            ids.push(next);
            out.push(next);
        }
        Ok(out)
    }
}
