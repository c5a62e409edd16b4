//! `lora bake`: a checkpoint with LoRAs merged in, in the input's layout and dtypes.
//!
//! - Baked model + plain generate = original model + the same LoRAs in merged mode, within the
//!   f16 rounding of the stored weights (relative L2 of latents and image ≤ 2e-3, numbers
//!   printed), on the sd15-tiny single file and folder and the sdxl-tiny single file and folder,
//!   with kohya LoRA + LoCon (negative weight) + LoHa + LoKr. The LoRAs' own effect is checked to
//!   be far above that bound, so the comparison can fail.
//! - The output keeps every key, dtype, shape and metadata entry; tensors no LoRA touches are
//!   byte-identical; the bake record names the LoRAs.
//! - Bad input (a LoRA for the other family, a missing file, -o = input, a non-empty -o folder)
//!   is a clear error and writes nothing.

mod common;
use std::path::{Path, PathBuf};

use common::{generate_merged, rel_l2};
use lorafuse::lora::bake::{bake, baked_loras, BakeReport};
use lorafuse::lora::LoraSpec;
use lorafuse::pipeline::txt2img::Output;
use lorafuse::weights::SafeTensorsFile;

fn sd15() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny")
}

fn sdxl() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl-tiny")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-bake-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn spec(dir: &Path, name: &str, w: f32) -> LoraSpec {
    LoraSpec::new(dir.join("loras").join(format!("{name}.safetensors")), w)
}

fn sd15_loras() -> Vec<LoraSpec> {
    let d = sd15();
    let mut split = spec(&d, "lycoris_loha", 1.0);
    split.unet_weight = 0.6;
    split.te_weight = 0.3;
    vec![spec(&d, "kohya_lora", 0.8), spec(&d, "kohya_locon", -0.5), split, spec(&d, "lycoris_lokr", 0.7)]
}

fn sdxl_loras() -> Vec<LoraSpec> {
    let d = sdxl();
    vec![spec(&d, "kohya_lora", 0.8), spec(&d, "kohya_locon", -0.5)]
}

fn run(model: &Path, loras: &[LoraSpec]) -> Output {
    let out = generate_merged(model, loras);
    if !loras.is_empty() {
        assert_eq!(out.lora_report.fused_weights, 0);
        assert!(out.lora_report.merged_weights > 0);
    }
    out
}

/// Every safetensors file of a model (one for a single file), relative to it.
fn weight_files(model: &Path) -> Vec<PathBuf> {
    if model.is_file() {
        return vec![PathBuf::new()];
    }
    let mut out = Vec::new();
    for c in ["unet", "text_encoder", "text_encoder_2", "vae"] {
        let Ok(rd) = std::fs::read_dir(model.join(c)) else { continue };
        for e in rd {
            let p = e.unwrap().path();
            if p.extension().is_some_and(|x| x == "safetensors") {
                out.push(Path::new(c).join(p.file_name().unwrap()));
            }
        }
    }
    out.sort();
    out
}

/// Same keys, dtypes, shapes, metadata (plus the record); returns (changed, unchanged) tensors.
fn compare_files(input: &Path, output: &Path, loras: &[LoraSpec]) -> (usize, usize) {
    let (mut changed, mut same) = (0, 0);
    for rel in weight_files(input) {
        let (a, b) = (input.join(&rel), output.join(&rel));
        let (a, b) = if rel.as_os_str().is_empty() { (input.to_path_buf(), output.to_path_buf()) } else { (a, b) };
        let fa = SafeTensorsFile::open(&a).unwrap();
        let fb = SafeTensorsFile::open(&b).unwrap();
        let na: Vec<&str> = fa.names().collect();
        let nb: Vec<&str> = fb.names().collect();
        assert_eq!(na, nb, "{}: keys differ", b.display());
        for n in na {
            let (ia, ib) = (fa.info(n).unwrap(), fb.info(n).unwrap());
            assert_eq!((ia.dtype, &ia.shape), (ib.dtype, &ib.shape), "{n}: dtype/shape");
            if fa.bytes(n).unwrap() == fb.bytes(n).unwrap() {
                same += 1;
            } else {
                changed += 1;
            }
        }
        for (k, v) in fa.metadata() {
            if k != "lorafuse_baked" {
                assert_eq!(fb.metadata().get(k), Some(v), "{}: metadata {k}", b.display());
            }
        }
        if rel.starts_with("vae") {
            // Copied as is: no LoRA reaches the VAE.
            assert_eq!(fa.metadata(), fb.metadata());
            continue;
        }
        let rec = baked_loras(fb.metadata());
        let names: Vec<&str> = rec.iter().map(|r| r["name"].as_str().unwrap()).collect();
        let want: Vec<String> = loras.iter().map(LoraSpec::name).collect();
        assert_eq!(names, want, "{}: bake record", b.display());
        for r in &rec {
            assert_eq!(r["sha256"].as_str().unwrap().len(), 64);
        }
    }
    (changed, same)
}

