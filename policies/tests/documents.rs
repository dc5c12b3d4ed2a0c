//! Loading, linting, explaining and the canonical form of policy documents.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code: a failed assertion is the point

use std::path::PathBuf;

use coffre_policies::{EvidenceKind, Policy, Severity, explain, json_schema, lint};

fn bundled_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("bundled")
}

fn bundled(name: &str) -> String {
    std::fs::read_to_string(bundled_dir().join(format!("{name}.toml"))).unwrap()
}

const MINIMAL: &str = r#"
format = "coffre-policy/v1"
id = "p"
version = 1
tenant = "t"
description = "d"

[scope]
datasets = ["*"]

[platform]
kinds = ["snp"]

[snp]
"#;

#[test]
fn every_bundled_policy_loads_without_contradictions() {
    let mut names: Vec<String> = std::fs::read_dir(bundled_dir())
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".toml"))
        .collect();
    names.sort();
    assert_eq!(names, ["azure-cvm-h100.toml", "bank-strict.toml", "development.toml", "tdx-h100.toml"]);
    for name in names {
        let text = std::fs::read_to_string(bundled_dir().join(&name)).unwrap();
        let policy = Policy::from_toml(&text).unwrap_or_else(|e| panic!("{name}: {e}"));
        assert_eq!(format!("{}.toml", policy.id), name, "file name and id agree");
        let errors: Vec<_> = lint(&policy).into_iter().filter(|f| f.severity == Severity::Error).collect();
        assert!(errors.is_empty(), "{name}: {errors:?}");
        let words = explain(&policy).join("\n");
        assert!(words.contains(policy.description.trim()), "{words}");
    }
}

#[test]
fn production_policies_never_list_simulated_evidence() {
    for name in ["bank-strict", "tdx-h100", "azure-cvm-h100"] {
        let p = Policy::from_toml(&bundled(name)).unwrap();
        assert!(!p.platform.kinds.contains(&EvidenceKind::Simulated), "{name}");
        assert!(explain(&p).join(" ").contains("Simulated evidence is always refused"), "{name}");
    }
    let dev = Policy::from_toml(&bundled("development")).unwrap();
    assert_eq!(dev.platform.kinds, [EvidenceKind::Simulated]);
    assert!(lint(&dev).iter().any(|f| f.severity == Severity::Warning && f.message.contains("development mode")));
}

#[test]
fn explanation_says_what_bank_strict_allows() {
    let words = explain(&Policy::from_toml(&bundled("bank-strict")).unwrap()).join("\n");
    for phrase in [
        "datasets labelled customer-pii or bank-confidential",
        "fine-tune or evaluate jobs",
        "AMD SEV-SNP with genoa or turin processors",
        "an AMD CRL must have been checked",
        "must not allow debugging or a migration agent",
        "on genoa the reported and committed TCB must be at least boot loader 10, TEE 0, SNP 23, microcode 84",
        "FMC 1",
        "at least 1 GPU(s)",
        "every measurement must match NVIDIA's signed driver and VBIOS RIMs",
        "at most 100 key releases",
        "Anything not described above is denied",
    ] {
        assert!(words.contains(phrase), "missing {phrase:?} in:\n{words}");
    }
}

fn load_err(text: &str) -> coffre_policies::LoadError {
    Policy::from_toml(text).expect_err("must not load")
}

#[test]
fn an_unknown_key_is_located_and_a_near_miss_suggested() {
    let text = MINIMAL.replace("[snp]\n", "[snp]\nforbiden_policy_bits = [\"debug\"]\n");
    let e = load_err(&text);
    assert_eq!(e.line, 15, "{e}");
    assert_eq!(e.column, 1, "{e}");
    assert!(e.message.contains("unknown field `forbiden_policy_bits`"), "{e}");
    assert!(e.hint.as_deref().unwrap().starts_with("did you mean `forbidden_policy_bits`?"), "{:?}", e.hint);
    assert_eq!(e.source_line.as_deref(), Some("forbiden_policy_bits = [\"debug\"]"));
}

#[test]
fn wrong_types_and_bad_values_are_located_with_hints() {
    let cases: Vec<(String, usize, &str, &str)> = vec![
        (MINIMAL.replace("[snp]\n", "[snp]\nvmpl = \"0\"\n"), 15, "invalid type", "without quotes"),
        (MINIMAL.replace("[snp]\n", "[snp]\nvmpl = 300\n"), 15, "invalid value", "0 to 255"),
        (MINIMAL.replace("[snp]\n", "[snp]\nmeasurements = [\"abcd\"]\n"), 15, "96 hex digits", "copy the value whole"),
        (MINIMAL.replace("[snp]\n", "[snp]\nmeasurements = \"00\"\n"), 15, "invalid type", "takes a list"),
        (MINIMAL.replace("kinds = [\"snp\"]", "kinds = [\"sev\"]"), 12, "unknown variant `sev`", "values allowed here"),
        (MINIMAL.replace("version = 1", "version = 0"), 4, "nonzero", "versions start at 1"),
        (MINIMAL.replace("tenant = \"t\"", "tenant = \"Big Bank\""), 5, "not a valid name", ""),
        (
            MINIMAL.replace("coffre-policy/v1", "coffre-policy/v2"),
            2,
            "unknown variant `coffre-policy/v2`",
            "coffre-policy/v1",
        ),
        (format!("{MINIMAL}\n[job]\nnot_after = \"2026-12-31T00:00:00Z\"\n"), 17, "", "without quotes"),
        (format!("{MINIMAL}\n[job]\nnot_after = 2026-12-31T00:00:00\n"), 17, "time zone", ""),
        (format!("{MINIMAL}\n[job]\nbase_models = [\"md5:00\"]\n"), 17, "unknown digest algorithm", ""),
        (format!("{MINIMAL}\n[job]\noutput_recipients = [\"coffre-p384-pub-AAAA\"]\n"), 17, "wrong length", ""),
        (MINIMAL.replace("id = \"p\"\n", ""), 1, "missing field `id`", "add `id`"),
        (MINIMAL.replace("[snp]\n", "[snp]\n[snp]\n"), 15, "", ""),
    ];
    for (text, line, message, hint) in cases {
        let e = load_err(&text);
        assert_eq!(e.line, line, "{e} in\n{text}");
        assert!(e.message.contains(message), "{e:?}");
        assert!(e.hint.as_deref().unwrap_or("").contains(hint), "{e:?}");
    }
}

