//! Samplers and noise schedules with diffusers semantics (timesteps bit-identical, σ tables as
//! diffusers builds them in float32), expressed so a GPU can run them without reading back.
//!
//! Every sampler step here is linear in the latents x, the model output ε (or v / x0, per
//! [`PredictionType`]), the previous step's x0 prediction and a fresh unit-normal tensor, so a
//! [`Schedule`] hands out, per step, plain f64 coefficients ([`StepCoeffs`]). The sampling loop is:
//!
//! ```text
//! x = noise · init_noise_sigma
//! for each step i:
//!     out = UNet(x · scale_model_input(i), timestep(i), ...)        (CFG applied to `out`)
//!     c = coeffs(i)
//!     x0_new = c.x0_x·x + c.x0_eps·out                               (kept for the next step)
//!     x = c.x·x + c.eps·out + c.prev_x0·x0_prev + c.noise·n          (n: next noise if needs_noise(i))
//!     x0_prev = x0_new
//! ```
//!
//! [`step_host`] is that update on the CPU (f64 arithmetic), the reference for GPU versions;
//! [`sample_host`] runs the whole loop on the CPU around a caller-supplied model.

mod config;
mod ddim;
mod dpmpp;
mod euler;
mod lcm;
mod spacing;

pub use config::{BetaSchedule, PredictionType, SchedulerConfig};

use crate::named_enum::named_enum;
use crate::{Error, Result};

/// The samplers, named as on the command line.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SamplerKind {
    /// diffusers EulerDiscreteScheduler.
    Euler,
    /// diffusers EulerAncestralDiscreteScheduler (η = 1).
    EulerA,
    /// diffusers DPMSolverMultistepScheduler, dpmsolver++, order 2, midpoint.
    DpmPP2M,
    /// The same with `use_karras_sigmas`.
    DpmPP2MKarras,
    /// diffusers DDIMScheduler, η = 0.
    Ddim,
    /// diffusers LCMScheduler.
    Lcm,
}

named_enum!(
    SamplerKind,
    op = "sampler",
    unknown = |s| format!("unknown sampler {s:?}; valid: {}", SamplerKind::ALL.map(SamplerKind::name).join(", ")),
    {
        Euler => "euler",
        EulerA => "euler_a",
        DpmPP2M => "dpmpp_2m",
        DpmPP2MKarras => "dpmpp_2m_karras",
        Ddim => "ddim",
        Lcm => "lcm",
    }
);

/// How inference timesteps are picked from the training range (diffusers `timestep_spacing`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Spacing {
    /// Multiples of N/n counted up from 0, plus steps_offset (SD's default).
    Leading,
    /// Multiples of N/n counted down from N, minus 1 (always starts at t = N − 1).
    Trailing,
}

named_enum!(Spacing, op = "timestep_spacing", unknown = |s| format!("unknown spacing {s:?}; valid: leading, trailing"), {
    Leading => "leading",
    Trailing => "trailing",
});

/// One step's update, all coefficients f64:
/// `x_next = x·x + eps·out + prev_x0·x0_prev + noise·n` and the x0 prediction to keep for the
/// next step `x0 = x0_x·x + x0_eps·out`, where `out` is the (guided) model output and `x` the
/// latents before the step (not the scaled UNet input).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct StepCoeffs {
    pub x: f64,
    pub eps: f64,
    pub prev_x0: f64,
    pub noise: f64,
    pub x0_x: f64,
    pub x0_eps: f64,
}

impl StepCoeffs {
    /// Whether this step's x0 prediction is needed later (only multistep samplers keep one).
    pub fn keeps_x0(&self) -> bool {
        self.x0_x != 0.0 || self.x0_eps != 0.0
    }

    /// The update for one element: returns (x_next, x0 to keep).
    pub fn apply(&self, x: f64, out: f64, prev_x0: f64, noise: f64) -> (f64, f64) {
        let next = self.x * x + self.eps * out + self.prev_x0 * prev_x0 + self.noise * noise;
        (next, self.x0_x * x + self.x0_eps * out)
    }
}

/// Everything about one sampling step.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Step {
    /// The timestep to feed the UNet (integral for all samplers here; f64 for generality).
    pub timestep: f64,
    /// Factor applied to the latents to form the UNet input.
    pub model_scale: f64,
    pub coeffs: StepCoeffs,
    /// Whether this step consumes one fresh unit-normal tensor (drawn in step order).
    pub needs_noise: bool,
}

