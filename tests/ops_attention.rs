//! attention kernels vs reference::attention: the tiled flash kernel (GPUs) and attention_sg
//! (the subgroup kernel for CPU adapters), self/cross, causal.

mod common;
use common::*;
use lorafuse::kernels::attention::{attention, attention_into, attention_scaled, attention_tiled, Tiling};
use lorafuse::kernels::attention_sg::{self, attention_sg_into};
use lorafuse::{reference, DType, GpuTensor, Recorder};
use rand::rngs::StdRng;

struct Case {
    b: usize,
    sq: usize,
    sk: usize,
    heads: usize,
    d: usize,
    causal: bool,
}

fn inputs(r: &mut StdRng, c: &Case, dt: DType) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    let hd = c.heads * c.d;
    // Scores spread over several units so the softmax is far from uniform.
    let q = rand_vec(r, c.b * c.sq * hd, 1.5, dt);
    let k = rand_vec(r, c.b * c.sk * hd, 1.5, dt);
    let v = rand_vec(r, c.b * c.sk * hd, 1.0, dt);
    (q, k, v)
}

/// Which kernel a check runs: `attention` as chosen for the device, the tiled kernel with a given
/// tiling, or attention_sg with a given number of rows per lane.
enum Kernel<'a> {
    Default,
    Tiled(&'a dyn Fn(DType) -> Tiling),
    Sg(u32),
}

/// Run one case in both dtypes (optionally with an explicit tiling) against the full reference.
fn check(r: &mut StdRng, c: &Case, tiling: Option<&dyn Fn(DType) -> Tiling>) {
    check_kernel(r, c, tiling.map_or(Kernel::Default, Kernel::Tiled));
}

fn check_kernel(r: &mut StdRng, c: &Case, kernel: Kernel) {
    let ctx = ctx();
    for dt in dtypes() {
        let (q, k, v) = inputs(r, c, dt);
        let hd = c.heads * c.d;
        let qt = GpuTensor::from_slice(ctx, &[c.b, c.sq, hd], &q, dt).unwrap();
        let kt = GpuTensor::from_slice(ctx, &[c.b, c.sk, hd], &k, dt).unwrap();
        let vt = GpuTensor::from_slice(ctx, &[c.b, c.sk, hd], &v, dt).unwrap();
        let mut rec = Recorder::new();
        let scale = 1.0 / (c.d as f32).sqrt();
        let out = match kernel {
            Kernel::Default => attention(ctx, &mut rec, &qt, &kt, &vt, c.heads, c.causal).unwrap(),
            Kernel::Tiled(f) => {
                let out = GpuTensor::empty(ctx, &qt.shape, dt).unwrap();
                attention_tiled(ctx, &mut rec, &qt, &kt, &vt, &out, c.heads, c.causal, scale, f(dt)).unwrap();
                out
            }
            Kernel::Sg(rows) => {
                let out = GpuTensor::empty(ctx, &qt.shape, dt).unwrap();
                attention_sg_into(ctx, &mut rec, &qt, &kt, &vt, &out, c.heads, c.causal, scale, rows).unwrap();
                out
            }
        };
        rec.submit(ctx).unwrap();
        let got = out.to_vec(ctx).unwrap();
        let want = reference::attention::attention(&q, &k, &v, c.b, c.sq, c.sk, c.heads, c.d, c.causal, scale as f64);
        let what = format!(
            "attention b={} sq={} sk={} h={} d={} causal={} {dt:?}{}",
            c.b,
            c.sq,
            c.sk,
            c.heads,
            c.d,
            c.causal,
            match kernel {
                Kernel::Default => String::new(),
                Kernel::Tiled(f) => format!(" (tiled {:?})", f(dt)),
                Kernel::Sg(rows) => format!(" (attention_sg, {rows} rows per lane)"),
            }
        );
        assert_close(&what, &got, &want, tol(dt));
    }
}

fn case(b: usize, sq: usize, sk: usize, heads: usize, d: usize, causal: bool) -> Case {
    Case { b, sq, sk, heads, d, causal }
}

#[test]
fn attention_self_causal_77_tokens() {
    let mut r = rng("attention_self_causal_77_tokens");
    for c in [
        case(1, 77, 77, 8, 64, true), // CLIP text encoder
        case(3, 77, 77, 2, 5, true),
        case(1, 77, 77, 1, 4, true),
        case(3, 77, 77, 2, 80, false),
        case(1, 77, 77, 8, 8, false),
        case(1, 1, 1, 1, 4, true),
    ] {
        check(&mut r, &c, None);
    }
}

