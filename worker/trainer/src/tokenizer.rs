//! Tokenizers: Hugging Face `tokenizer.json`, or a byte-level BPE rebuilt from GGUF metadata.

use std::collections::HashMap;
use std::path::Path;

use candle_core::quantized::gguf_file::Value;

use crate::{Error, Result};

/// A text tokenizer plus the ids training needs.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    /// Appended after each record so the model learns where an answer ends.
    pub eos: Option<u32>,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer").field("vocab", &self.inner.get_vocab_size(true)).field("eos", &self.eos).finish()
    }
}

const EOS_NAMES: [&str; 4] = ["<|endoftext|>", "</s>", "<|end_of_text|>", "<eos>"];

impl Tokenizer {
    pub fn from_file(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_json(&text).map_err(|e| Error::Format(format!("{}: {e}", path.display())))
    }

    pub fn from_json(text: &str) -> Result<Self> {
        let inner: tokenizers::Tokenizer =
            text.parse().map_err(|e| Error::Format(format!("not a tokenizer.json: {e}")))?;
        let eos = EOS_NAMES.iter().find_map(|n| inner.token_to_id(n));
        Ok(Self { inner, eos })
    }

    pub fn to_json(&self) -> Result<String> {
        self.inner.to_string(true).map_err(|e| Error::Format(format!("tokenizer: {e}")))
    }

    /// A byte-level BPE without merges (every byte one token) followed by `specials`; used for
    /// generated test models. The first special is the end-of-sequence token.
    pub fn byte_level(specials: &[&str]) -> Result<Self> {
        let tokens: Vec<String> = byte_chars().iter().map(|c| c.to_string()).collect();
        let mut all: Vec<(String, bool)> = tokens.into_iter().map(|t| (t, false)).collect();
        all.extend(specials.iter().map(|s| ((*s).to_owned(), true)));
        let mut t = Self::from_json(&bpe_json(&all, &[], false))?;
        t.eos = specials.first().map(|_| 256);
        Ok(t)
    }

    /// Rebuilds the tokenizer stored in GGUF metadata (`tokenizer.ggml.*`, byte-level BPE).
    pub fn from_gguf(md: &HashMap<String, Value>) -> Result<Self> {
        let model = md.get("tokenizer.ggml.model").and_then(|v| v.to_string().ok()).map(String::as_str);
        if model != Some("gpt2") {
            return Err(Error::Unsupported(format!(
                "GGUF tokenizer model {:?} cannot be rebuilt (only byte-level BPE, \"gpt2\"); pass the model's tokenizer.json with --tokenizer",
                model.unwrap_or("(none)")
            )));
        }
        let list = |key: &str| md.get(key).and_then(|v| v.to_vec().ok());
        let tokens =
            list("tokenizer.ggml.tokens").ok_or_else(|| Error::Format("GGUF lacks tokenizer.ggml.tokens".into()))?;
        let types = list("tokenizer.ggml.token_type");
        let mut all = Vec::with_capacity(tokens.len());
        for (i, t) in tokens.iter().enumerate() {
            let text = t.to_string().map_err(|_| Error::Format("GGUF token is not a string".into()))?.clone();
            // Types 3 (control) and 4 (user-defined) are matched whole in the input text.
            let kind = types.and_then(|ty| ty.get(i)).and_then(|v| v.to_i32().ok()).unwrap_or(1);
            all.push((text, kind == 3 || kind == 4));
        }
        let merges: Vec<String> = list("tokenizer.ggml.merges")
            .map(|m| m.iter().filter_map(|v| v.to_string().ok().cloned()).collect())
            .unwrap_or_default();
        let pre = md.get("tokenizer.ggml.pre").and_then(|v| v.to_string().ok()).map(String::as_str);
        let digits = match pre {
            Some("smollm") => true,
            None | Some("default" | "gpt2" | "gpt-2") => false,
            Some(other) => {
                return Err(Error::Unsupported(format!(
                    "GGUF pre-tokenizer {other:?} is not rebuilt; pass the model's tokenizer.json with --tokenizer"
                )));
            }
        };
        let mut t = Self::from_json(&bpe_json(&all, &merges, digits))?;
        let id = |k: &str| md.get(k).and_then(|v| v.to_u32().ok());
        t.eos = id("tokenizer.ggml.eos_token_id").or(t.eos);
        Ok(t)
    }

    pub fn encode(&self, text: &str) -> Result<Vec<u32>> {
        let enc = self.inner.encode(text, false).map_err(|e| Error::Input(format!("tokenizer: {e}")))?;
        Ok(enc.get_ids().to_vec())
    }

    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.inner.decode(ids, false).map_err(|e| Error::Input(format!("tokenizer: {e}")))
    }

    pub fn vocab_size(&self) -> usize {
        self.inner.get_vocab_size(true)
    }

    /// Refuses a tokenizer whose ids the model's embedding cannot hold.
    pub fn check_vocab(&self, model_vocab: usize) -> Result<()> {
        if self.vocab_size() > model_vocab {
            return Err(Error::Format(format!(
                "the tokenizer has {} tokens but the model's embedding only {model_vocab}",
                self.vocab_size()
            )));
        }
        Ok(())
    }
}

/// GPT-2's byte-to-character table: printable bytes stand for themselves, the rest are shifted
/// above U+0100 so that every byte is a visible character.
fn byte_chars() -> Vec<char> {
    let mut out = vec!['\0'; 256];
    let mut next = 256u32;
    for b in 0..=255u32 {
        let printable = (33..=126).contains(&b) || (161..=172).contains(&b) || (174..=255).contains(&b);
        let c = if printable {
            b
        } else {
            next += 1;
            next - 1
        };
        out[b as usize] = char::from_u32(c).unwrap_or('\u{FFFD}');
    }
    out
}

/// A `tokenizer.json` for a byte-level BPE (GPT-2 style, with SmolLM's single-digit split when
/// `digits`).
fn bpe_json(tokens: &[(String, bool)], merges: &[String], digits: bool) -> String {
    let vocab: serde_json::Map<String, serde_json::Value> =
        tokens.iter().enumerate().map(|(i, (t, _))| (t.clone(), (i as u64).into())).collect();
    let added: Vec<serde_json::Value> = tokens
        .iter()
        .enumerate()
        .filter(|(_, (_, special))| *special)
        .map(|(i, (t, _))| {
            serde_json::json!({"id": i, "content": t, "single_word": false, "lstrip": false, "rstrip": false,
                "normalized": false, "special": true})
        })
        .collect();
    let byte_level =
        serde_json::json!({"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true});
    let pre = if digits {
        serde_json::json!({"type": "Sequence", "pretokenizers": [{"type": "Digits", "individual_digits": true}, byte_level]})
    } else {
        byte_level.clone()
    };
    serde_json::json!({
        "version": "1.0",
        "truncation": null,
        "padding": null,
        "added_tokens": added,
        "normalizer": null,
        "pre_tokenizer": pre,
        "post_processor": byte_level,
        "decoder": byte_level,
        "model": {"type": "BPE", "dropout": null, "unk_token": null, "continuing_subword_prefix": null,
            "end_of_word_suffix": null, "fuse_unk": false, "byte_fallback": false, "ignore_merges": false,
            "vocab": vocab, "merges": merges},
    })
    .to_string()
}

impl Tokenizer {
    /// The id of a token given by its text (special tokens such as `<|im_end|>` included).
    pub fn token_id(&self, token: &str) -> Option<u32> {
        self.inner.token_to_id(token)
    }
}
