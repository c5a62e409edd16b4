//! Launcher for `shaders/lora_merge.wgsl`: `out = pristine + full` (an f32 delta, one rounding to
//! the weight's dtype), or a bit-exact copy `out = pristine` when there is no delta. This is how
//! merged-mode LoRAs reach a weight and how the weight is restored afterwards
//! ([`crate::lora::apply`], which computes the delta Σ sᵢ·Bᵢ·Aᵢ with the tiled GEMM); it runs once
//! per LoRA change, never per step.
//!
//! Weights larger than one storage binding are split by rows: each launch binds the rows'
//! windows of `pristine`, `out` and `full`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{chunks, max_window_elems, DType, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("lora_merge");
const WG: u32 = 256;
const OP: &str = "lora_merge";

const COPY: u32 = 0;
const MERGE: u32 = 1;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    p_shift: u32,
    o_shift: u32,
    f_shift: u32,
}

/// `out[n, k] = pristine[n, k] + full[n, k]`, added in f32 and rounded once to the weight dtype.
/// `pristine` and `out` are `[N, ...]` weights of one dtype (viewed as `[N, K]`, K = numel / N) in
/// different buffers; `full` `[N, K]` is f32. Without `full`, `out` becomes a bit-exact copy.
pub fn lora_merge(
    ctx: &Context,
    rec: &mut Recorder,
    pristine: &GpuTensor,
    out: &GpuTensor,
    full: Option<&GpuTensor>,
) -> Result<()> {
    let (n, k) = check(pristine, out, full)?;
    // Rows per launch: every window within one binding, the element count within u32.
    let win = (max_window_elems(ctx, pristine.dtype).min(max_window_elems(ctx, DType::F32)) as usize).min(1 << 31);
    if k > win {
        return Err(Error::limit(OP, "elements of one row of the weight", k as u64, win as u64));
    }
    let mode = if full.is_some() { MERGE } else { COPY };
    let key = PipelineKey::new(&SRC, "main", pristine.dtype).with("WG", WG).with("MODE", mode);
    let mut keep = vec![pristine.keep(), out.keep()];
    keep.extend(full.map(GpuTensor::keep));
    for (row0, rows) in chunks(n, win / k) {
        let len = rows * k;
        let pw = pristine.window(ctx, row0 * k, len)?;
        let ow = out.window(ctx, row0 * k, len)?;
        // A copy reads no delta: pristine's window is bound in its place.
        let fw = match full {
            Some(f) => f.window(ctx, row0 * k, len)?,
            None => pw.again(),
        };
        let prm = Params { n: len as u32, p_shift: pw.shift, o_shift: ow.shift, f_shift: fw.shift };
        let groups = flat_groups(ctx, OP, len, WG)?;
        let args = [Arg::Read(pw), Arg::Write(ow), Arg::Read(fw), Arg::Uniform(bytemuck::bytes_of(&prm))];
        launch(ctx, rec, &SRC, &key, &args, groups, keep.clone())?;
    }
    Ok(())
}

/// Shapes, dtypes and aliasing of the operands → `(N, K)`.
fn check(pristine: &GpuTensor, out: &GpuTensor, full: Option<&GpuTensor>) -> Result<(usize, usize)> {
    let n = pristine.shape.first().copied().unwrap_or(0);
    let numel = pristine.numel();
    if n == 0 || numel == 0 || !numel.is_multiple_of(n) {
        return Err(Error::shape(OP, format!("weight {:?} has no rows", pristine.shape)));
    }
    let k = numel / n;
    if out.numel() != numel || out.shape.first() != Some(&n) || out.dtype != pristine.dtype {
        return Err(Error::shape(
            OP,
            format!(
                "out {:?} {} must match pristine {:?} {}",
                out.shape,
                out.dtype.name(),
                pristine.shape,
                pristine.dtype.name()
            ),
        ));
    }
    if out.same_buffer(pristine) {
        return Err(Error::invalid(OP, "out shares its buffer with pristine"));
    }
    if let Some(f) = full {
        if f.numel() != numel || f.shape.first() != Some(&n) || f.dtype != DType::F32 {
            return Err(Error::shape(OP, format!("full {:?} {} must be f32 [{n}, {k}]", f.shape, f.dtype.name())));
        }
        if f.same_buffer(out) {
            return Err(Error::invalid(OP, "out shares its buffer with full"));
        }
    }
    Ok((n, k))
}
