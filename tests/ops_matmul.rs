//! matmul kernel (shaders/matmul.wgsl: `linear`, batched `matmul`) vs reference::matmul, on both
//! the device's default kernel and the portable `tiled` kernel.

mod common;
use common::*;
use lorafuse::kernels::matmul::{default_kernel, linear, linear_with, matmul, matmul_with, GemmKernel};
use lorafuse::{reference, DType, GpuTensor, Recorder};

/// The kernels to test: the device's default one, then the portable `tiled` kernel at the GPU
/// default (64x64, 256 threads), the small-GPU default (32x32) and an odd small tile.
fn kernels() -> Vec<GemmKernel> {
    let mut v = vec![default_kernel(ctx())];
    // The 64-row subgroup tile that large linear layers get on CPU adapters.
    if let GemmKernel::Subgroup { lanes, .. } = v[0] {
        v.push(GemmKernel::Subgroup { lanes, rows: 64 });
    }
    for k in [
        GemmKernel::Tiled { bm: 64, bn: 64, bk: 16 },
        GemmKernel::Tiled { bm: 32, bn: 32, bk: 16 },
        GemmKernel::Tiled { bm: 16, bn: 8, bk: 8 },
    ] {
        if !v.contains(&k) {
            v.push(k);
        }
    }
    v
}

fn check_linear(lead: &[usize], k: usize, n: usize, with_bias: bool, kernel: GemmKernel) {
    let ctx = ctx();
    let mut r = rng("linear");
    let m: usize = lead.iter().product();
    for dt in dtypes() {
        let x = rand_vec(&mut r, m * k, 1.0, dt);
        let w = rand_vec(&mut r, n * k, 1.0, dt);
        let b = rand_vec(&mut r, n, 1.0, dt);
        let mut xs = lead.to_vec();
        xs.push(k);
        let xt = GpuTensor::from_slice(ctx, &xs, &x, dt).unwrap();
        let wt = GpuTensor::from_slice(ctx, &[n, k], &w, dt).unwrap();
        let bt = GpuTensor::from_slice(ctx, &[n], &b, dt).unwrap();
        let mut rec = Recorder::new();
        let y = linear_with(ctx, &mut rec, &xt, &wt, with_bias.then_some(&bt), kernel).unwrap();
        rec.submit(ctx).unwrap();
        let mut ys = lead.to_vec();
        ys.push(n);
        assert_eq!(y.shape, ys);
        let got = y.to_vec(ctx).unwrap();
        let want = reference::matmul::linear(&x, &w, with_bias.then_some(&b[..]), m, n, k);
        assert_close(&format!("linear x{xs:?} w[{n},{k}] bias={with_bias} {kernel:?} {dt:?}"), &got, &want, tol(dt));
    }
}

#[test]
fn linear_awkward_shapes() {
    for kernel in kernels() {
        for (lead, k, n) in
            [(vec![77], 33, 65), (vec![77], 32, 65), (vec![1], 1, 1), (vec![3, 5], 64, 36), (vec![2, 3, 11], 20, 130)]
        {
            for bias in [false, true] {
                check_linear(&lead, k, n, bias, kernel);
            }
        }
    }
}

#[test]
fn linear_default_entry_point() {
    // `linear` (no explicit kernel) at a shape a few tiles wide in every direction.
    let ctx = ctx();
    let mut r = rng("linear_default");
    let (m, k, n) = (100, 96, 140);
    for dt in dtypes() {
        let x = rand_vec(&mut r, m * k, 1.0, dt);
        let w = rand_vec(&mut r, n * k, 1.0, dt);
        let b = rand_vec(&mut r, n, 1.0, dt);
        let xt = GpuTensor::from_slice(ctx, &[m, k], &x, dt).unwrap();
        let wt = GpuTensor::from_slice(ctx, &[n, k], &w, dt).unwrap();
        let bt = GpuTensor::from_slice(ctx, &[n], &b, dt).unwrap();
        let mut rec = Recorder::new();
        let y = linear(ctx, &mut rec, &xt, &wt, Some(&bt)).unwrap();
        rec.submit(ctx).unwrap();
        let want = reference::matmul::linear(&x, &w, Some(&b), m, n, k);
        assert_close(&format!("linear {m}x{k}x{n} {dt:?}"), &y.to_vec(ctx).unwrap(), &want, tol(dt));
    }
}

