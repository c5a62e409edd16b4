//! LoRA file parsing: every fixture adapter's ΔW against the golden tensors, match counts, scale
//! rules, and the error cases (SDXL LoRA, wrong shape, nothing matched, truncated file).

use std::collections::HashMap;
use std::path::PathBuf;

use lorafuse::lora::{LoraFile, LoraKind};
use lorafuse::weights::{Component, ModelFiles, SafeTensorsFile};
use safetensors::tensor::{serialize, TensorView};
use safetensors::Dtype;

fn fixture(rel: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny").join(rel)
}

fn model() -> ModelFiles {
    ModelFiles::open(fixture("model-fp16.safetensors")).expect("open fixture model")
}

fn rel_l2(got: &[f32], want: &[f32]) -> f64 {
    let num: f64 = got.iter().zip(want).map(|(a, b)| ((a - b) as f64).powi(2)).sum();
    let den: f64 = want.iter().map(|b| (*b as f64).powi(2)).sum();
    (num / den.max(1e-30)).sqrt()
}

/// Relative L2 tolerance for ΔW (f32 factors, f64 accumulation on our side).
const TOL: f64 = 1e-5;

#[test]
fn golden_deltas_kohya_locon_loha_lokr() {
    let model = model();
    let golden = SafeTensorsFile::open(fixture("golden.safetensors")).unwrap();
    let names: Vec<String> = golden.names().filter(|n| n.starts_with("delta_")).map(str::to_string).collect();
    let mut per_lora: HashMap<String, usize> = HashMap::new();
    let mut worst = (0f64, String::new());
    for name in &names {
        let rest = name.strip_prefix("delta_").unwrap();
        let mut it = rest.split("__");
        let (lora, comp, module) = (it.next().unwrap(), it.next().unwrap(), it.next().unwrap());
        let component = if comp == "unet" { Component::Unet } else { Component::TextEncoder };
        let file = LoraFile::open(fixture(&format!("loras/{lora}.safetensors")), &model).unwrap();
        let m = file
            .module(component, &format!("{module}.weight"))
            .unwrap_or_else(|| panic!("{lora}: no module for {comp} {module}"));
        let d = m.delta().unwrap();
        let want = golden.read_f32(name).unwrap();
        assert_eq!(d.shape, golden.info(name).unwrap().shape, "{name}");
        let e = rel_l2(&d.data, &want);
        if e > worst.0 {
            worst = (e, name.clone());
        }
        assert!(e <= TOL, "{name}: rel L2 {e:e} > {TOL:e}");
        *per_lora.entry(lora.to_string()).or_default() += 1;
    }
    println!("{} golden deltas, worst rel L2 {:e} ({})", names.len(), worst.0, worst.1);
    // The fixture has no peft_lora goldens: `peft_matches_direct_product` covers it.
    for l in ["kohya_lora", "kohya_locon", "lycoris_loha", "lycoris_lokr"] {
        assert!(per_lora.get(l).copied().unwrap_or(0) > 0, "no golden for {l}");
    }
}

#[test]
fn every_module_matches_and_computes() {
    let model = model();
    let cases = [
        ("kohya_lora", LoraKind::Lora),
        ("kohya_locon", LoraKind::LoCon),
        ("lycoris_loha", LoraKind::LoHa),
        ("lycoris_lokr", LoraKind::LoKr),
        ("peft_lora", LoraKind::Peft),
    ];
    for (name, kind) in cases {
        let path = fixture(&format!("loras/{name}.safetensors"));
        let f = LoraFile::open(&path, &model).unwrap();
        assert_eq!(f.kind, kind, "{name}");
        assert!(f.unmatched.is_empty(), "{name}: unmatched {:?}", &f.unmatched[..f.unmatched.len().min(5)]);
        // Every tensor of the file is used by exactly one module (alpha included for kohya).
        let st = SafeTensorsFile::open(&path).unwrap();
        let per_module = match kind {
            LoraKind::Peft => 2,
            _ => 0,
        };
        if per_module > 0 {
            assert_eq!(f.modules.len() * per_module, st.len(), "{name}");
        }
        for m in &f.modules {
            let d = m.delta().unwrap();
            assert_eq!(d.shape, m.target_shape, "{name} {}", m.target);
            assert!(d.data.iter().all(|v| v.is_finite()));
            if matches!(m.kind, LoraKind::Lora | LoraKind::Peft) || m.low_rank().is_some() {
                let (down, up, s) = m.low_rank().unwrap();
                assert_eq!(up.shape[1], down.shape[0]);
                assert_eq!(s, m.scale);
            }
        }
        let s = f.summary();
        assert_eq!(s.targets, f.modules.len());
        assert_eq!(s.base_guess, "sd_v1", "{name}");
        println!(
            "{name}: {:?} modules={} unet={} te={} rank {}..{} alpha {:?}",
            s.kind, s.targets, s.unet_targets, s.text_encoder_targets, s.min_rank, s.max_rank, s.alpha
        );
    }
}

