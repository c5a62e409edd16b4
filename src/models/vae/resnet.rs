//! The VAE's convolutional building blocks: diffusers `ResnetBlock2D` as the autoencoder uses it
//! (no time embedding, output scale 1, dropout 0), `Upsample2D` (nearest ×2 then a 3×3 conv) and
//! `Downsample2D` (a 3×3 stride-2 conv after padding right and bottom by one).
//!
//! Kept apart from the UNet's resnet on purpose: the VAE never adds a time embedding, and its
//! downsampler pads asymmetrically, so sharing would only add branches to both.

use crate::kernels::binary::add;
use crate::kernels::conv2d::Conv2dParams;
use crate::kernels::upsample::upsample_nearest;
use crate::nn::{Conv2d, GroupNorm};
use crate::weights::var_builder::VarBuilder;
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

/// GroupNorm epsilon of every VAE norm (diffusers `AutoencoderKL` passes `resnet_eps=1e-6`).
pub const EPS: f32 = 1e-6;

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

/// `ResnetBlock2D` without time embedding:
/// `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))))))`.
pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    /// 1×1 projection, present when the channel count changes (LDM `nin_shortcut`).
    pub conv_shortcut: Option<Conv2d>,
    pub in_channels: usize,
    pub out_channels: usize,
}

impl ResnetBlock2D {
    pub fn load(
        ctx: &Context,
        vb: &VarBuilder,
        cin: usize,
        cout: usize,
        groups: usize,
        dtype: DType,
    ) -> Result<ResnetBlock2D> {
        // diffusers creates the shortcut exactly when the widths differ; a checkpoint that has
        // one anyway (or lacks a needed one) is caught by the key lookup / shape check.
        let conv_shortcut = if cin != cout || vb.contains("conv_shortcut.weight") {
            Some(Conv2d::load(ctx, &vb.pp("conv_shortcut"), cin, cout, 1, 1, dtype)?)
        } else {
            None
        };
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(ctx, &vb.pp("norm1"), groups, cin, EPS, dtype)?,
            conv1: Conv2d::load(ctx, &vb.pp("conv1"), cin, cout, 3, 1, dtype)?,
            norm2: GroupNorm::load(ctx, &vb.pp("norm2"), groups, cout, EPS, dtype)?,
            conv2: Conv2d::load(ctx, &vb.pp("conv2"), cout, cout, 3, 1, dtype)?,
            conv_shortcut,
            in_channels: cin,
            out_channels: cout,
        })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let h = self.norm1.forward(ctx, rec, x, true)?;
        let h = self.conv1.forward(ctx, rec, &h)?;
        let h = self.norm2.forward(ctx, rec, &h, true)?;
        let h = self.conv2.forward(ctx, rec, &h)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(ctx, rec, x)?,
            None => x.clone(),
        };
        add(ctx, rec, &skip, &h)
    }
}

/// `Upsample2D(use_conv=True)`: nearest-neighbour ×2, then a 3×3 conv (`upsamplers.0.conv`).
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    pub fn load(ctx: &Context, vb: &VarBuilder, channels: usize, dtype: DType) -> Result<Upsample2D> {
        Ok(Upsample2D { conv: Conv2d::load(ctx, &vb.pp("conv"), channels, channels, 3, 1, dtype)? })
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

    pub fn load(ctx: &Context, vb: &VarBuilder, channels: usize, dtype: DType) -> Result<Downsample2D> {
        let conv = Conv2d::load_padded(ctx, &vb.pp("conv"), channels, channels, 3, Self::PARAMS, dtype)?;
        Ok(Downsample2D { conv })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        self.conv.forward(ctx, rec, x)
    }
}
