//! The UNet's levels: diffusers `CrossAttnDownBlock2D` / `DownBlock2D` (one type here, the
//! attentions optional), `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D` / `UpBlock2D`, and the
//! `Downsample2D` / `Upsample2D` between levels.

use super::resnet::{ResnetBlock2D, TembIter};
use super::transformer::Transformer2DModel;
use crate::kernels::concat::concat_channels;
use crate::kernels::upsample::upsample_nearest;
use crate::nn::Conv2d;
use crate::weights::detect::UNetConfig;
use crate::weights::var_builder::VarBuilder;
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

/// What every block's loader needs besides its own widths.
pub struct BlockCtx<'a> {
    pub cfg: &'a UNetConfig,
    pub dtype: DType,
}

impl BlockCtx<'_> {
    fn resnet(&self, ctx: &Context, vb: &VarBuilder, cin: usize, cout: usize) -> Result<ResnetBlock2D> {
        ResnetBlock2D::load(ctx, vb, cin, cout, self.cfg.time_embed_dim, self.cfg.norm_num_groups, self.dtype)
    }

    fn transformer(&self, ctx: &Context, vb: &VarBuilder, c: usize) -> Result<Transformer2DModel> {
        let cfg = self.cfg;
        Transformer2DModel::load(
            ctx,
            vb,
            c,
            cfg.cross_attention_dim,
            cfg.num_heads,
            cfg.transformer_layers_per_block,
            cfg.norm_num_groups,
            self.dtype,
        )
    }
}

/// diffusers `Downsample2D` with a conv: 3×3, stride 2, padding 1 (so `h → ⌈h/2⌉`).
pub struct Downsample2D {
    pub conv: Conv2d,
}

/// diffusers `Upsample2D`: nearest-neighbour resize, then a 3×3 conv.
pub struct Upsample2D {
    pub conv: Conv2d,
}

impl Upsample2D {
    /// Resizes to `out_h × out_w`: twice the input for latents divisible by 8, otherwise the
    /// size of the skip connection that comes next (diffusers' `forward_upsample_size`).
    pub fn forward(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        out_h: usize,
        out_w: usize,
    ) -> Result<GpuTensor> {
        let h = upsample_nearest(ctx, rec, x, out_h, out_w)?;
        self.conv.forward(ctx, rec, &h)
    }
}

/// `CrossAttnDownBlock2D` (with `attentions`) or `DownBlock2D` (without).
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    pub downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn load(
        ctx: &Context,
        vb: &VarBuilder,
        bc: &BlockCtx,
        cin: usize,
        cout: usize,
        cross_attention: bool,
        downsample: bool,
    ) -> Result<DownBlock> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..bc.cfg.layers_per_block {
            let rin = if j == 0 { cin } else { cout };
            resnets.push(bc.resnet(ctx, &vb.pp("resnets").pp(j), rin, cout)?);
            if cross_attention {
                attentions.push(bc.transformer(ctx, &vb.pp("attentions").pp(j), cout)?);
            }
        }
        let downsampler = if downsample {
            let vb = vb.pp("downsamplers").pp(0).pp("conv");
            Some(Downsample2D { conv: Conv2d::load(ctx, &vb, cout, cout, 3, 2, bc.dtype)? })
        } else {
            None
        };
        Ok(DownBlock { resnets, attentions, downsampler })
    }

    /// Runs the level and pushes every output the up path will concatenate: one per resnet (after
    /// its attention) and the downsampled one.
    pub fn forward(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        temb: &mut TembIter,
        context: &GpuTensor,
        skips: &mut Vec<GpuTensor>,
    ) -> Result<GpuTensor> {
        let mut h = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            h = r.forward_next(ctx, rec, &h, temb)?;
            if let Some(a) = self.attentions.get(j) {
                h = a.forward(ctx, rec, &h, context)?;
            }
            skips.push(h.clone());
        }
        if let Some(d) = &self.downsampler {
            h = d.conv.forward(ctx, rec, &h)?;
            skips.push(h.clone());
        }
        Ok(h)
    }
}

