//! `nn.GroupNorm` (optionally fused with SiLU) and `nn.LayerNorm`.

use super::Loader;
use crate::kernels::group_norm::group_norm;
use crate::kernels::layer_norm::layer_norm;
use crate::{Context, GpuTensor, Recorder, Result};

pub struct GroupNorm {
    pub weight: GpuTensor,
    pub bias: GpuTensor,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn load(l: &Loader, groups: usize, c: usize, eps: f32) -> Result<GroupNorm> {
        Ok(GroupNorm { weight: l.tensor("weight", &[c])?, bias: l.tensor("bias", &[c])?, groups, eps })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor, silu: bool) -> Result<GpuTensor> {
        group_norm(ctx, rec, x, self.groups, &self.weight, &self.bias, self.eps, silu)
    }
}

pub struct LayerNorm {
    pub weight: GpuTensor,
    pub bias: GpuTensor,
    pub eps: f32,
}

impl LayerNorm {
    pub fn load(l: &Loader, c: usize, eps: f32) -> Result<LayerNorm> {
        Ok(LayerNorm { weight: l.tensor("weight", &[c])?, bias: l.tensor("bias", &[c])?, eps })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        layer_norm(ctx, rec, x, &self.weight, &self.bias, self.eps)
    }
}
