//! Launcher for `shaders/cfg_rescale.wgsl`: diffusers' `rescale_noise_cfg` (the `guidance_rescale`
//! of Lin et al. 2023, A1111's "CFG Rescale phi") on the GPU, so that a recorded sampling step
//! can apply it without reading anything back.
//!
//! Per batch item (row), over all of its values: `y = guided·(φ·std(text)/std(guided) + 1 − φ)`.
//! Pass `stats` writes one (count, pivot, mean − pivot, M2) partial per chunk of each input,
//! `finish` merges a row's partials into its factor, `apply` scales. The chunking aims at a few
//! thousand workgroups on GPUs (a 1024 px SDXL latent is one row of 65536 values) and a few dozen
//! on CPU adapters; every pass walks binding-sized windows, so the inputs may exceed a binding.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, fold_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{chunks, max_window_elems, DType, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("cfg_rescale");
const OP: &str = "cfg_rescale";
/// Threads per workgroup of `stats` and `finish` (the shader's MAXWG), and of `apply`.
const WG: usize = 256;
/// The shader's RADIX: the smallest workgroup its reduction handles.
const MIN_WG: usize = 16;
/// Chunk length bounds in values per thread, and the grid the chunking aims for per input
/// (see `group_norm`: the same trade-off between filling a GPU and barrier cost on lavapipe).
const MIN_ITEMS: usize = 4;
const MAX_ITEMS: usize = 32;
const TARGET_WORKGROUPS: usize = 2048;
const TARGET_WORKGROUPS_CPU: usize = 64;
/// lavapipe stops any shader loop after 65535 iterations; `finish` loops nchunks / WG times.
const MAX_LOOP: usize = 65535;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    chunk: u32,
    nchunks: u32,
    rows: u32,
    j0: u32,
    count: u32,
    x_shift: u32,
    y_shift: u32,
    p_off: u32,
    phi: f32,
    pad0: u32,
    pad1: u32,
}

/// `guided` rescaled towards the spread of `text`, per batch item: both `[B, ...]` of one
/// shape and dtype; for each b, over all values of item b,
/// `y = guided·(φ·std(text)/std(guided) + 1 − φ)` (torch.std, unbiased; the ratio does not
/// depend on it). An item whose guided values are all equal is returned unchanged. φ = 0 gives
/// `guided` back (the pipeline then records nothing at all). Statistics are f32 for f16 storage.
pub fn cfg_rescale(
    ctx: &Context,
    rec: &mut Recorder,
    text: &GpuTensor,
    guided: &GpuTensor,
    phi: f32,
) -> Result<GpuTensor> {
    let (rows, n) = check(text, guided, phi)?;
    let target = if ctx.caps.is_cpu() { TARGET_WORKGROUPS_CPU } else { TARGET_WORKGROUPS };
    let want = (rows * n).div_ceil(target);
    let wg = n.div_ceil(MIN_ITEMS).next_power_of_two().clamp(MIN_WG, WG);
    let chunk = want.div_ceil(wg) * wg;
    let chunk = chunk.clamp(MIN_ITEMS * wg, MAX_ITEMS * wg).min(n.div_ceil(wg) * wg);
    run(ctx, rec, text, guided, phi, rows, n, wg, chunk)
}

/// [`cfg_rescale`] with an explicit chunk length (values per `stats` workgroup; the workgroup
/// is the largest power of two in 16..=256 not above it). For tests that need many chunks per
/// row or more than 65535 workgroups on small inputs.
pub fn cfg_rescale_chunked(
    ctx: &Context,
    rec: &mut Recorder,
    text: &GpuTensor,
    guided: &GpuTensor,
    phi: f32,
    chunk: usize,
) -> Result<GpuTensor> {
    let (rows, n) = check(text, guided, phi)?;
    if chunk == 0 {
        return Err(Error::invalid(OP, "chunk length must be positive"));
    }
    let wg = (1usize << chunk.ilog2()).clamp(MIN_WG, WG);
    run(ctx, rec, text, guided, phi, rows, n, wg, chunk)
}

