//! The LoRA families SD1.x accepts, on SDXL. The sdxl-tiny fixture ships kohya LoRA and LoCon
//! files only, so the other layouts are built here from them with an exactly equal ΔW:
//! - kohya's diffusers spelling (`lora_unet_down_blocks_…` instead of `lora_unet_input_blocks_…`);
//! - LoHa: (up·down) ⊙ (ones/r · ones) = up·down, same alpha and rank;
//! - LoKr: kron([[1]], up·down) = up·down, the factored w2 carrying the rank.
//!
//! Each must give diffusers' image for the fixture's LoRA runs (≤ 5e-3, the fixture bound) and
//! the kohya file's own image (≤ 1e-4: only the order of the f32 arithmetic differs), merged and
//! fused, conv modules included. DoRA's magnitude step is checked on an OpenCLIP attention
//! weight (split out of the fused `in_proj`) and on a UNet one, against the formula.

mod common;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::{assert_close, ctx, golden_in, run_request_in, write_f32_safetensors};
use lorafuse::lora::{LoraFile, LoraMode, LoraSpec};
use lorafuse::pipeline::request::{Precision, Request};
use lorafuse::pipeline::txt2img::Pipeline;
use lorafuse::weights::{Component, ModelFiles, SafeTensorsFile};
use lorafuse::HostTensor;

fn fix() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl-tiny")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-sdxl-formats-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn golden(name: &str) -> Option<HostTensor> {
    golden_in(&fix(), name)
}

type Tensors = Vec<(String, Vec<usize>, Vec<f32>)>;

#[derive(Clone, Copy, Debug, PartialEq)]
enum Layout {
    DiffusersNames,
    LoHa,
    LoKr,
}

/// The kohya file `src` rewritten in `layout`, with the same ΔW per module; returns how many
/// modules were rewritten.
fn convert(src: &Path, dst: &Path, layout: Layout) -> usize {
    let model = ModelFiles::open(fix().join("model-fp16.safetensors")).unwrap();
    let lora = LoraFile::open(src, &model).unwrap();
    let f = SafeTensorsFile::open(src).unwrap();
    let mut out: Tensors = Vec::new();
    for m in &lora.modules {
        let down_name = format!("{}.lora_down.weight", m.key);
        let up_name = format!("{}.lora_up.weight", m.key);
        let (down_shape, up_shape) =
            (f.info(&down_name).unwrap().shape.clone(), f.info(&up_name).unwrap().shape.clone());
        let (down, up) = (f.read_f32(&down_name).unwrap(), f.read_f32(&up_name).unwrap());
        let alpha = f.read_f32(&format!("{}.alpha", m.key)).unwrap();
        let r = down_shape[0];
        let rest = down.len() / r;
        let outc = up_shape[0];
        let key = match (layout, m.component) {
            (Layout::DiffusersNames, Component::Unet) => {
                format!("lora_unet_{}", m.target.strip_suffix(".weight").unwrap().replace('.', "_"))
            }
            _ => m.key.clone(),
        };
        out.push((format!("{key}.alpha"), vec![], alpha));
        match layout {
            Layout::DiffusersNames => {
                out.push((format!("{key}.lora_down.weight"), down_shape, down));
                out.push((format!("{key}.lora_up.weight"), up_shape, up));
            }
            Layout::LoHa => {
                out.push((format!("{key}.hada_w1_a"), vec![outc, r], up));
                out.push((format!("{key}.hada_w1_b"), vec![r, rest], down));
                out.push((format!("{key}.hada_w2_a"), vec![outc, r], vec![1.0 / r as f32; outc * r]));
                out.push((format!("{key}.hada_w2_b"), vec![r, rest], vec![1.0; r * rest]));
            }
            Layout::LoKr => {
                out.push((format!("{key}.lokr_w1"), vec![1, 1], vec![1.0]));
                out.push((format!("{key}.lokr_w2_a"), vec![outc, r], up));
                out.push((format!("{key}.lokr_w2_b"), vec![r, rest], down));
            }
        }
    }
    let meta: HashMap<String, String> = f.metadata().clone().into_iter().collect();
    write_f32_safetensors(dst, &out, meta);
    lora.modules.len()
}

fn request(name: &str, run: &serde_json::Value, mode: LoraMode, dir: &Path) -> Request {
    let mut r = run_request_in(&fix(), run, name);
    r.lora_mode = mode;
    r.loras = run["loras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            LoraSpec::weights(
                dir.join(Path::new(l["file"].as_str().unwrap()).file_name().unwrap()),
                l["unet_weight"].as_f64().unwrap() as f32,
                l["text_encoder_weight"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    assert!(!r.loras.is_empty(), "{name} has LoRAs");
    r
}

#[test]
fn every_lora_family_matches_diffusers_on_sdxl_merged_and_fused() {
    let ctx = ctx();
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fix().join("runs.json")).unwrap()).unwrap();
    let lora_runs: Vec<(&String, &serde_json::Value)> =
        runs.as_object().unwrap().iter().filter(|(_, r)| r.get("loras").is_some()).collect();
    assert!(lora_runs.len() >= 2, "the fixture has the kohya LoRA and the LoCon stack runs");
    let layouts = [Layout::DiffusersNames, Layout::LoHa, Layout::LoKr];
    let mut dirs = Vec::new();
    for layout in layouts {
        let d = scratch(&format!("{layout:?}"));
        for file in ["kohya_lora", "kohya_locon"] {
            let src = fix().join(format!("loras/{file}.safetensors"));
            let n = convert(&src, &d.join(format!("{file}.safetensors")), layout);
            assert!(n > 100, "{file}: {n} modules");
        }
        dirs.push(d);
    }
    let pipe = Pipeline::load(ctx, &fix().join("model-fp16.safetensors"), Precision::F32).unwrap();
    for (name, run) in &lora_runs {
        for mode in [LoraMode::Merged, LoraMode::Fused] {
            let kohya = pipe.generate(ctx, &request(name, run, mode, &fix().join("loras")), &mut |_| {}).unwrap();
            let want = golden(&format!("{name}_image")).unwrap();
            for (layout, dir) in layouts.iter().zip(&dirs) {
                let out = pipe.generate(ctx, &request(name, run, mode, dir), &mut |_| {}).unwrap();
                for (l, k) in out.lora_report.loras.iter().zip(&kohya.lora_report.loras) {
                    assert!(l.applied == l.total && l.total > 0, "{layout:?} {}: {}/{}", l.name, l.applied, l.total);
                    assert_eq!(l.applied, k.applied, "{layout:?} {}: same modules as the kohya file", l.name);
                }
                let what = format!("{name} {layout:?} [{}]", mode.name());
                assert_close(&format!("{what} vs diffusers"), &out.images[0].data, &want.data, 5e-3);
                assert_close(&format!("{what} vs kohya file"), &out.images[0].data, &kohya.images[0].data, 1e-4);
            }
        }
    }
    for d in dirs {
        std::fs::remove_dir_all(d).unwrap();
    }
}

