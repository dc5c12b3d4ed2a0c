//! Low-rank adapters (LoRA, Hu et al. 2021) and their PEFT-compatible files.
//!
//! An adapter on a projection `W` (`[out, in]`) adds `scale · B A` with `A: [rank, in]`,
//! `B: [out, rank]`, `scale = alpha / rank`. `A` starts Kaiming-uniform and `B` at zero, as in
//! PEFT, so training starts from the base model exactly. Files are what 🤗 PEFT writes and reads:
//! `adapter_model.safetensors` with `base_model.model.…​.lora_A.weight` / `lora_B.weight` and
//! `adapter_config.json`.

use std::path::Path;

use candle_core::{Tensor, Var};
use rand::Rng;
use serde::{Deserialize, Serialize};

use crate::model::{MODULES, Probes, Tap};
use crate::{Error, Result};

/// Which modules get adapters, and their rank and scaling.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LoraSpec {
    pub rank: usize,
    pub alpha: f64,
    /// Hugging Face module names (`q_proj`, `v_proj`, …; see [`MODULES`]).
    pub targets: Vec<String>,
}

impl LoraSpec {
    /// Rank `rank`, alpha `2·rank`, on the attention query and value projections (PEFT's default
    /// for Llama).
    pub fn new(rank: usize) -> Self {
        Self { rank, alpha: 2.0 * rank as f64, targets: vec!["q_proj".into(), "v_proj".into()] }
    }

    pub fn validate(&self) -> Result<()> {
        if self.rank == 0 {
            return Err(Error::Input("LoRA rank must be at least 1".into()));
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(Error::Input("LoRA alpha must be a positive number".into()));
        }
        if self.targets.is_empty() {
            return Err(Error::Input("LoRA needs at least one target module".into()));
        }
        for t in &self.targets {
            if !MODULES.contains(&t.as_str()) {
                return Err(Error::Input(format!(
                    "unknown LoRA target module {t:?}; choose from {}",
                    MODULES.join(", ")
                )));
            }
        }
        Ok(())
    }

    pub fn scale(&self) -> f64 {
        self.alpha / self.rank as f64
    }

    /// `adapter_config.json` as PEFT writes it.
    pub fn adapter_config(&self, base_model: &str) -> String {
        let value = serde_json::json!({
            "peft_type": "LORA",
            "task_type": "CAUSAL_LM",
            "base_model_name_or_path": base_model,
            "r": self.rank,
            "lora_alpha": self.alpha,
            "lora_dropout": 0.0,
            "target_modules": self.targets,
            "bias": "none",
            "fan_in_fan_out": false,
            "inference_mode": true,
            "use_rslora": false,
            "use_dora": false,
        });
        serde_json::to_string_pretty(&value).unwrap_or_default()
    }

    /// Reads `adapter_config.json` (PEFT's, or ours).
    pub fn from_adapter_config(text: &str) -> Result<Self> {
        let v: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Format(format!("adapter_config.json is not JSON: {e}")))?;
        if v.get("peft_type").and_then(|p| p.as_str()) != Some("LORA") {
            return Err(Error::Unsupported("adapter_config.json: only peft_type LORA is supported".into()));
        }
        for flag in ["use_dora", "use_rslora", "fan_in_fan_out"] {
            if v.get(flag).and_then(|f| f.as_bool()) == Some(true) {
                return Err(Error::Unsupported(format!("adapter_config.json: {flag} is not supported")));
            }
        }
        let rank =
            v.get("r").and_then(|r| r.as_u64()).ok_or_else(|| Error::Format("adapter_config.json lacks r".into()))?;
        let alpha = v.get("lora_alpha").and_then(|a| a.as_f64()).unwrap_or(8.0);
        let targets = match v.get("target_modules") {
            Some(serde_json::Value::Array(items)) => {
                items.iter().filter_map(|i| i.as_str().map(str::to_owned)).collect::<Vec<_>>()
            }
            Some(serde_json::Value::String(s)) if s == "all-linear" => {
                MODULES.iter().map(|m| (*m).to_owned()).collect()
            }
            _ => {
                return Err(Error::Format("adapter_config.json: target_modules must be a list of module names".into()));
            }
        };
        let spec = Self { rank: rank as usize, alpha, targets };
        spec.validate()?;
        Ok(spec)
    }
}

/// One adapter pair.
#[derive(Debug)]
pub(crate) struct LoraLayer {
    pub a: Var,
    pub b: Var,
    pub scale: f64,
}

