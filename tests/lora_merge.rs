//! `lora merge` against numpy (tools/goldens/make_lora_merge_goldens.py, tests/fixtures/lora-merge):
//! the sd15-tiny kohya LoRA × 0.7 + LoCon × −0.4 + LoHa × 0.5.
//! - `svd_factored` equals the dense SVD on random low-rank products (values and factors).
//! - Concatenation reproduces numpy's Σ wΔW per module; with a rank, the reported error per
//!   module is numpy's tail-energy error and the factors are numpy's truncation.
//! - generate with the merged file at 1 = generate with the inputs at their weights.
//! - Bad inputs are refused and nothing is written; the CLI writes the file and the report.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{generate_merged, rel_l2};
use lorafuse::lora::lowrank::{LowRankFile, LowRankModule};
use lorafuse::lora::merge::{check_output, merge, MergeInput, MergeOptions};
use lorafuse::lora::svd::{relative_diff, svd, svd_factored};
use lorafuse::lora::LoraSpec;
use lorafuse::weights::{ModelFiles, SafeTensorsFile, StDType};
use serde_json::Value;

const SD15: &str = "tests/fixtures/sd15-tiny";

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string("tests/fixtures/lora-merge/golden.json").unwrap()).unwrap()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-merge-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn lora(name: &str) -> PathBuf {
    PathBuf::from(format!("{SD15}/loras/{name}.safetensors"))
}

/// The golden's inputs and weights.
fn inputs() -> Vec<MergeInput> {
    golden()["inputs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| MergeInput { path: lora(v[0].as_str().unwrap()), weight: v[1].as_f64().unwrap() as f32 })
        .collect()
}

/// ΔW = alpha/rank · up @ down of a written module, f64 accumulation.
fn product(m: &LowRankModule) -> Vec<f32> {
    let r = m.down_shape[0];
    let rows = m.up_shape[0];
    let cols = m.down.len() / r;
    let scale = m.alpha as f64 / r as f64;
    let mut out = vec![0f32; rows * cols];
    for i in 0..rows {
        for j in 0..cols {
            let s: f64 = (0..r).map(|k| m.up[i * r + k] as f64 * m.down[k * cols + j] as f64).sum();
            out[i * cols + j] = (s * scale) as f32;
        }
    }
    out
}

fn golden_dense(name: &str) -> Vec<f32> {
    SafeTensorsFile::open("tests/fixtures/lora-merge/golden.safetensors").unwrap().read_f32(name).unwrap()
}

/// A tiny xorshift so the random matrices need no extra crate.
fn randn(seed: &mut u64, n: usize) -> Vec<f32> {
    (0..n)
        .map(|_| {
            *seed ^= *seed << 13;
            *seed ^= *seed >> 7;
            *seed ^= *seed << 17;
            ((*seed >> 40) as f32 / (1u64 << 24) as f32) * 2.0 - 1.0
        })
        .collect()
}

#[test]
fn factored_svd_equals_dense_svd() {
    let mut seed = 0x9e3779b97f4a7c15u64;
    // (rows, k, cols): thin, k above rows, k above both.
    for (rows, k, cols) in [(60, 6, 90), (5, 8, 40), (7, 12, 9), (1, 3, 4)] {
        let up = randn(&mut seed, rows * k);
        let down = randn(&mut seed, k * cols);
        let mut m = vec![0f32; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                m[i * cols + j] = (0..k).map(|p| up[i * k + p] as f64 * down[p * cols + j] as f64).sum::<f64>() as f32;
            }
        }
        let d = svd(&m, rows, cols).unwrap();
        let f = svd_factored(&up, rows, k, &down, cols).unwrap();
        assert_eq!(f.s.len(), d.s.len());
        let r = k.min(rows).min(cols);
        for i in 0..r {
            let rel = (f.s[i] - d.s[i]).abs() / d.s[0];
            // measured ≤ 3e-7 (the dense SVD sees M rounded to f32)
            assert!(rel <= 1e-6, "{rows}×{k}×{cols}: s[{i}] {} vs {} ({rel:.2e})", f.s[i], d.s[i]);
        }
        assert!(f.s[r..].iter().all(|&v| v == 0.0));
        let (u, v) = f.factors(f.full_rank()).unwrap();
        let rr = f.full_rank();
        let mut back = vec![0f32; rows * cols];
        for i in 0..rows {
            for j in 0..cols {
                back[i * cols + j] = (0..rr).map(|p| u[i * rr + p] as f64 * v[p * cols + j] as f64).sum::<f64>() as f32;
            }
        }
        let rel = relative_diff(&m, &back);
        assert!(rel <= 1e-6, "{rows}×{k}×{cols}: factors reproduce M to {rel:.2e}");
        assert!((f.relative_error(1) - d.relative_error(1)).abs() <= 1e-6);
    }
    assert!(svd_factored(&[1.0, f32::NAN], 1, 2, &[1.0, 1.0], 1).is_err());
    assert!(svd_factored(&[1.0], 1, 1, &[1.0, 1.0], 1).is_err());
}

