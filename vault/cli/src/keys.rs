//! `coffre keygen` and the loading of recipient and identity keys.

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

use clap::Args;
use coffre_seal::{RecipientPublicKey, RecipientSecretKey, SystemRandom};

use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
#[command(after_help = "\
Examples:
  coffre keygen -o alice.key            # writes alice.key (mode 0600), prints the public key
  coffre keygen -y alice.key            # prints the public key of an existing key file
  coffre seal -r \"$(coffre keygen -y alice.key)\" data.jsonl -o data.jsonl.coffre
  coffre keygen --approver -o alice.approver.key   # a key that signs policy approvals
  coffre keygen --signing -o bank.sign.key         # a key that signs sealed objects and jobs")]
pub struct KeygenArgs {
    /// Where to write the new secret key file (created with mode 0600; never overwritten)
    #[arg(short = 'o', long = "output", value_name = "KEY", required_unless_present = "show_public")]
    pub output: Option<PathBuf>,

    /// Instead of creating a key, print the public key of the secret key file KEY
    #[arg(short = 'y', long = "public", value_name = "KEY", conflicts_with = "output")]
    pub show_public: Option<PathBuf>,

    /// Make (or read, with -y) an approver key (ECDSA P-384) that signs policy approvals,
    /// instead of a recipient key. Keep the two apart: one key, one purpose
    #[arg(long, conflicts_with = "signing")]
    pub approver: bool,

    /// Make (or read, with -y) a signing key (ECDSA P-384) that signs sealed objects
    /// (`coffre seal --sign`) and job manifests, instead of a recipient key
    #[arg(long)]
    pub signing: bool,
}

pub fn run_keygen(args: &KeygenArgs) -> CliResult {
    if args.approver {
        return run_approver_keygen(args);
    }
    if args.signing {
        return run_signing_keygen(args);
    }
    if let Some(path) = &args.show_public {
        let key = load_identity(path)?;
        outln!("{}", key.public());
        eprintln!("key id {}", key.public().key_id().to_hex());
        return Ok(());
    }
    let Some(path) = &args.output else {
        return Err(CliError::usage("give -o KEY to say where the secret key goes"));
    };
    let key = RecipientSecretKey::generate(&mut SystemRandom).map_err(|e| CliError::seal("keygen", e))?;
    write_secret_file(path, key.to_key_file().as_bytes())?;
    outln!("{}", key.public());
    eprintln!(
        "wrote secret key {} (key id {}); keep it private. The line above is the public key to share.",
        path.display(),
        key.public().key_id()
    );
    Ok(())
}

fn run_approver_keygen(args: &KeygenArgs) -> CliResult {
    use coffre_policies::ApproverSecretKey;
    if let Some(path) = &args.show_public {
        let text =
            zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|e| CliError::io("read key file", path, &e))?);
        let key =
            ApproverSecretKey::from_key_file(&text).map_err(|e| CliError::usage(format!("{}: {e}", path.display())))?;
        outln!("{}", key.public());
        eprintln!("key id {}", key.public().key_id());
        return Ok(());
    }
    let Some(path) = &args.output else {
        return Err(CliError::usage("give -o KEY to say where the secret key goes"));
    };
    let key = ApproverSecretKey::generate().map_err(CliError::new)?;
    write_secret_file(path, key.to_key_file().as_bytes())?;
    outln!("{}", key.public());
    eprintln!(
        "wrote approver key {} (key id {}); keep it private. Add the line above to your tenant's approver set.",
        path.display(),
        key.public().key_id()
    );
    Ok(())
}

fn run_signing_keygen(args: &KeygenArgs) -> CliResult {
    if let Some(path) = &args.show_public {
        let key = load_signing_key(path)?;
        outln!("{}", key.verifying_key());
        eprintln!("key id {}", key.verifying_key().key_id());
        return Ok(());
    }
    let Some(path) = &args.output else {
        return Err(CliError::usage("give -o KEY to say where the secret key goes"));
    };
    let key = coffre_seal::SigningKey::generate().map_err(|e| CliError::seal("keygen", e))?;
    write_secret_file(path, key.to_key_file().as_bytes())?;
    outln!("{}", key.verifying_key());
    eprintln!(
        "wrote signing key {} (key id {}); keep it private. The line above is the public key others verify with.",
        path.display(),
        key.verifying_key().key_id()
    );
    Ok(())
}

