//! PNG output: pixels, the A1111 `parameters` chunk (Latin-1 and UTF-8), hashes, atomic writes.

use lorafuse::pipeline::image::*;
use lorafuse::pipeline::infotext::*;
use lorafuse::schedulers::SamplerKind;
use lorafuse::weights::hash::{model_hash, sha256_hex};

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-test-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn png_roundtrip_with_parameters() {
    let d = tmpdir("png");
    let (w, h) = (5usize, 3usize);
    let chw: Vec<f32> = (0..3 * w * h).map(|i| (i as f32 / 44.0) * 1.2 - 0.1).collect();
    let rgb = to_rgb8(&chw, h, w).unwrap();
    // Clamped and rounded; channel-interleaved.
    assert_eq!(rgb[0], 0);
    assert_eq!(rgb[3], ((1.0f32 / 44.0 * 1.2 - 0.1) * 255.0).round() as u8);
    assert_eq!(rgb[1], ((15.0f32 / 44.0 * 1.2 - 0.1) * 255.0).round() as u8);
    for (prompt, name) in [("a cat, (masterpiece:1.2)", "latin.png"), ("ホタル at night", "utf8.png")] {
        let info = Infotext::new(prompt, "lowres")
            .field("Steps", 20)
            .field("Sampler", a1111_sampler_name(SamplerKind::DpmPP2MKarras))
            .field("CFG scale", fmt_num(7.0))
            .field("Seed", 42)
            .field("Size", "512x512")
            .field("Model", "a, b");
        let text = info.render();
        assert_eq!(
            text,
            format!("{prompt}\nNegative prompt: lowres\nSteps: 20, Sampler: DPM++ 2M Karras, CFG scale: 7, Seed: 42, Size: 512x512, Model: \"a, b\"")
        );
        let p = d.join(name);
        write_png(&p, w, h, &rgb, &text).unwrap();
        assert_eq!(read_parameters(&p).unwrap().as_deref(), Some(text.as_str()));
        let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(&p).unwrap()));
        let mut r = dec.read_info().unwrap();
        let mut buf = vec![0; r.output_buffer_size().unwrap()];
        let frame = r.next_frame(&mut buf).unwrap();
        assert_eq!(&buf[..frame.buffer_size()], &rgb[..]);
    }
    assert!(!d.join(".latin.png.partial").exists());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn bad_sizes_and_paths_are_errors() {
    assert!(to_rgb8(&[0.0; 10], 2, 2).is_err());
    let d = tmpdir("bad");
    assert!(write_png(&d.join("x.png"), 2, 2, &[0; 5], "").is_err());
    assert!(write_png(&d.join("no/such/dir/x.png"), 1, 1, &[0; 3], "").is_err());
    assert!(read_parameters(&d.join("missing.png")).is_err());
    std::fs::write(d.join("notpng.png"), b"hello").unwrap();
    assert!(read_parameters(&d.join("notpng.png")).is_err());
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn hashes_match_sha256() {
    let d = tmpdir("hash");
    let p = d.join("f.bin");
    std::fs::write(&p, b"abc").unwrap();
    // SHA-256("abc") and SHA-256("c").
    assert_eq!(sha256_hex(&p, 0).unwrap(), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    assert_eq!(model_hash(&p).unwrap(), "ba7816bf8f");
    assert_eq!(sha256_hex(&p, 2).unwrap(), "2e7d2c03a9507ae265ecf5b5356885a53393a2029d241394997265a1a25aefc6");
    std::fs::remove_dir_all(&d).unwrap();
}
