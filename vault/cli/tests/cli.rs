//! The `coffre` binary as a user runs it: files, pipes, exit codes, refusals and hints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::{Command, Output, Stdio};

fn coffre() -> Command {
    Command::new(env!("CARGO_BIN_EXE_coffre"))
}

fn run(args: &[&str]) -> Output {
    coffre().args(args).stdin(Stdio::null()).output().unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = run(&["keygen", "-o", key.to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(public.starts_with("coffre-p384-pub-"));
    (key, public)
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn keygen_writes_a_private_file_and_prints_the_public_key() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "me.key");
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        assert_eq!(fs::metadata(&key).unwrap().permissions().mode() & 0o777, 0o600);
    }
    let again = run(&["keygen", "-y", s(&key)]);
    assert_eq!(String::from_utf8(again.stdout).unwrap().trim(), public);
    // Never overwrites a key.
    let clobber = run(&["keygen", "-o", s(&key)]);
    assert_eq!(clobber.status.code(), Some(1));
    assert!(stderr(&clobber).contains("hint:"));
}

/// The issue's acceptance run: seal a 100 MiB file to a recipient, inspect it, open it
/// byte-identical.
#[test]
fn seal_inspect_open_100_mib() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "owner.key");
    let plain = dir.path().join("data.bin");
    let mut data = vec![0u8; 100 << 20];
    for (i, b) in data.iter_mut().enumerate() {
        *b = (i as u32).wrapping_mul(2_654_435_761).to_be_bytes()[0];
    }
    fs::write(&plain, &data).unwrap();
    let sealed = dir.path().join("data.bin.coffre");
    let out = run(&["seal", "-r", &public, "--tenant", "bank-a", "--dataset", "d1", s(&plain), "-o", s(&sealed)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(stderr(&out).contains("sealed"));

    let out = run(&["inspect", "--json", s(&sealed)]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["tenant"], "bank-a");
    assert_eq!(v["dataset"], "d1");
    assert_eq!(v["plaintext_length"], 100u64 << 20);
    assert_eq!(v["sealed_length"], v["expected_sealed_length"]);
    assert_eq!(v["recipients"].as_array().unwrap().len(), 1);
    assert_eq!(v["authenticated"], false);
    let text = run(&["inspect", s(&sealed)]);
    assert!(String::from_utf8_lossy(&text.stdout).contains("consistent with the header"));

    let opened = dir.path().join("opened.bin");
    let out = run(&["open", "-i", s(&key), s(&sealed), "-o", s(&opened)]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(fs::read(&opened).unwrap() == data);
}

#[test]
fn pipes_in_and_out() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "k.key");
    let data = b"{\"prompt\":\"hello\",\"completion\":\"card_lost\"}\n".repeat(1000);
    let mut child = coffre()
        .args(["seal", "-r", &public, "-", "-o", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stdin = child.stdin.take().unwrap();
    let writer = {
        let data = data.clone();
        std::thread::spawn(move || stdin.write_all(&data).unwrap())
    };
    let sealed = child.wait_with_output().unwrap();
    writer.join().unwrap();
    assert!(sealed.status.success(), "{}", stderr(&sealed));
    let path = dir.path().join("piped.coffre");
    fs::write(&path, &sealed.stdout).unwrap();
    let header = run(&["inspect", "--json", s(&path)]);
    let v: serde_json::Value = serde_json::from_slice(&header.stdout).unwrap();
    assert!(v["plaintext_length"].is_null(), "a stream has no declared length");
    let opened = run(&["open", "-i", s(&key), s(&path), "-o", "-"]);
    assert!(opened.status.success(), "{}", stderr(&opened));
    assert_eq!(opened.stdout, data);
}

#[test]
fn tampering_fails_with_a_hint_and_leaves_no_output() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "k.key");
    let plain = dir.path().join("p.txt");
    fs::write(&plain, vec![b'x'; 100_000]).unwrap();
    let sealed = dir.path().join("p.coffre");
    assert!(run(&["seal", "-r", &public, s(&plain), "-o", s(&sealed)]).status.success());
    let mut bytes = fs::read(&sealed).unwrap();
    let n = bytes.len();
    bytes[n - 5] ^= 1;
    fs::write(&sealed, &bytes).unwrap();
    let out_path = dir.path().join("out.txt");
    let out = run(&["open", "-i", s(&key), s(&sealed), "-o", s(&out_path)]);
    assert_eq!(out.status.code(), Some(1));
    let err = stderr(&out);
    assert!(err.contains("chunk 6 failed authentication"), "{err}");
    assert!(err.contains("hint:"), "{err}");
    assert!(!out_path.exists());
    let leftovers: Vec<_> = fs::read_dir(dir.path())
        .unwrap()
        .filter_map(|e| e.ok())
        .filter(|e| e.file_name().to_string_lossy().starts_with(".coffre-partial"))
        .collect();
    assert!(leftovers.is_empty(), "temporary files left behind");
}

