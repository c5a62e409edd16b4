//! Launcher for `shaders/fma_peak.wgsl`: measures the device's practical f32 multiply-add throughput.

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{DType, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("fma_peak");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    iters: u32,
    n: u32,
    a: f32,
    b: f32,
}

/// Chain steps per loop iteration in the shader (its body is unrolled this many times).
pub const STEPS_PER_ITER: u32 = 8;

/// Flops done by one launch over `seeds` elements with `iters` loop iterations.
pub fn flops(n: usize, iters: u32) -> f64 {
    n as f64 * iters as f64 * STEPS_PER_ITER as f64 * 8.0 * 4.0 * 2.0
}

/// Record `iters * STEPS_PER_ITER` steps of the chains `acc = acc * a + b` started from each seed;
/// returns one sum per seed.
pub fn fma_chains(
    ctx: &Context,
    rec: &mut Recorder,
    seeds: &GpuTensor,
    iters: u32,
    a: f32,
    b: f32,
) -> Result<GpuTensor> {
    const OP: &str = "fma_peak";
    if seeds.dtype != DType::F32 || seeds.shape.len() != 1 {
        return Err(Error::shape(OP, format!("seeds must be 1-D f32, got {:?} {:?}", seeds.shape, seeds.dtype)));
    }
    if a.is_nan() || a.abs() >= 1.0 {
        return Err(Error::invalid(OP, format!("|a| must be < 1 for bounded chains, got {a}")));
    }
    let n = seeds.numel();
    let out = GpuTensor::empty(ctx, &[n], DType::F32)?;
    let p = Params { iters, n: n as u32, a, b };
    let key = PipelineKey::new(&SRC, "main", DType::F32).with("WG", WG);
    let groups = flat_groups(ctx, OP, n, WG)?;
    let args = [Arg::Read(seeds.full(ctx)?), Arg::Write(out.full(ctx)?), Arg::Uniform(bytemuck::bytes_of(&p))];
    launch(ctx, rec, &SRC, &key, &args, groups, vec![seeds.keep(), out.keep()])?;
    Ok(out)
}
