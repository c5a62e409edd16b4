//! lora_linear (shaders/matmul.wgsl with its second K segment, after a shrink GEMM) vs
//! reference::lora_linear, which sums the adapters one by one in f64.

mod common;
use common::*;
use lorafuse::kernels::lora_linear::{lora_linear, LoraAdapter, LoraStack};
use lorafuse::kernels::matmul::{default_kernel, linear};
use lorafuse::{reference, DType, Error, GpuTensor, HostTensor, Recorder};
use rand::rngs::StdRng;

const RANKS: [usize; 4] = [1, 4, 7, 32];
const SCALES: [f32; 5] = [-0.75, 1.5, 2.25, -1.25, 0.5];

/// `count` adapters for a `[n, k]` layer, ranks and scales cycling through RANKS and SCALES, values
/// already rounded to `dt`.
fn adapters(r: &mut StdRng, count: usize, k: usize, n: usize, dt: DType) -> Vec<LoraAdapter> {
    (0..count)
        .map(|i| {
            let rank = RANKS[i % RANKS.len()];
            LoraAdapter {
                down: HostTensor::new(&[rank, k], rand_vec(r, rank * k, 1.0, dt)).unwrap(),
                up: HostTensor::new(&[n, rank], rand_vec(r, n * rank, 1.0, dt)).unwrap(),
                scale: SCALES[i % SCALES.len()],
            }
        })
        .collect()
}

fn check(lead: &[usize], k: usize, n: usize, count: usize, with_bias: bool) {
    let ctx = ctx();
    let mut r = rng("lora_linear");
    let m: usize = lead.iter().product();
    for dt in dtypes() {
        let x = rand_vec(&mut r, m * k, 1.0, dt);
        let w = rand_vec(&mut r, n * k, 1.0, dt);
        let b = rand_vec(&mut r, n, 1.0, dt);
        let ads = adapters(&mut r, count, k, n, dt);
        let stack = LoraStack::new(ctx, &ads, dt).unwrap();
        assert_eq!(stack.len(), count);
        assert_eq!(stack.total_rank(), ads.iter().map(|a| a.down.shape[0]).sum::<usize>());
        let mut xs = lead.to_vec();
        xs.push(k);
        let xt = GpuTensor::from_slice(ctx, &xs, &x, dt).unwrap();
        let wt = GpuTensor::from_slice(ctx, &[n, k], &w, dt).unwrap();
        let bt = GpuTensor::from_slice(ctx, &[n], &b, dt).unwrap();
        let mut rec = Recorder::new();
        let y = lora_linear(ctx, &mut rec, &xt, &wt, with_bias.then_some(&bt), &stack).unwrap();
        assert_eq!(rec.len(), 2, "shrink + one fused GEMM, whatever the adapter count");
        rec.submit(ctx).unwrap();
        let mut ys = lead.to_vec();
        ys.push(n);
        assert_eq!(y.shape, ys);
        let want = reference::lora_linear::lora_linear(&x, &w, with_bias.then_some(&b[..]), &ads, m, n, k);
        let what =
            format!("lora_linear x{xs:?} w[{n},{k}] adapters={count} R={} bias={with_bias} {dt:?}", stack.total_rank());
        assert_close(&what, &y.to_vec(ctx).unwrap(), &want, tol(dt));
    }
}

#[test]
fn lora_linear_1_3_16_adapters() {
    for count in [1, 3, 16] {
        // K = 33 takes the portable kernel everywhere; K = 64 the vec4 kernel where it exists.
        check(&[1, 77], 33, 65, count, count != 3);
        check(&[3, 26], 64, 40, count, count == 3);
    }
    // Large enough for the 64-row subgroup tile on CPU adapters (a partial row block).
    check(&[2, 70], 260, 300, 3, true);
}

#[test]
fn lora_linear_without_adapters_is_linear() {
    let ctx = ctx();
    let mut r = rng("lora_empty");
    let (m, k, n) = (19, 24, 30);
    let x = rand_vec(&mut r, m * k, 1.0, DType::F32);
    let w = rand_vec(&mut r, n * k, 1.0, DType::F32);
    let xt = GpuTensor::from_slice(ctx, &[m, k], &x, DType::F32).unwrap();
    let wt = GpuTensor::from_slice(ctx, &[n, k], &w, DType::F32).unwrap();
    let stack = LoraStack::new(ctx, &[], DType::F32).unwrap();
    assert_eq!(stack.total_rank(), 0);
    let mut rec = Recorder::new();
    let y = lora_linear(ctx, &mut rec, &xt, &wt, None, &stack).unwrap();
    let y0 = linear(ctx, &mut rec, &xt, &wt, None).unwrap();
    rec.submit(ctx).unwrap();
    assert_eq!(y.to_vec(ctx).unwrap(), y0.to_vec(ctx).unwrap());
}

#[test]
fn lora_linear_rejects_17_adapters() {
    let ctx = ctx();
    let mut r = rng("lora_17");
    let ads = adapters(&mut r, 17, 8, 8, DType::F32);
    match LoraStack::new(ctx, &ads, DType::F32) {
        Err(e @ Error::Limit { .. }) => assert!(e.to_string().contains("17"), "{e}"),
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("17 adapters accepted"),
    }
}

