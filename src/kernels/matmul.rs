//! Launcher for `shaders/matmul.wgsl`: `linear` (x·Wᵀ + b with PyTorch `[out, in]` weights) and
//! batched `matmul` (A·B), plus the two-K-segment GEMM that `lora_linear` is built on.
//!
//! Two kernels share the shader (see its opening comment): `tiled` (workgroup-memory tiles, 4x4
//! named accumulators per thread; any shape) for GPUs, and `sg` (32x8 register tiles per lane, rows
//! shared by subgroupBroadcast) for CPU adapters such as lavapipe, where it is several times faster.
//! [`default_kernel`] picks one from `ctx.caps`; `sg` needs K % 4 == 0 and 4-element-aligned
//! operands and silently falls back to `tiled` otherwise.
//!
//! Operands larger than one storage binding are split: over N (weight rows, output columns), over
//! M (input and output rows), and, for a non-transposed `b`, over K (later chunks accumulate into
//! the output). Grids beyond 65535 workgroups are folded.

use std::sync::OnceLock;

use bytemuck::{Pod, Zeroable};

use super::autotune::{self, Search};
pub use super::gemm_kernel::{check_kernel, default_kernel, tiled_kernel, GemmKernel};
use crate::gpu::{fold_groups, launch, Arg, KernelSource, PipelineKey, Recorder, Work};
use crate::tensor::{chunks, max_window_elems, DType, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("matmul");

/// Where the `sg` kernel starts in `shaders/matmul.wgsl`.
const SG_MARKER: &str = "// ==== sg kernel";

/// The part of `shaders/matmul.wgsl` before the `sg` kernel: the `tiled` entry point alone, which
/// needs no SUBGROUP feature (a module is validated whole, so the full text would).
pub fn tiled_source() -> &'static KernelSource {
    static TILED: OnceLock<KernelSource> = OnceLock::new();
    TILED.get_or_init(|| KernelSource {
        name: SRC.name,
        source: SRC.source.split(SG_MARKER).next().unwrap_or(SRC.source),
    })
}

/// `shaders/matmul.wgsl` with the `sg` kernel's regular part generated in place of its stubs (the
/// lines from `//# begin sg` to `//# end sg`): 64 rows of accumulators, `mac`/`mac_hi` and
/// `sg_store_all`/`sg_store_all_hi`, each one block per row.
pub fn sg_source() -> &'static KernelSource {
    static SG: OnceLock<KernelSource> = OnceLock::new();
    SG.get_or_init(|| {
        let (begin, end) = ("//# begin sg\n", "//# end sg\n");
        let text = match (SRC.source.find(begin), SRC.source.find(end)) {
            (Some(b), Some(e)) if b < e => {
                format!("{}{}{}", &SRC.source[..b], sg_generated(), &SRC.source[e + end.len()..])
            }
            _ => SRC.source.to_string(), // a broken template fails validation at pipeline creation
        };
        KernelSource { name: SRC.name, source: Box::leak(text.into_boxed_str()) }
    })
}

