//! `coffre bench log`: appends per second (memory and durable directory), proof cost against
//! tree size, and the offline audit of a log of release entries with simulated evidence
//! bundles, beside the raw signature-verification bound of what an audit must verify.

use std::time::Instant;

use clap::Args;
use coffre_log::merkle::{leaf_hash, verify_inclusion};
use coffre_log::{DirStore, Entry, Log, MemoryStore};

use crate::error::{CliError, CliResult};

#[derive(Debug, Args)]
#[command(after_help = "\
Runs, in one go, on one thread:
  1. appends per second: in memory, and to a directory store that syncs every entry to disk
     before it returns (the durability a key release waits for);
  2. inclusion and consistency proofs at growing tree sizes: hashes per proof and time (O(log n));
  3. the audit of ENTRIES entries: a log with an approver set, an activated policy and
     ENTRIES-5 key releases, each with a simulated SEV-SNP report and GPUS simulated GPU reports
     in its evidence bundle, built through the vault's own decision path; then `coffre audit
     verify`'s checks over it (signature, tree, replay, every release re-verified and
     re-evaluated), beside the raw bound: the time of the signature verifications the audit
     cannot avoid (one P-384 per CPU report and per GPU report), at the raw aws-lc-rs rate on
     the log's own signatures. Both rates are means over whole runs; the raw one is taken just
     before and just after the audit and averaged, so that other load weighs on both alike.
Target: audit >= 0.8x the raw bound; proofs O(log n).

Example:
  coffre bench log --entries 100000")]
pub struct LogBenchArgs {
    /// Entries in the audited log
    #[arg(long, default_value_t = 100_000)]
    pub entries: u64,

    /// Simulated GPUs per release
    #[arg(long, default_value_t = 1)]
    pub gpus: usize,

    /// Entries appended to the durable directory store
    #[arg(long, default_value_t = 2_000)]
    pub durable: u64,

    /// Directory for the durable store [default: the system temporary directory]
    #[arg(long, value_name = "DIR")]
    pub dir: Option<std::path::PathBuf>,
}

fn sample(i: u64) -> Entry {
    Entry::KeyCreated {
        at: 1_790_000_000 + i,
        tenant: "example-bank".into(),
        key_id: format!("dek-{i:08}"),
        purpose: "dataset".into(),
        dataset: Some("customer-messages".into()),
    }
}

fn err(e: impl std::fmt::Display) -> CliError {
    CliError::new(e.to_string())
}

pub fn run(args: &LogBenchArgs) -> CliResult {
    outln!("coffre bench log: {}, one thread", crate::bench::machine());
    appends(args)?;
    proofs()?;
    audit(args)
}

fn appends(args: &LogBenchArgs) -> CliResult {
    outln!("  appends");
    let n = 200_000u64;
    let mut log = Log::open(MemoryStore::new()).map_err(err)?;
    let t = Instant::now();
    for i in 0..n {
        log.append(&sample(i)).map_err(err)?;
    }
    outln!("    {:<46} {:>9.0} /s", "in memory (encode, hash, tree)", n as f64 / t.elapsed().as_secs_f64());
    let tmp = match &args.dir {
        Some(d) => tempfile::tempdir_in(d),
        None => tempfile::tempdir(),
    }
    .map_err(|e| CliError::new(format!("cannot create a temporary directory: {e}")))?;
    let mut log = Log::open(DirStore::open(tmp.path()).map_err(err)?).map_err(err)?;
    let t = Instant::now();
    for i in 0..args.durable {
        log.append(&sample(i)).map_err(err)?;
    }
    outln!(
        "    {:<46} {:>9.0} /s  ({} entries, {})",
        "directory store, synced to disk per entry",
        args.durable as f64 / t.elapsed().as_secs_f64(),
        args.durable,
        tmp.path().display()
    );
    Ok(())
}

fn proofs() -> CliResult {
    outln!("  proofs (mean over 10 000 random indices)");
    let mut tree = coffre_log::Tree::new();
    let mut size = 0u64;
    for target in [1_000u64, 100_000, 1_000_000] {
        while size < target {
            tree.push(leaf_hash(&size.to_be_bytes()));
            size += 1;
        }
        let root = tree.root();
        let t = Instant::now();
        let mut hashes = 0usize;
        let mut x = 0x9e37_79b9_7f4a_7c15u64;
        for _ in 0..10_000 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let i = x % size;
            let proof = tree.inclusion_proof(i, size).map_err(err)?;
            hashes += proof.len();
            verify_inclusion(&tree.leaf(i).unwrap_or_default(), i, size, &proof, &root).map_err(err)?;
            let old = 1 + x % size;
            let c = tree.consistency_proof(old, size).map_err(err)?;
            hashes += c.len();
        }
        outln!(
            "    size {:>9}: {:>5.1} hashes per inclusion+consistency pair, {:>6.1} µs to make and check both",
            size,
            hashes as f64 / 10_000.0,
            t.elapsed().as_secs_f64() * 1e6 / 10_000.0
        );
    }
    Ok(())
}

#[cfg(not(feature = "simulated"))]
fn audit(_args: &LogBenchArgs) -> CliResult {
    outln!("  audit: skipped (release bundles need the simulated TEE; scripts/demo builds with --features simulated)");
    Ok(())
}

#[cfg(feature = "simulated")]
fn audit(args: &LogBenchArgs) -> CliResult {
    use coffre_attestation::UnixTime;
    use coffre_attestation::composite::CompositeVerifier;
    use coffre_attestation::nvidia::Arch;
    use coffre_attestation::simulated::{SimulatedGpu, SimulatedPlatform, SimulatedReport, SimulatedTee};
    use coffre_broker::development::{self, TENANT};
    use coffre_broker::{Decided, Ledger, appraise};
    use coffre_log::{Digest, NoteSigner};

    if args.entries < 9 {
        return Err(CliError::usage("--entries must be at least 9 (the set-up takes 8)"));
    }
    let tee = SimulatedTee::generate(SimulatedPlatform::default()).map_err(CliError::new)?;
    let gpus = SimulatedGpu::generate_machine(&vec![Arch::Hopper; args.gpus]).map_err(CliError::new)?;
    let root = gpus.first().map_or(tee.ark_der(), |g| g.root_der());
    let verifier =
        || CompositeVerifier::new().dangerous_accept_simulated_roots(tee.ark_der(), tee.ask_der(), root).map_err(err);
    let signer = NoteSigner::generate("bench.local/log").map_err(err)?;
    let mut vault = Ledger::open(MemoryStore::new()).map_err(err)?;
    let now = u64::try_from(UnixTime::now().0).unwrap_or(0);
    let output = coffre_seal::RecipientSecretKey::generate(&mut coffre_seal::SystemRandom).map_err(err)?;
    let setup =
        development::bootstrap(&mut vault, now, "bench", Digest::of(b"bench object"), "dek-bench", output.public())
            .map_err(err)?;
    let manifest = setup.manifest.to_bytes();
    let (_hpke, _signing, keys) = development::worker_keys().map_err(CliError::new)?;
    let keys = keys.to_bytes();
    let verify = verifier()?;
    let releases = args.entries - 8;
    outln!("  audit of {} entries ({releases} releases, 1 CPU + {} GPU report(s) each)", args.entries, args.gpus);
    let mut sampled = Vec::new();
    let t = Instant::now();
    let mut last = Instant::now();
    for i in 0..releases {
        let mut nonce = [0u8; 32];
        nonce[..8].copy_from_slice(&i.to_be_bytes());
        let report_data = coffre_api::report_data(&nonce, &keys, &manifest);
        let evidence = development::evidence(&tee, &gpus, report_data, SimulatedReport::default().policy)
            .map_err(CliError::new)?;
        let appraised = appraise(&verify, &evidence, nonce, &keys, &manifest, now);
        match vault.decide(now, TENANT, &setup.job, &evidence, &appraised, &keys).map_err(err)? {
            Decided::Released(_) => {}
            Decided::Denied(d) => {
                return Err(CliError::new(format!("bench: release {i} was denied: {:?}", d.failed)));
            }
        }
        if releases - i <= SAMPLED {
            sampled.push(evidence);
        }
        if last.elapsed().as_secs() >= 10 {
            eprintln!("    building the log: {}/{releases} releases", i + 1);
            last = Instant::now();
        }
    }
    let built = t.elapsed().as_secs_f64();
    outln!(
        "    {:<46} {:>9.0} /s  (simulated evidence made, verified, evaluated, bundled, appended)",
        "vault decisions",
        releases as f64 / built
    );
    vault.sign_checkpoint(&signer).map_err(err)?;

    // The raw bound: one P-384 verification per CPU report and per GPU report, timed on the
    // log's own last releases (each GPU report signs a longer message than a CPU report).
    let signatures =
        sampled.iter().map(|raw| signatures_of(raw, tee.vcek_der())).collect::<CliResult<Vec<_>>>()?.concat();
    // Like for like: the audit is one long run, so the raw rate is a plain mean too (not the
    // best slice), taken just before and just after the audit and averaged, so that the
    // machine's other load weighs on both alike.
    let mut next = signatures.iter().cycle();
    let mut raw_rate = || {
        let start = Instant::now();
        let mut n = 0u64;
        while start.elapsed().as_secs_f64() < 2.0 {
            for _ in 0..8 {
                let ok = next.next().is_some_and(|(point, signed, sig)| {
                    coffre_attestation::crypto::verify_ecdsa_p384_sha384_fixed(point, signed, sig)
                });
                if !ok {
                    return Err(CliError::new("bench: a logged signature does not verify (this is a bug)"));
                }
            }
            n += 8;
        }
        Ok(n as f64 / start.elapsed().as_secs_f64())
    };
    let before = raw_rate()?;
    let store = vault.log().store();
    let t = Instant::now();
    let (report, _) = coffre_broker::audit::audit(
        store,
        signer.verifier(),
        None,
        &verifier()?,
        coffre_broker::audit::Audience::Development,
    );
    let secs = t.elapsed().as_secs_f64();
    let after = raw_rate()?;
    if !report.ok() {
        return Err(CliError::new(format!("bench: the audit found discrepancies: {:?}", &report.problems[..1])));
    }
    let raw = (before + after) / 2.0;
    let sigs = releases * (1 + args.gpus as u64);
    let bound = args.entries as f64 / (sigs as f64 / raw);
    outln!(
        "    {:<46} {:>9.0} /s  (mean of {before:.0} before and {after:.0} after the audit; the last {} releases' own signatures)",
        "raw ECDSA P-384/SHA-384 verify (aws-lc-rs)",
        raw,
        sampled.len()
    );
    outln!("    {:<46} {:>9.0} /s  ({sigs} verifications)", "raw bound, entries", bound);
    crate::bench::line(&format!("audit, entries ({secs:.1} s in all)"), args.entries as f64 / secs, Some(bound));
    if report.entries_audited != args.entries || report.releases != releases {
        return Err(CliError::new("bench: the audit did not cover every entry (this is a bug)"));
    }
    Ok(())
}

/// Releases whose signatures time the raw bound.
#[cfg(feature = "simulated")]
const SAMPLED: u64 = 64;

/// A public key (SEC1 point), the bytes it signed, and the P1363 signature.
#[cfg(feature = "simulated")]
type Signature = (Vec<u8>, Vec<u8>, Vec<u8>);

/// Every signature one release's evidence carries: the CPU report's (by the VCEK) and each GPU
/// report's (by its device certificate).
#[cfg(feature = "simulated")]
fn signatures_of(raw: &coffre_api::RawEvidence, vcek: &[u8]) -> CliResult<Vec<Signature>> {
    use coffre_attestation::nvidia::spdm::SpdmReport;
    use coffre_attestation::snp::Report;
    use coffre_attestation::x509::{Certificate, PublicKey, certificates_from_pem_or_der};

    use coffre_api::RawCpu;

    let p384 = |der: &[u8]| match Certificate::from_der(der).map_err(CliError::new)?.public_key {
        PublicKey::P384(point) => Ok(point),
        _ => Err(CliError::new("bench: a simulated signing key is not P-384 (this is a bug)")),
    };
    let RawCpu::Snp { report, .. } = &raw.cpu else {
        return Err(CliError::new("bench: the simulated evidence is not SEV-SNP (this is a bug)"));
    };
    let (parsed, _) = Report::parse(report).map_err(CliError::new)?;
    let sig = coffre_attestation::crypto::snp_signature_to_p1363(parsed.signature_r(), parsed.signature_s())
        .ok_or_else(|| CliError::new("bench: a malformed simulated signature (this is a bug)"))?;
    let mut out = vec![(p384(vcek)?, parsed.signed_bytes().to_vec(), sig.to_vec())];
    for gpu in &raw.gpus {
        let spdm = SpdmReport::parse(&gpu.report).map_err(CliError::new)?;
        let chain = certificates_from_pem_or_der(&gpu.chain.concat()).map_err(CliError::new)?;
        let leaf = chain.first().ok_or_else(|| CliError::new("bench: a GPU without a device certificate"))?;
        out.push((p384(leaf)?, gpu.report[..spdm.signed_len].to_vec(), spdm.signature.to_vec()));
    }
    Ok(out)
}
