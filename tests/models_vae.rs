//! VAE (AutoencoderKL) against the sd15-tiny goldens (diffusers, float32), loaded from the
//! single-file checkpoint and from the diffusers folder: decode, encode (latent mean), batching,
//! odd latent sizes, f16 with the f32 fallback on overflow, postprocessing, and input errors.

mod common;

use std::time::Instant;

use common::{assert_close, ctx, rel_l2};
use lorafuse::models::vae::{postprocess, to_image, Vae};
use lorafuse::nn::{AdaptableWeights, Loader};
use lorafuse::weights::detect::detect;
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::weights::ModelFiles;
use lorafuse::{DType, Error, GpuTensor, Recorder};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sd15-tiny");
/// Fixture README: a correct float32 VAE is within 1e-3 relative L2 (measured: see the output of
/// `goldens_from_single_file_and_folder`, about 1e-6 on lavapipe).
const TOL_VAE: f64 = 1e-3;
/// f16 weights and activations: 10× the f32 bound.
const TOL_VAE_F16: f64 = 1e-2;
/// A batch may tile the GEMMs differently from a single image (different summation order); the
/// harness's per-kernel f32 bound.
const BATCH_TOL: f64 = 1e-5;

fn sources() -> [String; 2] {
    [format!("{FIX}/model-fp16.safetensors"), format!("{FIX}/model")]
}

fn load(path: &str, dtype: DType) -> Vae {
    let files = ModelFiles::open(path).unwrap_or_else(|e| panic!("open {path}: {e}"));
    let cfg = detect(&files).unwrap_or_else(|e| panic!("detect {path}: {e}")).vae;
    let l = Loader::new(ctx(), files.vae(), &AdaptableWeights::default(), dtype);
    Vae::load(&l, &cfg).unwrap_or_else(|e| panic!("load {path}: {e}"))
}

fn golden() -> SafeTensorsFile {
    SafeTensorsFile::open(format!("{FIX}/golden.safetensors")).expect("golden.safetensors")
}

/// A golden tensor and its shape.
fn tensor(g: &SafeTensorsFile, name: &str) -> (Vec<usize>, Vec<f32>) {
    (g.info(name).unwrap_or_else(|| panic!("golden {name}")).shape.clone(), g.read_f32(name).unwrap())
}

fn upload(shape: &[usize], data: &[f32], dtype: DType) -> GpuTensor {
    GpuTensor::from_slice(ctx(), shape, data, dtype).unwrap()
}

fn decode(vae: &Vae, z: &GpuTensor) -> (Vec<usize>, Vec<f32>) {
    let mut rec = Recorder::new();
    let y = vae.decode(ctx(), &mut rec, z).expect("decode");
    rec.submit(ctx()).unwrap();
    (y.shape.clone(), y.to_vec(ctx()).unwrap())
}

fn encode(vae: &Vae, x: &GpuTensor) -> (Vec<usize>, Vec<f32>) {
    let mut rec = Recorder::new();
    let y = vae.encode_mean(ctx(), &mut rec, x).expect("encode");
    rec.submit(ctx()).unwrap();
    (y.shape.clone(), y.to_vec(ctx()).unwrap())
}

#[test]
fn goldens_from_single_file_and_folder() {
    let g = golden();
    let (zs, z) = tensor(&g, "vae_z");
    let (ds, want_dec) = tensor(&g, "vae_decoded");
    let (xs, x) = tensor(&g, "vae_image");
    let (ms, want_mean) = tensor(&g, "vae_encoded_mean");
    for src in sources() {
        let vae = load(&src, DType::F32);
        let (shape, got) = decode(&vae, &upload(&zs, &z, DType::F32));
        assert_eq!(shape, ds);
        assert_close(&format!("{src}: decode vae_z"), &got, &want_dec, TOL_VAE);
        let (shape, got) = encode(&vae, &upload(&xs, &x, DType::F32));
        assert_eq!(shape, ms);
        assert_close(&format!("{src}: encode vae_image (mean)"), &got, &want_mean, TOL_VAE);
    }
}

