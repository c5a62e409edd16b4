//! CPU truth for `kernels::group_norm`: two-pass mean/variance in f64 per (n, group).

use crate::{Error, Result};

/// GroupNorm of `x` with `shape` [N, C, ...spatial]: biased variance per (n, group) over
/// C/groups channels × spatial, `y = (x−μ)/√(σ²+eps)·γ[c] + β[c]`, then SiLU when `silu`.
pub fn group_norm(
    x: &[f32],
    shape: &[usize],
    groups: usize,
    gamma: &[f32],
    beta: &[f32],
    eps: f32,
    silu: bool,
) -> Result<Vec<f32>> {
    const OP: &str = "reference_group_norm";
    if shape.len() < 2 || x.len() != shape.iter().product::<usize>() {
        return Err(Error::shape(OP, format!("x of {} values with shape {shape:?}", x.len())));
    }
    let (n, c) = (shape[0], shape[1]);
    let spatial: usize = shape[2..].iter().product();
    if groups == 0 || !c.is_multiple_of(groups) || gamma.len() != c || beta.len() != c {
        return Err(Error::shape(
            OP,
            format!("C = {c}, groups = {groups}, gamma {}, beta {}", gamma.len(), beta.len()),
        ));
    }
    let seg = c / groups * spatial;
    let mut y = vec![0.0f32; x.len()];
    for s in 0..n * groups {
        let xs = &x[s * seg..(s + 1) * seg];
        let mean = xs.iter().map(|&v| v as f64).sum::<f64>() / seg as f64;
        let var = xs.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / seg as f64;
        let rstd = 1.0 / (var + eps as f64).sqrt();
        let ch0 = (s % groups) * (c / groups);
        for (i, &v) in xs.iter().enumerate() {
            let ch = ch0 + i / spatial;
            let mut o = (v as f64 - mean) * rstd * gamma[ch] as f64 + beta[ch] as f64;
            if silu {
                o /= 1.0 + (-o).exp();
            }
            y[s * seg + i] = o as f32;
        }
    }
    Ok(y)
}
