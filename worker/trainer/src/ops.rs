//! Operations with hand-written backward passes where candle's generic ones waste work.
//!
//! * [`linear`]: `x Wᵀ` with a frozen `W`. candle's matmul backward always computes the
//!   gradient of both operands, so under LoRA every frozen projection (and the 49 152-row head of
//!   SmolLM2) had its full weight gradient computed and thrown away: a third of the step's
//!   matrix products. With a trainable `W`, one node instead of a transposition and a product.
//! * [`cross_entropy`]: the token-weighted negative log-likelihood over the vocabulary in one pass
//!   per row, with the gradient `w · (softmax − onehot)` in one more, instead of a dozen
//!   vocabulary-sized temporaries.
//! * [`head_cross_entropy`]: the output projection and that loss as one operation. The logits
//!   (tokens × vocabulary: 100 MB for 512 tokens of SmolLM2) never become a tensor of the graph;
//!   the forward pass turns them in place into the loss's gradient, which the backward pass
//!   multiplies by the head. That saves the autograd's zero-filled copy and sum of the logits'
//!   gradient, a second vocabulary-sized buffer, and a pass over it.
//! * [`rms_norm`], [`softmax`] and [`swiglu`]: one pass each way instead of five to fifteen
//!   tensor-sized temporaries.
//! * [`rope_heads`]: a projection's output split into heads, rotated and scaled in one pass each
//!   way, instead of a strided transpose, two halves, four broadcast products, a concatenation
//!   and a scaling (and their backward passes) per projection and layer.
//! * [`CausalAttention`]: attention in blocks of query positions, skipping the scores above the
//!   diagonal's blocks that the causal mask would zero (3/8 of attention's products at 512
//!   tokens, as PyTorch's CPU flash attention skips them).
//!
//! All run on the CPU; on other devices the composed (slower, equally exact) forms are used.
//! `tests/ops.rs` checks them against those composed forms.

use candle_core::{CpuStorage, CustomOp1, D, Layout, Shape, Tensor};
use rayon::prelude::*;

use crate::Result;

/// `x Wᵀ` (`x: [n, in]`, `W: [out, in]`, as stored), with a gradient for each operand that needs
/// one: only `x`'s for a frozen weight, both under full fine-tuning.
pub fn linear(x: &Tensor, w: &Tensor) -> Result<Tensor> {
    if !x.device().is_cpu() || x.rank() != 2 || w.rank() != 2 || !(x.track_op() || w.track_op()) {
        return Ok(x.matmul(&w.t()?)?);
    }
    if w.track_op() {
        return Ok(x.apply_op2(w, Projection)?);
    }
    Ok(x.apply_op1(FrozenProjection { weight: w.clone() })?)
}

/// `x Wᵀ` on the CPU storages as laid out (`W` read through a transposed layout, no copy).
fn project(
    x: &CpuStorage,
    xl: &Layout,
    w: &CpuStorage,
    wl: &Layout,
    what: &str,
) -> candle_core::Result<(CpuStorage, Shape)> {
    use candle_core::backend::BackendStorage;
    let (n, k) = xl.shape().dims2()?;
    let (out, k_w) = wl.shape().dims2()?;
    if k != k_w {
        candle_core::bail!("{what}: input of {k} columns, weight of {k_w}")
    }
    Ok((x.matmul(w, (1, n, out, k), xl, &wl.transpose(0, 1)?)?, Shape::from((n, out))))
}

struct FrozenProjection {
    weight: Tensor,
}

impl CustomOp1 for FrozenProjection {
    fn name(&self) -> &'static str {
        "frozen-projection"
    }

    fn cpu_fwd(&self, x: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let (storage, w_layout) = self.weight.storage_and_layout();
        let candle_core::Storage::Cpu(w) = &*storage else {
            candle_core::bail!("frozen-projection: weight not on the CPU")
        };
        project(x, layout, w, w_layout, "frozen-projection")
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        Ok(Some(grad.matmul(&self.weight)?))
    }
}

/// `x Wᵀ` with a trainable `W`. Composed as `x.matmul(&w.t())`, the weight's gradient passes
/// through the transposition's own node: candle's autograd zero-fills a weight-sized buffer and
/// sums into it for every node, so twice per weight and step. Here it is one product.
struct Projection;

