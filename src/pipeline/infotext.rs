//! A1111's infotext (the PNG `parameters` chunk), written and read in one place: what
//! `generate` and `grid` record with each image, and what `generate --from-png` reads back.
//!
//! The layout, as A1111's `parse_generation_parameters` reads it: the last line is the settings
//! line when it holds at least three `key: value` pairs; the lines before are the prompt, up to
//! a line starting with `Negative prompt:`, after which they are the negative prompt. A value is
//! either plain text up to the next comma or a JSON-style quoted string.

use crate::lora::{lora_name, BlockWeights};
use crate::pipeline::init::{Hires, HiresUpscaler};
use crate::pipeline::request::{Request, UsedLora};
use crate::pipeline::rng::RngKind;
use crate::schedulers::{SamplerKind, Spacing};
use crate::{Error, Result};

const OP: &str = "infotext";

/// The generation settings in A1111's infotext layout:
///
/// ```text
/// <prompt>
/// Negative prompt: <negative>
/// Steps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 1, Size: 512x512, Model hash: …, …
/// ```
#[derive(Clone, Debug, PartialEq)]
pub struct Infotext {
    pub prompt: String,
    pub negative_prompt: String,
    /// `key: value` pairs of the last line, in order.
    pub fields: Vec<(String, String)>,
}

/// A1111's display names of the samplers (older versions; newer ones write `DPM++ 2M` with a
/// separate `Schedule type: Karras`, read by [`sampler_from_a1111`]).
const A1111_SAMPLERS: [(SamplerKind, &str); 6] = [
    (SamplerKind::Euler, "Euler"),
    (SamplerKind::EulerA, "Euler a"),
    (SamplerKind::DpmPP2M, "DPM++ 2M"),
    (SamplerKind::DpmPP2MKarras, "DPM++ 2M Karras"),
    (SamplerKind::Ddim, "DDIM"),
    (SamplerKind::Lcm, "LCM"),
];

/// A1111's display name of a sampler.
pub fn a1111_sampler_name(kind: SamplerKind) -> &'static str {
    A1111_SAMPLERS.iter().find(|(k, _)| *k == kind).map_or("", |(_, n)| n)
}

/// Format a float the way A1111 prints settings (no trailing `.0`).
pub fn fmt_num(x: f64) -> String {
    if x.fract() == 0.0 && x.abs() < 1e15 {
        format!("{}", x as i64)
    } else {
        let s = format!("{x:.6}");
        s.trim_end_matches('0').trim_end_matches('.').to_string()
    }
}

/// Quote a field value that contains a comma, colon or quote, as A1111 does.
fn quote(v: &str) -> String {
    if v.contains([',', ':', '"', '\n']) {
        format!("\"{}\"", v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n"))
    } else {
        v.to_string()
    }
}

impl Infotext {
    pub fn new(prompt: &str, negative_prompt: &str) -> Infotext {
        Infotext { prompt: prompt.to_string(), negative_prompt: negative_prompt.to_string(), fields: Vec::new() }
    }

    pub fn field(mut self, key: &str, value: impl ToString) -> Infotext {
        self.fields.push((key.to_string(), value.to_string()));
        self
    }

    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    pub fn render(&self) -> String {
        let mut s = self.prompt.clone();
        if !self.negative_prompt.is_empty() {
            s.push_str("\nNegative prompt: ");
            s.push_str(&self.negative_prompt);
        }
        let fields: Vec<String> = self.fields.iter().map(|(k, v)| format!("{k}: {}", quote(v))).collect();
        s.push('\n');
        s.push_str(&fields.join(", "));
        s
    }
}

/// A1111's "Noise schedule for sampling" option (`sd_noise_schedule`) and its zero-SNR value.
const NOISE_SCHEDULE: &str = "Noise Schedule";
const ZERO_TERMINAL_SNR: &str = "Zero Terminal SNR";
/// diffusers' `guidance_rescale` φ, as A1111's CFG-rescale extension records it.
const CFG_RESCALE: &str = "CFG Rescale phi";

const DENOISING: &str = "Denoising strength";
const MASK_BLUR: &str = "Mask blur";
const INPAINT_AREA: &str = "Inpaint area";
const ONLY_MASKED: &str = "Only masked";
const MASKED_PADDING: &str = "Masked area padding";
const HIRES_UPSCALE: &str = "Hires upscale";
const HIRES_RESIZE: &str = "Hires resize";
const HIRES_STEPS: &str = "Hires steps";
const HIRES_UPSCALER: &str = "Hires upscaler";

/// A1111's `RNG` field: `GPU` for the Philox stream, `CPU` for torch's CPU generator.
const RNG_NAMES: [(RngKind, &str); 2] = [(RngKind::Philox, "GPU"), (RngKind::TorchCpu, "CPU")];

fn a1111_rng_name(rng: RngKind) -> &'static str {
    RNG_NAMES.iter().find(|(k, _)| *k == rng).map_or("CPU", |(_, n)| n)
}

