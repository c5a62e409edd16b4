//! `nn.Linear`: y = x·Wᵀ + b.

use crate::kernels::matmul::linear;
use crate::weights::var_builder::VarBuilder;
use crate::{Context, DType, GpuTensor, Recorder, Result};

pub struct Linear {
    pub weight: GpuTensor,
    pub bias: Option<GpuTensor>,
    pub in_features: usize,
    pub out_features: usize,
}

impl Linear {
    /// Load `weight` [out, in] and, when `bias`, `bias` [out].
    pub fn load(ctx: &Context, vb: &VarBuilder, inp: usize, out: usize, bias: bool, dtype: DType) -> Result<Linear> {
        let weight = super::load(ctx, vb, "weight", &[out, inp], dtype)?;
        let bias = if bias { Some(super::load(ctx, vb, "bias", &[out], dtype)?) } else { None };
        Ok(Linear { weight, bias, in_features: inp, out_features: out })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        linear(ctx, rec, x, &self.weight, self.bias.as_ref())
    }
}
