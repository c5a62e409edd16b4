//! Argument checks and profile annotation shared by both attention kernels (`attention.wgsl`
//! and `attention_sg.wgsl` take the same layouts and contract).

use crate::gpu::{Recorder, Work};
use crate::tensor::GpuTensor;
use crate::{Error, Result};

const OP: &str = "attention";

/// Largest supported head dim (SD1.5's largest; every head dim up to it has a tiling within the
/// 16 KiB WebGPU default of workgroup memory).
pub const MAX_HEAD_DIM: usize = 160;

/// Check shapes and return the head dim D.
pub(crate) fn head_dim(q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, heads: usize) -> Result<usize> {
    let desc = || format!("q {:?}, k {:?}, v {:?}, heads {heads}", q.shape, k.shape, v.shape);
    if q.shape.len() != 3 || k.shape.len() != 3 || v.shape.len() != 3 {
        return Err(Error::shape(OP, format!("want q [B, Sq, H·D], k and v [B, Sk, H·D]; got {}", desc())));
    }
    if k.shape != v.shape || q.shape[0] != k.shape[0] || q.shape[2] != k.shape[2] {
        return Err(Error::shape(OP, format!("batch, key length or width differ: {}", desc())));
    }
    if q.dtype != k.dtype || q.dtype != v.dtype {
        return Err(Error::dtype(
            OP,
            format!("q {}, k {}, v {} must share a dtype", q.dtype.name(), k.dtype.name(), v.dtype.name()),
        ));
    }
    if heads == 0 {
        return Err(Error::invalid(OP, format!("heads must be ≥ 1: {}", desc())));
    }
    let width = q.shape[2];
    if width == 0 || !width.is_multiple_of(heads) {
        return Err(Error::shape(OP, format!("width H·D = {width} is not a positive multiple of heads: {}", desc())));
    }
    let d = width / heads;
    if d > MAX_HEAD_DIM {
        return Err(Error::limit(OP, format!("head dim ({})", desc()), d as u64, MAX_HEAD_DIM as u64));
    }
    if k.shape[1] == 0 && q.shape[0] * q.shape[1] > 0 {
        return Err(Error::shape(OP, format!("no keys to attend to: {}", desc())));
    }
    Ok(d)
}

/// Checks shared by both kernels: `out` matches q and aliases no input; the scale is finite.
pub(crate) fn check_out(q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, out: &GpuTensor, scale: f32) -> Result<()> {
    if out.shape != q.shape || out.dtype != q.dtype {
        return Err(Error::shape(
            OP,
            format!("out {:?} {} must match q {:?} {}", out.shape, out.dtype.name(), q.shape, q.dtype.name()),
        ));
    }
    if out.same_buffer(q) || out.same_buffer(k) || out.same_buffer(v) {
        return Err(Error::invalid(OP, "output aliases an input"));
    }
    if !scale.is_finite() {
        return Err(Error::invalid(OP, format!("scale {scale} is not finite")));
    }
    Ok(())
}

/// Name the launches recorded since `from` as one attention of q over k, with its work:
/// q·kᵀ and p·v are 2 · 2·Sq·Sk·width per batch (causal masking is not subtracted).
pub(crate) fn annotate(rec: &mut Recorder, from: usize, q: &GpuTensor, k: &GpuTensor, heads: usize) {
    let (b, sq, width, sk) = (q.shape[0], q.shape[1], q.shape[2], k.shape[1]);
    let flops = 4.0 * (b * sq * sk * width) as f64;
    let bytes = (2 * q.numel() + 2 * k.numel()) as f64 * q.dtype.size() as f64;
    let kind = if sq == sk { "self" } else { "cross" };
    let class = format!("attention {kind} {sq}x{sk} d{}", width / heads.max(1));
    rec.annotate(from, class, Work { flops, bytes });
}