fn check_matmul(batch: Option<usize>, m: usize, k: usize, n: usize, b_shared: bool, kernel: GemmKernel) {
    let ctx = ctx();
    let mut r = rng("matmul");
    let nb = batch.unwrap_or(1);
    for dt in dtypes() {
        let a = rand_vec(&mut r, nb * m * k, 1.0, dt);
        let bl = if b_shared { k * n } else { nb * k * n };
        let b = rand_vec(&mut r, bl, 1.0, dt);
        let (ash, bsh) = match batch {
            Some(bb) => (vec![bb, m, k], if b_shared { vec![k, n] } else { vec![bb, k, n] }),
            None => (vec![m, k], vec![k, n]),
        };
        let at = GpuTensor::from_slice(ctx, &ash, &a, dt).unwrap();
        let bt = GpuTensor::from_slice(ctx, &bsh, &b, dt).unwrap();
        let mut rec = Recorder::new();
        let c = matmul_with(ctx, &mut rec, &at, &bt, kernel).unwrap();
        rec.submit(ctx).unwrap();
        let want_shape = match batch {
            Some(bb) => vec![bb, m, n],
            None => vec![m, n],
        };
        assert_eq!(c.shape, want_shape);
        let want = reference::matmul::matmul(&a, &b, nb, m, k, n, b_shared);
        assert_close(&format!("matmul a{ash:?} b{bsh:?} {kernel:?} {dt:?}"), &c.to_vec(ctx).unwrap(), &want, tol(dt));
    }
}

#[test]
fn matmul_batched_and_broadcast() {
    for kernel in kernels() {
        for (m, k, n) in [(77, 33, 65), (40, 64, 36), (5, 8, 3)] {
            check_matmul(None, m, k, n, true, kernel);
            check_matmul(Some(1), m, k, n, false, kernel);
            check_matmul(Some(3), m, k, n, false, kernel);
            check_matmul(Some(3), m, k, n, true, kernel);
        }
    }
    // And through the default entry point.
    let ctx = ctx();
    let a = GpuTensor::from_slice(ctx, &[2, 2, 3], &[1., 2., 3., 4., 5., 6., 7., 8., 9., 10., 11., 12.], DType::F32)
        .unwrap();
    let b = GpuTensor::from_slice(ctx, &[3, 1], &[1., 0., -1.], DType::F32).unwrap();
    let mut rec = Recorder::new();
    let c = matmul(ctx, &mut rec, &a, &b).unwrap();
    rec.submit(ctx).unwrap();
    assert_eq!(c.to_vec(ctx).unwrap(), vec![-2.0, -2.0, -2.0, -2.0]);
}

#[test]
fn linear_more_than_65535_workgroups() {
    // One row of output tiles per 65536 workgroups, plus a ragged one: M = 65536·tile_m + 77 with
    // a skinny K and N so it stays cheap; the grid must be folded into 2-D.
    let ctx = ctx();
    for kernel in
        kernels().into_iter().filter(|k| matches!(k, GemmKernel::Subgroup { .. })).chain([default_kernel(ctx)])
    {
        linear_folded(kernel);
    }
}

fn linear_folded(kernel: GemmKernel) {
    let ctx = ctx();
    let (tm, _) = kernel.tile();
    let (m, k, n) = (65536 * tm + 77, 4, 5);
    let mut r = rng("linear_fold");
    let dt = DType::F32;
    let x = rand_vec(&mut r, m * k, 1.0, dt);
    let w = rand_vec(&mut r, n * k, 1.0, dt);
    let b = rand_vec(&mut r, n, 1.0, dt);
    let xt = GpuTensor::from_slice(ctx, &[m, k], &x, dt).unwrap();
    assert!(xt.fits_binding(ctx), "this test wants one launch over > 65535 workgroups");
    let wt = GpuTensor::from_slice(ctx, &[n, k], &w, dt).unwrap();
    let bt = GpuTensor::from_slice(ctx, &[n], &b, dt).unwrap();
    let mut rec = Recorder::new();
    let y = linear_with(ctx, &mut rec, &xt, &wt, Some(&bt), kernel).unwrap();
    assert!(rec.dispatches.iter().any(|d| d.groups[1] > 1), "grid was not folded: {:?}", rec.dispatches[0].groups);
    rec.submit(ctx).unwrap();
    let want = reference::matmul::linear(&x, &w, Some(&b), m, n, k);
    assert_close(&format!("linear fold M={m} {kernel:?}"), &y.to_vec(ctx).unwrap(), &want, TOL_F32);
}

