//! Launcher for `shaders/group_norm_sg.wgsl`: the GroupNorm of [`group_norm`](super::group_norm)
//! for CPU adapters, in workgroups of one subgroup with vec4 memory accesses (see the shader's
//! opening comment for why). Same passes, partials and windows; only the chunking differs: one
//! workgroup of a few lanes streams a long chunk.

use crate::gpu::{KernelSource, PipelineKey, Recorder};
use crate::kernels::attention_sg::lanes;
use crate::kernels::group_norm_split::{check, run_split, Split};
use crate::tensor::{max_window_elems, GpuTensor};
use crate::{wgsl, Context, Result};

pub static SRC: KernelSource = wgsl!("group_norm_sg");

/// Longest chunk [`group_norm`](super::group_norm::group_norm) uses: 8192 values are 256 per
/// accumulator component of an 8-lane workgroup, which keeps the f32 shifted sums accurate.
pub const SG_MAX_CHUNK: usize = 8192;

/// GroupNorm as [`group_norm`](super::group_norm::group_norm), through the subgroup kernel with
/// chunks of at most `max_chunk` values, or `None` (nothing recorded) where that kernel does not
/// apply: not a CPU adapter, no fixed subgroup width, group or channel sizes not multiples of 4,
/// or x not vec4-aligned. Errors are those of `group_norm`.
#[allow(clippy::too_many_arguments)]
pub fn group_norm_sg(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    groups: usize,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    eps: f32,
    silu: bool,
    max_chunk: usize,
) -> Result<Option<GpuTensor>> {
    let g = check(x, groups, gamma, beta, eps)?;
    let Some(sg) = lanes(ctx) else { return Ok(None) };
    let step = 4 * sg as usize;
    let max_window = max_window_elems(ctx, x.dtype) as usize / step * step;
    let ok = ctx.caps.is_cpu() && g.spatial.is_multiple_of(4) && g.seg_len.is_multiple_of(4) && x.vec4_aligned(ctx);
    if !ok || max_window == 0 {
        return Ok(None);
    }
    // Equal chunks of whole vec4 steps (a multiple of 4 keeps vec4s inside a chunk).
    let max_chunk = (max_chunk / step * step).clamp(step, max_window);
    let n = g.seg_len.div_ceil(max_chunk);
    let chunk = g.seg_len.div_ceil(n).div_ceil(step) * step;
    let split = Split {
        src: &SRC,
        stats: PipelineKey::new(&SRC, "stats", x.dtype).with("SG", sg),
        apply: PipelineKey::new(&SRC, "apply", x.dtype).with("SG", sg).with("SILU", silu as u32),
        chunk: chunk.min(max_window),
    };
    run_split(ctx, rec, x, &g, gamma, beta, eps, &split).map(Some)
}