/// Decoding a sampler's final latents and postprocessing gives the run's golden image.
#[test]
fn run_latents_to_image() {
    let g = golden();
    let vae = load(&sources()[0], DType::F32);
    let sf = vae.config.scaling_factor;
    for run in ["euler", "dpmpp_2m_karras", "lora_stack"] {
        let (ls, lat) = tensor(&g, &format!("run_{run}_latents"));
        let (_, want) = tensor(&g, &format!("run_{run}_image"));
        let z: Vec<f32> = lat.iter().map(|v| v / sf).collect();
        let (_, raw) = decode(&vae, &upload(&ls, &z, DType::F32));
        assert_close(&format!("run_{run}: host postprocess"), &postprocess(&raw), &want, TOL_VAE);
        // GPU affine half, clamped on the host.
        let mut rec = Recorder::new();
        let y = vae.decode(ctx(), &mut rec, &upload(&ls, &z, DType::F32)).unwrap();
        let img = to_image(ctx(), &mut rec, &y).unwrap();
        rec.submit(ctx()).unwrap();
        let got: Vec<f32> = img.to_vec(ctx()).unwrap().iter().map(|v| v.clamp(0.0, 1.0)).collect();
        assert_close(&format!("run_{run}: to_image"), &got, &want, TOL_VAE);
    }
}

#[test]
fn batch_of_two_equals_two_singles() {
    let g = golden();
    let vae = load(&sources()[1], DType::F32);
    let (zs, z) = tensor(&g, "vae_z");
    let z2: Vec<f32> = z.iter().enumerate().map(|(i, v)| -0.7 * v + 0.01 * (i % 13) as f32).collect();
    let both: Vec<f32> = z.iter().chain(&z2).copied().collect();
    let (shape, got) = decode(&vae, &upload(&[2, zs[1], zs[2], zs[3]], &both, DType::F32));
    assert_eq!(shape, [2, 3, 8 * zs[2], 8 * zs[3]]);
    let half = got.len() / 2;
    for (i, single) in [&z, &z2].into_iter().enumerate() {
        let (_, want) = decode(&vae, &upload(&zs, single, DType::F32));
        assert_close(&format!("decode batch item {i}"), &got[i * half..(i + 1) * half], &want, BATCH_TOL);
    }
    let (xs, x) = tensor(&g, "vae_image");
    let x2: Vec<f32> = x.iter().map(|v| 0.5 - 0.8 * v).collect();
    let both: Vec<f32> = x.iter().chain(&x2).copied().collect();
    let (shape, got) = encode(&vae, &upload(&[2, xs[1], xs[2], xs[3]], &both, DType::F32));
    assert_eq!(shape, [2, 4, xs[2] / 8, xs[3] / 8]);
    let half = got.len() / 2;
    for (i, single) in [&x, &x2].into_iter().enumerate() {
        let (_, want) = encode(&vae, &upload(&xs, single, DType::F32));
        assert_close(&format!("encode batch item {i}"), &got[i * half..(i + 1) * half], &want, BATCH_TOL);
    }
}

#[test]
fn odd_latent_sizes() {
    let vae = load(&sources()[0], DType::F32);
    let z: Vec<f32> = (0..4 * 5 * 7).map(|i| ((i * 37 % 23) as f32 / 11.5 - 1.0) * 1.5).collect();
    let (shape, img) = decode(&vae, &upload(&[1, 4, 5, 7], &z, DType::F32));
    assert_eq!(shape, [1, 3, 40, 56]);
    assert!(img.iter().all(|v| v.is_finite()), "non-finite pixel decoding a 5×7 latent");
    // The encoder halves with floor at each level (pad right/bottom by one, stride 2).
    let (shape, mean) = encode(&vae, &upload(&[1, 3, 40, 56], &postprocess(&img), DType::F32));
    assert_eq!(shape, [1, 4, 5, 7]);
    assert!(mean.iter().all(|v| v.is_finite()));
    let x: Vec<f32> = (0..3 * 43 * 61).map(|i| (i * 7 % 19) as f32 / 9.5 - 1.0).collect();
    let (shape, _) = encode(&vae, &upload(&[1, 3, 43, 61], &x, DType::F32));
    assert_eq!(shape, [1, 4, 5, 7]);
}

