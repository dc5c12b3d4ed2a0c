//! `coffre demo --tour`: each piece on its own, narrated, in this process through the same code
//! paths as the individual commands (keys, seal, inspect, open, tampering, random access,
//! attestation, the log and its audit, the trainer). `coffre demo` without `--tour` runs the
//! whole flow through the real vault and worker processes ([`crate::demo_vault`]).

use std::fs;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use aws_lc_rs::digest;
use clap::Args;
use coffre_seal::{RecipientSecretKey, SystemRandom, Workers};

use crate::demo_data;
use crate::error::{CliError, CliResult};
use crate::io::bytes;
use crate::keys::{KeygenArgs, run_keygen};
use crate::sealing::{InspectArgs, OpenArgs, SealArgs, run_inspect, run_open, run_seal};

#[derive(Debug, Args)]
#[command(after_help = "\
Without --tour: a development vault (coffred --dev), the bank's people with coffre and an attested
worker (coffre-worker --tee simulated), each step printed as the command, then run as that command;
coffred and coffre-worker must sit beside coffre (scripts/demo builds all three).

Everything happens in DIR (default: a new directory under the system temporary directory),
which is kept so you can look at the files and rerun the printed commands yourself.")]
pub struct DemoArgs {
    /// Working directory; must be empty or absent
    #[arg(long, value_name = "DIR")]
    pub dir: Option<PathBuf>,

    /// Number of synthetic customer messages to generate [default: 2,000; 50,000 with --tour]
    #[arg(long, value_name = "N")]
    pub records: Option<usize>,

    /// Base model for the training step: a GGUF file or a Hugging Face directory (scripts/demo
    /// fetches SmolLM2-135M-Instruct); without it a tiny random model is generated
    #[arg(long, value_name = "PATH")]
    pub model: Option<PathBuf>,

    /// Optimizer steps in the training step
    #[arg(long, default_value_t = 20, value_name = "N")]
    pub train_steps: usize,

    /// Leave the vault running at the end, to explore it with `coffre`
    #[arg(long)]
    pub keep: bool,

    /// The offline tour instead: sealing, attestation, the log and the trainer, each in this
    /// process with no vault (what each piece does on its own)
    #[arg(long, conflicts_with = "keep")]
    pub tour: bool,
}

pub(crate) fn step(n: u32, text: &str) {
    outln!("\n{n}. {text}");
}

pub(crate) fn cmd(line: &str) {
    outln!("   $ {line}");
}

fn sha256_file(path: &Path) -> CliResult<String> {
    let data = fs::read(path).map_err(|e| CliError::io("read", path, &e))?;
    Ok(hex::encode(digest::digest(&digest::SHA256, &data)))
}

fn prepare_dir(dir: Option<&Path>) -> CliResult<PathBuf> {
    match dir {
        None => tempfile::Builder::new()
            .prefix("coffre-demo-")
            .tempdir()
            .map(tempfile::TempDir::keep)
            .map_err(|e| CliError::io("create a directory in", &std::env::temp_dir(), &e)),
        Some(d) => {
            if d.exists() && fs::read_dir(d).map_err(|e| CliError::io("read", d, &e))?.next().is_some() {
                return Err(CliError::usage(format!("{} is not empty", d.display()))
                    .hint("give an empty or new directory with --dir, or leave --dir out"));
            }
            fs::create_dir_all(d).map_err(|e| CliError::io("create", d, &e))?;
            Ok(d.to_path_buf())
        }
    }
}

