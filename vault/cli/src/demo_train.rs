//! The demo's training step: LoRA fine-tuning of the base model on the opened customer messages,
//! with the model's answers to unseen messages before and after.

use std::path::{Path, PathBuf};

use clap::Parser;
use coffre_trainer::data::Template;
use coffre_trainer::{Device, Llama, Mode, lora, tiny, weights};

use crate::demo::{cmd, step};
use crate::demo_data;
use crate::error::{CliError, CliResult};

#[derive(Debug, Parser)]
struct TrainCli {
    #[command(flatten)]
    args: crate::train::TrainArgs,
}

fn fail(what: &str) -> impl Fn(coffre_trainer::Error) -> CliError + '_ {
    move |e| CliError::new(format!("demo: {what}: {e}"))
}

/// The model's greedy answer to each message, as a ChatML user turn.
fn answers(
    model: &Llama,
    tokenizer: &coffre_trainer::tokenizer::Tokenizer,
    messages: &[String],
) -> CliResult<Vec<String>> {
    crate::generate::answers(model, tokenizer, Template::ChatMl, messages, 8)
}

pub fn run(n: u32, dir: &Path, data: &Path, model: Option<&Path>, steps: usize) -> CliResult {
    let (model_path, name): (PathBuf, String) = match model {
        Some(m) => (m.to_path_buf(), m.file_name().map_or("the model".into(), |f| f.to_string_lossy().into_owned())),
        None => {
            let tiny_dir = dir.join("tiny-model");
            tiny::generate(&tiny_dir, 64, 2, 2026).map_err(fail("generate the tiny model"))?;
            (tiny_dir, "a tiny random Llama (no --model given: its answers are noise, but its loss falls)".into())
        }
    };
    step(
        n,
        &format!(
            "Fine-tune {name} with LoRA on the opened messages (in production: inside the attested worker, fed by a decrypting reader)"
        ),
    );
    let mut rng = demo_data::SplitMix::new(99);
    let unseen: Vec<(String, &str)> = (0..3).map(|_| demo_data::record(&mut rng)).collect();
    let messages: Vec<String> = unseen.iter().map(|(m, _)| m.clone()).collect();
    let before = {
        let base = weights::load(&model_path, None, &Device::Cpu).map_err(fail("load the base model"))?;
        let (model, _) = Llama::new(base.config.clone(), &base.weights, &Mode::Full, 0).map_err(fail("build"))?;
        answers(&model, &base.tokenizer, &messages)?
    };

    let out = dir.join("adapter");
    // A byte-level tokenizer (the tiny model's) needs four times the tokens of SmolLM2's BPE.
    let max_len = if model.is_some() { "96" } else { "320" };
    let argv: Vec<String> = [
        "coffre",
        "train",
        "--model",
        &model_path.display().to_string(),
        "--data",
        &data.display().to_string(),
        "--out",
        &out.display().to_string(),
        "--template",
        "chatml",
        "--lora-targets",
        "all",
        "--steps",
        &steps.to_string(),
        "--batch-size",
        "4",
        "--max-len",
        max_len,
        "--lr",
        "2e-3",
        "--warmup",
        "2",
        "--eval-fraction",
        "0.001",
        "--seed",
        "2026",
    ]
    .iter()
    .map(|s| (*s).to_owned())
    .collect();
    cmd(&argv.join(" "));
    let parsed = TrainCli::try_parse_from(argv.iter().skip(1))
        .map_err(|e| CliError::new(format!("demo: train arguments: {e}")))?;
    crate::train::run(&parsed.args)?;

    outln!("   The adapter reloads from {} and answers messages it never saw:", out.display());
    let base = weights::load(&model_path, None, &Device::Cpu).map_err(fail("load the base model"))?;
    let (spec, adapter) = lora::load_adapter(&out, &Device::Cpu).map_err(fail("load the adapter"))?;
    let tuned = lora::with_adapter(&base, &spec, &adapter, &Device::Cpu).map_err(fail("apply the adapter"))?;
    let after = answers(&tuned, &base.tokenizer, &messages)?;
    for (((message, intent), b), a) in unseen.iter().zip(&before).zip(&after) {
        let short: String = message.chars().take(72).collect();
        outln!("   \"{short}…\"");
        outln!("      intent {intent:<16} before: {:<24} after: {a}", format!("{b:?}"));
    }
    Ok(())
}
