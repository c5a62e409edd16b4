//! The training noise schedule (diffusers' scheduler_config.json) and the tables derived from it:
//! betas, ᾱ (alphas_cumprod) and σ per training timestep.
//!
//! diffusers builds these tables in float32 torch ops, and the small-t sigmas are sensitive to that
//! (σ_0 comes from 1 − ᾱ_0 ≈ 8.5e-4), so the tables here replay the same float32 operations and are
//! then held as f64. Everything downstream (spacing, step coefficients) is f64.

use std::path::Path;

use serde_json::Value;

use crate::named_enum::named_enum;
use crate::{Error, Result};

use super::Spacing;

const OP: &str = "scheduler_config";

/// How betas are laid out over the training timesteps (diffusers `beta_schedule`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum BetaSchedule {
    /// `linear`: linspace(beta_start, beta_end).
    Linear,
    /// `scaled_linear`: linspace(√beta_start, √beta_end)² (Stable Diffusion).
    ScaledLinear,
    /// `squaredcos_cap_v2`: the Glide cosine schedule (betas capped at 0.999).
    SquaredCosCapV2,
}

/// What the UNet predicts (diffusers `prediction_type`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum PredictionType {
    /// The added noise ε (SD 1.x, SDXL).
    Epsilon,
    /// v = √ᾱ·ε − √(1−ᾱ)·x0 (SD 2.x 768).
    VPrediction,
    /// x0 directly.
    Sample,
}

named_enum!(
    PredictionType,
    op = "prediction",
    unknown = |s| format!("unknown prediction type {s:?}; valid: eps, v, sample"),
    {
        Epsilon => "eps",
        VPrediction => "v",
        Sample => "sample",
    }
);

/// The fields of a diffusers scheduler config that the samplers here use.
#[derive(Clone, Debug, PartialEq)]
pub struct SchedulerConfig {
    pub num_train_timesteps: usize,
    pub beta_start: f64,
    pub beta_end: f64,
    pub beta_schedule: BetaSchedule,
    pub steps_offset: usize,
    pub prediction_type: PredictionType,
    /// DDIM/LCM: ᾱ used past the last timestep is 1 when true, ᾱ_0 when false.
    pub set_alpha_to_one: bool,
    /// DDIM/LCM x0 clipping: nonlinear, so rejected by the samplers when true.
    pub clip_sample: bool,
    /// Dynamic thresholding: nonlinear, so rejected by the samplers when true.
    pub thresholding: bool,
    /// The spacing the model's config asks for; callers may override it per schedule.
    pub timestep_spacing: Spacing,
    /// LCM: the distillation schedule length (diffusers default 50).
    pub original_inference_steps: usize,
    /// LCM: the boundary-condition time scale (diffusers default 10).
    pub timestep_scaling: f64,
    /// diffusers `rescale_betas_zero_snr`: betas rescaled so that ᾱ at the last training timestep
    /// is 0 (Lin et al. 2023, "Common Diffusion Noise Schedules and Sample Steps are Flawed").
    /// Only v-prediction (or x0) models can start from pure noise; an ε model divides by √ᾱ = 0.
    pub rescale_betas_zero_snr: bool,
}

impl SchedulerConfig {
    /// Stable Diffusion 1.x's scheduler: scaled_linear betas 0.00085–0.012 over 1000 steps,
    /// steps_offset 1, epsilon prediction, set_alpha_to_one false, "leading" spacing.
    pub fn sd15() -> Self {
        SchedulerConfig {
            num_train_timesteps: 1000,
            beta_start: 0.00085,
            beta_end: 0.012,
            beta_schedule: BetaSchedule::ScaledLinear,
            steps_offset: 1,
            prediction_type: PredictionType::Epsilon,
            set_alpha_to_one: false,
            clip_sample: false,
            thresholding: false,
            timestep_spacing: Spacing::Leading,
            original_inference_steps: 50,
            timestep_scaling: 10.0,
            rescale_betas_zero_snr: false,
        }
    }