pub fn run(args: &DemoArgs) -> CliResult {
    if !args.tour {
        let dir = prepare_dir(args.dir.as_deref())?;
        return crate::demo_vault::run(args, &dir, args.records.unwrap_or(2_000));
    }
    let records = args.records.unwrap_or(50_000);
    let started = Instant::now();
    let dir = prepare_dir(args.dir.as_deref())?;
    let p = |name: &str| dir.join(name);
    outln!("Coffre demo in {}", dir.display());
    outln!("A bank seals customer messages on its own machine; only ciphertext would ever leave it.");

    step(
        1,
        &format!("Generate a synthetic dataset: {} customer messages with personal data and an intent label", records),
    );
    let data = p("customer-messages.jsonl");
    let file = fs::File::create(&data).map_err(|e| CliError::io("create", &data, &e))?;
    let mut w = BufWriter::new(file);
    let size = demo_data::write_jsonl(&mut w, records, 2026).and_then(|n| w.flush().map(|()| n));
    let size = size.map_err(|e| CliError::io("write", &data, &e))?;
    let first = fs::read_to_string(&data).map_err(|e| CliError::io("read", &data, &e))?;
    outln!("   {} ({}); first record:", data.display(), bytes(size));
    outln!("   {}", first.lines().next().unwrap_or_default());

    step(
        2,
        "Make the keys: the data owner's own key, the tenant's key-encryption key (KEK), and the owner's signing key",
    );
    let owner_key = p("owner.key");
    let kek_key = p("tenant-kek.key");
    for key in [&owner_key, &kek_key] {
        cmd(&format!("coffre keygen -o {}", key.display()));
        run_keygen(&KeygenArgs { output: Some(key.clone()), show_public: None, approver: false, signing: false })?;
    }
    let sign_key = p("owner.sign.key");
    cmd(&format!("coffre keygen --signing -o {}", sign_key.display()));
    run_keygen(&KeygenArgs { output: Some(sign_key.clone()), show_public: None, approver: false, signing: true })?;
    let signer = crate::keys::load_signing_key(&sign_key)?.verifying_key().to_string();
    let owner = crate::keys::load_identity(&owner_key)?;
    let kek = crate::keys::load_identity(&kek_key)?;

    step(3, "Seal the dataset to both recipients, signed by its owner");
    let sealed = p("customer-messages.jsonl.coffre");
    let seal_args = SealArgs {
        recipients: vec![owner.public().to_string(), kek.public().to_string()],
        recipient_files: vec![],
        tenant: Some("example-bank".into()),
        dataset: Some("customer-messages-2026-11".into()),
        content_type: None,
        output: sealed.clone(),
        force: false,
        threads: 0,
        sign: Some(sign_key.clone()),
        signature: None,
        input: data.clone(),
    };
    cmd(&format!(
        "coffre seal -r {}… -r {}… --tenant example-bank --dataset customer-messages-2026-11 {} -o {} --sign {}",
        &seal_args.recipients[0][..28],
        &seal_args.recipients[1][..28],
        data.display(),
        sealed.display(),
        sign_key.display()
    ));
    let report = run_seal(&seal_args)?;
    crate::sealing::print_seal_summary(&seal_args, &report);

    step(4, "What anyone can read without a key: the header");
    cmd(&format!("coffre inspect {}", sealed.display()));
    run_inspect(&InspectArgs { input: sealed.clone(), json: false })?;

    step(5, "Open it as the data owner and as the tenant KEK: byte-identical");
    let original = sha256_file(&data)?;
    for (who, key, out) in
        [("owner", &owner_key, p("opened-by-owner.jsonl")), ("tenant KEK", &kek_key, p("opened-by-kek.jsonl"))]
    {
        cmd(&format!(
            "coffre open -i {} {} -o {} --verify-signer {}…",
            key.display(),
            sealed.display(),
            out.display(),
            &signer[..28]
        ));
        run_open(&OpenArgs {
            identity: key.clone(),
            output: out.clone(),
            force: false,
            threads: 0,
            verify_signer: Some(signer.clone()),
            signature: None,
            input: sealed.clone(),
        })?;
        let got = sha256_file(&out)?;
        if got != original {
            return Err(CliError::new(format!("{who}: opened data differs from the original (this is a bug)")));
        }
        outln!("   {who}: SHA-256 {got} = original");
    }

    step(6, "Someone else's key is refused, and told who can open it");
    let outsider_key = p("outsider.key");
    crate::keys::write_secret_file(
        &outsider_key,
        RecipientSecretKey::generate(&mut SystemRandom)
            .map_err(|e| CliError::seal("keygen", e))?
            .to_key_file()
            .as_bytes(),
    )?;
    let refused = p("opened-by-outsider.jsonl");
    cmd(&format!("coffre open -i {} {} -o {}", outsider_key.display(), sealed.display(), refused.display()));
    expect_refusal(
        run_open(&OpenArgs {
            identity: outsider_key,
            output: refused.clone(),
            force: false,
            threads: 0,
            verify_signer: None,
            signature: None,
            input: sealed.clone(),
        }),
        &refused,
    )?;

    step(7, "One flipped bit in the ciphertext is detected; no plaintext file appears");
    let tampered = p("tampered.jsonl.coffre");
    let mut bytes_ = fs::read(&sealed).map_err(|e| CliError::io("read", &sealed, &e))?;
    let at = bytes_.len() / 2;
    bytes_[at] ^= 0x04;
    fs::write(&tampered, &bytes_).map_err(|e| CliError::io("write", &tampered, &e))?;
    outln!("   (flipped one bit at byte {at} of {})", bytes(bytes_.len() as u64));
    let out = p("opened-tampered.jsonl");
    cmd(&format!("coffre open -i {} {} -o {}", owner_key.display(), tampered.display(), out.display()));
    expect_refusal(
        run_open(&OpenArgs {
            identity: owner_key.clone(),
            output: out.clone(),
            force: false,
            threads: 0,
            verify_signer: None,
            signature: None,
            input: tampered,
        }),
        &out,
    )?;

    step(8, "Random access: read one record from the middle, opening only the chunks it spans");
    let text = fs::read_to_string(&data).map_err(|e| CliError::io("read", &data, &e))?;
    let line_no = records / 2;
    let offset: usize = text.lines().take(line_no).map(|l| l.len() + 1).sum();
    let want = text.lines().nth(line_no).unwrap_or_default().len();
    let file = fs::File::open(&sealed).map_err(|e| CliError::io("open", &sealed, &e))?;
    let (_, mut ra) = coffre_seal::open_random_access(file, &owner, Workers::sequential())
        .map_err(|e| CliError::seal(&sealed.display().to_string(), e))?;
    let mut buf = vec![0u8; want];
    ra.read_at(offset as u64, &mut buf).map_err(|e| CliError::seal(&sealed.display().to_string(), e))?;
    outln!("   record {line_no} at plaintext offset {offset}: {}", String::from_utf8_lossy(&buf));

    let next = attestation_step(&dir)?;
    crate::demo_train::run(next, &dir, &p("opened-by-kek.jsonl"), args.model.as_deref(), args.train_steps)?;

    outln!(
        "\nDone in {:.1} s. The files are in {}; rerun any command above to try it yourself.",
        started.elapsed().as_secs_f64(),
        dir.display()
    );
    Ok(())
}

