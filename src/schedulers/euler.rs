//! Euler and Euler ancestral (diffusers EulerDiscreteScheduler / EulerAncestralDiscreteScheduler,
//! linear σ interpolation, no Karras, s_churn 0). Latents live in σ space (x = x0 + σ·ε) and the
//! UNet sees x/√(σ²+1).

use crate::{Error, Result};

use super::config::{PredictionType, SchedulerConfig};
use super::spacing::{f32r, leading, np_interp, trailing};
use super::{Lin, Plan, Spacing, Step, StepCoeffs};

/// x0 = c_skip·x + c_out·out in σ space.
fn x0_pred(pred: PredictionType, sigma: f64) -> Lin {
    match pred {
        PredictionType::Epsilon => Lin { x: 1.0, out: -sigma },
        PredictionType::VPrediction => {
            let s2 = sigma * sigma + 1.0;
            Lin { x: 1.0 / s2, out: -sigma / s2.sqrt() }
        }
        PredictionType::Sample => Lin { x: 0.0, out: 1.0 },
    }
}

pub(crate) fn build(ancestral: bool, spacing: Spacing, n: usize, cfg: &SchedulerConfig) -> Result<Plan> {
    if ancestral && cfg.prediction_type == PredictionType::Sample {
        // diffusers raises NotImplementedError here too.
        return Err(Error::invalid("schedule", "euler_a: prediction_type \"sample\" is not supported"));
    }
    let train = cfg.num_train_timesteps;
    let timesteps = match spacing {
        Spacing::Leading => leading(n, train, n, cfg.steps_offset),
        Spacing::Trailing => trailing(n, train),
    };
    let table = cfg.sigmas()?;
    let mut sigmas: Vec<f64> = timesteps.iter().map(|&t| f32r(np_interp(t, &table))).collect();
    sigmas.push(0.0);
    let max_sigma = sigmas.iter().copied().fold(0.0, f64::max);
    let init_noise_sigma = match spacing {
        Spacing::Trailing => max_sigma,
        Spacing::Leading => f32r((max_sigma * max_sigma + 1.0).sqrt()),
    };

    let steps = timesteps
        .iter()
        .zip(sigmas.windows(2))
        .map(|(&t, w)| {
            let (sigma, sigma_next) = (w[0], w[1]);
            let x0 = x0_pred(cfg.prediction_type, sigma);
            // derivative d = (x − x0)/σ; x_next = x + d·dt (+ σ_up·n for the ancestral step)
            let (dt, noise) = if ancestral {
                let up2 = sigma_next * sigma_next * (sigma * sigma - sigma_next * sigma_next) / (sigma * sigma);
                let up = up2.max(0.0).sqrt();
                let down = (sigma_next * sigma_next - up * up).max(0.0).sqrt();
                (down - sigma, up)
            } else {
                (sigma_next - sigma, 0.0)
            };
            let r = dt / sigma;
            Step {
                timestep: t,
                model_scale: 1.0 / (sigma * sigma + 1.0).sqrt(),
                coeffs: StepCoeffs {
                    x: 1.0 + r * (1.0 - x0.x),
                    eps: -r * x0.out,
                    prev_x0: 0.0,
                    noise,
                    x0_x: 0.0,
                    x0_eps: 0.0,
                },
                // diffusers draws the ancestral noise on every step, the last included.
                needs_noise: ancestral,
            }
        })
        .collect();
    Ok(Plan { timesteps, sigmas, init_noise_sigma, steps })
}