#[test]
fn refusals_and_usage_errors() {
    let dir = tempfile::tempdir().unwrap();
    let (key, public) = keygen(dir.path(), "k.key");
    let (_, other_public) = keygen(dir.path(), "other.key");
    let plain = dir.path().join("p.csv");
    fs::write(&plain, "a,b\n1,2\n").unwrap();
    let sealed = dir.path().join("p.coffre");
    assert!(run(&["seal", "-r", &other_public, s(&plain), "-o", s(&sealed)]).status.success());

    // Existing output is not replaced without --force.
    let again = run(&["seal", "-r", &public, s(&plain), "-o", s(&sealed)]);
    assert_eq!(again.status.code(), Some(2));
    assert!(stderr(&again).contains("--force"));
    assert!(run(&["seal", "-r", &public, "--force", s(&plain), "-o", s(&sealed)]).status.success());

    // A key that is not a recipient.
    let (stranger, _) = keygen(dir.path(), "stranger.key");
    let out = run(&["open", "-i", s(&stranger), s(&sealed), "-o", s(&dir.path().join("x"))]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("no recipient stanza matches"), "{}", stderr(&out));

    // A secret key where a public key belongs.
    let secret_line = fs::read_to_string(&key).unwrap().lines().find(|l| l.starts_with("COFFRE-")).unwrap().to_owned();
    let out = run(&["seal", "-r", &secret_line, s(&plain), "-o", s(&dir.path().join("y"))]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("secret key"));
    assert!(!stderr(&out).contains(&secret_line[20..]), "the secret must not be echoed");

    // No recipients, bad ids, not a sealed file, missing input.
    assert_eq!(run(&["seal", s(&plain), "-o", s(&dir.path().join("z"))]).status.code(), Some(2));
    let bad_id = run(&["seal", "-r", &public, "--tenant", "bank a", s(&plain), "-o", s(&dir.path().join("z"))]);
    assert_eq!(bad_id.status.code(), Some(1));
    assert!(stderr(&bad_id).contains("tenant id"));
    let not_sealed = run(&["inspect", s(&plain)]);
    assert_eq!(not_sealed.status.code(), Some(1));
    assert!(stderr(&not_sealed).contains("not a Coffre sealed object"));
    let missing = run(&["seal", "-r", &public, s(&dir.path().join("nope")), "-o", s(&dir.path().join("z"))]);
    assert_eq!(missing.status.code(), Some(1));
    assert!(stderr(&missing).contains("hint:"));
    assert!(!dir.path().join("z").exists());
}

#[test]
fn help_teaches() {
    for cmd in ["keygen", "seal", "open", "inspect", "demo"] {
        let out = run(&[cmd, "--help"]);
        assert!(out.status.success());
        let text = String::from_utf8_lossy(&out.stdout);
        assert!(text.contains("Example") || text.contains("DIR") || text.contains("key"), "{cmd}: {text}");
    }
}

#[test]
fn the_demo_tour_runs_each_piece_in_process() {
    let dir = tempfile::tempdir().unwrap();
    let demo_dir = dir.path().join("demo");
    let out = run(&["demo", "--tour", "--dir", s(&demo_dir), "--records", "3000"]);
    assert!(out.status.success(), "{}\n{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(text.matches("= original").count(), 2, "{text}");
    assert_eq!(text.matches("refused as expected").count(), 2, "{text}");
    // scripts/test builds with --all-features, so CI runs the simulated attestation step.
    if cfg!(feature = "simulated") {
        assert!(text.contains("production verifier: NOT VERIFIED"), "{text}");
        assert!(text.contains("development verifier: VERIFIED") && text.contains("platform Simulated"), "{text}");
    } else {
        assert!(text.contains("9. Attestation: skipped"), "{text}");
    }
    // A second run into the same, now non-empty, directory is refused.
    assert_eq!(run(&["demo", "--tour", "--dir", s(&demo_dir)]).status.code(), Some(2));
}

/// Red-team finding (low): `coffre seal -r " COFFRE-P384-SECRET-…"` (a secret pasted with a
/// leading space) echoed 15 of the 48 secret bytes in its error. No part of a secret key is
/// ever printed, however it is padded, cased or mangled.
#[test]
fn attack_secret_key_pasted_as_recipient_is_never_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let (key, _) = keygen(dir.path(), "me.key");
    let file = fs::read_to_string(&key).unwrap();
    let secret = file.lines().find(|l| l.starts_with("COFFRE-P384-SECRET-")).unwrap();
    let body = &secret["COFFRE-P384-SECRET-".len()..];
    let input = dir.path().join("in.txt");
    fs::write(&input, b"x").unwrap();
    for pasted in [
        format!(" {secret}"),
        format!("{secret}\n"),
        secret.to_lowercase(),
        format!("x{secret}"),
        secret[..secret.len() - 2].to_owned(),
        body.to_owned(),
    ] {
        let out = run(&["seal", "-r", &pasted, s(&input), "-o", s(&dir.path().join("out.coffre"))]);
        assert!(!out.status.success());
        let all = format!("{}{}", stderr(&out), String::from_utf8_lossy(&out.stdout));
        for window in body.as_bytes().windows(6) {
            let w = std::str::from_utf8(window).unwrap();
            assert!(!all.contains(w) && !all.contains(&w.to_lowercase()), "{pasted:?} echoed {w:?}: {all}");
        }
    }
}

