//! `coffre train` as a user runs it: a tiny generated model, records from a file and from standard
//! input, outputs that reload, checkpoints and resume, and refusals with hints.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::io::Write;
use std::path::Path;
use std::process::{Command, Output, Stdio};

fn run(args: &[&str], stdin: Option<&str>) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_coffre"))
        .args(args)
        .stdin(if stdin.is_some() { Stdio::piped() } else { Stdio::null() })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    if let Some(text) = stdin {
        child.stdin.take().unwrap().write_all(text.as_bytes()).unwrap();
    }
    child.wait_with_output().unwrap()
}

fn text(out: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn records() -> String {
    (0..40)
        .map(|i| {
            let (p, c) = [("lost card", "card_lost"), ("fee question", "transfer_fees")][i % 2];
            format!("{}\n", serde_json::json!({"prompt": format!("{p} {i}: "), "completion": c}))
        })
        .collect()
}

#[test]
fn trains_lora_from_a_file_and_full_from_stdin_and_resumes() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    coffre_trainer::tiny::generate(&model, 32, 2, 1).unwrap();
    let data = dir.path().join("data.jsonl");
    std::fs::write(&data, records()).unwrap();

    let out = dir.path().join("lora");
    let common = ["--steps", "6", "--batch-size", "4", "--max-len", "32", "--lr", "1e-2", "--warmup", "1"];
    let mut args = vec!["train", "--model", s(&model), "--data", s(&data), "--out", s(&out), "--merge"];
    args.extend(common);
    args.extend(["--checkpoint-every", "3"]);
    let o = run(&args, None);
    assert!(o.status.success(), "{}", text(&o));
    let t = text(&o);
    assert!(t.contains("LoRA rank 8") && t.contains("step 6/6") && t.contains("held out"), "{t}");
    for f in [
        "adapter_model.safetensors",
        "adapter_config.json",
        "tokenizer.json",
        "training.json",
        "merged/model.safetensors",
        "checkpoint/state.json",
    ] {
        assert!(out.join(f).exists(), "{f} missing");
    }
    let summary: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("training.json")).unwrap()).unwrap();
    assert_eq!(summary["steps"], 6);
    let config: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap()).unwrap();
    assert_eq!(config["peft_type"], "LORA");

    // Running again into the same directory is refused; --resume with more steps continues.
    let o = run(&args, None);
    assert_eq!(o.status.code(), Some(2), "{}", text(&o));
    assert!(text(&o).contains("already holds training output") && text(&o).contains("--resume"));
    let mut more = args.clone();
    let at = more.iter().position(|a| *a == "6").unwrap();
    more[at] = "9";
    more.push("--resume");
    let o = run(&more, None);
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("resuming at step 6") && text(&o).contains("step 9/9"), "{}", text(&o));

    // Full fine-tuning with DP-SGD, records on standard input.
    let full = dir.path().join("full");
    let mut args = vec!["train", "--model", s(&model), "--data", "-", "--out", s(&full), "--full", "--dp-noise", "0.8"];
    args.extend(common);
    let o = run(&args, Some(&records()));
    assert!(o.status.success(), "{}", text(&o));
    assert!(text(&o).contains("ε = ") && text(&o).contains("full fine-tuning"), "{}", text(&o));
    assert!(full.join("model.safetensors").exists() && full.join("config.json").exists());
}

#[test]
fn bad_input_is_refused_with_the_line_and_a_hint() {
    let dir = tempfile::tempdir().unwrap();
    let model = dir.path().join("tiny");
    coffre_trainer::tiny::generate(&model, 32, 1, 1).unwrap();
    let out = dir.path().join("out");
    let base = ["train", "--model", s(&model), "--data", "-", "--out", s(&out)];

    let o = run(&base, Some("{\"text\": \"fine\"}\n{\"prompt\": \"no completion\"}\n"));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("line 2: expected"), "{}", text(&o));

    let mut args = base.to_vec();
    args.extend(["--lora-targets", "attention"]);
    let o = run(&args, Some("{\"text\": \"x\"}\n"));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("unknown LoRA target module \"attention\""), "{}", text(&o));

    let o = run(&["train", "--model", s(&dir.path().join("nope")), "--data", "-", "--out", s(&out)], Some(""));
    assert_eq!(o.status.code(), Some(1));
    assert!(text(&o).contains("cannot load the model"), "{}", text(&o));

    let mut args = base.to_vec();
    args.push("--resume");
    let o = run(&args, Some(""));
    assert_eq!(o.status.code(), Some(2));
    assert!(text(&o).contains("holds no checkpoint"), "{}", text(&o));

    let o = run(&["train", "--help"], None);
    let help = text(&o);
    for needle in ["--lora-rank", "--dp-epsilon", "{\"prompt\"", "RAYON_NUM_THREADS", "--resume", "Examples:"] {
        assert!(help.contains(needle), "--help lacks {needle}");
    }
}
