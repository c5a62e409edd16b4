//! SD1.x and SDXL `UNet2DConditionModel` on the GPU: noisy latents, timesteps and text context
//! in, predicted noise out, every dispatch recorded into the caller's [`Recorder`] (no readbacks).
//!
//! The structure and widths follow diffusers' `UNet2DConditionModel.__init__`, read from a
//! [`UNetConfig`] that [`crate::weights::detect`] derives from the weight shapes; module names
//! mirror diffusers' through the [`Loader`]'s weight reader, so single-file (LDM) checkpoints and
//! diffusers folders load the same way.
//!
//! The time embedding is a separate call ([`UNet::time_embedding`]) so a sampler can record
//! [`UNet::forward_with_temb`] once per resolution and replay it, rewriting only the small `temb`
//! tensor it bound ([`UNet::time_embedding_into`]) each step. Latent sizes that are not multiples of 8 work: every upsampler resizes to the
//! size of the skip connection it is concatenated with next (diffusers' `forward_upsample_size`).
//!
//! SDXL adds its pooled-text and size conditioning to the time embedding. That sum does not
//! change between steps, so [`UNet::added_embedding`] computes it once and the time-embedding
//! calls take it as `added` (`None` for SD1, required for SDXL).

pub mod blocks;
pub mod embeddings;
pub mod fused;
pub mod layout;
pub mod transformer;

use blocks::{Attn, BlockCtx, DownBlock, MidBlock, UpBlock};
use embeddings::{AddedEmbedding, TembProjections, TimestepEmbedding};

use crate::kernels::unary::{unary, UnaryOp};
pub(crate) use crate::models::dims4;
use crate::models::resnet::ResnetBlock2D;
use crate::nn::{Conv2d, GroupNorm, Linear, Loader};
use crate::weights::detect::UNetConfig;
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

const OP: &str = "unet";

/// diffusers' `resnet_eps` default for SD1 (`norm_eps` in the UNet config): every resnet's and
/// `conv_norm_out`'s GroupNorm.
pub const RESNET_EPS: f32 = 1e-5;

pub struct UNet {
    pub conv_in: Conv2d,
    pub time_embedding: TimestepEmbedding,
    /// SDXL's `text_time` conditioning (`None` for SD1).
    pub add_embedding: Option<AddedEmbedding>,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    /// Every resnet's `time_emb_proj`, run together per width.
    pub temb_projections: TembProjections,
    pub cfg: UNetConfig,
    pub dtype: DType,
}

