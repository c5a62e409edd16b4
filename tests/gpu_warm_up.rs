//! `Recorder::warm_up`: compiling a recording's pipeline variants ahead (a zero-sized dispatch of
//! each, split with a second device on CPU adapters) writes nothing, leaves the replay's results
//! unchanged, runs each variant once per context, and on a CPU adapter with two or more cores
//! has the second device compile some of them.

mod common;

use common::*;
use lorafuse::gpu::WarmUp;
use lorafuse::kernels::binary::add;
use lorafuse::kernels::conv2d::{conv2d, Conv2dParams};
use lorafuse::kernels::matmul::linear;
use lorafuse::kernels::unary::{unary, UnaryOp};
use lorafuse::{Context, ContextOptions, DType, GpuTensor, Recorder};

/// A small graph over several kernels and variants: linear → silu → conv 3x3 → conv 3x3 stride 2
/// → + itself. Returns the recording and its output.
fn record(ctx: &Context, x: &[f32], w: &[f32], k1: &[f32], k2: &[f32]) -> (Recorder, GpuTensor) {
    let dt = DType::F32;
    let (c, h) = (12, 9);
    let xt = GpuTensor::from_slice(ctx, &[c * h * h / 12, 12], x, dt).unwrap();
    let wt = GpuTensor::from_slice(ctx, &[12, 12], w, dt).unwrap();
    let k1t = GpuTensor::from_slice(ctx, &[16, c, 3, 3], k1, dt).unwrap();
    let k2t = GpuTensor::from_slice(ctx, &[8, 16, 3, 3], k2, dt).unwrap();
    let mut rec = Recorder::new();
    let y = linear(ctx, &mut rec, &xt, &wt, None).unwrap();
    let y = unary(ctx, &mut rec, &y, UnaryOp::Silu).unwrap().reshape(&[1, c, h, h]).unwrap();
    let y = conv2d(ctx, &mut rec, &y, &k1t, None, Conv2dParams::same(3, 1)).unwrap();
    let y = conv2d(ctx, &mut rec, &y, &k2t, None, Conv2dParams::same(3, 2)).unwrap();
    let y = add(ctx, &mut rec, &y, &y).unwrap();
    (rec, y)
}

#[test]
fn warm_up_compiles_without_writing_and_replays_match() {
    let mut r = rng("warm_up_compiles_without_writing_and_replays_match");
    let x = rand_vec(&mut r, 12 * 81, 1.0, DType::F32);
    let w = rand_vec(&mut r, 144, 0.5, DType::F32);
    let k1 = rand_vec(&mut r, 16 * 12 * 9, 0.3, DType::F32);
    let k2 = rand_vec(&mut r, 8 * 16 * 9, 0.3, DType::F32);

    // The same graph, run on a context that never warms up.
    let plain = ctx();
    let (mut rec, y) = record(plain, &x, &w, &k1, &k2);
    rec.submit(plain).unwrap();
    let want = y.to_vec(plain).unwrap();
    assert!(want.iter().all(|v| v.is_finite()));

    let warm = Context::new(&ContextOptions::default()).unwrap();
    warm.set_poison(true);
    let (rec, y) = record(&warm, &x, &w, &k1, &k2);
    let mut variants: Vec<&str> = rec.dispatches.iter().map(|d| &*d.variant).collect();
    variants.sort();
    variants.dedup();
    let mut reported = Vec::new();
    let done = rec.warm_up(&warm, |d, t| reported.push((d, t))).unwrap();
    assert_eq!(done.variants, variants.len(), "one first dispatch per variant: {variants:?}");
    assert_eq!(reported.last(), Some(&(variants.len(), variants.len())));
    assert!(done.ahead <= done.variants);
    let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
    if warm.caps.is_cpu() && cores >= 2 {
        assert!(done.ahead >= 1, "no variant was compiled on the second device: {done:?}");
    } else {
        assert_eq!(done.ahead, 0);
    }
    // Zero-sized dispatches: the poisoned output is still unwritten.
    let untouched = y.to_vec(&warm).unwrap();
    assert!(untouched.iter().all(|v| v.is_nan()), "warm_up wrote to an output");

    // Nothing left to compile for this recording or a new one of the same variants.
    assert_eq!(rec.warm_up(&warm, |_, _| ()).unwrap(), WarmUp { variants: 0, ahead: 0 });
    let (mut again, y2) = record(&warm, &x, &w, &k1, &k2);
    assert_eq!(again.warm_up(&warm, |_, _| ()).unwrap().variants, 0);

    rec.replay(&warm).unwrap();
    assert_eq!(y.to_vec(&warm).unwrap(), want, "a warmed replay differs from the plain run");
    again.submit(&warm).unwrap();
    assert_eq!(y2.to_vec(&warm).unwrap(), want);
}
