//! One text-to-image request: what the caller asks for ([`Request`], checked by
//! [`Request::validate`]), and its [`Resolved`] form, made once per request: the prompt texts
//! without their `<lora:…>` tags and every LoRA to apply.

use std::path::PathBuf;

use crate::lora::{extract_extra_networks, resolve_in_dir, LoraMode, LoraSpec};
use crate::models::vae::VaeTiling;
use crate::named_enum::named_enum;
pub use crate::pipeline::init::{FinalDecoder, Hires, HiresUpscaler, InitImage, InitSource, InpaintMask};
use crate::pipeline::rng::RngKind;
use crate::schedulers::{PredictionType, SamplerKind, SchedulerConfig, Spacing};
use crate::{Context, DType, Error, HostTensor, Result};

/// Which precision the models run in.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Precision {
    F32,
    F16,
    /// f16 where the adapter has SHADER_F16, else f32.
    Auto,
}

named_enum!(Precision, op = "precision", unknown = |s| format!("unknown precision {s:?} (expected f32, f16 or auto)"), {
    F32 => "f32",
    F16 => "f16",
    Auto => "auto",
});

impl Precision {
    /// What `resolve` chose and why, for the user ("f16 (auto: ...)").
    pub fn describe(self, ctx: &Context) -> String {
        match (self, ctx.caps.shader_f16) {
            (Precision::Auto, true) => {
                "f16 (auto: the adapter has SHADER_F16; f16 storage halves the memory of f32, arithmetic stays f32)"
                    .into()
            }
            (Precision::Auto, false) => "f32 (auto: SHADER_F16 is not available)".into(),
            (p, _) => format!("{} (--precision)", p.name()),
        }
    }

    pub fn resolve(self, ctx: &Context) -> Result<DType> {
        match self {
            Precision::F32 => Ok(DType::F32),
            Precision::F16 if !ctx.caps.shader_f16 => {
                Err(Error::dtype("precision", "f16 needs SHADER_F16, which this adapter lacks (use --precision f32)"))
            }
            Precision::F16 => Ok(DType::F16),
            Precision::Auto => Ok(if ctx.caps.shader_f16 { DType::F16 } else { DType::F32 }),
        }
    }
}

/// Caller-supplied noise (the `--noise-file` contract): `noise` [B,4,h,w] replaces the seeded
/// initial noise; `step_noise` [S,B,4,h,w] is consumed in order by the samplers that draw noise.
#[derive(Clone, Debug, Default)]
pub struct NoiseOverride {
    pub noise: Option<HostTensor>,
    pub step_noise: Option<HostTensor>,
}

/// One text-to-image request (already validated by [`Request::validate`]).
#[derive(Clone, Debug)]
pub struct Request {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: usize,
    pub cfg: f32,
    pub sampler: SamplerKind,
    pub spacing: Spacing,
    pub seed: u64,
    pub rng: RngKind,
    pub width: usize,
    pub height: usize,
    pub batch: usize,
    pub clip_skip: usize,
    /// SDXL's size conditioning `[orig_h, orig_w, crop_top, crop_left, target_h, target_w]`;
    /// `None` = A1111's defaults (original = target = the image size, no crop).
    pub size_cond: Option<[usize; 6]>,
    /// What the UNet predicts, overriding the model's (`v_pred` marker or scheduler config);
    /// `None` = the model's.
    pub prediction: Option<PredictionType>,
    /// Zero terminal SNR on or off, overriding the model's (`ztsnr` marker or the scheduler
    /// config's `rescale_betas_zero_snr`); `None` = the model's.
    pub zero_terminal_snr: Option<bool>,
    /// diffusers' `guidance_rescale` φ (A1111's `CFG Rescale phi`), in [0, 1]: after CFG the
    /// guided output is pulled towards the conditional output's standard deviation by φ. 0 = off.
    pub cfg_rescale: f32,
    pub noise: NoiseOverride,
    /// LoRAs to apply besides the prompt's `<lora:NAME:…>` tags.
    pub loras: Vec<LoraSpec>,
    /// Folder that `<lora:NAME:…>` names are looked up in.
    pub lora_dir: PathBuf,
    pub lora_mode: LoraMode,
    /// A platform policy: refuse more LoRAs than this. No limit when `None`.
    pub max_loras: Option<usize>,
    /// The caller changes LoRA weights between images (a grid): `Auto` mode picks fused.
    pub lora_weights_vary: bool,
    /// Decode the latents in overlapping tiles (less memory for large images; not bit-identical
    /// to a whole decode once the latent is larger than one tile).
    pub vae_tiling: Option<VaeTiling>,
    /// img2img / inpainting: start from these images instead of pure noise.
    pub init: Option<InitImage>,
    /// A1111's hires fix: a second, img2img pass at a larger size.
    pub hires: Option<Hires>,
    /// What decodes the final latents (the VAE, or TAESD for fast drafts).
    pub decoder: FinalDecoder,
}

impl Request {
    pub fn new(prompt: &str) -> Request {
        Request {
            prompt: prompt.to_string(),
            negative_prompt: String::new(),
            steps: 20,
            cfg: 7.0,
            sampler: SamplerKind::DpmPP2MKarras,
            spacing: Spacing::Leading,
            seed: 0,
            rng: RngKind::Philox,
            width: 512,
            height: 512,
            batch: 1,
            clip_skip: 1,
            size_cond: None,
            prediction: None,
            zero_terminal_snr: None,
            cfg_rescale: 0.0,
            noise: NoiseOverride::default(),
            loras: Vec::new(),
            lora_dir: PathBuf::from("loras"),
            lora_mode: LoraMode::Auto,
            max_loras: None,
            lora_weights_vary: false,
            vae_tiling: None,
            init: None,
            hires: None,
            decoder: FinalDecoder::Vae,
        }
    }

