//! `lora compare` against numpy (tools/goldens/make_lora_compare_goldens.py): per-module cosine
//! and subspace similarity, per-block and overall cosines, energy-share strengths on the sd15-tiny
//! LoRAs and on synthetic pairs with known answers (A vs A, A vs −A, A vs orthogonal up-vectors);
//! the heat-map; bad inputs fail with nothing written.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::process::Command;

use lorafuse::grid::heatmap;
use lorafuse::lora::compare::{compare, CompareOptions, CompareReport};
use lorafuse::lora::{LoraFile, LoraSpec};
use lorafuse::weights::{Component, ModelFiles};
use serde_json::Value;

const SD15: &str = "tests/fixtures/sd15-tiny";
const SDXL: &str = "tests/fixtures/sdxl-tiny";
const FIX: &str = "tests/fixtures/lora-compare";
/// numpy works on the dense f64 ΔW; ours on the f32 factors (low-rank inner products) and faer's
/// SVD of f32 matrices. Largest differences measured: cosine 3.4e-9, φ 6.8e-8 (`golden_pairs`).
const TOL: f64 = 1e-5;

fn golden() -> Value {
    serde_json::from_str(&std::fs::read_to_string(format!("{FIX}/golden.json")).unwrap()).unwrap()
}

fn path_of(name: &str) -> String {
    if name.starts_with("syn_") {
        format!("{FIX}/{name}.safetensors")
    } else {
        format!("{SD15}/loras/{name}.safetensors")
    }
}

fn tmp(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-compare-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d.join(name)
}

fn sd15() -> ModelFiles {
    ModelFiles::open(format!("{SD15}/model-fp16.safetensors")).unwrap()
}

fn run(specs: &[(&str, f32)], model: Option<&ModelFiles>) -> lorafuse::Result<CompareReport> {
    let specs: Vec<LoraSpec> = specs.iter().map(|(p, w)| LoraSpec::new(*p, *w)).collect();
    compare(&specs, model, &CompareOptions::default(), &mut |_, _, _| {})
}

/// Checks one golden pair against `r` (a two-LoRA report); returns the largest cosine and φ errors.
fn check_pair(g: &Value, r: &CompareReport, energy_share: bool) -> (f64, f64) {
    let what = format!("{} vs {}", g["a"], g["b"]);
    let p = &r.pairs[0];
    let gm = g["modules"].as_object().unwrap();
    assert_eq!(p.shared, gm.len(), "{what}: shared modules");
    let (mut cos_err, mut phi_err) = (0f64, 0f64);
    for m in &r.modules {
        let e = &gm[&m.module];
        cos_err = cos_err.max((m.cosine - e["cosine"].as_f64().unwrap()).abs());
        assert_eq!(m.k as u64, e["k"].as_u64().unwrap(), "{what}: {} K", m.module);
        assert_eq!(m.block, e["block"].as_str().unwrap(), "{what}: {} block", m.module);
        phi_err = phi_err.max((m.phi_out - e["phi_out"].as_f64().unwrap()).abs());
        phi_err = phi_err.max((m.phi_in - e["phi_in"].as_f64().unwrap()).abs());
        if energy_share {
            let sa = g["share_a"][&m.module].as_f64().unwrap();
            let sb = g["share_b"][&m.module].as_f64().unwrap();
            assert!((m.strength_a - sa).abs() <= TOL * sa, "{what}: {} strength_a {} vs {sa}", m.module, m.strength_a);
            assert!((m.strength_b - sb).abs() <= TOL * sb, "{what}: {} strength_b {} vs {sb}", m.module, m.strength_b);
        }
        // The score is what the definition says.
        let want = (m.strength_a * m.strength_b).sqrt() * m.cosine.abs().max(m.phi_out);
        assert!((m.interference - want).abs() <= 1e-12 * want.max(1.0), "{what}: {} score", m.module);
    }
    assert!(cos_err <= TOL && phi_err <= TOL, "{what}: cosine error {cos_err:e}, φ error {phi_err:e}");
    let overall = g["overall"].as_f64().unwrap();
    assert!((p.cosine - overall).abs() <= TOL, "{what}: overall {} vs numpy {overall}", p.cosine);
    let gb = g["blocks"].as_object().unwrap();
    let ours: BTreeMap<&str, f64> = p.blocks.iter().filter_map(|b| b.cosine.map(|c| (b.block.as_str(), c))).collect();
    assert_eq!(ours.len(), gb.len(), "{what}: blocks with a cosine: {:?} vs {:?}", ours.keys(), gb.keys());
    for (blk, c) in gb {
        let c = c.as_f64().unwrap();
        assert!((ours[blk.as_str()] - c).abs() <= TOL, "{what}: block {blk}: {} vs numpy {c}", ours[blk.as_str()]);
    }
    (cos_err, phi_err)
}

