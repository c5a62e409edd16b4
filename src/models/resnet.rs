//! diffusers `ResnetBlock2D` as SD1.x's UNet and VAE configure it: pre-activation (GroupNorm + SiLU
//! before each 3×3 conv), a 1×1 `conv_shortcut` when the channel count changes,
//! `output_scale_factor` 1 and no dropout at inference:
//! `shortcut(x) + conv2(silu(norm2(conv1(silu(norm1(x))) [+ temb])))`.
//!
//! The UNet's blocks add a projected time embedding between the convs; the VAE's have none
//! ([`ResnetOptions::temb_dim`]). With one, `conv1`'s bias and `time_emb_proj`'s bias both add a
//! per-channel constant to the same sum, so they are added once, at load, into
//! `conv1_temb_bias`; the time projections themselves run for all resnets together (the UNet's
//! `TembProjections`) and arrive here without bias.

use crate::kernels::binary::add;
use crate::nn::{Conv2d, GroupNorm, Linear, Loader};
use crate::{Context, Error, GpuTensor, Recorder, Result};

const OP: &str = "resnet";

/// What differs between the UNet's resnets and the VAE's.
#[derive(Clone, Copy, Debug)]
pub struct ResnetOptions {
    pub groups: usize,
    /// GroupNorm epsilon (UNet 1e-5, VAE 1e-6).
    pub eps: f32,
    /// Width of the time embedding that `time_emb_proj` projects (UNet); `None` for no time
    /// embedding (VAE).
    pub temb_dim: Option<usize>,
    /// Also load a `conv_shortcut` when the widths agree but the checkpoint has one (VAE).
    /// diffusers creates it exactly when the widths differ; a checkpoint that lacks a needed one
    /// is caught by the key lookup either way.
    pub shortcut_if_stored: bool,
}

/// A resnet's time-embedding input: `time_emb_proj` and the bias `conv1` runs with.
pub struct TimeProjection {
    pub time_emb_proj: Linear,
    /// `conv1.bias + time_emb_proj.bias`.
    pub conv1_temb_bias: GpuTensor,
}

pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    /// Present when the block adds a time embedding.
    pub time: Option<TimeProjection>,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
    /// 1×1 projection, present when the channel count changes (LDM `nin_shortcut`).
    pub conv_shortcut: Option<Conv2d>,
    pub in_channels: usize,
    pub out_channels: usize,
}

impl ResnetBlock2D {
    pub fn load(l: &Loader, cin: usize, cout: usize, opts: &ResnetOptions) -> Result<ResnetBlock2D> {
        let conv_shortcut = if cin != cout || (opts.shortcut_if_stored && l.contains("conv_shortcut.weight")) {
            Some(Conv2d::load(&l.pp("conv_shortcut"), cin, cout, 1, 1)?)
        } else {
            None
        };
        // Each model's own read order, so a checkpoint missing several weights still reports the
        // same first one.
        let (norm1, conv1, time) = match opts.temb_dim {
            Some(temb_dim) => {
                let conv1 = Conv2d::load(&l.pp("conv1"), cin, cout, 3, 1)?;
                let time_emb_proj = Linear::load(&l.pp("time_emb_proj"), temb_dim, cout, true)?;
                // Summed in f32 from the stored values, rounded once to the loader's dtype.
                let mut bias = l.pp("time_emb_proj").get("bias", &[cout])?.data;
                if conv1.bias.is_some() {
                    for (b, c) in bias.iter_mut().zip(l.pp("conv1").get("bias", &[cout])?.data) {
                        *b += c;
                    }
                }
                let norm1 = GroupNorm::load(&l.pp("norm1"), opts.groups, cin, opts.eps)?;
                let conv1_temb_bias = l.upload(&[cout], &bias)?;
                (norm1, conv1, Some(TimeProjection { time_emb_proj, conv1_temb_bias }))
            }
            None => {
                let norm1 = GroupNorm::load(&l.pp("norm1"), opts.groups, cin, opts.eps)?;
                let conv1 = Conv2d::load(&l.pp("conv1"), cin, cout, 3, 1)?;
                (norm1, conv1, None)
            }
        };
        Ok(ResnetBlock2D {
            norm1,
            conv1,
            time,
            norm2: GroupNorm::load(&l.pp("norm2"), opts.groups, cout, opts.eps)?,
            conv2: Conv2d::load(&l.pp("conv2"), cout, cout, 3, 1)?,
            conv_shortcut,
            in_channels: cin,
            out_channels: cout,
        })
    }

    /// `x [B, Cin, H, W]` → `[B, Cout, H, W]`. A block with a time embedding takes `temb
    /// [B, Cout]`: its `time_emb_proj` weight applied to SiLU(time embedding) but not its bias
    /// (that is in `conv1_temb_bias`); a block without takes `None`.
    pub fn forward(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        temb: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        let h = match (&self.time, temb) {
            (Some(time), Some(temb)) => {
                let [b, ..] = super::dims4(OP, x)?;
                if temb.shape != [b, self.out_channels] {
                    return Err(Error::shape(
                        OP,
                        format!("temb {:?} must be [{b}, {}] for x {:?}", temb.shape, self.out_channels, x.shape),
                    ));
                }
                let h = self.norm1.forward(ctx, rec, x, true)?;
                let h = self.conv1.forward_bias(ctx, rec, &h, Some(&time.conv1_temb_bias))?;
                add(ctx, rec, &h, &temb.reshape(&[b, self.out_channels, 1, 1])?)?
            }
            (None, None) => {
                let h = self.norm1.forward(ctx, rec, x, true)?;
                self.conv1.forward(ctx, rec, &h)?
            }
            (Some(_), None) => return Err(Error::invalid(OP, "this block adds a time embedding; none was given")),
            (None, Some(_)) => return Err(Error::invalid(OP, "this block has no time embedding; one was given")),
        };
        let h = self.norm2.forward(ctx, rec, &h, true)?;
        let h = self.conv2.forward(ctx, rec, &h)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(ctx, rec, x)?,
            None => x.clone(),
        };
        add(ctx, rec, &skip, &h)
    }
}
