//! Where each image's sampling starts: pure noise (text to image), an encoded image noised to the
//! schedule's first step (img2img, diffusers' `StableDiffusionImg2ImgPipeline`), or that plus a
//! mask (inpainting, diffusers' `StableDiffusionInpaintPipeline`, for both UNet kinds).
//!
//! Everything here runs once per image before the UNet graph is recorded, so the encoder's
//! buffers are back in the pool before sampling and the sampling loop stays free of readbacks.
//! The seeded generator is consumed in diffusers' order, one stream per image:
//!
//! ```text
//! img2img:  [latent sample of the init image] [initial noise] [sampler noise …]
//! inpaint:  [latent sample of the init image]¹ [initial noise] [latent sample of the masked image] [sampler noise …]
//! ```
//! ¹ skipped by a 9-channel UNet at strength 1, which never needs the image's own latents.

use crate::pipeline::init::{InitImage, InitSource};
use crate::pipeline::request::Request;
use crate::pipeline::rng::NoiseStream;
use crate::pipeline::txt2img::Pipeline;
use crate::schedulers::Schedule;
use crate::{Context, Error, Result};

/// The inpainting blend of a regular (4-channel) UNet: after every step the unmasked latents are
/// replaced by the init image's latents noised to the next step's level.
pub(crate) struct Blend {
    /// The init image's latents `[4, h, w]` (scaled space).
    pub image_latents: Vec<f32>,
    /// `[h, w]`, 1 = repaint, binary.
    pub mask: Vec<f32>,
}

/// What the pixels of a finished image are composited with (A1111's overlay).
pub(crate) struct Overlay {
    /// The init image `[3, H, W]` in [0, 1].
    pub original: Vec<f32>,
    /// `[H, W]`, the blurred mask.
    pub alpha: Vec<f32>,
}

/// One image's starting state.
pub(crate) struct ImageStart {
    pub seed: u64,
    /// The image's generator, positioned after the draws made here (sampler noise comes next).
    pub stream: NoiseStream,
    /// The unit-normal initial noise `[4, h, w]`.
    pub noise: Vec<f32>,
    /// The latents the first step starts from, before multiplying by `scale`.
    pub x: Vec<f32>,
    /// The sampler's initial σ for a start from pure noise (applied on the device, as text to
    /// image always did), else 1.
    pub scale: f32,
    pub blend: Option<Blend>,
    /// A 9-channel UNet's extra input `[5, h, w]`: the mask, then the masked image's latents.
    pub cond: Option<Vec<f32>>,
    pub overlay: Option<Overlay>,
}

/// Pixels `[3, H, W]` in [0, 1] → the UNet's input range [-1, 1].
fn to_signed(pixels: &[f32]) -> Vec<f32> {
    pixels.iter().map(|&v| 2.0 * v - 1.0).collect()
}

/// A binary mask `[H, W]` at latent size `[H/8, W/8]`: torch `interpolate(mode="nearest")` by
/// an exact factor of 8 picks pixel (8i, 8j).
fn mask_to_latent(bin: &[f32], height: usize, width: usize) -> Vec<f32> {
    let (h, w) = (height / 8, width / 8);
    let mut out = Vec::with_capacity(h * w);
    for i in 0..h {
        for j in 0..w {
            out.push(bin[8 * i * width + 8 * j]);
        }
    }
    out
}

impl Pipeline {
    /// Image `[3, H, W]` in [-1, 1] → `[2·4, h, w]` moments on the host.
    fn encode_moments(&self, ctx: &Context, req: &Request, signed: &[f32]) -> Result<Vec<f32>> {
        self.vae.encode_moments_host(ctx, &[1, 3, req.height, req.width], signed, req.vae_tiling.as_ref())
    }

    /// A latent sample of `moments` drawn from `stream`, times the scaling factor.
    fn sample_scaled(&self, moments: &[f32], stream: &mut NoiseStream, shape: [usize; 3]) -> Result<Vec<f32>> {
        let eps = stream.next(&shape);
        let sf = self.config.vae.scaling_factor;
        Ok(crate::models::vae::sample_latent(moments, &eps)?.into_iter().map(|v| v * sf).collect())
    }

    /// The latents of an all-grey image: a 9-channel UNet's masked-image input when everything is
    /// repainted (text to image, img2img without a mask), as A1111 builds it. The distribution's
    /// mean, so no generator draw.
    fn grey_latents(&self, ctx: &Context, req: &Request) -> Result<Vec<f32>> {
        let moments = self.encode_moments(ctx, req, &vec![0.0; 3 * req.height * req.width])?;
        let half = moments.len() / 2;
        let sf = self.config.vae.scaling_factor;
        Ok(moments[..half].iter().map(|v| v * sf).collect())
    }

