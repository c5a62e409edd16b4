//! From images NCHW `[B, C, H, W]` (convs, GroupNorm) to tokens `[B, H·W, C]` (linears, LayerNorm,
//! attention), the `permute` + `reshape` at the start of diffusers' `Transformer2DModel`. (The way
//! back needs no permutation: `proj_out` runs as `W · tokensᵀ`, see `fused.rs`.)
//!
//! No kernel transposes yet, and a GEMM cannot fold this one in (its A operand would be the
//! transposed image), so the permutation runs as the embedding gather over a one-column table:
//! `out[q] = x[src(q)]`, one dispatch, a plain copy (f16 stays bit-exact). It moves 8 bytes of
//! index per element besides the copy; a tiled transpose kernel, or a GEMM with a transposed A
//! operand (which would fuse it into `proj_in`), would remove that.

use crate::kernels::embedding::embedding;
use crate::{Context, Error, GpuTensor, Recorder, Result};

const OP: &str = "unet.layout";

/// Gather `x` (any shape, `n` elements) in the order `src` into a tensor of `shape`.
fn gather(ctx: &Context, rec: &mut Recorder, x: &GpuTensor, src: &[u32], shape: &[usize]) -> Result<GpuTensor> {
    let n = x.numel();
    if n > u32::MAX as usize {
        return Err(Error::limit(OP, format!("elements of {:?}", x.shape), n as u64, u32::MAX as u64));
    }
    let table = x.reshape(&[n, 1])?;
    embedding(ctx, rec, &table, src)?.reshape(shape)
}

/// `[B, C, H, W]` → `[B, H·W, C]`.
pub fn nchw_to_tokens(ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
    let &[b, c, h, w] = x.shape.as_slice() else {
        return Err(Error::shape(OP, format!("nchw_to_tokens: x must be [B, C, H, W], got {:?}", x.shape)));
    };
    let hw = h * w;
    let mut src = Vec::with_capacity(x.numel());
    for bi in 0..b {
        for p in 0..hw {
            src.extend((0..c).map(|ci| ((bi * c + ci) * hw + p) as u32));
        }
    }
    gather(ctx, rec, x, &src, &[b, hw, c])
}
