//! LoRA block weights (`lbw=`, A1111's LoRA Block Weight extension): the module → block mapping
//! against the extension's own rule (re-derived here from the key names), presets and counts, the
//! images in both LoRA modes (ALL = no lbw, NONE = no LoRA, BASE 0 = text-encoder weight 0, bit for
//! bit), the infotext round trip through the binary and a grid with an `lbw:` axis.

mod common;
use std::path::{Path, PathBuf};
use std::process::Command;

use common::{ctx, pixels, rel_l2};
use lorafuse::lora::block_weights::{block_of, BLOCKS_26};
use lorafuse::lora::{extract_extra_networks, BlockWeights, LoraFile, LoraMode, LoraSpec};
use lorafuse::pipeline::image::read_parameters;
use lorafuse::pipeline::request::{Precision, Request};
use lorafuse::pipeline::txt2img::Pipeline;
use lorafuse::weights::detect::Family;
use lorafuse::weights::ModelFiles;

fn fix(family: &str) -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures").join(family)
}

/// The extension's `BLOCKS` substrings, in its order (the last match wins; the last two are text
/// encoders and count as BASE).
const EXT_BLOCKS: [&str; 28] = [
    "encoder",
    "diffusion_model_input_blocks_0_",
    "diffusion_model_input_blocks_1_",
    "diffusion_model_input_blocks_2_",
    "diffusion_model_input_blocks_3_",
    "diffusion_model_input_blocks_4_",
    "diffusion_model_input_blocks_5_",
    "diffusion_model_input_blocks_6_",
    "diffusion_model_input_blocks_7_",
    "diffusion_model_input_blocks_8_",
    "diffusion_model_input_blocks_9_",
    "diffusion_model_input_blocks_10_",
    "diffusion_model_input_blocks_11_",
    "diffusion_model_middle_block_",
    "diffusion_model_output_blocks_0_",
    "diffusion_model_output_blocks_1_",
    "diffusion_model_output_blocks_2_",
    "diffusion_model_output_blocks_3_",
    "diffusion_model_output_blocks_4_",
    "diffusion_model_output_blocks_5_",
    "diffusion_model_output_blocks_6_",
    "diffusion_model_output_blocks_7_",
    "diffusion_model_output_blocks_8_",
    "diffusion_model_output_blocks_9_",
    "diffusion_model_output_blocks_10_",
    "diffusion_model_output_blocks_11_",
    "embedders",
    "transformer_resblocks",
];

/// A1111's network key of an adapter key (`convert_diffusers_name_to_compvis` and the SDXL
/// renames), from the file's key alone.
fn a1111_key(key: &str) -> String {
    // PEFT dotted names become kohya's underscored ones first.
    let key = if let Some(r) = key.strip_prefix("unet.") {
        format!("lora_unet_{}", r.replace('.', "_"))
    } else if let Some(r) = key.strip_prefix("text_encoder_2.") {
        format!("lora_te2_{}", r.replace('.', "_"))
    } else if let Some(r) = key.strip_prefix("text_encoder.") {
        format!("lora_te_{}", r.replace('.', "_"))
    } else {
        key.to_string()
    };
    let re = |p: &str| regex::Regex::new(p).unwrap();
    let n = |c: &regex::Captures, i: usize| c[i].parse::<usize>().unwrap();
    if let Some(c) = re(r"^lora_unet_conv_in(.*)$").captures(&key) {
        return format!("diffusion_model_input_blocks_0_0{}", &c[1]);
    }
    if let Some(c) = re(r"^lora_unet_conv_out(.*)$").captures(&key) {
        return format!("diffusion_model_out_2{}", &c[1]);
    }
    if let Some(c) = re(r"^lora_unet_time_embedding_linear_(\d+)(.*)$").captures(&key) {
        return format!("diffusion_model_time_embed_{}{}", n(&c, 1) * 2 - 2, &c[2]);
    }
    if let Some(c) = re(r"^lora_unet_down_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)$").captures(&key) {
        let sub = if &c[2] == "attentions" { 1 } else { 0 };
        return format!("diffusion_model_input_blocks_{}_{sub}_{}", 1 + n(&c, 1) * 3 + n(&c, 3), &c[4]);
    }
    if let Some(c) = re(r"^lora_unet_mid_block_(attentions|resnets)_(\d+)_(.+)$").captures(&key) {
        let sub = if &c[1] == "attentions" { 1 } else { n(&c, 2) * 2 };
        return format!("diffusion_model_middle_block_{sub}_{}", &c[3]);
    }
    if let Some(c) = re(r"^lora_unet_up_blocks_(\d+)_(attentions|resnets)_(\d+)_(.+)$").captures(&key) {
        let sub = if &c[2] == "attentions" { 1 } else { 0 };
        return format!("diffusion_model_output_blocks_{}_{sub}_{}", n(&c, 1) * 3 + n(&c, 3), &c[4]);
    }
    if let Some(c) = re(r"^lora_unet_down_blocks_(\d+)_downsamplers_0_conv").captures(&key) {
        return format!("diffusion_model_input_blocks_{}_0_op", 3 + n(&c, 1) * 3);
    }
    if let Some(c) = re(r"^lora_unet_up_blocks_(\d+)_upsamplers_0_conv").captures(&key) {
        let i = n(&c, 1);
        return format!("diffusion_model_output_blocks_{}_{}_conv", 2 + i * 3, if i > 0 { 2 } else { 1 });
    }
    if let Some(r) = key.strip_prefix("lora_te_").or_else(|| key.strip_prefix("lora_te1_")) {
        return format!("transformer_{r}");
    }
    if let Some(c) = re(r"^lora_te2_text_model_encoder_layers_(\d+)_(.+)$").captures(&key) {
        return format!("1_model_transformer_resblocks_{}_{}", &c[1], &c[2]);
    }
    // SDXL LoRAs already use LDM names.
    key.replacen("lora_unet_", "diffusion_model_", 1)
}

