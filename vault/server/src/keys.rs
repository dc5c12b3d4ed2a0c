//! The key hierarchy on the vault's side.
//!
//! ```text
//! root key (RootKey backend: a 0600 file here; a PKCS#11 HSM later)
//!   ├─ seals each tenant's KEK private half (HPKE P-384), per version
//!   │    └─ the KEK unwraps a dataset's DEK from the object's own header stanza, in memory,
//!   │       only to re-wrap it to an attested worker (then both are zeroized)
//!   └─ seals the log's signing key (Ed25519)
//! ```
//!
//! Sealing is AES-256-GCM with a random nonce and additional data naming what is sealed
//! (`coffre/kek/v1 <tenant> <version>`), so a sealed value cannot be moved to another slot.

use std::io::Write;
use std::path::Path;

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

/// Seals and opens the vault's secrets under the root key.
pub trait RootKey: Send + Sync {
    /// Seals `plaintext` bound to `aad`.
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String>;
    /// Opens what [`RootKey::seal`] sealed under the same `aad`.
    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String>;
    /// What backs it, for logs (never key material).
    fn describe(&self) -> String;
}

/// Creates `path` readable by its owner only, refusing to replace anything.
pub fn write_new_private(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", path.display()))?;
    f.write_all(bytes)?;
    f.sync_all()?;
    Ok(())
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct RootKeyFile {
    format: String,
    /// `random` (the key is in the file) or `argon2id` (derived from a passphrase).
    kind: String,
    /// `random`: the key, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    key: Option<String>,
    /// `argon2id`: salt, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    salt: Option<String>,
    /// `argon2id`: memory (KiB), iterations, lanes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    params: Option<(u32, u32, u32)>,
    /// `argon2id`: a known value sealed under the key, to tell a wrong passphrase at start.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    check: Option<String>,
}

const FORMAT: &str = "coffre-root-key/v1";
const CHECK_AAD: &[u8] = b"coffre/root-key-check/v1";

/// A root key held in a 0600 file: random, or derived from a passphrase with Argon2id.
pub struct FileRootKey {
    key: LessSafeKey,
    kind: String,
}

impl std::fmt::Debug for FileRootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "FileRootKey({}, <redacted>)", self.kind)
    }
}

fn aes(key: &[u8]) -> Result<LessSafeKey, String> {
    Ok(LessSafeKey::new(UnboundKey::new(&AES_256_GCM, key).map_err(|_| "bad root key length".to_owned())?))
}

fn derive(passphrase: &[u8], salt: &[u8], (m, t, p): (u32, u32, u32)) -> Result<Zeroizing<[u8; 32]>, String> {
    let params = argon2::Params::new(m, t, p, Some(32)).map_err(|e| e.to_string())?;
    let argon = argon2::Argon2::new(argon2::Algorithm::Argon2id, argon2::Version::V0x13, params);
    let mut out = Zeroizing::new([0u8; 32]);
    argon.hash_password_into(passphrase, salt, out.as_mut()).map_err(|e| e.to_string())?;
    Ok(out)
}

impl FileRootKey {
    /// Creates a new root key file: random, or derived from `passphrase` (Argon2id, 64 MiB, 3
    /// passes) when one is given.
    pub fn create(path: &Path, passphrase: Option<&[u8]>) -> anyhow::Result<Self> {
        let mut secret = Zeroizing::new([0u8; 32]);
        aws_lc_rs::rand::fill(secret.as_mut()).map_err(|_| anyhow::anyhow!("random number generator failed"))?;
        let (file, key) = match passphrase {
            None => (
                RootKeyFile {
                    format: FORMAT.into(),
                    kind: "random".into(),
                    key: Some(STANDARD.encode(secret.as_ref())),
                    salt: None,
                    params: None,
                    check: None,
                },
                Self { key: aes(secret.as_ref()).map_err(anyhow::Error::msg)?, kind: "random".into() },
            ),
            Some(p) => {
                let mut salt = [0u8; 16];
                aws_lc_rs::rand::fill(&mut salt).map_err(|_| anyhow::anyhow!("random number generator failed"))?;
                let params = (64 * 1024, 3, 1);
                let derived = derive(p, &salt, params).map_err(anyhow::Error::msg)?;
                let key = Self { key: aes(derived.as_ref()).map_err(anyhow::Error::msg)?, kind: "argon2id".into() };
                let check = key.seal(CHECK_AAD, b"ok").map_err(anyhow::Error::msg)?;
                (
                    RootKeyFile {
                        format: FORMAT.into(),
                        kind: "argon2id".into(),
                        key: None,
                        salt: Some(STANDARD.encode(salt)),
                        params: Some(params),
                        check: Some(STANDARD.encode(check)),
                    },
                    key,
                )
            }
        };
        let text = Zeroizing::new(serde_json::to_string_pretty(&file)? + "\n");
        write_new_private(path, text.as_bytes())?;
        Ok(key)
    }

