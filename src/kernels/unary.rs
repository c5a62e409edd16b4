//! Launcher for `shaders/unary.wgsl`: SiLU, GELU, quick-GELU, scale, ReLU and soft clamp, elementwise.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{chunks, flat_run, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("unary");
const WG: u32 = 256;

#[derive(Clone, Copy, Debug, PartialEq)]
pub enum UnaryOp {
    Silu,
    Gelu,
    QuickGelu,
    Scale(f32),
    Relu,
    /// `c·tanh(x/c)`: a smooth clamp to (-c, c) (TAESD bounds its input latents with c = 3).
    SoftClamp(f32),
}

impl UnaryOp {
    fn code(self) -> u32 {
        match self {
            UnaryOp::Silu => 0,
            UnaryOp::Gelu => 1,
            UnaryOp::QuickGelu => 2,
            UnaryOp::Scale(_) => 3,
            UnaryOp::Relu => 4,
            UnaryOp::SoftClamp(_) => 5,
        }
    }
}

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    in_shift: u32,
    out_shift: u32,
    alpha: f32,
}

/// `y = op(x)` into a new tensor of the same shape and dtype.
pub fn unary(ctx: &Context, rec: &mut Recorder, x: &GpuTensor, op: UnaryOp) -> Result<GpuTensor> {
    let y = GpuTensor::empty(ctx, &x.shape, x.dtype)?;
    unary_into(ctx, rec, x, &y, op)?;
    Ok(y)
}

/// `y = op(x)` into an existing tensor (may not alias `x`).
pub fn unary_into(ctx: &Context, rec: &mut Recorder, x: &GpuTensor, y: &GpuTensor, op: UnaryOp) -> Result<()> {
    const OP: &str = "unary";
    if x.numel() != y.numel() || x.dtype != y.dtype {
        return Err(Error::shape(OP, format!("x {:?} {:?} vs y {:?} {:?}", x.shape, x.dtype, y.shape, y.dtype)));
    }
    if x.same_buffer(y) {
        return Err(Error::invalid(OP, "output aliases input"));
    }
    let alpha = match op {
        UnaryOp::Scale(a) => a,
        UnaryOp::SoftClamp(c) if c > 0.0 && c.is_finite() => c,
        UnaryOp::SoftClamp(c) => return Err(Error::invalid(OP, format!("soft clamp bound {c} is not positive"))),
        _ => 0.0,
    };
    let key = PipelineKey::new(&SRC, "main", x.dtype).with("WG", WG).with("OP", op.code());
    let key4 = PipelineKey::new(&SRC, "main4", x.dtype).with("WG", WG).with("OP", op.code());
    for (start, len) in chunks(x.numel(), flat_run(ctx, x.dtype)) {
        let xw = x.window(ctx, start, len)?;
        let yw = y.window(ctx, start, len)?;
        // vec4 accesses on CPU adapters (4× fewer per-lane memory operations) where aligned.
        let v =
            if ctx.caps.is_cpu() && (len | xw.shift as usize | yw.shift as usize).is_multiple_of(4) { 4 } else { 1 };
        let p = Params { n: (len / v) as u32, in_shift: xw.shift / v as u32, out_shift: yw.shift / v as u32, alpha };
        let key = if v == 4 { &key4 } else { &key };
        let groups = flat_groups(ctx, OP, len / v, WG)?;
        let args = [Arg::Read(xw), Arg::Write(yw), Arg::Uniform(bytemuck::bytes_of(&p))];
        launch(ctx, rec, &SRC, key, &args, groups, vec![x.keep(), y.keep()])?;
    }
    Ok(())
}
