//! The VAE's resolution changes: `Upsample2D` (nearest ×2 then a 3×3 conv) and `Downsample2D` (a
//! 3×3 stride-2 conv after padding right and bottom by one).
//!
//! Kept apart from the UNet's samplers on purpose: the VAE's downsampler pads asymmetrically and
//! its upsampler always doubles (no skip connection to match), so sharing would only add branches
//! to both.

use crate::kernels::conv2d::Conv2dParams;
use crate::kernels::upsample::upsample_nearest;
use crate::nn::{Conv2d, Loader};
use crate::{Context, Error, GpuTensor, Recorder, Result};

/// `Upsample2D(use_conv=True)`: nearest-neighbour ×2, then a 3×3 conv (`upsamplers.0.conv`).
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn load(l: &Loader, channels: usize) -> Result<Upsample2D> {
        Ok(Upsample2D { conv: Conv2d::load(&l.pp("conv"), channels, channels, 3, 1)? })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        // The decoder has no skip connections, so the target is always exactly twice the input
        // (odd latents stay exact: 5×7 → 10×14 → ... → 40×56).
        let &[_, _, h, w] = x.shape.as_slice() else {
            return Err(Error::shape("vae.upsample", format!("expected [N, C, H, W], got {:?}", x.shape)));
        };
        let up = upsample_nearest(ctx, rec, x, 2 * h, 2 * w)?;
        self.conv.forward(ctx, rec, &up)
    }
}

/// `Downsample2D(use_conv=True, padding=0)`: diffusers pads `(0, 1, 0, 1)` (right and bottom by
/// one, never symmetric) and runs a 3×3 stride-2 conv without padding; the conv kernel takes the
/// asymmetric padding directly, so no padded copy is made.
pub struct Downsample2D {
    pub conv: Conv2d,
}

impl Downsample2D {
    /// `Conv2dParams::pad` is `[top, bottom, left, right]`.
    pub const PARAMS: Conv2dParams = Conv2dParams { stride: 2, pad: [0, 1, 0, 1] };

    pub fn load(l: &Loader, channels: usize) -> Result<Downsample2D> {
        let conv = Conv2d::load_padded(&l.pp("conv"), channels, channels, 3, Self::PARAMS)?;
        Ok(Downsample2D { conv })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        self.conv.forward(ctx, rec, x)
    }
}
