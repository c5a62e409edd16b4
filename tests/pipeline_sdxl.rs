//! SDXL text-to-image against diffusers' `StableDiffusionXLPipeline` on the sdxl-tiny fixture:
//! every run of its runs.json (euler, DPM++ 2M Karras, euler ancestral with the fixture's step
//! noise; kohya LoRA and LoCon stacks merged and fused) from the single file and the diffusers
//! folder, with the size conditioning the run records. Bound: relative L2 ≤ 5e-3 on the image and
//! the final latents (fixture README); measured values are printed.

mod common;
use common::{assert_close, ctx};
use lorafuse::lora::{LoraMode, LoraSpec};
use lorafuse::pipeline::request::{NoiseOverride, Precision, Request};
use lorafuse::pipeline::txt2img::Pipeline;
use lorafuse::weights::detect::Family;
use lorafuse::HostTensor;
use std::path::PathBuf;

fn fix() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl-tiny")
}

fn golden(name: &str) -> Option<HostTensor> {
    let f = lorafuse::weights::safetensors::SafeTensorsFile::open(fix().join("golden.safetensors")).unwrap();
    let shape = f.info(name)?.shape.clone();
    Some(HostTensor::new(&shape, f.read_f32(name).unwrap()).unwrap())
}

fn runs() -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(fix().join("runs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object().unwrap().iter().map(|(k, r)| (k.clone(), r.clone())).collect()
}

fn request(run: &serde_json::Value, name: &str, mode: LoraMode) -> Request {
    let mut r = Request::new(run["prompt"].as_str().unwrap());
    r.negative_prompt = run["negative_prompt"].as_str().unwrap().to_string();
    r.steps = run["steps"].as_u64().unwrap() as usize;
    r.cfg = run["cfg"].as_f64().unwrap() as f32;
    r.sampler = run["sampler"].as_str().unwrap().parse().unwrap();
    r.spacing = run["timestep_spacing"].as_str().unwrap().parse().unwrap();
    r.clip_skip = run["clip_skip_a1111"].as_u64().unwrap() as usize;
    r.width = 64;
    r.height = 64;
    let sc: Vec<usize> = run["size_cond"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
    r.size_cond = Some(sc.try_into().unwrap());
    r.rng = lorafuse::pipeline::rng::RngKind::TorchCpu;
    r.noise = NoiseOverride { noise: golden("pipe_noise"), step_noise: golden(&format!("{name}_step_noise")) };
    r.lora_mode = mode;
    r.loras = run
        .get("loras")
        .and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .map(|l| LoraSpec {
                    path: fix().join(l["file"].as_str().unwrap()),
                    unet_weight: l["unet_weight"].as_f64().unwrap() as f32,
                    te_weight: l["text_encoder_weight"].as_f64().unwrap() as f32,
                })
                .collect()
        })
        .unwrap_or_default();
    r
}

fn check(model: &str, with_loras: bool, mode: LoraMode) {
    let ctx = ctx();
    let pipe = Pipeline::load(ctx, &fix().join(model), Precision::F32).unwrap();
    assert_eq!(pipe.family(), Family::Sdxl);
    let mut n = 0;
    for (name, run) in runs() {
        let req = request(&run, &name, mode);
        if req.loras.is_empty() == with_loras {
            continue;
        }
        n += 1;
        let out = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
        if with_loras {
            for l in &out.lora_report.loras {
                assert!(l.applied == l.total && l.total > 0, "{name}: {} applied {}/{}", l.name, l.applied, l.total);
            }
        }
        let what = format!("{model} {name} [{}]", mode.name());
        assert_close(
            &format!("{what} latents"),
            &out.latents.data,
            &golden(&format!("{name}_latents")).unwrap().data,
            5e-3,
        );
        assert_close(
            &format!("{what} image"),
            &out.images[0].data,
            &golden(&format!("{name}_image")).unwrap().data,
            5e-3,
        );
    }
    assert!(n >= 2, "runs.json has runs of this kind ({n})");
}