#[test]
fn attention_cross_and_odd_lengths() {
    let mut r = rng("attention_cross_and_odd_lengths");
    for c in [
        case(1, 100, 77, 8, 40, false), // SD cross-attention, 77 text tokens
        case(3, 100, 77, 2, 160, false),
        case(1, 100, 77, 1, 80, true),
        case(1, 257, 130, 2, 8, false),
        case(3, 257, 130, 1, 160, true),
        case(1, 257, 130, 8, 6, true),  // causal with Sq > Sk
        case(1, 130, 257, 1, 64, true), // causal with Sq < Sk
        case(3, 33, 9, 3, 1, false),
        case(1, 257, 130, 2, 40, false),
    ] {
        check(&mut r, &c, None);
    }
}

#[test]
fn attention_16k_workgroup_memory_tilings() {
    // Real devices may only offer WebGPU's default 16 KiB of workgroup memory: every head dim has
    // a tiling for that budget, and those tilings compute the same thing.
    for d in 1..=160 {
        for dt in [DType::F32, DType::F16] {
            for sq in [1, 77, 4096] {
                let t = Tiling::choose(d, sq, dt, 16384, 256).unwrap_or_else(|| panic!("no tiling d={d} {dt:?}"));
                assert!(t.workgroup_bytes(dt) <= 16384, "{t:?} for d={d} {dt:?}");
            }
        }
    }
    let mut r = rng("attention_16k_workgroup_memory_tilings");
    for d in [6usize, 40, 80, 160] {
        let f = move |dt: DType| Tiling::choose(d, 4096, dt, 16384, 256).unwrap();
        check(&mut r, &case(1, 70, 45, 2, d, d % 3 == 0), Some(&f));
    }
}

#[test]
fn attention_4096_tokens_8_heads_sampled() {
    // SD1.5 level-1 self-attention at 512px: 4096 × 4096 keys, 8 heads of 40. The score matrix
    // would be 512 MiB in f32; the kernel never stores it. Every output must be written; a sample
    // of 64 query rows is checked against the f64 reference.
    let ctx = ctx();
    let mut r = rng("attention_4096_tokens_8_heads_sampled");
    let c = case(1, 4096, 4096, 8, 40, false);
    let dt = DType::F32;
    let (q, k, v) = inputs(&mut r, &c, dt);
    let hd = c.heads * c.d;
    let qt = GpuTensor::from_slice(ctx, &[1, c.sq, hd], &q, dt).unwrap();
    let kt = GpuTensor::from_slice(ctx, &[1, c.sk, hd], &k, dt).unwrap();
    let vt = GpuTensor::from_slice(ctx, &[1, c.sk, hd], &v, dt).unwrap();
    let mut rec = Recorder::new();
    let out = attention(ctx, &mut rec, &qt, &kt, &vt, c.heads, false).unwrap();
    rec.submit(ctx).unwrap();
    let got = out.to_vec(ctx).unwrap();
    if let Some(i) = got.iter().position(|x| !x.is_finite()) {
        panic!("output element {i} is {} (unwritten)", got[i]);
    }
    let mut rows: Vec<usize> = (0..64).map(|i| (i * 4096 / 64 + (i * 37) % 64) % 4096).collect();
    rows.extend([0, 4095]);
    let want = reference::attention::attention_rows(
        &q,
        &k,
        &v,
        1,
        c.sq,
        c.sk,
        c.heads,
        c.d,
        false,
        1.0 / (c.d as f64).sqrt(),
        &rows,
    );
    let sampled: Vec<f32> = rows.iter().flat_map(|&i| got[i * hd..(i + 1) * hd].iter().copied()).collect();
    assert_close("attention 4096x4096 h=8 d=40 f32 (sampled rows)", &sampled, &want, TOL_F32);
}