impl candle_core::CustomOp2 for Projection {
    fn name(&self) -> &'static str {
        "projection"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        project(x, xl, w, wl, "projection")
    }

    fn bwd(
        &self,
        x: &Tensor,
        w: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        projection_grads(x, w, grad)
    }
}

/// The gradients of `y = x Wᵀ` given `g = ∂L/∂y`: `g W` for `x`, `gᵀ x` for `W`, each only when
/// that operand needs one.
fn projection_grads(x: &Tensor, w: &Tensor, g: &Tensor) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
    let dx = x.track_op().then(|| g.matmul(&w.detach())).transpose()?;
    let dw = w.track_op().then(|| g.t()?.matmul(&x.detach())).transpose()?;
    Ok((dx, dw))
}

/// `acc + g`, written into `acc` on the CPU (in parallel, no new buffer) when both are contiguous
/// f32 of one shape; otherwise a new tensor. For gradients the trainer owns: a parameter's
/// gradient from candle's backward pass is a fresh sum that no other tensor shares.
pub fn accumulate(acc: Tensor, g: &Tensor) -> Result<Tensor> {
    if !same_cpu_f32(&acc, g) || acc.track_op() {
        return Ok((acc + g)?);
    }
    acc.inplace_op2(g, &AddInto)?;
    Ok(acc)
}

/// Whether `a` and `b` are contiguous f32 CPU tensors of one shape: what the in-place passes here
/// and in [`crate::optim`] need.
pub(crate) fn same_cpu_f32(a: &Tensor, b: &Tensor) -> bool {
    let f32_contiguous = |t: &Tensor| t.dtype() == candle_core::DType::F32 && t.is_contiguous();
    a.device().is_cpu() && a.shape() == b.shape() && f32_contiguous(a) && f32_contiguous(b)
}

struct AddInto;

impl candle_core::InplaceOp2 for AddInto {
    fn name(&self) -> &'static str {
        "add-into"
    }

    fn cpu_fwd(&self, dst: &mut CpuStorage, dl: &Layout, src: &CpuStorage, sl: &Layout) -> candle_core::Result<()> {
        let (d, s) = slice_pair(dst, dl, src, sl, "add-into")?;
        d.par_chunks_mut(1 << 14).zip(s.par_chunks(1 << 14)).for_each(|(d, s)| {
            d.iter_mut().zip(s).for_each(|(d, s)| *d += s);
        });
        Ok(())
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
        self.check(n, vocab)?;
        Ok((&all[start..end], vocab))
    }

    /// One target and one weight per row, every target inside the vocabulary.
    fn check(&self, n: usize, vocab: usize) -> candle_core::Result<()> {
        if n != self.targets.len() || n != self.weights.len() {
            candle_core::bail!("cross-entropy: {n} rows but {} targets", self.targets.len())
        }
        if let Some(t) = self.targets.iter().find(|t| **t as usize >= vocab) {
            candle_core::bail!("cross-entropy: target {t} outside the vocabulary of {vocab}")
        }
        Ok(())
    }
}

/// `Σᵢ weights[i] · −log softmax(x Wᵀ)[i, targets[i]]` for `x: [n, h]` and the output projection
/// `W: [vocab, h]`: [`cross_entropy`] of [`linear`]`(x, W)`, fused on the CPU. `W` gets a
/// gradient when it is trainable (full fine-tuning, a tied embedding included).
pub fn head_cross_entropy(x: &Tensor, head: &Tensor, targets: &[u32], weights: &[f32]) -> Result<Tensor> {
    if !x.device().is_cpu() || x.rank() != 2 || x.dtype() != candle_core::DType::F32 || head.rank() != 2 {
        return cross_entropy(&linear(x, head)?, targets, weights);
    }
    let op = HeadCrossEntropy {
        loss: CrossEntropy { targets: targets.to_vec(), weights: weights.to_vec(), scale: 1.0 },
        gradient: std::sync::Mutex::new(None),
    };
    Ok(x.contiguous()?.apply_op2(&head.contiguous()?, op)?)
}

struct HeadCrossEntropy {
    loss: CrossEntropy,
    /// `w · (softmax − onehot)` per row, left by the forward pass for the backward pass.
    gradient: std::sync::Mutex<Option<Vec<f32>>>,
}

