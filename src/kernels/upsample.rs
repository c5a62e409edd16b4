//! Launcher for `shaders/upsample.wgsl`: nearest-neighbour resize of NCHW tensors with PyTorch's
//! index rule (the UNet's and VAE's `Upsample2D`, including explicit odd output sizes).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{chunks, max_window_elems, runs, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("upsample");
const OP: &str = "upsample_nearest";
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    rows: u32,
    out_w: u32,
    in_h: u32,
    in_w: u32,
    out_h: u32,
    oy0: u32,
    iy0: u32,
    x_plane: u32,
    y_plane: u32,
    x_shift: u32,
    y_shift: u32,
    scale_h: f32,
    scale_w: f32,
}

/// PyTorch's nearest source index for output index `d` (`scale` = `in as f32 / out as f32`).
pub fn nearest_src(d: usize, n_in: usize, n_out: usize) -> usize {
    if n_out == n_in {
        d
    } else if n_out == 2 * n_in {
        d >> 1
    } else {
        let scale = n_in as f32 / n_out as f32;
        ((d as f32 * scale).floor() as usize).min(n_in - 1)
    }
}

/// `x [N, C, H, W]` → `[N, C, out_h, out_w]`, `y[.., oy, ox] = x[.., src(oy), src(ox)]` with
/// `src(d) = floor(d · in / out)` as PyTorch computes it (exact for 2×).
pub fn upsample_nearest(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    out_h: usize,
    out_w: usize,
) -> Result<GpuTensor> {
    let [n, c, _, _] = dims(x)?;
    let y = GpuTensor::empty(ctx, &[n, c, out_h, out_w], x.dtype)?;
    upsample_nearest_into(ctx, rec, x, &y)?;
    Ok(y)
}

fn dims(x: &GpuTensor) -> Result<[usize; 4]> {
    match x.shape[..] {
        [a, b, c, d] => Ok([a, b, c, d]),
        _ => Err(Error::shape(OP, format!("x must be [N, C, H, W], got {:?}", x.shape))),
    }
}

/// [`upsample_nearest`] into an existing `[N, C, out_h, out_w]` tensor (not aliasing `x`).
pub fn upsample_nearest_into(ctx: &Context, rec: &mut Recorder, x: &GpuTensor, y: &GpuTensor) -> Result<()> {
    let [n, c, h, w] = dims(x)?;
    let (oh, ow) = match y.shape[..] {
        [yn, yc, oh, ow] if yn == n && yc == c => (oh, ow),
        _ => {
            return Err(Error::shape(
                OP,
                format!("x {:?} and output {:?} differ in N or C (or rank)", x.shape, y.shape),
            ))
        }
    };
    if y.dtype != x.dtype {
        return Err(Error::dtype(OP, format!("x is {}, output {}", x.dtype.name(), y.dtype.name())));
    }
    if h == 0 || w == 0 || oh == 0 || ow == 0 {
        return Err(Error::shape(OP, format!("zero spatial size: x {:?} → {:?}", x.shape, y.shape)));
    }
    // f32(d) must be exact for the index rule.
    for (what, v) in [("H", h), ("W", w), ("out_h", oh), ("out_w", ow)] {
        if v > 1 << 24 {
            return Err(Error::limit(OP, what, v as u64, 1 << 24));
        }
    }
    if y.same_buffer(x) {
        return Err(Error::invalid(OP, "output aliases input"));
    }
    let planes = n * c;
    if planes == 0 {
        return Ok(());
    }
    let lim = max_window_elems(ctx, x.dtype) as usize;
    let (xp, yp) = (h * w, oh * ow);
    let key = PipelineKey::new(&SRC, "main", x.dtype).with("WG", WG);
    let scale_h = h as f32 / oh as f32;
    let scale_w = w as f32 / ow as f32;
    let mut go = |p0: usize, np: usize, oy0: usize, rows: usize| -> Result<()> {
        let (iy_lo, iy_hi) =
            if rows == oh { (0, h) } else { (nearest_src(oy0, h, oh), nearest_src(oy0 + rows - 1, h, oh) + 1) };
        let xw = x.window(ctx, p0 * xp + iy_lo * w, (np - 1) * xp + (iy_hi - iy_lo) * w)?;
        let yw = y.window(ctx, p0 * yp + oy0 * ow, (np - 1) * yp + rows * ow)?;
        let total = np * rows * ow;
        let prm = Params {
            n: total as u32,
            rows: rows as u32,
            out_w: ow as u32,
            in_h: h as u32,
            in_w: w as u32,
            out_h: oh as u32,
            oy0: oy0 as u32,
            iy0: iy_lo as u32,
            x_plane: if np > 1 { xp as u32 } else { 0 },
            y_plane: if np > 1 { yp as u32 } else { 0 },
            x_shift: xw.shift,
            y_shift: yw.shift,
            scale_h,
            scale_w,
        };
        let groups = flat_groups(ctx, OP, total, WG)?;
        let args = [Arg::Read(xw), Arg::Write(yw), Arg::Uniform(bytemuck::bytes_of(&prm))];
        launch(ctx, rec, &SRC, &key, &args, groups, vec![x.keep(), y.keep()])
    };
    if xp <= lim && yp <= lim {
        let per = (lim / xp).min(lim / yp).max(1);
        for (p0, np) in chunks(planes, per) {
            go(p0, np, 0, oh)?;
        }
        return Ok(());
    }
    // A plane exceeds a binding: blocks of output rows of one plane, with the input rows they read.
    if ow > lim || w > lim {
        return Err(Error::limit(
            OP,
            format!("one row of x {:?} → {:?}", x.shape, y.shape),
            ow.max(w) as u64,
            lim as u64,
        ));
    }
    let in_rows = |oy0: usize, rows: usize| nearest_src(oy0 + rows - 1, h, oh) + 1 - nearest_src(oy0, h, oh);
    let rows_at = |oy0: usize, left: usize| {
        let mut rows = (lim / ow).min(left);
        while rows > 1 && in_rows(oy0, rows) * w > lim {
            rows /= 2;
        }
        rows
    };
    for p in 0..planes {
        for (oy0, rows) in runs(oh, rows_at) {
            go(p, 1, oy0, rows)?;
        }
    }
    Ok(())
}