/// `UNetMidBlock2DCrossAttn` (one attention between two resnets), or resnets only when the
/// checkpoint's mid block has no attention.
pub struct MidBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attention: Option<Transformer2DModel>,
}

impl MidBlock {
    pub fn load(ctx: &Context, vb: &VarBuilder, bc: &BlockCtx, c: usize) -> Result<MidBlock> {
        let attention =
            if bc.cfg.mid_cross_attention { Some(bc.transformer(ctx, &vb.pp("attentions").pp(0), c)?) } else { None };
        Ok(MidBlock {
            resnets: vec![
                bc.resnet(ctx, &vb.pp("resnets").pp(0), c, c)?,
                bc.resnet(ctx, &vb.pp("resnets").pp(1), c, c)?,
            ],
            attention,
        })
    }

    pub fn forward(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        temb: &mut TembIter,
        context: &GpuTensor,
    ) -> Result<GpuTensor> {
        let mut h = self.resnets[0].forward_next(ctx, rec, x, temb)?;
        if let Some(a) = &self.attention {
            h = a.forward(ctx, rec, &h, context)?;
        }
        self.resnets[1].forward_next(ctx, rec, &h, temb)
    }
}

/// `CrossAttnUpBlock2D` (with `attentions`) or `UpBlock2D` (without).
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub attentions: Vec<Transformer2DModel>,
    pub upsampler: Option<Upsample2D>,
}

impl UpBlock {
    /// Widths as diffusers computes them: resnet `j` takes `prev` (the level below) or `cout`
    /// channels, concatenated with a skip of `cout` channels, except the last one whose skip
    /// comes from the level above (`skip_last`).
    #[allow(clippy::too_many_arguments)]
    pub fn load(
        ctx: &Context,
        vb: &VarBuilder,
        bc: &BlockCtx,
        prev: usize,
        cout: usize,
        skip_last: usize,
        cross_attention: bool,
        upsample: bool,
    ) -> Result<UpBlock> {
        let n = bc.cfg.layers_per_block + 1;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..n {
            let rin = if j == 0 { prev } else { cout };
            let skip = if j == n - 1 { skip_last } else { cout };
            resnets.push(bc.resnet(ctx, &vb.pp("resnets").pp(j), rin + skip, cout)?);
            if cross_attention {
                attentions.push(bc.transformer(ctx, &vb.pp("attentions").pp(j), cout)?);
            }
        }
        let upsampler = if upsample {
            let vb = vb.pp("upsamplers").pp(0).pp("conv");
            Some(Upsample2D { conv: Conv2d::load(ctx, &vb, cout, cout, 3, 1, bc.dtype)? })
        } else {
            None
        };
        Ok(UpBlock { resnets, attentions, upsampler })
    }

    /// Pops one skip per resnet (last pushed first); the upsampler then resizes to the size of the
    /// next skip still on the stack.
    pub fn forward(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        temb: &mut TembIter,
        context: &GpuTensor,
        skips: &mut Vec<GpuTensor>,
    ) -> Result<GpuTensor> {
        const OP: &str = "unet.up_block";
        let mut h = x.clone();
        for (j, r) in self.resnets.iter().enumerate() {
            let s = skips.pop().ok_or_else(|| Error::invalid(OP, "skip connections ran out"))?;
            h = concat_channels(ctx, rec, &h, &s)?;
            h = r.forward_next(ctx, rec, &h, temb)?;
            if let Some(a) = self.attentions.get(j) {
                h = a.forward(ctx, rec, &h, context)?;
            }
        }
        if let Some(u) = &self.upsampler {
            let next = skips.last().ok_or_else(|| Error::invalid(OP, "no skip connection left to upsample to"))?;
            let [_, _, oh, ow] = super::dims4(OP, next)?;
            h = u.forward(ctx, rec, &h, oh, ow)?;
        }
        Ok(h)
    }
}
