//! `lorafuse bench realtime`: the latency of one interactive image — SD1.5 shapes (synthetic
//! weights), a 3-LoRA stack in fused mode, LCM in 4 steps without guidance (cfg 1: UNet batch 1),
//! decoded by a full-width TAESD — split into text encoding, the rest of the preparation, each
//! step and the decode, with the full VAE's decode beside it and the time to change one LoRA's
//! weight and render again.
//!
//! The image runs through `Pipeline::generate` as `lorafuse generate` runs it. Its latency is
//! measured from the call to the moment the last step's latents are ready, plus the TAESD decode
//! of those latents timed on its own, so the figure is TAESD's whichever decoder the pipeline
//! routed its own decode to. A first, cold image (kernel compilation on drivers that compile at
//! first use) runs before anything is measured; its time is reported apart.

use std::path::{Path, PathBuf};
use std::time::Instant;

use serde::Serialize;

use super::flops::unet_flops;
use super::lora::write_random_lora;
use super::pipeline::sd15_config;
use super::random_model::write_taesd_decoder;
use crate::lora::{LoraMode, LoraSpec};
use crate::models::clip::prompt::parse_prompt;
use crate::pipeline::fast_decode::{decode_latents_host, load_taesd};
use crate::pipeline::request::{FinalDecoder, Precision, Request};
use crate::pipeline::txt2img::{Output, Pipeline, Progress};
use crate::schedulers::SamplerKind;
use crate::weights::detect::{detect, Family};
use crate::weights::{ModelFiles, StDType};
use crate::{Context, Error, GpuTensor, HostTensor, Recorder, Result};

const OP: &str = "bench_realtime";
const PROMPT: &str = "a photo of a castle on a hill, masterpiece";
/// The stack's weights; the re-render changes the second.
const WEIGHTS: [f32; 3] = [0.8, 0.6, 0.7];
const CHANGED_WEIGHT: f32 = 0.3;

/// What to run.
#[derive(Clone, Debug)]
pub struct RealtimeOptions {
    /// Image side in pixels.
    pub size: usize,
    pub steps: usize,
    /// 1 = unguided (UNet batch 1); anything else runs classifier-free guidance (batch 2).
    pub cfg: f32,
    pub loras: usize,
    pub rank: usize,
    /// Channels of the TAESD decoder (the published one: 64).
    pub taesd_width: usize,
    pub precision: Precision,
    /// Also time the steps at this guidance scale, in the same process right after (the saving of
    /// `cfg 1`: UNet batch 1 against 2).
    pub compare_cfg: Option<f32>,
    /// The bundled tiny model's own shapes instead of SD1.5's (a smoke run for tests: every phase
    /// runs, the numbers mean nothing).
    pub tiny: bool,
}

impl Default for RealtimeOptions {
    fn default() -> Self {
        RealtimeOptions {
            size: 512,
            steps: 4,
            cfg: 1.0,
            loras: 3,
            rank: 32,
            taesd_width: 64,
            precision: Precision::Auto,
            compare_cfg: None,
            tiny: false,
        }
    }
}

impl RealtimeOptions {
    pub fn validate(&self) -> Result<()> {
        if self.size == 0 || !self.size.is_multiple_of(8) {
            return Err(Error::invalid(OP, format!("size {} must be a positive multiple of 8", self.size)));
        }
        if self.steps == 0 || self.rank == 0 || self.taesd_width == 0 {
            return Err(Error::invalid(OP, "steps, rank and the TAESD width must be positive"));
        }
        if self.loras > WEIGHTS.len() || self.loras == 0 {
            return Err(Error::invalid(OP, format!("1 to {} LoRAs, not {}", WEIGHTS.len(), self.loras)));
        }
        for cfg in std::iter::once(self.cfg).chain(self.compare_cfg) {
            if !cfg.is_finite() {
                return Err(Error::invalid(OP, format!("cfg must be finite, got {cfg}")));
            }
        }
        Ok(())
    }
}

