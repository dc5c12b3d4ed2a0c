//! `coffred`'s configuration: `DATA_DIR/coffred.toml`, written by `coffred init`, every setting
//! overridable by an environment variable (`COFFRED_LISTEN`, `COFFRED_DATABASE_URL`, …).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// The configuration file's name inside the data directory.
pub const FILE: &str = "coffred.toml";

/// Everything `coffred serve` needs.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8443`).
    pub listen: String,
    /// The log's name in signed checkpoints (`vault.example.com/coffre`).
    pub log_origin: String,
    /// `sqlite://DATA_DIR/coffre.db` or `postgres://…`.
    pub database_url: String,
    /// Where sealed objects and artifacts are stored (a directory); unused when `[s3]` is set.
    pub objects_dir: PathBuf,
    /// The root key file (0600); unused when `[pkcs11]` holds the root key.
    pub root_key_file: PathBuf,
    /// The TLS certificate (PEM).
    pub tls_cert: PathBuf,
    /// The TLS key (PEM, 0600).
    pub tls_key: PathBuf,
    /// Where release challenges are kept: `memory` (one vault per database, the default) or
    /// `database` (replicas sharing one PostgreSQL).
    #[serde(default)]
    pub challenges: crate::challenges::ChallengeStore,
    /// Other `coffred` replicas serve from the same PostgreSQL database and object store (they
    /// share this file, the root key and the TLS key): the log writer takes the database's lock
    /// and replays the others' entries before each batch, challenges live in the database, and
    /// principals created by another replica are found there.
    #[serde(default)]
    pub replicated: bool,
    /// Limits.
    #[serde(default)]
    pub limits: Limits,
    /// The root key in a PKCS#11 HSM instead of `root_key_file`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pkcs11: Option<crate::pkcs11::Pkcs11Config>,
    /// Objects in an S3-compatible bucket instead of `objects_dir`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub s3: Option<crate::objects::S3Config>,
}

/// `Debug` without the database URL's password (the URL may carry one).
impl std::fmt::Debug for Config {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Config")
            .field("listen", &self.listen)
            .field("log_origin", &self.log_origin)
            .field("database_url", &crate::server::redact_url(&self.database_url))
            .field("objects_dir", &self.objects_dir)
            .field("root_key_file", &self.root_key_file)
            .field("tls_cert", &self.tls_cert)
            .field("tls_key", &self.tls_key)
            .field("challenges", &self.challenges)
            .field("replicated", &self.replicated)
            .field("limits", &self.limits)
            .field("pkcs11", &self.pkcs11)
            .field("s3", &self.s3)
            .finish()
    }
}

/// Request limits.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Limits {
    /// Largest JSON body, bytes (release requests carry evidence of 8 GPUs with RIMs).
    pub json_body_bytes: usize,
    /// Largest uploaded object, bytes.
    pub object_bytes: u64,
    /// Seconds a request may take (uploads excepted).
    pub request_timeout_secs: u64,
    /// Requests per second per principal (burst: 4×).
    pub per_principal_rps: u32,
    /// Requests per second per client address (burst: 4×).
    pub per_address_rps: u32,
    /// Seconds a challenge stays valid.
    pub challenge_ttl_secs: u64,
    /// Seconds a data key unwrapped for a release stays in memory for the next release of the
    /// same object (0: unwrap it for every release).
    pub hold_data_keys_secs: u64,
    /// Seconds between a shredding request and the keys' destruction (the tenant's approvers may
    /// cancel it meanwhile; releases are refused from the request on).
    pub shred_wait_secs: u64,
    /// Seconds a KBS session's nonce waits for its `/attest`.
    pub kbs_session_ttl_secs: u64,
    /// Seconds a KBS attestation (its token and session) serves `/resource` requests; at most
    /// 3,600, the longest the log's rules accept.
    pub kbs_token_ttl_secs: u64,
    /// KBS `/auth` requests per second per tenant (burst: 4×).
    pub kbs_auth_rps: u32,
}

impl Default for Limits {
    fn default() -> Self {
        Self {
            json_body_bytes: 8 << 20,
            object_bytes: 1 << 40,
            request_timeout_secs: 60,
            per_principal_rps: 2_000,
            per_address_rps: 4_000,
            challenge_ttl_secs: 60,
            hold_data_keys_secs: 60,
            shred_wait_secs: 7 * 24 * 3600,
            kbs_session_ttl_secs: 300,
            kbs_token_ttl_secs: 300,
            kbs_auth_rps: 500,
        }
    }
}