/// PEFT: every module's ΔW equals (lora_alpha / r) · B @ A computed here from the raw tensors,
/// with lora_alpha 8 and r 4 from the header metadata (scale 2).
#[test]
fn peft_matches_direct_product() {
    let model = model();
    let path = fixture("loras/peft_lora.safetensors");
    let f = LoraFile::open(&path, &model).unwrap();
    let st = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(f.modules.len() * 2, st.len());
    let mut worst = 0f64;
    for m in &f.modules {
        assert_eq!(m.scale, 2.0, "{}", m.key);
        let a = st.read_f32(&format!("{}.lora_A.weight", m.key)).unwrap();
        let b = st.read_f32(&format!("{}.lora_B.weight", m.key)).unwrap();
        let r = st.info(&format!("{}.lora_A.weight", m.key)).unwrap().shape[0];
        let out = m.target_shape[0];
        let inn = a.len() / r;
        let mut want = vec![0f32; out * inn];
        for o in 0..out {
            for i in 0..inn {
                want[o * inn + i] = 2.0 * (0..r).map(|k| b[o * r + k] * a[k * inn + i]).sum::<f32>();
            }
        }
        let d = m.delta().unwrap();
        let e = rel_l2(&d.data, &want);
        worst = worst.max(e);
        assert!(e <= TOL, "{}: rel L2 {e:e}", m.key);
    }
    println!("peft: {} modules, worst rel L2 {worst:e}", f.modules.len());
}

fn tensor_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// Writes a small safetensors file of f32 tensors into the temp dir.
fn write_lora(name: &str, tensors: &[(&str, Vec<usize>, Vec<f32>)], meta: Option<HashMap<String, String>>) -> PathBuf {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> =
        tensors.iter().map(|(n, s, d)| (n.to_string(), s.clone(), tensor_bytes(d))).collect();
    let views: Vec<(String, TensorView)> =
        bytes.iter().map(|(n, s, b)| (n.clone(), TensorView::new(Dtype::F32, s.clone(), b).unwrap())).collect();
    let out = serialize(views, meta).unwrap();
    let path = std::env::temp_dir().join(format!("lorafuse-lora-{}-{name}.safetensors", std::process::id()));
    std::fs::write(&path, out).unwrap();
    path
}

const Q: &str = "lora_te_text_model_encoder_layers_0_self_attn_q_proj";

#[test]
fn scale_rules_alpha_missing_is_one() {
    let model = model();
    let up: Vec<f32> = (0..64 * 2).map(|i| (i % 7) as f32 * 0.1).collect();
    let down: Vec<f32> = (0..2 * 64).map(|i| (i % 5) as f32 * 0.2 - 0.3).collect();
    let no_alpha = write_lora(
        "noalpha",
        &[
            (&format!("{Q}.lora_up.weight"), vec![64, 2], up.clone()),
            (&format!("{Q}.lora_down.weight"), vec![2, 64], down.clone()),
        ],
        None,
    );
    let f = LoraFile::open(&no_alpha, &model).unwrap();
    assert_eq!(f.modules.len(), 1);
    let m = &f.modules[0];
    assert_eq!(m.target, "text_model.encoder.layers.0.self_attn.q_proj.weight");
    assert_eq!(m.scale, 1.0);
    let d1 = m.delta().unwrap();
    // Reference ΔW = up @ down computed here directly.
    let mut want = vec![0f32; 64 * 64];
    for o in 0..64 {
        for i in 0..64 {
            want[o * 64 + i] = (0..2).map(|r| up[o * 2 + r] * down[r * 64 + i]).sum();
        }
    }
    assert!(rel_l2(&d1.data, &want) < 1e-6);

    let with_alpha = write_lora(
        "alpha1",
        &[
            (&format!("{Q}.lora_up.weight"), vec![64, 2], up.clone()),
            (&format!("{Q}.lora_down.weight"), vec![2, 64], down.clone()),
            (&format!("{Q}.alpha"), vec![], vec![1.0]),
        ],
        None,
    );
    let f = LoraFile::open(&with_alpha, &model).unwrap();
    assert_eq!(f.modules[0].scale, 0.5, "alpha 1 / rank 2");
    let d2 = f.modules[0].delta().unwrap();
    let half: Vec<f32> = want.iter().map(|v| v * 0.5).collect();
    assert!(rel_l2(&d2.data, &half) < 1e-6);
    let _ = std::fs::remove_file(no_alpha);
    let _ = std::fs::remove_file(with_alpha);
}

