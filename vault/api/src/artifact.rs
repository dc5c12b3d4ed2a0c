//! The plaintext inside a sealed model artifact: a POSIX tar stream of plain files (the PEFT
//! adapter or the merged model, its configs, `tokenizer.json` and `training.json`), sealed as a
//! `coffre-seal` object to the job's output recipients.
//!
//! Tar because the owner can also read it with standard tools (`coffre open … | tar x`). Only
//! regular files with plain relative names are written or accepted: no links, no devices, no
//! `..`, no absolute paths, no name twice, so unpacking cannot write outside its directory.

use std::collections::BTreeSet;
use std::io::{Read, Write};

/// The longest file accepted inside an artifact (a merged 8B model is ~32 GB in f32).
pub const MAX_FILE_LEN: u64 = 64 << 30;
/// The most files accepted.
pub const MAX_FILES: usize = 10_000;

/// Whether `name` is a plain relative file name (`/`-separated, no empty, `.` or `..` parts).
pub fn plain_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 255
        && !name.starts_with('/')
        && name.split('/').all(|c| !c.is_empty() && c != "." && c != ".." && !c.contains(['\0', '\\']))
}

/// Writes an artifact's files into `out` (normally a sealing writer).
pub struct ArtifactWriter<W: Write> {
    tar: tar::Builder<W>,
    names: BTreeSet<String>,
}

impl<W: Write> std::fmt::Debug for ArtifactWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArtifactWriter {{ files: {:?} }}", self.names)
    }
}

impl<W: Write> ArtifactWriter<W> {
    /// Starts an artifact.
    pub fn new(out: W) -> Self {
        let mut tar = tar::Builder::new(out);
        tar.mode(tar::HeaderMode::Deterministic);
        Self { tar, names: BTreeSet::new() }
    }

    /// Appends one file.
    pub fn add(&mut self, name: &str, bytes: &[u8]) -> std::io::Result<()> {
        if !plain_name(name) {
            return Err(std::io::Error::other(format!("{name:?} is not a plain relative file name")));
        }
        if !self.names.insert(name.to_owned()) {
            return Err(std::io::Error::other(format!("{name} is already in the artifact")));
        }
        let mut header = tar::Header::new_ustar();
        header.set_size(bytes.len() as u64);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(0);
        self.tar.append_data(&mut header, name, bytes)
    }

    /// The names written so far.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.names.iter().map(String::as_str)
    }

    /// Writes the end-of-archive marker and returns the output.
    pub fn finish(self) -> std::io::Result<W> {
        self.tar.into_inner()
    }
}

/// Reads an artifact, calling `file` with each file's name, length and contents (which it must
/// read to the end or drop). Refuses anything but regular files with plain names, names seen
/// twice, and more than [`MAX_FILES`] files or files over [`MAX_FILE_LEN`].
pub fn read_artifact<R: Read>(
    input: R,
    mut file: impl FnMut(&str, u64, &mut dyn Read) -> std::io::Result<()>,
) -> std::io::Result<Vec<String>> {
    let mut archive = tar::Archive::new(input);
    let mut names = BTreeSet::new();
    let mut order = Vec::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let kind = entry.header().entry_type();
        let path = entry.path()?.to_string_lossy().into_owned();
        if kind != tar::EntryType::Regular {
            return Err(std::io::Error::other(format!("{path:?} is not a regular file ({kind:?}); refused")));
        }
        if !plain_name(&path) {
            return Err(std::io::Error::other(format!("{path:?} is not a plain relative file name; refused")));
        }
        if !names.insert(path.clone()) {
            return Err(std::io::Error::other(format!("{path} appears twice; refused")));
        }
        if names.len() > MAX_FILES {
            return Err(std::io::Error::other(format!("more than {MAX_FILES} files; refused")));
        }
        let len = entry.size();
        if len > MAX_FILE_LEN {
            return Err(std::io::Error::other(format!("{path} is {len} bytes, over the {MAX_FILE_LEN} limit")));
        }
        file(&path, len, &mut entry)?;
        order.push(path);
    }
    Ok(order)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn files_round_trip_in_order() {
        let mut w = ArtifactWriter::new(Vec::new());
        w.add("adapter_model.safetensors", b"weights").unwrap();
        w.add("merged/config.json", b"{}").unwrap();
        assert!(w.add("merged/config.json", b"{}").is_err());
        assert!(w.add("../escape", b"x").is_err());
        let bytes = w.finish().unwrap();
        let mut seen = Vec::new();
        let names = read_artifact(bytes.as_slice(), |n, len, r| {
            let mut v = Vec::new();
            r.read_to_end(&mut v)?;
            assert_eq!(v.len() as u64, len);
            seen.push((n.to_owned(), v));
            Ok(())
        })
        .unwrap();
        assert_eq!(names, ["adapter_model.safetensors", "merged/config.json"]);
        assert_eq!(seen[0].1, b"weights");
    }

    #[test]
    fn attack_artifact_with_a_symlink_or_a_climbing_name_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Symlink);
        h.set_size(0);
        b.append_link(&mut h, "adapter_config.json", "/etc/passwd").unwrap();
        let bytes = b.into_inner().unwrap();
        assert!(read_artifact(bytes.as_slice(), |_, _, _| Ok(())).is_err());

        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(1);
        h.set_entry_type(tar::EntryType::Regular);
        // tar refuses to write `..` through set_path; write the raw name as an attacker would.
        h.as_gnu_mut().unwrap().name[..9].copy_from_slice(b"../x.json");
        h.set_cksum();
        b.append(&h, &b"x"[..]).unwrap();
        let bytes = b.into_inner().unwrap();
        let err = read_artifact(bytes.as_slice(), |_, _, _| Ok(())).unwrap_err();
        assert!(err.to_string().contains("refused"), "{err}");
    }
}
