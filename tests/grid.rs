//! `lorafuse grid` and `generate --from-png` through the binary, on the tiny fixture model, plus
//! the grid library's axis parsing, layout and infotext reading.

use std::path::{Path, PathBuf};
use std::process::Command;

use lorafuse::grid::{apply_values, compose, plan, Axis, AxisKind, GridLabels, LoraLookup};
use lorafuse::lora::{lora_name, LoraSpec};
use lorafuse::pipeline::image::read_parameters;
use lorafuse::pipeline::infotext::{parse_infotext, Settings};
use lorafuse::pipeline::request::Request;
use lorafuse::pipeline::rng::RngKind;
use lorafuse::schedulers::SamplerKind;

fn lorafuse(args: &[&str]) -> std::process::Output {
    let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", xdg).output().expect("run lorafuse")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-grid-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// (width, height, RGB8 pixels) of a PNG.
fn read_rgb(path: &Path) -> (usize, usize, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut r = dec.read_info().unwrap();
    let mut buf = vec![0; r.output_buffer_size().unwrap()];
    let frame = r.next_frame(&mut buf).unwrap();
    assert_eq!(frame.color_type, png::ColorType::Rgb);
    buf.truncate(frame.buffer_size());
    (frame.width as usize, frame.height as usize, buf)
}

fn rel_l2(a: &[u8], b: &[u8]) -> f64 {
    assert_eq!(a.len(), b.len());
    let n: f64 = a.iter().zip(b).map(|(&x, &y)| (x as f64 - y as f64).powi(2)).sum();
    let d: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    (n / d.max(1e-30)).sqrt()
}

const PROMPT: &str = "a lighthouse at dusk";

/// The settings shared by the grid and the separate `generate` runs.
fn common_args<'a>(model: &'a str, loras: &'a str) -> Vec<&'a str> {
    vec![
        "-m",
        model,
        "-p",
        PROMPT,
        "-n",
        "lowres",
        "--steps",
        "3",
        "--cfg",
        "5",
        "--sampler",
        "euler",
        "-W",
        "64",
        "-H",
        "64",
        "--precision",
        "f32",
        "--lora-dir",
        loras,
        "--lora-mode",
        "fused",
        "--quiet",
    ]
}

/// A 2×3 grid (LoRA weight × seed): each cell equals a separate `generate` with the same settings,
/// the grid holds the cells with drawn labels around them, and a cell's metadata regenerates it.
#[test]
fn grid_cells_match_generate_and_round_trip() {
    let d = tmpdir("cells");
    let model = fixtures().join("model-fp16.safetensors");
    let loras = fixtures().join("loras");
    let grid_png = d.join("grid.png");
    let mut args = vec!["grid"];
    args.extend(common_args(s(&model), s(&loras)));
    args.extend(["--x", "lora-weight:kohya_lora=0,0.5,1", "--y", "seed:1,2", "-o", s(&grid_png)]);
    let out = lorafuse(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains(s(&grid_png)), "{stdout}");

    let (gw, gh, grid) = read_rgb(&grid_png);
    assert!(gw > 3 * 64 && gh > 2 * 64, "grid {gw}x{gh} has no label bands");
    let (left, top) = (gw - 3 * 64, gh - 2 * 64);
    let mut cells = Vec::new();
    for (row, seed) in [1u64, 2].into_iter().enumerate() {
        for (col, w) in ["0", "0.5", "1"].into_iter().enumerate() {
            let cell = d.join(format!("grid-{row}-{col}.png"));
            assert!(stdout.contains(s(&cell)), "{} not printed: {stdout}", cell.display());
            let (cw, ch, px) = read_rgb(&cell);
            assert_eq!((cw, ch), (64, 64));
            let params = read_parameters(&cell).unwrap().unwrap();
            let seed_field = format!("Seed: {seed}");
            for field in [
                &seed_field[..],
                "Steps: 3",
                "Sampler: Euler",
                "CFG scale: 5",
                "Size: 64x64",
                "Lora hashes: \"kohya_lora: ",
            ] {
                assert!(params.contains(field), "{field} missing from {params}");
            }
            assert!(params.starts_with(&format!("{PROMPT}<lora:kohya_lora:{w}>")), "{params}");

            // The same image from a separate generate.
            let single = d.join(format!("single-{row}-{col}.png"));
            let spec = format!("{}:{w}", s(&loras.join("kohya_lora.safetensors")));
            let seed_s = seed.to_string();
            let mut g = vec!["generate"];
            g.extend(common_args(s(&model), s(&loras)));
            g.extend(["--seed", &seed_s, "--lora", &spec, "-o", s(&single)]);
            let o = lorafuse(&g);
            assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
            let (_, _, want) = read_rgb(&single);
            let e = rel_l2(&px, &want);
            eprintln!("cell {row},{col} (seed {seed}, weight {w}) vs generate: rel L2 {e:.3e}");
            assert!(e <= 1e-6, "cell {row},{col}: rel L2 {e:.3e}");

            // The grid holds the cell at its place.
            for y in 0..64 {
                let g0 = ((top + row * 64 + y) * gw + left + col * 64) * 3;
                assert_eq!(&grid[g0..g0 + 64 * 3], &px[y * 64 * 3..(y + 1) * 64 * 3], "cell {row},{col} line {y}");
            }
            cells.push(px);
        }
    }
    // The axes change the image: the LoRA weight along a row, the seed down a column.
    assert!(rel_l2(&cells[0], &cells[2]) > 1e-3, "LoRA weight 0 and 1 gave the same image");
    assert!(rel_l2(&cells[0], &cells[3]) > 1e-3, "seeds 1 and 2 gave the same image");

    // Labels: ink in the column band above each column and in the row band beside each row.
    let ink = |x0: usize, x1: usize, y0: usize, y1: usize| {
        (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).filter(|&(x, y)| grid[(y * gw + x) * 3] < 128).count()
    };
    for col in 0..3 {
        let n = ink(left + col * 64, left + col * 64 + 64, 0, top);
        assert!(n > 20, "column {col} label band has {n} dark pixels");
    }
    for row in 0..2 {
        let n = ink(0, left, top + row * 64, top + row * 64 + 64);
        assert!(n > 20, "row {row} label band has {n} dark pixels");
    }
    assert!(ink(0, left, 0, top) == 0, "the corner should stay background");

    // Regenerate cell (1, 1) from its PNG alone: same image; an explicit --seed overrides.
    let regen = d.join("regen.png");
    let cell = d.join("grid-1-1.png");
    let o = lorafuse(&[
        "generate",
        "-m",
        s(&model),
        "--from-png",
        s(&cell),
        "--lora-dir",
        s(&loras),
        "--lora-mode",
        "fused",
        "--precision",
        "f32",
        "--quiet",
        "-o",
        s(&regen),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let e = rel_l2(&read_rgb(&regen).2, &cells[4]);
    eprintln!("--from-png regenerated cell 1,1: rel L2 {e:.3e}");
    assert!(e <= 1e-6, "--from-png: rel L2 {e:.3e}");
    let p = read_parameters(&regen).unwrap().unwrap();
    assert!(p.contains("Seed: 2") && p.contains("kohya_lora:0.5") && p.contains("Lora hashes"), "{p}");

    let o = lorafuse(&[
        "generate",
        "-m",
        s(&model),
        "--from-png",
        s(&cell),
        "--lora-dir",
        s(&loras),
        "--lora-mode",
        "fused",
        "--precision",
        "f32",
        "--quiet",
        "--seed",
        "1",
        "-o",
        s(&regen),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let p = read_parameters(&regen).unwrap().unwrap();
    assert!(p.contains("Seed: 1") && p.contains("Steps: 3"), "{p}");
    // Seed 1 at weight 0.5 is cell (0, 1).
    let e = rel_l2(&read_rgb(&regen).2, &cells[1]);
    assert!(e <= 1e-6, "--from-png --seed 1: rel L2 {e:.3e} against cell 0,1");
    std::fs::remove_dir_all(&d).unwrap();
}

/// A z axis gives `grid-<z>-<row>-<col>.png` and one labelled block per z value; a `lora:` axis
/// turns LoRAs on and off (weight 0 and no LoRA give the same image in fused mode).
#[test]
fn grid_with_z_axis_and_lora_sets() {
    let d = tmpdir("z");
    let model = fixtures().join("model-fp16.safetensors");
    let loras = fixtures().join("loras");
    let grid_png = d.join("g.png");
    let kohya_at_0 = format!("{}:0", s(&loras.join("kohya_lora.safetensors")));
    let mut args = vec!["grid"];
    args.extend(common_args(s(&model), s(&loras)));
    args.extend([
        "--seed",
        "3",
        "--x",
        "lora:none,kohya_lora,kohya_lora+peft_lora",
        "--z",
        "cfg:1,5",
        "--lora",
        &kohya_at_0,
        "-o",
        s(&grid_png),
    ]);
    let out = lorafuse(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let (gw, gh, _) = read_rgb(&grid_png);
    // No y axis: no row-label band; two blocks, each under a z title and column labels.
    assert!(gw == 3 * 64 && gh > 2 * 64, "{gw}x{gh}");
    let mut px = Vec::new();
    for z in 0..2 {
        for col in 0..3 {
            let p = d.join(format!("g-{z}-0-{col}.png"));
            let params = read_parameters(&p).unwrap().unwrap();
            assert!(params.contains(if z == 0 { "CFG scale: 1," } else { "CFG scale: 5," }), "{params}");
            // --lora gave kohya_lora weight 0; the axis keeps that weight when it turns it on.
            match col {
                0 => assert!(!params.contains("<lora:") && !params.contains("Lora hashes"), "{params}"),
                1 => assert!(params.contains("<lora:kohya_lora:0>") && !params.contains("peft_lora"), "{params}"),
                _ => assert!(params.contains("<lora:kohya_lora:0><lora:peft_lora:1>"), "{params}"),
            }
            px.push(read_rgb(&p).2);
        }
    }
    for z in 0..2 {
        let e = rel_l2(&px[z * 3 + 1], &px[z * 3]);
        assert!(e <= 1e-6, "z {z}: kohya_lora at weight 0 differs from no LoRA by {e:.3e}");
        assert!(rel_l2(&px[z * 3 + 2], &px[z * 3]) > 1e-3, "z {z}: peft_lora changed nothing");
    }
    assert!(rel_l2(&px[0], &px[3]) > 1e-3, "CFG 1 and 5 gave the same image");
    std::fs::remove_dir_all(&d).unwrap();
}

/// Bad axes fail before any work: non-zero exit, one line naming the problem, no file written.
#[test]
fn grid_rejects_bad_input_with_one_line() {
    let model = fixtures().join("model-fp16.safetensors");
    let loras = fixtures().join("loras");
    let cases: [(&[&str], &str); 9] = [
        (&["--x", "colour:red,blue"], "unknown axis kind"),
        (&["--x", "lora-weight:no_such_lora=0,1"], "unknown LoRA"),
        (&["--x", "lora:none,kohya_lora+ghost"], "unknown LoRA"),
        (&["--x", "seed:"], "empty"),
        (&["--x", "cfg:1,,2"], "empty"),
        (&["--x", "steps:2,three"], "not a valid number"),
        (&["--x", "seed:1,2,3,4,5,6,7,8", "--y", "seed:1,2,3,4,5,6,7,8", "--z", "cfg:1,2"], "max-cells"),
        (&["--x", "seed:1,2,3", "--max-cells", "2"], "max-cells"),
        (&["--x", "prompt-sr:giraffe,zebra"], "prompt-sr"),
    ];
    for (i, (axes, needle)) in cases.iter().enumerate() {
        let d = tmpdir(&format!("bad{i}"));
        let o = d.join("grid.png");
        let mut args = vec!["grid"];
        args.extend(common_args(s(&model), s(&loras)));
        args.extend(["-o", s(&o)]);
        args.extend(axes.iter());
        let out = lorafuse(&args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{axes:?} succeeded");
        assert!(err.contains(needle) && !err.contains("panicked"), "{axes:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{axes:?}: {err}");
        assert_eq!(std::fs::read_dir(&d).unwrap().count(), 0, "{axes:?} wrote files");
        std::fs::remove_dir_all(&d).unwrap();
    }
}

fn lookup_dir() -> PathBuf {
    fixtures().join("loras")
}

#[test]
fn axes_parse_and_apply() {
    let dir = lookup_dir();
    let listed = vec![LoraSpec::new(dir.join("kohya_lora.safetensors"), 0.7)];
    let lookup = LoraLookup { loras: &listed, lora_dir: &dir };
    let a = Axis::parse("lora-weight:kohya_lora=0, 0.3,1", &lookup).unwrap();
    assert_eq!(a.kind, AxisKind::LoraWeight);
    assert_eq!(a.labels, ["kohya_lora: 0", "kohya_lora: 0.3", "kohya_lora: 1"]);
    let mut req = Request::new("x");
    req.loras = listed.clone();
    apply_values(&mut req, &[&a.values[1]]);
    assert_eq!(req.loras.len(), 1);
    assert_eq!((req.loras[0].unet_weight, req.loras[0].te_weight), (0.3, 0.3));

    // lora sets: the axis controls the LoRAs it names; --lora weights are kept.
    let set = Axis::parse("lora:none,kohya_lora,peft_lora+kohya_lora", &lookup).unwrap();
    let names = |r: &Request| r.loras.iter().map(|l| (lora_name(&l.path), l.unet_weight)).collect::<Vec<_>>();
    let mut r = Request::new("x");
    r.loras = listed.clone();
    apply_values(&mut r, &[&set.values[0]]);
    assert!(r.loras.is_empty());
    let mut r = Request::new("x");
    apply_values(&mut r, &[&set.values[2]]);
    assert_eq!(names(&r), [("peft_lora".to_string(), 1.0), ("kohya_lora".to_string(), 0.7)]);
    // A weight axis does not bring back a LoRA the set axis turned off.
    let mut r = Request::new("x");
    apply_values(&mut r, &[&a.values[2], &set.values[0]]);
    assert!(r.loras.is_empty());

    let sr = Axis::parse("prompt-sr:cat,\"dog, big\",fox", &lookup).unwrap();
    assert_eq!(sr.labels, ["cat", "dog, big", "fox"]);
    let mut r = Request::new("a cat");
    r.negative_prompt = "cat hair".into();
    apply_values(&mut r, &[&sr.values[1]]);
    assert_eq!((r.prompt.as_str(), r.negative_prompt.as_str()), ("a dog, big", "dog, big hair"));

    let smp = Axis::parse("sampler:euler,Euler a,dpmpp_2m_karras", &lookup).unwrap();
    assert_eq!(smp.labels, ["Sampler: Euler", "Sampler: Euler a", "Sampler: DPM++ 2M Karras"]);
    let mut r = Request::new("x");
    apply_values(&mut r, &[&smp.values[1]]);
    assert_eq!(r.sampler, SamplerKind::EulerA);

    for bad in ["seed", "seed:", "seed:1,-2", "cfg:1,nan", "steps:0", "sampler:heun9", "lora:none+kohya_lora", "x:1"] {
        assert!(Axis::parse(bad, &lookup).is_err(), "{bad} parsed");
    }

    // The plan: x columns, y rows, every cell the base seed unless an axis sets it.
    let seeds = Axis::parse("seed:5,6", &lookup).unwrap();
    let cfg = Axis::parse("cfg:2,3,4", &lookup).unwrap();
    let mut base = Request::new("a cat");
    base.seed = 9;
    let p = plan(&base, Some(&cfg), None, None, 64).unwrap();
    assert!(p.cells.iter().all(|c| c.req.seed == 9 && !c.req.lora_weights_vary));
    let p = plan(&base, Some(&cfg), Some(&seeds), None, 64).unwrap();
    assert_eq!((p.cols, p.rows, p.layers, p.cells.len()), (3, 2, 1, 6));
    assert_eq!((p.cells[4].row, p.cells[4].col, p.cells[4].req.seed, p.cells[4].req.cfg), (1, 1, 6, 3.0));
    assert!(plan(&base, Some(&cfg), Some(&seeds), None, 5).is_err());
    assert!(plan(&base, None, None, None, 64).is_err());
    let p = plan(&base, Some(&a), None, None, 64).unwrap();
    assert!(p.cells.iter().all(|c| c.req.lora_weights_vary));
}

#[test]
fn compose_places_cells_and_draws_labels() {
    let (cw, ch) = (24, 16);
    let cells: Vec<Vec<u8>> = (0..12).map(|i| vec![(i * 20) as u8; cw * ch * 3]).collect();
    let labels = GridLabels {
        x: vec!["a".into(), "bb".into(), "c".into()],
        y: vec!["row one".into(), "2".into()],
        z: vec!["first".into(), "second".into()],
    };
    let (img, geo) = compose(&cells, cw, ch, &labels).unwrap();
    assert!(geo.left > 0 && geo.top > 0 && geo.title > 0);
    assert_eq!(img.width, geo.left + 3 * cw);
    assert_eq!(img.height, 2 * (geo.title + geo.top + 2 * ch));
    assert_eq!(geo.cells.len(), 12);
    for (i, &(x, y)) in geo.cells.iter().enumerate() {
        for (dx, dy) in [(0, 0), (cw - 1, ch - 1)] {
            let o = ((y + dy) * img.width + x + dx) * 3;
            assert_eq!(img.rgb[o], (i * 20) as u8, "cell {i}");
        }
    }
    let dark = |x0: usize, x1: usize, y0: usize, y1: usize| {
        (y0..y1).flat_map(|y| (x0..x1).map(move |x| (x, y))).any(|(x, y)| img.rgb[(y * img.width + x) * 3] == 0)
    };
    assert!(dark(0, img.width, 0, geo.title), "z title");
    assert!(dark(geo.left, geo.left + cw, geo.title, geo.title + geo.top), "column label");
    assert!(dark(0, geo.left, geo.title + geo.top, geo.title + geo.top + ch), "row label");
    // Without labels there are no bands.
    let (img, geo) =
        compose(&cells[..2], cw, ch, &GridLabels { x: vec![String::new(); 2], ..Default::default() }).unwrap();
    assert_eq!((geo.left, geo.top, geo.title, img.width, img.height), (0, 0, 0, 2 * cw, ch));
    assert!(compose(&cells[..5], cw, ch, &labels).is_err());
}

#[test]
fn infotext_reads_a1111_and_lorafuse_layouts() {
    let a1111 = "masterpiece, a cat <lora:pop_art:0.8>\nsecond line\nNegative prompt: lowres, bad hands\nSteps: 28, \
                 Sampler: DPM++ 2M, Schedule type: Karras, CFG scale: 6.5, Seed: 3141592653, Size: 512x768, \
                 Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Clip skip: 2, RNG: CPU, \
                 Lora hashes: \"pop_art: 0123456789ab, other: ba9876543210\", Hires upscale: 2, Version: v1.10.1";
    let st = Settings::parse(a1111).unwrap();
    assert_eq!(st.prompt, "masterpiece, a cat <lora:pop_art:0.8>\nsecond line");
    assert_eq!(st.negative_prompt, "lowres, bad hands");
    assert_eq!(st.steps, Some(28));
    assert_eq!(st.sampler, Some(SamplerKind::DpmPP2MKarras));
    assert_eq!(st.cfg, Some(6.5));
    assert_eq!(st.seed, Some(3141592653));
    assert_eq!(st.size, Some((512, 768)));
    assert_eq!(st.clip_skip, Some(2));
    assert_eq!(st.rng, Some(RngKind::TorchCpu));
    assert_eq!(st.model_hash.as_deref(), Some("6ce0161689"));
    assert_eq!(
        st.lora_hashes,
        [("pop_art".to_string(), "0123456789ab".to_string()), ("other".to_string(), "ba9876543210".to_string())]
    );
    // `Hires upscale` is read (hires fix itself is on only with a `Denoising strength`).
    assert!(st.ignored.is_empty() && st.hires_scale == Some(2.0) && !st.hires_enabled(), "{st:?}");
    let mut req = Request::new("");
    st.apply(&mut req);
    assert_eq!((req.width, req.height, req.steps, req.seed), (512, 768, 28, 3141592653));

    // What lorafuse writes parses back to the same fields, quotes and escapes included.
    let info = lorafuse::pipeline::infotext::Infotext::new("a \"quoted\" prompt", "")
        .field("Steps", 4)
        .field("Sampler", "Euler a")
        .field("Seed", 7)
        .field("Model", "odd, name: \"x\"")
        .field("Timestep spacing", "trailing");
    let back = parse_infotext(&info.render());
    assert_eq!(back, info);
    let st = Settings::from_infotext(&back).unwrap();
    assert_eq!((st.sampler, st.spacing), (Some(SamplerKind::EulerA), Some(lorafuse::schedulers::Spacing::Trailing)));

    // A text without a settings line is all prompt; a bad value of a used field is an error.
    assert_eq!(parse_infotext("just a prompt, with: colon").prompt, "just a prompt, with: colon");
    assert!(Settings::parse("p\nSteps: many, Seed: 1, Size: 64x64").is_err());
    assert!(Settings::parse("p\nSteps: 2, Sampler: Heun++, Size: 64x64").is_err());
}

/// `generate --from-png` on an A1111 image: its settings are used (A1111 sampler and schedule
/// names, CPU RNG), unsupported settings and another model's hash are warnings, and a LoRA that
/// is recorded only by hash and cannot be found is an error before any work.
#[test]
fn from_png_regenerates_an_a1111_image() {
    let d = tmpdir("a1111");
    let model = fixtures().join("model-fp16.safetensors");
    let src = d.join("a1111.png");
    let text =
        "a lighthouse, (storm:1.2)\nNegative prompt: lowres\nSteps: 3, Sampler: DPM++ 2M, Schedule type: Karras, \
                CFG scale: 6.5, Seed: 1234, Size: 64x48, Model hash: 0123456789, Model: other, Clip skip: 2, RNG: CPU, \
                Hires upscale: 2, Version: v1.10.1";
    lorafuse::pipeline::image::write_png(&src, 1, 1, &[0, 0, 0], text).unwrap();
    let out_png = d.join("out.png");
    let o = lorafuse(&[
        "generate",
        "-m",
        s(&model),
        "--from-png",
        s(&src),
        "--precision",
        "f32",
        "--quiet",
        "-o",
        s(&out_png),
    ]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(err.contains("Hires upscale: 2") && err.contains("hash 0123456789"), "{err}");
    let (w, h, _) = read_rgb(&out_png);
    assert_eq!((w, h), (64, 48));
    let p = read_parameters(&out_png).unwrap().unwrap();
    for field in [
        "a lighthouse, (storm:1.2)\nNegative prompt: lowres\n",
        "Steps: 3,",
        "Sampler: DPM++ 2M Karras,",
        "CFG scale: 6.5,",
        "Seed: 1234,",
        "Size: 64x48,",
        "Clip skip: 2,",
        "RNG: CPU",
    ] {
        assert!(p.contains(field), "{field:?} missing from {p}");
    }

    let lora_only = d.join("lora.png");
    let text = "a cat\nSteps: 3, Seed: 1, Size: 64x64, Lora hashes: \"ghost_lora: 0123456789ab\"";
    lorafuse::pipeline::image::write_png(&lora_only, 1, 1, &[0, 0, 0], text).unwrap();
    let never = d.join("never.png");
    let loras = fixtures().join("loras");
    let o =
        lorafuse(&["generate", "-m", s(&model), "--from-png", s(&lora_only), "--lora-dir", s(&loras), "-o", s(&never)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("ghost_lora") && err.trim().lines().count() == 1, "{err}");
    assert!(!never.exists());
    let o = lorafuse(&["generate", "-m", s(&model), "--from-png", s(&model), "-o", s(&never)]);
    assert!(!o.status.success() && !String::from_utf8_lossy(&o.stderr).contains("panicked"));
    std::fs::remove_dir_all(&d).unwrap();
}
