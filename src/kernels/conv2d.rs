//! Launcher for `shaders/conv2d.wgsl`: 2-D convolution (PyTorch semantics) as an implicit GEMM.
//!
//! `x [N, Cin, H, W]` (NCHW) ⊛ `w [Cout, Cin, KH, KW]` (+ `bias [Cout]`) → `[N, Cout, Ho, Wo]`,
//! `Ho = (H + pad_t + pad_b − KH) / stride + 1` (same for W). Any kernel size and stride; the
//! padding may be asymmetric (the VAE's Downsample2D pads right and bottom only).
//!
//! The weight is first repacked into channel blocks ([`pack_weight`], also usable once at model
//! load with [`conv2d_packed`]); the convolution then runs `main_vec` (aligned vec4 pixel rows:
//! W a multiple of 4, Wo of the pixels per invocation, kernels up to 3×3) or `main_any` (every
//! other shape). Accumulation is f32; a split over input channels (only for images larger than a
//! binding) rounds the partial sums to the storage type between blocks.
//!
//! Big tensors: the batch is folded into the GEMM's pixel dimension and launched in as many images
//! at a time as fit one binding. An image that does not fit is split into blocks of output channels
//! (weights and output split along M), input channels (K split: later blocks add into the output)
//! and, when even one channel plane exceeds a binding, output rows with their input halo.

use std::sync::LazyLock;

use bytemuck::{Pod, Zeroable};

use super::autotune::{self, Search};
pub use super::conv_pack::{pack_host, pack_weight, packed_len, unpack_host, PackedConvWeight};
pub use super::conv_tile::{Conv2dParams, ConvTile, TN_MAX};
use crate::gpu::{fold_groups, launch, Arg, KernelSource, PipelineKey, Recorder, Work};
use crate::tensor::{chunks, max_window_elems, DType, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("conv2d");
const OP: &str = "conv2d";
/// Input channels per launch (lavapipe ends loops after 65535 iterations).
const MAX_LOOP: usize = 65535;
/// Row-window blocks of `main_vec`.
const WIN_MAX: usize = 12;

/// The same kernels without subgroup operations, for adapters without SUBGROUP (naga rejects a
/// module that mentions them at all). Only BCAST = 0 pipelines are built from it.
static SRC_NO_SUBGROUPS: LazyLock<KernelSource> = LazyLock::new(|| KernelSource {
    name: "conv2d",
    source: Box::leak(
        SRC.source
            .replace("subgroupBroadcast(", "no_bcast(")
            .replace("@builtin(subgroup_invocation_id)", "@builtin(local_invocation_index)")
            .into_boxed_str(),
    ),
});

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable, Default)]
struct Params {
    cin: u32,
    cout: u32,
    co_lo: u32,
    h: u32,
    w: u32,
    rows: u32,
    wo: u32,
    p: u32,
    oy0: u32,
    iy0: u32,
    pad_t: u32,
    pad_l: u32,
    x_img: u32,
    x_ch: u32,
    y_img: u32,
    y_ch: u32,
    w_blk: u32,
    x_shift: u32,
    w_shift: u32,
    b_shift: u32,
    y_shift: u32,
    has_bias: u32,
    accumulate: u32,
    tiles_m: u32,
    n_tiles: u32,
}

/// Variant overrides for tests and benchmarks (the defaults pick the fastest valid variant).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ConvForce {
    /// Use `main_any` even where `main_vec` applies.
    pub any: bool,
    /// Build from the subgroup-free source with every invocation loading its weights (BCAST = 0),
    /// as on adapters without SUBGROUP.
    pub no_subgroups: bool,
}

/// Checked dimensions of one convolution.
#[derive(Clone, Copy, Debug)]
struct Dims {
    n: usize,
    cin: usize,
    h: usize,
    w: usize,
    cout: usize,
    kh: usize,
    kw: usize,
    ho: usize,
    wo: usize,
}

fn weight_shape(w: &GpuTensor) -> Result<[usize; 4]> {
    match w.shape[..] {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(Error::shape(OP, format!("w must be [Cout, Cin, KH, KW], got {:?}", w.shape))),
    }
}

