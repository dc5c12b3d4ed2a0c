//! Operations with hand-written backward passes where candle's generic ones waste work.
//!
//! * [`frozen_matmul`]: `x Wᵀ` with a frozen `W`. candle's matmul backward always computes the
//!   gradient of both operands, so under LoRA every frozen projection (and the 49 152-row head of
//!   SmolLM2) had its full weight gradient computed and thrown away: a third of the step's
//!   matrix products.
//! * [`cross_entropy`]: the token-weighted negative log-likelihood over the vocabulary in one pass
//!   per row, with the gradient `w · (softmax − onehot)` in one more, instead of a dozen
//!   vocabulary-sized temporaries.
//!
//! * [`rms_norm`], [`softmax`] and [`swiglu`]: one pass each way instead of five to fifteen
//!   tensor-sized temporaries.
//!
//! All run on the CPU; on other devices the composed (slower, equally exact) forms are used.
//! `tests/ops.rs` checks them against those composed forms.

use candle_core::{CpuStorage, CustomOp1, D, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::Result;

/// `x Wᵀ` (`x: [n, in]`, `W: [out, in]`) where only `x` may need a gradient.
pub fn frozen_matmul(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || !x.track_op() || w.track_op() || x.rank() != 2 {
        return Ok(x.matmul(&w.t()?)?);
    }
    Ok(x.apply_op1(FrozenProjection { weight: w.clone() })?)
}

struct FrozenProjection {
    weight: Tensor,
}

impl CustomOp1 for FrozenProjection {
    fn name(&self) -> &'static str {
        "frozen-projection"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        use candle_core::backend::BackendStorage;
        let (n, k) = layout.shape().dims2()?;
        let (storage, w_layout) = self.weight.storage_and_layout();
        let candle_core::Storage::Cpu(w) = &*storage else {
            candle_core::bail!("frozen-projection: weight not on the CPU")
        };
        let (out, k_w) = w_layout.shape().dims2()?;
        if k != k_w {
            candle_core::bail!("frozen-projection: input of {k} columns, weight of {k_w}")
        }
        let product = x.matmul(w, (1, n, out, k), layout, &w_layout.transpose(0, 1)?)?;
        Ok((product, Shape::from((n, out))))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.weight)?))
    }
}

/// `Σᵢ weights[i] · −log softmax(logits[i])[targets[i]]` for `logits: [n, vocab]`.
pub fn cross_entropy(logits: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
    if !logits.device().is_cpu() {
        let t = Tensor::from_slice(targets, targets.len(), logits.device())?;
        let w = Tensor::from_slice(weights, weights.len(), logits.device())?;
        return composed_cross_entropy(logits, &t, &w);
    }
    let op = CrossEntropy { targets: targets.to_vec(), weights: weights.to_vec(), scale: 1.0 };
    Ok(logits.contiguous()?.apply_op1(op)?)
}

/// The same loss from candle's differentiable primitives (the reference, and the non-CPU path).
pub fn composed_cross_entropy(logits: &Tensor, targets: &Tensor, weights: &Tensor) -> Result<Tensor> {
    let max = logits.max_keepdim(D::Minus1)?.detach();
    let shifted = logits.broadcast_sub(&max)?;
    let log_z = shifted.exp()?.sum_keepdim(D::Minus1)?.log()?;
    let picked = shifted.gather(&targets.unsqueeze(1)?, 1)?;
    let nll = (log_z - picked)?.squeeze(1)?;
    Ok((nll * weights)?.sum_all()?)
}

struct CrossEntropy {
    targets: Vec<u32>,
    weights: Vec<f32>,
    /// Multiplies the gradient (the incoming ∂L/∂loss) when this op computes it.
    scale: f32,
}

