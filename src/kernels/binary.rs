//! Launcher for `shaders/binary.wgsl`: add, sub, mul and `alpha·a + beta·b` with NumPy/PyTorch
//! broadcasting (shapes right-aligned, size-1 dimensions stretch).
//!
//! The launcher merges adjacent dimensions that broadcast alike (same-shape operands become one
//! flat dimension, `[2,320,64,64] + [2,320,1,1]` becomes `[640, 4096]`), so the shader's index
//! arithmetic is one or two divisions for every shape the UNet uses. Outputs, or operands, larger
//! than one storage binding are split by output range: each dispatch gets a box of the output
//! (fixed outer coordinates, a run of one dimension, all inner dimensions) whose operand spans are
//! computed here and bound as windows.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{chunks, max_window_elems, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("binary");
const WG: u32 = 256;
/// Most dimensions the shader handles after merging (any rank that merges to this many works).
pub const MAX_DIMS: usize = 8;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BinaryOp {
    Add,
    Sub,
    Mul,
}

impl BinaryOp {
    fn code(self) -> u32 {
        match self {
            BinaryOp::Add => 0,
            BinaryOp::Sub => 1,
            BinaryOp::Mul => 2,
        }
    }
}

/// Shader op code of `alpha·a + beta·b`.
const CODE_ADD_SCALED: u32 = 3;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    a_shift: u32,
    b_shift: u32,
    o_shift: u32,
    alpha: f32,
    beta: f32,
    pad0: u32,
    pad1: u32,
    shape: [[u32; 4]; 2],
    sa: [[u32; 4]; 2],
    sb: [[u32; 4]; 2],
}

/// The broadcast shape of `a` and `b` (right-aligned; each pair of sizes equal or one of them 1),
/// or `None` when they are incompatible.
pub fn broadcast_shape(a: &[usize], b: &[usize]) -> Option<Vec<usize>> {
    let r = a.len().max(b.len());
    let mut out = vec![0; r];
    for (d, o) in out.iter_mut().enumerate() {
        let x = if d + a.len() >= r { a[d + a.len() - r] } else { 1 };
        let y = if d + b.len() >= r { b[d + b.len() - r] } else { 1 };
        *o = if x == y || y == 1 {
            x
        } else if x == 1 {
            y
        } else {
            return None;
        };
    }
    Some(out)
}

/// Element strides of `shape` (right-aligned to `out.len()` dims) as seen from `out`'s
/// coordinates: row-major, 0 along broadcast dimensions.
fn broadcast_strides(shape: &[usize], out: &[usize]) -> Vec<usize> {
    let r = out.len();
    let mut s = vec![0; r];
    let mut acc = 1;
    for d in (0..r).rev() {
        let ext = if d + shape.len() >= r { shape[d + shape.len() - r] } else { 1 };
        s[d] = if ext == 1 { 0 } else { acc };
        acc *= ext;
    }
    s
}

/// One merged dimension: extent and the strides of a and b along it.
#[derive(Clone, Copy, Debug)]
struct Dim {
    ext: usize,
    sa: usize,
    sb: usize,
}

/// Drop size-1 dimensions and merge neighbours whose strides chain (outer = inner · extent) in
/// both operands. Never empty.
fn merge_dims(out: &[usize], a: &[usize], b: &[usize]) -> Vec<Dim> {
    let sa = broadcast_strides(a, out);
    let sb = broadcast_strides(b, out);
    let mut dims: Vec<Dim> = Vec::new();
    for d in 0..out.len() {
        if out[d] == 1 {
            continue;
        }
        let cur = Dim { ext: out[d], sa: sa[d], sb: sb[d] };
        match dims.last_mut() {
            Some(last) if last.sa == cur.sa * cur.ext && last.sb == cur.sb * cur.ext => {
                *last = Dim { ext: last.ext * cur.ext, sa: cur.sa, sb: cur.sb };
            }
            _ => dims.push(cur),
        }
    }
    if dims.is_empty() {
        dims.push(Dim { ext: 1, sa: 0, sb: 0 });
    }
    dims
}

/// `a op b` with broadcasting, into a new tensor of the broadcast shape and the operands' dtype.
pub fn binary(ctx: &Context, rec: &mut Recorder, a: &GpuTensor, b: &GpuTensor, op: BinaryOp) -> Result<GpuTensor> {
    run(ctx, rec, a, b, op.code(), 0.0, 0.0, "binary")
}