/// What each sampler family's builder produces.
pub(crate) struct Plan {
    pub timesteps: Vec<f64>,
    pub sigmas: Vec<f64>,
    pub init_noise_sigma: f64,
    pub steps: Vec<Step>,
}

/// x0 (or any per-step linear quantity) as `x·x + out·out`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Lin {
    pub x: f64,
    pub out: f64,
}

/// A full sampling schedule for one run.
#[derive(Clone, Debug)]
pub struct Schedule {
    kind: SamplerKind,
    spacing: Spacing,
    timesteps: Vec<f64>,
    sigmas: Vec<f64>,
    init_noise_sigma: f64,
    steps: Vec<Step>,
    /// Per step, x = a·x0 + b·noise at the noise level the step starts from (diffusers'
    /// `add_noise` at that step).
    levels: Vec<(f64, f64)>,
    /// How many steps of the full schedule were skipped (img2img's t_start).
    start: usize,
}

impl Schedule {
    /// Builds the schedule diffusers would use for `steps` inference steps. Errors on 0 steps, on
    /// more steps than training timesteps (LCM: than `original_inference_steps`), and on config
    /// options that would make a step nonlinear (clip_sample, thresholding).
    pub fn new(kind: SamplerKind, spacing: Spacing, steps: usize, config: &SchedulerConfig) -> Result<Schedule> {
        Self::build(kind, spacing, steps, 0, config)
    }

    /// The part of the `steps`-step schedule that img2img runs at `strength` (diffusers'
    /// `get_timesteps`): the last ⌊steps·strength⌋ steps, starting from the noise level of the
    /// first of them ([`Schedule::noise_level`]`(0)`). Multistep samplers restart their history
    /// there. Errors when that runs no step.
    pub fn img2img(
        kind: SamplerKind,
        spacing: Spacing,
        steps: usize,
        strength: f64,
        config: &SchedulerConfig,
    ) -> Result<Schedule> {
        if !(strength > 0.0 && strength <= 1.0) {
            return Err(Error::invalid("schedule", format!("strength must be in (0, 1], got {strength}")));
        }
        // Python's int(num_inference_steps * strength): f64 product, truncated.
        let run = ((steps as f64 * strength) as usize).min(steps);
        if run == 0 {
            return Err(Error::invalid(
                "schedule",
                format!("strength {strength} with {steps} steps runs no step (⌊steps·strength⌋ = 0); raise either"),
            ));
        }
        Self::build(kind, spacing, steps, steps - run, config)
    }

    fn build(
        kind: SamplerKind,
        spacing: Spacing,
        steps: usize,
        start: usize,
        config: &SchedulerConfig,
    ) -> Result<Schedule> {
        config.validate()?;
        let train = config.num_train_timesteps;
        if steps == 0 {
            return Err(Error::invalid("schedule", format!("{kind}: steps must be at least 1")));
        }
        if steps > train {
            return Err(Error::limit("schedule", format!("{kind} steps"), steps as u64, train as u64));
        }
        if config.thresholding && kind != SamplerKind::Euler && kind != SamplerKind::EulerA {
            return Err(Error::invalid("schedule", format!("{kind}: the config's `thresholding` is not supported")));
        }
        if config.clip_sample && matches!(kind, SamplerKind::Ddim | SamplerKind::Lcm) {
            return Err(Error::invalid(
                "schedule",
                format!("{kind}: the config's `clip_sample` true is not supported"),
            ));
        }
        let plan = match kind {
            SamplerKind::Euler => euler::build(false, spacing, steps, config)?,
            SamplerKind::EulerA => euler::build(true, spacing, steps, config)?,
            SamplerKind::DpmPP2M => dpmpp::build(false, spacing, steps, start, config)?,
            SamplerKind::DpmPP2MKarras => dpmpp::build(true, spacing, steps, start, config)?,
            SamplerKind::Ddim => ddim::build(spacing, steps, config)?,
            SamplerKind::Lcm => lcm::build(steps, config)?,
        };
        // diffusers starts at the *second* occurrence of a repeated first timestep and then runs
        // off the end of its σ list; refuse instead of imitating that.
        if let [first, rest @ ..] = plan.timesteps.as_slice() {
            if rest.contains(first) {
                return Err(Error::invalid(
                    "schedule",
                    format!("{kind} with {steps} steps repeats the first timestep {first}; use fewer steps"),
                ));
            }
        }
        let bad = plan.steps.iter().any(|s| {
            let c = &s.coeffs;
            ![s.model_scale, c.x, c.eps, c.prev_x0, c.noise, c.x0_x, c.x0_eps].iter().all(|v| v.is_finite())
        });
        if bad {
            // ε prediction at ᾱ = 0 (DDIM/LCM at the last training timestep under zero terminal
            // SNR) divides by √ᾱ; diffusers returns NaN latents there, this says why instead.
            let hint = if config.rescale_betas_zero_snr && config.prediction_type == PredictionType::Epsilon {
                " (zero terminal SNR with ε prediction: x0 cannot be recovered from pure noise; \
                 use a v-prediction model or --prediction v)"
            } else {
                ""
            };
            return Err(Error::invalid(
                "schedule",
                format!("{kind} with {steps} steps produced non-finite coefficients{hint}"),
            ));
        }
        let levels = noise_levels(kind, &plan, config)?;
        let mut plan = plan;
        if start > 0 {
            if start >= plan.steps.len() {
                return Err(Error::invalid("schedule", format!("{kind}: start step {start} is past the schedule")));
            }
            plan.timesteps.drain(..start);
            plan.steps.drain(..start);
            if !plan.sigmas.is_empty() {
                plan.sigmas.drain(..start);
            }
        }
        Ok(Schedule {
            kind,
            spacing,
            timesteps: plan.timesteps,
            sigmas: plan.sigmas,
            init_noise_sigma: plan.init_noise_sigma,
            steps: plan.steps,
            levels: levels[start..].to_vec(),
            start,
        })
    }

