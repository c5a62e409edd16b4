//! The image options shared by `generate`, `grid` and `demo`, and their conversion to a
//! library [`Request`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use lorafuse::lora::{LoraMode, LoraSpec};
use lorafuse::models::vae::VaeTiling;
use lorafuse::pipeline::init::{Hires, HiresUpscaler, InitImage, InitSource, InpaintMask};
use lorafuse::pipeline::init_image::{
    binarize_mask, blur_mask, crop_region, fit_image, load_image, load_mask, ResizeMode,
};
use lorafuse::pipeline::request::{NoiseOverride, Precision, Request};
use lorafuse::pipeline::rng::RngKind;
use lorafuse::schedulers::{PredictionType, SamplerKind, Spacing};
use lorafuse::weights::hash::model_hash;
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::HostTensor;

#[derive(Args, Clone, Debug)]
pub struct GenerateArgs {
    /// Checkpoint: a single .safetensors file (SD1.x, LDM layout) or a diffusers folder.
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    #[arg(short = 'p', long, default_value = "")]
    pub prompt: String,
    #[arg(short = 'n', long, default_value = "")]
    pub negative_prompt: String,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    #[arg(long, default_value_t = 7.0)]
    pub cfg: f32,
    /// euler, euler_a, dpmpp_2m, dpmpp_2m_karras, ddim, lcm
    #[arg(long, default_value = "dpmpp_2m_karras", value_parser = named::<SamplerKind>)]
    pub sampler: SamplerKind,
    /// leading (SD1.5's) or trailing
    #[arg(long, default_value = "leading", value_parser = named::<Spacing>)]
    pub spacing: Spacing,
    /// Seed (default: random, printed and saved in the PNG).
    #[arg(long)]
    pub seed: Option<u64>,
    /// philox (A1111 "GPU" / sd.cpp --rng cuda) or torch-cpu (diffusers' CPU generator)
    #[arg(long, default_value = "philox", value_parser = named::<RngKind>)]
    pub rng: RngKind,
    /// Image width [default: 512, or the --init-image's width].
    #[arg(short = 'W', long)]
    pub width: Option<usize>,
    /// Image height [default: 512, or the --init-image's height].
    #[arg(short = 'H', long)]
    pub height: Option<usize>,
    /// Images; image i uses seed S+i.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// A1111 numbering: 1 = last layer, 2 = penultimate. SD1.x only: SDXL always uses the
    /// penultimate layer of both encoders, as A1111 does.
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// Decode with the VAE in this file (diffusers or original names), e.g. an fp16-fixed SDXL VAE.
    #[arg(long)]
    pub vae: Option<PathBuf>,
    /// SDXL size conditioning "orig_h,orig_w,crop_top,crop_left,target_h,target_w" (default: the
    /// image size, no crop, as A1111).
    #[arg(long, value_parser = size_cond)]
    pub size_cond: Option<[usize; 6]>,
    /// What the model predicts: eps or v [default: the model's: a `v_pred` key in a single
    /// file, the scheduler config of a folder, else eps].
    #[arg(long, value_parser = named::<PredictionType>)]
    pub prediction: Option<PredictionType>,
    /// Zero terminal SNR noise schedule (diffusers' rescale_betas_zero_snr), for v-prediction
    /// models trained with it; `--zero-terminal-snr=false` turns off a file's marker [default: the
    /// model's: a `ztsnr` key in a single file, the scheduler config of a folder].
    #[arg(long, num_args = 0..=1, require_equals = true, default_missing_value = "true")]
    pub zero_terminal_snr: Option<bool>,
    /// CFG rescale φ in [0, 1] (diffusers' guidance_rescale; 0.7 is the usual value with zero
    /// terminal SNR): pulls the guided output's spread back towards the conditional one's.
    #[arg(long, default_value_t = 0.0, allow_negative_numbers = true)]
    pub cfg_rescale: f32,
    /// f32, f16 or auto
    #[arg(long, default_value = "auto", value_parser = named::<Precision>)]
    pub precision: Precision,
    #[arg(short = 'o', long, default_value = "out.png")]
    pub output: PathBuf,
    /// safetensors with `noise` [B,4,H/8,W/8] (and optional `step_noise` [S,B,4,H/8,W/8]).
    #[arg(long)]
    pub noise_file: Option<PathBuf>,
    /// Write f32 `noise`, `latents` and `image` tensors here.
    #[arg(long)]
    pub save_tensors: Option<PathBuf>,
    /// A LoRA: PATH, PATH:WEIGHT or PATH:unet=W1,te=W2 (repeatable; weights may be negative or > 1),
    /// optionally followed by :lbw=PRESET or :lbw=V1,V2,… (block weights: 17 values SD1, 12 SDXL).
    #[arg(long = "lora", value_name = "PATH[:W]")]
    pub loras: Vec<String>,
    /// Folder that prompt tags <lora:NAME:W> are looked up in.
    #[arg(long, default_value = "loras")]
    pub lora_dir: PathBuf,
    /// Refuse more LoRAs than this (a platform policy; no limit by default).
    #[arg(long)]
    pub max_loras: Option<usize>,
    /// auto, merged (added into the weights) or fused (applied at run time)
    #[arg(long, default_value = "auto", value_parser = named::<LoraMode>)]
    pub lora_mode: LoraMode,
    /// Decode the image in overlapping tiles: far less memory at 1024² and above (each tile's
    /// activations are those of a 512² decode), slightly different pixels (GroupNorm statistics
    /// are per tile).
    #[arg(long)]
    pub vae_tiling: bool,
    /// Tile side in latent pixels (×8 image pixels) [default: 64]; needs --vae-tiling.
    #[arg(long, value_name = "N")]
    pub vae_tile_size: Option<usize>,
    /// Overlap of neighbouring tiles in latent pixels, at most half the tile [default: 16]; needs
    /// --vae-tiling.
    #[arg(long, value_name = "N")]
    pub vae_tile_overlap: Option<usize>,
    /// Regenerate the image whose `parameters` chunk (lorafuse's or A1111's) this PNG holds;
    /// options given on the command line override its settings.
    #[arg(long, value_name = "IMAGE.png")]
    pub from_png: Option<PathBuf>,
    /// img2img, inpainting, hires fix and presets.
    #[command(flatten)]
    pub init: InitArgs,
    #[command(flatten)]
    pub taesd: crate::taesd_args::TaesdArgs,
}

