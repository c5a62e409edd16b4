//! The SDXL UNet against the sdxl-tiny golden (diffusers 0.42, float32): `text_time` added
//! conditioning, a level without attention, per-level transformer depths, linear `proj_in/out`.
//! Loaded from the single file and the diffusers folder, in f32 and f16; the added embedding
//! against a CPU computation from the stored weights; the sampler's recorded-graph replay; batch
//! independence; odd, non-square latents; input errors.

mod common;

use std::sync::OnceLock;

use common::{assert_close, ctx, rel_l2};
use lorafuse::models::unet::UNet;
use lorafuse::nn::{AdaptableWeights, Loader};
use lorafuse::weights::detect::{detect, AdditionConfig, UNetConfig};
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::weights::{Component, ModelFiles};
use lorafuse::{DType, GpuTensor, Recorder};

/// The fixture README's bound for one UNet call in float32.
const TOL_GOLDEN_F32: f64 = 1e-3;
/// f16 weights and activations against the f32 golden. As in models_unet.rs the tiny model's
/// bottom level is what amplifies rounding: 8×8 latents reach 2×2 there, where GroupNorm(32) over
/// 64 channels normalizes 8 values per group, and the mid block's two transformer blocks sit on
/// top. Ten times the f32 bound (1e-2) is the budget; measured on lavapipe: 1.3e-3 (single file
/// and folder, the same f16 weights).
const TOL_GOLDEN_F16: f64 = 1e-2;
/// f16 against f32 at the same odd size, same inputs (f16-rounded for both); measured on lavapipe
/// 9×7: 1.5e-3, 5×3: 1.4e-3 (5×3 ends in 2×1 pixels at the bottom, 4 values per group).
const TOL_F16_VS_F32: f64 = 1e-2;
/// Runs that must give the same numbers up to f32 summation order.
const TOL_SAME: f64 = 1e-5;
/// The added embedding against its f64 CPU computation (a sinusoid and two small GEMMs).
const TOL_CPU: f64 = 1e-5;
/// The golden's timestep.
const T: f32 = 500.0;
/// Context width: the two text encoders' 64 each.
const CTX_DIM: usize = 128;
const POOLED: usize = 64;

fn fixture(name: &str) -> String {
    format!("{}/tests/fixtures/sdxl-tiny/{name}", env!("CARGO_MANIFEST_DIR"))
}

struct Golden {
    x: Vec<f32>,
    ctx: Vec<f32>,
    text_embeds: Vec<f32>,
    time_ids: Vec<f32>,
    eps: Vec<f32>,
}

fn golden() -> &'static Golden {
    static G: OnceLock<Golden> = OnceLock::new();
    G.get_or_init(|| {
        let f = SafeTensorsFile::open(fixture("golden.safetensors")).expect("golden.safetensors");
        let read = |n: &str, shape: &[usize]| {
            assert_eq!(f.info(n).unwrap_or_else(|| panic!("{n} missing")).shape, shape, "{n}");
            f.read_f32(n).unwrap_or_else(|e| panic!("{n}: {e}"))
        };
        let g = Golden {
            x: read("unet_x", &[2, 4, 8, 8]),
            ctx: read("unet_ctx", &[2, 77, CTX_DIM]),
            text_embeds: read("unet_text_embeds", &[2, POOLED]),
            time_ids: read("unet_time_ids", &[2, 6]),
            eps: read("unet_eps_t500", &[2, 4, 8, 8]),
        };
        assert_eq!(g.time_ids, [64.0, 64.0, 0.0, 0.0, 64.0, 64.0].repeat(2));
        g
    })
}

/// Opens `path`, loads its UNet as `dtype`, and checks that every UNet weight was read and that
/// `add_embedding`'s linears are registered with LoRA slots like the other linears.
fn load(path: &str, dtype: DType) -> (UNet, UNetConfig) {
    let files = ModelFiles::open(path).expect("open model");
    let cfg = detect(&files).expect("detect").unet;
    let adaptable = AdaptableWeights::default();
    let l = Loader::new(ctx(), files.unet(), &adaptable, dtype);
    let unet = UNet::load(&l, &cfg).expect("load UNet");
    let unused: Vec<String> = files
        .unused_keys()
        .into_iter()
        .filter(|k| k.starts_with("unet/") || k.starts_with("model.diffusion_model."))
        .collect();
    assert!(unused.is_empty(), "UNet weights never read: {unused:?}");
    for p in ["add_embedding.linear_1.weight", "add_embedding.linear_2.weight"] {
        let e = adaptable.get(Component::Unet, p).unwrap_or_else(|| panic!("{p} not registered"));
        assert!(e.slot.is_some(), "{p} registered without a LoRA slot");
    }
    (unet, cfg)
}

