//! `lorafuse generate`: the CLI contract over `pipeline::txt2img`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context as _, Result};
use lorafuse::pipeline::image::{to_rgb8, write_atomic, write_png};
use lorafuse::pipeline::infotext::request_infotext;
use lorafuse::pipeline::request::Request;
use lorafuse::pipeline::txt2img::{Pipeline, Progress};
use lorafuse::schedulers::PredictionType;
use lorafuse::{Context, HostTensor};

pub use crate::args::GenerateArgs;
use crate::progress;

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
    write_atomic(path, &bytes)?;
    Ok(())
}

/// What differs from plain ε sampling (v-prediction, zero terminal SNR, CFG rescale), if anything.
fn sampling_note(req: &Request) -> Option<String> {
    let mut parts = Vec::new();
    if req.prediction == Some(PredictionType::VPrediction) {
        parts.push("v-prediction".to_string());
    }
    if req.zero_terminal_snr == Some(true) {
        parts.push("zero terminal SNR".to_string());
    }
    if req.cfg_rescale != 0.0 {
        parts.push(format!("CFG rescale {}", req.cfg_rescale));
    }
    (!parts.is_empty()).then(|| parts.join(", "))
}

pub fn run(ctx: &Context, a: &GenerateArgs, quiet: bool) -> Result<()> {
    let precision = a.precision;
    let req = a.taesd.apply(a.request()?);
    // Cheap checks before the model loads (prompt tags resolve and the LoRA count is checked
    // here too, so a missing LoRA fails in a second, not after the load).
    req.validate()?;
    let specs = req.lora_specs()?;
    a.check_paths()?;
    a.check_block_weights(&specs)?;
    a.taesd.check(&a.output)?;
    let t0 = Instant::now();
    let pipe = Pipeline::load_with_vae(ctx, &a.model, precision, a.vae.as_deref())
        .with_context(|| format!("loading {}", a.model.display()))?;
    log::info!("loaded {} in {:.1}s ({:?})", a.model.display(), t0.elapsed().as_secs_f64(), pipe.dtype);
    let previews = a.taesd.attach(ctx, &pipe, &a.output)?;
    // The model file's markers filled in, so the infotext records the schedule that was used.
    let req = pipe.with_model_defaults(&req);
    eprintln!("seed: {}", req.seed);
    if !quiet {
        eprintln!("precision: {}", precision.describe(ctx));
        if let Some(s) = sampling_note(&req) {
            eprintln!("sampling: {s}");
        }
    }
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

    let bar = progress::Progress::new(quiet, "{msg} [{bar:30}] {pos}/{len} steps, {per_sec} ({elapsed})", "steps")?;
    bar.set_length(req.steps as u64);
    bar.tick_steadily();
    let out = previews.generate(ctx, &pipe, &req, &bar, &mut |p| match p {
        Progress::Image { image, images } => {
            bar.reset();
            bar.set_message(format!("image {}/{images}", image + 1));
        }
        Progress::Step { step, steps } => {
            bar.set_length(steps as u64);
            bar.set_position(step as u64);
        }
        Progress::Decode => bar.set_message("decoding"),
        Progress::Compile { done, total } => bar.compiling(done, total),
    })?;
    bar.finish();

    let (model_name, hash) = a.model_identity()?;
    for (i, img) in out.images.iter().enumerate() {
        // `--lora` LoRAs go into the prompt as A1111 tags, so the infotext alone reproduces the image.
        let info = a.with_vae(request_infotext(&req, out.seeds[i], &model_name, &hash, &out.loras));
        let path = output_path(&a.output, i, out.images.len());
        // The image's own size: with hires fix it is larger than the request's (first pass) size.
        let (h, w) = (img.shape[1], img.shape[2]);
        write_png(&path, w, h, &to_rgb8(&img.data, h, w)?, &info.render())?;
        println!("{}", path.display());
    }
    if let Some(p) = &a.save_tensors {
        let mut image = Vec::new();
        for img in &out.images {
            image.extend_from_slice(&img.data);
        }
        let (h, w) = out.images.first().map_or((req.height, req.width), |i| (i.shape[1], i.shape[2]));
        let image = HostTensor::new(&[out.images.len(), 3, h, w], image)?;
        save_tensors(p, &[("noise", &out.noise), ("latents", &out.latents), ("image", &image)])?;
    }
    Ok(())
}
