//! The Llama/Mistral architecture hyper-parameters, read from and written as Hugging Face
//! `config.json` so that other tools load what we write.

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Hyper-parameters of a Llama-architecture decoder (Llama 2/3, Mistral, SmolLM2, …).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LlamaConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    /// Grouped-query attention: fewer key/value heads than query heads. Absent means multi-head.
    #[serde(default)]
    pub num_key_value_heads: Option<usize>,
    #[serde(default = "default_eps")]
    pub rms_norm_eps: f64,
    #[serde(default = "default_theta")]
    pub rope_theta: f64,
    #[serde(default = "default_positions")]
    pub max_position_embeddings: usize,
    #[serde(default)]
    pub tie_word_embeddings: bool,
    #[serde(default)]
    pub bos_token_id: Option<u32>,
    #[serde(default)]
    pub eos_token_id: Option<u32>,
}

fn default_eps() -> f64 {
    1e-5
}
fn default_theta() -> f64 {
    10_000.0
}
fn default_positions() -> usize {
    2048
}

impl LlamaConfig {
    /// Parses a Hugging Face `config.json`, refusing architectures this trainer does not implement.
    pub fn from_json(text: &str) -> Result<Self> {
        let value: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Format(format!("config.json is not JSON: {e}")))?;
        if let Some(kind) = value.get("model_type").and_then(|v| v.as_str())
            && !matches!(kind, "llama" | "mistral")
        {
            return Err(Error::Unsupported(format!(
                "model_type \"{kind}\": only the Llama/Mistral architecture is supported"
            )));
        }
        if let Some(scaling) = value.get("rope_scaling")
            && !scaling.is_null()
        {
            return Err(Error::Unsupported("rope_scaling (long-context RoPE variants) is not supported".into()));
        }
        let config: Self = serde_json::from_value(value)
            .map_err(|e| Error::Format(format!("config.json lacks a Llama field: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// `config.json` as Hugging Face `transformers` writes it for `LlamaForCausalLM`.
    pub fn to_json(&self) -> String {
        let mut value = serde_json::to_value(self).unwrap_or_default();
        if let Some(map) = value.as_object_mut() {
            map.insert("model_type".into(), "llama".into());
            map.insert("architectures".into(), serde_json::json!(["LlamaForCausalLM"]));
            map.insert("hidden_act".into(), "silu".into());
            map.insert("torch_dtype".into(), "float32".into());
            map.insert("num_key_value_heads".into(), self.kv_heads().into());
        }
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    pub fn kv_heads(&self) -> usize {
        self.num_key_value_heads.unwrap_or(self.num_attention_heads)
    }

    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads
    }

    /// Refuses shapes the model code cannot run, with the reason.
    pub fn validate(&self) -> Result<()> {
        let bad = |why: String| Err(Error::Format(format!("config: {why}")));
        if self.vocab_size == 0 || self.hidden_size == 0 || self.intermediate_size == 0 || self.num_hidden_layers == 0 {
            return bad("vocab_size, hidden_size, intermediate_size and num_hidden_layers must be positive".into());
        }
        if self.num_attention_heads == 0 || !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !self.head_dim().is_multiple_of(2) {
            return bad(format!("head dimension {} must be even for RoPE", self.head_dim()));
        }
        let kv = self.kv_heads();
        if kv == 0 || !self.num_attention_heads.is_multiple_of(kv) {
            return bad(format!(
                "num_attention_heads {} is not a multiple of num_key_value_heads {kv}",
                self.num_attention_heads
            ));
        }
        if !(self.rms_norm_eps > 0.0 && self.rope_theta > 0.0) {
            return bad("rms_norm_eps and rope_theta must be positive".into());
        }
        Ok(())
    }

    /// Number of parameters (embedding, blocks, final norm and an untied head).
    pub fn parameter_count(&self) -> usize {
        let (h, i, kvd) = (self.hidden_size, self.intermediate_size, self.kv_heads() * self.head_dim());
        let block = 2 * h * h + 2 * h * kvd + 3 * h * i + 2 * h;
        let head = if self.tie_word_embeddings { 0 } else { self.vocab_size * h };
        self.vocab_size * h + self.num_hidden_layers * block + h + head
    }
}