/// The (rows, values per row) of a valid call.
fn check(text: &GpuTensor, guided: &GpuTensor, phi: f32) -> Result<(usize, usize)> {
    if text.shape != guided.shape || text.shape.is_empty() {
        return Err(Error::shape(
            OP,
            format!("text {:?} and guided {:?} must have one shape [B, ...]", text.shape, guided.shape),
        ));
    }
    if text.dtype != guided.dtype {
        return Err(Error::dtype(OP, format!("text is {} but guided is {}", text.dtype.name(), guided.dtype.name())));
    }
    if !phi.is_finite() {
        return Err(Error::invalid(OP, format!("phi must be finite, got {phi}")));
    }
    if guided.numel() > u32::MAX as usize {
        return Err(Error::limit(OP, format!("values of {:?}", guided.shape), guided.numel() as u64, u32::MAX as u64));
    }
    let rows = text.shape[0];
    Ok((rows, text.numel().checked_div(rows).unwrap_or(0)))
}

#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &Context,
    rec: &mut Recorder,
    text: &GpuTensor,
    guided: &GpuTensor,
    phi: f32,
    rows: usize,
    n: usize,
    wg: usize,
    chunk: usize,
) -> Result<GpuTensor> {
    let y = GpuTensor::empty(ctx, &guided.shape, guided.dtype)?;
    if guided.numel() == 0 {
        return Ok(y);
    }
    let max_window = max_window_elems(ctx, guided.dtype) as usize;
    let chunk = chunk.min(n).min(max_window);
    let nchunks = n.div_ceil(chunk);
    let total = rows * nchunks;
    if nchunks.div_ceil(wg) > MAX_LOOP {
        return Err(Error::limit(
            OP,
            format!("chunks per row of {:?}", guided.shape),
            nchunks as u64,
            (MAX_LOOP * wg) as u64,
        ));
    }
    let part = GpuTensor::empty(ctx, &[2 * total, 4], DType::F32)?;
    if !part.fits_binding(ctx) || 2 * total > u32::MAX as usize {
        return Err(Error::limit(OP, "partial-statistics bytes", part.bytes(), ctx.caps.max_binding));
    }
    let factor = GpuTensor::empty(ctx, &[rows], DType::F32)?;
    let base = Params {
        n: n as u32,
        chunk: chunk as u32,
        nchunks: nchunks as u32,
        rows: rows as u32,
        j0: 0,
        count: 0,
        x_shift: 0,
        y_shift: 0,
        p_off: 0,
        phi,
        pad0: 0,
        pad1: 0,
    };
    let key = |entry: &'static str, w: usize| PipelineKey::new(&SRC, entry, guided.dtype).with("WG", w as u32);

    // Element range [start, end) of global chunk j of either input.
    let range = |j: usize| {
        let (r, c) = (j / nchunks, j % nchunks);
        let start = r * n + c * chunk;
        (start, start + chunk.min(n - c * chunk))
    };
    // Consecutive chunks are contiguous, each at most `chunk` values: this many fill a window.
    let per = (max_window / chunk).max(1);
    for (x, p_off) in [(text, 0), (guided, total)] {
        for (j0, count) in chunks(total, per) {
            let (start, _) = range(j0);
            let (_, end) = range(j0 + count - 1);
            let xw = x.window(ctx, start, end - start)?;
            let p = Params { j0: j0 as u32, count: count as u32, x_shift: xw.shift, p_off: p_off as u32, ..base };
            let args = [Arg::Read(xw), Arg::Write(part.full(ctx)?), Arg::Uniform(bytemuck::bytes_of(&p))];
            let groups = fold_groups(ctx, OP, count as u64)?;
            launch(ctx, rec, &SRC, &key("stats", wg), &args, groups, vec![x.keep(), part.keep()])?;
        }
    }

    let args = [Arg::Read(part.full(ctx)?), Arg::Write(factor.full(ctx)?), Arg::Uniform(bytemuck::bytes_of(&base))];
    let groups = fold_groups(ctx, OP, rows as u64)?;
    launch(ctx, rec, &SRC, &key("finish", wg), &args, groups, vec![part.keep(), factor.keep()])?;

    for (start, len) in chunks(guided.numel(), max_window) {
        let xw = guided.window(ctx, start, len)?;
        let yw = y.window(ctx, start, len)?;
        let p = Params { j0: start as u32, count: len as u32, x_shift: xw.shift, y_shift: yw.shift, ..base };
        let args = [Arg::Read(xw), Arg::Read(factor.full(ctx)?), Arg::Write(yw), Arg::Uniform(bytemuck::bytes_of(&p))];
        let groups = flat_groups(ctx, OP, len, WG as u32)?;
        launch(ctx, rec, &SRC, &key("apply", WG), &args, groups, vec![guided.keep(), factor.keep(), y.keep()])?;
    }
    Ok(y)
}