#[test]
fn linear_weight_larger_than_one_binding() {
    // w [N, 16] f32 just over one binding: split over N (weight rows and output columns).
    let ctx = ctx();
    let k = 16;
    let n = (ctx.caps.max_binding / (4 * k as u64)) as usize + 77;
    let m = 3;
    let mut r = rng("linear_big_w");
    let x = rand_vec(&mut r, m * k, 1.0, DType::F32);
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 512.0).collect();
    let b: Vec<f32> = (0..n).map(|i| (i % 17) as f32 - 8.0).collect();
    let xt = GpuTensor::from_slice(ctx, &[m, k], &x, DType::F32).unwrap();
    let wt = GpuTensor::from_slice(ctx, &[n, k], &w, DType::F32).unwrap();
    assert!(!wt.fits_binding(ctx));
    let bt = GpuTensor::from_slice(ctx, &[n], &b, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let y = linear(ctx, &mut rec, &xt, &wt, Some(&bt)).unwrap();
    assert!(rec.len() > 1);
    rec.submit(ctx).unwrap();
    let want = reference::matmul::linear(&x, &w, Some(&b), m, n, k);
    assert_close("linear split over N", &y.to_vec(ctx).unwrap(), &want, TOL_F32);
}

#[test]
fn linear_input_larger_than_one_binding() {
    // x [M, 16] f32 just over one binding: split over M (input and output rows).
    let ctx = ctx();
    let k = 16;
    let m = (ctx.caps.max_binding / (4 * k as u64)) as usize + 5;
    let n = 6;
    let mut r = rng("linear_big_x");
    let x: Vec<f32> = (0..m * k).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 512.0).collect();
    let w = rand_vec(&mut r, n * k, 1.0, DType::F32);
    let xt = GpuTensor::from_slice(ctx, &[m, k], &x, DType::F32).unwrap();
    assert!(!xt.fits_binding(ctx));
    let wt = GpuTensor::from_slice(ctx, &[n, k], &w, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let y = linear(ctx, &mut rec, &xt, &wt, None).unwrap();
    assert!(rec.len() > 1);
    rec.submit(ctx).unwrap();
    let want = reference::matmul::linear(&x, &w, None, m, n, k);
    assert_close("linear split over M", &y.to_vec(ctx).unwrap(), &want, TOL_F32);
}

#[test]
fn matmul_operand_larger_than_one_binding() {
    // b [64, N] f32 just over one binding (so is c): split over K, later chunks accumulating into c,
    // and over M.
    let ctx = ctx();
    let k = 64;
    let n = (ctx.caps.max_binding / (4 * k as u64)) as usize + 36;
    let m = 2;
    let mut r = rng("matmul_big_b");
    let a = rand_vec(&mut r, m * k, 1.0, DType::F32);
    let b: Vec<f32> = (0..k * n).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 512.0).collect();
    let at = GpuTensor::from_slice(ctx, &[m, k], &a, DType::F32).unwrap();
    let bt = GpuTensor::from_slice(ctx, &[k, n], &b, DType::F32).unwrap();
    assert!(!bt.fits_binding(ctx));
    let mut rec = Recorder::new();
    let c = matmul(ctx, &mut rec, &at, &bt).unwrap();
    assert!(rec.len() > 1);
    rec.submit(ctx).unwrap();
    let want = reference::matmul::matmul(&a, &b, 1, m, k, n, true);
    assert_close("matmul split over K", &c.to_vec(ctx).unwrap(), &want, TOL_F32);
}

#[test]
fn linear_long_k() {
    // K = 40000 is summed in several launches (lavapipe ends loops after 65535 iterations per
    // invocation, and one f32 chain stays short), later ones accumulating into y.
    for kernel in [default_kernel(ctx()), GemmKernel::Tiled { bm: 32, bn: 32, bk: 16 }] {
        check_linear(&[5], 40000, 7, true, kernel);
    }
}

