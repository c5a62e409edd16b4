//! Model code, mirroring checkpoint key names. Every model loads through an
//! [`nn::Loader`](crate::nn::Loader) scoped to its component.

pub mod clip;
pub mod resnet;
pub mod unet;
pub mod vae;

use crate::{Error, GpuTensor, Result};

/// `[B, C, H, W]` of an image tensor, or a shape error naming `op`.
pub(crate) fn dims4(op: &'static str, x: &GpuTensor) -> Result<[usize; 4]> {
    match x.shape.as_slice() {
        &[b, c, h, w] => Ok([b, c, h, w]),
        s => Err(Error::shape(op, format!("expected an image [B, C, H, W], got {s:?}"))),
    }
}