/// The extension's `ratiodealer` block: the last `BLOCKS` entry the key contains.
fn ext_block(key: &str) -> Option<usize> {
    let mut found = None;
    for (i, b) in EXT_BLOCKS.iter().enumerate() {
        if key.contains(b) {
            found = Some(if i >= 26 { 0 } else { i });
        }
    }
    found
}

#[test]
fn every_module_gets_the_extensions_block() {
    for family in ["sd15-tiny", "sdxl-tiny"] {
        let model = ModelFiles::open(fix(family).join("model-fp16.safetensors")).unwrap();
        let mut files: Vec<PathBuf> =
            std::fs::read_dir(fix(family).join("loras")).unwrap().map(|e| e.unwrap().path()).collect();
        files.sort();
        assert!(files.len() >= 2, "{family}: LoRA fixtures");
        let mut seen = [0usize; 26];
        let mut outside = 0;
        for f in &files {
            let l = LoraFile::open(f, &model).unwrap();
            for m in &l.modules {
                let a1111 = a1111_key(&m.key);
                let want = ext_block(&a1111);
                let got = block_of(m.component, &m.target);
                assert_eq!(
                    got,
                    want,
                    "{}: {} ({}, A1111 key {a1111}): lorafuse says {:?}, the extension {:?}",
                    f.display(),
                    m.key,
                    m.target,
                    got.map(|b| BLOCKS_26[b]),
                    want.map(|b| BLOCKS_26[b])
                );
                match got {
                    Some(b) => seen[b] += 1,
                    None => outside += 1,
                }
            }
        }
        let used: Vec<&str> = (0..26).filter(|&b| seen[b] > 0).map(|b| BLOCKS_26[b]).collect();
        eprintln!("{family}: modules per block {used:?}, {outside} outside every block");
        // The fixtures reach the text encoder, every level both ways and the middle block.
        let need: &[&str] = if family == "sd15-tiny" {
            &["BASE", "IN01", "IN03", "IN05", "IN08", "IN11", "M00", "OUT00", "OUT02", "OUT05", "OUT11"]
        } else {
            &["BASE", "IN01", "IN04", "IN06", "IN08", "M00", "OUT00", "OUT05", "OUT08"]
        };
        for n in need {
            assert!(used.contains(n), "{family}: no module in {n} ({used:?})");
        }
    }
}

