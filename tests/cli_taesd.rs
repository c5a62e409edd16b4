//! `generate --taesd / --decoder / --preview*` and `bench realtime` on the command line, with the
//! sd15-tiny model and the taesd-tiny decoder: previews written while sampling (TAESD and
//! approximate), the final image decoded by TAESD, and the refusals (a decoder for the other
//! family, options that need --taesd or --preview), none of which writes anything.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;

use lorafuse::pipeline::fast_decode::{decode_latents_host, load_taesd};
use lorafuse::pipeline::image::to_rgb8;
use lorafuse::weights::detect::Family;
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::{DType, HostTensor};

fn lorafuse(args: &[&str]) -> std::process::Output {
    let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", xdg).output().expect("run lorafuse")
}

fn model() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/model-fp16.safetensors").display().to_string()
}

fn taesd() -> String {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/taesd-tiny/taesd_decoder.safetensors")
        .display()
        .to_string()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-cli-tiny-ae-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// (width, height, RGB bytes) of an 8-bit RGB PNG.
fn png_rgb(path: &Path) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let info = r.next_frame(&mut buf).unwrap();
    assert_eq!(info.color_type, png::ColorType::Rgb, "{}", path.display());
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

/// `generate` on the tiny model at 64×64, 3 steps, seed 5, f32, writing `out`, plus `extra`.
fn generate(out: &Path, extra: &[&str]) -> std::process::Output {
    let (m, o) = (model(), out.display().to_string());
    let mut args = vec![
        "generate",
        "-m",
        &m,
        "-p",
        "a castle",
        "--steps",
        "3",
        "-W",
        "64",
        "-H",
        "64",
        "--seed",
        "5",
        "--precision",
        "f32",
        "-o",
        &o,
    ];
    args.extend_from_slice(extra);
    lorafuse(&args)
}

/// Nothing but `keep` in `dir` (no image, preview or partial file left behind).
fn only(dir: &Path, keep: &[&str]) {
    let mut names: Vec<String> =
        std::fs::read_dir(dir).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names, keep, "{}", dir.display());
}

