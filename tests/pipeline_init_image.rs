//! img2img / inpainting pixel work (`pipeline::init_image`) against PIL, cv2, diffusers and torch
//! (goldens from tools/goldens/make_init_image_goldens.py in tests/fixtures/init-image), and
//! against values worked out by hand.

use std::path::{Path, PathBuf};

use lorafuse::pipeline::init_image::{
    binarize_mask, blur_mask, crop, crop_region, fit_image, load_image, load_mask, overlay, paste, resize_image,
    resize_mask, upscale_latents, ResizeMode,
};
use lorafuse::weights::safetensors::SafeTensorsFile;
use lorafuse::HostTensor;

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/init-image")
}

fn golden(name: &str) -> HostTensor {
    let f = SafeTensorsFile::open(dir().join("goldens.safetensors")).unwrap();
    let shape = f.info(name).unwrap_or_else(|| panic!("no golden {name}")).shape.clone();
    HostTensor::new(&shape, f.read_f32(name).unwrap()).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-init-image-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

/// Largest absolute difference and mean absolute difference, after checking the shapes.
fn diff(what: &str, got: &HostTensor, want: &HostTensor) -> (f32, f32) {
    assert_eq!(got.shape, want.shape, "{what}: shape");
    let d: Vec<f32> = got.data.iter().zip(&want.data).map(|(a, b)| (a - b).abs()).collect();
    let max = d.iter().cloned().fold(0.0, f32::max);
    let mean = d.iter().sum::<f32>() / d.len() as f32;
    eprintln!("{what}: max |diff| {:.2}/255, mean {:.3}/255", max * 255.0, mean * 255.0);
    (max, mean)
}

#[test]
fn decodes_png_jpeg_and_webp_as_pil_does() {
    for (file, key, max_tol) in [
        ("tiny.png", "decoded_tiny_png", 0.0),
        ("tiny-gray.png", "decoded_tiny_gray_png", 0.0),
        ("tiny-palette.png", "decoded_tiny_palette_png", 0.0),
        ("tiny.webp", "decoded_tiny_webp", 0.0),
        // JPEG decoders may differ in the last bits of the IDCT and chroma upsampling.
        ("tiny.jpg", "decoded_tiny_jpg", 4.0 / 255.0),
    ] {
        let got = load_image(&dir().join(file)).unwrap();
        assert_eq!(got.shape, [3, 9, 13], "{file}");
        let (max, _) = diff(file, &got, &golden(key));
        assert!(max <= max_tol + 1e-6, "{file}: {max}");
    }
}

#[test]
fn bad_image_files_are_clear_errors_naming_the_file() {
    let text = tmp("not-an-image.png");
    std::fs::write(&text, "hello, this is text").unwrap();
    let png = std::fs::read(dir().join("tiny.png")).unwrap();
    let truncated = tmp("truncated.png");
    std::fs::write(&truncated, &png[..png.len() / 2]).unwrap();
    let empty = tmp("empty.webp");
    std::fs::write(&empty, b"").unwrap();
    let missing = tmp("missing.png");
    for p in [&text, &truncated, &empty, &missing] {
        for e in [load_image(p).unwrap_err().to_string(), load_mask(p).unwrap_err().to_string()] {
            assert!(e.contains(&p.display().to_string()), "{e}");
        }
    }
}

#[test]
fn masks_read_alpha_when_it_varies_and_pil_luminance_otherwise() {
    // Uniform red, alpha 0..=255: the alpha is the mask.
    let mut rgba = image::RgbaImage::new(4, 2);
    for (i, p) in rgba.pixels_mut().enumerate() {
        *p = image::Rgba([200, 10, 10, (i * 36) as u8]);
    }
    let p = tmp("alpha-mask.png");
    rgba.save(&p).unwrap();
    let m = load_mask(&p).unwrap();
    assert_eq!(m.shape, [2, 4]);
    let want: Vec<f32> = (0..8).map(|i| (i * 36) as f32 / 255.0).collect();
    assert_eq!(m.data, want);
    // Opaque RGBA: luminance. PIL's L = (19595 R + 38470 G + 7471 B + 0x8000) >> 16:
    // white 255, black 0, pure red 76, pure green 150, pure blue 29 (worked out by hand).
    let colours = [[255, 255, 255], [0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255], [10, 20, 30]];
    let mut opaque = image::RgbaImage::new(6, 1);
    for (p, c) in opaque.pixels_mut().zip(colours) {
        *p = image::Rgba([c[0], c[1], c[2], 255]);
    }
    let p = tmp("opaque-mask.png");
    opaque.save(&p).unwrap();
    // 10,20,30: 195950 + 769400 + 224130 + 32768 = 1222248 >> 16 = 18.
    let want: Vec<f32> = [255u8, 0, 76, 150, 29, 18].iter().map(|&v| v as f32 / 255.0).collect();
    assert_eq!(load_mask(&p).unwrap().data, want);
    // A grey PNG is its own values.
    let grey = load_mask(&dir().join("tiny-gray.png")).unwrap();
    assert_eq!(grey.data, golden("decoded_tiny_gray_png").data[..9 * 13]);
    // A1111's rounding: above 128 of 255.
    let b = binarize_mask(&HostTensor::new(&[1, 4], vec![0.0, 128.0 / 255.0, 129.0 / 255.0, 1.0]).unwrap());
    assert_eq!(b.data, [0.0, 0.0, 1.0, 1.0]);
}

#[test]
fn lanczos_matches_pil() {
    let src = golden("lanczos_src");
    for (key, w, h) in [("lanczos_down_24x16", 24, 16), ("lanczos_up_71x45", 71, 45)] {
        let got = resize_image(&src, w, h).unwrap();
        // PIL's 8-bit mode rounds and clamps between its two passes and at the end: a few levels
        // apart where the filter rings on this noisy picture.
        let (max, mean) = diff(key, &got, &golden(key));
        assert!(max <= 8.0 / 255.0 && mean <= 0.5 / 255.0, "{key}");
        // Its float mode has neither: the same filter to f32 precision (clamped at the end).
        let mut want = golden(&format!("lanczos_float_{w}x{h}"));
        want.data.iter_mut().for_each(|v| *v = v.clamp(0.0, 1.0));
        let (max, _) = diff(key, &got, &want);
        assert!(max <= 1e-4, "{key} (float)");
    }
    // A mask resizes the same way as one channel of an image.
    let plane = HostTensor::new(&[37, 53], src.data[37 * 53..2 * 37 * 53].to_vec()).unwrap();
    let m = resize_mask(&plane, 24, 16).unwrap();
    assert_eq!(m.data, resize_image(&src, 24, 16).unwrap().data[24 * 16..2 * 24 * 16]);
    assert!(resize_mask(&src, 24, 16).is_err());
    assert!(resize_image(&src, 0, 16).is_err());
    assert_eq!(resize_image(&src, 53, 37).unwrap().data, src.data);
}

#[test]
fn resize_modes_match_a1111() {
    for (name, w, h) in [("wide", 32, 32), ("tall", 48, 32)] {
        let src = golden(&format!("fit_{name}_src"));
        for (mode, m) in
            [(ResizeMode::JustResize, "just"), (ResizeMode::CropAndResize, "crop"), (ResizeMode::ResizeAndFill, "fill")]
        {
            let key = format!("fit_{name}_{m}");
            let got = fit_image(&src, w, h, mode).unwrap();
            let (max, mean) = diff(&key, &got, &golden(&key));
            // As `lanczos_matches_pil`: PIL's 8-bit passes clamp and round the filter's ringing.
            assert!(max <= 8.0 / 255.0 && mean <= 0.5 / 255.0, "{key}");
        }
    }
    // Masks ([H, W]) take the same path.
    let src = golden("fit_wide_src");
    let plane = HostTensor::new(&[30, 50], src.data[..30 * 50].to_vec()).unwrap();
    let m = fit_image(&plane, 32, 32, ResizeMode::ResizeAndFill).unwrap();
    assert_eq!(m.shape, [32, 32]);
    assert_eq!(m.data, fit_image(&src, 32, 32, ResizeMode::ResizeAndFill).unwrap().data[..32 * 32]);
}

#[test]
fn resize_and_fill_stretches_edges_as_pil_bicubic_does() {
    // A 4x2 image (2 rows) into 4x8: the image is centred on rows 3..5, rows 0..3 repeat
    // 1.125·row0 − 0.125·row1 (PIL's bicubic over a zero-height box), rows 5..8 the same from
    // the bottom edge; clamped to [0, 1].
    let img = HostTensor::new(&[1, 2, 4], vec![0.2, 0.4, 0.6, 1.0, 0.6, 0.4, 0.2, 0.0]).unwrap();
    let out = fit_image(&img, 4, 8, ResizeMode::ResizeAndFill).unwrap();
    let top = [0.15, 0.4, 0.65, 1.0];
    let bottom = [0.65, 0.4, 0.15, 0.0];
    for y in 0..8 {
        let row = &out.data[y * 4..y * 4 + 4];
        let want: &[f32] = match y {
            0..=2 => &top,
            3 => &img.data[..4],
            4 => &img.data[4..],
            _ => &bottom,
        };
        for (g, w) in row.iter().zip(want) {
            assert!((g - w).abs() < 1e-6, "row {y}: {row:?} vs {want:?}");
        }
    }
}

#[test]
fn resize_mode_names() {
    for m in ResizeMode::ALL {
        assert_eq!(m.name().parse::<ResizeMode>().unwrap(), m);
        assert_eq!(ResizeMode::from_a1111(m.a1111_name()).unwrap(), m);
    }
    assert_eq!(ResizeMode::CropAndResize.a1111_name(), "Crop and resize");
    assert_eq!(ResizeMode::from_a1111("Resize and fill").unwrap(), ResizeMode::ResizeAndFill);
    let e = "stretch".parse::<ResizeMode>().unwrap_err().to_string();
    assert!(e.contains("just-resize") && e.contains("stretch"), "{e}");
}

#[test]
fn mask_blur_matches_cv2() {
    let src = golden("blur_src");
    for blur in [1, 4, 16] {
        let key = format!("blur_{blur}");
        let got = blur_mask(&src, blur as f32).unwrap();
        let (max, _) = diff(&key, &got, &golden(&key));
        // cv2 blurs 8-bit images in fixed point, a level or two off the exact Gaussian for wide
        // kernels; its float path (rounded after each pass) is the same filter to the rounding.
        let (_, mean) = diff(&key, &got, &golden(&key));
        assert!(max <= 2.0 / 255.0 + 1e-6 && mean <= 0.3 / 255.0, "{key}");
        let (max, mean) = diff(&key, &got, &golden(&format!("{key}_float")));
        assert!(max <= 1.0 / 255.0 + 1e-6 && mean <= 0.01 / 255.0, "{key} (float)");
        // The blur reaches ⌊2.5·blur + 0.5⌋ pixels in each direction and no further.
        let reach = (2.5 * blur as f64 + 0.5) as usize;
        let (h, w) = (45, 37);
        for y in 0..h {
            for x in 0..w {
                let near = (0..h).any(|yy| {
                    (0..w).any(|xx| src.data[yy * w + xx] > 0.0 && yy.abs_diff(y) <= reach && xx.abs_diff(x) <= reach)
                });
                if !near {
                    assert_eq!(got.data[y * w + x], 0.0, "blur {blur}: ({x}, {y}) is beyond the kernel");
                }
            }
        }
    }
    assert_eq!(blur_mask(&src, 0.0).unwrap().data, src.data);
    assert!(blur_mask(&src, -1.0).is_err() && blur_mask(&src, f32::NAN).is_err());
    assert!(blur_mask(&golden("lanczos_src"), 4.0).is_err());
}

#[test]
fn crop_regions_match_diffusers() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir().join("crop_regions.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(cases.len() >= 20);
    for c in cases {
        let mask = golden(c["mask"].as_str().unwrap());
        let (w, h, pad) = (c["width"].as_u64().unwrap(), c["height"].as_u64().unwrap(), c["padding"].as_u64().unwrap());
        let got = crop_region(&mask, w as usize, h as usize, pad as usize).unwrap();
        let want: Vec<usize> = c["box"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap() as usize).collect();
        assert_eq!(got.to_vec(), want, "{c}");
    }
    let e = crop_region(&HostTensor::zeros(&[8, 8]), 64, 64, 32).unwrap_err().to_string();
    assert!(e.contains("empty"), "{e}");
    // A value that rounds to 0 in 8 bits is not masked.
    let mut faint = HostTensor::zeros(&[8, 8]);
    faint.data[9] = 0.4 / 255.0;
    assert!(crop_region(&faint, 8, 8, 0).is_err());
}

#[test]
fn crop_paste_and_overlay() {
    // 2 channels of a 5x3 image numbered 0..30; crop x 1..4, y 1..3 by hand.
    let img = HostTensor::new(&[2, 3, 5], (0..30).map(|v| v as f32).collect()).unwrap();
    let c = crop(&img, [1, 1, 4, 3]).unwrap();
    assert_eq!(c.shape, [2, 2, 3]);
    assert_eq!(c.data, [6.0, 7.0, 8.0, 11.0, 12.0, 13.0, 21.0, 22.0, 23.0, 26.0, 27.0, 28.0]);
    let mut dst = HostTensor::zeros(&[2, 3, 5]);
    paste(&mut dst, &c, [1, 1, 4, 3]).unwrap();
    for (i, (&d, &o)) in dst.data.iter().zip(&img.data).enumerate() {
        let (y, x) = ((i % 15) / 5, i % 5);
        let inside = (1..4).contains(&x) && (1..3).contains(&y);
        assert_eq!(d, if inside { o } else { 0.0 }, "index {i}");
    }
    assert!(paste(&mut dst, &c, [0, 0, 3, 3]).is_err(), "wrong size");
    assert!(crop(&img, [3, 0, 6, 2]).is_err() && crop(&img, [2, 1, 2, 3]).is_err(), "outside / empty");
    let m = crop(&HostTensor::new(&[3, 5], (0..15).map(|v| v as f32).collect()).unwrap(), [4, 0, 5, 3]).unwrap();
    assert_eq!((m.shape.clone(), m.data), (vec![3, 1], vec![4.0, 9.0, 14.0]));

    // overlay: alpha 0 keeps the original bit for bit, 1 takes the generated, 0.25 mixes.
    let orig = HostTensor::new(&[3, 1, 3], vec![0.1, 0.7, 0.3, 0.9, 0.123_456_7, 0.5, 0.0, 1.0, 0.33]).unwrap();
    let gen = HostTensor::new(&[3, 1, 3], vec![0.9, 0.2, 0.5, 0.1, 0.8, 0.6, 0.4, 0.0, 0.77]).unwrap();
    let alpha = HostTensor::new(&[1, 3], vec![0.0, 1.0, 0.25]).unwrap();
    let o = overlay(&orig, &gen, &alpha).unwrap();
    for ch in 0..3 {
        assert_eq!(o.data[ch * 3], orig.data[ch * 3]);
        assert_eq!(o.data[ch * 3 + 1], gen.data[ch * 3 + 1]);
    }
    assert!((o.data[2] - (0.25 * 0.5 + 0.75 * 0.3)).abs() < 1e-7);
    assert!(overlay(&orig, &gen, &HostTensor::zeros(&[3, 1])).is_err());
}

#[test]
fn latent_upscale_matches_torch_interpolate() {
    let src = golden("latents_src");
    for (h2, w2) in [(9, 13), (10, 14), (16, 16)] {
        for (nearest, kind) in [(false, "bilinear"), (true, "nearest")] {
            let key = format!("latents_{kind}_{h2}x{w2}");
            let got = upscale_latents(&src, h2, w2, nearest).unwrap();
            let (max, _) = diff(&key, &got, &golden(&key));
            assert!(max < 1e-5, "{key}: {max}");
        }
    }
    // Same size is the identity.
    assert_eq!(upscale_latents(&src, 5, 7, false).unwrap().data, src.data);
    assert!(upscale_latents(&HostTensor::zeros(&[4, 5]), 9, 9, false).is_err());
}

// Infotext: A1111's img2img, inpainting and hires fix keys, written and read back.

use lorafuse::pipeline::infotext::{parse_infotext, request_infotext, Settings};
use lorafuse::pipeline::init::{Hires, HiresUpscaler, InitImage, InitSource, InpaintMask};
use lorafuse::pipeline::request::Request;

fn settings_line(text: &str) -> String {
    text.lines().last().unwrap().to_string()
}

#[test]
fn img2img_and_inpaint_infotext_round_trips() {
    let mut req = Request::new("a cat");
    (req.width, req.height, req.steps, req.seed) = (64, 48, 10, 5);
    req.init = Some(InitImage {
        sources: vec![InitSource::Pixels(HostTensor::zeros(&[3, 48, 64]))],
        strength: 0.6,
        mask: Some(InpaintMask { alpha: HostTensor::zeros(&[48, 64]), blur: 4.0, only_masked_padding: Some(32) }),
    });
    let text = request_infotext(&req, 5, "m", "", &[]).render();
    let line = settings_line(&text);
    assert!(line.contains("Size: 64x48, Model: m, Denoising strength: 0.6, Clip skip: 1"), "{line}");
    assert!(line.ends_with("Mask blur: 4, Inpaint area: Only masked, Masked area padding: 32"), "{line}");
    let s = Settings::parse(&text).unwrap();
    assert_eq!(s.denoising_strength, Some(0.6));
    assert_eq!((s.mask_blur, s.inpaint_only_masked, s.masked_padding), (Some(4.0), Some(true), Some(32)));
    assert!(s.is_img2img() && s.has_inpaint_fields() && !s.hires_enabled() && s.ignored.is_empty(), "{s:?}");
    assert_eq!(s.hires(64, 48).unwrap(), None);

    // Plain img2img: strength only; "Whole picture" reads as not only-masked.
    req.init.as_mut().unwrap().mask = None;
    let line = settings_line(&request_infotext(&req, 5, "m", "", &[]).render());
    assert!(line.contains("Denoising strength: 0.6") && !line.contains("Mask blur"), "{line}");
    let s = Settings::parse("p\nSteps: 2, Seed: 1, Denoising strength: 0.3, Inpaint area: Whole picture").unwrap();
    assert_eq!(s.inpaint_only_masked, Some(false));
    assert!(Settings::parse("p\nSteps: 2, Seed: 1, Denoising strength: 1.5").is_err());
    assert!(Settings::parse("p\nSteps: 2, Seed: 1, Inpaint area: Everywhere").is_err());
}

#[test]
fn hires_infotext_round_trips() {
    let mut req = Request::new("a cat");
    (req.width, req.height, req.steps) = (64, 48, 10);
    let scaled =
        Hires { width: 128, height: 96, scale: Some(2.0), steps: 10, denoise: 0.7, upscaler: HiresUpscaler::Latent };
    req.hires = Some(scaled.clone());
    let text = request_infotext(&req, 1, "m", "", &[]).render();
    let line = settings_line(&text);
    // `Size` stays the first pass's, as in A1111.
    assert!(line.contains("Size: 64x48") && line.contains("Denoising strength: 0.7"), "{line}");
    assert!(line.ends_with("Hires upscale: 2, Hires steps: 10, Hires upscaler: Latent"), "{line}");
    let s = Settings::parse(&text).unwrap();
    assert!(s.hires_enabled() && !s.is_img2img());
    assert_eq!(s.hires(64, 48).unwrap(), Some(scaled));

    // A size instead of a scale; no `Hires steps` when 0.
    let sized = Hires { width: 96, height: 64, scale: None, steps: 0, denoise: 0.55, upscaler: HiresUpscaler::Lanczos };
    req.hires = Some(sized.clone());
    let text = request_infotext(&req, 1, "m", "", &[]).render();
    let line = settings_line(&text);
    assert!(line.ends_with("Hires resize: 96x64, Hires upscaler: Lanczos") && !line.contains("Hires steps"), "{line}");
    assert_eq!(Settings::parse(&text).unwrap().hires(64, 48).unwrap(), Some(sized));
}

#[test]
fn reads_a1111_hires_infotext() {
    let a1111 = "1girl, <lora:x:0.7>\nNegative prompt: bad\nSteps: 20, Sampler: DPM++ 2M, Schedule type: Karras, \
                 CFG scale: 7, Seed: 123, Size: 512x768, Model hash: 6ce0161689, Model: v1-5, \
                 Denoising strength: 0.45, Clip skip: 2, Hires upscale: 1.5, Hires steps: 12, \
                 Hires upscaler: Latent (nearest), Version: v1.10.1";
    let info = parse_infotext(a1111);
    assert_eq!(info.get("Hires upscaler"), Some("Latent (nearest)"));
    let s = Settings::parse(a1111).unwrap();
    assert!(s.hires_enabled() && s.ignored.is_empty(), "{s:?}");
    // A1111: int(512·1.5) = 768, int(768·1.5) = 1152; both multiples of 8.
    let want = Hires {
        width: 768,
        height: 1152,
        scale: Some(1.5),
        steps: 12,
        denoise: 0.45,
        upscaler: HiresUpscaler::LatentNearest,
    };
    assert_eq!(s.hires(512, 768).unwrap(), Some(want));
    // `Hires resize` with a side of 0: derived from the first pass's aspect ratio, as A1111.
    let s =
        Settings::parse("p\nSteps: 20, Seed: 1, Size: 512x768, Denoising strength: 0.5, Hires resize: 1024x0").unwrap();
    let h = s.hires(512, 768).unwrap().unwrap();
    assert_eq!((h.width, h.height, h.scale, h.upscaler), (1024, 1536, None, HiresUpscaler::Latent));
    // Hires keys without a denoising strength: hires fix was off (A1111's paste rule).
    let s = Settings::parse("p\nSteps: 20, Seed: 1, Size: 512x512, Hires upscale: 2, Hires upscaler: Latent").unwrap();
    assert!(!s.hires_enabled() && s.hires(512, 512).unwrap().is_none());
    // An upscaler lorafuse does not have is a clear error.
    let e = Settings::parse("p\nSteps: 20, Seed: 1, Denoising strength: 0.5, Hires upscaler: R-ESRGAN 4x+")
        .unwrap_err()
        .to_string();
    assert!(e.contains("R-ESRGAN 4x+") && e.contains("Latent (nearest)"), "{e}");
}

/// torch's `nearest-exact` (A1111 "Latent (nearest-exact)") against `nearest`, worked out by hand
/// for 8 → 12: sources ⌊(d + ½)·⅔⌋ = 0 1 1 2 3 3 4 5 5 6 7 7 and ⌊d·⅔⌋ = 0 0 1 2 2 3 4 4 5 6 6 7.
#[test]
fn latent_nearest_exact_picks_pixel_centres() {
    use lorafuse::pipeline::init_image::{upscale_latents_with, LatentInterp};
    let src = HostTensor::new(&[1, 1, 8], (0..8).map(|v| v as f32).collect()).unwrap();
    let exact = upscale_latents_with(&src, 1, 12, LatentInterp::NearestExact).unwrap();
    assert_eq!(exact.data, [0., 1., 1., 2., 3., 3., 4., 5., 5., 6., 7., 7.]);
    let plain = upscale_latents_with(&src, 1, 12, LatentInterp::Nearest).unwrap();
    assert_eq!(plain.data, [0., 0., 1., 2., 2., 3., 4., 4., 5., 6., 6., 7.]);
    let name = lorafuse::pipeline::init::HiresUpscaler::from_a1111("Latent (nearest-exact)").unwrap();
    assert_eq!(name.a1111_name(), "Latent (nearest-exact)");
}
