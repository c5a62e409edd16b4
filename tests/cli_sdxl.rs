//! SDXL through the `lorafuse` binary on the sdxl-tiny fixture: `generate` with an SDXL LoRA
//! writes an A1111 infotext (with the size conditioning when it is not the default), `--from-png`
//! makes the same image again, `inspect` names SDXL as the LoRA's base, and bad inputs (an SD1
//! LoRA, a truncated SDXL file, a size that is not a multiple of 8) fail with one line and write
//! nothing.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::pixels;

fn lorafuse(args: &[&str]) -> std::process::Output {
    let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", xdg).output().expect("run lorafuse")
}

fn fix() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl-tiny")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-cli-sdxl-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

#[test]
fn generate_and_from_png_on_sdxl() {
    let d = tmpdir("gen");
    let model = fix().join("model-fp16.safetensors");
    let loras = fix().join("loras");
    let png = d.join("a.png");
    let o = lorafuse(&[
        "generate",
        "-m",
        s(&model),
        "-p",
        "a lighthouse at dusk <lora:kohya_lora:0.8>",
        "-n",
        "lowres",
        "--steps",
        "3",
        "--seed",
        "7",
        "-W",
        "64",
        "-H",
        "48",
        "--size-cond",
        "96,128,0,0,48,64",
        "--clip-skip",
        "2",
        "--lora-dir",
        s(&loras),
        "--precision",
        "f32",
        "--quiet",
        "-o",
        s(&png),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(err.contains("no effect on SDXL"), "clip skip warning missing: {err}");
    let p = lorafuse::pipeline::image::read_parameters(&png).unwrap().unwrap();
    for field in ["Size: 64x48", "Size cond: \"96, 128, 0, 0, 48, 64\"", "Lora hashes", "Seed: 7", "Model: model-fp16"]
    {
        assert!(p.contains(field), "{field} missing from {p}");
    }
    let again = d.join("b.png");
    let o = lorafuse(&[
        "generate",
        "-m",
        s(&model),
        "--from-png",
        s(&png),
        "--lora-dir",
        s(&loras),
        "--precision",
        "f32",
        "--quiet",
        "-o",
        s(&again),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(pixels(&again), pixels(&png), "--from-png made another image");
    assert_eq!(lorafuse::pipeline::image::read_parameters(&again).unwrap().unwrap(), p);

    let o = lorafuse(&["inspect", s(&loras.join("kohya_lora.safetensors")), "-m", s(&model)]);
    let out = String::from_utf8_lossy(&o.stdout).to_string() + &String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{out}");
    for want in ["trained for: sdxl", "(SDXL)", "matches:"] {
        assert!(out.contains(want), "{want} missing from {out}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

/// A LoRA-weight grid on SDXL: each cell equals `generate` with that weight.
#[test]
fn grid_on_sdxl_matches_generate() {
    let d = tmpdir("grid");
    let model = fix().join("model-fp16.safetensors");
    let loras = fix().join("loras");
    let common = |out: &Path| -> Vec<String> {
        [
            "-m",
            s(&model),
            "-p",
            "a castle",
            "-n",
            "lowres",
            "--steps",
            "2",
            "--seed",
            "3",
            "-W",
            "64",
            "-H",
            "64",
            "--precision",
            "f32",
            "--lora-dir",
            s(&loras),
            "--lora-mode",
            "fused",
            "--quiet",
            "-o",
            s(out),
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let grid = d.join("grid.png");
    let mut args = vec!["grid".to_string()];
    args.extend(common(&grid));
    args.extend(["--x".to_string(), "lora-weight:kohya_lora=0,0.8".to_string()]);
    let o = lorafuse(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let one = d.join("one.png");
    let mut args = vec!["generate".to_string()];
    args.extend(common(&one));
    args[4] = "a castle <lora:kohya_lora:0.8>".to_string();
    let o = lorafuse(&args.iter().map(String::as_str).collect::<Vec<_>>());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(pixels(d.join("grid-0-1.png")), pixels(&one), "grid cell vs generate");
    assert_ne!(pixels(d.join("grid-0-0.png")), pixels(&one), "the LoRA changed nothing");
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_sdxl_input_is_one_line_and_writes_nothing() {
    let d = tmpdir("bad");
    let model = fix().join("model-fp16.safetensors");
    let trunc = d.join("trunc.safetensors");
    std::fs::write(&trunc, &std::fs::read(&model).unwrap()[..200_000]).unwrap();
    let sd1_lora =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/loras/kohya_lora.safetensors");
    let out_png = d.join("never.png");
    for (args, needle) in [
        (vec!["-m", s(&model), "-W", "100", "-H", "64"], "multiples of 8"),
        (vec!["-m", s(&trunc), "-W", "64", "-H", "64"], "but the data section has"),
        (vec!["-m", s(&model), "-W", "64", "-H", "64", "--lora", s(&sd1_lora)], "the model is SDXL"),
        (vec!["-m", s(&model), "-W", "64", "-H", "64", "--size-cond", "1,2,3"], "six numbers"),
    ] {
        let mut all = vec!["generate", "-p", "x", "-o", s(&out_png), "--quiet", "--steps", "1"];
        all.extend(args);
        let o = lorafuse(&all);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{all:?} succeeded");
        assert!(err.contains(needle) && !err.contains("panicked"), "{all:?}: {err}");
        assert!(!out_png.exists());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn info_names_the_family() {
    for (m, family) in [
        (fix().join("model-fp16.safetensors"), "(SDXL)"),
        (fix().join("model"), "(SDXL)"),
        (PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/model-fp16.safetensors"), "(SD1.x)"),
    ] {
        let o = lorafuse(&["info", "-m", s(&m)]);
        let out = String::from_utf8_lossy(&o.stdout);
        assert!(o.status.success() && out.contains(family) && out.contains("adapter:"), "{out}");
    }
}

/// An infotext as A1111 writes it for an SDXL image (no size conditioning field, the sampler and
/// `Schedule type` apart, `Clip skip` from the user's settings, the LoRA by tag and hash) is
/// regenerated by `--from-png` as the same settings typed on the command line would be.
#[test]
fn from_png_reads_an_a1111_sdxl_infotext() {
    let d = tmpdir("a1111");
    let model = fix().join("model-fp16.safetensors");
    let loras = fix().join("loras");
    // A1111 writes the first 12 hex digits of the hash civitai indexes.
    let hash = lorafuse::weights::hash::lora_hash(&loras.join("kohya_lora.safetensors")).unwrap()[..12].to_string();
    let src = d.join("a1111.png");
    let text = format!(
        "1girl, (silver hair:1.2), night sky BREAK stars <lora:kohya_lora:0.6>\nNegative prompt: lowres, [bad hands]\n\
         Steps: 3, Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 5, Seed: 11, Size: 64x48, \
         Model hash: 31e35c80fc, Model: sd_xl_base_1.0, Clip skip: 2, Lora hashes: \"kohya_lora: {hash}\", \
         Version: v1.10.1"
    );
    lorafuse::pipeline::image::write_png(&src, 1, 1, &[0, 0, 0], &text).unwrap();
    let common = ["-m", s(&model), "--lora-dir", s(&loras), "--precision", "f32", "--quiet"];
    let from = d.join("from.png");
    let mut args = vec!["generate", "--from-png", s(&src), "-o", s(&from)];
    args.extend(common);
    let o = lorafuse(&args);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("hash 31e35c80fc"), "another model's hash is a warning: {err}");
    let typed = d.join("typed.png");
    let mut args = vec![
        "generate",
        "-p",
        "1girl, (silver hair:1.2), night sky BREAK stars <lora:kohya_lora:0.6>",
        "-n",
        "lowres, [bad hands]",
        "--steps",
        "3",
        "--sampler",
        "dpmpp_2m_karras",
        "--cfg",
        "5",
        "--seed",
        "11",
        "-W",
        "64",
        "-H",
        "48",
        "--clip-skip",
        "2",
        "-o",
        s(&typed),
    ];
    args.extend(common);
    let o = lorafuse(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(pixels(&from), pixels(&typed), "--from-png of the A1111 text vs the same settings typed");
    let p = lorafuse::pipeline::image::read_parameters(&from).unwrap().unwrap();
    for field in ["Sampler: DPM++ 2M Karras", "Size: 64x48", "Seed: 11", "CFG scale: 5", &format!("kohya_lora: {hash}")]
    {
        assert!(p.contains(field), "{field} missing from {p}");
    }
    assert!(!p.contains("Size cond"), "default size conditioning is not written: {p}");
    std::fs::remove_dir_all(&d).unwrap();
}

/// `lorafuse demo --family sdxl`: a tiny SDXL written with random weights, a seeded image and a
/// LoRA-weight grid, end to end; the image records an SDXL run and is the same on a second run.
#[test]
fn demo_runs_a_tiny_sdxl_end_to_end() {
    let d = tmpdir("demo");
    let png = d.join("demo.png");
    let grid = d.join("demo-grid.png");
    let args =
        ["demo", "--family", "sdxl", "--steps", "2", "--size", "64", "--quiet", "-o", s(&png), "--grid", s(&grid)];
    let o = lorafuse(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = lorafuse::pipeline::image::read_parameters(&png).unwrap().unwrap();
    assert!(p.contains("Model: sdxl-tiny") && p.contains("Size: 64x64") && p.contains("Seed: 42"), "{p}");
    let cells: Vec<Vec<u8>> = (0..5).map(|c| pixels(d.join(format!("demo-grid-0-{c}.png")))).collect();
    assert!(grid.exists());
    assert_ne!(cells[0], cells[4], "LoRA weight 0 and 1 gave the same image");
    assert!(pixels(&png).iter().any(|&v| v != pixels(&png)[0]), "a flat image");
    let first = pixels(&png);
    let o = lorafuse(&args);
    assert!(o.status.success());
    assert_eq!(pixels(&png), first, "same seed, same image");
    let o = lorafuse(&["demo", "--family", "sd3", "-o", s(&png)]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("sd15 or sdxl"));
    std::fs::remove_dir_all(&d).unwrap();
}
