//! A real vault for the tests: `coffred init` in a temporary directory, served over TLS on
//! loopback in development mode (trusting a simulated TEE made for the test binary), and reached
//! through the typed client with the pinned certificate. Nothing of the vault is faked.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, OnceLock};

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use coffre_api::client::{ClientError, Options, VaultClient};
use coffre_api::job::JobManifest;
use coffre_api::wire::*;
use coffre_api::{ObjectSignature, RawEvidence, WorkerKeys};
use coffre_attestation::simulated::SimulatedMachine;
use coffre_broker::development;
use coffre_policies::{ApproverSecretKey, Policy, Subject};
use coffre_seal::{RecipientSecretKey, SigningKey, SystemRandom};
use coffre_vault::server::{Running, ServeOptions};

pub const TENANT: &str = development::TENANT;
pub const DEBUG_OFF: u64 = 0x3_0000;
pub const DEBUG_ON: u64 = 0xb_0000;

/// The test binary's simulated machine: a Milan-layout SNP attester and two H100s.
pub type Hardware = SimulatedMachine;

pub fn hardware() -> &'static Hardware {
    static HW: OnceLock<Hardware> = OnceLock::new();
    HW.get_or_init(|| SimulatedMachine::generate(2).unwrap())
}

pub struct TestVault {
    pub dir: tempfile::TempDir,
    pub running: Running,
    pub url: String,
    pub admin: VaultClient,
    pub admin_token: String,
    pub fault: Arc<AtomicBool>,
    pub roots: PathBuf,
}

impl TestVault {
    pub fn client(&self, token: Option<&str>) -> VaultClient {
        VaultClient::new(&Options {
            url: self.url.clone(),
            fingerprint: Some(self.running.fingerprint),
            token: token.map(str::to_owned),
            identity: None,
        })
        .unwrap()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("vault")
    }

    /// A second `coffred` serving the same database, object store, root key and TLS key (a
    /// data directory of its own holding a copy of the configuration, as a second pod would).
    pub async fn replica(&self) -> TestVault {
        let dir = tempfile::tempdir().unwrap();
        let data = dir.path().join("vault");
        std::fs::create_dir_all(&data).unwrap();
        let config = coffre_vault::config::FILE;
        std::fs::copy(self.data_dir().join(config), data.join(config)).unwrap();
        let replica = serve(dir, data, self.roots.clone(), self.admin_token.clone()).await;
        assert_eq!(replica.running.fingerprint, self.running.fingerprint, "replicas share one TLS key");
        assert_eq!(replica.running.log_key, self.running.log_key, "replicas share one log key");
        replica
    }

    /// The vault's own database (SQLite or PostgreSQL, as it was initialised).
    pub async fn database(&self) -> coffre_vault::db::Pool {
        let config = coffre_vault::config::Config::load(&self.data_dir()).unwrap();
        coffre_vault::db::connect(&config.database_url).await.unwrap()
    }

    /// Stops the vault and serves the same data directory again.
    pub async fn restart(self) -> TestVault {
        let _ = self.running.shutdown.send(true);
        let _ = self.running.done.await;
        let data = self.dir.path().join("vault");
        serve(self.dir, data, self.roots, self.admin_token).await
    }
}

/// Serves the data directory `data` (inside `dir`) in development mode on loopback.
pub async fn serve(dir: tempfile::TempDir, data: PathBuf, roots: PathBuf, admin_token: String) -> TestVault {
    let fault = Arc::new(AtomicBool::new(false));
    let running = coffre_vault::server::start(ServeOptions {
        data_dir: data,
        dev_roots: Some(roots.clone()),
        passphrase: None,
        listen: Some("127.0.0.1:0".into()),
        log_fault: fault.clone(),
    })
    .await
    .unwrap();
    let url = format!("https://{}", running.addr);
    let admin = VaultClient::new(&Options {
        url: url.clone(),
        fingerprint: Some(running.fingerprint),
        token: Some(admin_token.clone()),
        identity: None,
    })
    .unwrap();
    TestVault { dir, running, url, admin, admin_token, fault, roots }
}

/// A vault in development mode, trusting the test binary's simulated TEE.
pub async fn vault() -> TestVault {
    vault_with(|_| {}).await
}