fn sg_generated() -> String {
    use std::fmt::Write as _;
    // `write!` into a String cannot fail.
    let mut s = String::new();
    for r in 0..64 {
        let _ = writeln!(s, "var<private> acc{r:02}l: vec4<f32>;\nvar<private> acc{r:02}r: vec4<f32>;");
    }
    for (name, base) in [("mac", 0), ("mac_hi", 32)] {
        let _ = writeln!(s, "fn {name}(x0: vec4<f32>, x1: vec4<f32>, x2: vec4<f32>, x3: vec4<f32>,");
        let _ = writeln!(s, "    bl0: vec4<f32>, bl1: vec4<f32>, bl2: vec4<f32>, bl3: vec4<f32>,");
        let _ = writeln!(s, "    br0: vec4<f32>, br1: vec4<f32>, br2: vec4<f32>, br3: vec4<f32>) {{");
        for i in 0..32 {
            let r = base + i;
            let _ = writeln!(s, "    let v{r:02} = subgroupBroadcast(x{}, {}u);", i / 8, i % 8);
            for side in ['l', 'r'] {
                let b = if side == 'l' { "bl" } else { "br" };
                let _ = writeln!(
                    s,
                    "    acc{r:02}{side} = fma(vec4(v{r:02}.w), {b}3, fma(vec4(v{r:02}.z), {b}2, fma(vec4(v{r:02}.y), {b}1, \
                     fma(vec4(v{r:02}.x), {b}0, acc{r:02}{side}))));"
                );
            }
        }
        let _ = writeln!(s, "}}");
    }
    for (name, base) in [("sg_store_all", 0), ("sg_store_all_hi", 32)] {
        let _ = writeln!(s, "fn {name}(c_base: u32, row0: u32, col: u32, bl: vec4<f32>, br: vec4<f32>) {{");
        for r in base..base + 32 {
            let _ = writeln!(s, "    sg_store(c_base, row0 + {r}u, col, acc{r:02}l + bl, acc{r:02}r + br);");
        }
        let _ = writeln!(s, "}}");
    }
    s
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    m: u32,
    n: u32,
    k1: u32,
    k2: u32,
    lda: u32,
    ldb: u32,
    lda2: u32,
    ldb2: u32,
    ldc: u32,
    a_shift: u32,
    b_shift: u32,
    a2_shift: u32,
    b2_shift: u32,
    c_shift: u32,
    bias_shift: u32,
    flags: u32,
    batch: u32,
    tiles_n: u32,
    tiles_m: u32,
    a_bstride: u32,
    b_bstride: u32,
    c_bstride: u32,
    _p0: u32,
    _p1: u32,
}

/// Loop iterations one invocation may run (lavapipe stops at 65535, with some left for the rest).
const LOOP_BUDGET: usize = 60000;
/// Longest K one launch sums before the next launch accumulates on top (also bounds the length of
/// one f32 summation chain).
const MAX_K_PER_LAUNCH: usize = 16384;

const FLAG_BIAS: u32 = 1;
const FLAG_ACCUM: u32 = 2;

/// Candidate tiles of the `tiled` kernel for the autotune (those the device cannot run are
/// skipped).
const TUNE_TILES: [(u32, u32, u32); 6] =
    [(128, 128, 8), (128, 64, 16), (64, 128, 16), (64, 64, 32), (64, 64, 16), (32, 32, 16)];

/// The kernel for an `m × n × k` GEMM (`trans_b`: B is `[N, K]`) in `dtype`: [`default_kernel`],
/// or on GPUs the tile that [`autotune`] measured fastest for the shape class (dtype, B's layout,
/// M, N, K rounded up to powers of two), measuring it now on the first GEMM of the class.
pub fn kernel_for(ctx: &Context, m: usize, n: usize, k: usize, dtype: DType, trans_b: bool) -> GemmKernel {
    let mut fallback = default_kernel(ctx);
    // CPU adapters: 64-row tiles for large linear layers share each loaded weight vec4 among
    // twice the rows, 1.3–1.5× faster at SD's shapes on lavapipe. They take ~26 s instead of ~8 s
    // to JIT, so small layers (the bundled tiny model's, whose time goes elsewhere) keep 32 rows,
    // and B = [K, N] products keep them too (no gain measured).
    if let GemmKernel::Subgroup { lanes, .. } = fallback {
        if trans_b && m >= 64 && n >= 256 && k >= 256 {
            fallback = GemmKernel::Subgroup { lanes, rows: 64 };
        }
    }
    // The search allocates its own operands: skip it for huge ones and for empty ones.
    let big = 1 << 26;
    if !autotune::enabled(ctx) || m * n * k == 0 || m * k > big || n * k > big || m * n > big {
        return fallback;
    }
    let operands = || -> Result<[GpuTensor; 3]> {
        // Uploaded tensors are never arena tensors, so a search may run inside a graph recording.
        let b_shape = if trans_b { [n, k] } else { [k, n] };
        Ok([
            GpuTensor::from_slice(ctx, &[m, k], &vec![0.5; m * k], dtype)?,
            GpuTensor::from_slice(ctx, &b_shape, &vec![0.25; n * k], dtype)?,
            GpuTensor::from_slice(ctx, &[m, n], &vec![0.0; m * n], dtype)?,
        ])
    };
    let p2 = |v: usize| v.next_power_of_two();
    let key = format!("gemm.{}.{}.m{}.n{}.k{}", dtype.name(), if trans_b { "nt" } else { "nn" }, p2(m), p2(n), p2(k));
    if ctx.tune.get(&key).is_none() {
        log::info!("autotune: measuring GEMM tiles for {key}");
    }
    let Ok([a, b, c]) = operands() else { return fallback };
    let record = |rec: &mut Recorder, kern: &GemmKernel| {
        let g = Gemm { trans_b, ..Gemm::linear("autotune", (m, n, k), &a, &b, &c) };
        record_gemm(ctx, rec, &g, *kern)
    };
    let candidates = TUNE_TILES
        .iter()
        .map(|&(bm, bn, bk)| GemmKernel::Tiled { bm, bn, bk })
        .filter(|&t| check_kernel(ctx, "matmul", t).is_ok())
        .collect();
    autotune::pick(
        ctx,
        Search {
            key,
            candidates,
            fallback,
            name: GemmKernel::name,
            parse: GemmKernel::parse,
            record: &record,
            flops: 2.0 * (m * n * k) as f64,
        },
    )
}