fn by_key(f: &LowRankFile) -> std::collections::BTreeMap<&str, &LowRankModule> {
    f.modules.iter().map(|m| (m.key.as_str(), m)).collect()
}

#[test]
fn concatenation_is_numpys_weighted_sum() {
    let g = golden();
    let (file, report) = merge(&inputs(), None, &MergeOptions::default(), &mut |_, _, _| {}).unwrap();
    let mods = by_key(&file);
    let gm = g["modules"].as_object().unwrap();
    assert_eq!(mods.len(), gm.len(), "one module per key of any input");
    let mut worst_s = 0f64;
    for (key, want) in gm {
        let m = mods[key.as_str()];
        let (rows, cols) = (want["rows"].as_u64().unwrap() as usize, want["cols"].as_u64().unwrap() as usize);
        assert_eq!((m.up_shape[0], m.down.len() / m.down_shape[0]), (rows, cols), "{key}");
        let r = m.down_shape[0];
        let scale = m.alpha / r as f32;
        let up: Vec<f32> = m.up.iter().map(|v| v * scale).collect();
        let sp = svd_factored(&up, rows, r, &m.down, cols).unwrap();
        for (i, s) in want["s"].as_array().unwrap().iter().enumerate() {
            let s = s.as_f64().unwrap();
            let got = sp.s.get(i).copied().unwrap_or(0.0);
            let rel = (got - s).abs() / want["norm"].as_f64().unwrap();
            worst_s = worst_s.max(rel);
            // measured ≤ 2.8e-8 (LoHa parts: dense f32 then factored at the numerical rank)
            assert!(rel <= 1e-6, "{key}: s[{i}] {got} vs numpy {s}");
        }
    }
    // The full ΔW of a few modules (1×1 conv, 3×3 conv with a LoHa part, cross-attention, TE).
    for name in SafeTensorsFile::open("tests/fixtures/lora-merge/golden.safetensors").unwrap().names() {
        let Some(key) = name.strip_prefix("sum__") else { continue };
        let got = product(mods[key]);
        let rel = relative_diff(&golden_dense(name), &got);
        eprintln!("concat {key}: rel {rel:.2e}");
        // measured ≤ 5.7e-8
        assert!(rel <= 1e-6, "{key}: merged ΔW vs numpy rel {rel:.2e}");
    }
    eprintln!("concat: worst singular value rel {worst_s:.2e}; total error {:.2e}", report.total_rel_error);
    // Only the LoHa parts are factored (at their numerical rank): ~f32 rounding (measured 1.2e-9).
    assert!(report.total_rel_error <= 1e-6, "{}", report.total_rel_error);
    let m = &mods["lora_unet_down_blocks_0_resnets_0_conv1"];
    assert_eq!(m.down_shape.len(), 4);
    assert_eq!(&m.down_shape[1..], &[32, 3, 3]);
}

#[test]
fn rank_truncation_is_numpys() {
    let g = golden();
    let rank = g["rank"].as_u64().unwrap() as usize;
    let conv_rank = g["conv_rank"].as_u64().unwrap() as usize;
    let o = MergeOptions { rank: Some(rank), conv_rank: Some(conv_rank) };
    let (file, report) = merge(&inputs(), None, &o, &mut |_, _, _| {}).unwrap();
    let mods = by_key(&file);
    let gm = g["modules"].as_object().unwrap();
    let mut worst = 0f64;
    for e in &report.modules {
        let want = &gm[&e.key];
        let want_rank = if want["conv"].as_bool().unwrap() { conv_rank } else { rank };
        assert!(e.rank <= want_rank && e.rank >= want_rank.min(e.old_rank.unwrap()), "{}: rank {}", e.key, e.rank);
        let diff = (e.rel_error - want["rank_error"].as_f64().unwrap()).abs();
        worst = worst.max(diff);
        // measured ≤ 1.3e-8
        assert!(diff <= 1e-4, "{}: error {} vs numpy {}", e.key, e.rel_error, want["rank_error"]);
    }
    eprintln!("rank {rank}: worst |error − numpy| {worst:.2e}, total {:.3e}", report.total_rel_error);
    assert!(report.total_rel_error > 1e-2, "the truncation must lose something to be checked");
    for name in SafeTensorsFile::open("tests/fixtures/lora-merge/golden.safetensors").unwrap().names() {
        let Some(key) = name.strip_prefix("trunc__") else { continue };
        let got = product(mods[key]);
        let rel = relative_diff(&golden_dense(name), &got);
        eprintln!("rank {key}: rel {rel:.2e}");
        // measured ≤ 1.2e-7
        assert!(rel <= 1e-5, "{key}: truncation vs numpy rel {rel:.2e}");
    }
    assert_eq!(file.metadata["ss_network_dim"], rank.to_string());
}