    pub fn validate(&self) -> Result<()> {
        const OP: &str = "request";
        if self.width == 0 || self.height == 0 || !self.width.is_multiple_of(8) || !self.height.is_multiple_of(8) {
            return Err(Error::invalid(
                OP,
                format!("size {}x{} must be positive multiples of 8", self.width, self.height),
            ));
        }
        if self.width > 8192 || self.height > 8192 {
            return Err(Error::limit(OP, "image side", self.width.max(self.height) as u64, 8192));
        }
        if self.steps == 0 {
            return Err(Error::invalid(OP, "steps must be at least 1"));
        }
        if self.batch == 0 || self.batch > 64 {
            return Err(Error::invalid(OP, format!("batch must be 1..=64, got {}", self.batch)));
        }
        if !self.cfg.is_finite() {
            return Err(Error::invalid(OP, format!("CFG scale must be finite, got {}", self.cfg)));
        }
        // φ outside [0, 1] extrapolates past either output; no UI offers it, so it is a typo.
        if !(0.0..=1.0).contains(&self.cfg_rescale) {
            return Err(Error::invalid(OP, format!("CFG rescale must be in [0, 1], got {}", self.cfg_rescale)));
        }
        if self.clip_skip == 0 {
            return Err(Error::invalid(OP, "clip skip counts from 1 (A1111 numbering)"));
        }
        if let Some(t) = &self.vae_tiling {
            t.validate()?;
        }
        if let Some(i) = &self.init {
            i.validate(self.width, self.height, self.batch)?;
        }
        if let Some(h) = &self.hires {
            h.validate(self.width, self.height)?;
            if self.init.as_ref().is_some_and(|i| i.mask.is_some()) {
                return Err(Error::invalid(OP, "hires fix does not combine with inpainting"));
            }
        }
        if let Some(c) = self.size_cond {
            if c.iter().any(|&v| v > 65536) {
                return Err(Error::limit(
                    OP,
                    "size conditioning value",
                    c.iter().copied().max().unwrap_or(0) as u64,
                    65536,
                ));
            }
        }
        Ok(())
    }

    /// The model's scheduler config with this request's prediction and zero-SNR overrides.
    pub fn scheduler_config(&self, model: &SchedulerConfig) -> SchedulerConfig {
        let mut c = model.clone();
        c.prediction_type = self.prediction.unwrap_or(c.prediction_type);
        c.rescale_betas_zero_snr = self.zero_terminal_snr.unwrap_or(c.rescale_betas_zero_snr);
        c
    }

    /// SDXL's six added time ids for this request (see [`Request::size_cond`]).
    pub fn time_ids(&self) -> [usize; 6] {
        self.size_cond.unwrap_or([self.height, self.width, 0, 0, self.height, self.width])
    }

    pub(crate) fn latent_shape(&self) -> [usize; 3] {
        [4, self.height / 8, self.width / 8]
    }
}

/// A request with its tags resolved: what the text encoder and the LoRA runtime see.
#[derive(Clone, Debug, PartialEq)]
pub struct Resolved {
    /// The prompt without its extra-network tags.
    pub prompt: String,
    /// The negative prompt without its tags (A1111 drops them there too).
    pub negative_prompt: String,
    /// `loras`, then the prompt's tags resolved in `lora_dir`.
    pub loras: Vec<LoraSpec>,
}

impl Request {
    /// Take the tags out of both prompts, resolve the prompt's in `lora_dir` and check the count
    /// against `max_loras`. Needs no model, so callers can check before loading one.
    pub fn resolve(&self) -> Result<Resolved> {
        let cond = extract_extra_networks(&self.prompt)?;
        let uncond = extract_extra_networks(&self.negative_prompt)?;
        let mut loras = self.loras.clone();
        for t in cond.loras {
            let path = resolve_in_dir(&self.lora_dir, &t.name)?;
            loras.push(LoraSpec::weights(path, t.unet_weight, t.te_weight).with_lbw(t.lbw));
        }
        if let Some(max) = self.max_loras {
            if loras.len() > max {
                return Err(Error::limit("lora", "LoRAs in one request (--max-loras)", loras.len() as u64, max as u64));
            }
        }
        Ok(Resolved { prompt: cond.text, negative_prompt: uncond.text, loras })
    }

    /// Every LoRA the request asks for (see [`Request::resolve`]).
    pub fn lora_specs(&self) -> Result<Vec<LoraSpec>> {
        Ok(self.resolve()?.loras)
    }
}

/// A LoRA an image was made with (for infotext: `Lora hashes: "NAME: HASH"`).
#[derive(Clone, Debug, PartialEq)]
pub struct UsedLora {
    pub name: String,
    /// SHA-256 (hex) of the file after its header; civitai shows the first 12 digits.
    pub hash: String,
    pub unet_weight: f32,
    pub te_weight: f32,
}

impl UsedLora {
    /// The 12-digit form A1111 writes and civitai looks up.
    pub fn short_hash(&self) -> &str {
        &self.hash[..self.hash.len().min(12)]
    }
}
