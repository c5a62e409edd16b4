//! Layout kernels: upsample (nearest, PyTorch index rule) vs reference::upsample, and concat vs
//! reference::concat.

mod common;
use common::*;
use lorafuse::kernels::concat::{concat, concat_channels, concat_into};
use lorafuse::kernels::upsample::{upsample_nearest, upsample_nearest_into};
use lorafuse::{reference, DType, GpuTensor, Recorder};

fn upsample_case(xs: [usize; 4], oh: usize, ow: usize, dts: &[DType]) {
    let ctx = ctx();
    let mut r = rng("upsample");
    for &dt in dts {
        let x = rand_vec(&mut r, xs.iter().product(), 2.0, dt);
        let xt = GpuTensor::from_slice(ctx, &xs, &x, dt).unwrap();
        let mut rec = Recorder::new();
        let y = upsample_nearest(ctx, &mut rec, &xt, oh, ow).unwrap();
        rec.submit(ctx).unwrap();
        assert_eq!(y.shape, [xs[0], xs[1], oh, ow]);
        let got = y.to_vec(ctx).unwrap();
        let want = reference::upsample::upsample_nearest(&x, xs, oh, ow);
        // A copy: exact.
        assert_close(&format!("upsample {xs:?} → {oh}×{ow} {dt:?}"), &got, &want, 0.0);
    }
}

#[test]
fn upsample_awkward_sizes() {
    let all = dtypes();
    upsample_case([1, 3, 5, 7], 10, 14, &all); // ×2
    upsample_case([3, 2, 33, 33], 65, 65, &all); // explicit odd size (torch's float rule)
    upsample_case([1, 4, 65, 33], 130, 66, &all);
    upsample_case([2, 5, 9, 11], 9, 11, &all); // identity
    upsample_case([1, 2, 7, 13], 20, 29, &all); // ×2.86 / ×2.23
    upsample_case([1, 3, 17, 19], 6, 5, &all); // downscale
    upsample_case([3, 1, 1, 1], 4, 3, &all);
}

#[test]
fn upsample_index_rule_matches_torch() {
    // torch.nn.functional.interpolate(torch.arange(n).view(1, 1, 1, n).float(), size=(1, m),
    // mode="nearest") gives these source indices (float32 scale n/m, floored).
    let idx = |n, m| (0..m).map(|d| reference::upsample::torch_nearest_idx(d, n, m)).collect::<Vec<_>>();
    assert_eq!(idx(33, 65)[..12], [0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 5]);
    assert_eq!(idx(33, 65)[60..], [30, 30, 31, 31, 32]);
    assert_eq!(idx(3, 7), [0, 0, 0, 1, 1, 2, 2]);
    assert_eq!(idx(5, 3), [0, 1, 3]);
    assert_eq!(idx(4, 8), [0, 0, 1, 1, 2, 2, 3, 3]);
}

#[test]
fn upsample_more_than_65535_workgroups() {
    // 256 invocations per workgroup: 4 × 2050 × 2050 outputs need 65670 workgroups, so the grid
    // folds into 2-D.
    upsample_case([4, 1, 1025, 1025], 2050, 2050, &[DType::F32]);
}

#[test]
fn upsample_larger_than_one_binding() {
    let lim = (ctx().caps.max_binding / 4) as usize;
    // Batch of planes whose output exceeds a binding (split into plane blocks).
    let side = ((lim / 12) as f64).sqrt() as usize + 2;
    upsample_case([3, 1, side, side], 2 * side, 2 * side, &[DType::F32]);
    // One output plane larger than a binding (split into row blocks), odd size.
    let side = (lim as f64).sqrt() as usize / 2 + 3;
    upsample_case([1, 1, side, side], 2 * side + 1, 2 * side + 1, &[DType::F32]);
}

#[test]
fn upsample_rejects_bad_shapes() {
    let ctx = ctx();
    let mut rec = Recorder::new();
    let x = GpuTensor::zeros(ctx, &[1, 2, 4, 4], DType::F32).unwrap();
    for e in [
        upsample_nearest(ctx, &mut rec, &GpuTensor::zeros(ctx, &[2, 4, 4], DType::F32).unwrap(), 8, 8).err(),
        upsample_nearest(ctx, &mut rec, &x, 0, 8).err(),
        upsample_nearest_into(ctx, &mut rec, &x, &GpuTensor::zeros(ctx, &[1, 3, 8, 8], DType::F32).unwrap()).err(),
        upsample_nearest_into(ctx, &mut rec, &x, &x).err(),
    ] {
        let e = e.expect("expected an error");
        assert!(e.to_string().contains("upsample"), "{e}");
    }
    assert!(rec.is_empty());
}

