//! fma_peak (the benchmark's peak probe) computes what its reference says.

mod common;
use common::*;
use lorafuse::kernels::fma_peak::fma_chains;
use lorafuse::{reference, DType, GpuTensor, Recorder};

#[test]
fn fma_peak_matches_reference() {
    let ctx = ctx();
    let mut r = rng("fma_peak");
    for (n, iters) in [(1usize, 1u32), (257, 37), (1000, 300)] {
        // Positive seeds: the 32 chains of one seed are summed, and seeds near -1.5 make that sum
        // cancel to ~0, where a relative error says nothing about the kernel.
        let seeds: Vec<f32> = rand_vec(&mut r, n, 1.0, DType::F32).iter().map(|x| x + 2.0).collect();
        let st = GpuTensor::from_slice(ctx, &[n], &seeds, DType::F32).unwrap();
        let mut rec = Recorder::new();
        let out = fma_chains(ctx, &mut rec, &st, iters, 0.98, 0.01).unwrap();
        rec.submit(ctx).unwrap();
        let want = reference::fma_peak::fma_chains(&seeds, iters, 0.98, 0.01);
        assert_close(&format!("fma_peak n={n} iters={iters}"), &out.to_vec(ctx).unwrap(), &want, TOL_F32);
    }
}

#[test]
fn fma_peak_rejects_unbounded_chain() {
    let ctx = ctx();
    let st = GpuTensor::zeros(ctx, &[4], DType::F32).unwrap();
    let mut rec = Recorder::new();
    assert!(fma_chains(ctx, &mut rec, &st, 1, 1.5, 0.0).is_err());
}