impl UNet {
    /// Loads every weight under `l` (scoped to the UNet component) as the loader's dtype.
    pub fn load(l: &Loader, cfg: &UNetConfig) -> Result<UNet> {
        let ch = &cfg.block_out_channels;
        let levels = ch.len();
        if levels == 0
            || cfg.down_cross_attention.len() != levels
            || cfg.up_cross_attention.len() != levels
            || cfg.down_transformer_depth.len() != levels
            || cfg.up_transformer_depth.len() != levels
            || cfg.heads.len() != levels
        {
            return Err(Error::invalid(
                OP,
                format!(
                    "config has {levels} levels of block_out_channels {ch:?} but {} down and {} up cross-attention \
                     flags, {} down and {} up transformer depths and {} head counts",
                    cfg.down_cross_attention.len(),
                    cfg.up_cross_attention.len(),
                    cfg.down_transformer_depth.len(),
                    cfg.up_transformer_depth.len(),
                    cfg.heads.len()
                ),
            ));
        }
        if cfg.layers_per_block == 0 {
            return Err(Error::invalid(OP, "config has layers_per_block = 0"));
        }
        let bc = BlockCtx::new(cfg);
        let mut down_blocks = Vec::with_capacity(levels);
        for i in 0..levels {
            let cin = if i == 0 { ch[0] } else { ch[i - 1] };
            let li = l.pp("down_blocks").pp(i);
            down_blocks.push(DownBlock::load(&li, &bc, cin, ch[i], Attn::down(cfg, i), i + 1 < levels)?);
        }
        let rev: Vec<usize> = ch.iter().rev().copied().collect();
        let mut up_blocks = Vec::with_capacity(levels);
        for i in 0..levels {
            let prev = rev[i.saturating_sub(1)];
            let skip_last = rev[(i + 1).min(levels - 1)];
            let li = l.pp("up_blocks").pp(i);
            up_blocks.push(UpBlock::load(&li, &bc, prev, rev[i], skip_last, Attn::up(cfg, i), i + 1 < levels)?);
        }
        let mut mid_block = MidBlock::load(&l.pp("mid_block"), &bc, rev[0])?;
        let mut resnets: Vec<&mut ResnetBlock2D> = Vec::new();
        resnets.extend(down_blocks.iter_mut().flat_map(|b| b.resnets.iter_mut()));
        resnets.extend(mid_block.resnets.iter_mut());
        resnets.extend(up_blocks.iter_mut().flat_map(|b| b.resnets.iter_mut()));
        // Every resnet was loaded with a time embedding (`BlockCtx`), so none is skipped here.
        let mut projections: Vec<&mut Linear> =
            resnets.into_iter().filter_map(|r| r.time.as_mut().map(|t| &mut t.time_emb_proj)).collect();
        let temb_projections = TembProjections::build(l.ctx(), &mut projections, l.adaptable())?;
        Ok(UNet {
            conv_in: Conv2d::load(&l.pp("conv_in"), cfg.in_channels, ch[0], 3, 1)?,
            time_embedding: TimestepEmbedding::load(&l.pp("time_embedding"), ch[0], cfg.time_embed_dim)?,
            add_embedding: match &cfg.addition {
                Some(a) => Some(AddedEmbedding::load(&l.pp("add_embedding"), a, cfg.time_embed_dim)?),
                None => None,
            },
            down_blocks,
            mid_block,
            up_blocks,
            conv_norm_out: GroupNorm::load(&l.pp("conv_norm_out"), cfg.norm_num_groups, ch[0], RESNET_EPS)?,
            conv_out: Conv2d::load(&l.pp("conv_out"), ch[0], cfg.out_channels, 3, 1)?,
            temb_projections,
            cfg: cfg.clone(),
            dtype: l.dtype(),
        })
    }

    /// SDXL's added conditioning `[B, time_embed_dim]` from the pooled text embeddings
    /// `text_embeds [B, P]` and `time_ids` (six per item: original height and width, crop top and
    /// left, target height and width), to pass as `added` to the time-embedding calls; `None` for
    /// a UNet without it (SD1).
    pub fn added_embedding(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        text_embeds: &GpuTensor,
        time_ids: &[f32],
    ) -> Result<Option<GpuTensor>> {
        match &self.add_embedding {
            Some(a) => a.forward(ctx, rec, text_embeds, time_ids).map(Some),
            None => Ok(None),
        }
    }

    /// `[B, time_embed_dim]`: the timestep MLP's output for one timestep per batch item, plus the
    /// [`UNet::added_embedding`] (which an SDXL UNet requires and an SD1 UNet refuses).
    pub fn time_embedding(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        timesteps: &[f32],
        added: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        self.check_added(added)?;
        self.time_embedding.forward(ctx, rec, timesteps, added)
    }

    /// [`UNet::time_embedding`] into an existing `temb [B, time_embed_dim]`: the per-step update
    /// of a recorded [`UNet::forward_with_temb`] graph that bound `temb` (submit this, then replay).
    pub fn time_embedding_into(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        timesteps: &[f32],
        added: Option<&GpuTensor>,
        temb: &GpuTensor,
    ) -> Result<()> {
        self.check_added(added)?;
        self.time_embedding.forward_into(ctx, rec, timesteps, added, temb)
    }