impl candle_core::CustomOp2 for HeadCrossEntropy {
    fn name(&self) -> &'static str {
        "head-cross-entropy"
    }

    fn cpu_fwd(
        &self,
        x: &CpuStorage,
        xl: &Layout,
        w: &CpuStorage,
        wl: &Layout,
    ) -> candle_core::Result<(CpuStorage, Shape)> {
        let (logits, shape) = project(x, xl, w, wl, "head-cross-entropy")?;
        let (n, vocab) = shape.dims2()?;
        let CpuStorage::F32(mut rows) = logits else { candle_core::bail!("head-cross-entropy needs f32") };
        self.loss.check(n, vocab)?;
        let loss: f64 = rows
            .par_chunks_mut(vocab)
            .zip(self.loss.targets.par_iter().zip(self.loss.weights.par_iter()))
            .map(|(row, (t, w))| {
                if *w == 0.0 {
                    row.fill(0.0);
                    return 0.0;
                }
                let (max, lse) = log_sum_exp(row);
                let nll = f64::from(*w) * f64::from(lse - (row[*t as usize] - max));
                for v in row.iter_mut() {
                    *v = w * exp(*v - max - lse);
                }
                row[*t as usize] -= w;
                nll
            })
            .sum();
        *self.gradient.lock().map_err(|_| candle_core::Error::Msg("head-cross-entropy: poisoned".into()))? = Some(rows);
        Ok((CpuStorage::F32(vec![loss as f32]), Shape::from(())))
    }

    fn bwd(
        &self,
        x: &Tensor,
        head: &Tensor,
        _: &Tensor,
        grad: &Tensor,
    ) -> candle_core::Result<(Option<Tensor>, Option<Tensor>)> {
        let scale = grad.to_dtype(candle_core::DType::F32)?.to_scalar::<f32>()?;
        let taken =
            self.gradient.lock().map_err(|_| candle_core::Error::Msg("head-cross-entropy: poisoned".into()))?.take();
        let Some(mut g) = taken else {
            candle_core::bail!("head-cross-entropy: backward pass run twice on one forward pass")
        };
        if scale != 1.0 {
            g.par_chunks_mut(1 << 14).for_each(|c| c.iter_mut().for_each(|v| *v *= scale));
        }
        let (n, vocab) = (x.dim(0)?, head.dim(0)?);
        let g = Tensor::from_vec(g, (n, vocab), x.device())?;
        projection_grads(x, head, &g)
    }
}

/// Rotary position embedding, Hugging Face ("rotate half") layout, fused with the split into
/// heads and a scale: `x: [b·t, heads·hd]` (a projection's output) becomes
/// `[b, heads/group, t·group, hd]`, with, for `i < hd/2` and position `p`,
///
/// ```text
/// y[i]        = scale · (x[i] · cos[p, i] − x[i + hd/2] · sin[p, i])
/// y[i + hd/2] = scale · (x[i + hd/2] · cos[p, i] + x[i] · sin[p, i])
/// ```
///
/// `cos` and `sin` are `[≥ t, hd/2]`; position `p` is the token's index in its sequence.
/// `group` consecutive heads share a row block, position-major: head `g·group + r` at position
/// `p` is row `p·group + r` of block `g`. With `group = 1` that is plain `[b, heads, t, hd]`
/// (keys); with the query heads per key/value head it is the layout [`CausalAttention`] takes,
/// where a run of positions is a run of rows for all of a group's heads.
pub fn rope_heads(
    x: &Tensor,
    cos: &Tensor,
    sin: &Tensor,
    batch: usize,
    heads: usize,
    group: usize,
    scale: f64,
) -> Result<Tensor> {
    let (rows, width) = x.dims2()?;
    let t = rows / batch.max(1);
    let hd = width / heads.max(1);
    let group = group.max(1);
    if !heads.is_multiple_of(group) {
        return Err(crate::Error::Input(format!("rope: {heads} heads do not split into groups of {group}")));
    }
    let cos = cos.narrow(0, 0, t)?;
    let sin = sin.narrow(0, 0, t)?;
    if !x.device().is_cpu() || rows != batch * t || width != heads * hd || !hd.is_multiple_of(2) {
        let x = x.reshape((batch, t, heads, hd))?.transpose(1, 2)?;
        let half = hd / 2;
        let (x1, x2) = (x.narrow(D::Minus1, 0, half)?, x.narrow(D::Minus1, half, half)?);
        let a = (x1.broadcast_mul(&cos)? - x2.broadcast_mul(&sin)?)?;
        let b = (x2.broadcast_mul(&cos)? + x1.broadcast_mul(&sin)?)?;
        let y = (Tensor::cat(&[a, b], D::Minus1)? * scale)?;
        if group == 1 {
            return Ok(y);
        }
        let y = y.reshape((batch, heads / group, group, t, hd))?.transpose(2, 3)?;
        return Ok(y.reshape((batch, heads / group, t * group, hd))?);
    }
    let rope = Rope {
        cos: cos.contiguous()?.flatten_all()?.to_vec1()?,
        sin: sin.contiguous()?.flatten_all()?.to_vec1()?,
        batch,
        t,
        heads,
        group,
        hd,
        scale: scale as f32,
    };
    Ok(x.contiguous()?.apply_op1(rope)?)
}

