//! Elementwise and gather kernels vs their references: binary (broadcasting add/sub/mul,
//! add_scaled and add_into), geglu, timestep_embedding and embedding.

mod common;
use common::*;
use lorafuse::kernels::binary::{add, add_into, add_scaled, binary, mul, BinaryOp};
use lorafuse::kernels::embedding::embedding;
use lorafuse::kernels::geglu::geglu;
use lorafuse::kernels::timestep_embedding::timestep_embedding;
use lorafuse::tensor::max_window_elems;
use lorafuse::{reference, DType, Error, GpuTensor, Recorder};
use rand::Rng;

/// `unwrap_err` without needing `T: Debug` (GpuTensor is not Debug).
trait ExpectError {
    fn error(self) -> Error;
}

impl<T> ExpectError for lorafuse::Result<T> {
    fn error(self) -> Error {
        match self {
            Ok(_) => panic!("expected an error, got Ok"),
            Err(e) => e,
        }
    }
}

fn numel(s: &[usize]) -> usize {
    s.iter().product()
}

// ---------------------------------------------------------------------------------------------
// binary

/// Every op (and add_scaled) on `a_shape` ⊕ `b_shape`, both dtypes, against the reference.
fn check_binary(a_shape: &[usize], b_shape: &[usize]) {
    check_binary_ops(a_shape, b_shape, &[0, 1, 2, 3]);
}

/// `ops` index [Add, Sub, Mul, add_scaled(0.7, -1.3)].
fn check_binary_ops(a_shape: &[usize], b_shape: &[usize], ops: &[usize]) {
    let ctx = ctx();
    let mut r = rng("binary");
    for dt in dtypes() {
        let a = rand_vec(&mut r, numel(a_shape), 2.0, dt);
        let b = rand_vec(&mut r, numel(b_shape), 2.0, dt);
        let at = GpuTensor::from_slice(ctx, a_shape, &a, dt).unwrap();
        let bt = GpuTensor::from_slice(ctx, b_shape, &b, dt).unwrap();
        let mut rec = Recorder::new();
        let mut outs = Vec::new();
        for &i in ops {
            let y = match i {
                0 => binary(ctx, &mut rec, &at, &bt, BinaryOp::Add),
                1 => binary(ctx, &mut rec, &at, &bt, BinaryOp::Sub),
                2 => binary(ctx, &mut rec, &at, &bt, BinaryOp::Mul),
                _ => add_scaled(ctx, &mut rec, &at, &bt, 0.7, -1.3),
            };
            outs.push((i, y.unwrap()));
        }
        rec.submit(ctx).unwrap();
        for (i, y) in outs {
            let name = ["Add", "Sub", "Mul", "add_scaled"][i];
            let (shape, want) = match i {
                0 => reference::binary::binary(&a, a_shape, &b, b_shape, BinaryOp::Add),
                1 => reference::binary::binary(&a, a_shape, &b, b_shape, BinaryOp::Sub),
                2 => reference::binary::binary(&a, a_shape, &b, b_shape, BinaryOp::Mul),
                _ => reference::binary::add_scaled(&a, a_shape, &b, b_shape, 0.7, -1.3),
            };
            assert_eq!(y.shape, shape, "{name} {a_shape:?} {b_shape:?}");
            let got = y.to_vec(ctx).unwrap();
            assert_close(&format!("binary {name} {a_shape:?} {b_shape:?} {dt:?}"), &got, &want, tol(dt));
        }
    }
}

#[test]
fn binary_broadcasting_awkward_shapes() {
    let cases: &[(&[usize], &[usize])] = &[
        (&[1], &[1]),
        (&[3], &[3]),
        (&[257], &[257]),
        (&[257], &[1]), // scalar-like operand
        (&[1], &[1000]),
        (&[3, 1, 5], &[1, 4, 1]),
        (&[1, 4, 1], &[3, 1, 5]),
        (&[1, 320, 64, 64], &[1, 320, 1, 1]), // UNet time-embedding add, batch 1
        (&[3, 7, 9, 11], &[3, 7, 1, 1]),      // same, batch 3, odd sizes
        (&[257, 320], &[320]),                // bias over tokens
        (&[320], &[257, 320]),
        (&[2, 77, 3], &[77, 1]),
        (&[2, 3, 4, 5, 6, 7], &[3, 1, 5, 1, 7]), // 6 dims, alternating broadcast (no merging)
        (&[5, 1, 3, 1, 2, 1, 4], &[1, 6, 1, 2, 1, 3, 1]), // 7 dims, every one broadcast
    ];
    for (a, b) in cases {
        check_binary(a, b);
    }
}