#[test]
fn attention_more_than_65535_workgroups() {
    // One workgroup per (batch, head, query tile): 70001 batches of 3 queries need 70001
    // workgroups, which the launcher folds into a 2-D grid (f32 only: the folding does not
    // depend on the dtype, and lavapipe pays per workgroup).
    let ctx = ctx();
    let mut r = rng("attention_more_than_65535_workgroups");
    let c = case(70001, 3, 2, 1, 3, true);
    let dt = DType::F32;
    let (q, k, v) = inputs(&mut r, &c, dt);
    let qt = GpuTensor::from_slice(ctx, &[c.b, c.sq, 3], &q, dt).unwrap();
    let kt = GpuTensor::from_slice(ctx, &[c.b, c.sk, 3], &k, dt).unwrap();
    let vt = GpuTensor::from_slice(ctx, &[c.b, c.sk, 3], &v, dt).unwrap();
    let mut rec = Recorder::new();
    let out = attention(ctx, &mut rec, &qt, &kt, &vt, 1, true).unwrap();
    assert!(rec.dispatches.iter().any(|d| d.groups[1] > 1), "expected a folded grid");
    rec.submit(ctx).unwrap();
    let want = reference::attention::attention(&q, &k, &v, c.b, c.sq, c.sk, 1, 3, true, 1.0 / 3f64.sqrt());
    assert_close("attention 70001 workgroups", &out.to_vec(ctx).unwrap(), &want, TOL_F32);
}

/// Compare batches `bs` (all rows) of a big run against the reference.
#[allow(clippy::too_many_arguments)]
fn check_batches(what: &str, got: &[f32], q: &[f32], k: &[f32], v: &[f32], c: &Case, bs: &[usize]) {
    let hd = c.heads * c.d;
    let (qb, kb) = (c.sq * hd, c.sk * hd);
    let mut g = Vec::new();
    let mut w = Vec::new();
    for &bi in bs {
        g.extend_from_slice(&got[bi * qb..(bi + 1) * qb]);
        w.extend(reference::attention::attention(
            &q[bi * qb..(bi + 1) * qb],
            &k[bi * kb..(bi + 1) * kb],
            &v[bi * kb..(bi + 1) * kb],
            1,
            c.sq,
            c.sk,
            c.heads,
            c.d,
            c.causal,
            1.0 / (c.d as f64).sqrt(),
        ));
    }
    assert_close(what, &g, &w, TOL_F32);
}

/// `[false]` where `attention` already runs the tiled kernel for head dim `d`, else `[false,
/// true]`: the default kernel (attention_sg) and then the tiled one.
fn both_kernels(d: usize) -> Vec<bool> {
    if attention_sg::default_rows(ctx(), d).is_some() {
        vec![false, true]
    } else {
        vec![false]
    }
}

/// `attention` (tiled = false) or the tiled kernel with the device's tiling, f32.
fn run_kernel(rec: &mut Recorder, q: &GpuTensor, k: &GpuTensor, v: &GpuTensor, c: &Case, tiled: bool) -> GpuTensor {
    let ctx = ctx();
    if !tiled {
        return attention(ctx, rec, q, k, v, c.heads, c.causal).unwrap();
    }
    let t = Tiling::choose(c.d, c.sq, DType::F32, ctx.caps.max_workgroup_storage, ctx.caps.max_invocations).unwrap();
    let out = GpuTensor::empty(ctx, &q.shape, DType::F32).unwrap();
    attention_tiled(ctx, rec, q, k, v, &out, c.heads, c.causal, 1.0 / (c.d as f32).sqrt(), t).unwrap();
    out
}

