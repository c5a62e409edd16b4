//! AUTOMATIC1111's web API types, field for field: the JSON names and defaults its
//! `StableDiffusionTxt2ImgProcessingAPI`, `TextToImageResponse` and `Processed.js()` use, so
//! clients written for A1111 (webuiapi, editor plug-ins, chat front ends) work unchanged.
//! Fields A1111 has but lorafuse does not act on are accepted and, where they would change the
//! image, warned about.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::pipeline::infotext::{a1111_sampler_name, sampler_from_a1111};
use crate::pipeline::init::{Hires, HiresUpscaler};
use crate::schedulers::SamplerKind;
use crate::{Error, Result};

fn minus_one() -> i64 {
    -1
}
fn fifty() -> usize {
    50
}
fn seven() -> f32 {
    7.0
}
fn two() -> f64 {
    2.0
}

fn five_twelve() -> usize {
    512
}
fn one() -> usize {
    1
}
fn yes() -> bool {
    true
}
fn euler() -> Option<String> {
    Some("Euler".into())
}

/// A `null` where A1111 has a default (clients such as webuiapi send `None` for unset fields).
fn null_is_default<'de, D: serde::Deserializer<'de>, T: Default + Deserialize<'de>>(d: D) -> Result<T, D::Error> {
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// The body of `POST /sdapi/v1/txt2img`. Unknown fields are ignored, as pydantic does for A1111.
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Txt2ImgRequest {
    #[serde(default)]
    pub prompt: String,
    #[serde(default)]
    pub negative_prompt: String,
    #[serde(default)]
    pub styles: Option<Vec<String>>,
    #[serde(default = "minus_one")]
    pub seed: i64,
    #[serde(default = "minus_one")]
    pub subseed: i64,
    #[serde(default)]
    pub subseed_strength: f32,
    /// A1111 reads `sampler_name` first and falls back to `sampler_index` (default "Euler").
    #[serde(default)]
    pub sampler_name: Option<String>,
    #[serde(default = "euler")]
    pub sampler_index: Option<String>,
    /// A1111 1.9+'s separate schedule type ("Automatic", "Uniform", "Karras").
    #[serde(default)]
    pub scheduler: Option<String>,
    #[serde(default = "one")]
    pub batch_size: usize,
    #[serde(default = "one")]
    pub n_iter: usize,
    #[serde(default = "fifty")]
    pub steps: usize,
    #[serde(default = "seven")]
    pub cfg_scale: f32,
    #[serde(default = "five_twelve")]
    pub width: usize,
    #[serde(default = "five_twelve")]
    pub height: usize,
    #[serde(default)]
    pub restore_faces: Option<bool>,
    #[serde(default)]
    pub tiling: Option<bool>,
    #[serde(default)]
    pub enable_hr: bool,
    /// Hires fix's second-pass strength (img2img's, there); A1111's UI default 0.7 when absent.
    #[serde(default)]
    pub denoising_strength: Option<f64>,
    #[serde(default = "two")]
    pub hr_scale: f64,
    #[serde(default)]
    pub hr_upscaler: Option<String>,
    #[serde(default)]
    pub hr_second_pass_steps: usize,
    #[serde(default)]
    pub hr_resize_x: usize,
    #[serde(default)]
    pub hr_resize_y: usize,
    #[serde(default, deserialize_with = "null_is_default")]
    pub override_settings: BTreeMap<String, Value>,
    #[serde(default = "yes")]
    pub override_settings_restore_afterwards: bool,
    #[serde(default)]
    pub disable_extra_networks: bool,
    #[serde(default = "yes")]
    pub send_images: bool,
    #[serde(default)]
    pub save_images: bool,
    #[serde(default)]
    pub script_name: Option<String>,
}

impl Txt2ImgRequest {
    /// The clip skip `override_settings` asks for, if any (A1111's `CLIP_stop_at_last_layers`).
    pub fn clip_skip_override(&self) -> Result<Option<usize>> {
        match self.override_settings.get("CLIP_stop_at_last_layers") {
            None | Some(Value::Null) => Ok(None),
            Some(v) => clip_skip_value(v).map(Some),
        }
    }