#[test]
fn loha_spec_example() {
    // formats.md §3 example: w1_a [[1],[2]], w1_b [[3,4]], w2_a [[1],[1]], w2_b [[1,−1]], alpha 1 → [[3,−4],[6,−8]],
    // embedded in a 64×64 q_proj as rows 0..2, cols 0..2 (zeros elsewhere).
    let model = model();
    let mut w1a = vec![0f32; 64];
    w1a[0] = 1.0;
    w1a[1] = 2.0;
    let mut w1b = vec![0f32; 64];
    w1b[0] = 3.0;
    w1b[1] = 4.0;
    let mut w2a = vec![0f32; 64];
    w2a[0] = 1.0;
    w2a[1] = 1.0;
    let mut w2b = vec![0f32; 64];
    w2b[0] = 1.0;
    w2b[1] = -1.0;
    let p = write_lora(
        "loha",
        &[
            (&format!("{Q}.hada_w1_a"), vec![64, 1], w1a),
            (&format!("{Q}.hada_w1_b"), vec![1, 64], w1b),
            (&format!("{Q}.hada_w2_a"), vec![64, 1], w2a),
            (&format!("{Q}.hada_w2_b"), vec![1, 64], w2b),
            (&format!("{Q}.alpha"), vec![], vec![1.0]),
        ],
        None,
    );
    let f = LoraFile::open(&p, &model).unwrap();
    assert_eq!(f.kind, LoraKind::LoHa);
    let d = f.modules[0].delta().unwrap();
    assert_eq!(&d.data[0..2], &[3.0, -4.0]);
    assert_eq!(&d.data[64..66], &[6.0, -8.0]);
    assert_eq!(d.data.iter().filter(|v| **v != 0.0).count(), 4);
    let _ = std::fs::remove_file(p);
}

