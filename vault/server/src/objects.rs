//! Where sealed objects, artifacts and base models are stored: a directory (the embedded
//! default) or an S3-compatible bucket (`[s3]` in `coffred.toml`), through `object_store`.
//!
//! Either way every final name is written create-only: uploads stream to `staging/…` and are
//! then moved with `rename_if_not_exists`, which on S3 is a multipart copy completed with
//! `If-None-Match: *` (AWS S3 and s3s-fs honour it), so an object is never overwritten, by a
//! retry or by another replica. Large uploads go up in 8 MiB multipart parts.

use std::path::PathBuf;
use std::sync::Arc;

use object_store::ObjectStore;
use object_store::aws::{AmazonS3Builder, S3CopyIfNotExists};
use object_store::local::LocalFileSystem;
use object_store::prefix::PrefixStore;
use serde::{Deserialize, Serialize};
use zeroize::Zeroizing;

use crate::config::Config;

/// `[s3]` in `coffred.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct S3Config {
    /// The bucket (it must exist).
    pub bucket: String,
    /// A key prefix inside the bucket (several vaults may share one bucket).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix: Option<String>,
    /// The endpoint of an S3-compatible server (`https://s3.eu-central-1.example`); AWS when absent.
    /// Plain `http://` is accepted only for a loopback address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub endpoint: Option<String>,
    /// The region.
    #[serde(default = "default_region")]
    pub region: String,
    /// The access key id; the standard `AWS_ACCESS_KEY_ID` (and the rest of the AWS environment:
    /// session token, web identity, instance role) when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub access_key_id: Option<String>,
    /// A file (0600) holding the secret access key that goes with `access_key_id`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret_access_key_file: Option<PathBuf>,
}

fn default_region() -> String {
    "us-east-1".into()
}

/// Whether an `http://` endpoint stays on this machine.
fn loopback(endpoint: &str) -> bool {
    let rest = endpoint.trim_start_matches("http://");
    let host = rest.split(['/', ':']).next().unwrap_or("");
    host == "localhost"
        || host.parse::<std::net::IpAddr>().is_ok_and(|ip| ip.is_loopback())
        || rest.starts_with("[::1]")
}

/// Opens the object store `config` names.
pub fn open(config: &Config) -> anyhow::Result<Arc<dyn ObjectStore>> {
    let Some(s3) = &config.s3 else {
        std::fs::create_dir_all(&config.objects_dir)
            .map_err(|e| anyhow::anyhow!("cannot create {}: {e}", config.objects_dir.display()))?;
        return Ok(Arc::new(LocalFileSystem::new_with_prefix(&config.objects_dir)?));
    };
    // Credentials from the AWS environment; never its endpoint or its plain-HTTP switch, which
    // would go around the check below.
    let mut builder = AmazonS3Builder::from_env()
        .with_bucket_name(&s3.bucket)
        .with_region(&s3.region)
        .with_allow_http(false)
        .with_copy_if_not_exists(S3CopyIfNotExists::Multipart);
    if s3.endpoint.is_none() {
        builder = builder.with_endpoint(format!("https://s3.{}.amazonaws.com", s3.region));
    }
    if let Some(endpoint) = &s3.endpoint {
        if endpoint.starts_with("http://") {
            if !loopback(endpoint) {
                anyhow::bail!(
                    "[s3] endpoint {endpoint} is plain HTTP to another machine: use https:// (sealed objects are \
                     ciphertext, but credentials and integrity travel with each request)"
                );
            }
            builder = builder.with_allow_http(true);
        }
        builder = builder.with_endpoint(endpoint);
    }
    match (&s3.access_key_id, &s3.secret_access_key_file) {
        (Some(id), Some(file)) => {
            use std::os::unix::fs::PermissionsExt;
            let meta = std::fs::metadata(file).map_err(|e| anyhow::anyhow!("[s3] {}: {e}", file.display()))?;
            if meta.permissions().mode() & 0o077 != 0 {
                anyhow::bail!(
                    "[s3] secret key file {} is readable by others; fix it with: chmod 600 {}",
                    file.display(),
                    file.display()
                );
            }
            let secret = Zeroizing::new(std::fs::read_to_string(file)?);
            builder = builder.with_access_key_id(id).with_secret_access_key(secret.trim_end());
        }
        (None, None) => {}
        _ => anyhow::bail!("[s3] access_key_id and secret_access_key_file go together"),
    }
    let store = builder.build().map_err(|e| anyhow::anyhow!("[s3] bucket {}: {e}", s3.bucket))?;
    Ok(match s3.prefix.as_deref().filter(|p| !p.is_empty()) {
        Some(prefix) => Arc::new(PrefixStore::new(store, prefix)),
        None => Arc::new(store),
    })
}

/// Checks at start that the bucket answers with these credentials (a list of one page), so a
/// misconfiguration is told before the first upload.
pub async fn check(store: &dyn ObjectStore, config: &Config) -> anyhow::Result<()> {
    use futures_util::StreamExt;
    if let Some(s3) = &config.s3 {
        let mut listed = store.list(Some(&object_store::path::Path::from("staging")));
        if let Some(Err(e)) = listed.next().await {
            anyhow::bail!(
                "the S3 bucket {} at {} does not answer: {e}",
                s3.bucket,
                s3.endpoint.as_deref().unwrap_or("AWS")
            );
        }
    }
    Ok(())
}
