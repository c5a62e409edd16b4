//! diffusers `UNetMidBlock2D` as the VAE uses it (no time embedding): resnet, single-head
//! attention, resnet, all at the lowest resolution and the widest channel count.

use crate::models::vae::attention::Attention;
use crate::models::vae::resnet::ResnetBlock2D;
use crate::weights::var_builder::VarBuilder;
use crate::{Context, DType, GpuTensor, Recorder, Result};

pub struct MidBlock {
    pub resnet0: ResnetBlock2D,
    /// Absent when the config says `mid_block_add_attention = false`.
    pub attention: Option<Attention>,
    pub resnet1: ResnetBlock2D,
}

impl MidBlock {
    pub fn load(
        ctx: &Context,
        vb: &VarBuilder,
        c: usize,
        groups: usize,
        with_attention: bool,
        dtype: DType,
    ) -> Result<MidBlock> {
        let resnets = vb.pp("resnets");
        let attention = if with_attention {
            Some(Attention::load(ctx, &vb.pp("attentions").pp(0), c, groups, dtype)?)
        } else {
            None
        };
        Ok(MidBlock {
            resnet0: ResnetBlock2D::load(ctx, &resnets.pp(0), c, c, groups, dtype)?,
            attention,
            resnet1: ResnetBlock2D::load(ctx, &resnets.pp(1), c, c, groups, dtype)?,
        })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let mut h = self.resnet0.forward(ctx, rec, x)?;
        if let Some(a) = &self.attention {
            h = a.forward(ctx, rec, &h)?;
        }
        self.resnet1.forward(ctx, rec, &h)
    }
}
