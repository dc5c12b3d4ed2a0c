#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
//! The RDP accountant against published values.

use coffre_trainer::dp::{Conversion, epsilon, noise_for_epsilon, rdp};

/// TensorFlow Privacy's MNIST DP-SGD tutorial: 60 000 examples, batch 256, σ = 1.1, 60 epochs,
/// δ = 1e-5 "satisfies differential privacy with eps = 3.01" (classic RDP conversion).
#[test]
fn tensorflow_privacy_mnist_tutorial() {
    let q = 256.0 / 60_000.0;
    let steps = 60 * 60_000 / 256;
    let (eps, _) = epsilon(q, 1.1, steps, 1e-5, Conversion::Classic);
    assert!((eps - 3.01).abs() < 0.005, "ε = {eps}");
}

/// Values from Opacus 1.5's RDP accountant (`opacus.accountants.analysis.rdp`, its default orders,
/// `get_privacy_spent`): (q, σ, steps, δ) → (ε improved, best order, ε classic).
#[test]
fn opacus_rdp_accountant() {
    let cases = [
        (256.0 / 60_000.0, 1.1, 14_062, 1e-5, 2.5965558689607486, 8.1, 3.008272082524604),
        (0.01, 1.0, 1000, 1e-5, 2.1013652716430564, 7.8, 2.537982880184644),
        (0.001, 0.8, 10_000, 1e-6, 1.7036252805758572, 8.2, 2.125919263583806),
        (1.0, 5.0, 10, 1e-5, 2.8136532471298397, 7.9, 3.234858613811872),
        (0.05, 2.0, 300, 1e-5, 2.118283247596038, 9.2, 2.4924476898251644),
    ];
    for (q, sigma, steps, delta, improved, order, classic) in cases {
        let (e, a) = epsilon(q, sigma, steps, delta, Conversion::Improved);
        assert!((e - improved).abs() < 1e-6 * improved, "q={q} σ={sigma}: ε = {e}, Opacus {improved}");
        assert!((a - order).abs() < 1e-9, "q={q} σ={sigma}: best order {a}, Opacus {order}");
        let (c, _) = epsilon(q, sigma, steps, delta, Conversion::Classic);
        assert!((c - classic).abs() < 1e-6 * classic, "q={q} σ={sigma}: classic ε = {c}, Opacus {classic}");
    }
}

#[test]
fn rdp_basics_and_calibration() {
    // Without sampling, the Gaussian mechanism's RDP is α / (2σ²) per step.
    assert!((rdp(1.0, 2.0, 3, 4.0) - 3.0 * 4.0 / 8.0).abs() < 1e-12);
    // Integer and fractional orders agree where they meet.
    let (a, b) = (rdp(0.02, 1.3, 1, 3.0), rdp(0.02, 1.3, 1, 3.0 + 1e-9));
    assert!((a - b).abs() < 1e-6 * a, "{a} vs {b}");
    // More noise, less ε; calibration hits its target from below.
    let q = 0.01;
    assert!(epsilon(q, 2.0, 1000, 1e-5, Conversion::Improved).0 < epsilon(q, 1.0, 1000, 1e-5, Conversion::Improved).0);
    let sigma = noise_for_epsilon(q, 1000, 2.0, 1e-5).unwrap();
    let e = epsilon(q, sigma, 1000, 1e-5, Conversion::Improved).0;
    assert!(e <= 2.0 && e > 1.99, "σ = {sigma} gives ε = {e}");
    assert!(noise_for_epsilon(q, 1000, -1.0, 1e-5).is_err());
    assert!(noise_for_epsilon(q, 1000, 1.0, 2.0).is_err());
}