/// The engine the test vaults run on: `COFFRE_TEST_DATABASE=postgres` puts each on a fresh
/// database of the PostgreSQL server at `COFFRE_TEST_POSTGRES` (scripts/services starts one);
/// otherwise each has its SQLite file. scripts/test runs this suite once on each.
pub async fn test_database() -> Option<String> {
    match std::env::var("COFFRE_TEST_DATABASE").as_deref() {
        Ok("postgres") => Some(fresh_postgres_database().await.expect(
            "COFFRE_TEST_DATABASE=postgres needs COFFRE_TEST_POSTGRES (start one with scripts/services start DIR)",
        )),
        Ok("sqlite") | Err(_) => None,
        Ok(other) => panic!("COFFRE_TEST_DATABASE={other}: expected sqlite or postgres"),
    }
}

/// A new, empty database on the server at `COFFRE_TEST_POSTGRES` (None when unset; a failure
/// under CI=true, where no backend is skipped).
pub async fn fresh_postgres_database() -> Option<String> {
    let Ok(admin) = std::env::var("COFFRE_TEST_POSTGRES") else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but COFFRE_TEST_POSTGRES is unset: scripts/test starts PostgreSQL with scripts/services"
        );
        return None;
    };
    let mut id = [0u8; 8];
    aws_lc_rs::rand::fill(&mut id).unwrap();
    let name = format!("coffre_test_{}", hex::encode(id));
    Some(coffre_vault::db::create_postgres_database(&admin, &name).await.unwrap())
}

/// The object store the test vaults use: with `COFFRE_TEST_OBJECTS=s3`, a prefix of their own in
/// the bucket of the S3 server at `COFFRE_TEST_S3_ENDPOINT` (scripts/services starts s3s-fs);
/// otherwise their data directory.
pub fn test_objects(scratch: &std::path::Path) -> Option<coffre_vault::objects::S3Config> {
    match std::env::var("COFFRE_TEST_OBJECTS").as_deref() {
        Ok("s3") => Some(s3_bucket(scratch).expect(
            "COFFRE_TEST_OBJECTS=s3 needs COFFRE_TEST_S3_* (start an S3 server with scripts/services start DIR)",
        )),
        Ok("dir") | Err(_) => None,
        Ok(other) => panic!("COFFRE_TEST_OBJECTS={other}: expected dir or s3"),
    }
}

/// A fresh prefix in the test S3 bucket, its secret key written 0600 under `scratch` (None when
/// no S3 server is configured; a failure under CI=true).
pub fn s3_bucket(scratch: &std::path::Path) -> Option<coffre_vault::objects::S3Config> {
    use std::os::unix::fs::PermissionsExt;
    let var = |n: &str| std::env::var(n).ok();
    let (Some(endpoint), Some(bucket), Some(id), Some(secret)) = (
        var("COFFRE_TEST_S3_ENDPOINT"),
        var("COFFRE_TEST_S3_BUCKET"),
        var("COFFRE_TEST_S3_ACCESS_KEY"),
        var("COFFRE_TEST_S3_SECRET_KEY"),
    ) else {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "CI=true but COFFRE_TEST_S3_* is unset: scripts/test starts an S3 server with scripts/services"
        );
        return None;
    };
    std::fs::create_dir_all(scratch).unwrap();
    let file = scratch.join("s3-secret");
    std::fs::write(&file, secret).unwrap();
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
    let mut id_bytes = [0u8; 8];
    aws_lc_rs::rand::fill(&mut id_bytes).unwrap();
    Some(coffre_vault::objects::S3Config {
        bucket,
        prefix: Some(format!("vault-{}", hex::encode(id_bytes))),
        endpoint: Some(endpoint),
        region: "us-east-1".into(),
        access_key_id: Some(id),
        secret_access_key_file: Some(file),
    })
}

