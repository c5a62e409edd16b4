//! diffusers VAE `Encoder`: `conv_in` (3×3, image → first channels), the down blocks
//! (`layers_per_block` resnets each; a stride-2 downsampler after every block but the last), the
//! mid block, `conv_norm_out` + SiLU and `conv_out` (3×3 → 2·latent: mean and log-variance).

use super::{check_input, resnet_options, EPS};
use crate::models::resnet::ResnetBlock2D;
use crate::models::vae::mid_block::MidBlock;
use crate::models::vae::sampling::Downsample2D;
use crate::nn::{Conv2d, GroupNorm, Loader};
use crate::weights::detect::VaeConfig;
use crate::{Context, DType, GpuTensor, Recorder, Result};

const OP: &str = "vae.encoder";

/// `DownEncoderBlock2D`.
pub struct DownBlock {
    pub resnets: Vec<ResnetBlock2D>,
    pub downsampler: Option<Downsample2D>,
}

impl DownBlock {
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let mut h = x.clone();
        for r in &self.resnets {
            h = r.forward(ctx, rec, &h, None)?;
        }
        match &self.downsampler {
            Some(d) => d.forward(ctx, rec, &h),
            None => Ok(h),
        }
    }
}

pub struct Encoder {
    pub conv_in: Conv2d,
    pub down_blocks: Vec<DownBlock>,
    pub mid_block: MidBlock,
    pub conv_norm_out: GroupNorm,
    pub conv_out: Conv2d,
    pub in_channels: usize,
    pub dtype: DType,
}

impl Encoder {
    /// `l` is the VAE loader scoped to `encoder`.
    pub fn load(l: &Loader, cfg: &VaeConfig) -> Result<Encoder> {
        super::check_config(cfg)?;
        let g = cfg.norm_num_groups;
        let resnet = resnet_options(cfg);
        let chans = &cfg.block_out_channels;
        let mut down_blocks = Vec::with_capacity(chans.len());
        let mut prev = chans[0];
        for (i, &ch) in chans.iter().enumerate() {
            let bl = l.pp("down_blocks").pp(i);
            let resnets = (0..cfg.layers_per_block)
                .map(|j| {
                    let cin = if j == 0 { prev } else { ch };
                    ResnetBlock2D::load(&bl.pp("resnets").pp(j), cin, ch, &resnet)
                })
                .collect::<Result<Vec<_>>>()?;
            let downsampler =
                if i + 1 < chans.len() { Some(Downsample2D::load(&bl.pp("downsamplers").pp(0), ch)?) } else { None };
            down_blocks.push(DownBlock { resnets, downsampler });
            prev = ch;
        }
        let top = *chans.last().unwrap_or(&prev);
        Ok(Encoder {
            conv_in: Conv2d::load(&l.pp("conv_in"), cfg.in_channels, chans[0], 3, 1)?,
            down_blocks,
            mid_block: MidBlock::load(&l.pp("mid_block"), top, &resnet, cfg.mid_attention)?,
            conv_norm_out: GroupNorm::load(&l.pp("conv_norm_out"), g, top, EPS)?,
            conv_out: Conv2d::load(&l.pp("conv_out"), top, 2 * cfg.latent_channels, 3, 1)?,
            in_channels: cfg.in_channels,
            dtype: l.dtype(),
        })
    }

    /// `x [B, in, H, W]` → moments `[B, 2·latent, H/8, W/8]` (each level halves, rounding down; before `quant_conv`).
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        check_input(OP, x, self.in_channels, self.dtype)?;
        let mut h = self.conv_in.forward(ctx, rec, x)?;
        for b in &self.down_blocks {
            h = b.forward(ctx, rec, &h)?;
        }
        h = self.mid_block.forward(ctx, rec, &h)?;
        let h = self.conv_norm_out.forward(ctx, rec, &h, true)?;
        self.conv_out.forward(ctx, rec, &h)
    }
}
