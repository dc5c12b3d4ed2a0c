//! Where the trainer's files go. The trainer never opens an output path itself: it hands each file
//! whole to a [`Sink`] the caller gives it. `coffre train` passes a [`DirSink`] (owner-only files
//! written atomically); the worker passes a sink that seals each file as it arrives, so no
//! plaintext weight file ever exists inside the confidential VM.
//!
//! Checkpoints are a [`Checkpoint`]: three named files that [`crate::Trainer::checkpoint`] makes
//! and [`crate::Trainer::resume_from`] reads back, with [`CheckpointSink`] deciding where they
//! live ([`DirCheckpoints`] keeps `DIR/checkpoint`, replaced atomically).

use std::path::{Path, PathBuf};

use crate::{Error, Result};

/// Receives output files whole. `name` is a relative path with `/` separators
/// (`adapter_model.safetensors`, `merged/config.json`).
pub trait Sink {
    /// Stores one file.
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<()>;
}

/// Checks that `name` is a plain relative path: no `..`, no absolute path, no empty component.
pub fn check_name(name: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('/')
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains('\0'));
    if ok { Ok(()) } else { Err(Error::Input(format!("{name:?} is not a plain relative file name"))) }
}

/// Writes each file under a directory, owner-only, atomically (see [`crate::weights::write_atomic`]).
#[derive(Debug)]
pub struct DirSink {
    dir: PathBuf,
}

impl DirSink {
    /// Files go under `dir` (created owner-only when needed).
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }
}

impl Sink for DirSink {
    fn put(&mut self, name: &str, bytes: &[u8]) -> Result<()> {
        check_name(name)?;
        let path = self.dir.join(name);
        if let Some(parent) = path.parent() {
            crate::weights::create_private_dir(parent)?;
        }
        crate::weights::write_atomic(&path, bytes)
    }
}

/// The files of one checkpoint.
pub struct Checkpoint {
    /// `(name, bytes)`: `trainable.safetensors`, `optimizer.safetensors`, `state.json`.
    pub files: Vec<(String, Vec<u8>)>,
    /// The step it was taken after.
    pub step: usize,
}

impl std::fmt::Debug for Checkpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.files.iter().map(|(n, _)| n.as_str()).collect();
        write!(f, "Checkpoint {{ step: {}, files: {names:?} }}", self.step)
    }
}

impl Checkpoint {
    /// The file called `name`.
    pub fn file(&self, name: &str) -> Result<&[u8]> {
        self.files
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.as_slice())
            .ok_or_else(|| Error::Format(format!("the checkpoint lacks {name}")))
    }

    /// One byte string: for each file, name length (u16 BE), name, length (u64 BE), bytes. What the
    /// worker seals.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.files.iter().map(|(n, b)| n.len() + b.len() + 10).sum::<usize>() + 16);
        out.extend_from_slice(CHECKPOINT_MAGIC);
        out.extend_from_slice(&(self.step as u64).to_be_bytes());
        for (name, bytes) in &self.files {
            out.extend_from_slice(&(name.len() as u16).to_be_bytes());
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(&(bytes.len() as u64).to_be_bytes());
            out.extend_from_slice(bytes);
        }
        out
    }

    /// Reads [`Checkpoint::to_bytes`] exactly (nothing missing, nothing after the last file).
    pub fn from_bytes(b: &[u8]) -> Result<Self> {
        let bad = || Error::Format("not a coffre-trainer checkpoint (truncated or damaged)".into());
        let mut rest = b.strip_prefix(CHECKPOINT_MAGIC).ok_or_else(bad)?;
        fn take<'a>(rest: &mut &'a [u8], n: usize) -> Option<&'a [u8]> {
            if rest.len() < n {
                return None;
            }
            let (head, tail) = rest.split_at(n);
            *rest = tail;
            Some(head)
        }
        let step = u64::from_be_bytes(take(&mut rest, 8).and_then(|s| s.try_into().ok()).ok_or_else(bad)?) as usize;
        let mut files = Vec::new();
        while !rest.is_empty() {
            let len = take(&mut rest, 2).ok_or_else(bad)?;
            let len = usize::from(u16::from_be_bytes([len[0], len[1]]));
            let name = std::str::from_utf8(take(&mut rest, len).ok_or_else(bad)?).map_err(|_| bad())?.to_owned();
            check_name(&name)?;
            let n = u64::from_be_bytes(take(&mut rest, 8).and_then(|s| s.try_into().ok()).ok_or_else(bad)?);
            let bytes = take(&mut rest, usize::try_from(n).map_err(|_| bad())?).ok_or_else(bad)?.to_vec();
            files.push((name, bytes));
        }
        Ok(Self { files, step })
    }
}

