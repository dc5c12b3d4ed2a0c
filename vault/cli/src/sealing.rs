//! `coffre seal`, `coffre open` and `coffre inspect`.

use std::fs::File;
use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::time::Instant;

use clap::Args;
use coffre_seal::chunked::{CHUNK_SIZE, chunk_count, encrypted_len};
use coffre_seal::{Header, HeaderFields, Stanza, SystemRandom, Workers};

use coffre_api::ObjectSignature;
use coffre_api::object::HashingWriter;

use crate::error::{CliError, CliResult};
use crate::io::{Input, Output, Progress, bytes};
use crate::keys::{load_identity, load_recipients};

/// One batch of chunks (4 MiB): reads and writes of this size take the zero-copy paths.
const IO_BUF: usize = coffre_seal::chunked::BATCH_CHUNKS * coffre_seal::chunked::CHUNK_SIZE;

#[derive(Debug, Args)]
#[command(after_help = "\
The output appears only when sealing succeeded; an interrupted run leaves nothing behind.
The header (tenant, dataset, content type, length, recipient key ids) is readable without a key:
see `coffre inspect`. Only the content is secret.

With --sign KEY the data owner also signs the SHA-256 of the whole sealed object and writes the
signature beside it (OUT.sig, or --signature FILE): recipients and the vault check it with
`coffre open --verify-signer`. Without it, nothing proves who sealed the object: anyone holding
the recipients' public keys can seal one with any tenant and dataset in its header.

Examples:
  coffre seal -r coffre-p384-pub-AbC… --tenant bank-a --dataset cards data.jsonl -o data.coffre
  coffre seal -R recipients.txt data.csv -o data.csv.coffre --sign bank.sign.key
  tar -cf - reports/ | coffre seal -r coffre-p384-pub-AbC… - -o reports.tar.coffre")]
pub struct SealArgs {
    /// Recipient public key (coffre-p384-pub-…); repeat for several recipients
    #[arg(short = 'r', long = "recipient", value_name = "PUBLIC_KEY")]
    pub recipients: Vec<String>,

    /// File with recipient public keys, one per line (`#` starts a comment); repeatable
    #[arg(short = 'R', long = "recipients-file", value_name = "FILE")]
    pub recipient_files: Vec<PathBuf>,

    /// Tenant id recorded in the header (letters, digits, . _ : -; at most 64)
    #[arg(long, value_name = "ID")]
    pub tenant: Option<String>,

    /// Dataset id recorded in the header (letters, digits, . _ : -; at most 64)
    #[arg(long, value_name = "ID")]
    pub dataset: Option<String>,

    /// Media type of the content [default: guessed from the file extension]
    #[arg(long, value_name = "TYPE")]
    pub content_type: Option<String>,

    /// Where to write the sealed file (`-` for standard output)
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,

    /// Replace OUT if it exists
    #[arg(long)]
    pub force: bool,

    /// Encryption threads (0 = one per core)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,

    /// Sign the sealed object with this signing key (from `coffre keygen --signing`)
    #[arg(long, value_name = "KEY")]
    pub sign: Option<PathBuf>,

    /// Where to write the signature [default: OUT.sig]
    #[arg(long, value_name = "FILE", requires = "sign")]
    pub signature: Option<PathBuf>,

    /// File to seal (`-` for standard input)
    #[arg(value_name = "IN")]
    pub input: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "\
The plaintext is written to a temporary file (mode 0600) and renamed into place only after every
chunk authenticated: a damaged or modified sealed file never yields a partial output file. With
`-o -` the plaintext streams to standard output and stops at the first bad chunk (exit status 1).

With --verify-signer PUBLIC_KEY the object must carry that owner's signature (IN.sig, or
--signature FILE) over its exact bytes, or nothing is written: it proves who sealed it, which the
header alone cannot (a co-recipient can seal another body under an identical header).

Examples:
  coffre open -i alice.key data.jsonl.coffre -o data.jsonl
  coffre open -i alice.key data.jsonl.coffre -o data.jsonl --verify-signer coffre-p384-sig-…
  coffre open -i alice.key data.jsonl.coffre -o - | head")]
pub struct OpenArgs {
    /// Secret key file made by `coffre keygen`
    #[arg(short = 'i', long = "identity", value_name = "KEY")]
    pub identity: PathBuf,

