//! CPU truth for `kernels::concat`.

/// Concatenate row-major tensors (`parts` = (data, shape)) along `dim`.
pub fn concat(parts: &[(&[f32], &[usize])], dim: usize) -> Vec<f32> {
    let shape0 = parts[0].1;
    let rows: usize = shape0[..dim].iter().product();
    let inner: usize = shape0[dim + 1..].iter().product();
    let mut out = Vec::new();
    for r in 0..rows {
        for (data, shape) in parts {
            let cols = shape[dim] * inner;
            out.extend_from_slice(&data[r * cols..(r + 1) * cols]);
        }
    }
    out
}