    /// An SDXL UNet without its added embedding would run and return plausible but wrong noise,
    /// so both mismatches are errors. (Shapes are checked by the time embedding.)
    fn check_added(&self, added: Option<&GpuTensor>) -> Result<()> {
        match (&self.add_embedding, added) {
            (Some(_), None) => Err(Error::invalid(
                OP,
                "this UNet (SDXL) needs its added text/size embedding (UNet::added_embedding), none was given",
            )),
            (None, Some(a)) => Err(Error::invalid(
                OP,
                format!("an added embedding {:?} was given but this UNet (SD1) has no added conditioning", a.shape),
            )),
            _ => Ok(()),
        }
    }

    /// Predicted noise `[B, out_channels, h, w]` for latents `x [B, in_channels, h, w]`, the time
    /// embedding `temb [B, time_embed_dim]` (for SDXL with the added embedding in it) and the text
    /// context `[B, S, cross_attention_dim]` (any S: 77 per prompt chunk).
    pub fn forward_with_temb(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        temb: &GpuTensor,
        context: &GpuTensor,
    ) -> Result<GpuTensor> {
        self.check_inputs(x, temb, context)?;
        // Every resnet applies SiLU to the same embedding before its own projection; all the
        // projections run up front.
        let silu_temb = unary(ctx, rec, temb, UnaryOp::Silu)?;
        let mut temb = self.temb_projections.forward(ctx, rec, &silu_temb)?.into_iter();
        let mut h = self.conv_in.forward(ctx, rec, x)?;
        let mut skips = vec![h.clone()];
        for b in &self.down_blocks {
            h = b.forward(ctx, rec, &h, &mut temb, context, &mut skips)?;
        }
        h = self.mid_block.forward(ctx, rec, &h, &mut temb, context)?;
        for b in &self.up_blocks {
            h = b.forward(ctx, rec, &h, &mut temb, context, &mut skips)?;
        }
        let h = self.conv_norm_out.forward(ctx, rec, &h, true)?;
        self.conv_out.forward(ctx, rec, &h)
    }

    /// [`UNet::time_embedding`] then [`UNet::forward_with_temb`]; `timesteps` has one entry per
    /// batch item, `added` is the [`UNet::added_embedding`] (SDXL) or `None` (SD1).
    pub fn forward(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        timesteps: &[f32],
        context: &GpuTensor,
        added: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        let [b, ..] = dims4(OP, x)?;
        if timesteps.len() != b {
            return Err(Error::shape(
                OP,
                format!(
                    "{} timesteps for a batch of {b} latents {:?}; one per item is needed",
                    timesteps.len(),
                    x.shape
                ),
            ));
        }
        let temb = self.time_embedding(ctx, rec, timesteps, added)?;
        self.forward_with_temb(ctx, rec, x, &temb, context)
    }

    fn check_inputs(&self, x: &GpuTensor, temb: &GpuTensor, context: &GpuTensor) -> Result<()> {
        let cfg = &self.cfg;
        let [b, c, h, w] = dims4(OP, x)?;
        let desc = || format!("x {:?}, temb {:?}, context {:?}", x.shape, temb.shape, context.shape);
        if c != cfg.in_channels || h == 0 || w == 0 || b == 0 {
            return Err(Error::shape(
                OP,
                format!("x must be [B ≥ 1, {}, h ≥ 1, w ≥ 1] latents: {}", cfg.in_channels, desc()),
            ));
        }
        if temb.shape != [b, cfg.time_embed_dim] {
            return Err(Error::shape(OP, format!("temb must be [{b}, {}]: {}", cfg.time_embed_dim, desc())));
        }
        if context.shape.len() != 3
            || context.shape[0] != b
            || context.shape[1] == 0
            || context.shape[2] != cfg.cross_attention_dim
        {
            return Err(Error::shape(
                OP,
                format!("context must be [{b}, S ≥ 1, {}]: {}", cfg.cross_attention_dim, desc()),
            ));
        }
        for (name, t) in [("x", x), ("temb", temb), ("context", context)] {
            if t.dtype != self.dtype {
                return Err(Error::dtype(
                    OP,
                    format!("{name} is {} but the UNet was loaded as {}", t.dtype.name(), self.dtype.name()),
                ));
            }
        }
        Ok(())
    }
}