/// `a + b` with broadcasting.
pub fn add(ctx: &Context, rec: &mut Recorder, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    binary(ctx, rec, a, b, BinaryOp::Add)
}

/// `a - b` with broadcasting.
pub fn sub(ctx: &Context, rec: &mut Recorder, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    binary(ctx, rec, a, b, BinaryOp::Sub)
}

/// `a · b` with broadcasting.
pub fn mul(ctx: &Context, rec: &mut Recorder, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    binary(ctx, rec, a, b, BinaryOp::Mul)
}

/// `a + b` with broadcasting into the existing `out` (of the broadcast shape and the operands'
/// dtype, sharing a buffer with neither): rewrites a tensor that a recorded graph reads, such as
/// the UNet's time embedding plus SDXL's added embedding.
pub fn add_into(ctx: &Context, rec: &mut Recorder, a: &GpuTensor, b: &GpuTensor, out: &GpuTensor) -> Result<()> {
    const OP: &str = "add_into";
    let shape = out_shape(a, b, OP)?;
    if out.shape != shape || out.dtype != a.dtype {
        return Err(Error::shape(
            OP,
            format!(
                "out {:?} {} must be {shape:?} {} for a {:?} + b {:?}",
                out.shape,
                out.dtype.name(),
                a.dtype.name(),
                a.shape,
                b.shape
            ),
        ));
    }
    // A buffer bound both read-only and read-write in one dispatch is a wgpu validation error.
    if out.same_buffer(a) || out.same_buffer(b) {
        return Err(Error::invalid(OP, "out shares a buffer with an operand"));
    }
    run_into(ctx, rec, a, b, BinaryOp::Add.code(), 0.0, 0.0, OP, out)
}

/// `alpha·a + beta·b` into a new tensor (samplers, classifier-free guidance). Usually `a` and `b`
/// have the same shape; broadcasting works as in [`binary`].
pub fn add_scaled(
    ctx: &Context,
    rec: &mut Recorder,
    a: &GpuTensor,
    b: &GpuTensor,
    alpha: f32,
    beta: f32,
) -> Result<GpuTensor> {
    run(ctx, rec, a, b, CODE_ADD_SCALED, alpha, beta, "add_scaled")
}

fn pack(v: impl Iterator<Item = usize>) -> [[u32; 4]; 2] {
    let mut p = [[0u32; 4]; 2];
    for (d, x) in v.enumerate() {
        p[d / 4][d % 4] = x as u32;
    }
    p
}

/// The output shape of `a op b`, after checking that the operands fit together.
fn out_shape(a: &GpuTensor, b: &GpuTensor, op: &'static str) -> Result<Vec<usize>> {
    if a.dtype != b.dtype {
        return Err(Error::dtype(
            op,
            format!("a {:?} is {} but b {:?} is {}", a.shape, a.dtype.name(), b.shape, b.dtype.name()),
        ));
    }
    broadcast_shape(&a.shape, &b.shape)
        .ok_or_else(|| Error::shape(op, format!("cannot broadcast a {:?} with b {:?}", a.shape, b.shape)))
}

#[allow(clippy::too_many_arguments)]
fn run(
    ctx: &Context,
    rec: &mut Recorder,
    a: &GpuTensor,
    b: &GpuTensor,
    code: u32,
    alpha: f32,
    beta: f32,
    op: &'static str,
) -> Result<GpuTensor> {
    let shape = out_shape(a, b, op)?;
    let out = GpuTensor::empty(ctx, &shape, a.dtype)?;
    run_into(ctx, rec, a, b, code, alpha, beta, op, &out)?;
    Ok(out)
}

