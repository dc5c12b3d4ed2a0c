#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! End-to-end training on a generated tiny Llama: save → load → train → save → reload.

use coffre_trainer::data::{Dataset, Template, read_records};
use coffre_trainer::lora::LoraSpec;
use coffre_trainer::model::MODULES;
use coffre_trainer::{DpOptions, Llama, Mode, TrainOptions, Trainer, tiny, weights};

use candle_core::{Device, Tensor};

const INTENTS: [(&str, &str); 4] = [
    ("I lost my card, please block it", "card_lost"),
    ("What does a transfer abroad cost?", "transfer_fees"),
    ("Please raise my daily limit", "limit_increase"),
    ("I moved, here is my new address", "address_change"),
];

fn records(n: usize) -> String {
    (0..n)
        .map(|i| {
            let (p, c) = INTENTS[i % INTENTS.len()];
            format!("{}\n", serde_json::json!({"prompt": format!("{p} (#{i}) -> "), "completion": c}))
        })
        .collect()
}

fn tiny_dir() -> tempfile::TempDir {
    let dir = tempfile::tempdir().unwrap();
    tiny::generate(dir.path(), 64, 2, 7).unwrap();
    dir
}

fn dataset(base: &coffre_trainer::BaseModel, n: usize) -> Dataset {
    read_records(records(n).as_bytes(), &base.tokenizer, 64, Template::Plain).unwrap()
}

fn options(mode: Mode, steps: usize) -> TrainOptions {
    let mut o = TrainOptions::new(mode);
    o.steps = steps;
    o.batch_size = 4;
    o.max_len = 64;
    o.warmup = 2;
    o.optimizer.lr = 3e-3;
    o.eval_fraction = 0.125;
    o
}

fn lora(rank: usize) -> Mode {
    let mut spec = LoraSpec::new(rank);
    spec.targets = MODULES.iter().map(|m| (*m).to_owned()).collect();
    Mode::Lora(spec)
}

fn snapshot(t: &Trainer) -> Vec<Vec<f32>> {
    t.params.iter().map(|(_, v)| v.as_tensor().flatten_all().unwrap().to_vec1().unwrap()).collect()
}

