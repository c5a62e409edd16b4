//! `nn.Conv2d` (NCHW, square kernels).

use crate::kernels::conv2d::{conv2d, Conv2dParams};
use crate::weights::var_builder::VarBuilder;
use crate::{Context, DType, GpuTensor, Recorder, Result};

pub struct Conv2d {
    pub weight: GpuTensor,
    pub bias: Option<GpuTensor>,
    pub params: Conv2dParams,
}

impl Conv2d {
    /// Load `weight` [cout, cin, k, k] and `bias` [cout]; padding k/2 ("same" at stride 1).
    pub fn load(
        ctx: &Context,
        vb: &VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        stride: usize,
        dtype: DType,
    ) -> Result<Conv2d> {
        Self::load_padded(ctx, vb, cin, cout, k, Conv2dParams::same(k, stride), dtype)
    }

    pub fn load_padded(
        ctx: &Context,
        vb: &VarBuilder,
        cin: usize,
        cout: usize,
        k: usize,
        params: Conv2dParams,
        dtype: DType,
    ) -> Result<Conv2d> {
        let weight = super::load(ctx, vb, "weight", &[cout, cin, k, k], dtype)?;
        let bias = if vb.contains("bias") { Some(super::load(ctx, vb, "bias", &[cout], dtype)?) } else { None };
        // Convolutions have no runtime LoRA path: their adapters are always merged.
        vb.register("weight", &weight, None);
        Ok(Conv2d { weight, bias, params })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        conv2d(ctx, rec, x, &self.weight, self.bias.as_ref(), self.params)
    }
}
