//! The kernel cases of `lorafuse bench kernels`, at SD1.5 shapes (512×512 images: 64×64 latents,
//! 4096 tokens at the first UNet level, 77 text tokens, 8 heads). Shapes read M×K×N for GEMMs.

use crate::bench::{measure_peak, result, time_recording, KernelResult, Report};
use crate::kernels::attention::attention;
use crate::kernels::conv2d::{conv2d, Conv2dParams};
use crate::kernels::group_norm::group_norm;
use crate::kernels::lora_linear::{lora_linear, LoraAdapter, LoraStack};
use crate::kernels::matmul::linear;
use crate::{Context, DType, GpuTensor, HostTensor, Recorder, Result};

/// Options for [`run`].
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Divide the token/pixel dimension by 4 (a quick smoke run; numbers are not comparable).
    pub quick: bool,
    /// Time budget per case in milliseconds.
    pub budget_ms: f64,
}

impl Default for BenchOptions {
    fn default() -> Self {
        BenchOptions { quick: false, budget_ms: 400.0 }
    }
}

/// Deterministic pseudo-random values in [-1, 1] (the benchmark needs data, not statistics).
fn noise(n: usize, seed: u64) -> Vec<f32> {
    let mut s = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
    (0..n)
        .map(|_| {
            s = s.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
            ((s >> 40) as f32 / (1u64 << 23) as f32) - 1.0
        })
        .collect()
}

fn rand_tensor(ctx: &Context, shape: &[usize], dtype: DType, seed: u64, scale: f32) -> Result<GpuTensor> {
    let n = shape.iter().product();
    let v: Vec<f32> = noise(n, seed).into_iter().map(|x| x * scale).collect();
    GpuTensor::from_slice(ctx, shape, &v, dtype)
}

/// A case: its name and shape label, flop and byte counts, and the recording of one launch.
struct Case {
    name: &'static str,
    shape: String,
    flops: f64,
    bytes: f64,
    rec: Recorder,
}

fn matmul_case(ctx: &Context, m: usize, k: usize, n: usize, dtype: DType) -> Result<Case> {
    let x = rand_tensor(ctx, &[m, k], dtype, 1, 1.0)?;
    let w = rand_tensor(ctx, &[n, k], dtype, 2, 0.05)?;
    let b = rand_tensor(ctx, &[n], dtype, 3, 0.1)?;
    let mut rec = Recorder::new();
    linear(ctx, &mut rec, &x, &w, Some(&b))?;
    let es = dtype.size() as f64;
    Ok(Case {
        name: if dtype == DType::F32 { "matmul_f32" } else { "matmul_f16" },
        shape: format!("{m}x{k}x{n}"),
        flops: 2.0 * (m * k * n) as f64,
        bytes: es * (m * k + k * n + m * n + n) as f64,
        rec,
    })
}

/// A benchmark case, built only when its turn comes (so only one case holds GPU memory at a time).
type LazyCase = Box<dyn FnOnce(&Context) -> Result<Case>>;