    /// Where to write the plaintext (`-` for standard output)
    #[arg(short = 'o', long = "output", value_name = "OUT")]
    pub output: PathBuf,

    /// Replace OUT if it exists
    #[arg(long)]
    pub force: bool,

    /// Decryption threads (0 = one per core)
    #[arg(long, default_value_t = 0, value_name = "N")]
    pub threads: usize,

    /// Require the owner signature of this signing public key (coffre-p384-sig-…)
    #[arg(long, value_name = "PUBLIC_KEY")]
    pub verify_signer: Option<String>,

    /// The signature file [default: IN.sig]
    #[arg(long, value_name = "FILE", requires = "verify_signer")]
    pub signature: Option<PathBuf>,

    /// Sealed file (`-` for standard input)
    #[arg(value_name = "IN")]
    pub input: PathBuf,
}

#[derive(Debug, Args)]
#[command(after_help = "\
Nothing here is secret and no key is needed. The header is authenticated only when the file is
opened with a recipient's key; `inspect` shows what the file claims.")]
pub struct InspectArgs {
    /// Sealed file (`-` for standard input)
    #[arg(value_name = "SEALED")]
    pub input: PathBuf,

    /// Print one JSON object instead of text
    #[arg(long)]
    pub json: bool,
}

/// What a seal produced, for summaries and the demo.
#[derive(Debug)]
pub struct SealReport {
    pub header: Header,
    pub plaintext_len: u64,
    pub seconds: f64,
}

fn guess_content_type(path: &Path) -> &'static str {
    let ext = path.extension().and_then(|e| e.to_str()).map(str::to_ascii_lowercase);
    match ext.as_deref() {
        Some("jsonl" | "ndjson") => "application/jsonl",
        Some("json") => "application/json",
        Some("csv") => "text/csv",
        Some("tsv") => "text/tab-separated-values",
        Some("txt" | "md" | "log") => "text/plain",
        Some("parquet") => "application/vnd.apache.parquet",
        Some("safetensors") => "application/vnd.safetensors",
        Some("gguf") => "application/vnd.gguf",
        Some("tar") => "application/x-tar",
        Some("gz" | "tgz") => "application/gzip",
        Some("zip") => "application/zip",
        _ => "application/octet-stream",
    }
}

fn workers(threads: usize) -> CliResult<Workers> {
    Workers::new(threads).map_err(|e| CliError::seal("--threads", e))
}

/// Copies `reader` into `writer` a batch at a time, feeding the progress bar.
fn pump(reader: &mut dyn Read, writer: &mut dyn Write, progress: &mut Progress) -> std::io::Result<u64> {
    // Plaintext passes through here (sealing reads it, opening writes it): wiped on every exit.
    let mut buf = zeroize::Zeroizing::new(vec![0u8; IO_BUF]);
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        writer.write_all(&buf[..n])?;
        total += n as u64;
        progress.add(n as u64);
    }
}

pub fn run_seal(args: &SealArgs) -> CliResult<SealReport> {
    let recipients = load_recipients(&args.recipients, &args.recipient_files)?;
    let content_type = args.content_type.clone().unwrap_or_else(|| guess_content_type(&args.input).to_owned());
    let mut input = Input::open(&args.input)?;
    let fields = HeaderFields {
        tenant: args.tenant.clone().unwrap_or_default(),
        dataset: args.dataset.clone().unwrap_or_default(),
        content_type,
        plaintext_len: input.len,
    };
    let started = Instant::now();
    let signing = match &args.sign {
        Some(path) => {
            Some((crate::keys::load_signing_key(path)?, signature_path(args.signature.as_deref(), &args.output)?))
        }
        None => None,
    };
    let output = HashingWriter::new(Output::create(&args.output, args.force, true)?);
    let out_name = args.output.display().to_string();
    let mut sealer = coffre_seal::seal(output, &recipients, &fields, workers(args.threads)?, &mut SystemRandom)
        .map_err(|e| CliError::seal(&out_name, e))?;
    let mut progress = Progress::new("sealing", input.len);
    let copied = pump(&mut input.reader, &mut sealer, &mut progress);
    progress.finish();
    let plaintext_len = copied.map_err(|e| CliError::seal(&input.name, e.into()))?;
    let (output, header) = sealer.finish().map_err(|e| CliError::seal(&input.name, e))?;
    let (output, digest) = output.finish();
    if let Some((key, path)) = &signing {
        let sig = ObjectSignature::sign(key, digest).map_err(CliError::new)?;
        let mut file = Output::create(path, args.force, true)?;
        file.write_all(&sig.to_bytes()).map_err(|e| CliError::io("write", path, &e))?;
        file.commit()?;
    }
    output.commit()?;
    Ok(SealReport { header, plaintext_len, seconds: started.elapsed().as_secs_f64() })
}

