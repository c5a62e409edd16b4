//! CPU truth for `kernels::lora_merge`: `pristine + up·down + full` in f64.

/// `pristine [n, k]`, `up [n, r]`, `down [r, k]`, `full [n, k]` → `[n, k]`. With neither
/// factors nor `full`, a copy.
pub fn lora_merge(
    pristine: &[f32],
    n: usize,
    k: usize,
    factors: Option<(&[f32], &[f32], usize)>,
    full: Option<&[f32]>,
) -> Vec<f32> {
    if factors.is_none() && full.is_none() {
        return pristine.to_vec();
    }
    let mut out = vec![0f32; n * k];
    for row in 0..n {
        for col in 0..k {
            let mut acc = 0f64;
            if let Some((up, down, r)) = factors {
                for j in 0..r {
                    acc += up[row * r + j] as f64 * down[j * k + col] as f64;
                }
            }
            if let Some(f) = full {
                acc += f[row * k + col] as f64;
            }
            out[row * k + col] = (pristine[row * k + col] as f64 + acc) as f32;
        }
    }
    out
}