fn logits(model: &Llama, ids: &[u32]) -> Vec<f32> {
    let ids = Tensor::from_vec(ids.to_vec(), (1, ids.len()), &Device::Cpu).unwrap();
    model.forward(&ids, None).unwrap().flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn full_fine_tuning_lowers_the_loss_and_changes_every_weight() {
    let dir = tiny_dir();
    let base = weights::load(dir.path(), None, &Device::Cpu).unwrap();
    let data = dataset(&base, 32);
    let mut t = Trainer::new(&base, data, options(Mode::Full, 30), &Device::Cpu).unwrap();
    let before = snapshot(&t);
    let summary = t.run(None, |_| {}).unwrap();
    let after = snapshot(&t);
    assert!(summary.final_loss < summary.first_loss * 0.7, "loss {} -> {}", summary.first_loss, summary.final_loss);
    assert!(summary.final_eval_loss.unwrap() < summary.initial_eval_loss.unwrap());
    for ((name, _), (b, a)) in t.params.iter().zip(before.iter().zip(&after)) {
        assert!(b != a, "{name} did not change");
    }
    assert_eq!(summary.trainable_parameters, base.config.parameter_count());

    // The written model loads back and computes what the trained one computes.
    let out = tempfile::tempdir().unwrap();
    let merged = t.model.merged_weights().unwrap();
    weights::save_model(out.path(), &base.config, &merged, &base.tokenizer).unwrap();
    let reloaded = weights::load(out.path(), None, &Device::Cpu).unwrap();
    let (model, _) = Llama::new(reloaded.config, &reloaded.weights, &Mode::Full, 0).unwrap();
    let ids = base.tokenizer.encode("Please raise my daily limit -> ").unwrap();
    assert_eq!(logits(&t.model, &ids), logits(&model, &ids));
}

#[test]
fn lora_trains_adapters_only_and_the_adapter_reloads_to_identical_outputs() {
    let dir = tiny_dir();
    let base = weights::load(dir.path(), None, &Device::Cpu).unwrap();
    let mut o = options(lora(4), 30);
    o.optimizer.lr = 1e-2;
    let mut t = Trainer::new(&base, dataset(&base, 32), o, &Device::Cpu).unwrap();
    assert!(t.params.iter().all(|(n, _)| n.contains(".lora_")));
    assert_eq!(t.params.len(), 2 * 7 * 2);
    let before = snapshot(&t);
    let summary = t.run(None, |_| {}).unwrap();
    assert!(summary.final_loss < summary.first_loss * 0.92, "loss {} -> {}", summary.first_loss, summary.final_loss);
    for ((name, _), (b, a)) in t.params.iter().zip(before.iter().zip(&snapshot(&t))) {
        assert!(b != a, "{name} did not change");
    }

    let out = tempfile::tempdir().unwrap();
    let Mode::Lora(spec) = t.options().mode.clone() else { unreachable!() };
    coffre_trainer::lora::save_adapter(out.path(), &spec, &t.params, "coffre-tiny").unwrap();
    let (spec2, adapter) = coffre_trainer::lora::load_adapter(out.path(), &Device::Cpu).unwrap();
    assert_eq!(spec, spec2);
    let model = coffre_trainer::lora::with_adapter(&base, &spec2, &adapter, &Device::Cpu).unwrap();
    let ids = base.tokenizer.encode("I lost my card, please block it -> ").unwrap();
    let trained = logits(&t.model, &ids);
    assert_eq!(trained, logits(&model, &ids), "reloaded adapter differs");

    // The base model alone computes something else; merged weights compute the same (to rounding).
    let (plain, _) = Llama::new(base.config.clone(), &base.weights, &Mode::Full, 0).unwrap();
    assert_ne!(trained, logits(&plain, &ids));
    let (merged, _) = Llama::new(base.config.clone(), &t.model.merged_weights().unwrap(), &Mode::Full, 0).unwrap();
    let diff = trained.iter().zip(logits(&merged, &ids)).map(|(a, b)| (a - b).abs()).fold(0f32, f32::max);
    assert!(diff < 1e-4, "merged model differs by {diff}");
}

#[test]
fn same_seed_same_run_and_resume_continues_exactly() {
    let dir = tiny_dir();
    let base = weights::load(dir.path(), None, &Device::Cpu).unwrap();
    let mut o = options(lora(2), 6);
    o.grad_accum = 2;
    o.checkpoint_every = 3;
    let mut a = Trainer::new(&base, dataset(&base, 24), o.clone(), &Device::Cpu).unwrap();
    let sa = a.run(None, |_| {}).unwrap();
    let mut b = Trainer::new(&base, dataset(&base, 24), o.clone(), &Device::Cpu).unwrap();
    let sb = b.run(None, |_| {}).unwrap();
    assert_eq!(sa.losses, sb.losses);
    assert_eq!(snapshot(&a), snapshot(&b));

    // Stop after three steps (the checkpoint), then resume in a fresh trainer.
    let cp = tempfile::tempdir().unwrap();
    let mut first = o.clone();
    first.steps = 3;
    let mut c = Trainer::new(&base, dataset(&base, 24), first, &Device::Cpu).unwrap();
    c.run(Some(&mut coffre_trainer::DirCheckpoints::new(cp.path())), |_| {}).unwrap();
    assert!(cp.path().join("checkpoint/state.json").exists());
    let mut d = Trainer::new(&base, dataset(&base, 24), o.clone(), &Device::Cpu).unwrap();
    d.resume(cp.path()).unwrap();
    assert_eq!(d.step_index(), 3);
    let sd = d.run(None, |_| {}).unwrap();
    assert_eq!(sd.losses, sa.losses);
    assert_eq!(snapshot(&d), snapshot(&a));
    // Resumed from the final checkpoint, no step is left: the held-out loss is still the trained
    // model's, not the one from before training.
    let done = tempfile::tempdir().unwrap();
    let mut f = Trainer::new(&base, dataset(&base, 24), o.clone(), &Device::Cpu).unwrap();
    f.run(Some(&mut coffre_trainer::DirCheckpoints::new(done.path())), |_| {}).unwrap();
    let mut g = Trainer::new(&base, dataset(&base, 24), o.clone(), &Device::Cpu).unwrap();
    g.resume(done.path()).unwrap();
    let sg = g.run(None, |_| {}).unwrap();
    assert_eq!(sg.final_eval_loss, sa.final_eval_loss);
    assert_ne!(sg.final_eval_loss, sg.initial_eval_loss);

    // Other options or other data are refused.
    let mut other = o.clone();
    other.optimizer.lr *= 2.0;
    let mut e = Trainer::new(&base, dataset(&base, 24), other, &Device::Cpu).unwrap();
    assert!(e.resume(cp.path()).unwrap_err().to_string().contains("other training options"));
    let mut f = Trainer::new(&base, dataset(&base, 28), o, &Device::Cpu).unwrap();
    assert!(f.resume(cp.path()).unwrap_err().to_string().contains("other training data"));
}

#[test]
fn every_trainable_parameter_receives_a_gradient() {
    let base = tiny::base_model(64, 2, 3, &Device::Cpu).unwrap();
    for mode in [Mode::Full, lora(2)] {
        let t = Trainer::new(&base, dataset(&base, 8), options(mode.clone(), 1), &Device::Cpu).unwrap();
        // LoRA B starts at zero, which zeroes A's gradient; give B values first, as after a step.
        for (name, var) in &t.params {
            if name.contains("lora_B") {
                var.set(&Tensor::full(0.01f32, var.shape(), &Device::Cpu).unwrap()).unwrap();
            }
        }
        let batch: Vec<_> = dataset(&base, 4).examples;
        let (per, _, _) = t.per_example(&batch, false).unwrap();
        for (i, (name, _)) in t.params.iter().enumerate() {
            let norm: f32 =
                per.iter().map(|g| g[i].sqr().unwrap().sum_all().unwrap().to_scalar::<f32>().unwrap()).sum();
            assert!(norm > 0.0, "{mode:?}: {name} has a zero gradient");
        }
    }
}

#[test]
fn dp_sgd_per_example_gradients_equal_one_at_a_time_reference() {
    let base = tiny::base_model(64, 2, 5, &Device::Cpu).unwrap();
    let mut o = options(lora(3), 1);
    o.dp = Some(DpOptions {
        epsilon: None,
        noise_multiplier: Some(1.0),
        delta: 1e-5,
        clip: 1.0,
        reproducible_noise: false,
    });
    let t = Trainer::new(&base, dataset(&base, 16), o, &Device::Cpu).unwrap();
    for (name, var) in &t.params {
        if name.contains("lora_B") {
            let n = var.elem_count();
            let v: Vec<f32> = (0..n).map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.003).collect();
            var.set(&Tensor::from_vec(v, var.shape(), &Device::Cpu).unwrap()).unwrap();
        }
    }
    // Examples of different lengths, so padding is exercised.
    let batch = dataset(&base, 5).examples;
    let (fast, lf, _) = t.per_example(&batch, true).unwrap();
    let (slow, ls, _) = t.per_example(&batch, false).unwrap();
    assert!((lf - ls).abs() < 1e-4, "losses {lf} vs {ls}");
    for (e, (f, s)) in fast.iter().zip(&slow).enumerate() {
        for (p, (a, b)) in f.iter().zip(s).enumerate() {
            let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
            let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
            let scale = b.iter().map(|x| x.abs()).fold(0f32, f32::max).max(1e-6);
            let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
            assert!(
                diff <= 1e-4 * scale + 1e-7,
                "example {e}, parameter {}: differs by {diff} (scale {scale})",
                t.params[p].0
            );
        }
    }
    // And the examples' gradients are not all alike (the test would pass trivially otherwise).
    let first: Vec<f32> = fast[0][0].flatten_all().unwrap().to_vec1().unwrap();
    let second: Vec<f32> = fast[1][0].flatten_all().unwrap().to_vec1().unwrap();
    assert_ne!(first, second);
}