fn single_f32() -> &'static (UNet, UNetConfig) {
    static U: OnceLock<(UNet, UNetConfig)> = OnceLock::new();
    U.get_or_init(|| load(&fixture("model-fp16.safetensors"), DType::F32))
}

fn up(data: &[f32], shape: &[usize], dtype: DType) -> GpuTensor {
    GpuTensor::from_slice(ctx(), shape, data, dtype).expect("upload")
}

/// The golden's inputs for items `items` (a range of the batch) as `dtype` tensors:
/// latents, context, pooled text embeddings, and the time ids.
struct Inputs {
    x: GpuTensor,
    c: GpuTensor,
    te: GpuTensor,
    ids: Vec<f32>,
}

fn golden_inputs(items: std::ops::Range<usize>, dtype: DType) -> Inputs {
    let g = golden();
    let n = items.len();
    let part = |v: &[f32], per: usize| v[items.start * per..items.end * per].to_vec();
    Inputs {
        x: up(&part(&g.x, 4 * 64), &[n, 4, 8, 8], dtype),
        c: up(&part(&g.ctx, 77 * CTX_DIM), &[n, 77, CTX_DIM], dtype),
        te: up(&part(&g.text_embeds, POOLED), &[n, POOLED], dtype),
        ids: part(&g.time_ids, 6),
    }
}

/// The added embedding, then one forward pass: the output, its shape and the dispatches recorded.
fn run(unet: &UNet, i: &Inputs, t: &[f32]) -> (Vec<f32>, Vec<usize>, usize) {
    let mut rec = Recorder::new();
    let added = unet.added_embedding(ctx(), &mut rec, &i.te, &i.ids).expect("added_embedding").expect("SDXL");
    let y = unet.forward(ctx(), &mut rec, &i.x, t, &i.c, Some(&added)).expect("forward");
    let n = rec.len();
    rec.submit(ctx()).expect("submit");
    (y.to_vec(ctx()).expect("read back"), y.shape.clone(), n)
}

fn check_golden(what: &str, unet: &UNet, dtype: DType, tol: f64) {
    let (got, shape, n) = run(unet, &golden_inputs(0..2, dtype), &[T, T]);
    assert_eq!(shape, [2, 4, 8, 8]);
    assert_close(&format!("{what} eps t=500 ({n} dispatches)"), &got, &golden().eps, tol);
}

#[test]
fn golden_single_file_f32() {
    let (unet, cfg) = single_f32();
    // The fixture's architecture as detected: what this test exercises.
    assert_eq!(cfg.block_out_channels, [32, 64, 64]);
    assert_eq!(cfg.down_cross_attention, [false, true, true]);
    assert_eq!(cfg.up_cross_attention, [true, true, false]);
    assert_eq!(
        (cfg.down_transformer_depth.as_slice(), cfg.up_transformer_depth.as_slice()),
        (&[0, 1, 2][..], &[2, 1, 0][..])
    );
    assert_eq!(cfg.mid_transformer_depth, 2);
    assert_eq!(cfg.heads, [1, 1, 1]);
    assert!(cfg.use_linear_projection);
    assert_eq!(cfg.addition, Some(AdditionConfig { time_embed_dim: 8, in_dim: POOLED + 6 * 8 }));
    check_golden("single file f32", unet, DType::F32, TOL_GOLDEN_F32);
}

#[test]
fn golden_folder_f32() {
    let (unet, cfg) = load(&fixture("model"), DType::F32);
    assert_eq!(&cfg, &single_f32().1, "folder and single file detect different UNets");
    check_golden("folder f32", &unet, DType::F32, TOL_GOLDEN_F32);
}

#[test]
fn golden_f16() {
    if !ctx().caps.shader_f16 {
        // The f32 tests still run; this adapter simply cannot store f16.
        eprintln!("adapter lacks SHADER_F16: f16 UNet not run");
        return;
    }
    for (what, path) in [("single file f16", "model-fp16.safetensors"), ("folder f16", "model")] {
        let (unet, _) = load(&fixture(path), DType::F16);
        check_golden(what, &unet, DType::F16, TOL_GOLDEN_F16);
    }
}