/// One line of the breakdown.
#[derive(Clone, Debug, Serialize)]
pub struct Phase {
    pub phase: String,
    pub ms: f64,
    /// Floating-point work, where it is counted (`flops::unet_flops`, TAESD's convs).
    pub gflop: Option<f64>,
    /// Share of the image latency; `None` for lines outside it (comparisons, the re-render).
    pub share: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct RealtimeReport {
    pub adapter: String,
    /// "SD1.5" or "tiny" (`RealtimeOptions::tiny`).
    pub shapes: String,
    pub backend: String,
    pub precision: String,
    pub size: usize,
    pub steps: usize,
    pub sampler: String,
    pub cfg: f32,
    /// UNet batch per step: 1 unguided, 2 with CFG.
    pub unet_batch: usize,
    pub loras: usize,
    pub rank: usize,
    pub lora_mode: String,
    pub taesd_width: usize,
    /// Synthetic weights generated and uploaded.
    pub load_s: f64,
    pub taesd_load_ms: f64,
    /// Applying the stack (fused: uploading the factors).
    pub lora_apply_ms: f64,
    /// The first image, cold (compiles kernels where the driver compiles at first use).
    pub first_image_ms: f64,
    /// The prompt through CLIP (with the stack's text-encoder LoRAs), timed on its own.
    pub text_encode_ms: f64,
    /// In `generate`, from the call to sampling's start: text encoding, the UNet graph's
    /// recording, inputs.
    pub prepare_ms: f64,
    pub step_ms: Vec<f64>,
    pub steps_ms: f64,
    pub taesd_decode_ms: f64,
    /// The checkpoint VAE's decode of the same latents, for comparison.
    pub vae_decode_ms: f64,
    /// One image: `prepare_ms + steps_ms + taesd_decode_ms` as measured in one run.
    pub image_ms: f64,
    /// Fused mode: new weights for the stack with one LoRA's weight changed.
    pub set_lora_weight_ms: f64,
    /// The image again after that change.
    pub rerender_image_ms: f64,
    pub rerender_total_ms: f64,
    pub step_gflop: f64,
    pub taesd_gflop: f64,
    /// The steps' mean rate.
    pub unet_tflops: f64,
    /// Every phase above with its share of the image.
    pub phases: Vec<Phase>,
    /// The phase with the largest share of the image.
    pub dominant: String,
    /// The same image's steps at `compare_cfg`.
    pub compare: Option<CfgCompare>,
}

/// The steps at another guidance scale, against the image's.
#[derive(Clone, Debug, Serialize)]
pub struct CfgCompare {
    pub cfg: f32,
    pub unet_batch: usize,
    pub step_ms: Vec<f64>,
    pub mean_step_ms: f64,
    pub step_gflop: f64,
    /// The base cfg's steps just before (the re-render's) and just after these.
    pub base_step_ms: Vec<f64>,
    /// Mean step time at `cfg` over the mean of `base_step_ms`.
    pub ratio: f64,
}

/// Floating-point work of TAESD's decoder of `width` channels on `h`×`w` latents of `c` channels:
/// its 3×3 convs (ReLU, upsampling and the skips' adds are not counted).
pub fn taesd_decoder_flops(width: usize, c: usize, h: usize, w: usize) -> f64 {
    let conv = |cin: usize, cout: usize, area: usize| 2.0 * (cin * cout * 9 * area) as f64;
    let mut f = conv(c, width, h * w);
    for (level, blocks) in [3usize, 3, 3, 1].into_iter().enumerate() {
        let area = (h << level) * (w << level);
        f += blocks as f64 * 3.0 * conv(width, width, area);
        f += if level < 3 { conv(width, width, 4 * area) } else { conv(width, 3, area) };
    }
    f
}

/// Times of one `generate` call, from its progress reports.
struct Timed {
    out: Output,
    prepare_ms: f64,
    step_ms: Vec<f64>,
    /// From the call to the last step's end.
    to_latents_ms: f64,
}

fn timed_generate(ctx: &Context, pipe: &Pipeline, req: &Request, progress: &mut dyn FnMut(&str)) -> Result<Timed> {
    let t0 = Instant::now();
    let mut marks: Vec<Instant> = Vec::new();
    let mut decode_at = None;
    let out = pipe.generate(ctx, req, &mut |p| match p {
        Progress::Image { .. } => marks.push(Instant::now()),
        // Reported once the device has finished the step (the next one already queued), so
        // consecutive marks are one step's device time each.
        Progress::Step { step, steps } => {
            marks.push(Instant::now());
            progress(&format!("step {step}/{steps}"));
        }
        Progress::Decode => decode_at = Some(Instant::now()),
        Progress::Compile { done, total } if done == total => progress(&format!("compiled {total} kernels")),
        Progress::Compile { .. } => {}
    })?;
    let ms = |a: Instant, b: Instant| (b - a).as_secs_f64() * 1e3;
    let start = *marks.first().ok_or_else(|| Error::invalid(OP, "generate reported no image"))?;
    let decode_at = decode_at.ok_or_else(|| Error::invalid(OP, "generate reported no decode"))?;
    Ok(Timed {
        prepare_ms: ms(t0, start),
        step_ms: marks.windows(2).map(|w| ms(w[0], w[1])).collect(),
        to_latents_ms: ms(t0, decode_at),
        out,
    })
}

fn ms_since(t: Instant) -> f64 {
    t.elapsed().as_secs_f64() * 1e3
}

/// Runs the benchmark. `structure` is any SD1.x checkpoint (the bundled tiny one): its layout,
/// with SD1.5's sizes put on it; `work_dir` receives the random TAESD and LoRA files.
pub fn run(
    ctx: &Context,
    structure: &Path,
    work_dir: &Path,
    o: &RealtimeOptions,
    mut progress: impl FnMut(&str),
) -> Result<RealtimeReport> {
    o.validate()?;
    let detected = detect(&ModelFiles::open(structure)?)?;
    let config = if o.tiny { detected } else { sd15_config(&detected) };
    progress(if o.tiny {
        "loading synthetic weights at the tiny model's shapes"
    } else {
        "loading synthetic SD1.5 weights"
    });
    let t = Instant::now();
    let pipe = Pipeline::synthetic(ctx, structure, config, o.precision)?;
    ctx.sync()?;
    let load_s = t.elapsed().as_secs_f64();

    progress("writing and loading a random full-width TAESD");
    let taesd_path = work_dir.join("taesd_decoder.safetensors");
    write_taesd_decoder(&taesd_path, o.taesd_width, 7, StDType::F16)?;
    let t = Instant::now();
    let taesd = std::sync::Arc::new(load_taesd(ctx, &taesd_path, Family::Sd1, pipe.dtype)?);
    ctx.sync()?;
    let taesd_load_ms = ms_since(t);
    pipe.set_taesd(Some(taesd.clone()));

    let mut files: Vec<PathBuf> = Vec::new();
    for i in 0..o.loras {
        progress(&format!("writing random LoRA {}/{}", i + 1, o.loras));
        let p = work_dir.join(format!("realtime_lora_{i}.safetensors"));
        write_random_lora(&pipe, &p, o.rank, 2000 + i as u64)?;
        files.push(p);
    }
    let stack =
        |weights: &[f32]| -> Vec<LoraSpec> { files.iter().zip(weights).map(|(p, &w)| LoraSpec::new(p, w)).collect() };
    let specs = stack(&WEIGHTS[..o.loras]);
    let t = Instant::now();
    pipe.set_loras(ctx, &specs, LoraMode::Fused, false)?;
    ctx.sync()?;
    let lora_apply_ms = ms_since(t);

    let mut req = Request::new(PROMPT);
    req.negative_prompt = "lowres".into();
    req.width = o.size;
    req.height = o.size;
    req.steps = o.steps;
    req.cfg = o.cfg;
    req.sampler = SamplerKind::Lcm;
    req.seed = 1;
    req.loras = specs.clone();
    req.lora_mode = LoraMode::Fused;
    req.decoder = FinalDecoder::Taesd;

    progress("first image (cold: compiles kernels)");
    let t = Instant::now();
    timed_generate(ctx, &pipe, &req, &mut progress)?;
    let first_image_ms = ms_since(t);

    progress("measured image");
    let image = timed_generate(ctx, &pipe, &req, &mut progress)?;
    let latents = &image.out.latents;

    progress("text encoding alone");
    let parsed = parse_prompt(pipe.tokenizer(), PROMPT)?;
    let mut text_encode_ms = f64::INFINITY;
    for _ in 0..2 {
        let t = Instant::now();
        let c = pipe.clip.encode_prompt(ctx, &parsed, req.clip_skip)?;
        ctx.sync()?;
        text_encode_ms = text_encode_ms.min(ms_since(t));
        drop(c);
    }

    progress("TAESD decode");
    // The first decode may compile TAESD's kernels; the second is the one measured.
    decode_latents_host(ctx, &taesd, latents)?;
    let t = Instant::now();
    let decoded = decode_latents_host(ctx, &taesd, latents)?;
    let taesd_decode_ms = ms_since(t);
    check_finite("TAESD decode", &decoded)?;

    progress("full VAE decode, for comparison");
    let vae_decode_ms = vae_decode(ctx, &pipe, latents)?;

    progress("one LoRA weight changed, then the image again");
    let mut changed = WEIGHTS;
    changed[1.min(o.loras - 1)] = CHANGED_WEIGHT;
    let changed = stack(&changed[..o.loras]);
    let t = Instant::now();
    pipe.set_loras(ctx, &changed, LoraMode::Fused, false)?;
    ctx.sync()?;
    let set_lora_weight_ms = ms_since(t);
    req.loras = changed;
    let again = timed_generate(ctx, &pipe, &req, &mut progress)?;
    let t = Instant::now();
    decode_latents_host(ctx, &taesd, &again.out.latents)?;
    let rerender_image_ms = again.to_latents_ms + ms_since(t);
    let side = o.size / 8;
    let batch = |cfg: f32| if cfg != 1.0 { 2 } else { 1 };
    let rows = batch(o.cfg);
    let mean = |v: &[f64]| v.iter().sum::<f64>() / v.len().max(1) as f64;
    let compare = match o.compare_cfg {
        Some(cfg) => {
            // Bracketed by the base cfg's steps just before (the re-render) and just after, so a
            // change in the machine's load during the run shows in both sides alike.
            progress(&format!("the steps again at cfg {cfg}"));
            let c = timed_generate(ctx, &pipe, &Request { cfg, ..req.clone() }, &mut progress)?;
            progress(&format!("and at cfg {} again", o.cfg));
            let after = timed_generate(ctx, &pipe, &req, &mut progress)?;
            let mean_step_ms = mean(&c.step_ms);
            let own: Vec<f64> = again.step_ms.iter().chain(&after.step_ms).copied().collect();
            Some(CfgCompare {
                base_step_ms: own.clone(),
                cfg,
                unet_batch: batch(cfg),
                mean_step_ms,
                step_gflop: unet_flops(&pipe.config.unet, batch(cfg), side, side) / 1e9,
                ratio: mean_step_ms / mean(&own),
                step_ms: c.step_ms,
            })
        }
        None => None,
    };
    pipe.clear_loras(ctx)?;

    let step_gflop = unet_flops(&pipe.config.unet, rows, side, side) / 1e9;
    let taesd_gflop = taesd_decoder_flops(o.taesd_width, 4, side, side) / 1e9;
    let steps_ms: f64 = image.step_ms.iter().sum();
    let image_ms = image.to_latents_ms + taesd_decode_ms;
    let mean_step = mean(&image.step_ms);
    let share = |ms: f64| Some(ms / image_ms);
    let mut phases = vec![
        Phase { phase: "text encoding".into(), ms: text_encode_ms, gflop: None, share: share(text_encode_ms) },
        Phase {
            phase: "graph recording and setup".into(),
            ms: (image.prepare_ms - text_encode_ms).max(f64::MIN_POSITIVE),
            gflop: None,
            share: share((image.prepare_ms - text_encode_ms).max(0.0)),
        },
    ];
    for (i, &ms) in image.step_ms.iter().enumerate() {
        phases.push(Phase { phase: format!("step {}", i + 1), ms, gflop: Some(step_gflop), share: share(ms) });
    }
    phases.extend([
        Phase {
            phase: "steps".into(),
            ms: steps_ms,
            gflop: Some(step_gflop * image.step_ms.len() as f64),
            share: share(steps_ms),
        },
        Phase {
            phase: "TAESD decode".into(),
            ms: taesd_decode_ms,
            gflop: Some(taesd_gflop),
            share: share(taesd_decode_ms),
        },
        Phase { phase: "image".into(), ms: image_ms, gflop: None, share: Some(1.0) },
        Phase { phase: "full VAE decode (instead of TAESD)".into(), ms: vae_decode_ms, gflop: None, share: None },
        Phase { phase: "set one LoRA weight".into(), ms: set_lora_weight_ms, gflop: None, share: None },
        Phase { phase: "re-render".into(), ms: rerender_image_ms, gflop: None, share: None },
        Phase {
            phase: "weight change + re-render".into(),
            ms: set_lora_weight_ms + rerender_image_ms,
            gflop: None,
            share: None,
        },
    ]);
    let dominant = [("UNet steps", steps_ms), ("text encoding", text_encode_ms), ("TAESD decode", taesd_decode_ms)]
        .into_iter()
        .chain(std::iter::once(("graph recording and setup", image.prepare_ms - text_encode_ms)))
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map(|(n, _)| n.to_string())
        .unwrap_or_default();
    Ok(RealtimeReport {
        shapes: if o.tiny { "tiny".into() } else { "SD1.5".into() },
        adapter: ctx.caps.adapter_name.clone(),
        backend: ctx.caps.backend.clone(),
        precision: format!("{:?}", pipe.dtype),
        size: o.size,
        steps: o.steps,
        sampler: SamplerKind::Lcm.name().to_string(),
        cfg: o.cfg,
        unet_batch: rows,
        loras: o.loras,
        rank: o.rank,
        lora_mode: LoraMode::Fused.name().to_string(),
        taesd_width: o.taesd_width,
        load_s,
        taesd_load_ms,
        lora_apply_ms,
        first_image_ms,
        text_encode_ms,
        prepare_ms: image.prepare_ms,
        step_ms: image.step_ms,
        steps_ms,
        taesd_decode_ms,
        vae_decode_ms,
        image_ms,
        set_lora_weight_ms,
        rerender_image_ms,
        rerender_total_ms: set_lora_weight_ms + rerender_image_ms,
        step_gflop,
        taesd_gflop,
        unet_tflops: step_gflop / mean_step / 1e3,
        phases,
        dominant,
        compare,
    })
}

/// The checkpoint VAE's decode of `latents` [B, 4, h, w] (the first image), in ms.
fn vae_decode(ctx: &Context, pipe: &Pipeline, latents: &HostTensor) -> Result<f64> {
    let [_, c, h, w] = latents.shape[..] else {
        return Err(Error::shape(OP, format!("latents {:?}", latents.shape)));
    };
    let inv = 1.0 / pipe.config.vae.scaling_factor;
    let z: Vec<f32> = latents.data[..c * h * w].iter().map(|v| v * inv).collect();
    let t = Instant::now();
    let z = GpuTensor::from_slice(ctx, &[1, c, h, w], &z, pipe.dtype)?;
    let img = pipe.vae.decode_checked_host(ctx, &mut Recorder::new(), &z)?;
    let ms = ms_since(t);
    if img.iter().any(|v| !v.is_finite()) {
        return Err(Error::invalid(OP, "the VAE decoded NaN/Inf"));
    }
    Ok(ms)
}

fn check_finite(what: &str, images: &[HostTensor]) -> Result<()> {
    if images.iter().any(|i| i.data.iter().any(|v| !v.is_finite())) {
        return Err(Error::invalid(OP, format!("{what} gave NaN/Inf")));
    }
    Ok(())
}

impl RealtimeReport {
    /// A fixed-width table for terminals and BENCHMARKS.md.
    pub fn table(&self) -> String {
        let guidance = if self.unet_batch == 1 { "unguided, UNet batch 1" } else { "CFG, UNet batch 2" };
        let mut s = format!(
            "adapter: {} ({}), {}, {} shapes (synthetic weights), {}x{}\n{} {} steps, cfg {} ({guidance}), {} \
             rank-{} LoRAs {}, TAESD width {}\n",
            self.adapter,
            self.backend,
            self.precision,
            self.shapes,
            self.size,
            self.size,
            self.sampler,
            self.steps,
            self.cfg,
            self.loras,
            self.rank,
            self.lora_mode,
            self.taesd_width
        );
        s.push_str(&format!(
            "load {:.1} s; TAESD load {:.0} ms; LoRA stack applied in {:.0} ms; first image (cold) {:.1} s\n\n",
            self.load_s,
            self.taesd_load_ms,
            self.lora_apply_ms,
            self.first_image_ms / 1e3
        ));
        s.push_str("| phase | ms | GFLOP | share of the image |\n|---|---:|---:|---:|\n");
        for p in &self.phases {
            let gflop = p.gflop.map_or("".to_string(), |g| format!("{g:.1}"));
            let share = p.share.map_or("".to_string(), |f| format!("{:.1} %", 100.0 * f));
            s.push_str(&format!("| {} | {:.1} | {gflop} | {share} |\n", p.phase, p.ms));
        }
        s.push_str(&format!(
            "\nUNet at {:.1} GFLOP/s; the image is dominated by {}\n",
            self.unet_tflops * 1e3,
            self.dominant
        ));
        if let Some(c) = &self.compare {
            let ms: Vec<String> = c.step_ms.iter().map(|m| format!("{m:.0}")).collect();
            s.push_str(&format!(
                "steps at cfg {} (UNet batch {}): {} ms, mean {:.0} ms = {:.2}x the cfg {} steps around them ({} ms) \
                 ({:.1} vs {:.1} GFLOP)\n",
                c.cfg,
                c.unet_batch,
                ms.join(", "),
                c.mean_step_ms,
                c.ratio,
                self.cfg,
                c.base_step_ms.iter().map(|m| format!("{m:.0}")).collect::<Vec<_>>().join(", "),
                c.step_gflop,
                self.step_gflop
            ));
        }
        s
    }
}
