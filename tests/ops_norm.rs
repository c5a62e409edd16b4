//! Normalizations and softmax vs their f64 references: group_norm (split reduction, fused SiLU),
//! layer_norm and softmax, at awkward shapes, with large common offsets, more than 65535
//! workgroups, tensors larger than one storage binding, and bad shapes.

mod common;
use common::*;
use lorafuse::kernels::group_norm::{group_norm, group_norm_tuned};
use lorafuse::kernels::group_norm_sg::group_norm_sg;
use lorafuse::kernels::layer_norm::layer_norm;
use lorafuse::kernels::softmax::softmax;
use lorafuse::{reference, DType, Error, GpuTensor, Recorder};
use rand::rngs::StdRng;

/// `n` values `offset + U(-scale, scale)`, rounded to `dt`.
fn offset_vec(r: &mut StdRng, n: usize, offset: f32, scale: f32, dt: DType) -> Vec<f32> {
    rand_vec(r, n, scale, dt).into_iter().map(|v| dt.round(offset + v)).collect()
}

/// Upload `data` as a view starting `off` elements into a larger tensor, so kernels see windows
/// with a nonzero shift (and, for f16 with odd `off`, a start inside a 4-byte word). Big tensors
/// use off = 0 (they must stay just over one binding).
fn upload_at(shape: &[usize], data: &[f32], dt: DType, off: usize) -> GpuTensor {
    let mut v = vec![0.0; off];
    v.extend_from_slice(data);
    let t = GpuTensor::from_slice(ctx(), &[v.len()], &v, dt).unwrap();
    t.view(off, shape).unwrap()
}

/// gamma and beta as views into one shared tensor [1 + 2C] (beta right after gamma).
fn upload_affine(g: &[f32], b: &[f32], dt: DType) -> (GpuTensor, GpuTensor) {
    let c = g.len();
    let mut v = vec![0.0];
    v.extend_from_slice(g);
    v.extend_from_slice(b);
    let t = GpuTensor::from_slice(ctx(), &[v.len()], &v, dt).unwrap();
    (t.view(1, &[c]).unwrap(), t.view(1 + c, &[c]).unwrap())
}

/// Affine parameters: gamma around 1, beta around 0.
fn affine(r: &mut StdRng, c: usize, dt: DType) -> (Vec<f32>, Vec<f32>) {
    let g = rand_vec(r, c, 0.5, dt).into_iter().map(|v| dt.round(1.0 + v)).collect();
    (g, rand_vec(r, c, 0.5, dt))
}

/// The error of a call that must fail (GpuTensor has no Debug, so no `unwrap_err`).
fn err(r: lorafuse::Result<GpuTensor>) -> Error {
    match r {
        Ok(t) => panic!("expected an error, got a tensor {:?}", t.shape),
        Err(e) => e,
    }
}

// ---------------------------------------------------------------------------------------------
// group_norm

/// Grid targets to test: the device default (None; lavapipe picks long CPU chunks) and the
/// discrete-GPU chunking (2048 workgroups, short chunks, many partials per group).
const TARGETS: [Option<usize>; 2] = [None, Some(2048)];

#[allow(clippy::too_many_arguments)]
fn gn_run(
    x: &[f32],
    shape: &[usize],
    groups: usize,
    silu: bool,
    dt: DType,
    target: Option<usize>,
    r: &mut StdRng,
) -> (Vec<f32>, Vec<f32>) {
    let ctx = ctx();
    let c = shape[1];
    let (g, b) = affine(r, c, dt);
    let eps = 1e-5;
    let n: usize = shape.iter().product();
    let off = if n > 1 << 24 { 0 } else { 3 };
    let xt = upload_at(shape, x, dt, off);
    let (gt, bt) = upload_affine(&g, &b, dt);
    let mut rec = Recorder::new();
    let y = match target {
        None => group_norm(ctx, &mut rec, &xt, groups, &gt, &bt, eps, silu),
        Some(t) => group_norm_tuned(ctx, &mut rec, &xt, groups, &gt, &bt, eps, silu, t),
    }
    .unwrap();
    assert_eq!(y.shape, shape);
    rec.submit(ctx).unwrap();
    let got = y.to_vec(ctx).unwrap();
    let want = reference::group_norm::group_norm(x, shape, groups, &g, &b, eps, silu).unwrap();
    (got, want)
}

