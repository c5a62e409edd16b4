//! SDXL through the `lorafuse` binary on the sdxl-tiny fixture: `generate` with an SDXL LoRA
//! writes an A1111 infotext (with the size conditioning when it is not the default), `--from-png`
//! makes the same image again, `inspect` names SDXL as the LoRA's base, and bad inputs (an SD1
//! LoRA, a truncated SDXL file, a size that is not a multiple of 8) fail with one line and write
//! nothing.

use std::path::{Path, PathBuf};
use std::process::Command;

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

fn pixels(path: &Path) -> Vec<u8> {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let frame = r.next_frame(&mut buf).unwrap();
    buf.truncate(frame.buffer_size());
    buf
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
    assert_eq!(pixels(&d.join("grid-0-1.png")), pixels(&one), "grid cell vs generate");
    assert_ne!(pixels(&d.join("grid-0-0.png")), pixels(&one), "the LoRA changed nothing");
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
