//! What a generation starts from besides noise, and what happens after it: img2img and
//! inpainting ([`InitImage`]), A1111's hires fix ([`Hires`]) and the final decoder
//! ([`FinalDecoder`]). The pixel work around them (loading, resizing, mask blur, crop regions)
//! lives in [`super::init_image`]; the sampling in [`super::img2img`] and [`super::hires`].

use crate::named_enum::named_enum;
use crate::{Error, HostTensor, Result};

const OP: &str = "request";

/// One starting point of an img2img run.
#[derive(Clone, Debug)]
pub enum InitSource {
    /// `[3, H, W]` in [0, 1] at the request's size: VAE-encoded with a latent sample drawn from
    /// the image's seed, as diffusers' img2img pipeline does.
    Pixels(HostTensor),
    /// `[4, h, w]` latents in the UNet's (scaled) space, used as they are (hires fix's latent
    /// upscalers, diffusers' img2img given a 4-channel tensor).
    Latents(HostTensor),
}

/// An inpainting mask at the request's size.
#[derive(Clone, Debug)]
pub struct InpaintMask {
    /// `[H, W]` in [0, 1], 1 = repaint, already blurred by `blur`. Sampling uses `alpha ≥ 0.5`
    /// (diffusers binarizes the same way); the final overlay uses `alpha` as it is, so pixels
    /// outside the blur band keep the input's values exactly.
    pub alpha: HostTensor,
    /// A1111's `Mask blur` that made `alpha` (recorded in the infotext).
    pub blur: f32,
    /// A1111's "Inpaint area: Only masked" with this padding in pixels: the masked region (plus
    /// padding, grown to the request's aspect) is cut out, resized to the request's size,
    /// inpainted, and pasted back.
    pub only_masked_padding: Option<usize>,
}

/// img2img / inpainting input (A1111's img2img tab; diffusers' img2img and inpaint pipelines).
#[derive(Clone, Debug)]
pub struct InitImage {
    /// One source for every image of the batch, or one per image.
    pub sources: Vec<InitSource>,
    /// diffusers' `strength`, A1111's denoising strength, in (0, 1]: of the `steps`-step
    /// schedule, the last ⌊steps·strength⌋ steps run.
    pub strength: f64,
    pub mask: Option<InpaintMask>,
}

impl InitImage {
    /// The source of batch image `b`.
    pub fn source(&self, b: usize) -> Result<&InitSource> {
        match self.sources.len() {
            1 => Ok(&self.sources[0]),
            _ => self.sources.get(b).ok_or_else(|| {
                Error::invalid(OP, format!("no init image for batch image {b} ({} given)", self.sources.len()))
            }),
        }
    }

    /// Checks strength, sources and mask against the request's size and batch.
    pub fn validate(&self, width: usize, height: usize, batch: usize) -> Result<()> {
        if !(self.strength > 0.0 && self.strength <= 1.0) {
            return Err(Error::invalid(OP, format!("strength must be in (0, 1], got {}", self.strength)));
        }
        if self.sources.is_empty() || (self.sources.len() != 1 && self.sources.len() != batch) {
            return Err(Error::invalid(
                OP,
                format!("{} init images for a batch of {batch} (give one, or one per image)", self.sources.len()),
            ));
        }
        for s in &self.sources {
            let (want, got) = match s {
                InitSource::Pixels(t) => (vec![3, height, width], &t.shape),
                InitSource::Latents(t) => (vec![4, height / 8, width / 8], &t.shape),
            };
            if *got != want {
                return Err(Error::shape(
                    OP,
                    format!("init {} {got:?} does not match the request's size {width}x{height} ({want:?})", kind(s)),
                ));
            }
        }
        if let Some(m) = &self.mask {
            if m.alpha.shape != [height, width] {
                return Err(Error::shape(
                    OP,
                    format!("mask {:?} does not match the request's size {width}x{height}", m.alpha.shape),
                ));
            }
            if self.sources.iter().any(|s| matches!(s, InitSource::Latents(_))) {
                return Err(Error::invalid(OP, "inpainting needs the init image's pixels, not latents"));
            }
            if !(m.blur >= 0.0 && m.blur <= 64.0) {
                return Err(Error::invalid(OP, format!("mask blur must be in [0, 64], got {}", m.blur)));
            }
        }
        Ok(())
    }
}

fn kind(s: &InitSource) -> &'static str {
    match s {
        InitSource::Pixels(_) => "image",
        InitSource::Latents(_) => "latents",
    }
}