#[test]
fn binary_convenience_functions() {
    let ctx = ctx();
    let mut r = rng("binary_convenience");
    let a = rand_vec(&mut r, 3 * 5, 1.0, DType::F32);
    let b = rand_vec(&mut r, 5, 1.0, DType::F32);
    let at = GpuTensor::from_slice(ctx, &[3, 5], &a, DType::F32).unwrap();
    let bt = GpuTensor::from_slice(ctx, &[5], &b, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let s = add(ctx, &mut rec, &at, &bt).unwrap();
    let m = mul(ctx, &mut rec, &at, &bt).unwrap();
    rec.submit(ctx).unwrap();
    let (_, ws) = reference::binary::binary(&a, &[3, 5], &b, &[5], BinaryOp::Add);
    let (_, wm) = reference::binary::binary(&a, &[3, 5], &b, &[5], BinaryOp::Mul);
    assert_close("add", &s.to_vec(ctx).unwrap(), &ws, TOL_F32);
    assert_close("mul", &m.to_vec(ctx).unwrap(), &wm, TOL_F32);
}

#[test]
fn binary_more_than_65535_workgroups() {
    // 4099·4097 = 16.79M outputs > 65535·256, so the grid folds into 2D; broadcasting b too.
    // (One op: the grid handling is shared by all of them.)
    check_binary_ops(&[4099, 4097], &[4097], &[0]);
}

/// f32 only (the point is the split; these are ≥128 MiB each on lavapipe).
fn check_big(a_shape: &[usize], b_shape: &[usize], op: Option<BinaryOp>) {
    let ctx = ctx();
    let a: Vec<f32> = (0..numel(a_shape)).map(|i| ((i % 1013) as f32 - 506.0) / 100.0).collect();
    let b: Vec<f32> = (0..numel(b_shape)).map(|i| ((i % 977) as f32 - 488.0) / 300.0).collect();
    let at = GpuTensor::from_slice(ctx, a_shape, &a, DType::F32).unwrap();
    let bt = GpuTensor::from_slice(ctx, b_shape, &b, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let y = match op {
        Some(op) => binary(ctx, &mut rec, &at, &bt, op).unwrap(),
        None => add_scaled(ctx, &mut rec, &at, &bt, 0.5, -2.0).unwrap(),
    };
    assert!(!y.fits_binding(ctx));
    rec.submit(ctx).unwrap();
    let got = y.to_vec(ctx).unwrap();
    let (_, want) = match op {
        Some(op) => reference::binary::binary(&a, a_shape, &b, b_shape, op),
        None => reference::binary::add_scaled(&a, a_shape, &b, b_shape, 0.5, -2.0),
    };
    assert_close(&format!("binary split {a_shape:?} {b_shape:?} {op:?}"), &got, &want, TOL_F32);
}

#[test]
fn binary_tensors_larger_than_one_binding() {
    // a [2, L] and b [L] with L just over one binding, both operands (and the output) too big to
    // bind whole. One row of the output exceeds a binding, so the launcher fixes the outer
    // coordinate and splits inside the row: four chunks, each computing its own a and b windows
    // (b re-read at the same offsets for both rows of a).
    let l = max_window_elems(ctx(), DType::F32) as usize + 3001;
    check_big(&[2, l], &[l], None);
}

#[test]
fn binary_rejects_bad_operands() {
    let ctx = ctx();
    let mut rec = Recorder::new();
    let a = GpuTensor::zeros(ctx, &[2, 3], DType::F32).unwrap();
    let b = GpuTensor::zeros(ctx, &[4], DType::F32).unwrap();
    let e = binary(ctx, &mut rec, &a, &b, BinaryOp::Add).error();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("[2, 3]") && msg.contains("[4]") && msg.contains("binary"), "{msg}");
    let e = add_scaled(ctx, &mut rec, &a, &b, 1.0, 1.0).error();
    assert!(matches!(e, Error::Shape { .. }), "{e}");
    if ctx.caps.shader_f16 {
        let h = GpuTensor::zeros(ctx, &[2, 3], DType::F16).unwrap();
        let e = add(ctx, &mut rec, &a, &h).error();
        assert!(matches!(e, Error::DType { .. }), "{e}");
    }
    assert!(rec.is_empty());
}

/// `add_into` writes what `add` returns into an existing tensor (batch rows plus a broadcast
/// row, an odd width so the scalar entry point runs too), and refuses an output of the wrong
/// shape or dtype and one that shares an operand's buffer.
#[test]
fn binary_add_into() {
    let ctx = ctx();
    let mut r = rng("binary_add_into");
    for dt in dtypes() {
        for (a_shape, b_shape) in [(vec![2, 40], vec![2, 40]), (vec![3, 37], vec![37])] {
            let a = rand_vec(&mut r, numel(&a_shape), 2.0, dt);
            let b = rand_vec(&mut r, numel(&b_shape), 2.0, dt);
            let at = GpuTensor::from_slice(ctx, &a_shape, &a, dt).unwrap();
            let bt = GpuTensor::from_slice(ctx, &b_shape, &b, dt).unwrap();
            let out = GpuTensor::empty(ctx, &a_shape, dt).unwrap();
            let mut rec = Recorder::new();
            add_into(ctx, &mut rec, &at, &bt, &out).unwrap();
            rec.submit(ctx).unwrap();
            let (_, want) = reference::binary::binary(&a, &a_shape, &b, &b_shape, BinaryOp::Add);
            let what = format!("add_into {a_shape:?} {b_shape:?} {dt:?}");
            assert_close(&what, &out.to_vec(ctx).unwrap(), &want, tol(dt));
        }
    }
    let mut rec = Recorder::new();
    let a = GpuTensor::zeros(ctx, &[2, 3], DType::F32).unwrap();
    let b = GpuTensor::zeros(ctx, &[3], DType::F32).unwrap();
    let e = add_into(ctx, &mut rec, &a, &b, &GpuTensor::zeros(ctx, &[3, 2], DType::F32).unwrap()).error();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("[3, 2]"), "{e}");
    let e = add_into(ctx, &mut rec, &a, &b, &a).error();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    if ctx.caps.shader_f16 {
        let e = add_into(ctx, &mut rec, &a, &b, &GpuTensor::zeros(ctx, &[2, 3], DType::F16).unwrap()).error();
        assert!(matches!(e, Error::Shape { .. }), "{e}");
    }
    assert!(rec.is_empty());
}

