//! unary kernel (SiLU, GELU, quick-GELU, scale, ReLU, soft clamp) vs reference::unary.

mod common;
use common::*;
use lorafuse::kernels::unary::{unary, UnaryOp};
use lorafuse::{reference, GpuTensor, Recorder};

fn check(n: usize, op: UnaryOp, scale: f32) {
    let ctx = ctx();
    let mut r = rng("unary");
    for dt in dtypes() {
        let x = rand_vec(&mut r, n, scale, dt);
        let xt = GpuTensor::from_slice(ctx, &[n], &x, dt).unwrap();
        let mut rec = Recorder::new();
        let y = unary(ctx, &mut rec, &xt, op).unwrap();
        rec.submit(ctx).unwrap();
        let got = y.to_vec(ctx).unwrap();
        let want = reference::unary::unary(&x, op);
        assert_close(&format!("unary {op:?} n={n} {dt:?}"), &got, &want, tol(dt));
    }
}

#[test]
fn unary_ops_awkward_sizes() {
    for op in [UnaryOp::Silu, UnaryOp::Gelu, UnaryOp::QuickGelu, UnaryOp::Scale(-1.75), UnaryOp::Relu] {
        for n in [1, 3, 257, 1000] {
            check(n, op, 4.0);
        }
    }
}

#[test]
fn soft_clamp_awkward_sizes_and_saturation() {
    // Scale 200 puts most inputs deep in the saturated range, where a naive tanh overflows to NaN.
    for n in [1, 5, 259, 1001, 4096] {
        check(n, UnaryOp::SoftClamp(3.0), 6.0);
        check(n, UnaryOp::SoftClamp(0.7), 200.0);
    }
    let ctx = ctx();
    let x = [-1e30f32, -90.0, -1e-8, 0.0, 1e-8, 90.0, 1e30];
    let xt = GpuTensor::from_slice(ctx, &[x.len()], &x, lorafuse::DType::F32).unwrap();
    let mut rec = Recorder::new();
    let y = unary(ctx, &mut rec, &xt, UnaryOp::SoftClamp(3.0)).unwrap();
    rec.submit(ctx).unwrap();
    let got = y.to_vec(ctx).unwrap();
    assert!(got.iter().all(|v| v.is_finite() && v.abs() <= 3.0), "{got:?}");
    assert_close("soft clamp extremes", &got, &reference::unary::unary(&x, UnaryOp::SoftClamp(3.0)), TOL_F32);
}

#[test]
fn soft_clamp_rejects_bad_bound() {
    let ctx = ctx();
    let x = GpuTensor::zeros(ctx, &[4], lorafuse::DType::F32).unwrap();
    let mut rec = Recorder::new();
    for c in [0.0, -1.0, f32::NAN] {
        let e = unary(ctx, &mut rec, &x, UnaryOp::SoftClamp(c)).err().expect("a bad bound must fail");
        assert!(e.to_string().contains("soft clamp"), "{e}");
    }
}

#[test]
fn unary_more_than_65535_workgroups() {
    // 256 threads per workgroup: 17M elements need 66k workgroups, so the grid folds into 2D.
    check(65536 * 256 + 77, UnaryOp::Silu, 3.0);
}

#[test]
fn unary_tensor_larger_than_one_binding() {
    let ctx = ctx();
    let n = (ctx.caps.max_binding / 4) as usize + 4099;
    // f32 only: the point is the split, and this is already ≥128 MiB on lavapipe.
    let x: Vec<f32> = (0..n).map(|i| ((i % 1013) as f32 - 506.0) / 100.0).collect();
    let xt = GpuTensor::from_slice(ctx, &[n], &x, lorafuse::DType::F32).unwrap();
    assert!(!xt.fits_binding(ctx));
    let mut rec = Recorder::new();
    let y = unary(ctx, &mut rec, &xt, UnaryOp::Scale(0.5)).unwrap();
    rec.submit(ctx).unwrap();
    let got = y.to_vec(ctx).unwrap();
    let want = reference::unary::unary(&x, UnaryOp::Scale(0.5));
    assert_close("unary split", &got, &want, TOL_F32);
}

#[test]
fn unary_vec4_and_unaligned_windows() {
    // Views `off` elements into their buffer: shifts 0 and 4 (with n % 4 == 0) take the vec4
    // entry point on CPU adapters, shift 3 or n % 4 != 0 the scalar one.
    let ctx = ctx();
    let mut r = rng("unary_vec4");
    for dt in dtypes() {
        for (n, off) in [(4096, 0), (4096, 4), (4096, 3), (4098, 4)] {
            let x = rand_vec(&mut r, n + off, 4.0, dt);
            let xt = GpuTensor::from_slice(ctx, &[n + off], &x, dt).unwrap().view(off, &[n]).unwrap();
            let mut rec = Recorder::new();
            let y = unary(ctx, &mut rec, &xt, UnaryOp::Gelu).unwrap();
            rec.submit(ctx).unwrap();
            let got = y.to_vec(ctx).unwrap();
            let want = reference::unary::unary(&x[off..], UnaryOp::Gelu);
            assert_close(&format!("unary Gelu n={n} off={off} {dt:?}"), &got, &want, tol(dt));
        }
    }
}

#[test]
fn unary_rejects_mismatched_output() {
    let ctx = ctx();
    let x = GpuTensor::zeros(ctx, &[10], lorafuse::DType::F32).unwrap();
    let y = GpuTensor::zeros(ctx, &[11], lorafuse::DType::F32).unwrap();
    let mut rec = Recorder::new();
    let e = lorafuse::kernels::unary::unary_into(ctx, &mut rec, &x, &y, UnaryOp::Silu).unwrap_err();
    assert!(e.to_string().contains("unary"), "{e}");
}