fn expect_refusal<T>(result: CliResult<T>, output: &Path) -> CliResult {
    match result {
        Ok(_) => Err(CliError::new("the demo expected a refusal here but the command succeeded (this is a bug)")),
        Err(err) => {
            for line in err.to_string().lines() {
                outln!("   {line}");
            }
            if output.exists() {
                return Err(CliError::new(format!("{} exists after a refused open (this is a bug)", output.display())));
            }
            outln!("   -> refused as expected; {} was not created", output.display());
            Ok(())
        }
    }
}

/// Steps 9-12; returns the next step's number.
#[cfg(feature = "simulated")]
fn attestation_step(dir: &Path) -> CliResult<u32> {
    use coffre_attestation::UnixTime;
    use coffre_attestation::nvidia::Arch;
    use coffre_attestation::simulated::{SimulatedGpu, SimulatedPlatform, SimulatedReport, SimulatedTee};
    use coffre_attestation::snp::{SnpEvidence, SnpVerifier};

    step(9, "Attestation, development mode: the simulated TEE signs an SEV-SNP report binding a fresh nonce");
    outln!("   (The vault will release the data key only to a worker whose report verifies against AMD's");
    outln!("   pinned roots. The simulator has its own SIMULATED roots: only an explicit development verifier");
    outln!("   trusts them, and every claim it produces says platform \"simulated\".)");
    let tee = SimulatedTee::generate(SimulatedPlatform::default()).map_err(CliError::new)?;
    let gpu = SimulatedGpu::generate(Arch::Hopper).map_err(CliError::new)?;
    let mut nonce = [0u8; 32];
    aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CliError::new("random number generator failed"))?;
    let mut report_data = [0u8; 64];
    report_data.copy_from_slice(digest::digest(&digest::SHA512, &nonce).as_ref());
    let report = tee.report(&SimulatedReport { report_data, ..SimulatedReport::default() }).map_err(CliError::new)?;
    let (report_path, vcek_path, roots_path) =
        (dir.join("simulated-report.bin"), dir.join("simulated-vcek.der"), dir.join("simulated-roots.der"));
    for (path, bytes) in [
        (&report_path, report.clone()),
        (&vcek_path, tee.vcek_der().to_vec()),
        (&roots_path, [tee.ark_der(), tee.ask_der(), gpu.root_der()].concat()),
    ] {
        fs::write(path, bytes).map_err(|e| CliError::io("write", path, &e))?;
    }
    let evidence =
        SnpEvidence::from_report_bytes(&report).and_then(|e| e.with_vek(tee.vcek_der())).map_err(CliError::new)?;
    let now = UnixTime::now();

    cmd(&format!(
        "coffre attest verify --kind snp --report {} --cert {} --at now",
        report_path.display(),
        vcek_path.display()
    ));
    let production = SnpVerifier::new().verify(&evidence, now);
    outln!(
        "   production verifier: {}",
        if production.is_verified() { "VERIFIED (this is a bug)" } else { "NOT VERIFIED" }
    );
    for e in production.errors() {
        outln!("     ✗ {e}");
    }
    if production.is_verified() {
        return Err(CliError::new("a production verifier accepted simulated evidence (this is a bug)"));
    }

    cmd(&format!(
        "coffre attest verify --kind snp --report {} --cert {} --at now --dangerous-accept-simulated-roots {}",
        report_path.display(),
        vcek_path.display(),
        roots_path.display()
    ));
    let dev = tee.dangerous_verifier().map_err(CliError::new)?.verify(&evidence, now);
    let claims = dev
        .claims
        .as_ref()
        .filter(|_| dev.is_verified())
        .ok_or_else(|| CliError::new(format!("development verification failed: {:?}", dev.errors())))?;
    outln!(
        "   development verifier: VERIFIED, {} checks passed; platform {:?}, product {}, debug {}, REPORT_DATA = SHA-512(nonce): {}",
        dev.checks.len(),
        claims.platform,
        claims.product.map_or("?".into(), |p| p.to_string()),
        claims.policy.debug,
        if claims.report_data == report_data { "yes" } else { "NO" }
    );
    gpu_step(dir, &tee, &gpu, evidence, report_data, &roots_path)?;
    Ok(13)
}