#[test]
fn taesd_previews_are_written_while_sampling() {
    let d = tmpdir("preview");
    let out = d.join("a.png");
    let t = taesd();
    let o = generate(&out, &["--taesd", &t, "--preview", "taesd", "--preview-every", "1"]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    // The progress lines say when a preview was written (stderr is not a terminal here).
    assert!(err.contains("preview of step 1 written") && err.contains("preview of step 2 written"), "{err}");
    let (w, h, rgb) = png_rgb(&d.join("a.preview.png"));
    assert_eq!((w, h, rgb.len()), (64, 64, 64 * 64 * 3));
    only(&d, &["a.png", "a.preview.png"]);

    // Previews do not change the image.
    let plain = d.join("plain.png");
    let o = generate(&plain, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(png_rgb(&out).2, png_rgb(&plain).2);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn approximate_previews_need_no_taesd() {
    let d = tmpdir("approx");
    let out = d.join("b.png");
    let p = d.join("live.png");
    let ps = p.display().to_string();
    let o = generate(&out, &["--preview", "approx", "--preview-every", "2", "--preview-file", &ps]);
    let err = text(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("preview of step 2 written") && !err.contains("preview of step 1 "), "{err}");
    let (w, h, rgb) = png_rgb(&p);
    assert_eq!((w, h), (64, 64));
    // Upscaled from the 8×8 latent: every 8×8 block is one colour.
    assert_eq!(rgb[..3], rgb[7 * 3..8 * 3]);
    assert_eq!(rgb[..3], rgb[7 * 64 * 3..7 * 64 * 3 + 3]);
    only(&d, &["b.png", "live.png"]);
    std::fs::remove_dir_all(&d).ok();
}

/// Needs the pipeline to honour `Request::decoder` (the lead's sampling core).
#[test]
fn taesd_decodes_the_final_image() {
    let d = tmpdir("decoder");
    let (fast, full, tensors) = (d.join("fast.png"), d.join("full.png"), d.join("t.safetensors"));
    let (t, ts) = (taesd(), tensors.display().to_string());
    let o = generate(&fast, &["--taesd", &t, "--decoder", "taesd", "--save-tensors", &ts]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = generate(&full, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let (_, _, fast_rgb) = png_rgb(&fast);
    assert!(fast_rgb != png_rgb(&full).2, "--decoder taesd gave the VAE's image");

    // TAESD's decode of the saved latents, through the library.
    let st = SafeTensorsFile::open(&tensors).unwrap();
    let latents = HostTensor::new(&st.info("latents").unwrap().shape.clone(), st.read_f32("latents").unwrap()).unwrap();
    let dec = load_taesd(common::ctx(), Path::new(&t), Family::Sd1, DType::F32).unwrap();
    let img = decode_latents_host(common::ctx(), &dec, &latents).unwrap();
    let want = to_rgb8(&img[0].data, 64, 64).unwrap();
    let worst = fast_rgb.iter().zip(&want).map(|(a, b)| a.abs_diff(*b)).max().unwrap();
    assert!(worst <= 1, "TAESD image differs from the library's decode by up to {worst}/255");
    std::fs::remove_dir_all(&d).ok();
}

/// A draft grid decoded by TAESD; grids write no previews.
#[test]
fn grid_decodes_with_taesd_and_refuses_previews() {
    let d = tmpdir("grid");
    let (fast, full) = (d.join("fast.png"), d.join("full.png"));
    let t = taesd();
    let base = ["-q", "grid", "-m", &model(), "-W", "64", "-H", "64", "--steps", "2", "--seed", "3", "--x", "cfg:3,7"];
    let run = |out: &Path, extra: &[&str]| {
        let mut args: Vec<&str> = base.to_vec();
        args.extend_from_slice(extra);
        let o = out.display().to_string();
        args.extend_from_slice(&["-o", &o]);
        lorafuse(&args)
    };
    let o = run(&fast, &["--taesd", &t, "--decoder", "taesd"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let o = run(&full, &[]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert!(png_rgb(&fast).2 != png_rgb(&full).2, "grid --decoder taesd gave the VAE's grid");
    let bad = d.join("bad.png");
    let o = run(&bad, &["--taesd", &t, "--preview", "taesd"]);
    assert!(
        !o.status.success() && text(&o.stderr).contains("--preview is not supported by grid"),
        "{}",
        text(&o.stderr)
    );
    assert!(!bad.exists());
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn a_taesd_for_the_other_family_writes_nothing() {
    let d = tmpdir("family");
    let xl = d.join("taesdxl_decoder.safetensors");
    std::fs::copy(taesd(), &xl).unwrap();
    let xs = xl.display().to_string();
    let o = generate(&d.join("x.png"), &["--taesd", &xs, "--preview", "taesd"]);
    let err = text(&o.stderr);
    assert!(!o.status.success(), "{err}");
    assert!(err.contains("TAESDXL decoder for an SD1.x model"), "{err}");
    assert!(!err.contains("panicked"), "{err}");
    only(&d, &["taesdxl_decoder.safetensors"]);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn options_that_need_taesd_or_preview_fail_fast() {
    let d = tmpdir("options");
    let out = d.join("y.png");
    let p = d.join("p.png").display().to_string();
    let missing = d.join("none.safetensors").display().to_string();
    for (extra, says) in [
        (&["--decoder", "taesd"][..], "--decoder taesd needs --taesd"),
        (&["--preview", "taesd"], "--preview taesd needs --taesd"),
        (&["--preview", "approx", "--preview-every", "0"], "--preview-every must be at least 1"),
        (&["--preview-file", &p], "need --preview"),
        (&["--preview-every", "2"], "need --preview"),
        (&["--taesd", &missing], "does not exist"),
        (&["--decoder", "tiny"], "unknown decoder"),
        (&["--preview", "approx", "--preview-file", &out.display().to_string()], "the output image itself"),
    ] {
        let o = generate(&out, extra);
        let err = text(&o.stderr);
        assert!(!o.status.success() && err.contains(says), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
    }
    only(&d, &[]);
    std::fs::remove_dir_all(&d).ok();
}

#[test]
fn bench_realtime_reports_every_phase() {
    // --quick: the tiny model's shapes, so every phase runs in seconds (the SD1.5-shaped run is
    // what BENCHMARKS.md reports).
    let out =
        lorafuse(&["bench", "realtime", "--quick", "--size", "64", "--rank", "4", "--compare-cfg", "7", "--json"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let pos = |k: &str| {
        let x = v[k].as_f64().unwrap_or_else(|| panic!("{k} missing: {v}"));
        assert!(x.is_finite() && x > 0.0, "{k} = {x}");
        x
    };
    for k in [
        "load_s",
        "taesd_load_ms",
        "lora_apply_ms",
        "first_image_ms",
        "text_encode_ms",
        "prepare_ms",
        "steps_ms",
        "taesd_decode_ms",
        "vae_decode_ms",
        "image_ms",
        "set_lora_weight_ms",
        "rerender_image_ms",
        "rerender_total_ms",
        "step_gflop",
        "taesd_gflop",
    ] {
        pos(k);
    }
    assert_eq!((v["size"].as_u64(), v["steps"].as_u64(), v["loras"].as_u64()), (Some(64), Some(4), Some(3)));
    assert_eq!(v["shapes"].as_str(), Some("tiny"));
    assert_eq!((v["sampler"].as_str(), v["unet_batch"].as_u64()), (Some("lcm"), Some(1)));
    let steps = v["step_ms"].as_array().unwrap();
    assert_eq!(steps.len(), 4);
    assert!(steps.iter().all(|s| s.as_f64().unwrap() > 0.0));
    // The image is its parts.
    let parts = pos("prepare_ms") + pos("steps_ms") + pos("taesd_decode_ms");
    assert!((pos("image_ms") - parts).abs() <= 0.05 * parts, "{v}");
    let phases: Vec<&str> = v["phases"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
    for want in
        ["text encoding", "step 1", "step 4", "steps", "TAESD decode", "image", "set one LoRA weight", "re-render"]
    {
        assert!(phases.contains(&want), "{want} not in {phases:?}");
    }
    for p in v["phases"].as_array().unwrap() {
        let ms = p["ms"].as_f64().unwrap();
        assert!(ms.is_finite() && ms > 0.0, "{p}");
    }
    // CFG 7 runs the UNet on twice the batch: twice the counted work per step.
    let c = &v["compare"];
    assert_eq!(c["unet_batch"].as_u64(), Some(2));
    assert!((c["step_gflop"].as_f64().unwrap() / pos("step_gflop") - 2.0).abs() < 1e-6, "{c}");
    assert!(c["ratio"].as_f64().unwrap() > 0.0);
}
