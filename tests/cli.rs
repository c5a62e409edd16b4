//! The `lorafuse` binary's contract: `info`, and `bench kernels --json` with every kernel named in
//! the issue, each with a time, throughput and a ratio to the measured peak.

use std::process::Command;

fn lorafuse(args: &[&str]) -> std::process::Output {
    // Run as a desktop session would, with XDG_RUNTIME_DIR set; the binary's own handling of an
    // unset one is checked by `no_xdg_runtime_dir_complaints_on_stderr`.
    let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", xdg).output().expect("run lorafuse")
}

#[test]
fn info_names_the_adapter() {
    let out = lorafuse(&["info"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let s = String::from_utf8_lossy(&out.stdout);
    assert!(s.contains("adapter:") && s.contains("max binding:"), "{s}");
}

#[test]
fn bench_kernels_json_reports_every_kernel() {
    let out = lorafuse(&["bench", "kernels", "--json", "--quick", "--budget-ms", "1", "--quiet"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).expect("one JSON object on stdout");
    assert!(v["adapter"].as_str().is_some_and(|s| !s.is_empty()));
    assert!(v["backend"].as_str().is_some());
    let peak = v["peak_gflops"].as_f64().unwrap();
    assert!(peak > 0.0);
    let kernels = v["kernels"].as_array().unwrap();
    let mut names: Vec<&str> = kernels.iter().map(|k| k["name"].as_str().unwrap()).collect();
    names.dedup();
    let mut want = vec!["matmul_f32", "conv3x3", "attention", "cross_attention", "group_norm", "lora_linear"];
    if names.contains(&"matmul_f16") {
        want.push("matmul_f16");
    }
    for w in &want {
        assert!(names.contains(w), "{w} missing from {names:?}");
    }
    for k in kernels {
        let ms = k["ms"].as_f64().unwrap();
        let gflops = k["gflops"].as_f64().unwrap();
        let ratio = k["ratio_to_peak"].as_f64().unwrap();
        assert!(ms > 0.0 && gflops > 0.0 && k["gbps"].as_f64().unwrap() > 0.0, "{k}");
        assert!((ratio - gflops / peak).abs() < 1e-9 * ratio.max(1.0), "{k}");
        assert!(k["shape"].as_str().is_some_and(|s| !s.is_empty()));
    }
}

#[test]
fn bad_arguments_fail_cleanly() {
    let out = lorafuse(&["bench", "kernels", "--budget-ms=-3"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("budget") && !err.contains("panicked"), "{err}");
    let out = lorafuse(&["--adapter", "no-such-gpu-0x7f", "info"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-gpu-0x7f") && !err.contains("panicked"), "{err}");
}

fn fixtures() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny")
}

fn tmpdir(name: &str) -> std::path::PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-cli-{name}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[test]
fn tokenize_prints_untruncated_ids_and_count() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer_cases.json")).unwrap()).unwrap();
    let cases = cases.as_array().unwrap();
    assert!(!cases.is_empty());
    for case in cases {
        let prompt = case["prompt"].as_str().unwrap();
        let want = &case["ids_untruncated"];
        // --raw: transformers' CLIPTokenizer ids for every case, A1111 syntax characters included
        let out = lorafuse(&["tokenize", "--prompt", prompt, "--raw", "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(&v["ids"], want, "--raw {prompt:?}");
        let out = lorafuse(&["tokenize", "--prompt", prompt, "--json"]);
        assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
        let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // Prompts with A1111 syntax characters are parsed first; the fixture's plain prompts are not.
        if !prompt.contains(['(', ')', '[', ']', '\\', '<']) {
            assert_eq!(&v["ids"], want, "{prompt:?}");
        }
        assert_eq!(v["token_count"].as_u64().unwrap() as usize + 2, v["ids"].as_array().unwrap().len(), "{prompt:?}");
    }
}

/// `generate` reproduces diffusers' run_euler through the CLI contract (--noise-file,
/// --save-tensors, the PNG and its parameters chunk).
#[test]
fn generate_reproduces_a_reference_run() {
    let d = tmpdir("gen");
    let golden = lorafuse::weights::safetensors::SafeTensorsFile::open(fixtures().join("golden.safetensors")).unwrap();
    let noise = golden.read_f32("pipe_noise").unwrap();
    let bytes = safetensors::serialize(
        [(
            "noise",
            safetensors::tensor::TensorView::new(
                safetensors::Dtype::F32,
                vec![1, 4, 8, 8],
                bytemuck::cast_slice(&noise),
            )
            .unwrap(),
        )],
        None,
    )
    .unwrap();
    std::fs::write(d.join("noise.safetensors"), bytes).unwrap();
    let runs: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("runs.json")).unwrap()).unwrap();
    let run = &runs["run_euler"];
    let model = fixtures().join("model-fp16.safetensors");
    let png = d.join("img.png");
    let st = d.join("t.safetensors");
    let out = lorafuse(&[
        "generate",
        "-m",
        model.to_str().unwrap(),
        "-p",
        run["prompt"].as_str().unwrap(),
        "-n",
        run["negative_prompt"].as_str().unwrap(),
        "--steps",
        "4",
        "--cfg",
        "7.5",
        "--sampler",
        "euler",
        "--spacing",
        "leading",
        "--seed",
        "5",
        "-W",
        "64",
        "-H",
        "64",
        "--precision",
        "f32",
        "--quiet",
        "--noise-file",
        d.join("noise.safetensors").to_str().unwrap(),
        "--save-tensors",
        st.to_str().unwrap(),
        "-o",
        png.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stdout).contains("img.png"));
    let saved = lorafuse::weights::safetensors::SafeTensorsFile::open(&st).unwrap();
    let rel = |a: &[f32], b: &[f32]| {
        let n: f64 = a.iter().zip(b).map(|(x, y)| ((x - y) as f64).powi(2)).sum();
        let d: f64 = b.iter().map(|y| (*y as f64).powi(2)).sum();
        (n / d).sqrt()
    };
    assert_eq!(saved.read_f32("noise").unwrap(), noise);
    let e_lat = rel(&saved.read_f32("latents").unwrap(), &golden.read_f32("run_euler_latents").unwrap());
    let e_img = rel(&saved.read_f32("image").unwrap(), &golden.read_f32("run_euler_image").unwrap());
    eprintln!("generate run_euler: latents {e_lat:.3e}, image {e_img:.3e}");
    assert!(e_lat <= 5e-3 && e_img <= 5e-3);
    assert_eq!(saved.info("image").unwrap().shape, vec![1, 3, 64, 64]);
    let params = lorafuse::pipeline::image::read_parameters(&png).unwrap().unwrap();
    for field in [
        "Negative prompt: lowres",
        "Steps: 4",
        "Sampler: Euler",
        "CFG scale: 7.5",
        "Seed: 5",
        "Size: 64x64",
        "Model hash: ",
        "Model: model-fp16",
        "Clip skip: 1",
        "RNG: GPU",
    ] {
        assert!(params.contains(field), "{field} missing from {params}");
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn generate_rejects_bad_input_with_one_line() {
    let d = tmpdir("bad");
    let model = fixtures().join("model-fp16.safetensors");
    let m = model.to_str().unwrap();
    let trunc = d.join("trunc.safetensors");
    std::fs::write(&trunc, &std::fs::read(&model).unwrap()[..100_000]).unwrap();
    let out_png = d.join("never.png");
    let o = out_png.to_str().unwrap();
    for (args, needle) in [
        (vec!["-m", "/no/such/model.safetensors"], "does not exist"),
        (vec!["-m", m, "-W", "100"], "multiples of 8"),
        (vec!["-m", m, "--steps", "0"], "steps"),
        (vec!["-m", m, "--sampler", "heun2"], "unknown sampler"),
        (vec!["-m", m, "--precision", "f8"], "precision"),
        (vec!["-m", trunc.to_str().unwrap(), "-W", "64", "-H", "64"], "larger than the file"),
        (vec!["-m", fixtures().join("loras/kohya_lora.safetensors").to_str().unwrap(), "-W", "64", "-H", "64"], "LoRA"),
    ] {
        let mut all = vec!["generate", "-p", "x", "-o", o, "--quiet"];
        all.extend(args);
        let out = lorafuse(&all);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{all:?} succeeded");
        assert!(err.contains(needle) && !err.contains("panicked"), "{all:?}: {err}");
        assert_eq!(err.trim().lines().count(), 1, "{err}");
        assert!(!out_png.exists());
    }
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn demo_runs_the_bundled_model_end_to_end() {
    let d = tmpdir("demo");
    let png = d.join("demo.png");
    let grid = d.join("demo-grid.png");
    let args = [
        "demo",
        "--steps",
        "2",
        "--size",
        "64",
        "--quiet",
        "-o",
        png.to_str().unwrap(),
        "--grid",
        grid.to_str().unwrap(),
    ];
    let out = lorafuse(&args);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let params = lorafuse::pipeline::image::read_parameters(&png).unwrap().unwrap();
    assert!(params.contains("Steps: 2") && params.contains("Seed: 42") && params.contains("Size: 64x64"), "{params}");
    // The LoRA-weight grid: five cells (0 … 1.0) beside the grid, each with its LoRA in the infotext.
    assert!(grid.exists());
    let cells: Vec<Vec<u8>> = (0..5).map(|c| std::fs::read(d.join(format!("demo-grid-0-{c}.png"))).unwrap()).collect();
    assert_ne!(cells[0], cells[4], "LoRA weight 0 and 1 gave the same image");
    let p4 = lorafuse::pipeline::image::read_parameters(&d.join("demo-grid-0-4.png")).unwrap().unwrap();
    assert!(p4.contains("Lora hashes"), "{p4}");
    // The same seed gives the same image.
    let first = std::fs::read(&png).unwrap();
    let out = lorafuse(&args);
    assert!(out.status.success());
    assert_eq!(std::fs::read(&png).unwrap(), first);
    std::fs::remove_dir_all(&d).unwrap();
}

/// `bench pipeline` builds SD1.5 at full size from synthetic weights and reports its timings.
#[test]
fn bench_pipeline_runs_full_size_sd15_with_synthetic_weights() {
    let out = lorafuse(&["bench", "pipeline", "--size", "64", "--steps", "1", "--precision", "f16", "--json"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["size"], 64);
    assert_eq!(v["step_ms"].as_array().unwrap().len(), 1);
    assert!(v["step_ms"][0].as_f64().unwrap() > 0.0 && v["vae_ms"].as_f64().unwrap() > 0.0);
    // SD1.5's weights alone are ~2 GB in f16; the pool holds them and the activations.
    assert!(v["pool_mib"].as_f64().unwrap() > 1500.0, "{v}");
    assert_eq!(v["family"], "SD1.x");
    assert!(v["vae_tiling"].is_null());
    assert!(v["step_gflop"].as_f64().unwrap() > 10.0, "{v}");
    // Peak memory per phase, in order; on lavapipe the weights are host memory, so the load's
    // resident peak holds them too.
    let phases: Vec<&str> = v["phases"].as_array().unwrap().iter().map(|p| p["phase"].as_str().unwrap()).collect();
    assert_eq!(phases, ["load", "prepare", "sampling", "vae"]);
    let load = &v["phases"][0];
    assert!(load["pool_peak_mib"].as_f64().unwrap() > 1500.0, "{load}");
    if cfg!(target_os = "linux") {
        assert!(load["rss_peak_mib"].as_f64().unwrap() > 100.0, "{load}");
        assert!(v["rss_peak_mib"].as_f64().unwrap() >= load["rss_peak_mib"].as_f64().unwrap());
    }
}

/// `bench pipeline` and `bench write-sdxl` refuse bad options before any work.
#[test]
fn bench_bad_options_fail_fast() {
    for args in [
        &["bench", "pipeline", "--family", "sd3"][..],
        &["bench", "pipeline", "--vae-tile-size", "32"],
        &["bench", "pipeline", "--vae-tiling", "--vae-tile-size", "2"],
        &["bench", "pipeline", "--vae-tiling", "--vae-tile-size", "32", "--vae-tile-overlap", "17"],
        &["bench", "pipeline", "--size", "100"],
        &["bench", "write-sdxl", "--out", "/nonexistent-dir/x.safetensors"],
        &["bench", "write-sdxl", "--out", "x.safetensors", "--dtype", "fp8"],
    ] {
        let out = lorafuse(args);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success() && !err.is_empty(), "{args:?}: {err}");
        assert!(!err.contains("panicked"), "{args:?}: {err}");
    }
    let out = lorafuse(&["generate", "-m", "x.safetensors", "--vae-tile-overlap", "8"]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("--vae-tiling"), "{out:?}");
}

fn tokenize_json(args: &[&str]) -> serde_json::Value {
    let mut all = vec!["tokenize"];
    all.extend(args);
    let out = lorafuse(&all);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    serde_json::from_slice(&out.stdout).expect("one JSON object on stdout")
}

/// `tokenize --json` prints what the encoder sees: each chunk of the library's parse as BOS,
/// prompt tokens, EOS (the 77-id chunk is that plus EOS padding), one weight per id, token strings.
#[test]
fn tokenize_json_is_the_parsed_prompt() {
    use lorafuse::lora::extract_extra_networks;
    use lorafuse::models::clip::prompt::parse_prompt;
    use lorafuse::models::clip::tokenizer::{Tokenizer, EOS};
    let prompt = "(masterpiece:1.2), a [cat] on a ((mat)) BREAK dog \\(not emphasis\\) <lora:x:1>";
    let tok = Tokenizer::embedded().unwrap();
    // generate's path: LoRA tags come out of the text first, then A1111 parsing
    let parsed = parse_prompt(tok, &extract_extra_networks(prompt).unwrap().text).unwrap();
    assert_eq!(parsed.chunks.len(), 2, "BREAK makes two chunks");
    let v = tokenize_json(&[prompt, "--json"]);
    let ids: Vec<u32> = v["ids"].as_array().unwrap().iter().map(|x| x.as_u64().unwrap() as u32).collect();
    let weights: Vec<f32> = v["weights"].as_array().unwrap().iter().map(|x| x.as_f64().unwrap() as f32).collect();
    let tokens: Vec<&str> = v["tokens"].as_array().unwrap().iter().map(|x| x.as_str().unwrap()).collect();
    let chunks: Vec<(usize, usize)> = v["chunks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c[0].as_u64().unwrap() as usize, c[1].as_u64().unwrap() as usize))
        .collect();
    assert_eq!((weights.len(), tokens.len()), (ids.len(), ids.len()));
    assert_eq!(chunks.len(), parsed.chunks.len());
    assert_eq!((chunks[0].0, chunks.last().unwrap().1), (0, ids.len()));
    for (k, ((start, end), chunk)) in chunks.iter().zip(&parsed.chunks).enumerate() {
        assert!(k == 0 || chunks[k - 1].1 == *start, "chunks are contiguous: {chunks:?}");
        assert!(end - start <= 77 && ids[end - 1] == EOS, "chunk {k}: {chunks:?}");
        let mut padded_ids = ids[*start..*end].to_vec();
        let mut padded_weights = weights[*start..*end].to_vec();
        padded_ids.resize(77, EOS);
        padded_weights.resize(77, 1.0);
        assert_eq!(padded_ids, chunk.ids, "chunk {k} ids");
        assert_eq!(padded_weights, chunk.weights, "chunk {k} weights");
    }
    for (id, t) in ids.iter().zip(&tokens) {
        assert_eq!(Some(*t), tok.token(*id), "token string of {id}");
    }
    assert_eq!(v["token_count"].as_u64().unwrap() as usize, parsed.token_count);
    // emphasis reached the weights; the LoRA tag and the escapes' backslashes did not reach the ids
    assert!(weights.contains(&1.2) && weights.iter().any(|&w| w < 1.0), "{weights:?}");
    assert!(!tokens.iter().any(|t| t.contains("lora") || t.contains('\\')), "{tokens:?}");
    assert!(tokens.contains(&"(</w>"), "an escaped parenthesis is text: {tokens:?}");
}

/// `tokenize --raw` is transformers' CLIPTokenizer, A1111 syntax characters and all.
#[test]
fn tokenize_raw_matches_transformers_on_syntax_characters() {
    let cases: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures().join("tokenizer_cases.json")).unwrap()).unwrap();
    let case = cases.as_array().unwrap().iter().find(|c| c["prompt"].as_str().unwrap().contains('(')).unwrap();
    let v = tokenize_json(&[case["prompt"].as_str().unwrap(), "--raw", "--json"]);
    assert_eq!(v["ids"], case["ids_untruncated"]);
    assert_eq!(v["tokens"].as_array().unwrap().len(), v["ids"].as_array().unwrap().len());
    // past 77 ids nothing is cut, as CLIPTokenizer without truncation=True
    let long = "cat ".repeat(100);
    let v = tokenize_json(&[&long, "--raw", "--json"]);
    assert_eq!(v["ids"].as_array().unwrap().len(), 102);
}

/// Without XDG_RUNTIME_DIR the Vulkan stack's complaints about it do not reach the user.
#[test]
fn no_xdg_runtime_dir_complaints_on_stderr() {
    let out = Command::new(env!("CARGO_BIN_EXE_lorafuse"))
        .arg("info")
        .env_remove("XDG_RUNTIME_DIR")
        .output()
        .expect("run lorafuse");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{err}");
    assert!(!err.contains("XDG_RUNTIME_DIR"), "{err}");
}
