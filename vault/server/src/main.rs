//! `coffred`: the Coffre vault.

#![forbid(unsafe_code)]

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use coffre_vault::server::{self, ServeOptions};

// A release allocates and frees many short buffers on several threads (evidence, bundles, TLS
// records); mimalloc's per-thread free lists cost less CPU there than glibc's arenas.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "coffred",
    version,
    about = "The Coffre vault: releases data keys only to attested workers, and logs every decision",
    after_help = "\
Getting started (one machine, zero set-up):
  coffred init --data-dir /var/lib/coffre      # prints the TLS fingerprint, an admin token, the log key
  coffred serve --data-dir /var/lib/coffre     # HTTPS on 127.0.0.1:8443 (COFFRED_LISTEN to change)
  export COFFRE_VAULT=https://127.0.0.1:8443 COFFRE_VAULT_FINGERPRINT=sha256:… COFFRE_TOKEN=<admin token>
  coffre tenant create bank-a --name 'Bank A'

Beyond one machine (PostgreSQL, S3, a PKCS#11 HSM; each replica serves a copy of the data directory):
  export COFFRED_DATABASE_URL=postgres://coffre:PASSWORD@db.internal/coffre
  coffred init --data-dir DIR --replicated --s3-bucket coffre-objects --s3-region eu-central-1 \\
    --pkcs11-module /usr/lib/softhsm/libsofthsm2.so --pkcs11-token coffre --pkcs11-pin-file /run/secrets/coffre-pin

Development (simulated TEE; never for real data):
  coffred serve --data-dir DIR --dev --dev-roots simulated-roots.der"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Create a data directory: configuration, root key, TLS certificate, log key, admin token
    Init(Box<InitArgs>),
    /// Move a stopped vault to other backends (e.g. the embedded default to PostgreSQL, S3 and a
    /// PKCS#11 HSM) in a new data directory: the same log, log key, tenants, KEKs (sealed again
    /// under the new root key), principals, objects and TLS certificate. The old one is untouched
    #[command(after_help = "\
Example (the embedded default to the scale-out backends):
  coffred migrate --from /var/lib/coffre --data-dir /etc/coffre-new \\
    --database-url postgres://coffre@db/coffre --create-database --replicated \\
    --s3-bucket coffre-objects --s3-region eu-central-1 \\
    --pkcs11-module /opt/hsm/lib/libpkcs11.so --pkcs11-token coffre --pkcs11-pin-file /run/secrets/pin
Then serve the new directory. --passphrase-file, if the old root key has one, is used for the old
key and, without --pkcs11-module, for the new one too; --name and --listen are not used (the old
certificate and address are kept).")]
    Migrate(Box<MigrateArgs>),
    /// Serve the vault until SIGTERM or Ctrl-C (in-flight requests finish)
    Serve {
        /// The data directory
        #[arg(long, value_name = "DIR", env = "COFFRED_DATA_DIR")]
        data_dir: PathBuf,
        /// DEVELOPMENT MODE: trust simulated roots; logged, and marked on every response
        #[arg(long, requires = "dev_roots")]
        dev: bool,
        /// The simulated roots to trust in development mode (DER or PEM certificates)
        #[arg(long, value_name = "FILE", requires = "dev")]
        dev_roots: Option<PathBuf>,
        /// The root key's passphrase file
        #[arg(long, value_name = "FILE", env = "COFFRED_PASSPHRASE_FILE")]
        passphrase_file: Option<PathBuf>,
    },
    /// Manage the collateral store (VCEKs, AMD CRLs, NVIDIA RIMs) from an offline mirror
    Collateral {
        #[command(subcommand)]
        command: CollateralCommand,
    },
}