impl GenerateArgs {
    /// The request these options describe. Checks what needs no model:
    /// `--lora` specs and that their files exist, the noise file.
    /// Without `--seed`, a time-based seed (A1111's range, below 2^32).
    pub fn request(&self) -> Result<Request> {
        let loras = self.loras.iter().map(|s| s.parse::<LoraSpec>()).collect::<lorafuse::Result<Vec<_>>>()?;
        for l in &loras {
            if !l.path.is_file() {
                bail!("LoRA {} does not exist", l.path.display());
            }
        }
        let noise = match &self.noise_file {
            Some(p) => read_noise(p)?,
            None => NoiseOverride::default(),
        };
        let seed = self.seed.unwrap_or_else(|| {
            let t =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            (t as u64 ^ (t >> 64) as u64) % 4_294_967_296
        });
        let inputs = self.init.inputs(self.width, self.height)?;
        Ok(Request {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            cfg: self.cfg,
            sampler: self.sampler,
            spacing: self.spacing,
            seed,
            rng: self.rng,
            width: inputs.width,
            height: inputs.height,
            batch: self.batch,
            clip_skip: self.clip_skip,
            size_cond: self.size_cond,
            prediction: self.prediction,
            zero_terminal_snr: self.zero_terminal_snr,
            cfg_rescale: self.cfg_rescale,
            noise,
            loras,
            lora_dir: self.lora_dir.clone(),
            lora_mode: self.lora_mode,
            max_loras: self.max_loras,
            lora_weights_vary: false,
            vae_tiling: vae_tiling(self.vae_tiling, self.vae_tile_size, self.vae_tile_overlap)?,
            init: inputs.init,
            hires: inputs.hires,
            decoder: Default::default(),
        })
    }

    /// The output folder and the model exist (checked before anything loads).
    /// Block weights (`lbw=`) against the model's family, from its file headers: a wrong value
    /// count fails before the model loads. A model detection cannot read is left to the load.
    pub fn check_block_weights<'a>(&self, specs: impl IntoIterator<Item = &'a LoraSpec>) -> Result<()> {
        let mut specs = specs.into_iter().filter(|s| s.lbw.is_some()).peekable();
        if specs.peek().is_none() {
            return Ok(());
        }
        let Ok(family) = lorafuse::weights::ModelFiles::open(&self.model)
            .and_then(|f| lorafuse::weights::detect(&f))
            .map(|c| c.family)
        else {
            return Ok(());
        };
        for s in specs {
            if let Some(b) = &s.lbw {
                b.resolve(Some(family)).map_err(|e| anyhow::anyhow!("LoRA {}: {e}", s.name()))?;
            }
        }
        Ok(())
    }

    pub fn check_paths(&self) -> Result<()> {
        if let Some(dir) = self.output.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.is_dir() {
                bail!("output folder {} does not exist", dir.display());
            }
        }
        if !self.model.exists() {
            bail!("model {} does not exist", self.model.display());
        }
        if let Some(v) = self.vae.as_ref().filter(|v| !v.is_file()) {
            bail!("VAE {} does not exist", v.display());
        }
        Ok(())
    }

    /// A1111's `VAE: FILE` field when `--vae` gave one (descriptive: `--from-png` takes `--vae`).
    pub fn with_vae(&self, info: lorafuse::pipeline::infotext::Infotext) -> lorafuse::pipeline::infotext::Infotext {
        match self.vae.as_ref().and_then(|v| v.file_name()) {
            Some(name) => info.field("VAE", name.to_string_lossy()),
            None => info,
        }
    }

    /// The model's name and A1111 hash for the infotext (no hash for a diffusers folder).
    pub fn model_identity(&self) -> Result<(String, String)> {
        let name = self.model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let hash = if self.model.is_file() { model_hash(&self.model)? } else { String::new() };
        Ok((name, hash))
    }
}

