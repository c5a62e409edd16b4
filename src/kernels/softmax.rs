//! Launcher for `shaders/softmax.wgsl`: numerically stable softmax over the last dimension, a
//! power-of-two team of threads per row (several rows per workgroup when rows are short), rows
//! split into binding-sized windows.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{launch, Arg, KernelSource, Recorder};
use crate::kernels::rows::RowTeams;
use crate::tensor::GpuTensor;
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
    let teams = RowTeams::new(ctx, OP, x, len, format!("row length of x {:?}", x.shape))?;
    let key = teams.key(&SRC, x);
    for (r0, n) in teams.runs() {
        let xw = x.window(ctx, r0 * len, n * len)?;
        let yw = y.window(ctx, r0 * len, n * len)?;
        let p = Params { rows: n as u32, len: len as u32, x_shift: xw.shift, y_shift: yw.shift };
        let groups = teams.groups(ctx, OP, n)?;
        let args = [Arg::Read(xw), Arg::Write(yw), Arg::Uniform(bytemuck::bytes_of(&p))];
        launch(ctx, rec, &SRC, &key, &args, groups, vec![x.keep(), y.keep()])?;
    }
    Ok(y)
}