fn gn_check(shape: &[usize], groups: usize, silu: bool, offset: [f32; 2], scale: f32) {
    let mut r = rng("group_norm");
    for dt in dtypes() {
        for target in TARGETS {
            let off = if dt == DType::F32 { offset[0] } else { offset[1] };
            let n: usize = shape.iter().product();
            let x = offset_vec(&mut r, n, off, scale, dt);
            let (got, want) = gn_run(&x, shape, groups, silu, dt, target, &mut r);
            let what =
                format!("group_norm {shape:?} groups={groups} silu={silu} offset={off} {dt:?} target={target:?}");
            assert_close(&what, &got, &want, tol(dt));
        }
    }
}

#[test]
fn group_norm_awkward_shapes() {
    for silu in [false, true] {
        gn_check(&[1, 6, 1, 1], 3, silu, [0.0, 0.0], 2.0);
        gn_check(&[3, 6, 13, 17], 3, silu, [0.0, 0.0], 2.0);
        gn_check(&[3, 96, 7, 9], 32, silu, [0.0, 0.0], 3.0);
        gn_check(&[1, 96, 13, 17], 32, silu, [0.0, 0.0], 3.0);
        gn_check(&[2, 64, 5], 32, silu, [0.0, 0.0], 1.0); // [N, C, L]
        gn_check(&[3, 32], 8, silu, [0.0, 0.0], 1.0); // [N, C], spatial 1
        gn_check(&[1, 4, 3, 3], 1, silu, [0.0, 0.0], 1.0);
    }
}

#[test]
fn group_norm_many_chunks_per_group() {
    // 131072 values in 4 groups: 16 (CPU target) or 32 (GPU target) partials per group.
    gn_check(&[1, 32, 64, 64], 4, true, [0.0, 0.0], 2.0);
    // One group of 2.4M values: 300 or 1200 partials, more than one per thread in the merge.
    gn_check(&[1, 4, 1000, 613], 1, false, [0.0, 0.0], 2.0);
}

#[test]
fn group_norm_large_offset_is_stable() {
    // x = offset + noise: E[x²] − E[x]² would lose everything; f16 uses 100 (ulp 1/16 there).
    gn_check(&[2, 64, 32, 32], 32, false, [1000.0, 100.0], 1.0);
    gn_check(&[1, 32, 64, 64], 4, true, [1000.0, 100.0], 1.0);
    gn_check(&[3, 6, 7, 9], 3, false, [-3000.0, -200.0], 1.0);
}

#[test]
fn group_norm_more_than_65535_workgroups() {
    // 2200 × 32 groups = 70400 (n, group) segments of 2 values: one workgroup each, so both
    // passes fold their grid over x and y.
    gn_check(&[2200, 64], 32, true, [0.0, 0.0], 1.0);
}

#[test]
fn group_norm_tensor_larger_than_one_binding() {
    // f32 only (≥128 MiB on lavapipe). groups = 1: the single group is itself larger than a
    // binding, so both passes split it into windows and the partials of one group come from
    // several dispatches.
    let ctx = ctx();
    let mut r = rng("group_norm_big");
    let l = (ctx.caps.max_binding / 4 / 32) as usize + 33;
    let shape = [1, 32, l];
    let x = offset_vec(&mut r, 32 * l, 5.0, 1.0, DType::F32);
    let (got, want) = gn_run(&x, &shape, 1, true, DType::F32, None, &mut r);
    assert_close("group_norm split", &got, &want, TOL_F32);
    // 66 chunks of 8192 per group and 4095 chunks per window: windows start inside a group.
    let shape = [2, 32, l / 2 + 8200];
    let n: usize = shape.iter().product();
    let x = offset_vec(&mut r, n, -2.0, 1.0, DType::F32);
    let (got, want) = gn_run(&x, &shape, 32, false, DType::F32, Some(2048), &mut r);
    assert_close("group_norm split 32 groups", &got, &want, TOL_F32);
}