fn err_of(path: &PathBuf, model: &ModelFiles) -> String {
    match LoraFile::open(path, model) {
        Ok(_) => panic!("{} opened without error", path.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn errors_are_clear() {
    let model = model();
    // SDXL-like: second text encoder keys and 2048-wide cross-attention.
    let sdxl = write_lora(
        "sdxl",
        &[
            ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_up.weight", vec![1280, 1], vec![0.0; 1280]),
            ("lora_te2_text_model_encoder_layers_0_self_attn_q_proj.lora_down.weight", vec![1, 1280], vec![0.0; 1280]),
        ],
        Some(HashMap::from([("ss_base_model_version".to_string(), "sdxl_base_v1-0".to_string())])),
    );
    let e = err_of(&sdxl, &model);
    assert!(e.contains("another base model"), "{e}");

    let wide = write_lora(
        "wide",
        &[
            (
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_down.weight",
                vec![1, 2048],
                vec![0.0; 2048],
            ),
            (
                "lora_unet_down_blocks_1_attentions_0_transformer_blocks_0_attn2_to_k.lora_up.weight",
                vec![64, 1],
                vec![0.0; 64],
            ),
        ],
        None,
    );
    let e = err_of(&wide, &model);
    assert!(e.contains("another base model"), "{e}");

    let deep = write_lora(
        "deep",
        &[
            ("lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_up.weight", vec![640, 1], vec![0.0; 640]),
            (
                "lora_unet_input_blocks_4_1_transformer_blocks_1_attn1_to_q.lora_down.weight",
                vec![1, 640],
                vec![0.0; 640],
            ),
        ],
        None,
    );
    let e = err_of(&deep, &model);
    assert!(e.contains("another base model"), "{e}");

    let bad = write_lora(
        "badshape",
        &[
            (&format!("{Q}.lora_up.weight"), vec![64, 2], vec![0.0; 128]),
            (&format!("{Q}.lora_down.weight"), vec![2, 63], vec![0.0; 126]),
        ],
        None,
    );
    let e = err_of(&bad, &model);
    assert!(e.contains("badshape") && e.contains(Q), "{e}");

    let none = write_lora("nothing", &[("lora_unet_not_a_module.lora_up.weight", vec![4, 1], vec![0.0; 4])], None);
    let e = err_of(&none, &model);
    assert!(e.contains("nothing") && e.contains("no LoRA module"), "{e}");

    let full = std::fs::read(fixture("loras/kohya_lora.safetensors")).unwrap();
    let trunc = std::env::temp_dir().join(format!("lorafuse-lora-{}-trunc.safetensors", std::process::id()));
    std::fs::write(&trunc, &full[..full.len() / 2]).unwrap();
    let e = err_of(&trunc, &model);
    assert!(!e.is_empty());
    for p in [sdxl, wide, deep, bad, none, trunc] {
        let _ = std::fs::remove_file(p);
    }
}

fn ramp(n: usize, k: f32) -> Vec<f32> {
    (0..n).map(|i| ((i * 7 + 3) % 11) as f32 * k - 0.4).collect()
}

/// LDM-named kohya keys, `lora_te1_`, PEFT TE keys without `text_model.`, the older
/// `lora_linear_layer` names, a Tucker `lora_mid` conv (checked against the formula written out
/// here), and DoRA's `dora_scale` being recorded.
#[test]
fn naming_variants_tucker_and_dora() {
    let model = model();
    let unet = model.unet();
    let conv = "down_blocks.0.resnets.0.conv1.weight";
    let cs = unet.shape(conv).unwrap();
    let (co, ci, kh, kw) = (cs[0], cs[1], cs[2], cs[3]);
    let pin = unet.shape("down_blocks.0.attentions.0.proj_in.weight").unwrap();
    let pin_in: usize = pin[1..].iter().product();
    let r = 2;
    let (up, mid, down) = (ramp(co * r, 0.1), ramp(r * r * kh * kw, 0.05), ramp(r * ci, 0.2));
    let q = "encoder.layers.1.self_attn.q_proj";
    let tensors = vec![
        ("lora_unet_input_blocks_1_0_in_layers_2.lora_up.weight".to_string(), vec![co, r, 1, 1], up.clone()),
        ("lora_unet_input_blocks_1_0_in_layers_2.lora_mid.weight".to_string(), vec![r, r, kh, kw], mid.clone()),
        ("lora_unet_input_blocks_1_0_in_layers_2.lora_down.weight".to_string(), vec![r, ci, 1, 1], down.clone()),
        ("lora_unet_input_blocks_1_0_in_layers_2.alpha".to_string(), vec![], vec![1.0]),
        ("lora_unet_input_blocks_1_1_proj_in.lora_up.weight".to_string(), vec![pin[0], 1], ramp(pin[0], 0.1)),
        ("lora_unet_input_blocks_1_1_proj_in.lora_down.weight".to_string(), vec![1, pin_in], ramp(pin_in, 0.1)),
        ("lora_unet_input_blocks_1_1_proj_in.dora_scale".to_string(), vec![pin[0], 1], ramp(pin[0], 0.3)),
        ("lora_te1_text_model_encoder_layers_0_mlp_fc2.lora_up.weight".to_string(), vec![64, 1], ramp(64, 0.1)),
        ("lora_te1_text_model_encoder_layers_0_mlp_fc2.lora_down.weight".to_string(), vec![1, 128], ramp(128, 0.1)),
    ];
    let refs: Vec<(&str, Vec<usize>, Vec<f32>)> =
        tensors.iter().map(|(n, s, d)| (n.as_str(), s.clone(), d.clone())).collect();
    let p = write_lora("variants", &refs, None);
    let f = LoraFile::open(&p, &model).unwrap();
    assert!(f.unmatched.is_empty(), "{:?}", f.unmatched);
    assert_eq!(f.modules.len(), 3);
    assert_eq!(f.kind, LoraKind::Dora);
    let m = f.module(Component::Unet, conv).expect("LDM in_layers_2 → resnets.0.conv1");
    assert_eq!(m.kind, LoraKind::LoCon);
    assert!(m.low_rank().is_none(), "Tucker modules have no plain low-rank form");
    let d = m.delta().unwrap();
    let kk = kh * kw;
    let mut want = vec![0f32; co * ci * kk];
    for o in 0..co {
        for i in 0..ci {
            for y in 0..kk {
                let mut s = 0f64;
                for pp in 0..r {
                    for qq in 0..r {
                        s += (mid[(pp * r + qq) * kk + y] * up[o * r + pp] * down[qq * ci + i]) as f64;
                    }
                }
                want[(o * ci + i) * kk + y] = 0.5 * s as f32;
            }
        }
    }
    let e = rel_l2(&d.data, &want);
    assert!(e <= TOL, "tucker rel L2 {e:e}");
    let dm = f.module(Component::Unet, "down_blocks.0.attentions.0.proj_in.weight").expect("LDM proj_in");
    assert_eq!(dm.kind, LoraKind::Dora);
    assert_eq!(dm.dora_scale.as_ref().unwrap().shape, vec![pin[0], 1]);
    assert!(f.module(Component::TextEncoder, "text_model.encoder.layers.0.mlp.fc2.weight").is_some());
    let _ = std::fs::remove_file(p);

    let p = write_lora(
        "peftvariants",
        &[
            (&format!("text_encoder.{q}.lora_A.weight"), vec![2, 64], ramp(128, 0.1)),
            (&format!("text_encoder.{q}.lora_B.weight"), vec![64, 2], ramp(128, 0.1)),
            (
                "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_linear_layer.down.weight",
                vec![2, 64],
                ramp(128, 0.1),
            ),
            (
                "unet.mid_block.attentions.0.transformer_blocks.0.attn1.to_q.lora_linear_layer.up.weight",
                vec![64, 2],
                ramp(128, 0.1),
            ),
        ],
        None,
    );
    let f = LoraFile::open(&p, &model).unwrap();
    assert!(f.unmatched.is_empty(), "{:?}", f.unmatched);
    assert_eq!(f.kind, LoraKind::Peft);
    let te = f.module(Component::TextEncoder, &format!("text_model.{q}.weight")).expect("TE key without text_model.");
    assert_eq!(te.scale, 1.0, "no lora_adapter_metadata → scale 1");
    assert!(f.module(Component::Unet, "mid_block.attentions.0.transformer_blocks.0.attn1.to_q.weight").is_some());
    let _ = std::fs::remove_file(p);
}

/// `Σ_{p,q} t[p,q,y] · wa[p,o] · wb[q,i]` written out for the CP checks.
fn cp_ref(t: &[f32], wa: &[f32], wb: &[f32], r: usize, o_n: usize, i_n: usize, kk: usize) -> Vec<f32> {
    let mut out = vec![0f32; o_n * i_n * kk];
    for o in 0..o_n {
        for i in 0..i_n {
            for y in 0..kk {
                let mut s = 0f64;
                for p in 0..r {
                    for q in 0..r {
                        s += (t[(p * r + q) * kk + y] * wa[p * o_n + o] * wb[q * i_n + i]) as f64;
                    }
                }
                out[(o * i_n + i) * kk + y] = s as f32;
            }
        }
    }
    out
}

/// LoHa CP (`hada_t1/t2`) and LoKr with a Tucker `lokr_t2` on a 3×3 conv, against the formulas.
#[test]
fn cp_forms_loha_and_lokr() {
    let model = model();
    let conv = "down_blocks.0.resnets.0.conv2.weight";
    let cs = model.unet().shape(conv).unwrap();
    let (co, ci, kk) = (cs[0], cs[1], cs[2] * cs[3]);
    assert!(co % 2 == 0 && ci % 2 == 0);
    let r = 2;
    let key = "lora_unet_down_blocks_0_resnets_0_conv2";
    let (t1, t2) = (ramp(r * r * kk, 0.05), ramp(r * r * kk, 0.07));
    let (w1a, w1b, w2a, w2b) = (ramp(r * co, 0.1), ramp(r * ci, 0.09), ramp(r * co, 0.11), ramp(r * ci, 0.08));
    let names: Vec<String> = ["hada_t1", "hada_t2", "hada_w1_a", "hada_w1_b", "hada_w2_a", "hada_w2_b", "alpha"]
        .iter()
        .map(|s| format!("{key}.{s}"))
        .collect();
    let p = write_lora(
        "lohacp",
        &[
            (&names[0], vec![r, r, cs[2], cs[3]], t1.clone()),
            (&names[1], vec![r, r, cs[2], cs[3]], t2.clone()),
            (&names[2], vec![r, co], w1a.clone()),
            (&names[3], vec![r, ci], w1b.clone()),
            (&names[4], vec![r, co], w2a.clone()),
            (&names[5], vec![r, ci], w2b.clone()),
            (&names[6], vec![], vec![1.0]),
        ],
        None,
    );
    let f = LoraFile::open(&p, &model).unwrap();
    let m = &f.modules[0];
    assert_eq!((m.kind, m.target.as_str(), m.scale), (LoraKind::LoHa, conv, 0.5));
    let f1 = cp_ref(&t1, &w1a, &w1b, r, co, ci, kk);
    let f2 = cp_ref(&t2, &w2a, &w2b, r, co, ci, kk);
    let want: Vec<f32> = f1.iter().zip(&f2).map(|(a, b)| a * b * 0.5).collect();
    let e = rel_l2(&m.delta().unwrap().data, &want);
    assert!(e <= TOL, "LoHa CP rel L2 {e:e}");
    let _ = std::fs::remove_file(p);

    let (b, d) = (co / 2, ci / 2);
    let w1 = vec![1.0, -2.0, 0.5, 3.0];
    let (kt2, k2a, k2b) = (ramp(r * r * kk, 0.06), ramp(r * b, 0.1), ramp(r * d, 0.12));
    let p = write_lora(
        "lokrcp",
        &[
            (&format!("{key}.lokr_w1"), vec![2, 2], w1.clone()),
            (&format!("{key}.lokr_t2"), vec![r, r, cs[2], cs[3]], kt2.clone()),
            (&format!("{key}.lokr_w2_a"), vec![r, b], k2a.clone()),
            (&format!("{key}.lokr_w2_b"), vec![r, d], k2b.clone()),
            (&format!("{key}.alpha"), vec![], vec![4.0]),
        ],
        None,
    );
    let f = LoraFile::open(&p, &model).unwrap();
    let m = &f.modules[0];
    assert_eq!((m.kind, m.scale), (LoraKind::LoKr, 2.0), "alpha 4 / r 2");
    let w2 = cp_ref(&kt2, &k2a, &k2b, r, b, d, kk);
    let mut want = vec![0f32; co * ci * kk];
    for ia in 0..2 {
        for ic in 0..2 {
            for ib in 0..b {
                for id in 0..d {
                    for y in 0..kk {
                        want[((ia * b + ib) * ci + ic * d + id) * kk + y] =
                            2.0 * w1[ia * 2 + ic] * w2[(ib * d + id) * kk + y];
                    }
                }
            }
        }
    }
    let e = rel_l2(&m.delta().unwrap().data, &want);
    assert!(e <= TOL, "LoKr t2 rel L2 {e:e}");
    let _ = std::fs::remove_file(p);
}

#[test]
fn lora_spec_weight_after_the_last_colon() {
    use lorafuse::lora::LoraSpec;
    let d = std::env::temp_dir().join(format!("lorafuse-spec-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    let file = d.join("style.safetensors");
    std::fs::write(&file, b"x").unwrap();
    let f = file.display().to_string();
    let spec: LoraSpec = format!("{f}:0.5").parse().unwrap();
    assert_eq!((spec.path.clone(), spec.unet_weight, spec.te_weight), (file.clone(), 0.5, 0.5));
    // The text after the colon is no weight but the part before names the file: a bad weight.
    for bad in [format!("{f}:abc"), "missing.safetensors:abc".to_string()] {
        let err = bad.parse::<LoraSpec>().unwrap_err().to_string();
        assert!(err.contains("weight \"abc\" is not a finite number"), "{bad}: {err}");
    }
    // A path that really contains a colon is still a path.
    let colon = d.join("a:b");
    std::fs::write(&colon, b"x").unwrap();
    let spec: LoraSpec = colon.display().to_string().parse().unwrap();
    assert_eq!(spec.path, colon);
    let spec: LoraSpec = "dir:with/colon".parse().unwrap();
    assert_eq!(spec.path, std::path::PathBuf::from("dir:with/colon"));
    std::fs::remove_dir_all(&d).unwrap();
}
