//! `--taesd`, `--decoder`, `--preview*`: the tiny autoencoder on the command line, and the live
//! previews `generate` writes while it samples.
//!
//! A preview is written beside the output (`out.preview.png` by default), atomically, so an image
//! viewer watching the file never reads half of one. `approx` is A1111's "Approx cheap" (a fixed
//! linear map of the latents, the one the server's progress previews use), shown at the image's
//! size; `taesd` decodes the latents with TAESD / TAESDXL (a few percent of a step's work).

use std::cell::Cell;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{bail, Context as _, Result};
use clap::{Args, ValueEnum};
use lorafuse::models::vae::TaesdDecoder;
use lorafuse::pipeline::fast_decode::{decode_latents_host, load_taesd};
use lorafuse::pipeline::image::{encode_png, to_rgb8, write_atomic};
use lorafuse::pipeline::request::{FinalDecoder, Request};
use lorafuse::pipeline::txt2img::{Output, Pipeline, Progress, Watch};
use lorafuse::weights::detect::Family;
use lorafuse::{Context, HostTensor};

use crate::args::named;
use crate::progress;

/// What `--preview` writes while sampling.
#[derive(ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum PreviewMode {
    None,
    /// A1111's "Approx cheap": a linear map of the 4 latent channels to RGB (free).
    Approx,
    /// Decoded by TAESD / TAESDXL (needs --taesd).
    Taesd,
}

#[derive(Args, Clone, Debug)]
pub struct TaesdArgs {
    /// TAESD decoder for the model's family: taesd_decoder.safetensors (SD1.x),
    /// taesdxl_decoder.safetensors (SDXL), a diffusers AutoencoderTiny
    /// diffusion_pytorch_model.safetensors, or its folder.
    #[arg(long, value_name = "PATH")]
    pub taesd: Option<PathBuf>,
    /// What decodes the final image: vae (the checkpoint's, or --vae) or taesd (a fast draft; needs
    /// --taesd).
    #[arg(long, default_value = "vae", value_parser = named::<FinalDecoder>)]
    pub decoder: FinalDecoder,
    /// Previews while sampling: none, approx (A1111's "Approx cheap") or taesd (needs --taesd).
    #[arg(long, value_enum, default_value = "none")]
    pub preview: PreviewMode,
    /// Write a preview every N steps [default: 1]; needs --preview.
    #[arg(long, value_name = "N")]
    pub preview_every: Option<usize>,
    /// Where previews go [default: the output's name with .preview.png]; needs --preview.
    #[arg(long, value_name = "P.png")]
    pub preview_file: Option<PathBuf>,
}

impl Default for TaesdArgs {
    /// No TAESD, the VAE decodes, no previews (the options' defaults).
    fn default() -> Self {
        TaesdArgs {
            taesd: None,
            decoder: FinalDecoder::Vae,
            preview: PreviewMode::None,
            preview_every: None,
            preview_file: None,
        }
    }
}

/// "… needs --taesd" with what it takes.
fn needs_taesd(what: &str) -> anyhow::Error {
    anyhow::anyhow!(
        "{what} needs --taesd PATH (taesd_decoder.safetensors for SD1.x, taesdxl_decoder.safetensors for SDXL, or \
         a diffusers AutoencoderTiny folder)"
    )
}

impl TaesdArgs {
    /// The options' consistency and paths, checked before the model loads.
    pub fn check(&self, output: &Path) -> Result<()> {
        if self.taesd.is_none() {
            if self.decoder == FinalDecoder::Taesd {
                return Err(needs_taesd("--decoder taesd"));
            }
            if self.preview == PreviewMode::Taesd {
                return Err(needs_taesd("--preview taesd"));
            }
        }
        if let Some(p) = self.taesd.as_ref().filter(|p| !p.exists()) {
            bail!("TAESD {} does not exist", p.display());
        }
        if self.preview == PreviewMode::None {
            if self.preview_every.is_some() || self.preview_file.is_some() {
                bail!("--preview-every and --preview-file need --preview approx or --preview taesd");
            }
            return Ok(());
        }
        if self.preview_every == Some(0) {
            bail!("--preview-every must be at least 1");
        }
        let file = self.preview_path(output);
        if file == output {
            bail!("--preview-file {} is the output image itself", file.display());
        }
        if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty() && !d.is_dir()) {
            bail!("preview folder {} does not exist", dir.display());
        }
        Ok(())
    }

    fn preview_path(&self, output: &Path) -> PathBuf {
        self.preview_file.clone().unwrap_or_else(|| output.with_extension("preview.png"))
    }

    /// `req` decoded as `--decoder` says.
    pub fn apply(&self, req: Request) -> Request {
        Request { decoder: self.decoder, ..req }
    }

    /// Loads `--taesd` for the loaded model (refusing one for the other family) and puts it on
    /// `pipe`; the previews to write while sampling.
    pub fn attach(&self, ctx: &Context, pipe: &Pipeline, output: &Path) -> Result<Previews> {
        let taesd = match &self.taesd {
            Some(p) => {
                let dec = load_taesd(ctx, p, pipe.family(), pipe.dtype)
                    .with_context(|| format!("loading TAESD {}", p.display()))?;
                let dec = Arc::new(dec);
                pipe.set_taesd(Some(dec.clone()));
                Some(dec)
            }
            None => None,
        };
        Ok(Previews {
            mode: self.preview,
            every: self.preview_every.unwrap_or(1),
            file: self.preview_path(output),
            taesd,
            sdxl: pipe.family() == Family::Sdxl,
            image: Cell::new((0, 1)),
            step: Cell::new(0),
            warned: Cell::new(false),
        })
    }
}