#[test]
fn generate_with_merged_file_equals_generate_with_inputs() {
    let model_p = PathBuf::from(format!("{SD15}/model-fp16.safetensors"));
    let model = ModelFiles::open(&model_p).unwrap();
    let ins = inputs();
    let (file, _) = merge(&ins, Some(&model), &MergeOptions::default(), &mut |_, _, _| {}).unwrap();
    let out = tmp("generate.safetensors");
    std::fs::write(&out, file.to_bytes(StDType::F32).unwrap()).unwrap();
    let run = |loras: Vec<LoraSpec>| generate_merged(&model_p, &loras);
    let want = run(ins.iter().map(|i| LoraSpec::new(&i.path, i.weight)).collect());
    let got = run(vec![LoraSpec::new(&out, 1.0)]);
    let plain = run(vec![]);
    let lat = rel_l2(&got.latents.data, &want.latents.data);
    let img = rel_l2(&got.images[0].data, &want.images[0].data);
    let effect = rel_l2(&plain.latents.data, &want.latents.data);
    eprintln!("merged file vs inputs: latents {lat:.3e}, image {img:.3e}; LoRA effect {effect:.3e}");
    // f32 sums in another order (measured: latents 6.7e-6, image 2.6e-6; effect 0.27).
    assert!(lat <= 1e-4 && img <= 1e-4, "latents {lat:.3e}, image {img:.3e}");
    assert!(effect > 100.0 * 1e-4, "the LoRAs barely change the image ({effect:.3e})");
    let _ = std::fs::remove_file(out);
}

