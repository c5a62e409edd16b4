//! SD1.x `AutoencoderKL` on the GPU: decoder (latents → image) and encoder (image → latent mean).
//!
//! Module names mirror diffusers (`encoder.*`, `decoder.*`, `quant_conv`, `post_quant_conv`)
//! through the [`Loader`]'s weight reader, so single-file checkpoints and diffusers folders load the same way.
//! Sizes come from [`VaeConfig`]; GroupNorm uses the config's groups and eps 1e-6.
//!
//! - [`Vae::decode`]: `z` already divided by the scaling factor → raw image, roughly [-1, 1].
//! - [`Vae::encode_mean`]: image in [-1, 1] → mean of the latent distribution (before scaling).
//! - [`Vae::decode_checked`]: the fp16 VAE is known to overflow on some latents (SD1.5's VAE has
//!   activations past 65504); this reads the image back and, on any NaN/Inf, decodes again with
//!   an f32 copy of the decoder that is loaded from the kept weight reader on first need.
//! - [`Vae::decode_tiled`] / [`Vae::encode_mean_tiled`]: the same in overlapping tiles
//!   ([`tiling`]), for images whose activations would not fit.
//! - [`to_image`] / [`postprocess`]: `clamp(x/2 + 0.5, 0, 1)`, the affine part on the GPU or
//!   everything on the host (there is no clamp kernel; the VAE runs once per image).
//! - [`taesd`]: the tiny autoencoder (TAESD / TAESDXL), loaded from its own files.

pub mod attention;
pub mod decoder;
pub mod encoder;
pub mod mid_block;
pub mod sampling;
pub mod taesd;
pub mod tiling;

use std::sync::{Arc, Mutex};

pub use attention::Attention;
pub use decoder::Decoder;
pub use encoder::Encoder;
pub use mid_block::MidBlock;
pub use sampling::{Downsample2D, Upsample2D};
pub use taesd::{TaesdDecoder, TaesdEncoder, TaesdLayout};
pub use tiling::VaeTiling;

use crate::kernels::binary::add_scaled;
use crate::kernels::conv2d::Conv2dParams;
use crate::kernels::embedding::embedding;
use crate::models::resnet::ResnetOptions;
use crate::nn::{AdaptableWeights, Conv2d, Loader};
use crate::weights::detect::VaeConfig;
use crate::weights::VarBuilder;
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

const OP: &str = "vae";

/// GroupNorm epsilon of every VAE norm (diffusers `AutoencoderKL` passes `resnet_eps=1e-6`).
pub const EPS: f32 = 1e-6;

/// The VAE's resnets: no time embedding, and a stored `conv_shortcut` is loaded even between
/// equal widths.
pub(crate) fn resnet_options(cfg: &VaeConfig) -> ResnetOptions {
    ResnetOptions { groups: cfg.norm_num_groups, eps: EPS, temb_dim: None, shortcut_if_stored: true }
}

/// Checks that `x` is `[N, channels, H, W]` in `dtype` before a block runs on it, so a wrong input
/// fails with the module's name instead of deep inside a kernel.
pub(crate) fn check_input(op: &'static str, x: &GpuTensor, channels: usize, dtype: DType) -> Result<()> {
    if x.shape.len() != 4 || x.shape[1] != channels {
        return Err(Error::shape(op, format!("expected [N, {channels}, H, W], got {:?}", x.shape)));
    }
    if x.dtype != dtype {
        return Err(Error::dtype(
            op,
            format!("input is {} but the weights were loaded as {}", x.dtype.name(), dtype.name()),
        ));
    }
    Ok(())
}

