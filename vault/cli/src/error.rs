//! CLI errors: what happened, and what to do next.

use std::fmt;
use std::path::Path;

use coffre_seal::SealError;

/// An error as the user sees it.
#[derive(Debug)]
pub struct CliError {
    /// What happened.
    pub message: String,
    /// What to do next.
    pub hint: Option<String>,
    /// Process exit status: 1 for failures, 2 for usage errors.
    pub code: u8,
}

impl CliError {
    pub fn new(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None, code: 1 }
    }

    pub fn usage(message: impl Into<String>) -> Self {
        Self { message: message.into(), hint: None, code: 2 }
    }

    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// An I/O failure on `path` while doing `what`.
    pub fn io(what: &str, path: &Path, err: &std::io::Error) -> Self {
        let hint = match err.kind() {
            std::io::ErrorKind::NotFound => "check the path; `-` reads standard input".to_owned(),
            std::io::ErrorKind::PermissionDenied => "check the file's permissions and owner".to_owned(),
            std::io::ErrorKind::AlreadyExists => "choose another output path, or pass --force to replace it".to_owned(),
            _ if err.raw_os_error() == Some(28) => "the disk is full: free space and run the command again".to_owned(),
            _ => "check the path and the disk, then run the command again".to_owned(),
        };
        Self::new(format!("cannot {what} {}: {err}", path.display())).hint(hint)
    }

    /// A format or crypto error while working on `path`.
    pub fn seal(path: &str, err: SealError) -> Self {
        let damaged = "the sealed file is damaged or was modified after sealing; nothing was written. \
                       Fetch a fresh copy from the vault or ask the sender to seal it again";
        let hint = match &err {
            SealError::BadMagic => {
                "this is not a Coffre sealed file; check the path (to protect a plain file, use `coffre seal`)"
                    .to_owned()
            }
            SealError::UnsupportedVersion { found, .. } => {
                format!("upgrade coffre to a release that reads format version {found}")
            }
            SealError::NoMatchingRecipient { .. } => {
                "open it with the secret key of one of those recipients (`coffre keygen -y KEY` prints a key's id)"
                    .to_owned()
            }
            SealError::MalformedHeader(_)
            | SealError::HeaderTampered(_)
            | SealError::CommitmentMismatch
            | SealError::ChunkAuthentication { .. }
            | SealError::Truncated(_)
            | SealError::TrailingData => damaged.to_owned(),
            SealError::LengthMismatch { .. } => {
                "the input changed size while it was being read; seal it again once nothing is writing to it".to_owned()
            }
            SealError::InvalidKey(_) => {
                "public keys start with coffre-p384-pub-; secret key files come from `coffre keygen`".to_owned()
            }
            SealError::InvalidArgument(_) => "see `coffre <command> --help` for the accepted values".to_owned(),
            SealError::Io(io) if io.raw_os_error() == Some(28) => {
                "the disk is full: free space and run the command again".to_owned()
            }
            SealError::Io(_) => "check the input and output paths and the disk, then run the command again".to_owned(),
            _ => "run the command again; if it keeps failing, report it with the command you ran".to_owned(),
        };
        Self::new(format!("{path}: {err}")).hint(hint)
    }
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}", self.message)?;
        if let Some(hint) = &self.hint {
            write!(f, "\n  hint: {hint}")?;
        }
        Ok(())
    }
}

pub type CliResult<T = ()> = Result<T, CliError>;
