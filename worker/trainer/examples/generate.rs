#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! Greedy generation from a base model: `cargo run --release --example generate -- MODEL PROMPT`.
fn main() {
    let args: Vec<String> = std::env::args().collect();
    let base = coffre_trainer::weights::load(args[1].as_ref(), None, &coffre_trainer::Device::Cpu).unwrap();
    let (model, _) = coffre_trainer::Llama::new(
        base.config.clone(),
        &base.weights,
        &coffre_trainer::Mode::Lora(coffre_trainer::LoraSpec::new(1)),
        0,
    )
    .unwrap();
    let ids = base.tokenizer.encode(&coffre_trainer::data::Template::ChatMl.prompt(&args[2])).unwrap();
    println!("{} prompt tokens: {:?}", ids.len(), &ids[..ids.len().min(12)]);
    let out = model.generate(&ids, 24, base.tokenizer.token_id("<|im_end|>")).unwrap();
    println!("{}", base.tokenizer.decode(&out).unwrap());
}