/// The composite appraisal: the simulated GPU signs the nonce derived from the CPU report, and a
/// GPU report from another session is refused.
#[cfg(feature = "simulated")]
fn gpu_step(
    dir: &Path,
    tee: &coffre_attestation::simulated::SimulatedTee,
    gpu: &coffre_attestation::simulated::SimulatedGpu,
    cpu: coffre_attestation::snp::SnpEvidence,
    report_data: [u8; 64],
    roots_path: &Path,
) -> CliResult {
    use coffre_attestation::UnixTime;
    use coffre_attestation::composite::{CompositeEvidence, CompositeVerifier, CpuEvidence, GpuInput, gpu_nonce};

    step(10, "CPU + GPU appraisal: a simulated H100 signs its measurements with a nonce bound to the CPU report");
    outln!("   (GPU nonce = SHA-256(\"coffre/gpu-nonce/v1\" ‖ REPORT_DATA): GPU evidence from another session fails.)");
    let nonce = gpu_nonce(&report_data);
    let gpu_evidence = gpu.evidence(&nonce).map_err(CliError::new)?;
    let (report_path, chain_path) = (dir.join("simulated-gpu-report.hex"), dir.join("simulated-gpu-chain.der"));
    for (path, bytes) in
        [(&report_path, hex::encode(&gpu_evidence.report).into_bytes()), (&chain_path, gpu_evidence.chain.concat())]
    {
        fs::write(path, bytes).map_err(|e| CliError::io("write", path, &e))?;
    }
    cmd(&format!(
        "coffre attest verify --kind nvidia --report {} --chain {} --nonce {} --at now --dangerous-accept-simulated-roots {}",
        report_path.display(),
        chain_path.display(),
        hex::encode(nonce),
        roots_path.display()
    ));
    let verifier = CompositeVerifier::new()
        .dangerous_accept_simulated_roots(tee.ark_der(), tee.ask_der(), gpu.root_der())
        .map_err(CliError::new)?;
    let now = UnixTime::now();
    let ours = CompositeEvidence {
        cpu: CpuEvidence::Snp(cpu.clone()),
        gpus: vec![GpuInput { evidence: gpu_evidence, rims: Vec::new() }],
    };
    let v = verifier.verify(&ours, Some(&report_data), now);
    if !v.is_verified() {
        return Err(CliError::new(format!("the composite appraisal failed: {:?}", v.errors())));
    }
    let checks = v.checks.len() + v.gpus.iter().map(|g| g.checks.len()).sum::<usize>();
    outln!("   this session's CPU + GPU: VERIFIED ({checks} composite and GPU checks passed, all marked simulated)");
    let mut other = report_data;
    other[0] ^= 0xff;
    let replayed = CompositeEvidence {
        cpu: CpuEvidence::Snp(cpu),
        gpus: vec![GpuInput { evidence: gpu.evidence(&gpu_nonce(&other)).map_err(CliError::new)?, rims: Vec::new() }],
    };
    let refused = verifier.verify(&replayed, Some(&report_data), now);
    if refused.is_verified() {
        return Err(CliError::new("GPU evidence from another session was accepted (this is a bug)"));
    }
    outln!("   GPU evidence from another session: NOT VERIFIED");
    for e in refused.errors() {
        outln!("     ✗ {e}");
    }
    log_step(dir, tee, gpu, roots_path)
}

