//! `lora extract` / `lora resize` against numpy (tools/goldens/make_lora_svd_goldens.py):
//! truncation errors equal the spectrum's tail energy, the extracted LoRA of base + the LoCon
//! fixture's ΔW has numpy's per-module errors, kohya's resize rules pick numpy's ranks, and bad
//! inputs fail with nothing written.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::process::Command;

use lorafuse::lora::extract::{extract, ExtractOptions};
use lorafuse::lora::resize::{kohya_rank, resize, ResizeOptions, ResizeRule};
use lorafuse::lora::svd::{relative_diff, svd};
use lorafuse::lora::LoraFile;
use lorafuse::weights::names::diffusers_to_ldm;
use lorafuse::weights::{ModelFiles, SafeTensorsFile, StDType};
use serde_json::Value;

const SD15: &str = "tests/fixtures/sd15-tiny";

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string("tests/fixtures/lora-svd/golden.json").unwrap()).unwrap()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array().unwrap().iter().map(|x| x.as_f64().unwrap()).collect()
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-extract-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn base() -> ModelFiles {
    ModelFiles::open(format!("{SD15}/model-fp16.safetensors")).unwrap()
}

/// base + the LoCon fixture's ΔW, every tensor f32 (the "fine-tune" to extract).
fn write_tuned(path: &Path, edit: impl Fn(&str, &mut Vec<usize>, &mut Vec<f32>)) {
    let files = base();
    let lay = files.ldm_layout().unwrap().clone();
    let lora = LoraFile::open(format!("{SD15}/loras/kohya_locon.safetensors"), &files).unwrap();
    let mut deltas: HashMap<String, Vec<f32>> = HashMap::new();
    for m in &lora.modules {
        let key = diffusers_to_ldm(m.component, &m.target, &lay).unwrap();
        deltas.insert(key, m.delta().unwrap().data);
    }
    let src = SafeTensorsFile::open(format!("{SD15}/model-fp16.safetensors")).unwrap();
    let mut owned = Vec::new();
    for (name, info) in src.tensors() {
        let mut data = src.read_f32(name).unwrap();
        if let Some(d) = deltas.get(name) {
            data.iter_mut().zip(d).for_each(|(w, d)| *w += d);
        }
        let mut shape = info.shape.clone();
        edit(name, &mut shape, &mut data);
        owned.push((name.to_string(), shape, bytemuck::cast_slice::<f32, u8>(&data).to_vec()));
    }
    assert_eq!(deltas.len(), lora.modules.len());
    let views: Vec<_> = owned
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    std::fs::write(path, safetensors::serialize(views, None).unwrap()).unwrap();
}

fn tuned() -> PathBuf {
    let p = tmp("tuned.safetensors");
    if !p.exists() {
        let part = tmp(&format!("tuned-{:?}.partial", std::thread::current().id()));
        write_tuned(&part, |_, _, _| {});
        std::fs::rename(&part, &p).unwrap();
    }
    p
}

#[test]
fn random_spectra_error_is_the_tail_energy() {
    let g = golden();
    for case in g["random"].as_array().unwrap() {
        let (rows, cols) = (case["rows"].as_u64().unwrap() as usize, case["cols"].as_u64().unwrap() as usize);
        let data: Vec<f32> = floats(&case["data"]).into_iter().map(|x| x as f32).collect();
        let spectrum = floats(&case["spectrum"]);
        let np_s = floats(&case["numpy_s"]);
        let np_err = floats(&case["rel_error"]);
        let sp = svd(&data, rows, cols).unwrap();
        assert_eq!(sp.full_rank(), rows.min(cols));
        for (i, (a, b)) in sp.s.iter().zip(&np_s).enumerate() {
            assert!((a - b).abs() <= 1e-9 * np_s[0] + 1e-12, "s[{i}] {a} vs numpy {b}");
        }
        let total: f64 = spectrum.iter().map(|s| s * s).sum();
        for r in 1..=spectrum.len() {
            let tail: f64 = spectrum[r..].iter().map(|s| s * s).sum();
            let want = (tail / total).sqrt();
            let got = sp.relative_error(r);
            assert!((got - np_err[r]).abs() < 1e-9, "rank {r}: {got} vs numpy {}", np_err[r]);
            // The f32 matrix adds ~1e-7 relative noise to the designed spectrum.
            assert!((got - want).abs() < 2e-6, "rank {r}: {got} vs tail energy {want}");
            assert!((sp.retained_energy(r) - (1.0 - want * want)).abs() < 1e-6);
            // The factors realise that error.
            let (up, down) = sp.factors(r).unwrap();
            let mut approx = vec![0f32; rows * cols];
            for i in 0..rows {
                for k in 0..r {
                    for j in 0..cols {
                        approx[i * cols + j] += up[i * r + k] * down[k * cols + j];
                    }
                }
            }
            let real = relative_diff(&data, &approx);
            assert!((real - got).abs() < 1e-5, "rank {r}: factors give {real}, reported {got}");
        }
        let full = rows.min(cols);
        let (up, down) = sp.factors(full).unwrap();
        let mut approx = vec![0f32; rows * cols];
        for i in 0..rows {
            for k in 0..full {
                for j in 0..cols {
                    approx[i * cols + j] += up[i * full + k] * down[k * cols + j];
                }
            }
        }
        assert!(relative_diff(&data, &approx) < 1e-5, "full rank must reproduce the matrix");
        assert!(sp.factors(0).is_err() && sp.factors(full + 1).is_err());
        // --energy: the smallest rank reaching the fraction.
        let r = sp.rank_for_energy(0.99);
        assert!(sp.retained_energy(r) >= 0.99 && (r == 1 || sp.retained_energy(r - 1) < 0.99));
    }
}