#[test]
fn f16_within_bound() {
    if !ctx().caps.shader_f16 {
        panic!("the adapter lacks SHADER_F16; this suite expects it (lavapipe has it)");
    }
    let g = golden();
    let (zs, z) = tensor(&g, "vae_z");
    let (_, want_dec) = tensor(&g, "vae_decoded");
    let (xs, x) = tensor(&g, "vae_image");
    let (_, want_mean) = tensor(&g, "vae_encoded_mean");
    for src in sources() {
        let vae = load(&src, DType::F16);
        let (_, got) = decode(&vae, &upload(&zs, &z, DType::F16));
        assert_close(&format!("{src}: f16 decode"), &got, &want_dec, TOL_VAE_F16);
        let (_, got) = encode(&vae, &upload(&xs, &x, DType::F16));
        assert_close(&format!("{src}: f16 encode"), &got, &want_mean, TOL_VAE_F16);
        // No overflow here, so the checked decode keeps the f16 result.
        let mut rec = Recorder::new();
        let y = vae.decode_checked(ctx(), &mut rec, &upload(&zs, &z, DType::F16)).unwrap();
        assert_eq!(y.dtype, DType::F16);
        assert_close(&format!("{src}: f16 decode_checked"), &y.to_vec(ctx()).unwrap(), &want_dec, TOL_VAE_F16);
    }
}

/// The fp16 overflow fallback. The tiny model renormalises everything (even latents at the f16
/// limit decode to |x| ≈ 2), so the overflow is provoked the way SD1.5's VAE hits it, inside the
/// network: the f16 copy's `decoder.conv_in` weights are scaled by 1e5 (still finite in f16), its
/// activations overflow, and the checked decode must return the f32 decoder's image, loaded from
/// the file, equal to an f32 VAE's decode.
#[test]
fn f16_overflow_falls_back_to_f32() {
    if !ctx().caps.shader_f16 {
        panic!("the adapter lacks SHADER_F16; this suite expects it (lavapipe has it)");
    }
    let g = golden();
    let (zs, z) = tensor(&g, "vae_z");
    let mut vae16 = load(&sources()[0], DType::F16);
    let conv_in = &mut vae16.decoder.decoder.conv_in;
    // Scaling every element is the same in the packed layout (its padding stays zero).
    let w: Vec<f32> = conv_in.weight.packed.to_vec(ctx()).unwrap().iter().map(|v| v * 1e5).collect();
    assert!(w.iter().all(|v| DType::F16.round(*v).is_finite()), "scaled weights must fit f16");
    conv_in.weight.packed = upload(&conv_in.weight.packed.shape.clone(), &w, DType::F16);
    let (_, plain) = decode(&vae16, &upload(&zs, &z, DType::F16));
    let bad = plain.iter().filter(|v| !v.is_finite()).count();
    assert!(bad > 0, "expected the unchecked f16 decode to overflow");
    eprintln!("unchecked f16 decode: {bad} of {} values non-finite", plain.len());
    let mut rec = Recorder::new();
    let y = vae16.decode_checked(ctx(), &mut rec, &upload(&zs, &z, DType::F16)).unwrap();
    assert_eq!(y.dtype, DType::F32, "the fallback returns the f32 decode");
    let got = y.to_vec(ctx()).unwrap();
    assert!(got.iter().all(|v| v.is_finite()));
    // The latents went through f16, so the reference decodes the same rounded values.
    let z16: Vec<f32> = z.iter().map(|&v| DType::F16.round(v)).collect();
    let vae32 = load(&sources()[1], DType::F32);
    let (_, want) = decode(&vae32, &upload(&zs, &z16, DType::F32));
    let e = rel_l2(&got, &want);
    assert!(e == 0.0, "fallback differs from the f32 decode: relative L2 {e:.3e}");
    // The f32 decoder is cached: a second fallback does not reload it.
    let first = vae16.f32_decoder(ctx()).unwrap();
    assert!(std::sync::Arc::ptr_eq(&first, &vae16.f32_decoder(ctx()).unwrap()));
}

