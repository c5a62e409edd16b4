//! conv2d kernel (implicit GEMM: `main_vec`, `main_any`, weight `pack`) vs reference::conv2d.

mod common;
use common::*;
use lorafuse::kernels::conv2d::{
    conv2d, conv2d_into, conv2d_packed, conv2d_packed_tiled, conv2d_tiled, pack_host, pack_weight, unpack_host,
    Conv2dParams, ConvForce, ConvTile, PackedConvWeight,
};
use lorafuse::{reference, DType, GpuTensor, Recorder};

fn pad(t: usize, b: usize, l: usize, r: usize, stride: usize) -> Conv2dParams {
    Conv2dParams { stride, pad: [t, b, l, r] }
}

/// How a case is launched.
#[derive(Clone, Copy, Debug)]
enum Run {
    /// `conv2d` with the default tile.
    Default,
    /// `conv2d_tiled` with an explicit tile.
    Tile(ConvTile),
    /// `pack_weight` + `conv2d_packed_tiled` with explicit tile and variant overrides.
    Forced(ConvTile, ConvForce),
}

/// Random x, w, bias; the GPU result against the f64 reference, for each dtype in `dts`.
fn case(xs: [usize; 4], cout: usize, k: [usize; 2], p: Conv2dParams, with_bias: bool, run: Run, dts: &[DType]) {
    let ctx = ctx();
    let mut r = rng("conv2d");
    let ws = [cout, xs[1], k[0], k[1]];
    for &dt in dts {
        let x = rand_vec(&mut r, xs.iter().product(), 1.0, dt);
        let w = rand_vec(&mut r, ws.iter().product(), 0.5, dt);
        let b = rand_vec(&mut r, cout, 1.0, dt);
        let xt = GpuTensor::from_slice(ctx, &xs, &x, dt).unwrap();
        let wt = GpuTensor::from_slice(ctx, &ws, &w, dt).unwrap();
        let bt = GpuTensor::from_slice(ctx, &[cout], &b, dt).unwrap();
        let bias = with_bias.then_some(&bt);
        let (ho, wo) = p.out_size(xs[2], xs[3], k[0], k[1]).unwrap();
        let mut rec = Recorder::new();
        let y = match run {
            Run::Default => conv2d(ctx, &mut rec, &xt, &wt, bias, p).unwrap(),
            Run::Tile(t) => {
                let y = GpuTensor::empty(ctx, &[xs[0], cout, ho, wo], dt).unwrap();
                conv2d_tiled(ctx, &mut rec, &xt, &wt, bias, p, &y, t).unwrap();
                y
            }
            Run::Forced(t, f) => {
                let y = GpuTensor::empty(ctx, &[xs[0], cout, ho, wo], dt).unwrap();
                let wp = pack_weight(ctx, &mut rec, &wt, t.tm).unwrap();
                conv2d_packed_tiled(ctx, &mut rec, &xt, &wp, bias, p, &y, t.wg, t.tn, f).unwrap();
                y
            }
        };
        rec.submit(ctx).unwrap();
        let got = y.to_vec(ctx).unwrap();
        let (want, shape) = reference::conv2d::conv2d(&x, xs, &w, ws, with_bias.then_some(&b[..]), p);
        assert_eq!(y.shape, shape);
        assert_close(&format!("conv2d x{xs:?} w{ws:?} {p:?} bias={with_bias} {run:?} {dt:?}"), &got, &want, tol(dt));
    }
}

#[test]
fn conv2d_awkward_shapes() {
    let all = dtypes();
    // Unaligned widths: main_any. Cout not a multiple of the channel block; batch 1 and 3.
    case([1, 3, 13, 13], 5, [3, 3], Conv2dParams::same(3, 1), true, Run::Default, &all);
    case([3, 20, 11, 9], 70, [3, 3], Conv2dParams::same(3, 1), true, Run::Default, &all);
    case([2, 33, 17, 15], 40, [1, 1], pad(0, 0, 0, 0, 1), false, Run::Default, &all);
    // The VAE's Downsample2D: pad right and bottom by 1, 3×3 stride 2 (odd sizes).
    case([1, 17, 13, 11], 66, [3, 3], pad(0, 1, 0, 1, 2), true, Run::Default, &all);
    // Aligned widths: main_vec (4, 8 and 16 pixels per invocation on lavapipe).
    case([3, 24, 12, 16], 36, [3, 3], Conv2dParams::same(3, 1), true, Run::Default, &all);
    case([1, 16, 16, 16], 20, [3, 3], pad(0, 1, 0, 1, 2), true, Run::Default, &all);
    case([2, 8, 16, 24], 9, [3, 3], Conv2dParams::same(3, 2), false, Run::Default, &all);
    case([1, 40, 8, 8], 24, [1, 1], pad(0, 0, 0, 0, 1), true, Run::Default, &all);
    case([3, 4, 6, 8], 3, [3, 3], Conv2dParams::same(3, 1), true, Run::Default, &all);
    // Non-square and larger kernels, asymmetric padding.
    case([1, 6, 5, 12], 7, [1, 3], pad(0, 0, 1, 1, 1), true, Run::Default, &all);
    case([1, 4, 9, 10], 6, [5, 5], Conv2dParams::same(5, 1), true, Run::Default, &all);
    case([2, 3, 7, 9], 4, [2, 3], pad(1, 0, 2, 0, 3), false, Run::Default, &all);
}