/// A fresh root-key label on the SoftHSM2 token of `scripts/services` (None when none is
/// configured; a failure under CI=true).
pub fn softhsm_token() -> Option<coffre_vault::pkcs11::Pkcs11Config> {
    let var = |n: &str| std::env::var(n).ok();
    match (var("COFFRE_TEST_PKCS11_MODULE"), var("COFFRE_TEST_PKCS11_TOKEN"), var("COFFRE_TEST_PKCS11_PIN_FILE")) {
        (Some(module), Some(token), Some(pin)) => {
            let mut label = [0u8; 6];
            aws_lc_rs::rand::fill(&mut label).unwrap();
            Some(coffre_vault::pkcs11::Pkcs11Config {
                module: module.into(),
                token,
                key_label: format!("coffre-test-{}", hex::encode(label)),
                pin_file: Some(pin.into()),
            })
        }
        _ => {
            assert!(
                std::env::var("CI").as_deref() != Ok("true"),
                "CI=true but SoftHSM2 is not configured: scripts/test starts it with scripts/services"
            );
            None
        }
    }
}

/// Where a test keeps files that outlive its vault's directory (S3 secret keys).
pub fn scratch() -> std::path::PathBuf {
    static DIR: OnceLock<tempfile::TempDir> = OnceLock::new();
    DIR.get_or_init(|| tempfile::tempdir().unwrap()).path().to_owned()
}

/// [`vault`] with its configuration file changed by `configure` before it starts.
pub async fn vault_with(configure: impl FnOnce(&mut coffre_vault::config::Config)) -> TestVault {
    let mut id = [0u8; 8];
    aws_lc_rs::rand::fill(&mut id).unwrap();
    let options = coffre_vault::server::InitOptions {
        database_url: test_database().await,
        s3: test_objects(&scratch().join(hex::encode(id))),
        ..Default::default()
    };
    vault_init(options, configure).await
}

/// A vault initialised with `options`, its configuration changed by `configure`.
pub async fn vault_init(
    options: coffre_vault::server::InitOptions,
    configure: impl FnOnce(&mut coffre_vault::config::Config),
) -> TestVault {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("vault");
    let init = coffre_vault::server::init(&data, None, &options).await.unwrap();
    let mut config = coffre_vault::config::Config::load(&data).unwrap();
    configure(&mut config);
    std::fs::write(data.join(coffre_vault::config::FILE), toml::to_string(&config).unwrap()).unwrap();
    let hw = hardware();
    let roots = dir.path().join("simulated-roots.der");
    std::fs::write(&roots, [hw.tee.ark_der(), hw.tee.ask_der(), hw.gpus[0].root_der()].concat()).unwrap();
    let v = serve(dir, data, roots, init.admin_token).await;
    assert_eq!(v.running.fingerprint, init.fingerprint);
    v
}

/// A tenant with every role, a 2-of-3 approver set and an active policy.
pub struct Tenant {
    pub id: String,
    pub admin: VaultClient,
    pub owner: VaultClient,
    pub owner_signing: SigningKey,
    pub owner_key: RecipientSecretKey,
    pub approvers: Vec<(VaultClient, ApproverSecretKey)>,
    pub auditor: VaultClient,
    pub worker: VaultClient,
    pub kek_public: String,
}

pub async fn principal(
    v: &TestVault,
    by: &VaultClient,
    tenant: &str,
    name: &str,
    roles: &[Role],
    signing: Option<String>,
) -> VaultClient {
    let created: CreatedPrincipal = by
        .post(
            &format!("/v1/tenants/{tenant}/principals"),
            &CreatePrincipal {
                name: name.into(),
                roles: roles.to_vec(),
                signing_key: signing,
                client_cert_sha256: None,
            },
        )
        .await
        .unwrap();
    assert!(created.token.starts_with("coffre_"));
    v.client(Some(&created.token))
}

pub fn approver_set(tenant: &str, keys: &[&ApproverSecretKey], threshold: u32, version: u64) -> String {
    let names = ["alice", "bob", "carol", "dave"];
    let mut doc = format!(
        "format = \"coffre-approvers/v1\"\ntenant = \"{tenant}\"\nversion = {version}\nthreshold = {threshold}\n"
    );
    for (k, n) in keys.iter().zip(names) {
        doc.push_str(&format!("\n[[approvers]]\nname = \"{n}\"\nkey = \"{}\"\n", k.public()));
    }
    doc
}