    /// `(a, b)` such that `a·x0 + b·noise` is at the noise level step `i` starts from: diffusers'
    /// `scheduler.add_noise` at that step (img2img's start, the inpainting blend). `None` past
    /// the end.
    pub fn noise_level(&self, i: usize) -> Option<(f64, f64)> {
        self.levels.get(i).copied()
    }

    /// Steps of the full schedule that were skipped ([`Schedule::img2img`]'s t_start).
    pub fn start(&self) -> usize {
        self.start
    }

    pub fn kind(&self) -> SamplerKind {
        self.kind
    }

    pub fn spacing(&self) -> Spacing {
        self.spacing
    }

    /// Number of UNet evaluations. Usually the requested step count; diffusers' "trailing"
    /// arange makes it one more for some counts (61, 103, ...), and this follows it.
    pub fn len(&self) -> usize {
        self.steps.len()
    }

    pub fn is_empty(&self) -> bool {
        self.steps.is_empty()
    }

    /// The UNet timesteps, as diffusers' `scheduler.timesteps`.
    pub fn timesteps(&self) -> &[f64] {
        &self.timesteps
    }

    /// diffusers' `scheduler.sigmas` (len() + 1 values ending in 0) for the σ-based samplers
    /// (euler, euler_a, dpmpp_2m*); empty for ddim and lcm, which have none.
    pub fn sigmas(&self) -> &[f64] {
        &self.sigmas
    }

    /// Multiply the unit-normal starting noise by this.
    pub fn init_noise_sigma(&self) -> f64 {
        self.init_noise_sigma
    }

    /// All steps in order.
    pub fn steps(&self) -> &[Step] {
        &self.steps
    }

    /// Step `i`; `None` past the end.
    pub fn step(&self, i: usize) -> Option<&Step> {
        self.steps.get(i)
    }

    /// The factor applied to the latents before the UNet at step `i`: 1/√(σ²+1) for euler and
    /// euler_a, 1 for dpmpp_2m (which runs in VP space), ddim and lcm.
    ///
    /// # Panics
    /// If `i >= len()`, like slice indexing.
    pub fn scale_model_input(&self, i: usize) -> f64 {
        self.steps[i].model_scale
    }

    /// The UNet timestep at step `i`. Panics if `i >= len()`.
    pub fn timestep(&self, i: usize) -> f64 {
        self.steps[i].timestep
    }

    /// The update coefficients of step `i`. Panics if `i >= len()`.
    pub fn coeffs(&self, i: usize) -> StepCoeffs {
        self.steps[i].coeffs
    }

    /// Whether step `i` consumes a fresh noise tensor (euler_a: every step, the last one included,
    /// with coefficient 0 there; lcm: every step but the last). Panics if `i >= len()`.
    pub fn needs_noise(&self, i: usize) -> bool {
        self.steps[i].needs_noise
    }
}