#[test]
fn runs_match_diffusers_from_single_file() {
    check("model-fp16.safetensors", false, LoraMode::Auto);
}

#[test]
fn runs_match_diffusers_from_diffusers_folder() {
    check("model", false, LoraMode::Auto);
}

#[test]
fn lora_runs_match_diffusers_merged() {
    check("model-fp16.safetensors", true, LoraMode::Merged);
}

#[test]
fn lora_runs_match_diffusers_fused() {
    check("model", true, LoraMode::Fused);
}

/// The default size conditioning is A1111's (original = target = the image size, no crop), so a
/// request without one equals the run that states it.
#[test]
fn default_size_conditioning_is_the_image_size() {
    let ctx = ctx();
    let pipe = Pipeline::load(ctx, &fix().join("model-fp16.safetensors"), Precision::F32).unwrap();
    let (name, run) = runs().into_iter().find(|(n, _)| n == "run_euler").unwrap();
    let stated = request(&run, &name, LoraMode::Auto);
    let default = Request { size_cond: None, ..stated.clone() };
    assert_eq!(default.time_ids(), [64, 64, 0, 0, 64, 64]);
    let a = pipe.generate(ctx, &stated, &mut |_| {}).unwrap();
    let b = pipe.generate(ctx, &default, &mut |_| {}).unwrap();
    assert_eq!(a.images[0].data, b.images[0].data);
    // Another conditioning changes the image.
    let other = Request { size_cond: Some([1024, 1024, 0, 0, 64, 64]), ..stated.clone() };
    let c = pipe.generate(ctx, &other, &mut |_| {}).unwrap();
    assert!(common::rel_l2(&c.images[0].data, &a.images[0].data) > 1e-4, "size conditioning had no effect");
}

/// f16 storage through the whole SDXL run stays near the f32 golden.
#[test]
fn f16_run_is_bounded() {
    let ctx = ctx();
    let pipe = Pipeline::load(ctx, &fix().join("model-fp16.safetensors"), Precision::F16).unwrap();
    let (name, run) = runs().into_iter().find(|(n, _)| n == "run_euler").unwrap();
    let out = pipe.generate(ctx, &request(&run, &name, LoraMode::Auto), &mut |_| {}).unwrap();
    assert_close("f16 run_euler image", &out.images[0].data, &golden("run_euler_image").unwrap().data, 1e-2);
}

/// A LoRA for the other family is refused with both families named, in both directions.
#[test]
fn loras_of_the_other_family_are_refused_by_name() {
    use lorafuse::lora::LoraFile;
    use lorafuse::weights::ModelFiles;
    let sd1_fix = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny");
    let sdxl = ModelFiles::open(fix().join("model-fp16.safetensors")).unwrap();
    let sd1 = ModelFiles::open(sd1_fix.join("model-fp16.safetensors")).unwrap();
    let Err(e) = LoraFile::open(sd1_fix.join("loras/kohya_lora.safetensors"), &sdxl) else {
        panic!("SD1 LoRA on SDXL")
    };
    let e = e.to_string();
    assert!(e.contains("the model is SDXL") && e.contains("made for SD1.x"), "{e}");
    let e = LoraFile::open(fix().join("loras/kohya_lora.safetensors"), &sd1)
        .err()
        .unwrap_or_else(|| panic!("SDXL LoRA on SD1 opened"))
        .to_string();
    assert!(e.contains("the model is SD1.x") && e.contains("made for SDXL"), "{e}");
    // Its own family's LoRA matches every module, both text encoders included.
    let l = LoraFile::open(fix().join("loras/kohya_lora.safetensors"), &sdxl).unwrap();
    let s = l.summary();
    assert!(s.unmatched == 0 && s.text_encoder_targets > 0 && s.unet_targets > 0, "{s:?}");
    assert!(l.modules.iter().any(|m| m.component == lorafuse::weights::Component::TextEncoder2));
}