#[test]
fn conv2d_every_variant() {
    let all = dtypes();
    let t = |wg, tm, tn| ConvTile { wg, tm, tn };
    let any = ConvForce { any: true, no_subgroups: false };
    let nosg = ConvForce { any: false, no_subgroups: true };
    let both = ConvForce { any: true, no_subgroups: true };
    for (i, (tile, force)) in [
        (t(8, 4, 4), ConvForce::default()),
        (t(16, 12, 8), ConvForce::default()),
        (t(64, 32, 16), ConvForce::default()),
        (t(8, 32, 16), any),
        (t(8, 20, 4), any),
        (t(16, 16, 8), nosg),
        (t(8, 32, 4), both),
    ]
    .into_iter()
    .enumerate()
    {
        // Alternate a stride-1 "same" conv (batch 2) and the VAE's stride-2 downsample.
        if i % 2 == 0 {
            case([2, 5, 10, 16], 26, [3, 3], Conv2dParams::same(3, 1), true, Run::Forced(tile, force), &all);
        } else {
            case([1, 7, 9, 16], 33, [3, 3], pad(0, 1, 0, 1, 2), true, Run::Forced(tile, force), &all);
        }
    }
    case([1, 9, 6, 20], 11, [3, 3], pad(2, 1, 5, 3, 1), true, Run::Tile(t(8, 8, 4)), &all);
}

