//! A bounded memo of time-independent verification work (certificate chains, signed manifests),
//! keyed by a digest of the exact input bytes, so repeated evidence from one machine costs only
//! what truly depends on the evidence: its own signature.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use aws_lc_rs::digest;

const LIMIT: usize = 4096;

/// SHA-256 over length-prefixed parts: the memo key of a sequence of byte strings.
pub fn key<'a>(parts: impl IntoIterator<Item = &'a [u8]>) -> [u8; 32] {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(&(part.len() as u64).to_be_bytes());
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// A memo that forgets everything when it reaches its limit (simple, and bounded).
#[derive(Debug)]
pub struct Memo<V> {
    map: Mutex<HashMap<[u8; 32], Arc<V>>>,
}

impl<V> Default for Memo<V> {
    fn default() -> Self {
        Self { map: Mutex::new(HashMap::new()) }
    }
}

impl<V> Memo<V> {
    /// The value for `key`, if present.
    pub fn get(&self, key: &[u8; 32]) -> Option<Arc<V>> {
        self.map.lock().ok().and_then(|m| m.get(key).cloned())
    }

    /// Remembers `value` for `key`.
    pub fn insert(&self, key: [u8; 32], value: V) {
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= LIMIT {
                map.clear();
            }
            map.insert(key, Arc::new(value));
        }
    }

    /// The value for `key`, computed with `make` when absent. A poisoned lock only disables the
    /// memo; the value is then computed every time.
    pub fn get_or_insert_with(&self, key: [u8; 32], make: impl FnOnce() -> V) -> Arc<V> {
        if let Some(hit) = self.map.lock().ok().and_then(|m| m.get(&key).cloned()) {
            return hit;
        }
        let value = Arc::new(make());
        if let Ok(mut map) = self.map.lock() {
            if map.len() >= LIMIT {
                map.clear();
            }
            map.insert(key, Arc::clone(&value));
        }
        value
    }
}
