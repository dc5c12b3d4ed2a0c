//! Append-only storage for the log: entries with their leaf hashes, signed checkpoints, and
//! content-addressed blobs (evidence bundles, their items, policy documents, approvals).
//!
//! The vault implements [`EntryStore`] over SQLite or PostgreSQL and [`BlobStore`] over its object
//! store; here are an in-memory store (tests, benchmarks) and a directory store, whose layout is
//! also the export format `coffre audit verify --dir` reads:
//!
//! ```text
//! DIR/entries.jsonl        one canonical entry per line, in log order
//! DIR/leaves               the 32-byte leaf hash of each entry, in order (locates edited entries)
//! DIR/checkpoint           the latest signed checkpoint (C2SP tlog-checkpoint)
//! DIR/checkpoints/<size>   every checkpoint the log signed
//! DIR/blobs/sha256/<hex>   blobs, named by the SHA-256 of their content
//! ```

use std::collections::{BTreeMap, HashMap};
use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use crate::digest::Digest;
use crate::merkle::{Hash, leaf_hash};

/// A storage failure.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The file system failed.
    #[error("{action} {}: {source}", path.display())]
    Io { action: &'static str, path: PathBuf, source: std::io::Error },
    /// Stored data is not what the log wrote.
    #[error("{0}")]
    Corrupt(String),
    /// The request is outside what is stored.
    #[error("{0}")]
    NotFound(String),
}

fn io(action: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> StoreError + use<> {
    let path = path.to_path_buf();
    move |source| StoreError::Io { action, path, source }
}

/// What [`EntryStore::scan`] calls with each entry (index, canonical bytes).
pub type Visit<'a> = dyn FnMut(u64, &[u8]) -> Result<(), StoreError> + 'a;

/// Entries, leaf hashes and checkpoints, append-only.
pub trait EntryStore {
    /// Number of entries.
    fn len(&self) -> u64;
    /// Whether no entry is stored.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// Appends an entry and its leaf hash; durable when it returns, or — for a store that groups
    /// commits — when the next [`EntryStore::sync`] returns.
    fn append(&mut self, entry: &[u8], leaf: &Hash) -> Result<(), StoreError>;
    /// Makes every append and blob so far durable (group commit). Stores that write through need
    /// not do anything.
    fn sync(&mut self) -> Result<(), StoreError> {
        Ok(())
    }
    /// Entry `index`.
    fn entry(&self, index: u64) -> Result<Vec<u8>, StoreError>;
    /// Calls `f` with every entry in order (a store may stream them rather than read each alone).
    fn scan(&self, f: &mut Visit<'_>) -> Result<(), StoreError> {
        for i in 0..self.len() {
            f(i, &self.entry(i)?)?;
        }
        Ok(())
    }
    /// Every stored leaf hash, in order.
    fn leaves(&self) -> Result<Vec<Hash>, StoreError>;
    /// Records a signed checkpoint of tree size `size` (and makes it the latest).
    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), StoreError>;
    /// True when [`EntryStore::put_checkpoint`] makes every pending append and blob durable in
    /// the same atomic write as the checkpoint (a database transaction), so a checkpoint can be
    /// signed over appends not yet synced: both survive a crash, or neither does. Stores that
    /// cannot promise this leave it `false`, and writers sync before they sign.
    const CHECKPOINT_COMMITS_APPENDS: bool = false;
    /// The checkpoint signed for `size`, if any.
    fn checkpoint(&self, size: u64) -> Result<Option<String>, StoreError>;
    /// The latest checkpoint, if any.
    fn latest_checkpoint(&self) -> Result<Option<String>, StoreError>;
    /// The sizes of every signed checkpoint, ascending.
    fn checkpoint_sizes(&self) -> Result<Vec<u64>, StoreError>;
    /// For a store that other writers share (replicas on one database): the entries they
    /// appended since this store last looked, in order, each with its stored leaf hash; they
    /// count in [`EntryStore::len`] from then on. Called only with nothing pending. A store with
    /// one writer has nothing to report.
    fn refresh(&mut self) -> Result<Vec<(Vec<u8>, Hash)>, StoreError> {
        Ok(Vec::new())
    }
}

