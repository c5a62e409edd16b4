//! `lorafuse serve`'s A1111 img2img route and txt2img's hires fix over real HTTP: the same
//! pixels and infotext as `lorafuse generate` with the same settings, and clear 4xx answers for
//! bad images.

mod serve_common;

use std::path::Path;
use std::process::Command;

use base64::Engine;
use serde_json::json;
use serve_common::*;

fn b64(path: &Path) -> String {
    base64::engine::general_purpose::STANDARD.encode(std::fs::read(path).unwrap())
}

fn img2img_dir() -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/img2img")
}

/// `lorafuse generate` with `args` into `out`: (pixels, parameters).
fn cli(out: &Path, args: &[&str]) -> (Vec<u8>, String) {
    let mut all: Vec<String> = ["-q", "generate", "-m"].map(String::from).to_vec();
    all.push(model().display().to_string());
    all.extend(args.iter().map(|a| a.to_string()));
    all.extend(["-o".into(), out.display().to_string()]);
    let o = Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(&all).env("XDG_RUNTIME_DIR", xdg()).output().unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    png_file(out)
}

#[test]
fn img2img_inpainting_and_hires_equal_the_cli() {
    let s = Server::start("img2img", "");
    let (init, mask) = (img2img_dir().join("init.png"), img2img_dir().join("mask.png"));

    // img2img, as a data URL.
    let body = json!({"prompt": "a red fox", "seed": 7, "steps": 4, "width": 64, "height": 64, "cfg_scale": 6,
                      "sampler_name": "Euler", "denoising_strength": 0.5,
                      "init_images": [format!("data:image/png;base64,{}", b64(&init))]});
    let r = s.post("/sdapi/v1/img2img", None, &body);
    let inf = info(&r);
    assert_eq!(inf["denoising_strength"], json!(0.5));
    let (w, h, px, params) = decode_png(r.json()["images"][0].as_str().unwrap());
    assert_eq!((w, h), (64, 64));
    assert!(params.contains("Denoising strength: 0.5"), "{params}");
    let (cli_px, cli_params) = cli(
        &s.dir.join("i2i.png"),
        &["-p", "a red fox", "--seed", "7", "--steps", "4", "--cfg", "6", "--sampler", "euler", "--strength", "0.5"]
            .iter()
            .copied()
            .chain(["--init-image", init.to_str().unwrap()])
            .collect::<Vec<_>>(),
    );
    assert_eq!(params, cli_params, "img2img infotext differs from the CLI's");
    assert!(px == cli_px, "img2img pixels differ from the CLI's");

    // Inpainting, whole picture, A1111's mask blur.
    let body = json!({"prompt": "a red fox", "seed": 8, "steps": 4, "width": 64, "height": 64, "cfg_scale": 6,
                      "sampler_name": "Euler", "denoising_strength": 0.75, "mask_blur": 2,
                      "inpaint_full_res": false, "init_images": [b64(&init)], "mask": b64(&mask)});
    let r = s.post("/sdapi/v1/img2img", None, &body);
    let (_, _, px, params) = decode_png(r.json()["images"][0].as_str().unwrap());
    assert!(params.contains("Mask blur: 2"), "{params}");
    let args = ["-p", "a red fox", "--seed", "8", "--steps", "4", "--cfg", "6", "--sampler", "euler", "--strength"];
    let (cli_px, cli_params) = cli(
        &s.dir.join("inpaint.png"),
        &args
            .iter()
            .copied()
            .chain([
                "0.75",
                "--mask-blur",
                "2",
                "--init-image",
                init.to_str().unwrap(),
                "--mask",
                mask.to_str().unwrap(),
            ])
            .collect::<Vec<_>>(),
    );
    assert_eq!(params, cli_params, "inpainting infotext differs from the CLI's");
    assert!(px == cli_px, "inpainting pixels differ from the CLI's");

    // Hires fix through txt2img.
    let body = json!({"prompt": "a boat", "seed": 9, "steps": 3, "width": 64, "height": 64, "sampler_name": "Euler",
                      "enable_hr": true, "hr_scale": 1.5, "hr_second_pass_steps": 2, "denoising_strength": 0.6,
                      "hr_upscaler": "Latent (nearest)"});
    let r = s.txt2img(None, body);
    assert_eq!(r.status, 200, "{}", r.json());
    let (w, h, px, params) = decode_png(r.json()["images"][0].as_str().unwrap());
    assert_eq!((w, h), (96, 96));
    for k in ["Hires upscale: 1.5", "Hires steps: 2", "Hires upscaler: Latent (nearest)", "Denoising strength: 0.6"] {
        assert!(params.contains(k), "{k} missing: {params}");
    }
    let (cli_px, cli_params) = cli(
        &s.dir.join("hires.png"),
        &[
            "-W",
            "64",
            "-H",
            "64",
            "-p",
            "a boat",
            "--seed",
            "9",
            "--steps",
            "3",
            "--sampler",
            "euler",
            "--hires-scale",
            "1.5",
            "--hires-steps",
            "2",
            "--hires-denoise",
            "0.6",
            "--hires-upscaler",
            "latent-nearest",
        ],
    );
    assert_eq!(params, cli_params, "hires infotext differs from the CLI's");
    assert!(px == cli_px, "hires pixels differ from the CLI's");

    // Bad input: 400 with the problem named, and the server goes on.
    let bad = |extra: serde_json::Value, has: &str| {
        let mut b = json!({"prompt": "x", "steps": 2, "width": 64, "height": 64, "init_images": [b64(&init)]});
        for (k, v) in extra.as_object().unwrap() {
            b[k] = v.clone();
        }
        s.post("/sdapi/v1/img2img", None, &b).assert_error(400, has);
    };
    bad(json!({"init_images": []}), "init_images");
    bad(json!({"init_images": ["not base64!"]}), "base64");
    bad(json!({"init_images": [base64::engine::general_purpose::STANDARD.encode(b"hello")]}), "init_images[0]");
    bad(json!({"mask": base64::engine::general_purpose::STANDARD.encode(b"GIF89a")}), "mask");
    bad(json!({"denoising_strength": 1.5}), "strength");
    bad(json!({"resize_mode": 3}), "resize_mode");
    let r = s.txt2img(
        None,
        json!({"prompt": "x", "steps": 2, "width": 64, "height": 64, "enable_hr": true, "hr_upscaler": "ESRGAN_4x"}),
    );
    r.assert_error(400, "hr_upscaler");
    assert_eq!(s.get("/sdapi/v1/progress").status, 200);
}
