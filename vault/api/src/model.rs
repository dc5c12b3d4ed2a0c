//! Base models: the digest a job manifest pins a model by, and the form a model travels in to
//! and from the vault's model store.
//!
//! A model is one file (GGUF) or a flat directory of regular files (`config.json`,
//! `*.safetensors`, `tokenizer.json`, …). Its digest, `sha256:` and 64 hex digits:
//!
//! - a file: SHA-256 of the file;
//! - a directory: SHA-256 of `"coffre-model-digest/v1\n"` followed by one line
//!   `NAME SHA256HEX\n` per regular file directly in the directory, sorted by name. A directory
//!   holding links, special files or names that are not UTF-8 has no digest (an error):
//!   such an entry could feed the loader something the digest did not cover.
//!
//! A directory travels as a tar stream of its files ([`crate::artifact`]'s rules: regular
//! files, plain names, here without `/`), a file as itself. The vault recomputes the digest of
//! what it receives and the worker of what it downloads, so neither trusts the other's word.
//!
//! This is the one module of the crate that touches the file system (models are files).

use std::fs;
use std::io::{Read, Write};
use std::path::Path;

use aws_lc_rs::digest::{Context, SHA256};

/// How a model is stored: one file, or a directory of files.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ModelKind {
    /// One file (e.g. GGUF), sent as itself.
    File,
    /// A flat directory of regular files, sent as a tar stream.
    Dir,
}

impl ModelKind {
    /// `file` or `dir`, as in the model store's URLs and listings.
    pub fn as_str(self) -> &'static str {
        match self {
            ModelKind::File => "file",
            ModelKind::Dir => "dir",
        }
    }

    /// Parses [`ModelKind::as_str`]'s text.
    pub fn parse(text: &str) -> Option<Self> {
        match text {
            "file" => Some(ModelKind::File),
            "dir" => Some(ModelKind::Dir),
            _ => None,
        }
    }
}

/// A model directory's digest, from its files' names and SHA-256 digests in any order.
pub fn dir_digest(files: &mut [(String, [u8; 32])]) -> String {
    files.sort_by(|a, b| a.0.cmp(&b.0));
    let mut h = Context::new(&SHA256);
    h.update(b"coffre-model-digest/v1\n");
    for (name, d) in files.iter() {
        h.update(format!("{name} {}\n", hex::encode(d)).as_bytes());
    }
    format!("sha256:{}", hex::encode(h.finish()))
}

/// SHA-256 of everything `r` yields, copying it into `out` on the way.
pub fn copy_hashed(r: &mut dyn Read, out: &mut dyn Write) -> std::io::Result<[u8; 32]> {
    let mut h = Context::new(&SHA256);
    let mut buf = vec![0u8; 1 << 20];
    loop {
        let n = match r.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        h.update(&buf[..n]);
        out.write_all(&buf[..n])?;
    }
    let mut d = [0u8; 32];
    d.copy_from_slice(h.finish().as_ref());
    Ok(d)
}

fn io_err(path: &Path, e: impl std::fmt::Display) -> std::io::Error {
    std::io::Error::other(format!("{}: {e}", path.display()))
}

/// The regular files directly in a model directory, sorted, refusing links, special files and
/// names that are not UTF-8 (subdirectories are not part of a model and are skipped).
fn dir_files(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut names = Vec::new();
    for e in fs::read_dir(dir).map_err(|e| io_err(dir, e))? {
        let e = e.map_err(|e| io_err(dir, e))?;
        let kind = e.file_type().map_err(|err| io_err(&e.path(), err))?;
        let name = e
            .file_name()
            .into_string()
            .map_err(|n| io_err(dir, format!("{n:?} is not a UTF-8 name; a measured model has none")))?;
        if kind.is_file() {
            names.push(name);
        } else if !kind.is_dir() {
            return Err(io_err(
                dir,
                format!("{name} is a link or a special file; a measured model holds regular files only"),
            ));
        }
    }
    if names.is_empty() {
        return Err(io_err(dir, "holds no model files"));
    }
    names.sort();
    Ok(names)
}

/// The kind and digest of the model at `path` (see the module documentation).
pub fn digest_path(path: &Path) -> std::io::Result<(ModelKind, String)> {
    let meta = fs::metadata(path).map_err(|e| io_err(path, e))?;
    if meta.is_dir() {
        let mut files = Vec::new();
        for name in dir_files(path)? {
            let p = path.join(&name);
            let mut f = fs::File::open(&p).map_err(|e| io_err(&p, e))?;
            files.push((name, copy_hashed(&mut f, &mut std::io::sink()).map_err(|e| io_err(&p, e))?));
        }
        Ok((ModelKind::Dir, dir_digest(&mut files)))
    } else {
        let mut f = fs::File::open(path).map_err(|e| io_err(path, e))?;
        let d = copy_hashed(&mut f, &mut std::io::sink()).map_err(|e| io_err(path, e))?;
        Ok((ModelKind::File, format!("sha256:{}", hex::encode(d))))
    }
}

