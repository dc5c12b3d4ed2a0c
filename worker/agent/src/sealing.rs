//! Sealing on the way out: the trained model's files go straight from the trainer into a tar
//! stream inside a sealing writer ([`ArtifactSink`]), and checkpoints are encrypted in memory
//! before they touch the disk ([`SealedCheckpoints`]). Nothing the trainer produces exists in
//! the clear outside this process's memory.

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use aws_lc_rs::hkdf;
use coffre_api::artifact::ArtifactWriter;
use coffre_seal::{DataKey, HeaderFields, RecipientPublicKey, Sealer, SystemRandom, Workers};
use coffre_trainer::{Checkpoint, CheckpointSink, Sink};
use zeroize::Zeroizing;

/// The media type of a sealed artifact's plaintext.
pub const ARTIFACT_CONTENT_TYPE: &str = "application/x-tar";

/// A [`Sink`] that seals every file into one artifact as it arrives. Dropped unfinished (training
/// or sealing failed), it removes the partial file.
pub struct ArtifactSink {
    writer: Option<ArtifactWriter<Sealer<BufWriter<fs::File>>>>,
    path: PathBuf,
}

impl Drop for ArtifactSink {
    fn drop(&mut self) {
        if self.writer.is_some() {
            fs::remove_file(&self.path).ok();
        }
    }
}

impl std::fmt::Debug for ArtifactSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ArtifactSink {{ path: {} }}", self.path.display())
    }
}

fn create_new(path: &Path) -> std::io::Result<fs::File> {
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(path)
}

impl ArtifactSink {
    /// A new sealed artifact at `path` (which must not exist), sealed to `recipients`.
    pub fn create(path: &Path, tenant: &str, recipients: &[RecipientPublicKey]) -> Result<Self, String> {
        let file = create_new(path).map_err(|e| format!("{}: {e}", path.display()))?;
        let fields = HeaderFields {
            tenant: tenant.into(),
            dataset: String::new(),
            content_type: ARTIFACT_CONTENT_TYPE.into(),
            plaintext_len: None,
        };
        let sealer =
            coffre_seal::seal(BufWriter::new(file), recipients, &fields, Workers::sequential(), &mut SystemRandom)
                .map_err(|e| format!("cannot seal the artifact: {e}"))?;
        Ok(Self { writer: Some(ArtifactWriter::new(sealer)), path: path.to_path_buf() })
    }

    /// Ends the tar stream and the sealed object, and makes it durable.
    pub fn finish(mut self) -> Result<Vec<String>, String> {
        let writer = self.writer.take().ok_or("the artifact is already finished")?;
        let names: Vec<String> = writer.names().map(str::to_owned).collect();
        let sealed = (|| {
            let sealer = writer.finish().map_err(|e| format!("cannot finish the artifact: {e}"))?;
            let (out, _) = sealer.finish().map_err(|e| format!("cannot finish the artifact: {e}"))?;
            let file = out.into_inner().map_err(|e| format!("{}: {}", self.path.display(), e.error()))?;
            file.sync_all().map_err(|e| format!("{}: {e}", self.path.display()))
        })();
        if let Err(e) = sealed {
            fs::remove_file(&self.path).ok();
            return Err(e);
        }
        Ok(names)
    }
}

impl Sink for ArtifactSink {
    fn put(&mut self, name: &str, bytes: &[u8]) -> coffre_trainer::Result<()> {
        let path = self.path.join(name);
        self.writer
            .as_mut()
            .ok_or_else(|| coffre_trainer::Error::Input("the artifact is already finished".into()))?
            .add(name, bytes)
            .map_err(|e| coffre_trainer::Error::Io { path, source: e })
    }
}

/// The key checkpoints are sealed with: HKDF-SHA256 over the job's released data keys (in the
/// manifest's dataset order), salted with the job manifest's digest. Only a worker the vault
/// released this job's keys to can derive it, and every such worker derives the same key, so a
/// worker restarted after a fresh attested release can open the checkpoint its predecessor left.
pub struct CheckpointKey(Zeroizing<[u8; 32]>);

impl std::fmt::Debug for CheckpointKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CheckpointKey(<redacted>)")
    }
}

const CHECKPOINT_INFO: &[u8] = b"coffre/job-checkpoint/v1";

impl CheckpointKey {
    /// Derives the key from `keys` (the job's data keys, manifest order) and the manifest digest.
    pub fn derive(keys: &[&DataKey], manifest_digest: &[u8; 32]) -> Result<Self, String> {
        let mut ikm = Zeroizing::new(Vec::with_capacity(keys.len() * 32));
        for k in keys {
            ikm.extend_from_slice(k.expose_secret());
        }
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, manifest_digest).extract(&ikm);
        let mut out = Zeroizing::new([0u8; 32]);
        prk.expand(&[CHECKPOINT_INFO], hkdf::HKDF_SHA256)
            .and_then(|okm| okm.fill(out.as_mut()))
            .map_err(|_| "checkpoint key derivation failed".to_owned())?;
        Ok(Self(out))
    }
}

