//! LCM (diffusers LCMScheduler): timesteps picked from the distillation schedule (k·N/50 − 1),
//! ignoring the spacing setting; each step maps to the consistency boundary
//! c_out·x0 + c_skip·x and re-noises to the next timestep with fresh noise (not after the last).

use crate::{Error, Result};

use super::config::SchedulerConfig;
use super::ddim::{alpha_at, vp_predictions};
use super::spacing::np_linspace;
use super::{Plan, Step, StepCoeffs};

pub(crate) fn build(n: usize, cfg: &SchedulerConfig) -> Result<Plan> {
    let train = cfg.num_train_timesteps;
    let original = cfg.original_inference_steps;
    if original == 0 || original > train {
        return Err(Error::invalid(
            "schedule",
            format!("lcm: original_inference_steps = {original} must be in 1..={train}"),
        ));
    }
    if n > original {
        return Err(Error::limit("schedule", "lcm steps (original_inference_steps)", n as u64, original as u64));
    }
    let k = train / original;
    let origin: Vec<f64> = (1..=original).rev().map(|i| (i * k) as f64 - 1.0).collect();
    let timesteps = np_linspace(0.0, origin.len() as f64, n, false)
        .into_iter()
        .map(|p| {
            let idx = p.floor() as usize;
            origin
                .get(idx)
                .copied()
                .ok_or_else(|| Error::invalid("schedule", format!("lcm: schedule index {idx} out of range")))
        })
        .collect::<Result<Vec<f64>>>()?;

    let ac = cfg.alphas_cumprod()?;
    let num = timesteps.len();
    let sigma_data2 = 0.25;
    let steps = (0..num)
        .map(|i| {
            let t = timesteps[i];
            let last = i + 1 == num;
            let t_prev = if last { t } else { timesteps[i + 1] };
            let a_t = alpha_at(&ac, t, "lcm")?;
            let a_prev = alpha_at(&ac, t_prev, "lcm")?;
            let scaled = t * cfg.timestep_scaling;
            let c_skip = sigma_data2 / (scaled * scaled + sigma_data2);
            let c_out = scaled / (scaled * scaled + sigma_data2).sqrt();
            let (x0, _) = vp_predictions(cfg.prediction_type, a_t);
            // denoised = c_out·x0 + c_skip·x; x_next = √ᾱ_prev·denoised + √(1 − ᾱ_prev)·n
            let (scale, noise) = if last { (1.0, 0.0) } else { (a_prev.sqrt(), (1.0 - a_prev).sqrt()) };
            Ok(Step {
                timestep: t,
                model_scale: 1.0,
                coeffs: StepCoeffs {
                    x: scale * (c_out * x0.x + c_skip),
                    eps: scale * c_out * x0.out,
                    noise,
                    ..StepCoeffs::default()
                },
                needs_noise: !last,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Plan { timesteps, sigmas: Vec::new(), init_noise_sigma: 1.0, steps })
}