/// Writes the model directory `dir` as a tar stream into `out`; returns its digest (of the bytes
/// actually sent, so a file changed while packing shows up as a digest mismatch, not silently).
pub fn pack_dir(dir: &Path, out: impl Write) -> std::io::Result<String> {
    let mut tar = tar::Builder::new(out);
    tar.mode(tar::HeaderMode::Deterministic);
    let mut files = Vec::new();
    for name in dir_files(dir)? {
        let p = dir.join(&name);
        let mut f = fs::File::open(&p).map_err(|e| io_err(&p, e))?;
        let len = f.metadata().map_err(|e| io_err(&p, e))?.len();
        let mut header = tar::Header::new_gnu();
        header.set_size(len);
        header.set_mode(0o600);
        header.set_entry_type(tar::EntryType::Regular);
        header.set_mtime(0);
        // Hash what tar reads, and refuse a file that changed length under us.
        let mut hashed = HashingReader { inner: (&mut f).take(len), ctx: Context::new(&SHA256), n: 0 };
        tar.append_data(&mut header, &name, &mut hashed)?;
        if hashed.n != len {
            return Err(io_err(&p, "changed while it was being packed"));
        }
        let mut d = [0u8; 32];
        d.copy_from_slice(hashed.ctx.finish().as_ref());
        files.push((name, d));
    }
    tar.into_inner()?.flush()?;
    Ok(dir_digest(&mut files))
}

struct HashingReader<R> {
    inner: R,
    ctx: Context,
    n: u64,
}

impl<R: Read> Read for HashingReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.ctx.update(&buf[..n]);
        self.n += n as u64;
        Ok(n)
    }
}

/// Reads a model directory's tar stream, calling `file` for each file with its name and a
/// writer to copy it into (or `None` to only hash it), and returns the directory's digest.
/// Refuses what [`crate::artifact::read_artifact`] refuses, and names with `/`.
pub fn read_dir_tar(
    input: impl Read,
    mut file: impl FnMut(&str) -> std::io::Result<Option<Box<dyn Write>>>,
) -> std::io::Result<String> {
    let mut files = Vec::new();
    crate::artifact::read_artifact(input, |name, _len, r| {
        if name.contains('/') {
            return Err(std::io::Error::other(format!("{name:?}: a model directory is flat; refused")));
        }
        let d = match file(name)? {
            Some(mut w) => {
                let d = copy_hashed(r, &mut w)?;
                w.flush()?;
                d
            }
            None => copy_hashed(r, &mut std::io::sink())?,
        };
        files.push((name.to_owned(), d));
        Ok(())
    })?;
    if files.is_empty() {
        return Err(std::io::Error::other("the model holds no files"));
    }
    Ok(dir_digest(&mut files))
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn tempdir(tag: &str) -> std::path::PathBuf {
        let d = std::env::temp_dir().join(format!("coffre-model-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        fs::create_dir_all(&d).unwrap();
        d
    }

    #[test]
    fn a_packed_directory_has_the_digest_of_the_directory() {
        let d = tempdir("pack");
        fs::write(d.join("config.json"), b"{}").unwrap();
        fs::write(d.join("model.safetensors"), vec![7u8; 3000]).unwrap();
        fs::create_dir(d.join("ignored-subdir")).unwrap();
        let (kind, digest) = digest_path(&d).unwrap();
        assert_eq!(kind, ModelKind::Dir);
        let mut tar = Vec::new();
        assert_eq!(pack_dir(&d, &mut tar).unwrap(), digest);
        assert_eq!(read_dir_tar(tar.as_slice(), |_| Ok(None)).unwrap(), digest);
        // One byte changed anywhere: another digest.
        let mut other = tar.clone();
        let at = other.windows(3).position(|w| w == [7, 7, 7]).unwrap();
        other[at] = 8;
        assert_ne!(read_dir_tar(other.as_slice(), |_| Ok(None)).unwrap(), digest);
        // The formula, spelled out.
        let mut files = vec![
            (
                "model.safetensors".to_owned(),
                <[u8; 32]>::try_from(aws_lc_rs::digest::digest(&SHA256, &[7u8; 3000]).as_ref()).unwrap(),
            ),
            (
                "config.json".to_owned(),
                <[u8; 32]>::try_from(aws_lc_rs::digest::digest(&SHA256, b"{}").as_ref()).unwrap(),
            ),
        ];
        assert_eq!(dir_digest(&mut files), digest);
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn attack_model_directory_with_a_link_has_no_digest() {
        let d = tempdir("link");
        fs::write(d.join("config.json"), b"{}").unwrap();
        std::os::unix::fs::symlink("/etc/hostname", d.join("model.safetensors")).unwrap();
        assert!(digest_path(&d).unwrap_err().to_string().contains("link"));
        assert!(pack_dir(&d, Vec::new()).is_err());
        fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn attack_model_tar_with_a_nested_name_is_refused() {
        let mut w = crate::artifact::ArtifactWriter::new(Vec::new());
        w.add("sub/config.json", b"{}").unwrap();
        let tar = w.finish().unwrap();
        assert!(read_dir_tar(tar.as_slice(), |_| Ok(None)).unwrap_err().to_string().contains("flat"));
    }

    #[test]
    fn a_file_model_digest_is_the_files_sha256() {
        let d = tempdir("file");
        fs::write(d.join("m.gguf"), b"GGUF....").unwrap();
        let (kind, digest) = digest_path(&d.join("m.gguf")).unwrap();
        assert_eq!(kind, ModelKind::File);
        assert_eq!(digest, format!("sha256:{}", hex::encode(aws_lc_rs::digest::digest(&SHA256, b"GGUF...."))));
        fs::remove_dir_all(&d).unwrap();
    }
}