impl CrossEntropy {
    fn rows<'a>(&self, storage: &'a CpuStorage, layout: &Layout) -> candle_core::Result<(&'a [f32], usize)> {
        let CpuStorage::F32(all) = storage else { candle_core::bail!("cross-entropy needs f32 logits") };
        let Some((start, end)) = layout.contiguous_offsets() else {
            candle_core::bail!("cross-entropy needs contiguous logits")
        };
        let (n, vocab) = layout.shape().dims2()?;
        if n != self.targets.len() || n != self.weights.len() {
            candle_core::bail!("cross-entropy: {n} rows but {} targets", self.targets.len())
        }
        if let Some(t) = self.targets.iter().find(|t| **t as usize >= vocab) {
            candle_core::bail!("cross-entropy: target {t} outside the vocabulary of {vocab}")
        }
        Ok((&all[start..end], vocab))
    }
}

/// (max, log Σ exp(x − max)) of a row.
fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    let sum: f32 = row.iter().map(|x| exp(x - max)).sum();
    (max, sum.ln())
}

/// e^x for the row operations here, without a library call so that loops vectorise: 2^k · e^r
/// with k = round(x / ln 2) and a degree-6 polynomial for e^r, |r| ≤ ln 2 / 2 (relative error
/// below 3·10⁻⁷). Arguments are ≤ 0 here (shifted by the row maximum); below −87 the result is 0,
/// so masked (−∞) entries stay exactly zero.
#[inline(always)]
fn exp(x: f32) -> f32 {
    const SHIFTER: f32 = 12_582_912.0; // 1.5 · 2²³: adding and subtracting it rounds to an integer
    let xc = x.clamp(-87.0, 88.0);
    let k = (xc * std::f32::consts::LOG2_E + SHIFTER) - SHIFTER;
    let r = xc - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    if x < -87.0 { 0.0 } else { scale * p }
}

impl CustomOp1 for CrossEntropy {
    fn name(&self) -> &'static str {
        "cross-entropy"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (logits, vocab) = self.rows(storage, layout)?;
        let loss: f64 = logits
            .par_chunks(vocab)
            .zip(self.targets.par_iter().zip(self.weights.par_iter()))
            .filter(|(_, (_, w))| **w != 0.0)
            .map(|(row, (t, w))| {
                let (max, lse) = log_sum_exp(row);
                f64::from(*w) * f64::from(lse - (row[*t as usize] - max))
            })
            .sum();
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(&self, logits: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let scale = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let op = CrossEntropyGrad(CrossEntropy { targets: self.targets.clone(), weights: self.weights.clone(), scale });
        Ok(Some(logits.apply_op1_no_bwd(&op)?))
    }
}

/// `scale · w · (softmax(row) − onehot(target))` per row.
struct CrossEntropyGrad(CrossEntropy);

impl CustomOp1 for CrossEntropyGrad {
    fn name(&self) -> &'static str {
        "cross-entropy-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (logits, vocab) = self.0.rows(storage, layout)?;
        let mut out = vec![0f32; logits.len()];
        out.par_chunks_mut(vocab)
            .zip(logits.par_chunks(vocab))
            .zip(self.0.targets.par_iter().zip(self.0.weights.par_iter()))
            .filter(|(_, (_, w))| **w != 0.0)
            .for_each(|((g, row), (t, w))| {
                let (max, lse) = log_sum_exp(row);
                let f = self.0.scale * w;
                for (gi, x) in g.iter_mut().zip(row) {
                    *gi = f * exp(x - max - lse);
                }
                g[*t as usize] -= f;
            });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }
}

/// The contiguous f32 slice of a CPU tensor argument.
fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else { candle_core::bail!("{what} needs f32 input") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{what} needs contiguous input") };
    Ok(&all[start..end])
}

/// `x / sqrt(mean(x²) + eps) · w` over the last dimension of `x: [n, h]`, with `w: [h]`.
pub fn rms_norm(x: &Tensor, w: &Tensor, eps: f64) -> Result<Tensor> {
    if !x.device().is_cpu() || x.rank() != 2 {
        let inv = (x.sqr()?.mean_keepdim(D::Minus1)? + eps)?.sqrt()?.recip()?;
        return Ok(x.broadcast_mul(&inv)?.broadcast_mul(w)?);
    }
    Ok(x.contiguous()?.apply_op2(&w.contiguous()?, RmsNorm { eps: eps as f32 })?)
}

struct RmsNorm {
    eps: f32,
}

