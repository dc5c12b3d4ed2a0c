//! The log: an [`EntryStore`] with its Merkle tree, appending entries and signing checkpoints.

use crate::entry::{Entry, EntryError};
use crate::merkle::{Hash, ProofError, Tree, leaf_hash};
use crate::note::{Checkpoint, NoteError, NoteSigner};
use crate::store::{EntryStore, StoreError};

/// Why the log refused.
#[derive(Debug, thiserror::Error)]
pub enum LogError {
    /// Storage failed.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A stored entry is not a canonical entry.
    #[error("entry {index}: {source}")]
    Entry { index: u64, source: EntryError },
    /// Signing failed.
    #[error(transparent)]
    Note(#[from] NoteError),
    /// A proof request is outside the tree.
    #[error(transparent)]
    Proof(#[from] ProofError),
    /// Signing now would sign a second root for a size already signed.
    #[error("refusing to sign a second root for tree size {size}: the stored log differs from what was signed")]
    Equivocation { size: u64 },
    /// The stored entries no longer have the root a checkpoint signed for their size: someone
    /// rewrote history in the store. Signing on top of it would sign a fork.
    #[error(
        "refusing to sign: the entries no longer hash to the root signed for size {size}; the store was rewritten \
         after that checkpoint"
    )]
    Rewritten { size: u64 },
    /// A stored leaf hash is not the hash of its stored entry.
    #[error("entry {index}: its stored leaf hash is not the hash of the stored entry; the store was edited")]
    LeafMismatch { index: u64 },
    /// The stored log is shorter than a checkpoint already signed.
    #[error("the log has {size} entries but a checkpoint for {signed} was already signed: entries were lost")]
    Rollback { signed: u64, size: u64 },
}

/// An append-only, verifiable log.
#[derive(Debug)]
pub struct Log<S> {
    store: S,
    tree: Tree,
}

impl<S: EntryStore> Log<S> {
    /// Opens the log in `store`. The tree is rebuilt by hashing every stored entry, never from
    /// the stored leaf hashes alone (whoever can write the store could edit both), and each
    /// stored leaf hash must equal its entry's; then the latest signed checkpoint must still
    /// match the entries (see [`Log::sign_checkpoint`]).
    pub fn open(store: S) -> Result<Self, LogError> {
        let stored = store.leaves()?;
        let n = store.len();
        if stored.len() as u64 != n {
            return Err(StoreError::Corrupt(format!("{n} entries but {} leaf hashes stored", stored.len())).into());
        }
        let mut tree = Tree::new();
        let mut mismatch = None;
        store.scan(&mut |index, entry| {
            let leaf = leaf_hash(entry);
            if mismatch.is_none() && stored.get(index as usize) != Some(&leaf) {
                mismatch = Some(index);
            }
            tree.push(leaf);
            Ok(())
        })?;
        if let Some(index) = mismatch {
            return Err(LogError::LeafMismatch { index });
        }
        Ok(Self { store, tree })
    }

    /// Checks that the entries still have the root of the latest signed checkpoint at its size.
    /// Called before every signature; also useful right after [`Log::open`].
    pub fn check_signed_history(&self, verifier: &crate::note::NoteVerifier) -> Result<(), LogError> {
        let Some(latest) = self.store.latest_checkpoint()? else {
            return Ok(());
        };
        let signed = Checkpoint::verify(&latest, verifier)?;
        if signed.size > self.size() {
            return Err(LogError::Rollback { signed: signed.size, size: self.size() });
        }
        if self.tree.root_at(signed.size)? != signed.root {
            return Err(LogError::Rewritten { size: signed.size });
        }
        Ok(())
    }

    /// Makes every append so far durable (see [`EntryStore::sync`]).
    pub fn sync(&mut self) -> Result<(), LogError> {
        Ok(self.store.sync()?)
    }

    /// Appends `entry` (durable when it returns, or at the next [`Log::sync`] for a store that
    /// groups commits); returns its index.
    pub fn append(&mut self, entry: &Entry) -> Result<u64, LogError> {
        let bytes = entry.to_bytes();
        let leaf = leaf_hash(&bytes);
        self.store.append(&bytes, &leaf)?;
        self.tree.push(leaf);
        Ok(self.tree.size() - 1)
    }

    /// Takes in the entries other writers of a shared store appended (see
    /// [`EntryStore::refresh`]), each hashed again and checked against its stored leaf; returns
    /// them with their indices, in order, for the caller to replay.
    pub fn refresh(&mut self) -> Result<Vec<(u64, Vec<u8>)>, LogError> {
        let mut out = Vec::new();
        for (entry, stored) in self.store.refresh()? {
            let index = self.tree.size();
            if leaf_hash(&entry) != stored {
                return Err(LogError::LeafMismatch { index });
            }
            self.tree.push(stored);
            out.push((index, entry));
        }
        Ok(out)
    }

    /// Number of entries.
    pub fn size(&self) -> u64 {
        self.tree.size()
    }

    /// The current root.
    pub fn root(&self) -> Hash {
        self.tree.root()
    }

    /// The tree.
    pub fn tree(&self) -> &Tree {
        &self.tree
    }

    /// Entry `index`, read back.
    pub fn entry(&self, index: u64) -> Result<Entry, LogError> {
        Entry::from_bytes(&self.store.entry(index)?).map_err(|source| LogError::Entry { index, source })
    }

    /// The store.
    pub fn store(&self) -> &S {
        &self.store
    }

    /// The store, for blobs stored alongside.
    pub fn store_mut(&mut self) -> &mut S {
        &mut self.store
    }

    /// Signs and stores a checkpoint of the current tree. Never signs two roots for one size,
    /// never a size below one already signed, and never a tree whose prefix is not the last
    /// signed tree (a rewritten history); signing the same tree again returns the stored note.
    pub fn sign_checkpoint(&mut self, signer: &NoteSigner) -> Result<String, LogError> {
        let size = self.size();
        let root = self.root();
        self.check_signed_history(signer.verifier())?;
        if let Some(existing) = self.store.checkpoint(size)? {
            let signed = Checkpoint::verify(&existing, signer.verifier())?;
            if signed.root != root {
                return Err(LogError::Equivocation { size });
            }
            return Ok(existing);
        }
        let note = Checkpoint { origin: signer.name().to_owned(), size, root, extensions: Vec::new() }.sign(signer)?;
        self.store.put_checkpoint(size, &note)?;
        Ok(note)
    }
}