#[test]
fn lora_linear_rejects_bad_shapes() {
    let ctx = ctx();
    let mut r = rng("lora_bad");
    let good = adapters(&mut r, 2, 8, 6, DType::F32);
    let mut wrong_k = good.clone();
    wrong_k[1].down = HostTensor::zeros(&[4, 9]);
    let mut wrong_r = good.clone();
    wrong_r[0].up = HostTensor::zeros(&[6, 3]);
    let mut nan_scale = good.clone();
    nan_scale[0].scale = f32::NAN;
    let mut short_data = good.clone();
    short_data[1].up.data.pop();
    for (what, ads) in [("K", wrong_k), ("rank", wrong_r), ("data length", short_data)] {
        let e = LoraStack::new(ctx, &ads, DType::F32).err().expect(what);
        assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("lora_stack"), "{what}: {e}");
    }
    assert!(LoraStack::new(ctx, &nan_scale, DType::F32).is_err());
    let stack = LoraStack::new(ctx, &good, DType::F32).unwrap();
    let t = |s: &[usize], dt: DType| GpuTensor::zeros(ctx, s, dt).unwrap();
    let mut rec = Recorder::new();
    // The stack is for K=8, N=6.
    let e =
        lora_linear(ctx, &mut rec, &t(&[4, 9], DType::F32), &t(&[6, 9], DType::F32), None, &stack).err().expect("K");
    assert!(e.to_string().contains("lora_linear"), "{e}");
    let e =
        lora_linear(ctx, &mut rec, &t(&[4, 8], DType::F32), &t(&[5, 8], DType::F32), None, &stack).err().expect("N");
    assert!(e.to_string().contains("lora_linear"), "{e}");
    let e =
        lora_linear(ctx, &mut rec, &t(&[4, 8], DType::F32), &t(&[6, 7], DType::F32), None, &stack).err().expect("x/w");
    assert!(e.to_string().contains("lora_linear"), "{e}");
    if ctx.caps.shader_f16 {
        let e = lora_linear(ctx, &mut rec, &t(&[4, 8], DType::F16), &t(&[6, 8], DType::F16), None, &stack)
            .err()
            .expect("dtype");
        assert!(matches!(e, Error::DType { .. }), "{e}");
    }
    assert!(rec.is_empty());
}

#[test]
fn lora_linear_weight_larger_than_one_binding() {
    // w [N, 16] f32 just over one binding: both passes and both K segments split over N.
    let ctx = ctx();
    let k = 16;
    let n = (ctx.caps.max_binding / (4 * k as u64)) as usize + 77;
    let m = 3;
    let mut r = rng("lora_big_w");
    let x = rand_vec(&mut r, m * k, 1.0, DType::F32);
    let w: Vec<f32> = (0..n * k).map(|i| ((i * 7919 % 1013) as f32 - 506.0) / 512.0).collect();
    let ads = vec![
        LoraAdapter {
            down: HostTensor::new(&[3, k], rand_vec(&mut r, 3 * k, 1.0, DType::F32)).unwrap(),
            up: HostTensor::new(&[n, 3], (0..n * 3).map(|i| (i % 23) as f32 / 11.0 - 1.0).collect()).unwrap(),
            scale: -1.5,
        },
        LoraAdapter {
            down: HostTensor::new(&[5, k], rand_vec(&mut r, 5 * k, 1.0, DType::F32)).unwrap(),
            up: HostTensor::new(&[n, 5], (0..n * 5).map(|i| (i % 29) as f32 / 14.0 - 1.0).collect()).unwrap(),
            scale: 0.8,
        },
    ];
    let stack = LoraStack::new(ctx, &ads, DType::F32).unwrap();
    let xt = GpuTensor::from_slice(ctx, &[m, k], &x, DType::F32).unwrap();
    let wt = GpuTensor::from_slice(ctx, &[n, k], &w, DType::F32).unwrap();
    assert!(!wt.fits_binding(ctx));
    let mut rec = Recorder::new();
    let y = lora_linear(ctx, &mut rec, &xt, &wt, None, &stack).unwrap();
    assert!(rec.len() > 2);
    rec.submit(ctx).unwrap();
    let want = reference::lora_linear::lora_linear(&x, &w, None, &ads, m, n, k);
    assert_close("lora_linear split over N", &y.to_vec(ctx).unwrap(), &want, TOL_F32);
}

#[test]
fn lora_linear_more_than_65535_workgroups() {
    // M = 65536·tile_m + 77 rows with skinny K, N and rank: both passes need a folded grid.
    let ctx = ctx();
    let (tm, _) = default_kernel(ctx).tile();
    let (m, k, n) = (65536 * tm + 77, 4, 5);
    let mut r = rng("lora_fold");
    let x = rand_vec(&mut r, m * k, 1.0, DType::F32);
    let w = rand_vec(&mut r, n * k, 1.0, DType::F32);
    let b = rand_vec(&mut r, n, 1.0, DType::F32);
    let ads = adapters(&mut r, 2, k, n, DType::F32);
    let stack = LoraStack::new(ctx, &ads, DType::F32).unwrap();
    let xt = GpuTensor::from_slice(ctx, &[m, k], &x, DType::F32).unwrap();
    let wt = GpuTensor::from_slice(ctx, &[n, k], &w, DType::F32).unwrap();
    let bt = GpuTensor::from_slice(ctx, &[n], &b, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let y = lora_linear(ctx, &mut rec, &xt, &wt, Some(&bt), &stack).unwrap();
    assert!(rec.dispatches.iter().all(|d| d.groups[1] > 1), "grids not folded");
    rec.submit(ctx).unwrap();
    let want = reference::lora_linear::lora_linear(&x, &w, Some(&b), &ads, m, n, k);
    assert_close(&format!("lora_linear fold M={m}"), &y.to_vec(ctx).unwrap(), &want, TOL_F32);
}