/// The previews of one `generate` run.
pub struct Previews {
    mode: PreviewMode,
    every: usize,
    file: PathBuf,
    taesd: Option<Arc<TaesdDecoder>>,
    sdxl: bool,
    /// (image, images) being sampled, for the progress message.
    image: Cell<(usize, usize)>,
    /// Steps done when the latents were asked for.
    step: Cell<usize>,
    warned: Cell<bool>,
}

impl Previews {
    /// `pipe.generate_watched` with a watch that writes the previews; `progress` sees every report.
    pub fn generate(
        &self,
        ctx: &Context,
        pipe: &Pipeline,
        req: &Request,
        bar: &progress::Progress,
        progress: &mut dyn FnMut(Progress),
    ) -> lorafuse::Result<Output> {
        let mut report = |p: Progress| {
            if let Progress::Image { image, images } = p {
                self.image.set((image, images));
            }
            progress(p)
        };
        let mut wants = |step: usize| {
            self.step.set(step);
            self.mode != PreviewMode::None && step.is_multiple_of(self.every)
        };
        let mut on_latents = |latents: &[f32], shape: [usize; 3]| self.write(ctx, bar, latents, shape);
        let mut watch = Watch { wants_latents: &mut wants, on_latents: &mut on_latents, ..Watch::default() };
        pipe.generate_watched(ctx, req, &mut report, &mut watch)
    }

    /// One preview; a failure is logged once and sampling goes on (the preview is not the product).
    fn write(&self, ctx: &Context, bar: &progress::Progress, latents: &[f32], shape: [usize; 3]) {
        match self.render(ctx, latents, shape) {
            Ok(()) => {
                let (image, images) = self.image.get();
                bar.set_message(format!("image {}/{images}, preview of step {} written", image + 1, self.step.get()));
            }
            Err(e) if !self.warned.replace(true) => {
                log::warn!("preview {}: {e:#} (sampling goes on without previews)", self.file.display())
            }
            Err(_) => {}
        }
    }

    fn render(&self, ctx: &Context, latents: &[f32], [c, h, w]: [usize; 3]) -> Result<()> {
        let (width, height, rgb) = match (self.mode, &self.taesd) {
            (PreviewMode::Taesd, Some(dec)) => {
                let img = decode_latents_host(ctx, dec, &HostTensor::new(&[c, h, w], latents.to_vec())?)?;
                let img = img.first().context("TAESD decoded no image")?;
                let (height, width) = (img.shape[1], img.shape[2]);
                (width, height, to_rgb8(&img.data, height, width)?)
            }
            _ => {
                let small = lorafuse::serve::preview::latents_to_rgb8(latents, [c, h, w], self.sdxl)
                    .context("latents are not 4 channels")?;
                (8 * w, 8 * h, upscale8(&small, h, w))
            }
        };
        write_atomic(&self.file, &encode_png(width, height, &rgb, "")?)?;
        Ok(())
    }
}

/// Nearest-neighbour ×8 of an RGB8 image, so an approximate preview has the image's size.
fn upscale8(rgb: &[u8], h: usize, w: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(rgb.len() * 64);
    for y in 0..8 * h {
        let row = &rgb[(y / 8) * w * 3..(y / 8 + 1) * w * 3];
        for px in row.chunks_exact(3) {
            for _ in 0..8 {
                out.extend_from_slice(px);
            }
        }
    }
    out
}
