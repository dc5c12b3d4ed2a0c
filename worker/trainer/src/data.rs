//! Training records: JSON Lines `{"text": …}` or `{"prompt": …, "completion": …}` read from any
//! [`Read`] stream (a file, standard input, or the worker's decrypting reader), tokenized into
//! examples with a per-token loss mask.

use std::io::{BufRead, BufReader, Read};

use crate::tokenizer::Tokenizer;
use crate::{Error, Result};

/// One tokenized record: `ids` (≤ max length + 1) and, for each next-token target `ids[i + 1]`,
/// whether it counts in the loss (completion tokens only for prompt/completion records).
#[derive(Clone, Debug, PartialEq)]
pub struct Example {
    pub ids: Vec<u32>,
    pub target_mask: Vec<bool>,
}

impl Example {
    pub fn targets(&self) -> usize {
        self.target_mask.iter().filter(|m| **m).count()
    }
}

/// What reading a dataset found.
#[derive(Debug)]
pub struct Dataset {
    pub examples: Vec<Example>,
    pub records: usize,
    /// Records cut at the maximum length.
    pub truncated: usize,
    /// Records left with nothing to learn (no completion token within the maximum length).
    pub skipped: usize,
}

/// How a prompt/completion pair becomes text.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Template {
    /// Prompt and completion concatenated as they are.
    #[default]
    Plain,
    /// ChatML, as instruction-tuned models such as SmolLM2-Instruct expect:
    /// `<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n{completion}<|im_end|>`.
    ChatMl,
}

impl Template {
    /// The text a prompt becomes: what the model sees before it answers.
    pub fn prompt(self, prompt: &str) -> String {
        match self {
            Self::Plain => prompt.to_owned(),
            Self::ChatMl => format!("<|im_start|>user\n{prompt}<|im_end|>\n<|im_start|>assistant\n"),
        }
    }

    /// The text a completion becomes.
    pub fn completion(self, completion: &str) -> String {
        match self {
            Self::Plain => completion.to_owned(),
            Self::ChatMl => format!("{completion}<|im_end|>"),
        }
    }
}

/// Reads and tokenizes every record. Errors name the line. `max_len` bounds each example's tokens.
pub fn read_records(input: impl Read, tokenizer: &Tokenizer, max_len: usize, template: Template) -> Result<Dataset> {
    let mut reader = BufReader::new(input);
    let mut line = String::new();
    let mut out = Dataset { examples: Vec::new(), records: 0, truncated: 0, skipped: 0 };
    let mut number = 0usize;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).map_err(|e| Error::Input(format!("reading records: {e}")))?;
        if n == 0 {
            break;
        }
        number += 1;
        let text = line.trim();
        if text.is_empty() {
            continue;
        }
        let record: serde_json::Value =
            serde_json::from_str(text).map_err(|e| Error::Input(format!("line {number}: not a JSON object ({e})")))?;
        let field = |k: &str| record.get(k).and_then(|v| v.as_str());
        let (prompt, completion) = match (field("text"), field("prompt"), field("completion")) {
            (Some(t), None, None) => ("", t),
            (None, Some(p), Some(c)) => (p, c),
            _ => {
                return Err(Error::Input(format!(
                    "line {number}: expected {{\"text\": string}} or {{\"prompt\": string, \"completion\": string}}"
                )));
            }
        };
        out.records += 1;
        let (prompt, completion) = if prompt.is_empty() {
            (String::new(), completion.to_owned())
        } else {
            (template.prompt(prompt), template.completion(completion))
        };
        let p = if prompt.is_empty() { Vec::new() } else { tokenizer.encode(&prompt)? };
        let mut c = tokenizer.encode(&completion)?;
        c.extend(tokenizer.eos);
        let mut ids = p.clone();
        ids.extend(&c);
        if ids.len() > max_len + 1 {
            ids.truncate(max_len + 1);
            out.truncated += 1;
        }
        // Target i is ids[i + 1]; it is learned when it belongs to the completion.
        let target_mask: Vec<bool> = (1..ids.len()).map(|i| i >= p.len()).collect();
        let example = Example { ids, target_mask };
        if example.targets() == 0 {
            out.skipped += 1;
            continue;
        }
        out.examples.push(example);
    }
    if out.examples.is_empty() {
        return Err(Error::Input(if out.records == 0 {
            "no records: the input is empty".into()
        } else {
            format!("none of the {} records has a token to learn within the maximum length", out.records)
        }));
    }
    Ok(out)
}
