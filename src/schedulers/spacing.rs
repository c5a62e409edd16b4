//! Timestep selection and σ interpolation, replaying the numpy expressions diffusers uses so the
//! timesteps come out bit-identical (including numpy's rounding and `arange` length rules).

/// numpy.round: half to even.
pub(crate) fn np_round(x: f64) -> f64 {
    x.round_ties_even()
}

/// "leading": (arange(n) · (N // n)) reversed, + steps_offset. `ratio_divisor` is n for
/// Euler/DDIM and n + 1 for DPM-Solver (which then drops the final 0).
pub(crate) fn leading(n: usize, train: usize, ratio_divisor: usize, offset: usize) -> Vec<f64> {
    let ratio = train / ratio_divisor;
    (0..n).rev().map(|i| (i * ratio + offset) as f64).collect()
}

/// "trailing": round(arange(N, 0, −N/n)) − 1. numpy's arange length is ceil(N / (N/n)) in f64,
/// which for some n (61, 103, ...) is n + 1; diffusers then schedules one extra step at t = −1,
/// and so does this.
pub(crate) fn trailing(n: usize, train: usize) -> Vec<f64> {
    let step = train as f64 / n as f64;
    np_arange(train as f64, 0.0, -step).into_iter().map(|t| np_round(t) - 1.0).collect()
}

/// numpy.arange for floats: length ceil((stop − start)/step); element 0 is `start`, element 1 is
/// `start + step`, and the rest are `start + i·d` with d = element1 − start (numpy's fill loop).
pub(crate) fn np_arange(start: f64, stop: f64, step: f64) -> Vec<f64> {
    let len = ((stop - start) / step).ceil();
    // NaN (zero step) or an empty range.
    if len.is_nan() || len < 1.0 {
        return Vec::new();
    }
    let len = len as usize;
    let second = start + step;
    let d = second - start;
    (0..len)
        .map(|i| match i {
            0 => start,
            1 => second,
            _ => start + i as f64 * d,
        })
        .collect()
}

/// numpy.linspace(start, stop, num, endpoint) for f64: i·step + start, with the exact stop
/// written last when endpoint is set.
pub(crate) fn np_linspace(start: f64, stop: f64, num: usize, endpoint: bool) -> Vec<f64> {
    let div = if endpoint { num.saturating_sub(1) } else { num };
    let delta = stop - start;
    let mut y: Vec<f64> = if div > 0 {
        let step = delta / div as f64;
        (0..num).map(|i| i as f64 * step + start).collect()
    } else {
        (0..num).map(|i| i as f64 * delta + start).collect()
    };
    if endpoint && num > 1 {
        if let Some(last) = y.last_mut() {
            *last = stop;
        }
    }
    y
}

/// numpy.interp(x, arange(len(table)), table): clamps outside the range.
pub(crate) fn np_interp(x: f64, table: &[f64]) -> f64 {
    let (Some(&first), Some(&last)) = (table.first(), table.last()) else {
        return f64::NAN;
    };
    let top = (table.len() - 1) as f64;
    if x.is_nan() {
        return f64::NAN;
    }
    if x <= 0.0 {
        return first;
    }
    if x >= top {
        return last;
    }
    let j = x.floor() as usize;
    if x == j as f64 {
        return table[j];
    }
    let slope = table[j + 1] - table[j];
    slope * (x - j as f64) + table[j]
}

/// diffusers `_sigma_to_t`: fractional timestep of σ by linear interpolation in log σ over the
/// (float32) log-sigma table.
pub(crate) fn sigma_to_t(sigma: f64, log_sigmas: &[f64]) -> f64 {
    let n = log_sigmas.len();
    if n < 2 {
        return 0.0;
    }
    let log_sigma = sigma.max(1e-10).ln();
    // cumsum(dists >= 0).argmax(): the last index whose log σ does not exceed ours (0 if none).
    let count = log_sigmas.iter().filter(|&&l| log_sigma - l >= 0.0).count();
    let low_idx = count.saturating_sub(1).min(n - 2);
    let high_idx = low_idx + 1;
    let (low, high) = (log_sigmas[low_idx], log_sigmas[high_idx]);
    let w = ((low - log_sigma) / (low - high)).clamp(0.0, 1.0);
    (1.0 - w) * low_idx as f64 + w * high_idx as f64
}

/// Karras et al. (2022) ρ = 7 sigmas between `sigma_max` and `sigma_min`, `n` values.
pub(crate) fn karras(sigma_min: f64, sigma_max: f64, n: usize) -> Vec<f64> {
    let rho = 7.0;
    let min_inv_rho = sigma_min.powf(1.0 / rho);
    let max_inv_rho = sigma_max.powf(1.0 / rho);
    np_linspace(0.0, 1.0, n, true)
        .into_iter()
        .map(|r| (max_inv_rho + r * (min_inv_rho - max_inv_rho)).powf(rho))
        .collect()
}

/// Rounds to float32 and back: diffusers stores its per-run σ list as float32.
pub(crate) fn f32r(x: f64) -> f64 {
    f64::from(x as f32)
}