/// Rejects configurations the blocks cannot be built from (before any weight is read).
pub(crate) fn check_config(cfg: &VaeConfig) -> Result<()> {
    let g = cfg.norm_num_groups;
    if cfg.block_out_channels.is_empty() || cfg.layers_per_block == 0 {
        return Err(Error::invalid(OP, format!("VAE config without levels or resnets: {cfg:?}")));
    }
    if g == 0 || cfg.block_out_channels.iter().any(|c| c % g != 0) {
        return Err(Error::invalid(
            OP,
            format!("VAE channels {:?} are not all multiples of {g} norm groups", cfg.block_out_channels),
        ));
    }
    if cfg.latent_channels == 0 || cfg.in_channels == 0 || cfg.out_channels == 0 {
        return Err(Error::invalid(OP, format!("VAE config with zero channels: {cfg:?}")));
    }
    Ok(())
}

/// `post_quant_conv` (when the checkpoint has one) followed by the [`Decoder`].
pub struct LatentDecoder {
    pub post_quant_conv: Option<Conv2d>,
    pub decoder: Decoder,
}

impl LatentDecoder {
    /// `l` is scoped to the VAE component.
    pub fn load(l: &Loader, cfg: &VaeConfig) -> Result<LatentDecoder> {
        let lc = cfg.latent_channels;
        // diffusers' `use_post_quant_conv`: SD1.x always has it; newer VAEs may not.
        let post_quant_conv = if l.contains("post_quant_conv.weight") {
            Some(Conv2d::load(&l.pp("post_quant_conv"), lc, lc, 1, 1)?)
        } else {
            None
        };
        Ok(LatentDecoder { post_quant_conv, decoder: Decoder::load(&l.pp("decoder"), cfg)? })
    }

    /// Records only, in an arena (`Context::arena`): intermediates share buffers by liveness,
    /// so submit `rec` as a whole.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, z: &GpuTensor) -> Result<GpuTensor> {
        check_input("vae.decode", z, self.decoder.latent_channels, self.decoder.dtype)?;
        let _arena = ctx.arena();
        match &self.post_quant_conv {
            Some(p) => {
                let z = p.forward(ctx, rec, z)?;
                self.decoder.forward(ctx, rec, &z)
            }
            None => self.decoder.forward(ctx, rec, z),
        }
    }
}

/// The autoencoder. The encoder is optional: text-to-image never needs its weights on the GPU.
pub struct Vae {
    pub config: VaeConfig,
    pub dtype: DType,
    pub decoder: LatentDecoder,
    pub encoder: Option<Encoder>,
    /// The mean half of `quant_conv`: its first `latent` output rows are a contiguous view of the
    /// weight and bias, so the log-variance half is never computed.
    pub quant_conv_mean: Option<Conv2d>,
    /// The weight reader and adaptable-weights map of `load`, kept to load the f32 fallback decoder lazily.
    reader: VarBuilder,
    adaptable: AdaptableWeights,
    fallback: Mutex<Option<Arc<LatentDecoder>>>,
    /// The whole encoder with both halves of `quant_conv` (img2img samples the latent
    /// distribution), per dtype, loaded from `reader` on first use.
    moments: Mutex<Vec<(DType, Arc<MomentsEncoder>)>>,
}

/// The encoder and the full `quant_conv`: image → moments `[B, 2·latent, h, w]` (mean, then
/// log-variance), as diffusers' `AutoencoderKL.encode` builds its `DiagonalGaussianDistribution`.
pub struct MomentsEncoder {
    pub encoder: Encoder,
    pub quant_conv: Option<Conv2d>,
}

impl MomentsEncoder {
    pub fn load(l: &Loader, cfg: &VaeConfig) -> Result<MomentsEncoder> {
        let lc = cfg.latent_channels;
        let quant_conv = if l.contains("quant_conv.weight") {
            Some(Conv2d::load(&l.pp("quant_conv"), 2 * lc, 2 * lc, 1, 1)?)
        } else {
            None
        };
        Ok(MomentsEncoder { encoder: Encoder::load(&l.pp("encoder"), cfg)?, quant_conv })
    }