/// Content-addressed blobs.
pub trait BlobStore {
    /// Stores `bytes` (idempotent) and returns their digest.
    fn put_blob(&mut self, bytes: &[u8]) -> Result<Digest, StoreError>;
    /// The blob with `digest`, if stored. Callers that must trust it check the digest.
    fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError>;
}

/// Everything in memory.
#[derive(Debug, Default, Clone)]
pub struct MemoryStore {
    entries: Vec<Vec<u8>>,
    leaves: Vec<Hash>,
    checkpoints: BTreeMap<u64, String>,
    latest: Option<String>,
    blobs: HashMap<Digest, Vec<u8>>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Replaces entry `index` without updating anything else (tests of tamper detection).
    pub fn tamper_entry(&mut self, index: usize, bytes: Vec<u8>) {
        if let Some(e) = self.entries.get_mut(index) {
            *e = bytes;
        }
    }

    /// Replaces entry `index` and its leaf hash consistently, as someone with write access to the
    /// store could (tests of history rewriting).
    pub fn rewrite_entry(&mut self, index: usize, bytes: Vec<u8>) {
        if let (Some(e), Some(l)) = (self.entries.get_mut(index), self.leaves.get_mut(index)) {
            *l = crate::merkle::leaf_hash(&bytes);
            *e = bytes;
        }
    }

    /// Replaces a blob's content under its old digest (tests of tamper detection).
    pub fn tamper_blob(&mut self, digest: &Digest, bytes: Vec<u8>) {
        self.blobs.insert(*digest, bytes);
    }
}

impl EntryStore for MemoryStore {
    fn len(&self) -> u64 {
        self.entries.len() as u64
    }

    fn append(&mut self, entry: &[u8], leaf: &Hash) -> Result<(), StoreError> {
        self.entries.push(entry.to_vec());
        self.leaves.push(*leaf);
        Ok(())
    }

    fn entry(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        usize::try_from(index)
            .ok()
            .and_then(|i| self.entries.get(i))
            .cloned()
            .ok_or_else(|| StoreError::NotFound(format!("no entry {index}")))
    }

    fn leaves(&self) -> Result<Vec<Hash>, StoreError> {
        Ok(self.leaves.clone())
    }

    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), StoreError> {
        self.checkpoints.insert(size, note.to_owned());
        self.latest = Some(note.to_owned());
        Ok(())
    }

    fn checkpoint(&self, size: u64) -> Result<Option<String>, StoreError> {
        Ok(self.checkpoints.get(&size).cloned())
    }

    fn latest_checkpoint(&self) -> Result<Option<String>, StoreError> {
        Ok(self.latest.clone())
    }

    fn checkpoint_sizes(&self) -> Result<Vec<u64>, StoreError> {
        Ok(self.checkpoints.keys().copied().collect())
    }
}

impl BlobStore for MemoryStore {
    fn put_blob(&mut self, bytes: &[u8]) -> Result<Digest, StoreError> {
        let d = Digest::of(bytes);
        self.blobs.entry(d).or_insert_with(|| bytes.to_vec());
        Ok(d)
    }

    fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.blobs.get(digest).cloned())
    }
}

/// A directory (see the module documentation for the layout).
#[derive(Debug)]
pub struct DirStore {
    dir: PathBuf,
    entries: File,
    /// Absent when an export opened read-only has no leaf hashes.
    leaves_file: Option<File>,
    /// Byte offset of each entry's line, plus the end of the last line.
    offsets: Vec<u64>,
    leaves: Vec<Hash>,
    writable: bool,
}

const ENTRIES: &str = "entries.jsonl";
const LEAVES: &str = "leaves";

impl DirStore {
    /// Opens (creating when absent) a store for appending. An entry line cut short by a crash
    /// was never acknowledged: it is removed, and missing leaf hashes are recomputed.
    pub fn open(dir: &Path) -> Result<Self, StoreError> {
        for sub in [dir.to_path_buf(), dir.join("checkpoints"), dir.join("blobs").join("sha256")] {
            fs::create_dir_all(&sub).map_err(io("create", &sub))?;
        }
        let mut store = Self::load(dir, true)?;
        store.repair()?;
        Ok(store)
    }

