//! `coffre tenant|principal|approvers|dataset|job|artifact|denial … --vault URL`: the vault's API
//! from the command line, through the typed client (certificate pinned like SSH; the token from
//! `COFFRE_TOKEN`, `--token-file` or the client configuration file).

use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, Subcommand};
use coffre_api::client::{ClientError, Fingerprint, Options, VaultClient};
use coffre_api::job::{Bounds, DpRecipe, JobDataset, JobManifest, Recipe};
use coffre_api::wire::*;
use coffre_api::{ObjectSignature, SignedJob};
use serde::Deserialize;

use crate::error::{CliError, CliResult};

/// Where the vault is and who we are.
#[derive(Debug, Clone, Args)]
pub struct VaultArgs {
    /// The vault's URL (https://host:port) [env: COFFRE_VAULT; or the client configuration]
    #[arg(long, value_name = "URL", env = "COFFRE_VAULT", global = true)]
    pub vault: Option<String>,

    /// The SHA-256 fingerprint of the vault's certificate, as `coffred` printed it (pins it)
    #[arg(long, value_name = "SHA256", env = "COFFRE_VAULT_FINGERPRINT", global = true)]
    pub vault_fingerprint: Option<String>,

    /// A file holding your API token (or set COFFRE_TOKEN)
    #[arg(long, value_name = "FILE", env = "COFFRE_TOKEN_FILE", global = true)]
    pub token_file: Option<PathBuf>,

    /// The client configuration file [default: ~/.config/coffre/client.toml]
    #[arg(long, value_name = "FILE", env = "COFFRE_CLIENT_CONFIG", global = true)]
    pub client_config: Option<PathBuf>,

