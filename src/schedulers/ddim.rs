//! DDIM (diffusers DDIMScheduler) with η = 0: deterministic, in VP space (init_noise_sigma 1,
//! unscaled UNet input). The "previous" timestep is t − N // n, which with "trailing" spacing is
//! not always the next scheduled timestep; diffusers does it this way and so does this.

use crate::{Error, Result};

use super::config::{PredictionType, SchedulerConfig};
use super::spacing::{leading, trailing};
use super::{Lin, Plan, Spacing, Step, StepCoeffs};

/// (x0, ε̂) predictions as linear forms, given ᾱ_t.
pub(crate) fn vp_predictions(pred: PredictionType, alpha_prod: f64) -> (Lin, Lin) {
    let (sa, sb) = (alpha_prod.sqrt(), (1.0 - alpha_prod).sqrt());
    match pred {
        PredictionType::Epsilon => (Lin { x: 1.0 / sa, out: -sb / sa }, Lin { x: 0.0, out: 1.0 }),
        PredictionType::VPrediction => (Lin { x: sa, out: -sb }, Lin { x: sb, out: sa }),
        PredictionType::Sample => (Lin { x: 0.0, out: 1.0 }, Lin { x: 1.0 / sb, out: -sa / sb }),
    }
}

/// ᾱ at an integer timestep, with Python's negative indexing (diffusers indexes its tensor with
/// t = −1 for the extra "trailing" step).
pub(crate) fn alpha_at(ac: &[f64], t: f64, what: &str) -> Result<f64> {
    let n = ac.len() as i64;
    let ti = t as i64;
    let idx = if ti < 0 { ti + n } else { ti };
    if t.fract() != 0.0 || idx < 0 || idx >= n {
        return Err(Error::invalid("schedule", format!("{what}: timestep {t} is outside the {n} training timesteps")));
    }
    Ok(ac[idx as usize])
}

pub(crate) fn build(spacing: Spacing, n: usize, cfg: &SchedulerConfig) -> Result<Plan> {
    let train = cfg.num_train_timesteps;
    let timesteps = match spacing {
        Spacing::Leading => leading(n, train, n, cfg.steps_offset),
        Spacing::Trailing => trailing(n, train),
    };
    let ac = cfg.alphas_cumprod()?;
    let final_alpha = if cfg.set_alpha_to_one { 1.0 } else { ac[0] };
    let stride = (train / n) as f64;
    let steps = timesteps
        .iter()
        .map(|&t| {
            let a_t = alpha_at(&ac, t, "ddim")?;
            let prev = t - stride;
            let a_prev = if prev >= 0.0 { alpha_at(&ac, prev, "ddim")? } else { final_alpha };
            let (x0, eps) = vp_predictions(cfg.prediction_type, a_t);
            // x_prev = √ᾱ_prev·x0 + √(1 − ᾱ_prev)·ε̂
            let (c0, ce) = (a_prev.sqrt(), (1.0 - a_prev).sqrt());
            Ok(Step {
                timestep: t,
                model_scale: 1.0,
                coeffs: StepCoeffs {
                    x: c0 * x0.x + ce * eps.x,
                    eps: c0 * x0.out + ce * eps.out,
                    ..StepCoeffs::default()
                },
                needs_noise: false,
            })
        })
        .collect::<Result<Vec<_>>>()?;
    Ok(Plan { timesteps, sigmas: Vec::new(), init_noise_sigma: 1.0, steps })
}