fn opts(rank: usize, conv: usize) -> ExtractOptions {
    ExtractOptions { rank: Some(rank), conv_rank: Some(conv), energy: None, min_diff: 0.0, exact: false }
}

#[test]
fn extract_matches_numpy_on_the_locon_fixture() {
    let g = golden();
    let want = g["locon"].as_object().unwrap();
    let (b, t) = (base(), ModelFiles::open(tuned()).unwrap());
    let mut calls = 0;
    let (file, report) = extract(&b, &t, &opts(2, 1), &mut |_, _, _| calls += 1).unwrap();
    assert!(calls > report.modules.len());
    let got: BTreeMap<&str, _> = report.modules.iter().map(|m| (m.key.as_str(), m)).collect();
    assert_eq!(got.keys().copied().collect::<Vec<_>>(), want.keys().map(String::as_str).collect::<Vec<_>>());
    let (mut tail, mut total) = (0.0, 0.0);
    for (key, w) in want {
        let m = got[key.as_str()];
        let conv3 = w["rank"].as_u64() == Some(2);
        assert_eq!(m.rank, if conv3 { 1 } else { 2 }, "{key}");
        let err = floats(&w["rel_error"])[m.rank];
        assert!((m.rel_error - err).abs() < 1e-4, "{key}: error {} vs numpy {err}", m.rel_error);
        let s0 = floats(&w["s"])[0];
        assert!((m.s_max - s0).abs() < 1e-4 * s0, "{key}: s_max {} vs numpy {s0}", m.s_max);
        tail += m.energy * err * err;
        total += m.energy;
    }
    assert!((report.total_rel_error - (tail / total).sqrt()).abs() < 1e-4);
    assert!(report.total_rel_error > 0.1, "rank 2 of rank-4 deltas must lose something");
    // kohya layout and metadata.
    assert_eq!(file.metadata["ss_network_module"], "networks.lora");
    assert_eq!(file.metadata["ss_network_dim"], "2");
    assert_eq!(file.metadata["ss_base_model_version"], "sd_v1");
    let conv = file.modules.iter().find(|m| m.key.ends_with("resnets_0_conv1")).unwrap();
    assert_eq!(conv.down_shape.len(), 4);
    assert_eq!(&conv.up_shape[1..], &[1, 1, 1]);
    let json: Value = serde_json::from_str(&report.to_json().unwrap()).unwrap();
    assert_eq!(json["modules"].as_array().unwrap().len(), want.len());
}

#[test]
fn full_rank_extract_reproduces_delta_and_applies_as_tuned() {
    let (b, tp) = (base(), tuned());
    let t = ModelFiles::open(&tp).unwrap();
    let o = ExtractOptions { rank: None, conv_rank: Some(64), energy: Some(1.0), min_diff: 0.0, exact: false };
    let (file, report) = extract(&b, &t, &o, &mut |_, _, _| {}).unwrap();
    assert!(report.total_rel_error < 1e-5, "{}", report.total_rel_error);
    let out = tmp("full.safetensors");
    std::fs::write(&out, file.to_bytes(StDType::F32).unwrap()).unwrap();
    // The library loads the extracted file; its ΔW equals tuned − base, and the fixture's.
    let lora = LoraFile::open(&out, &b).unwrap();
    let locon = LoraFile::open(format!("{SD15}/loras/kohya_locon.safetensors"), &b).unwrap();
    assert_eq!(lora.modules.len(), locon.modules.len());
    let mut worst = 0f64;
    for m in &lora.modules {
        assert!(m.rank <= 4, "{}: rank {}", m.key, m.rank);
        let tw = t.builder(m.component).get(&m.target, &m.target_shape).unwrap();
        let bw = b.builder(m.component).get(&m.target, &m.target_shape).unwrap();
        let d: Vec<f32> = tw.data.iter().zip(&bw.data).map(|(x, y)| x - y).collect();
        worst = worst.max(relative_diff(&d, &m.delta().unwrap().data));
        let orig = locon.module(m.component, &m.target).unwrap().delta().unwrap();
        assert!(relative_diff(&orig.data, &m.delta().unwrap().data) < 1e-4, "{}", m.key);
    }
    assert!(worst <= 1e-5, "worst relative ΔW error {worst}");
}