/// A GEMM over row-major operands of one dtype: `c[bi] = a[bi]·op(b[bi]) + a2·b2ᵀ + bias`, with
/// `op(b) = bᵀ` when `trans_b` (b is `[N, K]`), else b is `[K, N]`.
pub(crate) struct Gemm<'a> {
    pub op: &'static str,
    pub batch: usize,
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: &'a GpuTensor,
    /// Elements between batches of `a` / `b` (0: shared by all batches).
    pub a_bstride: usize,
    pub b: &'a GpuTensor,
    pub b_bstride: usize,
    pub trans_b: bool,
    /// Second K segment (batch 1 only): a2 `[M, K2]`, b2 `[N, K2]`, K2.
    pub seg2: Option<(&'a GpuTensor, &'a GpuTensor, usize)>,
    pub bias: Option<&'a GpuTensor>,
    /// Output `[batch, M, N]`, must not alias any input.
    pub c: &'a GpuTensor,
}

impl<'a> Gemm<'a> {
    /// `c [M, N] = a [M, K] · b [N, K]ᵀ`: one batch, no second segment, no bias (set those with
    /// struct update syntax).
    pub fn linear(
        op: &'static str,
        (m, n, k): (usize, usize, usize),
        a: &'a GpuTensor,
        b: &'a GpuTensor,
        c: &'a GpuTensor,
    ) -> Gemm<'a> {
        Gemm { op, batch: 1, m, n, k, a, a_bstride: 0, b, b_bstride: 0, trans_b: true, seg2: None, bias: None, c }
    }
}

fn round_down(x: usize, t: usize) -> usize {
    if x >= t {
        x / t * t
    } else {
        x
    }
}

/// K consumed per loop step, and loop iterations per step (all loops of the entry point).
fn loop_iterations(kernel: GemmKernel) -> (usize, usize) {
    match kernel {
        GemmKernel::Subgroup { .. } => (4, 1),
        GemmKernel::Tiled { bm, bn, bk } => {
            let wg = (bm / 4) * (bn / 4);
            (bk as usize, 1 + bk as usize + (bm * bk).div_ceil(wg) as usize + (bn * bk).div_ceil(wg) as usize)
        }
    }
}

/// The shader text and pipeline key of `kernel` for `g`.
fn pipeline(g: &Gemm<'_>, dt: DType, kernel: GemmKernel) -> (&'static KernelSource, PipelineKey) {
    let src = match kernel {
        GemmKernel::Tiled { .. } => tiled_source(),
        GemmKernel::Subgroup { .. } => sg_source(),
    };
    let base = match kernel {
        GemmKernel::Tiled { bm, bn, bk } => PipelineKey::new(src, "tiled", dt)
            .with("BM", bm)
            .with("BN", bn)
            .with("BK", bk)
            .with("WG", (bm / 4) * (bn / 4)),
        GemmKernel::Subgroup { lanes, rows } => PipelineKey::new(src, "sg", dt).with("SG", lanes).with("RB", rows / 32),
    };
    // The second K segment is a uniform (k2 = 0 skips it), not an override constant: a separate
    // variant for the fused LoRA linear cost lavapipe another 8 s of JIT for the same speed.
    (src, base.with("TRANS_B", g.trans_b as u32))
}

