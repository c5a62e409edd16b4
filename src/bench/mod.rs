//! Kernel benchmarks at Stable Diffusion shapes (`lorafuse bench kernels`).
//!
//! Each case records one launch of a kernel into a [`Recorder`] with its inputs already on the GPU,
//! then replays it inside a timed pass (timestamp queries at the pass boundaries, so CPU recording
//! cost is excluded), or by wall clock where the adapter has no timestamps. Every result is set
//! against the device's FMA peak measured by the `fma_peak` microbenchmark.

pub mod flops;
pub mod kernels;
pub mod lora;
pub mod memory;
pub mod pipeline;
pub mod profile;
pub mod random_model;
pub mod realtime;

use std::time::Instant;

use serde::Serialize;

use crate::kernels::fma_peak;
use crate::{Context, DType, GpuTensor, Recorder, Result};

/// One benchmarked kernel.
#[derive(Clone, Debug, Serialize)]
pub struct KernelResult {
    pub name: String,
    pub shape: String,
    pub ms: f64,
    pub gflops: f64,
    pub gbps: f64,
    pub ratio_to_peak: f64,
}

/// The whole report, in the JSON layout `lorafuse bench kernels --json` prints.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    pub adapter: String,
    pub backend: String,
    pub peak_gflops: f64,
    pub timer: String,
    pub kernels: Vec<KernelResult>,
}

/// Milliseconds per replay of `rec`: a warm-up replay, then enough timed replays to fill about
/// `budget_ms` (at least one).
pub fn time_recording(ctx: &Context, rec: &Recorder, budget_ms: f64) -> Result<(f64, &'static str)> {
    let t0 = Instant::now();
    rec.replay(ctx)?;
    ctx.sync()?;
    let first_ms = t0.elapsed().as_secs_f64() * 1e3;
    let reps = ((budget_ms / first_ms.max(1e-3)) as u32).clamp(1, 200);
    if let Some(ms) = rec.time_gpu(ctx, reps)? {
        return Ok((ms, "timestamp-query"));
    }
    let t0 = Instant::now();
    for _ in 0..reps {
        rec.replay(ctx)?;
    }
    ctx.sync()?;
    Ok((t0.elapsed().as_secs_f64() * 1e3 / reps as f64, "wall-clock"))
}

/// The device's practical f32 FMA throughput in GFLOP/s.
pub fn measure_peak(ctx: &Context, budget_ms: f64) -> Result<f64> {
    // Enough invocations to occupy any GPU; the iteration count is grown until one launch is long
    // enough that launch overhead is negligible.
    let n = 1usize << 20;
    let seeds: Vec<f32> = (0..n).map(|i| (i % 97) as f32 * 0.01).collect();
    let st = GpuTensor::from_slice(ctx, &[n], &seeds, DType::F32)?;
    let mut iters = 4u32;
    loop {
        let mut rec = Recorder::new();
        let _out = fma_peak::fma_chains(ctx, &mut rec, &st, iters, 0.999, 0.001)?;
        let (ms, _) = time_recording(ctx, &rec, budget_ms)?;
        // Capped well below 65536 loop iterations, where lavapipe silently stops loops.
        if ms >= 100.0 || iters >= 1 << 13 {
            return Ok(fma_peak::flops(n, iters) / (ms * 1e6));
        }
        iters *= if ms < 2.0 { 8 } else { 2 };
    }
}

/// Build a [`KernelResult`] from a timing and the case's flop and byte counts.
pub fn result(name: &str, shape: &str, ms: f64, flops: f64, bytes: f64, peak: f64) -> KernelResult {
    let gflops = flops / (ms * 1e6);
    KernelResult {
        name: name.to_string(),
        shape: shape.to_string(),
        ms,
        gflops,
        gbps: bytes / (ms * 1e6),
        ratio_to_peak: if peak > 0.0 { gflops / peak } else { 0.0 },
    }
}

