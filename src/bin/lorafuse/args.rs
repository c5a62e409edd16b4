//! The image options shared by `generate`, `grid` and `demo`, and their conversion to a
//! library [`Request`].

use std::path::{Path, PathBuf};

use anyhow::{bail, Result};
use clap::Args;
use lorafuse::lora::{LoraMode, LoraSpec};
use lorafuse::models::vae::VaeTiling;
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
    #[arg(short = 'W', long, default_value_t = 512)]
    pub width: usize,
    #[arg(short = 'H', long, default_value_t = 512)]
    pub height: usize,
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
    /// A LoRA: PATH, PATH:WEIGHT or PATH:unet=W1,te=W2 (repeatable; weights may be negative or > 1).
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
        Ok(Request {
            prompt: self.prompt.clone(),
            negative_prompt: self.negative_prompt.clone(),
            steps: self.steps,
            cfg: self.cfg,
            sampler: self.sampler,
            spacing: self.spacing,
            seed,
            rng: self.rng,
            width: self.width,
            height: self.height,
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
            init: None,
            hires: None,
            decoder: Default::default(),
        })
    }

    /// The output folder and the model exist (checked before anything loads).
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
