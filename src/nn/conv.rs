//! `nn.Conv2d` (NCHW, square kernels), its weight packed for the conv kernel once at load.

use super::Loader;
use crate::kernels::conv2d::{conv2d_packed, Conv2dParams, ConvTile, PackedConvWeight};
use crate::{Context, GpuTensor, Recorder, Result};

pub struct Conv2d {
    /// The weight `[Cout, Cin, K, K]` in the kernel's packed layout. Packing it before every use
    /// cost about an eighth of a UNet step on lavapipe; packing at load costs nothing at run time
    /// and no memory (SD's channel counts are multiples of the block).
    pub weight: PackedConvWeight,
    pub bias: Option<GpuTensor>,
    pub params: Conv2dParams,
}

impl Conv2d {
    /// Load `weight` [cout, cin, k, k] and `bias` [cout]; padding k/2 ("same" at stride 1).
    pub fn load(l: &Loader, cin: usize, cout: usize, k: usize, stride: usize) -> Result<Conv2d> {
        Self::load_padded(l, cin, cout, k, Conv2dParams::same(k, stride))
    }

    pub fn load_padded(l: &Loader, cin: usize, cout: usize, k: usize, params: Conv2dParams) -> Result<Conv2d> {
        let weight = l.packed_conv("weight", [cout, cin, k, k], ConvTile::tm_for(l.ctx(), cout))?;
        let bias = if l.contains("bias") { Some(l.tensor("bias", &[cout])?) } else { None };
        // Convolutions have no runtime LoRA path: their adapters are always merged.
        l.register_packed("weight", &weight);
        Ok(Conv2d { weight, bias, params })
    }

    /// A convolution from weights computed on the host at load time (`w` in `[Cout, Cin, KH, KW]`
    /// order), stored as the loader's dtype; not adaptable.
    pub fn from_host(
        l: &Loader,
        shape: [usize; 4],
        w: &[f32],
        bias: Option<GpuTensor>,
        params: Conv2dParams,
    ) -> Result<Conv2d> {
        let tm = ConvTile::tm_for(l.ctx(), shape[0]);
        let weight = PackedConvWeight::from_host(l.ctx(), w, shape, tm, l.dtype())?;
        Ok(Conv2d { weight, bias, params })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        self.forward_bias(ctx, rec, x, self.bias.as_ref())
    }

    /// The convolution with `bias` in place of the layer's own (a ResNet block folds its time
    /// projection's bias into it).
    pub fn forward_bias(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        bias: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        conv2d_packed(ctx, rec, x, &self.weight, bias, self.params)
    }
}
