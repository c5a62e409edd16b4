//! Weight-holding layers built from a [`VarBuilder`](crate::weights::var_builder::VarBuilder),
//! each a thin owner of GPU tensors that calls one kernel. Field names follow checkpoint keys.

mod conv;
mod linear;
mod norm;
pub mod registry;

pub use conv::Conv2d;
pub use linear::Linear;
pub use norm::{GroupNorm, LayerNorm};
pub use registry::{LoraSlot, WeightRegistry};

use crate::weights::var_builder::VarBuilder;
use crate::{Context, DType, GpuTensor, Result};

/// Read `name` with shape `shape` and upload it as `dtype` (f16 weights go up without an f32 copy).
pub fn load(ctx: &Context, vb: &VarBuilder, name: &str, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
    match dtype {
        DType::F32 => GpuTensor::from_host(ctx, &vb.get(name, shape)?, DType::F32),
        DType::F16 => GpuTensor::from_f16(ctx, shape, &vb.get_f16(name, shape)?),
    }
}
