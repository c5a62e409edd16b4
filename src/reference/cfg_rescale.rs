//! CPU truth for `kernels::cfg_rescale`: diffusers' `rescale_noise_cfg` with two-pass f64
//! statistics per batch item.

use crate::{Error, Result};

/// `guided` rescaled towards the spread of `text`, per row of `rows` equal rows:
/// `y = guided·(φ·std(text)/std(guided) + 1 − φ)` with torch.std's unbiased estimate; a row whose
/// guided values have no spread (all equal, or a single value) is returned unchanged.
pub fn cfg_rescale(text: &[f32], guided: &[f32], rows: usize, phi: f32) -> Result<Vec<f32>> {
    const OP: &str = "reference_cfg_rescale";
    if text.len() != guided.len() || (rows == 0 && !text.is_empty()) || (rows > 0 && !text.len().is_multiple_of(rows)) {
        return Err(Error::shape(OP, format!("text {} and guided {} values in {rows} rows", text.len(), guided.len())));
    }
    if rows == 0 || text.is_empty() {
        return Ok(Vec::new());
    }
    let n = text.len() / rows;
    let std = |v: &[f32]| -> f64 {
        if v.len() < 2 {
            return 0.0;
        }
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / v.len() as f64;
        (v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / (v.len() - 1) as f64).sqrt()
    };
    let phi = phi as f64;
    let mut y = Vec::with_capacity(guided.len());
    for r in 0..rows {
        let (t, g) = (&text[r * n..(r + 1) * n], &guided[r * n..(r + 1) * n]);
        let (st, sg) = (std(t), std(g));
        let f = if sg > 0.0 { phi * st / sg + (1.0 - phi) } else { 1.0 };
        y.extend(g.iter().map(|&v| (v as f64 * f) as f32));
    }
    Ok(y)
}