// ---------------------------------------------------------------------------------------------
// geglu

fn check_geglu(shape: &[usize], dts: &[DType]) {
    let ctx = ctx();
    let mut r = rng("geglu");
    let last = *shape.last().unwrap();
    for &dt in dts {
        let x = rand_vec(&mut r, numel(shape), 3.0, dt);
        let xt = GpuTensor::from_slice(ctx, shape, &x, dt).unwrap();
        let mut rec = Recorder::new();
        let y = geglu(ctx, &mut rec, &xt).unwrap();
        rec.submit(ctx).unwrap();
        let mut want_shape = shape.to_vec();
        *want_shape.last_mut().unwrap() = last / 2;
        assert_eq!(y.shape, want_shape);
        let got = y.to_vec(ctx).unwrap();
        let want = reference::geglu::geglu(&x, last);
        assert_close(&format!("geglu {shape:?} {dt:?}"), &got, &want, tol(dt));
    }
}

#[test]
fn geglu_awkward_shapes() {
    for shape in [&[2][..], &[1, 2], &[3, 6], &[1, 257, 2 * 3], &[3, 5, 2 * 257], &[1, 77, 2 * 320], &[3, 13, 2 * 1280]]
    {
        check_geglu(shape, &dtypes());
    }
}

#[test]
fn geglu_larger_than_one_binding_and_65535_workgroups() {
    // x [8193, 4096] f32: 33.56M elements, just over one binding, so it is split into row ranges;
    // the first range alone has 8192·2048 outputs = 65536 workgroups, folded into 2D.
    let cap = max_window_elems(ctx(), DType::F32) as usize;
    let rows = cap / 4096 + 1;
    check_geglu(&[rows, 4096], &[DType::F32]);
}