/// Proposes `document`, has the first `approvals` approvers approve, activates.
pub async fn activate_policy(t: &Tenant, document: &str, approvals: usize) -> Result<Logged, ClientError> {
    let policy = Policy::from_toml(document).unwrap();
    let view: PolicyView = t.approvers[0]
        .0
        .post(&format!("/v1/tenants/{}/policies", t.id), &ProposePolicy { document: document.into() })
        .await?;
    for (client, key) in t.approvers.iter().take(approvals) {
        let approval = key.approve(&Subject::of_policy(&policy)).unwrap();
        let _: Logged = client
            .post(
                &format!("/v1/tenants/{}/policies/{}/{}/approvals", t.id, view.id, view.version),
                &ApprovePolicy { approval: approval.to_json() },
            )
            .await?;
    }
    t.approvers[0].0.post(&format!("/v1/tenants/{}/policies/{}/{}/activate", t.id, view.id, view.version), &()).await
}

pub async fn tenant(v: &TestVault, id: &str) -> Tenant {
    let view: TenantView =
        v.admin.post("/v1/tenants", &CreateTenant { id: id.into(), name: format!("{id} Ltd") }).await.unwrap();
    let admin = principal(v, &v.admin, id, "tenant-admin", &[Role::Admin], None).await;
    let owner_signing = SigningKey::generate().unwrap();
    let owner =
        principal(v, &admin, id, "owner", &[Role::Owner], Some(owner_signing.verifying_key().to_string())).await;
    let mut approvers = Vec::new();
    for n in ["alice", "bob", "carol"] {
        let c = principal(v, &admin, id, n, &[Role::Approver], None).await;
        approvers.push((c, ApproverSecretKey::generate().unwrap()));
    }
    let auditor = principal(v, &admin, id, "auditor", &[Role::Auditor], None).await;
    let worker = principal(v, &admin, id, "worker", &[Role::WorkerOperator], None).await;
    let keys: Vec<&ApproverSecretKey> = approvers.iter().map(|(_, k)| k).collect();
    let _: Logged = admin
        .put(
            &format!("/v1/tenants/{id}/approvers"),
            &ChangeApprovers { document: approver_set(id, &keys, 2, 1), approvals: vec![] },
        )
        .await
        .unwrap();
    let t = Tenant {
        id: id.into(),
        admin,
        owner,
        owner_signing,
        owner_key: RecipientSecretKey::generate(&mut SystemRandom).unwrap(),
        approvers,
        auditor,
        worker,
        kek_public: view.kek.public_key,
    };
    let policy = development::DEVELOPMENT_POLICY.replace("tenant = \"example-bank\"", &format!("tenant = \"{id}\""));
    activate_policy(&t, &policy, 2).await.unwrap();
    t
}

/// Seals `plaintext` for `dataset` of `t` to the tenant KEK and the owner; returns the object and
/// its owner signature.
pub fn seal(t: &Tenant, dataset: &str, plaintext: &[u8]) -> (Vec<u8>, ObjectSignature) {
    use std::io::Write;
    let kek: coffre_seal::RecipientPublicKey = t.kek_public.parse().unwrap();
    let fields = coffre_seal::HeaderFields {
        tenant: t.id.clone(),
        dataset: dataset.into(),
        content_type: "application/jsonl".into(),
        plaintext_len: Some(plaintext.len() as u64),
    };
    let mut sealer = coffre_seal::seal(
        Vec::new(),
        &[kek, t.owner_key.public().clone()],
        &fields,
        coffre_seal::Workers::sequential(),
        &mut SystemRandom,
    )
    .unwrap();
    sealer.write_all(plaintext).unwrap();
    let (bytes, _) = sealer.finish().unwrap();
    let sig = ObjectSignature::sign(&t.owner_signing, coffre_log::Digest::of(&bytes)).unwrap();
    (bytes, sig)
}

pub async fn register_dataset(t: &Tenant, dataset: &str, labels: &[&str]) {
    let _: DatasetView = t
        .owner
        .post(
            &format!("/v1/tenants/{}/datasets", t.id),
            &RegisterDataset { id: dataset.into(), labels: labels.iter().map(|s| (*s).to_owned()).collect() },
        )
        .await
        .unwrap();
}

