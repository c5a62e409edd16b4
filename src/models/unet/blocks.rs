//! The UNet's levels: diffusers `CrossAttnDownBlock2D` / `DownBlock2D` (one type here, the
//! attentions optional), `UNetMidBlock2DCrossAttn`, `CrossAttnUpBlock2D` / `UpBlock2D`, and the
//! `Downsample2D` / `Upsample2D` between levels.

use super::embeddings::TembIter;
use super::transformer::Transformer2DModel;
use super::RESNET_EPS;
use crate::kernels::concat::concat_channels;
use crate::kernels::upsample::upsample_nearest;
use crate::models::resnet::{ResnetBlock2D, ResnetOptions};
use crate::nn::{Conv2d, Loader};
use crate::weights::detect::UNetConfig;
use crate::{Context, Error, GpuTensor, Recorder, Result};

/// What every block's loader needs besides its own widths.
pub struct BlockCtx<'a> {
    pub cfg: &'a UNetConfig,
    pub resnet: ResnetOptions,
}

impl BlockCtx<'_> {
    pub fn new(cfg: &UNetConfig) -> BlockCtx<'_> {
        let resnet = ResnetOptions {
            groups: cfg.norm_num_groups,
            eps: RESNET_EPS,
            temb_dim: Some(cfg.time_embed_dim),
            shortcut_if_stored: false,
        };
        BlockCtx { cfg, resnet }
    }

    fn resnet(&self, l: &Loader, cin: usize, cout: usize) -> Result<ResnetBlock2D> {
        ResnetBlock2D::load(l, cin, cout, &self.resnet)
    }

    fn transformer(&self, l: &Loader, c: usize, attn: Attn) -> Result<Transformer2DModel> {
        let cfg = self.cfg;
        Transformer2DModel::load(l, c, cfg.cross_attention_dim, attn.heads, attn.depth, cfg.norm_num_groups)
    }
}

/// The transformers of one level: blocks per transformer and heads.
#[derive(Clone, Copy, Debug)]
pub struct Attn {
    pub depth: usize,
    pub heads: usize,
}

impl Attn {
    /// Down level `i`'s, or `None` where it has no attention.
    pub fn down(cfg: &UNetConfig, i: usize) -> Option<Attn> {
        let depth = *cfg.down_transformer_depth.get(i)?;
        (cfg.down_cross_attention[i] && depth > 0).then(|| Attn { depth, heads: cfg.heads[i] })
    }

    /// Up level `i`'s (bottom first), or `None`.
    pub fn up(cfg: &UNetConfig, i: usize) -> Option<Attn> {
        let depth = *cfg.up_transformer_depth.get(i)?;
        (cfg.up_cross_attention[i] && depth > 0).then(|| Attn { depth, heads: cfg.up_heads(i) })
    }

    pub fn mid(cfg: &UNetConfig) -> Option<Attn> {
        let depth = cfg.mid_transformer_depth;
        (cfg.mid_cross_attention && depth > 0).then(|| Attn { depth, heads: cfg.mid_heads() })
    }
}

/// Runs `r` with the next projection from the forward pass's list.
fn resnet_next(
    r: &ResnetBlock2D,
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    temb: &mut TembIter,
) -> Result<GpuTensor> {
    let t = temb.next().ok_or_else(|| Error::invalid("unet.resnet", "time projections ran out"))?;
    r.forward(ctx, rec, x, Some(&t))
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
        l: &Loader,
        bc: &BlockCtx,
        cin: usize,
        cout: usize,
        attn: Option<Attn>,
        downsample: bool,
    ) -> Result<DownBlock> {
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..bc.cfg.layers_per_block {
            let rin = if j == 0 { cin } else { cout };
            resnets.push(bc.resnet(&l.pp("resnets").pp(j), rin, cout)?);
            if let Some(a) = attn {
                attentions.push(bc.transformer(&l.pp("attentions").pp(j), cout, a)?);
            }
        }
        let downsampler = if downsample {
            let l = l.pp("downsamplers").pp(0).pp("conv");
            Some(Downsample2D { conv: Conv2d::load(&l, cout, cout, 3, 2)? })
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
            h = resnet_next(r, ctx, rec, &h, temb)?;
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
    pub fn load(l: &Loader, bc: &BlockCtx, c: usize) -> Result<MidBlock> {
        let attention = match Attn::mid(bc.cfg) {
            Some(a) => Some(bc.transformer(&l.pp("attentions").pp(0), c, a)?),
            None => None,
        };
        Ok(MidBlock {
            resnets: vec![bc.resnet(&l.pp("resnets").pp(0), c, c)?, bc.resnet(&l.pp("resnets").pp(1), c, c)?],
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
        let mut h = resnet_next(&self.resnets[0], ctx, rec, x, temb)?;
        if let Some(a) = &self.attention {
            h = a.forward(ctx, rec, &h, context)?;
        }
        resnet_next(&self.resnets[1], ctx, rec, &h, temb)
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
    pub fn load(
        l: &Loader,
        bc: &BlockCtx,
        prev: usize,
        cout: usize,
        skip_last: usize,
        attn: Option<Attn>,
        upsample: bool,
    ) -> Result<UpBlock> {
        let n = bc.cfg.layers_per_block + 1;
        let mut resnets = Vec::new();
        let mut attentions = Vec::new();
        for j in 0..n {
            let rin = if j == 0 { prev } else { cout };
            let skip = if j == n - 1 { skip_last } else { cout };
            resnets.push(bc.resnet(&l.pp("resnets").pp(j), rin + skip, cout)?);
            if let Some(a) = attn {
                attentions.push(bc.transformer(&l.pp("attentions").pp(j), cout, a)?);
            }
        }
        let upsampler = if upsample {
            let l = l.pp("upsamplers").pp(0).pp("conv");
            Some(Upsample2D { conv: Conv2d::load(&l, cout, cout, 3, 1)? })
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
            h = resnet_next(r, ctx, rec, &h, temb)?;
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
