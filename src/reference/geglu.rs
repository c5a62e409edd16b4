//! CPU truth for `kernels::geglu`: `hidden, gate = x.chunk(2, -1); hidden · gelu(gate)` in f64
//! with the exact erf GELU.

use crate::reference::unary::erf;

/// `x` is `[rows, 2N]` flattened (`last` = 2N); returns `[rows, N]` flattened.
pub fn geglu(x: &[f32], last: usize) -> Vec<f32> {
    assert!(last.is_multiple_of(2) && last > 0, "reference::geglu: last dimension {last} must be even and > 0");
    assert_eq!(x.len() % last, 0, "reference::geglu: length not a multiple of the last dimension");
    let half = last / 2;
    let mut out = Vec::with_capacity(x.len() / 2);
    for row in x.chunks_exact(last) {
        for j in 0..half {
            let h = row[j] as f64;
            let g = row[half + j] as f64;
            out.push((h * 0.5 * g * (1.0 + erf(g / std::f64::consts::SQRT_2))) as f32);
        }
    }
    out
}