#[test]
fn golden_pairs() {
    let g = golden();
    let model = sd15();
    for case in g["pairs"].as_array().unwrap() {
        let (a, b) = (case["a"].as_str().unwrap(), case["b"].as_str().unwrap());
        let (wa, wb) = (case["wa"].as_f64().unwrap() as f32, case["wb"].as_f64().unwrap() as f32);
        let (pa, pb) = (path_of(a), path_of(b));
        // Model-less matching needs one key convention; PEFT vs kohya matches through the model.
        if b != "peft_lora" {
            let r = run(&[(&pa, wa), (&pb, wb)], None).unwrap();
            assert_eq!(r.strength, "energy_share");
            let (ce, pe) = check_pair(case, &r, true);
            println!("{a}:{wa} vs {b}:{wb} (no model): max |Δcos| {ce:.1e}, max |Δφ| {pe:.1e}");
        }
        let r = run(&[(&pa, wa), (&pb, wb)], Some(&model)).unwrap();
        assert_eq!(r.strength, "relative_to_base");
        let (ce, pe) = check_pair(case, &r, false);
        println!("{a}:{wa} vs {b}:{wb} (-m): max |Δcos| {ce:.1e}, max |Δφ| {pe:.1e}");
    }
}

#[test]
fn known_answers() {
    let a = path_of("syn_a");
    let same = run(&[(&a, 1.0), (&a, 0.5)], None).unwrap();
    let neg = run(&[(&a, 1.0), (&path_of("syn_neg"), 1.0)], None).unwrap();
    let flip = run(&[(&a, 1.0), (&a, -1.0)], None).unwrap();
    let orth = run(&[(&a, 1.0), (&path_of("syn_orth"), 1.0)], None).unwrap();
    for (r, cos) in [(&same, 1.0), (&neg, -1.0), (&flip, -1.0)] {
        assert_eq!(r.modules.len(), 3);
        for m in &r.modules {
            assert!((m.cosine - cos).abs() < 1e-6, "{}: cosine {}", m.module, m.cosine);
            assert_eq!(m.k, 4);
            assert!((m.phi_out - 1.0).abs() < 1e-6 && (m.phi_in - 1.0).abs() < 1e-6, "{}: φ", m.module);
        }
        assert!((r.pairs[0].cosine - cos).abs() < 1e-6);
    }
    assert_eq!(orth.modules.len(), 2);
    for m in &orth.modules {
        assert!(m.cosine.abs() < 1e-6 && m.phi_out < 1e-6, "{}: {} {}", m.module, m.cosine, m.phi_out);
        assert!(m.interference < 1e-6);
    }
    assert!(orth.pairs[0].cosine.abs() < 1e-6);
    // DoRA: its direction update equals syn_a's ΔW, and the report says what was compared.
    let dora = run(&[(&a, 1.0), (&path_of("syn_dora"), 1.0)], None).unwrap();
    assert_eq!(dora.loras[1].kind, "DoRA");
    assert!(dora.notes.iter().any(|n| n.contains("DoRA")));
    assert!((dora.pairs[0].cosine - 1.0).abs() < 1e-6 && dora.modules.len() == 3);
    // Weighting scales nothing but the sign; the interference ranks A vs A above A vs orthogonal.
    let top = same.top(1)[0].interference;
    assert!(top > 0.1 && orth.top(1)[0].interference < 1e-6 * top);
}

#[test]
fn strength_relative_to_the_base_weight() {
    let model = sd15();
    let a = path_of("kohya_lora");
    let r = run(&[(&a, 0.5), (&path_of("kohya_locon"), 1.0)], Some(&model)).unwrap();
    let lora = LoraFile::open(&a, &model).unwrap();
    let mut checked = 0;
    for m in r.modules.iter().take(5) {
        let lm = lora
            .modules
            .iter()
            .find(|x| {
                let p = if x.component == Component::Unet { "lora_unet_" } else { "lora_te_" };
                format!("{p}{}", x.target.trim_end_matches(".weight").replace('.', "_")) == m.module
            })
            .unwrap();
        let d: f64 = lm.delta().unwrap().data.iter().map(|&v| (0.5 * v as f64).powi(2)).sum::<f64>().sqrt();
        let w = model.builder(lm.component).get_unchecked(&lm.target).unwrap();
        let wn: f64 = w.data.iter().map(|&v| (v as f64).powi(2)).sum::<f64>().sqrt();
        assert!((m.strength_a - d / wn).abs() <= 1e-5 * d / wn, "{}: {} vs {}", m.module, m.strength_a, d / wn);
        checked += 1;
    }
    assert_eq!(checked, 5);
}