/// A canned set of sampling options.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Preset {
    /// LCM (with an LCM-LoRA or LCM checkpoint): 4 steps, CFG 1.5, the lcm sampler.
    Lcm,
}

/// img2img (A1111's img2img tab and its inpainting), hires fix and presets. The defaults that
/// the help gives are applied by [`InitArgs::inputs`], so that an option given without the one
/// it belongs to is an error, not silently ignored.
#[derive(Args, Clone, Debug, Default)]
pub struct InitArgs {
    /// img2img: start from this image (PNG, JPEG or WebP) instead of noise. Its size is the image
    /// size unless -W/-H are given (then --resize-mode says how to fit it).
    #[arg(long, value_name = "IMG")]
    pub init_image: Option<PathBuf>,
    /// How much of the init image is repainted, in (0, 1] (A1111's denoising strength): the
    /// last ⌊steps·S⌋ steps run [default: 0.75].
    #[arg(long, value_name = "S", allow_negative_numbers = true)]
    pub strength: Option<f64>,
    /// How an init image of another size than -W/-H is fitted: just-resize (stretch),
    /// crop-and-resize (cover, cut the overflow), resize-and-fill (fit, stretch the edges into
    /// the bands).
    #[arg(long, value_name = "MODE", value_parser = ResizeMode::from_a1111)]
    pub resize_mode: Option<ResizeMode>,
    /// Inpainting: repaint where this image is white (its alpha, where it has a varying one);
    /// the same size as the init image.
    #[arg(long, value_name = "MASK.png")]
    pub mask: Option<PathBuf>,
    /// Gaussian blur of the mask's edge in pixels (A1111's mask blur) [default: 4].
    #[arg(long, value_name = "N", allow_negative_numbers = true)]
    pub mask_blur: Option<f32>,
    /// Inpaint only the masked area (A1111's "Only masked"): the mask's box, with padding, is
    /// cut out, sampled at the image size and pasted back.
    #[arg(long)]
    pub inpaint_full_res: bool,
    /// Pixels around the mask's box with --inpaint-full-res [default: 32].
    #[arg(long, value_name = "N")]
    pub inpaint_full_res_padding: Option<usize>,
    /// Hires fix: after the first pass, upscale by F and run an img2img pass at that size.
    #[arg(long, value_name = "F", conflicts_with = "hires_size", allow_negative_numbers = true)]
    pub hires_scale: Option<f64>,
    /// Hires fix to this size (WIDTHxHEIGHT) instead of a scale.
    #[arg(long, value_name = "WxH", value_parser = wxh)]
    pub hires_size: Option<(usize, usize)>,
    /// Steps of the hires pass's schedule; 0 = as many as --steps [default: 0].
    #[arg(long, value_name = "N")]
    pub hires_steps: Option<usize>,
    /// Denoising strength of the hires pass, in (0, 1] [default: 0.7].
    #[arg(long, value_name = "D", allow_negative_numbers = true)]
    pub hires_denoise: Option<f64>,
    /// latent (bilinear), latent-nearest, or lanczos (on the decoded image) [default: latent].
    #[arg(long, value_name = "UPSCALER", value_parser = HiresUpscaler::from_a1111)]
    pub hires_upscaler: Option<HiresUpscaler>,
    /// lcm: --steps 4 --cfg 1.5 --sampler lcm, each unless given.
    #[arg(long, value_enum)]
    pub preset: Option<Preset>,
}

/// What [`InitArgs::inputs`] resolves: the image size and the request's `init` and `hires`.
pub struct Inputs {
    pub width: usize,
    pub height: usize,
    pub init: Option<InitImage>,
    pub hires: Option<Hires>,
}

