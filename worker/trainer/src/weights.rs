//! Loading base models (Hugging Face safetensors directories, GGUF files) and writing weights.

use std::collections::HashMap;
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use candle_core::quantized::gguf_file;
use candle_core::{DType, Device, Tensor};

use crate::config::LlamaConfig;
use crate::model::Weights;
use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// A base model ready to train: configuration, f32 weights and tokenizer.
#[derive(Debug)]
pub struct BaseModel {
    pub config: LlamaConfig,
    pub weights: Weights,
    pub tokenizer: Tokenizer,
    /// Where it came from, recorded in adapter configs.
    pub source: String,
}

/// Loads a model from a Hugging Face directory (`config.json`, `*.safetensors`, `tokenizer.json`)
/// or a GGUF file (dequantized to f32; tokenizer from its metadata). `tokenizer` overrides the
/// tokenizer found with the model.
pub fn load(path: &Path, tokenizer: Option<&Path>, device: &Device) -> Result<BaseModel> {
    let meta = fs::metadata(path).map_err(|e| Error::io(path, e))?;
    let base = if meta.is_dir() {
        load_dir(path, tokenizer, device)?
    } else if is_gguf(path)? {
        load_gguf(path, tokenizer, device)?
    } else {
        return Err(Error::Input(format!(
            "{} is neither a model directory (config.json + safetensors) nor a GGUF file",
            path.display()
        )));
    };
    base.tokenizer.check_vocab(base.config.vocab_size)?;
    Ok(base)
}

fn is_gguf(path: &Path) -> Result<bool> {
    let mut magic = [0u8; 4];
    let mut f = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    Ok(std::io::Read::read_exact(&mut f, &mut magic).is_ok() && &magic == b"GGUF")
}

fn load_dir(dir: &Path, tokenizer: Option<&Path>, device: &Device) -> Result<BaseModel> {
    let config_path = dir.join("config.json");
    let text = fs::read_to_string(&config_path).map_err(|e| Error::io(&config_path, e))?;
    let config = LlamaConfig::from_json(&text)?;
    let mut files: Vec<PathBuf> = fs::read_dir(dir)
        .map_err(|e| Error::io(dir, e))?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "safetensors") && !p.ends_with("adapter_model.safetensors"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(Error::Input(format!("{} holds no *.safetensors weights", dir.display())));
    }
    let mut weights = Weights::new();
    for file in &files {
        let tensors = candle_core::safetensors::load(file, device)
            .map_err(|e| Error::Format(format!("{}: {e}", file.display())))?;
        for (name, t) in tensors {
            weights.insert(name, t.to_dtype(DType::F32)?);
        }
    }
    let tokenizer = match tokenizer {
        Some(t) => Tokenizer::from_file(t)?,
        None => {
            let path = dir.join("tokenizer.json");
            if !path.exists() {
                return Err(Error::Input(format!(
                    "{} has no tokenizer.json; pass one with --tokenizer",
                    dir.display()
                )));
            }
            Tokenizer::from_file(&path)?
        }
    };
    Ok(BaseModel { config, weights, tokenizer, source: dir.display().to_string() })
}

