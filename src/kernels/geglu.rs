//! Launcher for `shaders/geglu.wgsl`: diffusers GEGLU, `hidden, gate = x.chunk(2, -1);
//! out = hidden · gelu(gate)` with the exact erf GELU.
//!
//! The input is bound twice (value half and gate half, each a window of the same buffer), so an
//! FF intermediate larger than one storage binding (16384 × 2560 f32 = 168 MB at 1024 px) is split
//! into row ranges whose windows fit.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{chunks, max_window_elems, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("geglu");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    cols: u32,
    half: u32,
    h_shift: u32,
    g_shift: u32,
    o_shift: u32,
}

/// `x [..., 2N] → [..., N]`: first half of the last dimension times GELU of the second half.
pub fn geglu(ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
    const OP: &str = "geglu";
    let Some(&last) = x.shape.last() else {
        return Err(Error::shape(OP, "x is a scalar (shape []); it needs a last dimension of even size"));
    };
    if last % 2 != 0 {
        return Err(Error::shape(OP, format!("last dimension of x {:?} is odd ({last}); it must be 2N", x.shape)));
    }
    let half = last / 2;
    let rows = x.numel().checked_div(last).unwrap_or(0);
    let mut out_shape = x.shape.clone();
    *out_shape.last_mut().expect("non-empty shape") = half;
    let out = GpuTensor::empty(ctx, &out_shape, x.dtype)?;
    if rows == 0 || half == 0 {
        return Ok(out);
    }
    // Columns per chunk (all of them unless half a row exceeds a binding), then rows per chunk
    // such that the value window, (rows-1)·2N + cols elements, fits. The gate window is the same
    // length and the output window shorter.
    // Indices in the shader are chunk-local u32s.
    let cap = max_window_elems(ctx, x.dtype).clamp(1, 1 << 31) as usize;
    let cw = half.min(cap);
    let rows_per = if cw < half { 1 } else { ((cap - half) / last + 1).min(rows) };
    let key1 = PipelineKey::new(&SRC, "main", x.dtype).with("WG", WG);
    let key4 = PipelineKey::new(&SRC, "main4", x.dtype).with("WG", WG);
    for (r0, nr) in chunks(rows, rows_per) {
        for (c0, nc) in chunks(half, cw) {
            let span_in = (nr - 1) * last + nc;
            let hw = x.window(ctx, r0 * last + c0, span_in)?;
            let gw = x.window(ctx, r0 * last + half + c0, span_in)?;
            let ow = out.window(ctx, r0 * half + c0, (nr - 1) * half + nc)?;
            // vec4 accesses on CPU adapters (4× fewer per-lane memory operations) where aligned.
            let aligned = (half | nc | hw.shift as usize | gw.shift as usize | ow.shift as usize).is_multiple_of(4);
            let (v, key) = if ctx.caps.is_cpu() && aligned { (4, &key4) } else { (1, &key1) };
            let n = nr * nc / v;
            let p = Params {
                n: n as u32,
                cols: (nc / v) as u32,
                half: (half / v) as u32,
                h_shift: hw.shift / v as u32,
                g_shift: gw.shift / v as u32,
                o_shift: ow.shift / v as u32,
            };
            let groups = flat_groups(ctx, OP, n, WG)?;
            let args = [Arg::Read(hw), Arg::Read(gw), Arg::Write(ow), Arg::Uniform(bytemuck::bytes_of(&p))];
            launch(ctx, rec, &SRC, key, &args, groups, vec![x.keep(), out.keep()])?;
        }
    }
    Ok(out)
}
