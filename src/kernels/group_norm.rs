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

use crate::gpu::{KernelSource, PipelineKey, Recorder};
use crate::kernels::group_norm_sg::{group_norm_sg, SG_MAX_CHUNK};
use crate::kernels::group_norm_split::{check, run_split, Split};
use crate::tensor::{max_window_elems, GpuTensor};
use crate::{wgsl, Context, Result};

pub static SRC: KernelSource = wgsl!("group_norm");
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
