//! CPU truth for `kernels::upsample`.

/// `torch.nn.functional.interpolate(mode="nearest", size=...)`'s source index (aten
/// `nearest_idx`): identity, `d >> 1` for exactly 2×, else `min(floor(d · (in/out as f32)), in − 1)`.
pub fn torch_nearest_idx(d: usize, n_in: usize, n_out: usize) -> usize {
    if n_out == n_in {
        return d;
    }
    if n_out == 2 * n_in {
        return d >> 1;
    }
    let scale: f32 = n_in as f32 / n_out as f32;
    let s = (d as f32 * scale).floor() as usize;
    s.min(n_in - 1)
}

/// Nearest resize of `x [n, c, h, w]` to `[n, c, oh, ow]` with PyTorch's index rule.
pub fn upsample_nearest(x: &[f32], xs: [usize; 4], oh: usize, ow: usize) -> Vec<f32> {
    let [n, c, h, w] = xs;
    assert_eq!(x.len(), n * c * h * w);
    let cols: Vec<usize> = (0..ow).map(|d| torch_nearest_idx(d, w, ow)).collect();
    let mut y = Vec::with_capacity(n * c * oh * ow);
    for plane in x.chunks(h * w).take(n * c) {
        for oy in 0..oh {
            let row = &plane[torch_nearest_idx(oy, h, oh) * w..][..w];
            y.extend(cols.iter().map(|&ix| row[ix]));
        }
    }
    y
}