#[test]
fn unchanged_text_encoder_is_left_out_by_min_diff() {
    let (b, t) = (base(), ModelFiles::open(tuned()).unwrap());
    let o = ExtractOptions { min_diff: 1e3, ..opts(2, 1) };
    let (file, report) = extract(&b, &t, &o, &mut |_, _, _| {}).unwrap();
    assert!(file.modules.iter().all(|m| m.key.starts_with("lora_unet_")));
    assert!(report.skipped.iter().any(|(k, why)| k == "text_encoder" && why.contains("min_diff")));
}

#[test]
fn resize_rules_pick_kohyas_ranks() {
    let g = golden();
    let path = PathBuf::from(format!("{SD15}/loras/kohya_lora.safetensors"));
    for (rule_s, ranks) in g["resize"].as_object().unwrap() {
        let (name, p) = rule_s.split_once('=').unwrap();
        let p: f64 = p.parse().unwrap();
        let rule = match name {
            "sv_ratio" => ResizeRule::SvRatio(p),
            "sv_fro" => ResizeRule::SvFro(p),
            _ => ResizeRule::SvCumulative(p),
        };
        let o = ResizeOptions { rule, rank: Some(4), conv_rank: None };
        let (file, report) = resize(&path, None, &o, &mut |_, _, _| {}).unwrap();
        let got: HashMap<&str, _> = report.modules.iter().map(|m| (m.key.as_str(), m)).collect();
        assert!(ranks.as_object().unwrap().len() > 100);
        for (key, r) in ranks.as_object().unwrap() {
            let m = got[key.as_str()];
            assert_eq!(m.rank as u64, r.as_u64().unwrap(), "{rule_s} {key}");
            // kohya keeps alpha/rank: the fixture's 2/4.
            assert!((m.alpha - 0.5 * m.rank as f32).abs() < 1e-6);
        }
        assert_eq!(file.metadata["ss_network_dim"], "Dynamic");
    }
    assert_eq!(kohya_rank(&[0.0, 0.0], ResizeRule::SvFro(0.9), 4), 1);
    assert_eq!(kohya_rank(&[3.0, 2.0, 1.0], ResizeRule::SvRatio(1e9), 2), 2);
}

/// The resized file, loaded for the model, changes the weights by the reported error.
fn check_resized(input: &str, rank: usize, with_model: bool) {
    let b = base();
    let path = PathBuf::from(format!("{SD15}/loras/{input}.safetensors"));
    let o = ResizeOptions { rule: ResizeRule::Rank, rank: Some(rank), conv_rank: None };
    let (file, report) = resize(&path, with_model.then_some(&b), &o, &mut |_, _, _| {}).unwrap();
    let out = tmp(&format!("{input}-{rank}-{with_model}.safetensors"));
    std::fs::write(&out, file.to_bytes(StDType::F32).unwrap()).unwrap();
    let orig = LoraFile::open(&path, &b).unwrap();
    let new = LoraFile::open(&out, &b).unwrap();
    assert_eq!(orig.modules.len(), new.modules.len());
    let errs: HashMap<&str, f64> = report.modules.iter().map(|m| (m.key.as_str(), m.rel_error)).collect();
    for m in &new.modules {
        assert_eq!(m.rank, rank);
        let o = orig.module(m.component, &m.target).unwrap().delta().unwrap();
        let real = relative_diff(&o.data, &m.delta().unwrap().data);
        let want = errs[m.key.as_str()];
        assert!((real - want).abs() < 1e-5, "{input} {}: real {real} reported {want}", m.key);
    }
    assert!(report.total_rel_error > 0.0 && report.old_bytes.unwrap() > 0);
}