#[test]
fn presets_counts_and_syntax() {
    let p = |s: &str| s.parse::<BlockWeights>();
    for name in ["ALL", "NONE", "INS", "IND", "INALL", "MIDD", "OUTD", "OUTS", "OUTALL", "ALL0.5"] {
        let b = p(name).unwrap();
        assert_eq!(b.to_string(), name);
        let sd1 = b.resolve(Some(Family::Sd1)).unwrap();
        let xl = b.resolve(Some(Family::Sdxl)).unwrap();
        // BASE is on in every preset but NONE.
        assert_eq!(sd1.0[0], xl.0[0], "{name}");
    }
    let idx = |n: &str| BLOCKS_26.iter().position(|b| *b == n).unwrap();
    // The extension's INALL: BASE and IN01-IN08 (the 17-value list), nothing else.
    let inall = p("INALL").unwrap().resolve(Some(Family::Sd1)).unwrap();
    for (i, b) in BLOCKS_26.iter().enumerate() {
        let on = ["BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08"].contains(b);
        assert_eq!(inall.0[i], if on { 1.0 } else { 0.0 }, "INALL {b}");
    }
    // OUTD: BASE, OUT03-OUT06.
    let outd = p("OUTD").unwrap().resolve(Some(Family::Sd1)).unwrap();
    assert_eq!(outd.0.iter().sum::<f32>(), 5.0);
    assert_eq!(outd.0[idx("OUT06")], 1.0);
    assert_eq!(outd.0[idx("M00")], 0.0);
    // Values in the list's order; blocks the 17 list leaves out weigh 0 (the extension's to26).
    let v17 = "0.5,1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16";
    let t = p(v17).unwrap().resolve(Some(Family::Sd1)).unwrap();
    assert_eq!(t.0[idx("BASE")], 0.5);
    assert_eq!(t.0[idx("IN02")], 2.0);
    assert_eq!(t.0[idx("M00")], 7.0);
    assert_eq!(t.0[idx("OUT11")], 16.0);
    assert_eq!(t.0[idx("IN03")], 0.0);
    assert_eq!(p(v17).unwrap().to_string(), v17);
    let v12 = "1,0,0,0,0,2,0,0,0,0,0,3";
    let t = p(v12).unwrap().resolve(Some(Family::Sdxl)).unwrap();
    assert_eq!((t.0[idx("M00")], t.0[idx("OUT05")], t.0[idx("OUT08")]), (2.0, 3.0, 0.0));
    let xl_inall = p("INALL").unwrap().resolve(Some(Family::Sdxl)).unwrap();
    assert_eq!(xl_inall.0.iter().sum::<f32>(), 5.0);

    // Errors: unknown preset, impossible counts, bad numbers, and the other family's count.
    for (s, want) in [("FOO", "not a preset"), ("1,0,1", "3 values"), ("1,0,x,1,1,1,1,1,1,1,1,1", "value 3")] {
        let e = p(s).unwrap_err().to_string();
        assert!(e.contains(want) && e.contains("lbw="), "{s}: {e}");
    }
    let e = p(v12).unwrap().resolve(Some(Family::Sd1)).unwrap_err().to_string();
    assert!(e.contains("12 values") && e.contains("SD1.x") && e.contains("17"), "{e}");
    let e = p(v17).unwrap().resolve(Some(Family::Sdxl)).unwrap_err().to_string();
    assert!(e.contains("17 values") && e.contains("SDXL") && e.contains("12"), "{e}");

    // --lora PATH:W:lbw=…
    let s: LoraSpec = "x/a.safetensors:0.8:lbw=INALL".parse().unwrap();
    assert_eq!((s.path.to_str().unwrap(), s.unet_weight, s.te_weight), ("x/a.safetensors", 0.8, 0.8));
    assert_eq!(s.lbw, Some(BlockWeights::Preset("INALL".into())));
    let s: LoraSpec = format!("a.safetensors:unet=1,te=0.5:lbw={v17}").parse().unwrap();
    assert_eq!((s.unet_weight, s.te_weight, s.lbw.unwrap().to_string()), (1.0, 0.5, v17.to_string()));
    let s: LoraSpec = "a.safetensors:lbw=OUTS".parse().unwrap();
    assert_eq!((s.unet_weight, s.lbw.unwrap().to_string()), (1.0, "OUTS".to_string()));
    let e = "a.safetensors:1:lbw=NOPE".parse::<LoraSpec>().unwrap_err().to_string();
    assert!(e.contains("NOPE") && e.contains("INALL"), "{e}");

    // Prompt tags: named lbw=, the extension's positional form, errors naming the tag.
    let t = extract_extra_networks("a <lora:x:0.7:lbw=MIDD> b <lora:y:1:0.5:lbw=1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1>")
        .unwrap();
    assert_eq!(t.text, "a  b ");
    assert_eq!((t.loras[0].te_weight, t.loras[0].unet_weight), (0.7, 0.7));
    assert_eq!(t.loras[0].lbw, Some(BlockWeights::Preset("MIDD".into())));
    assert_eq!((t.loras[1].te_weight, t.loras[1].unet_weight), (1.0, 0.5));
    assert_eq!(t.loras[1].lbw.as_ref().unwrap().to_string(), "1,0,0,0,0,0,0,0,0,0,0,0,0,0,0,0,1");
    assert!(t.warnings.is_empty(), "{:?}", t.warnings);
    let t = extract_extra_networks("<lora:x:0.6:INALL>").unwrap();
    assert_eq!((t.loras[0].te_weight, t.loras[0].unet_weight), (0.6, 0.6));
    assert_eq!(t.loras[0].lbw, Some(BlockWeights::Preset("INALL".into())));
    let e = extract_extra_networks("<lora:x:1:lbw=BOGUS>").unwrap_err().to_string();
    assert!(e.contains("<lora:x:1:lbw=BOGUS>") && e.contains("not a preset"), "{e}");
}