    /// Records only, in an arena: submit `rec` as a whole.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let _arena = ctx.arena();
        let m = self.encoder.forward(ctx, rec, x)?;
        match &self.quant_conv {
            Some(q) => q.forward(ctx, rec, &m),
            None => Ok(m),
        }
    }
}

/// diffusers' `DiagonalGaussianDistribution.sample` for one image: `moments` `[2·C, h, w]`
/// (mean, log-variance), `eps` unit-normal `[C, h, w]` → mean + exp(½·clamp(logvar, −30, 20))·eps.
pub fn sample_latent(moments: &[f32], eps: &[f32]) -> Result<Vec<f32>> {
    if moments.len() != 2 * eps.len() {
        return Err(Error::shape(
            "vae.sample",
            format!("moments have {} values, noise {} (expected twice as many)", moments.len(), eps.len()),
        ));
    }
    let (mean, logvar) = moments.split_at(eps.len());
    Ok(mean
        .iter()
        .zip(logvar)
        .zip(eps)
        .map(|((&m, &lv), &e)| {
            let std = (0.5 * lv.clamp(-30.0, 20.0)).exp();
            m + std * e
        })
        .collect())
}

impl Vae {
    /// Loads the encoder and the decoder as the loader's dtype. `l` is scoped to the VAE
    /// component (a reader from `ModelFiles::vae()`).
    pub fn load(l: &Loader, cfg: &VaeConfig) -> Result<Vae> {
        Self::load_parts(l, cfg, true)
    }

    /// Loads only the decoder (and `post_quant_conv`); [`Vae::encode_mean`] then errors.
    pub fn load_decoder(l: &Loader, cfg: &VaeConfig) -> Result<Vae> {
        Self::load_parts(l, cfg, false)
    }

    fn load_parts(l: &Loader, cfg: &VaeConfig, with_encoder: bool) -> Result<Vae> {
        check_config(cfg)?;
        let decoder = LatentDecoder::load(l, cfg)?;
        let (encoder, quant_conv_mean) = if with_encoder {
            let lc = cfg.latent_channels;
            let quant = if l.contains("quant_conv.weight") {
                // Only the mean half of the moments is ever used: keep its output channels.
                let q = l.pp("quant_conv");
                let w = q.get("weight", &[2 * lc, 2 * lc, 1, 1])?;
                let bias = match q.contains("bias") {
                    true => Some(q.upload(&[lc], &q.get("bias", &[2 * lc])?.data[..lc])?),
                    false => None,
                };
                let shape = [lc, 2 * lc, 1, 1];
                Some(Conv2d::from_host(&q, shape, &w.data[..lc * 2 * lc], bias, Conv2dParams::same(1, 1))?)
            } else {
                None
            };
            (Some(Encoder::load(&l.pp("encoder"), cfg)?), quant)
        } else {
            (None, None)
        };
        Ok(Vae {
            config: cfg.clone(),
            dtype: l.dtype(),
            decoder,
            encoder,
            quant_conv_mean,
            reader: l.reader().clone(),
            adaptable: l.adaptable().clone(),
            fallback: Mutex::new(None),
            moments: Mutex::new(Vec::new()),
        })
    }

    pub fn has_encoder(&self) -> bool {
        self.encoder.is_some()
    }

    /// `z [B, latent, h, w]` (already divided by the scaling factor) → raw image
    /// `[B, out, 8h, 8w]`, roughly in [-1, 1]. Records only (in an arena, see
    /// [`LatentDecoder::forward`]); nothing is submitted.
    pub fn decode(&self, ctx: &Context, rec: &mut Recorder, z: &GpuTensor) -> Result<GpuTensor> {
        self.decoder.forward(ctx, rec, z)
    }