/// Record `g` with `kernel` (which must pass [`check_kernel`]).
pub(crate) fn record_gemm(ctx: &Context, rec: &mut Recorder, g: &Gemm<'_>, kernel: GemmKernel) -> Result<()> {
    let from = rec.len();
    record_gemm_dispatches(ctx, rec, g, kernel)?;
    // Each operand read once (a batch-shared operand once for all batches), c written once.
    let per = |stride: usize| if stride == 0 { 1 } else { g.batch };
    let k2 = g.seg2.map_or(0, |s| s.2);
    let elems = per(g.a_bstride) * g.m * g.k + per(g.b_bstride) * g.n * g.k + (g.m + g.n) * k2 + g.batch * g.m * g.n;
    let flops = 2.0 * (g.batch * g.m * g.n) as f64 * (g.k + k2) as f64;
    let class = if k2 > 0 {
        format!("gemm+lora {}x{}x{}", g.batch * g.m, g.n, g.k)
    } else {
        format!("gemm {}x{}x{}", g.batch * g.m, g.n, g.k)
    };
    rec.annotate(from, class, Work { flops, bytes: (elems * g.c.dtype.size()) as f64 });
    Ok(())
}

fn record_gemm_dispatches(ctx: &Context, rec: &mut Recorder, g: &Gemm<'_>, kernel: GemmKernel) -> Result<()> {
    check_kernel(ctx, g.op, kernel)?;
    let dt = g.c.dtype;
    let (m, n, k) = (g.m, g.n, g.k);
    let k2 = g.seg2.map(|s| s.2).unwrap_or(0);
    if m == 0 || n == 0 || g.batch == 0 {
        return Ok(());
    }
    if k == 0 {
        return Err(Error::shape(g.op, format!("K must be positive (M={m}, N={n}, K=0)")));
    }
    for (name, t) in [("a", g.a), ("b", g.b)] {
        if g.c.same_buffer(t) {
            return Err(Error::invalid(g.op, format!("output aliases input {name}")));
        }
    }
    if let Some((a2, b2, _)) = g.seg2 {
        if g.c.same_buffer(a2) || g.c.same_buffer(b2) {
            return Err(Error::invalid(g.op, "output aliases a LoRA operand"));
        }
    }
    if g.bias.is_some_and(|bt| g.c.same_buffer(bt)) {
        return Err(Error::invalid(g.op, "output aliases bias"));
    }
    // The subgroup kernel reads A, B (and A2, B2) as vec4s along their contiguous dimension; where
    // the shape or a window's alignment does not allow it, the portable kernel runs instead.
    let fallback = tiled_kernel(ctx);
    let mut kernel = kernel;
    if let GemmKernel::Subgroup { .. } = kernel {
        if !k.is_multiple_of(4) || !k2.is_multiple_of(4) || (!g.trans_b && !n.is_multiple_of(4)) {
            kernel = fallback;
        }
    }
    let (tm, tn) = kernel.tile();
    let maxw = max_window_elems(ctx, dt) as usize;
    let ldb = if g.trans_b { k } else { n };
    let fits = |t: &GpuTensor| t.fits_binding(ctx);
    let all_fit = fits(g.a)
        && fits(g.b)
        && fits(g.c)
        && g.seg2.map(|(x, y, _)| fits(x) && fits(y)).unwrap_or(true)
        && g.bias.map(fits).unwrap_or(true);
    // Chunks: rows of M, columns of N, rows of K (only for a non-transposed b).
    let (mut mw, mut nw, mut kw) = (m, n, k);
    // Lavapipe ends a shader's loops after 65535 iterations in total per invocation (gallivm's
    // LP_MAX_TGSI_LOOP_ITERATIONS, shared by all loops), silently. Long K is therefore summed over
    // several launches that each stay under that count, later ones accumulating into C; K per
    // launch is also capped at MAX_K_PER_LAUNCH. SD's largest K (5120) is never split.
    let mut k_budget = MAX_K_PER_LAUNCH;
    for kern in [kernel, fallback] {
        let (k_step, iters) = loop_iterations(kern);
        let steps2 = k2.div_ceil(k_step);
        if steps2 * iters > LOOP_BUDGET {
            return Err(Error::limit(
                g.op,
                "LoRA rank (K2) in one launch",
                k2 as u64,
                (LOOP_BUDGET / iters * k_step) as u64,
            ));
        }
        k_budget = k_budget.min(round_down((LOOP_BUDGET / iters - steps2) * k_step, 16));
    }
    kw = kw.min(k_budget.max(1));
    let per_launch = if all_fit && kw == k { g.batch } else { 1 };
    if !all_fit {
        if g.trans_b {
            if k.max(k2) > maxw {
                return Err(Error::limit(g.op, "elements in one row of the weight (K)", k.max(k2) as u64, maxw as u64));
            }
            nw = n.min(maxw / k);
            if let Some(rows) = maxw.checked_div(k2) {
                nw = nw.min(rows);
            }
        } else {
            if n > maxw {
                return Err(Error::limit(g.op, "elements in one row of b (N)", n as u64, maxw as u64));
            }
            kw = kw.min(maxw / n);
            if kw < k {
                kw = round_down(round_down(kw, 4), 16);
            }
        }
        if nw < n {
            nw = round_down(nw, tn);
        }
        // A window (mc-1)·K + kc, C window (mc-1)·N + nc and A2 window mc·K2 must each fit.
        mw = m.min((maxw - kw) / k + 1).min((maxw - nw) / n + 1);
        if let Some(rows) = maxw.checked_div(k2) {
            mw = mw.min(rows);
        }
        if mw < m {
            mw = round_down(mw, tm);
        }
    }
    let mut keep = vec![g.a.keep(), g.b.keep(), g.c.keep()];
    if let Some((a2, b2, _)) = g.seg2 {
        keep.push(a2.keep());
        keep.push(b2.keep());
    }
    if let Some(bt) = g.bias {
        keep.push(bt.keep());
    }
    for (bi, nb) in chunks(g.batch, per_launch) {
        for (m0, mc) in chunks(m, mw) {
            for (n0, nc) in chunks(n, nw) {
                for (k0, kc) in chunks(k, kw) {
                    let first = k0 == 0;
                    // Windows: whole tensors for a multi-batch launch, else just the chunk.
                    let (aw, bw, cw) = if nb > 1 {
                        (g.a.full(ctx)?, g.b.full(ctx)?, g.c.full(ctx)?)
                    } else {
                        let a_start = bi * g.a_bstride + m0 * k + k0;
                        let (b_start, b_len) = if g.trans_b {
                            (bi * g.b_bstride + n0 * k + k0, (nc - 1) * k + kc)
                        } else {
                            (bi * g.b_bstride + k0 * n + n0, (kc - 1) * n + nc)
                        };
                        (
                            g.a.window(ctx, a_start, (mc - 1) * k + kc)?,
                            g.b.window(ctx, b_start, b_len)?,
                            g.c.window(ctx, bi * m * n + m0 * n + n0, (mc - 1) * n + nc)?,
                        )
                    };
                    let seg2 = if first { g.seg2 } else { None };
                    let (a2w, b2w) = match seg2 {
                        Some((a2, b2, k2)) => {
                            (Some(a2.window(ctx, m0 * k2, mc * k2)?), Some(b2.window(ctx, n0 * k2, nc * k2)?))
                        }
                        None => (None, None),
                    };
                    let biasw = match g.bias {
                        Some(bt) if first => Some(bt.window(ctx, n0, nc)?),
                        _ => None,
                    };
                    let aligned =
                        [Some(&aw), Some(&bw), a2w.as_ref(), b2w.as_ref()].iter().flatten().all(|w| w.shift % 4 == 0);
                    let sg_ok = aligned && kc % 4 == 0;
                    let kern = if matches!(kernel, GemmKernel::Subgroup { .. }) && !sg_ok { fallback } else { kernel };
                    let (tm, tn) = kern.tile();
                    let mut flags = 0;
                    if biasw.is_some() {
                        flags |= FLAG_BIAS;
                    }
                    if !first {
                        flags |= FLAG_ACCUM;
                    }
                    let tiles_n = nc.div_ceil(tn);
                    let tiles_m = mc.div_ceil(tm);
                    let p = Params {
                        m: mc as u32,
                        n: nc as u32,
                        k1: kc as u32,
                        k2: if seg2.is_some() { k2 as u32 } else { 0 },
                        lda: k as u32,
                        ldb: ldb as u32,
                        lda2: k2 as u32,
                        ldb2: k2 as u32,
                        ldc: n as u32,
                        a_shift: aw.shift,
                        b_shift: bw.shift,
                        a2_shift: a2w.as_ref().map_or(0, |w| w.shift),
                        b2_shift: b2w.as_ref().map_or(0, |w| w.shift),
                        c_shift: cw.shift,
                        bias_shift: biasw.as_ref().map_or(0, |w| w.shift),
                        flags,
                        batch: nb as u32,
                        tiles_n: tiles_n as u32,
                        tiles_m: tiles_m as u32,
                        // Batch strides matter only when one launch covers several batches (then
                        // every operand fits one binding, so they fit u32).
                        a_bstride: if nb > 1 { g.a_bstride as u32 } else { 0 },
                        b_bstride: if nb > 1 { g.b_bstride as u32 } else { 0 },
                        c_bstride: if nb > 1 { (m * n) as u32 } else { 0 },
                        _p0: 0,
                        _p1: 0,
                    };
                    let groups = fold_groups(ctx, g.op, (tiles_n * tiles_m * nb) as u64)?;
                    // Unused bindings get a copy of A's window (read-only, never read); `sg` binds
                    // A, B, A2, B2 a second time as its vec4 views.
                    let a2w = a2w.unwrap_or_else(|| aw.again());
                    let b2w = b2w.unwrap_or_else(|| aw.again());
                    let mut args = vec![
                        Arg::Read(aw.again()),
                        Arg::Read(bw.again()),
                        Arg::Read(a2w.again()),
                        Arg::Read(b2w.again()),
                        Arg::Read(biasw.unwrap_or_else(|| aw.again())),
                        Arg::Write(cw),
                        Arg::Uniform(bytemuck::bytes_of(&p)),
                    ];
                    if let GemmKernel::Subgroup { .. } = kern {
                        args.extend([Arg::Read(aw), Arg::Read(bw), Arg::Read(a2w), Arg::Read(b2w)]);
                    }
                    let (src, key) = pipeline(g, dt, kern);
                    launch(ctx, rec, src, &key, &args, groups, keep.clone())?;
                }
            }
        }
    }
    Ok(())
}