#[test]
fn attention_tensors_larger_than_one_binding() {
    let ctx = ctx();
    let dt = DType::F32;
    let elems = (ctx.caps.max_binding / 4) as usize + 4099;
    let mut r = rng("attention_tensors_larger_than_one_binding");
    {
        // q, k, v and out each just over one binding: the launcher splits over batches. Wide
        // rows (8 heads of 160) keep the batch count, the workgroup count and the flops low.
        let c = case(elems.div_ceil(8 * 1280), 8, 8, 8, 160, false);
        let (q, k, v) = inputs(&mut r, &c, dt);
        let hd = c.heads * c.d;
        let qt = GpuTensor::from_slice(ctx, &[c.b, c.sq, hd], &q, dt).unwrap();
        let kt = GpuTensor::from_slice(ctx, &[c.b, c.sk, hd], &k, dt).unwrap();
        let vt = GpuTensor::from_slice(ctx, &[c.b, c.sk, hd], &v, dt).unwrap();
        assert!(!qt.fits_binding(ctx) && !kt.fits_binding(ctx) && !vt.fits_binding(ctx));
        for tiled in both_kernels(c.d) {
            let mut rec = Recorder::new();
            let out = run_kernel(&mut rec, &qt, &kt, &vt, &c, tiled);
            assert!(rec.len() >= 2, "expected a split launch");
            rec.submit(ctx).unwrap();
            let got = out.to_vec(ctx).unwrap();
            drop(out);
            if let Some(i) = got.iter().position(|x| !x.is_finite()) {
                panic!("output element {i} is {} (unwritten, tiled={tiled})", got[i]);
            }
            let per = ctx.caps.max_binding as usize / 4 / (c.sq * hd);
            let mut bs: Vec<usize> =
                [0, 1, per - 1, per, per + 1, c.b / 2, c.b - 1].into_iter().filter(|&i| i < c.b).collect();
            bs.sort();
            bs.dedup();
            check_batches(&format!("attention split over batches (tiled={tiled})"), &got, &q, &k, &v, &c, &bs);
        }
    }
    {
        // One batch whose q/out alone exceed a binding: split over query rows (causal, so the
        // row offset of each window matters).
        let c = case(1, elems.div_ceil(160), 5, 1, 160, true);
        let (q, k, v) = inputs(&mut r, &c, dt);
        let hd = c.heads * c.d;
        let qt = GpuTensor::from_slice(ctx, &[1, c.sq, hd], &q, dt).unwrap();
        let kt = GpuTensor::from_slice(ctx, &[1, c.sk, hd], &k, dt).unwrap();
        let vt = GpuTensor::from_slice(ctx, &[1, c.sk, hd], &v, dt).unwrap();
        assert!(!qt.fits_binding(ctx));
        // Rows around each window boundary plus the first (causal) rows and the last ones.
        let per = ctx.caps.max_binding as usize / 4 / hd;
        let mut rows: Vec<usize> =
            (0..8).chain(per - 300..per + 300).chain(c.sq - 8..c.sq).filter(|&i| i < c.sq).collect();
        rows.sort();
        rows.dedup();
        let scale = 1.0 / (c.d as f64).sqrt();
        let want = reference::attention::attention_rows(&q, &k, &v, 1, c.sq, c.sk, c.heads, c.d, true, scale, &rows);
        for tiled in both_kernels(c.d) {
            let mut rec = Recorder::new();
            let out = run_kernel(&mut rec, &qt, &kt, &vt, &c, tiled);
            assert!(rec.len() >= 2, "expected a split launch");
            rec.submit(ctx).unwrap();
            let got = out.to_vec(ctx).unwrap();
            drop(out);
            if let Some(i) = got.iter().position(|x| !x.is_finite()) {
                panic!("output element {i} is {} (unwritten, tiled={tiled})", got[i]);
            }
            let sampled: Vec<f32> = rows.iter().flat_map(|&i| got[i * hd..(i + 1) * hd].iter().copied()).collect();
            assert_close(&format!("attention split over query rows (causal, tiled={tiled})"), &sampled, &want, TOL_F32);
        }
    }
}

#[test]
fn attention_explicit_scale() {
    let ctx = ctx();
    let mut r = rng("attention_explicit_scale");
    let c = case(2, 70, 23, 2, 7, false);
    let dt = DType::F32;
    let (q, k, v) = inputs(&mut r, &c, dt);
    let qt = GpuTensor::from_slice(ctx, &[2, 70, 14], &q, dt).unwrap();
    let kt = GpuTensor::from_slice(ctx, &[2, 23, 14], &k, dt).unwrap();
    let vt = GpuTensor::from_slice(ctx, &[2, 23, 14], &v, dt).unwrap();
    let mut rec = Recorder::new();
    let out = attention_scaled(ctx, &mut rec, &qt, &kt, &vt, 2, false, 0.9).unwrap();
    rec.submit(ctx).unwrap();
    let want = reference::attention::attention(&q, &k, &v, 2, 70, 23, 2, 7, false, 0.9f32 as f64);
    assert_close("attention scale 0.9", &out.to_vec(ctx).unwrap(), &want, TOL_F32);
}

/// The subgroup kernel's width on this adapter; `None` (the attention_sg tests then only say so)
/// where the adapter has no fixed subgroup width, so the kernel cannot run.
fn sg_lanes() -> Option<u32> {
    let l = attention_sg::lanes(ctx());
    if l.is_none() {
        eprintln!("attention_sg: this adapter has no fixed subgroup width; skipped");
    }
    l
}