#[test]
fn group_norm_rejects_bad_shapes() {
    let ctx = ctx();
    let z = |s: &[usize], dt| GpuTensor::zeros(ctx, s, dt).unwrap();
    let mut rec = Recorder::new();
    let x = z(&[2, 6, 4, 4], DType::F32);
    let g6 = z(&[6], DType::F32);
    let g5 = z(&[5], DType::F32);
    let e = err(group_norm(ctx, &mut rec, &x, 4, &g6, &g6, 1e-5, false));
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("group_norm"), "{e}");
    let e = err(group_norm(ctx, &mut rec, &x, 0, &g6, &g6, 1e-5, false));
    assert!(e.to_string().contains("group_norm"), "{e}");
    let e = err(group_norm(ctx, &mut rec, &x, 3, &g5, &g6, 1e-5, false));
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("gamma"), "{e}");
    let e = err(group_norm(ctx, &mut rec, &x, 3, &g6, &g5, 1e-5, true));
    assert!(e.to_string().contains("beta"), "{e}");
    let e = err(group_norm(ctx, &mut rec, &z(&[6], DType::F32), 3, &g6, &g6, 1e-5, false));
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("group_norm"), "{e}");
    let e = err(group_norm(ctx, &mut rec, &x, 3, &g6, &g6, f32::NAN, false));
    assert!(e.to_string().contains("eps"), "{e}");
    if ctx.caps.shader_f16 {
        let h = z(&[6], DType::F16);
        let e = err(group_norm(ctx, &mut rec, &x, 3, &h, &g6, 1e-5, false));
        assert!(matches!(e, Error::DType { .. }), "{e}");
    }
    assert!(rec.is_empty());
}

#[test]
fn group_norm_timing_report() {
    // Not a performance assertion: prints GB/s (x read once + y written once) for SD's
    // [1, 320, 64, 64] / 32 groups, for the final report.
    let ctx = ctx();
    let mut r = rng("group_norm_timing");
    let shape = [1, 320, 64, 64];
    for dt in dtypes() {
        let x = rand_vec(&mut r, 320 * 64 * 64, 2.0, dt);
        let (g, b) = affine(&mut r, 320, dt);
        let xt = GpuTensor::from_slice(ctx, &shape, &x, dt).unwrap();
        let gt = GpuTensor::from_slice(ctx, &[320], &g, dt).unwrap();
        let bt = GpuTensor::from_slice(ctx, &[320], &b, dt).unwrap();
        // The device's default chunking (GPU chunking on lavapipe is covered for correctness
        // above; its time there is dominated by per-workgroup overhead).
        {
            let mut rec = Recorder::new();
            let y = group_norm(ctx, &mut rec, &xt, 32, &gt, &bt, 1e-5, true).unwrap();
            rec.replay(ctx).unwrap();
            let got = y.to_vec(ctx).unwrap();
            let want = reference::group_norm::group_norm(&x, &shape, 32, &g, &b, 1e-5, true).unwrap();
            assert_close("group_norm timing shape", &got, &want, tol(dt));
            // Best of 3 timings of 5 replays each (other work may share the CPU under lavapipe).
            let mut best: Option<f64> = None;
            for _ in 0..3 {
                if let Some(ms) = rec.time_gpu(ctx, 5).unwrap() {
                    best = Some(best.map_or(ms, |b| b.min(ms)));
                }
            }
            if let Some(ms) = best {
                let bytes = 2.0 * xt.bytes() as f64;
                eprintln!(
                    "group_norm {shape:?} groups=32 silu {dt:?} on {}: {ms:.3} ms, {:.2} GB/s",
                    ctx.caps.adapter_name,
                    bytes / ms / 1e6,
                );
            }
        }
    }
}

// ---------------------------------------------------------------------------------------------
// group_norm_sg (the subgroup kernel group_norm picks on CPU adapters)