fn check(x: &GpuTensor, ws: [usize; 4], wdt: DType, bias: Option<&GpuTensor>, p: Conv2dParams) -> Result<Dims> {
    let desc = || {
        format!(
            "x {:?} {}, w {:?} {}, bias {:?}, stride {}, pad {:?}",
            x.shape,
            x.dtype.name(),
            ws,
            wdt.name(),
            bias.map(|b| (b.shape.clone(), b.dtype.name())),
            p.stride,
            p.pad
        )
    };
    let [n, cin, h, wd] = match x.shape[..] {
        [a, b, c, d] => [a, b, c, d],
        _ => return Err(Error::shape(OP, format!("x must be [N, Cin, H, W]: {}", desc()))),
    };
    let [cout, wcin, kh, kw] = ws;
    if wcin != cin {
        return Err(Error::shape(OP, format!("w has {wcin} input channels, x has {cin}: {}", desc())));
    }
    if cin == 0 || h == 0 || wd == 0 || cout == 0 || kh == 0 || kw == 0 {
        return Err(Error::shape(OP, format!("zero-sized dimension: {}", desc())));
    }
    if wdt != x.dtype {
        return Err(Error::dtype(OP, format!("x and w dtypes differ: {}", desc())));
    }
    if let Some(b) = bias {
        if b.shape.len() != 1 || b.shape[0] != cout {
            return Err(Error::shape(OP, format!("bias must be [{cout}]: {}", desc())));
        }
        if b.dtype != x.dtype {
            return Err(Error::dtype(OP, format!("bias dtype differs from x: {}", desc())));
        }
    }
    if p.stride == 0 {
        return Err(Error::invalid(OP, format!("stride must be ≥ 1: {}", desc())));
    }
    let (ho, wo) = p
        .out_size(h, wd, kh, kw)
        .ok_or_else(|| Error::shape(OP, format!("padded input smaller than the kernel: {}", desc())))?;
    // Index arithmetic in the shader is 32-bit (signed for rows and columns).
    let lim = i32::MAX as usize / 4;
    for (what, v) in [
        ("H + padding", h + p.pad[0] + p.pad[1]),
        ("W + padding", wd + p.pad[2] + p.pad[3]),
        ("Cin", cin),
        ("Cout", cout),
        ("stride", p.stride),
        ("Cin·KH·KW·32", cin * kh * kw * 32),
    ] {
        if v > lim {
            return Err(Error::limit(OP, format!("{what} ({})", desc()), v as u64, lim as u64));
        }
    }
    Ok(Dims { n, cin, h, w: wd, cout, kh, kw, ho, wo })
}

/// The output's shape, dtype and aliasing.
fn check_out(
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    p: Conv2dParams,
    d: &Dims,
    ws: [usize; 4],
    y: &GpuTensor,
) -> Result<()> {
    if y.shape != [d.n, d.cout, d.ho, d.wo] || y.dtype != x.dtype {
        return Err(Error::shape(
            OP,
            format!(
                "output {:?} {} but x {:?} ⊛ w {:?} (stride {}, pad {:?}) gives {:?} {}",
                y.shape,
                y.dtype.name(),
                x.shape,
                ws,
                p.stride,
                p.pad,
                [d.n, d.cout, d.ho, d.wo],
                x.dtype.name()
            ),
        ));
    }
    if y.same_buffer(x) || y.same_buffer(w) || bias.is_some_and(|b| y.same_buffer(b)) {
        return Err(Error::invalid(OP, "output aliases an input"));
    }
    Ok(())
}

/// `y = conv2d(x, w) + bias` into a new `[N, Cout, Ho, Wo]` tensor of x's dtype.
pub fn conv2d(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    p: Conv2dParams,
) -> Result<GpuTensor> {
    let d = check(x, weight_shape(w)?, w.dtype, bias, p)?;
    let y = GpuTensor::empty(ctx, &[d.n, d.cout, d.ho, d.wo], x.dtype)?;
    conv2d_into(ctx, rec, x, w, bias, p, &y)?;
    Ok(y)
}