impl Config {
    /// The defaults for a new data directory.
    pub fn defaults(data_dir: &Path) -> Self {
        Self {
            listen: "127.0.0.1:8443".into(),
            log_origin: "coffre.localhost/log".into(),
            database_url: format!("sqlite://{}", data_dir.join("coffre.db").display()),
            objects_dir: data_dir.join("objects"),
            root_key_file: data_dir.join("root.key"),
            tls_cert: data_dir.join("tls").join("cert.pem"),
            tls_key: data_dir.join("tls").join("key.pem"),
            challenges: crate::challenges::ChallengeStore::default(),
            replicated: false,
            limits: Limits::default(),
            pkcs11: None,
            s3: None,
        }
    }

    /// Reads `DATA_DIR/coffred.toml` and applies `COFFRED_*` overrides.
    pub fn load(data_dir: &Path) -> anyhow::Result<Self> {
        let path = data_dir.join(FILE);
        let text = std::fs::read_to_string(&path).map_err(|e| {
            anyhow::anyhow!(
                "cannot read {}: {e}\n  hint: run `coffred init --data-dir {}` first",
                path.display(),
                data_dir.display()
            )
        })?;
        let mut c: Config = toml::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))?;
        let env = |name: &str| std::env::var(format!("COFFRED_{name}")).ok().filter(|v| !v.is_empty());
        if let Some(v) = env("LISTEN") {
            c.listen = v;
        }
        if let Some(v) = env("DATABASE_URL") {
            c.database_url = v;
        }
        if let Some(v) = env("OBJECTS_DIR") {
            c.objects_dir = v.into();
        }
        if let Some(v) = env("ROOT_KEY_FILE") {
            c.root_key_file = v.into();
        }
        if let Some(v) = env("TLS_CERT") {
            c.tls_cert = v.into();
        }
        if let Some(v) = env("TLS_KEY") {
            c.tls_key = v.into();
        }
        if let Some(v) = env("LOG_ORIGIN") {
            c.log_origin = v;
        }
        if let Some(v) = env("REPLICATED") {
            c.replicated = match v.as_str() {
                "true" | "1" => true,
                "false" | "0" => false,
                other => anyhow::bail!("COFFRED_REPLICATED is {other:?}: expected true or false"),
            };
        }
        if c.limits.kbs_token_ttl_secs > coffre_broker::state::KBS_ATTESTATION_MAX_SECS {
            anyhow::bail!(
                "{}: limits.kbs_token_ttl_secs is {}: at most {} (an attestation older than that is refused by the log's rules)",
                path.display(),
                c.limits.kbs_token_ttl_secs,
                coffre_broker::state::KBS_ATTESTATION_MAX_SECS
            );
        }
        if let Some(v) = env("CHALLENGES") {
            c.challenges = match v.as_str() {
                "memory" => crate::challenges::ChallengeStore::Memory,
                "database" => crate::challenges::ChallengeStore::Database,
                other => anyhow::bail!("COFFRED_CHALLENGES is {other:?}: expected memory or database"),
            };
        }
        if c.replicated {
            if !crate::db::is_postgres(&c.database_url) {
                anyhow::bail!(
                    "{}: replicated = true needs a PostgreSQL database_url (SQLite serves one vault process)",
                    path.display()
                );
            }
            // A challenge issued by one replica is consumed by whichever the worker reaches.
            c.challenges = crate::challenges::ChallengeStore::Database;
        }
        Ok(c)
    }

    /// Writes the file (refusing to replace one).
    pub fn write_new(&self, data_dir: &Path) -> anyhow::Result<()> {
        let text = format!(
            "# coffred configuration. Every setting can be overridden by COFFRED_<NAME> (e.g. COFFRED_LISTEN).\n{}",
            toml::to_string_pretty(self)?
        );
        crate::keys::write_new_private(&data_dir.join(FILE), text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    /// A database password never reaches `Debug` output (logs, panics).
    #[test]
    fn debug_output_holds_no_database_password() {
        let mut c = super::Config::defaults(std::path::Path::new("/d"));
        c.database_url = "postgres://coffre:s3cr3t-pw@db.internal:5432/coffre".into();
        let shown = format!("{c:?}");
        assert!(!shown.contains("s3cr3t-pw") && shown.contains("coffre:…@db.internal"), "{shown}");
        let o = crate::server::InitOptions { database_url: Some(c.database_url.clone()), ..Default::default() };
        assert!(!format!("{o:?}").contains("s3cr3t-pw"));
    }

    /// The configuration deploy/kubernetes ships still parses (it is read with
    /// `deny_unknown_fields`, so a renamed setting would break the deployment).
    #[test]
    fn the_shipped_kubernetes_configuration_parses() {
        let text = include_str!("../../../deploy/kubernetes/coffred.toml");
        let c: super::Config = toml::from_str(text).unwrap();
        assert!(c.replicated && c.pkcs11.is_some() && c.s3.is_some());
        assert_eq!(c.challenges, crate::challenges::ChallengeStore::Database);
    }
}