    /// Opens an existing store (an export) without changing anything in it.
    pub fn open_read_only(dir: &Path) -> Result<Self, StoreError> {
        if !dir.join(ENTRIES).is_file() {
            return Err(StoreError::NotFound(format!(
                "{} has no {ENTRIES}: not a Coffre log directory or export",
                dir.display()
            )));
        }
        Self::load(dir, false)
    }

    fn load(dir: &Path, writable: bool) -> Result<Self, StoreError> {
        let open = |name: &str| {
            let path = dir.join(name);
            let mut o = OpenOptions::new();
            o.read(true);
            if writable {
                o.append(true).create(true);
            }
            o.open(&path).map_err(io("open", &dir.join(name)))
        };
        let entries = open(ENTRIES)?;
        let leaves_file = match open(LEAVES) {
            Ok(f) => Some(f),
            Err(_) if !writable => None,
            Err(e) => return Err(e),
        };
        let mut offsets = vec![0u64];
        let mut reader = BufReader::with_capacity(1 << 20, &entries);
        let mut line = Vec::new();
        let mut pos = 0u64;
        loop {
            line.clear();
            let n = reader.read_until(b'\n', &mut line).map_err(io("read", &dir.join(ENTRIES)))?;
            if n == 0 || line.last() != Some(&b'\n') {
                break;
            }
            pos += n as u64;
            offsets.push(pos);
        }
        let mut leaves = Vec::new();
        if let Some(f) = &leaves_file {
            let mut bytes = Vec::new();
            (&*f).read_to_end(&mut bytes).map_err(io("read", &dir.join(LEAVES)))?;
            leaves = bytes.chunks_exact(32).filter_map(|c| <Hash>::try_from(c).ok()).collect();
        }
        Ok(Self { dir: dir.to_path_buf(), entries, leaves_file, offsets, leaves, writable })
    }

    fn repair(&mut self) -> Result<(), StoreError> {
        let end = *self.offsets.last().unwrap_or(&0);
        let path = self.dir.join(ENTRIES);
        let actual = self.entries.metadata().map_err(io("stat", &path))?.len();
        if actual > end {
            self.entries.set_len(end).map_err(io("truncate", &path))?;
            self.entries.sync_all().map_err(io("sync", &path))?;
        }
        let n = self.offsets.len() - 1;
        let leaves_path = self.dir.join(LEAVES);
        let missing: Vec<Hash> = (self.leaves.len().min(n)..n)
            .map(|i| self.entry(i as u64).map(|e| leaf_hash(&e)))
            .collect::<Result<_, _>>()?;
        let keep = self.leaves.len().min(n);
        let file = self.leaves_file.as_mut().ok_or_else(|| StoreError::Corrupt("no leaf hash file".into()))?;
        if self.leaves.len() > n || file.metadata().map_err(io("stat", &leaves_path))?.len() % 32 != 0 {
            self.leaves.truncate(keep);
            file.set_len(keep as u64 * 32).map_err(io("truncate", &leaves_path))?;
        }
        for h in missing {
            file.write_all(&h).map_err(io("write", &leaves_path))?;
            self.leaves.push(h);
        }
        file.sync_all().map_err(io("sync", &leaves_path))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The stored leaf hashes as read at open (read-only exports may hold fewer than entries).
    pub fn stored_leaves(&self) -> &[Hash] {
        &self.leaves
    }

    fn blob_path(&self, digest: &Digest) -> PathBuf {
        self.dir.join("blobs").join("sha256").join(digest.hex())
    }

    fn read_only(&self) -> StoreError {
        StoreError::Corrupt(format!("{} was opened read-only", self.dir.display()))
    }
}

/// Writes `bytes` to `path` atomically: a temporary file beside it, synced, then renamed.
fn write_atomic(path: &Path, bytes: &[u8]) -> Result<(), StoreError> {
    let tmp = path.with_extension("tmp");
    let mut f = File::create(&tmp).map_err(io("create", &tmp))?;
    f.write_all(bytes).map_err(io("write", &tmp))?;
    f.sync_all().map_err(io("sync", &tmp))?;
    fs::rename(&tmp, path).map_err(io("rename", path))
}

impl EntryStore for DirStore {
    fn len(&self) -> u64 {
        self.offsets.len() as u64 - 1
    }

