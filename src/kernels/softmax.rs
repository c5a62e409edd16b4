//! Launcher for `shaders/softmax.wgsl`: numerically stable softmax over the last dimension, a
//! power-of-two team of threads per row (several rows per workgroup when rows are short), rows
//! split into binding-sized windows.

use bytemuck::{Pod, Zeroable};

use crate::gpu::Recorder;
use crate::gpu::{fold_groups, launch, Arg, KernelSource, PipelineKey};
use crate::kernels::layer_norm::{row_threads, ROW_WG};
use crate::tensor::{max_window_elems, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("softmax");
const OP: &str = "softmax";

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    rows: u32,
    len: u32,
    x_shift: u32,
    y_shift: u32,
}

/// Softmax of `x` [..., L] over its last dimension: `exp(x − max) / Σ exp(x − max)`, f32 math.
pub fn softmax(ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
    let Some(&len) = x.shape.last() else {
        return Err(Error::shape(OP, format!("x must be [..., L], got rank 0 {:?}", x.shape)));
    };
    let y = GpuTensor::empty(ctx, &x.shape, x.dtype)?;
    if x.numel() == 0 {
        return Ok(y);
    }
    let rows = x.numel() / len;
    let max_window = max_window_elems(ctx, x.dtype) as usize;
    let per = max_window / len;
    if per == 0 {
        return Err(Error::limit(OP, format!("row length of x {:?}", x.shape), len as u64, max_window as u64));
    }
    let tpr = row_threads(len);
    let rows_per_wg = (ROW_WG / tpr) as u64;
    let key = PipelineKey::new(&SRC, "main", x.dtype).with("WG", ROW_WG).with("TPR", tpr);
    let mut r0 = 0;
    while r0 < rows {
        let n = per.min(rows - r0);
        let xw = x.window(ctx, r0 * len, n * len)?;
        let yw = y.window(ctx, r0 * len, n * len)?;
        let p = Params { rows: n as u32, len: len as u32, x_shift: xw.shift, y_shift: yw.shift };
        let groups = fold_groups(ctx, OP, (n as u64).div_ceil(rows_per_wg))?;
        launch(
            ctx,
            rec,
            &SRC,
            &key,
            &[Arg::Read(xw), Arg::Write(yw), Arg::Uniform(bytemuck::bytes_of(&p))],
            groups,
            vec![x.keep(), y.keep()],
        )?;
        r0 += n;
    }
    Ok(y)
}
