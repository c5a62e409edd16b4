//! SDXL's VAE overflows in fp16 on real weights (hence the community's "fp16-fix" VAE). The
//! f32 fallback must cover it as it covers SD1.5's: whole and tiled, loaded from the SDXL single
//! file's `first_stage_model.` keys. The overflow is provoked inside the network, as in
//! `models_vae.rs` (the f16 copy's `decoder.conv_in` scaled by 1e5, finite in f16), on a
//! non-square latent.

mod common;

use common::{ctx, rand_vec, rel_l2, rng};
use lorafuse::models::vae::{Vae, VaeTiling};
use lorafuse::nn::{AdaptableWeights, Loader};
use lorafuse::weights::detect::{detect, Family};
use lorafuse::weights::ModelFiles;
use lorafuse::{DType, GpuTensor, Recorder};

const FIX: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/sdxl-tiny");

fn load(path: &str, dtype: DType) -> Vae {
    let files = ModelFiles::open(path).unwrap();
    let cfg = detect(&files).unwrap();
    assert_eq!(cfg.family, Family::Sdxl);
    assert_eq!(cfg.vae.scaling_factor, 0.13025);
    let l = Loader::new(ctx(), files.vae(), &AdaptableWeights::default(), dtype);
    Vae::load(&l, &cfg.vae).unwrap()
}

fn overflowing_f16_vae() -> Vae {
    let mut vae = load(&format!("{FIX}/model-fp16.safetensors"), DType::F16);
    let conv_in = &mut vae.decoder.decoder.conv_in;
    let w: Vec<f32> = conv_in.weight.packed.to_vec(ctx()).unwrap().iter().map(|v| v * 1e5).collect();
    assert!(w.iter().all(|v| DType::F16.round(*v).is_finite()), "scaled weights must fit f16");
    conv_in.weight.packed = GpuTensor::from_slice(ctx(), &conv_in.weight.packed.shape.clone(), &w, DType::F16).unwrap();
    vae
}

#[test]
fn sdxl_f16_overflow_falls_back_to_f32_whole_and_tiled() {
    if !ctx().caps.shader_f16 {
        panic!("the adapter lacks SHADER_F16; this suite expects it (lavapipe has it)");
    }
    let shape = [1, 4, 13, 10];
    let z: Vec<f32> = rand_vec(&mut rng("sdxl_vae_fallback"), shape.iter().product(), 3.0, DType::F16);
    let vae16 = overflowing_f16_vae();
    let vae32 = load(&format!("{FIX}/model"), DType::F32);

    let mut rec = Recorder::new();
    let plain = vae16.decode(ctx(), &mut rec, &GpuTensor::from_slice(ctx(), &shape, &z, DType::F16).unwrap()).unwrap();
    rec.submit(ctx()).unwrap();
    let bad = plain.to_vec(ctx()).unwrap().iter().filter(|v| !v.is_finite()).count();
    assert!(bad > 0, "expected the unchecked f16 decode to overflow");

    let mut rec = Recorder::new();
    let y =
        vae16.decode_checked(ctx(), &mut rec, &GpuTensor::from_slice(ctx(), &shape, &z, DType::F16).unwrap()).unwrap();
    assert_eq!(y.dtype, DType::F32, "the fallback returns the f32 decode");
    let got = y.to_vec(ctx()).unwrap();
    let mut rec = Recorder::new();
    let want = vae32.decode(ctx(), &mut rec, &GpuTensor::from_slice(ctx(), &shape, &z, DType::F32).unwrap()).unwrap();
    rec.submit(ctx()).unwrap();
    let e = rel_l2(&got, &want.to_vec(ctx()).unwrap());
    eprintln!("whole: {bad} non-finite before the fallback; fallback vs f32 VAE {e:.3e}");
    assert!(e == 0.0, "fallback differs from the f32 decode: relative L2 {e:.3e}");

    // Tiled: every tile overflows and falls back on its own; the result is the f32 VAE's tiling.
    let tiling = VaeTiling { tile: 8, overlap: 4 };
    let mut rec = Recorder::new();
    let z16 = GpuTensor::from_slice(ctx(), &shape, &z, DType::F16).unwrap();
    let got = vae16.decode_tiled(ctx(), &mut rec, &z16, &tiling).unwrap();
    assert!(got.data.iter().all(|v| v.is_finite()), "a tile stayed non-finite");
    let mut rec = Recorder::new();
    let z32 = GpuTensor::from_slice(ctx(), &shape, &z, DType::F32).unwrap();
    let want = vae32.decode_tiled(ctx(), &mut rec, &z32, &tiling).unwrap();
    assert_eq!(got.shape, vec![1, 3, 104, 80]);
    let e = rel_l2(&got.data, &want.data);
    eprintln!("tiled: fallback vs f32 VAE {e:.3e}");
    assert!(e <= 1e-6, "tiled fallback differs from the f32 tiled decode: relative L2 {e:.3e}");
}
