//! CPU truth for `kernels::timestep_embedding`: diffusers `get_timestep_embedding(t, dim,
//! flip_sin_to_cos=True, downscale_freq_shift=0, scale=1, max_period=10000)` evaluated in f64.

/// `[timesteps.len(), dim]` flattened: `cos(t·f_i)` for i < half, then `sin(t·f_i)`, then a zero
/// column when `dim` is odd; `f_i = exp(-ln(10000)·i/half)`.
pub fn timestep_embedding(timesteps: &[f32], dim: usize) -> Vec<f32> {
    let half = dim / 2;
    let freqs: Vec<f64> = (0..half).map(|i| (-(10000f64).ln() * i as f64 / half as f64).exp()).collect();
    let mut out = Vec::with_capacity(timesteps.len() * dim);
    for &t in timesteps {
        let t = t as f64;
        out.extend(freqs.iter().map(|f| (t * f).cos() as f32));
        out.extend(freqs.iter().map(|f| (t * f).sin() as f32));
        if dim % 2 == 1 {
            out.push(0.0);
        }
    }
    out
}
