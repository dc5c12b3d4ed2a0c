#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! GGUF loading on a generated model: written the way llama.cpp's converter writes Llama weights
//! (GGUF names, Q/K rows permuted for interleaved RoPE, tokenizer in metadata), it must load back
//! to the same model as the safetensors original.

use candle_core::quantized::gguf_file::{self, Value};
use candle_core::quantized::{GgmlDType, QTensor};
use candle_core::{Device, Tensor};
use coffre_trainer::{Llama, Mode, tiny, weights};

/// llama.cpp's permutation of Q/K rows: halves → interleaved pairs, per head.
fn permute(w: &Tensor, heads: usize) -> Tensor {
    let (rows, cols) = w.dims2().unwrap();
    let hd = rows / heads;
    w.reshape((heads, 2, hd / 2, cols))
        .unwrap()
        .transpose(1, 2)
        .unwrap()
        .contiguous()
        .unwrap()
        .reshape((rows, cols))
        .unwrap()
}

fn gguf_name(hf: &str) -> String {
    let map = [
        ("model.embed_tokens.weight", "token_embd.weight"),
        ("model.norm.weight", "output_norm.weight"),
        ("lm_head.weight", "output.weight"),
    ];
    if let Some((_, g)) = map.iter().find(|(h, _)| *h == hf) {
        return (*g).to_owned();
    }
    let rest = hf.strip_prefix("model.layers.").unwrap();
    let (layer, part) = rest.split_once('.').unwrap();
    let part = match part {
        "input_layernorm.weight" => "attn_norm.weight",
        "post_attention_layernorm.weight" => "ffn_norm.weight",
        "self_attn.q_proj.weight" => "attn_q.weight",
        "self_attn.k_proj.weight" => "attn_k.weight",
        "self_attn.v_proj.weight" => "attn_v.weight",
        "self_attn.o_proj.weight" => "attn_output.weight",
        "mlp.gate_proj.weight" => "ffn_gate.weight",
        "mlp.up_proj.weight" => "ffn_up.weight",
        "mlp.down_proj.weight" => "ffn_down.weight",
        other => panic!("{other}"),
    };
    format!("blk.{layer}.{part}")
}

#[test]
fn a_llama_cpp_style_gguf_loads_to_the_same_model() {
    let base = tiny::base_model(64, 2, 11, &Device::Cpu).unwrap();
    let cfg = &base.config;
    let mut tensors = Vec::new();
    for (name, t) in &base.weights {
        let t = if name.ends_with("q_proj.weight") {
            permute(t, cfg.num_attention_heads)
        } else if name.ends_with("k_proj.weight") {
            permute(t, cfg.kv_heads())
        } else {
            t.clone()
        };
        tensors.push((gguf_name(name), QTensor::quantize(&t, GgmlDType::F32).unwrap()));
    }
    // Byte-level BPE tokens (GPT-2's byte alphabet) and the specials, as the tokenizer.json has them.
    let vocab: serde_json::Value = serde_json::from_str::<serde_json::Value>(&base.tokenizer.to_json().unwrap())
        .unwrap()["model"]["vocab"]
        .clone();
    let mut tokens: Vec<(u64, String)> =
        vocab.as_object().unwrap().iter().map(|(k, v)| (v.as_u64().unwrap(), k.clone())).collect();
    tokens.sort();
    let types: Vec<Value> = tokens.iter().map(|(i, _)| Value::I32(if *i >= 256 { 3 } else { 1 })).collect();
    let tokens: Vec<Value> = tokens.into_iter().map(|(_, t)| Value::String(t)).collect();
    let u = |x: usize| Value::U32(x as u32);
    let metadata = vec![
        ("general.architecture", Value::String("llama".into())),
        ("llama.vocab_size", u(cfg.vocab_size)),
        ("llama.embedding_length", u(cfg.hidden_size)),
        ("llama.feed_forward_length", u(cfg.intermediate_size)),
        ("llama.block_count", u(cfg.num_hidden_layers)),
        ("llama.attention.head_count", u(cfg.num_attention_heads)),
        ("llama.attention.head_count_kv", u(cfg.kv_heads())),
        ("llama.attention.layer_norm_rms_epsilon", Value::F32(cfg.rms_norm_eps as f32)),
        ("llama.rope.freq_base", Value::F32(cfg.rope_theta as f32)),
        ("llama.context_length", u(cfg.max_position_embeddings)),
        ("tokenizer.ggml.model", Value::String("gpt2".into())),
        ("tokenizer.ggml.pre", Value::String("default".into())),
        ("tokenizer.ggml.tokens", Value::Array(tokens)),
        ("tokenizer.ggml.token_type", Value::Array(types)),
        ("tokenizer.ggml.merges", Value::Array(vec![])),
        ("tokenizer.ggml.eos_token_id", Value::U32(256)),
    ];
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("tiny.gguf");
    let mut file = std::fs::File::create(&path).unwrap();
    let md: Vec<(&str, &Value)> = metadata.iter().map(|(k, v)| (*k, v)).collect();
    let ts: Vec<(&str, &QTensor)> = tensors.iter().map(|(k, v)| (k.as_str(), v)).collect();
    gguf_file::write(&mut file, &md, &ts).unwrap();
    drop(file);

    let loaded = weights::load(&path, None, &Device::Cpu).unwrap();
    assert_eq!(&loaded.config.hidden_size, &cfg.hidden_size);
    assert!(!loaded.config.tie_word_embeddings);
    assert_eq!(loaded.tokenizer.eos, Some(256));
    let text = "Card 4921 lost<|endoftext|>";
    let ids = loaded.tokenizer.encode(text).unwrap();
    assert_eq!(ids, base.tokenizer.encode(text).unwrap());
    assert_eq!(*ids.last().unwrap(), 256);

    let input = Tensor::new(ids.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let (a, _) = Llama::new(cfg.clone(), &base.weights, &Mode::Full, 0).unwrap();
    let (b, _) = Llama::new(loaded.config.clone(), &loaded.weights, &Mode::Full, 0).unwrap();
    let la: Vec<f32> = a.forward(&input, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let lb: Vec<f32> = b.forward(&input, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(la, lb, "the GGUF model computes something else: Q/K permutation not undone?");

    // A tokenizer the metadata cannot rebuild (SentencePiece) is refused with a hint, and a given
    // tokenizer.json takes its place.
    let mut sp = metadata.clone();
    for (k, v) in sp.iter_mut() {
        if *k == "tokenizer.ggml.model" {
            *v = Value::String("llama".into());
        }
    }
    let sp_path = dir.path().join("sp.gguf");
    let mut file = std::fs::File::create(&sp_path).unwrap();
    let md: Vec<(&str, &Value)> = sp.iter().map(|(k, v)| (*k, v)).collect();
    gguf_file::write(&mut file, &md, &ts).unwrap();
    drop(file);
    let err = weights::load(&sp_path, None, &Device::Cpu).unwrap_err().to_string();
    assert!(err.contains("--tokenizer"), "{err}");
    let tok = dir.path().join("tokenizer.json");
    std::fs::write(&tok, base.tokenizer.to_json().unwrap()).unwrap();
    let loaded = weights::load(&sp_path, Some(&tok), &Device::Cpu).unwrap();
    assert_eq!(loaded.tokenizer.encode(text).unwrap(), ids);
}
