//! What a worker's hardware report binds: the vault's nonce, the worker's ephemeral keys and the
//! job manifest, in exactly 64 bytes of REPORT_DATA (see
//! [`coffre_attestation::composite::release_report_data`]).
//!
//! The worker generates two key pairs in memory for one release: an HPKE key the vault wraps the
//! data keys to, and a signing key it later signs the model's provenance with. Both public keys
//! are bound through one encoding, [`WorkerKeys::to_bytes`]:
//!
//! ```text
//! "coffre-worker-keys/v1\n" ‖ kem id (u16 BE) ‖ len (u16 BE) ‖ HPKE public key
//!                            ‖ len (u16 BE) ‖ signing public key (uncompressed P-384)
//! ```
//!
//! The release suite is DHKEM(P-256, HKDF-SHA256) / HKDF-SHA256 / AES-256-GCM (KEM 0x0010): one
//! wrap per release, ten times cheaper than P-384 (SECURITY.md says why it is enough).
//!
//! so neither can be swapped without changing the report data.

use coffre_seal::VerifyingKey;
use coffre_seal::hpke;

const LABEL: &[u8] = b"coffre-worker-keys/v1\n";
/// HPKE KEM id of DHKEM(P-256, HKDF-SHA256), the release suite.
pub const RELEASE_KEM: u16 = hpke::p256::KEM_ID;

/// A worker's ephemeral public keys.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerKeys {
    /// The HPKE public key (uncompressed P-256 point) the data keys are wrapped to.
    pub hpke: [u8; hpke::p256::PUBLIC_KEY_LEN],
    /// The key the worker signs provenance with.
    pub signing: VerifyingKey,
}

impl WorkerKeys {
    /// The bound encoding.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(LABEL.len() + 6 + self.hpke.len() + self.signing.sec1().len());
        out.extend_from_slice(LABEL);
        out.extend_from_slice(&RELEASE_KEM.to_be_bytes());
        out.extend_from_slice(&(self.hpke.len() as u16).to_be_bytes());
        out.extend_from_slice(&self.hpke);
        out.extend_from_slice(&(self.signing.sec1().len() as u16).to_be_bytes());
        out.extend_from_slice(self.signing.sec1());
        out
    }

    /// Reads the bound encoding exactly (no trailing bytes, known KEM, valid points).
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, String> {
        let rest = bytes.strip_prefix(LABEL).ok_or("worker keys do not start with coffre-worker-keys/v1")?;
        let take = |b: &[u8], n: usize| -> Result<(Vec<u8>, Vec<u8>), String> {
            if b.len() < n {
                return Err("worker keys are truncated".into());
            }
            Ok((b[..n].to_vec(), b[n..].to_vec()))
        };
        let (kem, rest) = take(rest, 2)?;
        if kem != RELEASE_KEM.to_be_bytes() {
            return Err(format!(
                "worker keys use KEM {:#06x}; this vault wraps to DHKEM(P-256, HKDF-SHA256) (0x0010)",
                u16::from_be_bytes([kem[0], kem[1]])
            ));
        }
        let (len, rest) = take(&rest, 2)?;
        let (pk, rest) = take(&rest, usize::from(u16::from_be_bytes([len[0], len[1]])))?;
        let (len, rest) = take(&rest, 2)?;
        let (sig, rest) = take(&rest, usize::from(u16::from_be_bytes([len[0], len[1]])))?;
        if !rest.is_empty() {
            return Err("worker keys have trailing bytes".into());
        }
        hpke::p256::validate_public_key(&pk).map_err(|e| format!("worker HPKE key: {e}"))?;
        let mut hpke_key = [0u8; hpke::p256::PUBLIC_KEY_LEN];
        hpke_key.copy_from_slice(&pk);
        let signing = VerifyingKey::from_sec1(&sig).map_err(|e| format!("worker signing key: {e}"))?;
        Ok(Self { hpke: hpke_key, signing })
    }
}

/// The REPORT_DATA a release requires: the vault's nonce, the worker's bound keys and the job
/// manifest's canonical bytes.
pub fn report_data(nonce: &[u8; 32], keys: &[u8], manifest: &[u8]) -> [u8; 64] {
    coffre_attestation::composite::release_report_data(nonce, keys, manifest)
}

/// HPKE `info` of a released data key.
pub const RELEASE_INFO: &[u8] = b"coffre/key-release/v1";

/// The additional data a wrapped key is bound to: log index, tenant, job and key id, so a
/// wrapped key cannot be presented as another release's.
pub fn wrap_aad(index: u64, tenant: &str, job: &str, key_id: &str) -> Vec<u8> {
    format!("coffre-release/v1\n{index}\n{tenant}\n{job}\n{key_id}\n").into_bytes()
}