    /// Reads a diffusers `scheduler_config.json`. Keys that are absent take the defaults shared by
    /// diffusers' scheduler classes (1000 steps, linear betas 0.0001–0.02, steps_offset 0, epsilon,
    /// set_alpha_to_one true, no clipping, "leading", LCM 50 / 10).
    pub fn from_diffusers_json(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        let text = std::fs::read_to_string(path)
            .map_err(|e| Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))))?;
        Self::from_json_str(&text, &path.display().to_string())
    }

    /// Parses the text of a scheduler config; `origin` names it in error messages.
    pub fn from_json_str(text: &str, origin: &str) -> Result<Self> {
        let v: Value =
            serde_json::from_str(text).map_err(|e| Error::invalid(OP, format!("{origin}: not valid JSON: {e}")))?;
        let obj = v.as_object().ok_or_else(|| Error::invalid(OP, format!("{origin}: expected a JSON object")))?;
        let present = |k: &str| obj.get(k).filter(|x| !x.is_null());
        let num = |k: &str, default: f64| -> Result<f64> {
            match present(k) {
                None => Ok(default),
                Some(x) => {
                    x.as_f64().ok_or_else(|| Error::invalid(OP, format!("{origin}: `{k}` must be a number, got {x}")))
                }
            }
        };
        let count = |k: &str, default: usize| -> Result<usize> {
            let x = num(k, default as f64)?;
            if x < 0.0 || x.fract() != 0.0 || x > 1e9 {
                return Err(Error::invalid(OP, format!("{origin}: `{k}` must be a non-negative integer, got {x}")));
            }
            Ok(x as usize)
        };
        let flag = |k: &str, default: bool| -> Result<bool> {
            match present(k) {
                None => Ok(default),
                Some(x) => x
                    .as_bool()
                    .ok_or_else(|| Error::invalid(OP, format!("{origin}: `{k}` must be true or false, got {x}"))),
            }
        };
        let text_field = |k: &str| -> Result<Option<&str>> {
            match present(k) {
                None => Ok(None),
                Some(x) => x
                    .as_str()
                    .map(Some)
                    .ok_or_else(|| Error::invalid(OP, format!("{origin}: `{k}` must be a string, got {x}"))),
            }
        };

        if present("trained_betas").is_some() {
            return Err(Error::invalid(
                OP,
                format!("{origin}: `trained_betas` (explicit beta lists) is not supported"),
            ));
        }
        let beta_schedule = match text_field("beta_schedule")?.unwrap_or("linear") {
            "linear" => BetaSchedule::Linear,
            "scaled_linear" => BetaSchedule::ScaledLinear,
            "squaredcos_cap_v2" => BetaSchedule::SquaredCosCapV2,
            other => {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "{origin}: unknown beta_schedule {other:?} \
                         (expected linear, scaled_linear or squaredcos_cap_v2)"
                    ),
                ))
            }
        };
        let prediction_type = match text_field("prediction_type")?.unwrap_or("epsilon") {
            "epsilon" => PredictionType::Epsilon,
            "v_prediction" => PredictionType::VPrediction,
            "sample" => PredictionType::Sample,
            other => {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "{origin}: unknown prediction_type {other:?} \
                         (expected epsilon, v_prediction or sample)"
                    ),
                ))
            }
        };
        // A spacing this crate lacks (e.g. "linspace") should not make the model unloadable: the
        // user picks the spacing per run anyway.
        let timestep_spacing = match text_field("timestep_spacing")? {
            None => Spacing::Leading,
            Some(s) => s.parse().unwrap_or_else(|_| {
                log::warn!("{origin}: timestep_spacing {s:?} is not supported; using \"leading\"");
                Spacing::Leading
            }),
        };
        let cfg = SchedulerConfig {
            num_train_timesteps: count("num_train_timesteps", 1000)?,
            beta_start: num("beta_start", 0.0001)?,
            beta_end: num("beta_end", 0.02)?,
            beta_schedule,
            steps_offset: count("steps_offset", 0)?,
            prediction_type,
            set_alpha_to_one: flag("set_alpha_to_one", true)?,
            clip_sample: flag("clip_sample", false)?,
            thresholding: flag("thresholding", false)?,
            timestep_spacing,
            original_inference_steps: count("original_inference_steps", 50)?,
            timestep_scaling: num("timestep_scaling", 10.0)?,
            rescale_betas_zero_snr: flag("rescale_betas_zero_snr", false)?,
        };
        cfg.validate().map_err(|e| match e {
            Error::Invalid { op, msg } => Error::Invalid { op, msg: format!("{origin}: {msg}") },
            other => other,
        })?;
        Ok(cfg)
    }

    /// Checks the values the tables depend on.
    pub fn validate(&self) -> Result<()> {
        let n = self.num_train_timesteps;
        if !(2..=100_000).contains(&n) {
            return Err(Error::invalid(OP, format!("num_train_timesteps = {n} must be in 2..=100000")));
        }
        let (b0, b1) = (self.beta_start, self.beta_end);
        if self.beta_schedule != BetaSchedule::SquaredCosCapV2
            && !(b0.is_finite() && b1.is_finite() && b0 > 0.0 && b0 <= b1 && b1 < 1.0)
        {
            return Err(Error::invalid(
                OP,
                format!("betas must satisfy 0 < beta_start <= beta_end < 1, got {b0} .. {b1}"),
            ));
        }
        if self.steps_offset >= n {
            return Err(Error::invalid(
                OP,
                format!("steps_offset = {} must be below num_train_timesteps = {n}", self.steps_offset),
            ));
        }
        if !(self.timestep_scaling.is_finite() && self.timestep_scaling > 0.0) {
            return Err(Error::invalid(OP, format!("timestep_scaling = {} must be positive", self.timestep_scaling)));
        }
        Ok(())
    }

    /// β_t as float32 values (diffusers' `self.betas`, after `rescale_zero_terminal_snr` when
    /// [`SchedulerConfig::rescale_betas_zero_snr`] is set), widened to f64.
    pub fn betas(&self) -> Result<Vec<f64>> {
        let betas = self.schedule_betas()?;
        Ok(if self.rescale_betas_zero_snr { rescale_zero_terminal_snr(&betas) } else { betas })
    }

    /// The betas of `beta_schedule`, before any zero-SNR rescaling.
    fn schedule_betas(&self) -> Result<Vec<f64>> {
        self.validate()?;
        let n = self.num_train_timesteps;
        Ok(match self.beta_schedule {
            BetaSchedule::Linear => {
                torch_linspace_f32(self.beta_start, self.beta_end, n).into_iter().map(f64::from).collect()
            }
            BetaSchedule::ScaledLinear => torch_linspace_f32(self.beta_start.sqrt(), self.beta_end.sqrt(), n)
                .into_iter()
                .map(|b| f64::from(b * b))
                .collect(),
            BetaSchedule::SquaredCosCapV2 => {
                let alpha_bar = |t: f64| ((t + 0.008) / 1.008 * std::f64::consts::FRAC_PI_2).cos().powi(2);
                (0..n)
                    .map(|i| {
                        let (t1, t2) = (i as f64 / n as f64, (i + 1) as f64 / n as f64);
                        f64::from((1.0 - alpha_bar(t2) / alpha_bar(t1)).min(0.999) as f32)
                    })
                    .collect()
            }
        })
    }

    /// ᾱ_t = Π(1 − β): float32 factors, accumulated in double and rounded to float32 per entry,
    /// as torch.cumprod does on the CPU.
    /// With zero terminal SNR the last entry is exactly 0 (DDIM and LCM use it so).
    pub fn alphas_cumprod(&self) -> Result<Vec<f64>> {
        Ok(cumprod_f32(self.betas()?.iter().map(|&b| 1.0f32 - b as f32)))
    }

    /// σ_t = √((1 − ᾱ_t)/ᾱ_t) per training timestep, computed in float32 as diffusers does.
    /// With zero terminal SNR, ᾱ at the last timestep is taken as 2⁻²⁴ instead of 0, as diffusers'
    /// σ-based schedulers (Euler, Euler ancestral, DPM-Solver) do so that σ_max = 4096 is finite.
    pub fn sigmas(&self) -> Result<Vec<f64>> {
        let mut ac = self.alphas_cumprod()?;
        if self.rescale_betas_zero_snr {
            if let Some(last) = ac.last_mut() {
                *last = f64::from(2.0f32.powi(-24));
            }
        }
        Ok(ac
            .into_iter()
            .map(|a| {
                let a = a as f32;
                f64::from(((1.0 - a) / a).sqrt())
            })
            .collect())
    }
}