fn cases(ctx: &Context, opts: &BenchOptions) -> Result<Vec<LazyCase>> {
    let q = if opts.quick { 4 } else { 1 };
    let s = 4096 / q; // tokens at UNet level 1 (64×64 latents)
    let side = 64 / if opts.quick { 2 } else { 1 };
    let mut v: Vec<LazyCase> = Vec::new();
    let mut dtypes = vec![DType::F32];
    if ctx.caps.shader_f16 {
        dtypes.push(DType::F16);
    }
    for dt in dtypes {
        for (m, k, n) in [(s, 320, 320), (s, 320, 2560), (1024 / q, 1280, 1280)] {
            v.push(Box::new(move |c| matmul_case(c, m, k, n, dt)));
        }
    }
    v.push(Box::new(move |c| {
        let x = rand_tensor(c, &[1, 320, side, side], DType::F32, 4, 1.0)?;
        let w = rand_tensor(c, &[320, 320, 3, 3], DType::F32, 5, 0.02)?;
        let b = rand_tensor(c, &[320], DType::F32, 6, 0.1)?;
        let mut rec = Recorder::new();
        conv2d(c, &mut rec, &x, &w, Some(&b), Conv2dParams::same(3, 1))?;
        let hw = (side * side) as f64;
        Ok(Case {
            name: "conv3x3",
            shape: format!("1x320x{side}x{side}->320"),
            flops: 2.0 * 320.0 * 320.0 * 9.0 * hw,
            bytes: 4.0 * (2.0 * 320.0 * hw + 320.0 * 320.0 * 9.0),
            rec,
        })
    }));
    // Attention at UNet level 1 (self 4096×4096 and cross 4096×77, 8 heads of 40) and level 2
    // (self 1024×1024, 8 heads of 80), in each storage dtype; names end in the dtype for f16.
    let mut attn_dtypes = vec![DType::F32];
    if ctx.caps.shader_f16 {
        attn_dtypes.push(DType::F16);
    }
    for dt in attn_dtypes {
        let s2 = s / 4;
        for (name, sq, sk, d) in
            [("attention", s, s, 40usize), ("attention", s2, s2, 80), ("cross_attention", s, 77, 40)]
        {
            v.push(Box::new(move |c| {
                let h = 8usize;
                let qt = rand_tensor(c, &[1, sq, h * d], dt, 7, 1.0)?;
                let kt = rand_tensor(c, &[1, sk, h * d], dt, 8, 1.0)?;
                let vt = rand_tensor(c, &[1, sk, h * d], dt, 9, 1.0)?;
                let mut rec = Recorder::new();
                attention(c, &mut rec, &qt, &kt, &vt, h, false)?;
                let es = dt.size() as f64;
                Ok(Case {
                    name: match (name, dt) {
                        ("attention", DType::F16) => "attention_f16",
                        (_, DType::F16) => "cross_attention_f16",
                        _ => name,
                    },
                    shape: format!("{sq}x{sk} h{h} d{d}"),
                    flops: 4.0 * (sq * sk * d * h) as f64,
                    bytes: es * ((2 * sq + 2 * sk) * h * d) as f64,
                    rec,
                })
            }));
        }
    }
    v.push(Box::new(move |c| {
        let x = rand_tensor(c, &[1, 320, side, side], DType::F32, 10, 1.0)?;
        let g = rand_tensor(c, &[320], DType::F32, 11, 1.0)?;
        let b = rand_tensor(c, &[320], DType::F32, 12, 1.0)?;
        let mut rec = Recorder::new();
        group_norm(c, &mut rec, &x, 32, &g, &b, 1e-5, true)?;
        let n = (320 * side * side) as f64;
        Ok(Case {
            name: "group_norm",
            shape: format!("1x320x{side}x{side} g32 +silu"),
            flops: 10.0 * n,
            bytes: 4.0 * 2.0 * n,
            rec,
        })
    }));
    v.push(Box::new(move |c| {
        let (m, k, n, count, r) = (s, 320usize, 320usize, 6usize, 32usize);
        let x = rand_tensor(c, &[m, k], DType::F32, 13, 1.0)?;
        let w = rand_tensor(c, &[n, k], DType::F32, 14, 0.05)?;
        let b = rand_tensor(c, &[n], DType::F32, 15, 0.1)?;
        let adapters: Vec<LoraAdapter> = (0..count)
            .map(|i| LoraAdapter {
                down: HostTensor { shape: vec![r, k], data: noise(r * k, 100 + i as u64) },
                up: HostTensor { shape: vec![n, r], data: noise(n * r, 200 + i as u64) },
                scale: 0.8,
            })
            .collect();
        let stack = LoraStack::new(c, &adapters, DType::F32)?;
        let mut rec = Recorder::new();
        lora_linear(c, &mut rec, &x, &w, Some(&b), &stack)?;
        let rt = count * r;
        Ok(Case {
            name: "lora_linear",
            shape: format!("{m}x{k}x{n} +{count}xr{r}"),
            flops: 2.0 * (m * k * n + m * k * rt + m * rt * n) as f64,
            bytes: 4.0 * (m * k + k * n + m * n + rt * (k + n) + m * rt) as f64,
            rec,
        })
    }));
    Ok(v)
}

/// Run every case, calling `progress(done, total, name)` as cases finish.
pub fn run(ctx: &Context, opts: &BenchOptions, mut progress: impl FnMut(usize, usize, &str)) -> Result<Report> {
    let peak = measure_peak(ctx, opts.budget_ms)?;
    let cases = cases(ctx, opts)?;
    let total = cases.len();
    let mut out: Vec<KernelResult> = Vec::new();
    let mut timer = "timestamp-query";
    for (i, make) in cases.into_iter().enumerate() {
        let case = make(ctx)?;
        let (ms, t) = time_recording(ctx, &case.rec, opts.budget_ms)?;
        timer = t;
        out.push(result(case.name, &case.shape, ms, case.flops, case.bytes, peak));
        progress(i + 1, total, case.name);
        drop(case);
        ctx.trim_pool();
    }
    Ok(Report {
        adapter: ctx.caps.adapter_name.clone(),
        backend: ctx.caps.backend.clone(),
        peak_gflops: peak,
        timer: timer.to_string(),
        kernels: out,
    })
}
