//! CPU truth for `kernels::fma_peak`: the same eight 4-lane chains per seed, in f64.

pub fn fma_chains(seeds: &[f32], iters: u32, a: f32, b: f32) -> Vec<f32> {
    let (a, b) = (a as f64, b as f64);
    seeds
        .iter()
        .map(|&s| {
            let s = s as f64;
            let base = [s, s + 1.0, s + 2.0, s + 3.0];
            let offsets = [0.0, 4.0, 8.0, 12.0, -4.0, -8.0, -12.0];
            let mut total = 0.0;
            let mut chains: Vec<f64> = Vec::new();
            for o in offsets {
                chains.extend(base.iter().map(|v| v + o));
            }
            chains.extend(base.iter().map(|v| v * 0.5));
            for mut c in chains {
                for _ in 0..iters * crate::kernels::fma_peak::STEPS_PER_ITER {
                    c = c * a + b;
                }
                total += c;
            }
            total as f32
        })
        .collect()
}
