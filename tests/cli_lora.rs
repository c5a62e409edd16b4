//! The LoRA side of the `lorafuse` command line: `generate --lora / --lora-dir / --max-loras /
//! --lora-mode`, the per-LoRA report and `Lora hashes` infotext, `inspect`, `bench lora`, and
//! one-line errors for bad LoRA input with no file written.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::pixels;

fn lorafuse(args: &[&str]) -> std::process::Output {
    let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", xdg).output().expect("run lorafuse")
}

fn fixtures() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny")
}

fn model() -> String {
    fixtures().join("model-fp16.safetensors").display().to_string()
}

fn lora(name: &str) -> String {
    fixtures().join("loras").join(format!("{name}.safetensors")).display().to_string()
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-cli-lora-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

/// The hash A1111 writes for a LoRA: SHA-256 of the bytes after the safetensors header.
fn after_header_sha256(path: &str) -> String {
    use sha2::{Digest, Sha256};
    let bytes = std::fs::read(path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    Sha256::digest(&bytes[8 + n..]).iter().map(|b| format!("{b:02x}")).collect()
}

fn base_args(out: &str) -> Vec<&str> {
    vec!["-q", "generate", "-m", "M", "-p", "1girl", "--steps", "2", "-W", "64", "-H", "64", "--seed", "3", "-o", out]
}

#[test]
fn generate_applies_stacked_loras_and_records_their_hashes() {
    let d = tmpdir("gen");
    let out = d.join("a.png").display().to_string();
    let m = model();
    let mut args = base_args(&out);
    args[3] = &m;
    let (l1, l2) = (format!("{}:0.8", lora("kohya_lora")), format!("{}:unet=1.2,te=0.5", lora("lycoris_loha")));
    args.extend(["--lora", &l1, "--lora", &l2, "--lora-mode", "merged"]);
    let o = lorafuse(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let err = text(&o.stderr);
    for name in ["kohya_lora", "lycoris_loha"] {
        let line =
            err.lines().find(|l| l.starts_with(&format!("lora {name}: applied "))).unwrap_or_else(|| panic!("{err}"));
        let frac = line.rsplit("applied ").next().unwrap().trim_end_matches(" modules");
        let (a, t) = frac.split_once('/').unwrap();
        assert!(a.parse::<usize>().unwrap() > 0 && a == t, "{line}");
    }
    let params = lorafuse::pipeline::image::read_parameters(Path::new(&out)).unwrap().unwrap();
    let h1 = &after_header_sha256(&lora("kohya_lora"))[..12];
    let h2 = &after_header_sha256(&lora("lycoris_loha"))[..12];
    assert!(params.contains(&format!("Lora hashes: \"kohya_lora: {h1}, lycoris_loha: {h2}\"")), "{params}");

    // The same LoRA through a prompt tag in --lora-dir gives the same pixels as through --lora.
    let out2 = d.join("b.png").display().to_string();
    let mut args = base_args(&out2);
    args[3] = &m;
    let p = "1girl <lora:kohya_lora:0.8>";
    args[5] = p;
    let dir = fixtures().join("loras").display().to_string();
    let l2b = l2.clone();
    args.extend(["--lora-dir", &dir, "--lora", &l2b, "--lora-mode", "merged"]);
    let o = lorafuse(&args);
    assert!(o.status.success(), "{}", text(&o.stderr));
    assert_eq!(pixels(&out), pixels(&out2), "tag and --lora differ");
}

#[test]
fn fused_and_merged_modes_give_the_same_image() {
    let d = tmpdir("modes");
    let m = model();
    let mut imgs = Vec::new();
    for mode in ["merged", "fused"] {
        let out = d.join(format!("{mode}.png")).display().to_string();
        let mut args = base_args(&out);
        args[3] = &m;
        let l = format!("{}:0.9", lora("peft_lora"));
        let k = format!("{}:-0.4", lora("kohya_locon"));
        args.extend(["--lora", &l, "--lora", &k, "--lora-mode", mode, "--precision", "f32"]);
        let o = lorafuse(&args);
        assert!(o.status.success(), "{}", text(&o.stderr));
        imgs.push(pixels(&out));
    }
    // Runtime factors vs merged weights round differently; the images agree to 8-bit noise.
    let f = |v: &[u8]| v.iter().map(|&x| x as f32).collect::<Vec<_>>();
    let (a, b) = (f(&imgs[0]), f(&imgs[1]));
    let num: f64 = a.iter().zip(&b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
    let den: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
    let rel = (num / den).sqrt();
    eprintln!("fused vs merged: relative L2 of 8-bit pixels {rel:.3e}");
    assert!(rel < 2e-3, "fused and merged images differ: {rel:.3e}");
}

#[test]
fn bad_lora_input_is_one_line_and_writes_nothing() {
    let d = tmpdir("bad");
    let m = model();
    let out = d.join("never.png").display().to_string();
    let truncated = d.join("truncated.safetensors");
    let bytes = std::fs::read(lora("kohya_lora")).unwrap();
    std::fs::write(&truncated, &bytes[..bytes.len() / 2]).unwrap();
    // An SDXL LoRA: the second text encoder's keys.
    let sdxl = d.join("sdxl.safetensors");
    let t = [0u8; 4 * 4 * 2];
    let views = vec![
        ("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_down.weight", vec![4usize, 4usize]),
        ("lora_te2_text_model_encoder_layers_0_mlp_fc1.lora_up.weight", vec![4, 4]),
    ]
    .into_iter()
    .map(|(n, s)| (n.to_string(), safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s, &t).unwrap()))
    .collect::<Vec<_>>();
    std::fs::write(&sdxl, safetensors::serialize(views, None).unwrap()).unwrap();
    let outside = d.join("outside.safetensors");
    std::fs::copy(lora("kohya_lora"), &outside).unwrap();
    let lora_dir = d.join("loras");
    std::fs::create_dir_all(&lora_dir).unwrap();
    let lora_dir = lora_dir.display().to_string();

    let tag = |t: &str| vec!["-p".to_string(), format!("x <lora:{t}:1>"), "--lora-dir".into(), lora_dir.clone()];
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec!["--lora".into(), d.join("missing.safetensors").display().to_string()], "missing.safetensors"),
        (vec!["--lora".into(), truncated.display().to_string()], "truncated.safetensors"),
        (vec!["--lora".into(), sdxl.display().to_string()], "lora_te2_"),
        (vec!["--lora".into(), format!("{}:abc=1", lora("kohya_lora"))], "abc"),
        (vec!["--lora".into(), format!("{}:abc", lora("kohya_lora"))], "weight \"abc\" is not a finite number"),
        (tag("../outside"), "inside the LoRA folder"),
        (tag("/etc/passwd"), "inside the LoRA folder"),
        (tag("nothere"), "nothere"),
        (
            vec![
                "--lora".into(),
                lora("kohya_lora"),
                "--lora".into(),
                lora("peft_lora"),
                "--max-loras".into(),
                "1".into(),
            ],
            "max-loras",
        ),
        (vec!["--lora".into(), lora("kohya_lora"), "--lora-mode".into(), "sideways".into()], "sideways"),
    ];
    for (extra, want) in cases {
        let mut args: Vec<String> = base_args(&out).into_iter().map(String::from).collect();
        args[3] = m.clone();
        let mut extra_args = extra.clone();
        if extra_args.first().is_some_and(|a| a == "-p") {
            args[5] = extra_args[1].clone();
            extra_args.drain(..2);
        }
        args.extend(extra_args);
        let refs: Vec<&str> = args.iter().map(String::as_str).collect();
        let o = lorafuse(&refs);
        let err = text(&o.stderr);
        assert!(!o.status.success(), "{extra:?} succeeded");
        assert!(err.contains(want), "{extra:?}: {err}");
        assert!(!err.contains("panicked"), "{extra:?}: {err}");
        assert_eq!(err.trim().lines().filter(|l| l.starts_with("error")).count(), 1, "{extra:?}: {err}");
        assert!(!Path::new(&out).exists(), "{extra:?} wrote {out}");
    }
    assert_eq!(std::fs::read(lora("kohya_lora")).unwrap(), std::fs::read(&outside).unwrap(), "LoRA file changed");
}

#[test]
fn inspect_reports_kind_rank_targets_and_matches() {
    for (name, kind) in [
        ("kohya_lora", "LoRA (kohya)"),
        ("kohya_locon", "LoCon"),
        ("lycoris_loha", "LoHa"),
        ("lycoris_lokr", "LoKr"),
        ("peft_lora", "PEFT"),
    ] {
        let o = lorafuse(&["inspect", &lora(name), "--model", &model()]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        let s = text(&o.stdout);
        assert!(s.contains(kind), "{name}: {s}");
        assert!(s.contains("trained for: sd_v1"), "{name}: {s}");
        let line = s.lines().find(|l| l.starts_with("matches:")).unwrap_or_else(|| panic!("{s}"));
        let (a, t) = line.trim_start_matches("matches:").trim().trim_end_matches(" modules").split_once('/').unwrap();
        assert!(a.parse::<usize>().unwrap() > 0 && a == t, "{name}: {line}");

        let o = lorafuse(&["inspect", &lora(name), "--json"]);
        assert!(o.status.success(), "{name}: {}", text(&o.stderr));
        let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
        // LoKr with full Kronecker factors has no rank.
        assert!(v["max_rank"].as_u64().unwrap() > 0 || name == "lycoris_lokr", "{v}");
        assert!(v["modules"].as_u64().unwrap() > 0, "{v}");
        assert_eq!(v["base"], "sd_v1");
    }
    let o = lorafuse(&["inspect", &model()]);
    assert!(!o.status.success(), "a checkpoint is not a LoRA");
    assert!(text(&o.stderr).contains("no LoRA"), "{}", text(&o.stderr));
}

#[test]
fn bench_lora_measures_every_count_in_both_modes() {
    let o =
        lorafuse(&["bench", "lora", "--size", "64", "--rank", "4", "--counts", "0,1,3", "--budget-ms", "1", "--json"]);
    assert!(o.status.success(), "{}", text(&o.stderr));
    let v: serde_json::Value = serde_json::from_slice(&o.stdout).unwrap();
    let steps = v["steps"].as_array().unwrap();
    assert_eq!(steps.len(), 6, "{v}");
    for s in steps {
        assert!(s["step_ms"].as_f64().unwrap() > 0.0, "{s}");
        let n = s["loras"].as_u64().unwrap();
        let (merged, fused) = (s["merged_weights"].as_u64().unwrap(), s["fused_layers"].as_u64().unwrap());
        match (s["mode"].as_str().unwrap(), n) {
            (_, 0) => assert_eq!(merged + fused, 0, "{s}"),
            ("merged", _) => {
                assert!(merged > 0 && fused == 0, "{s}");
                // Merged LoRAs cost nothing at run time: the very same kernel launches.
                assert_eq!(s["dispatches"], v["base_dispatches"], "{s}");
            }
            (_, _) => assert!(fused > 0 && merged == 0, "{s}"),
        }
    }
    let sw = v["switch6_ms"].as_array().unwrap();
    assert_eq!(sw.len(), 2);
    assert!(v["adapted_modules"].as_u64().unwrap() > 100, "{v}");
}
