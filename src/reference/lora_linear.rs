//! CPU truth for `kernels::lora_linear`: the base linear plus every adapter's term, computed adapter
//! by adapter in f64 (no stacking, no scale folding), so a test checks both.

use crate::kernels::lora_linear::LoraAdapter;
use crate::reference::matmul::linear_f64;

/// `y = x·Wᵀ + bias + Σᵢ sᵢ·(x·Aᵢᵀ)·Bᵢᵀ` for x `[M, K]`, w `[N, K]`, bias `[N]`, adapters with
/// down `[rᵢ, K]` and up `[N, rᵢ]` → `[M, N]`.
pub fn lora_linear(
    x: &[f32],
    w: &[f32],
    bias: Option<&[f32]>,
    adapters: &[LoraAdapter],
    m: usize,
    n: usize,
    k: usize,
) -> Vec<f32> {
    let mut y = linear_f64(x, w, bias, m, n, k);
    for ad in adapters {
        let r = ad.down.shape[0];
        let scale = ad.scale as f64;
        for i in 0..m {
            let xr = &x[i * k..(i + 1) * k];
            // t = x·Aᵀ for this row
            let t: Vec<f64> = (0..r)
                .map(|q| xr.iter().zip(&ad.down.data[q * k..(q + 1) * k]).map(|(a, b)| *a as f64 * *b as f64).sum())
                .collect();
            for j in 0..n {
                let ur = &ad.up.data[j * r..(j + 1) * r];
                let d: f64 = t.iter().zip(ur).map(|(a, b)| a * *b as f64).sum();
                y[i * n + j] += scale * d;
            }
        }
    }
    y.into_iter().map(|v| v as f32).collect()
}