impl InitArgs {
    /// Check the options against each other, load and fit the init image and mask, and build
    /// the request's `init` and `hires` with the image size: `-W`/`-H` when given (`None`
    /// otherwise), else the init image's size, else 512. Everything here runs before a model
    /// loads, so a mistake costs nothing and writes nothing.
    pub fn inputs(&self, width: Option<usize>, height: Option<usize>) -> Result<Inputs> {
        self.check_combinations()?;
        let mut out = Inputs { width: width.unwrap_or(512), height: height.unwrap_or(512), init: None, hires: None };
        if let Some(path) = &self.init_image {
            let img = load_image(path)?;
            let (iw, ih) = (img.shape[2], img.shape[1]);
            if width.is_none() && height.is_none() && (!iw.is_multiple_of(8) || !ih.is_multiple_of(8)) {
                bail!(
                    "init image {} is {iw}x{ih}; the image size must be a multiple of 8: give -W/-H (e.g. -W {} -H {}) \
                     and --resize-mode",
                    path.display(),
                    (iw / 8 * 8).max(8),
                    (ih / 8 * 8).max(8)
                );
            }
            let (w, h) = (width.unwrap_or(iw), height.unwrap_or(ih));
            let fit = |t: &HostTensor, what: &str| -> Result<HostTensor> {
                if (w, h) == (iw, ih) {
                    return Ok(t.clone());
                }
                let Some(mode) = self.resize_mode else {
                    let own = if iw.is_multiple_of(8) && ih.is_multiple_of(8) {
                        format!(", or -W {iw} -H {ih}")
                    } else {
                        String::new()
                    };
                    bail!(
                        "init image {} is {iw}x{ih} but the image size is {w}x{h}: give --resize-mode \
                         (just-resize, crop-and-resize or resize-and-fill) to fit it{own}",
                        path.display()
                    );
                };
                fit_image(t, w, h, mode).map_err(|e| anyhow::anyhow!("fitting the {what}: {e}"))
            };
            let pixels = fit(&img, "init image")?;
            let mask = match &self.mask {
                None => None,
                Some(mpath) => {
                    let m = load_mask(mpath)?;
                    let (mw, mh) = (m.shape[1], m.shape[0]);
                    if (mw, mh) != (iw, ih) {
                        bail!(
                            "mask {} is {mw}x{mh} but the init image {} is {iw}x{ih}: they must be the same size",
                            mpath.display(),
                            path.display()
                        );
                    }
                    // As A1111: rounded to black and white, blurred at the init image's size,
                    // then fitted like the image.
                    let blur = self.mask_blur.unwrap_or(4.0);
                    let mut alpha = fit(&blur_mask(&binarize_mask(&m), blur)?, "mask")?;
                    alpha.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
                    let only_masked_padding =
                        self.inpaint_full_res.then(|| self.inpaint_full_res_padding.unwrap_or(32));
                    if let Some(p) = only_masked_padding {
                        crop_region(&alpha, w, h, p).map_err(|e| anyhow::anyhow!("mask {}: {e}", mpath.display()))?;
                    }
                    Some(InpaintMask { alpha, blur, only_masked_padding })
                }
            };
            let strength = self.strength.unwrap_or(0.75);
            out.init = Some(InitImage { sources: vec![InitSource::Pixels(pixels)], strength, mask });
            (out.width, out.height) = (w, h);
        }
        if self.hires_scale.is_some() || self.hires_size.is_some() {
            let (width, height) = match (self.hires_size, self.hires_scale) {
                (Some(size), _) => size,
                (None, Some(s)) => Hires::scaled_size(out.width, out.height, s)?,
                (None, None) => unreachable!("checked above"),
            };
            if width <= out.width && height <= out.height {
                bail!("hires size {width}x{height} is not larger than the first pass {}x{}", out.width, out.height);
            }
            out.hires = Some(Hires {
                width,
                height,
                scale: self.hires_size.is_none().then_some(self.hires_scale).flatten(),
                steps: self.hires_steps.unwrap_or(0),
                denoise: self.hires_denoise.unwrap_or(0.7),
                upscaler: self.hires_upscaler.unwrap_or(HiresUpscaler::Latent),
            });
        }
        Ok(out)
    }

