//! `coffre generate`: a model's greedy answers to prompts, with or without a LoRA adapter (what
//! `coffre artifact open` unpacked), to see what fine-tuning changed.

use std::path::PathBuf;

use clap::Args;
use coffre_trainer::data::Template;
use coffre_trainer::tokenizer::Tokenizer;
use coffre_trainer::{Device, Llama, Mode, lora, weights};

use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  coffre generate --model smollm2.gguf --template chatml \"Where is my card?\"
  coffre generate --model smollm2.gguf --adapter fraud-lora/ --template chatml \"Where is my card?\"")]
pub struct GenerateArgs {
    /// The base model: a GGUF file or a model directory
    #[arg(long, value_name = "PATH")]
    pub model: PathBuf,
    /// A LoRA adapter directory (adapter_config.json + adapter_model.safetensors) to apply
    #[arg(long, value_name = "DIR")]
    pub adapter: Option<PathBuf>,
    /// How a prompt is shown to the model
    #[arg(long, value_enum, default_value = "plain")]
    pub template: crate::train::TemplateArg,
    /// At most this many new tokens per answer
    #[arg(long, default_value_t = 16, value_name = "N")]
    pub max_tokens: usize,
    /// The prompts
    #[arg(required = true)]
    pub prompts: Vec<String>,
}

fn fail(what: &str) -> impl Fn(coffre_trainer::Error) -> CliError + '_ {
    move |e| CliError::new(format!("{what}: {e}"))
}

/// The model's greedy answer to each prompt, on one line each.
pub fn answers(
    model: &Llama,
    tokenizer: &Tokenizer,
    template: Template,
    prompts: &[String],
    max_tokens: usize,
) -> CliResult<Vec<String>> {
    let stop = tokenizer.token_id("<|im_end|>");
    prompts
        .iter()
        .map(|m| {
            let ids = tokenizer.encode(&template.prompt(m)).map_err(fail("tokenize"))?;
            let out = model.generate(&ids, max_tokens, stop).map_err(fail("generate"))?;
            let text = tokenizer.decode(&out).map_err(fail("decode"))?;
            Ok(text.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .collect()
}

pub fn run(a: &GenerateArgs) -> CliResult {
    let device = Device::Cpu;
    let base = weights::load(&a.model, None, &device).map_err(fail("cannot load the base model"))?;
    let model = match &a.adapter {
        Some(dir) => {
            let (spec, adapter) = lora::load_adapter(dir, &device).map_err(fail("cannot load the adapter"))?;
            lora::with_adapter(&base, &spec, &adapter, &device).map_err(fail("cannot apply the adapter"))?
        }
        None => {
            Llama::new(base.config.clone(), &base.weights, &Mode::Full, 0).map_err(fail("cannot build the model"))?.0
        }
    };
    for (prompt, answer) in
        a.prompts.iter().zip(answers(&model, &base.tokenizer, a.template.into(), &a.prompts, a.max_tokens)?)
    {
        outln!("{prompt}\n  → {answer}");
    }
    Ok(())
}
