//! AdamW (decoupled weight decay, Loshchilov & Hutter) and the warm-up + cosine schedule.

use candle_core::{Tensor, Var};
use serde::{Deserialize, Serialize};

use crate::Result;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub lr: f64,
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    fn default() -> Self {
        Self { lr: 1e-4, beta1: 0.9, beta2: 0.999, eps: 1e-8, weight_decay: 0.0 }
    }
}

/// AdamW state: first and second moments for each parameter, and the step count.
#[derive(Debug)]
pub struct AdamW {
    pub config: AdamWConfig,
    pub(crate) m: Vec<Var>,
    pub(crate) v: Vec<Var>,
    pub(crate) t: u64,
}

impl AdamW {
    pub fn new(config: AdamWConfig, params: &[(String, Var)]) -> Result<Self> {
        let zeros = |p: &Var| Var::zeros(p.shape(), p.dtype(), p.device());
        let m = params.iter().map(|(_, p)| zeros(p)).collect::<candle_core::Result<_>>()?;
        let v = params.iter().map(|(_, p)| zeros(p)).collect::<candle_core::Result<_>>()?;
        Ok(Self { config, m, v, t: 0 })
    }

    /// One update with learning rate `lr`; `grads[i]` belongs to `params[i]`.
    pub fn step(&mut self, params: &[(String, Var)], grads: &[Tensor], lr: f64) -> Result<()> {
        self.t += 1;
        let c = &self.config;
        let (b1, b2) = (c.beta1, c.beta2);
        let bias1 = 1.0 - b1.powi(self.t as i32);
        let bias2 = 1.0 - b2.powi(self.t as i32);
        for (i, ((_, p), g)) in params.iter().zip(grads).enumerate() {
            let m = (self.m[i].affine(b1, 0.0)? + g.affine(1.0 - b1, 0.0)?)?;
            let v = (self.v[i].affine(b2, 0.0)? + g.sqr()?.affine(1.0 - b2, 0.0)?)?;
            let update = m.affine(1.0 / bias1, 0.0)?.div(&(v.affine(1.0 / bias2, 0.0)?.sqrt()? + c.eps)?)?;
            let decayed = p.affine(1.0 - lr * c.weight_decay, 0.0)?;
            p.set(&(decayed - update.affine(lr, 0.0)?)?)?;
            self.m[i].set(&m)?;
            self.v[i].set(&v)?;
        }
        Ok(())
    }
}

/// Linear warm-up to `peak` over `warmup` steps, then cosine decay to `peak · floor` at `total`.
pub fn learning_rate(step: usize, total: usize, warmup: usize, peak: f64, floor: f64) -> f64 {
    if warmup > 0 && step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let span = total.saturating_sub(warmup).max(1);
    let progress = ((step - warmup.min(step)) as f64 / span as f64).min(1.0);
    let cosine = 0.5 * (1.0 + (std::f64::consts::PI * progress).cos());
    peak * (floor + (1.0 - floor) * cosine)
}