pub fn print_seal_summary(args: &SealArgs, report: &SealReport) {
    let rate = report.plaintext_len as f64 / report.seconds.max(1e-9) / (1024.0 * 1024.0);
    eprintln!(
        "sealed {} ({}) to {} recipient(s) -> {}  [object {}, {:.2} s, {rate:.0} MiB/s]",
        args.input.display(),
        bytes(report.plaintext_len),
        report.header.recipients().len(),
        args.output.display(),
        report.header.object_id,
        report.seconds,
    );
}

fn text_like(content_type: &str) -> bool {
    content_type.starts_with("text/")
        || matches!(content_type, "application/json" | "application/jsonl" | "application/x-ndjson")
}

/// `OUT.sig` beside a sealed file, unless a path is given.
fn signature_path(given: Option<&Path>, object: &Path) -> CliResult<PathBuf> {
    match given {
        Some(p) => Ok(p.to_path_buf()),
        None if object.as_os_str() == "-" => Err(CliError::usage(
            "the sealed object goes to standard output: say where its signature goes with --signature FILE",
        )),
        None => {
            let mut name = object.as_os_str().to_owned();
            name.push(".sig");
            Ok(PathBuf::from(name))
        }
    }
}

/// Checks the owner signature of the sealed file `input` before anything is opened.
fn verify_owner(args: &OpenArgs, signer: &str) -> CliResult {
    let expected: coffre_seal::VerifyingKey = signer.parse().map_err(|e| {
        CliError::seal("--verify-signer", e).hint("give the owner's signing public key, coffre-p384-sig-…")
    })?;
    if args.input.as_os_str() == "-" {
        return Err(CliError::usage("--verify-signer needs the sealed object as a file, not standard input")
            .hint("the whole object is hashed and its signature checked before any plaintext is written"));
    }
    let sig_path = signature_path(args.signature.as_deref(), &args.input)?;
    let text = std::fs::read(&sig_path).map_err(|e| {
        CliError::io("read signature", &sig_path, &e)
            .hint("the owner's `coffre seal --sign` writes IN.sig beside the object")
    })?;
    let sig =
        ObjectSignature::from_bytes(&text).map_err(|e| CliError::usage(format!("{}: {e}", sig_path.display())))?;
    let file = File::open(&args.input).map_err(|e| CliError::io("open", &args.input, &e))?;
    let digest = coffre_api::object::digest_of(std::io::BufReader::with_capacity(1 << 20, file))
        .map_err(|e| CliError::io("read", &args.input, &e))?;
    let signer = sig.verify(&digest).map_err(|e| {
        CliError::new(format!("{}: owner signature refused: {e}", args.input.display()))
            .hint("do not use this object: it is not the one its owner signed")
    })?;
    if signer != expected {
        return Err(CliError::new(format!(
            "{}: signed by {}, not by the expected owner {}",
            args.input.display(),
            signer.key_id(),
            expected.key_id()
        ))
        .hint("check that you have the right owner key; do not use this object otherwise"));
    }
    eprintln!("owner signature verified: signed by {} over {digest}", signer.key_id());
    Ok(())
}

pub fn run_open(args: &OpenArgs) -> CliResult<(Header, u64)> {
    let identity = load_identity(&args.identity)?;
    if let Some(signer) = &args.verify_signer {
        verify_owner(args, signer)?;
    }
    let mut input = Input::open(&args.input)?;
    let (header, mut reader) = coffre_seal::open(&mut input.reader, &identity, workers(args.threads)?)
        .map_err(|e| CliError::seal(&input.name, e))?;
    let binary = !text_like(&header.content_type);
    let mut output = Output::create(&args.output, args.force, binary).map_err(|e| {
        if e.code == 2 && binary {
            e.hint(format!("the content is {}; write it to a file with -o FILE", header.content_type))
        } else {
            e
        }
    })?;
    let mut progress = Progress::new("opening", header.plaintext_len);
    let copied = pump(&mut reader, &mut output, &mut progress);
    progress.finish();
    let n = copied.map_err(|e| CliError::seal(&input.name, e.into()))?;
    output.commit()?;
    Ok((header, n))
}