fn check_dtypes(op: &'static str, ts: &[(&str, &GpuTensor)]) -> Result<DType> {
    let dt = ts[0].1.dtype;
    if ts.iter().any(|(_, t)| t.dtype != dt) {
        let all: Vec<String> = ts.iter().map(|(n, t)| format!("{n} {}", t.dtype.name())).collect();
        return Err(Error::dtype(op, format!("operands must share one dtype, got {}", all.join(", "))));
    }
    Ok(dt)
}

/// Shapes of `linear`: (M, N, K, output shape), or a shape error naming `op`.
pub(crate) fn linear_shapes(
    op: &'static str,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
) -> Result<(usize, usize, usize, Vec<usize>)> {
    let shapes = || format!("x {:?}, w {:?}, bias {:?}", x.shape, w.shape, bias.map(|b| b.shape.clone()));
    if x.shape.is_empty() || w.shape.len() != 2 || x.shape[x.shape.len() - 1] != w.shape[1] {
        return Err(Error::shape(op, format!("need x [..., K] and w [N, K]: {}", shapes())));
    }
    if bias.is_some_and(|b| b.shape.len() != 1 || b.shape[0] != w.shape[0]) {
        return Err(Error::shape(op, format!("bias must be [N]: {}", shapes())));
    }
    let (n, k) = (w.shape[0], w.shape[1]);
    if k == 0 {
        return Err(Error::shape(op, format!("K must be positive: {}", shapes())));
    }
    let m: usize = x.shape[..x.shape.len() - 1].iter().product();
    let mut out = x.shape.clone();
    *out.last_mut().expect("non-empty") = n;
    Ok((m, n, k, out))
}