#[test]
fn conv2d_packed_weight_is_reusable() {
    let ctx = ctx();
    let mut r = rng("conv2d_packed");
    let (xs, ws) = ([1usize, 6, 8, 12], [10usize, 6, 3, 3]);
    let x = rand_vec(&mut r, xs.iter().product(), 1.0, DType::F32);
    let w = rand_vec(&mut r, ws.iter().product(), 1.0, DType::F32);
    let xt = GpuTensor::from_slice(ctx, &xs, &x, DType::F32).unwrap();
    let wt = GpuTensor::from_slice(ctx, &ws, &w, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let wp = pack_weight(ctx, &mut rec, &wt, 12).unwrap();
    let p = Conv2dParams::same(3, 1);
    let y1 = conv2d_packed(ctx, &mut rec, &xt, &wp, None, p).unwrap();
    let y2 = conv2d_packed(ctx, &mut rec, &xt, &wp, None, p).unwrap();
    rec.submit(ctx).unwrap();
    let (want, _) = reference::conv2d::conv2d(&x, xs, &w, ws, None, p);
    assert_close("conv2d packed #1", &y1.to_vec(ctx).unwrap(), &want, TOL_F32);
    assert_close("conv2d packed #2", &y2.to_vec(ctx).unwrap(), &want, TOL_F32);
}

/// conv_pack: the GPU pass and the host packer that layers use at load (`pack_host`) both give
/// `reference::conv_pack` bit for bit at awkward channel counts (a partial last block), in both
/// dtypes; `unpack_host` inverts it; a host-packed weight convolves like the reference.
#[test]
fn conv2d_host_packing_matches_the_gpu_pass() {
    let ctx = ctx();
    let mut r = rng("conv2d_pack_host");
    for (ws, tm) in [([10usize, 6, 3, 3], 12u32), ([37, 5, 1, 1], 8), ([4, 3, 3, 3], 4), ([33, 7, 3, 3], 32)] {
        let w = rand_vec(&mut r, ws.iter().product(), 1.0, DType::F32);
        for dt in dtypes() {
            let wt = GpuTensor::from_slice(ctx, &ws, &w, dt).unwrap();
            let mut rec = Recorder::new();
            let gpu = pack_weight(ctx, &mut rec, &wt, tm).unwrap();
            rec.submit(ctx).unwrap();
            let rounded: Vec<f32> = w.iter().map(|&v| dt.round(v)).collect();
            let want = reference::conv_pack::conv_pack(&rounded, ws, tm as usize);
            let host = pack_host(&rounded, ws, tm).unwrap();
            assert_eq!(host, want, "host {ws:?} tm {tm}");
            assert_eq!(gpu.packed.to_vec(ctx).unwrap(), want, "gpu {ws:?} tm {tm} {dt:?}");
            assert_eq!(unpack_host(&host, ws, tm).unwrap(), rounded, "unpack {ws:?} tm {tm}");
        }
        let (xs, p) = ([2usize, ws[1], 9, 7], Conv2dParams::same(ws[2], 1));
        let x = rand_vec(&mut r, xs.iter().product(), 1.0, DType::F32);
        let xt = GpuTensor::from_slice(ctx, &xs, &x, DType::F32).unwrap();
        let wp = PackedConvWeight::from_host(ctx, &w, ws, tm, DType::F32).unwrap();
        let mut rec = Recorder::new();
        let y = conv2d_packed(ctx, &mut rec, &xt, &wp, None, p).unwrap();
        rec.submit(ctx).unwrap();
        let (want, _) = reference::conv2d::conv2d(&x, xs, &w, ws, None, p);
        assert_close(&format!("host-packed {ws:?}"), &y.to_vec(ctx).unwrap(), &want, TOL_F32);
    }
    assert!(pack_host(&[0f32; 5], [1, 1, 2, 2], 4).is_err(), "wrong element count");
    assert!(pack_host(&[0f32; 4], [1, 1, 2, 2], 6).is_err(), "tm not a multiple of 4");
    assert!(unpack_host(&[0f32; 4], [1, 1, 2, 2], 4).is_err(), "packed length");
}

#[test]
fn conv2d_more_than_65535_workgroups() {
    // 8 invocations × 4 pixels = 32 pixels per workgroup: 1100 × 1920 pixels need 66000 workgroups,
    // so the grid folds into 2-D (main_vec).
    let tile = ConvTile { wg: 8, tm: 4, tn: 4 };
    case([1, 1, 1100, 1920], 2, [3, 3], Conv2dParams::same(3, 1), true, Run::Tile(tile), &dtypes());
    // And main_any (odd width): 1100 × 1919.
    case([1, 1, 1100, 1919], 1, [3, 3], Conv2dParams::same(3, 1), false, Run::Tile(tile), &[DType::F32]);
}

fn limit_elems() -> usize {
    (ctx().caps.max_binding / 4) as usize
}

#[test]
fn conv2d_batch_larger_than_one_binding() {
    // Each image is ~0.4 of a binding, the batch of 3 is not: launched in image groups.
    let hw = limit_elems() / 5;
    let w = 2048;
    let h = hw / w;
    case([3, 2, h, w], 2, [3, 3], Conv2dParams::same(3, 1), true, Run::Default, &[DType::F32]);
}

#[test]
fn conv2d_image_larger_than_one_binding() {
    // Each channel plane fits but the image does not: input channels are split (later blocks add
    // into the output) and output channels too (the second block starts mid channel-block).
    let side = ((limit_elems() / 3) as f64).sqrt() as usize + 8;
    case([1, 3, side, side], 4, [3, 3], Conv2dParams::same(3, 1), true, Run::Default, &[DType::F32]);
}

#[test]
fn conv_pack_weight_larger_than_one_binding() {
    // 10 channel blocks of 4 × 1000 × 900 taps: 36 M packed elements, more than one binding of
    // f32 on lavapipe, so the pack runs in several launches of whole blocks.
    let ctx = ctx();
    let ws = [37usize, 1000, 30, 30];
    let blk = 4 * ws[1] * ws[2] * ws[3];
    assert!(10 * blk > limit_elems() && blk < limit_elems(), "shape no longer spans bindings");
    let w: Vec<f32> = (0..ws.iter().product::<usize>()).map(|i| (i % 4093) as f32 - 2000.0).collect();
    let wt = GpuTensor::from_slice(ctx, &ws, &w, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let gpu = pack_weight(ctx, &mut rec, &wt, 4).unwrap();
    rec.submit(ctx).unwrap();
    let got = gpu.packed.to_vec(ctx).unwrap();
    assert!(got == reference::conv_pack::conv_pack(&w, ws, 4), "packed weight differs from the reference");
}

#[test]
fn conv2d_plane_larger_than_one_binding() {
    // A single channel plane exceeds a binding: output rows are split, with the input halo.
    let side = (limit_elems() as f64).sqrt() as usize + 8;
    case([1, 1, side, side], 1, [3, 3], Conv2dParams::same(3, 1), true, Run::Default, &[DType::F32]);
}

#[test]
fn conv2d_rejects_bad_input() {
    let ctx = ctx();
    let f = DType::F32;
    let t = |s: &[usize]| GpuTensor::zeros(ctx, s, f).unwrap();
    let x = t(&[1, 4, 8, 8]);
    let w = t(&[6, 4, 3, 3]);
    let same = Conv2dParams::same(3, 1);
    let mut rec = Recorder::new();
    let err = |r: lorafuse::Result<GpuTensor>| {
        let e = r.err().expect("expected an error");
        assert!(e.to_string().contains("conv2d"), "{e}");
    };
    err(conv2d(ctx, &mut rec, &t(&[4, 8, 8]), &w, None, same));
    err(conv2d(ctx, &mut rec, &x, &t(&[6, 5, 3, 3]), None, same));
    err(conv2d(ctx, &mut rec, &x, &t(&[6, 4, 3]), None, same));
    err(conv2d(ctx, &mut rec, &x, &w, Some(&t(&[5])), same));
    err(conv2d(ctx, &mut rec, &x, &w, None, Conv2dParams { stride: 0, pad: [1; 4] }));
    err(conv2d(ctx, &mut rec, &x, &t(&[6, 4, 11, 11]), None, same));
    err(conv2d(ctx, &mut rec, &t(&[1, 0, 8, 8]), &t(&[6, 0, 3, 3]), None, same));
    if ctx.caps.shader_f16 {
        err(conv2d(ctx, &mut rec, &x, &GpuTensor::zeros(ctx, &[6, 4, 3, 3], DType::F16).unwrap(), None, same));
    }
    let y = t(&[1, 6, 8, 8]);
    let e = conv2d_into(ctx, &mut rec, &x, &w, None, same, &t(&[1, 6, 8, 7])).unwrap_err();
    assert!(e.to_string().contains("conv2d"), "{e}");
    let e = conv2d_into(ctx, &mut rec, &y, &t(&[6, 6, 3, 3]), None, same, &y).unwrap_err();
    assert!(e.to_string().contains("conv2d"), "{e}");
    let e = conv2d_tiled(ctx, &mut rec, &x, &w, None, same, &y, ConvTile { wg: 12, tm: 6, tn: 4 }).unwrap_err();
    assert!(e.to_string().contains("conv2d"), "{e}");
    assert!(pack_weight(ctx, &mut rec, &w, 40).is_err());
    assert!(rec.is_empty(), "nothing may be recorded for rejected calls");
}

/// The SD level-1 3×3 conv (x [1, 320, 64, 64] → 320 channels), timed with GPU timestamps (no
/// assertion on time), with two output channels checked against the reference.
#[test]
fn conv2d_sd_level1_throughput() {
    let ctx = ctx();
    let mut r = rng("conv2d_sd");
    let (xs, ws) = ([1usize, 320, 64, 64], [320usize, 320, 3, 3]);
    let p = Conv2dParams::same(3, 1);
    let flops = 2.0 * (320usize * 320 * 9 * 64 * 64) as f64;
    for dt in dtypes() {
        let x = rand_vec(&mut r, xs.iter().product(), 1.0, dt);
        let w = rand_vec(&mut r, ws.iter().product(), 0.05, dt);
        let xt = GpuTensor::from_slice(ctx, &xs, &x, dt).unwrap();
        let wt = GpuTensor::from_slice(ctx, &ws, &w, dt).unwrap();
        let mut rec = Recorder::new();
        let wp = pack_weight(ctx, &mut rec, &wt, ConvTile::pick(ctx, 320, 64, 4096, 320 * 9 * 320).tm).unwrap();
        rec.submit(ctx).unwrap();
        let y = conv2d_packed(ctx, &mut rec, &xt, &wp, None, p).unwrap();
        match rec.time_gpu(ctx, 1).unwrap() {
            Some(ms) => eprintln!("conv2d 320→320 3×3 @64×64 {dt:?}: {ms:.1} ms, {:.1} GFLOP/s", flops / ms / 1e6),
            None => eprintln!("conv2d 320→320 3×3 @64×64 {dt:?}: no timestamp queries"),
        }
        let got = y.to_vec(ctx).unwrap();
        for co in [0usize, 317] {
            let w1 = &w[co * 320 * 9..(co + 1) * 320 * 9];
            let (want, _) = reference::conv2d::conv2d(&x, xs, w1, [1, 320, 3, 3], None, p);
            assert_close(&format!("conv2d sd channel {co} {dt:?}"), &got[co * 4096..(co + 1) * 4096], &want, tol(dt));
        }
    }
}