fn request(loras: Vec<LoraSpec>, mode: LoraMode) -> Request {
    let mut req = Request::new("1girl, forest");
    req.width = 64;
    req.height = 64;
    req.steps = 2;
    req.seed = 11;
    req.loras = loras;
    req.lora_mode = mode;
    req
}

fn lbw(s: &str) -> Option<BlockWeights> {
    Some(s.parse().unwrap())
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

#[test]
fn block_weights_in_both_modes_sd15() {
    let ctx = ctx();
    let pipe = Pipeline::load(ctx, &fix("sd15-tiny").join("model-fp16.safetensors"), Precision::F32).unwrap();
    let lora = fix("sd15-tiny").join("loras/kohya_lora.safetensors");
    let locon = fix("sd15-tiny").join("loras/kohya_locon.safetensors");
    let run = |loras: Vec<LoraSpec>, mode: LoraMode| pipe.generate(ctx, &request(loras, mode), &mut |_| {}).unwrap();
    let img = |loras: Vec<LoraSpec>, mode: LoraMode| run(loras, mode).images[0].data.clone();
    let plain = img(vec![], LoraMode::Merged);
    let base_off = "0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1";
    let mixed = "1,0.5,0,1,-0.5,1,0.3,1,0,2,1,0.25,1,0,1,0.5,1";
    let ones26 = ["1"; 26].join(",");
    let mut mixed_images = Vec::new();
    for mode in [LoraMode::Merged, LoraMode::Fused] {
        let m = mode.name();
        let with = img(vec![LoraSpec::new(&lora, 0.8)], mode);
        assert!(rel_l2(&with, &plain) > 1e-3, "[{m}] the LoRA changes the image");
        let all = img(vec![LoraSpec::new(&lora, 0.8).with_lbw(lbw("ALL"))], mode);
        assert_eq!(bits(&all), bits(&with), "[{m}] lbw=ALL differs from no lbw");
        let zeros = ["0"; 17].join(",");
        for none in ["NONE", zeros.as_str()] {
            let got = img(vec![LoraSpec::new(&lora, 0.8).with_lbw(lbw(none))], mode);
            assert_eq!(bits(&got), bits(&plain), "[{m}] lbw={none} differs from no LoRA");
        }
        let got = img(vec![LoraSpec::new(&locon, 1.0).with_lbw(lbw("NONE"))], mode);
        assert_eq!(bits(&got), bits(&plain), "[{m}] LoCon lbw=NONE differs from no LoRA");
        let te0 = img(vec![LoraSpec::weights(&lora, 0.8, 0.0)], mode);
        assert!(rel_l2(&te0, &with) > 1e-4, "[{m}] the text-encoder part changes the image");
        let got = img(vec![LoraSpec::new(&lora, 0.8).with_lbw(lbw(base_off))], mode);
        assert_eq!(bits(&got), bits(&te0), "[{m}] BASE=0 differs from te weight 0");

        // LoCon reaches blocks outside the 17 (downsamplers, IN10/11, OUT00-02): the 17-value
        // ALL turns them off as the extension does, the 26-value one keeps everything.
        let locon_plain = img(vec![LoraSpec::new(&locon, 1.0)], mode);
        let locon_26 = img(vec![LoraSpec::new(&locon, 1.0).with_lbw(lbw(&ones26))], mode);
        assert_eq!(bits(&locon_26), bits(&locon_plain), "[{m}] 26 ones differ from no lbw");
        let locon_17 = img(vec![LoraSpec::new(&locon, 1.0).with_lbw(lbw("ALL"))], mode);
        let d = rel_l2(&locon_17, &locon_plain);
        assert!(d > 1e-5, "[{m}] 17-value ALL left the LoCon's other blocks on ({d:.3e})");

        let out = run(vec![LoraSpec::new(&lora, 0.8).with_lbw(lbw(mixed)), LoraSpec::new(&locon, 0.5)], mode);
        if mode == LoraMode::Fused {
            assert!(out.lora_report.fused_weights > 0, "fused mode fused nothing");
        } else {
            assert_eq!(out.lora_report.fused_weights, 0);
        }
        let x = out.images[0].data.clone();
        assert!(rel_l2(&x, &with) > 1e-4, "[{m}] the mixed preset changes nothing");
        mixed_images.push(x);
    }
    let d = rel_l2(&mixed_images[0], &mixed_images[1]);
    eprintln!("mixed lbw: merged vs fused rel L2 {d:.3e}");
    assert!(d < 1e-4, "mixed lbw: merged and fused differ by {d:.3e}");
}

#[test]
fn block_weights_on_sdxl_and_the_wrong_count() {
    let ctx = ctx();
    let dir = fix("sdxl-tiny");
    let pipe = Pipeline::load(ctx, &dir.join("model-fp16.safetensors"), Precision::F32).unwrap();
    let lora = dir.join("loras/kohya_lora.safetensors");
    let img = |loras: Vec<LoraSpec>, mode: LoraMode| {
        pipe.generate(ctx, &request(loras, mode), &mut |_| {}).map(|o| o.images[0].data.clone())
    };
    let plain = img(vec![], LoraMode::Merged).unwrap();
    let with = img(vec![LoraSpec::new(&lora, 1.0)], LoraMode::Merged).unwrap();
    let all = img(vec![LoraSpec::new(&lora, 1.0).with_lbw(lbw("ALL"))], LoraMode::Merged).unwrap();
    assert_eq!(bits(&all), bits(&with));
    let none = img(vec![LoraSpec::new(&lora, 1.0).with_lbw(lbw("NONE"))], LoraMode::Fused).unwrap();
    assert_eq!(bits(&none), bits(&plain));
    let mixed = "1,0,1,0.5,2,1,0,1,0.5,1,-1,1";
    let a = img(vec![LoraSpec::new(&lora, 1.0).with_lbw(lbw(mixed))], LoraMode::Merged).unwrap();
    let b = img(vec![LoraSpec::new(&lora, 1.0).with_lbw(lbw(mixed))], LoraMode::Fused).unwrap();
    let d = rel_l2(&a, &b);
    eprintln!("SDXL mixed lbw: merged vs fused rel L2 {d:.3e}");
    assert!(d < 1e-4 && rel_l2(&a, &with) > 1e-4, "{d:.3e}");
    let e = img(vec![LoraSpec::new(&lora, 1.0).with_lbw(lbw(&["1"; 17].join(",")))], LoraMode::Merged)
        .unwrap_err()
        .to_string();
    assert!(e.contains("17 values") && e.contains("SDXL"), "{e}");
}

fn lorafuse(args: &[&str]) -> std::process::Output {
    let xdg = std::env::var("XDG_RUNTIME_DIR").unwrap_or_else(|_| std::env::temp_dir().display().to_string());
    Command::new(env!("CARGO_BIN_EXE_lorafuse")).args(args).env("XDG_RUNTIME_DIR", xdg).output().expect("run lorafuse")
}

fn tmpdir(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-lbw-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn base_args<'a>(model: &'a str, loras: &'a str) -> Vec<&'a str> {
    let mut a = vec!["-m", model, "-p", "a lighthouse", "--steps", "2", "-W", "64", "-H", "64"];
    a.extend(["--seed", "5", "--precision", "f32", "--lora-dir", loras, "--quiet"]);
    a
}

#[test]
fn infotext_round_trip_and_bad_lbw_through_the_cli() {
    let d = tmpdir("cli");
    let model = fix("sd15-tiny").join("model-fp16.safetensors");
    let loras = fix("sd15-tiny").join("loras");
    let spec = format!("{}:0.8:lbw=MIDD", s(&loras.join("kohya_lora.safetensors")));
    let first = d.join("first.png");
    let mut args = vec!["generate"];
    args.extend(base_args(s(&model), s(&loras)));
    args.extend(["--lora", &spec, "-o", s(&first)]);
    let o = lorafuse(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let params = read_parameters(&first).unwrap().unwrap();
    assert!(params.starts_with("a lighthouse<lora:kohya_lora:0.8:lbw=MIDD>"), "{params}");

    // --from-png makes the same image and records the tag again.
    let again = d.join("again.png");
    let o = lorafuse(&[
        "generate",
        "-m",
        s(&model),
        "--from-png",
        s(&first),
        "--lora-dir",
        s(&loras),
        "--precision",
        "f32",
        "--quiet",
        "-o",
        s(&again),
    ]);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(pixels(&again), pixels(&first), "--from-png changed the image");
    let p2 = read_parameters(&again).unwrap().unwrap();
    assert!(p2.contains("<lora:kohya_lora:0.8:lbw=MIDD>"), "{p2}");
    // The tag in a prompt gives the same image as --lora.
    let tagged = d.join("tagged.png");
    let mut args = vec!["generate"];
    let mut a = base_args(s(&model), s(&loras));
    a[3] = "a lighthouse<lora:kohya_lora:0.8:lbw=MIDD>";
    args.extend(a);
    args.extend(["-o", s(&tagged)]);
    let o = lorafuse(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    assert_eq!(pixels(&tagged), pixels(&first), "tag and --lora differ");

    // Bad block weights: a clear error and nothing written.
    let kohya = s(&loras.join("kohya_lora.safetensors")).to_string();
    let cases = [
        (Some(format!("{kohya}:1:lbw=NOPE")), "a", "NOPE"),
        (Some(format!("{kohya}:1:lbw=1,0,1")), "a", "3 values"),
        (Some(format!("{kohya}:1:lbw={}", ["1"; 12].join(","))), "a", "12 values"),
        (None, "x <lora:kohya_lora:1:lbw=WHAT>", "WHAT"),
    ];
    for (i, (lora, prompt, want)) in cases.iter().enumerate() {
        let out = d.join(format!("bad{i}.png"));
        let mut args = vec!["generate"];
        let mut a = base_args(s(&model), s(&loras));
        a[3] = *prompt;
        args.extend(a);
        if let Some(l) = lora {
            args.extend(["--lora", l.as_str()]);
        }
        args.extend(["-o", s(&out)]);
        let o = lorafuse(&args);
        let err = String::from_utf8_lossy(&o.stderr);
        assert!(!o.status.success() && err.contains(want), "case {i}: {err}");
        assert!(!out.exists(), "case {i}: wrote {}", out.display());
    }
}

#[test]
fn grid_with_an_lbw_axis() {
    let d = tmpdir("grid");
    let model = fix("sd15-tiny").join("model-fp16.safetensors");
    let loras = fix("sd15-tiny").join("loras");
    let g = d.join("g.png");
    let mut args = vec!["grid"];
    args.extend(base_args(s(&model), s(&loras)));
    args.extend(["--x", "lbw:kohya_lora=ALL,NONE,\"0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1\"", "-o", s(&g)]);
    let o = lorafuse(&args);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    let mut cells = Vec::new();
    for (col, tag) in ["lbw=ALL>", "lbw=NONE>", "lbw=0,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1,1>"].iter().enumerate() {
        let p = d.join(format!("g-0-{col}.png"));
        let params = read_parameters(&p).unwrap().unwrap();
        assert!(params.contains(&format!("<lora:kohya_lora:1:{tag}")), "{params}");
        cells.push(pixels(&p));
    }
    assert_ne!(cells[0], cells[1]);
    assert_ne!(cells[0], cells[2]);
    // A NONE cell is the image without the LoRA.
    let plain = d.join("plain.png");
    let mut args = vec!["generate"];
    args.extend(base_args(s(&model), s(&loras)));
    args.extend(["-o", s(&plain)]);
    assert!(lorafuse(&args).status.success());
    assert_eq!(cells[1], pixels(&plain), "the NONE cell differs from no LoRA");

    let bad = d.join("bad.png");
    let o =
        lorafuse(&["grid", "-m", s(&model), "--lora-dir", s(&loras), "--x", "lbw:kohya_lora=ALL,BOGUS", "-o", s(&bad)]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success() && err.contains("BOGUS"), "{err}");
    assert!(!bad.exists());
}
