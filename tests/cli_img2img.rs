//! `generate` with img2img, inpainting, hires fix and `--preset lcm` through the binary, on the
//! sd15-tiny fixture at 64×64: bad inputs fail before the model loads and write nothing; the
//! resize modes fit an init image of another size; the infotext carries A1111's keys and
//! `--from-png` (with the init image and mask given again) makes the same pixels.
//!
//! The tests named `*_sampling_*` need `Pipeline::generate` to honour `Request::init` and
//! `Request::hires` (img2img, inpainting and hires sampling).

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

fn lorafuse(args: &[&str]) -> Output {
    let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", xdg).output().expect("run lorafuse")
}

fn model() -> String {
    let m = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/model-fp16.safetensors");
    m.display().to_string()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-img2img-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> String {
    p.display().to_string()
}

/// A smooth colourful picture (so resizing and inpainting have something to show).
fn write_init(path: &Path, w: u32, h: u32) {
    let img = image::RgbImage::from_fn(w, h, |x, y| {
        image::Rgb([(x * 255 / w.max(1)) as u8, (y * 255 / h.max(1)) as u8, ((x + y) * 7 % 256) as u8])
    });
    img.save(path).unwrap();
}

/// White (repaint) inside `[x0, x1) × [y0, y1)`, black elsewhere.
fn write_mask(path: &Path, w: u32, h: u32, [x0, y0, x1, y1]: [u32; 4]) {
    let m = image::GrayImage::from_fn(w, h, |x, y| {
        image::Luma([if (x0..x1).contains(&x) && (y0..y1).contains(&y) { 255 } else { 0 }])
    });
    m.save(path).unwrap();
}

fn ok(out: &Output) -> String {
    let err = String::from_utf8_lossy(&out.stderr).to_string();
    assert!(out.status.success(), "{err}");
    err
}

fn parameters(png: &Path) -> String {
    lorafuse::pipeline::image::read_parameters(png).unwrap().expect("a parameters chunk")
}

fn rgb(png: &Path) -> image::RgbImage {
    image::open(png).unwrap().to_rgb8()
}

/// How many pixels of two same-size images differ (a count, not two image dumps, on failure).
fn differing(a: &image::RgbImage, b: &image::RgbImage) -> usize {
    assert_eq!(a.dimensions(), b.dimensions());
    a.pixels().zip(b.pixels()).filter(|(p, q)| p != q).count()
}

#[test]
fn bad_inputs_fail_clearly_before_loading_and_write_nothing() {
    let d = tmpdir("bad");
    let (init, init100, mask, mask32, text) =
        (d.join("init.png"), d.join("init100.png"), d.join("mask.png"), d.join("mask32.png"), d.join("text.png"));
    write_init(&init, 64, 64);
    write_init(&init100, 100, 60);
    write_mask(&mask, 64, 64, [16, 16, 48, 40]);
    write_mask(&mask32, 32, 32, [8, 8, 24, 24]);
    std::fs::write(&text, "not an image").unwrap();
    let out = d.join("out.png");
    let (init, init100, mask, mask32, text) = (s(&init), s(&init100), s(&mask), s(&mask32), s(&text));
    let cases: Vec<(Vec<&str>, Vec<&str>)> = vec![
        (vec!["--init-image", &text], vec!["text.png", "cannot read"]),
        (vec!["--init-image", "/no/such/init.png"], vec!["/no/such/init.png"]),
        (vec!["--init-image", &init100, "-W", "64", "-H", "64"], vec!["100x60", "64x64", "--resize-mode"]),
        (vec!["--init-image", &init100], vec!["100x60", "multiple of 8", "-W"]),
        (vec!["--init-image", &init, "--mask", &mask32], vec!["32x32", "64x64", "same size"]),
        (vec!["--init-image", &init, "--strength", "0"], vec!["--strength", "(0, 1]"]),
        (vec!["--init-image", &init, "--strength", "1.5"], vec!["--strength", "1.5"]),
        (vec!["--mask", &mask], vec!["--mask", "--init-image"]),
        (vec!["--strength", "0.5"], vec!["--strength", "--init-image"]),
        (vec!["-W", "64", "-H", "64", "--hires-size", "32x32"], vec!["32x32", "not larger", "64x64"]),
        (vec!["-W", "64", "-H", "64", "--hires-size", "64x64"], vec!["not larger"]),
        (vec!["-W", "64", "-H", "64", "--hires-steps", "3"], vec!["--hires-steps", "--hires-scale"]),
        (vec!["-W", "64", "-H", "64", "--hires-scale", "2", "--hires-denoise", "0"], vec!["--hires-denoise"]),
        (vec!["--init-image", &init, "--mask-blur", "4"], vec!["--mask-blur", "--mask"]),
        (vec!["--init-image", &init, "--resize-mode", "stretch"], vec!["stretch", "crop-and-resize"]),
        (vec!["--init-image", &init, "--hires-scale", "2"], vec!["--init-image"]),
    ];
    for (extra, want) in cases {
        let m = model();
        let mut args = vec!["-q", "generate", "-m", &m, "--steps", "1", "-o", out.to_str().unwrap()];
        args.extend(&extra);
        let o = lorafuse(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success(), "{extra:?} succeeded");
        for w in want {
            assert!(err.contains(w), "{extra:?}: {w:?} not in {err}");
        }
        assert!(!err.contains("panicked") && !err.contains("loading"), "{extra:?}: {err}");
        assert!(!out.exists(), "{extra:?} wrote {}", out.display());
    }
    // clap's own conflict.
    let o = lorafuse(&["generate", "-m", &model(), "--hires-scale", "2", "--hires-size", "128x128"]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("cannot be used with"));
}

#[test]
fn resize_modes_fit_a_100x60_init_image() {
    let d = tmpdir("modes");
    let init = d.join("init100.png");
    write_init(&init, 100, 60);
    for mode in ["just-resize", "crop-and-resize", "resize-and-fill", "Crop and resize"] {
        let out = d.join(format!("{}.png", mode.replace(' ', "_")));
        let o = lorafuse(&[
            "-q",
            "generate",
            "-m",
            &model(),
            "--steps",
            "2",
            "--seed",
            "3",
            "-W",
            "64",
            "-H",
            "64",
            "--init-image",
            &s(&init),
            "--resize-mode",
            mode,
            "--strength",
            "0.5",
            "-o",
            &s(&out),
        ]);
        ok(&o);
        assert_eq!(rgb(&out).dimensions(), (64, 64), "{mode}");
        assert!(parameters(&out).contains("Denoising strength: 0.5"), "{mode}");
    }
    // A grid over an img2img request (the init image is loaded once, every cell starts from it).
    let grid = d.join("grid.png");
    let o = lorafuse(&[
        "-q",
        "grid",
        "-m",
        &model(),
        // ⌊2 · 0.75⌋ = 1 step runs (one step would run none, an error as in diffusers).
        "--steps",
        "2",
        "-W",
        "64",
        "-H",
        "64",
        "--init-image",
        &s(&init),
        "--resize-mode",
        "crop-and-resize",
        "--x",
        "cfg:3,7",
        "-o",
        &s(&grid),
    ]);
    ok(&o);
    assert!(parameters(&grid).contains("Denoising strength: 0.75"));
}

#[test]
fn preset_lcm_sets_steps_cfg_and_sampler_unless_given() {
    let d = tmpdir("lcm");
    let out = d.join("lcm.png");
    ok(&lorafuse(&[
        "-q",
        "generate",
        "-m",
        &model(),
        "-W",
        "64",
        "-H",
        "64",
        "--seed",
        "1",
        "--preset",
        "lcm",
        "-o",
        &s(&out),
    ]));
    let p = parameters(&out);
    assert!(p.contains("Steps: 4, Sampler: LCM, CFG scale: 1.5"), "{p}");
    let out = d.join("lcm6.png");
    ok(&lorafuse(&[
        "-q",
        "generate",
        "-m",
        &model(),
        "-W",
        "64",
        "-H",
        "64",
        "--preset",
        "lcm",
        "--steps",
        "6",
        "--cfg",
        "2",
        "-o",
        &s(&out),
    ]));
    let p = parameters(&out);
    assert!(p.contains("Steps: 6, Sampler: LCM, CFG scale: 2"), "{p}");
}

#[test]
fn img2img_sampling_round_trips_through_from_png() {
    let d = tmpdir("i2i");
    let init = d.join("init.png");
    write_init(&init, 64, 64);
    let (out, again, txt) = (d.join("out.png"), d.join("again.png"), d.join("txt.png"));
    let base = ["-q", "generate", "-m", &model(), "--steps", "4", "--seed", "11", "-p", "a red cube"];
    let mut args = base.to_vec();
    args.extend(["--init-image", init.to_str().unwrap(), "--strength", "0.5", "-o", out.to_str().unwrap()]);
    ok(&lorafuse(&args));
    let p = parameters(&out);
    assert!(p.contains("Size: 64x64") && p.contains("Denoising strength: 0.5"), "{p}");
    // Without the init image, --from-png says what is missing and writes nothing.
    let o = lorafuse(&["-q", "generate", "-m", &model(), "--from-png", &s(&out), "-o", &s(&again)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("--init-image") && err.contains("img2img"), "{err}");
    assert!(!again.exists());
    ok(&lorafuse(&[
        "-q",
        "generate",
        "-m",
        &model(),
        "--from-png",
        &s(&out),
        "--init-image",
        &s(&init),
        "-o",
        &s(&again),
    ]));
    assert_eq!(differing(&rgb(&again), &rgb(&out)), 0, "--from-png + --init-image makes the same pixels");
    assert_eq!(parameters(&again), p);
    // The init image is used: the same settings from noise make another image.
    let mut args = base.to_vec();
    args.extend(["-W", "64", "-H", "64", "-o", txt.to_str().unwrap()]);
    ok(&lorafuse(&args));
    assert!(differing(&rgb(&txt), &rgb(&out)) > 0, "the init image is used");
}

#[test]
fn inpaint_sampling_keeps_pixels_outside_the_blurred_mask() {
    let d = tmpdir("inpaint");
    let (init, mask) = (d.join("init.png"), d.join("mask.png"));
    write_init(&init, 64, 64);
    let region = [24, 20, 40, 36];
    write_mask(&mask, 64, 64, region);
    let (out, again) = (d.join("out.png"), d.join("again.png"));
    let m = model();
    for (full_res, extra) in [(false, vec![]), (true, vec!["--inpaint-full-res", "--inpaint-full-res-padding", "8"])] {
        let mut args =
            vec!["-q", "generate", "-m", &m, "--steps", "4", "--seed", "2", "--init-image", init.to_str().unwrap()];
        args.extend([
            "--mask",
            mask.to_str().unwrap(),
            "--mask-blur",
            "2",
            "--strength",
            "1",
            "-o",
            out.to_str().unwrap(),
        ]);
        args.extend(&extra);
        ok(&lorafuse(&args));
        let p = parameters(&out);
        assert!(p.contains("Denoising strength: 1") && p.contains("Mask blur: 2"), "{p}");
        assert_eq!(p.contains("Inpaint area: Only masked, Masked area padding: 8"), full_res, "{p}");
        // Blur 2 reaches ⌊2.5·2 + 0.5⌋ = 5 pixels past the mask; beyond, the init image's pixels.
        let (got, want) = (rgb(&out), rgb(&init));
        let reach = 5;
        let mut changed_inside = false;
        for (x, y, px) in got.enumerate_pixels() {
            let near =
                x + reach >= region[0] && x < region[2] + reach && y + reach >= region[1] && y < region[3] + reach;
            if !near {
                assert_eq!(px, want.get_pixel(x, y), "({x}, {y}) is outside the blurred mask");
            } else if (region[0]..region[2]).contains(&x) && (region[1]..region[3]).contains(&y) {
                changed_inside |= px != want.get_pixel(x, y);
            }
        }
        assert!(changed_inside, "the masked area was repainted");
        ok(&lorafuse(&[
            "-q",
            "generate",
            "-m",
            &model(),
            "--from-png",
            &s(&out),
            "--init-image",
            &s(&init),
            "--mask",
            &s(&mask),
            "-o",
            &s(&again),
        ]));
        assert_eq!(
            differing(&rgb(&again), &got),
            0,
            "--from-png + --init-image + --mask: same pixels (full res {full_res})"
        );
    }
}

#[test]
fn hires_sampling_round_trips_including_an_a1111_infotext() {
    let d = tmpdir("hires");
    let (out, again) = (d.join("out.png"), d.join("again.png"));
    ok(&lorafuse(&[
        "-q",
        "generate",
        "-m",
        &model(),
        "--steps",
        "3",
        "--seed",
        "4",
        "-W",
        "64",
        "-H",
        "64",
        "--hires-scale",
        "1.5",
        "--hires-steps",
        "2",
        "-o",
        &s(&out),
    ]));
    assert_eq!(rgb(&out).dimensions(), (96, 96));
    let p = parameters(&out);
    for f in
        ["Size: 64x64", "Denoising strength: 0.7", "Hires upscale: 1.5", "Hires steps: 2", "Hires upscaler: Latent"]
    {
        assert!(p.contains(f), "{f} not in {p}");
    }
    ok(&lorafuse(&["-q", "generate", "-m", &model(), "--from-png", &s(&out), "-o", &s(&again)]));
    assert_eq!(differing(&rgb(&again), &rgb(&out)), 0, "--from-png makes the same pixels");
    assert_eq!(parameters(&again), p);

    // A1111's own hires string: hires fix comes back on, with its upscaler's A1111 name.
    let a1111 = d.join("a1111.png");
    let text = "a cat\nNegative prompt: blurry\nSteps: 3, Sampler: Euler a, CFG scale: 7, Seed: 9, Size: 64x64, \
                Model hash: 0123456789, Model: other, Denoising strength: 0.5, Clip skip: 1, Hires upscale: 2, \
                Hires upscaler: Latent (nearest), Version: v1.10.1";
    lorafuse::pipeline::image::write_png(&a1111, 8, 8, &[0u8; 8 * 8 * 3], text).unwrap();
    ok(&lorafuse(&["-q", "generate", "-m", &model(), "--from-png", &s(&a1111), "-o", &s(&again)]));
    assert_eq!(rgb(&again).dimensions(), (128, 128));
    let p = parameters(&again);
    assert!(
        p.contains("Denoising strength: 0.5") && p.contains("Hires upscale: 2, Hires upscaler: Latent (nearest)"),
        "{p}"
    );
}