#[test]
fn blocks_match_with_and_without_a_model() {
    let (a, b) = (path_of("kohya_locon"), path_of("lycoris_loha"));
    let free = run(&[(&a, 1.0), (&b, 1.0)], None).unwrap();
    let with = run(&[(&a, 1.0), (&b, 1.0)], Some(&sd15())).unwrap();
    assert_eq!(free.blocks, with.blocks);
    let key = |r: &CompareReport| r.modules.iter().map(|m| (m.module.clone(), m.block.clone())).collect::<Vec<_>>();
    assert_eq!(key(&free), key(&with));
    // SDXL kohya LoRAs are named with LDM blocks (input_blocks_4_1_…): the same rows either way.
    let x = format!("{SDXL}/loras/kohya_lora.safetensors");
    let xm = ModelFiles::open(format!("{SDXL}/model-fp16.safetensors")).unwrap();
    let free = run(&[(&x, 1.0), (&x, 0.3)], None).unwrap();
    let with = run(&[(&x, 1.0), (&x, 0.3)], Some(&xm)).unwrap();
    assert_eq!(free.blocks, with.blocks);
    assert!(free.blocks.iter().any(|b| b == "TE2") && free.blocks.iter().any(|b| b == "MID"), "{:?}", free.blocks);
    assert!(!free.blocks.iter().any(|b| b == "OTHER"), "{:?}", free.blocks);
}

#[test]
fn heatmap_size_and_content() {
    let a = path_of("syn_a");
    let two = run(&[(&a, 1.0), (&path_of("syn_orth"), 1.0)], None).unwrap();
    let h = heatmap::from_report(&two);
    assert_eq!(h.cols.len(), 3);
    assert_eq!(h.rows, two.blocks);
    let img = heatmap::render(&h).unwrap();
    assert!(img.width >= 3 * heatmap::CELL_W && img.height >= h.rows.len() * heatmap::CELL_H);
    let other =
        heatmap::render(&heatmap::from_report(&run(&[(&a, 1.0), (&path_of("syn_neg"), 1.0)], None).unwrap())).unwrap();
    assert_eq!((img.width, img.height), (other.width, other.height));
    assert_ne!(img.rgb, other.rgb, "different inputs draw different maps");
    // syn_b also changes IN08: one more row, exactly one cell taller.
    let four = heatmap::from_report(&run(&[(&a, 1.0), (&path_of("syn_b"), 1.0)], None).unwrap());
    assert_eq!(four.rows.len(), h.rows.len() + 1);
    let tall = heatmap::render(&four).unwrap();
    assert_eq!((tall.width, tall.height), (img.width, img.height + heatmap::CELL_H));
    let three = run(&[(&a, 1.0), (&path_of("syn_b"), 1.0), (&path_of("syn_neg"), 1.0)], None).unwrap();
    let h3 = heatmap::from_report(&three);
    assert_eq!(h3.cols, ["1-2", "1-3", "2-3"]);
    // The A vs −A cells are full blue (cosine −1).
    let r = h3.rows.iter().position(|b| b == "IN04").unwrap();
    assert_eq!(h3.values[r * 3 + 1], Some(three.pairs[1].blocks[r].cosine.unwrap()));
    assert!((h3.values[r * 3 + 1].unwrap() + 1.0).abs() < 1e-6);
    assert_eq!(heatmap::color(-1.0), [33, 102, 172]);
}

fn lorafuse(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", "/tmp").output().unwrap()
}

fn decode(path: &PathBuf) -> (u32, u32, Vec<u8>) {
    let dec = png::Decoder::new(std::io::BufReader::new(std::fs::File::open(path).unwrap()));
    let mut reader = dec.read_info().unwrap();
    let mut buf = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut buf).unwrap();
    buf.truncate(info.buffer_size());
    (info.width, info.height, buf)
}