fn errors_of(text: &str) -> Vec<String> {
    let p = Policy::from_toml(text).unwrap_or_else(|e| panic!("{e}\n{text}"));
    lint(&p).into_iter().filter(|f| f.severity == Severity::Error).map(|f| f.key).collect()
}

#[test]
fn contradictory_rules_are_flagged() {
    let cases: Vec<(String, &str)> = vec![
        (MINIMAL.replace("datasets = [\"*\"]", ""), "scope"),
        (MINIMAL.replace("kinds = [\"snp\"]", "kinds = []"), "platform.kinds"),
        (MINIMAL.replace("kinds = [\"snp\"]", "kinds = [\"snp\", \"tdx\"]"), "tdx"),
        (MINIMAL.replace("[snp]\n", ""), "snp"),
        (MINIMAL.replace("[snp]\n", "[snp]\nsigning_keys = []\n"), "snp.signing_keys"),
        (MINIMAL.replace("[snp]\n", "[snp]\nmeasurements = []\n"), "snp.measurements"),
        (
            MINIMAL.replace("kinds = [\"snp\"]", "kinds = [\"snp\"]\ncpu_products = [\"genoa\", \"turin\"]")
                + "[snp.min_tcb.genoa]\nbootloader = 1\ntee = 0\nsnp = 1\nmicrocode = 1\n",
            "snp.min_tcb",
        ),
        (
            MINIMAL.replace("kinds = [\"snp\"]", "kinds = [\"snp\"]\ncpu_products = [\"turin\"]")
                + "[snp.min_tcb.turin]\nbootloader = 1\ntee = 0\nsnp = 1\nmicrocode = 1\n",
            "snp.min_tcb.turin",
        ),
        (
            MINIMAL.replace("kinds = [\"snp\"]", "kinds = [\"snp\"]\ncpu_products = [\"genoa\"]")
                + "[snp.min_tcb.genoa]\nfmc = 1\nbootloader = 1\ntee = 0\nsnp = 1\nmicrocode = 1\n",
            "snp.min_tcb.genoa",
        ),
        (format!("{MINIMAL}[snp.chip_ids]\nparis-1 = []\n"), "snp.chip_ids.paris-1"),
        (format!("{MINIMAL}[gpu]\ncount = 1\nmin_count = 2\n"), "gpu.count"),
        (format!("{MINIMAL}[gpu]\ndriver_versions = []\n"), "gpu.driver_versions"),
        (
            format!("{MINIMAL}[job]\nnot_before = 2026-12-31T00:00:00Z\nnot_after = 2026-01-01T00:00:00Z\n"),
            "job.not_after",
        ),
        (format!("{MINIMAL}[job]\nmax_releases = 0\n"), "job.max_releases"),
        (format!("{MINIMAL}[job]\nmax_epochs = 0\n"), "job"),
    ];
    for (text, key) in cases {
        let errors = errors_of(&text);
        assert!(errors.contains(&key.to_owned()), "expected an error on {key}, got {errors:?} for\n{text}");
    }
    assert!(errors_of(&bundled("bank-strict")).is_empty());
}

#[test]
fn the_canonical_form_ignores_layout_and_comments_but_not_values() {
    let original = Policy::from_toml(&bundled("bank-strict")).unwrap();
    let relaid = bundled("bank-strict").replace("# ", "#  ").replace(" = ", "   =   ") + "\n# trailing comment\n";
    assert_eq!(Policy::from_toml(&relaid).unwrap().digest(), original.digest());
    let changed = Policy::from_toml(&bundled("bank-strict").replace("microcode = 84", "microcode = 85")).unwrap();
    assert_ne!(changed.digest(), original.digest());
    assert!(original.digest().starts_with("sha384:") && original.digest().len() == 7 + 96);
}

#[test]
fn the_published_schema_is_the_generated_one() {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("schema/coffre-policy-v1.schema.json");
    let generated = json_schema();
    if std::env::var_os("COFFRE_UPDATE_SCHEMA").is_some() {
        std::fs::write(&path, &generated).unwrap();
    }
    let published = std::fs::read_to_string(&path).unwrap_or_default();
    assert!(
        published == generated,
        "{} is out of date: run `COFFRE_UPDATE_SCHEMA=1 cargo test -p coffre-policies --test documents`",
        path.display()
    );
    let schema: serde_json::Value = serde_json::from_str(&published).unwrap();
    assert_eq!(schema["additionalProperties"], false);
    assert!(schema["properties"]["snp"].is_object());
}