/// torch.cumprod of float32 factors on the CPU: accumulated in double, each entry rounded to
/// float32.
fn cumprod_f32(factors: impl Iterator<Item = f32>) -> Vec<f64> {
    let mut acc = 1.0f64;
    factors
        .map(|f| {
            acc *= f64::from(f);
            f64::from(acc as f32)
        })
        .collect()
}

/// diffusers `rescale_zero_terminal_snr` (Lin et al. 2023, Algorithm 1), replayed in float32:
/// √ᾱ is shifted so its last value is 0 and scaled so its first value is unchanged, then turned
/// back into betas (the last one is 1).
fn rescale_zero_terminal_snr(betas: &[f64]) -> Vec<f64> {
    let ac = cumprod_f32(betas.iter().map(|&b| 1.0f32 - b as f32));
    let sqrt: Vec<f32> = ac.iter().map(|&a| (a as f32).sqrt()).collect();
    let (Some(&first), Some(&last)) = (sqrt.first(), sqrt.last()) else {
        return betas.to_vec();
    };
    let scale = first / (first - last);
    let bar: Vec<f32> = sqrt
        .iter()
        .map(|&s| {
            let s = (s - last) * scale;
            s * s
        })
        .collect();
    (0..bar.len())
        .map(|i| {
            let alpha = if i == 0 { bar[0] } else { bar[i] / bar[i - 1] };
            f64::from(1.0f32 - alpha)
        })
        .collect()
}

/// torch.linspace(start, end, steps, dtype=float32) as its x86 CPU kernel computes it: the first
/// half counts up from `start`, the second half down from `end`, in float32. The AVX2 loop fills
/// blocks of 2×8 values as `base + k·step` from one base per 8 lanes, then finishes one by one.
/// (Replaying the vector blocks matters only in the last ulp of some betas, but it brings the
/// σ tables measurably closer to diffusers'.)
fn torch_linspace_f32(start: f64, end: f64, steps: usize) -> Vec<f32> {
    const LANES: usize = 8;
    let (s, e) = (start as f32, end as f32);
    if steps == 1 {
        return vec![s];
    }
    let step = (e - s) / (steps - 1) as f32;
    let halfway = steps / 2;
    let scalar = |i: usize| if i < halfway { s + step * i as f32 } else { e - step * (steps - i - 1) as f32 };
    let mut out = Vec::with_capacity(steps);
    while out.len() + 2 * LANES <= steps {
        for _ in 0..2 {
            let base = scalar(out.len());
            out.extend((0..LANES).map(|k| base + k as f32 * step));
        }
    }
    while out.len() < steps {
        out.push(scalar(out.len()));
    }
    out
}
