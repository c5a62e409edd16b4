//! Adapter variants without a fixture of their own, built here from the fixture LoRAs: PEFT's
//! per-module `alpha_pattern`, and DoRA's magnitude step checked against the formula
//! W + μ·(V·m/‖V‖ − W), V = W + ΔW, on the weight the GPU merge produced.

mod common;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

use common::*;
use lorafuse::lora::{LoraFile, LoraMode, LoraSpec};
use lorafuse::pipeline::request::Precision;
use lorafuse::pipeline::txt2img::Pipeline;
use lorafuse::weights::{Component, ModelFiles, SafeTensorsFile};

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny")
}

/// Every tensor of `src` as f32 plus `extra`, with `meta`, written to `dst`.
fn rewrite(src: &Path, dst: &Path, extra: Vec<(String, Vec<usize>, Vec<f32>)>, meta: HashMap<String, String>) {
    let f = SafeTensorsFile::open(src).unwrap();
    let mut all: Vec<(String, Vec<usize>, Vec<f32>)> =
        f.tensors().map(|(n, i)| (n.to_string(), i.shape.clone(), f.read_f32(n).unwrap())).collect();
    all.extend(extra);
    write_f32_safetensors(dst, &all, meta);
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-lora-formats-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

#[test]
fn peft_alpha_pattern_overrides_alpha_per_module() {
    let src = fixtures().join("loras/peft_lora.safetensors");
    let f = SafeTensorsFile::open(&src).unwrap();
    let mut meta: HashMap<String, String> = f.metadata().clone().into_iter().collect();
    let mut cfg: serde_json::Value = serde_json::from_str(&meta["lora_adapter_metadata"]).unwrap();
    let base_alpha = cfg["unet.lora_alpha"].as_f64().unwrap() as f32;
    cfg["unet.alpha_pattern"] = serde_json::json!({ "attn1.to_q": 2.0 });
    meta.insert("lora_adapter_metadata".into(), cfg.to_string());
    let dst = tmp("peft_pattern.safetensors");
    rewrite(&src, &dst, Vec::new(), meta);
    let model = ModelFiles::open(fixtures().join("model-fp16.safetensors")).unwrap();
    let lora = LoraFile::open(&dst, &model).unwrap();
    let (mut hit, mut other) = (0, 0);
    for m in lora.modules.iter().filter(|m| m.component == Component::Unet) {
        let want = if m.target.ends_with("attn1.to_q.weight") { 2.0 } else { base_alpha } / m.rank as f32;
        assert_eq!(m.scale, want, "{}: scale", m.key);
        if m.target.ends_with("attn1.to_q.weight") {
            hit += 1;
        } else {
            other += 1;
        }
    }
    assert!(hit > 0 && other > 0, "pattern matched {hit}, others {other}");
}

#[test]
fn dora_merge_follows_the_magnitude_formula() {
    let ctx = ctx();
    let src = fixtures().join("loras/kohya_lora.safetensors");
    let module = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    let target = "text_model.encoder.layers.0.self_attn.q_proj.weight";
    let pipe = Pipeline::load(ctx, &fixtures().join("model-fp16.safetensors"), Precision::F32).unwrap();
    let entry = pipe.adaptable.get(Component::TextEncoder, target).unwrap();
    let (n, k) = (entry.tensor.shape[0], entry.tensor.shape[1]);
    let w0 = entry.tensor.to_vec(ctx).unwrap();
    // Magnitudes near the rows' norms, per output row (LyCORIS wd_on_out / PEFT layout).
    let m: Vec<f32> = (0..n)
        .map(|r| {
            let norm = w0[r * k..(r + 1) * k].iter().map(|v| (*v as f64).powi(2)).sum::<f64>().sqrt();
            (norm * (0.7 + 0.6 * (r % 5) as f64 / 4.0)) as f32
        })
        .collect();
    let dst = tmp("dora.safetensors");
    rewrite(&src, &dst, vec![(format!("{module}.dora_scale"), vec![n, 1], m.clone())], HashMap::new());

    let mu = 0.8f32;
    for mode in [LoraMode::Merged, LoraMode::Fused] {
        let (used, report) = pipe.set_loras(ctx, &[LoraSpec::new(&dst, mu)], mode, false).unwrap();
        assert_eq!(used.len(), 1);
        assert!(report.merged_weights > 0);
        let got = entry.tensor.to_vec(ctx).unwrap();
        let (file, _) = pipe.lora_file(&LoraSpec::new(&dst, mu)).unwrap();
        let md = file.modules.iter().find(|x| x.key == module).unwrap();
        assert!(md.dora_scale.is_some(), "dora_scale was not read");
        let d = md.delta().unwrap();
        let mut want = vec![0f32; n * k];
        for r in 0..n {
            let v: Vec<f64> = (0..k).map(|j| w0[r * k + j] as f64 + d.data[r * k + j] as f64).collect();
            let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt() + f32::EPSILON as f64;
            for j in 0..k {
                let w = w0[r * k + j] as f64;
                want[r * k + j] = (w + mu as f64 * (v[j] * m[r] as f64 / norm - w)) as f32;
            }
        }
        assert_close(&format!("DoRA-merged q_proj ({})", mode.name()), &got, &want, 1e-6);
        // A plain module of the same file is applied as usual next to it.
        let plain = "text_model.encoder.layers.0.self_attn.k_proj.weight";
        let e2 = pipe.adaptable.get(Component::TextEncoder, plain).unwrap();
        let changed = mode == LoraMode::Merged;
        pipe.clear_loras(ctx).unwrap();
        let base = e2.tensor.to_vec(ctx).unwrap();
        pipe.set_loras(ctx, &[LoraSpec::new(&dst, mu)], mode, false).unwrap();
        assert_eq!(e2.tensor.to_vec(ctx).unwrap() != base, changed, "{plain} in {} mode", mode.name());
        pipe.clear_loras(ctx).unwrap();
        assert_eq!(entry.tensor.to_vec(ctx).unwrap(), w0, "restored");
    }
}