#[test]
fn dp_sgd_trains_and_reports_the_privacy_spent() {
    let dir = tiny_dir();
    let base = weights::load(dir.path(), None, &Device::Cpu).unwrap();
    for mode in [lora(4), Mode::Full] {
        let mut o = options(mode.clone(), 25);
        o.batch_size = 8;
        o.optimizer.lr = if mode == Mode::Full { 3e-3 } else { 1e-2 };
        o.dp = Some(DpOptions {
            epsilon: Some(8.0),
            noise_multiplier: None,
            delta: 1e-5,
            clip: 1.0,
            reproducible_noise: false,
        });
        let mut t = Trainer::new(&base, dataset(&base, 64), o, &Device::Cpu).unwrap();
        let sigma = t.noise_multiplier().unwrap();
        assert!(sigma > 0.3 && sigma < 5.0, "σ = {sigma}");
        let before = snapshot(&t);
        let s = t.run(None, |_| {}).unwrap();
        let p = s.privacy.clone().unwrap();
        assert!(p.epsilon <= 8.0 && p.epsilon > 7.5, "{mode:?}: ε = {} for target 8", p.epsilon);
        assert!(s.final_eval_loss.unwrap() < s.initial_eval_loss.unwrap(), "{mode:?}: {s:?}");
        assert_ne!(before, snapshot(&t));
    }
}

