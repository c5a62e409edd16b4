//! DPM-Solver++ 2M (diffusers DPMSolverMultistepScheduler: algorithm dpmsolver++, solver_order 2,
//! midpoint, lower_order_final, final_sigmas_type "zero"), optionally with Karras σ.
//!
//! diffusers runs this one in VP space: the latents are x = α·x0 + σ_vp·ε with α = 1/√(σ²+1),
//! σ_vp = σ·α, so init_noise_sigma is 1 and the UNet input is unscaled. The first step and the
//! last step (σ_next = 0, so always under final_sigmas_type "zero") are first order; the others
//! use the previous step's x0 prediction.

use crate::Result;

use super::config::{PredictionType, SchedulerConfig};
use super::spacing::{f32r, karras, np_interp, np_round, sigma_to_t, trailing};
use super::{Lin, Plan, Spacing, Step, StepCoeffs};

/// (α, σ_vp) of a σ-space noise level.
pub(crate) fn vp(sigma: f64) -> (f64, f64) {
    let alpha = 1.0 / (sigma * sigma + 1.0).sqrt();
    (alpha, sigma * alpha)
}

fn lambda(sigma: f64) -> f64 {
    let (a, s) = vp(sigma);
    a.ln() - s.ln()
}

/// diffusers `convert_model_output` for dpmsolver++: the x0 prediction.
fn x0_pred(pred: PredictionType, sigma: f64) -> Lin {
    let (alpha, sig) = vp(sigma);
    match pred {
        PredictionType::Epsilon => Lin { x: 1.0 / alpha, out: -sig / alpha },
        PredictionType::VPrediction => Lin { x: alpha, out: -sig },
        PredictionType::Sample => Lin { x: 0.0, out: 1.0 },
    }
}

/// `first`: the step a run starts at (img2img's t_start); diffusers counts lower-order steps from
/// the run's own start, so that step is first order like step 0 of a full run.
pub(crate) fn build(use_karras: bool, spacing: Spacing, n: usize, first: usize, cfg: &SchedulerConfig) -> Result<Plan> {
    let train = cfg.num_train_timesteps;
    let table = cfg.sigmas()?;
    let (timesteps, mut sigmas): (Vec<f64>, Vec<f64>) = if use_karras {
        // diffusers keeps log σ as a float32 array.
        let log_sigmas: Vec<f64> = table.iter().map(|&s| f32r(s.ln())).collect();
        let (sigma_min, sigma_max) = (table[0], table[train - 1]);
        let ks = karras(sigma_min, sigma_max, n);
        let ts = ks.iter().map(|&s| np_round(sigma_to_t(s, &log_sigmas))).collect();
        (ts, ks.into_iter().map(f32r).collect())
    } else {
        let ts: Vec<f64> = match spacing {
            // (arange(n + 1) · (N // (n + 1))) reversed without its final 0, + steps_offset
            Spacing::Leading => {
                let ratio = train / (n + 1);
                (1..=n).rev().map(|i| (i * ratio + cfg.steps_offset) as f64).collect()
            }
            Spacing::Trailing => trailing(n, train),
        };
        let s = ts.iter().map(|&t| f32r(np_interp(t, &table))).collect();
        (ts, s)
    };
    sigmas.push(0.0);

    let num = timesteps.len();
    let steps = (0..num)
        .map(|i| {
            let (sigma_s, sigma_t) = (sigmas[i], sigmas[i + 1]);
            let x0 = x0_pred(cfg.prediction_type, sigma_s);
            let last = i + 1 == num;
            // x_next = c_x·x + c_m0·x0 + c_m1·x0_prev
            let (c_x, c_m0, c_m1) = if sigma_t == 0.0 {
                // σ_next = 0: λ_t = ∞, e^{−h} = 0, α_t = 1, so the step lands on x0 exactly.
                (0.0, 1.0, 0.0)
            } else {
                let (alpha_t, sig_t) = vp(sigma_t);
                let (_, sig_s) = vp(sigma_s);
                let h = lambda(sigma_t) - lambda(sigma_s);
                let a = alpha_t * ((-h).exp() - 1.0);
                if i <= first || last {
                    (sig_t / sig_s, -a, 0.0)
                } else {
                    let h0 = lambda(sigma_s) - lambda(sigmas[i - 1]);
                    let r0 = h0 / h;
                    // D1 = (m0 − m1)/r0; x_t = (σt/σs)·x − A·D0 − ½·A·D1
                    (sig_t / sig_s, -a * (1.0 + 0.5 / r0), 0.5 * a / r0)
                }
            };
            let keep = if last { Lin { x: 0.0, out: 0.0 } } else { x0 };
            Step {
                timestep: timesteps[i],
                model_scale: 1.0,
                coeffs: StepCoeffs {
                    x: c_x + c_m0 * x0.x,
                    eps: c_m0 * x0.out,
                    prev_x0: c_m1,
                    noise: 0.0,
                    x0_x: keep.x,
                    x0_eps: keep.out,
                },
                needs_noise: false,
            }
        })
        .collect();
    Ok(Plan { timesteps, sigmas, init_noise_sigma: 1.0, steps })
}
