//! CPU truth for `kernels::softmax`: row-wise softmax in f64.

use crate::{Error, Result};

/// Softmax over rows of `len` values: `exp(x − max) / Σ exp(x − max)`.
pub fn softmax(x: &[f32], len: usize) -> Result<Vec<f32>> {
    if len == 0 || !x.len().is_multiple_of(len) {
        return Err(Error::shape("reference_softmax", format!("{} values in rows of {len}", x.len())));
    }
    let mut y = vec![0.0f32; x.len()];
    for (xr, yr) in x.chunks(len).zip(y.chunks_mut(len)) {
        let m = xr.iter().fold(f64::NEG_INFINITY, |m, &v| m.max(v as f64));
        let s: f64 = xr.iter().map(|&v| (v as f64 - m).exp()).sum();
        for (&v, o) in xr.iter().zip(yr.iter_mut()) {
            *o = ((v as f64 - m).exp() / s) as f32;
        }
    }
    Ok(y)
}