    /// `x [B, in, H, W]` in [-1, 1] → latent mean `[B, latent, H/8, W/8]` (not yet multiplied by
    /// the scaling factor). Records only, in an arena like [`Vae::decode`].
    pub fn encode_mean(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let _arena = ctx.arena();
        let enc = self.encoder.as_ref().ok_or_else(|| {
            Error::invalid("vae.encode", "this VAE was loaded without its encoder (Vae::load_decoder)")
        })?;
        let moments = enc.forward(ctx, rec, x)?;
        match &self.quant_conv_mean {
            Some(q) => q.forward(ctx, rec, &moments),
            None => {
                // Without quant_conv the mean is the first half of each image's moments: gather
                // every other `latent·h·w` row.
                let [b, c2, h, w] = [moments.shape[0], moments.shape[1], moments.shape[2], moments.shape[3]];
                let half = (c2 / 2) * h * w;
                let rows = moments.reshape(&[2 * b, half])?;
                let ids: Vec<u32> = (0..b).map(|i| 2 * i as u32).collect();
                embedding(ctx, rec, &rows, &ids)?.reshape(&[b, c2 / 2, h, w])
            }
        }
    }

    /// The moments encoder in `dtype`, loaded on first use and then kept.
    pub fn moments_encoder(&self, ctx: &Context, dtype: DType) -> Result<Arc<MomentsEncoder>> {
        let mut slot = self.moments.lock().unwrap_or_else(|e| e.into_inner());
        if let Some((_, e)) = slot.iter().find(|(d, _)| *d == dtype) {
            return Ok(e.clone());
        }
        let l = Loader::new(ctx, self.reader.clone(), &self.adaptable, dtype);
        let e = Arc::new(MomentsEncoder::load(&l, &self.config)?);
        slot.push((dtype, e.clone()));
        Ok(e)
    }

    /// Image `[B, in, H, W]` in [-1, 1] (host values) → moments `[B, 2·latent, H/8, W/8]` on the
    /// host, in overlapping tiles when `tiling` is given and the image is larger than one (mean
    /// and log-variance blend like any other channel). Runs in the VAE's dtype; an f16 result
    /// with NaN/Inf (the SD VAE's known overflow) is computed again in f32.
    pub fn encode_moments_host(
        &self,
        ctx: &Context,
        shape: &[usize],
        image: &[f32],
        tiling: Option<&VaeTiling>,
    ) -> Result<Vec<f32>> {
        let f = self.scale_factor();
        let whole = |shape: &[usize], image: &[f32]| self.encode_moments_whole(ctx, shape, image);
        match tiling {
            Some(t) if shape.len() == 4 && (shape[2] / f > t.tile || shape[3] / f > t.tile) => {
                let input = crate::HostTensor::new(shape, image.to_vec())?;
                let lc2 = 2 * self.config.latent_channels;
                Ok(tiling::map_tiles(&input, t, (f, 1), lc2, &mut |s, v| whole(s, v))?.data)
            }
            _ => whole(shape, image),
        }
    }

    fn encode_moments_whole(&self, ctx: &Context, shape: &[usize], image: &[f32]) -> Result<Vec<f32>> {
        let mut dtypes = vec![self.dtype];
        if self.dtype != DType::F32 {
            dtypes.push(DType::F32);
        }
        for (i, &dtype) in dtypes.iter().enumerate() {
            let enc = self.moments_encoder(ctx, dtype)?;
            let x = GpuTensor::from_slice(ctx, shape, image, dtype)?;
            let mut rec = Recorder::new();
            let m = enc.forward(ctx, &mut rec, &x)?;
            rec.submit(ctx)?;
            let values = m.to_vec(ctx)?;
            if values.iter().all(|v| v.is_finite()) {
                return Ok(values);
            }
            if i + 1 < dtypes.len() {
                log::warn!("the f16 VAE encoder overflowed; encoding again in f32");
            }
        }
        Err(Error::invalid("vae.encode", "the VAE encoder produced NaN/Inf even in f32 (a broken VAE?)"))
    }