/// How hires fix brings the first pass to the final size (A1111's "Upscaler").
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum HiresUpscaler {
    /// Bilinear on the latents (A1111 "Latent"; torch `interpolate`, bilinear, no antialias).
    Latent,
    /// Nearest on the latents (A1111 "Latent (nearest)").
    LatentNearest,
    /// torch's `nearest-exact` on the latents (A1111 "Latent (nearest-exact)").
    LatentNearestExact,
    /// Lanczos on the decoded image, then encoded again (A1111 "Lanczos").
    Lanczos,
}

named_enum!(
    HiresUpscaler,
    op = "hires_upscaler",
    unknown = |s| format!("unknown hires upscaler {s:?}; valid: latent, latent-nearest, latent-nearest-exact, lanczos"),
    {
        Latent => "latent",
        LatentNearest => "latent-nearest",
        LatentNearestExact => "latent-nearest-exact",
        Lanczos => "lanczos",
    }
);

impl HiresUpscaler {
    /// The name A1111 writes in `Hires upscaler`.
    pub fn a1111_name(self) -> &'static str {
        match self {
            HiresUpscaler::Latent => "Latent",
            HiresUpscaler::LatentNearest => "Latent (nearest)",
            HiresUpscaler::LatentNearestExact => "Latent (nearest-exact)",
            HiresUpscaler::Lanczos => "Lanczos",
        }
    }

    /// Reads A1111's names (and lorafuse's own).
    pub fn from_a1111(s: &str) -> Result<HiresUpscaler> {
        match s.trim() {
            "Latent" => Ok(HiresUpscaler::Latent),
            "Latent (nearest)" => Ok(HiresUpscaler::LatentNearest),
            "Latent (nearest-exact)" => Ok(HiresUpscaler::LatentNearestExact),
            "Lanczos" => Ok(HiresUpscaler::Lanczos),
            other => other.parse(),
        }
    }

    pub fn is_latent(self) -> bool {
        self != HiresUpscaler::Lanczos
    }
}

/// A1111's hires fix: after the first pass at the request's size, upscale to `width`×`height`
/// and run an img2img pass there with the same prompt, LoRAs and seed.
#[derive(Clone, Debug, PartialEq)]
pub struct Hires {
    pub width: usize,
    pub height: usize,
    /// The `--hires-scale` that gave the size (A1111's `Hires upscale`); `None` when the size was
    /// given (`Hires resize: WxH`).
    pub scale: Option<f64>,
    /// Steps of the second pass's schedule; 0 = the first pass's count (A1111's `Hires steps`).
    pub steps: usize,
    /// The second pass's strength (A1111's `Denoising strength`), in (0, 1].
    pub denoise: f64,
    pub upscaler: HiresUpscaler,
}

impl Hires {
    pub fn validate(&self, width: usize, height: usize) -> Result<()> {
        if self.width == 0 || self.height == 0 || !self.width.is_multiple_of(8) || !self.height.is_multiple_of(8) {
            return Err(Error::invalid(
                OP,
                format!("hires size {}x{} must be positive multiples of 8", self.width, self.height),
            ));
        }
        if self.width > 8192 || self.height > 8192 {
            return Err(Error::limit(OP, "hires image side", self.width.max(self.height) as u64, 8192));
        }
        if self.width < width || self.height < height {
            return Err(Error::invalid(
                OP,
                format!("hires size {}x{} is smaller than the first pass {width}x{height}", self.width, self.height),
            ));
        }
        if !(self.denoise > 0.0 && self.denoise <= 1.0) {
            return Err(Error::invalid(
                OP,
                format!("hires denoising strength must be in (0, 1], got {}", self.denoise),
            ));
        }
        Ok(())
    }

    /// The size `scale` gives, rounded down to multiples of 8 as A1111 does
    /// (`int(width · scale) // 8 · 8`).
    pub fn scaled_size(width: usize, height: usize, scale: f64) -> Result<(usize, usize)> {
        if !(1.0..=16.0).contains(&scale) {
            return Err(Error::invalid(OP, format!("hires scale must be in [1, 16], got {scale}")));
        }
        let side = |v: usize| ((v as f64 * scale) as usize) / 8 * 8;
        Ok((side(width), side(height)))
    }
}

/// What turns the final latents into pixels.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum FinalDecoder {
    /// The checkpoint's VAE (or `--vae`).
    #[default]
    Vae,
    /// The tiny autoencoder loaded with [`super::txt2img::Pipeline::set_taesd`]: fast drafts.
    Taesd,
}

named_enum!(FinalDecoder, op = "decoder", unknown = |s| format!("unknown decoder {s:?}; valid: vae, taesd"), {
    Vae => "vae",
    Taesd => "taesd",
});