/// Whether this adapter runs group_norm_sg (a CPU adapter with one fixed subgroup width).
fn has_sg() -> bool {
    let c = &ctx().caps;
    c.is_cpu() && c.subgroups && c.subgroup_min_size == c.subgroup_max_size
}

/// group_norm_sg of `offset + U(-scale, scale)` with chunks of at most `max_chunk`, x viewed
/// `off` elements into its buffer (a multiple of 4: window shifts 4k), vs the reference.
fn gn_sg_check(shape: &[usize], groups: usize, silu: bool, offset: [f32; 2], max_chunk: usize, off: usize) {
    if !has_sg() {
        eprintln!("group_norm_sg: skipped, adapter has no fixed-width subgroups or is not a CPU");
        return;
    }
    let ctx = ctx();
    let mut r = rng("group_norm_sg");
    let n: usize = shape.iter().product();
    let dts = if n > 1 << 24 { vec![DType::F32] } else { dtypes() };
    for dt in dts {
        let o = if dt == DType::F32 { offset[0] } else { offset[1] };
        let x = offset_vec(&mut r, n, o, 1.0, dt);
        let (g, b) = affine(&mut r, shape[1], dt);
        let xt = upload_at(shape, &x, dt, off);
        let (gt, bt) = upload_affine(&g, &b, dt);
        let mut rec = Recorder::new();
        let y = group_norm_sg(ctx, &mut rec, &xt, groups, &gt, &bt, 1e-5, silu, max_chunk).unwrap();
        let y = y.unwrap_or_else(|| panic!("group_norm_sg declined {shape:?} groups={groups}"));
        rec.submit(ctx).unwrap();
        let got = y.to_vec(ctx).unwrap();
        let want = reference::group_norm_sg::group_norm(&x, shape, groups, &g, &b, 1e-5, silu).unwrap();
        let what = format!("group_norm_sg {shape:?} groups={groups} silu={silu} offset={o} {dt:?} chunk≤{max_chunk}");
        assert_close(&what, &got, &want, tol(dt));
    }
}

#[test]
fn group_norm_sg_awkward_shapes() {
    for silu in [false, true] {
        gn_sg_check(&[2, 64, 8, 8], 32, silu, [0.0, 0.0], 8192, 0);
        // Groups of 3 channels × 84: 252 values, not a multiple of the 32-value vec4 step.
        gn_sg_check(&[3, 96, 7, 12], 32, silu, [0.0, 0.0], 8192, 4);
        gn_sg_check(&[1, 8, 4], 2, silu, [0.0, 0.0], 8192, 4);
        // Many chunks per group (max_chunk 1000 becomes 992), several partials per lane.
        gn_sg_check(&[1, 32, 64, 68], 4, silu, [0.0, 0.0], 1000, 4);
        gn_sg_check(&[1, 4, 500, 612], 1, silu, [0.0, 0.0], 4096, 0);
    }
}

#[test]
fn group_norm_sg_large_offset_is_stable() {
    gn_sg_check(&[2, 64, 32, 32], 32, false, [1000.0, 100.0], 8192, 4);
    gn_sg_check(&[1, 32, 64, 64], 4, true, [1000.0, 100.0], 2048, 0);
    gn_sg_check(&[3, 6, 7, 12], 3, false, [-3000.0, -200.0], 8192, 4);
}

#[test]
fn group_norm_sg_more_than_65535_workgroups() {
    // 70400 (n, group) segments of 8 values.
    gn_sg_check(&[2200, 64, 4], 32, true, [0.0, 0.0], 8192, 4);
}

#[test]
fn group_norm_sg_tensor_larger_than_one_binding() {
    if !has_sg() {
        return;
    }
    let l = (ctx().caps.max_binding / 4 / 32) as usize / 4 * 4 + 36;
    // One group larger than a binding; then 32 groups whose windows start inside a group.
    gn_sg_check(&[1, 32, l], 1, true, [5.0, 5.0], 8192, 0);
    gn_sg_check(&[2, 32, l / 2 / 4 * 4 + 8200], 32, false, [-2.0, -2.0], 8192, 0);
}