/// diffusers' `get_aug_embed` in f64 from the folder's stored weights: sinusoids of the time ids
/// (cos half first), after the pooled embedding, through linear_1, SiLU, linear_2.
fn added_reference(text_embeds: &[f32], time_ids: &[f32], d: usize) -> Vec<f32> {
    let f = SafeTensorsFile::open(fixture("model/unet/diffusion_pytorch_model.safetensors")).expect("unet weights");
    let w = |n: &str| f.read_f32(&format!("add_embedding.{n}")).unwrap_or_else(|e| panic!("{n}: {e}"));
    let (w1, b1, w2, b2) = (w("linear_1.weight"), w("linear_1.bias"), w("linear_2.weight"), w("linear_2.bias"));
    let lin = |x: &[f64], wt: &[f32], b: &[f32]| -> Vec<f64> {
        (0..b.len())
            .map(|o| b[o] as f64 + x.iter().zip(&wt[o * x.len()..]).map(|(a, w)| a * *w as f64).sum::<f64>())
            .collect()
    };
    let half = d / 2;
    let mut out = Vec::new();
    for (te, ids) in text_embeds.chunks(POOLED).zip(time_ids.chunks(6)) {
        let mut x: Vec<f64> = te.iter().map(|&v| v as f64).collect();
        for &t in ids {
            let freq = |i: usize| (-(10000f64.ln()) * i as f64 / half as f64).exp() * t as f64;
            x.extend((0..half).map(|i| freq(i).cos()));
            x.extend((0..half).map(|i| freq(i).sin()));
        }
        let h: Vec<f64> = lin(&x, &w1, &b1).into_iter().map(|v| v / (1.0 + (-v).exp())).collect();
        out.extend(lin(&h, &w2, &b2).into_iter().map(|v| v as f32));
    }
    out
}

/// The added embedding alone: the golden's inputs, and SDXL-sized time ids (1024-pixel sizes,
/// uneven crops) where the sinusoid's arguments reach 1024 rad.
#[test]
fn added_embedding_matches_cpu() {
    let (unet, cfg) = single_f32();
    let d = cfg.addition.as_ref().expect("addition").time_embed_dim;
    let g = golden();
    let te = up(&g.text_embeds, &[2, POOLED], DType::F32);
    let sizes = [1024.0, 832.0, 37.0, 5.0, 1024.0, 1216.0, 896.0, 1152.0, 0.0, 0.0, 768.0, 1344.0];
    for (what, ids) in [("golden time ids", &g.time_ids[..]), ("SDXL-sized time ids", &sizes[..])] {
        let mut rec = Recorder::new();
        let a = unet.added_embedding(ctx(), &mut rec, &te, ids).unwrap().unwrap();
        assert_eq!(a.shape, [2, cfg.time_embed_dim]);
        rec.submit(ctx()).unwrap();
        let want = added_reference(&g.text_embeds, ids, d);
        assert_close(&format!("added embedding, {what}"), &a.to_vec(ctx()).unwrap(), &want, TOL_CPU);
    }
}

/// The golden would not notice an added embedding that barely moves the output: here dropping it
/// must move the output by far more than the golden's bound (measured: 9.8e-2).
#[test]
fn added_embedding_matters() {
    let (unet, cfg) = single_f32();
    let i = golden_inputs(0..2, DType::F32);
    let zero = GpuTensor::zeros(ctx(), &[2, cfg.time_embed_dim], DType::F32).unwrap();
    let mut rec = Recorder::new();
    let y = unet.forward(ctx(), &mut rec, &i.x, &[T, T], &i.c, Some(&zero)).unwrap();
    rec.submit(ctx()).unwrap();
    let e = rel_l2(&y.to_vec(ctx()).unwrap(), &golden().eps);
    eprintln!("zero added embedding vs golden: relative L2 {e:.3e}");
    assert!(e > 10.0 * TOL_GOLDEN_F32, "the added embedding moves the output by only {e:.3e}");
}

