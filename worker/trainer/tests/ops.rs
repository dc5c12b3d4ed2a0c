#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The hand-written backward passes against candle's composed, differentiable forms.

use candle_core::{Device, Tensor, Var};
use coffre_trainer::ops::{composed_cross_entropy, cross_entropy, linear};

fn values(n: usize, seed: u32) -> Vec<f32> {
    (0..n).map(|i| ((i as u32).wrapping_mul(2_654_435_761).wrapping_add(seed) % 1000) as f32 / 250.0 - 2.0).collect()
}

fn close(a: &Tensor, b: &Tensor, tol: f32) {
    let a: Vec<f32> = a.flatten_all().unwrap().to_vec1().unwrap();
    let b: Vec<f32> = b.flatten_all().unwrap().to_vec1().unwrap();
    assert_eq!(a.len(), b.len());
    let diff = a.iter().zip(&b).map(|(x, y)| (x - y).abs()).fold(0f32, f32::max);
    assert!(diff <= tol, "differ by {diff}");
    assert!(b.iter().any(|x| *x != 0.0), "reference is all zeros: the comparison would prove nothing");
}

#[test]
fn fused_cross_entropy_matches_the_composed_loss_and_gradient() {
    let (n, vocab) = (7, 50);
    let logits = Var::from_tensor(&Tensor::from_vec(values(n * vocab, 3), (n, vocab), &Device::Cpu).unwrap()).unwrap();
    let targets: Vec<u32> = vec![0, 49, 3, 3, 17, 25, 8];
    let weights: Vec<f32> = vec![0.5, 0.0, 1.0, 0.25, 2.0, 0.0, 1.5];
    let fused = cross_entropy(logits.as_tensor(), &targets, &weights).unwrap();
    let t = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    let w = Tensor::new(weights.as_slice(), &Device::Cpu).unwrap();
    let reference = composed_cross_entropy(logits.as_tensor(), &t, &w).unwrap();
    let (a, b) = (fused.to_scalar::<f32>().unwrap(), reference.to_scalar::<f32>().unwrap());
    assert!((a - b).abs() < 1e-4 * b.abs(), "{a} vs {b}");
    // Scale the loss so the incoming gradient is not 1.
    let g1 = (fused * 3.0).unwrap().backward().unwrap();
    let g2 = (reference * 3.0).unwrap().backward().unwrap();
    close(g1.get(logits.as_tensor()).unwrap(), g2.get(logits.as_tensor()).unwrap(), 1e-5);
    // Rows with zero weight get no gradient.
    let g: Vec<Vec<f32>> = g1.get(logits.as_tensor()).unwrap().to_vec2().unwrap();
    assert!(g[1].iter().all(|x| *x == 0.0) && g[5].iter().all(|x| *x == 0.0));
    assert!(cross_entropy(logits.as_tensor(), &[50, 0, 0, 0, 0, 0, 0], &weights).is_err());
}

#[test]
fn the_head_fused_with_the_loss_matches_projection_then_loss() {
    use coffre_trainer::ops::head_cross_entropy;
    let (n, h, vocab) = (6, 8, 40);
    let x = Var::from_tensor(&Tensor::from_vec(values(n * h, 5), (n, h), &Device::Cpu).unwrap()).unwrap();
    let head = Var::from_tensor(&Tensor::from_vec(values(vocab * h, 6), (vocab, h), &Device::Cpu).unwrap()).unwrap();
    let targets: Vec<u32> = vec![0, 39, 3, 3, 17, 25];
    let weights: Vec<f32> = vec![0.5, 0.0, 1.0, 0.25, 2.0, 1.5];
    // x² so that x's gradient passes through another operation first; the head trainable (a tied
    // embedding under full fine-tuning) and frozen (LoRA).
    let input = x.as_tensor().sqr().unwrap();
    let fused = head_cross_entropy(&input, head.as_tensor(), &targets, &weights).unwrap();
    let t = Tensor::new(targets.as_slice(), &Device::Cpu).unwrap();
    let w = Tensor::new(weights.as_slice(), &Device::Cpu).unwrap();
    let logits = input.matmul(&head.as_tensor().t().unwrap()).unwrap();
    let reference = composed_cross_entropy(&logits, &t, &w).unwrap();
    let (a, b) = (fused.to_scalar::<f32>().unwrap(), reference.to_scalar::<f32>().unwrap());
    assert!((a - b).abs() < 1e-4 * b.abs(), "{a} vs {b}");
    let g1 = (fused * 3.0).unwrap().backward().unwrap();
    let g2 = (reference * 3.0).unwrap().backward().unwrap();
    close(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap(), 1e-4);
    close(g1.get(head.as_tensor()).unwrap(), g2.get(head.as_tensor()).unwrap(), 1e-4);

    let frozen = head.as_tensor().detach();
    let l = head_cross_entropy(&input, &frozen, &targets, &weights).unwrap();
    let g3 = l.backward().unwrap();
    assert!(g3.get(&frozen).is_none(), "a frozen head got a gradient");
    let g4 = composed_cross_entropy(&input.matmul(&frozen.t().unwrap()).unwrap(), &t, &w).unwrap().backward().unwrap();
    close(g3.get(x.as_tensor()).unwrap(), g4.get(x.as_tensor()).unwrap(), 1e-4);
    assert!(head_cross_entropy(&input, &frozen, &[40, 0, 0, 0, 0, 0], &weights).is_err());
}