/// [`run`] into `out`, which the caller checked has the broadcast shape and dtype.
#[allow(clippy::too_many_arguments)]
fn run_into(
    ctx: &Context,
    rec: &mut Recorder,
    a: &GpuTensor,
    b: &GpuTensor,
    code: u32,
    alpha: f32,
    beta: f32,
    op: &'static str,
    out: &GpuTensor,
) -> Result<()> {
    let n: usize = out.shape.iter().product();
    let dims = merge_dims(&out.shape, &a.shape, &b.shape);
    if dims.len() > MAX_DIMS {
        return Err(Error::limit(
            op,
            format!("dimensions of a {:?} and b {:?} after merging", a.shape, b.shape),
            dims.len() as u64,
            MAX_DIMS as u64,
        ));
    }
    if n == 0 {
        return Ok(());
    }

    // Chunking: k is the outermost dimension whose inner block (all dimensions after it) fits one
    // binding; a chunk fixes the coordinates before k and takes a run of `step` along k. Operand
    // spans of a chunk are never longer than the chunk itself (strides are row-major or 0), so
    // every window fits whenever the output chunk does.
    // Indices, extents and strides in the shader are chunk-local and bounded by `cap`, so u32.
    let cap = max_window_elems(ctx, a.dtype).clamp(1, 1 << 31) as usize;
    let r = dims.len();
    let inner: Vec<usize> = (0..r).map(|d| dims[d + 1..].iter().map(|x| x.ext).product()).collect();
    let k = (0..r).find(|&d| inner[d] <= cap).unwrap_or(r - 1);
    let step = (cap / inner[k]).clamp(1, dims[k].ext);
    let prefix: usize = dims[..k].iter().map(|x| x.ext).product();
    // Extent of the inner block in each operand (last element's offset + 1 is added per chunk).
    let inner_a: usize = dims[k + 1..].iter().map(|x| (x.ext - 1) * x.sa).sum();
    let inner_b: usize = dims[k + 1..].iter().map(|x| (x.ext - 1) * x.sb).sum();
    let nd = (r - k) as u32;
    let key1 = PipelineKey::new(&SRC, "main", a.dtype).with("WG", WG).with("NDIM", nd).with("OP", code);
    let key4 = PipelineKey::new(&SRC, "main4", a.dtype).with("WG", WG).with("NDIM", nd).with("OP", code);
    // main4 (CPU adapters): each operand's innermost stride is 1, its others multiples of 4, or 0.
    let vec_strides = |s: &dyn Fn(&Dim) -> usize| match s(&dims[r - 1]) {
        0 => true,
        1 => dims[k..r - 1].iter().all(|d| s(d).is_multiple_of(4)),
        _ => false,
    };
    let vec_ok = ctx.caps.is_cpu() && vec_strides(&|d| d.sa) && vec_strides(&|d| d.sb);

    for pfx in 0..prefix {
        let (mut base_a, mut base_b, mut rem) = (0usize, 0usize, pfx);
        for d in (0..k).rev() {
            let c = rem % dims[d].ext;
            rem /= dims[d].ext;
            base_a += c * dims[d].sa;
            base_b += c * dims[d].sb;
        }
        for (lo, span) in chunks(dims[k].ext, step) {
            let o_start = (pfx * dims[k].ext + lo) * inner[k];
            let len = span * inner[k];
            let a_start = base_a + lo * dims[k].sa;
            let b_start = base_b + lo * dims[k].sb;
            let a_len = (span - 1) * dims[k].sa + inner_a + 1;
            let b_len = (span - 1) * dims[k].sb + inner_b + 1;
            let aw = a.window(ctx, a_start, a_len)?;
            let bw = b.window(ctx, b_start, b_len)?;
            let ow = out.window(ctx, o_start, len)?;
            let inner_ext = if k == r - 1 { span } else { dims[r - 1].ext };
            let counts = [inner_ext, aw.shift as usize, bw.shift as usize, ow.shift as usize, len, a_len, b_len];
            let v = if vec_ok && counts.iter().all(|x| x.is_multiple_of(4)) { 4 } else { 1 };
            let key = if v == 4 { &key4 } else { &key1 };
            let p = Params {
                n: (len / v) as u32,
                a_shift: aw.shift,
                b_shift: bw.shift,
                o_shift: ow.shift / v as u32,
                alpha,
                beta,
                pad0: 0,
                pad1: 0,
                shape: pack(std::iter::once(span).chain(dims[k + 1..].iter().map(|x| x.ext))),
                sa: pack(dims[k..].iter().map(|x| x.sa)),
                sb: pack(dims[k..].iter().map(|x| x.sb)),
            };
            let groups = flat_groups(ctx, op, len / v, WG)?;
            let args = [Arg::Read(aw), Arg::Read(bw), Arg::Write(ow), Arg::Uniform(bytemuck::bytes_of(&p))];
            launch(ctx, rec, &SRC, key, &args, groups, vec![a.keep(), b.keep(), out.keep()])?;
        }
    }
    Ok(())
}