    /// An f32 copy of the decoder, loaded from the kept weight reader on first use and then cached
    /// (the fp16 fallback; also usable to always decode in f32, as diffusers' `force_upcast`).
    pub fn f32_decoder(&self, ctx: &Context) -> Result<Arc<LatentDecoder>> {
        let mut slot = self.fallback.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(d) = slot.as_ref() {
            return Ok(d.clone());
        }
        let l = Loader::new(ctx, self.reader.clone(), &self.adaptable, DType::F32);
        let d = Arc::new(LatentDecoder::load(&l, &self.config)?);
        *slot = Some(d.clone());
        Ok(d)
    }

    /// [`Vae::decode`] guarded against the fp16 overflow. Submits `rec` (with whatever was
    /// recorded before) and, for an f16 VAE, reads the image back: if any value is NaN or Inf it
    /// logs a warning and decodes again with the f32 decoder, returning that f32 image instead of
    /// a black one. The result's dtype says which path produced it. f32 VAEs skip the readback.
    pub fn decode_checked(&self, ctx: &Context, rec: &mut Recorder, z: &GpuTensor) -> Result<GpuTensor> {
        Ok(self.checked(ctx, rec, z)?.0)
    }

    /// [`Vae::decode_checked`] read back to the host: an f16 VAE's check already read the image,
    /// so it is read once.
    pub fn decode_checked_host(&self, ctx: &Context, rec: &mut Recorder, z: &GpuTensor) -> Result<Vec<f32>> {
        match self.checked(ctx, rec, z)? {
            (_, Some(values)) => Ok(values),
            (out, None) => out.to_vec(ctx),
        }
    }

    /// The decoded image, and its values where the check read them back.
    fn checked(&self, ctx: &Context, rec: &mut Recorder, z: &GpuTensor) -> Result<(GpuTensor, Option<Vec<f32>>)> {
        let out = self.decode(ctx, rec, z)?;
        rec.submit(ctx)?;
        if self.dtype == DType::F32 {
            return Ok((out, None));
        }
        let values = out.to_vec(ctx)?;
        if values.iter().all(|v| v.is_finite()) {
            return Ok((out, Some(values)));
        }
        drop(values);
        let zh = z.to_vec(ctx)?;
        if zh.iter().any(|v| !v.is_finite()) {
            return Err(Error::invalid("vae.decode", "the latents themselves contain NaN/Inf; nothing to decode"));
        }
        log::warn!("fp16 VAE decode of {:?} produced NaN/Inf (activation overflow); decoding again in f32", z.shape);
        drop(out);
        let z32 = GpuTensor::from_slice(ctx, &z.shape, &zh, DType::F32)?;
        let out = self.f32_decoder(ctx)?.forward(ctx, rec, &z32)?;
        rec.submit(ctx)?;
        Ok((out, None))
    }
}

/// `x/2 + 0.5` on the GPU (one broadcast `add_scaled` against a scalar 1), the affine half of
/// diffusers' postprocessing; values are not clamped (no clamp kernel): clamp after readback with
/// [`clamp01`]. Records only.
pub fn to_image(ctx: &Context, rec: &mut Recorder, raw: &GpuTensor) -> Result<GpuTensor> {
    let one = GpuTensor::from_slice(ctx, &[1], &[1.0], raw.dtype)?;
    add_scaled(ctx, rec, raw, &one, 0.5, 0.5)
}

/// Clamps to [0, 1]; NaN becomes 0 so a broken pixel is black rather than poisoning an encoder.
pub fn clamp01(v: &[f32]) -> Vec<f32> {
    v.iter().map(|&x| if x.is_nan() { 0.0 } else { x.clamp(0.0, 1.0) }).collect()
}

/// Raw decoder output read back to the host → image values `clamp(x/2 + 0.5, 0, 1)`, as
/// diffusers' `VaeImageProcessor.postprocess` (`denormalize`) computes them.
pub fn postprocess(raw: &[f32]) -> Vec<f32> {
    raw.iter().map(|&x| if x.is_nan() { 0.0 } else { (x / 2.0 + 0.5).clamp(0.0, 1.0) }).collect()
}
