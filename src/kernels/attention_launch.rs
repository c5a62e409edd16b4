//! What both attention kernels share (`attention.wgsl` and `attention_sg.wgsl` take the same
//! layouts, contract and uniform block): argument checks, the launches over binding-sized runs of
//! batches or query rows, and the profile annotation. The launchers differ in the pipeline and the
//! query rows one workgroup covers.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{fold_groups, launch, Arg, KernelSource, PipelineKey, Recorder, Work};
use crate::tensor::{chunks, max_window_elems, GpuTensor};
use crate::{Context, Error, Result};

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

/// The uniform block of both shaders.
#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    nb: u32,
    sq: u32,
    nr: u32,
    row0: u32,
    sk: u32,
    heads: u32,
    hd: u32,
    nqt: u32,
    groups: u32,
    q_shift: u32,
    k_shift: u32,
    v_shift: u32,
    o_shift: u32,
    causal: u32,
    scale_log2: f32,
    d: u32,
}

/// Launch an attention of checked operands (head dim `d`) through `src`/`key`, a workgroup per `bq`
/// query rows of one (batch, head). Launches cover whole batches while q/k/v/out fit one binding,
/// else one batch's query rows; one batch's K or V must fit a binding. `vec4`: the kernel reads
/// vec4s, so every window must start at a multiple of 4 elements. Errors name `op`.
#[allow(clippy::too_many_arguments)]
pub(crate) fn launch_attention(
    ctx: &Context,
    rec: &mut Recorder,
    op: &'static str,
    src: &KernelSource,
    key: &PipelineKey,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    out: &GpuTensor,
    heads: usize,
    causal: bool,
    scale: f32,
    d: usize,
    bq: usize,
    vec4: bool,
) -> Result<()> {
    let (b, sq, sk, hd) = (q.shape[0], q.shape[1], k.shape[1], q.shape[2]);
    if b * sq == 0 {
        return Ok(());
    }
    let maxe = max_window_elems(ctx, q.dtype) as usize;
    let (qb, kb) = (sq * hd, sk * hd);
    if kb > maxe {
        return Err(Error::limit(
            op,
            format!("elements of one batch's k/v [{sk}, {hd}] (one storage binding)"),
            kb as u64,
            maxe as u64,
        ));
    }
    // (first batch, batches, first row, rows) per launch.
    let runs: Vec<_> = if qb <= maxe {
        let per = (maxe / qb).min(maxe / kb.max(1)).max(1);
        chunks(b, per).map(|(b0, nb)| (b0, nb, 0, sq)).collect()
    } else {
        let rows = (maxe / hd / bq * bq).max(1);
        (0..b).flat_map(|bi| chunks(sq, rows).map(move |(r0, nr)| (bi, 1, r0, nr))).collect()
    };
    for (b0, nb, r0, nr) in runs {
        let qlen = ((nb - 1) * sq + nr) * hd;
        let qw = q.window(ctx, (b0 * sq + r0) * hd, qlen)?;
        let ow = out.window(ctx, (b0 * sq + r0) * hd, qlen)?;
        let kw = k.window(ctx, b0 * kb, nb * kb)?;
        let vw = v.window(ctx, b0 * kb, nb * kb)?;
        if vec4 && [qw.shift, ow.shift, kw.shift, vw.shift].iter().any(|s| s % 4 != 0) {
            return Err(Error::invalid(op, "q, k, v and out must start at multiples of 4 elements"));
        }
        let nqt = nr.div_ceil(bq);
        let groups = (nb * heads * nqt) as u64;
        if groups > u32::MAX as u64 {
            return Err(Error::limit(op, "workgroups", groups, u32::MAX as u64));
        }
        let p = Params {
            nb: nb as u32,
            sq: sq as u32,
            nr: nr as u32,
            row0: r0 as u32,
            sk: sk as u32,
            heads: heads as u32,
            hd: hd as u32,
            nqt: nqt as u32,
            groups: groups as u32,
            q_shift: qw.shift,
            k_shift: kw.shift,
            v_shift: vw.shift,
            o_shift: ow.shift,
            causal: causal as u32,
            scale_log2: scale * std::f32::consts::LOG2_E,
            d: d as u32,
        };
        let grid = fold_groups(ctx, op, groups)?;
        let args = [Arg::Read(qw), Arg::Read(kw), Arg::Read(vw), Arg::Write(ow), Arg::Uniform(bytemuck::bytes_of(&p))];
        launch(ctx, rec, src, key, &args, grid, vec![q.keep(), k.keep(), v.keep(), out.keep()])?;
    }
    Ok(())
}
