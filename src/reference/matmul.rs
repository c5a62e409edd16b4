//! CPU truth for `kernels::matmul` (f64 accumulation).

/// `y = x·wᵀ + bias` for x `[M, K]`, w `[N, K]`, bias `[N]` (row-major slices) → `[M, N]`.
pub fn linear(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f32> {
    linear_f64(x, w, bias, m, n, k).into_iter().map(|v| v as f32).collect()
}

/// [`linear`] before the rounding to f32 (references that add more terms start from it).
pub fn linear_f64(x: &[f32], w: &[f32], bias: Option<&[f32]>, m: usize, n: usize, k: usize) -> Vec<f64> {
    let mut y = vec![0.0f64; m * n];
    for i in 0..m {
        let xr = &x[i * k..(i + 1) * k];
        for j in 0..n {
            let wr = &w[j * k..(j + 1) * k];
            let mut s: f64 = bias.map_or(0.0, |b| b[j] as f64);
            for (a, b) in xr.iter().zip(wr) {
                s += *a as f64 * *b as f64;
            }
            y[i * n + j] = s;
        }
    }
    y
}

/// Batched `a·b`: a `[batch, M, K]`, b `[batch, K, N]` (or `[K, N]` shared when `b_shared`) →
/// `[batch, M, N]`.
pub fn matmul(a: &[f32], b: &[f32], batch: usize, m: usize, k: usize, n: usize, b_shared: bool) -> Vec<f32> {
    let mut c = vec![0.0f32; batch * m * n];
    let mut acc = vec![0.0f64; n];
    for bi in 0..batch {
        let ab = &a[bi * m * k..(bi + 1) * m * k];
        let bb = if b_shared { &b[..k * n] } else { &b[bi * k * n..(bi + 1) * k * n] };
        for i in 0..m {
            acc.iter_mut().for_each(|v| *v = 0.0);
            for kk in 0..k {
                let av = ab[i * k + kk] as f64;
                for (v, bv) in acc.iter_mut().zip(&bb[kk * n..(kk + 1) * n]) {
                    *v += av * *bv as f64;
                }
            }
            for (j, v) in acc.iter().enumerate() {
                c[bi * m * n + i * n + j] = *v as f32;
            }
        }
    }
    c
}
