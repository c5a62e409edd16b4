//! CPU truth for `kernels::lora_merge`: `pristine + full` in f64.

/// `pristine [n, k]` plus `full [n, k]` → `[n, k]`; without `full`, a copy.
pub fn lora_merge(pristine: &[f32], n: usize, k: usize, full: Option<&[f32]>) -> Vec<f32> {
    let Some(f) = full else {
        return pristine.to_vec();
    };
    let mut out = vec![0f32; n * k];
    for (i, o) in out.iter_mut().enumerate() {
        // Through a zero accumulator, as the kernel: a -0.0 delta counts as +0.0.
        let acc = 0f64 + f[i] as f64;
        *o = (pristine[i] as f64 + acc) as f32;
    }
    out
}
