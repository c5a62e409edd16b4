//! The randomized top-rank SVD (`svd_top`) that `lora extract` uses on large modules, against the
//! full SVD: on matrices with a known spectrum, the error it reports must be the true error of
//! the factors it returns, and close to the optimal (Eckart–Young) one.

use lorafuse::lora::svd::{relative_diff, svd, svd_top};
use rand::{Rng, SeedableRng};

/// `rows × cols` = U·diag(s)·Vᵀ with random orthonormal U, V (QR of uniform noise), row-major.
fn with_spectrum(rows: usize, cols: usize, s: &[f64], seed: u64) -> Vec<f32> {
    let mut rng = rand::rngs::StdRng::seed_from_u64(seed);
    let k = s.len();
    let mut rand_q =
        |n: usize| faer::Mat::<f64>::from_fn(n, k, |_, _| rng.random_range(-1.0..1.0)).qr().compute_thin_Q();
    let (u, v) = (rand_q(rows), rand_q(cols));
    let mut out = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            out[i * cols + j] = (0..k).map(|t| u[(i, t)] * s[t] * v[(j, t)]).sum::<f64>() as f32;
        }
    }
    out
}

/// ‖M − up·down‖ / ‖M‖ computed from the factors themselves.
fn factor_error(m: &[f32], up: &[f32], down: &[f32], rows: usize, cols: usize, r: usize) -> f64 {
    let mut prod = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            prod[i * cols + j] = (0..r).map(|t| up[i * r + t] as f64 * down[t * cols + j] as f64).sum::<f64>() as f32;
        }
    }
    relative_diff(m, &prod)
}

struct Case {
    name: &'static str,
    rows: usize,
    cols: usize,
    spectrum: Vec<f64>,
    rank: usize,
    /// How far above the optimal error the randomized one may be (relative).
    slack: f64,
    /// Relative bound on the top singular values (none for the flat spectrum, where a sketch
    /// mixes nearly equal ones).
    sv_tol: Option<f64>,
}

#[test]
fn reported_error_is_the_factors_error_and_near_optimal() {
    let cases = [
        // A fine-tune's spectrum (s_i ∝ 1/i), as in BENCHMARKS' rank sweep.
        // Measured excess over the optimum: 1/i < 1e-6, 2^-i 0, flat 2.9e-3.
        Case {
            name: "1/i",
            rows: 300,
            cols: 700,
            spectrum: (1..=300).map(|i| 1.0 / i as f64).collect(),
            rank: 8,
            slack: 1e-5,
            sv_tol: Some(1e-4),
        },
        // Fast decay: the top triplets are found to rounding.
        Case {
            name: "2^-i",
            rows: 333,
            cols: 290,
            spectrum: (0..290).map(|i| 0.5f64.powi(i)).collect(),
            rank: 5,
            slack: 1e-9,
            sv_tol: Some(1e-9),
        },
        // Flat (noise-like): the hardest case for a sketch; still a truthful report.
        Case {
            name: "flat",
            rows: 280,
            cols: 600,
            spectrum: (0..280).map(|i| 1.0 - 0.001 * i as f64).collect(),
            rank: 16,
            slack: 0.01,
            sv_tol: None,
        },
    ];
    for c in &cases {
        let m = with_spectrum(c.rows, c.cols, &c.spectrum, 7);
        let full = svd(&m, c.rows, c.cols).unwrap();
        let top = svd_top(&m, c.rows, c.cols, c.rank).unwrap();
        assert!(!top.is_complete(), "{}: the randomized path must run", c.name);
        let (up, down) = top.factors(c.rank).unwrap();
        let actual = factor_error(&m, &up, &down, c.rows, c.cols, c.rank);
        let reported = top.relative_error(c.rank);
        let optimal = full.relative_error(c.rank);
        eprintln!("{}: reported {reported:.6e}, actual {actual:.6e}, optimal {optimal:.6e}", c.name);
        // f32 factors: the product is rounded to ~1e-7 relative.
        assert!(
            (reported - actual).abs() <= 1e-6 + 1e-5 * actual,
            "{}: reported {reported} vs actual {actual}",
            c.name
        );
        assert!(reported >= optimal - 1e-9, "{}: {reported} below the optimum {optimal}", c.name);
        assert!(reported <= optimal * (1.0 + c.slack) + 1e-7, "{}: {reported} vs optimum {optimal}", c.name);
        assert!((top.energy() - full.energy()).abs() <= 1e-9 * full.energy(), "{}: energy", c.name);
        if let Some(tol) = c.sv_tol {
            for i in 0..c.rank {
                let d = (top.s[i] - full.s[i]).abs() / full.s[i];
                assert!(d <= tol, "{}: s[{i}] {} vs {} ({d:e})", c.name, top.s[i], full.s[i]);
            }
        }
    }
}

#[test]
fn small_or_near_full_rank_falls_back_to_the_full_svd() {
    let m = with_spectrum(40, 30, &(1..=30).map(|i| 1.0 / i as f64).collect::<Vec<_>>(), 3);
    let top = svd_top(&m, 40, 30, 25).unwrap();
    assert!(top.is_complete());
    let full = svd(&m, 40, 30).unwrap();
    assert_eq!(top.s, full.s);
}