#[test]
fn group_norm_sg_declines_what_it_cannot_do() {
    let ctx = ctx();
    let mut rec = Recorder::new();
    let (g, b) = upload_affine(&[1.0; 6], &[0.0; 6], DType::F32);
    let x = |shape: &[usize], off: usize| upload_at(shape, &vec![1.0; shape.iter().product()], DType::F32, off);
    // Spatial size not a multiple of 4, and a window shift of 3.
    assert!(group_norm_sg(ctx, &mut rec, &x(&[1, 6, 3, 3], 0), 3, &g, &b, 1e-5, false, 8192).unwrap().is_none());
    assert!(group_norm_sg(ctx, &mut rec, &x(&[1, 6, 4, 4], 3), 3, &g, &b, 1e-5, false, 8192).unwrap().is_none());
    assert!(rec.is_empty());
}

// ---------------------------------------------------------------------------------------------
// layer_norm

fn ln_check_with(shape: &[usize], offset: [f32; 2], scale: f32, dts: &[DType]) {
    let ctx = ctx();
    let mut r = rng("layer_norm");
    let c = *shape.last().unwrap();
    let n: usize = shape.iter().product();
    for &dt in dts {
        let off = if dt == DType::F32 { offset[0] } else { offset[1] };
        let x = offset_vec(&mut r, n, off, scale, dt);
        let (g, b) = affine(&mut r, c, dt);
        let xt = upload_at(shape, &x, dt, if n > 1 << 24 { 0 } else { 1 });
        let (gt, bt) = upload_affine(&g, &b, dt);
        let mut rec = Recorder::new();
        let y = layer_norm(ctx, &mut rec, &xt, &gt, &bt, 1e-5).unwrap();
        assert_eq!(y.shape, shape);
        rec.submit(ctx).unwrap();
        let got = y.to_vec(ctx).unwrap();
        let want = reference::layer_norm::layer_norm(&x, c, &g, &b, 1e-5).unwrap();
        assert_close(&format!("layer_norm {shape:?} offset={off} {dt:?}"), &got, &want, tol(dt));
    }
}

fn ln_check(shape: &[usize], offset: [f32; 2], scale: f32) {
    ln_check_with(shape, offset, scale, &dtypes());
}

#[test]
fn layer_norm_awkward_shapes() {
    ln_check(&[5], [0.0, 0.0], 2.0);
    ln_check(&[3, 7, 5], [0.0, 0.0], 2.0);
    ln_check(&[1, 77], [0.0, 0.0], 2.0);
    ln_check(&[2, 77, 77], [0.0, 0.0], 2.0);
    ln_check(&[3, 768], [0.0, 0.0], 2.0);
    ln_check(&[2, 5, 1280], [0.0, 0.0], 2.0);
    ln_check(&[2, 2500], [0.0, 0.0], 2.0); // past the 8·256 values kept in registers
    ln_check(&[1, 3, 4], [0.0, 0.0], 2.0);
    ln_check(&[2, 1], [0.0, 0.0], 2.0);
}

#[test]
fn layer_norm_large_offset_is_stable() {
    ln_check(&[3, 768], [1000.0, 100.0], 1.0);
    ln_check(&[7, 77], [-1000.0, -100.0], 1.0);
    ln_check(&[4, 5], [1000.0, 100.0], 1.0);
}

#[test]
fn layer_norm_more_than_65535_workgroups() {
    // Rows this short share a workgroup 32 to a workgroup (8 threads each): 2.2M rows need
    // 68750 workgroups, so the grid folds over x and y; the last workgroup is partly empty.
    ln_check(&[2_200_000 - 3, 2], [0.0, 0.0], 1.0);
    // One row per workgroup (rows of 2500): a smaller grid with the full-width path.
    ln_check(&[300, 2500], [0.0, 0.0], 1.0);
}

#[test]
fn layer_norm_tensor_larger_than_one_binding() {
    // f32 only; rows are split over windows.
    let rows = (ctx().caps.max_binding / 4 / 768) as usize + 3;
    ln_check_with(&[rows, 768], [3.0, 3.0], 1.0, &[DType::F32]);
}