    /// What the request asks for that lorafuse does not do and that would change the image,
    /// for a logged warning (A1111 would honour them).
    pub fn ignored(&self) -> Vec<String> {
        let mut out = Vec::new();
        if self.subseed != -1 || self.subseed_strength != 0.0 {
            out.push(format!(
                "subseed {} (strength {}) is ignored: no variation seeds",
                self.subseed, self.subseed_strength
            ));
        }
        if self.restore_faces == Some(true) {
            out.push("restore_faces is ignored".into());
        }
        if self.tiling == Some(true) {
            out.push("tiling is ignored".into());
        }
        if self.styles.as_ref().is_some_and(|s| !s.is_empty()) {
            out.push("styles are ignored".into());
        }
        if self.script_name.as_ref().is_some_and(|s| !s.is_empty()) {
            out.push("script_name is ignored: no scripts".into());
        }
        for k in
            self.override_settings.keys().filter(|k| *k != "CLIP_stop_at_last_layers" && *k != "sd_model_checkpoint")
        {
            out.push(format!("override_settings.{k} is ignored"));
        }
        out
    }

    /// A1111's hires fix when `enable_hr`: `hr_resize_x`/`hr_resize_y` (one of them 0 keeps the
    /// aspect) or else `hr_scale`, rounded down to multiples of 8 as the latents are.
    pub fn hires(&self) -> Result<Option<Hires>> {
        if !self.enable_hr {
            return Ok(None);
        }
        let (w, h) = (self.width, self.height);
        let r8 = |v: usize| v / 8 * 8;
        let (width, height, scale) = match (self.hr_resize_x, self.hr_resize_y) {
            (0, 0) => {
                let (a, b) = Hires::scaled_size(w, h, self.hr_scale)?;
                (a, b, Some(self.hr_scale))
            }
            (x, 0) => (r8(x), r8(x * h / w.max(1)), None),
            (0, y) => (r8(y * w / h.max(1)), r8(y), None),
            (x, y) => (r8(x), r8(y), None),
        };
        let upscaler = match self.hr_upscaler.as_deref().filter(|s| !s.is_empty() && *s != "None") {
            None => HiresUpscaler::Latent,
            Some(name) => HiresUpscaler::from_a1111(name).map_err(|_| {
                Error::invalid(
                    "hr_upscaler",
                    format!("hires upscaler {name:?} is not available; valid: Latent, Latent (nearest), Lanczos"),
                )
            })?,
        };
        Ok(Some(Hires {
            width,
            height,
            scale,
            steps: self.hr_second_pass_steps,
            denoise: self.denoising_strength.unwrap_or(0.7),
            upscaler,
        }))
    }

    /// The sampler the names select (A1111 names, or lorafuse's own), with A1111's
    /// "Automatic" schedule: Karras for DPM++ 2M (as A1111 1.9+), uniform otherwise.
    pub fn sampler(&self) -> Result<SamplerKind> {
        let name = [&self.sampler_name, &self.sampler_index]
            .into_iter()
            .find_map(|n| n.as_deref().filter(|s| !s.is_empty()))
            .unwrap_or("Euler");
        sampler_with_scheduler(name, self.scheduler.as_deref())
    }
}

/// `CLIP_stop_at_last_layers` as a JSON value: an integer 1..=12 (A1111's slider range).
pub fn clip_skip_value(v: &Value) -> Result<usize> {
    match v.as_u64() {
        Some(n) if (1..=12).contains(&n) => Ok(n as usize),
        _ => Err(Error::invalid("options", format!("CLIP_stop_at_last_layers must be an integer 1..12, got {v}"))),
    }
}

/// A1111's schedule types that lorafuse's samplers implement.
pub const SCHEDULERS: [(&str, &str); 3] = [("automatic", "Automatic"), ("uniform", "Uniform"), ("karras", "Karras")];

/// A sampler name with A1111's separate schedule type. Combinations that lorafuse has no
/// sampler for (Euler with Karras sigmas, …) are refused rather than silently changed.
pub fn sampler_with_scheduler(name: &str, scheduler: Option<&str>) -> Result<SamplerKind> {
    let sched = scheduler.map(str::trim).filter(|s| !s.is_empty()).unwrap_or("automatic").to_ascii_lowercase();
    if !SCHEDULERS.iter().any(|(n, _)| *n == sched) {
        return Err(Error::invalid(
            "sampler",
            format!("scheduler {sched:?} is not supported (Automatic, Uniform, Karras)"),
        ));
    }
    let base = sampler_from_a1111(name, None)?;
    match (base, sched.as_str()) {
        (SamplerKind::DpmPP2M, "automatic" | "karras") => Ok(SamplerKind::DpmPP2MKarras),
        (SamplerKind::DpmPP2MKarras, "uniform") => Ok(SamplerKind::DpmPP2M),
        (SamplerKind::DpmPP2MKarras, _) => Ok(SamplerKind::DpmPP2MKarras),
        (k, "karras") if k != SamplerKind::DpmPP2MKarras => Err(Error::invalid(
            "sampler",
            format!("{name:?} with the Karras schedule is not supported (only DPM++ 2M has it)"),
        )),
        (k, _) => Ok(k),
    }
}