#[test]
fn records_from_any_reader_with_clear_errors() {
    let base = tiny::base_model(32, 1, 1, &Device::Cpu).unwrap();
    let text = "{\"text\": \"hello\"}\n\n{\"prompt\": \"a\", \"completion\": \"b\"}\n";
    let d = read_records(std::io::Cursor::new(text), &base.tokenizer, 16, Template::Plain).unwrap();
    assert_eq!(d.records, 2);
    // A text record learns every token after the first, plus the end token.
    assert_eq!(d.examples[0].targets(), 5);
    // A prompt/completion record learns only the completion and the end token.
    assert_eq!(d.examples[1].target_mask, vec![true, true]);
    let e = read_records("{\"text\": 1}\n".as_bytes(), &base.tokenizer, 16, Template::Plain).unwrap_err();
    assert!(e.to_string().starts_with("line 1:"), "{e}");
    let e =
        read_records("{\"text\": \"ok\"}\nnot json\n".as_bytes(), &base.tokenizer, 16, Template::Plain).unwrap_err();
    assert!(e.to_string().starts_with("line 2: not a JSON object"), "{e}");
    assert!(
        read_records("".as_bytes(), &base.tokenizer, 16, Template::Plain).unwrap_err().to_string().contains("empty")
    );
    // Long records are cut; a prompt that fills the window leaves nothing to learn and is skipped.
    let long = format!("{}\n", serde_json::json!({"prompt": "x".repeat(40), "completion": "y"}));
    let d = read_records(
        format!("{long}{{\"text\": \"{}\"}}\n", "z".repeat(40)).as_bytes(),
        &base.tokenizer,
        16,
        Template::Plain,
    )
    .unwrap();
    assert_eq!((d.skipped, d.truncated, d.examples.len()), (1, 2, 1));
}

#[test]
fn dp_sgd_noise_is_fresh_unless_reproducibility_is_asked_for() {
    let base = tiny::base_model(32, 1, 9, &Device::Cpu).unwrap();
    let run = |reproducible_noise: bool| {
        let mut o = options(lora(2), 2);
        o.dp =
            Some(DpOptions { epsilon: None, noise_multiplier: Some(1.0), delta: 1e-5, clip: 1.0, reproducible_noise });
        let mut t = Trainer::new(&base, dataset(&base, 16), o, &Device::Cpu).unwrap();
        t.run(None, |_| {}).unwrap();
        snapshot(&t)
    };
    // The same seed: a guessable seed must not give away the noise.
    assert_ne!(run(false), run(false));
    assert_eq!(run(true), run(true));
}
