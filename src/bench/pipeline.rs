//! `lorafuse bench pipeline`: one text-to-image generation at full SD1.5 size with synthetic
//! weights (seeded values in the real shapes; the structure comes from any SD1.x checkpoint, e.g.
//! the bundled tiny one), reporting load time, time per sampling step, VAE time and the GPU memory
//! the buffer pool held at its peak.

use std::path::Path;
use std::time::Instant;

use serde::Serialize;

use crate::bench::measure_peak;
use crate::bench::profile::{profile, GraphProfile};
use crate::gpu::Recorder;
use crate::pipeline::request::{Precision, Request};
use crate::pipeline::txt2img::{Pipeline, Progress};
use crate::schedulers::SamplerKind;
use crate::weights::detect::{detect, ModelConfig};
use crate::weights::ModelFiles;
use crate::{Context, GpuTensor, Result};

/// Floating-point work of one SD1.5 UNet evaluation with classifier-free guidance (batch 2) at
/// 512×512, counted by the issue as 1.61 TFLOP; it scales with the latent area (and attention
/// faster, so this underestimates larger sizes).
pub const SD15_CFG_STEP_FLOPS_512: f64 = 1.61e12;

#[derive(Clone, Debug, Serialize)]
pub struct PipelineReport {
    pub adapter: String,
    pub precision: String,
    pub size: usize,
    pub steps: usize,
    pub load_s: f64,
    pub step_ms: Vec<f64>,
    pub vae_ms: f64,
    pub pool_mib: f64,
    pub step_tflops: f64,
    /// With `--profile`: the UNet step with CFG and the VAE decode, dispatch by dispatch.
    pub profile: Option<ProfileReport>,
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

pub fn run(
    ctx: &Context,
    structure: &Path,
    size: usize,
    steps: usize,
    precision: Precision,
    profile: bool,
    mut progress: impl FnMut(&str),
) -> Result<PipelineReport> {
    let t0 = Instant::now();
    let config = sd15_config(&detect(&ModelFiles::open(structure)?)?);
    progress("loading synthetic SD1.5 weights");
    let pipe = Pipeline::synthetic(ctx, structure, config, precision)?;
    ctx.sync()?;
    let load_s = t0.elapsed().as_secs_f64();
    let mut req = Request::new("a photo of a castle on a hill, masterpiece");
    req.negative_prompt = "lowres".into();
    req.width = size;
    req.height = size;
    req.steps = steps;
    req.sampler = SamplerKind::Euler;
    req.seed = 1;
    let mut marks: Vec<Instant> = Vec::new();
    let mut decode_at = None;
    progress("recording the UNet graph (compiles pipelines)");
    pipe.generate(ctx, &req, &mut |p| match p {
        Progress::Image { .. } => marks.push(Instant::now()),
        Progress::Step { step, steps } => {
            // `generate` reports a step once the device has finished it (with the next step
            // already queued), so consecutive marks are the device time of one step each.
            marks.push(Instant::now());
            progress(&format!("step {step}/{steps}"));
        }
        Progress::Decode => decode_at = Some(Instant::now()),
        Progress::Compile { done, total } => progress(&format!("compiling kernels {done}/{total}")),
    })?;
    let end = Instant::now();
    // The first mark is the start of sampling (after the graph was recorded and its pipelines
    // created); each later mark is the end of one step's GPU work.
    let step_ms: Vec<f64> = marks.windows(2).map(|w| (w[1] - w[0]).as_secs_f64() * 1e3).collect();
    let vae_ms = decode_at.map(|d| (end - d).as_secs_f64() * 1e3).unwrap_or(0.0);
    let mean = step_ms.iter().sum::<f64>() / step_ms.len().max(1) as f64;
    let profile = if profile {
        progress("profiling the UNet step and the VAE decode, dispatch by dispatch");
        profile_graphs(ctx, &pipe, size)?
    } else {
        None
    };
    let area = (size as f64 / 512.0).powi(2);
    Ok(PipelineReport {
        adapter: ctx.caps.adapter_name.clone(),
        precision: format!("{:?}", pipe.dtype),
        size,
        steps,
        load_s,
        step_ms,
        vae_ms,
        pool_mib: ctx.pool_bytes() as f64 / (1 << 20) as f64,
        step_tflops: SD15_CFG_STEP_FLOPS_512 * area / (mean * 1e-3) / 1e12,
        profile,
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