fn load_gguf(path: &Path, tokenizer: Option<&Path>, device: &Device) -> Result<BaseModel> {
    let mut file = fs::File::open(path).map_err(|e| Error::io(path, e))?;
    let content = gguf_file::Content::read(&mut file).map_err(|e| Error::Format(format!("{}: {e}", path.display())))?;
    let md = &content.metadata;
    let arch = md.get("general.architecture").and_then(|v| v.to_string().ok()).map(String::as_str);
    if arch != Some("llama") {
        return Err(Error::Unsupported(format!(
            "GGUF architecture {:?}: only llama is supported",
            arch.unwrap_or("(none)")
        )));
    }
    let num = |key: &str| -> Result<usize> {
        let v = md.get(&format!("llama.{key}")).ok_or_else(|| Error::Format(format!("GGUF lacks llama.{key}")))?;
        Ok(v.to_u32().or_else(|_| v.to_u64().map(|x| x as u32))? as usize)
    };
    let float = |key: &str, default: f64| -> f64 {
        md.get(&format!("llama.{key}")).and_then(|v| v.to_f32().ok()).map_or(default, f64::from)
    };
    let tokens = md.get("tokenizer.ggml.tokens").and_then(|v| v.to_vec().ok()).map_or(0, Vec::len);
    let heads = num("attention.head_count")?;
    let config = LlamaConfig {
        vocab_size: num("vocab_size").unwrap_or(tokens),
        hidden_size: num("embedding_length")?,
        intermediate_size: num("feed_forward_length")?,
        num_hidden_layers: num("block_count")?,
        num_attention_heads: heads,
        num_key_value_heads: Some(num("attention.head_count_kv").unwrap_or(heads)),
        rms_norm_eps: float("attention.layer_norm_rms_epsilon", 1e-5),
        rope_theta: float("rope.freq_base", 10_000.0),
        max_position_embeddings: num("context_length").unwrap_or(2048),
        tie_word_embeddings: !content.tensor_infos.contains_key("output.weight"),
        bos_token_id: md.get("tokenizer.ggml.bos_token_id").and_then(|v| v.to_u32().ok()),
        eos_token_id: md.get("tokenizer.ggml.eos_token_id").and_then(|v| v.to_u32().ok()),
    };
    config.validate()?;
    // A given tokenizer.json replaces the metadata's, which may be one we cannot rebuild.
    let tokenizer = match tokenizer {
        Some(t) => Tokenizer::from_file(t)?,
        None => Tokenizer::from_gguf(md)?,
    };

    let (hd, kv) = (config.head_dim(), config.kv_heads());
    let mut weights = Weights::new();
    let mut names: Vec<&String> = content.tensor_infos.keys().collect();
    names.sort();
    for name in names {
        let Some(hf) = hf_name(name) else { continue };
        let q =
            content.tensor(&mut file, name, device).map_err(|e| Error::Format(format!("GGUF tensor {name}: {e}")))?;
        let mut t = q.dequantize(device)?.to_dtype(DType::F32)?;
        // llama.cpp stores Q and K rows permuted for its interleaved RoPE; undo it so that the
        // weights are in Hugging Face's layout (and what we write loads in transformers).
        if hf.ends_with("q_proj.weight") {
            t = unpermute(&t, heads, hd)?;
        } else if hf.ends_with("k_proj.weight") {
            t = unpermute(&t, kv, hd)?;
        }
        weights.insert(hf, t);
    }
    Ok(BaseModel { config, weights, tokenizer, source: path.display().to_string() })
}

/// GGUF tensor names to Hugging Face names.
fn hf_name(gguf: &str) -> Option<String> {
    match gguf {
        "token_embd.weight" => return Some("model.embed_tokens.weight".into()),
        "output_norm.weight" => return Some("model.norm.weight".into()),
        "output.weight" => return Some("lm_head.weight".into()),
        _ => {}
    }
    let rest = gguf.strip_prefix("blk.")?;
    let (layer, part) = rest.split_once('.')?;
    let layer: usize = layer.parse().ok()?;
    let hf = match part {
        "attn_norm.weight" => "input_layernorm.weight",
        "ffn_norm.weight" => "post_attention_layernorm.weight",
        "attn_q.weight" => "self_attn.q_proj.weight",
        "attn_k.weight" => "self_attn.k_proj.weight",
        "attn_v.weight" => "self_attn.v_proj.weight",
        "attn_output.weight" => "self_attn.o_proj.weight",
        "ffn_gate.weight" => "mlp.gate_proj.weight",
        "ffn_up.weight" => "mlp.up_proj.weight",
        "ffn_down.weight" => "mlp.down_proj.weight",
        _ => return None,
    };
    Some(format!("model.layers.{layer}.{hf}"))
}

/// Rows `[heads · (hd/2) · 2]` (interleaved pairs) back to `[heads · 2 · (hd/2)]` (halves).
fn unpermute(w: &Tensor, heads: usize, hd: usize) -> Result<Tensor> {
    let (rows, cols) = w.dims2()?;
    if rows != heads * hd {
        return Err(Error::Format(format!("GGUF Q/K projection has {rows} rows, expected {}", heads * hd)));
    }
    Ok(w.reshape((heads, hd / 2, 2, cols))?.transpose(1, 2)?.contiguous()?.reshape((rows, cols))?)
}