#[test]
fn layer_norm_rejects_bad_shapes() {
    let ctx = ctx();
    let z = |s: &[usize], dt| GpuTensor::zeros(ctx, s, dt).unwrap();
    let mut rec = Recorder::new();
    let x = z(&[3, 8], DType::F32);
    let g8 = z(&[8], DType::F32);
    let e = err(layer_norm(ctx, &mut rec, &x, &z(&[7], DType::F32), &g8, 1e-5));
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("layer_norm"), "{e}");
    let e = err(layer_norm(ctx, &mut rec, &x, &g8, &z(&[2, 4], DType::F32), 1e-5));
    assert!(e.to_string().contains("beta"), "{e}");
    let e = err(layer_norm(ctx, &mut rec, &z(&[], DType::F32), &g8, &g8, 1e-5));
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    if ctx.caps.shader_f16 {
        let e = err(layer_norm(ctx, &mut rec, &x, &z(&[8], DType::F16), &g8, 1e-5));
        assert!(matches!(e, Error::DType { .. }), "{e}");
    }
    assert!(rec.is_empty());
}

// ---------------------------------------------------------------------------------------------
// softmax

fn sm_check_with(shape: &[usize], offset: [f32; 2], scale: f32, dts: &[DType]) {
    let ctx = ctx();
    let mut r = rng("softmax");
    let len = *shape.last().unwrap();
    let n: usize = shape.iter().product();
    for &dt in dts {
        let off = if dt == DType::F32 { offset[0] } else { offset[1] };
        let x = offset_vec(&mut r, n, off, scale, dt);
        let xt = upload_at(shape, &x, dt, if n > 1 << 24 { 0 } else { 5 });
        let mut rec = Recorder::new();
        let y = softmax(ctx, &mut rec, &xt).unwrap();
        assert_eq!(y.shape, shape);
        rec.submit(ctx).unwrap();
        let got = y.to_vec(ctx).unwrap();
        let want = reference::softmax::softmax(&x, len).unwrap();
        assert_close(&format!("softmax {shape:?} offset={off} {dt:?}"), &got, &want, tol(dt));
    }
}

fn sm_check(shape: &[usize], offset: [f32; 2], scale: f32) {
    sm_check_with(shape, offset, scale, &dtypes());
}

#[test]
fn softmax_awkward_lengths() {
    sm_check(&[3, 1], [0.0, 0.0], 4.0);
    sm_check(&[1], [0.0, 0.0], 4.0);
    sm_check(&[2, 5, 77], [0.0, 0.0], 6.0);
    sm_check(&[3, 1000], [0.0, 0.0], 8.0);
    sm_check(&[1, 4097], [0.0, 0.0], 8.0);
    sm_check(&[3, 4097], [0.0, 0.0], 3.0); // past the 8·256 values kept in registers
    sm_check(&[2, 33], [0.0, 0.0], 20.0);
}

#[test]
fn softmax_large_values_are_stable() {
    // exp(1000) overflows f32: the row max must be subtracted.
    sm_check(&[3, 77], [1000.0, 1000.0], 5.0);
    sm_check(&[2, 1000], [-1000.0, -1000.0], 5.0);
}

#[test]
fn softmax_more_than_65535_workgroups() {
    // 32 rows of 3 per workgroup: 2.2M rows need 68750 workgroups, so the grid folds over x and
    // y; the last workgroup is partly empty.
    sm_check(&[2_200_000 - 5, 3], [0.0, 0.0], 4.0);
}

#[test]
fn softmax_tensor_larger_than_one_binding() {
    // f32 only; rows are split over windows.
    let rows = (ctx().caps.max_binding / 4 / 1000) as usize + 2;
    sm_check_with(&[rows, 1000], [0.0, 0.0], 6.0, &[DType::F32]);
}

#[test]
fn softmax_rejects_bad_shapes() {
    let ctx = ctx();
    let mut rec = Recorder::new();
    let x = GpuTensor::zeros(ctx, &[], DType::F32).unwrap();
    let e = err(softmax(ctx, &mut rec, &x));
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("softmax"), "{e}");
    assert!(rec.is_empty());
}
