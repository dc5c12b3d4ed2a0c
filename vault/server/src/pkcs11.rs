//! The root key in a PKCS#11 HSM (tested against SoftHSM2).
//!
//! The root key is an AES-256 secret key object on the token: generated there by
//! `coffred init`, `CKA_TOKEN`, `CKA_PRIVATE`, `CKA_SENSITIVE`, never `CKA_EXTRACTABLE`, so its
//! value never leaves the HSM. What it protects — each tenant's KEK private halves and the log's
//! signing key — is sealed **in the token** with `CKM_AES_GCM`: a fresh 96-bit nonce, a 128-bit
//! tag, and the same additional data as the file backend (`coffre/kek/v1 <tenant> <version>`), so a
//! sealed value cannot be moved to another slot. Unsealed values exist only in the broker's
//! memory (zeroized after use). AES-GCM rather than `CKM_AES_KEY_WRAP_PAD` because it binds that
//! additional data; both are in every HSM we target.
//!
//! Configured by module path, token label and key label; the PIN comes from a file
//! (`pin_file`, 0600) or the `COFFRED_PKCS11_PIN` environment variable, never the command line.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use cryptoki::context::{CInitializeArgs, CInitializeFlags, Pkcs11};
use cryptoki::error::{Error as P11Error, RvError};
use cryptoki::mechanism::Mechanism;
use cryptoki::mechanism::aead::GcmParams;
use cryptoki::object::{Attribute, AttributeType, ObjectClass, ObjectHandle};
use cryptoki::session::{Session, UserType};
use cryptoki::types::AuthPin;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::keys::RootKey;

/// `[pkcs11]` in `coffred.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Pkcs11Config {
    /// The PKCS#11 module (`/usr/lib/softhsm/libsofthsm2.so`, a vendor's library).
    pub module: PathBuf,
    /// The token's label.
    pub token: String,
    /// The root key object's label on the token.
    #[serde(default = "default_key_label")]
    pub key_label: String,
    /// A file holding the user PIN (0600); `COFFRED_PKCS11_PIN` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pin_file: Option<PathBuf>,
}

fn default_key_label() -> String {
    "coffre-root-key".into()
}

const NONCE_LEN: usize = 12;
const TAG_BITS: u64 = 128;

/// A root key held by a PKCS#11 token.
pub struct Pkcs11RootKey {
    /// `Session` is `Send` but not `Sync`: one operation at a time (the token serialises them too).
    session: parking_lot::Mutex<Session>,
    key: ObjectHandle,
    description: String,
}

impl std::fmt::Debug for Pkcs11RootKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Pkcs11RootKey({})", self.description)
    }
}

/// One initialised context per module in the process (`C_Initialize` runs once per library).
fn context(module: &Path) -> anyhow::Result<Pkcs11> {
    static CONTEXTS: OnceLock<parking_lot::Mutex<HashMap<PathBuf, Pkcs11>>> = OnceLock::new();
    let mut contexts = CONTEXTS.get_or_init(Default::default).lock();
    if let Some(c) = contexts.get(module) {
        return Ok(c.clone());
    }
    let ctx =
        Pkcs11::new(module).map_err(|e| anyhow::anyhow!("cannot load the PKCS#11 module {}: {e}", module.display()))?;
    match ctx.initialize(CInitializeArgs::new(CInitializeFlags::OS_LOCKING_OK)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::CryptokiAlreadyInitialized, _)) => {}
        Err(e) => anyhow::bail!("the PKCS#11 module {} does not initialise: {e}", module.display()),
    }
    contexts.insert(module.to_owned(), ctx.clone());
    Ok(ctx)
}