/// [`conv2d`] into an existing output (which may not share a buffer with any input).
pub fn conv2d_into(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    p: Conv2dParams,
    y: &GpuTensor,
) -> Result<()> {
    let d = check(x, weight_shape(w)?, w.dtype, bias, p)?;
    let tile = ConvTile::pick(ctx, d.cout, d.wo, d.n * d.ho * d.wo, d.cin * d.kh * d.kw * d.cout);
    conv2d_tiled(ctx, rec, x, w, bias, p, y, tile)
}

/// [`conv2d_into`] with an explicit tile configuration (benchmarks, and tests of every variant).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_tiled(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &GpuTensor,
    bias: Option<&GpuTensor>,
    p: Conv2dParams,
    y: &GpuTensor,
    tile: ConvTile,
) -> Result<()> {
    let ws = weight_shape(w)?;
    let d = check(x, ws, w.dtype, bias, p)?;
    if !tile.valid(ctx) {
        return Err(Error::invalid(OP, format!("tile {tile:?} breaks the kernel's layout rules or the device limits")));
    }
    check_out(x, w, bias, p, &d, ws, y)?;
    let from = rec.len();
    let wp = pack_weight(ctx, rec, w, tile.tm)?;
    let [cout, cin, kh, kw] = ws;
    let bytes = (w.numel() + wp.packed.numel()) as f64 * w.dtype.size() as f64;
    rec.annotate(from, format!("pack conv weight {cout}x{cin}x{kh}x{kw}"), Work { flops: 0.0, bytes });
    conv2d_packed_tiled(ctx, rec, x, &wp, bias, p, y, tile.wg, tile.tn, ConvForce::default())
}

/// The convolution with a weight prepacked by [`pack_weight`] (same semantics as [`conv2d`]).
pub fn conv2d_packed(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &PackedConvWeight,
    bias: Option<&GpuTensor>,
    p: Conv2dParams,
) -> Result<GpuTensor> {
    let d = check(x, w.shape, w.packed.dtype, bias, p)?;
    let y = GpuTensor::empty(ctx, &[d.n, d.cout, d.ho, d.wo], x.dtype)?;
    let t = ConvTile::pick(ctx, d.cout, d.wo, d.n * d.ho * d.wo, d.cin * d.kh * d.kw * d.cout);
    let (wg, tn) = tuned_tile(ctx, x, w, p, &d, (t.wg, t.tn));
    conv2d_packed_tiled(ctx, rec, x, w, bias, p, &y, wg, tn, ConvForce::default())?;
    Ok(y)
}

/// Workgroup size and pixels per invocation for this convolution: `default`, or where the context
/// autotunes (GPUs) the fastest of a few, measured at the first convolution of each shape class
/// (dtype, kernel, stride, channels, output size rounded up to powers of two). The channel block
/// `tm` was fixed when the weight was packed.
fn tuned_tile(
    ctx: &Context,
    x: &GpuTensor,
    w: &PackedConvWeight,
    p: Conv2dParams,
    d: &Dims,
    default: (u32, u32),
) -> (u32, u32) {
    if !autotune::enabled(ctx) || x.numel() > 1 << 26 || d.n * d.cout * d.ho * d.wo > 1 << 26 {
        return default;
    }
    let p2 = |v: usize| v.next_power_of_two();
    let key = format!(
        "conv.{}.k{}x{}.s{}.{}to{}.{}x{}x{}",
        x.dtype.name(),
        d.kh,
        d.kw,
        p.stride,
        p2(d.cin),
        p2(d.cout),
        p2(d.n),
        p2(d.ho),
        p2(d.wo)
    );
    let valid = |&(wg, tn): &(u32, u32)| ConvTile { wg, tm: w.tm, tn }.valid(ctx);
    let candidates: Vec<(u32, u32)> =
        [(32, 4), (64, 4), (128, 4), (64, 8), (128, 8), (256, 4)].into_iter().filter(valid).collect();
    // Uploaded tensors are never arena tensors, so a search may run inside a graph recording.
    let Ok(tx) = GpuTensor::from_slice(ctx, &x.shape, &vec![0.1; x.numel()], x.dtype) else { return default };
    let Ok(ty) =
        GpuTensor::from_slice(ctx, &[d.n, d.cout, d.ho, d.wo], &vec![0.0; d.n * d.cout * d.ho * d.wo], x.dtype)
    else {
        return default;
    };
    let record = |rec: &mut Recorder, &(wg, tn): &(u32, u32)| {
        conv2d_packed_dispatches(ctx, rec, &tx, w, None, p, &ty, wg, tn, ConvForce::default())
    };
    let flops = 2.0 * (d.n * d.cout * d.ho * d.wo * d.cin * d.kh * d.kw) as f64;
    autotune::pick(
        ctx,
        Search {
            key,
            candidates,
            fallback: default,
            name: |&(wg, tn)| format!("{wg}x{tn}"),
            parse: |s| {
                let (a, b) = s.split_once('x')?;
                Some((a.parse().ok()?, b.parse().ok()?))
            },
            record: &record,
            flops,
        },
    )
}