impl LoraLayer {
    pub fn init(spec: &LoraSpec, weight: &Tensor, rng: &mut impl Rng) -> Result<Self> {
        let (out, inp) = weight.dims2()?;
        let bound = 1.0 / (inp as f32).sqrt();
        let a: Vec<f32> = (0..spec.rank * inp).map(|_| rng.random_range(-bound..bound)).collect();
        let a = Var::from_tensor(&Tensor::from_vec(a, (spec.rank, inp), weight.device())?)?;
        let b = Var::zeros((out, spec.rank), candle_core::DType::F32, weight.device())?;
        Ok(Self { a, b, scale: spec.scale() })
    }

    /// `scale · (x Aᵀ) Bᵀ`; with probes, records what DP-SGD needs for per-example gradients.
    pub fn forward(&self, x: &Tensor, probes: Option<&mut Probes>) -> Result<Tensor> {
        let h = x.matmul(&self.a.t()?)?;
        let z = match probes {
            None => h.matmul(&self.b.t()?)?,
            Some(probes) => {
                let probe_h = Var::zeros(h.shape(), h.dtype(), h.device())?;
                let hp = (&h + probe_h.as_tensor())?;
                let z = hp.matmul(&self.b.t()?)?;
                let probe_z = Var::zeros(z.shape(), z.dtype(), z.device())?;
                let z = (z + probe_z.as_tensor())?;
                probes.taps.push(Tap { x: x.detach(), h: h.detach(), probe_h, probe_z });
                z
            }
        };
        Ok(z.affine(self.scale, 0.0)?)
    }

    /// `scale · B A`, the change this adapter makes to its weight.
    pub fn delta(&self) -> Result<Tensor> {
        Ok(self.b.as_tensor().detach().matmul(&self.a.as_tensor().detach())?.affine(self.scale, 0.0)?)
    }
}

/// Writes `adapter_model.safetensors` and `adapter_config.json` into `dir`.
pub fn save_adapter(dir: &Path, spec: &LoraSpec, trainable: &[(String, Var)], base_model: &str) -> Result<()> {
    save_adapter_to(&mut crate::output::DirSink::new(dir), spec, trainable, base_model)
}

/// Hands `adapter_model.safetensors` and `adapter_config.json` to `sink`.
pub fn save_adapter_to(
    sink: &mut dyn crate::output::Sink,
    spec: &LoraSpec,
    trainable: &[(String, Var)],
    base_model: &str,
) -> Result<()> {
    let tensors: Vec<(String, Tensor)> =
        trainable.iter().map(|(name, var)| (name.clone(), var.as_tensor().detach())).collect();
    sink.put("adapter_model.safetensors", &crate::weights::safetensors_bytes(&tensors)?)?;
    sink.put("adapter_config.json", spec.adapter_config(base_model).as_bytes())
}

/// Reads `adapter_config.json` and `adapter_model.safetensors` from `dir`.
pub fn load_adapter(dir: &Path, device: &candle_core::Device) -> Result<(LoraSpec, crate::model::Weights)> {
    let path = dir.join("adapter_config.json");
    let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
    let spec = LoraSpec::from_adapter_config(&text)?;
    let tensors = crate::weights::read_safetensors(&dir.join("adapter_model.safetensors"), device)?;
    Ok((spec, tensors))
}

/// The base model with a saved adapter applied. Every adapter tensor the model expects must be
/// present with its shape, and the file may hold nothing else.
pub fn with_adapter(
    base: &crate::BaseModel,
    spec: &LoraSpec,
    adapter: &crate::model::Weights,
    device: &candle_core::Device,
) -> Result<crate::Llama> {
    let weights = base
        .weights
        .iter()
        .map(|(n, t)| Ok((n.clone(), t.to_device(device)?)))
        .collect::<Result<crate::model::Weights>>()?;
    let (model, params) = crate::Llama::new(base.config.clone(), &weights, &crate::Mode::Lora(spec.clone()), 0)?;
    if params.len() != adapter.len() {
        return Err(Error::Format(format!(
            "the adapter holds {} tensors; this model and adapter_config.json need {}",
            adapter.len(),
            params.len()
        )));
    }
    for (name, var) in &params {
        let t = adapter.get(name).ok_or_else(|| Error::Format(format!("the adapter lacks {name}")))?;
        if t.shape() != var.shape() {
            return Err(Error::Format(format!(
                "adapter tensor {name} has shape {:?}, expected {:?}",
                t.dims(),
                var.dims()
            )));
        }
        var.set(t)?;
    }
    Ok(model)
}