/// The `<lora:NAME:W>` (or `<lora:NAME:TE:UNET>`) tag A1111 writes into the prompt, with the
/// block weight extension's `:lbw=…` when the LoRA has block weights.
pub fn lora_tag(name: &str, unet_weight: f32, te_weight: f32, lbw: Option<&BlockWeights>) -> String {
    let lbw = lbw.map(|b| format!(":lbw={b}")).unwrap_or_default();
    if unet_weight == te_weight {
        format!("<lora:{name}:{}{lbw}>", fmt_num(te_weight as f64))
    } else {
        format!("<lora:{name}:{}:{}{lbw}>", fmt_num(te_weight as f64), fmt_num(unet_weight as f64))
    }
}

/// The A1111 infotext of one image of a generation or grid cell (`seed` is that image's): prompt,
/// negative prompt and the settings line (`Steps`, `Sampler`, `CFG scale`, `Seed`, `Size`,
/// `Model hash`, `Model`, `Clip skip`, `RNG`, and `Lora hashes: "NAME: HASH, …"` when LoRAs were
/// applied). The request's `--lora` list goes into the prompt as `<lora:NAME:W>` tags, the way
/// A1111 records LoRAs, so the weights survive and `generate --from-png` (with `--lora-dir`
/// holding the files) makes the same image. The tags are appended with no separator: removing
/// them gives back exactly the prompt that was encoded.
pub fn request_infotext(req: &Request, seed: u64, model_name: &str, model_hash: &str, used: &[UsedLora]) -> Infotext {
    let mut prompt = req.prompt.clone();
    for s in &req.loras {
        prompt.push_str(&lora_tag(&lora_name(&s.path), s.unet_weight, s.te_weight, s.lbw.as_ref()));
    }
    let mut info = Infotext::new(&prompt, &req.negative_prompt)
        .field("Steps", req.steps)
        .field("Sampler", a1111_sampler_name(req.sampler))
        .field("CFG scale", fmt_num(req.cfg as f64))
        .field("Seed", seed)
        .field("Size", format!("{}x{}", req.width, req.height));
    if !model_hash.is_empty() {
        info = info.field("Model hash", model_hash);
    }
    info = info.field("Model", model_name);
    // A1111's place for it: after the model, before `Clip skip`.
    if let Some(d) = req.init.as_ref().map(|i| i.strength).or(req.hires.as_ref().map(|h| h.denoise)) {
        info = info.field(DENOISING, fmt_num(d));
    }
    info = info.field("Clip skip", req.clip_skip).field("RNG", a1111_rng_name(req.rng));
    if req.spacing != Spacing::Leading {
        info = info.field("Timestep spacing", req.spacing.name());
    }
    // A1111's own option (written when not "Default"); the prediction type has no A1111 key and
    // stays with the model file.
    if req.zero_terminal_snr == Some(true) {
        info = info.field(NOISE_SCHEDULE, ZERO_TERMINAL_SNR);
    }
    // The key of the A1111 CFG-rescale extension (and reForge).
    if req.cfg_rescale != 0.0 {
        info = info.field(CFG_RESCALE, fmt_num(req.cfg_rescale as f64));
    }
    if let Some(c) = req.size_cond.filter(|c| *c != Request { size_cond: None, ..req.clone() }.time_ids()) {
        info = info.field("Size cond", fmt_size_cond(c));
    }
    info = init_and_hires_fields(info, req);
    if !used.is_empty() {
        let list: Vec<String> = used.iter().map(|l| format!("{}: {}", l.name, l.short_hash())).collect();
        info = info.field("Lora hashes", list.join(", "));
    }
    info
}