#[test]
fn geglu_rejects_bad_shapes() {
    let ctx = ctx();
    let mut rec = Recorder::new();
    let x = GpuTensor::zeros(ctx, &[3, 5], DType::F32).unwrap();
    let e = geglu(ctx, &mut rec, &x).error();
    assert!(matches!(e, Error::Shape { .. }) && e.to_string().contains("geglu"), "{e}");
    let s = GpuTensor::zeros(ctx, &[], DType::F32).unwrap();
    assert!(matches!(geglu(ctx, &mut rec, &s).error(), Error::Shape { .. }));
    assert!(rec.is_empty());
}

// ---------------------------------------------------------------------------------------------
// timestep_embedding

fn check_timesteps(ts: &[f32], dim: usize, dts: &[DType]) {
    let ctx = ctx();
    for &dt in dts {
        let mut rec = Recorder::new();
        let y = timestep_embedding(ctx, &mut rec, ts, dim, dt).unwrap();
        rec.submit(ctx).unwrap();
        assert_eq!(y.shape, vec![ts.len(), dim]);
        let got = y.to_vec(ctx).unwrap();
        let want = reference::timestep_embedding::timestep_embedding(ts, dim);
        assert_close(&format!("timestep_embedding B={} dim={dim} {dt:?}", ts.len()), &got, &want, tol(dt));
    }
}

#[test]
fn timestep_embedding_batches_and_dims() {
    let mut r = rng("timestep_embedding");
    let random: Vec<f32> = (0..7).map(|_| r.random_range(0.0f32..1000.0)).collect();
    let batches: [&[f32]; 4] = [&[999.0], &[0.0, 500.5, 999.0], &[1.0, 981.0, 961.0], &random];
    for ts in batches {
        for dim in [1, 2, 3, 257, 320, 1280] {
            check_timesteps(ts, dim, &dtypes());
        }
    }
    // Large arguments stay accurate per element, not just on average.
    let ctx = ctx();
    let mut rec = Recorder::new();
    let y = timestep_embedding(ctx, &mut rec, &[999.0, 997.0], 320, DType::F32).unwrap();
    rec.submit(ctx).unwrap();
    let got = y.to_vec(ctx).unwrap();
    let want = reference::timestep_embedding::timestep_embedding(&[999.0, 997.0], 320);
    let worst = got.iter().zip(&want).map(|(g, w)| (g - w).abs()).fold(0.0f32, f32::max);
    assert!(worst < 2e-6, "worst abs error {worst}");
}

#[test]
fn timestep_embedding_larger_than_one_binding() {
    // [B, 320] with B·320 just over one f32 binding: split by element range; each of the two
    // dispatches needs > 65535 workgroups, folded.
    let cap = max_window_elems(ctx(), DType::F32) as usize;
    let b = cap / 320 + 13;
    let mut r = rng("timestep_embedding_big");
    let ts: Vec<f32> = (0..b).map(|_| r.random_range(0.0f32..1000.0)).collect();
    check_timesteps(&ts, 320, &[DType::F32]);
}

#[test]
fn timestep_embedding_rejects_bad_arguments() {
    let ctx = ctx();
    let mut rec = Recorder::new();
    let e = timestep_embedding(ctx, &mut rec, &[1.0], 0, DType::F32).error();
    assert!(matches!(e, Error::Invalid { .. }) && e.to_string().contains("timestep_embedding"), "{e}");
    let e = timestep_embedding(ctx, &mut rec, &[1.0, f32::NAN], 4, DType::F32).error();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    assert!(rec.is_empty());
}

// ---------------------------------------------------------------------------------------------
// embedding