/// Query positions per block in [`CausalAttention`]. Smaller blocks skip more of the masked
/// half of the scores but make smaller products; at 512 tokens 128 skips 3/8 of attention's
/// multiply-adds, and any sequence up to 128 tokens is one block (the plain computation).
pub const ATTENTION_BLOCK: usize = 128;

/// Causal grouped-query attention, computed in blocks of query positions so that the scores of
/// keys after a block's last position (masked anyway) are not computed: block `[s, e)` of
/// queries is multiplied by keys and values `[0, e)` only, with the causal mask applied inside
/// the block's own diagonal. Exactly the full computation's result (the skipped scores would
/// have had weight zero); at `t` tokens in blocks of `B` about `(t + B) / 2t` of the full
/// products' work.
#[derive(Debug)]
pub struct CausalAttention {
    rep: usize,
    /// (first position, positions, additive mask `[positions·rep, first + positions]`).
    blocks: Vec<(usize, usize, Tensor)>,
}

impl CausalAttention {
    /// For sequences of `t` tokens, `rep` query heads per key/value head, blocks of `block`
    /// positions. Other devices than the CPU get the whole sequence as one block: their products
    /// on the blocks' strided views have not been run here (no GPU machine in CI).
    pub fn new(t: usize, rep: usize, block: usize, device: &candle_core::Device) -> Result<Self> {
        let block = if device.is_cpu() { block.max(1) } else { t.max(1) };
        let rep = rep.max(1);
        let mut blocks = Vec::with_capacity(t.div_ceil(block));
        for start in (0..t).step_by(block) {
            let len = block.min(t - start);
            let end = start + len;
            let mut mask = vec![0f32; len * rep * end];
            for (i, row) in mask.chunks_exact_mut(end).enumerate() {
                row[start + i / rep + 1..].fill(f32::NEG_INFINITY);
            }
            blocks.push((start, len, Tensor::from_vec(mask, (len * rep, end), device)?));
        }
        Ok(Self { rep, blocks })
    }

    /// `q: [b, kv, t·rep, hd]`, already scaled, position-major within each key/value head (as
    /// [`rope_heads`] with `group = rep` lays it out); `k`, `v`: `[b, kv, t, hd]`. Returns
    /// `[b, kv, t·rep, hd]` in `q`'s layout.
    pub fn apply(&self, q: &Tensor, k: &Tensor, v: &Tensor) -> Result<Tensor> {
        let rep = self.rep;
        let mut out = Vec::with_capacity(self.blocks.len());
        for (start, len, mask) in &self.blocks {
            let end = start + len;
            let q = q.narrow(2, start * rep, len * rep)?;
            let (k, v) = (k.narrow(2, 0, end)?, v.narrow(2, 0, end)?);
            let scores = q.matmul(&k.t()?)?.broadcast_add(mask)?;
            out.push(softmax(&scores)?.matmul(&v)?);
        }
        if out.len() == 1 {
            return Ok(out.remove(0));
        }
        Ok(Tensor::cat(&out, 2)?)
    }
}

struct Rope {
    cos: Vec<f32>,
    sin: Vec<f32>,
    batch: usize,
    t: usize,
    heads: usize,
    group: usize,
    hd: usize,
    scale: f32,
}

impl Rope {
    /// Rotates one head's `hd` values at position `p` by the angle times `sign` (−1 undoes it).
    fn rotate(&self, src: &[f32], dst: &mut [f32], p: usize, sign: f32) {
        let half = self.hd / 2;
        let (cos, sin) = (&self.cos[p * half..(p + 1) * half], &self.sin[p * half..(p + 1) * half]);
        let (x1, x2) = src.split_at(half);
        let (y1, y2) = dst.split_at_mut(half);
        for i in 0..half {
            let (c, s) = (cos[i] * self.scale, sign * sin[i] * self.scale);
            y1[i] = x1[i] * c - x2[i] * s;
            y2[i] = x2[i] * c + x1[i] * s;
        }
    }
}

