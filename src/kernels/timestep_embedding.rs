//! Launcher for `shaders/timestep_embedding.wgsl`: diffusers `get_timestep_embedding(t, dim,
//! flip_sin_to_cos=True, downscale_freq_shift=0, scale=1, max_period=10000)`, i.e.
//! `[cos(t·f), sin(t·f)]` with `f_i = exp(-ln(10000)·i/half)`, plus a zero column for odd `dim`.
//!
//! The frequencies depend only on `dim`; they are computed here in f64 and passed to the GPU as
//! three 12-bit f32 pieces per frequency (in turns), which lets the shader form `t·f mod 1` exactly
//! enough in f32 for arguments up to ~1000 rad (see the shader's opening comment).

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::kernels::embedding::storage_from_words;
use crate::tensor::{chunks, flat_run, DType, GpuTensor, Window};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("timestep_embedding");
const WG: u32 = 256;
const MAX_PERIOD: f64 = 10000.0;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    e0: u32,
    dim: u32,
    half: u32,
    g_base: u32,
    o_shift: u32,
}

/// `x` rounded to f32 and truncated to its 12 leading significant bits.
fn top12(x: f64) -> f32 {
    f32::from_bits((x as f32).to_bits() & 0xFFFF_F000)
}

/// Frequency `i` of `half` in turns (f/2π) as three f32 pieces of ≤ 12 significant bits each.
fn freq_pieces(i: usize, half: usize) -> [f32; 3] {
    let g = (-MAX_PERIOD.ln() * i as f64 / half as f64).exp() / std::f64::consts::TAU;
    let g1 = top12(g);
    let r1 = g - g1 as f64;
    let g2 = top12(r1);
    let g3 = top12(r1 - g2 as f64);
    [g1, g2, g3]
}

/// Sinusoidal embedding of `timesteps` → `[timesteps.len(), dim]` in `dtype`.
pub fn timestep_embedding(
    ctx: &Context,
    rec: &mut Recorder,
    timesteps: &[f32],
    dim: usize,
    dtype: DType,
) -> Result<GpuTensor> {
    const OP: &str = "timestep_embedding";
    if dim == 0 {
        return Err(Error::invalid(OP, "dim is 0; the embedding needs at least one column"));
    }
    if let Some((i, t)) = timesteps.iter().enumerate().find(|(_, t)| !t.is_finite()) {
        return Err(Error::invalid(OP, format!("timestep {i} is {t}, not a finite number")));
    }
    let b = timesteps.len();
    let total = b as u64 * dim as u64;
    if total > u32::MAX as u64 {
        return Err(Error::limit(OP, format!("elements of the output [{b}, {dim}]"), total, u32::MAX as u64));
    }
    let half = dim / 2;
    let aux_len = b + 3 * half;
    if aux_len as u64 * 4 > ctx.caps.max_binding {
        return Err(Error::limit(
            OP,
            format!("bytes of {b} timesteps and {half} frequencies"),
            aux_len as u64 * 4,
            ctx.caps.max_binding,
        ));
    }
    let out = GpuTensor::empty(ctx, &[b, dim], dtype)?;
    if b == 0 {
        return Ok(out);
    }
    let mut aux: Vec<u32> = Vec::with_capacity(aux_len);
    aux.extend(timesteps.iter().map(|t| t.to_bits()));
    for i in 0..half {
        aux.extend(freq_pieces(i, half).map(f32::to_bits));
    }
    let aux_buf = storage_from_words(ctx, OP, &aux)?;
    let key = PipelineKey::new(&SRC, "main", dtype).with("WG", WG);
    for (e0, len) in chunks(b * dim, flat_run(ctx, dtype)) {
        let ow = out.window(ctx, e0, len)?;
        let p = Params {
            n: len as u32,
            e0: e0 as u32,
            dim: dim as u32,
            half: half as u32,
            g_base: b as u32,
            o_shift: ow.shift,
        };
        let groups = flat_groups(ctx, OP, len, WG)?;
        // The aux buffer is not pooled: the bind group holds it alive for as long as the dispatch.
        let args = [Arg::Read(Window::whole(&aux_buf)), Arg::Write(ow), Arg::Uniform(bytemuck::bytes_of(&p))];
        launch(ctx, rec, &SRC, &key, &args, groups, vec![out.keep()])?;
    }
    Ok(out)
}