/// Query-chunked mid attention (what large images use) equals the one-piece computation, with
/// ragged chunks (10 query rows of 64) and single-row chunks, on a batch of two.
#[test]
fn chunked_attention_matches() {
    let vae = load(&sources()[0], DType::F32);
    let attn = vae.decoder.decoder.mid_block.attention.as_ref().expect("mid attention");
    let c = attn.channels;
    let x: Vec<f32> = (0..2 * c * 64).map(|i| ((i * 31 % 97) as f32 / 48.5 - 1.0) * 2.0).collect();
    let xt = upload(&[2, c, 8, 8], &x, DType::F32);
    let run = |max_scores: usize| {
        let mut rec = Recorder::new();
        let y = attn.forward_chunked(ctx(), &mut rec, &xt, max_scores).unwrap();
        rec.submit(ctx()).unwrap();
        y.to_vec(ctx()).unwrap()
    };
    let whole = run(usize::MAX);
    assert_close("attention in 10-query chunks", &run(64 * 10), &whole, BATCH_TOL);
    assert_close("attention one query at a time", &run(0), &whole, BATCH_TOL);
}

#[test]
fn bad_inputs_are_errors() {
    let vae = load(&sources()[0], DType::F32);
    let mut rec = Recorder::new();
    let z3 = upload(&[1, 3, 8, 8], &[0.0; 3 * 64], DType::F32);
    let e = vae.decode(ctx(), &mut rec, &z3).err().expect("3 latent channels must fail");
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    eprintln!("wrong latent channels: {e}");
    let z_rank3 = upload(&[4, 8, 8], &[0.0; 4 * 64], DType::F32);
    assert!(matches!(vae.decode(ctx(), &mut rec, &z_rank3), Err(Error::Shape { .. })));
    let x4 = upload(&[1, 4, 64, 64], &vec![0.0; 4 * 4096], DType::F32);
    assert!(matches!(vae.encode_mean(ctx(), &mut rec, &x4), Err(Error::Shape { .. })));
    if ctx().caps.shader_f16 {
        let z16 = upload(&[1, 4, 8, 8], &[0.0; 4 * 64], DType::F16);
        assert!(matches!(vae.decode(ctx(), &mut rec, &z16), Err(Error::DType { .. })));
    }
    assert!(rec.is_empty(), "a rejected input must record nothing");
    // Decoder-only loading has no encoder.
    let files = ModelFiles::open(&sources()[1]).unwrap();
    let cfg = detect(&files).unwrap().vae;
    let l = Loader::new(ctx(), files.vae(), &AdaptableWeights::default(), DType::F32);
    let dec = Vae::load_decoder(&l, &cfg).unwrap();
    assert!(!dec.has_encoder());
    let x = upload(&[1, 3, 64, 64], &vec![0.0; 3 * 4096], DType::F32);
    assert!(matches!(dec.encode_mean(ctx(), &mut rec, &x), Err(Error::Invalid { .. })));
}

/// Wall time per decode of the tiny model's 8×8 latent (64×64 image), recorded once and replayed.
#[test]
fn decode_timing() {
    let g = golden();
    let (zs, z) = tensor(&g, "vae_z");
    for dtype in common::dtypes() {
        let vae = load(&sources()[0], dtype);
        let zt = upload(&zs, &z, dtype);
        let mut rec = Recorder::new();
        let t0 = Instant::now();
        let y = vae.decode(ctx(), &mut rec, &zt).unwrap();
        let record = t0.elapsed();
        rec.replay(ctx()).unwrap();
        ctx().sync().unwrap();
        let reps = 5;
        let t0 = Instant::now();
        for _ in 0..reps {
            rec.replay(ctx()).unwrap();
        }
        ctx().sync().unwrap();
        let per = t0.elapsed() / reps;
        assert!(y.to_vec(ctx()).unwrap().iter().all(|v| v.is_finite()));
        eprintln!(
            "decode {:?} {}: {} dispatches, recorded in {:.1} ms, {:.1} ms per replayed decode",
            zs,
            dtype.name(),
            rec.len(),
            record.as_secs_f64() * 1e3,
            per.as_secs_f64() * 1e3
        );
    }
}
