//! diffusers VAE `Decoder`: `conv_in` (3×3, latent → widest channels), the mid block, the up
//! blocks (channels reversed; `layers_per_block + 1` resnets each; nearest ×2 + conv after every
//! block but the last), `conv_norm_out` + SiLU, `conv_out` (3×3 → image channels).

use super::{check_input, resnet_options, EPS};
use crate::models::resnet::ResnetBlock2D;
use crate::models::vae::mid_block::MidBlock;
use crate::models::vae::sampling::Upsample2D;
use crate::nn::{Conv2d, GroupNorm, Loader};
use crate::weights::detect::VaeConfig;
use crate::{Context, DType, GpuTensor, Recorder, Result};

const OP: &str = "vae.decoder";

/// `UpDecoderBlock2D`.
pub struct UpBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub upsampler: Option<Upsample2D>,
}

impl UpBlock {
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(ctx, rec, &h, None)?;
        }
        match &self.upsampler {
            Some(u) => u.forward(ctx, rec, &h),
            None => Ok(h),
        }
    }
}

pub struct Decoder {
    pub conv_in: Conv2d,
    pub mid_block: MidBlock,
    /// diffusers order: `up_blocks.0` is the lowest resolution (widest channels).
    pub up_blocks: Vec<UpBlock>,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    pub latent_channels: usize,
    pub dtype: DType,
}

impl Decoder {
    /// `l` is the VAE loader scoped to `decoder`.
    pub fn load(l: &Loader, cfg: &VaeConfig) -> Result<Decoder> {
        super::check_config(cfg)?;
        let g = cfg.norm_num_groups;
        let resnet = resnet_options(cfg);
        let rev: Vec<usize> = cfg.block_out_channels.iter().rev().copied().collect();
        let top = rev[0];
        let mut up_blocks = Vec::with_capacity(rev.len());
        let mut prev = top;
        for (i, &ch) in rev.iter().enumerate() {
            let bl = l.pp("up_blocks").pp(i);
            let resnets = (0..cfg.layers_per_block + 1)
                .map(|j| {
                    let cin = if j == 0 { prev } else { ch };
                    ResnetBlock2D::load(&bl.pp("resnets").pp(j), cin, ch, &resnet)
                })
                .collect::<Result<Vec<_>>>()?;
            let upsampler =
                if i + 1 < rev.len() { Some(Upsample2D::load(&bl.pp("upsamplers").pp(0), ch)?) } else { None };
            up_blocks.push(UpBlock { resnets, upsampler });
            prev = ch;
        }
        let c0 = cfg.block_out_channels[0];
        Ok(Decoder {
            conv_in: Conv2d::load(&l.pp("conv_in"), cfg.latent_channels, top, 3, 1)?,
            mid_block: MidBlock::load(&l.pp("mid_block"), top, &resnet, cfg.mid_attention)?,
            up_blocks,
            conv_norm_out: GroupNorm::load(&l.pp("conv_norm_out"), g, c0, EPS)?,
            conv_out: Conv2d::load(&l.pp("conv_out"), c0, cfg.out_channels, 3, 1)?,
            latent_channels: cfg.latent_channels,
            dtype: l.dtype(),
        })
    }

    /// `z [B, latent, h, w]` (after `post_quant_conv`) → `[B, out, 8h, 8w]` for SD's 4 levels.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, z: &GpuTensor) -> Result<GpuTensor> {
        check_input(OP, z, self.latent_channels, self.dtype)?;
        let mut h = self.conv_in.forward(ctx, rec, z)?;
        h = self.mid_block.forward(ctx, rec, &h)?;
        for b in &self.up_blocks {
            h = b.forward(ctx, rec, &h)?;
        }
        let h = self.conv_norm_out.forward(ctx, rec, &h, true)?;
        self.conv_out.forward(ctx, rec, &h)
    }
}
