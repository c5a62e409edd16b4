//! SDXL text-to-image against diffusers' `StableDiffusionXLPipeline` on the sdxl-tiny fixture:
//! every run of its runs.json (euler, DPM++ 2M Karras, euler ancestral with the fixture's step
//! noise; kohya LoRA and LoCon stacks merged and fused) from the single file and the diffusers
//! folder, with the size conditioning the run records. Bound: relative L2 ≤ 5e-3 on the image and
//! the final latents (fixture README); measured values are printed.

mod common;
use common::{assert_close, ctx, golden_in, run_request_in};
use lorafuse::lora::{LoraMode, LoraSpec};
use lorafuse::pipeline::request::{Precision, Request};
use lorafuse::pipeline::txt2img::Pipeline;
use lorafuse::weights::detect::Family;
use lorafuse::HostTensor;
use std::path::PathBuf;

fn fix() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl-tiny")
}

fn golden(name: &str) -> Option<HostTensor> {
    golden_in(&fix(), name)
}

fn runs() -> Vec<(String, serde_json::Value)> {
    let text = std::fs::read_to_string(fix().join("runs.json")).unwrap();
    let v: serde_json::Value = serde_json::from_str(&text).unwrap();
    v.as_object().unwrap().iter().map(|(k, r)| (k.clone(), r.clone())).collect()
}

