//! Proofs in a portable JSON form, for serving and for offline checks:
//!
//! ```json
//! {"type":"inclusion","index":3,"tree_size":7,"hashes":["<base64>", …]}
//! {"type":"consistency","old_size":4,"tree_size":7,"hashes":["<base64>", …]}
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};

use crate::merkle::{Hash, MAX_PROOF_LEN, ProofError, verify_consistency, verify_inclusion};

/// A proof read from or written to JSON.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Proof {
    /// Entry `index` is in the tree of `tree_size`.
    Inclusion { index: u64, tree_size: u64, hashes: Vec<Hash> },
    /// The tree of `old_size` is a prefix of the tree of `tree_size`.
    Consistency { old_size: u64, tree_size: u64, hashes: Vec<Hash> },
}

#[derive(Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
enum Wire {
    Inclusion { index: u64, tree_size: u64, hashes: Vec<String> },
    Consistency { old_size: u64, tree_size: u64, hashes: Vec<String> },
}

fn decode(hashes: &[String]) -> Result<Vec<Hash>, String> {
    if hashes.len() > MAX_PROOF_LEN {
        return Err(format!("{} hashes; no proof has more than {MAX_PROOF_LEN}", hashes.len()));
    }
    hashes
        .iter()
        .map(|h| {
            STANDARD
                .decode(h)
                .ok()
                .and_then(|b| <Hash>::try_from(b).ok())
                .ok_or_else(|| format!("{h:?} is not a 32-byte hash in base64"))
        })
        .collect()
}

impl Proof {
    /// Reads the JSON form.
    pub fn from_json(bytes: &[u8]) -> Result<Self, String> {
        let w: Wire = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
        Ok(match w {
            Wire::Inclusion { index, tree_size, hashes } => {
                Proof::Inclusion { index, tree_size, hashes: decode(&hashes)? }
            }
            Wire::Consistency { old_size, tree_size, hashes } => {
                Proof::Consistency { old_size, tree_size, hashes: decode(&hashes)? }
            }
        })
    }

    /// Writes the JSON form.
    pub fn to_json(&self) -> String {
        let enc = |h: &[Hash]| h.iter().map(|x| STANDARD.encode(x)).collect();
        let w = match self {
            Proof::Inclusion { index, tree_size, hashes } => {
                Wire::Inclusion { index: *index, tree_size: *tree_size, hashes: enc(hashes) }
            }
            Proof::Consistency { old_size, tree_size, hashes } => {
                Wire::Consistency { old_size: *old_size, tree_size: *tree_size, hashes: enc(hashes) }
            }
        };
        serde_json::to_string(&w).unwrap_or_default()
    }

    /// Verifies an inclusion proof for `leaf` against `root`.
    pub fn verify_inclusion(&self, leaf: &Hash, root: &Hash) -> Result<(), ProofError> {
        match self {
            Proof::Inclusion { index, tree_size, hashes } => verify_inclusion(leaf, *index, *tree_size, hashes, root),
            Proof::Consistency { hashes, .. } => Err(ProofError::WrongLength { got: hashes.len(), want: 0 }),
        }
    }

    /// Verifies a consistency proof between `old_root` and `new_root`.
    pub fn verify_consistency(&self, old_root: &Hash, new_root: &Hash) -> Result<(), ProofError> {
        match self {
            Proof::Consistency { old_size, tree_size, hashes } => {
                verify_consistency(*old_size, *tree_size, old_root, new_root, hashes)
            }
            Proof::Inclusion { hashes, .. } => Err(ProofError::WrongLength { got: hashes.len(), want: 0 }),
        }
    }
}
