//! Autotune (`kernels::autotune`): with `Autotune::Always` even lavapipe searches. The first GEMM
//! (or tiled attention) of a shape class measures the candidates and keeps the fastest in the
//! store on disk; its result still matches the reference; a second context over the same folder
//! reads the choice back; a damaged store file is ignored, never an error.

mod common;
use common::*;
use lorafuse::gpu::Autotune;
use lorafuse::kernels::attention::{attention, Tiling};
use lorafuse::kernels::conv2d::{conv2d_packed, Conv2dParams, ConvTile, PackedConvWeight};
use lorafuse::kernels::matmul::{linear, matmul, GemmKernel};
use lorafuse::{reference, Context, ContextOptions, DType, GpuTensor, Recorder};

fn tuned_ctx(dir: &std::path::Path) -> Context {
    let opts = ContextOptions {
        pipeline_cache_dir: Some(dir.to_path_buf()),
        autotune: Autotune::Always,
        ..Default::default()
    };
    Context::new(&opts).expect("GPU tests need an adapter (lavapipe is fine)")
}

#[test]
fn autotune_picks_keeps_and_reuses_a_gemm_tile() {
    let dir = std::env::temp_dir().join(format!("lorafuse-autotune-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut r = rng("autotune");
    let (m, n, k) = (77usize, 100usize, 68usize);
    let x = rand_vec(&mut r, m * k, 1.0, DType::F32);
    let w = rand_vec(&mut r, n * k, 1.0, DType::F32);
    let want = reference::matmul::linear(&x, &w, None, m, n, k);
    let run = |ctx: &Context| {
        let xt = GpuTensor::from_slice(ctx, &[m, k], &x, DType::F32).unwrap();
        let wt = GpuTensor::from_slice(ctx, &[n, k], &w, DType::F32).unwrap();
        let mut rec = Recorder::new();
        let y = linear(ctx, &mut rec, &xt, &wt, None).unwrap();
        rec.submit(ctx).unwrap();
        y.to_vec(ctx).unwrap()
    };
    let chosen = {
        let ctx = tuned_ctx(&dir);
        assert!(ctx.tune.entries().is_empty(), "a new folder holds no choices");
        assert_close("linear after autotune", &run(&ctx), &want, TOL_F32);
        let e = ctx.tune.entries();
        assert_eq!(e.len(), 1, "one shape class measured: {e:?}");
        assert_eq!(e[0].0, "gemm.f32.nt.m128.n128.k128");
        assert!(GemmKernel::parse(&e[0].1).is_some(), "stored choice {:?} parses", e[0].1);
        // A matmul (B not transposed) is another class.
        let a = GpuTensor::from_slice(&ctx, &[m, k], &x, DType::F32).unwrap();
        let b = GpuTensor::from_slice(&ctx, &[k, n], &w, DType::F32).unwrap();
        let mut rec = Recorder::new();
        let c = matmul(&ctx, &mut rec, &a, &b).unwrap();
        rec.submit(&ctx).unwrap();
        let want_mm = reference::matmul::matmul(&x, &w, 1, m, k, n, true);
        assert_close("matmul after autotune", &c.to_vec(&ctx).unwrap(), &want_mm, TOL_F32);
        assert_eq!(ctx.tune.entries().len(), 2);
        ctx.save_pipeline_cache().unwrap();
        e[0].1.clone()
    };
    let path = {
        let ctx = tuned_ctx(&dir);
        assert_eq!(ctx.tune.get("gemm.f32.nt.m128.n128.k128"), Some(chosen.clone()), "read back from disk");
        assert_close("linear with the stored choice", &run(&ctx), &want, TOL_F32);
        ctx.tune.path().unwrap().to_path_buf()
    };
    std::fs::write(&path, b"{ not json").unwrap();
    let ctx = tuned_ctx(&dir);
    assert!(ctx.tune.entries().is_empty(), "a damaged store is ignored");
    assert_close("linear after a damaged store", &run(&ctx), &want, TOL_F32);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn autotune_choice_names_round_trip() {
    for k in [GemmKernel::Tiled { bm: 128, bn: 64, bk: 16 }, GemmKernel::Subgroup { lanes: 8, rows: 64 }] {
        assert_eq!(GemmKernel::parse(&k.name()), Some(k));
    }
    for bad in ["", "tiled", "tiled:64x64", "tiled:axbxc", "sg:", "sg:8", "wmma:16"] {
        assert_eq!(GemmKernel::parse(bad), None, "{bad:?}");
    }
    let t = Tiling::choose(40, 4096, DType::F16, 16384, 256).unwrap();
    assert_eq!(Tiling::parse(&t.name()), Some(t));
    assert_eq!(Tiling::parse("1x2x3"), None);
}

/// The tiled attention's tiling is tuned the same way. Head dim 10 is not a multiple of 4, so
/// lavapipe runs the tiled kernel rather than `attention_sg`.
#[test]
fn autotune_picks_and_reuses_an_attention_tiling() {
    let dir = std::env::temp_dir().join(format!("lorafuse-autotune-attn-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut r = rng("autotune_attention");
    let (b, sq, sk, heads, d) = (2usize, 37usize, 21usize, 3usize, 10usize);
    let q = rand_vec(&mut r, b * sq * heads * d, 1.0, DType::F32);
    let k = rand_vec(&mut r, b * sk * heads * d, 1.0, DType::F32);
    let v = rand_vec(&mut r, b * sk * heads * d, 1.0, DType::F32);
    let want = reference::attention::attention(&q, &k, &v, b, sq, sk, heads, d, false, 1.0 / (d as f64).sqrt());
    let run = |ctx: &Context| {
        let up = |x: &[f32], s: usize| GpuTensor::from_slice(ctx, &[b, s, heads * d], x, DType::F32).unwrap();
        let mut rec = Recorder::new();
        let o = attention(ctx, &mut rec, &up(&q, sq), &up(&k, sk), &up(&v, sk), heads, false).unwrap();
        rec.submit(ctx).unwrap();
        o.to_vec(ctx).unwrap()
    };
    let key = "attention.f32.d10.sq64.sk32.c0";
    let chosen = {
        let ctx = tuned_ctx(&dir);
        assert_close("attention after autotune", &run(&ctx), &want, TOL_F32);
        let chosen = ctx.tune.get(key).unwrap_or_else(|| panic!("no choice for {key}: {:?}", ctx.tune.entries()));
        assert!(Tiling::parse(&chosen).is_some(), "{chosen}");
        chosen
    };
    let ctx = tuned_ctx(&dir);
    assert_eq!(ctx.tune.get(key), Some(chosen), "read back from disk");
    assert_close("attention with the stored tiling", &run(&ctx), &want, TOL_F32);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Convolutions pick their workgroup size and pixels per invocation the same way (the channel
/// block was fixed when the weight was packed).
#[test]
fn autotune_picks_and_reuses_a_conv_tile() {
    let dir = std::env::temp_dir().join(format!("lorafuse-autotune-conv-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let mut r = rng("autotune_conv");
    let (xs, ws) = ([1usize, 3, 13, 12], [4usize, 3, 3, 3]);
    let x = rand_vec(&mut r, xs.iter().product(), 1.0, DType::F32);
    let w = rand_vec(&mut r, ws.iter().product(), 1.0, DType::F32);
    let p = Conv2dParams::same(3, 1);
    let (want, _) = reference::conv2d::conv2d(&x, xs, &w, ws, None, p);
    let run = |ctx: &Context| {
        let xt = GpuTensor::from_slice(ctx, &xs, &x, DType::F32).unwrap();
        let wp = PackedConvWeight::from_host(ctx, &w, ws, ConvTile::tm_for(ctx, ws[0]), DType::F32).unwrap();
        let mut rec = Recorder::new();
        let y = conv2d_packed(ctx, &mut rec, &xt, &wp, None, p).unwrap();
        rec.submit(ctx).unwrap();
        y.to_vec(ctx).unwrap()
    };
    let key = "conv.f32.k3x3.s1.4to4.1x16x16";
    let chosen = {
        let ctx = tuned_ctx(&dir);
        assert_close("conv after autotune", &run(&ctx), &want, TOL_F32);
        ctx.tune.get(key).unwrap_or_else(|| panic!("no choice for {key}: {:?}", ctx.tune.entries()))
    };
    let ctx = tuned_ctx(&dir);
    assert_eq!(ctx.tune.get(key), Some(chosen), "read back from disk");
    assert_close("conv with the stored tile", &run(&ctx), &want, TOL_F32);
    drop(ctx);
    let _ = std::fs::remove_dir_all(&dir);
}