fn check_bake(what: &str, model: &Path, out: &Path, loras: &[LoraSpec]) -> BakeReport {
    let mut calls = 0usize;
    let report = bake(model, loras, out, &mut |done, total, _| {
        assert!(done <= total);
        calls += 1;
    })
    .unwrap();
    assert_eq!(calls, report.changed_tensors + report.copied_tensors, "{what}: one progress call per tensor");
    for l in &report.loras {
        eprintln!("{what}: {} merged {} modules, {} unmatched", l.name, l.merged, l.unmatched.len());
        assert!(l.merged > 0);
    }
    let (changed, same) = compare_files(model, out, loras);
    eprintln!("{what}: {changed} tensors changed, {same} byte-identical ({} files)", report.files);
    assert_eq!(changed, report.changed_tensors, "{what}: changed tensors");
    assert!(changed > 10 && same > 10, "{what}: {changed} changed / {same} same");
    // The folder keeps its configs.
    if model.is_dir() {
        for c in ["model_index.json", "unet/config.json", "scheduler/scheduler_config.json"] {
            assert_eq!(std::fs::read(model.join(c)).unwrap(), std::fs::read(out.join(c)).unwrap(), "{c}");
        }
    }
    report
}

/// Baked + plain generate vs original + LoRAs (merged), against the LoRAs' own effect.
fn check_generate(what: &str, model: &Path, baked: &Path, loras: &[LoraSpec]) {
    let want = run(model, loras);
    let got = run(baked, &[]);
    let plain = run(model, &[]);
    let lat = rel_l2(&got.latents.data, &want.latents.data);
    let img = rel_l2(&got.images[0].data, &want.images[0].data);
    let effect = rel_l2(&plain.latents.data, &want.latents.data);
    eprintln!("{what}: baked vs LoRAs: latents {lat:.3e}, image {img:.3e}; LoRA effect on latents {effect:.3e}");
    assert!(lat <= 2e-3 && img <= 2e-3, "{what}: baked model differs: latents {lat:.3e}, image {img:.3e}");
    assert!(effect > 20.0 * 2e-3, "{what}: the LoRAs barely change the image ({effect:.3e})");
}

