//! `nn.Conv2d` (NCHW, square kernels).

use super::Loader;
use crate::kernels::conv2d::{conv2d, Conv2dParams};
use crate::{Context, GpuTensor, Recorder, Result};

pub struct Conv2d {
    pub weight: GpuTensor,
    pub bias: Option<GpuTensor>,
    pub params: Conv2dParams,
}

impl Conv2d {
    /// Load `weight` [cout, cin, k, k] and `bias` [cout]; padding k/2 ("same" at stride 1).
    pub fn load(l: &Loader, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv2d> {
        Self::load_padded(l, cin, cout, k, Conv2dParams::same(k, stride))
    }

    pub fn load_padded(l: &Loader, cin: usize, cout: usize, k: usize, params: Conv2dParams) -> Result<Conv2d> {
        let weight = l.tensor("weight", &[cout, cin, k, k])?;
        let bias = if l.contains("bias") { Some(l.tensor("bias", &[cout])?) } else { None };
        // Convolutions have no runtime LoRA path: their adapters are always merged.
        l.register("weight", &weight, None);
        Ok(Conv2d { weight, bias, params })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        conv2d(ctx, rec, x, &self.weight, self.bias.as_ref(), self.params)
    }
}
