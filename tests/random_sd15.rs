//! The random-weight SD1.x checkpoint writer (`lorafuse bench write-sd15`): the tensor list it
//! derives from a config reproduces the tiny fixture's keys and shapes exactly, the full SD1.5
//! list has SD1.5's parameter counts, and written files (checkpoint and kohya LoRA) round-trip
//! through lorafuse's own parser, detection and LoRA matcher. Full-size files are never written
//! here (2 GB); the full-size list is checked in memory.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lorafuse::bench::random_model::{
    checkpoint_tensors, kohya_lora_tensors, lora_targets, sd15_model_config, write_checkpoint, write_kohya_lora_for,
    TensorSpec,
};
use lorafuse::lora::LoraFile;
use lorafuse::weights::{detect, ModelConfig, ModelFiles, SafeTensorsFile, StDType};

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/model-fp16.safetensors")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-random-sd15-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

fn tiny_config() -> ModelConfig {
    detect(&ModelFiles::open(fixture()).unwrap()).unwrap()
}

fn shapes(file: &SafeTensorsFile) -> BTreeMap<String, Vec<usize>> {
    file.tensors().map(|(k, i)| (k.to_string(), i.shape.clone())).collect()
}

fn as_map(specs: &[TensorSpec]) -> BTreeMap<String, Vec<usize>> {
    specs.iter().map(|s| (s.key.clone(), s.shape.clone())).collect()
}

fn params(specs: &[TensorSpec], prefix: &str) -> u64 {
    specs.iter().filter(|s| s.key.starts_with(prefix)).map(|s| s.numel() as u64).sum()
}

#[test]
fn tiny_config_reproduces_the_fixture_keys_and_shapes() {
    let specs = checkpoint_tensors(&tiny_config()).unwrap();
    let got = as_map(&specs);
    let want = shapes(&SafeTensorsFile::open(fixture()).unwrap());
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
    for (k, s) in &want {
        assert_eq!(&got[k], s, "shape of {k}");
    }
}

#[test]
fn full_sd15_has_sd15_parameter_counts_and_every_fixture_key() {
    let specs = checkpoint_tensors(&sd15_model_config()).unwrap();
    // The counts of diffusers' UNet2DConditionModel / AutoencoderKL and transformers'
    // CLIPTextModel at SD1.5's configuration (make_random_sd15.py prints their sum).
    let unet = params(&specs, "model.diffusion_model.");
    let vae = params(&specs, "first_stage_model.");
    let clip = params(&specs, "cond_stage_model.transformer.text_model.");
    assert_eq!(unet, 859_520_964, "UNet parameters");
    assert_eq!(vae, 83_653_863, "VAE parameters");
    assert_eq!(clip, 123_060_480, "CLIP text parameters");
    let total = params(&specs, "");
    assert_eq!(total, unet + vae + clip, "no tensor outside the three components");
    assert!((total as f64 / 1.066e9 - 1.0).abs() < 0.005, "total {total}");
    // Tensors per component of the original SD1.5 file (position_ids aside): the fixture's count
    // differs by CLIP layers 5..11 and the shortcuts its equal tiny widths do not need.
    let count = |p: &str| specs.iter().filter(|s| s.key.starts_with(p)).count();
    let counts = [
        count("model.diffusion_model."),
        count("first_stage_model."),
        count("cond_stage_model.transformer.text_model."),
    ];
    assert_eq!(counts, [686, 248, 196], "UNet, VAE, CLIP tensors");

    let full = as_map(&specs);
    for (k, s) in shapes(&SafeTensorsFile::open(fixture()).unwrap()) {
        let f = full.get(&k).unwrap_or_else(|| panic!("full-size list lacks fixture key {k}"));
        assert_eq!(f.len(), s.len(), "rank of {k}: full {f:?}, fixture {s:?}");
    }
    // Spot checks of SD1.5 shapes named in its model card / diffusers config.
    let want: [(&str, &[usize]); 5] = [
        ("model.diffusion_model.input_blocks.0.0.weight", &[320, 4, 3, 3]),
        ("model.diffusion_model.middle_block.1.transformer_blocks.0.attn2.to_k.weight", &[1280, 768]),
        ("model.diffusion_model.output_blocks.11.0.in_layers.2.weight", &[320, 640, 3, 3]),
        ("first_stage_model.decoder.mid.attn_1.q.weight", &[512, 512, 1, 1]),
        ("cond_stage_model.transformer.text_model.embeddings.token_embedding.weight", &[49408, 768]),
    ];
    for (k, s) in want {
        assert_eq!(full.get(k).map(Vec::as_slice), Some(s), "{k}");
    }
}