#[test]
fn bake_sd15_single_file_equals_generate_with_loras() {
    let dir = scratch("sd15-file");
    let out = dir.join("baked.safetensors");
    let model = sd15().join("model-fp16.safetensors");
    let loras = sd15_loras();
    check_bake("sd15 file", &model, &out, &loras);
    check_generate("sd15 file", &model, &out, &loras);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bake_sd15_folder_equals_generate_with_loras() {
    let dir = scratch("sd15-folder");
    let out = dir.join("baked");
    let model = sd15().join("model");
    let loras = sd15_loras();
    check_bake("sd15 folder", &model, &out, &loras);
    check_generate("sd15 folder", &model, &out, &loras);
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bake_sdxl_single_file_and_folder_equal_generate_with_loras() {
    let dir = scratch("sdxl");
    let loras = sdxl_loras();
    let model = sdxl().join("model-fp16.safetensors");
    let out = dir.join("baked.safetensors");
    check_bake("sdxl file", &model, &out, &loras);
    check_generate("sdxl file", &model, &out, &loras);
    // The OpenCLIP encoder's fused in_proj holds q, k and v: all three thirds must be merged.
    let (fa, fb) = (SafeTensorsFile::open(&model).unwrap(), SafeTensorsFile::open(&out).unwrap());
    let key = "conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_weight";
    let (a, b) = (fa.read_f32(key).unwrap(), fb.read_f32(key).unwrap());
    let third = a.len() / 3;
    for i in 0..3 {
        let d = rel_l2(&b[i * third..(i + 1) * third], &a[i * third..(i + 1) * third]);
        assert!(d > 1e-4, "in_proj third {i} unchanged ({d:.2e})");
    }
    let folder = sdxl().join("model");
    let out2 = dir.join("baked-folder");
    check_bake("sdxl folder", &folder, &out2, &loras);
    check_generate("sdxl folder", &folder, &out2, &loras);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Whether `dir` holds anything but `keep`.
fn leftovers(dir: &Path, keep: &[&str]) -> Vec<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| !keep.contains(&n.as_str()))
        .collect()
}

fn bake_err(model: &Path, loras: &[LoraSpec], out: &Path) -> String {
    bake(model, loras, out, &mut |_, _, _| {}).unwrap_err().to_string()
}

#[test]
fn bad_inputs_are_refused_and_write_nothing() {
    let dir = scratch("bad");
    let model = sd15().join("model-fp16.safetensors");
    let out = dir.join("out.safetensors");

    let e = bake_err(&model, &[spec(&sdxl(), "kohya_lora", 1.0)], &out);
    assert!(e.contains("another base model"), "{e}");
    let e = bake_err(&model, &[LoraSpec::new(dir.join("nope.safetensors"), 1.0)], &out);
    assert!(e.contains("does not exist") && e.contains("nope.safetensors"), "{e}");
    let e = bake_err(&model, &[], &out);
    assert!(e.contains("at least one LoRA"), "{e}");
    // A valid LoRA after a bad one: still nothing written.
    let e = bake_err(&model, &[spec(&sd15(), "kohya_lora", 1.0), spec(&sdxl(), "kohya_locon", 1.0)], &out);
    assert!(e.contains("another base model"), "{e}");
    assert_eq!(leftovers(&dir, &[]), Vec::<String>::new(), "files left behind");

    // -o = input, also through another spelling of the path.
    let copy = dir.join("model.safetensors");
    std::fs::copy(&model, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let alias = dir.join(".").join("model.safetensors");
    for o in [&copy, &alias] {
        let e = bake_err(&copy, &[spec(&sd15(), "kohya_lora", 1.0)], o);
        assert!(e.contains("is the input model"), "{e}");
    }
    // A hard link to the input, and a target in a folder that does not exist.
    let link = dir.join("link.safetensors");
    if std::fs::hard_link(&copy, &link).is_ok() {
        let e = bake_err(&copy, &[spec(&sd15(), "kohya_lora", 1.0)], &link);
        assert!(e.contains("is the input model"), "{e}");
        std::fs::remove_file(&link).unwrap();
    }
    let e = bake_err(&copy, &[spec(&sd15(), "kohya_lora", 1.0)], &dir.join("no/such/out.safetensors"));
    assert!(e.contains("does not exist"), "{e}");
    assert_eq!(std::fs::read(&copy).unwrap(), before, "input changed");
    assert_eq!(leftovers(&dir, &["model.safetensors"]), Vec::<String>::new());
    // A single file into a folder.
    let e = bake_err(&copy, &[spec(&sd15(), "kohya_lora", 1.0)], &dir);
    assert!(e.contains("is a folder"), "{e}");

    // A folder model: -o an existing folder with something in it, a file, or inside the input.
    let folder = sd15().join("model");
    let busy = dir.join("busy");
    std::fs::create_dir(&busy).unwrap();
    std::fs::write(busy.join("keep.txt"), "mine").unwrap();
    let e = bake_err(&folder, &[spec(&sd15(), "kohya_lora", 1.0)], &busy);
    assert!(e.contains("not empty"), "{e}");
    assert_eq!(leftovers(&busy, &["keep.txt"]), Vec::<String>::new());
    assert_eq!(std::fs::read_to_string(busy.join("keep.txt")).unwrap(), "mine");
    let e = bake_err(&folder, &[spec(&sd15(), "kohya_lora", 1.0)], &copy);
    assert!(e.contains("is a file"), "{e}");
    let e = bake_err(&folder, &[spec(&sd15(), "kohya_lora", 1.0)], &folder.join("baked"));
    assert!(e.contains("inside the input folder"), "{e}");
    assert!(!folder.join("baked").exists());
    assert_eq!(leftovers(&dir, &["model.safetensors", "busy"]), Vec::<String>::new());

    // An empty -o folder is fine for a folder model.
    let empty = dir.join("empty");
    std::fs::create_dir(&empty).unwrap();
    bake(&folder, &[spec(&sd15(), "kohya_lora", 0.5)], &empty, &mut |_, _, _| {}).unwrap();
    assert!(empty.join("unet/config.json").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn cli_bake_reports_modules_and_refuses_bad_output() {
    let dir = scratch("cli");
    let model = sd15().join("model-fp16.safetensors");
    let out = dir.join("baked.safetensors");
    let lorafuse = |args: &[&str]| {
        let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
        std::process::Command::new(env!("CARGO_BIN_EXE_lorafuse"))
            .args(args)
            .env("XDG_RUNTIME_DIR", xdg)
            .output()
            .unwrap()
    };
    let loras = sd15().join("loras");
    let o = lorafuse(&[
        "lora",
        "bake",
        "-m",
        &model.display().to_string(),
        "--lora",
        "kohya_lora:0.8",
        "--lora",
        "peft_lora:unet=0.5,te=0.2",
        "--lora-dir",
        &loras.display().to_string(),
        "-o",
        &out.display().to_string(),
    ]);
    let (stdout, stderr) = (String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr));
    assert!(o.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("kohya_lora:") && stdout.contains("modules merged"), "{stdout}");
    assert!(stdout.contains("peft_lora:") && stdout.contains("tensors merged"), "{stdout}");
    assert!(SafeTensorsFile::open(&out).unwrap().metadata().contains_key("lorafuse_baked"));

    let o = lorafuse(&[
        "lora",
        "bake",
        "-m",
        &model.display().to_string(),
        "--lora",
        "missing_one",
        "--lora-dir",
        &loras.display().to_string(),
        "-o",
        &dir.join("x.safetensors").display().to_string(),
    ]);
    let stderr = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && stderr.contains("missing_one"), "{stderr}");
    assert!(!dir.join("x.safetensors").exists());
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sd15-tiny single file re-encoded as `dtype` (F32 or BF16), metadata kept.
fn reencode(dst: &Path, dtype: safetensors::Dtype) {
    let src = SafeTensorsFile::open(sd15().join("model-fp16.safetensors")).unwrap();
    let mut data: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for n in src.names() {
        let info = src.info(n).unwrap();
        assert!(info.dtype.is_float(), "{n}: the fixture holds float tensors only");
        let v = src.read_f32(n).unwrap();
        let bytes = match dtype {
            safetensors::Dtype::F32 => v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            _ => v.iter().flat_map(|&x| half::bf16::from_f32(x).to_le_bytes()).collect(),
        };
        data.push((n.to_string(), info.shape.clone(), bytes));
    }
    let views: Vec<(String, safetensors::tensor::TensorView<'_>)> = data
        .iter()
        .map(|(n, s, b)| (n.clone(), safetensors::tensor::TensorView::new(dtype, s.clone(), b).unwrap()))
        .collect();
    let meta: std::collections::HashMap<String, String> =
        [("format".to_string(), "pt".to_string())].into_iter().collect();
    std::fs::write(dst, safetensors::serialize(views, Some(meta)).unwrap()).unwrap();
}

/// F32 and BF16 checkpoints stay F32 and BF16, and a merged weight equals W + mult·ΔW (the
/// library's ΔW) rounded once to the file's dtype.
#[test]
fn bake_keeps_f32_and_bf16_and_adds_the_delta() {
    use lorafuse::lora::LoraFile;
    use lorafuse::weights::{Component, ModelFiles};
    let dir = scratch("dtypes");
    let key = "model.diffusion_model.input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight";
    let target = "down_blocks.0.attentions.0.transformer_blocks.0.attn1.to_q.weight";
    for (name, dtype, tol) in [("f32", safetensors::Dtype::F32, 1e-6), ("bf16", safetensors::Dtype::BF16, 4e-3)] {
        let model = dir.join(format!("model-{name}.safetensors"));
        reencode(&model, dtype);
        let out = dir.join(format!("baked-{name}.safetensors"));
        let loras = [spec(&sd15(), "kohya_lora", 0.8)];
        let report = bake(&model, &loras, &out, &mut |_, _, _| {}).unwrap();
        let (changed, same) = compare_files(&model, &out, &loras);
        assert_eq!(changed, report.changed_tensors, "{name}");
        assert!(same > 0, "{name}");
        let lora = LoraFile::open(&loras[0].path, &ModelFiles::open(&model).unwrap()).unwrap();
        let delta = lora.module(Component::Unet, target).unwrap().delta().unwrap();
        let w0 = SafeTensorsFile::open(&model).unwrap().read_f32(key).unwrap();
        let got = SafeTensorsFile::open(&out).unwrap().read_f32(key).unwrap();
        let want: Vec<f32> = w0.iter().zip(&delta.data).map(|(w, d)| w + 0.8 * d).collect();
        let e = rel_l2(&got, &want);
        let moved = rel_l2(&w0, &want);
        eprintln!("{name}: baked {key}: relative L2 to W + 0.8·ΔW {e:.2e} (ΔW itself {moved:.2e})");
        assert!(e <= tol && moved > 100.0 * e.max(1e-7), "{name}: {e:.2e} / {moved:.2e}");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Block weights bake as they apply at generate time (`:lbw=` on the `--lora` spec).
#[test]
fn bake_honours_block_weights() {
    let dir = scratch("sd15-lbw");
    let out = dir.join("baked.safetensors");
    let model = sd15().join("model-fp16.safetensors");
    let d = sd15();
    let mut a = spec(&d, "kohya_locon", 0.9);
    a.lbw = Some("OUTD".parse().unwrap());
    let mut b = spec(&d, "kohya_lora", 0.8);
    b.lbw = Some("1,0,0,0,0,0,0,0,1,1,1,1,1,1,1,1,1".parse().unwrap());
    let loras = vec![a, b];
    check_bake("sd15 lbw", &model, &out, &loras);
    check_generate("sd15 lbw", &model, &out, &loras);
    let _ = std::fs::remove_dir_all(&dir);
}