/// Checkpoints encrypted with the [`CheckpointKey`] (coffre-seal's chunked AEAD, context
/// naming the job) into one file, replaced atomically.
pub struct SealedCheckpoints {
    path: PathBuf,
    key: CheckpointKey,
    context: Vec<u8>,
    /// The step of the last checkpoint written.
    pub last_step: Option<usize>,
}

impl std::fmt::Debug for SealedCheckpoints {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "SealedCheckpoints {{ path: {}, last_step: {:?} }}", self.path.display(), self.last_step)
    }
}

impl SealedCheckpoints {
    /// Checkpoints of `job` at `path`.
    pub fn new(path: &Path, key: CheckpointKey, job: &str) -> Self {
        let mut context = CHECKPOINT_INFO.to_vec();
        context.push(b'\n');
        context.extend_from_slice(job.as_bytes());
        Self { path: path.to_path_buf(), key, context, last_step: None }
    }

    /// The checkpoint there, if any, opened. A file that does not open under this job's key is an
    /// error (never silently restarted from scratch).
    pub fn load(&self) -> Result<Option<Checkpoint>, String> {
        let body = match fs::read(&self.path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(format!("{}: {e}", self.path.display())),
        };
        let plain = coffre_seal::chunked::decrypt(self.key.0.as_ref(), &self.context, &body, &Workers::sequential())
            .map_err(|e| {
                format!("the sealed checkpoint {} does not open with this job's keys: {e}", self.path.display())
            })?;
        Checkpoint::from_bytes(&plain).map(Some).map_err(|e| e.to_string())
    }
}

impl CheckpointSink for SealedCheckpoints {
    fn save(&mut self, checkpoint: Checkpoint) -> coffre_trainer::Result<()> {
        let io = |e: std::io::Error| coffre_trainer::Error::Io { path: self.path.clone(), source: e };
        let plain = Zeroizing::new(checkpoint.to_bytes());
        let body = coffre_seal::chunked::encrypt(
            self.key.0.as_ref(),
            &self.context,
            &plain,
            &Workers::sequential(),
            &mut SystemRandom,
        )
        .map_err(|e| coffre_trainer::Error::Format(format!("cannot seal the checkpoint: {e}")))?;
        let tmp = self.path.with_extension(format!("{:016x}.tmp", rand_u64()));
        let written = (|| {
            let mut f = create_new(&tmp)?;
            f.write_all(&body)?;
            f.sync_all()?;
            fs::rename(&tmp, &self.path)?;
            if let Some(dir) = self.path.parent()
                && let Ok(d) = fs::File::open(dir)
            {
                d.sync_all().ok();
            }
            Ok(())
        })();
        if let Err(e) = written {
            fs::remove_file(&tmp).ok();
            return Err(io(e));
        }
        self.last_step = Some(checkpoint.step);
        Ok(())
    }
}

fn rand_u64() -> u64 {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).ok();
    u64::from_le_bytes(b)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn an_unfinished_artifact_leaves_no_file_and_a_finished_one_opens() {
        let dir = tempfile::tempdir().unwrap();
        let owner = coffre_seal::RecipientSecretKey::generate(&mut SystemRandom).unwrap();
        let path = dir.path().join("model-v1.coffre");
        let mut sink = ArtifactSink::create(&path, "bank", &[owner.public().clone()]).unwrap();
        sink.put("adapter_model.safetensors", b"weights").unwrap();
        drop(sink);
        assert!(!path.exists(), "a partial artifact was left behind");

        let mut sink = ArtifactSink::create(&path, "bank", &[owner.public().clone()]).unwrap();
        sink.put("adapter_model.safetensors", b"weights").unwrap();
        assert_eq!(sink.finish().unwrap(), ["adapter_model.safetensors"]);
        let (_, reader) = coffre_seal::open(fs::File::open(&path).unwrap(), &owner, Workers::sequential()).unwrap();
        let mut got = Vec::new();
        coffre_api::artifact::read_artifact(reader, |name, _, r| {
            let mut b = Vec::new();
            r.read_to_end(&mut b)?;
            got.push((name.to_owned(), b));
            Ok(())
        })
        .unwrap();
        assert_eq!(got, [("adapter_model.safetensors".to_owned(), b"weights".to_vec())]);
    }
}