/// The vault's decisions go to the transparency log first; an auditor re-verifies them offline.
#[cfg(feature = "simulated")]
fn log_step(
    dir: &Path,
    tee: &coffre_attestation::simulated::SimulatedTee,
    gpu: &coffre_attestation::simulated::SimulatedGpu,
    roots_path: &Path,
) -> CliResult {
    use coffre_attestation::UnixTime;
    use coffre_attestation::composite::CompositeVerifier;
    use coffre_broker::development::{self, TENANT};
    use coffre_broker::{Decided, Ledger, appraise};
    use coffre_log::{Digest, DirStore, NoteSigner};

    use crate::audit::{AuditCommand, VerifyArgs};

    step(11, "Key release, development mode: every decision is appended to the transparency log first");
    let fail = |e: String| CliError::new(e);
    let log_dir = dir.join("log");
    let signer = NoteSigner::generate("coffre-demo.local/log").map_err(|e| fail(e.to_string()))?;
    crate::keys::write_secret_file(&dir.join("log.key"), signer.to_text().as_bytes())?;
    let log_pub = dir.join("log.pub");
    fs::write(&log_pub, signer.verifier().to_text() + "\n").map_err(|e| CliError::io("write", &log_pub, &e))?;
    outln!("   log key (auditors pin it): {}", signer.verifier().to_text());
    let verifier = CompositeVerifier::new()
        .dangerous_accept_simulated_roots(tee.ark_der(), tee.ask_der(), gpu.root_der())
        .map_err(fail)?;
    let store = DirStore::open(&log_dir).map_err(|e| fail(e.to_string()))?;
    let mut vault = Ledger::open(store).map_err(|e| fail(e.to_string()))?;
    let now = u64::try_from(UnixTime::now().0).unwrap_or(0);
    let sealed = dir.join("customer-messages.jsonl.coffre");
    let bytes = fs::read(&sealed).map_err(|e| CliError::io("read", &sealed, &e))?;
    let output = crate::keys::load_identity(&dir.join("owner.key"))?;
    let dataset = "customer-messages-2026-11";
    let key_id = "dek-customer-messages-2026-11";
    let setup = development::bootstrap(&mut vault, now, dataset, Digest::of(&bytes), key_id, output.public())
        .map_err(|e| fail(e.to_string()))?;
    outln!(
        "   logged: development mode on, tenant {TENANT}, approver set v1 (1 of 1), policy development@1 activated,\n   \
         dataset {dataset} v1 (object {}), signed job {}",
        Digest::of(&bytes),
        setup.job
    );
    let manifest = setup.manifest.to_bytes();
    for (what, policy_bits) in [("a VM with debug off", 0x3_0000u64), ("a VM with debug ON", 0xb_0000)] {
        let (_hpke, _signing, keys) = development::worker_keys().map_err(fail)?;
        let keys = keys.to_bytes();
        let mut nonce = [0u8; 32];
        aws_lc_rs::rand::fill(&mut nonce).map_err(|_| CliError::new("random number generator failed"))?;
        let report_data = coffre_api::report_data(&nonce, &keys, &manifest);
        let evidence = development::evidence(tee, std::slice::from_ref(gpu), report_data, policy_bits).map_err(fail)?;
        let appraised = appraise(&verifier, &evidence, nonce, &keys, &manifest, now);
        match vault.decide(now, TENANT, &setup.job, &evidence, &appraised, &keys).map_err(|e| fail(e.to_string()))? {
            Decided::Released(token) => outln!(
                "   {what}: RELEASED key {}, entry {} (SIMULATED evidence, development mode, marked in the log)",
                token.key_ids().join(", "),
                token.index()
            ),
            Decided::Denied(d) => {
                outln!("   {what}: DENIED, entry {}", d.index);
                for f in &d.failed {
                    outln!("     ✗ [{}] {}: expected {}; found {}", f.policy, f.name, f.expected, f.actual);
                }
            }
        }
    }
    let note = vault.sign_checkpoint(&signer).map_err(|e| fail(e.to_string()))?;
    outln!("   signed checkpoint (C2SP tlog-checkpoint):");
    for line in note.lines() {
        outln!("     {line}");
    }

    step(12, "An auditor verifies the log offline: signature, consistency, inclusion, and every release");
    let state = dir.join("audit-state.json");
    cmd(&format!(
        "coffre audit verify --dir {} --log-key {} --state {} --dangerous-accept-simulated-roots {}",
        log_dir.display(),
        log_pub.display(),
        state.display(),
        roots_path.display()
    ));
    let ok = crate::audit::run(&AuditCommand::Verify(VerifyArgs {
        dir: Some(log_dir),
        vault: None,
        vault_fingerprint: None,
        export_to: None,
        log_key: Some(log_pub.display().to_string()),
        state: Some(state),
        dangerous_accept_simulated_roots: Some(roots_path.to_path_buf()),
        json: false,
    }))?;
    if !ok {
        return Err(CliError::new("the audit of the demo's own log failed (this is a bug)"));
    }
    Ok(())
}

#[cfg(not(feature = "simulated"))]
fn attestation_step(_dir: &Path) -> CliResult<u32> {
    step(9, "Attestation: skipped (this build has no simulated TEE; scripts/demo builds with --features simulated)");
    Ok(10)
}
