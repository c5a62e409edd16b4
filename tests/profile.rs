//! The dispatch profiler behind `bench pipeline --profile`: one GPU time per dispatch, every
//! GEMM / conv / attention launch of a real UNet named by its shape with its FLOPs counted, and
//! the counts equal to an independent count from the model's shapes. Nothing here is timed
//! against a bound (speed is for benchmarks); the times are only checked to exist.

mod common;

use common::*;
use lorafuse::bench::pipeline::profile_graphs;
use lorafuse::bench::profile::{group, profile};
use lorafuse::gpu::Recorder;
use lorafuse::kernels::matmul::matmul;
use lorafuse::pipeline::request::Precision;
use lorafuse::pipeline::txt2img::Pipeline;
use lorafuse::{DType, GpuTensor};

#[test]
fn every_dispatch_gets_a_time_and_gemm_work_is_counted_exactly() {
    let ctx = ctx();
    // 37×53 · 53×29 twice (not tile multiples), then an elementwise op with no counted work
    let a = GpuTensor::from_slice(ctx, &[37, 53], &vec![0.5; 37 * 53], DType::F32).unwrap();
    let b = GpuTensor::from_slice(ctx, &[53, 29], &vec![0.25; 53 * 29], DType::F32).unwrap();
    let mut rec = Recorder::new();
    let c = matmul(ctx, &mut rec, &a, &b).unwrap();
    let _ = matmul(ctx, &mut rec, &a, &b).unwrap();
    let _ = lorafuse::kernels::unary::unary(ctx, &mut rec, &c, lorafuse::kernels::unary::UnaryOp::Scale(2.0)).unwrap();
    let p = profile(ctx, &rec).unwrap().expect("lavapipe has timestamp queries");
    assert_eq!(p.dispatches, rec.len());
    let gemm = p.classes.iter().find(|r| r.class == "gemm 37x29x53").expect("gemm class");
    assert_eq!(gemm.dispatches, 2);
    assert_eq!(gemm.gflop * 1e9, 2.0 * 2.0 * 37.0 * 29.0 * 53.0);
    let unary = p.classes.iter().find(|r| r.class == "unary").expect("unary class");
    assert_eq!((unary.dispatches, unary.gflop), (1, 0.0));
    let times = rec.profile(ctx).unwrap().unwrap();
    assert_eq!(times.len(), rec.len());
    assert!(times.iter().all(|t| t.is_finite() && *t >= 0.0), "{times:?}");
    let shares: f64 = p.classes.iter().map(|r| r.share).sum();
    assert!((shares - 1.0).abs() < 1e-9 || p.total_ms == 0.0, "shares sum to {shares}");
    // grouping is a pure function of the dispatches and their times
    let again = group(&rec.dispatches, &vec![1.0; rec.len()]);
    assert_eq!(again.total_ms, rec.len() as f64);
}

#[test]
fn the_tiny_unet_profile_names_every_heavy_launch_and_counts_its_flops() {
    let ctx = ctx();
    let pipe = Pipeline::load(ctx, &fixtures().join("model-fp16.safetensors"), Precision::F32).unwrap();
    let size = 72; // 9×9 latents: odd, not a tile multiple
    let r = profile_graphs(ctx, &pipe, size).unwrap().expect("timestamp queries");
    let u = &r.unet_step;
    let cfg = &pipe.config.unet;
    // Attention FLOPs from the config alone: per transformer block one self-attention over the
    // level's tokens and one cross-attention over 77, each 4·S·Sk·width, batch 2 (CFG).
    let attn = |side: usize, ch: usize, depth: usize| {
        let s = (side * side) as f64;
        2.0 * 4.0 * (s * s + s * 77.0) * ch as f64 * depth as f64
    };
    let levels = cfg.block_out_channels.len();
    let mut sides = vec![size / 8];
    for _ in 1..levels {
        let last = *sides.last().unwrap();
        sides.push(last.div_ceil(2));
    }
    let mut want_attn = 0.0;
    for (i, &side) in sides.iter().enumerate() {
        let ch = cfg.block_out_channels[i];
        if cfg.down_cross_attention[i] {
            want_attn += cfg.layers_per_block as f64 * attn(side, ch, cfg.down_transformer_depth[i]);
        }
        // up_blocks.j works at the size of down level levels-1-j, with that level's channels
        let j = levels - 1 - i;
        if cfg.up_cross_attention[j] {
            want_attn += (cfg.layers_per_block + 1) as f64 * attn(side, ch, cfg.up_transformer_depth[j]);
        }
    }
    if cfg.mid_cross_attention {
        want_attn += attn(sides[levels - 1], cfg.block_out_channels[levels - 1], cfg.mid_transformer_depth);
    }
    let got_attn: f64 = u.classes.iter().filter(|c| c.family == "attention").map(|c| c.gflop * 1e9).sum();
    let rel = (got_attn - want_attn).abs() / want_attn;
    println!("attention FLOPs: profile {got_attn:.4e}, from the config {want_attn:.4e} (rel {rel:.2e})");
    assert!(rel < 1e-9, "attention FLOPs {got_attn} vs {want_attn}");
    for fam in ["gemm", "conv", "attention"] {
        let rows: Vec<_> = u.classes.iter().filter(|c| c.family == fam).collect();
        assert!(!rows.is_empty(), "no {fam} class in\n{}", u.table("unet", None));
        for c in rows {
            assert!(c.gflop > 0.0 && c.class != fam, "{fam} launch without shape or work: {c:?}");
        }
    }
    assert!(u.classes.iter().any(|c| c.class.starts_with("attention cross ")));
    assert!(u.classes.iter().any(|c| c.class.starts_with("attention self ")));
    assert!(r.vae_decode.classes.iter().any(|c| c.class.starts_with("conv3x3/1 ")));
    // Every kernel the models launch has a family (a new kernel must be named in bench::profile).
    for p in [u, &r.vae_decode] {
        let other: Vec<_> = p.classes.iter().filter(|c| c.family == "other").map(|c| &c.class).collect();
        assert!(other.is_empty(), "launches without a family: {other:?}");
    }
    assert!(u.total_ms > 0.0 && r.peak_gflops > 0.0);
    print!("{}", u.table("tiny UNet step", Some(r.peak_gflops)));
}

/// `bench kernels` says which speed goals its cases meet (attention ≥ 30 %, GEMM and conv ≥ 50 %
/// of the probe), counting from the rows it printed.
#[test]
fn bench_kernels_reports_the_goals() {
    use lorafuse::bench::{result, Report};
    let peak = 100.0;
    let row = |name: &str, gflops: f64| result(name, "s", 1.0, gflops * 1e6, 0.0, peak);
    let report = Report {
        adapter: "a".into(),
        backend: "b".into(),
        peak_gflops: peak,
        timer: "t".into(),
        kernels: vec![
            row("attention", 35.0),
            row("cross_attention_f16", 20.0),
            row("matmul_f32", 55.0),
            row("conv3x3", 40.0),
            row("group_norm", 1.0),
        ],
    };
    let t = report.targets();
    assert!(t.contains("attention at ≥ 30 % of the probe: 1 of 2 cases meet it (20.0–35.0 %)"), "{t}");
    assert!(t.contains("GEMM and conv at ≥ 50 % of the probe: 1 of 2 cases meet it (40.0–55.0 %)"), "{t}");
    assert!(report.table().ends_with(&t));
}