/// A1111's img2img and hires fix keys (`modules/processing.py`): `Mask blur`, `Inpaint area: Only
/// masked` with `Masked area padding`, and `Hires upscale` (or `Hires resize: WxH` when a size
/// was given), `Hires steps` (when not 0) and `Hires upscaler`. A1111 writes `Mask blur` only
/// when it is not 0; lorafuse writes it for every inpainting, so the infotext says a mask was
/// used. The init image's resize mode has no A1111 key and is not recorded; `Size` stays the
/// first pass's size with hires fix, as in A1111.
fn init_and_hires_fields(mut info: Infotext, req: &Request) -> Infotext {
    if let Some(m) = req.init.as_ref().and_then(|i| i.mask.as_ref()) {
        info = info.field(MASK_BLUR, fmt_num(m.blur as f64));
        if let Some(p) = m.only_masked_padding {
            info = info.field(INPAINT_AREA, ONLY_MASKED).field(MASKED_PADDING, p);
        }
    }
    if let Some(h) = &req.hires {
        info = match h.scale {
            Some(s) => info.field(HIRES_UPSCALE, fmt_num(s)),
            None => info.field(HIRES_RESIZE, format!("{}x{}", h.width, h.height)),
        };
        if h.steps != 0 {
            info = info.field(HIRES_STEPS, h.steps);
        }
        info = info.field(HIRES_UPSCALER, h.upscaler.a1111_name());
    }
    info
}

/// Split a settings line into `key: value` pairs. `None` when the line is not one (fewer than
/// three pairs, or text that no pair explains), so it is read as part of the prompt instead.
fn parse_fields(line: &str) -> Option<Vec<(String, String)>> {
    let chars: Vec<char> = line.chars().collect();
    let mut i = 0;
    let mut out = Vec::new();
    let skip_ws = |i: &mut usize| {
        while *i < chars.len() && chars[*i].is_whitespace() {
            *i += 1;
        }
    };
    loop {
        skip_ws(&mut i);
        if i >= chars.len() {
            break;
        }
        // A key: a word character, then word characters, spaces, '-' or '/' (A1111's regex).
        let start = i;
        if !(chars[i].is_alphanumeric() || chars[i] == '_') {
            return None;
        }
        while i < chars.len() && (chars[i].is_alphanumeric() || matches!(chars[i], '_' | ' ' | '-' | '/')) {
            i += 1;
        }
        if i >= chars.len() || chars[i] != ':' {
            return None;
        }
        let key: String = chars[start..i].iter().collect::<String>().trim().to_string();
        i += 1;
        skip_ws(&mut i);
        let value = if i < chars.len() && chars[i] == '"' {
            i += 1;
            let mut v = String::new();
            let mut closed = false;
            while i < chars.len() {
                match chars[i] {
                    '\\' if i + 1 < chars.len() => {
                        i += 1;
                        v.push(match chars[i] {
                            'n' => '\n',
                            't' => '\t',
                            'r' => '\r',
                            c => c,
                        });
                    }
                    '"' => {
                        closed = true;
                        i += 1;
                        break;
                    }
                    c => v.push(c),
                }
                i += 1;
            }
            if !closed {
                return None;
            }
            skip_ws(&mut i);
            if i < chars.len() && chars[i] != ',' {
                return None;
            }
            v
        } else {
            let s = i;
            while i < chars.len() && chars[i] != ',' {
                i += 1;
            }
            chars[s..i].iter().collect::<String>().trim().to_string()
        };
        out.push((key, value));
        if i < chars.len() {
            i += 1; // the comma
        }
    }
    (out.len() >= 3).then_some(out)
}

/// Parse A1111's infotext layout (see the module docs). A text without a settings line is all
/// prompt (A1111 does the same).
pub fn parse_infotext(text: &str) -> Infotext {
    let text = text.replace("\r\n", "\n");
    let mut lines: Vec<&str> = text.split('\n').collect();
    let mut fields = Vec::new();
    if let Some(last) = lines.last() {
        if let Some(f) = parse_fields(last) {
            fields = f;
            lines.pop();
        }
    }
    let mut prompt = Vec::new();
    let mut negative = Vec::new();
    let mut in_negative = false;
    for l in lines {
        if let Some(rest) = l.strip_prefix("Negative prompt:") {
            in_negative = true;
            negative.push(rest.strip_prefix(' ').unwrap_or(rest));
        } else if in_negative {
            negative.push(l);
        } else {
            prompt.push(l);
        }
    }
    Infotext { prompt: prompt.join("\n").trim().to_string(), negative_prompt: negative.join("\n"), fields }
}