    fn append(&mut self, entry: &[u8], leaf: &Hash) -> Result<(), StoreError> {
        if !self.writable {
            return Err(self.read_only());
        }
        if entry.contains(&b'\n') {
            return Err(StoreError::Corrupt("an entry may not contain a newline".into()));
        }
        let path = self.dir.join(ENTRIES);
        let mut line = Vec::with_capacity(entry.len() + 1);
        line.extend_from_slice(entry);
        line.push(b'\n');
        self.entries.write_all(&line).map_err(io("write", &path))?;
        self.entries.sync_data().map_err(io("sync", &path))?;
        let leaves_path = self.dir.join(LEAVES);
        let file = self.leaves_file.as_mut().ok_or_else(|| StoreError::Corrupt("no leaf hash file".into()))?;
        file.write_all(leaf).map_err(io("write", &leaves_path))?;
        file.sync_data().map_err(io("sync", &leaves_path))?;
        let end = *self.offsets.last().unwrap_or(&0) + line.len() as u64;
        self.offsets.push(end);
        self.leaves.push(*leaf);
        Ok(())
    }

    fn entry(&self, index: u64) -> Result<Vec<u8>, StoreError> {
        let i = usize::try_from(index).map_err(|_| StoreError::NotFound(format!("no entry {index}")))?;
        let (Some(start), Some(end)) = (self.offsets.get(i), self.offsets.get(i + 1)) else {
            return Err(StoreError::NotFound(format!("no entry {index}")));
        };
        let mut buf = vec![0u8; (end - start - 1) as usize];
        self.entries.read_exact_at(&mut buf, *start).map_err(io("read", &self.dir.join(ENTRIES)))?;
        Ok(buf)
    }

    fn leaves(&self) -> Result<Vec<Hash>, StoreError> {
        Ok(self.leaves.clone())
    }

    fn put_checkpoint(&mut self, size: u64, note: &str) -> Result<(), StoreError> {
        if !self.writable {
            return Err(self.read_only());
        }
        write_atomic(&self.dir.join("checkpoints").join(size.to_string()), note.as_bytes())?;
        write_atomic(&self.dir.join("checkpoint"), note.as_bytes())
    }

    fn checkpoint(&self, size: u64) -> Result<Option<String>, StoreError> {
        read_optional(&self.dir.join("checkpoints").join(size.to_string()))
    }

    fn latest_checkpoint(&self) -> Result<Option<String>, StoreError> {
        read_optional(&self.dir.join("checkpoint"))
    }

    fn checkpoint_sizes(&self) -> Result<Vec<u64>, StoreError> {
        let dir = self.dir.join("checkpoints");
        let mut sizes = Vec::new();
        let list = match fs::read_dir(&dir) {
            Ok(l) => l,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(sizes),
            Err(e) => return Err(StoreError::Io { action: "list", path: dir, source: e }),
        };
        for item in list {
            let item = item.map_err(io("list", &dir))?;
            let name = item.file_name();
            let name = name.to_string_lossy();
            if name.ends_with(".tmp") {
                continue;
            }
            let size = name
                .parse::<u64>()
                .ok()
                .filter(|s| s.to_string() == name)
                .ok_or_else(|| StoreError::Corrupt(format!("{}: not a tree size", item.path().display())))?;
            sizes.push(size);
        }
        sizes.sort_unstable();
        Ok(sizes)
    }
}

fn read_optional(path: &Path) -> Result<Option<String>, StoreError> {
    match fs::read(path) {
        Ok(b) => {
            String::from_utf8(b).map(Some).map_err(|_| StoreError::Corrupt(format!("{} is not UTF-8", path.display())))
        }
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(StoreError::Io { action: "read", path: path.to_path_buf(), source: e }),
    }
}

impl BlobStore for DirStore {
    fn put_blob(&mut self, bytes: &[u8]) -> Result<Digest, StoreError> {
        if !self.writable {
            return Err(self.read_only());
        }
        let d = Digest::of(bytes);
        let path = self.blob_path(&d);
        if !path.exists() {
            write_atomic(&path, bytes)?;
        }
        Ok(d)
    }

    fn blob(&self, digest: &Digest) -> Result<Option<Vec<u8>>, StoreError> {
        let path = self.blob_path(digest);
        match fs::read(&path) {
            Ok(b) => Ok(Some(b)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(StoreError::Io { action: "read", path, source: e }),
        }
    }
}
