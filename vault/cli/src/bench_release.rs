//! `coffre bench release`: key releases per second and their latency, through a real `coffred`
//! process over TLS on loopback, beside the raw P-384 signature bound measured in the same run;
//! then the fleet scenario (every node of a GPU cloud attesting at once).

use std::path::PathBuf;

use clap::Args;

use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
#[command(after_help = "\
Starts `coffred --dev` (found beside this binary, or --coffred) in a temporary data directory,
sets up a tenant, a 1-of-1 approver set, the development policy, one sealed dataset and a job,
then measures releases:

  1. at 1, 16 and 64 concurrent workers, each presenting 1 simulated SEV-SNP report and 8
     simulated H100 reports (their own connection each): releases per second, p50 and p99;
  2. the fleet: NODES nodes × (1 CPU + 8 GPU reports), every challenge fetched, every piece of
     evidence signed and every request body built before the clock starts; the clock covers the
     release requests only (connection and TLS handshake, verification, policy, durable log
     append, key wrapping, response), each node on its own new connection;
  3. the raw bound: ECDSA P-384/SHA-384 verifications per second on this machine (all cores),
     as many as the scenario's reports carry.

Targets: p50 <= 5 ms for one worker; the fleet in <= 2x the raw signature bound; the server's
peak resident memory <= 256 MiB.")]
pub struct ReleaseBenchArgs {
    /// Nodes in the fleet scenario (2,250 nodes of 8 GPUs: 18,000 GPUs)
    #[arg(long, default_value_t = 2_250)]
    pub nodes: usize,
    /// GPUs per node
    #[arg(long, default_value_t = 8)]
    pub gpus: usize,
    /// Requests in each concurrency run
    #[arg(long, default_value_t = 256)]
    pub requests: usize,
    /// Concurrent requests in flight during the fleet run
    #[arg(long, default_value_t = 256)]
    pub fleet_concurrency: usize,
    /// The coffred binary [default: beside this one]
    #[arg(long, value_name = "PATH")]
    pub coffred: Option<PathBuf>,
    /// Append coffred's own log (JSON lines, at `info`) to FILE instead of discarding it
    #[arg(long, value_name = "FILE")]
    pub server_log: Option<PathBuf>,
    /// Also measure on PostgreSQL: the server at URL (postgres://USER[:PASSWORD]@HOST:PORT/DB; the
    /// bench creates fresh databases there), with one replica and with two sharing it, beside
    /// the SQLite figures of the same run
    #[arg(long, value_name = "URL")]
    pub database: Option<String>,
    /// With --database: objects in this S3 bucket (credentials from AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY) instead of a local directory
    #[arg(long, value_name = "BUCKET", requires = "database")]
    pub s3_bucket: Option<String>,
    /// The S3-compatible endpoint of --s3-bucket [default: AWS]
    #[arg(long, value_name = "URL", requires = "s3_bucket")]
    pub s3_endpoint: Option<String>,
}

#[cfg(not(feature = "simulated"))]
pub fn run(_args: &ReleaseBenchArgs) -> CliResult {
    Err(CliError::usage("bench release needs simulated evidence: build with --features simulated (scripts/demo does)"))
}

#[cfg(feature = "simulated")]
pub fn run(args: &ReleaseBenchArgs) -> CliResult {
    runtime(2)?.block_on(imp::run(args))
}

/// The network runtime the vault benchmarks drive their clients on.
#[cfg(feature = "simulated")]
pub(crate) fn runtime(threads: usize) -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .build()
        .map_err(|e| CliError::new(format!("cannot start: {e}")))
}

#[cfg(feature = "simulated")]
pub(crate) mod imp {
    use std::path::Path;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use base64::Engine;
    use base64::engine::general_purpose::STANDARD;
    use coffre_api::client::{Fingerprint, Options, VaultClient};
    use coffre_api::wire::*;
    use coffre_attestation::nvidia::Arch;
    use coffre_attestation::simulated::{SimulatedGpu, SimulatedPlatform, SimulatedReport, SimulatedTee};
    use coffre_broker::development;
    use coffre_policies::{ApproverSecretKey, Policy, Subject};
    use coffre_seal::{RecipientSecretKey, SigningKey, SystemRandom};

