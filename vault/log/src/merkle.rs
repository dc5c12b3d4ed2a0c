//! The Merkle tree of RFC 6962 / RFC 9162 §2.1: SHA-256, leaf hash `SHA-256(0x00 ‖ entry)`, node
//! hash `SHA-256(0x01 ‖ left ‖ right)`, and the inclusion and consistency proofs over it.
//!
//! [`Tree`] keeps the hash of every complete, aligned subtree (level 0: the leaves; level `l`:
//! subtrees of `2^l` leaves), so the root of any prefix and every proof cost O(log n) hashes
//! without touching the entries.

use aws_lc_rs::digest;

/// A SHA-256 hash of the tree.
pub type Hash = [u8; 32];

/// The longest proof a tree of at most 2^64 entries has (inclusion: 64; consistency: 65).
pub const MAX_PROOF_LEN: usize = 65;

fn sha256(parts: &[&[u8]]) -> Hash {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for p in parts {
        ctx.update(p);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

/// `SHA-256(0x00 ‖ entry)`.
pub fn leaf_hash(entry: &[u8]) -> Hash {
    sha256(&[&[0x00], entry])
}

/// `SHA-256(0x01 ‖ left ‖ right)`.
pub fn node_hash(left: &Hash, right: &Hash) -> Hash {
    sha256(&[&[0x01], left, right])
}

/// The root of the empty tree: `SHA-256("")`.
pub fn empty_root() -> Hash {
    sha256(&[])
}

/// Why a proof or a tree request was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProofError {
    /// The index is not inside the tree.
    #[error("index {index} is outside a tree of size {size}")]
    IndexOutOfRange { index: u64, size: u64 },
    /// The older size is larger than the newer one, or a size is beyond the tree.
    #[error("sizes {old} and {new} cannot be compared (tree size {tree})")]
    BadSizes { old: u64, new: u64, tree: u64 },
    /// The proof has the wrong number of hashes for these sizes.
    #[error("the proof has {got} hashes; these sizes need {want}")]
    WrongLength { got: usize, want: usize },
    /// The proof leads to another root.
    #[error("the proof leads to root {computed}, not {expected}")]
    RootMismatch { computed: String, expected: String },
    /// A consistency proof does not reproduce the older root.
    #[error("the proof gives older root {computed}, not {expected}")]
    OldRootMismatch { computed: String, expected: String },
}

/// Largest power of two strictly smaller than `n` (`n >= 2`).
fn split(n: u64) -> u64 {
    1 << (63 - (n - 1).leading_zeros())
}

/// The hashes of every complete, aligned subtree of an append-only sequence of leaves.
#[derive(Debug, Clone, Default)]
pub struct Tree {
    levels: Vec<Vec<Hash>>,
}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// A tree over these leaf hashes.
    pub fn from_leaves(leaves: impl IntoIterator<Item = Hash>) -> Self {
        let mut t = Self::new();
        for l in leaves {
            t.push(l);
        }
        t
    }

    /// Number of leaves.
    pub fn size(&self) -> u64 {
        self.levels.first().map_or(0, |l| l.len() as u64)
    }

    /// The hash of leaf `index`.
    pub fn leaf(&self, index: u64) -> Option<Hash> {
        self.levels.first().and_then(|l| l.get(usize::try_from(index).ok()?)).copied()
    }

    /// Appends a leaf hash, completing every subtree it closes.
    pub fn push(&mut self, leaf: Hash) {
        let mut hash = leaf;
        let mut level = 0;
        loop {
            if self.levels.len() == level {
                self.levels.push(Vec::new());
            }
            let nodes = &mut self.levels[level];
            nodes.push(hash);
            if nodes.len() % 2 == 1 {
                return;
            }
            let n = nodes.len();
            hash = node_hash(&nodes[n - 2], &nodes[n - 1]);
            level += 1;
        }
    }

    /// The root of the whole tree.
    pub fn root(&self) -> Hash {
        self.range(0, self.size())
    }

    /// The root of the tree's first `size` leaves.
    pub fn root_at(&self, size: u64) -> Result<Hash, ProofError> {
        if size > self.size() {
            return Err(ProofError::BadSizes { old: size, new: size, tree: self.size() });
        }
        Ok(self.range(0, size))
    }

    /// MTH(D[start:end]) for `start <= end <= size`.
    fn range(&self, start: u64, end: u64) -> Hash {
        let n = end - start;
        if n == 0 {
            return empty_root();
        }
        if n.is_power_of_two() && start.is_multiple_of(n) {
            let level = n.trailing_zeros() as usize;
            if let Some(h) = self.levels.get(level).and_then(|l| l.get((start / n) as usize)) {
                return *h;
            }
        }
        // n >= 2 here: a single leaf is always stored at level 0.
        let k = split(n);
        node_hash(&self.range(start, start + k), &self.range(start + k, end))
    }

    /// The inclusion proof of leaf `index` in the tree's first `size` leaves (RFC 9162 §2.1.3.1).
    pub fn inclusion_proof(&self, index: u64, size: u64) -> Result<Vec<Hash>, ProofError> {
        if size > self.size() {
            return Err(ProofError::BadSizes { old: index, new: size, tree: self.size() });
        }
        if index >= size {
            return Err(ProofError::IndexOutOfRange { index, size });
        }
        let mut proof = Vec::new();
        self.path(index, 0, size, &mut proof);
        Ok(proof)
    }

    fn path(&self, m: u64, start: u64, end: u64, out: &mut Vec<Hash>) {
        let n = end - start;
        if n <= 1 {
            return;
        }
        let k = split(n);
        if m < k {
            self.path(m, start, start + k, out);
            out.push(self.range(start + k, end));
        } else {
            self.path(m - k, start + k, end, out);
            out.push(self.range(start, start + k));
        }
    }

    /// The consistency proof between the first `old` and the first `new` leaves (RFC 9162
    /// §2.1.4.1). Empty when `old` is 0 or equals `new`.
    pub fn consistency_proof(&self, old: u64, new: u64) -> Result<Vec<Hash>, ProofError> {
        if old > new || new > self.size() {
            return Err(ProofError::BadSizes { old, new, tree: self.size() });
        }
        let mut proof = Vec::new();
        if old > 0 && old < new {
            self.subproof(old, 0, new, true, &mut proof);
        }
        Ok(proof)
    }

    fn subproof(&self, m: u64, start: u64, end: u64, whole: bool, out: &mut Vec<Hash>) {
        let n = end - start;
        if m == n {
            if !whole {
                out.push(self.range(start, end));
            }
            return;
        }
        let k = split(n);
        if m <= k {
            self.subproof(m, start, start + k, whole, out);
            out.push(self.range(start + k, end));
        } else {
            self.subproof(m - k, start + k, end, false, out);
            out.push(self.range(start, start + k));
        }
    }
}