    /// Loads a root key file (with the passphrase when it is passphrase-derived).
    pub fn load(path: &Path, passphrase: Option<&[u8]>) -> anyhow::Result<Self> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(path).map_err(|e| anyhow::anyhow!("root key {}: {e}", path.display()))?;
        if meta.permissions().mode() & 0o077 != 0 {
            anyhow::bail!(
                "root key {} is readable by others (mode {:o}); fix it with: chmod 600 {}",
                path.display(),
                meta.permissions().mode() & 0o777,
                path.display()
            );
        }
        let text = Zeroizing::new(std::fs::read_to_string(path)?);
        let file: RootKeyFile =
            serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("root key {}: {e}", path.display()))?;
        if file.format != FORMAT {
            anyhow::bail!("root key {}: unknown format {:?}", path.display(), file.format);
        }
        match file.kind.as_str() {
            "random" => {
                let key = Zeroizing::new(STANDARD.decode(file.key.unwrap_or_default())?);
                Ok(Self { key: aes(&key).map_err(anyhow::Error::msg)?, kind: "random".into() })
            }
            "argon2id" => {
                let Some(p) = passphrase else {
                    anyhow::bail!(
                        "root key {} is protected by a passphrase: give it with --passphrase-file FILE or COFFRED_PASSPHRASE_FILE",
                        path.display()
                    );
                };
                let salt = STANDARD.decode(file.salt.unwrap_or_default())?;
                let derived = derive(p, &salt, file.params.unwrap_or((64 * 1024, 3, 1))).map_err(anyhow::Error::msg)?;
                let key = Self { key: aes(derived.as_ref()).map_err(anyhow::Error::msg)?, kind: "argon2id".into() };
                let check = STANDARD.decode(file.check.unwrap_or_default())?;
                key.open(CHECK_AAD, &check).map_err(|_| anyhow::anyhow!("wrong passphrase for {}", path.display()))?;
                Ok(key)
            }
            other => anyhow::bail!("root key {}: unknown kind {other:?}", path.display()),
        }
    }
}

impl RootKey for FileRootKey {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "random number generator failed".to_owned())?;
        let mut buf = plaintext.to_vec();
        self.key
            .seal_in_place_append_tag(Nonce::assume_unique_for_key(nonce), Aad::from(aad), &mut buf)
            .map_err(|_| "sealing failed".to_owned())?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&buf);
        zeroize::Zeroize::zeroize(&mut buf);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err("sealed value too short".into());
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let nonce = Nonce::try_assume_unique_for_key(nonce).map_err(|_| "bad nonce".to_owned())?;
        let mut buf = Zeroizing::new(ct.to_vec());
        let n = self
            .key
            .open_in_place(nonce, Aad::from(aad), &mut buf)
            .map_err(|_| "a sealed secret does not open under the root key (wrong key, or moved/altered)".to_owned())?
            .len();
        buf.truncate(n);
        Ok(buf)
    }

    fn describe(&self) -> String {
        format!("root key file ({})", self.kind)
    }
}

/// The additional data of a tenant's sealed KEK.
pub fn kek_aad(tenant: &str, version: u64) -> Vec<u8> {
    format!("coffre/kek/v1\n{tenant}\n{version}\n").into_bytes()
}

/// The additional data of the sealed log signing key.
pub const LOG_SIGNER_AAD: &[u8] = b"coffre/log-signer/v1";