/// A1111 sampler names (with the separate `Schedule type` of newer versions) to ours.
pub fn sampler_from_a1111(name: &str, schedule: Option<&str>) -> Result<SamplerKind> {
    let karras = schedule.is_some_and(|s| s.eq_ignore_ascii_case("karras"));
    let n = name.trim();
    if let Ok(k) = n.parse::<SamplerKind>() {
        return Ok(k);
    }
    match A1111_SAMPLERS.iter().find(|(_, a)| *a == n).map(|(k, _)| *k) {
        Some(SamplerKind::DpmPP2M) if karras => Ok(SamplerKind::DpmPP2MKarras),
        Some(k) => Ok(k),
        None => Err(Error::invalid(
            OP,
            format!("sampler {n:?} is not supported (Euler, Euler a, DPM++ 2M, DPM++ 2M Karras, DDIM, LCM)"),
        )),
    }
}

/// The generation settings an infotext records. Fields it lacks stay `None`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Settings {
    pub prompt: String,
    pub negative_prompt: String,
    pub steps: Option<usize>,
    pub sampler: Option<SamplerKind>,
    pub cfg: Option<f32>,
    pub seed: Option<u64>,
    pub size: Option<(usize, usize)>,
    pub clip_skip: Option<usize>,
    pub rng: Option<RngKind>,
    pub spacing: Option<Spacing>,
    /// SDXL size conditioning (`Size cond: "orig_h, orig_w, crop_top, crop_left, target_h,
    /// target_w"`, lorafuse's key: A1111 has none), written only when it differs from the default.
    pub size_cond: Option<[usize; 6]>,
    /// `Noise Schedule: Zero Terminal SNR` (A1111's option; `Default` reads as off).
    pub zero_terminal_snr: Option<bool>,
    /// `CFG Rescale phi: R` (A1111's CFG-rescale extension).
    pub cfg_rescale: Option<f32>,
    pub model: Option<String>,
    pub model_hash: Option<String>,
    /// `Lora hashes: "NAME: HASH, …"` as (NAME, HASH).
    pub lora_hashes: Vec<(String, String)>,
    /// `Denoising strength`: img2img's strength, or with hires fix its second pass's.
    pub denoising_strength: Option<f64>,
    /// `Mask blur` (inpainting; old A1111 versions wrote it for every img2img).
    pub mask_blur: Option<f32>,
    /// `Inpaint area`: `Only masked` = true, `Whole picture` = false.
    pub inpaint_only_masked: Option<bool>,
    /// `Masked area padding`.
    pub masked_padding: Option<usize>,
    /// `Hires upscale: F`.
    pub hires_scale: Option<f64>,
    /// `Hires resize: WxH`; A1111 writes 0 for a side it derives from the aspect ratio.
    pub hires_resize: Option<(usize, usize)>,
    /// `Hires steps` (absent = 0, the first pass's count).
    pub hires_steps: Option<usize>,
    /// `Hires upscaler`.
    pub hires_upscaler: Option<HiresUpscaler>,
    /// Fields that change the image but that lorafuse does not do (variation seeds, hires
    /// sampler or prompt, …), for a warning.
    pub ignored: Vec<String>,
}

fn num<T: std::str::FromStr>(key: &str, v: &str) -> Result<T> {
    v.trim().parse().map_err(|_| Error::invalid(OP, format!("{key}: {v:?} is not a valid number")))
}

fn unit_interval(key: &str, v: &str) -> Result<f64> {
    let x: f64 = num(key, v)?;
    if !(0.0..=1.0).contains(&x) {
        return Err(Error::invalid(OP, format!("{key} {v:?} is not in [0, 1]")));
    }
    Ok(x)
}

/// Fields that only describe the image (names, hashes, versions) and so are never "ignored".
const DESCRIPTIVE: [&str; 8] =
    ["Model", "Model hash", "Lora hashes", "TI hashes", "Version", "VAE", "VAE hash", "Schedule type"];