#[test]
fn cli_writes_table_heatmap_and_json() {
    let (a, b) = (path_of("syn_a"), format!("{}:0.7", path_of("syn_b")));
    let (png, json) = (tmp("cli.png"), tmp("cli.json"));
    let o = lorafuse(&[
        "lora",
        "compare",
        &a,
        &b,
        "--top",
        "1",
        "--heatmap",
        png.to_str().unwrap(),
        "--json",
        json.to_str().unwrap(),
        "--quiet",
    ]);
    let out = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{out}\n{}", String::from_utf8_lossy(&o.stderr));
    assert!(out.contains("overall cosine") && out.contains("most interfering modules"), "{out}");
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    let g = golden();
    let case = g["pairs"].as_array().unwrap().iter().find(|c| c["b"] == "syn_b").unwrap();
    let c = report["pairs"][0]["cosine"].as_f64().unwrap();
    assert!((c - case["overall"].as_f64().unwrap()).abs() <= TOL, "{c}");
    assert!((report["loras"][1]["unet_weight"].as_f64().unwrap() - 0.7).abs() < 1e-6);
    // The one printed row is the top module of the JSON.
    let top = report["modules"]
        .as_array()
        .unwrap()
        .iter()
        .max_by(|x, y| x["interference"].as_f64().unwrap().total_cmp(&y["interference"].as_f64().unwrap()))
        .unwrap();
    assert!(out.contains(top["module"].as_str().unwrap()));
    let (w, h, rgb) = decode(&png);
    let lib = run(&[(&a, 1.0), (&path_of("syn_b"), 0.7)], None).unwrap();
    let img = heatmap::render(&heatmap::from_report(&lib)).unwrap();
    assert_eq!((w as usize, h as usize), (img.width, img.height));
    assert_eq!(rgb, img.rgb);
}

#[test]
fn bad_inputs_fail_and_write_nothing() {
    let a = path_of("syn_a");
    let err = |specs: &[(&str, f32)], model: Option<&ModelFiles>| run(specs, model).unwrap_err().to_string();
    assert!(err(&[(&a, 1.0)], None).contains("at least two"));
    assert!(err(&[(&a, 1.0), ("nope/missing.safetensors", 1.0)], None).contains("does not exist"));
    let sdxl = format!("{SDXL}/loras/kohya_lora.safetensors");
    let e = err(&[(&a, 1.0), (&sdxl, 1.0)], None);
    assert!(e.contains("different base models") && e.contains("SDXL"), "{e}");
    let e = err(&[(&a, 1.0), (&sdxl, 1.0)], Some(&sd15()));
    assert!(e.contains("another base model"), "{e}");
    let e = err(&[(&a, 1.0), (&format!("{SD15}/rng.safetensors"), 1.0)], None);
    assert!(e.contains("no LoRA module"), "{e}");
    // A shared module with another shape.
    let odd = tmp("odd.safetensors");
    let key = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";
    let (up, down) = (vec![0.1f32; 80 * 4], vec![0.1f32; 4 * 64]);
    let t = [
        (format!("{key}.lora_up.weight"), vec![80, 4], bytemuck::cast_slice::<f32, u8>(&up).to_vec()),
        (format!("{key}.lora_down.weight"), vec![4, 64], bytemuck::cast_slice::<f32, u8>(&down).to_vec()),
    ];
    let views: Vec<_> = t
        .iter()
        .map(|(n, s, b)| {
            (n.clone(), safetensors::tensor::TensorView::new(safetensors::Dtype::F32, s.clone(), b).unwrap())
        })
        .collect();
    std::fs::write(&odd, safetensors::serialize(views, None).unwrap()).unwrap();
    let e = err(&[(&a, 1.0), (odd.to_str().unwrap(), 1.0)], None);
    assert!(e.contains("64×64") && e.contains("80×64"), "{e}");
    // Through the CLI: nothing written on any failure, a bad weight named.
    let (png, json) = (tmp("bad.png"), tmp("bad.json"));
    let sdxl_arg = sdxl.clone();
    let missing = "tests/fixtures/lora-compare/missing.safetensors".to_string();
    let bad_weight = format!("{a}:abc");
    for (args, want) in [
        (vec![a.clone()], "at least two"),
        (vec![a.clone(), missing], "does not exist"),
        (vec![a.clone(), sdxl_arg], "different base models"),
        (vec![a.clone(), format!("{SD15}/rng.safetensors")], "no LoRA module"),
        (vec![a.clone(), bad_weight], "not a finite number"),
    ] {
        let mut full: Vec<&str> = vec!["lora", "compare"];
        full.extend(args.iter().map(String::as_str));
        full.extend(["--heatmap", png.to_str().unwrap(), "--json", json.to_str().unwrap(), "--quiet"]);
        let o = lorafuse(&full);
        let stderr = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && stderr.contains(want), "{args:?}: {stderr}");
        assert!(!png.exists() && !json.exists(), "{args:?} wrote a file");
    }
}
