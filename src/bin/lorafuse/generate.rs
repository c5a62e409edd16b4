//! `lorafuse generate`: the CLI contract over `pipeline::txt2img`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lorafuse::lora::{LoraMode, LoraSpec};
use lorafuse::pipeline::image::{model_hash, to_rgb8, write_png};
use lorafuse::pipeline::rng::RngKind;
use lorafuse::pipeline::txt2img::{NoiseOverride, Pipeline, Precision, Progress, Request};
use lorafuse::schedulers::{SamplerKind, Spacing};
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::{Context, HostTensor};

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
    #[arg(long, default_value = "dpmpp_2m_karras")]
    pub sampler: String,
    /// leading (SD1.5's) or trailing
    #[arg(long, default_value = "leading")]
    pub spacing: String,
    /// Seed (default: random, printed and saved in the PNG).
    #[arg(long)]
    pub seed: Option<u64>,
    /// philox (A1111 "GPU" / sd.cpp --rng cuda) or torch-cpu (diffusers' CPU generator)
    #[arg(long, default_value = "philox")]
    pub rng: String,
    #[arg(short = 'W', long, default_value_t = 512)]
    pub width: usize,
    #[arg(short = 'H', long, default_value_t = 512)]
    pub height: usize,
    /// Images; image i uses seed S+i.
    #[arg(long, default_value_t = 1)]
    pub batch: usize,
    /// A1111 numbering: 1 = last layer, 2 = penultimate.
    #[arg(long, default_value_t = 1)]
    pub clip_skip: usize,
    /// f32, f16 or auto
    #[arg(long, default_value = "auto")]
    pub precision: String,
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
    #[arg(long, default_value = "auto")]
    pub lora_mode: String,
    /// Regenerate the image whose `parameters` chunk (lorafuse's or A1111's) this PNG holds;
    /// options given on the command line override its settings.
    #[arg(long, value_name = "IMAGE.png")]
    pub from_png: Option<PathBuf>,
}

pub(crate) fn read_noise(path: &Path) -> Result<NoiseOverride> {
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

fn output_path(base: &Path, i: usize, n: usize) -> PathBuf {
    if n == 1 {
        return base.to_path_buf();
    }
    let stem = base.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "out".into());
    let ext = base.extension().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| "png".into());
    base.with_file_name(format!("{stem}-{i}.{ext}"))
}

fn save_tensors(path: &Path, tensors: &[(&str, &HostTensor)]) -> Result<()> {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, t)| {
            let bytes: &[u8] = bytemuck::cast_slice(&t.data);
            Ok((n.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, t.shape.clone(), bytes)?))
        })
        .collect::<Result<_>>()?;
    let bytes = safetensors::serialize(views, None)?;
    lorafuse::pipeline::image::write_atomic(path, &bytes)?;
    Ok(())
}

/// The output folder and the model exist (checked before anything loads).
pub(crate) fn check_paths(a: &GenerateArgs) -> Result<()> {
    if let Some(dir) = a.output.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            bail!("output folder {} does not exist", dir.display());
        }
    }
    if !a.model.exists() {
        bail!("model {} does not exist", a.model.display());
    }
    Ok(())
}

pub fn run(ctx: &Context, a: &GenerateArgs, quiet: bool) -> Result<()> {
    let from_png;
    let a = match &a.from_png {
        Some(png) => {
            from_png = crate::from_png::apply(a, png, &crate::from_png::explicit_args())?;
            &from_png
        }
        None => a,
    };
    let sampler: SamplerKind = a.sampler.parse()?;
    let spacing: Spacing = a.spacing.parse()?;
    let rng: RngKind = a.rng.parse()?;
    let precision: Precision = a.precision.parse()?;
    let lora_mode: LoraMode = a.lora_mode.parse()?;
    let loras = a.loras.iter().map(|s| s.parse::<LoraSpec>()).collect::<lorafuse::Result<Vec<_>>>()?;
    for l in &loras {
        if !l.path.is_file() {
            bail!("LoRA {} does not exist", l.path.display());
        }
    }
    let seed = a.seed.unwrap_or_else(|| {
        let t = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
        (t as u64 ^ (t >> 64) as u64) % 4_294_967_296
    });
    let noise = match &a.noise_file {
        Some(p) => read_noise(p)?,
        None => NoiseOverride::default(),
    };
    let req = Request {
        prompt: a.prompt.clone(),
        negative_prompt: a.negative_prompt.clone(),
        steps: a.steps,
        cfg: a.cfg,
        sampler,
        spacing,
        seed,
        rng,
        width: a.width,
        height: a.height,
        batch: a.batch,
        clip_skip: a.clip_skip,
        noise,
        loras,
        lora_dir: a.lora_dir.clone(),
        lora_mode,
        max_loras: a.max_loras,
        lora_weights_vary: false,
    };
    // Cheap checks before the model loads (prompt tags resolve and the LoRA count is checked
    // here too, so a missing LoRA fails in a second, not after the load).
    req.validate()?;
    let specs = req.lora_specs()?;
    check_paths(a)?;
    let t0 = Instant::now();
    let pipe = Pipeline::load(ctx, &a.model, precision).with_context(|| format!("loading {}", a.model.display()))?;
    log::info!("loaded {} in {:.1}s ({:?})", a.model.display(), t0.elapsed().as_secs_f64(), pipe.dtype);
    eprintln!("seed: {seed}");
    // Applied here so the report shows before sampling; `generate` then finds it in place.
    if !specs.is_empty() {
        let t1 = Instant::now();
        let (_, report) = pipe.set_loras(ctx, &specs, req.lora_mode, req.lora_weights_vary)?;
        for l in &report.loras {
            eprintln!("lora {}: applied {}/{} modules", l.name, l.applied, l.total);
        }
        eprintln!(
            "loras: {} weights merged, {} layers fused in {:.2}s",
            report.merged_weights,
            report.fused_weights,
            t1.elapsed().as_secs_f64()
        );
    }

    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(req.steps as u64);
        b.set_style(ProgressStyle::with_template("{msg} [{bar:30}] {pos}/{len} steps, {per_sec} ({elapsed})")?);
        b
    };
    let out = pipe.generate(ctx, &req, &mut |p| match p {
        Progress::Image { image, images } => {
            bar.reset();
            bar.set_message(format!("image {}/{images}", image + 1));
        }
        Progress::Step { step, steps } => {
            bar.set_length(steps as u64);
            bar.set_position(step as u64);
        }
        Progress::Decode => bar.set_message("decoding"),
    })?;
    bar.finish_and_clear();

    let model_name = a.model.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
    let hash = if a.model.is_file() { model_hash(&a.model)? } else { String::new() };
    for (i, img) in out.images.iter().enumerate() {
        // `--lora` LoRAs go into the prompt as A1111 tags, so the infotext alone reproduces the image.
        let info = lorafuse::grid::cell_infotext(&req, out.seeds[i], &model_name, &hash, &out.loras);
        let path = output_path(&a.output, i, out.images.len());
        write_png(&path, req.width, req.height, &to_rgb8(&img.data, req.height, req.width)?, &info.render())?;
        println!("{}", path.display());
    }
    if let Some(p) = &a.save_tensors {
        let mut image = Vec::new();
        for img in &out.images {
            image.extend_from_slice(&img.data);
        }
        let image = HostTensor::new(&[out.images.len(), 3, req.height, req.width], image)?;
        save_tensors(p, &[("noise", &out.noise), ("latents", &out.latents), ("image", &image)])?;
    }
    Ok(())
}
