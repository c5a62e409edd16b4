//! Launcher for `shaders/layer_norm.wgsl`: LayerNorm over the last dimension, a power-of-two team
//! of threads per row (several rows per workgroup when rows are short), rows split into
//! binding-sized windows.

use bytemuck::{Pod, Zeroable};

use crate::gpu::Recorder;
use crate::gpu::{fold_groups, launch, Arg, KernelSource, PipelineKey};
use crate::tensor::{max_window_elems, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("layer_norm");
const OP: &str = "layer_norm";

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    c: u32,
    x_shift: u32,
    y_shift: u32,
    g_shift: u32,
    b_shift: u32,
    eps: f32,
    pad: u32,
}

/// Threads per workgroup of the row kernels (layer_norm, softmax).
pub(crate) const ROW_WG: u32 = 256;

/// Threads per row for rows of `len` values: about 8 values per thread (what the shaders keep in
/// registers), a power of two in 8..=ROW_WG; a workgroup takes ROW_WG / that many rows.
pub(crate) fn row_threads(len: usize) -> u32 {
    len.div_ceil(8).next_power_of_two().clamp(8, ROW_WG as usize) as u32
}

/// LayerNorm of `x` [..., C] over its last dimension C (biased variance, as PyTorch):
/// `y = (x−μ)/√(σ²+eps)·γ + β` with `gamma`, `beta` [C] in x's dtype. Statistics are f32.
pub fn layer_norm(
    ctx: &Context,
    rec: &mut Recorder,
    x: &GpuTensor,
    gamma: &GpuTensor,
    beta: &GpuTensor,
    eps: f32,
) -> Result<GpuTensor> {
    let Some(&c) = x.shape.last() else {
        return Err(Error::shape(OP, format!("x must be [..., C], got rank 0 {:?}", x.shape)));
    };
    for (name, t) in [("gamma", gamma), ("beta", beta)] {
        if t.shape.len() != 1 || t.shape[0] != c {
            return Err(Error::shape(OP, format!("{name} {:?} must be [{c}] for x {:?}", t.shape, x.shape)));
        }
        if t.dtype != x.dtype {
            return Err(Error::dtype(OP, format!("{name} is {}, x is {}", t.dtype.name(), x.dtype.name())));
        }
    }
    if !eps.is_finite() || eps < 0.0 {
        return Err(Error::invalid(OP, format!("eps = {eps} must be finite and ≥ 0")));
    }
    let y = GpuTensor::empty(ctx, &x.shape, x.dtype)?;
    if x.numel() == 0 {
        return Ok(y);
    }
    let rows = x.numel() / c;
    let max_window = max_window_elems(ctx, x.dtype) as usize;
    let per = max_window / c;
    if per == 0 {
        return Err(Error::limit(OP, format!("row length C of x {:?}", x.shape), c as u64, max_window as u64));
    }
    let tpr = row_threads(c);
    let rows_per_wg = (ROW_WG / tpr) as u64;
    let key = PipelineKey::new(&SRC, "main", x.dtype).with("WG", ROW_WG).with("TPR", tpr);
    let gw = gamma.full(ctx)?;
    let bw = beta.full(ctx)?;
    let mut r0 = 0;
    while r0 < rows {
        let n = per.min(rows - r0);
        let xw = x.window(ctx, r0 * c, n * c)?;
        let yw = y.window(ctx, r0 * c, n * c)?;
        let p = Params {
            rows: n as u32,
            c: c as u32,
            x_shift: xw.shift,
            y_shift: yw.shift,
            g_shift: gw.shift,
            b_shift: bw.shift,
            eps,
            pad: 0,
        };
        let groups = fold_groups(ctx, OP, (n as u64).div_ceil(rows_per_wg))?;
        launch(
            ctx,
            rec,
            &SRC,
            &key,
            &[
                Arg::Read(xw),
                Arg::Read(gamma.full(ctx)?),
                Arg::Read(beta.full(ctx)?),
                Arg::Write(yw),
                Arg::Uniform(bytemuck::bytes_of(&p)),
            ],
            groups,
            vec![x.keep(), gamma.keep(), beta.keep(), y.keep()],
        )?;
        r0 += n;
    }
    Ok(y)
}