/// The sampler's pattern: the added embedding once, `forward_with_temb` recorded once, then per
/// step `time_embedding_into` (with the added embedding) and a replay; each step must equal a
/// direct forward at its timestep, and t=500 the golden.
#[test]
fn split_forward_and_replay() {
    let (unet, cfg) = single_f32();
    let i = golden_inputs(0..2, DType::F32);
    let mut rec = Recorder::new();
    let added = unet.added_embedding(ctx(), &mut rec, &i.te, &i.ids).unwrap().unwrap();
    let temb = unet.time_embedding(ctx(), &mut rec, &[999.0, 999.0], Some(&added)).unwrap();
    assert_eq!(temb.shape, [2, cfg.time_embed_dim]);
    rec.submit(ctx()).unwrap();
    let mut graph = Recorder::new();
    let y = unet.forward_with_temb(ctx(), &mut graph, &i.x, &temb, &i.c).unwrap();
    let direct: Vec<(f32, Vec<f32>)> = [999.0, T, 1.0].iter().map(|&t| (t, run(unet, &i, &[t, t]).0)).collect();
    assert_close("direct forward t=500 vs golden", &direct[1].1, &golden().eps, TOL_GOLDEN_F32);
    for round in 0..2 {
        for (t, want) in &direct {
            let mut step = Recorder::new();
            unet.time_embedding_into(ctx(), &mut step, &[*t, *t], Some(&added), &temb).unwrap();
            let per_step = step.len();
            step.submit(ctx()).unwrap();
            graph.replay(ctx()).unwrap();
            let what = format!("replay {round}, t={t} ({per_step} dispatches per step)");
            assert_close(&what, &y.to_vec(ctx()).unwrap(), want, TOL_SAME);
        }
    }
}

/// Each item alone (its own latents, context, pooled embedding, time ids and timestep) equals
/// its row of a batch-2 run; item 0 at t=500 is the golden's item 0.
#[test]
fn batch_items_are_independent() {
    let (unet, _) = single_f32();
    let mut i = golden_inputs(0..2, DType::F32);
    // Item 1 gets other sizes, so a mix-up of the time ids between items would show.
    i.ids[6..].copy_from_slice(&[128.0, 96.0, 8.0, 0.0, 64.0, 48.0]);
    let ts = [T, 20.0];
    let (both, _, _) = run(unet, &i, &ts);
    let half = both.len() / 2;
    assert_close("batch item 0 vs golden", &both[..half], &golden().eps[..half], TOL_GOLDEN_F32);
    for k in 0..2 {
        let mut one = golden_inputs(k..k + 1, DType::F32);
        one.ids = i.ids[k * 6..(k + 1) * 6].to_vec();
        let (got, shape, _) = run(unet, &one, &ts[k..k + 1]);
        assert_eq!(shape, [1, 4, 8, 8]);
        assert_close(&format!("batch item {k} alone"), &got, &both[k * half..(k + 1) * half], TOL_SAME);
    }
}

/// Odd, non-square latents (9×7 → 5×4 → 3×2, 5×3 → 3×2 → 2×1): the upsamplers resize to each
/// skip's size. No golden exists for them; f16 must agree with f32 on the same (f16-rounded)
/// inputs, and the output must have the input's size.
#[test]
fn odd_non_square_latents() {
    let (u32_, _) = single_f32();
    let u16_ = ctx().caps.shader_f16.then(|| load(&fixture("model-fp16.safetensors"), DType::F16).0);
    let g = golden();
    let mut rng = common::rng("odd_non_square_latents");
    let cs: Vec<f32> = g.ctx.iter().map(|&v| DType::F16.round(v)).collect();
    let te: Vec<f32> = g.text_embeds.iter().map(|&v| DType::F16.round(v)).collect();
    for (h, w) in [(9, 7), (5, 3)] {
        let xs = common::rand_vec(&mut rng, 2 * 4 * h * w, 1.0, DType::F16);
        let ids = [8.0 * h as f32, 8.0 * w as f32, 0.0, 0.0, 8.0 * h as f32, 8.0 * w as f32].repeat(2);
        let inputs = |dt| Inputs {
            x: up(&xs, &[2, 4, h, w], dt),
            c: up(&cs, &[2, 77, CTX_DIM], dt),
            te: up(&te, &[2, POOLED], dt),
            ids: ids.clone(),
        };
        let (a, shape, n) = run(u32_, &inputs(DType::F32), &[700.0, 20.0]);
        assert_eq!(shape, [2, 4, h, w]);
        let norm = rel_l2(&a, &vec![0.0; a.len()]);
        assert!(norm > 0.0, "{h}×{w}: all-zero output");
        eprintln!("{h}×{w} latents: {n} dispatches, output norm {norm:.3}");
        match &u16_ {
            Some(u) => {
                let (b, shape, _) = run(u, &inputs(DType::F16), &[700.0, 20.0]);
                assert_eq!(shape, [2, 4, h, w]);
                assert_close(&format!("f16 vs f32, {h}×{w}"), &b, &a, TOL_F16_VS_F32);
            }
            None => eprintln!("adapter lacks SHADER_F16: f16 {h}×{w} not run"),
        }
    }
}