    /// Options given without the option they belong to, and values out of range.
    fn check_combinations(&self) -> Result<()> {
        let needs = |set: bool, flag: &str, what: &str| -> Result<()> {
            if set {
                bail!("{flag} needs {what}");
            }
            Ok(())
        };
        if self.init_image.is_none() {
            needs(self.mask.is_some(), "--mask", "--init-image (the image to inpaint)")?;
            needs(self.strength.is_some(), "--strength", "--init-image")?;
            needs(self.resize_mode.is_some(), "--resize-mode", "--init-image")?;
        }
        if self.mask.is_none() {
            needs(self.mask_blur.is_some(), "--mask-blur", "--mask")?;
            needs(self.inpaint_full_res, "--inpaint-full-res", "--mask")?;
        }
        needs(
            self.inpaint_full_res_padding.is_some() && !self.inpaint_full_res,
            "--inpaint-full-res-padding",
            "--inpaint-full-res",
        )?;
        let hires = self.hires_scale.is_some() || self.hires_size.is_some();
        if !hires {
            for (set, flag) in [
                (self.hires_steps.is_some(), "--hires-steps"),
                (self.hires_denoise.is_some(), "--hires-denoise"),
                (self.hires_upscaler.is_some(), "--hires-upscaler"),
            ] {
                needs(set, flag, "--hires-scale or --hires-size")?;
            }
        } else if self.init_image.is_some() {
            bail!("hires fix is a text-to-image second pass (as A1111's): it does not combine with --init-image");
        }
        if let Some(s) = self.strength.filter(|s| !(*s > 0.0 && *s <= 1.0)) {
            bail!("--strength must be in (0, 1], got {s}");
        }
        if let Some(d) = self.hires_denoise.filter(|d| !(*d > 0.0 && *d <= 1.0)) {
            bail!("--hires-denoise must be in (0, 1], got {d}");
        }
        if let Some(b) = self.mask_blur.filter(|b| !(b.is_finite() && (0.0..=64.0).contains(b))) {
            bail!("--mask-blur must be in [0, 64], got {b}");
        }
        if let Some(s) = self.hires_scale.filter(|s| !(s.is_finite() && *s > 1.0 && *s <= 16.0)) {
            bail!("--hires-scale must be above 1 and at most 16, got {s}");
        }
        Ok(())
    }
}

impl GenerateArgs {
    /// `--preset`: its settings for each of `--steps`, `--cfg` and `--sampler` not `given` on
    /// the command line (by clap id).
    pub fn apply_preset(&mut self, given: &dyn Fn(&str) -> bool) {
        if self.init.preset == Some(Preset::Lcm) {
            if !given("steps") {
                self.steps = 4;
            }
            if !given("cfg") {
                self.cfg = 1.5;
            }
            if !given("sampler") {
                self.sampler = SamplerKind::Lcm;
            }
        }
    }
}

fn wxh(v: &str) -> std::result::Result<(usize, usize), String> {
    let bad = || format!("{v:?} is not WIDTHxHEIGHT (e.g. 1024x768)");
    let (w, h) = v.split_once(['x', 'X']).ok_or_else(bad)?;
    Ok((w.trim().parse().map_err(|_| bad())?, h.trim().parse().map_err(|_| bad())?))
}

/// `--vae-tiling` with its size options (shared with `bench pipeline`): the options without the
/// flag are a mistake worth saying, not something to ignore.
pub fn vae_tiling(on: bool, size: Option<usize>, overlap: Option<usize>) -> Result<Option<VaeTiling>> {
    if !on {
        if size.is_some() || overlap.is_some() {
            bail!("--vae-tile-size and --vae-tile-overlap need --vae-tiling");
        }
        return Ok(None);
    }
    let d = VaeTiling::default();
    Ok(Some(VaeTiling::new(size.unwrap_or(d.tile), overlap.unwrap_or(d.overlap))?))
}

/// An option whose values are one of the library's [`clap::ValueEnum`] names, read through the
/// library's `FromStr` so that a bad value gets the library's one-line message (see `main`).
pub fn named<T: std::str::FromStr<Err = lorafuse::Error>>(s: &str) -> lorafuse::Result<T> {
    s.parse()
}

fn read_noise(path: &Path) -> Result<NoiseOverride> {
    let f = SafeTensorsFile::open(path)?;
    let get = |name: &str| -> Result<Option<HostTensor>> {
        match f.info(name) {
            None => Ok(None),
            Some(i) => {
                let shape = i.shape.clone();
                Ok(Some(HostTensor::new(&shape, f.read_f32(name)?)?))
            }
        }
    };
    let noise = get("noise")?;
    if noise.is_none() {
        bail!("{}: no tensor named `noise`", path.display());
    }
    Ok(NoiseOverride { noise, step_noise: get("step_noise")? })
}

fn size_cond(v: &str) -> std::result::Result<[usize; 6], String> {
    lorafuse::pipeline::infotext::parse_size_cond(v).map_err(|e| e.to_string())
}