pub async fn upload(
    t: &Tenant,
    dataset: &str,
    object: Vec<u8>,
    sig: Option<&ObjectSignature>,
) -> Result<ObjectView, ClientError> {
    let headers: Vec<(&str, String)> =
        sig.iter().map(|s| (OBJECT_SIGNATURE_HEADER, STANDARD.encode(s.to_bytes()))).collect();
    t.owner.upload_bytes(&format!("/v1/tenants/{}/datasets/{dataset}/objects", t.id), object, &headers).await
}

pub async fn submit_job(t: &Tenant, manifest: &JobManifest) -> Result<JobView, ClientError> {
    t.owner.post(&format!("/v1/tenants/{}/jobs", t.id), &manifest.sign(&t.owner_signing).unwrap()).await
}

pub fn manifest(t: &Tenant, dataset: &str, object: &ObjectView, steps: u64) -> JobManifest {
    let mut m = development::manifest(
        dataset,
        coffre_log::Digest::parse(&object.digest).unwrap(),
        steps,
        t.owner_key.public(),
        4_102_444_800,
    );
    m.tenant = t.id.clone();
    m
}

/// A tenant with a dataset of one object and a job reading it: (tenant, plaintext, job).
pub async fn ready(v: &TestVault, id: &str) -> (Tenant, Vec<u8>, JobView) {
    let t = tenant(v, id).await;
    register_dataset(&t, "messages", &["customer-messages"]).await;
    let plaintext = b"{\"text\":\"customer 1 asks about a mortgage\"}\n".repeat(100);
    let (object, sig) = seal(&t, "messages", &plaintext);
    let view = upload(&t, "messages", object, Some(&sig)).await.unwrap();
    let job = submit_job(&t, &manifest(&t, "messages", &view, 100)).await.unwrap();
    (t, plaintext, job)
}

/// A worker's attempt: fresh keys, a challenge (or `nonce`), simulated evidence with guest policy
/// `bits`, bound to `bind_job`'s manifest (normally the job's own).
pub struct Attempt {
    pub hpke: coffre_seal::hpke::p256::KeyPair,
    pub signing: SigningKey,
    pub keys: WorkerKeys,
    pub request: ReleaseRequest,
}

pub async fn attempt(t: &Tenant, job: &JobView, bits: u64) -> Attempt {
    let challenge = t.worker.challenge(&t.id, &job.id).await.unwrap();
    attempt_with(t, job, &challenge.nonce, bits, None).await
}

pub async fn attempt_with(t: &Tenant, job: &JobView, nonce: &str, bits: u64, bind: Option<&[u8]>) -> Attempt {
    attempt_of(&t.id, job, nonce, bits, bind)
}

/// [`attempt_with`] for `tenant`'s job, without its [`Tenant`] (for tasks of their own).
pub fn attempt_of(tenant: &str, job: &JobView, nonce: &str, bits: u64, bind: Option<&[u8]>) -> Attempt {
    let hw = hardware();
    let (hpke, signing, keys) = development::worker_keys().unwrap();
    let signed: coffre_api::SignedJob = serde_json::from_str(&job.signed).unwrap();
    let manifest = signed.verify().unwrap().bytes;
    let nonce_bytes: [u8; 32] = hex::decode(nonce).unwrap().try_into().unwrap();
    let rd = coffre_api::report_data(&nonce_bytes, &keys.to_bytes(), bind.unwrap_or(&manifest));
    let evidence: RawEvidence = development::evidence(&hw.tee, &hw.gpus, rd, bits).unwrap();
    let request = ReleaseRequest {
        tenant: tenant.to_owned(),
        job: job.id.clone(),
        nonce: nonce.into(),
        worker_keys: STANDARD.encode(keys.to_bytes()),
        evidence,
    };
    Attempt { hpke, signing, keys, request }
}