/// kohya_lora's tensors, edited by `edit`, written to `path`.
fn write_edited(path: &Path, edit: impl Fn(&mut Vec<(String, Vec<usize>, Vec<f32>)>)) {
    let f = SafeTensorsFile::open(lora("kohya_lora")).unwrap();
    let mut owned: Vec<(String, Vec<usize>, Vec<f32>)> =
        f.names().map(|n| (n.to_string(), f.info(n).unwrap().shape.clone(), f.read_f32(n).unwrap())).collect();
    edit(&mut owned);
    let views: Vec<(String, safetensors::tensor::TensorView)> = owned
        .iter()
        .map(|(n, s, d)| {
            let v = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), bytemuck::cast_slice(d));
            (n.clone(), v.unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

#[test]
fn bad_inputs_are_refused() {
    assert!(MergeInput::parse("a.safetensors:nan").is_err());
    assert!(MergeInput::parse("a.safetensors:inf").is_err());
    let p = MergeInput::parse(r"C:\loras\a.safetensors").unwrap();
    assert_eq!((p.path.to_str().unwrap(), p.weight), (r"C:\loras\a.safetensors", 1.0));
    let p = MergeInput::parse(r"C:\loras\a.safetensors:-0.25").unwrap();
    assert_eq!((p.path.to_str().unwrap(), p.weight), (r"C:\loras\a.safetensors", -0.25));
    let ins = inputs();
    let err = |ins: &[MergeInput], o: MergeOptions| merge(ins, None, &o, &mut |_, _, _| {}).unwrap_err().to_string();
    let e = err(&ins, MergeOptions { rank: Some(0), conv_rank: None });
    assert!(e.contains("at least 1"), "{e}");
    let e = err(&ins, MergeOptions { rank: Some(40), conv_rank: None });
    assert!(e.contains("above") && e.contains("rank 32"), "{e}");
    let mut missing = ins.clone();
    missing.push(MergeInput { path: tmp("nope.safetensors"), weight: 1.0 });
    assert!(err(&missing, MergeOptions::default()).contains("does not exist"));
    let nan = vec![MergeInput { path: lora("kohya_lora"), weight: f32::NAN }];
    assert!(err(&nan, MergeOptions::default()).contains("not finite"));
    let sdxl = vec![
        MergeInput { path: lora("kohya_lora"), weight: 1.0 },
        MergeInput { path: PathBuf::from("tests/fixtures/sdxl-tiny/loras/kohya_lora.safetensors"), weight: 1.0 },
    ];
    let e = err(&sdxl, MergeOptions::default());
    assert!(e.contains("different base models") && e.contains("SDXL"), "{e}");
    let peft =
        vec![MergeInput { path: lora("kohya_lora"), weight: 1.0 }, MergeInput { path: lora("peft_lora"), weight: 1.0 }];
    let e = err(&peft, MergeOptions::default());
    assert!(e.contains("-m MODEL"), "{e}");
    // With the model the conventions are matched by layer.
    let model = ModelFiles::open(format!("{SD15}/model-fp16.safetensors")).unwrap();
    let (f, _) = merge(&peft, Some(&model), &MergeOptions::default(), &mut |_, _, _| {}).unwrap();
    assert!(f.modules.iter().all(|m| m.key.starts_with("lora_")));
    let dora = tmp("dora.safetensors");
    write_edited(&dora, |t| {
        t.push(("lora_te_text_model_encoder_layers_0_self_attn_q_proj.dora_scale".into(), vec![64, 1], vec![1.0; 64]))
    });
    let e = err(&[MergeInput { path: dora.clone(), weight: 1.0 }], MergeOptions::default());
    assert!(e.contains("DoRA"), "{e}");
    // One module with other widths (another model), UNet keys only so no family is named.
    let odd = tmp("odd.safetensors");
    write_edited(&odd, |t| {
        t.retain(|(n, ..)| n.starts_with("lora_unet_down_blocks_0_attentions_0_proj_in."));
        for (n, s, d) in t.iter_mut() {
            if n.ends_with("lora_down.weight") {
                *s = vec![4, 16, 1, 1];
                d.truncate(64);
            }
        }
    });
    let two = vec![ins[0].clone(), MergeInput { path: odd, weight: 1.0 }];
    let e = err(&two, MergeOptions::default());
    assert!(e.contains("proj_in") && e.contains("-m MODEL"), "{e}");
    let zero = vec![MergeInput { path: lora("kohya_lora"), weight: 0.0 }];
    assert!(err(&zero, MergeOptions::default()).contains("changes no module"));
    assert!(check_output(&ins[0].path, &ins).is_err());
    assert!(check_output(&tmp("new.safetensors"), &ins).is_ok());
}

fn lorafuse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

#[test]
fn cli_writes_merged_file_and_report_or_nothing() {
    let a = format!("{}:0.7", lora("kohya_lora").display());
    let b = format!("{}:-0.4", lora("kohya_locon").display());
    let out = tmp("cli.safetensors");
    let rep = tmp("cli.json");
    let args = ["lora", "merge", &a, &b, "--rank", "2", "--dtype", "fp16", "--report", rep.to_str().unwrap()];
    let o = lorafuse(&[&args[..], &["-o", out.to_str().unwrap()]].concat());
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("total relative error"), "{stdout}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert!(json["total_rel_error"].as_f64().unwrap() > 0.0);
    assert_eq!(json["bytes"].as_u64().unwrap(), std::fs::metadata(&out).unwrap().len());
    let f = SafeTensorsFile::open(&out).unwrap();
    let comment = &f.metadata()["ss_training_comment"];
    assert!(comment.contains("kohya_lora.safetensors × 0.7") && comment.contains("× -0.4"), "{comment}");
    let first = f.names().find(|n| n.ends_with("lora_up.weight")).unwrap().to_string();
    assert_eq!(f.info(&first).unwrap().dtype, StDType::F16);
    // Bad inputs write nothing.
    let input = lora("kohya_lora");
    let cases: Vec<(Vec<String>, &str)> = vec![
        (vec![a.clone(), "--rank".into(), "0".into()], "at least 1"),
        (vec![a.clone(), "--rank".into(), "500".into()], "above"),
        (vec![format!("{}:nan", input.display())], "finite"),
        (vec![a.clone(), tmp("missing.safetensors").display().to_string()], "does not exist"),
    ];
    for (args, what) in cases {
        let bad = tmp("bad.safetensors");
        let mut v: Vec<String> = vec!["lora".into(), "merge".into()];
        v.extend(args);
        v.extend(["-o".to_string(), bad.display().to_string()]);
        let o = lorafuse(&v.iter().map(String::as_str).collect::<Vec<_>>());
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(what), "{what}: {err}");
        assert!(!bad.exists(), "{what}: wrote {}", bad.display());
    }
    // -o equal to an input: refused, the input untouched.
    let copy = tmp("copy.safetensors");
    std::fs::copy(&input, &copy).unwrap();
    let before = std::fs::read(&copy).unwrap();
    let o = lorafuse(&["lora", "merge", &a, copy.to_str().unwrap(), "-o", copy.to_str().unwrap()]);
    assert!(!o.status.success() && String::from_utf8_lossy(&o.stderr).contains("also an input"));
    assert_eq!(std::fs::read(&copy).unwrap(), before);
}