#[test]
fn attention_sg_rows_per_lane_awkward_shapes() {
    if sg_lanes().is_none() {
        return;
    }
    // Query counts that are not multiples of SG·rows and key counts that are not multiples of SG
    // (partial last blocks), causal with Sq > Sk and Sq < Sk, several batches and heads; the rows
    // per lane the launcher picks for SD's head dims plus odd ones.
    let mut r = rng("attention_sg_rows_per_lane_awkward_shapes");
    for (c, rows) in [
        (case(2, 100, 77, 8, 40, false), vec![1, 3, attention_sg::rows_for(40)]),
        (case(1, 77, 77, 8, 64, true), vec![attention_sg::rows_for(64), 5]),
        (case(3, 257, 130, 2, 80, true), vec![attention_sg::rows_for(80), 7]),
        (case(1, 130, 257, 1, 160, true), vec![attention_sg::rows_for(160)]),
        (case(2, 33, 9, 3, 4, false), vec![1, 16]),
        (case(1, 1, 1, 1, 8, true), vec![16]),
    ] {
        for rows in rows {
            check_kernel(&mut r, &c, Kernel::Sg(rows));
        }
    }
}

#[test]
fn attention_tiled_kernel_at_sd_head_dims() {
    // On CPU adapters `attention` runs attention_sg, so the tiled kernel (GPUs) is checked here
    // explicitly, with the tiling the device's limits give it.
    let caps = &ctx().caps;
    let mut r = rng("attention_tiled_kernel_at_sd_head_dims");
    for c in [case(2, 100, 77, 8, 40, false), case(1, 77, 77, 8, 64, true), case(1, 257, 130, 2, 80, true)] {
        let f =
            move |dt: DType| Tiling::choose(c.d, c.sq, dt, caps.max_workgroup_storage, caps.max_invocations).unwrap();
        check_kernel(&mut r, &c, Kernel::Tiled(&f));
    }
}

#[test]
fn attention_sg_more_than_65535_workgroups() {
    // One row per lane and 3 queries per batch: 70001 batches need 70001 workgroups, folded into
    // a 2-D grid.
    if sg_lanes().is_none() {
        return;
    }
    let ctx = ctx();
    let mut r = rng("attention_sg_more_than_65535_workgroups");
    let c = case(70001, 3, 2, 1, 4, true);
    let dt = DType::F32;
    let (q, k, v) = inputs(&mut r, &c, dt);
    let qt = GpuTensor::from_slice(ctx, &[c.b, c.sq, 4], &q, dt).unwrap();
    let kt = GpuTensor::from_slice(ctx, &[c.b, c.sk, 4], &k, dt).unwrap();
    let vt = GpuTensor::from_slice(ctx, &[c.b, c.sk, 4], &v, dt).unwrap();
    let out = GpuTensor::empty(ctx, &qt.shape, dt).unwrap();
    let mut rec = Recorder::new();
    attention_sg_into(ctx, &mut rec, &qt, &kt, &vt, &out, 1, true, 0.5, 1).unwrap();
    assert!(rec.dispatches.iter().any(|d| d.groups[1] > 1), "expected a folded grid");
    rec.submit(ctx).unwrap();
    let want = reference::attention_sg::attention(&q, &k, &v, c.b, c.sq, c.sk, 1, 4, true, 0.5);
    assert_close("attention_sg 70001 workgroups", &out.to_vec(ctx).unwrap(), &want, TOL_F32);
}

#[test]
fn attention_sg_expansions_validate() {
    // The launcher expands the template per (D/4, lanes, rows): those texts must be valid WGSL in
    // both dtypes (naga, no device needed), from the smallest body to the largest head dim's.
    use lorafuse::gpu::pipelines::specialize;
    for (d4, sg, rows) in [(1, 8, 1), (10, 8, 16), (16, 16, 3), (40, 8, 2)] {
        let src = attention_sg::expanded_source(d4, sg, rows);
        for dt in [DType::F32, DType::F16] {
            let text = specialize(src, dt).unwrap();
            let module = naga::front::wgsl::parse_str(&text)
                .unwrap_or_else(|e| panic!("d4={d4} sg={sg} rows={rows} {dt:?}: {}", e.emit_to_string(&text)));
            naga::valid::Validator::new(naga::valid::ValidationFlags::all(), naga::valid::Capabilities::all())
                .validate(&module)
                .unwrap_or_else(|e| panic!("d4={d4} sg={sg} rows={rows} {dt:?}: {e:?}"));
        }
    }
}