impl CustomOp1 for Rope {
    fn name(&self) -> &'static str {
        "rope-heads"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let x = slice(storage, layout, "rope")?;
        let (t, hd, width, group) = (self.t, self.hd, self.heads * self.hd, self.group);
        let blocks = self.heads / group;
        let mut out = vec![0f32; x.len()];
        // One chunk per (sequence, group of heads): t·group rows of hd values, position-major.
        out.par_chunks_mut(t * group * hd).enumerate().for_each(|(bg, y)| {
            let (b, g) = (bg / blocks, bg % blocks);
            for (row, yp) in y.chunks_exact_mut(hd).enumerate() {
                let (p, h) = (row / group, g * group + row % group);
                let at = (b * t + p) * width + h * hd;
                self.rotate(&x[at..at + hd], yp, p, 1.0);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((self.batch, blocks, t * group, hd))))
    }

    fn bwd(&self, _: &Tensor, _: &Tensor, grad: &Tensor) -> candle_core::Result<Option<Tensor>> {
        let back = RopeGrad(Rope { cos: self.cos.clone(), sin: self.sin.clone(), ..*self });
        Ok(Some(grad.contiguous()?.apply_op1_no_bwd(&back)?))
    }
}

/// The gradient of [`Rope`]: the transposed rotation (the inverse angle, same scale), back to
/// `[b·t, heads·hd]`.
struct RopeGrad(Rope);

impl CustomOp1 for RopeGrad {
    fn name(&self) -> &'static str {
        "rope-heads-grad"
    }

    fn cpu_fwd(&self, storage: &CpuStorage, layout: &Layout) -> candle_core::Result<(CpuStorage, Shape)> {
        let r = &self.0;
        let g = slice(storage, layout, "rope")?;
        let (t, hd, width, group) = (r.t, r.hd, r.heads * r.hd, r.group);
        let blocks = r.heads / group;
        let mut out = vec![0f32; g.len()];
        // One chunk per token: every head's hd values.
        out.par_chunks_mut(width).enumerate().for_each(|(row, dx)| {
            let (b, p) = (row / t, row % t);
            for (h, dxh) in dx.chunks_exact_mut(hd).enumerate() {
                let at = (((b * blocks + h / group) * t + p) * group + h % group) * hd;
                r.rotate(&g[at..at + hd], dxh, p, -1.0);
            }
        });
        Ok((CpuStorage::F32(out), Shape::from((r.batch * t, width))))
    }
}

/// Partial results kept per lane in the row reductions below. A plain `sum()` must add in order,
/// which keeps the loop scalar; eight independent partial sums let it run in vector registers.
const LANES: usize = 8;

/// `Σ f(a[i], b[i])` with [`LANES`] partial sums.
#[inline(always)]
fn sum_by_lanes(a: &[f32], b: &[f32], f: impl Fn(f32, f32) -> f32) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).map(|(x, y)| f(*x, *y)).sum();
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] += f(x[i], y[i]);
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// `Σ x[i]²` with `LANES` partial sums.
pub fn sum_of_squares(x: &[f32]) -> f32 {
    sum_by_lanes(x, x, |v, _| v * v)
}

/// `Σ a[i]·b[i]·c[i]` with [`LANES`] partial sums.
fn dot3(a: &[f32], b: &[f32], c: &[f32]) -> f32 {
    let mut acc = [0f32; LANES];
    let (ca, cb, cc) = (a.chunks_exact(LANES), b.chunks_exact(LANES), c.chunks_exact(LANES));
    let tail: f32 = ca.remainder().iter().zip(cb.remainder()).zip(cc.remainder()).map(|((x, y), z)| x * y * z).sum();
    for ((x, y), z) in ca.zip(cb).zip(cc) {
        for i in 0..LANES {
            acc[i] += x[i] * y[i] * z[i];
        }
    }
    acc.iter().sum::<f32>() + tail
}