/// `GET /sdapi/v1/samplers`: the A1111 names, with the default schedule A1111 gives each.
pub fn samplers() -> Value {
    let entry = |k: SamplerKind, options: Value| json!({"name": a1111_sampler_name(k), "aliases": [k.name()], "options": options});
    Value::Array(vec![
        entry(SamplerKind::Euler, json!({})),
        entry(SamplerKind::EulerA, json!({"uses_ensd": "True"})),
        entry(SamplerKind::DpmPP2M, json!({"scheduler": "karras"})),
        entry(SamplerKind::DpmPP2MKarras, json!({"scheduler": "karras"})),
        entry(SamplerKind::Ddim, json!({})),
        entry(SamplerKind::Lcm, json!({})),
    ])
}

/// `GET /sdapi/v1/schedulers`.
pub fn schedulers() -> Value {
    Value::Array(
        SCHEDULERS
            .iter()
            .map(|(name, label)| {
                json!({"name": name, "label": label, "aliases": null,
                       "default_rho": if *name == "karras" { 7.0 } else { -1.0 }, "need_inner_model": false})
            })
            .collect(),
    )
}

/// `POST /sdapi/v1/txt2img`'s answer: base64 PNGs, the request as A1111 echoes it, and the
/// `Processed.js()` JSON as a string.
#[derive(Debug, Serialize)]
pub struct Txt2ImgResponse {
    pub images: Vec<String>,
    pub parameters: Value,
    pub info: String,
}

/// What `info` holds for one finished request (A1111's `Processed.js()` keys).
pub struct InfoFields<'a> {
    pub req: &'a Txt2ImgRequest,
    /// img2img's strength, or hires fix's second-pass one.
    pub denoising_strength: Option<f64>,
    pub sampler: SamplerKind,
    pub clip_skip: usize,
    pub seeds: &'a [u64],
    pub infotexts: &'a [String],
    pub model_name: &'a str,
    pub model_hash: &'a str,
    pub interrupted: bool,
}

impl InfoFields<'_> {
    pub fn to_json(&self) -> Value {
        let n = self.seeds.len();
        let r = self.req;
        json!({
            "prompt": r.prompt,
            "all_prompts": vec![&r.prompt; n],
            "negative_prompt": r.negative_prompt,
            "all_negative_prompts": vec![&r.negative_prompt; n],
            "seed": self.seeds.first().copied().unwrap_or(0),
            "all_seeds": self.seeds,
            "subseed": -1,
            "all_subseeds": vec![-1; n],
            "subseed_strength": 0,
            "width": r.width,
            "height": r.height,
            "sampler_name": a1111_sampler_name(self.sampler),
            "cfg_scale": r.cfg_scale,
            "steps": r.steps,
            "batch_size": r.batch_size,
            "restore_faces": false,
            "face_restoration_model": null,
            "sd_model_name": self.model_name,
            "sd_model_hash": self.model_hash,
            "sd_vae_name": null,
            "sd_vae_hash": null,
            "seed_resize_from_w": -1,
            "seed_resize_from_h": -1,
            "denoising_strength": self.denoising_strength,
            "extra_generation_params": {},
            "index_of_first_image": 0,
            "infotexts": self.infotexts,
            "styles": [],
            "job_timestamp": job_timestamp(),
            "clip_skip": self.clip_skip,
            "is_using_inpainting_conditioning": false,
            "version": concat!("lorafuse ", env!("CARGO_PKG_VERSION")),
            "interrupted": self.interrupted,
        })
    }
}

/// A1111's `YYYYmmddHHMMSS` job timestamp (UTC).
pub fn job_timestamp() -> String {
    let secs = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0);
    let (days, rem) = (secs / 86400, secs % 86400);
    // Civil date from days since 1970-01-01 (Howard Hinnant's algorithm).
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!("{y:04}{m:02}{d:02}{:02}{:02}{:02}", rem / 3600, rem % 3600 / 60, rem % 60)
}
