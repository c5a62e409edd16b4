//! diffusers `UNetMidBlock2D` as the VAE uses it (no time embedding): resnet, single-head
//! attention, resnet, all at the lowest resolution and the widest channel count.

use crate::models::resnet::{ResnetBlock2D, ResnetOptions};
use crate::models::vae::attention::Attention;
use crate::nn::Loader;
use crate::{Context, GpuTensor, Recorder, Result};

pub struct MidBlock {
    pub resnet0: ResnetBlock2D,
    /// Absent when the config says `mid_block_add_attention = false`.
    pub attention: Option<Attention>,
    pub resnet1: ResnetBlock2D,
}

impl MidBlock {
    pub fn load(l: &Loader, c: usize, resnet: &ResnetOptions, with_attention: bool) -> Result<MidBlock> {
        let resnets = l.pp("resnets");
        let attention =
            if with_attention { Some(Attention::load(&l.pp("attentions").pp(0), c, resnet.groups)?) } else { None };
        Ok(MidBlock {
            resnet0: ResnetBlock2D::load(&resnets.pp(0), c, c, resnet)?,
            attention,
            resnet1: ResnetBlock2D::load(&resnets.pp(1), c, c, resnet)?,
        })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let mut h = self.resnet0.forward(ctx, rec, x, None)?;
        if let Some(a) = &self.attention {
            h = a.forward(ctx, rec, &h)?;
        }
        self.resnet1.forward(ctx, rec, &h, None)
    }
}
