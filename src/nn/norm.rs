//! `nn.GroupNorm` (optionally fused with SiLU) and `nn.LayerNorm`.

use crate::kernels::group_norm::group_norm;
use crate::kernels::layer_norm::layer_norm;
use crate::weights::var_builder::VarBuilder;
use crate::{Context, DType, GpuTensor, Recorder, Result};

pub struct GroupNorm {
    pub weight: GpuTensor,
    pub bias: GpuTensor,
    pub groups: usize,
    pub eps: f32,
}

impl GroupNorm {
    pub fn load(ctx: &Context, vb: &VarBuilder, groups: usize, c: usize, eps: f32, dtype: DType) -> Result<GroupNorm> {
        Ok(GroupNorm {
            weight: super::load(ctx, vb, "weight", &[c], dtype)?,
            bias: super::load(ctx, vb, "bias", &[c], dtype)?,
            groups,
            eps,
        })
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
    pub fn load(ctx: &Context, vb: &VarBuilder, c: usize, eps: f32, dtype: DType) -> Result<LayerNorm> {
        Ok(LayerNorm {
            weight: super::load(ctx, vb, "weight", &[c], dtype)?,
            bias: super::load(ctx, vb, "bias", &[c], dtype)?,
            eps,
        })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        layer_norm(ctx, rec, x, &self.weight, &self.bias, self.eps)
    }
}
