//! lora_merge kernel vs reference::lora_merge: low-rank factors, a dense delta, both, and the
//! bit-exact copy used to restore weights, at awkward shapes, into views, over 65535
//! workgroups, over one storage binding, and with ranks split into several launches.

mod common;
use common::*;
use lorafuse::kernels::lora_merge::{lora_merge, MAX_RANK};
use lorafuse::tensor::max_window_elems;
use lorafuse::{reference, DType, GpuTensor, Recorder};
use rand::Rng;

struct Case {
    n: usize,
    k: usize,
    r: usize,
    full: bool,
    /// Give the weight a conv shape `[n, k / 9, 3, 3]` (the launcher views it as `[n, k]`).
    conv: bool,
}

const fn case(n: usize, k: usize, r: usize, full: bool) -> Case {
    Case { n, k, r, full, conv: false }
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Merge into `out`, a view at an odd offset inside a bigger buffer whose other elements hold
/// random values that must come back bit for bit; compare with the f64 reference.
fn check(c: &Case, dts: &[DType]) {
    let ctx = ctx();
    let mut g = rng("lora_merge");
    let nk = c.n * c.k;
    for &dt in dts {
        let p = rand_vec(&mut g, nk, 1.0, dt);
        let up = rand_vec(&mut g, c.n * c.r, 0.1, DType::F32);
        let down = rand_vec(&mut g, c.r * c.k, 0.1, DType::F32);
        let full = rand_vec(&mut g, if c.full { nk } else { 0 }, 0.05, DType::F32);
        let shape = if c.conv { vec![c.n, c.k / 9, 3, 3] } else { vec![c.n, c.k] };
        let pt = GpuTensor::from_slice(ctx, &shape, &p, dt).unwrap();
        let (before, after) = (37, 1 + g.random_range(0..64));
        let mut around = rand_vec(&mut g, before + nk + after, 4.0, dt);
        around[before..before + nk].fill(f32::NAN);
        let big = GpuTensor::from_slice(ctx, &[around.len()], &around, dt).unwrap();
        let out = big.view(before, &shape).unwrap();
        let ut = (c.r > 0).then(|| GpuTensor::from_slice(ctx, &[c.n, c.r], &up, DType::F32).unwrap());
        let dtn = (c.r > 0).then(|| GpuTensor::from_slice(ctx, &[c.r, c.k], &down, DType::F32).unwrap());
        let ft = c.full.then(|| GpuTensor::from_slice(ctx, &[c.n, c.k], &full, DType::F32).unwrap());
        let mut rec = Recorder::new();
        lora_merge(ctx, &mut rec, &pt, &out, ut.as_ref(), dtn.as_ref(), ft.as_ref()).unwrap();
        rec.submit(ctx).unwrap();
        let all = big.to_vec(ctx).unwrap();
        let what = format!("lora_merge n={} k={} r={} full={} {dt:?}", c.n, c.k, c.r, c.full);
        assert_eq!(bits(&all[..before]), bits(&around[..before]), "{what}: wrote before the view");
        assert_eq!(bits(&all[before + nk..]), bits(&around[before + nk..]), "{what}: wrote after the view");
        let got = &all[before..before + nk];
        let want = reference::lora_merge::lora_merge(
            &p,
            c.n,
            c.k,
            (c.r > 0).then_some((&up[..], &down[..], c.r)),
            c.full.then_some(&full[..]),
        );
        if c.r == 0 && !c.full {
            assert_eq!(bits(got), bits(&p), "{what}: copy is not bit-exact");
        }
        assert_close(&what, got, &want, tol(dt));
    }
}

#[test]
fn lora_merge_awkward_shapes() {
    for c in [
        case(1, 1, 1, false),
        case(77, 33, 1, false),
        case(320, 77, 257, false),
        case(61, 1155, 0, true),
        case(130, 99, 36, true),
        case(45, 67, 0, false),
        Case { n: 19, k: 7 * 9, r: 5, full: true, conv: true },
    ] {
        check(&c, &dtypes());
    }
}

#[test]
fn lora_merge_more_than_65535_workgroups() {
    // 256 threads a workgroup: 17M outputs need 66k workgroups, folded into 2D.
    check(&case(4099, 4097, 2, false), &dtypes());
}

#[test]
fn lora_merge_rank_over_one_loop() {
    // Three rank chunks: an f32 partial sum started (with full), added to, then merged.
    check(&case(19, 37, 2 * MAX_RANK + 5, true), &dtypes());
    check(&case(3, 5, MAX_RANK + 1, false), &dtypes());
}

#[test]
fn lora_merge_down_larger_than_one_binding() {
    // down [R, K] over one binding: rank chunks whose rows of down fit one binding each.
    let k = 4100;
    let r = max_window_elems(ctx(), DType::F32) as usize / k + 7;
    assert!(r < MAX_RANK && (r * k * 4) as u64 > ctx().caps.max_binding);
    check(&case(6, k, r, true), &dtypes());
}

#[test]
fn lora_merge_weight_larger_than_one_binding() {
    // f32 rows over one binding: the launch splits by rows; rank 3 keeps it quick on lavapipe.
    let k = 4100;
    let n = (ctx().caps.max_binding / 4) as usize / k + 3;
    assert!((n * k * 4) as u64 > ctx().caps.max_binding);
    check(&case(n, k, 3, true), &[DType::F32]);
}

#[test]
fn lora_merge_copy_is_bit_exact() {
    let ctx = ctx();
    for dt in dtypes() {
        let mut p: Vec<f32> = vec![-0.0, 0.0, 1.0e-7, -65504.0, 3.0517578e-5, -2.5e-5, 1.0, -1.0];
        p.extend((0..1000).map(|i| ((i * 7919) % 2003) as f32 * 1.37e-3 - 1.3));
        let p: Vec<f32> = p.into_iter().map(|v| dt.round(v)).collect();
        let pt = GpuTensor::from_slice(ctx, &[8, 126], &p, dt).unwrap();
        let out = GpuTensor::from_slice(ctx, &[8, 126], &vec![f32::NAN; p.len()], dt).unwrap();
        let mut rec = Recorder::new();
        lora_merge(ctx, &mut rec, &pt, &out, None, None, None).unwrap();
        rec.submit(ctx).unwrap();
        let got = out.to_vec(ctx).unwrap();
        assert_eq!(bits(&got), bits(&p), "{dt:?} copy is not bit-exact");
        assert!(got[0].is_sign_negative() && got[0] == 0.0, "{dt:?}: -0.0 lost its sign");
    }
}

#[test]
fn lora_merge_rejects_bad_operands() {
    let ctx = ctx();
    let f = |s: &[usize], dt| GpuTensor::zeros(ctx, s, dt).unwrap();
    let (p, o) = (f(&[4, 6], DType::F32), f(&[4, 6], DType::F32));
    let mut rec = Recorder::new();
    let up = f(&[4, 2], DType::F32);
    let down = f(&[2, 6], DType::F32);
    let cases = [
        ("out shape", lora_merge(ctx, &mut rec, &p, &f(&[4, 5], DType::F32), None, None, None)),
        ("out rows", lora_merge(ctx, &mut rec, &p, &f(&[6, 4], DType::F32), None, None, None)),
        ("out dtype", lora_merge(ctx, &mut rec, &p, &f(&[4, 6], DType::F16), None, None, None)),
        ("aliasing", lora_merge(ctx, &mut rec, &p, &p.view(0, &[4, 6]).unwrap(), None, None, None)),
        ("up alone", lora_merge(ctx, &mut rec, &p, &o, Some(&up), None, None)),
        ("down alone", lora_merge(ctx, &mut rec, &p, &o, None, Some(&down), None)),
        ("down shape", lora_merge(ctx, &mut rec, &p, &o, Some(&up), Some(&f(&[3, 6], DType::F32)), None)),
        ("up rows", lora_merge(ctx, &mut rec, &p, &o, Some(&f(&[3, 2], DType::F32)), Some(&down), None)),
        ("up dtype", lora_merge(ctx, &mut rec, &p, &o, Some(&f(&[4, 2], DType::F16)), Some(&down), None)),
        ("full shape", lora_merge(ctx, &mut rec, &p, &o, None, None, Some(&f(&[4, 5], DType::F32)))),
        ("full dtype", lora_merge(ctx, &mut rec, &p, &o, None, None, Some(&f(&[4, 6], DType::F16)))),
        ("full aliases out", lora_merge(ctx, &mut rec, &p, &o, None, None, Some(&o.view(0, &[4, 6]).unwrap()))),
        ("ok", lora_merge(ctx, &mut rec, &p, &o, Some(&up), Some(&down), None)),
    ];
    for (what, r) in cases {
        match (what, r) {
            ("ok", r) => r.unwrap(),
            (w, Ok(())) => panic!("{w} accepted"),
            (w, Err(e)) => assert!(e.to_string().contains("lora_merge"), "{w}: {e}"),
        }
    }
    rec.submit(ctx).unwrap();
}
