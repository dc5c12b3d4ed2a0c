//! Differential privacy for DP-SGD: the Rényi-DP accountant of the sampled Gaussian mechanism
//! (Mironov, Talwar & Zhang 2019) and the conversion to (ε, δ).
//!
//! DP-SGD (Abadi et al. 2016) with Poisson sampling rate `q`, noise multiplier `σ` (noise standard
//! deviation over the clipping norm) and `steps` iterations is `steps`-fold composition of the
//! sampled Gaussian mechanism; its RDP at order α is computed exactly for integer and fractional
//! α, and ε is the best bound over the standard grid of orders. The tests compare with Opacus's
//! accountant and with the ε = 3.01 that TensorFlow Privacy publishes for its MNIST tutorial.

use crate::{Error, Result};

/// Orders α at which RDP is evaluated: 1.1 … 10.9 in steps of 0.1, then 12 … 63 (the grid used by
/// Opacus and TensorFlow Privacy).
pub fn default_orders() -> Vec<f64> {
    let mut orders: Vec<f64> = (1..100).map(|x| 1.0 + x as f64 / 10.0).collect();
    orders.extend((12..64).map(f64::from));
    orders
}

/// How ε is derived from RDP.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Conversion {
    /// ε = RDP(α) + log((α−1)/α) − (log δ + log α)/(α−1) (Balle et al. 2020); tighter, as Opacus.
    Improved,
    /// ε = RDP(α) − log δ/(α−1) (Mironov 2017), as in the original DP-SGD papers.
    Classic,
}

/// The RDP ε(α) of `steps` compositions of the sampled Gaussian mechanism.
pub fn rdp(q: f64, sigma: f64, steps: u64, alpha: f64) -> f64 {
    if q <= 0.0 {
        return 0.0;
    }
    let per_step = if q >= 1.0 {
        alpha / (2.0 * sigma * sigma)
    } else if alpha.fract() == 0.0 {
        log_a_integer(q, sigma, alpha as u64) / (alpha - 1.0)
    } else {
        log_a_fraction(q, sigma, alpha) / (alpha - 1.0)
    };
    per_step * steps as f64
}

/// (ε, best order) for δ after `steps` steps.
pub fn epsilon(q: f64, sigma: f64, steps: u64, delta: f64, conversion: Conversion) -> (f64, f64) {
    let mut best = (f64::INFINITY, f64::NAN);
    for alpha in default_orders() {
        let r = rdp(q, sigma, steps, alpha);
        let eps = match conversion {
            Conversion::Improved => r + ((alpha - 1.0) / alpha).ln() - (delta.ln() + alpha.ln()) / (alpha - 1.0),
            Conversion::Classic => r - delta.ln() / (alpha - 1.0),
        };
        if eps < best.0 {
            best = (eps.max(0.0), alpha);
        }
    }
    best
}

/// The smallest noise multiplier (to 0.1 %) that keeps ε at or below `target` for δ.
pub fn noise_for_epsilon(q: f64, steps: u64, target: f64, delta: f64) -> Result<f64> {
    if !(target.is_finite() && target > 0.0) {
        return Err(Error::Input("the privacy budget ε must be a positive number".into()));
    }
    if !(delta > 0.0 && delta < 1.0) {
        return Err(Error::Input("δ must be between 0 and 1".into()));
    }
    let eps = |sigma: f64| epsilon(q, sigma, steps, delta, Conversion::Improved).0;
    let (mut lo, mut hi) = (0.1f64, 1.0f64);
    while eps(hi) > target {
        hi *= 2.0;
        if hi > 1e4 {
            return Err(Error::Input(format!(
                "ε = {target} is not reachable with δ = {delta}: even σ = 10⁴ does not get there"
            )));
        }
    }
    if eps(lo) <= target {
        return Ok(lo);
    }
    while (hi - lo) / hi > 1e-3 {
        let mid = 0.5 * (lo + hi);
        if eps(mid) > target { lo = mid } else { hi = mid }
    }
    Ok(hi)
}

