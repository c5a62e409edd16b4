//! A1111's `POST /sdapi/v1/img2img` body: the txt2img fields plus the init image, its mask and
//! how both are fitted to the requested size, turned into the library's [`InitImage`].

use base64::Engine;
use serde::{Deserialize, Serialize};

use super::a1111::Txt2ImgRequest;
use crate::pipeline::init::{InitImage, InitSource, InpaintMask};
use crate::pipeline::init_image::{binarize_mask, blur_mask, decode_image, decode_mask, fit_image, ResizeMode};
use crate::{Error, HostTensor, Result};

const OP: &str = "img2img";

fn strength_default() -> f64 {
    0.75
}

fn four() -> f32 {
    4.0
}

fn yes() -> bool {
    true
}

/// The body of `POST /sdapi/v1/img2img`, with A1111's names and defaults
/// (`StableDiffusionImg2ImgProcessingAPI`).
#[derive(Clone, Debug, Deserialize, Serialize)]
pub struct Img2ImgRequest {
    #[serde(flatten)]
    pub base: Txt2ImgRequest,
    /// Base64 images (a `data:image/…;base64,` prefix is accepted): one for every image, or one
    /// per image of the batch.
    #[serde(default)]
    pub init_images: Vec<String>,
    /// 0 just resize, 1 crop and resize, 2 resize and fill (3, latent upscale, is refused).
    #[serde(default)]
    pub resize_mode: i64,
    /// Base64 mask, white = repaint.
    #[serde(default)]
    pub mask: Option<String>,
    #[serde(default = "four")]
    pub mask_blur: f32,
    /// 1 ("original") is what lorafuse does; 0, 2 and 3 are warned about.
    #[serde(default)]
    pub inpainting_fill: i64,
    /// A1111's API defaults to "only masked".
    #[serde(default = "yes")]
    pub inpaint_full_res: bool,
    #[serde(default)]
    pub inpaint_full_res_padding: usize,
    #[serde(default)]
    pub inpainting_mask_invert: i64,
    #[serde(default)]
    pub include_init_images: bool,
}

impl Img2ImgRequest {
    fn resize(&self) -> Result<ResizeMode> {
        match self.resize_mode {
            0 => Ok(ResizeMode::JustResize),
            1 => Ok(ResizeMode::CropAndResize),
            2 => Ok(ResizeMode::ResizeAndFill),
            m => Err(Error::invalid(
                "resize_mode",
                format!("resize_mode {m} is not available (0 just resize, 1 crop and resize, 2 resize and fill)"),
            )),
        }
    }

    /// `strength` in the body is `denoising_strength`; the rest of the init as the library
    /// takes it, every image fitted to `width`×`height` by `resize_mode`, as A1111 does.
    pub fn init(&self) -> Result<InitImage> {
        if self.init_images.is_empty() {
            return Err(Error::invalid(OP, "init_images is empty: img2img needs at least one image"));
        }
        if self.inpainting_fill != 1 && self.mask.is_some() {
            log::warn!(
                "inpainting_fill {} is treated as 1 (original): the masked area starts from the init image's latents",
                self.inpainting_fill
            );
        }
        let (w, h) = (self.base.width, self.base.height);
        let mode = self.resize()?;
        let sources = self
            .init_images
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let img = decode_image(&decode_b64(b, &format!("init_images[{i}]"))?, &format!("init_images[{i}]"))?;
                Ok(InitSource::Pixels(fit_image(&img, w, h, mode)?))
            })
            .collect::<Result<Vec<_>>>()?;
        let mask = match &self.mask {
            None => None,
            Some(m) => {
                let mut raw = decode_mask(&decode_b64(m, "mask")?, "mask")?;
                if self.inpainting_mask_invert != 0 {
                    raw = HostTensor::new(&raw.shape, raw.data.iter().map(|v| 1.0 - v).collect())?;
                }
                // As the CLI and A1111: rounded to black and white, blurred at its own size,
                // then fitted like the image.
                let mut alpha = fit_image(&blur_mask(&binarize_mask(&raw), self.mask_blur)?, w, h, mode)?;
                alpha.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
                Some(InpaintMask {
                    alpha,
                    blur: self.mask_blur,
                    only_masked_padding: self.inpaint_full_res.then_some(self.inpaint_full_res_padding),
                })
            }
        };
        let strength = self.base.denoising_strength.unwrap_or_else(strength_default);
        Ok(InitImage { sources, strength, mask })
    }
}

/// Base64 (standard alphabet, with or without a data-URL prefix) → bytes.
fn decode_b64(s: &str, what: &str) -> Result<Vec<u8>> {
    let body = match s.split_once(";base64,") {
        Some((prefix, rest)) if prefix.starts_with("data:") => rest,
        _ => s,
    };
    base64::engine::general_purpose::STANDARD
        .decode(body.trim())
        .map_err(|e| Error::invalid(OP, format!("{what} is not valid base64: {e}")))
}
