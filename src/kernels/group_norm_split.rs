//! The two passes shared by both GroupNorm kernels (`group_norm.wgsl` and `group_norm_sg.wgsl`:
//! same bindings, Params and partial statistics): argument checks, and recording `stats` then
//! `apply` over binding-sized windows of chunks. The launchers differ only in the pipelines and
//! the chunk length they hand in.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{fold_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::kernels::affine::check_affine;
use crate::tensor::{chunks, max_window_elems, DType, GpuTensor};
use crate::{Context, Error, Result};

const OP: &str = "group_norm";

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
