//! A tiny random-initialised Llama (byte-level tokenizer) for tests, benchmarks and the fallback
//! demo when no real base model is available. Same code path as a real model: save → load → train.

use std::path::Path;

use candle_core::{Device, Tensor};
use rand_distr::{Distribution, Normal};

use crate::config::LlamaConfig;
use crate::model::Weights;
use crate::tokenizer::Tokenizer;
use crate::weights::BaseModel;
use crate::{Error, Result};

/// Special tokens of the tiny tokenizer, after the 256 bytes; the first ends a sequence.
pub const SPECIALS: [&str; 4] = ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"];

/// A small Llama configuration with grouped-query attention and untied head.
pub fn config(hidden: usize, layers: usize) -> LlamaConfig {
    LlamaConfig {
        vocab_size: 256 + SPECIALS.len(),
        hidden_size: hidden,
        intermediate_size: hidden * 8 / 3 / 8 * 8 + 8,
        num_hidden_layers: layers,
        num_attention_heads: 4,
        num_key_value_heads: Some(2),
        rms_norm_eps: 1e-5,
        rope_theta: 10_000.0,
        max_position_embeddings: 512,
        tie_word_embeddings: false,
        bos_token_id: None,
        eos_token_id: Some(256),
    }
}

/// Random weights for `config` (normal, std 0.02; norms at one), deterministic for `seed`.
pub fn random_weights(config: &LlamaConfig, seed: u64, device: &Device) -> Result<Weights> {
    let mut rng = crate::rng(seed);
    let normal = Normal::new(0.0f32, 0.02).map_err(|e| Error::Input(e.to_string()))?;
    let mut w = Weights::new();
    let mut dense = |name: String, rows: usize, cols: usize, w: &mut Weights| -> Result<()> {
        let v: Vec<f32> = (0..rows * cols).map(|_| normal.sample(&mut rng)).collect();
        w.insert(name, Tensor::from_vec(v, (rows, cols), device)?);
        Ok(())
    };
    let (h, i, v) = (config.hidden_size, config.intermediate_size, config.vocab_size);
    let kvd = config.kv_heads() * config.head_dim();
    dense("model.embed_tokens.weight".into(), v, h, &mut w)?;
    for l in 0..config.num_hidden_layers {
        let p = format!("model.layers.{l}");
        dense(format!("{p}.self_attn.q_proj.weight"), h, h, &mut w)?;
        dense(format!("{p}.self_attn.k_proj.weight"), kvd, h, &mut w)?;
        dense(format!("{p}.self_attn.v_proj.weight"), kvd, h, &mut w)?;
        dense(format!("{p}.self_attn.o_proj.weight"), h, h, &mut w)?;
        dense(format!("{p}.mlp.gate_proj.weight"), i, h, &mut w)?;
        dense(format!("{p}.mlp.up_proj.weight"), i, h, &mut w)?;
        dense(format!("{p}.mlp.down_proj.weight"), h, i, &mut w)?;
        w.insert(format!("{p}.input_layernorm.weight"), Tensor::ones(h, candle_core::DType::F32, device)?);
        w.insert(format!("{p}.post_attention_layernorm.weight"), Tensor::ones(h, candle_core::DType::F32, device)?);
    }
    w.insert("model.norm.weight".into(), Tensor::ones(h, candle_core::DType::F32, device)?);
    if !config.tie_word_embeddings {
        dense("lm_head.weight".into(), v, h, &mut w)?;
    }
    Ok(w)
}

/// A tiny model in memory.
pub fn base_model(hidden: usize, layers: usize, seed: u64, device: &Device) -> Result<BaseModel> {
    let config = config(hidden, layers);
    let weights = random_weights(&config, seed, device)?;
    Ok(BaseModel { config, weights, tokenizer: Tokenizer::byte_level(&SPECIALS)?, source: "coffre-tiny".into() })
}

/// Writes a tiny model directory (`config.json`, `model.safetensors`, `tokenizer.json`).
pub fn generate(dir: &Path, hidden: usize, layers: usize, seed: u64) -> Result<()> {
    let base = base_model(hidden, layers, seed, &Device::Cpu)?;
    crate::weights::save_model(dir, &base.config, &base.weights, &base.tokenizer)
}
