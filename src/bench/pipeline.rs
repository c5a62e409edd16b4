//! `lorafuse bench pipeline`: one text-to-image generation at full SD1.5 or SDXL size with
//! synthetic weights (seeded values in the real shapes; the structure comes from a small
//! checkpoint of the family, e.g. the bundled tiny SD1 one or a narrow SDXL file written by
//! [`write_sdxl_structure`]), reporting load time, time per sampling step, VAE time, and per
//! phase (load, prepare, sampling, VAE) the peak resident memory and buffer-pool bytes.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::bench::flops::unet_flops;
use crate::bench::measure_peak;
use crate::bench::memory::{PhaseMemory, Phases};
use crate::bench::profile::{profile, GraphProfile};
use crate::bench::random_model::{sdxl_model_config, write_checkpoint};
use crate::gpu::Recorder;
use crate::models::vae::VaeTiling;
use crate::pipeline::request::{Precision, Request};
use crate::pipeline::txt2img::{Pipeline, Progress};
use crate::schedulers::SamplerKind;
use crate::weights::detect::{detect, Family, ModelConfig};
use crate::weights::{ModelFiles, StDType};
use crate::{Context, Error, GpuTensor, Result};

/// Floating-point work of one SD1.5 UNet evaluation with classifier-free guidance (batch 2) at
/// 512×512, counted by the issue as 1.61 TFLOP (`flops::unet_flops` counts 1.606); it scales
/// with the latent area (and attention faster, so this underestimates larger sizes).
pub const SD15_CFG_STEP_FLOPS_512: f64 = 1.61e12;

/// What to run.
#[derive(Clone, Debug)]
pub struct PipelineBenchOptions {
    pub family: Family,
    /// Image side in pixels.
    pub size: usize,
    pub steps: usize,
    pub precision: Precision,
    /// Also profile one UNet step and one VAE decode dispatch by dispatch.
    pub profile: bool,
    pub vae_tiling: Option<VaeTiling>,
}

#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    pub adapter: String,
    pub precision: String,
    pub size: usize,
    pub steps: usize,
    pub load_s: f64,
    pub step_ms: Vec<f64>,
    pub vae_ms: f64,
    /// Most bytes the buffer pool held at once during the run (MiB).
    pub pool_mib: f64,
    /// Mean step rate: `step_gflop` over the mean step time.
    pub step_tflops: f64,
    /// With `--profile`: the UNet step with CFG and the VAE decode, dispatch by dispatch.
    pub profile: Option<ProfileReport>,
    /// `SD1.x` or `SDXL`.
    pub family: String,
    /// The tiled decode's tile and overlap in latent pixels; `None` decodes whole.
    pub vae_tiling: Option<TilingReport>,
    /// Work of one step with CFG (`flops::unet_flops`, GFLOP).
    pub step_gflop: f64,
    /// Peak resident memory of the whole run (MiB); on CPU drivers this includes the "GPU"
    /// buffers.
    pub rss_peak_mib: Option<f64>,
    /// Load, prepare (text encoding, graph recording, kernel compilation), sampling, VAE.
    pub phases: Vec<PhaseMemory>,
    /// Whether each phase's resident peak is its own (the high-water mark could be reset) or
    /// the peak so far.
    pub rss_peak_per_phase: bool,
}