#[test]
fn bad_inputs_are_errors() {
    let (unet, cfg) = single_f32();
    let c = ctx();
    let i = golden_inputs(0..2, DType::F32);
    let t = cfg.time_embed_dim;
    let mut rec = Recorder::new();
    let good = {
        let mut r = Recorder::new();
        let a = unet.added_embedding(c, &mut r, &i.te, &i.ids).unwrap().unwrap();
        r.submit(c).unwrap();
        a
    };
    let temb = GpuTensor::zeros(c, &[2, t], DType::F32).unwrap();
    let show = |what: &str, r: lorafuse::Result<()>| match r {
        Err(e) => eprintln!("{what}: {e}"),
        Ok(()) => panic!("{what}: accepted"),
    };
    // An SDXL UNet without its added embedding would return wrong noise: refused everywhere.
    show("forward without added", unet.forward(c, &mut rec, &i.x, &[T, T], &i.c, None).map(drop));
    show("time_embedding without added", unet.time_embedding(c, &mut rec, &[T, T], None).map(drop));
    show("time_embedding_into without added", unet.time_embedding_into(c, &mut rec, &[T, T], None, &temb));
    // The added embedding's inputs.
    let mut added = |te: &GpuTensor, ids: &[f32]| unet.added_embedding(c, &mut rec, te, ids).map(drop);
    show("text_embeds width 32", added(&GpuTensor::zeros(c, &[2, 32], DType::F32).unwrap(), &i.ids));
    show("text_embeds rank 3", added(&GpuTensor::zeros(c, &[2, 1, POOLED], DType::F32).unwrap(), &i.ids));
    show("text_embeds batch 0", added(&GpuTensor::zeros(c, &[0, POOLED], DType::F32).unwrap(), &[]));
    show("11 time ids for 2 items", added(&i.te, &i.ids[..11]));
    show("6 time ids for 2 items", added(&i.te, &i.ids[..6]));
    show("NaN time id", added(&i.te, &[f32::NAN; 12]));
    if c.caps.shader_f16 {
        show(
            "f16 text_embeds into an f32 UNet",
            added(&GpuTensor::zeros(c, &[2, POOLED], DType::F16).unwrap(), &i.ids),
        );
    }
    // An added embedding that does not fit the time embedding.
    let wrong = GpuTensor::zeros(c, &[2, POOLED], DType::F32).unwrap();
    show("added [2, 64]", unet.time_embedding(c, &mut rec, &[T, T], Some(&wrong)).map(drop));
    show("added for 2 items, 1 timestep", unet.time_embedding(c, &mut rec, &[T], Some(&good)).map(drop));
    show("forward, 1 timestep for 2 items", unet.forward(c, &mut rec, &i.x, &[T], &i.c, Some(&good)).map(drop));
    assert!(rec.is_empty(), "{} dispatches recorded by calls that failed", rec.len());
    // And an SD1 UNet refuses one.
    let sd1 = format!("{}/tests/fixtures/sd15-tiny/model-fp16.safetensors", env!("CARGO_MANIFEST_DIR"));
    let files = ModelFiles::open(&sd1).unwrap();
    let sd1_cfg = detect(&files).unwrap().unet;
    let l = Loader::new(c, files.unet(), &AdaptableWeights::default(), DType::F32);
    let sd1_unet = UNet::load(&l, &sd1_cfg).unwrap();
    let mut r = Recorder::new();
    assert!(sd1_unet.added_embedding(c, &mut r, &i.te, &i.ids).unwrap().is_none(), "SD1 UNet made an added embedding");
    let sd1_added = GpuTensor::zeros(c, &[2, sd1_cfg.time_embed_dim], DType::F32).unwrap();
    show("added embedding into an SD1 UNet", sd1_unet.time_embedding(c, &mut r, &[T, T], Some(&sd1_added)).map(drop));
    assert!(r.is_empty());
}
