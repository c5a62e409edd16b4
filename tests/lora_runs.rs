//! LoRAs applied to the whole pipeline: every LoRA run of runs.json in both modes against
//! diffusers (image and latents relative L2 ≤ 5e-3, measured values printed), switching sets
//! and weights between images with the base weights coming back bit-exact, and the request
//! checks (prompt tags, the LoRA folder, --max-loras).

mod common;
use std::sync::Arc;

use common::*;
use lorafuse::lora::{LoraMode, LoraSpec};
use lorafuse::pipeline::request::{Precision, Request};
use lorafuse::pipeline::txt2img::Pipeline;
use lorafuse::Context;

fn lora_runs() -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(fixtures().join("runs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object()
        .unwrap()
        .iter()
        .filter(|(_, r)| r.get("loras").and_then(|l| l.as_array()).is_some_and(|a| !a.is_empty()))
        .map(|(k, r)| (k.clone(), r.clone()))
        .collect()
}

fn request(run: &serde_json::Value, name: &str, mode: LoraMode) -> Request {
    let mut r = run_request(run, name);
    r.lora_mode = mode;
    r.loras = run["loras"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| {
            LoraSpec::weights(
                fixtures().join(l["file"].as_str().unwrap()),
                l["unet_weight"].as_f64().unwrap() as f32,
                l["text_encoder_weight"].as_f64().unwrap() as f32,
            )
        })
        .collect();
    r
}

fn check_runs(mode: LoraMode) {
    let ctx = ctx();
    let pipe = Pipeline::load(ctx, &fixtures().join("model-fp16.safetensors"), Precision::F32).unwrap();
    let all = lora_runs();
    assert!(all.len() >= 7, "runs.json has 7 LoRA runs, found {}", all.len());
    for (name, run) in all {
        let req = request(&run, &name, mode);
        let out = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
        let r = &out.lora_report;
        assert_eq!(out.loras.len(), req.loras.len(), "{name}: every LoRA reported");
        for l in &r.loras {
            assert!(l.applied > 0 && l.applied <= l.total, "{name}: {} applied {}/{}", l.name, l.applied, l.total);
        }
        eprintln!("{name} [{}]: {} merged, {} fused", mode.name(), r.merged_weights, r.fused_weights);
        if mode == LoraMode::Merged {
            assert_eq!(r.fused_weights, 0, "{name}: merged mode fused a layer");
        } else {
            // Every run has a low-rank LoRA except the LoHa and LoKr ones.
            let low_rank = !name.contains("loha") && !name.contains("lokr");
            assert_eq!(r.fused_weights > 0, low_rank, "{name}: fused layers {}", r.fused_weights);
        }
        let lat = golden(&format!("{name}_latents")).unwrap();
        let img = golden(&format!("{name}_image")).unwrap();
        assert_close(&format!("{name} [{}] latents", mode.name()), &out.latents.data, &lat.data, 5e-3);
        assert_close(&format!("{name} [{}] image", mode.name()), &out.images[0].data, &img.data, 5e-3);
    }
}

#[test]
fn lora_runs_match_diffusers_merged() {
    check_runs(LoraMode::Merged);
}

#[test]
fn lora_runs_match_diffusers_fused() {
    check_runs(LoraMode::Fused);
}

/// Every registered weight's raw bits (f32 bits, or f16 bits widened without rounding).
fn snapshot(ctx: &Context, pipe: &Pipeline) -> Vec<(String, Vec<u32>)> {
    pipe.adaptable
        .entries()
        .into_iter()
        .map(|((c, p), e)| {
            (format!("{}:{p}", c.name()), e.tensor.to_vec(ctx).unwrap().iter().map(|v| v.to_bits()).collect())
        })
        .collect()
}

fn spec(file: &str, unet: f32, te: f32) -> LoraSpec {
    LoraSpec::weights(fixtures().join("loras").join(file), unet, te)
}

fn switching(precision: Precision) {
    let ctx = ctx();
    let pipe = Pipeline::load(ctx, &fixtures().join("model-fp16.safetensors"), precision).unwrap();
    assert!(pipe.adaptable.len() > 100, "the map holds the adaptable weights ({})", pipe.adaptable.len());
    let base = snapshot(ctx, &pipe);
    let mut req = Request::new("1girl, forest");
    req.width = 64;
    req.height = 64;
    req.steps = 2;
    req.seed = 7;
    let plain = pipe.generate(ctx, &req, &mut |_| {}).unwrap();

    let sets: Vec<(Vec<LoraSpec>, LoraMode)> = vec![
        (vec![spec("kohya_lora.safetensors", 0.8, 0.8), spec("lycoris_loha.safetensors", 1.2, 1.2)], LoraMode::Merged),
        (vec![spec("kohya_lora.safetensors", -0.5, 0.3), spec("lycoris_loha.safetensors", 0.4, 0.4)], LoraMode::Merged),
        (vec![spec("kohya_locon.safetensors", 1.0, 1.0), spec("lycoris_lokr.safetensors", 0.7, 0.7)], LoraMode::Merged),
        (vec![spec("peft_lora.safetensors", 0.7, 0.7), spec("kohya_lora.safetensors", 1.0, 0.0)], LoraMode::Fused),
        (vec![spec("kohya_locon.safetensors", 0.5, 0.5)], LoraMode::Fused),
    ];
    let mut first_image = None;
    for (i, (set, mode)) in sets.iter().enumerate() {
        req.loras = set.clone();
        req.lora_mode = *mode;
        let out = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
        let d = rel_l2(&out.images[0].data, &plain.images[0].data);
        eprintln!("set {i} ({}): image differs from the plain one by {d:.3e}", mode.name());
        assert!(d > 1e-4, "set {i} changed nothing");
        if i == 0 {
            first_image = Some(out.images[0].data.clone());
        }
    }
    // Back to the first set: the same image bit for bit (restored from the pristine copies, then
    // merged again).
    req.loras = sets[0].0.clone();
    req.lora_mode = LoraMode::Merged;
    let again = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
    assert_eq!(again.images[0].data, first_image.unwrap(), "set 0 again");

    pipe.clear_loras(ctx).unwrap();
    let after = snapshot(ctx, &pipe);
    assert_eq!(base.len(), after.len());
    for ((name, a), (_, b)) in base.iter().zip(&after) {
        assert!(a == b, "{name} is not bit-exact after removing the LoRAs");
    }
    req.loras.clear();
    let plain_again = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
    assert_eq!(plain_again.images[0].data, plain.images[0].data, "the plain image after switching");
}

#[test]
fn switching_loras_restores_base_weights_bit_exact_f32() {
    switching(Precision::F32);
}

#[test]
fn switching_loras_restores_base_weights_bit_exact_f16() {
    if !ctx().caps.shader_f16 {
        panic!("this test needs SHADER_F16 (lavapipe has it)");
    }
    switching(Precision::F16);
}

#[test]
fn files_are_parsed_once_per_pipeline() {
    let ctx = ctx();
    let pipe = Pipeline::load(ctx, &fixtures().join("model-fp16.safetensors"), Precision::F32).unwrap();
    let s = spec("kohya_lora.safetensors", 1.0, 1.0);
    let (a, ha) = pipe.lora_file(&s).unwrap();
    let (b, hb) = pipe.lora_file(&s).unwrap();
    assert!(Arc::ptr_eq(&a, &b), "second request parsed the file again");
    assert_eq!(ha, hb);
    assert_eq!(ha.len(), 64);
    // The same bytes under another name hash alike; different bytes do not.
    let other = pipe.lora_file(&spec("kohya_locon.safetensors", 1.0, 1.0)).unwrap().1;
    assert_ne!(ha, other);
}

#[test]
fn prompt_tags_resolve_in_the_lora_folder_only() {
    let ctx = ctx();
    let pipe = Pipeline::load(ctx, &fixtures().join("model-fp16.safetensors"), Precision::F32).unwrap();
    let mut req = Request::new("a castle <lora:kohya_lora:0.8>");
    req.width = 64;
    req.height = 64;
    req.steps = 1;
    req.lora_dir = fixtures().join("loras");
    let specs = req.lora_specs().unwrap();
    assert_eq!(specs.len(), 1);
    assert_eq!((specs[0].unet_weight, specs[0].te_weight), (0.8, 0.8));
    let tagged = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
    assert_eq!(tagged.loras.len(), 1);
    assert_eq!(tagged.loras[0].name, "kohya_lora");
    // The tag and the equivalent --lora give the same image.
    let mut via_flag = req.clone();
    via_flag.prompt = "a castle ".to_string();
    via_flag.loras = vec![spec("kohya_lora.safetensors", 0.8, 0.8)];
    let flagged = pipe.generate(ctx, &via_flag, &mut |_| {}).unwrap();
    assert_close("tag vs --lora", &tagged.images[0].data, &flagged.images[0].data, 1e-6);

    for (prompt, want) in [
        ("x <lora:../loras/kohya_lora:1>", "inside the LoRA folder"),
        ("x <lora:/etc/passwd:1>", "inside the LoRA folder"),
        ("x <lora:no_such_lora:1>", "no_such_lora"),
    ] {
        let r = Request { prompt: prompt.to_string(), ..req.clone() };
        let e = pipe.generate(ctx, &r, &mut |_| {}).err().unwrap_or_else(|| panic!("{prompt} accepted"));
        assert!(e.to_string().contains(want), "{prompt}: {e}");
    }
    let r = Request { max_loras: Some(1), loras: vec![spec("kohya_locon.safetensors", 1.0, 1.0)], ..req.clone() };
    let e = pipe.generate(ctx, &r, &mut |_| {}).err().expect("2 LoRAs with --max-loras 1");
    assert!(e.to_string().contains("max-loras"), "{e}");
}