fn pin(config: &Pkcs11Config) -> anyhow::Result<AuthPin> {
    let text = match &config.pin_file {
        Some(path) => {
            use std::os::unix::fs::PermissionsExt;
            let meta =
                std::fs::metadata(path).map_err(|e| anyhow::anyhow!("PKCS#11 PIN file {}: {e}", path.display()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                anyhow::bail!(
                    "the PKCS#11 PIN file {} is readable by others; fix it with: chmod 600 {}",
                    path.display(),
                    path.display()
                );
            }
            Zeroizing::new(
                std::fs::read_to_string(path)
                    .map_err(|e| anyhow::anyhow!("PKCS#11 PIN file {}: {e}", path.display()))?,
            )
        }
        None => Zeroizing::new(std::env::var("COFFRED_PKCS11_PIN").map_err(|_| {
            anyhow::anyhow!("no PKCS#11 PIN: set pin_file in [pkcs11] or the COFFRED_PKCS11_PIN environment variable")
        })?),
    };
    let trimmed = text.trim_end_matches(['\n', '\r']);
    if trimmed.is_empty() {
        anyhow::bail!("the PKCS#11 PIN is empty");
    }
    Ok(AuthPin::new(trimmed.into()))
}

/// A logged-in read-write session on the token labelled `config.token`.
fn session(config: &Pkcs11Config) -> anyhow::Result<Session> {
    let ctx = context(&config.module)?;
    let mut labels = Vec::new();
    let mut found = None;
    for slot in ctx.get_slots_with_token().map_err(|e| anyhow::anyhow!("PKCS#11: cannot list slots: {e}"))? {
        let info = ctx.get_token_info(slot).map_err(|e| anyhow::anyhow!("PKCS#11: token info: {e}"))?;
        let label = info.label().trim_end().to_owned();
        if label == config.token {
            found = Some(slot);
            break;
        }
        labels.push(label);
    }
    let Some(slot) = found else {
        anyhow::bail!(
            "no PKCS#11 token labelled {:?} in {} (tokens there: {})",
            config.token,
            config.module.display(),
            if labels.is_empty() { "none".to_owned() } else { labels.join(", ") }
        );
    };
    let session = ctx.open_rw_session(slot).map_err(|e| anyhow::anyhow!("PKCS#11: cannot open a session: {e}"))?;
    match session.login(UserType::User, Some(&pin(config)?)) {
        Ok(()) | Err(P11Error::Pkcs11(RvError::UserAlreadyLoggedIn, _)) => Ok(session),
        Err(P11Error::Pkcs11(RvError::PinIncorrect, _)) => {
            anyhow::bail!("the PKCS#11 PIN for token {:?} is wrong", config.token)
        }
        Err(e) => anyhow::bail!("PKCS#11 login to token {:?} failed: {e}", config.token),
    }
}

fn find_key(session: &Session, label: &str) -> anyhow::Result<Option<ObjectHandle>> {
    let found = session
        .find_objects(&[Attribute::Class(ObjectClass::SECRET_KEY), Attribute::Label(label.as_bytes().to_vec())])
        .map_err(|e| anyhow::anyhow!("PKCS#11: cannot search the token: {e}"))?;
    match found.as_slice() {
        [] => Ok(None),
        [one] => Ok(Some(*one)),
        _ => anyhow::bail!("the token holds {} secret keys labelled {label:?}; exactly one is expected", found.len()),
    }
}

impl Pkcs11RootKey {
    /// Generates the root key on the token (`coffred init`); refuses when one with its label
    /// exists (a second vault must not share, or replace, the first one's key).
    pub fn create(config: &Pkcs11Config) -> anyhow::Result<Self> {
        let session = session(config)?;
        if find_key(&session, &config.key_label)?.is_some() {
            anyhow::bail!(
                "token {:?} already holds a key labelled {:?}; nothing was changed\n  hint: choose another --pkcs11-key-label, \
                 or serve the vault that created it",
                config.token,
                config.key_label
            );
        }
        let template = [
            Attribute::Token(true),
            Attribute::Private(true),
            Attribute::Sensitive(true),
            Attribute::Extractable(false),
            Attribute::Encrypt(true),
            Attribute::Decrypt(true),
            Attribute::Wrap(false),
            Attribute::Unwrap(false),
            Attribute::ValueLen(32.into()),
            Attribute::Label(config.key_label.as_bytes().to_vec()),
        ];
        let key = session
            .generate_key(&Mechanism::AesKeyGen, &template)
            .map_err(|e| anyhow::anyhow!("PKCS#11: cannot generate the root key: {e}"))?;
        Self::checked(session, key, config)
    }

    /// Opens the root key on the token (`coffred serve`).
    pub fn open(config: &Pkcs11Config) -> anyhow::Result<Self> {
        let session = session(config)?;
        let key = find_key(&session, &config.key_label)?
            .ok_or_else(|| anyhow::anyhow!("token {:?} holds no key labelled {:?}", config.token, config.key_label))?;
        Self::checked(session, key, config)
    }

    /// Refuses a key whose value could leave the token.
    fn checked(session: Session, key: ObjectHandle, config: &Pkcs11Config) -> anyhow::Result<Self> {
        let attrs = session
            .get_attributes(
                key,
                &[
                    AttributeType::Sensitive,
                    AttributeType::Extractable,
                    AttributeType::AlwaysSensitive,
                    AttributeType::NeverExtractable,
                    AttributeType::Local,
                    AttributeType::ValueLen,
                ],
            )
            .map_err(|e| anyhow::anyhow!("PKCS#11: cannot read the root key's attributes: {e}"))?;
        let (mut sensitive, mut extractable, mut always, mut never, mut local, mut len) =
            (false, true, false, false, false, 0u64);
        for a in attrs {
            match a {
                Attribute::Sensitive(v) => sensitive = v,
                Attribute::Extractable(v) => extractable = v,
                Attribute::AlwaysSensitive(v) => always = v,
                Attribute::NeverExtractable(v) => never = v,
                Attribute::Local(v) => local = v,
                Attribute::ValueLen(v) => len = v.into(),
                _ => {}
            }
        }
        // Generated on the token and never out of it: an imported key, or one that was ever
        // extractable, may have a copy elsewhere.
        if !(sensitive && always && !extractable && never && local && len == 32) {
            anyhow::bail!(
                "the key {:?} on token {:?} is not an AES-256 key generated on the token and never extractable \
                 (sensitive {sensitive}, always sensitive {always}, extractable {extractable}, never extractable \
                 {never}, generated on the token {local}, {len} bytes): refusing to use it as the root key",
                config.key_label,
                config.token
            );
        }
        Ok(Self {
            session: parking_lot::Mutex::new(session),
            key,
            description: format!("PKCS#11 token {:?}, key {:?}", config.token, config.key_label),
        })
    }

    /// The key's handle and a session, for tests that check what the token lets out.
    pub fn with_session<R>(&self, f: impl FnOnce(&Session, ObjectHandle) -> R) -> R {
        f(&self.session.lock(), self.key)
    }
}

impl RootKey for Pkcs11RootKey {
    fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, String> {
        let mut nonce = [0u8; NONCE_LEN];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| "random number generator failed".to_owned())?;
        let mut iv = nonce;
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(|e| e.to_string())?;
        let sealed = self
            .session
            .lock()
            .encrypt(&Mechanism::AesGcm(params), self.key, plaintext)
            .map_err(|e| format!("the HSM did not seal: {e}"))?;
        let mut out = nonce.to_vec();
        out.extend_from_slice(&sealed);
        Ok(out)
    }

    fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Zeroizing<Vec<u8>>, String> {
        if sealed.len() < NONCE_LEN + 16 {
            return Err("sealed value too short".into());
        }
        let (nonce, ct) = sealed.split_at(NONCE_LEN);
        let mut iv = [0u8; NONCE_LEN];
        iv.copy_from_slice(nonce);
        let params = GcmParams::new(&mut iv, aad, TAG_BITS.into()).map_err(|e| e.to_string())?;
        self.session.lock().decrypt(&Mechanism::AesGcm(params), self.key, ct).map(Zeroizing::new).map_err(|_| {
            "a sealed secret does not open under the HSM's root key (wrong key, or moved/altered)".to_owned()
        })
    }

    fn describe(&self) -> String {
        self.description.clone()
    }
}