/// `y = x·Wᵀ + bias`: x `[..., K]`, w `[N, K]`, bias `[N]` → y `[..., N]`, one dtype throughout
/// (f16 storage accumulates in f32).
pub fn linear(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
) -> Result<GpuTensor> {
    let kernel = match linear_shapes("linear", x, w, bias) {
        Ok((m, n, k, _)) => kernel_for(ctx, m, n, k, x.dtype, true),
        Err(_) => default_kernel(ctx), // linear_with reports the shapes
    };
    linear_with(ctx, rec, x, w, bias, kernel)
}

/// [`linear`] with an explicit kernel choice (benchmarks and tests of the portable path).
pub fn linear_with(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    kernel: GemmKernel,
) -> Result<GpuTensor> {
    const OP: &str = "linear";
    let (m, n, k, out) = linear_shapes(OP, x, w, bias)?;
    let mut ops = vec![("x", x), ("w", w)];
    if let Some(b) = bias {
        ops.push(("bias", b));
    }
    let dt = check_dtypes(OP, &ops)?;
    check_kernel(ctx, OP, kernel)?;
    let y = GpuTensor::empty(ctx, &out, dt)?;
    let g = Gemm { bias, ..Gemm::linear(OP, (m, n, k), x, w, &y) };
    record_gemm(ctx, rec, &g, kernel)?;
    Ok(y)
}