fn mismatch(computed: &Hash, expected: &Hash) -> (String, String) {
    (hex::encode(computed), hex::encode(expected))
}

/// Verifies that `leaf` is entry `index` of the tree of `size` entries with `root`
/// (RFC 9162 §2.1.3.2).
pub fn verify_inclusion(leaf: &Hash, index: u64, size: u64, proof: &[Hash], root: &Hash) -> Result<(), ProofError> {
    if index >= size {
        return Err(ProofError::IndexOutOfRange { index, size });
    }
    let want = inclusion_len(index, size);
    if proof.len() != want {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    let (mut fn_, mut sn) = (index, size - 1);
    let mut r = *leaf;
    for p in proof {
        if fn_ & 1 == 1 || fn_ == sn {
            r = node_hash(p, &r);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            r = node_hash(&r, p);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if r != *root {
        let (computed, expected) = mismatch(&r, root);
        return Err(ProofError::RootMismatch { computed, expected });
    }
    Ok(())
}

/// The number of hashes in the inclusion proof of `index` in a tree of `size` (`index < size`).
fn inclusion_len(index: u64, size: u64) -> usize {
    // Levels where index and the last index differ, plus the right-edge levels above them.
    let inner = 64 - (index ^ (size - 1)).leading_zeros();
    let border = (index >> inner).count_ones();
    (inner + border) as usize
}

/// Verifies that the tree of `new` entries with `new_root` extends the tree of `old` entries
/// with `old_root` (RFC 9162 §2.1.4.2). Equal sizes need equal roots and an empty proof; the
/// empty tree is a prefix of every tree.
pub fn verify_consistency(
    old: u64,
    new: u64,
    old_root: &Hash,
    new_root: &Hash,
    proof: &[Hash],
) -> Result<(), ProofError> {
    if old > new {
        return Err(ProofError::BadSizes { old, new, tree: new });
    }
    if old == new || old == 0 {
        if !proof.is_empty() {
            return Err(ProofError::WrongLength { got: proof.len(), want: 0 });
        }
        if old == new && old_root != new_root {
            let (computed, expected) = mismatch(new_root, old_root);
            return Err(ProofError::OldRootMismatch { computed, expected });
        }
        return Ok(());
    }
    let want = consistency_len(old, new);
    if proof.len() != want {
        return Err(ProofError::WrongLength { got: proof.len(), want });
    }
    let mut path: Vec<&Hash> = Vec::with_capacity(proof.len() + 1);
    if old.is_power_of_two() {
        path.push(old_root);
    }
    path.extend(proof.iter());
    let (mut fn_, mut sn) = (old - 1, new - 1);
    while fn_ & 1 == 1 {
        fn_ >>= 1;
        sn >>= 1;
    }
    let (mut fr, mut sr) = (*path[0], *path[0]);
    for c in &path[1..] {
        if sn == 0 {
            return Err(ProofError::WrongLength { got: proof.len(), want });
        }
        if fn_ & 1 == 1 || fn_ == sn {
            fr = node_hash(c, &fr);
            sr = node_hash(c, &sr);
            while fn_ & 1 == 0 && fn_ != 0 {
                fn_ >>= 1;
                sn >>= 1;
            }
        } else {
            sr = node_hash(&sr, c);
        }
        fn_ >>= 1;
        sn >>= 1;
    }
    if fr != *old_root {
        let (computed, expected) = mismatch(&fr, old_root);
        return Err(ProofError::OldRootMismatch { computed, expected });
    }
    if sr != *new_root || sn != 0 {
        let (computed, expected) = mismatch(&sr, new_root);
        return Err(ProofError::RootMismatch { computed, expected });
    }
    Ok(())
}

/// The number of hashes in the consistency proof between sizes `0 < old < new`.
fn consistency_len(old: u64, new: u64) -> usize {
    let inner = 64 - ((old - 1) ^ (new - 1)).leading_zeros();
    let shift = (old - 1).trailing_ones().min(inner);
    let border = ((old - 1) >> inner).count_ones();
    let start = if old.is_power_of_two() { 0 } else { 1 };
    (start + inner - shift + border) as usize
}