impl RmsNorm {
    fn inv(&self, row: &[f32]) -> f32 {
        let mean = row.iter().map(|v| v * v).sum::<f32>() / row.len() as f32;
        1.0 / (mean + self.eps).sqrt()
    }
}

impl candle_core::CustomOp2 for RmsNorm {
    fn name(&self) -> &'static str {
        "rms-norm"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w) = (slice(s1, l1, "rms-norm")?, slice(s2, l2, "rms-norm")?);
        let h = w.len();
        if l1.shape().dims2()?.1 != h {
            candle_core::bail!("rms-norm: weight of {h} for rows of {}", l1.shape().dims2()?.1)
        }
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(h).zip(x.par_chunks(h)).for_each(|(y, row)| {
            let inv = self.inv(row);
            for ((yi, xi), wi) in y.iter_mut().zip(row).zip(w) {
                *yi = xi * inv * wi;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _: &Tensor,
        g: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let n = x.dim(0)?;
        let packed = x.apply_op3_no_bwd(w, &g.contiguous()?, &RmsNormGrad(RmsNorm { eps: self.eps }))?;
        Ok((Some(packed.narrow(0, 0, n)?), Some(packed.get(n)?)))
    }
}

/// Gradients of [`RmsNorm`], packed `[n + 1, h]`: rows `0..n` are ∂L/∂x, row `n` is ∂L/∂w.
/// With r = 1/sqrt(mean(x²)+eps): ∂L/∂x = r·(g⊙w) − x·r³/h·Σ(g⊙w⊙x), ∂L/∂w = Σ_rows g⊙x·r.
struct RmsNormGrad(RmsNorm);

impl candle_core::CustomOp3 for RmsNormGrad {
    fn name(&self) -> &'static str {
        "rms-norm-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (x, w, g) = (slice(s1, l1, "rms-norm")?, slice(s2, l2, "rms-norm")?, slice(s3, l3, "rms-norm")?);
        let h = w.len();
        let n = x.len() / h;
        let mut out = vec![0f32; x.len() + h];
        let (dx, _) = out.split_at_mut(x.len());
        let partial: Vec<f32> = dx
            .par_chunks_mut(h)
            .zip(x.par_chunks(h).zip(g.par_chunks(h)))
            .fold(
                || vec![0f32; h],
                |mut dw, (dxr, (xr, gr))| {
                    let inv = self.0.inv(xr);
                    let dot: f32 = xr.iter().zip(gr).zip(w).map(|((xi, gi), wi)| gi * wi * xi).sum();
                    let k = inv * inv * inv * dot / h as f32;
                    for i in 0..h {
                        dxr[i] = inv * gr[i] * w[i] - xr[i] * k;
                        dw[i] += gr[i] * xr[i] * inv;
                    }
                    dw
                },
            )
            .reduce(|| vec![0f32; h], |a, b| a.iter().zip(&b).map(|(x, y)| x + y).collect());
        out[n * h..].copy_from_slice(&partial);
        Ok((CpuStorage::F32(out), Shape::from((n + 1, h))))
    }
}

/// Softmax over the last dimension (rows of a contiguous tensor).
pub fn softmax(x: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() {
        let max = x.max_keepdim(D::Minus1)?.detach();
        let e = x.broadcast_sub(&max)?.exp()?;
        return Ok(e.broadcast_div(&e.sum_keepdim(D::Minus1)?)?);
    }
    Ok(x.contiguous()?.apply_op1(Softmax)?)
}

struct Softmax;

impl CustomOp1 for Softmax {
    fn name(&self) -> &'static str {
        "softmax"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(storage, layout, "softmax")?;
        let d = layout.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; x.len()];
        out.par_chunks_mut(d).zip(x.par_chunks(d)).for_each(|(y, row)| {
            let max = row.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let mut sum = 0f32;
            for (yi, xi) in y.iter_mut().zip(row) {
                *yi = exp(xi - max);
                sum += *yi;
            }
            let inv = 1.0 / sum;
            y.iter_mut().for_each(|v| *v *= inv);
        });
        Ok((CpuStorage::F32(out), layout.shape().clone()))
    }

    fn bwd(&self, _: &Tensor, y: &Tensor, g: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(y.apply_op2_no_bwd(&g.contiguous()?, &SoftmaxGrad)?))
    }
}