/// Batched `a·b`: a `[B, M, K]` or `[M, K]`, b `[B, K, N]` or `[K, N]` (a 2-D b is shared by every
/// batch) → `[B, M, N]` (or `[M, N]`).
pub fn matmul(ctx: &Context, rec: &mut Recorder, a: &GpuTensor, b: &GpuTensor) -> Result<GpuTensor> {
    let kernel = match (&a.shape[..], &b.shape[..]) {
        ([.., m, k], [.., kb, n]) if k == kb => kernel_for(ctx, *m, *n, *k, a.dtype, false),
        _ => default_kernel(ctx), // matmul_with reports the shapes
    };
    matmul_with(ctx, rec, a, b, kernel)
}

/// [`matmul`] with an explicit kernel choice.
pub fn matmul_with(
    ctx: &Context,
    rec: &mut Recorder,
    a: &GpuTensor,
    b: &GpuTensor,
    kernel: GemmKernel,
) -> Result<GpuTensor> {
    const OP: &str = "matmul";
    let bad = || {
        Error::shape(
            OP,
            format!(
                "need a [B, M, K] or [M, K] and b [B, K, N] or [K, N] with matching B and K: a {:?}, b {:?}",
                a.shape, b.shape
            ),
        )
    };
    let (batch, m, k) = match a.shape[..] {
        [bb, m, k] => (bb, m, k),
        [m, k] => (1, m, k),
        _ => return Err(bad()),
    };
    let (b_batched, kb, n) = match b.shape[..] {
        [bb, kb, n] => (Some(bb), kb, n),
        [kb, n] => (None, kb, n),
        _ => return Err(bad()),
    };
    if kb != k || k == 0 || (a.shape.len() == 2 && b_batched.is_some()) || b_batched.is_some_and(|bb| bb != batch) {
        return Err(bad());
    }
    let dt = check_dtypes(OP, &[("a", a), ("b", b)])?;
    check_kernel(ctx, OP, kernel)?;
    let out = if a.shape.len() == 3 { vec![batch, m, n] } else { vec![m, n] };
    let c = GpuTensor::empty(ctx, &out, dt)?;
    let g = Gemm {
        op: OP,
        batch,
        m,
        n,
        k,
        a,
        a_bstride: m * k,
        b,
        b_bstride: if b_batched.is_some() { k * n } else { 0 },
        trans_b: false,
        seg2: None,
        bias: None,
        c: &c,
    };
    record_gemm(ctx, rec, &g, kernel)?;
    Ok(c)
}