#[test]
fn resize_lora_locon_loha_lokr_to_a_fixed_rank() {
    check_resized("kohya_lora", 2, false);
    check_resized("kohya_locon", 1, false);
    check_resized("lycoris_loha", 2, true);
    check_resized("lycoris_lokr", 2, true);
    check_resized("lycoris_loha", 1, false);
}

#[test]
fn bad_inputs_are_refused() {
    let (b, t) = (base(), ModelFiles::open(tuned()).unwrap());
    let err = |o: ExtractOptions| extract(&b, &t, &o, &mut |_, _, _| {}).unwrap_err().to_string();
    assert!(err(opts(0, 1)).contains("at least 1"));
    let e = err(opts(100, 1));
    assert!(e.contains("rank 100 is above"), "{e}");
    assert!(err(ExtractOptions { energy: Some(1.5), ..opts(2, 1) }).contains("energy"));
    // Another family.
    let xl = ModelFiles::open("tests/fixtures/sdxl-tiny/model-fp16.safetensors").unwrap();
    let e = extract(&b, &xl, &opts(2, 1), &mut |_, _, _| {}).unwrap_err().to_string();
    assert!(e.contains("same family"), "{e}");
    // Another shape.
    let odd = tmp("odd.safetensors");
    write_tuned(&odd, |name, shape, data| {
        if name.ends_with("input_blocks.1.1.transformer_blocks.0.attn1.to_q.weight") {
            shape[1] -= 1;
            data.truncate(shape.iter().product());
        }
    });
    let o = ModelFiles::open(&odd).unwrap();
    let e = extract(&b, &o, &opts(2, 1), &mut |_, _, _| {}).unwrap_err().to_string();
    assert!(e.contains("attn1.to_q") && e.contains("tuned has"), "{e}");
    // Resize: rank above a layer's, no rule.
    let lora = PathBuf::from(format!("{SD15}/loras/kohya_lora.safetensors"));
    let r = |rule, rank| resize(&lora, None, &ResizeOptions { rule, rank, conv_rank: None }, &mut |_, _, _| {});
    assert!(r(ResizeRule::Rank, Some(1000)).unwrap_err().to_string().contains("above"));
    assert!(r(ResizeRule::Rank, None).is_err());
    assert!(r(ResizeRule::SvFro(1.5), Some(4)).is_err());
}

fn lorafuse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

#[test]
fn cli_writes_lora_and_report_or_nothing() {
    let tp = tuned();
    let base_p = format!("{SD15}/model-fp16.safetensors");
    let out = tmp("cli.safetensors");
    let rep = tmp("cli.json");
    let o = lorafuse(&[
        "lora",
        "extract",
        "--base",
        &base_p,
        "--tuned",
        tp.to_str().unwrap(),
        "--rank",
        "2",
        "--conv-rank",
        "1",
        "--min-diff",
        "0",
        "--report",
        rep.to_str().unwrap(),
        "-o",
        out.to_str().unwrap(),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let stdout = String::from_utf8_lossy(&o.stdout);
    assert!(stdout.contains("total relative error"), "{stdout}");
    let json: Value = serde_json::from_str(&std::fs::read_to_string(&rep).unwrap()).unwrap();
    assert!(json["total_rel_error"].as_f64().unwrap() > 0.0);
    assert!(SafeTensorsFile::open(&out).unwrap().len() > 100);
    // Resize that file and check the size shrank.
    let small = tmp("cli-small.safetensors");
    let o = lorafuse(&["lora", "resize", out.to_str().unwrap(), "--rank", "1", "-o", small.to_str().unwrap()]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert!(std::fs::metadata(&small).unwrap().len() < std::fs::metadata(&out).unwrap().len());
    // Bad inputs write nothing.
    for (args, what) in [(vec!["--rank", "0"], "at least 1"), (vec!["--rank", "500"], "above")] {
        let bad = tmp("bad.safetensors");
        let mut a = vec!["lora", "extract", "--base", &base_p, "--tuned", tp.to_str().unwrap()];
        a.extend(args);
        a.extend(["-o", bad.to_str().unwrap()]);
        let o = lorafuse(&a);
        assert!(!o.status.success());
        assert!(String::from_utf8_lossy(&o.stderr).contains(what), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(!bad.exists());
    }
    let bad = tmp("bad2.safetensors");
    let o = lorafuse(&[
        "lora",
        "extract",
        "--base",
        "/nonexistent.safetensors",
        "--tuned",
        tp.to_str().unwrap(),
        "--rank",
        "2",
        "-o",
        bad.to_str().unwrap(),
    ]);
    assert!(!o.status.success() && !bad.exists());
    assert!(String::from_utf8_lossy(&o.stderr).contains("nonexistent"));
}