#[test]
fn linear_with_a_trainable_weight_gives_both_gradients_of_a_plain_matmul() {
    let x = Var::from_tensor(&Tensor::from_vec(values(6 * 5, 7), (6, 5), &Device::Cpu).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::from_vec(values(4 * 5, 8), (4, 5), &Device::Cpu).unwrap()).unwrap();
    let y1 = linear(&x.as_tensor().sqr().unwrap(), w.as_tensor()).unwrap();
    let y2 = x.as_tensor().sqr().unwrap().matmul(&w.as_tensor().t().unwrap()).unwrap();
    close(&y1, &y2, 1e-6);
    let g1 = y1.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = y2.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    close(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap(), 1e-4);
    close(g1.get(w.as_tensor()).unwrap(), g2.get(w.as_tensor()).unwrap(), 1e-4);
}

#[test]
fn linear_gives_the_input_gradient_of_a_plain_matmul() {
    let x = Var::from_tensor(&Tensor::from_vec(values(6 * 5, 1), (6, 5), &Device::Cpu).unwrap()).unwrap();
    let w = Tensor::from_vec(values(4 * 5, 2), (4, 5), &Device::Cpu).unwrap();
    let y1 = linear(&x.as_tensor().sqr().unwrap(), &w).unwrap();
    let y2 = x.as_tensor().sqr().unwrap().matmul(&w.t().unwrap()).unwrap();
    close(&y1, &y2, 1e-6);
    let g1 = y1.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = y2.sqr().unwrap().sum_all().unwrap().backward().unwrap();
    close(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap(), 1e-4);
}