#[derive(Debug, clap::Args)]
struct InitArgs {
    /// The data directory (created 0700)
    #[arg(long, value_name = "DIR", env = "COFFRED_DATA_DIR")]
    data_dir: PathBuf,
    /// Derive the root key from the passphrase in FILE (Argon2id) instead of storing a random one
    #[arg(long, value_name = "FILE", env = "COFFRED_PASSPHRASE_FILE")]
    passphrase_file: Option<PathBuf>,
    /// Extra DNS names or IP addresses for the self-signed certificate; repeatable
    #[arg(long = "name", value_name = "HOST")]
    names: Vec<String>,
    /// Address to listen on [default: 127.0.0.1:8443]
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// The metadata database, postgres://USER:PASSWORD@HOST:PORT/DB (set COFFRED_DATABASE_URL
    /// instead to keep the password off the command line) [default: SQLite in the data directory]
    #[arg(long, value_name = "URL", env = "COFFRED_DATABASE_URL")]
    database_url: Option<String>,
    /// Other replicas will serve from the same PostgreSQL database (give each a copy of this
    /// data directory)
    #[arg(long, requires = "database_url")]
    replicated: bool,
    /// Create the PostgreSQL database named in --database-url if it does not exist (needs the
    /// right to create databases on that server)
    #[arg(long, requires = "database_url")]
    create_database: bool,
    /// Generate the root key, non-extractable, in the PKCS#11 token of this module (the
    /// vendor's library, e.g. /usr/lib/softhsm/libsofthsm2.so) instead of a file
    #[arg(long, value_name = "LIBRARY", requires = "pkcs11_token", conflicts_with = "passphrase_file")]
    pkcs11_module: Option<PathBuf>,
    /// The token's label
    #[arg(long, value_name = "LABEL", requires = "pkcs11_module")]
    pkcs11_token: Option<String>,
    /// The root key's label on the token
    #[arg(long, value_name = "LABEL", default_value = "coffre-root-key", requires = "pkcs11_module")]
    pkcs11_key_label: String,
    /// A file (0600) holding the token's user PIN [default: the COFFRED_PKCS11_PIN environment
    /// variable]; recorded in coffred.toml for `serve`. Never give the PIN itself on the command line
    #[arg(long, value_name = "FILE", requires = "pkcs11_module")]
    pkcs11_pin_file: Option<PathBuf>,
    /// Store sealed objects, artifacts and models in this S3 bucket (it must exist) instead of
    /// the data directory; credentials from the AWS environment (AWS_ACCESS_KEY_ID, …) or
    /// --s3-access-key-id with --s3-secret-key-file
    #[arg(long, value_name = "BUCKET")]
    s3_bucket: Option<String>,
    /// A key prefix inside the bucket
    #[arg(long, value_name = "PREFIX", requires = "s3_bucket")]
    s3_prefix: Option<String>,
    /// An S3-compatible endpoint (https://…; http:// only on loopback) [default: AWS]
    #[arg(long, value_name = "URL", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    /// The bucket's region
    #[arg(long, value_name = "REGION", default_value = "us-east-1", requires = "s3_bucket")]
    s3_region: String,
    /// The access key id (recorded in coffred.toml)
    #[arg(long, value_name = "ID", requires_all = ["s3_bucket", "s3_secret_key_file"])]
    s3_access_key_id: Option<String>,
    /// A file (0600) holding the secret access key (its path is recorded, never the key)
    #[arg(long, value_name = "FILE", requires = "s3_access_key_id")]
    s3_secret_key_file: Option<PathBuf>,
}

#[derive(Debug, clap::Args)]
struct MigrateArgs {
    /// The stopped vault's data directory
    #[arg(long, value_name = "DIR")]
    from: PathBuf,
    #[command(flatten)]
    to: InitArgs,
}

#[derive(Debug, Subcommand)]
enum CollateralCommand {
    /// Import every VCEK, AMD CRL, NVIDIA RIM and Intel PCS collateral (dcap-qvl *.json, filed by
    /// FMSPC) under SRC (idempotent)
    Import {
        /// The data directory
        #[arg(long, value_name = "DIR", env = "COFFRED_DATA_DIR")]
        data_dir: PathBuf,
        /// The mirror directory
        #[arg(value_name = "SRC")]
        source: PathBuf,
    },
}

fn read_passphrase(path: Option<&PathBuf>) -> anyhow::Result<Option<Vec<u8>>> {
    path.map(|p| {
        let text = std::fs::read(p).map_err(|e| anyhow::anyhow!("passphrase file {}: {e}", p.display()))?;
        let trimmed: Vec<u8> = text.strip_suffix(b"\n").unwrap_or(&text).to_vec();
        if trimmed.len() < 12 {
            anyhow::bail!("the passphrase in {} is shorter than 12 characters", p.display());
        }
        Ok(trimmed)
    })
    .transpose()
}