impl Report {
    /// A fixed-width table for terminals and BENCHMARKS.md.
    pub fn table(&self) -> String {
        let mut s = format!(
            "adapter: {} ({})\nFMA peak: {:.1} GFLOP/s (fma_peak microbenchmark), timer: {}\n\n",
            self.adapter, self.backend, self.peak_gflops, self.timer
        );
        s.push_str("| kernel | shape | ms | GFLOP/s | GB/s | of peak |\n|---|---|---:|---:|---:|---:|\n");
        for k in &self.kernels {
            s.push_str(&format!(
                "| {} | {} | {:.3} | {:.1} | {:.1} | {:.1}% |\n",
                k.name,
                k.shape,
                k.ms,
                k.gflops,
                k.gbps,
                100.0 * k.ratio_to_peak
            ));
        }
        s.push_str(&self.targets());
        s
    }

    /// The speed goals (attention ≥ 30 %, GEMM and conv ≥ 50 % of the probe), met or not, per case
    /// family, so a run says where it stands without reading the rows.
    pub fn targets(&self) -> String {
        let mut s = String::from("\n");
        for (what, goal, prefixes) in [
            ("attention", 0.30, &["attention", "cross_attention"][..]),
            ("GEMM and conv", 0.50, &["matmul", "conv"][..]),
        ] {
            let cases: Vec<f64> = self
                .kernels
                .iter()
                .filter(|k| prefixes.iter().any(|p| k.name.starts_with(p)))
                .map(|k| k.ratio_to_peak)
                .collect();
            if cases.is_empty() || self.peak_gflops <= 0.0 {
                continue;
            }
            let met = cases.iter().filter(|&&r| r >= goal).count();
            let (lo, hi) = cases.iter().fold((f64::INFINITY, 0f64), |(a, b), &r| (a.min(r), b.max(r)));
            s.push_str(&format!(
                "goal: {what} at ≥ {:.0} % of the probe: {met} of {} cases meet it ({:.1}–{:.1} %){}\n",
                100.0 * goal,
                cases.len(),
                100.0 * lo,
                100.0 * hi,
                if met < cases.len() { "; BENCHMARKS.md says what limits the others" } else { "" }
            ));
        }
        s
    }
}

/// One UNet evaluation with CFG (batch 2) at `size`², recorded against fixed inputs (latents,
/// timestep 500, a constant text context, for SDXL a constant pooled embedding) as `generate`
/// records it, with whatever LoRAs are applied now; for timing and profiling replays.
pub fn unet_graph(
    ctx: &Context,
    pipe: &crate::pipeline::txt2img::Pipeline,
    size: usize,
) -> Result<crate::gpu::Recorder> {
    use crate::gpu::Recorder;
    use crate::GpuTensor;
    let (h, w) = (size / 8, size / 8);
    let dim = pipe.config.unet.cross_attention_dim;
    let x = GpuTensor::from_slice(ctx, &[2, 4, h, w], &vec![0.1; 2 * 4 * h * w], pipe.dtype)?;
    let context = GpuTensor::from_slice(ctx, &[2, 77, dim], &vec![0.05; 2 * 77 * dim], pipe.dtype)?;
    let mut rec = Recorder::new();
    // SDXL's added conditioning: a constant pooled text embedding and the image's size.
    let added = match &pipe.config.unet.addition {
        Some(a) => {
            let p = a.pooled_dim();
            let pooled = GpuTensor::from_slice(ctx, &[2, p], &vec![0.05; 2 * p], pipe.dtype)?;
            let s = size as f32;
            pipe.unet.added_embedding(ctx, &mut rec, &pooled, &[s, s, 0.0, 0.0, s, s].repeat(2))?
        }
        None => None,
    };
    let temb = pipe.unet.time_embedding(ctx, &mut rec, &[500.0, 500.0], added.as_ref())?;
    rec.submit(ctx)?;
    let mut graph = Recorder::new();
    {
        // Intermediates share buffers by liveness, as in `generate`; the graph replays whole.
        let _arena = ctx.arena();
        pipe.unet.forward_with_temb(ctx, &mut graph, &x, &temb, &context)?;
    }
    Ok(graph)
}