/// DoRA: W + μ·(V·m/‖V‖ − W), V = W + ΔW, per output row, on text encoder 2's query projection
/// (cut out of OpenCLIP's fused in_proj at load) and a UNet cross-attention key.
#[test]
fn dora_on_sdxl_follows_the_magnitude_formula() {
    let ctx = ctx();
    let d = scratch("dora");
    let src = fix().join("loras/kohya_lora.safetensors");
    let model = ModelFiles::open(fix().join("model-fp16.safetensors")).unwrap();
    let lora = LoraFile::open(&src, &model).unwrap();
    let pick = |c: Component, needle: &str| {
        let m = lora.modules.iter().find(|m| m.component == c && m.target.contains(needle)).unwrap();
        (m.key.clone(), m.target.clone())
    };
    let chosen = [
        (Component::TextEncoder2, pick(Component::TextEncoder2, "layers.1.self_attn.q_proj")),
        (Component::Unet, pick(Component::Unet, "attn2.to_k")),
    ];
    let pipe = Pipeline::load(ctx, &fix().join("model-fp16.safetensors"), Precision::F32).unwrap();
    let f = SafeTensorsFile::open(&src).unwrap();
    let mut all: Tensors = f.tensors().map(|(n, i)| (n.to_string(), i.shape.clone(), f.read_f32(n).unwrap())).collect();
    let mut base = Vec::new();
    for (c, (key, target)) in &chosen {
        let e = pipe.adaptable.get(*c, target).unwrap();
        let (n, k) = (e.tensor.shape[0], e.tensor.shape[1..].iter().product::<usize>());
        let w0 = e.tensor.to_vec(ctx).unwrap();
        let m: Vec<f32> = (0..n)
            .map(|r| {
                let norm = w0[r * k..(r + 1) * k].iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
                (norm * (0.6 + 0.8 * (r % 7) as f64 / 6.0)) as f32
            })
            .collect();
        all.push((format!("{key}.dora_scale"), vec![n, 1], m.clone()));
        base.push((w0, m, n, k));
    }
    let dst = d.join("dora_xl.safetensors");
    write_f32_safetensors(&dst, &all, HashMap::new());
    let mu = 0.7f32;
    for mode in [LoraMode::Merged, LoraMode::Fused] {
        pipe.set_loras(ctx, &[LoraSpec::new(&dst, mu)], mode, false).unwrap();
        let (file, _) = pipe.lora_file(&LoraSpec::new(&dst, mu)).unwrap();
        for ((c, (key, target)), (w0, m, n, k)) in chosen.iter().zip(&base) {
            let got = pipe.adaptable.get(*c, target).unwrap().tensor.to_vec(ctx).unwrap();
            let md = file.modules.iter().find(|x| &x.key == key).unwrap();
            assert!(md.dora_scale.is_some(), "{key}: dora_scale was not read");
            let delta = md.delta().unwrap();
            let mut want = vec![0f32; n * k];
            for r in 0..*n {
                let v: Vec<f64> = (0..*k).map(|j| w0[r * k + j] as f64 + delta.data[r * k + j] as f64).collect();
                let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt() + f32::EPSILON as f64;
                for j in 0..*k {
                    let w = w0[r * k + j] as f64;
                    want[r * k + j] = (w + mu as f64 * (v[j] * m[r] as f64 / norm - w)) as f32;
                }
            }
            assert_close(&format!("DoRA {target} ({})", mode.name()), &got, &want, 1e-6);
        }
        // The whole LoRA still runs with the DoRA modules in it, and they change the image.
        let mut req = Request::new("a lighthouse");
        (req.width, req.height, req.steps, req.seed) = (64, 48, 2, 5);
        req.lora_mode = mode;
        req.loras = vec![LoraSpec::new(&src, mu)];
        let plain = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
        req.loras = vec![LoraSpec::new(&dst, mu)];
        let dora = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
        assert!(dora.images[0].data.iter().all(|v| v.is_finite()));
        assert_ne!(dora.images[0].data, plain.images[0].data, "DoRA made no difference ({})", mode.name());
        pipe.clear_loras(ctx).unwrap();
        for ((c, (_, target)), (w0, ..)) in chosen.iter().zip(&base) {
            assert_eq!(&pipe.adaptable.get(*c, target).unwrap().tensor.to_vec(ctx).unwrap(), w0, "restored");
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}
