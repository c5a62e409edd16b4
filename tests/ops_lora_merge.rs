//! lora_merge kernel vs reference::lora_merge: low-rank factors, a dense delta, both, and the
//! bit-exact copy used to restore weights, at awkward shapes, into views, over 65535
//! workgroups and over one storage binding.

mod common;
use common::*;
use lorafuse::kernels::lora_merge::lora_merge;
use lorafuse::{reference, DType, GpuTensor, Recorder};

struct Case {
    n: usize,
    k: usize,
    r: usize,
    full: bool,
}

fn check(c: &Case) {
    let ctx = ctx();
    let mut g = rng("lora_merge");
    for dt in dtypes() {
        let p = rand_vec(&mut g, c.n * c.k, 1.0, dt);
        let up = rand_vec(&mut g, c.n * c.r, 0.1, DType::F32);
        let down = rand_vec(&mut g, c.r * c.k, 0.1, DType::F32);
        let full = rand_vec(&mut g, c.n * c.k, 0.05, DType::F32);
        let pt = GpuTensor::from_slice(ctx, &[c.n, c.k], &p, dt).unwrap();
        // Output as a view at a nonzero offset inside a bigger buffer, NaN-filled around it.
        let pad = 37;
        let big = GpuTensor::from_slice(ctx, &[c.n * c.k + 2 * pad], &vec![f32::NAN; c.n * c.k + 2 * pad], dt).unwrap();
        let out = big.view(pad, &[c.n, c.k]).unwrap();
        let ut = (c.r > 0).then(|| GpuTensor::from_slice(ctx, &[c.n, c.r], &up, DType::F32).unwrap());
        let dtn = (c.r > 0).then(|| GpuTensor::from_slice(ctx, &[c.r, c.k], &down, DType::F32).unwrap());
        let ft = c.full.then(|| GpuTensor::from_slice(ctx, &[c.n, c.k], &full, DType::F32).unwrap());
        let mut rec = Recorder::new();
        lora_merge(ctx, &mut rec, &pt, &out, ut.as_ref(), dtn.as_ref(), ft.as_ref()).unwrap();
        rec.submit(ctx).unwrap();
        let all = big.to_vec(ctx).unwrap();
        assert!(all[..pad].iter().chain(&all[pad + c.n * c.k..]).all(|v| v.is_nan()), "wrote outside the view");
        let got = &all[pad..pad + c.n * c.k];
        let want = reference::lora_merge::lora_merge(
            &p,
            c.n,
            c.k,
            (c.r > 0).then_some((&up[..], &down[..], c.r)),
            c.full.then_some(&full[..]),
        );
        let what = format!("lora_merge n={} k={} r={} full={} {dt:?}", c.n, c.k, c.r, c.full);
        assert_close(&what, got, &want, tol(dt));
    }
}

#[test]
fn lora_merge_awkward_shapes() {
    for c in [
        Case { n: 1, k: 1, r: 1, full: false },
        Case { n: 77, k: 33, r: 1, full: false },
        Case { n: 320, k: 77, r: 257, full: false },
        Case { n: 61, k: 1155, r: 0, full: true },
        Case { n: 130, k: 99, r: 36, full: true },
    ] {
        check(&c);
    }
}

#[test]
fn lora_merge_more_than_65535_workgroups() {
    // 256 threads a workgroup: 17M outputs need 66k workgroups, folded into 2D.
    check(&Case { n: 4099, k: 4097, r: 2, full: false });
}

#[test]
fn lora_merge_copy_is_bit_exact() {
    let ctx = ctx();
    for dt in dtypes() {
        let mut p: Vec<f32> = vec![-0.0, 0.0, 1.0e-7, -65504.0, 3.14159, -2.5e-5, 1.0, -1.0];
        p.extend((0..1000).map(|i| ((i * 7919) % 2003) as f32 * 1.37e-3 - 1.3));
        let p: Vec<f32> = p.into_iter().map(|v| dt.round(v)).collect();
        let pt = GpuTensor::from_slice(ctx, &[8, 126], &p, dt).unwrap();
        let out = GpuTensor::from_slice(ctx, &[8, 126], &vec![f32::NAN; p.len()], dt).unwrap();
        let mut rec = Recorder::new();
        lora_merge(ctx, &mut rec, &pt, &out, None, None, None).unwrap();
        rec.submit(ctx).unwrap();
        let got = out.to_vec(ctx).unwrap();
        let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
        assert_eq!(bits(&got), bits(&p), "{dt:?} copy is not bit-exact");
        assert!(got[0].is_sign_negative(), "-0.0 lost its sign");
    }
}

#[test]
fn lora_merge_weight_larger_than_one_binding() {
    let ctx = ctx();
    // f32 rows over one binding: the launch splits by rows; rank 3 keeps it quick on lavapipe.
    let k = 4100;
    let n = (ctx.caps.max_binding / 4) as usize / k + 3;
    let (r, dt) = (3, DType::F32);
    let mut g = rng("lora_merge_big");
    let p = rand_vec(&mut g, n * k, 1.0, dt);
    let up = rand_vec(&mut g, n * r, 0.1, dt);
    let down = rand_vec(&mut g, r * k, 0.1, dt);
    let pt = GpuTensor::from_slice(ctx, &[n, k], &p, dt).unwrap();
    assert!(!pt.fits_binding(ctx));
    let out = GpuTensor::empty(ctx, &[n, k], dt).unwrap();
    let ut = GpuTensor::from_slice(ctx, &[n, r], &up, dt).unwrap();
    let dtn = GpuTensor::from_slice(ctx, &[r, k], &down, dt).unwrap();
    let mut rec = Recorder::new();
    lora_merge(ctx, &mut rec, &pt, &out, Some(&ut), Some(&dtn), None).unwrap();
    rec.submit(ctx).unwrap();
    let got = out.to_vec(ctx).unwrap();
    let want = reference::lora_merge::lora_merge(&p, n, k, Some((&up, &down, r)), None);
    assert_close("lora_merge over one binding", &got, &want, TOL_F32);
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
        ("aliasing", lora_merge(ctx, &mut rec, &p, &p.view(0, &[4, 6]).unwrap(), None, None, None)),
        ("up alone", lora_merge(ctx, &mut rec, &p, &o, Some(&up), None, None)),
        ("down shape", lora_merge(ctx, &mut rec, &p, &o, Some(&up), Some(&f(&[3, 6], DType::F32)), None)),
        ("full shape", lora_merge(ctx, &mut rec, &p, &o, None, None, Some(&f(&[4, 5], DType::F32)))),
        ("ok", lora_merge(ctx, &mut rec, &p, &o, Some(&up), Some(&down), None)),
    ];
    for (what, r) in cases {
        match (what, r) {
            ("ok", r) => r.unwrap(),
            (w, Ok(())) => panic!("{w} accepted"),
            (w, Err(e)) => assert!(e.to_string().contains("lora_merge"), "{w}: {e}"),
        }
    }
}