fn check_embedding(v: usize, d: usize, ids: &[u32], dts: &[DType]) {
    let ctx = ctx();
    let mut r = rng("embedding");
    for &dt in dts {
        let table = rand_vec(&mut r, v * d, 1.0, dt);
        let tt = GpuTensor::from_slice(ctx, &[v, d], &table, dt).unwrap();
        let mut rec = Recorder::new();
        let y = embedding(ctx, &mut rec, &tt, ids).unwrap();
        rec.submit(ctx).unwrap();
        assert_eq!(y.shape, vec![ids.len(), d]);
        let got = y.to_vec(ctx).unwrap();
        let want = reference::embedding::embedding(&table, d, ids);
        // A gather is a copy: exact in both dtypes.
        assert_eq!(got, want, "embedding V={v} D={d} n={} {dt:?}", ids.len());
        assert_close(&format!("embedding V={v} D={d} n={} {dt:?}", ids.len()), &got, &want, tol(dt));
    }
}

#[test]
fn embedding_awkward_shapes() {
    let mut r = rng("embedding_ids");
    for v in [1, 3, 257] {
        for d in [1, 3, 257, 768] {
            for n in [1, 3, 77] {
                let mut ids: Vec<u32> = (0..n).map(|_| r.random_range(0..v as u32)).collect();
                ids[0] = (v - 1) as u32;
                check_embedding(v, d, &ids, &dtypes());
            }
        }
    }
}

#[test]
fn embedding_table_and_output_larger_than_one_binding() {
    // Table [V, 768] f32 just over one binding (CLIP's 49408×768 is 152 MB): row windows of
    // `rows` rows. The output [n, 768] is over one binding too, and the largest dispatch gathers
    // ~n/2 rows · 768 columns / 256 > 65535 workgroups (folded).
    let ctx = ctx();
    let d = 768;
    let cap = max_window_elems(ctx, DType::F32) as usize;
    let rows = cap / d; // rows per window, as the launcher splits
    let v = rows + 37;
    let n = rows + 211;
    let mut ids: Vec<u32> = vec![0, (v - 1) as u32];
    let mut k = rows;
    while k < v {
        ids.extend([k - 2, k - 1, k, k + 1].iter().filter(|&&x| x < v).map(|&x| x as u32));
        k += rows;
    }
    let mut r = rng("embedding_big");
    while ids.len() < n {
        // Mostly the boundary region, otherwise anywhere.
        let id = if r.random_bool(0.5) { r.random_range(rows - 50..v) } else { r.random_range(0..v) };
        ids.push(id as u32);
    }
    // Boundary ids also at the output-window boundary.
    for (j, id) in [0, rows - 1, rows, v - 1].into_iter().enumerate() {
        ids[rows - 2 + j] = id as u32;
    }
    let table: Vec<f32> = (0..v * d).map(|i| ((i % 4093) as f32 - 2046.0) / 1000.0).collect();
    let tt = GpuTensor::from_slice(ctx, &[v, d], &table, DType::F32).unwrap();
    assert!(!tt.fits_binding(ctx));
    let mut rec = Recorder::new();
    let y = embedding(ctx, &mut rec, &tt, &ids).unwrap();
    assert!(!y.fits_binding(ctx));
    rec.submit(ctx).unwrap();
    let got = y.to_vec(ctx).unwrap();
    let want = reference::embedding::embedding(&table, d, &ids);
    assert!(got == want, "embedding split: gathered rows differ");
    assert_close("embedding split", &got, &want, TOL_F32);
}

#[test]
fn embedding_rejects_bad_arguments() {
    let ctx = ctx();
    let mut rec = Recorder::new();
    let t = GpuTensor::zeros(ctx, &[10, 4], DType::F32).unwrap();
    let e = embedding(ctx, &mut rec, &t, &[3, 10]).error();
    assert!(matches!(e, Error::Invalid { .. }), "{e}");
    let msg = e.to_string();
    assert!(msg.contains("embedding") && msg.contains("10") && msg.contains("V = 10"), "{msg}");
    let flat = GpuTensor::zeros(ctx, &[40], DType::F32).unwrap();
    assert!(matches!(embedding(ctx, &mut rec, &flat, &[0]).error(), Error::Shape { .. }));
    assert!(rec.is_empty());
}