/// The largest value of a row (−∞ for an empty one).
fn row_max(row: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; LANES];
    let chunks = row.chunks_exact(LANES);
    let tail = chunks.remainder().iter().copied().fold(f32::NEG_INFINITY, f32::max);
    for c in chunks {
        for i in 0..LANES {
            acc[i] = acc[i].max(c[i]);
        }
    }
    acc.iter().copied().fold(tail, f32::max)
}

/// (max, log Σ exp(x − max)) of a row.
fn log_sum_exp(row: &[f32]) -> (f32, f32) {
    let max = row_max(row);
    // exp in blocks through a small buffer: a plain map vectorises, an exp inside a reduction
    // does not.
    let mut buf = [0f32; 256];
    let mut sum = 0f32;
    for block in row.chunks(buf.len()) {
        let e = &mut buf[..block.len()];
        for (ei, x) in e.iter_mut().zip(block) {
            *ei = exp(x - max);
        }
        sum += sum_by_lanes(e, e, |v, _| v);
    }
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
    let shifted = xc * std::f32::consts::LOG2_E + SHIFTER;
    let k = shifted - SHIFTER;
    let r = xc - k * 0.693_145_75 - k * 1.428_606_8e-6;
    let p = 1.0 + r * (1.0 + r * (0.5 + r * (1.0 / 6.0 + r * (1.0 / 24.0 + r * (1.0 / 120.0 + r * (1.0 / 720.0))))));
    // 2^k from the bits: `shifted`'s mantissa holds k as an integer offset from SHIFTER's, so
    // integer arithmetic on the bits makes the exponent field. (`k as i32` would saturate, and
    // that conversion keeps the loop from being vectorised.)
    let scale = f32::from_bits(shifted.to_bits().wrapping_sub(SHIFTER.to_bits()).wrapping_add(127) << 23);
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

/// An in-place operation's destination and its one argument, of the same length.
pub(crate) fn slice_pair<'a, 'b>(
    dst: &'a mut CpuStorage,
    dl: &Layout,
    src: &'b CpuStorage,
    sl: &Layout,
    what: &str,
) -> candle_core::Result<(&'a mut [f32], &'b [f32])> {
    let (d, s) = (slice_mut(dst, dl, what)?, slice(src, sl, what)?);
    if d.len() != s.len() {
        candle_core::bail!("{what}: {} values updated from {}", d.len(), s.len())
    }
    Ok((d, s))
}

/// The contiguous f32 slice of a CPU tensor argument.
pub(crate) fn slice<'a>(storage: &'a CpuStorage, layout: &Layout, what: &str) -> candle_core::Result<&'a [f32]> {
    let CpuStorage::F32(all) = storage else { candle_core::bail!("{what} needs f32 input") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{what} needs contiguous input") };
    Ok(&all[start..end])
}

/// The same, writable: the destination of an in-place operation.
pub(crate) fn slice_mut<'a>(
    storage: &'a mut CpuStorage,
    layout: &Layout,
    what: &str,
) -> candle_core::Result<&'a mut [f32]> {
    let CpuStorage::F32(all) = storage else { candle_core::bail!("{what} needs f32 input") };
    let Some((start, end)) = layout.contiguous_offsets() else { candle_core::bail!("{what} needs contiguous input") };
    Ok(&mut all[start..end])
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
        let mean = sum_by_lanes(row, row, |v, _| v * v) / row.len() as f32;
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
                    let dot = dot3(gr, w, xr);
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
            let max = row_max(row);
            for (yi, xi) in y.iter_mut().zip(row) {
                *yi = exp(xi - max);
            }
            let inv = 1.0 / sum_by_lanes(y, y, |v, _| v);
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
            let dot = sum_by_lanes(yr, gr, |a, b| a * b);
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

#[cfg(test)]
mod tests {
    #[test]
    fn fast_exp_is_close_to_the_library_exp_and_exactly_zero_far_below() {
        let mut worst = 0f32;
        for i in 0..=200_000 {
            let x = -87.0 + 87.0 * i as f32 / 200_000.0;
            let (ours, libm) = (super::exp(x), x.exp());
            worst = worst.max(((ours - libm) / libm).abs());
        }
        assert!(worst < 1e-6, "relative error {worst}");
        assert_eq!(super::exp(-87.5), 0.0);
        assert_eq!(super::exp(f32::NEG_INFINITY), 0.0);
        assert!((super::exp(10.0) - 10f32.exp()).abs() / 10f32.exp() < 1e-6);
    }
}