const CHECKPOINT_MAGIC: &[u8] = b"coffre-trainer-checkpoint-bytes/v1\n";

/// Where a run's checkpoints go.
pub trait CheckpointSink {
    /// Stores `checkpoint`, replacing the previous one only once it is complete.
    fn save(&mut self, checkpoint: Checkpoint) -> Result<()>;
}

/// `DIR/checkpoint/{trainable,optimizer}.safetensors` and `state.json`: written to
/// `checkpoint.partial`, then swapped in, so a crash leaves the old checkpoint or the new one.
#[derive(Debug)]
pub struct DirCheckpoints {
    dir: PathBuf,
}

impl DirCheckpoints {
    /// Checkpoints under `dir`.
    pub fn new(dir: &Path) -> Self {
        Self { dir: dir.to_path_buf() }
    }

    /// The newest complete checkpoint (`checkpoint`, or `checkpoint.old` when a crash interrupted
    /// the swap), if any.
    pub fn load(&self) -> Result<Option<Checkpoint>> {
        let mut cp = self.dir.join("checkpoint");
        if !cp.join("state.json").exists() {
            cp = self.dir.join("checkpoint.old");
            if !cp.join("state.json").exists() {
                return Ok(None);
            }
        }
        let mut files = Vec::new();
        for name in CHECKPOINT_FILES {
            let path = cp.join(name);
            files.push((name.to_owned(), std::fs::read(&path).map_err(|e| Error::io(&path, e))?));
        }
        let step = crate::train::checkpoint_step(&files)?;
        Ok(Some(Checkpoint { files, step }))
    }
}

/// The files a checkpoint holds.
pub const CHECKPOINT_FILES: [&str; 3] = ["trainable.safetensors", "optimizer.safetensors", "state.json"];

impl CheckpointSink for DirCheckpoints {
    fn save(&mut self, checkpoint: Checkpoint) -> Result<()> {
        let final_dir = self.dir.join("checkpoint");
        let tmp = self.dir.join("checkpoint.partial");
        std::fs::remove_dir_all(&tmp).ok();
        crate::weights::create_private_dir(&tmp)?;
        let mut sink = DirSink::new(&tmp);
        for (name, bytes) in &checkpoint.files {
            sink.put(name, bytes)?;
        }
        let old = self.dir.join("checkpoint.old");
        std::fs::remove_dir_all(&old).ok();
        if final_dir.exists() {
            std::fs::rename(&final_dir, &old).map_err(|e| Error::io(&final_dir, e))?;
        }
        std::fs::rename(&tmp, &final_dir).map_err(|e| Error::io(&final_dir, e))?;
        std::fs::remove_dir_all(&old).ok();
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn checkpoint_bytes_round_trip_and_refuse_damage() {
        let cp =
            Checkpoint { files: vec![("a".into(), vec![1, 2, 3]), ("state.json".into(), b"{}".to_vec())], step: 7 };
        let bytes = cp.to_bytes();
        let back = Checkpoint::from_bytes(&bytes).unwrap();
        assert_eq!(back.step, 7);
        assert_eq!(back.files, cp.files);
        assert!(Checkpoint::from_bytes(&bytes[..bytes.len() - 1]).is_err());
        assert!(Checkpoint::from_bytes(&bytes[1..]).is_err());
        let mut trailing = bytes.clone();
        trailing.push(0);
        assert!(Checkpoint::from_bytes(&trailing).is_err());
    }

    #[test]
    fn names_that_climb_out_are_refused() {
        for bad in ["", "/etc/passwd", "../x", "a/../../x", "a//b", "./a"] {
            assert!(check_name(bad).is_err(), "{bad:?}");
        }
        check_name("merged/model.safetensors").unwrap();
    }
}
