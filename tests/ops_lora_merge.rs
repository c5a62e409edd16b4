//! lora_merge kernel vs reference::lora_merge: a dense delta and the bit-exact copy used to
//! restore weights, at awkward shapes, into views, over 65535 workgroups and over one storage
//! binding.

mod common;
use common::*;
use lorafuse::kernels::lora_merge::lora_merge;
use lorafuse::{reference, DType, GpuTensor, Recorder};
use rand::Rng;

struct Case {
    n: usize,
    k: usize,
    full: bool,
    /// Give the weight a conv shape `[n, k / 9, 3, 3]` (the launcher views it as `[n, k]`).
    conv: bool,
}

const fn case(n: usize, k: usize, full: bool) -> Case {
    Case { n, k, full, conv: false }
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
        let full = rand_vec(&mut g, if c.full { nk } else { 0 }, 0.05, DType::F32);
        let shape = if c.conv { vec![c.n, c.k / 9, 3, 3] } else { vec![c.n, c.k] };
        let pt = GpuTensor::from_slice(ctx, &shape, &p, dt).unwrap();
        let (before, after) = (37, 1 + g.random_range(0..64));
        let mut around = rand_vec(&mut g, before + nk + after, 4.0, dt);
        around[before..before + nk].fill(f32::NAN);
        let big = GpuTensor::from_slice(ctx, &[around.len()], &around, dt).unwrap();
        let out = big.view(before, &shape).unwrap();
        let ft = c.full.then(|| GpuTensor::from_slice(ctx, &[c.n, c.k], &full, DType::F32).unwrap());
        let mut rec = Recorder::new();
        lora_merge(ctx, &mut rec, &pt, &out, ft.as_ref()).unwrap();
        rec.submit(ctx).unwrap();
        let all = big.to_vec(ctx).unwrap();
        let what = format!("lora_merge n={} k={} full={} {dt:?}", c.n, c.k, c.full);
        assert_eq!(bits(&all[..before]), bits(&around[..before]), "{what}: wrote before the view");
        assert_eq!(bits(&all[before + nk..]), bits(&around[before + nk..]), "{what}: wrote after the view");
        let got = &all[before..before + nk];
        let want = reference::lora_merge::lora_merge(&p, c.n, c.k, c.full.then_some(&full[..]));
        if !c.full {
            assert_eq!(bits(got), bits(&p), "{what}: copy is not bit-exact");
        }
        assert_close(&what, got, &want, tol(dt));
    }
}

#[test]
fn lora_merge_awkward_shapes() {
    for c in [
        case(1, 1, true),
        case(1, 1, false),
        case(77, 33, true),
        case(61, 1155, true),
        case(130, 99, true),
        case(45, 67, false),
        Case { n: 19, k: 7 * 9, full: true, conv: true },
    ] {
        check(&c, &dtypes());
    }
}

#[test]
fn lora_merge_more_than_65535_workgroups() {
    // 256 threads a workgroup: 17M outputs need 66k workgroups, folded into 2D.
    check(&case(4099, 4097, true), &dtypes());
}

#[test]
fn lora_merge_weight_larger_than_one_binding() {
    // f32 rows over one binding: the launch splits by rows.
    let k = 4100;
    let n = (ctx().caps.max_binding / 4) as usize / k + 3;
    assert!((n * k * 4) as u64 > ctx().caps.max_binding);
    check(&case(n, k, true), &[DType::F32]);
    check(&case(n, k, false), &[DType::F32]);
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
        lora_merge(ctx, &mut rec, &pt, &out, None).unwrap();
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
    let full = f(&[4, 6], DType::F32);
    let cases = [
        ("out shape", lora_merge(ctx, &mut rec, &p, &f(&[4, 5], DType::F32), None)),
        ("out rows", lora_merge(ctx, &mut rec, &p, &f(&[6, 4], DType::F32), None)),
        ("out dtype", lora_merge(ctx, &mut rec, &p, &f(&[4, 6], DType::F16), None)),
        ("aliasing", lora_merge(ctx, &mut rec, &p, &p.view(0, &[4, 6]).unwrap(), None)),
        ("full shape", lora_merge(ctx, &mut rec, &p, &o, Some(&f(&[4, 5], DType::F32)))),
        ("full dtype", lora_merge(ctx, &mut rec, &p, &o, Some(&f(&[4, 6], DType::F16)))),
        ("full aliases out", lora_merge(ctx, &mut rec, &p, &o, Some(&o.view(0, &[4, 6]).unwrap()))),
        ("ok", lora_merge(ctx, &mut rec, &p, &o, Some(&full))),
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