/// Per step of a full plan, diffusers' `add_noise` at it as `(a, b)`: σ space for the Euler
/// samplers (x0 + σ·n), VP space for DPM-Solver++ (α·x0 + σ_vp·n, from the same σ), and
/// √ᾱ_t·x0 + √(1 − ᾱ_t)·n at the step's timestep for DDIM and LCM.
fn noise_levels(kind: SamplerKind, plan: &Plan, config: &SchedulerConfig) -> Result<Vec<(f64, f64)>> {
    match kind {
        SamplerKind::Euler | SamplerKind::EulerA => {
            Ok(plan.sigmas.iter().take(plan.steps.len()).map(|&s| (1.0, s)).collect())
        }
        SamplerKind::DpmPP2M | SamplerKind::DpmPP2MKarras => {
            Ok(plan.sigmas.iter().take(plan.steps.len()).map(|&s| dpmpp::vp(s)).collect())
        }
        SamplerKind::Ddim | SamplerKind::Lcm => {
            let ac = config.alphas_cumprod()?;
            plan.timesteps
                .iter()
                .map(|&t| {
                    let a = ddim::alpha_at(&ac, t, kind.name())?;
                    Ok((a.sqrt(), (1.0 - a).sqrt()))
                })
                .collect()
        }
    }
}

fn check_lengths(x: usize, out: usize, noise: Option<usize>, c: &StepCoeffs) -> Result<()> {
    if out != x {
        return Err(Error::shape("step_host", format!("latents have {x} elements, model output {out}")));
    }
    match noise {
        Some(n) if n != x => Err(Error::shape("step_host", format!("latents have {x} elements, noise {n}"))),
        None if c.noise != 0.0 => {
            Err(Error::invalid("step_host", format!("this step needs a noise tensor (noise coefficient {})", c.noise)))
        }
        _ => Ok(()),
    }
}

macro_rules! step_host_impl {
    ($name:ident, $t:ty) => {
        /// Applies one step on the CPU in f64: updates `x` in place and replaces `prev_x0` by this
        /// step's x0 prediction (left untouched for samplers that keep none). An empty `prev_x0`
        /// reads as zeros. `noise` may be omitted when the step's noise coefficient is 0.
        pub fn $name(
            coeffs: StepCoeffs,
            x: &mut [$t],
            eps: &[$t],
            prev_x0: &mut Vec<$t>,
            noise: Option<&[$t]>,
        ) -> Result<()> {
            check_lengths(x.len(), eps.len(), noise.map(|n| n.len()), &coeffs)?;
            if !prev_x0.is_empty() && prev_x0.len() != x.len() {
                return Err(Error::shape(
                    "step_host",
                    format!("latents have {} elements, previous x0 {}", x.len(), prev_x0.len()),
                ));
            }
            if coeffs.prev_x0 != 0.0 && prev_x0.is_empty() {
                return Err(Error::invalid(
                    "step_host",
                    "this step reads the previous x0 prediction, but none was kept",
                ));
            }
            let keep = coeffs.keeps_x0();
            if keep && prev_x0.is_empty() {
                prev_x0.resize(x.len(), 0.0 as $t);
            }
            for i in 0..x.len() {
                let p = if prev_x0.is_empty() { 0.0 } else { prev_x0[i] as f64 };
                let n = noise.map_or(0.0, |n| n[i] as f64);
                let (next, x0) = coeffs.apply(x[i] as f64, eps[i] as f64, p, n);
                x[i] = next as $t;
                if keep {
                    prev_x0[i] = x0 as $t;
                }
            }
            Ok(())
        }
    };
}

step_host_impl!(step_host, f32);
step_host_impl!(step_host_f64, f64);

/// The whole sampling loop on the CPU, for references and tests: starts from unit-normal `noise`
/// (scaled by `init_noise_sigma`), calls `model(step, scaled_input, timestep)` for the guided
/// model output, and `step_noise(step)` for each step that [`Schedule::needs_noise`]. Returns the
/// final latents (before any VAE scaling).
pub fn sample_host(
    schedule: &Schedule,
    noise: &[f32],
    mut model: impl FnMut(usize, &[f32], f64) -> Result<Vec<f32>>,
    mut step_noise: impl FnMut(usize) -> Vec<f32>,
) -> Result<Vec<f32>> {
    let init = schedule.init_noise_sigma();
    let mut x: Vec<f32> = noise.iter().map(|&v| (f64::from(v) * init) as f32).collect();
    let mut prev_x0 = Vec::new();
    for (i, step) in schedule.steps().iter().enumerate() {
        let input: Vec<f32> = x.iter().map(|&v| (f64::from(v) * step.model_scale) as f32).collect();
        let out = model(i, &input, step.timestep)?;
        let n = step.needs_noise.then(|| step_noise(i));
        step_host(step.coeffs, &mut x, &out, &mut prev_x0, n.as_deref())?;
    }
    Ok(x)
}