impl Settings {
    /// Read the settings of a parsed infotext; a malformed value of a field we use is an error
    /// naming the field.
    pub fn from_infotext(info: &Infotext) -> Result<Settings> {
        let mut s = Settings {
            prompt: info.prompt.clone(),
            negative_prompt: info.negative_prompt.clone(),
            ..Settings::default()
        };
        let schedule = info.get("Schedule type");
        for (k, v) in &info.fields {
            match k.as_str() {
                "Steps" => s.steps = Some(num(k, v)?),
                "Sampler" => s.sampler = Some(sampler_from_a1111(v, schedule)?),
                "CFG scale" => {
                    let c: f32 = num(k, v)?;
                    if !c.is_finite() {
                        return Err(Error::invalid(OP, format!("CFG scale {v:?} is not finite")));
                    }
                    s.cfg = Some(c);
                }
                "Seed" => s.seed = Some(num(k, v)?),
                "Size" => {
                    let (w, h) = v
                        .split_once('x')
                        .ok_or_else(|| Error::invalid(OP, format!("Size {v:?} is not WIDTHxHEIGHT")))?;
                    s.size = Some((num(k, w)?, num(k, h)?));
                }
                "Clip skip" => s.clip_skip = Some(num(k, v)?),
                "RNG" => {
                    let found = RNG_NAMES.iter().find(|(_, n)| n == v).map(|(k, _)| *k);
                    s.rng = Some(
                        found.ok_or_else(|| Error::invalid(OP, format!("RNG {v:?} is not supported (GPU or CPU)")))?,
                    )
                }
                "Timestep spacing" => s.spacing = Some(v.parse()?),
                "Size cond" => s.size_cond = Some(parse_size_cond(v)?),
                NOISE_SCHEDULE => {
                    s.zero_terminal_snr = Some(match v.as_str() {
                        ZERO_TERMINAL_SNR => true,
                        "Default" => false,
                        _ => {
                            return Err(Error::invalid(
                                OP,
                                format!("{k} {v:?} is not supported (Default or {ZERO_TERMINAL_SNR})"),
                            ))
                        }
                    })
                }
                CFG_RESCALE => {
                    let r: f32 = num(k, v)?;
                    if !(0.0..=1.0).contains(&r) {
                        return Err(Error::invalid(OP, format!("{k} {v:?} is not in [0, 1]")));
                    }
                    s.cfg_rescale = Some(r);
                }
                DENOISING => s.denoising_strength = Some(unit_interval(k, v)?),
                MASK_BLUR => s.mask_blur = Some(num(k, v)?),
                INPAINT_AREA => {
                    s.inpaint_only_masked = Some(match v.as_str() {
                        ONLY_MASKED => true,
                        "Whole picture" => false,
                        _ => {
                            return Err(Error::invalid(OP, format!("{k} {v:?} is not {ONLY_MASKED} or Whole picture")))
                        }
                    })
                }
                MASKED_PADDING => s.masked_padding = Some(num(k, v)?),
                HIRES_UPSCALE => {
                    let f: f64 = num(k, v)?;
                    if !(f.is_finite() && f > 0.0) {
                        return Err(Error::invalid(OP, format!("{k} {v:?} is not a positive number")));
                    }
                    s.hires_scale = Some(f)
                }
                HIRES_RESIZE => {
                    let (w, h) = v
                        .split_once('x')
                        .ok_or_else(|| Error::invalid(OP, format!("{k} {v:?} is not WIDTHxHEIGHT")))?;
                    s.hires_resize = Some((num(k, w)?, num(k, h)?));
                }
                HIRES_STEPS => s.hires_steps = Some(num(k, v)?),
                HIRES_UPSCALER => {
                    s.hires_upscaler = Some(HiresUpscaler::from_a1111(v).map_err(|_| {
                        Error::invalid(OP, format!("{k} {v:?} is not supported (Latent, Latent (nearest), Lanczos)"))
                    })?)
                }
                "Model" => s.model = Some(v.clone()),
                "Model hash" => s.model_hash = Some(v.clone()),
                "Lora hashes" => {
                    for item in v.split(',').map(str::trim).filter(|i| !i.is_empty()) {
                        let (n, h) = item.rsplit_once(':').ok_or_else(|| {
                            Error::invalid(OP, format!("Lora hashes entry {item:?} is not NAME: HASH"))
                        })?;
                        s.lora_hashes.push((n.trim().to_string(), h.trim().to_string()));
                    }
                }
                other if DESCRIPTIVE.contains(&other) => {}
                other => s.ignored.push(format!("{other}: {v}")),
            }
        }
        Ok(s)
    }