fn concat_case(shapes: &[Vec<usize>], dim: usize, dts: &[DType]) {
    let ctx = ctx();
    let mut r = rng("concat");
    for &dt in dts {
        let data: Vec<Vec<f32>> = shapes.iter().map(|s| rand_vec(&mut r, s.iter().product(), 3.0, dt)).collect();
        let ts: Vec<GpuTensor> =
            shapes.iter().zip(&data).map(|(s, d)| GpuTensor::from_slice(ctx, s, d, dt).unwrap()).collect();
        let refs: Vec<&GpuTensor> = ts.iter().collect();
        let mut rec = Recorder::new();
        let y = if refs.len() == 2 && dim == 1 && shapes[0].len() == 4 {
            concat_channels(ctx, &mut rec, refs[0], refs[1]).unwrap()
        } else {
            concat(ctx, &mut rec, &refs, dim).unwrap()
        };
        rec.submit(ctx).unwrap();
        let got = y.to_vec(ctx).unwrap();
        let parts: Vec<(&[f32], &[usize])> = data.iter().zip(shapes).map(|(d, s)| (&d[..], &s[..])).collect();
        let want = reference::concat::concat(&parts, dim);
        assert_close(&format!("concat {shapes:?} dim {dim} {dt:?}"), &got, &want, 0.0);
    }
}

#[test]
fn concat_awkward_shapes() {
    let all = dtypes();
    concat_case(&[vec![1, 3, 5, 7], vec![1, 5, 5, 7]], 1, &all);
    concat_case(&[vec![3, 7, 9, 11], vec![3, 2, 9, 11]], 1, &all);
    concat_case(&[vec![3, 1, 2, 3], vec![3, 4, 2, 3], vec![3, 2, 2, 3]], 1, &all);
    concat_case(&[vec![2, 3, 5], vec![4, 3, 5]], 0, &all);
    concat_case(&[vec![2, 3, 5], vec![2, 3, 1]], 2, &all);
    concat_case(&[vec![3, 0, 4], vec![3, 2, 4]], 1, &all);
}

#[test]
fn concat_more_than_65535_workgroups() {
    // 17M elements in the second part: more than 65535 workgroups of 256.
    concat_case(&[vec![1, 3, 128, 128], vec![1, 1040, 128, 128]], 1, &[DType::F32]);
}

#[test]
fn concat_larger_than_one_binding() {
    let lim = (ctx().caps.max_binding / 4) as usize;
    // Batch 3: the output exceeds a binding, parts in row (image) blocks.
    let hw = lim / 8;
    concat_case(&[vec![3, 1, hw / 512, 512], vec![3, 2, hw / 512, 512]], 1, &[DType::F32]);
    // Batch 1: one output row (the whole image) wider than a binding, the first part too: column
    // blocks.
    let h = lim / 2000 + 5;
    concat_case(&[vec![1, 2, h, 1000], vec![1, 1, h, 1000]], 1, &[DType::F32]);
}

#[test]
fn concat_rejects_bad_shapes() {
    let ctx = ctx();
    let mut rec = Recorder::new();
    let t = |s: &[usize]| GpuTensor::zeros(ctx, s, DType::F32).unwrap();
    let (a, b) = (t(&[1, 2, 4, 4]), t(&[1, 3, 4, 5]));
    for e in [
        concat_channels(ctx, &mut rec, &a, &b).err(),
        concat_channels(ctx, &mut rec, &t(&[2, 4, 4]), &t(&[2, 4, 4])).err(),
        concat(ctx, &mut rec, &[], 0).err(),
        concat(ctx, &mut rec, &[&a, &a], 4).err(),
        concat_into(ctx, &mut rec, &[&a, &a], 1, &t(&[1, 4, 4, 5])).err(),
        concat_into(ctx, &mut rec, &[&a], 1, &a).err(),
    ] {
        let e = e.expect("expected an error");
        assert!(e.to_string().contains("concat"), "{e}");
    }
    if ctx.caps.shader_f16 {
        let h = GpuTensor::zeros(ctx, &[1, 2, 4, 4], DType::F16).unwrap();
        assert!(concat_channels(ctx, &mut rec, &a, &h).is_err());
    }
    assert!(rec.is_empty());
}
