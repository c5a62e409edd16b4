//! Launcher for `shaders/group_norm.wgsl`: GroupNorm over x [N, C, spatial...] with optional fused
//! SiLU, as a split reduction so that large images fill the GPU (SD at 1024 px has only 32 or 64
//! (n, group) pairs, each 16384×10 values).
//!
//! Pass `stats` cuts every (n, group) segment into chunks and writes one f32 partial
//! (count, pivot, mean − pivot, M2) per chunk; pass `apply` merges a segment's partials (Chan's
//! formula) in every workgroup and normalizes its chunk. Both passes walk the chunks in windows that
//! fit one storage binding, so a segment may straddle windows and the tensor may exceed a binding.
//!
//! On CPU adapters [`group_norm`] hands the same passes to `group_norm_sg.wgsl` (one-subgroup
//! workgroups, vec4 accesses) wherever that kernel applies; see [`group_norm_sg`].

use bytemuck::{Pod, Zeroable};

use crate::gpu::{fold_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::kernels::affine::check_affine;
use crate::kernels::group_norm_sg::{group_norm_sg, SG_MAX_CHUNK};
use crate::tensor::{chunks, max_window_elems, DType, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("group_norm");
const OP: &str = "group_norm";
/// Threads per workgroup: 256 (the shader's MAXWG) unless the groups are tiny.
const WG: usize = 256;
/// Chunk length bounds in values per thread, and the grid size the chunking aims for.
const MIN_ITEMS: usize = 4;
const MAX_ITEMS: usize = 32;
/// About 2048 workgroups fill a large discrete GPU (H100: 132 SMs × 8 workgroups of 256, twice
/// over) while keeping ≥ 4 values per thread. CPU adapters (lavapipe) run a workgroup with
/// barriers as coroutines at tens of µs each and have a few cores, so they get fewer, longer chunks.
const TARGET_WORKGROUPS: usize = 2048;
const TARGET_WORKGROUPS_CPU: usize = 64;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    seg_len: u32,
    chunk: u32,
    nchunks: u32,
    spatial: u32,
    cpg: u32,
    groups: u32,
    j0: u32,
    count: u32,
    x_shift: u32,
    y_shift: u32,
    g_shift: u32,
    b_shift: u32,
    eps: f32,
    pad0: u32,
    pad1: u32,
    pad2: u32,
}

/// Workgroup size and chunk length for `total` elements in segments of `seg_len`. The workgroup
/// has 256 threads, fewer (down to 32) when a segment has under 4 values per thread. The chunk is a
/// multiple of it with MIN_ITEMS..=MAX_ITEMS values per thread, aiming at `target`
/// workgroups, never longer than a (rounded-up) segment nor than a binding window.
fn chunking(total: usize, seg_len: usize, max_window: usize, target: usize) -> (usize, usize) {
    let wg = seg_len.div_ceil(MIN_ITEMS).next_power_of_two().clamp(32, WG);
    let want = total.div_ceil(target).div_ceil(wg) * wg;
    let c = want.clamp(MIN_ITEMS * wg, MAX_ITEMS * wg).min(seg_len.div_ceil(wg) * wg);
    (wg, c.min(max_window / wg * wg).max(1))
}

/// GroupNorm of `x` [N, C, ...spatial] with `groups` groups: statistics per (n, group) over
/// C/groups channels × spatial (biased variance, as PyTorch), then `y = (x−μ)/√(σ²+eps)·γ[c] + β[c]`
/// and SiLU when `silu`. `gamma`, `beta` are [C] in x's dtype. Statistics are f32 for f16 storage.
#[allow(clippy::too_many_arguments)]
pub fn group_norm(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    groups: usize,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    eps: f32,
    silu: bool,
) -> Result<GpuTensor> {
    if let Some(y) = group_norm_sg(ctx, rec, x, groups, gamma, beta, eps, silu, SG_MAX_CHUNK)? {
        return Ok(y);
    }
    let target = if ctx.caps.is_cpu() { TARGET_WORKGROUPS_CPU } else { TARGET_WORKGROUPS };
    group_norm_tuned(ctx, rec, x, groups, gamma, beta, eps, silu, target)
}

/// [`group_norm`] with an explicit grid target: the chunking aims at about `target_workgroups`
/// workgroups per pass (within 4..=32 values per thread). Always the workgroup-memory kernel: for
/// tuning, and for tests that cover the GPU chunking on a CPU adapter.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_tuned(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    groups: usize,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    eps: f32,
    silu: bool,
    target_workgroups: usize,
) -> Result<GpuTensor> {
    let g = check(x, groups, gamma, beta, eps)?;
    let max_window = max_window_elems(ctx, x.dtype) as usize;
    let (wg, chunk) = chunking(x.numel(), g.seg_len, max_window, target_workgroups.max(1));
    let split = Split {
        src: &SRC,
        stats: PipelineKey::new(&SRC, "stats", x.dtype).with("WG", wg as u32),
        apply: PipelineKey::new(&SRC, "apply", x.dtype).with("WG", wg as u32).with("SILU", silu as u32),
        chunk,
    };
    run_split(ctx, rec, x, &g, gamma, beta, eps, &split)
}

