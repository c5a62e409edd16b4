//! `nn.Linear`: y = x·Wᵀ + b, plus the fused-mode LoRAs its slot holds.

use crate::kernels::lora_linear::lora_linear;
use crate::kernels::matmul::linear;
use crate::nn::adaptable::{slot_get, LoraSlot};
use crate::nn::Loader;
use crate::{Context, GpuTensor, Recorder, Result};

pub struct Linear {
    pub weight: GpuTensor,
    pub bias: Option<GpuTensor>,
    pub in_features: usize,
    pub out_features: usize,
    /// Runtime adapters (fused LoRA mode), shared with the model's adaptable weights.
    pub lora: LoraSlot,
}

impl Linear {
    /// Load `weight` [out, in] and, when `bias`, `bias` [out].
    pub fn load(l: &Loader, inp: usize, out: usize, bias: bool) -> Result<Linear> {
        let weight = l.tensor("weight", &[out, inp])?;
        let bias = if bias { Some(l.tensor("bias", &[out])?) } else { None };
        Ok(Self::registered(l, weight, bias))
    }

    /// A linear over an already uploaded `weight` [out, in] (e.g. a view of a stacked tensor),
    /// registered under `l`'s `weight` with a fresh slot.
    pub fn registered(l: &Loader, weight: GpuTensor, bias: Option<GpuTensor>) -> Linear {
        let (out_features, in_features) = (weight.shape[0], weight.shape[1]);
        let lora = LoraSlot::default();
        l.register("weight", &weight, Some(lora.clone()));
        Linear { weight, bias, in_features, out_features, lora }
    }

    /// The adapters to apply at run time, if any.
    pub fn adapters(&self) -> Option<std::sync::Arc<crate::kernels::lora_linear::LoraStack>> {
        slot_get(&self.lora)
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        match self.adapters() {
            Some(stack) => lora_linear(ctx, rec, x, &self.weight, self.bias.as_ref(), &stack),
            None => linear(ctx, rec, x, &self.weight, self.bias.as_ref()),
        }
    }
}