fn log_add(a: f64, b: f64) -> f64 {
    let (hi, lo) = if a > b { (a, b) } else { (b, a) };
    if lo == f64::NEG_INFINITY { hi } else { hi + (lo - hi).exp().ln_1p() }
}

fn log_sub(a: f64, b: f64) -> f64 {
    // log(exp(a) − exp(b)) for a ≥ b; −∞ when they are equal.
    if b == f64::NEG_INFINITY {
        return a;
    }
    if a <= b {
        return f64::NEG_INFINITY;
    }
    a + (-(b - a).exp()).ln_1p()
}

fn ln_binomial(n: u64, k: u64) -> f64 {
    ln_gamma((n + 1) as f64) - ln_gamma((k + 1) as f64) - ln_gamma((n - k + 1) as f64)
}

/// log A_α for integer α: log Σₖ C(α,k) (1−q)^(α−k) q^k exp((k²−k)/(2σ²)).
fn log_a_integer(q: f64, sigma: f64, alpha: u64) -> f64 {
    let mut acc = f64::NEG_INFINITY;
    for k in 0..=alpha {
        let kf = k as f64;
        let term = ln_binomial(alpha, k)
            + kf * q.ln()
            + (alpha - k) as f64 * (1.0 - q).ln()
            + (kf * kf - kf) / (2.0 * sigma * sigma);
        acc = log_add(acc, term);
    }
    acc
}

/// log A_α for fractional α, by the two-sided series of Mironov et al. (2019), §3.3.
fn log_a_fraction(q: f64, sigma: f64, alpha: f64) -> f64 {
    let (mut a0, mut a1) = (f64::NEG_INFINITY, f64::NEG_INFINITY);
    let z0 = sigma * sigma * (1.0 / q - 1.0).ln() + 0.5;
    let mut coef = 1.0f64; // C(α, i), by recurrence
    let mut i = 0u32;
    loop {
        let fi = f64::from(i);
        let j = alpha - fi;
        let log_coef = coef.abs().ln();
        let t0 = log_coef + fi * q.ln() + j * (1.0 - q).ln();
        let t1 = log_coef + j * q.ln() + fi * (1.0 - q).ln();
        let e0 = 0.5f64.ln() + log_erfc((fi - z0) / (std::f64::consts::SQRT_2 * sigma));
        let e1 = 0.5f64.ln() + log_erfc((z0 - j) / (std::f64::consts::SQRT_2 * sigma));
        let s0 = t0 + (fi * fi - fi) / (2.0 * sigma * sigma) + e0;
        let s1 = t1 + (j * j - j) / (2.0 * sigma * sigma) + e1;
        if coef > 0.0 {
            a0 = log_add(a0, s0);
            a1 = log_add(a1, s1);
        } else {
            a0 = log_sub(a0, s0);
            a1 = log_sub(a1, s1);
        }
        if s0.max(s1) < -30.0 || i > 10_000 {
            break;
        }
        coef *= (alpha - fi) / (fi + 1.0);
        i += 1;
    }
    log_add(a0, a1)
}

/// log erfc(x), accurate for large x where erfc underflows.
fn log_erfc(x: f64) -> f64 {
    if x < 20.0 {
        libm::erfc(x).ln()
    } else {
        // Asymptotic series: erfc(x) ≈ e^(−x²)/(x√π) · (1 − 1/(2x²) + 3/(4x⁴) − 15/(8x⁶)).
        let r = 1.0 / (x * x);
        -x * x - x.ln() - 0.5 * std::f64::consts::PI.ln() + (1.0 - 0.5 * r + 0.75 * r * r - 1.875 * r * r * r).ln()
    }
}

fn ln_gamma(x: f64) -> f64 {
    libm::lgamma(x)
}
