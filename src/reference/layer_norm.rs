//! CPU truth for `kernels::layer_norm`: two-pass mean/variance in f64 per row.

use crate::{Error, Result};

/// LayerNorm over the last dimension `c` of `x` (rows of `c` values): biased variance,
/// `y = (x−μ)/√(σ²+eps)·γ + β`.
pub fn layer_norm(x: &[f32], c: usize, gamma: &[f32], beta: &[f32], eps: f32) -> Result<Vec<f32>> {
    const OP: &str = "reference_layer_norm";
    if c == 0 || !x.len().is_multiple_of(c) || gamma.len() != c || beta.len() != c {
        return Err(Error::shape(
            OP,
            format!("{} values, C = {c}, gamma {}, beta {}", x.len(), gamma.len(), beta.len()),
        ));
    }
    let mut y = vec![0.0f32; x.len()];
    for (xr, yr) in x.chunks(c).zip(y.chunks_mut(c)) {
        let mean = xr.iter().map(|&v| v as f64).sum::<f64>() / c as f64;
        let var = xr.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / c as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        for (i, (&v, o)) in xr.iter().zip(yr.iter_mut()).enumerate() {
            *o = ((v as f64 - mean) * rstd * gamma[i] as f64 + beta[i] as f64) as f32;
        }
    }
    Ok(y)
}
