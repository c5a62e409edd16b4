//! cfg_rescale (diffusers' `rescale_noise_cfg`) vs its f64 reference: awkward shapes (rows
//! that are no multiple of any tile, many chunks per row, windows with a shift), large common
//! offsets, more than 65535 workgroups in the stats and finish passes, rows without spread, and
//! bad arguments.

mod common;
use common::*;
use lorafuse::kernels::cfg_rescale::{cfg_rescale, cfg_rescale_chunked};
use lorafuse::{reference, DType, Error, GpuTensor, Recorder};
use rand::rngs::StdRng;

/// `n` values `offset + U(-scale, scale)`, rounded to `dt`.
fn offset_vec(r: &mut StdRng, n: usize, offset: f32, scale: f32, dt: DType) -> Vec<f32> {
    rand_vec(r, n, scale, dt).into_iter().map(|v| dt.round(offset + v)).collect()
}

/// Both inputs as views into one buffer, `text` 3 values in and `guided` right after it, so the
/// windows have nonzero shifts (and, in f16, start inside a 4-byte word).
fn upload_pair(shape: &[usize], text: &[f32], guided: &[f32], dt: DType) -> (GpuTensor, GpuTensor) {
    let mut v = vec![0.0; 3];
    v.extend_from_slice(text);
    v.extend_from_slice(guided);
    let t = GpuTensor::from_slice(ctx(), &[v.len()], &v, dt).unwrap();
    (t.view(3, shape).unwrap(), t.view(3 + text.len(), shape).unwrap())
}

/// The error of a call that must fail (GpuTensor has no Debug, so no `unwrap_err`).
fn err(r: lorafuse::Result<GpuTensor>) -> Error {
    match r {
        Ok(t) => panic!("expected an error, got a tensor {:?}", t.shape),
        Err(e) => e,
    }
}

/// Runs the kernel (default chunking, or `chunk` values per stats workgroup) and the reference.
fn run(
    shape: &[usize],
    text: &[f32],
    guided: &[f32],
    phi: f32,
    dt: DType,
    chunk: Option<usize>,
) -> (Vec<f32>, Vec<f32>) {
    let ctx = ctx();
    let (t, g) = upload_pair(shape, text, guided, dt);
    let mut rec = Recorder::new();
    let y = match chunk {
        None => cfg_rescale(ctx, &mut rec, &t, &g, phi),
        Some(c) => cfg_rescale_chunked(ctx, &mut rec, &t, &g, phi, c),
    }
    .unwrap();
    assert_eq!(y.shape, shape);
    rec.submit(ctx).unwrap();
    let got = y.to_vec(ctx).unwrap();
    let want = reference::cfg_rescale::cfg_rescale(text, guided, shape[0], phi).unwrap();
    (got, want)
}

/// Random inputs whose spreads differ (as CFG makes them), every dtype, both chunkings.
fn check(shape: &[usize], phi: f32, offsets: [f32; 2], chunks: &[Option<usize>]) {
    let mut r = rng("cfg_rescale");
    let n: usize = shape.iter().product();
    for dt in dtypes() {
        for &chunk in chunks {
            let text = offset_vec(&mut r, n, offsets[0], 1.0, dt);
            let guided = offset_vec(&mut r, n, offsets[1], 4.0, dt);
            let (got, want) = run(shape, &text, &guided, phi, dt, chunk);
            let what = format!("cfg_rescale {shape:?} phi={phi} offsets={offsets:?} {dt:?} chunk={chunk:?}");
            assert_close(&what, &got, &want, tol(dt));
        }
    }
}

#[test]
fn cfg_rescale_awkward_shapes() {
    for phi in [0.7, 1.0, 0.3] {
        check(&[1, 4, 13, 17], phi, [0.0, 0.0], &[None, Some(40)]);
        check(&[3, 5, 7], phi, [0.0, 0.0], &[None, Some(16), Some(33)]);
        check(&[2, 4, 61, 67], phi, [0.0, 0.0], &[None, Some(1000)]);
        check(&[5, 2], phi, [0.0, 0.0], &[None]);
    }
    // φ = 0 returns the guided values.
    check(&[2, 4, 9, 11], 0.0, [0.0, 0.0], &[None]);
}

#[test]
fn cfg_rescale_large_offset_is_stable() {
    // Shifted sums per chunk and per-row pivots: E[x²] − E[x]² would lose the spread entirely.
    check(&[2, 4, 32, 33], 0.7, [1000.0, -500.0], &[None, Some(64)]);
    check(&[1, 4, 64, 64], 1.0, [-3000.0, 200.0], &[None, Some(256)]);
}

#[test]
fn cfg_rescale_more_than_65535_workgroups() {
    // 3 rows of 350003 values in chunks of 16: 21876 chunks per row, 65628 stats workgroups per
    // input (the grid folds over x and y), and a finish pass looping over 1368 partials per thread.
    check(&[3, 350_003], 0.7, [0.5, -0.25], &[Some(16)]);
    // 70000 rows of 3: the finish pass has one workgroup per row, folded the same way.
    check(&[70_000, 3], 0.7, [0.0, 0.0], &[None]);
}

#[test]
fn cfg_rescale_rows_without_spread_are_unchanged() {
    let dt = DType::F32;
    // Row 0: constant guided values; row 1: ordinary. A single value per row has no spread either.
    let text = [1.0, -2.0, 3.0, 0.5, 0.25, -1.0, 2.0, 4.0];
    let guided = [7.0, 7.0, 7.0, 7.0, 1.0, 2.0, -3.0, 0.5];
    let (got, want) = run(&[2, 4], &text, &guided, 0.7, dt, None);
    assert_eq!(&got[..4], &guided[..4]);
    assert_close("cfg_rescale constant row", &got, &want, TOL_F32);
    let (got, _) = run(&[3, 1], &text[..3], &guided[4..7], 0.7, dt, None);
    assert_eq!(got, guided[4..7]);
}

#[test]
fn cfg_rescale_rejects_bad_arguments() {
    let ctx = ctx();
    let mut rec = Recorder::new();
    let a = GpuTensor::from_slice(ctx, &[2, 3], &[0.0; 6], DType::F32).unwrap();
    let b = GpuTensor::from_slice(ctx, &[3, 2], &[0.0; 6], DType::F32).unwrap();
    let e = err(cfg_rescale(ctx, &mut rec, &a, &b, 0.7)).to_string();
    assert!(e.contains("cfg_rescale") && e.contains("[2, 3]") && e.contains("[3, 2]"), "{e}");
    let e = err(cfg_rescale(ctx, &mut rec, &a, &a, f32::NAN)).to_string();
    assert!(e.contains("phi"), "{e}");
    let e = err(cfg_rescale_chunked(ctx, &mut rec, &a, &a, 0.5, 0)).to_string();
    assert!(e.contains("chunk"), "{e}");
    if ctx.caps.shader_f16 {
        let h = GpuTensor::from_slice(ctx, &[2, 3], &[0.0; 6], DType::F16).unwrap();
        let e = err(cfg_rescale(ctx, &mut rec, &a, &h, 0.7)).to_string();
        assert!(e.contains("f16") && e.contains("f32"), "{e}");
    }
    assert!(reference::cfg_rescale::cfg_rescale(&[0.0; 6], &[0.0; 5], 2, 0.7).is_err());
    assert!(rec.dispatches.is_empty(), "a rejected call recorded work");
}