/// Reads a signing key file written by `coffre keygen --signing`.
pub fn load_signing_key(path: &Path) -> CliResult<coffre_seal::SigningKey> {
    let text = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|e| CliError::io("read key file", path, &e))?);
    coffre_seal::SigningKey::from_key_file(&text).map_err(|e| {
        CliError::seal(&path.display().to_string(), e).hint("make a signing key with `coffre keygen --signing -o KEY`")
    })
}

/// Creates `path` with mode 0600 and writes `contents`; refuses to replace an existing file.
pub fn write_secret_file(path: &Path, contents: &[u8]) -> CliResult {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(|e| {
        CliError::io("create", path, &e).hint(if e.kind() == std::io::ErrorKind::AlreadyExists {
            "a key file is never overwritten: choose another name, or delete the old key if you are sure it is unused"
        } else {
            "check that the directory exists and is writable"
        })
    })?;
    file.write_all(contents).and_then(|()| file.sync_all()).map_err(|e| {
        let _ = fs::remove_file(path);
        CliError::io("write", path, &e)
    })
}

/// Reads a secret key file written by `coffre keygen`.
pub fn load_identity(path: &Path) -> CliResult<RecipientSecretKey> {
    let text = zeroize::Zeroizing::new(fs::read_to_string(path).map_err(|e| CliError::io("read key file", path, &e))?);
    #[cfg(unix)]
    if let Ok(meta) = fs::metadata(path) {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o077 != 0 {
            eprintln!(
                "warning: {} is readable by other users (mode {:o}); run `chmod 600 {}`",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            );
        }
    }
    RecipientSecretKey::from_key_file(&text).map_err(|e| CliError::seal(&path.display().to_string(), e))
}

/// Parses `-r` strings and reads `-R` files into recipient keys, rejecting duplicates.
pub fn load_recipients(strings: &[String], files: &[PathBuf]) -> CliResult<Vec<RecipientPublicKey>> {
    let mut keys = Vec::new();
    for s in strings {
        keys.push(parse_recipient(s, "-r")?);
    }
    for path in files {
        let text = fs::read_to_string(path).map_err(|e| CliError::io("read recipients file", path, &e))?;
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            keys.push(parse_recipient(line, &format!("{}:{}", path.display(), n + 1))?);
        }
    }
    if keys.is_empty() {
        return Err(CliError::usage("no recipients").hint(
            "give at least one public key with -r coffre-p384-pub-… or a file of them with -R FILE (`coffre keygen` makes keys)",
        ));
    }
    let mut seen = std::collections::HashSet::new();
    keys.retain(|k| seen.insert(k.key_id()));
    Ok(keys)
}

/// Whether `text` looks like any Coffre secret key text (recipient, approver or signing), however
/// it is padded or cased: such text is never echoed back.
pub fn looks_secret(text: &str) -> bool {
    let t = text.trim().to_ascii_uppercase();
    t.starts_with("COFFRE-") && t.contains("SECRET")
}

fn parse_recipient(text: &str, origin: &str) -> CliResult<RecipientPublicKey> {
    if looks_secret(text) {
        return Err(CliError::usage(format!("{origin}: that is a secret key, not a public key (not shown)"))
            .hint("never share a secret key; `coffre keygen -y KEY` prints the public key to use here"));
    }
    text.parse().map_err(|e| {
        // Echo only what is plainly a public key's text; anything else may be a secret pasted
        // in the wrong place.
        let shown = if text.trim().starts_with("coffre-p384-pub-") {
            format!("{:?}", text.trim().chars().take(40).collect::<String>())
        } else {
            "(value not shown)".to_owned()
        };
        let mut err = CliError::seal(&format!("{origin} {shown}"), e);
        if Path::new(text).exists() {
            err = err.hint(format!("{text} is a file: pass files of public keys with -R {text}"));
        }
        err
    })
}