fn request(run: &serde_json::Value, name: &str, mode: LoraMode) -> Request {
    let mut r = run_request_in(&fix(), run, name);
    r.lora_mode = mode;
    r.loras = run
        .get("loras")
        .and_then(|l| l.as_array())
        .map(|a| {
            a.iter()
                .map(|l| {
                    LoraSpec::weights(
                        fix().join(l["file"].as_str().unwrap()),
                        l["unet_weight"].as_f64().unwrap() as f32,
                        l["text_encoder_weight"].as_f64().unwrap() as f32,
                    )
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
    let e = LoraFile::open(sd1_fix.join("loras/kohya_lora.safetensors"), &sdxl)
        .err()
        .unwrap_or_else(|| panic!("SD1 LoRA on SDXL opened"))
        .to_string();
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

/// `--vae FILE`: a standalone VAE in diffusers names, in LDM names without the checkpoint prefix
/// (as `vae-ft-mse-840000-ema-pruned.safetensors` ships) or with it, decodes exactly as the
/// checkpoint's own VAE when it holds the same weights; a file that is not a VAE is refused.
#[test]
fn separate_vae_files_in_every_naming() {
    let ctx = ctx();
    let d = std::env::temp_dir().join(format!("lorafuse-sdxl-vae-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let single = fix().join("model-fp16.safetensors");
    let file = lorafuse::weights::safetensors::SafeTensorsFile::open(&single).unwrap();
    let mut bare = Vec::new();
    let mut prefixed = Vec::new();
    for name in file.names() {
        if let Some(rest) = name.strip_prefix("first_stage_model.") {
            let info = file.info(name).unwrap();
            let bytes = file.bytes(name).unwrap().to_vec();
            bare.push((rest.to_string(), info.shape.clone(), bytes.clone()));
            prefixed.push((name.to_string(), info.shape.clone(), bytes));
        }
    }
    let write = |path: &std::path::Path, tensors: &[(String, Vec<usize>, Vec<u8>)]| {
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, s, b)| {
                (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b).unwrap())
            })
            .collect();
        std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
    };
    write(&d.join("ldm_bare.safetensors"), &bare);
    write(&d.join("ldm_prefixed.safetensors"), &prefixed);
    let (name, run) = runs().into_iter().find(|(n, _)| n == "run_euler").unwrap();
    let req = Request { steps: 2, ..request(&run, &name, LoraMode::Auto) };
    let plain = Pipeline::load(ctx, &single, Precision::F32).unwrap().generate(ctx, &req, &mut |_| {}).unwrap();
    for vae in [
        d.join("ldm_bare.safetensors"),
        d.join("ldm_prefixed.safetensors"),
        fix().join("model/vae/diffusion_pytorch_model.safetensors"),
    ] {
        let pipe = Pipeline::load_with_vae(ctx, &single, Precision::F32, Some(&vae)).unwrap();
        assert_eq!(pipe.config.vae.scaling_factor, 0.13025, "the family's scale");
        let out = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
        assert_eq!(out.images[0].data, plain.images[0].data, "{}", vae.display());
    }
    let e = Pipeline::load_with_vae(ctx, &single, Precision::F32, Some(&fix().join("loras/kohya_lora.safetensors")))
        .err()
        .unwrap_or_else(|| panic!("a LoRA loaded as a VAE"))
        .to_string();
    assert!(e.contains("not a VAE file"), "{e}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// The fixture's kohya LoRA rewritten with diffusers/PEFT names (`unet.` / `text_encoder.` /
/// `text_encoder_2.` + module path, `lora_A`/`lora_B`, alpha kept) gives the same image, merged
/// and fused: the SDXL name resolution covers both spellings and both text encoders.
#[test]
fn peft_named_sdxl_lora_equals_the_kohya_one() {
    use lorafuse::lora::LoraFile;
    use lorafuse::weights::{Component, ModelFiles};
    let ctx = ctx();
    let d = std::env::temp_dir().join(format!("lorafuse-sdxl-peft-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let single = fix().join("model-fp16.safetensors");
    let kohya = fix().join("loras/kohya_lora.safetensors");
    let lora = LoraFile::open(&kohya, &ModelFiles::open(&single).unwrap()).unwrap();
    let src = lorafuse::weights::safetensors::SafeTensorsFile::open(&kohya).unwrap();
    let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
    let mut components = std::collections::BTreeSet::new();
    for m in &lora.modules {
        let prefix = match m.component {
            Component::Unet => "unet",
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
            Component::Vae => unreachable!(),
        };
        components.insert(prefix);
        let base = format!("{prefix}.{}", m.target.strip_suffix(".weight").unwrap());
        for (from, to) in
            [(".lora_down.weight", ".lora_A.weight"), (".lora_up.weight", ".lora_B.weight"), (".alpha", ".alpha")]
        {
            let name = format!("{}{from}", m.key);
            let info = src.info(&name).unwrap();
            let dtype = match info.dtype.name() {
                "F16" => safetensors::Dtype::F16,
                "F32" => safetensors::Dtype::F32,
                "BF16" => safetensors::Dtype::BF16,
                other => panic!("dtype {other}"),
            };
            tensors.push((format!("{base}{to}"), dtype, info.shape.clone(), src.bytes(&name).unwrap().to_vec()));
        }
    }
    assert_eq!(components.len(), 3, "the fixture LoRA reaches the UNet and both text encoders: {components:?}");
    let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
        .iter()
        .map(|(n, dt, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap()))
        .collect();
    let peft = d.join("peft_xl.safetensors");
    std::fs::write(&peft, safetensors::serialize(views, None).unwrap()).unwrap();

    let pipe = Pipeline::load(ctx, &single, Precision::F32).unwrap();
    let (name, run) = runs().into_iter().find(|(n, _)| n == "run_lora_kohya_0.8").unwrap();
    for mode in [LoraMode::Merged, LoraMode::Fused] {
        let req = request(&run, &name, mode);
        let want = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
        let mut other = req.clone();
        other.loras[0].path = peft.clone();
        let got = pipe.generate(ctx, &other, &mut |_| {}).unwrap();
        assert_eq!(got.lora_report.loras[0].applied, want.lora_report.loras[0].applied);
        assert_close(&format!("PEFT vs kohya [{}]", mode.name()), &got.images[0].data, &want.images[0].data, 1e-6);
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// The single file converted to fp32 and bf16 (every key kept, metadata too): fp32 holds the same
/// values as the fp16 file, so its image is the same bit for bit; bf16 rounds every weight to 8
/// mantissa bits, so its image is compared to diffusers' with the error printed and a bound that a
/// misread (byte order, wrong dtype, a skipped tensor) could not meet.
#[test]
fn bf16_and_fp32_single_files_load_and_match() {
    use lorafuse::weights::safetensors::SafeTensorsFile;
    let ctx = ctx();
    let d = std::env::temp_dir().join(format!("lorafuse-sdxl-dtypes-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let src_path = fix().join("model-fp16.safetensors");
    let src = SafeTensorsFile::open(&src_path).unwrap();
    let (name, run) = runs().into_iter().find(|(n, _)| n == "run_euler").unwrap();
    let req = request(&run, &name, LoraMode::Auto);
    let fp16 = Pipeline::load(ctx, &src_path, Precision::F32).unwrap().generate(ctx, &req, &mut |_| {}).unwrap();
    for (dtype, bound) in [(safetensors::Dtype::F32, 0.0), (safetensors::Dtype::BF16, 2e-2)] {
        let mut tensors: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for (key, info) in src.tensors() {
            let bytes = match info.dtype.name() {
                "F16" => {
                    let v = src.read_f32(key).unwrap();
                    match dtype {
                        safetensors::Dtype::F32 => bytemuck::cast_slice(&v).to_vec(),
                        _ => v.iter().flat_map(|x| half::bf16::from_f32(*x).to_le_bytes()).collect(),
                    }
                }
                other => panic!("{key}: fixture dtype {other}"),
            };
            tensors.push((key.to_string(), dtype, info.shape.clone(), bytes));
        }
        let views: Vec<(String, safetensors::tensor::TensorView)> = tensors
            .iter()
            .map(|(n, dt, s, b)| (n.clone(), safetensors::tensor::TensorView::new(*dt, s.clone(), b).unwrap()))
            .collect();
        let path = d.join(format!("model-{dtype:?}.safetensors"));
        std::fs::write(
            &path,
            safetensors::serialize(views, Some(src.metadata().clone().into_iter().collect())).unwrap(),
        )
        .unwrap();
        let pipe = Pipeline::load(ctx, &path, Precision::F32).unwrap();
        assert_eq!(pipe.family(), Family::Sdxl, "{dtype:?}");
        let out = pipe.generate(ctx, &req, &mut |_| {}).unwrap();
        if bound == 0.0 {
            assert_eq!(out.images[0].data, fp16.images[0].data, "{dtype:?} file made another image");
        } else {
            let want = golden(&format!("{name}_image")).unwrap();
            assert_close(&format!("{dtype:?} single file vs diffusers"), &out.images[0].data, &want.data, bound);
        }
    }
    std::fs::remove_dir_all(&d).unwrap();
}
