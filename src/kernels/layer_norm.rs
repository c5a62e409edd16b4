//! Launcher for `shaders/layer_norm.wgsl`: LayerNorm over the last dimension, a power-of-two team
//! of threads per row (several rows per workgroup when rows are short), rows split into
//! binding-sized windows.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{launch, Arg, KernelSource, Recorder};
use crate::kernels::affine::check_affine;
use crate::kernels::rows::RowTeams;
use crate::tensor::GpuTensor;
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
    check_affine(OP, x, c, gamma, beta, eps)?;
    let y = GpuTensor::empty(ctx, &x.shape, x.dtype)?;
    if x.numel() == 0 {
        return Ok(y);
    }
    let teams = RowTeams::new(ctx, OP, x, c, format!("row length C of x {:?}", x.shape))?;
    let key = teams.key(&SRC, x);
    let gw = gamma.full(ctx)?;
    let bw = beta.full(ctx)?;
    for (r0, n) in teams.runs() {
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
        let groups = teams.groups(ctx, OP, n)?;
        let args = [
            Arg::Read(xw),
            Arg::Read(gamma.full(ctx)?),
            Arg::Read(beta.full(ctx)?),
            Arg::Write(yw),
            Arg::Uniform(bytemuck::bytes_of(&p)),
        ];
        launch(ctx, rec, &SRC, &key, &args, groups, vec![x.keep(), gamma.keep(), beta.keep(), y.keep()])?;
    }
    Ok(y)
}