fn signing_keygen(dir: &Path, name: &str) -> (PathBuf, String) {
    let key = dir.join(name);
    let out = run(&["keygen", "--signing", "-o", s(&key)]);
    assert!(out.status.success(), "{}", stderr(&out));
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    assert!(public.starts_with("coffre-p384-sig-"), "{public}");
    (key, public)
}

/// Red-team finding (medium): sealed objects have no proof of origin. A co-recipient (who can
/// unwrap the data key) re-encrypted another body under the byte-identical header; the owner
/// opened it without a word. The owner's detached signature over the whole object catches it.
#[test]
fn attack_co_recipient_reseals_another_body_under_the_identical_header() {
    use std::io::Write as _;

    use coffre_seal::chunked::EncryptingWriter;
    use coffre_seal::{Header, RecipientSecretKey, SystemRandom, Workers};

    let dir = tempfile::tempdir().unwrap();
    let p = |n: &str| dir.path().join(n);
    let (owner, owner_pub) = keygen(dir.path(), "owner.key");
    let (bob, bob_pub) = keygen(dir.path(), "bob.key");
    let (sign, signer) = signing_keygen(dir.path(), "owner.sign.key");
    fs::write(p("data.txt"), b"pay 100 EUR to alice\n").unwrap();
    let out = run(&[
        "seal",
        "-r",
        &owner_pub,
        "-r",
        &bob_pub,
        "--sign",
        s(&sign),
        s(&p("data.txt")),
        "-o",
        s(&p("data.coffre")),
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(p("data.coffre.sig").exists());
    let genuine =
        run(&["open", "-i", s(&owner), s(&p("data.coffre")), "-o", s(&p("ok.txt")), "--verify-signer", &signer]);
    assert!(genuine.status.success(), "{}", stderr(&genuine));
    assert!(stderr(&genuine).contains("owner signature verified"), "{}", stderr(&genuine));

    // Bob keeps the header byte for byte and seals his own body of the same length under it.
    let sealed = fs::read(p("data.coffre")).unwrap();
    let header = Header::read_from(&mut &sealed[..]).unwrap();
    let bob_key = RecipientSecretKey::from_key_file(&fs::read_to_string(&bob).unwrap()).unwrap();
    let dek = header.unwrap_data_key(&bob_key).unwrap();
    let mut forged = header.as_bytes().to_vec();
    let mut w = EncryptingWriter::new(
        &mut forged,
        dek.expose_secret(),
        &header.digest(),
        Workers::sequential(),
        &mut SystemRandom,
    )
    .unwrap();
    w.write_all(b"pay 999 EUR to bob!!\n").unwrap();
    w.finish().unwrap();
    fs::write(p("data.coffre"), &forged).unwrap();

    // Format v1 alone cannot tell: the owner's key opens it.
    let blind = run(&["open", "-i", s(&owner), s(&p("data.coffre")), "-o", s(&p("blind.txt"))]);
    assert!(blind.status.success(), "{}", stderr(&blind));
    assert_eq!(fs::read(p("blind.txt")).unwrap(), b"pay 999 EUR to bob!!\n");
    // The owner's signature does.
    let checked =
        run(&["open", "-i", s(&owner), s(&p("data.coffre")), "-o", s(&p("checked.txt")), "--verify-signer", &signer]);
    assert_eq!(checked.status.code(), Some(1), "{}", stderr(&checked));
    assert!(stderr(&checked).contains("owner signature refused"), "{}", stderr(&checked));
    assert!(!p("checked.txt").exists(), "nothing is written from an object its owner did not sign");
    // Bob's own signature is not the owner's.
    let (bob_sign, _) = signing_keygen(dir.path(), "bob.sign.key");
    let resigned =
        run(&["seal", "-r", &owner_pub, "--sign", s(&bob_sign), s(&p("data.txt")), "-o", s(&p("bob.coffre"))]);
    assert!(resigned.status.success(), "{}", stderr(&resigned));
    let wrong =
        run(&["open", "-i", s(&owner), s(&p("bob.coffre")), "-o", s(&p("bob.txt")), "--verify-signer", &signer]);
    assert_eq!(wrong.status.code(), Some(1));
    assert!(stderr(&wrong).contains("not by the expected owner"), "{}", stderr(&wrong));
}