    /// Every image's start for `req` under `schedule` (see the module docs for the draw order).
    pub(crate) fn image_starts(&self, ctx: &Context, req: &Request, schedule: &Schedule) -> Result<Vec<ImageStart>> {
        let [lc, lh, lw] = req.latent_shape();
        let per = lc * lh * lw;
        let shape = [lc, lh, lw];
        let (height, width) = (req.height, req.width);
        let nine = self.config.unet.in_channels == 9;
        let grey = if nine && req.init.as_ref().is_none_or(|i| i.mask.is_none()) {
            Some(self.grey_latents(ctx, req)?)
        } else {
            None
        };
        let mut cached_moments: Option<(usize, Vec<f32>)> = None;
        let mut starts = Vec::with_capacity(req.batch);
        for b in 0..req.batch {
            let seed = req.seed.wrapping_add(b as u64);
            let mut stream = NoiseStream::new(req.rng, seed);
            let draw_noise = |stream: &mut NoiseStream| -> Vec<f32> {
                match &req.noise.noise {
                    Some(n) => n.data[b * per..(b + 1) * per].to_vec(),
                    None => stream.next(&shape),
                }
            };
            let Some(init) = &req.init else {
                let noise = draw_noise(&mut stream);
                let scale = schedule.init_noise_sigma() as f32;
                let cond = grey.as_ref().map(|g| [vec![1.0; lh * lw], g.clone()].concat());
                let x = noise.clone();
                starts.push(ImageStart { seed, stream, noise, x, scale, blend: None, cond, overlay: None });
                continue;
            };
            let source = init.source(b)?;
            let (a0, b0) = schedule.noise_level(0).ok_or_else(|| Error::invalid("img2img", "empty schedule"))?;
            let strength_max = init.strength >= 1.0;
            let mut moments_of = |pixels: &[f32]| -> Result<Vec<f32>> {
                let key = pixels.as_ptr() as usize;
                if let Some((k, m)) = &cached_moments {
                    if *k == key {
                        return Ok(m.clone());
                    }
                }
                let m = self.encode_moments(ctx, req, &to_signed(pixels))?;
                cached_moments = Some((key, m.clone()));
                Ok(m)
            };
            let start = match &init.mask {
                None => {
                    let image_latents = match source {
                        InitSource::Pixels(p) => {
                            let m = moments_of(&p.data)?;
                            self.sample_scaled(&m, &mut stream, shape)?
                        }
                        InitSource::Latents(l) => l.data.clone(),
                    };
                    let noise = draw_noise(&mut stream);
                    let x = add_noise(&image_latents, &noise, a0, b0);
                    let cond = grey.as_ref().map(|g| [vec![1.0; lh * lw], g.clone()].concat());
                    ImageStart { seed, stream, noise, x, scale: 1.0, blend: None, cond, overlay: None }
                }
                Some(mask) => {
                    let InitSource::Pixels(p) = source else {
                        return Err(Error::invalid("inpaint", "inpainting needs the init image's pixels"));
                    };
                    let bin: Vec<f32> = mask.alpha.data.iter().map(|&a| if a >= 0.5 { 1.0 } else { 0.0 }).collect();
                    let image_latents = if !nine || !strength_max {
                        let m = moments_of(&p.data)?;
                        Some(self.sample_scaled(&m, &mut stream, shape)?)
                    } else {
                        None
                    };
                    let noise = draw_noise(&mut stream);
                    let (x, scale) = match (&image_latents, strength_max) {
                        (Some(l), false) => (add_noise(l, &noise, a0, b0), 1.0),
                        _ => (noise.clone(), schedule.init_noise_sigma() as f32),
                    };
                    // diffusers: masked_image = image * (mask < 0.5), in [-1, 1].
                    let plane = height * width;
                    let signed = to_signed(&p.data);
                    let masked: Vec<f32> =
                        signed.iter().enumerate().map(|(i, &v)| if bin[i % plane] >= 0.5 { 0.0 } else { v }).collect();
                    let mm = self.encode_moments(ctx, req, &masked)?;
                    let masked_latents = self.sample_scaled(&mm, &mut stream, shape)?;
                    let mask_lat = mask_to_latent(&bin, height, width);
                    let (blend, cond) = if nine {
                        (None, Some([mask_lat, masked_latents].concat()))
                    } else {
                        let image_latents = image_latents.ok_or_else(|| Error::invalid("inpaint", "image latents"))?;
                        (Some(Blend { image_latents, mask: mask_lat }), None)
                    };
                    // A1111 composites a whole-picture inpaint with the blurred mask doubled
                    // (`np.clip(mask * 2, 0, 255)`), so the repainted area reaches into the blur
                    // band; "only masked" composites with the plain blurred mask (hires.rs).
                    let alpha = mask.alpha.data.iter().map(|a| (2.0 * a).min(1.0)).collect();
                    let overlay = Overlay { original: p.data.clone(), alpha };
                    ImageStart { seed, stream, noise, x, scale, blend, cond, overlay: Some(overlay) }
                }
            };
            starts.push(start);
        }
        Ok(starts)
    }
}

/// diffusers' `add_noise` as `(a, b)`: a·x0 + b·noise.
fn add_noise(x0: &[f32], noise: &[f32], a: f64, b: f64) -> Vec<f32> {
    x0.iter().zip(noise).map(|(&x, &n)| (a * f64::from(x) + b * f64::from(n)) as f32).collect()
}

/// The schedule a request runs: the whole one, or img2img's tail at the init's strength.
pub(crate) fn request_schedule(req: &Request, config: &crate::schedulers::SchedulerConfig) -> Result<Schedule> {
    match &req.init {
        None => Schedule::new(req.sampler, req.spacing, req.steps, config),
        Some(InitImage { strength, .. }) => Schedule::img2img(req.sampler, req.spacing, req.steps, *strength, config),
    }
}

/// A1111's overlay: `alpha·generated + (1 − alpha)·original` per pixel, so pixels outside the
/// (blurred) mask keep the input's values exactly.
pub(crate) fn apply_overlay(generated: &mut [f32], o: &Overlay) {
    let plane = o.alpha.len();
    for (i, g) in generated.iter_mut().enumerate() {
        let a = o.alpha[i % plane];
        if a <= 0.0 {
            *g = o.original[i];
        } else if a < 1.0 {
            *g = a * *g + (1.0 - a) * o.original[i];
        }
    }
}