/// A safetensors file with `format: pt` metadata (which `transformers` requires), in memory.
pub fn safetensors_bytes(tensors: &[(String, Tensor)]) -> Result<Vec<u8>> {
    let contiguous: Vec<(String, Tensor)> =
        tensors.iter().map(|(n, t)| Ok((n.clone(), t.contiguous()?))).collect::<Result<_>>()?;
    let meta = HashMap::from([("format".to_owned(), "pt".to_owned())]);
    safetensors::serialize(contiguous.iter().map(|(n, t)| (n.as_str(), t)), Some(meta))
        .map_err(|e| Error::Format(format!("safetensors: {e}")))
}

/// Writes a safetensors file with `format: pt` metadata, atomically.
pub fn write_safetensors(path: &Path, tensors: &[(String, Tensor)]) -> Result<()> {
    write_atomic(path, &safetensors_bytes(tensors)?)
}

/// Reads a safetensors file into f32 tensors.
pub fn read_safetensors(path: &Path, device: &Device) -> Result<Weights> {
    let bytes = fs::read(path).map_err(|e| Error::io(path, e))?;
    read_safetensors_bytes(&bytes, device).map_err(|e| Error::Format(format!("{}: {e}", path.display())))
}

/// Reads safetensors bytes into f32 tensors.
pub fn read_safetensors_bytes(bytes: &[u8], device: &Device) -> Result<Weights> {
    let tensors =
        candle_core::safetensors::load_buffer(bytes, device).map_err(|e| Error::Format(format!("safetensors: {e}")))?;
    tensors.into_iter().map(|(n, t)| Ok((n, t.to_dtype(DType::F32)?))).collect()
}

/// Writes a complete model directory: `config.json`, `model.safetensors`, `tokenizer.json`.
pub fn save_model(dir: &Path, config: &LlamaConfig, weights: &Weights, tokenizer: &Tokenizer) -> Result<()> {
    create_private_dir(dir)?;
    save_model_to(&mut crate::output::DirSink::new(dir), "", config, weights, tokenizer)
}

/// Hands a complete model (`config.json`, `model.safetensors`, `tokenizer.json`, each prefixed
/// with `prefix`) to `sink`.
pub fn save_model_to(
    sink: &mut dyn crate::output::Sink,
    prefix: &str,
    config: &LlamaConfig,
    weights: &Weights,
    tokenizer: &Tokenizer,
) -> Result<()> {
    let tensors: Vec<(String, Tensor)> = weights.iter().map(|(n, t)| (n.clone(), t.clone())).collect();
    sink.put(&format!("{prefix}model.safetensors"), &safetensors_bytes(&tensors)?)?;
    sink.put(&format!("{prefix}config.json"), config.to_json().as_bytes())?;
    sink.put(&format!("{prefix}tokenizer.json"), tokenizer.to_json()?.as_bytes())
}

/// Creates `dir` (and its parents) readable by the owner only: weights and checkpoints of a model
/// trained on confidential data are confidential too.
pub fn create_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new().recursive(true).mode(0o700).create(dir).map_err(|e| Error::io(dir, e))
}

/// Creates a new file for writing, owner-only (0600), failing if anything — a file or a planted
/// symbolic link — already has that name (`O_CREAT | O_EXCL`), so nothing is ever written
/// through a link.
fn create_new_private(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

/// Temporary file, fsync, rename: a crash leaves the old file or the new one, never a torn one.
/// The temporary file is created exclusively and owner-only under a name nobody can predict.
pub fn write_atomic(path: &Path, bytes: &[u8]) -> Result<()> {
    let dir = path.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = path.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    let mut tmp = dir.join(format!(".{name}.tmp"));
    let result = (|| {
        let mut f = loop {
            tmp = dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>()));
            match create_new_private(&tmp) {
                Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
                other => break other?,
            }
        };
        f.write_all(bytes)?;
        f.sync_all()?;
        fs::rename(&tmp, path)?;
        if let Ok(d) = fs::File::open(dir) {
            d.sync_all().ok();
        }
        Ok(())
    })();
    result.map_err(|e| {
        fs::remove_file(&tmp).ok();
        Error::io(path, e)
    })
}