fn init_options(args: InitArgs) -> anyhow::Result<(server::InitOptions, Option<Vec<u8>>)> {
    let InitArgs {
        data_dir: _,
        passphrase_file,
        names,
        listen,
        database_url,
        replicated,
        create_database,
        pkcs11_module,
        pkcs11_token,
        pkcs11_key_label,
        pkcs11_pin_file,
        s3_bucket,
        s3_prefix,
        s3_endpoint,
        s3_region,
        s3_access_key_id,
        s3_secret_key_file,
    } = args;
    let pass = read_passphrase(passphrase_file.as_ref())?;
    let pkcs11 = pkcs11_module.zip(pkcs11_token).map(|(module, token)| coffre_vault::pkcs11::Pkcs11Config {
        module,
        token,
        key_label: pkcs11_key_label,
        pin_file: pkcs11_pin_file.map(|p| std::path::absolute(&p).unwrap_or(p)),
    });
    let s3 = s3_bucket.map(|bucket| coffre_vault::objects::S3Config {
        bucket,
        prefix: s3_prefix,
        endpoint: s3_endpoint,
        region: s3_region,
        access_key_id: s3_access_key_id,
        secret_access_key_file: s3_secret_key_file.map(|p| std::path::absolute(&p).unwrap_or(p)),
    });
    let options = server::InitOptions { names, listen, database_url, replicated, create_database, pkcs11, s3 };
    Ok((options, pass))
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Init(args) => {
            let data_dir = args.data_dir.clone();
            let (options, pass) = init_options(*args)?;
            let init = server::init(&data_dir, pass.as_deref(), &options).await?;
            println!("Initialized a Coffre vault in {}", data_dir.display());
            println!("  configuration     {}", init.config_file.display());
            println!("  TLS fingerprint   {}   (clients pin it: coffre --vault-fingerprint …)", init.fingerprint);
            println!("  log key           {}   (auditors pin it)", init.log_key);
            println!();
            println!("Vault administrator token (shown once; store it in a password manager):");
            println!("  {}", init.admin_token);
            println!();
            println!("Next: coffred serve --data-dir {}", data_dir.display());
            Ok(())
        }
        Command::Serve { data_dir, dev, dev_roots, passphrase_file } => {
            let pass = read_passphrase(passphrase_file.as_ref())?;
            let running = server::start(ServeOptions {
                data_dir,
                dev_roots: if dev { dev_roots } else { None },
                passphrase: pass,
                listen: None,
                log_fault: Default::default(),
            })
            .await?;
            if dev {
                eprintln!(
                    "\x1b[1;31mDEVELOPMENT MODE: simulated evidence may be accepted. This is logged and marked on every response. Never use it with real data.\x1b[0m"
                );
            }
            eprintln!("coffred listening on https://{}", running.addr);
            eprintln!("  TLS fingerprint {}", running.fingerprint);
            eprintln!("  log key         {}", running.log_key);
            let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {}
                _ = term.recv() => {}
            }
            eprintln!("coffred: stopping (in-flight requests finish)");
            let _ = running.shutdown.send(true);
            let _ = running.done.await;
            Ok(())
        }
        Command::Migrate(args) => {
            let MigrateArgs { from, to } = *args;
            let data_dir = to.data_dir.clone();
            let (options, pass) = init_options(to)?;
            println!("Migrating {} to {} …", from.display(), data_dir.display());
            let m = coffre_vault::migrate::migrate(&from, pass.as_deref(), &data_dir, &options).await?;
            for (table, n) in &m.rows {
                println!("  {table:16} {n} row(s)");
            }
            println!("  {} key(s) (the log key, each KEK version) sealed again under the new root key", m.resealed);
            println!("  {} object(s), {} bytes, copied", m.objects.0, m.objects.1);
            println!();
            println!("Done; {} is untouched. Next: coffred serve --data-dir {}", from.display(), data_dir.display());
            Ok(())
        }
        Command::Collateral { command: CollateralCommand::Import { data_dir, source } } => {
            let config = coffre_vault::config::Config::load(&data_dir)?;
            let pool = coffre_vault::db::connect(&config.database_url).await?;
            let report = coffre_vault::collateral::import(&pool, &source).await?;
            for (kind, name) in &report.stored {
                println!("stored {kind:5} {name}");
            }
            for (file, why) in &report.skipped {
                eprintln!("skipped {file}: {why}");
            }
            println!("{} item(s) stored, {} file(s) skipped", report.stored.len(), report.skipped.len());
            Ok(())
        }
    }
}

fn main() -> ExitCode {
    let filter = tracing_subscriber::EnvFilter::try_from_env("COFFRED_LOG").unwrap_or_else(|_| "info".into());
    tracing_subscriber::fmt().json().with_env_filter(filter).with_writer(std::io::stderr).init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread().enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("error: cannot start: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