/// [`conv2d_packed`] into `y` with `wg` invocations per workgroup, `tn` pixels per invocation and
/// optional variant overrides (tests use them to cover every code path on any adapter).
#[allow(clippy::too_many_arguments)]
pub fn conv2d_packed_tiled(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &PackedConvWeight,
    bias: Option<&GpuTensor>,
    p: Conv2dParams,
    y: &GpuTensor,
    wg: u32,
    tn: u32,
    force: ConvForce,
) -> Result<()> {
    let from = rec.len();
    conv2d_packed_dispatches(ctx, rec, x, w, bias, p, y, wg, tn, force)?;
    let [_, cin, kh, kw] = w.shape;
    let flops = 2.0 * y.numel() as f64 * (cin * kh * kw) as f64;
    let bytes = (x.numel() + w.packed.numel() + y.numel()) as f64 * x.dtype.size() as f64;
    let [cout, ho, wo] = [y.shape[1], y.shape[2], y.shape[3]];
    let class = format!("conv{kh}x{kw}/{} {cin}->{cout} @{ho}x{wo}", p.stride);
    rec.annotate(from, class, Work { flops, bytes });
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn conv2d_packed_dispatches(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    w: &PackedConvWeight,
    bias: Option<&GpuTensor>,
    p: Conv2dParams,
    y: &GpuTensor,
    wg: u32,
    tn: u32,
    force: ConvForce,
) -> Result<()> {
    let d = check(x, w.shape, w.packed.dtype, bias, p)?;
    let tile = ConvTile { wg, tm: w.tm, tn };
    if !tile.valid(ctx) {
        return Err(Error::invalid(OP, format!("tile {tile:?} breaks the kernel's layout rules or the device limits")));
    }
    let taps = d.kh * d.kw;
    let tm = w.tm as usize;
    if w.packed.numel() != d.cout.div_ceil(tm) * d.cin * taps * tm {
        return Err(Error::shape(
            OP,
            format!("packed weight has {} elements, expected for {:?} with tm {tm}", w.packed.numel(), w.shape),
        ));
    }
    check_out(x, &w.packed, bias, p, &d, w.shape, y)?;
    if d.n == 0 {
        return Ok(());
    }
    let no_sg = force.no_subgroups || !ctx.caps.subgroups;
    let bcast = !no_sg && tile.bcast(ctx);
    let src: &KernelSource = if no_sg { &SRC_NO_SUBGROUPS } else { &SRC };
    let pb = p.pad[2].div_ceil(4);
    let nb = (p.stride * (tn as usize - 1) + d.kw - 1 + 4 * pb - p.pad[2]) / 4 + 1;
    let vec_shape = !force.any && d.w % 4 == 0 && d.wo % tn as usize == 0 && d.kh <= 3 && d.kw <= 3 && nb <= WIN_MAX;
    let key = |entry: &'static str| {
        PipelineKey::new(src, entry, x.dtype)
            .with("WG", tile.wg)
            .with("TM", tile.tm)
            .with("TN", tile.tn)
            .with("KH", d.kh as u32)
            .with("KW", d.kw as u32)
            .with("SD", p.stride as u32)
            .with("PL", if entry == "main_vec" { p.pad[2] as u32 } else { 0 })
            .with("BCAST", bcast as u32)
    };

    let plan = plan(ctx, x.dtype, &d, p, tm)?;
    let (hw, howo) = (d.h * d.w, d.ho * d.wo);
    let (x_img, y_img) = (d.cin * hw, d.cout * howo);
    let w_blk = d.cin * taps * tm;
    for (n0, nb_img) in chunks(d.n, plan.imgs) {
        for (co0, cn) in chunks(d.cout, plan.cout) {
            let blk0 = co0 / tm;
            let co_lo = co0 - blk0 * tm;
            let nblk = (co_lo + cn).div_ceil(tm);
            for (ci0, ck) in chunks(d.cin, plan.cin) {
                for (oy0, rows) in chunks(d.ho, plan.rows) {
                    // Input rows this block reads (clipped to the image; at least one row).
                    let (iy_lo, iy_hi) = if rows == d.ho {
                        (0, d.h)
                    } else {
                        let lo = (oy0 * p.stride).saturating_sub(p.pad[0]).min(d.h - 1);
                        let hi = ((oy0 + rows - 1) * p.stride + d.kh).saturating_sub(p.pad[0]).min(d.h);
                        (lo, hi.max(lo + 1))
                    };
                    let x_start = ((n0 * d.cin + ci0) * d.h + iy_lo) * d.w;
                    let x_len = (nb_img - 1) * x_img + (ck - 1) * hw + (iy_hi - iy_lo) * d.w;
                    let y_start = ((n0 * d.cout + co0) * d.ho + oy0) * d.wo;
                    let y_len = (nb_img - 1) * y_img + (cn - 1) * howo + rows * d.wo;
                    let w_start = (blk0 * d.cin + ci0) * taps * tm;
                    let w_len = ((nblk - 1) * d.cin + ck) * taps * tm;
                    let xw = x.window(ctx, x_start, x_len)?;
                    let ww = w.packed.window(ctx, w_start, w_len)?;
                    let yw = y.window(ctx, y_start, y_len)?;
                    let bw = match bias {
                        Some(b) => b.window(ctx, co0, cn)?,
                        None => w.packed.window(ctx, 0, 1)?,
                    };
                    if ww.shift % 4 != 0 {
                        return Err(Error::invalid(OP, "packed weight window is not 16-byte aligned"));
                    }
                    let entry =
                        if vec_shape && xw.shift % 4 == 0 && yw.shift % 4 == 0 { "main_vec" } else { "main_any" };
                    let cols = nb_img * rows * d.wo;
                    let tiles_n = cols.div_ceil((tile.tn * tile.wg) as usize);
                    let tiles = nblk * tiles_n;
                    let prm = Params {
                        cin: ck as u32,
                        cout: cn as u32,
                        co_lo: co_lo as u32,
                        h: d.h as u32,
                        w: d.w as u32,
                        rows: rows as u32,
                        wo: d.wo as u32,
                        p: cols as u32,
                        oy0: oy0 as u32,
                        iy0: iy_lo as u32,
                        pad_t: p.pad[0] as u32,
                        pad_l: p.pad[2] as u32,
                        x_img: if nb_img > 1 { x_img as u32 } else { 0 },
                        x_ch: if ck > 1 { hw as u32 } else { 0 },
                        y_img: if nb_img > 1 { y_img as u32 } else { 0 },
                        y_ch: if cn > 1 { howo as u32 } else { 0 },
                        w_blk: w_blk as u32,
                        x_shift: xw.shift,
                        w_shift: ww.shift,
                        b_shift: bw.shift,
                        y_shift: yw.shift,
                        has_bias: (bias.is_some() && ci0 == 0) as u32,
                        accumulate: (ci0 > 0) as u32,
                        tiles_m: nblk as u32,
                        n_tiles: tiles as u32,
                    };
                    let groups = fold_groups(ctx, OP, tiles as u64)?;
                    let mut keep = vec![x.keep(), w.packed.keep(), y.keep()];
                    if let Some(b) = bias {
                        keep.push(b.keep());
                    }
                    let xw4 = x.window(ctx, x_start, x_len)?;
                    let yw4 = y.window(ctx, y_start, y_len)?;
                    launch(
                        ctx,
                        rec,
                        src,
                        &key(entry),
                        &[
                            Arg::Read(xw),
                            Arg::Read(ww),
                            Arg::Read(bw),
                            Arg::Write(yw),
                            Arg::Uniform(bytemuck::bytes_of(&prm)),
                            Arg::Read(xw4),
                            Arg::Write(yw4),
                        ],
                        groups,
                        keep,
                    )?;
                }
            }
        }
    }
    Ok(())
}