#[test]
fn attention_sg_rejects_what_it_cannot_run() {
    if sg_lanes().is_none() {
        return;
    }
    let ctx = ctx();
    let f32z = |s: &[usize]| GpuTensor::zeros(ctx, s, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let (q, k, v, o) = (f32z(&[1, 10, 16]), f32z(&[1, 7, 16]), f32z(&[1, 7, 16]), f32z(&[1, 10, 16]));
    let (q6, k6, v6, o6) = (f32z(&[1, 10, 12]), f32z(&[1, 7, 12]), f32z(&[1, 7, 12]), f32z(&[1, 10, 12]));
    let bad = [
        ("rows 0", attention_sg_into(ctx, &mut rec, &q, &k, &v, &o, 2, false, 0.5, 0).error()),
        ("rows 17", attention_sg_into(ctx, &mut rec, &q, &k, &v, &o, 2, false, 0.5, 17).error()),
        ("d % 4", attention_sg_into(ctx, &mut rec, &q6, &k6, &v6, &o6, 2, false, 0.5, 1).error()),
    ];
    for (what, e) in bad {
        assert!(e.to_string().contains("attention_sg"), "{what}: {e}");
    }
    assert!(rec.is_empty());
}

/// The error of a call that must fail (GpuTensor has no Debug, so no `unwrap_err`).
trait MustFail {
    fn error(self) -> lorafuse::Error;
}

impl<T> MustFail for lorafuse::Result<T> {
    fn error(self) -> lorafuse::Error {
        match self {
            Ok(_) => panic!("expected an error"),
            Err(e) => e,
        }
    }
}

#[test]
fn attention_rejects_bad_shapes() {
    let ctx = ctx();
    let f32z = |s: &[usize]| GpuTensor::zeros(ctx, s, DType::F32).unwrap();
    let mut rec = Recorder::new();
    let q = f32z(&[1, 10, 16]);
    let k = f32z(&[1, 7, 16]);
    let v = f32z(&[1, 7, 16]);
    let bad: Vec<(&str, lorafuse::Error)> = vec![
        ("widths", attention(ctx, &mut rec, &q, &f32z(&[1, 7, 12]), &f32z(&[1, 7, 12]), 2, false).error()),
        ("k vs v", attention(ctx, &mut rec, &q, &k, &f32z(&[1, 8, 16]), 2, false).error()),
        ("batch", attention(ctx, &mut rec, &q, &f32z(&[2, 7, 16]), &f32z(&[2, 7, 16]), 2, false).error()),
        ("H·D", attention(ctx, &mut rec, &q, &k, &v, 3, false).error()),
        ("heads=0", attention(ctx, &mut rec, &q, &k, &v, 0, false).error()),
        ("rank", attention(ctx, &mut rec, &f32z(&[10, 16]), &k, &v, 2, false).error()),
        (
            "D>160",
            attention(ctx, &mut rec, &f32z(&[1, 2, 322]), &f32z(&[1, 2, 322]), &f32z(&[1, 2, 322]), 2, false).error(),
        ),
        ("no keys", attention(ctx, &mut rec, &q, &f32z(&[1, 0, 16]), &f32z(&[1, 0, 16]), 2, false).error()),
        ("aliased out", attention_into(ctx, &mut rec, &q, &k, &v, &q, 2, false, 0.5).error()),
        ("out shape", attention_into(ctx, &mut rec, &q, &k, &v, &f32z(&[1, 10, 8]), 2, false, 0.5).error()),
        ("scale", attention_scaled(ctx, &mut rec, &q, &k, &v, 2, false, f32::NAN).error()),
        (
            "tiling",
            attention_tiled(
                ctx,
                &mut rec,
                &q,
                &k,
                &v,
                &f32z(&[1, 10, 16]),
                2,
                false,
                0.5,
                Tiling { bk: 6, ..Tiling::choose(8, 10, DType::F32, 16384, 256).unwrap() },
            )
            .error(),
        ),
    ];
    if ctx.caps.shader_f16 {
        let kh = GpuTensor::zeros(ctx, &[1, 7, 16], DType::F16).unwrap();
        let e = attention(ctx, &mut rec, &q, &kh, &v, 2, false).error();
        assert!(e.to_string().contains("attention"), "dtype: {e}");
    }
    for (what, e) in bad {
        assert!(e.to_string().contains("attention"), "{what}: {e}");
        eprintln!("{what}: {e}");
    }
    assert!(rec.is_empty());
}
