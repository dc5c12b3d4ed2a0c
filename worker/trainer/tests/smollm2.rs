#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! SmolLM2-135M-Instruct from its GGUF (fetched by `scripts/fetch-model`, which `scripts/test`
//! runs): the loaded model answers sensibly, LoRA training lowers the loss, and the adapter
//! reloads to identical outputs. Skipped, saying so, when the model is absent.

use std::path::PathBuf;

use candle_core::{Device, Tensor};
use coffre_trainer::data::{Template, read_records};
use coffre_trainer::{Llama, LoraSpec, Mode, TrainOptions, Trainer, lora, weights};

fn model_path() -> Option<PathBuf> {
    let path = std::env::var_os("COFFRE_SMOLLM2").map(PathBuf::from).unwrap_or_else(|| {
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../.cache/models/SmolLM2-135M-Instruct.Q4_1.gguf")
    });
    if path.exists() {
        Some(path)
    } else {
        eprintln!("SKIPPED: {} not found (run scripts/fetch-model)", path.display());
        None
    }
}

#[test]
fn smollm2_gguf_loads_answers_and_lora_trains() {
    let Some(path) = model_path() else { return };
    let base = weights::load(&path, None, &Device::Cpu).unwrap();
    let cfg = &base.config;
    assert_eq!(
        (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads, cfg.kv_heads(), cfg.vocab_size),
        (576, 30, 9, 3, 49152)
    );
    assert!(cfg.tie_word_embeddings);
    // The tokenizer rebuilt from GGUF metadata splits digits and knows the chat tokens.
    let ids = base.tokenizer.encode("<|im_start|>user\n2026").unwrap();
    assert_eq!(ids[0], 1);
    assert_eq!(base.tokenizer.decode(&ids).unwrap(), "<|im_start|>user\n2026");
    assert_eq!(ids.len(), 3 + 4, "{ids:?}");

    // Dequantized weights with Q/K in Hugging Face order: the instruct model answers correctly.
    let (model, _) = Llama::new(base.config.clone(), &base.weights, &Mode::Full, 0).unwrap();
    let stop = base.tokenizer.token_id("<|im_end|>");
    let prompt = base.tokenizer.encode(&Template::ChatMl.prompt("What is the capital of France?")).unwrap();
    let answer = base.tokenizer.decode(&model.generate(&prompt, 8, stop).unwrap()).unwrap();
    assert!(answer.contains("Paris"), "answer: {answer:?}");
    drop(model);

    let records: String = [
        ("I lost my card ending 4921 in Lyon, please block it.", "card_lost"),
        ("Why was I charged 12 EUR for a transfer from FR76 3000 6000 0112?", "transfer_fees"),
        ("Please raise the daily limit on my card to 2000 EUR.", "limit_increase"),
        ("I moved to Gent, update the address on my account please.", "address_change"),
    ]
    .iter()
    .cycle()
    .take(12)
    .map(|(p, c)| format!("{}\n", serde_json::json!({"prompt": p, "completion": c})))
    .collect();
    let data = read_records(records.as_bytes(), &base.tokenizer, 64, Template::ChatMl).unwrap();
    let mut options = TrainOptions::new(Mode::Lora(LoraSpec::new(4)));
    options.steps = 6;
    options.batch_size = 4;
    options.warmup = 1;
    options.optimizer.lr = 3e-3;
    options.eval_fraction = 0.0;
    let mut trainer = Trainer::new(&base, data, options, &Device::Cpu).unwrap();
    let summary = trainer.run(None, |_| {}).unwrap();
    assert!(summary.final_loss < summary.first_loss * 0.8, "{:?}", summary.losses);

    let out = tempfile::tempdir().unwrap();
    let Mode::Lora(spec) = trainer.options().mode.clone() else { unreachable!() };
    lora::save_adapter(out.path(), &spec, &trainer.params, "SmolLM2-135M-Instruct").unwrap();
    let (spec2, adapter) = lora::load_adapter(out.path(), &Device::Cpu).unwrap();
    let reloaded = lora::with_adapter(&base, &spec2, &adapter, &Device::Cpu).unwrap();
    let ids = Tensor::new(prompt.as_slice(), &Device::Cpu).unwrap().unsqueeze(0).unwrap();
    let a: Vec<f32> = trainer.model.forward(&ids, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = reloaded.forward(&ids, None).unwrap().flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a, b);
}