/// Opens the released keys and checks each opens its object.
pub fn unwrap_keys(t: &Tenant, a: &Attempt, resp: &ReleaseResponse) -> Vec<coffre_seal::DataKey> {
    resp.keys
        .iter()
        .map(|k| {
            let enc = STANDARD.decode(&k.enc).unwrap();
            let ct = STANDARD.decode(&k.ciphertext).unwrap();
            let aad = coffre_broker::release::wrap_aad(resp.log_index, &t.id, &a.request.job, &k.key_id);
            let dek =
                coffre_seal::hpke::p256::open(&a.hpke, &enc, coffre_broker::release::RELEASE_INFO, &aad, &ct).unwrap();
            coffre_seal::DataKey::from_bytes(&dek).unwrap()
        })
        .collect()
}

/// Opens a sealed object with its released data key (through the object's own header).
pub fn open_object(object: &[u8], dek: &coffre_seal::DataKey) -> Vec<u8> {
    let (header, at) = coffre_seal::Header::parse_prefix(object).unwrap();
    let mut out = Vec::new();
    let mut reader = coffre_seal::open_body(&object[at..], &header, dek, coffre_seal::Workers::sequential()).unwrap();
    std::io::Read::read_to_end(&mut reader, &mut out).unwrap();
    out
}

/// Downloads the log as `by` sees it and audits it (development audience).
pub async fn audit(v: &TestVault, by: &VaultClient) -> coffre_broker::audit::Report {
    let dir = tempfile::tempdir().unwrap();
    by.export_log(dir.path(), |_, _| {}).await.unwrap();
    let store = coffre_log::DirStore::open_read_only(dir.path()).unwrap();
    let key = coffre_log::NoteVerifier::from_text(&v.running.log_key).unwrap();
    let hw = hardware();
    let verifier = coffre_attestation::composite::CompositeVerifier::new()
        .dangerous_accept_simulated_roots(hw.tee.ark_der(), hw.tee.ask_der(), hw.gpus[0].root_der())
        .unwrap()
        .dangerous_accept_sample();
    coffre_broker::audit::audit(&store, &key, None, &verifier, coffre_broker::audit::Audience::Development).0
}

/// A provenance statement for `artifact` (model `fraud-lora`, `version`) made under release
/// `release` of `job`, signed by `key`.
pub fn provenance(t: &Tenant, job: &JobView, release: u64, artifact: &[u8], key: &SigningKey, version: u64) -> String {
    use coffre_api::provenance::*;
    let signed: coffre_api::SignedJob = serde_json::from_str(&job.signed).unwrap();
    let manifest = signed.verify().unwrap().manifest;
    let statement = Statement {
        statement_type: STATEMENT_TYPE.into(),
        subject: vec![Subject {
            name: format!("fraud-lora-v{version}.coffre"),
            digest: [("sha256".to_owned(), coffre_log::Digest::of(artifact).hex())].into_iter().collect(),
        }],
        predicate_type: PREDICATE_TYPE.into(),
        predicate: Predicate {
            tenant: t.id.clone(),
            job: job.id.clone(),
            release,
            policies: vec!["development@1".into()],
            datasets: manifest.datasets.iter().map(|d| (d.id.clone(), d.object_digest.to_string())).collect(),
            base_model: None,
            trainer: "coffre-trainer".into(),
            trainer_version: "0.1.0".into(),
            trainer_measurement: None,
            recipe: manifest.recipe.clone(),
            privacy: None,
            final_loss: Some(0.5),
            held_out_loss: Some(0.6),
            evidence_bundle: String::new(),
        },
    };
    let env = Envelope::sign(INTOTO_PAYLOAD_TYPE, &serde_json::to_vec(&statement).unwrap(), key).unwrap();
    STANDARD.encode(env.to_bytes())
}

pub async fn upload_artifact(
    t: &Tenant,
    model: &str,
    version: u64,
    job: &JobView,
    release: u64,
    artifact: Vec<u8>,
    provenance: String,
) -> Result<ArtifactView, ClientError> {
    t.worker
        .upload_bytes(
            &format!("/v1/tenants/{}/artifacts/{model}/{version}?job={}&release={release}", t.id, job.id),
            artifact,
            &[(PROVENANCE_HEADER, provenance)],
        )
        .await
}

pub fn problem(e: ClientError) -> Problem {
    match e {
        ClientError::Problem(p) => *p,
        other => panic!("expected a problem document, got {other}"),
    }
}
