//! Errors of this crate.

use std::fmt;

/// A policy or approver-set document that cannot be loaded: where, what, and what to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoadError {
    /// 1-based line of the offending value (0 when unknown).
    pub line: usize,
    /// 1-based column (0 when unknown).
    pub column: usize,
    /// What is wrong.
    pub message: String,
    /// What to do about it.
    pub hint: Option<String>,
    /// The offending line of the document.
    pub source_line: Option<String>,
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.line > 0 {
            write!(f, "line {}, column {}: {}", self.line, self.column, self.message)
        } else {
            f.write_str(&self.message)
        }
    }
}

impl std::error::Error for LoadError {}

impl LoadError {
    /// An error without a position.
    pub fn new(message: impl Into<String>, hint: Option<String>) -> Self {
        Self { line: 0, column: 0, message: message.into(), hint, source_line: None }
    }

    /// From a TOML deserialization error of `text` (any document type: requests use it too).
    pub fn from_toml(text: &str, e: &toml::de::Error) -> Self {
        let message = e.message().trim().to_owned();
        let (line, column, source_line) = match e.span() {
            Some(span) => {
                let start = span.start.min(text.len());
                let before = &text[..start];
                let line = before.matches('\n').count() + 1;
                let line_start = before.rfind('\n').map_or(0, |i| i + 1);
                let column = text[line_start..start].chars().count() + 1;
                let source = text[line_start..].lines().next().unwrap_or("").to_owned();
                (line, column, Some(source))
            }
            None => (0, 0, None),
        };
        let hint = hint_for(&message);
        Self { line, column, message, hint, source_line }
    }
}

/// The names between backticks after `expected one of` / `expected`.
fn expected_names(message: &str) -> Vec<&str> {
    let Some(pos) = message.find("expected") else {
        return Vec::new();
    };
    message[pos..].split('`').skip(1).step_by(2).collect()
}

fn first_quoted(message: &str) -> Option<&str> {
    message.split('`').nth(1)
}

fn edit_distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1; b.len() + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur[j + 1] = (prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1);
        }
        prev = cur;
    }
    prev[b.len()]
}

fn closest<'a>(word: &str, candidates: &[&'a str]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (edit_distance(word, c), *c))
        .filter(|(d, c)| *d <= (c.len() / 3).max(2))
        .min()
        .map(|(_, c)| c)
}

fn hint_for(message: &str) -> Option<String> {
    if message.starts_with("unknown field") || message.starts_with("unknown variant") {
        let what = if message.starts_with("unknown field") { "keys allowed here" } else { "values allowed here" };
        let expected = expected_names(message);
        let given = first_quoted(message).unwrap_or("");
        if let Some(best) = closest(given, &expected) {
            return Some(format!("did you mean `{best}`? The {what}: {}", expected.join(", ")));
        }
        if expected.is_empty() {
            return Some(format!("no {what}: remove it"));
        }
        return Some(format!("the {what}: {}", expected.join(", ")));
    }
    if message.starts_with("missing field") {
        let field = first_quoted(message).unwrap_or("it");
        return Some(format!(
            "add `{field}`; `coffre policy schema` prints every key with its type, and policies/bundled/ has complete examples"
        ));
    }
    if message.contains("TOML datetime") || message.contains("expected a datetime") {
        return Some("write date-times without quotes and with a time zone: not_after = 2026-12-31T23:59:59Z".into());
    }
    if message.starts_with("invalid type: string") && (message.contains("expected u") || message.contains("integer")) {
        return Some("write numbers without quotes: vmpl = 0".into());
    }
    if message.starts_with("invalid type: string") && message.contains("expected a boolean") {
        return Some("write true or false without quotes".into());
    }
    if message.starts_with("invalid type") && message.contains("expected a sequence") {
        return Some("this key takes a list: key = [\"a\", \"b\"]".into());
    }
    if message.starts_with("invalid type") && message.contains("expected a string") {
        return Some("put the value in double quotes".into());
    }
    if message.contains("nonzero") {
        return Some("versions start at 1".into());
    }
    if message.contains("duplicate key") {
        return Some("each key may appear once per table".into());
    }
    if message.contains("invalid value") && message.contains("expected u8") {
        return Some("TCB components and VMPL are 0 to 255".into());
    }
    if message.contains("hex digits") {
        return Some(
            "copy the value whole from the evidence (`coffre attest verify … --json` prints every claim in hex)".into(),
        );
    }
    if message.contains("invalid") || message.contains("expected") {
        return None;
    }
    Some("check the TOML syntax here: strings in double quotes, lists in [ ], one key per line".into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn closest_names() {
        assert_eq!(closest("forbiden_policy_bits", &["vmpl", "forbidden_policy_bits"]), Some("forbidden_policy_bits"));
        assert_eq!(closest("zzz", &["vmpl", "forbidden_policy_bits"]), None);
    }
}