#[derive(serde::Serialize)]
struct InspectJson<'a> {
    format_version: u16,
    object_id: String,
    tenant: &'a str,
    dataset: &'a str,
    content_type: &'a str,
    plaintext_length: Option<u64>,
    header_length: usize,
    sealed_length: Option<u64>,
    expected_sealed_length: Option<u64>,
    chunks: Option<u64>,
    recipients: Vec<RecipientJson>,
    unknown_stanzas: Vec<UnknownJson>,
    authenticated: bool,
}

#[derive(serde::Serialize)]
struct RecipientJson {
    r#type: &'static str,
    key_id: String,
}

#[derive(serde::Serialize)]
struct UnknownJson {
    r#type: u16,
    length: usize,
}

pub fn run_inspect(args: &InspectArgs) -> CliResult {
    let mut input = Input::open(&args.input)?;
    let header = coffre_seal::inspect(&mut input.reader).map_err(|e| CliError::seal(&input.name, e))?;
    let sealed_len = if args.input.as_os_str() == "-" {
        None
    } else {
        File::open(&args.input).and_then(|f| f.metadata()).ok().map(|m| m.len())
    };
    let expected = header.plaintext_len.and_then(encrypted_len).map(|b| b + header.len() as u64);
    let doc = InspectJson {
        format_version: coffre_seal::header::FORMAT_VERSION,
        object_id: header.object_id.to_string(),
        tenant: &header.tenant,
        dataset: &header.dataset,
        content_type: &header.content_type,
        plaintext_length: header.plaintext_len,
        header_length: header.len(),
        sealed_length: sealed_len,
        expected_sealed_length: expected,
        chunks: header.plaintext_len.map(chunk_count),
        recipients: header
            .stanzas
            .iter()
            .filter_map(|s| match s {
                Stanza::HpkeP384 { key_id, .. } => Some(RecipientJson { r#type: "hpke-p384", key_id: key_id.to_hex() }),
                Stanza::Unknown { .. } => None,
            })
            .collect(),
        unknown_stanzas: header
            .stanzas
            .iter()
            .filter_map(|s| match s {
                Stanza::Unknown { kind, body } => Some(UnknownJson { r#type: *kind, length: body.len() }),
                Stanza::HpkeP384 { .. } => None,
            })
            .collect(),
        authenticated: false,
    };
    if args.json {
        let text = serde_json::to_string_pretty(&doc).map_err(|e| CliError::new(format!("JSON output: {e}")))?;
        outln!("{text}");
        return Ok(());
    }
    let or_none = |s: &str| if s.is_empty() { "(not set)".to_owned() } else { s.to_owned() };
    outln!("Coffre sealed object, format version {}", doc.format_version);
    outln!("  object id      {}", doc.object_id);
    outln!("  tenant         {}", or_none(doc.tenant));
    outln!("  dataset        {}", or_none(doc.dataset));
    outln!("  content type   {}", doc.content_type);
    match header.plaintext_len {
        Some(len) => outln!(
            "  plaintext      {} ({len} bytes, {} chunks of {} KiB)",
            bytes(len),
            chunk_count(len),
            CHUNK_SIZE / 1024
        ),
        None => outln!("  plaintext      length not declared (sealed from a stream)"),
    }
    outln!("  header         {} bytes", doc.header_length);
    match (sealed_len, expected) {
        (Some(actual), Some(exp)) if actual == exp => {
            outln!("  sealed size    {} (consistent with the header)", bytes(actual))
        }
        (Some(actual), Some(exp)) => outln!(
            "  sealed size    {actual} bytes, but the header implies {exp}: the file is {}",
            if actual < exp { "truncated" } else { "followed by extra bytes" }
        ),
        (Some(actual), None) => outln!("  sealed size    {}", bytes(actual)),
        (None, _) => {}
    }
    outln!("  recipients     {}", doc.recipients.len());
    for r in &doc.recipients {
        outln!("    {}  key id {}", r.r#type, r.key_id);
    }
    for u in &doc.unknown_stanzas {
        outln!("    (unknown stanza type {}, {} bytes; skipped by this version)", u.r#type, u.length);
    }
    outln!("  authenticated  no: the header is verified when a recipient opens the file");
    Ok(())
}