/// ∂L/∂x = y ⊙ (g − Σ g⊙y) per row.
struct SoftmaxGrad;

impl candle_core::CustomOp2 for SoftmaxGrad {
    fn name(&self) -> &'static str {
        "softmax-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (y, g) = (slice(s1, l1, "softmax")?, slice(s2, l2, "softmax")?);
        let d = l1.shape().dims().last().copied().unwrap_or(1).max(1);
        let mut out = vec![0f32; y.len()];
        out.par_chunks_mut(d).zip(y.par_chunks(d).zip(g.par_chunks(d))).for_each(|(o, (yr, gr))| {
            let dot: f32 = yr.iter().zip(gr).map(|(a, b)| a * b).sum();
            for ((oi, yi), gi) in o.iter_mut().zip(yr).zip(gr) {
                *oi = yi * (gi - dot);
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }
}

/// SwiGLU's gate: `silu(gate) ⊙ up` for two tensors of one shape.
pub fn swiglu(gate: &Tensor, up: &Tensor) -> Result<Tensor> {
    if !gate.device().is_cpu() || gate.shape() != up.shape() {
        return Ok((gate.silu()? * up)?);
    }
    Ok(gate.contiguous()?.apply_op2(&up.contiguous()?, SwiGlu)?)
}

struct SwiGlu;

fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + exp(-x.min(87.0)))
}

impl candle_core::CustomOp2 for SwiGlu {
    fn name(&self) -> &'static str {
        "swiglu"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, u) = (slice(s1, l1, "swiglu")?, slice(s2, l2, "swiglu")?);
        let mut out = vec![0f32; g.len()];
        out.par_chunks_mut(4096).zip(g.par_chunks(4096).zip(u.par_chunks(4096))).for_each(|(o, (g, u))| {
            for ((oi, gi), ui) in o.iter_mut().zip(g).zip(u) {
                *oi = gi * sigmoid(*gi) * ui;
            }
        });
        Ok((CpuStorage::F32(out), l1.shape().clone()))
    }

    fn bwd(
        &self,
        gate: &Tensor,
        up: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let packed = gate.apply_op3_no_bwd(up, &grad.contiguous()?, &SwiGluGrad)?;
        let n = gate.elem_count();
        let flat = packed.flatten_all()?;
        Ok((Some(flat.narrow(0, 0, n)?.reshape(gate.shape())?), Some(flat.narrow(0, n, n)?.reshape(gate.shape())?)))
    }
}

/// ∂/∂gate = dy ⊙ up ⊙ σ(g)(1 + g(1 − σ(g))), ∂/∂up = dy ⊙ silu(g); packed one after the other.
struct SwiGluGrad;

impl candle_core::CustomOp3 for SwiGluGrad {
    fn name(&self) -> &'static str {
        "swiglu-grad"
    }

    fn cpu_fwd(
        &self,
        s1: &CpuStorage,
        l1: &Layout,
        s2: &CpuStorage,
        l2: &Layout,
        s3: &CpuStorage,
        l3: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (g, u, dy) = (slice(s1, l1, "swiglu")?, slice(s2, l2, "swiglu")?, slice(s3, l3, "swiglu")?);
        let n = g.len();
        let mut out = vec![0f32; 2 * n];
        let (dg, du) = out.split_at_mut(n);
        dg.par_chunks_mut(4096)
            .zip(du.par_chunks_mut(4096))
            .zip(g.par_chunks(4096).zip(u.par_chunks(4096)).zip(dy.par_chunks(4096)))
            .for_each(|((dg, du), ((g, u), dy))| {
                for i in 0..g.len() {
                    let s = sigmoid(g[i]);
                    du[i] = dy[i] * g[i] * s;
                    dg[i] = dy[i] * u[i] * s * (1.0 + g[i] * (1.0 - s));
                }
            });
        Ok((CpuStorage::F32(out), Shape::from(2 * n)))
    }
}