#[test]
fn fused_rms_norm_matches_the_composed_form_and_its_gradients() {
    use coffre_trainer::ops::rms_norm;
    let (n, h) = (5, 12);
    let x = Var::from_tensor(&Tensor::from_vec(values(n * h, 4), (n, h), &Device::Cpu).unwrap()).unwrap();
    let w = Var::from_tensor(&Tensor::from_vec(values(h, 8), h, &Device::Cpu).unwrap()).unwrap();
    let fused = rms_norm(x.as_tensor(), w.as_tensor(), 1e-5).unwrap();
    let inv = (x.as_tensor().sqr().unwrap().mean_keepdim(1).unwrap() + 1e-5).unwrap().sqrt().unwrap().recip().unwrap();
    let reference = x.as_tensor().broadcast_mul(&inv).unwrap().broadcast_mul(w.as_tensor()).unwrap();
    close(&fused, &reference, 1e-5);
    // A loss that weighs each output differently, so every term of the gradient matters.
    let weights = Tensor::from_vec(values(n * h, 9), (n, h), &Device::Cpu).unwrap();
    let g1 = (fused * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (reference * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    close(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap(), 1e-4);
    close(g1.get(w.as_tensor()).unwrap(), g2.get(w.as_tensor()).unwrap(), 1e-4);
}

#[test]
fn fused_softmax_matches_the_composed_form_and_its_gradient_with_masked_entries() {
    use coffre_trainer::ops::softmax;
    let (a, b, d) = (2, 3, 7);
    let mut v = values(a * b * d, 5);
    v[3] = f32::NEG_INFINITY; // a causal mask's entries
    v[10] = f32::NEG_INFINITY;
    let x = Var::from_tensor(&Tensor::from_vec(v, (a, b, d), &Device::Cpu).unwrap()).unwrap();
    let fused = softmax(x.as_tensor()).unwrap();
    let max = x.as_tensor().max_keepdim(2).unwrap().detach();
    let e = x.as_tensor().broadcast_sub(&max).unwrap().exp().unwrap();
    let reference = e.broadcast_div(&e.sum_keepdim(2).unwrap()).unwrap();
    close(&fused, &reference, 1e-6);
    let weights = Tensor::from_vec(values(a * b * d, 6), (a, b, d), &Device::Cpu).unwrap();
    let g1 = (fused * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (reference * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let (f, r) = (g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap());
    let f: Vec<f32> = f.flatten_all().unwrap().to_vec1().unwrap();
    let r: Vec<f32> = r.flatten_all().unwrap().to_vec1().unwrap();
    for (i, (p, q)) in f.iter().zip(&r).enumerate() {
        // The composed form gives NaN-free zeros at masked entries too.
        assert!((p - q).abs() < 1e-5, "entry {i}: {p} vs {q}");
    }
    assert_eq!(f[3], 0.0);
}

#[test]
fn fused_swiglu_matches_silu_times_up_and_its_gradients() {
    use coffre_trainer::ops::swiglu;
    let (n, m) = (6, 9);
    let g = Var::from_tensor(&Tensor::from_vec(values(n * m, 12), (n, m), &Device::Cpu).unwrap()).unwrap();
    let u = Var::from_tensor(&Tensor::from_vec(values(n * m, 13), (n, m), &Device::Cpu).unwrap()).unwrap();
    let fused = swiglu(g.as_tensor(), u.as_tensor()).unwrap();
    let reference = (g.as_tensor().silu().unwrap() * u.as_tensor()).unwrap();
    close(&fused, &reference, 1e-5);
    let weights = Tensor::from_vec(values(n * m, 14), (n, m), &Device::Cpu).unwrap();
    let g1 = (fused * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    let g2 = (reference * &weights).unwrap().sum_all().unwrap().backward().unwrap();
    close(g1.get(g.as_tensor()).unwrap(), g2.get(g.as_tensor()).unwrap(), 1e-5);
    close(g1.get(u.as_tensor()).unwrap(), g2.get(u.as_tensor()).unwrap(), 1e-5);
}

/// The rotation written out from the Hugging Face definition, on `[b, heads, t, hd]`.
fn composed_rope(x: &Tensor, cos: &Tensor, sin: &Tensor, b: usize, heads: usize, scale: f64) -> Tensor {
    let (rows, width) = x.dims2().unwrap();
    let (t, hd) = (rows / b, width / heads);
    let x = x.reshape((b, t, heads, hd)).unwrap().transpose(1, 2).unwrap();
    let rotated_half =
        Tensor::cat(&[x.narrow(3, hd / 2, hd / 2).unwrap().neg().unwrap(), x.narrow(3, 0, hd / 2).unwrap()], 3)
            .unwrap();
    let cos = Tensor::cat(&[cos.narrow(0, 0, t).unwrap(), cos.narrow(0, 0, t).unwrap()], 1).unwrap();
    let sin = Tensor::cat(&[sin.narrow(0, 0, t).unwrap(), sin.narrow(0, 0, t).unwrap()], 1).unwrap();
    ((x.broadcast_mul(&cos).unwrap() + rotated_half.broadcast_mul(&sin).unwrap()).unwrap() * scale).unwrap()
}

/// `[b, heads, t, hd]` → `[b, heads/group, t·group, hd]`, position-major within each group.
fn grouped(x: &Tensor, group: usize) -> Tensor {
    let (b, heads, t, hd) = x.dims4().unwrap();
    x.reshape((b, heads / group, group, t, hd))
        .unwrap()
        .transpose(2, 3)
        .unwrap()
        .reshape((b, heads / group, t * group, hd))
        .unwrap()
}

#[test]
fn fused_rope_matches_the_rotate_half_definition_and_its_gradient() {
    use coffre_trainer::ops::rope_heads;
    let (b, t, heads, hd, positions) = (2, 5, 6, 8, 9);
    let x =
        Var::from_tensor(&Tensor::from_vec(values(b * t * heads * hd, 5), (b * t, heads * hd), &Device::Cpu).unwrap())
            .unwrap();
    let angles: Vec<f32> = (0..positions * hd / 2).map(|i| (i as f32 * 0.37).sin() * 3.0).collect();
    let cos = Tensor::from_vec(angles.iter().map(|a| a.cos()).collect(), (positions, hd / 2), &Device::Cpu).unwrap();
    let sin = Tensor::from_vec(angles.iter().map(|a| a.sin()).collect(), (positions, hd / 2), &Device::Cpu).unwrap();
    // Plain heads (keys), and query heads grouped 2 and 3 per key/value head.
    for group in [1, 2, 3] {
        let fused = rope_heads(x.as_tensor(), &cos, &sin, b, heads, group, 0.5).unwrap();
        let reference = grouped(&composed_rope(x.as_tensor(), &cos, &sin, b, heads, 0.5), group);
        assert_eq!(fused.dims(), [b, heads / group, t * group, hd]);
        close(&fused, &reference, 1e-6);
        // A loss that weighs every output differently, so a wrong position or head would show.
        let weights = Tensor::from_vec(values(b * heads * t * hd, 9), fused.shape(), &Device::Cpu).unwrap();
        let g1 = (fused * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        let g2 = (reference * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        close(g1.get(x.as_tensor()).unwrap(), g2.get(x.as_tensor()).unwrap(), 1e-5);
    }
    assert!(rope_heads(x.as_tensor(), &cos, &sin, b, heads, 4, 0.5).is_err(), "6 heads do not split into 4s");
}

/// Attention in blocks of query positions against the whole masked score matrix, written out
/// from the definition (each query head with its key/value head repeated, full causal mask,
/// softmax from exp and sum): outputs and the gradients of queries, keys and values, for one
/// block, blocks that divide the sequence, a last block shorter than the rest, and blocks of
/// one position.
#[test]
fn blocked_causal_attention_equals_the_full_masked_computation() {
    use coffre_trainer::ops::CausalAttention;
    let (b, kv, rep, t, hd) = (2, 2, 3, 7, 4);
    let heads = kv * rep;
    let var = |n: usize, seed: u32, shape: (usize, usize, usize, usize)| {
        Var::from_tensor(&Tensor::from_vec(values(n, seed), shape, &Device::Cpu).unwrap()).unwrap()
    };
    let q = var(b * heads * t * hd, 21, (b, heads, t, hd));
    let k = var(b * kv * t * hd, 22, (b, kv, t, hd));
    let v = var(b * kv * t * hd, 23, (b, kv, t, hd));
    let scale = 0.5;

    let repeat = |x: &Tensor| {
        let x = x.unsqueeze(2).unwrap().repeat((1, 1, rep, 1, 1)).unwrap();
        x.reshape((b, heads, t, hd)).unwrap()
    };
    let mask: Vec<f32> = (0..t * t).map(|i| if i % t > i / t { f32::NEG_INFINITY } else { 0.0 }).collect();
    let mask = Tensor::from_vec(mask, (t, t), &Device::Cpu).unwrap();
    let scores = ((q.as_tensor() * scale).unwrap().matmul(&repeat(k.as_tensor()).t().unwrap()).unwrap())
        .broadcast_add(&mask)
        .unwrap();
    let e = scores.exp().unwrap();
    let p = e.broadcast_div(&e.sum_keepdim(3).unwrap()).unwrap();
    let reference = grouped(&p.matmul(&repeat(v.as_tensor())).unwrap(), rep);
    let weights = Tensor::from_vec(values(b * heads * t * hd, 24), reference.shape(), &Device::Cpu).unwrap();
    let reference_grads = (&reference * &weights).unwrap().sum_all().unwrap().backward().unwrap();

    for block in [7, 100, 1, 2, 3] {
        let attention = CausalAttention::new(t, rep, block, &Device::Cpu).unwrap();
        let grouped_q = grouped(&(q.as_tensor() * scale).unwrap(), rep);
        let out = attention.apply(&grouped_q, k.as_tensor(), v.as_tensor()).unwrap();
        assert_eq!(out.dims(), [b, kv, t * rep, hd]);
        close(&out, &reference, 1e-5);
        let grads = (out * &weights).unwrap().sum_all().unwrap().backward().unwrap();
        for x in [&q, &k, &v] {
            close(grads.get(x.as_tensor()).unwrap(), reference_grads.get(x.as_tensor()).unwrap(), 1e-5);
        }
    }
}
