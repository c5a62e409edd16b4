//! Shared test harness: one GPU context per test binary (a missing adapter fails the test, it never
//! skips), seeded random inputs, and the relative-L2 comparison against CPU references.
#![allow(dead_code)]

use std::sync::OnceLock;

use lorafuse::{Context, ContextOptions, DType};
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

/// f32 kernels must match the f64 reference to this relative L2 error.
pub const TOL_F32: f64 = 1e-5;
/// f16-storage kernels (references see the same f16-rounded inputs).
pub const TOL_F16: f64 = 2e-3;

pub fn tol(dtype: DType) -> f64 {
    match dtype {
        DType::F32 => TOL_F32,
        DType::F16 => TOL_F16,
    }
}

/// The GPU context for this test binary, with output poisoning on.
pub fn ctx() -> &'static Context {
    static CTX: OnceLock<Context> = OnceLock::new();
    CTX.get_or_init(|| {
        let _ = env_logger::builder().is_test(true).try_init();
        let c = Context::new(&ContextOptions::default())
            .unwrap_or_else(|e| panic!("GPU tests need an adapter (lavapipe is fine): {e}"));
        c.set_poison(true);
        c
    })
}

/// The dtypes to test: f32, plus f16 where the adapter has SHADER_F16.
pub fn dtypes() -> Vec<DType> {
    if ctx().caps.shader_f16 {
        vec![DType::F32, DType::F16]
    } else {
        vec![DType::F32]
    }
}

/// A fresh random generator per test; the seed is printed so a failure can be replayed with
/// `LORAFUSE_TEST_SEED=<seed>`.
pub fn rng(test: &str) -> StdRng {
    let seed = std::env::var("LORAFUSE_TEST_SEED").ok().and_then(|s| s.parse().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos() as u64
    });
    eprintln!("{test}: LORAFUSE_TEST_SEED={seed}");
    StdRng::seed_from_u64(seed)
}

/// `n` values uniform in [-scale, scale], rounded to what `dtype` stores.
pub fn rand_vec(rng: &mut StdRng, n: usize, scale: f32, dtype: DType) -> Vec<f32> {
    (0..n).map(|_| dtype.round(rng.random_range(-scale..=scale))).collect()
}

/// Relative L2 error ||got - want|| / ||want|| (f64); fails on any non-finite value in `got` where
/// `want` is finite (which is how a poisoned, unwritten element shows up).
pub fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    assert_eq!(got.len(), want.len(), "length mismatch");
    let (mut num, mut den) = (0.0f64, 0.0f64);
    for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
        if !g.is_finite() && w.is_finite() {
            panic!("element {i} is {g} (expected {w}): unwritten or overflowed");
        }
        let d = g as f64 - w as f64;
        num += d * d;
        den += (w as f64) * (w as f64);
    }
    if den == 0.0 {
        num.sqrt()
    } else {
        (num / den).sqrt()
    }
}

/// Assert rel L2 ≤ tol, printing the first mismatches on failure.
pub fn assert_close(what: &str, got: &[f32], want: &[f32], tol: f64) {
    let e = rel_l2(got, want);
    if e > tol || e.is_nan() {
        let mut shown = 0;
        for (i, (g, w)) in got.iter().zip(want).enumerate() {
            if (g - w).abs() > 1e-3 * w.abs().max(1e-3) && shown < 5 {
                eprintln!("  [{i}] got {g} want {w}");
                shown += 1;
            }
        }
        panic!("{what}: relative L2 {e:.3e} > {tol:.1e}");
    }
    eprintln!("{what}: relative L2 {e:.3e} (tol {tol:.0e})");
}

/// The bundled sd15-tiny fixture folder.
pub fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny")
}

/// A tensor of the fixture's golden.safetensors, `None` when absent.
pub fn golden(name: &str) -> Option<lorafuse::HostTensor> {
    golden_in(&fixtures(), name)
}