    /// Print JSON instead of text
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ClientConfig {
    vault: Option<String>,
    fingerprint: Option<String>,
    token_file: Option<PathBuf>,
}

fn default_config() -> Option<PathBuf> {
    std::env::var_os("XDG_CONFIG_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".config")))
        .map(|d| d.join("coffre").join("client.toml"))
}

impl VaultArgs {
    /// The client these arguments describe.
    pub fn client(&self) -> CliResult<VaultClient> {
        let config_path = self.client_config.clone().or_else(default_config);
        let config: ClientConfig = match &config_path {
            Some(p) if p.exists() => {
                let text = std::fs::read_to_string(p).map_err(|e| CliError::io("read", p, &e))?;
                toml::from_str(&text).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?
            }
            _ => ClientConfig::default(),
        };
        let url = self.vault.clone().or(config.vault).ok_or_else(|| {
            CliError::usage(
                "no vault: give --vault https://HOST:PORT (or COFFRE_VAULT, or vault = … in the client configuration)",
            )
        })?;
        let fingerprint = self
            .vault_fingerprint
            .clone()
            .or(config.fingerprint)
            .map(|f| Fingerprint::parse(&f))
            .transpose()
            .map_err(|e| CliError::usage(format!("--vault-fingerprint: {e}")))?;
        let token = match std::env::var("COFFRE_TOKEN").ok().filter(|t| !t.is_empty()) {
            Some(t) => Some(t),
            None => match self.token_file.clone().or(config.token_file) {
                Some(p) => Some(
                    std::fs::read_to_string(&p).map_err(|e| CliError::io("read token file", &p, &e))?.trim().to_owned(),
                ),
                None => None,
            },
        };
        VaultClient::new(&Options { url, fingerprint, token, identity: None }).map_err(client_error)
    }
}

/// A client error as the user sees it.
pub fn client_error(e: ClientError) -> CliError {
    match e {
        ClientError::Problem(p) => {
            let mut message = format!("the vault refused: {} ({})", p.detail, p.code);
            for f in &p.failed {
                let policy = if f.policy.is_empty() { String::new() } else { format!("[{}] ", f.policy) };
                message.push_str(&format!("\n  ✗ {policy}{}: expected {}; found {}", f.name, f.expected, f.actual));
            }
            let hint = if p.status == 401 {
                "set COFFRE_TOKEN (or --token-file) to a token the vault issued".into()
            } else {
                p.hint.clone().unwrap_or_else(|| match p.status {
                    403 => "your principal lacks the role for this; ask the tenant's administrator".into(),
                    404 => "check the names (another tenant's resources look exactly like missing ones)".into(),
                    _ => "see `coffre <command> --help`".into(),
                })
            };
            CliError::new(message).hint(hint)
        }
        ClientError::Transport(t) => CliError::new(format!("cannot reach the vault: {t}"))
            .hint("check --vault and --vault-fingerprint (coffred prints its fingerprint at start)"),
        ClientError::Decode(d) => CliError::new(format!("unexpected answer from the vault: {d}")),
        ClientError::Usage(u) => CliError::usage(u),
    }
}

/// Runs an async call of the client to completion.
pub fn block_on<T>(fut: impl std::future::Future<Output = Result<T, ClientError>>) -> CliResult<T> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start: {e}")))?
        .block_on(fut)
        .map_err(client_error)
}

impl VaultArgs {
    /// Prints `value` as JSON with `--json`, else as `text` prints it.
    fn emit<T: serde::Serialize>(&self, value: T, text: impl FnOnce(T)) {
        if self.json { print_json(&value) } else { text(value) }
    }
}

fn print_json<T: serde::Serialize>(v: &T) {
    outln!("{}", serde_json::to_string_pretty(v).unwrap_or_default());
}

#[derive(Debug, Subcommand)]
pub enum TenantCommand {
    /// Create a tenant and its key-encryption key (vault administrator)
    Create {
        /// Tenant id
        id: String,
        /// Display name
        #[arg(long)]
        name: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// List the tenants you can see
    List {
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Show a tenant, and the KEK public key to seal its datasets to
    Show {
        /// Tenant id
        id: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Rotate the tenant's KEK (its administrators): a new version that uploads must be sealed to,
    /// and every data key rewrapped to it in the vault (objects untouched), batch by batch with
    /// progress. Run it again after an interruption: it resumes where it stopped
    RotateKek {
        /// Tenant id
        id: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Mark a tenant for testing (vault administrator, development vaults only): the only tenants
    /// a development vault built with the kbs-sample feature serves the KBS sample TEE, which
    /// proves nothing about hardware. The mark is in the transparency log. --off removes it
    MarkTesting {
        /// Tenant id
        id: String,
        /// Remove the mark
        #[arg(long)]
        off: bool,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Crypto-shred the whole tenant (its administrators): releases stop at once; after the
    /// waiting period (7 days unless the vault says otherwise) every data key and KEK is destroyed
    /// and every object, artifact and model deleted. Its approvers may --cancel until then
    Shred {
        /// Tenant id
        id: String,
        /// Cancel the scheduled shredding instead (approvers)
        #[arg(long)]
        cancel: bool,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

fn print_shredding(s: &Shredding) {
    match s.not_before {
        Some(at) => outln!(
            "shredding scheduled for {} key(s); releases are refused from now on; destroyed after {} (Unix time)",
            s.keys.len(),
            at
        ),
        None => outln!("shredding cancelled for {} key(s)", s.keys.len()),
    }
    for k in &s.keys {
        outln!("  {k}");
    }
}

/// `POST` (or `DELETE` with `cancel`) a shredding request at `path`.
fn shred(vault: &VaultArgs, path: &str, cancel: bool) -> CliResult {
    let c = vault.client()?;
    let s: Shredding = if cancel { block_on(c.delete(path))? } else { block_on(c.post(path, &()))? };
    vault.emit(s, |s| print_shredding(&s));
    Ok(())
}

fn print_tenant(t: &TenantView) {
    outln!("tenant        {} ({})", t.id, t.name);
    outln!("KEK           version {}, key id {}", t.kek.version, t.kek.key_id);
    outln!("              {}", t.kek.public_key);
    outln!(
        "approver set  {}",
        if t.approver_set == 0 { "none yet".to_owned() } else { format!("version {}", t.approver_set) }
    );
}

pub fn tenant(cmd: &TenantCommand) -> CliResult {
    match cmd {
        TenantCommand::Create { id, name, vault } => {
            let c = vault.client()?;
            let t: TenantView = block_on(c.post("/v1/tenants", &CreateTenant { id: id.clone(), name: name.clone() }))?;
            vault.emit(t, |t| print_tenant(&t));
            Ok(())
        }
        TenantCommand::List { vault } => {
            let c = vault.client()?;
            let list: Vec<TenantView> = block_on(c.get("/v1/tenants"))?;
            vault.emit(list, |list| {
                for t in &list {
                    outln!("{:24} {:32} KEK v{} {}", t.id, t.name, t.kek.version, t.kek.key_id);
                }
            });
            Ok(())
        }
        TenantCommand::Show { id, vault } => {
            let c = vault.client()?;
            let t: TenantView = block_on(c.get(&format!("/v1/tenants/{id}")))?;
            vault.emit(t, |t| print_tenant(&t));
            Ok(())
        }
        TenantCommand::RotateKek { id, vault } => {
            let c = vault.client()?;
            let mut total = 0;
            let mut last;
            loop {
                let step: KekRotation = block_on(c.post(&format!("/v1/tenants/{id}/kek/rotate"), &()))?;
                if step.started {
                    eprintln!("KEK version {} created and logged; rewrapping data keys…", step.version);
                }
                total += step.rewrapped;
                eprintln!("  {total} data key(s) rewrapped to version {}, {} to go", step.version, step.remaining);
                let done = step.remaining == 0;
                last = step;
                if done {
                    break;
                }
            }
            last.rewrapped = total;
            vault.emit(last, |r| {
                outln!("KEK of {id} is version {}: {} data key(s) rewrapped, none left", r.version, r.rewrapped);
                outln!("seal new datasets to it: coffre tenant show {id}");
            });
            Ok(())
        }
        TenantCommand::MarkTesting { id, off, vault } => {
            let c = vault.client()?;
            let logged: Logged = block_on(
                c.put(&format!("/v1/tenants/{id}/testing"), &coffre_api::wire::MarkTesting { testing: !off }),
            )?;
            vault.emit(logged, |l| {
                outln!(
                    "tenant {id} {} for testing (log entry {})",
                    if *off { "is no longer marked" } else { "marked" },
                    l.log_index
                );
            });
            Ok(())
        }
        TenantCommand::Shred { id, cancel, vault } => shred(vault, &format!("/v1/tenants/{id}/shred"), *cancel),
    }
}

#[derive(Debug, Subcommand)]
pub enum PrincipalCommand {
    /// Create a principal; its API token is printed once
    Create {
        /// Its name
        name: String,
        /// The tenant
        #[arg(long)]
        tenant: String,
        /// A role (owner, approver, auditor, worker-operator, admin); repeatable
        #[arg(long = "role", required = true)]
        roles: Vec<String>,
        /// Its signing public key (coffre-p384-sig-…) or a file holding it (owners sign objects and jobs)
        #[arg(long, value_name = "KEY")]
        signing_key: Option<String>,
        /// SHA-256 of its client certificate, for mutual TLS
        #[arg(long, value_name = "SHA256")]
        client_cert_sha256: Option<String>,
        /// Write the token to this file (0600) instead of printing it
        #[arg(long, value_name = "FILE")]
        token_out: Option<PathBuf>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// List a tenant's principals
    List {
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// Streams `file` to `url` (PUT) with a progress bar on standard error.
fn upload_with_progress<T: serde::de::DeserializeOwned>(
    c: &VaultClient,
    url: &str,
    file: &Path,
    headers: &[(&str, String)],
) -> CliResult<T> {
    let size = std::fs::metadata(file).map_err(|e| CliError::io("read", file, &e))?.len();
    let progress = std::sync::Arc::new(std::sync::Mutex::new(crate::io::Progress::new("uploading", Some(size))));
    let p2 = progress.clone();
    let view = block_on(c.upload(url, file, headers, move |sent| {
        if let Ok(mut p) = p2.lock() {
            p.set(sent);
        }
    }))?;
    if let Ok(p) = progress.lock() {
        p.finish();
    }
    Ok(view)
}

/// Files this large go up resumably, in parts of this size.
const RESUMABLE_FROM: u64 = 64 << 20;

/// What `FILE.coffre-upload` remembers of an interrupted upload.
#[derive(Debug, serde::Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct UploadState {
    tenant: String,
    dataset: String,
    id: String,
    size: u64,
    modified: u64,
    part_size: u64,
}

/// Uploads `file` in parts, resuming an upload `FILE.coffre-upload` remembers when it is of the
/// same file (size and modification time), tenant and dataset and the vault still holds it.
fn upload_resumable(
    c: &VaultClient,
    tenant: &str,
    dataset: &str,
    file: &Path,
    headers: &[(&str, String)],
    part_size: u64,
) -> CliResult<ObjectView> {
    use std::io::{Read, Seek, SeekFrom};
    let meta = std::fs::metadata(file).map_err(|e| CliError::io("read", file, &e))?;
    let size = meta.len();
    let modified =
        meta.modified().ok().and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok()).map_or(0, |d| d.as_secs());
    let state_path = {
        let mut p = file.as_os_str().to_owned();
        p.push(".coffre-upload");
        PathBuf::from(p)
    };
    let base = format!("/v1/tenants/{tenant}/datasets/{dataset}/uploads");
    let remembered: Option<UploadState> =
        std::fs::read_to_string(&state_path).ok().and_then(|t| serde_json::from_str(&t).ok()).filter(
            |s: &UploadState| s.tenant == tenant && s.dataset == dataset && s.size == size && s.modified == modified,
        );
    let resumed = match remembered {
        Some(s) => {
            // Gone from the vault (completed, abandoned or expired): start again.
            let status = block_on(async { Ok(c.get::<UploadView>(&format!("{base}/{}", s.id)).await) })?;
            match status {
                Ok(view) => Some(view),
                Err(ClientError::Problem(p)) if p.status == 404 => None,
                Err(e) => return Err(client_error(e)),
            }
        }
        None => None,
    };
    let view = match resumed {
        Some(view) => {
            eprintln!(
                "resuming upload {}: {} of {} parts are already in the vault",
                view.id,
                view.parts.len(),
                view.parts_total
            );
            view
        }
        None => {
            let view: UploadView = block_on(c.post(&base, &StartUpload { size, part_size: Some(part_size) }))?;
            let state = UploadState {
                tenant: tenant.to_owned(),
                dataset: dataset.to_owned(),
                id: view.id.clone(),
                size,
                modified,
                part_size: view.part_size,
            };
            let text = serde_json::to_string_pretty(&state).map_err(|e| CliError::usage(e.to_string()))?;
            std::fs::write(&state_path, text).map_err(|e| CliError::io("write", &state_path, &e))?;
            view
        }
    };
    let mut f = std::fs::File::open(file).map_err(|e| CliError::io("read", file, &e))?;
    let mut progress = crate::io::Progress::new("uploading", Some(size));
    let mut sent = 0u64;
    let mut buf = Vec::new();
    for n in 0..view.parts_total {
        let start = n * view.part_size;
        let len = size.saturating_sub(start).min(view.part_size);
        buf.resize(usize::try_from(len).map_err(|_| CliError::usage("part too large for this machine"))?, 0);
        f.seek(SeekFrom::Start(start))
            .and_then(|_| f.read_exact(&mut buf))
            .map_err(|e| CliError::io("read", file, &e))?;
        let digest = coffre_log::Digest::of(&buf).hex();
        // A part the vault holds with the same bytes is not sent again.
        if !view.parts.iter().any(|p| p.part == n && p.sha256 == digest) {
            let held: UploadedPart =
                block_on(c.upload_bytes(&format!("{base}/{}/parts/{n}", view.id), buf.clone(), &[]))?;
            if held.sha256 != digest {
                return Err(CliError::usage(format!(
                    "the vault holds part {n} with SHA-256 {}, but {digest} was sent: the connection altered it; run the command again",
                    held.sha256
                )));
            }
        }
        sent += len;
        progress.set(sent);
    }
    progress.finish();
    let object: ObjectView = block_on(c.post_with_headers(&format!("{base}/{}/complete", view.id), &(), headers))?;
    let _ = std::fs::remove_file(&state_path);
    Ok(object)
}

fn key_text(value: &str) -> CliResult<String> {
    let p = Path::new(value);
    if p.is_file() {
        let text = std::fs::read_to_string(p).map_err(|e| CliError::io("read", p, &e))?;
        let line = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("coffre-") || l.starts_with("# public key: "))
            .map(|l| l.trim_start_matches("# public key: ").to_owned())
            .ok_or_else(|| CliError::usage(format!("{} holds no public key", p.display())))?;
        return Ok(line);
    }
    Ok(value.to_owned())
}

pub fn principal(cmd: &PrincipalCommand) -> CliResult {
    match cmd {
        PrincipalCommand::Create { name, tenant, roles, signing_key, client_cert_sha256, token_out, vault } => {
            let roles =
                roles.iter().map(|r| r.parse::<Role>().map_err(CliError::usage)).collect::<CliResult<Vec<_>>>()?;
            let signing_key = signing_key.as_deref().map(key_text).transpose()?;
            let c = vault.client()?;
            let created: CreatedPrincipal = block_on(c.post(
                &format!("/v1/tenants/{tenant}/principals"),
                &CreatePrincipal {
                    name: name.clone(),
                    roles,
                    signing_key,
                    client_cert_sha256: client_cert_sha256.clone(),
                },
            ))?;
            if let Some(path) = token_out {
                crate::keys::write_secret_file(path, format!("{}\n", created.token).as_bytes())?;
                eprintln!(
                    "wrote the token of {} ({}) to {} (0600)",
                    created.principal.name,
                    created.principal.id,
                    path.display()
                );
            } else if vault.json {
                print_json(&created);
            } else {
                outln!("{}", created.token);
                eprintln!(
                    "principal {} ({}) of {tenant}: roles {}. The line above is its API token: it is shown once.",
                    created.principal.name,
                    created.principal.id,
                    created.principal.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(", ")
                );
            }
            Ok(())
        }
        PrincipalCommand::List { tenant, vault } => {
            let c = vault.client()?;
            let list: Vec<PrincipalView> = block_on(c.get(&format!("/v1/tenants/{tenant}/principals")))?;
            vault.emit(list, |list| {
                for p in list {
                    outln!(
                        "{:20} {:12} {}{}",
                        p.name,
                        p.id,
                        p.roles.iter().map(|r| r.as_str()).collect::<Vec<_>>().join(","),
                        p.signing_key.map(|_| "  (signing key registered)").unwrap_or_default()
                    );
                }
            });
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ApproversCommand {
    /// Install an approver set (version 1: an administrator; later: with the current set's approvals)
    Set {
        /// The tenant
        #[arg(long)]
        tenant: String,
        /// The set (coffre-approvers/v1 TOML)
        file: PathBuf,
        /// An approval of the new set by a member of the current one (`coffre policy sign`); repeatable
        #[arg(long = "approval", value_name = "FILE")]
        approvals: Vec<PathBuf>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Show the approver set in force
    Show {
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

fn read_text(path: &Path) -> CliResult<String> {
    std::fs::read_to_string(path).map_err(|e| CliError::io("read", path, &e))
}

pub fn approvers(cmd: &ApproversCommand) -> CliResult {
    match cmd {
        ApproversCommand::Set { tenant, file, approvals, vault } => {
            let req = ChangeApprovers {
                document: read_text(file)?,
                approvals: approvals.iter().map(|p| read_text(p)).collect::<CliResult<_>>()?,
            };
            let c = vault.client()?;
            let logged: Logged = block_on(c.put(&format!("/v1/tenants/{tenant}/approvers"), &req))?;
            outln!("approver set installed for {tenant}: log entry {}", logged.log_index);
            Ok(())
        }
        ApproversCommand::Show { tenant, vault } => {
            let c = vault.client()?;
            let set: ApproverSetView = block_on(c.get(&format!("/v1/tenants/{tenant}/approvers")))?;
            vault.emit(set, |set| {
                outln!("approver set v{}: {} of {}", set.version, set.threshold, set.approvers.len());
                for a in set.approvers {
                    outln!("  {:16} key id {}", a.name, a.key_id);
                }
            });
            Ok(())
        }
    }
}

/// `coffre policy propose|approve|activate|list --vault …`.
#[derive(Debug, Args)]
pub struct ProposeArgs {
    /// The tenant
    #[arg(long)]
    pub tenant: String,
    /// The policy (coffre-policy/v1 TOML)
    pub file: PathBuf,
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// Approve a proposed version on the vault.
#[derive(Debug, Args)]
pub struct ApproveArgs {
    /// The tenant
    #[arg(long)]
    pub tenant: String,
    /// Policy id
    pub id: String,
    /// Version
    pub version: u64,
    /// The approval file (`coffre policy sign`)
    pub approval: PathBuf,
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// Activate a proposed version with its logged approvals.
#[derive(Debug, Args)]
pub struct ActivateArgs {
    /// The tenant
    #[arg(long)]
    pub tenant: String,
    /// Policy id
    pub id: String,
    /// Version
    pub version: u64,
    #[command(flatten)]
    pub vault: VaultArgs,
}

/// List a tenant's policy versions.
#[derive(Debug, Args)]
pub struct ListPoliciesArgs {
    /// The tenant
    #[arg(long)]
    pub tenant: String,
    #[command(flatten)]
    pub vault: VaultArgs,
}

pub fn propose(a: &ProposeArgs) -> CliResult {
    let c = a.vault.client()?;
    let v: PolicyView = block_on(
        c.post(&format!("/v1/tenants/{}/policies", a.tenant), &ProposePolicy { document: read_text(&a.file)? }),
    )?;
    outln!("proposed {}@{} ({})", v.id, v.version, v.digest);
    outln!(
        "next: each approver runs `coffre policy sign {} -i KEY -o APPROVAL` then `coffre policy approve`",
        a.file.display()
    );
    Ok(())
}

pub fn approve(a: &ApproveArgs) -> CliResult {
    let c = a.vault.client()?;
    let logged: Logged = block_on(c.post(
        &format!("/v1/tenants/{}/policies/{}/{}/approvals", a.tenant, a.id, a.version),
        &ApprovePolicy { approval: read_text(&a.approval)? },
    ))?;
    outln!("approval of {}@{} logged: entry {}", a.id, a.version, logged.log_index);
    Ok(())
}

pub fn activate(a: &ActivateArgs) -> CliResult {
    let c = a.vault.client()?;
    let logged: Logged =
        block_on(c.post(&format!("/v1/tenants/{}/policies/{}/{}/activate", a.tenant, a.id, a.version), &()))?;
    outln!("{}@{} is active: log entry {}", a.id, a.version, logged.log_index);
    Ok(())
}

pub fn list_policies(a: &ListPoliciesArgs) -> CliResult {
    let c = a.vault.client()?;
    let list: Vec<PolicyView> = block_on(c.get(&format!("/v1/tenants/{}/policies", a.tenant)))?;
    a.vault.emit(list, |list| {
        for p in list {
            outln!("{:20} v{:<4} {:10} approvals: {}", p.id, p.version, p.state, p.approvals.join(", "));
        }
    });
    Ok(())
}

#[derive(Debug, Subcommand)]
pub enum DatasetCommand {
    /// Register a dataset with the labels that decide which policies cover it
    Register {
        /// Dataset id
        id: String,
        /// The tenant
        #[arg(long)]
        tenant: String,
        /// A label; repeatable
        #[arg(long = "label")]
        labels: Vec<String>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Upload a sealed object as the dataset's next version (streamed; the owner signature beside it
    /// is sent when present)
    Upload {
        /// Dataset id
        id: String,
        /// The sealed file (`coffre seal --tenant T --dataset ID -r <KEK public key> …`)
        file: PathBuf,
        /// The tenant
        #[arg(long)]
        tenant: String,
        /// The owner signature [default: FILE.sig when it exists]
        #[arg(long, value_name = "FILE")]
        signature: Option<PathBuf>,
        /// Upload in parts of this many bytes, resumably: run the same command again after an
        /// interruption and it sends only the parts the vault lacks (automatic, in 64 MiB parts,
        /// for files of 64 MiB and more; FILE.coffre-upload remembers the upload meanwhile)
        #[arg(long, value_name = "BYTES")]
        part_size: Option<u64>,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// List datasets
    List {
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Crypto-shred a dataset, every version (owners or administrators): releases stop at once;
    /// after the waiting period its data keys are destroyed and its objects deleted. The tenant's
    /// approvers may --cancel until then
    Shred {
        /// Dataset id
        id: String,
        /// The tenant
        #[arg(long)]
        tenant: String,
        /// Cancel the scheduled shredding instead (approvers)
        #[arg(long)]
        cancel: bool,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Show a dataset and its versions
    Show {
        /// Dataset id
        id: String,
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

fn print_dataset(d: &DatasetView) {
    outln!("dataset {}  labels: {}", d.id, if d.labels.is_empty() { "(none)".into() } else { d.labels.join(", ") });
    for v in &d.versions {
        outln!(
            "  v{:<3} {}  {}  {} bytes  key {}{}  (log entry {})",
            v.version,
            v.object_id,
            v.digest,
            v.size,
            v.key_id,
            v.signer.as_ref().map(|s| format!("  signed by {s}")).unwrap_or_default(),
            v.log_index
        );
    }
}

pub fn dataset(cmd: &DatasetCommand) -> CliResult {
    match cmd {
        DatasetCommand::Register { id, tenant, labels, vault } => {
            let c = vault.client()?;
            let d: DatasetView = block_on(c.post(
                &format!("/v1/tenants/{tenant}/datasets"),
                &RegisterDataset { id: id.clone(), labels: labels.clone() },
            ))?;
            vault.emit(d, |d| print_dataset(&d));
            Ok(())
        }
        DatasetCommand::Upload { id, file, tenant, signature, part_size, vault } => {
            let c = vault.client()?;
            let sig_path = signature.clone().or_else(|| {
                let mut p = file.as_os_str().to_owned();
                p.push(".sig");
                let p = PathBuf::from(p);
                p.exists().then_some(p)
            });
            let mut headers = Vec::new();
            if let Some(p) = &sig_path {
                let bytes = std::fs::read(p).map_err(|e| CliError::io("read", p, &e))?;
                ObjectSignature::from_bytes(&bytes).map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?;
                headers.push((OBJECT_SIGNATURE_HEADER, STANDARD.encode(&bytes)));
            }
            let size = std::fs::metadata(file).map_err(|e| CliError::io("read", file, &e))?.len();
            let view: ObjectView = match part_size.or((size >= RESUMABLE_FROM).then_some(RESUMABLE_FROM)) {
                Some(part_size) => upload_resumable(&c, tenant, id, file, &headers, part_size)?,
                None => {
                    upload_with_progress(&c, &format!("/v1/tenants/{tenant}/datasets/{id}/objects"), file, &headers)?
                }
            };
            vault.emit(view, |view| {
                outln!(
                    "{} v{}: object {} ({} bytes), {}{}; log entry {}",
                    id,
                    view.version,
                    view.object_id,
                    view.size,
                    view.digest,
                    view.signer.as_ref().map(|s| format!(", signed by {s}")).unwrap_or_default(),
                    view.log_index
                );
            });
            Ok(())
        }
        DatasetCommand::Shred { id, tenant, cancel, vault } => {
            shred(vault, &format!("/v1/tenants/{tenant}/datasets/{id}/shred"), *cancel)
        }
        DatasetCommand::List { tenant, vault } => {
            let c = vault.client()?;
            let list: Vec<DatasetView> = block_on(c.get(&format!("/v1/tenants/{tenant}/datasets")))?;
            vault.emit(list, |list| {
                list.iter().for_each(print_dataset);
            });
            Ok(())
        }
        DatasetCommand::Show { id, tenant, vault } => {
            let c = vault.client()?;
            let d: DatasetView = block_on(c.get(&format!("/v1/tenants/{tenant}/datasets/{id}")))?;
            vault.emit(d, |d| print_dataset(&d));
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum JobCommand {
    /// Build, sign and submit a job manifest (or submit one written by hand with --manifest)
    Submit(Box<SubmitArgs>),
    /// List jobs
    List {
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Show a job
    Show {
        /// Job id
        id: String,
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// `coffre job submit`.
#[derive(Debug, Args)]
#[command(after_help = "\
The manifest pins each dataset version by the SHA-256 of its sealed object (fetched from the
vault), states the recipe and its bounds, and names the keys the trained model is sealed to. It
is signed with your signing key, which must be registered for your principal.

Example:
  coffre job submit --tenant bank-a --name fraud-lora --dataset messages --steps 200 \\
      --output-recipient \"$(coffre keygen -y owner.key)\" --sign owner.sign.key")]
pub struct SubmitArgs {
    /// The tenant
    #[arg(long)]
    pub tenant: String,
    /// Your signing key (from `coffre keygen --signing`)
    #[arg(long, value_name = "KEY")]
    pub sign: PathBuf,
    /// A complete manifest (coffre-job/v1 JSON) instead of the options below
    #[arg(long, value_name = "FILE", conflicts_with_all = ["dataset", "name"])]
    pub manifest: Option<PathBuf>,
    /// A name for people
    #[arg(long)]
    pub name: Option<String>,
    /// A dataset to read, `ID` (its latest version) or `ID@VERSION`; repeatable
    #[arg(long = "dataset", value_name = "ID[@VERSION]")]
    pub dataset: Vec<String>,
    /// Optimiser steps
    #[arg(long, default_value_t = 100)]
    pub steps: u64,
    /// Peak learning rate
    #[arg(long, default_value_t = 2e-4)]
    pub learning_rate: f64,
    /// `lora` or `full`
    #[arg(long, default_value = "lora")]
    pub mode: String,
    /// LoRA rank
    #[arg(long, default_value_t = 8)]
    pub lora_rank: u32,
    /// DP-SGD with this target ε (δ = 1e-5, clipping norm 1.0)
    #[arg(long, value_name = "EPSILON")]
    pub dp_epsilon: Option<f64>,
    /// The base model: its digest (sha256:…, as `coffre model upload` prints it) or a local
    /// model file or directory, whose digest is computed here
    #[arg(long, value_name = "DIGEST|PATH")]
    pub base_model: Option<String>,
    /// The trainer's measurement (sha256:…)
    #[arg(long)]
    pub trainer_measurement: Option<String>,
    /// A key the trained model is sealed to (coffre-p384-pub-…); repeatable
    #[arg(long = "output-recipient", required_unless_present_any = ["manifest", "seal_to_tenant_kek"])]
    pub output_recipients: Vec<String>,
    /// Also seal the trained model to the tenant's KEK, so that the vault holds its key (and
    /// can release it later under policy, like a dataset's); the vault refuses an artifact
    /// whose KEK stanza does not open
    #[arg(long)]
    pub seal_to_tenant_kek: bool,
    /// Days until no release is made for it
    #[arg(long, default_value_t = 30)]
    pub expires_days: u64,
    /// At most this many releases
    #[arg(long, default_value_t = 10)]
    pub max_releases: u64,
    #[command(flatten)]
    pub vault: VaultArgs,
}

fn print_job(j: &JobView) {
    outln!("job {}  datasets: {}", j.id, j.datasets.join(", "));
    outln!("  manifest {}  releases {}/{}  not after {}", j.manifest_digest, j.releases, j.max_releases, j.not_after);
}

pub fn job(cmd: &JobCommand) -> CliResult {
    match cmd {
        JobCommand::Submit(a) => {
            let key = crate::keys::load_signing_key(&a.sign)?;
            let c = a.vault.client()?;
            let manifest = match &a.manifest {
                Some(p) => serde_json::from_str::<JobManifest>(&read_text(p)?)
                    .map_err(|e| CliError::usage(format!("{}: {e}", p.display())))?,
                None => {
                    if a.dataset.is_empty() {
                        return Err(CliError::usage("name at least one --dataset"));
                    }
                    let mut datasets = Vec::new();
                    for spec in &a.dataset {
                        let (id, version) = match spec.split_once('@') {
                            Some((id, v)) => (
                                id,
                                Some(
                                    v.parse::<u64>()
                                        .map_err(|_| CliError::usage(format!("--dataset {spec}: bad version")))?,
                                ),
                            ),
                            None => (spec.as_str(), None),
                        };
                        let d: DatasetView = block_on(c.get(&format!("/v1/tenants/{}/datasets/{id}", a.tenant)))?;
                        let v = match version {
                            Some(v) => d.versions.iter().find(|x| x.version == v),
                            None => d.versions.last(),
                        }
                        .ok_or_else(|| {
                            CliError::usage(format!("dataset {id} has no such version; upload one first"))
                        })?;
                        datasets.push(JobDataset {
                            id: id.to_owned(),
                            version: v.version,
                            object_digest: coffre_log::Digest::parse(&v.digest).map_err(CliError::new)?,
                        });
                    }
                    let base_model = match &a.base_model {
                        Some(m) if !m.starts_with("sha256:") => {
                            let (_, d) = coffre_api::model::digest_path(Path::new(m))
                                .map_err(|e| CliError::usage(format!("--base-model: {e}")))?;
                            Some(d)
                        }
                        other => other.clone(),
                    };
                    let mut output_recipients =
                        a.output_recipients.iter().map(|k| key_text(k)).collect::<CliResult<Vec<_>>>()?;
                    if a.seal_to_tenant_kek {
                        let t: TenantView = block_on(c.get(&format!("/v1/tenants/{}", a.tenant)))?;
                        if !output_recipients.contains(&t.kek.public_key) {
                            output_recipients.push(t.kek.public_key);
                        }
                    }
                    let parse_digest = |s: &Option<String>, what: &str| {
                        s.as_deref()
                            .map(coffre_policies::Digest::parse)
                            .transpose()
                            .map_err(|e| CliError::usage(format!("{what}: {e}")))
                    };
                    let now = std::time::SystemTime::now()
                        .duration_since(std::time::UNIX_EPOCH)
                        .map(|d| d.as_secs())
                        .unwrap_or(0);
                    JobManifest {
                        format: coffre_api::job::JOB_FORMAT.into(),
                        tenant: a.tenant.clone(),
                        name: a.name.clone().unwrap_or_else(|| format!("{}-{}", a.dataset[0], a.mode)),
                        kind: coffre_policies::JobKind::FineTune,
                        datasets,
                        base_model: parse_digest(&base_model, "--base-model")?,
                        trainer_measurement: parse_digest(&a.trainer_measurement, "--trainer-measurement")?,
                        recipe: Recipe {
                            mode: a.mode.clone(),
                            steps: a.steps,
                            epochs: None,
                            learning_rate: a.learning_rate,
                            batch_size: 4,
                            max_seq_len: 128,
                            lora_rank: (a.mode == "lora").then_some(a.lora_rank),
                            lora_targets: if a.mode == "lora" {
                                vec!["q_proj".into(), "v_proj".into()]
                            } else {
                                vec![]
                            },
                            dp: a.dp_epsilon.map(|e| DpRecipe { max_grad_norm: 1.0, target_epsilon: e, delta: 1e-5 }),
                            seed: 42,
                        },
                        bounds: Bounds {
                            max_steps: a.steps,
                            max_learning_rate: a.learning_rate,
                            max_epsilon: a.dp_epsilon,
                        },
                        output_recipients,
                        not_after: now + a.expires_days * 86_400,
                        max_releases: a.max_releases,
                    }
                }
            };
            manifest.validate().map_err(|e| CliError::usage(format!("the manifest is not valid: {e}")))?;
            let signed: SignedJob = manifest.sign(&key).map_err(CliError::new)?;
            let j: JobView = block_on(c.post(&format!("/v1/tenants/{}/jobs", a.tenant), &signed))?;
            a.vault.emit(j, |j| print_job(&j));
            Ok(())
        }
        JobCommand::List { tenant, vault } => {
            let c = vault.client()?;
            let list: Vec<JobView> = block_on(c.get(&format!("/v1/tenants/{tenant}/jobs")))?;
            vault.emit(list, |list| {
                list.iter().for_each(print_job);
            });
            Ok(())
        }
        JobCommand::Show { id, tenant, vault } => {
            let c = vault.client()?;
            let j: JobView = block_on(c.get(&format!("/v1/tenants/{tenant}/jobs/{id}")))?;
            vault.emit(j, |j| print_job(&j));
            Ok(())
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum ArtifactCommand {
    /// List the tenant's registered artifacts
    List {
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Download a sealed artifact
    Download {
        /// Model name
        model: String,
        /// Version
        version: u64,
        /// The tenant
        #[arg(long)]
        tenant: String,
        /// Where to write it
        #[arg(short = 'o', long)]
        output: PathBuf,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// Decrypt a sealed artifact into a new directory (the owner's key)
    Open(crate::artifact::OpenArgs),
    /// Trace a sealed artifact back to its attested release and the log
    Verify(crate::artifact::VerifyArgs),
}

pub fn artifact(cmd: &ArtifactCommand) -> CliResult {
    match cmd {
        ArtifactCommand::List { tenant, vault } => {
            let c = vault.client()?;
            let list: Vec<ArtifactView> = block_on(c.get(&format!("/v1/tenants/{tenant}/artifacts")))?;
            vault.emit(list, |list| {
                for a in list {
                    outln!(
                        "{} v{}  {}  job {}  release {}  (log entry {})",
                        a.model,
                        a.version,
                        a.digest,
                        a.job,
                        a.release,
                        a.log_index
                    );
                }
            });
            Ok(())
        }
        ArtifactCommand::Download { model, version, tenant, output, vault } => {
            let c = vault.client()?;
            let out = crate::io::Output::create(output, false, true)?;
            let mut out = out;
            let n = block_on(c.download(
                &format!("/v1/tenants/{tenant}/artifacts/{model}/{version}/object"),
                &mut out,
                |_| {},
            ))?;
            out.commit()?;
            eprintln!("wrote {} ({} bytes)", output.display(), n);
            Ok(())
        }
        ArtifactCommand::Open(a) => crate::artifact::open(a),
        ArtifactCommand::Verify(a) => {
            if crate::artifact::verify(a)? {
                Ok(())
            } else {
                Err(CliError { message: String::new(), hint: None, code: 1 })
            }
        }
    }
}

#[derive(Debug, Subcommand)]
pub enum DenialCommand {
    /// Show a denial's every failed check (approvers and auditors)
    Show {
        /// The denial id (its log index)
        index: u64,
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

pub fn denial(cmd: &DenialCommand) -> CliResult {
    let DenialCommand::Show { index, tenant, vault } = cmd;
    let c = vault.client()?;
    let d: DenialView = block_on(c.get(&format!("/v1/tenants/{tenant}/denials/{index}")))?;
    vault.emit(d, |d| {
        outln!("denial {} at {}{}", d.index, d.at, d.job.map(|j| format!(", job {j}")).unwrap_or_default());
        for f in d.failed {
            let policy = if f.policy.is_empty() { String::new() } else { format!("[{}] ", f.policy) };
            outln!("  ✗ {policy}{}: expected {}; found {}", f.name, f.expected, f.actual);
        }
    });
    Ok(())
}

/// Exports the vault's log into `dir` (for `coffre audit verify --vault`).
pub fn export_log(vault: &VaultArgs, dir: &Path) -> CliResult<u64> {
    let c = vault.client()?;
    block_on(c.export_log(dir, |done, total| {
        if total > 10_000 && done % 10_240 == 0 {
            eprintln!("exporting the log: {done}/{total} entries");
        }
    }))
}

#[derive(Debug, Subcommand)]
pub enum ModelCommand {
    /// Store a base model (a GGUF file or a model directory) in the tenant's model store, by its
    /// digest; workers fetch it from there when a job pins it and they are given no --base-model
    #[command(after_help = "\
The digest printed is the one a job pins: `coffre job submit --base-model sha256:…`. The vault
recomputes it from the bytes it receives and refuses a mismatch; the worker recomputes it again
from what it downloads. Uploading the same model twice is harmless.

Example:
  coffre model upload --tenant bank-a models/smollm2-135m")]
    Upload {
        /// The model file or directory
        path: PathBuf,
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
    /// List the tenant's stored base models
    List {
        /// The tenant
        #[arg(long)]
        tenant: String,
        #[command(flatten)]
        vault: VaultArgs,
    },
}

/// Removes a temporary file when dropped.
struct TempFile(PathBuf);

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.0);
    }
}

pub fn model(cmd: &ModelCommand) -> CliResult {
    match cmd {
        ModelCommand::Upload { path, tenant, vault } => {
            let c = vault.client()?;
            let meta = std::fs::metadata(path).map_err(|e| CliError::io("read", path, &e))?;
            // A directory travels as a tar stream of its files, packed into a private temporary
            // file first (a base model is public weights); its digest is that of what is sent.
            let (kind, digest, file, _temp) = if meta.is_dir() {
                let tmp = std::env::temp_dir().join(format!(".coffre-model-{:016x}.tar", rand_u64()?));
                let f = {
                    use std::os::unix::fs::OpenOptionsExt;
                    std::fs::OpenOptions::new()
                        .write(true)
                        .create_new(true)
                        .mode(0o600)
                        .open(&tmp)
                        .map_err(|e| CliError::io("create", &tmp, &e))?
                };
                let temp = TempFile(tmp.clone());
                eprintln!("packing {} …", path.display());
                let digest = coffre_api::model::pack_dir(path, std::io::BufWriter::new(f))
                    .map_err(|e| CliError::usage(e.to_string()))?;
                ("dir", digest, tmp, Some(temp))
            } else {
                eprintln!("hashing {} …", path.display());
                let (_, digest) = coffre_api::model::digest_path(path).map_err(|e| CliError::usage(e.to_string()))?;
                ("file", digest, path.clone(), None)
            };
            let view: ModelView =
                upload_with_progress(&c, &format!("/v1/tenants/{tenant}/models/{digest}?kind={kind}"), &file, &[])?;
            vault.emit(view, |v| {
                outln!("{}  {} ({} bytes)", v.digest, v.kind, v.size);
                outln!("pin it in a job with: coffre job submit --base-model {} …", v.digest);
            });
            Ok(())
        }
        ModelCommand::List { tenant, vault } => {
            let c = vault.client()?;
            let list: Vec<ModelView> = block_on(c.get(&format!("/v1/tenants/{tenant}/models")))?;
            vault.emit(list, |list| {
                for m in list {
                    outln!("{}  {:4}  {:>12} bytes  uploaded {}", m.digest, m.kind, m.size, m.uploaded_at);
                }
            });
            Ok(())
        }
    }
}

fn rand_u64() -> CliResult<u64> {
    let mut b = [0u8; 8];
    aws_lc_rs::rand::fill(&mut b).map_err(|_| CliError::new("random number generator failed"))?;
    Ok(u64::from_le_bytes(b))
}