#[test]
fn matmul_rejects_bad_shapes() {
    let ctx = ctx();
    let t = |s: &[usize], dt: DType| GpuTensor::zeros(ctx, s, dt).unwrap();
    let mut rec = Recorder::new();
    let f32_ = DType::F32;
    let errs = vec![
        linear(ctx, &mut rec, &t(&[4, 8], f32_), &t(&[3, 7], f32_), None).err().expect("must fail"),
        linear(ctx, &mut rec, &t(&[4, 8], f32_), &t(&[3, 8], f32_), Some(&t(&[4], f32_))).err().expect("must fail"),
        linear(ctx, &mut rec, &t(&[4, 8], f32_), &t(&[3, 8, 1], f32_), None).err().expect("must fail"),
        linear(ctx, &mut rec, &t(&[4, 0], f32_), &t(&[3, 0], f32_), None).err().expect("must fail"),
        matmul(ctx, &mut rec, &t(&[2, 4, 8], f32_), &t(&[3, 8, 5], f32_)).err().expect("must fail"),
        matmul(ctx, &mut rec, &t(&[4, 8], f32_), &t(&[2, 8, 5], f32_)).err().expect("must fail"),
        matmul(ctx, &mut rec, &t(&[4, 8], f32_), &t(&[7, 5], f32_)).err().expect("must fail"),
        matmul(ctx, &mut rec, &t(&[8], f32_), &t(&[8, 5], f32_)).err().expect("must fail"),
        linear_with(
            ctx,
            &mut rec,
            &t(&[4, 8], f32_),
            &t(&[3, 8], f32_),
            None,
            GemmKernel::Tiled { bm: 6, bn: 8, bk: 8 },
        )
        .err()
        .expect("must fail"),
    ];
    for e in &errs {
        let s = e.to_string();
        assert!(s.contains("linear") || s.contains("matmul"), "{s}");
    }
    if ctx.caps.shader_f16 {
        let e = linear(ctx, &mut rec, &t(&[4, 8], f32_), &t(&[3, 8], DType::F16), None).err().expect("must fail");
        assert!(e.to_string().contains("dtype"), "{e}");
    }
    assert!(rec.is_empty());
}

#[test]
fn matmul_tiled_pipelines_need_no_subgroups() {
    // The `tiled` pipelines are built from the part of shaders/matmul.wgsl above the `sg` kernel,
    // so adapters without SUBGROUP still run it; the full text does need the capability.
    use lorafuse::gpu::pipelines::specialize;
    use lorafuse::kernels::matmul::{tiled_source, SRC};
    use naga::valid::{Capabilities, ValidationFlags, Validator};
    let validate = |text: &str, caps: Capabilities| {
        let module = naga::front::wgsl::parse_str(text).map_err(|e| e.emit_to_string(text))?;
        Validator::new(ValidationFlags::all(), caps).validate(&module).map(|_| ()).map_err(|e| format!("{e:?}"))
    };
    let tiled = tiled_source();
    assert!(tiled.source.len() < SRC.source.len() && tiled.source.contains("fn tiled("));
    validate(&specialize(tiled, DType::F32).unwrap(), Capabilities::empty()).unwrap();
    validate(&specialize(tiled, DType::F16).unwrap(), Capabilities::SHADER_FLOAT16).unwrap();
    assert!(validate(&specialize(&SRC, DType::F32).unwrap(), Capabilities::empty()).is_err());
}

/// The `sg` kernel's generated part expands into a module that validates in both dtypes, with all
/// 64 rows of accumulators and both row blocks' helpers.
#[test]
fn matmul_sg_expansion_validates() {
    use lorafuse::gpu::pipelines::specialize;
    use lorafuse::kernels::matmul::sg_source;
    let src = sg_source();
    assert!(!src.source.contains("//# begin sg\n"), "template not expanded");
    assert_eq!(src.source.matches("var<private> acc").count(), 128);
    for f in ["fn mac(", "fn mac_hi(", "fn sg_store_all(", "fn sg_store_all_hi("] {
        assert_eq!(src.source.matches(f).count(), 1, "{f}");
    }
    for dt in [DType::F32, DType::F16] {
        let text = specialize(src, dt).unwrap();
        let module = naga::front::wgsl::parse_str(&text).unwrap_or_else(|e| panic!("{}", e.emit_to_string(&text)));
        naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
            .validate(&module)
            .unwrap_or_else(|e| panic!("{dt:?}: {e:?}"));
    }
}
