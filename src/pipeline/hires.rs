//! A1111's hires fix and "inpaint only masked": two ways of running the sampler at another size
//! than the output and bringing the result back.
//!
//! Hires fix: the first pass at the request's size, the latents (latent upscalers) or the decoded
//! image (Lanczos) upscaled, then an img2img pass at the hires size with the same prompt, LoRAs
//! and seeds: the second pass's generator restarts from each image's seed, as A1111's does.

use crate::pipeline::img2img::{apply_overlay, Overlay};
use crate::pipeline::init::{Hires, HiresUpscaler, InitImage, InitSource, InpaintMask};
use crate::pipeline::init_image::{
    crop, crop_region, paste, resize_image, resize_mask, upscale_latents_with, LatentInterp,
};
use crate::pipeline::request::{NoiseOverride, Request};
use crate::pipeline::sample::Finish;
use crate::pipeline::txt2img::{Output, Pipeline, Progress, Watch};
use crate::{Context, Error, HostTensor, Recorder, Result};

/// A1111 hands the first pass to a pixel upscaler as 8-bit RGB: `(255·x).astype(uint8)`, which
/// truncates.
fn quantize_u8(pixels: &[f32]) -> Vec<f32> {
    pixels.iter().map(|&v| ((255.0 * v.clamp(0.0, 1.0)) as u8) as f32 / 255.0).collect()
}

impl Pipeline {
    pub(crate) fn generate_hires(
        &self,
        ctx: &Context,
        req: &Request,
        h: &Hires,
        progress: &mut dyn FnMut(Progress),
        watch: &mut Watch<'_>,
    ) -> Result<Output> {
        let first_req = Request { hires: None, ..req.clone() };
        let pixels = h.upscaler == HiresUpscaler::Lanczos;
        let mut first = self.sample(ctx, &first_req, progress, watch, Finish { decode: pixels, overlay: true })?;
        let [lc, lh, lw] = req.latent_shape();
        let per = lc * lh * lw;
        if first.interrupted {
            // A1111's interrupt during the first pass: the first pass's image.
            if !pixels {
                let mut rec = Recorder::new();
                for b in 0..first.seeds.len() {
                    let x = crate::GpuTensor::from_slice(
                        ctx,
                        &[1, lc, lh, lw],
                        &first.latents.data[b * per..(b + 1) * per],
                        self.dtype,
                    )?;
                    let img = self.decode_latents(ctx, &mut rec, req, &x)?;
                    first.images.push(HostTensor::new(&[3, req.height, req.width], img)?);
                }
            }
            return Ok(first);
        }
        let (hh, hw) = (h.height / 8, h.width / 8);
        let mut sources = Vec::with_capacity(first.seeds.len());
        for b in 0..first.seeds.len() {
            let source = if pixels {
                let img = &first.images[b];
                let q = HostTensor::new(&img.shape, quantize_u8(&img.data))?;
                InitSource::Pixels(resize_image(&q, h.width, h.height)?)
            } else {
                let lat = HostTensor::new(&[lc, lh, lw], first.latents.data[b * per..(b + 1) * per].to_vec())?;
                let mode = match h.upscaler {
                    HiresUpscaler::LatentNearest => LatentInterp::Nearest,
                    HiresUpscaler::LatentNearestExact => LatentInterp::NearestExact,
                    _ => LatentInterp::Bilinear,
                };
                InitSource::Latents(upscale_latents_with(&lat, hh, hw, mode)?)
            };
            sources.push(source);
        }
        let second = Request {
            width: h.width,
            height: h.height,
            steps: if h.steps == 0 { req.steps } else { h.steps },
            init: Some(InitImage { sources, strength: h.denoise, mask: None }),
            hires: None,
            // A noise file belongs to the first pass's size.
            noise: NoiseOverride::default(),
            ..req.clone()
        };
        second.validate()?;
        self.sample(ctx, &second, progress, watch, Finish::default())
    }

    /// A1111's "Inpaint area: Only masked": the masked region plus `padding`, grown to the
    /// request's aspect, is cut out and inpainted at the request's size, then scaled back and
    /// composited over the input with the full-size mask.
    pub(crate) fn generate_only_masked(
        &self,
        ctx: &Context,
        req: &Request,
        padding: usize,
        progress: &mut dyn FnMut(Progress),
        watch: &mut Watch<'_>,
    ) -> Result<Output> {
        let init = req.init.as_ref().ok_or_else(|| Error::invalid("inpaint", "only masked needs an init image"))?;
        let mask = init.mask.as_ref().ok_or_else(|| Error::invalid("inpaint", "only masked needs a mask"))?;
        let region = crop_region(&mask.alpha, req.width, req.height, padding)?;
        let (rw, rh) = (region[2] - region[0], region[3] - region[1]);
        let mut originals = Vec::with_capacity(init.sources.len());
        let mut sources = Vec::with_capacity(init.sources.len());
        for s in &init.sources {
            let InitSource::Pixels(p) = s else {
                return Err(Error::invalid("inpaint", "inpainting needs the init image's pixels"));
            };
            sources.push(InitSource::Pixels(resize_image(&crop(p, region)?, req.width, req.height)?));
            originals.push(p);
        }
        let alpha = resize_mask(&crop(&mask.alpha, region)?, req.width, req.height)?;
        let inner = Request {
            init: Some(InitImage {
                sources,
                strength: init.strength,
                mask: Some(InpaintMask { alpha, blur: mask.blur, only_masked_padding: None }),
            }),
            ..req.clone()
        };
        let mut out = self.sample(ctx, &inner, progress, watch, Finish { decode: true, overlay: false })?;
        for (b, img) in out.images.iter_mut().enumerate() {
            let original = originals[if originals.len() == 1 { 0 } else { b }];
            let back = resize_image(img, rw, rh)?;
            let mut full = original.clone();
            paste(&mut full, &back, region)?;
            apply_overlay(&mut full.data, &Overlay { original: original.data.clone(), alpha: mask.alpha.data.clone() });
            *img = full;
        }
        Ok(out)
    }
}
