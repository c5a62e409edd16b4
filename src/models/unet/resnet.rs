//! diffusers `ResnetBlock2D` as SD1.x's UNet configures it: pre-activation (GroupNorm + SiLU before
//! each 3×3 conv), the projected time embedding added between the convs, a 1×1 `conv_shortcut`
//! when the channel count changes, `output_scale_factor` 1 and no dropout at inference.
//!
//! `conv1`'s bias and `time_emb_proj`'s bias both add a per-channel constant to the same sum, so
//! they are added once, at load, into `conv1_temb_bias`; the time projections themselves run for
//! all resnets together (see `TembProjections` in `embeddings.rs`) and arrive here without bias.

use crate::kernels::binary::add;
use crate::kernels::conv2d::conv2d;
use crate::nn::{Conv2d, GroupNorm, Linear};
use crate::weights::var_builder::VarBuilder;
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

/// diffusers' `resnet_eps` default for SD1 (`norm_eps` in the UNet config).
pub const RESNET_EPS: f32 = 1e-5;

/// The per-resnet time projections `[B, Cout]` of one forward pass, in forward order.
pub type TembIter = std::vec::IntoIter<GpuTensor>;

pub struct ResnetBlock2D {
    pub norm1: GroupNorm,
    pub conv1: Conv2d,
    pub time_emb_proj: Linear,
    /// `conv1.bias + time_emb_proj.bias`, the bias `conv1` runs with.
    pub conv1_temb_bias: GpuTensor,
    pub norm2: GroupNorm,
    pub conv2: Conv2d,
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
        temb_dim: usize,
        groups: usize,
        dtype: DType,
    ) -> Result<ResnetBlock2D> {
        // diffusers creates the shortcut exactly when the widths differ (`use_in_shortcut`).
        let conv_shortcut =
            if cin != cout { Some(Conv2d::load(ctx, &vb.pp("conv_shortcut"), cin, cout, 1, 1, dtype)?) } else { None };
        let conv1 = Conv2d::load(ctx, &vb.pp("conv1"), cin, cout, 3, 1, dtype)?;
        let time_emb_proj = Linear::load(ctx, &vb.pp("time_emb_proj"), temb_dim, cout, true, dtype)?;
        // Summed in f32 from the stored values, rounded once to `dtype`.
        let mut bias = vb.pp("time_emb_proj").get("bias", &[cout])?.data;
        if conv1.bias.is_some() {
            for (b, c) in bias.iter_mut().zip(vb.pp("conv1").get("bias", &[cout])?.data) {
                *b += c;
            }
        }
        Ok(ResnetBlock2D {
            norm1: GroupNorm::load(ctx, &vb.pp("norm1"), groups, cin, RESNET_EPS, dtype)?,
            conv1,
            time_emb_proj,
            conv1_temb_bias: GpuTensor::from_slice(ctx, &[cout], &bias, dtype)?,
            norm2: GroupNorm::load(ctx, &vb.pp("norm2"), groups, cout, RESNET_EPS, dtype)?,
            conv2: Conv2d::load(ctx, &vb.pp("conv2"), cout, cout, 3, 1, dtype)?,
            conv_shortcut,
            in_channels: cin,
            out_channels: cout,
        })
    }

    /// `x [B, Cin, H, W]` and `temb [B, Cout]`, this resnet's `time_emb_proj` weight applied to
    /// SiLU(time embedding) but not its bias (that is in `conv1_temb_bias`) → `[B, Cout, H, W]`.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor, temb: &GpuTensor) -> Result<GpuTensor> {
        let [b, ..] = super::dims4("unet.resnet", x)?;
        if temb.shape != [b, self.out_channels] {
            return Err(Error::shape(
                "unet.resnet",
                format!("temb {:?} must be [{b}, {}] for x {:?}", temb.shape, self.out_channels, x.shape),
            ));
        }
        let h = self.norm1.forward(ctx, rec, x, true)?;
        let h = conv2d(ctx, rec, &h, &self.conv1.weight, Some(&self.conv1_temb_bias), self.conv1.params)?;
        let h = add(ctx, rec, &h, &temb.reshape(&[b, self.out_channels, 1, 1])?)?;
        let h = self.norm2.forward(ctx, rec, &h, true)?;
        let h = self.conv2.forward(ctx, rec, &h)?;
        let skip = match &self.conv_shortcut {
            Some(c) => c.forward(ctx, rec, x)?,
            None => x.clone(),
        };
        add(ctx, rec, &skip, &h)
    }

    /// Takes the next projection from the forward pass's list.
    pub(crate) fn forward_next(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        temb: &mut TembIter,
    ) -> Result<GpuTensor> {
        let t = temb.next().ok_or_else(|| Error::invalid("unet.resnet", "time projections ran out"))?;
        self.forward(ctx, rec, x, &t)
    }
}
