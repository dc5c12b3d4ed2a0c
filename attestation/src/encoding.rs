//! Input encodings evidence arrives in, shared by every verifier's input reader.

/// Decodes hex text (whitespace and a leading `0x` allowed), or `None` when `bytes` is not hex.
pub fn hex_text(bytes: &[u8]) -> Option<Vec<u8>> {
    let text = std::str::from_utf8(bytes).ok()?;
    let cleaned: String = text.trim().trim_start_matches("0x").chars().filter(|c| !c.is_whitespace()).collect();
    if cleaned.is_empty() || !cleaned.chars().all(|c| c.is_ascii_hexdigit()) {
        return None;
    }
    hex::decode(cleaned).ok()
}

/// Skips leading ASCII whitespace.
pub fn trim_start(bytes: &[u8]) -> &[u8] {
    bytes.iter().position(|b| !b.is_ascii_whitespace()).map_or(&[][..], |i| &bytes[i..])
}