    use super::*;

    fn percentile(sorted: &[Duration], p: f64) -> Duration {
        if sorted.is_empty() {
            return Duration::ZERO;
        }
        let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
        sorted[i.min(sorted.len() - 1)]
    }

    /// The peak resident memory of a process, from /proc (Linux).
    fn peak_rss_mib(pid: u32) -> Option<f64> {
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
        let kib: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib / 1024.0)
    }

    pub(crate) fn coffred_path(given: Option<&Path>) -> CliResult<PathBuf> {
        if let Some(p) = given {
            return Ok(p.to_path_buf());
        }
        let exe = std::env::current_exe().map_err(|e| CliError::new(e.to_string()))?;
        let beside = exe.with_file_name("coffred");
        if beside.is_file() {
            Ok(beside)
        } else {
            Err(CliError::usage(format!("no coffred beside {}", exe.display()))
                .hint("build it (cargo build --release -p coffre-vault) or give --coffred PATH"))
        }
    }

    pub(crate) fn err(e: impl std::fmt::Display) -> CliError {
        CliError::new(format!("bench: {e}"))
    }

    pub(crate) struct Server {
        pub child: std::process::Child,
        pub url: String,
        pub fingerprint: Fingerprint,
        pub admin: String,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }

    pub(crate) fn start(coffred: &Path, dir: &Path, roots: &Path, log: Option<&Path>) -> CliResult<Server> {
        start_with(coffred, dir, roots, log, &[])
    }

    fn free_port() -> CliResult<u16> {
        let l = std::net::TcpListener::bind("127.0.0.1:0").map_err(err)?;
        Ok(l.local_addr().map_err(err)?.port())
    }

    /// `coffred init` with `init_args`, then `coffred serve --dev`.
    pub(crate) fn start_with(
        coffred: &Path,
        dir: &Path,
        roots: &Path,
        log: Option<&Path>,
        init_args: &[String],
    ) -> CliResult<Server> {
        let data = dir.join("vault");
        let port = free_port()?;
        let init = std::process::Command::new(coffred)
            .args(["init", "--data-dir"])
            .arg(&data)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(init_args)
            .output()
            .map_err(|e| CliError::new(format!("cannot run {}: {e}", coffred.display())))?;
        if !init.status.success() {
            return Err(err(String::from_utf8_lossy(&init.stderr)));
        }
        let text = String::from_utf8_lossy(&init.stdout).into_owned();
        let fingerprint = text
            .lines()
            .find_map(|l| {
                l.trim().strip_prefix("TLS fingerprint").map(|r| r.split_whitespace().next().unwrap_or("").to_owned())
            })
            .ok_or_else(|| err("coffred init printed no fingerprint"))?;
        let admin = text
            .lines()
            .map(str::trim)
            .find(|l| l.starts_with("coffre_"))
            .ok_or_else(|| err("no admin token"))?
            .to_owned();
        serve(coffred, &data, roots, log, port, Fingerprint::parse(&fingerprint).map_err(err)?, admin)
    }

    /// A second `coffred` serving `first`'s database and objects from a data directory of its own
    /// (a copy of the configuration, as a second pod would have).
    pub(crate) fn replica(coffred: &Path, first: &Path, dir: &Path, roots: &Path, of: &Server) -> CliResult<Server> {
        let data = dir.join("vault");
        std::fs::create_dir_all(&data).map_err(err)?;
        std::fs::copy(first.join("vault").join("coffred.toml"), data.join("coffred.toml")).map_err(err)?;
        serve(coffred, &data, roots, None, free_port()?, of.fingerprint, of.admin.clone())
    }

    fn serve(
        coffred: &Path,
        data: &Path,
        roots: &Path,
        log: Option<&Path>,
        port: u16,
        fingerprint: Fingerprint,
        admin: String,
    ) -> CliResult<Server> {
        let child = std::process::Command::new(coffred)
            .args(["serve", "--data-dir"])
            .arg(data)
            .env("COFFRED_LISTEN", format!("127.0.0.1:{port}"))
            .arg("--dev")
            .arg("--dev-roots")
            .arg(roots)
            .env("COFFRED_LOG", if log.is_some() { "info" } else { "warn" })
            .stdout(std::process::Stdio::null())
            .stderr(match log {
                Some(path) => std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(|e| CliError::new(format!("cannot open {}: {e}", path.display())))?
                    .into(),
                None => std::process::Stdio::null(),
            })
            .spawn()
            .map_err(err)?;
        let url = format!("https://127.0.0.1:{port}");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Ok(Server { child, url, fingerprint, admin })
    }

    pub(crate) fn client(s: &Server, token: &str) -> CliResult<VaultClient> {
        VaultClient::new(&Options {
            url: s.url.clone(),
            fingerprint: Some(s.fingerprint),
            token: Some(token.into()),
            identity: None,
        })
        .map_err(err)
    }

    async fn principal(by: &VaultClient, name: &str, roles: Vec<Role>, signing: Option<String>) -> CliResult<String> {
        let p: CreatedPrincipal = by
            .post(
                &format!("/v1/tenants/{}/principals", development::TENANT),
                &CreatePrincipal { name: name.into(), roles, signing_key: signing, client_cert_sha256: None },
            )
            .await
            .map_err(err)?;
        Ok(p.token)
    }

    /// What [`tenant`] set up.
    pub(crate) struct Tenant {
        pub owner: VaultClient,
        pub owner_key: SigningKey,
        pub worker_token: String,
    }

    /// The development tenant, set up through the API as a bank would: an owner, a 1-of-1
    /// approver set, the development policy approved and active, a worker operator, and the
    /// dataset `bench`.
    pub(crate) async fn tenant(server: &Server) -> CliResult<Tenant> {
        let admin = client(server, &server.admin)?;
        let _: TenantView = admin
            .post("/v1/tenants", &CreateTenant { id: development::TENANT.into(), name: "Example Bank".into() })
            .await
            .map_err(err)?;
        let tadmin = client(server, &principal(&admin, "tadmin", vec![Role::Admin], None).await?)?;
        let owner_key = SigningKey::generate().map_err(err)?;
        let owner = client(
            server,
            &principal(&tadmin, "owner", vec![Role::Owner], Some(owner_key.verifying_key().to_string())).await?,
        )?;
        let officer_client = client(server, &principal(&tadmin, "officer", vec![Role::Approver], None).await?)?;
        let worker_token = principal(&tadmin, "worker", vec![Role::WorkerOperator], None).await?;
        let officer = ApproverSecretKey::generate().map_err(err)?;
        let set = format!(
            "format = \"coffre-approvers/v1\"\ntenant = \"{}\"\nversion = 1\nthreshold = 1\n\n[[approvers]]\nname = \"officer\"\nkey = \"{}\"\n",
            development::TENANT,
            officer.public()
        );
        let t = development::TENANT;
        let _: Logged = tadmin
            .put(&format!("/v1/tenants/{t}/approvers"), &ChangeApprovers { document: set, approvals: vec![] })
            .await
            .map_err(err)?;
        let policy = development::DEVELOPMENT_POLICY;
        let _: PolicyView = officer_client
            .post(&format!("/v1/tenants/{t}/policies"), &ProposePolicy { document: policy.into() })
            .await
            .map_err(err)?;
        let approval = officer.approve(&Subject::of_policy(&Policy::from_toml(policy).map_err(err)?)).map_err(err)?;
        let _: Logged = officer_client
            .post(
                &format!("/v1/tenants/{t}/policies/development/1/approvals"),
                &ApprovePolicy { approval: approval.to_json() },
            )
            .await
            .map_err(err)?;
        let _: Logged =
            officer_client.post(&format!("/v1/tenants/{t}/policies/development/1/activate"), &()).await.map_err(err)?;
        let _: DatasetView = owner
            .post(&format!("/v1/tenants/{t}/datasets"), &RegisterDataset { id: "bench".into(), labels: vec![] })
            .await
            .map_err(err)?;
        Ok(Tenant { owner, owner_key, worker_token })
    }

    /// A prepared release: a fetched challenge and signed evidence, as the request body.
    struct Prepared {
        body: Vec<u8>,
    }

    /// What one set-up measured.
    struct Figures {
        rate_64: f64,
        p50_one: Duration,
        fleet_secs: f64,
        fleet_failed: usize,
        rss_mib: f64,
    }

    pub async fn run(args: &ReleaseBenchArgs) -> CliResult {
        let coffred = coffred_path(args.coffred.as_deref())?;
        let tmp = tempfile::tempdir().map_err(err)?;
        outln!(
            "coffre bench release: coffred --dev over TLS on loopback; {} CPU(s)",
            std::thread::available_parallelism().map_or(1, usize::from)
        );
        let tee = SimulatedTee::generate(SimulatedPlatform::default()).map_err(err)?;
        let gpus = SimulatedGpu::generate_machine(&vec![Arch::Hopper; args.gpus]).map_err(err)?;
        let roots = tmp.path().join("roots.der");
        let mut r = [tee.ark_der(), tee.ask_der()].concat();
        if let Some(g) = gpus.first() {
            r.extend_from_slice(g.root_der());
        }
        std::fs::write(&roots, r).map_err(err)?;
        let raw = raw_rate(&tee, &gpus)?;
        outln!("  raw ECDSA P-384/SHA-384 verify (aws-lc-rs, all cores)  {raw:>9.0} /s");
        let (tee, gpus) = (Arc::new(tee), Arc::new(gpus));

        // The embedded default; then, when asked, PostgreSQL (and S3) with one and two replicas.
        let mut setups: Vec<(String, Vec<String>, usize)> = vec![("SQLite, local objects".into(), Vec::new(), 1)];
        if let Some(url) = &args.database {
            let server = url.split('?').next().unwrap_or(url);
            let server = server.rsplit_once('/').map_or(server, |(b, _)| b);
            let objects = if args.s3_bucket.is_some() { "S3" } else { "local objects" };
            for replicas in [1usize, 2] {
                let mut id = [0u8; 6];
                aws_lc_rs::rand::fill(&mut id).map_err(err)?;
                let mut init = vec![
                    "--database-url".to_owned(),
                    format!("{server}/coffre_bench_{}", hex::encode(id)),
                    "--create-database".into(),
                    "--replicated".into(),
                ];
                if let Some(bucket) = &args.s3_bucket {
                    init.extend([
                        "--s3-bucket".into(),
                        bucket.clone(),
                        "--s3-prefix".into(),
                        format!("bench-{}", hex::encode(id)),
                    ]);
                    if let Some(e) = &args.s3_endpoint {
                        init.extend(["--s3-endpoint".into(), e.clone()]);
                    }
                }
                setups.push((format!("PostgreSQL, {objects}, {replicas} replica(s)"), init, replicas));
            }
        }
        let mut results = Vec::new();
        for (n, (label, init, replicas)) in setups.into_iter().enumerate() {
            outln!();
            outln!("{label}");
            let dir = tmp.path().join(format!("setup-{n}"));
            std::fs::create_dir_all(&dir).map_err(err)?;
            let figures = setup(args, &coffred, &dir, &roots, &init, replicas, tee.clone(), gpus.clone(), raw).await?;
            results.push((label, figures));
        }
        if results.len() > 1 {
            outln!();
            outln!(
                "  {:<38} {:>14} {:>12} {:>10} {:>12}",
                "set-up",
                "64 workers /s",
                "1 worker p50",
                "fleet",
                "peak RSS"
            );
            for (label, f) in &results {
                outln!(
                    "  {:<38} {:>14.0} {:>10.1}ms {:>9.2}s {:>9.0} MiB{}",
                    label,
                    f.rate_64,
                    f.p50_one.as_secs_f64() * 1e3,
                    f.fleet_secs,
                    f.rss_mib,
                    if f.fleet_failed > 0 { format!("  ({} FAILED)", f.fleet_failed) } else { String::new() }
                );
            }
        }
        Ok(())
    }

    /// One set-up: its vault (and replicas), the concurrency runs and the fleet.
    #[allow(clippy::too_many_arguments)]
    async fn setup(
        args: &ReleaseBenchArgs,
        coffred: &Path,
        dir: &Path,
        roots: &Path,
        init: &[String],
        replicas: usize,
        tee: Arc<SimulatedTee>,
        gpus: Arc<Vec<SimulatedGpu>>,
        raw: f64,
    ) -> CliResult<Figures> {
        let first = start_with(coffred, dir, roots, args.server_log.as_deref(), init)?;
        let mut servers = vec![first];
        for n in 1..replicas {
            let rdir = dir.join(format!("replica-{n}"));
            std::fs::create_dir_all(&rdir).map_err(err)?;
            let r = replica(coffred, dir, &rdir, roots, &servers[0])?;
            servers.push(r);
        }
        let server = &servers[0];
        let pids: Vec<u32> = servers.iter().map(|s| s.child.id()).collect();

        let Tenant { owner, owner_key, worker_token } = tenant(server).await?;
        let t = development::TENANT;
        let tenant: TenantView = owner.get(&format!("/v1/tenants/{t}")).await.map_err(err)?;
        let kek: coffre_seal::RecipientPublicKey = tenant.kek.public_key.parse().map_err(err)?;
        let fields = coffre_seal::HeaderFields {
            tenant: t.into(),
            dataset: "bench".into(),
            content_type: "application/jsonl".into(),
            plaintext_len: Some(64),
        };
        let mut sealer =
            coffre_seal::seal(Vec::new(), &[kek], &fields, coffre_seal::Workers::sequential(), &mut SystemRandom)
                .map_err(err)?;
        std::io::Write::write_all(&mut sealer, &[b'x'; 64]).map_err(err)?;
        let (object, _) = sealer.finish().map_err(err)?;
        let view: ObjectView =
            owner.upload_bytes(&format!("/v1/tenants/{t}/datasets/bench/objects"), object, &[]).await.map_err(err)?;
        let output = RecipientSecretKey::generate(&mut SystemRandom).map_err(err)?;
        let mut m = development::manifest(
            "bench",
            coffre_log::Digest::parse(&view.digest).map_err(err)?,
            100,
            output.public(),
            4_102_444_800,
        );
        m.max_releases = 1_000_000;
        let job: JobView =
            owner.post(&format!("/v1/tenants/{t}/jobs"), &m.sign(&owner_key).map_err(err)?).await.map_err(err)?;
        let manifest = m.to_bytes();

        // Prepares `n` releases: a challenge each (fetched now), evidence signed now.
        let prepare = |n: usize| {
            let (gpus, tee, manifest, worker_token) =
                (gpus.clone(), tee.clone(), manifest.clone(), worker_token.clone());
            let job_id = job.id.clone();
            let server_url = server.url.clone();
            let fp = server.fingerprint;
            async move {
                let c = VaultClient::new(&Options {
                    url: server_url,
                    fingerprint: Some(fp),
                    token: Some(worker_token),
                    identity: None,
                })
                .map_err(err)?;
                let mut out = Vec::with_capacity(n);
                for _ in 0..n {
                    let challenge = c.challenge(development::TENANT, &job_id).await.map_err(err)?;
                    let (_hpke, _signing, keys) = development::worker_keys().map_err(err)?;
                    let nonce: [u8; 32] = hex::decode(&challenge.nonce)
                        .ok()
                        .and_then(|b| b.try_into().ok())
                        .ok_or_else(|| err("bad nonce"))?;
                    let rd = coffre_api::report_data(&nonce, &keys.to_bytes(), &manifest);
                    let evidence =
                        development::evidence(&tee, &gpus, rd, SimulatedReport::default().policy).map_err(err)?;
                    let request = ReleaseRequest {
                        tenant: development::TENANT.into(),
                        job: job_id.clone(),
                        nonce: challenge.nonce,
                        worker_keys: STANDARD.encode(keys.to_bytes()),
                        evidence,
                    };
                    out.push(Prepared { body: serde_json::to_vec(&request).map_err(err)? });
                }
                Ok::<_, CliError>(out)
            }
        };

        outln!("  {:<12} {:>10} {:>10} {:>10} {:>14}", "workers", "releases/s", "p50", "p99", "bound /s");
        let per_release = (1 + args.gpus) as f64;
        let mut one_worker_p50 = Duration::ZERO;
        let mut rate_64 = 0.0;
        for &concurrency in &[1usize, 16, 64] {
            let n = if concurrency == 1 { args.requests.min(200) } else { args.requests };
            let prepared = prepare(n).await?;
            let (elapsed, latencies, failures) = fire(&servers, &worker_token, prepared, concurrency, false).await?;
            let mut sorted = latencies.clone();
            sorted.sort();
            let p50 = percentile(&sorted, 0.5);
            if concurrency == 1 {
                one_worker_p50 = p50;
            }
            if concurrency == 64 {
                rate_64 = latencies.len() as f64 / elapsed.as_secs_f64();
            }
            outln!(
                "  {:<12} {:>10.0} {:>8.1}ms {:>8.1}ms {:>14.0}{}",
                concurrency,
                latencies.len() as f64 / elapsed.as_secs_f64(),
                p50.as_secs_f64() * 1e3,
                percentile(&sorted, 0.99).as_secs_f64() * 1e3,
                raw / per_release,
                if failures > 0 { format!("  ({failures} FAILED)") } else { String::new() }
            );
        }
        outln!(
            "  one worker: p50 {:.1} ms (target <= 5 ms: {})",
            one_worker_p50.as_secs_f64() * 1e3,
            if one_worker_p50 <= Duration::from_millis(5) { "met" } else { "NOT met" }
        );

        outln!();
        outln!(
            "  fleet: {} nodes x (1 CPU + {} GPU reports), preparing challenges and evidence...",
            args.nodes,
            args.gpus
        );
        let prepared = prepare(args.nodes).await?;
        let (elapsed, latencies, failures) =
            fire(&servers, &worker_token, prepared, args.fleet_concurrency, true).await?;
        let mut sorted = latencies.clone();
        sorted.sort();
        let bound = (args.nodes as f64 * per_release) / raw;
        let ratio = elapsed.as_secs_f64() / bound;
        outln!(
            "  fleet cleared in {:.2} s ({} releases, {} failed; p50 {:.0} ms, p99 {:.0} ms); raw signature bound {:.2} s: {:.2}x (target <= 2x: {})",
            elapsed.as_secs_f64(),
            latencies.len(),
            failures,
            percentile(&sorted, 0.5).as_secs_f64() * 1e3,
            percentile(&sorted, 0.99).as_secs_f64() * 1e3,
            bound,
            ratio,
            if ratio <= 2.0 && failures == 0 { "met" } else { "NOT met" }
        );
        let rss = pids.iter().filter_map(|p| peak_rss_mib(*p)).fold(0.0, f64::max);
        outln!(
            "  coffred peak resident memory {rss:.0} MiB{} (target <= 256 MiB: {})",
            if pids.len() > 1 { " (the larger replica)" } else { "" },
            if rss <= 256.0 { "met" } else { "NOT met" }
        );
        Ok(Figures {
            rate_64,
            p50_one: one_worker_p50,
            fleet_secs: elapsed.as_secs_f64(),
            fleet_failed: failures,
            rss_mib: rss,
        })
    }

    /// Sends every prepared release, `concurrency` at a time; with `fresh`, each on its own new
    /// connection (a node of the fleet), else one connection per in-flight slot.
    async fn fire(
        servers: &[Server],
        token: &str,
        prepared: Vec<Prepared>,
        concurrency: usize,
        fresh: bool,
    ) -> CliResult<(Duration, Vec<Duration>, usize)> {
        use futures_util::StreamExt;
        let shared: Vec<VaultClient> = servers.iter().map(|s| client(s, token)).collect::<CliResult<_>>()?;
        // Each node's client is built before the clock starts (a node has its own already); its
        // connection, TLS handshake included, is made inside the clock. With replicas, requests
        // alternate between them (as a load balancer would spread them).
        let mut requests = Vec::with_capacity(prepared.len());
        for (i, p) in prepared.into_iter().enumerate() {
            let at = i % servers.len();
            let c = if fresh { client(&servers[at], token)? } else { shared[at].clone() };
            requests.push((c, p));
        }
        let started = Instant::now();
        let results: Vec<Result<Duration, String>> =
            futures_util::stream::iter(requests.into_iter().map(|(c, p)| async move {
                let t = Instant::now();
                let _: ReleaseResponse = c.post_json_bytes("/v1/release", p.body).await.map_err(|e| e.to_string())?;
                Ok(t.elapsed())
            }))
            .buffer_unordered(concurrency)
            .collect()
            .await;
        let elapsed = started.elapsed();
        let mut latencies = Vec::new();
        let mut failures = 0;
        for r in results {
            match r {
                Ok(d) => latencies.push(d),
                Err(e) => {
                    if failures == 0 {
                        eprintln!("    first failure: {e}");
                    }
                    failures += 1;
                }
            }
        }
        Ok((elapsed, latencies, failures))
    }

    /// ECDSA P-384/SHA-384 verifications per second on all cores, on the scenario's own messages.
    fn raw_rate(tee: &SimulatedTee, gpus: &[SimulatedGpu]) -> CliResult<f64> {
        use coffre_attestation::x509::{Certificate, PublicKey};
        let (_hpke, _signing, keys) = development::worker_keys().map_err(err)?;
        let rd = coffre_api::report_data(&[1; 32], &keys.to_bytes(), b"m");
        let raw = development::evidence(tee, gpus, rd, SimulatedReport::default().policy).map_err(err)?;
        let mut sigs: Vec<(Vec<u8>, Vec<u8>, Vec<u8>)> = Vec::new();
        if let coffre_api::RawCpu::Snp { report, .. } = &raw.cpu {
            let (parsed, _) = coffre_attestation::snp::Report::parse(report).map_err(err)?;
            let sig = coffre_attestation::crypto::snp_signature_to_p1363(parsed.signature_r(), parsed.signature_s())
                .ok_or_else(|| err("signature"))?;
            let point = match Certificate::from_der(tee.vcek_der()).map_err(err)?.public_key {
                PublicKey::P384(p) => p,
                _ => return Err(err("VCEK key")),
            };
            sigs.push((point, parsed.signed_bytes().to_vec(), sig.to_vec()));
        }
        for g in &raw.gpus {
            let spdm = coffre_attestation::nvidia::spdm::SpdmReport::parse(&g.report).map_err(err)?;
            let leaf = Certificate::from_der(g.chain.first().ok_or_else(|| err("chain"))?).map_err(err)?;
            if let PublicKey::P384(p) = leaf.public_key {
                sigs.push((p, g.report[..spdm.signed_len].to_vec(), spdm.signature.to_vec()));
            }
        }
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        let sigs = Arc::new(sigs);
        let started = Instant::now();
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let sigs = sigs.clone();
                std::thread::spawn(move || {
                    let mut n = 0u64;
                    let t = Instant::now();
                    while t.elapsed() < Duration::from_secs(2) {
                        for (p, m, s) in sigs.iter() {
                            if coffre_attestation::crypto::verify_ecdsa_p384_sha384_fixed(p, m, s) {
                                n += 1;
                            }
                        }
                    }
                    n
                })
            })
            .collect();
        let total: u64 = handles.into_iter().map(|h| h.join().unwrap_or(0)).sum();
        Ok(total as f64 / started.elapsed().as_secs_f64())
    }
}