/// The sizes of a valid GroupNorm call.
pub(crate) struct Geometry {
    pub spatial: usize,
    pub cpg: usize,
    pub seg_len: usize,
    pub groups: usize,
}

/// Validate a GroupNorm call's shapes and parameters.
pub(crate) fn check(x: &GpuTensor, groups: usize, gamma: &GpuTensor, beta: &GpuTensor, eps: f32) -> Result<Geometry> {
    if x.shape.len() < 2 {
        return Err(Error::shape(OP, format!("x must be [N, C, ...spatial], got {:?}", x.shape)));
    }
    let c = x.shape[1];
    let spatial: usize = x.shape[2..].iter().product();
    if groups == 0 || !c.is_multiple_of(groups) {
        return Err(Error::shape(OP, format!("C = {c} of x {:?} is not divisible by groups = {groups}", x.shape)));
    }
    check_affine(OP, x, c, gamma, beta, eps)?;
    let cpg = c / groups;
    let seg_len = cpg * spatial;
    if seg_len > i32::MAX as usize {
        return Err(Error::limit(
            OP,
            format!("elements per group of x {:?}", x.shape),
            seg_len as u64,
            i32::MAX as u64,
        ));
    }
    Ok(Geometry { spatial, cpg, seg_len, groups })
}

/// The two pipelines of a split GroupNorm (group_norm.wgsl or group_norm_sg.wgsl: the same
/// bindings and Params) and the chunk length.
pub(crate) struct Split {
    pub src: &'static KernelSource,
    pub stats: PipelineKey,
    pub apply: PipelineKey,
    pub chunk: usize,
}

/// Record both passes of a split GroupNorm of a checked call.
#[allow(clippy::too_many_arguments)]
pub(crate) fn run_split(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    g: &Geometry,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    eps: f32,
    split: &Split,
) -> Result<GpuTensor> {
    let y = GpuTensor::empty(ctx, &x.shape, x.dtype)?;
    if x.numel() == 0 {
        return Ok(y);
    }
    let (seg_len, chunk) = (g.seg_len, split.chunk);
    let segs = x.shape[0] * g.groups;
    let max_window = max_window_elems(ctx, x.dtype) as usize;
    let nchunks = seg_len.div_ceil(chunk);
    let total = segs * nchunks;
    if total > u32::MAX as usize {
        return Err(Error::limit(OP, format!("chunks of x {:?}", x.shape), total as u64, u32::MAX as u64));
    }
    let part = GpuTensor::empty(ctx, &[total, 4], DType::F32)?;
    if !part.fits_binding(ctx) {
        return Err(Error::limit(OP, "partial-statistics bytes", part.bytes(), ctx.caps.max_binding));
    }
    let gw = gamma.full(ctx)?;
    let bw = beta.full(ctx)?;
    let base = Params {
        seg_len: seg_len as u32,
        chunk: chunk as u32,
        nchunks: nchunks as u32,
        spatial: g.spatial as u32,
        cpg: g.cpg as u32,
        groups: g.groups as u32,
        j0: 0,
        count: 0,
        x_shift: 0,
        y_shift: 0,
        g_shift: gw.shift,
        b_shift: bw.shift,
        eps,
        pad0: 0,
        pad1: 0,
        pad2: 0,
    };
    // Element range [start, end) of global chunk j.
    let range = |j: usize| {
        let (s, ci) = (j / nchunks, j % nchunks);
        let start = s * seg_len + ci * chunk;
        (start, start + chunk.min(seg_len - ci * chunk))
    };
    // Chunks per dispatch: consecutive chunks are contiguous and each is ≤ chunk elements long.
    let per = (max_window / chunk).max(1);
    let src = split.src;
    for pass in 0..2 {
        for (j0, count) in chunks(total, per) {
            let j1 = j0 + count;
            let (start, _) = range(j0);
            let (_, end) = range(j1 - 1);
            let xw = x.window(ctx, start, end - start)?;
            let groups3 = fold_groups(ctx, OP, count as u64)?;
            let mut p = Params { j0: j0 as u32, count: count as u32, x_shift: xw.shift, ..base };
            if pass == 0 {
                let args = [Arg::Read(xw), Arg::Write(part.full(ctx)?), Arg::Uniform(bytemuck::bytes_of(&p))];
                launch(ctx, rec, src, &split.stats, &args, groups3, vec![x.keep(), part.keep()])?;
            } else {
                let yw = y.window(ctx, start, end - start)?;
                p.y_shift = yw.shift;
                let args = [
                    Arg::Read(xw),
                    Arg::Read(part.full(ctx)?),
                    Arg::Read(gamma.full(ctx)?),
                    Arg::Read(beta.full(ctx)?),
                    Arg::Write(yw),
                    Arg::Uniform(bytemuck::bytes_of(&p)),
                ];
                launch(
                    ctx,
                    rec,
                    src,
                    &split.apply,
                    &args,
                    groups3,
                    vec![x.keep(), part.keep(), gamma.keep(), beta.keep(), y.keep()],
                )?;
            }
        }
    }
    Ok(y)
}
