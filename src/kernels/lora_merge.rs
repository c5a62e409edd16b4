//! Launcher for `shaders/lora_merge.wgsl`: `out = pristine + up·down + full` (f32 delta, one
//! rounding to the weight's dtype), or a bit-exact copy `out = pristine` when there is no delta.
//! This is how merged-mode LoRAs reach a weight and how the weight is restored afterwards
//! ([`crate::lora::apply`]); it runs once per LoRA change, never per step, so it is a plain
//! per-element kernel rather than a tiled GEMM.
//!
//! Weights larger than one storage binding are split by rows: each launch binds the rows'
//! windows of `pristine`, `out`, `up` and `full`. Ranks longer than [`MAX_RANK`], or whose
//! `down` rows do not fit one binding, are split into rank chunks whose partial sums go through
//! an f32 scratch, so the weight is still rounded once.

use std::sync::Arc;

use bytemuck::{Pod, Zeroable};

use crate::gpu::pool::PooledBuffer;
use crate::gpu::Recorder;
use crate::gpu::{fold_groups, launch, Arg, KernelSource, PipelineKey};
use crate::tensor::{max_window_elems, DType, GpuTensor, Window};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("lora_merge");
const WG: u32 = 256;
const OP: &str = "lora_merge";
/// Longest rank loop of one launch (lavapipe ends shader loops after 65535 iterations); longer
/// ranks are split into several launches.
pub const MAX_RANK: usize = 16384;

const COPY: u32 = 0;
const MERGE: u32 = 1;
const START: u32 = 2;
const ADD: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    k: u32,
    r: u32,
    ur: u32,
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
    let (n, k, r) = check(pristine, out, up, down, full)?;
    // Rows per launch: every window within one binding, the element count within u32.
    let win = (max_window_elems(ctx, pristine.dtype).min(max_window_elems(ctx, DType::F32)) as usize).min(1 << 31);
    if k.max(r) > win {
        return Err(Error::limit(OP, "elements of one row of the weight or of up", k.max(r) as u64, win as u64));
    }
    let rows_per = win / k.max(r);
    // Ranks per launch: a loop lavapipe finishes and rows of down that fit one binding.
    let rank_per = MAX_RANK.min(win / k);
    let chunks = r.div_ceil(rank_per);
    // Operands a variant does not read are bound to this (its override leaves them untouched).
    let dummy = GpuTensor::zeros(ctx, &[4], DType::F32)?;
    let scratch = match chunks > 1 {
        true => Some(GpuTensor::empty(ctx, &[rows_per.min(n) * k], DType::F32)?),
        false => None,
    };
    let mut keep = vec![pristine.keep(), out.keep(), dummy.keep()];
    keep.extend([up, down, full, scratch.as_ref()].into_iter().flatten().map(GpuTensor::keep));
    let mut row0 = 0;
    while row0 < n {
        let rows = rows_per.min(n - row0);
        let len = rows * k;
        let uw = || window_or(ctx, up, &dummy, row0 * r, rows * r);
        let fw = full.map(|f| f.window(ctx, row0 * k, len)).transpose()?;
        let mut pass = Pass {
            dtype: pristine.dtype,
            mode: if r == 0 && full.is_none() { COPY } else { MERGE },
            p: pristine.window(ctx, row0 * k, len)?,
            o: out.window(ctx, row0 * k, len)?,
            u: uw()?,
            d: window_or(ctx, down, &dummy, 0, r.min(rank_per) * k)?,
            f: fw,
            r0: 0,
            rc: r,
        };
        if let Some(s) = &scratch {
            // Partial sums over rank chunks in f32; the last chunk adds them to the weight.
            let mut f = pass.f.take();
            for c in 0..chunks - 1 {
                let r0 = c * rank_per;
                dispatch(
                    ctx,
                    rec,
                    Pass {
                        dtype: DType::F32,
                        mode: if c == 0 { START } else { ADD },
                        p: dummy.full(ctx)?,
                        o: s.window(ctx, 0, len)?,
                        u: uw()?,
                        d: window_or(ctx, down, &dummy, r0 * k, rank_per * k)?,
                        f: f.take(),
                        r0,
                        rc: rank_per,
                    },
                    (len, k, r),
                    &dummy,
                    &keep,
                )?;
            }
            pass.r0 = (chunks - 1) * rank_per;
            pass.rc = r - pass.r0;
            pass.d = window_or(ctx, down, &dummy, pass.r0 * k, pass.rc * k)?;
            pass.f = Some(s.window(ctx, 0, len)?);
        }
        dispatch(ctx, rec, pass, (len, k, r), &dummy, &keep)?;
        row0 += rows;
    }
    Ok(())
}

/// One launch: its variant, windows and the ranks `[r0, r0 + rc)` it sums.
struct Pass<'a> {
    dtype: DType,
    mode: u32,
    p: Window<'a>,
    o: Window<'a>,
    u: Window<'a>,
    d: Window<'a>,
    f: Option<Window<'a>>,
    r0: usize,
    rc: usize,
}

/// Record `pass` over `len` elements of rows `k` long, `up` rows being `r` long.
fn dispatch(
    ctx: &Context,
    rec: &mut Recorder,
    pass: Pass,
    (len, k, r): (usize, usize, usize),
    dummy: &GpuTensor,
    keep: &[Arc<PooledBuffer>],
) -> Result<()> {
    let key = PipelineKey::new(&SRC, "main", pass.dtype)
        .with("WG", WG)
        .with("MODE", pass.mode)
        .with("HAS_LR", (pass.rc > 0) as u32)
        .with("HAS_FULL", pass.f.is_some() as u32);
    let f = pass.f.map_or_else(|| dummy.full(ctx), Ok)?;
    let prm = Params {
        n: len as u32,
        k: k as u32,
        r: pass.rc as u32,
        ur: r as u32,
        p_shift: pass.p.shift,
        o_shift: pass.o.shift,
        u_shift: pass.u.shift + pass.r0 as u32,
        d_shift: pass.d.shift,
        f_shift: f.shift,
    };
    let args = [
        Arg::Read(pass.p),
        Arg::Write(pass.o),
        Arg::Read(pass.u),
        Arg::Read(pass.d),
        Arg::Read(f),
        Arg::Uniform(bytemuck::bytes_of(&prm)),
    ];
    let groups = fold_groups(ctx, OP, (len as u64).div_ceil(WG as u64))?;
    launch(ctx, rec, &SRC, &key, &args, groups, keep.to_vec())
}

/// Shapes, dtypes and aliasing of the operands → `(N, K, R)`.
fn check(
    pristine: &GpuTensor,
    out: &GpuTensor,
    up: Option<&GpuTensor>,
    down: Option<&GpuTensor>,
    full: Option<&GpuTensor>,
) -> Result<(usize, usize, usize)> {
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
    if [up, down, full].into_iter().flatten().any(|t| t.same_buffer(out)) {
        return Err(Error::invalid(OP, "out shares its buffer with up, down or full"));
    }
    Ok((n, k, r))
}

/// `t`'s elements `[start, start + len)`, or all of `dummy` for an operand the variant skips.
fn window_or<'a>(
    ctx: &Context,
    t: Option<&'a GpuTensor>,
    dummy: &'a GpuTensor,
    start: usize,
    len: usize,
) -> Result<Window<'a>> {
    match t {
        Some(t) => t.window(ctx, start, len),
        None => dummy.full(ctx),
    }
}
