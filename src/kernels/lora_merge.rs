//! Launcher for `shaders/lora_merge.wgsl`: `out = pristine + up·down + full` (f32 delta, one
//! rounding to the weight's dtype), or a bit-exact copy `out = pristine` when there is no delta.
//! This is how merged-mode LoRAs reach a weight and how the weight is restored afterwards
//! ([`crate::lora::apply`]); it runs once per LoRA change, never per step, so it is a plain
//! per-element kernel rather than a tiled GEMM.
//!
//! Weights larger than one storage binding are split by rows: each launch binds the rows'
//! windows of `pristine`, `out`, `up` and `full`, and all of `down`.

use bytemuck::{Pod, Zeroable};

use crate::gpu::Recorder;
use crate::kernels::registry::{fold_groups, launch, Arg, KernelSource, PipelineKey};
use crate::tensor::{max_window_elems, DType, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("lora_merge");
const WG: u32 = 256;
const OP: &str = "lora_merge";
/// Longest rank loop of one launch (lavapipe ends shader loops after 65535 iterations).
pub const MAX_RANK: usize = 16384;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    k: u32,
    r: u32,
    p_shift: u32,
    o_shift: u32,
    u_shift: u32,
    d_shift: u32,
    f_shift: u32,
}

/// `out[n, k] = pristine[n, k] + Σ_r up[n, r]·down[r, k] + full[n, k]`, accumulated in f32 and
/// rounded once to the weight dtype. `pristine` and `out` are `[N, ...]` weights of one dtype
/// (viewed as `[N, K]`, K = numel / N) in different buffers; `up` `[N, R]`, `down` `[R, K]` and
/// `full` `[N, K]` are f32. With no `up`/`down` and no `full`, `out` becomes a bit-exact copy.
pub fn lora_merge(
    ctx: &Context,
    rec: &mut Recorder,
    pristine: &GpuTensor,
    out: &GpuTensor,
    up: Option<&GpuTensor>,
    down: Option<&GpuTensor>,
    full: Option<&GpuTensor>,
) -> Result<()> {
    let n = pristine.shape.first().copied().unwrap_or(0);
    let numel = pristine.numel();
    if n == 0 || numel == 0 || numel % n != 0 {
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
    let r = match (up, down) {
        (Some(u), Some(d)) => {
            let r = u.shape.get(1).copied().unwrap_or(0);
            if u.shape != [n, r] || d.shape != [r, k] || r == 0 {
                return Err(Error::shape(
                    OP,
                    format!("need up [{n}, R] and down [R, {k}] with R > 0; got up {:?}, down {:?}", u.shape, d.shape),
                ));
            }
            if u.dtype != DType::F32 || d.dtype != DType::F32 {
                return Err(Error::dtype(OP, "up and down must be f32"));
            }
            if r > MAX_RANK {
                return Err(Error::limit(OP, "rank of one merge", r as u64, MAX_RANK as u64));
            }
            if !d.fits_binding(ctx) {
                return Err(Error::limit(OP, "bytes of down (one binding)", d.bytes(), ctx.caps.max_binding));
            }
            r
        }
        (None, None) => 0,
        _ => return Err(Error::invalid(OP, "up and down come together")),
    };
    if let Some(f) = full {
        if f.numel() != numel || f.shape.first() != Some(&n) || f.dtype != DType::F32 {
            return Err(Error::shape(OP, format!("full {:?} {} must be f32 [{n}, {k}]", f.shape, f.dtype.name())));
        }
    }
    let copy = r == 0 && full.is_none();
    let key = PipelineKey::new(&SRC, "main", pristine.dtype)
        .with("WG", WG)
        .with("MODE", if copy { 0 } else { 1 })
        .with("HAS_LR", (r > 0) as u32)
        .with("HAS_FULL", full.is_some() as u32);
    // Rows per launch: every window within one binding, the element count within u32.
    let per_row = k.max(r);
    let win = (max_window_elems(ctx, pristine.dtype).min(max_window_elems(ctx, DType::F32)) as usize).min(1 << 31);
    let rows_per = (win / per_row).max(1);
    if per_row > win {
        return Err(Error::limit(OP, "elements of one weight row (one binding)", per_row as u64, win as u64));
    }
    // Operands a variant does not read are bound to this (its override leaves them untouched).
    let dummy = GpuTensor::zeros(ctx, &[4], DType::F32)?;
    let mut row0 = 0;
    while row0 < n {
        let rows = rows_per.min(n - row0);
        let len = rows * k;
        let pw = pristine.window(ctx, row0 * k, len)?;
        let ow = out.window(ctx, row0 * k, len)?;
        let uw = match up {
            Some(u) => u.window(ctx, row0 * r, rows * r)?,
            None => dummy.full(ctx)?,
        };
        let dw = match down {
            Some(d) => d.full(ctx)?,
            None => dummy.full(ctx)?,
        };
        let fw = match full {
            Some(f) => f.window(ctx, row0 * k, len)?,
            None => dummy.full(ctx)?,
        };
        let prm = Params {
            n: len as u32,
            k: k as u32,
            r: r as u32,
            p_shift: pw.shift,
            o_shift: ow.shift,
            u_shift: uw.shift,
            d_shift: dw.shift,
            f_shift: fw.shift,
        };
        let groups = fold_groups(ctx, OP, (len as u64).div_ceil(WG as u64))?;
        let mut keep = vec![pristine.keep(), out.keep(), dummy.keep()];
        keep.extend([up, down, full].into_iter().flatten().map(GpuTensor::keep));
        launch(
            ctx,
            rec,
            &SRC,
            &key,
            &[
                Arg::Read(pw),
                Arg::Write(ow),
                Arg::Read(uw),
                Arg::Read(dw),
                Arg::Read(fw),
                Arg::Uniform(bytemuck::bytes_of(&prm)),
            ],
            groups,
            keep,
        )?;
        row0 += rows;
    }
    Ok(())
}