/// A tensor of `dir`/golden.safetensors, `None` when absent.
pub fn golden_in(dir: &std::path::Path, name: &str) -> Option<lorafuse::HostTensor> {
    let f = lorafuse::weights::safetensors::SafeTensorsFile::open(dir.join("golden.safetensors")).unwrap();
    let shape = f.info(name)?.shape.clone();
    Some(lorafuse::HostTensor::new(&shape, f.read_f32(name).unwrap()).unwrap())
}

/// The request of runs.json entry `name` at 64×64 with the fixture's noise (initial and per-step).
pub fn run_request(run: &serde_json::Value, name: &str) -> lorafuse::pipeline::request::Request {
    run_request_in(&fixtures(), run, name)
}

/// [`run_request`] for the fixture in `dir`; an SDXL run's recorded `size_cond` is applied too.
pub fn run_request_in(
    dir: &std::path::Path,
    run: &serde_json::Value,
    name: &str,
) -> lorafuse::pipeline::request::Request {
    use lorafuse::pipeline::request::{NoiseOverride, Request};
    let mut r = Request::new(run["prompt"].as_str().unwrap());
    r.negative_prompt = run["negative_prompt"].as_str().unwrap().to_string();
    r.steps = run["steps"].as_u64().unwrap() as usize;
    r.cfg = run["cfg"].as_f64().unwrap() as f32;
    r.sampler = run["sampler"].as_str().unwrap().parse().unwrap();
    r.spacing = run["timestep_spacing"].as_str().unwrap().parse().unwrap();
    r.clip_skip = run["clip_skip_a1111"].as_u64().unwrap() as usize;
    r.width = 64;
    r.height = 64;
    if let Some(sc) = run.get("size_cond").and_then(|v| v.as_array()) {
        let sc: Vec<usize> = sc.iter().map(|v| v.as_u64().unwrap() as usize).collect();
        r.size_cond = Some(sc.try_into().unwrap());
    }
    r.rng = lorafuse::pipeline::rng::RngKind::TorchCpu;
    r.noise = NoiseOverride {
        noise: golden_in(dir, "pipe_noise"),
        step_noise: golden_in(dir, &format!("{name}_step_noise")),
    };
    r
}

/// `tensors` (name, shape, values) written to `dst` as an F32 safetensors file with `meta`.
pub fn write_f32_safetensors(
    dst: &std::path::Path,
    tensors: &[(String, Vec<usize>, Vec<f32>)],
    meta: std::collections::HashMap<String, String>,
) {
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = tensors
        .iter()
        .map(|(n, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), bytemuck::cast_slice(d));
            (n.clone(), v.unwrap())
        })
        .collect();
    std::fs::write(dst, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// The small seeded txt2img run the LoRA tool tests compare (bake, extract, merge): 64², 2 steps,
/// f32, the LoRAs merged into the weights.
pub fn generate_merged(
    model: &std::path::Path,
    loras: &[lorafuse::lora::LoraSpec],
) -> lorafuse::pipeline::txt2img::Output {
    let ctx = ctx();
    let pipe =
        lorafuse::pipeline::txt2img::Pipeline::load(ctx, model, lorafuse::pipeline::request::Precision::F32).unwrap();
    let mut r = lorafuse::pipeline::request::Request::new("a red fox in the snow");
    r.negative_prompt = "blurry".into();
    r.width = 64;
    r.height = 64;
    r.steps = 2;
    r.seed = 7;
    r.loras = loras.to_vec();
    r.lora_mode = lorafuse::lora::LoraMode::Merged;
    pipe.generate(ctx, &r, &mut |_| {}).unwrap()
}

/// The decoded 8-bit pixels of a PNG file (what the CLI tests compare between runs).
pub fn pixels(path: impl AsRef<std::path::Path>) -> Vec<u8> {
    let file = std::fs::File::open(path.as_ref()).unwrap();
    let mut r = png::Decoder::new(std::io::BufReader::new(file)).read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let frame = r.next_frame(&mut buf).unwrap();
    buf.truncate(frame.buffer_size());
    buf
}