#[test]
fn written_checkpoint_round_trips_through_parser_and_detection() {
    let dir = scratch("ckpt");
    let config = tiny_config();
    let path = dir.join("tiny.safetensors");
    let mut calls = (0u64, 0u64);
    let summary = write_checkpoint(&path, &config, StDType::F16, 7, &mut |d, t| calls = (d, t)).unwrap();
    let specs = checkpoint_tensors(&config).unwrap();
    assert_eq!(summary.tensors, specs.len());
    assert_eq!(summary.parameters, params(&specs, ""));
    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
    assert_eq!(calls, (summary.bytes, summary.bytes), "progress ends at the file size");

    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(shapes(&file), as_map(&specs));
    for s in &specs {
        assert_eq!(file.info(&s.key).unwrap().dtype, StDType::F16);
        let v = file.read_f32(&s.key).unwrap();
        assert!(v.iter().all(|x| x.is_finite()), "{} has non-finite values", s.key);
        let (lo, hi) = v.iter().fold((f32::MAX, f32::MIN), |(a, b), &x| (a.min(x), b.max(x)));
        if s.shape.len() >= 2 {
            let bound = 1.0 / (s.shape[1..].iter().product::<usize>() as f32).sqrt() * 1.001;
            assert!(lo >= -bound && hi <= bound && hi > 0.0 && lo < 0.0, "{}: [{lo}, {hi}] vs ±{bound}", s.key);
        } else {
            let centre = if s.key.ends_with(".weight") { 1.0 } else { 0.0 };
            assert!(lo >= centre - 0.021 && hi <= centre + 0.021 && hi > lo, "{}: [{lo}, {hi}]", s.key);
        }
    }
    assert_eq!(detect(&ModelFiles::open(&path).unwrap()).unwrap(), config, "detection gives back the config");

    // Seeded: the same seed gives the same bytes, another seed other values.
    let again = dir.join("again.safetensors");
    write_checkpoint(&again, &config, StDType::F16, 7, &mut |_, _| {}).unwrap();
    assert!(std::fs::read(&path).unwrap() == std::fs::read(&again).unwrap(), "same seed, same file");
    write_checkpoint(&again, &config, StDType::F32, 8, &mut |_, _| {}).unwrap();
    let other = SafeTensorsFile::open(&again).unwrap();
    let key = "model.diffusion_model.out.2.weight";
    assert_eq!(other.info(key).unwrap().dtype, StDType::F32);
    assert_ne!(other.read_f32(key).unwrap(), file.read_f32(key).unwrap());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn kohya_lora_matches_the_model_it_was_written_for() {
    let dir = scratch("lora");
    let config = tiny_config();
    let rank = 3;
    let path = dir.join("lora.safetensors");
    let n = write_kohya_lora_for(&path, &config, rank, 1, StDType::F16).unwrap();
    // One transformer per resnet of the attention levels, plus the middle one; 12 modules each.
    let transformers = config.unet.layers_per_block * (config.unet.down_cross_attention.iter().filter(|&&a| a).count())
        + (config.unet.layers_per_block + 1) * config.unet.up_cross_attention.iter().filter(|&&a| a).count()
        + 1;
    assert_eq!(n, 12 * transformers);
    assert_eq!(n, lora_targets(&config).unwrap().len());

    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.metadata().get("ss_network_dim").map(String::as_str), Some("3"));
    assert_eq!(file.metadata().get("ss_base_model_version").map(String::as_str), Some("sd_v1"));
    let down = "lora_unet_down_blocks_0_attentions_0_proj_in.lora_down.weight";
    assert_eq!(file.info(down).unwrap().shape, vec![rank, config.unet.block_out_channels[0], 1, 1]);
    assert_eq!(file.read_f32("lora_unet_mid_block_attentions_0_transformer_blocks_0_ff_net_2.alpha").unwrap(), [3.0]);

    // Statistics of the draws: lora_down ~ N(0, 1/in), lora_up ~ N(0, 1e-4), over all modules.
    let (mut sd, mut nd, mut su, mut nu) = (0f64, 0usize, 0f64, 0usize);
    for s in kohya_lora_tensors(&config, rank).unwrap() {
        let v = file.read_f32(&s.key).unwrap();
        if s.key.ends_with("lora_down.weight") {
            sd += v.iter().map(|&x| x as f64 * x as f64 * s.shape[1] as f64).sum::<f64>();
            nd += v.len();
        } else if s.key.ends_with("lora_up.weight") {
            su += v.iter().map(|&x| x as f64 * x as f64 * 1e4).sum::<f64>();
            nu += v.len();
        }
    }
    let (vd, vu) = (sd / nd as f64, su / nu as f64);
    assert!((vd - 1.0).abs() < 0.1 && (vu - 1.0).abs() < 0.1, "normalised variances {vd}, {vu}");

    let model = dir.join("model.safetensors");
    write_checkpoint(&model, &config, StDType::F16, 0, &mut |_, _| {}).unwrap();
    let lora = LoraFile::open(&path, &ModelFiles::open(&model).unwrap()).unwrap();
    assert_eq!(lora.modules.len(), n, "every module finds its weight");
    assert!(lora.unmatched.is_empty(), "unmatched: {:?}", lora.unmatched);
    assert_eq!(kohya_lora_tensors(&sd15_model_config(), 32).unwrap().len(), 3 * 192, "SD1.5: 16 transformers × 12");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn bad_arguments_are_errors() {
    let dir = scratch("bad");
    let config = tiny_config();
    let e = write_checkpoint(&dir.join("x.safetensors"), &config, StDType::I8, 0, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("I8"), "{e}");
    assert!(write_kohya_lora_for(&dir.join("l.safetensors"), &config, 0, 0, StDType::F16).is_err());
    let mut broken = config.clone();
    broken.unet.up_cross_attention.pop();
    assert!(checkpoint_tensors(&broken).is_err());
    let e =
        write_checkpoint(&dir.join("no/such/dir/x.safetensors"), &config, StDType::F16, 0, &mut |_, _| {}).unwrap_err();
    assert!(e.to_string().contains("no/such/dir"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}