#[derive(Clone, Copy, Debug, Serialize)]
pub struct TilingReport {
    pub tile: usize,
    pub overlap: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct ProfileReport {
    /// The FMA probe's rate on this device (`bench kernels`' peak).
    pub peak_gflops: f64,
    pub unet_step: GraphProfile,
    pub vae_decode: GraphProfile,
}

/// SD1.5's sizes on `base`'s structure (SD1.5 itself: 320/640/1280/1280 UNet, 768-wide 12-layer
/// CLIP, 128/256/512/512 VAE).
pub fn sd15_config(base: &ModelConfig) -> ModelConfig {
    let mut c = base.clone();
    c.unet.block_out_channels = vec![320, 640, 1280, 1280];
    c.unet.cross_attention_dim = 768;
    c.unet.time_embed_dim = 1280;
    c.unet.heads = vec![8; 4];
    c.unet.norm_num_groups = 32;
    c.vae.block_out_channels = vec![128, 256, 512, 512];
    c.vae.norm_num_groups = 32;
    c.clip.hidden_size = 768;
    c.clip.intermediate_size = 3072;
    c.clip.num_hidden_layers = 12;
    c.clip.num_attention_heads = 12;
    c
}

/// SDXL base's sizes (see `random_model::sdxl_model_config`: widths, transformer depths, heads,
/// both text encoders, the added conditioning, the VAE) on `base`'s structure: which levels have
/// attention, resnets per level, projections and activations stay `base`'s. `base` must be an
/// SDXL model with SDXL's three levels.
pub fn sdxl_config(base: &ModelConfig) -> Result<ModelConfig> {
    let full = sdxl_model_config();
    let levels = base.unet.block_out_channels.len();
    let (Some(clip2), Some(full2)) = (&base.clip2, &full.clip2) else {
        return Err(Error::invalid(
            "bench",
            format!("an SDXL benchmark needs an SDXL structure, not {}", base.family.name()),
        ));
    };
    if base.family != Family::Sdxl || levels != full.unet.block_out_channels.len() {
        return Err(Error::invalid("bench", format!("an SDXL structure has 3 UNet levels, this one {levels}")));
    }
    let mut c = base.clone();
    let (u, f) = (&mut c.unet, &full.unet);
    u.block_out_channels = f.block_out_channels.clone();
    u.down_transformer_depth = f.down_transformer_depth.clone();
    u.up_transformer_depth = f.up_transformer_depth.clone();
    u.mid_transformer_depth = f.mid_transformer_depth;
    u.cross_attention_dim = f.cross_attention_dim;
    u.heads = f.heads.clone();
    u.time_embed_dim = f.time_embed_dim;
    u.norm_num_groups = f.norm_num_groups;
    u.addition = f.addition.clone();
    c.vae.block_out_channels = full.vae.block_out_channels.clone();
    c.vae.norm_num_groups = full.vae.norm_num_groups;
    let sizes = |c: &mut crate::weights::ClipConfig, f: &crate::weights::ClipConfig| {
        c.vocab_size = f.vocab_size;
        c.hidden_size = f.hidden_size;
        c.intermediate_size = f.intermediate_size;
        c.num_hidden_layers = f.num_hidden_layers;
        c.num_attention_heads = f.num_attention_heads;
        c.max_position_embeddings = f.max_position_embeddings;
        c.projection_dim = f.projection_dim;
    };
    let mut clip2 = clip2.clone();
    sizes(&mut c.clip, &full.clip);
    sizes(&mut clip2, full2);
    c.clip2 = Some(clip2);
    Ok(c)
}

/// Writes a small SDXL checkpoint with SDXL base's structure (every key of a real SDXL file,
/// transformer depths included) and narrow widths (a few MB), for [`sdxl_config`] to put the
/// full sizes on. The widths keep SDXL's ratios, so the same resnets have shortcuts.
pub fn write_sdxl_structure(path: &Path) -> Result<()> {
    let mut c = sdxl_model_config();
    let narrow = |w: &mut usize| *w /= 20;
    c.unet.block_out_channels.iter_mut().for_each(narrow);
    c.unet.heads = vec![1; 3];
    c.unet.time_embed_dim /= 20;
    c.vae.block_out_channels.iter_mut().for_each(|w| *w /= 4);
    c.clip.vocab_size = 1024;
    c.clip.hidden_size = 64;
    c.clip.intermediate_size = 256;
    let c2 = c.clip2.as_mut().ok_or_else(|| Error::invalid("bench", "SDXL without a second encoder"))?;
    c2.vocab_size = 1024;
    c2.hidden_size = 64;
    c2.intermediate_size = 256;
    c2.projection_dim = Some(64);
    c.unet.cross_attention_dim = 128;
    c.unet.addition = Some(crate::weights::detect::AdditionConfig { time_embed_dim: 8, in_dim: 64 + 48 });
    write_checkpoint(path, &c, StDType::F16, 0, &mut |_, _| {}).map(|_| ())
}

pub fn run(
    ctx: &Context,
    structure: &Path,
    o: &PipelineBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<PipelineReport> {
    if let Some(t) = &o.vae_tiling {
        t.validate()?;
    }
    let mut phases = Phases::start(ctx);
    let t0 = Instant::now();
    let base = detect(&ModelFiles::open(structure)?)?;
    let config = match o.family {
        Family::Sd1 => sd15_config(&base),
        Family::Sdxl => sdxl_config(&base)?,
    };
    let step_flops = unet_flops(&config.unet, 2, o.size / 8, o.size / 8);
    progress(&format!("loading synthetic {} weights", o.family.name()));
    let pipe = Pipeline::synthetic(ctx, structure, config, o.precision)?;
    ctx.sync()?;
    let load_s = t0.elapsed().as_secs_f64();
    phases.end(ctx, "load");
    let mut req = Request::new("a photo of a castle on a hill, masterpiece");
    req.negative_prompt = "lowres".into();
    req.width = o.size;
    req.height = o.size;
    req.steps = o.steps;
    req.sampler = SamplerKind::Euler;
    req.seed = 1;
    req.vae_tiling = o.vae_tiling;
    let mut marks: Vec<Instant> = Vec::new();
    let mut decode_at = None;
    progress("recording the UNet graph (compiles pipelines)");
    pipe.generate(ctx, &req, &mut |p| match p {
        Progress::Image { .. } => {
            phases.end(ctx, "prepare");
            marks.push(Instant::now());
        }
        Progress::Step { step, steps } => {
            // `generate` reports a step once the device has finished it (with the next step
            // already queued), so consecutive marks are the device time of one step each.
            marks.push(Instant::now());
            progress(&format!("step {step}/{steps}"));
        }
        Progress::Decode => {
            phases.end(ctx, "sampling");
            progress(if req.vae_tiling.is_some() { "decoding (tiled)" } else { "decoding" });
            decode_at = Some(Instant::now());
        }
        Progress::Compile { done, total } => progress(&format!("compiling kernels {done}/{total}")),
    })?;
    let end = Instant::now();
    phases.end(ctx, "vae");
    // The first mark is the start of sampling (after the graph was recorded and its pipelines
    // created); each later mark is the end of one step's GPU work.
    let step_ms: Vec<f64> = marks.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1e3).collect();
    let vae_ms = decode_at.map(|d| (end - d).as_secs_f64() * 1e3).unwrap_or(0.0);
    let mean = step_ms.iter().sum::<f64>() / step_ms.len().max(1) as f64;
    let profile = if o.profile {
        progress("profiling the UNet step and the VAE decode, dispatch by dispatch");
        profile_graphs(ctx, &pipe, o.size)?
    } else {
        None
    };
    let rss_peak_per_phase = phases.resets;
    let phases = phases.finish();
    let max = |f: &dyn Fn(&PhaseMemory) -> Option<f64>| phases.iter().filter_map(f).reduce(f64::max);
    Ok(PipelineReport {
        adapter: ctx.caps.adapter_name.clone(),
        precision: format!("{:?}", pipe.dtype),
        size: o.size,
        steps: o.steps,
        load_s,
        step_ms,
        vae_ms,
        pool_mib: max(&|p| Some(p.pool_peak_mib)).unwrap_or(0.0),
        step_tflops: step_flops / (mean * 1e-3) / 1e12,
        profile,
        family: o.family.name().to_string(),
        vae_tiling: o.vae_tiling.map(|t| TilingReport { tile: t.tile, overlap: t.overlap }),
        step_gflop: step_flops / 1e9,
        rss_peak_mib: max(&|p| p.rss_peak_mib),
        phases,
        rss_peak_per_phase,
    })
}

/// The UNet step with CFG (batch 2) and the VAE decode at `size`², recorded as `generate` records
/// them, each profiled dispatch by dispatch; `None` without timestamp queries.
pub fn profile_graphs(ctx: &Context, pipe: &Pipeline, size: usize) -> Result<Option<ProfileReport>> {
    let (h, w) = (size / 8, size / 8);
    let unet = super::unet_graph(ctx, pipe, size)?;
    let Some(unet_step) = profile(ctx, &unet)? else { return Ok(None) };
    drop(unet);
    ctx.trim_pool();
    let z = GpuTensor::from_slice(ctx, &[1, 4, h, w], &vec![0.1; 4 * h * w], pipe.dtype)?;
    let mut vae = Recorder::new();
    {
        let _arena = ctx.arena();
        pipe.vae.decode(ctx, &mut vae, &z)?;
    }
    let Some(vae_decode) = profile(ctx, &vae)? else { return Ok(None) };
    let peak_gflops = measure_peak(ctx, 200.0)?;
    Ok(Some(ProfileReport { peak_gflops, unet_step, vae_decode }))
}