    /// Whether hires fix was on, by A1111's own rule (its paste handler): a `Denoising strength`
    /// with a `Hires upscale`, `Hires resize` or `Hires upscaler`.
    pub fn hires_enabled(&self) -> bool {
        self.denoising_strength.is_some()
            && (self.hires_scale.is_some() || self.hires_resize.is_some() || self.hires_upscaler.is_some())
    }

    /// A `Denoising strength` without hires fix: an img2img (or inpainting) image, which needs
    /// its init image again to regenerate.
    pub fn is_img2img(&self) -> bool {
        self.denoising_strength.is_some() && !self.hires_enabled()
    }

    /// Whether the image records inpainting settings (`Mask blur`, `Inpaint area`).
    pub fn has_inpaint_fields(&self) -> bool {
        self.mask_blur.is_some() || self.inpaint_only_masked.is_some() || self.masked_padding.is_some()
    }

    /// The hires fix the settings record, for a first pass of `width`×`height`: the scale's
    /// size (see [`Hires::scaled_size`]), or the resize size with a 0 side derived from the
    /// aspect ratio as A1111 does. `None` when hires fix was off.
    pub fn hires(&self, width: usize, height: usize) -> Result<Option<Hires>> {
        let Some(denoise) = self.denoising_strength.filter(|_| self.hires_enabled()) else {
            return Ok(None);
        };
        let (w, h) = match self.hires_resize {
            Some((0, 0)) | None => Hires::scaled_size(width, height, self.hires_scale.unwrap_or(2.0))?,
            Some((x, 0)) => (x, x * height / width.max(1)),
            Some((0, y)) => (y * width / height.max(1), y),
            Some(size) => size,
        };
        let scale = match self.hires_resize {
            Some((x, y)) if x != 0 || y != 0 => None,
            _ => Some(self.hires_scale.unwrap_or(2.0)),
        };
        Ok(Some(Hires {
            width: w,
            height: h,
            scale,
            steps: self.hires_steps.unwrap_or(0),
            denoise,
            upscaler: self.hires_upscaler.unwrap_or(HiresUpscaler::Latent),
        }))
    }

    /// Parse infotext text straight to settings.
    pub fn parse(text: &str) -> Result<Settings> {
        Settings::from_infotext(&parse_infotext(text))
    }

    /// Write every recorded setting into `req` (prompt and negative prompt always).
    pub fn apply(&self, req: &mut Request) {
        req.prompt = self.prompt.clone();
        req.negative_prompt = self.negative_prompt.clone();
        req.steps = self.steps.unwrap_or(req.steps);
        req.sampler = self.sampler.unwrap_or(req.sampler);
        req.cfg = self.cfg.unwrap_or(req.cfg);
        req.seed = self.seed.unwrap_or(req.seed);
        (req.width, req.height) = self.size.unwrap_or((req.width, req.height));
        req.clip_skip = self.clip_skip.unwrap_or(req.clip_skip);
        req.rng = self.rng.unwrap_or(req.rng);
        req.spacing = self.spacing.unwrap_or(req.spacing);
        req.size_cond = self.size_cond.or(req.size_cond);
        req.zero_terminal_snr = self.zero_terminal_snr.or(req.zero_terminal_snr);
        req.cfg_rescale = self.cfg_rescale.unwrap_or(req.cfg_rescale);
    }
}

/// `[orig_h, orig_w, crop_top, crop_left, target_h, target_w]` as `"h, w, t, l, h, w"`.
pub fn fmt_size_cond(c: [usize; 6]) -> String {
    c.iter().map(|v| v.to_string()).collect::<Vec<_>>().join(", ")
}

/// The inverse of [`fmt_size_cond`] (also what `--size-cond` takes).
pub fn parse_size_cond(v: &str) -> Result<[usize; 6]> {
    let parts: Vec<&str> = v.split(',').map(str::trim).collect();
    let bad = || {
        Error::invalid(
            OP,
            format!(
                "size conditioning {v:?} is not six numbers orig_h, orig_w, crop_top, crop_left, target_h, target_w"
            ),
        )
    };
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut out = [0usize; 6];
    for (o, p) in out.iter_mut().zip(parts) {
        *o = p.parse().map_err(|_| bad())?;
    }
    Ok(out)
}