/// How a convolution is cut into launches so that every window fits one binding.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Plan {
    imgs: usize,
    cout: usize,
    cin: usize,
    rows: usize,
}

fn plan(ctx: &Context, dtype: DType, d: &Dims, p: Conv2dParams, tm: usize) -> Result<Plan> {
    let lim = max_window_elems(ctx, dtype) as usize;
    let taps = d.kh * d.kw;
    let (hw, howo) = (d.h * d.w, d.ho * d.wo);
    let (x_img, y_img) = (d.cin * hw, d.cout * howo);
    let w_all = d.cout.div_ceil(tm) * tm * d.cin * taps;
    // Pixels per launch stay below 2^30 so 32-bit index math cannot overflow.
    let col_lim = 1usize << 30;
    let too_big = |what: &str, v: usize| {
        Error::limit(
            OP,
            format!("{what} of one block (x {:?} ⊛ w {:?})", [d.n, d.cin, d.h, d.w], [d.cout, d.cin, d.kh, d.kw]),
            v as u64,
            lim as u64,
        )
    };
    // Lavapipe stops any loop after 65535 iterations; the kernels loop over input channels.
    let cin_max = MAX_LOOP;
    if x_img <= lim && y_img <= lim && w_all <= lim && howo <= col_lim && d.cin <= cin_max {
        let imgs = (lim / x_img).min(lim / y_img).min(col_lim / howo).clamp(1, d.n.max(1));
        return Ok(Plan { imgs, cout: d.cout, cin: d.cin, rows: d.ho });
    }
    let blk = d.cin * taps * tm; // packed weight elements per channel block
    if tm * taps > lim {
        return Err(too_big("weight window", tm * taps));
    }
    if hw <= lim && howo <= lim && howo <= col_lim {
        // Whole channel planes; split output channels (whole blocks, with their weights) and
        // input channels. Weight window: (blocks − 1)·blk + cin·taps·tm ≤ lim.
        let cin = d.cin.min(lim / hw).min(lim / (taps * tm)).min(cin_max).max(1);
        let blocks_w = lim.saturating_sub(cin * taps * tm) / blk + 1;
        let blocks_y = (lim / howo) / tm;
        let blocks = blocks_w.min(blocks_y);
        let cout = if blocks == 0 { (lim / howo).clamp(1, tm) } else { (blocks * tm).min(d.cout) };
        // A partial block only when one block of planes does not fit; it then stays one block.
        return Ok(Plan { imgs: 1, cout, cin, rows: d.ho });
    }
    // One channel plane exceeds a binding: single channels, blocks of output rows with their halo.
    let rows_out = (lim / d.wo).min(col_lim / d.wo);
    let rows_in = (lim / d.w).saturating_sub(d.kh) / p.stride + 1;
    let rows = rows_out.min(rows_in).min(d.ho);
    if rows == 0 || d.w > lim {
        return Err(too_big("input/output rows", d.w.max(d.wo)));
    }
    Ok(Plan { imgs: 1, cout: 1, cin: 1, rows })
}
