//! The random-weight SDXL checkpoint writer (`lorafuse bench write-sdxl`) and the SDXL benchmark
//! configs: the tensor list derived from a config reproduces the tiny SDXL fixture's keys and
//! shapes exactly (OpenCLIP's fused in_proj and transposed projection included), the full SDXL
//! base list has SDXL's parameter counts, and a small file written through the same code is
//! detected as the config it was written from and loads into a pipeline with every key read.
//! Full-size files are never written here (6.9 GB); the full-size list is checked in memory.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use lorafuse::bench::pipeline::{sdxl_config, write_sdxl_structure};
use lorafuse::bench::random_model::{
    checkpoint_tensors, kohya_lora_tensors, lora_targets, sdxl_model_config, write_checkpoint, write_kohya_lora_for,
    TensorSpec,
};
use lorafuse::lora::LoraFile;
use lorafuse::models::vae::Vae;
use lorafuse::nn::{AdaptableWeights, Loader};
use lorafuse::pipeline::request::Precision;
use lorafuse::pipeline::txt2img::Pipeline;
use lorafuse::weights::detect::Family;
use lorafuse::weights::{detect, ModelConfig, ModelFiles, SafeTensorsFile, StDType};
use lorafuse::DType;

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sdxl-tiny/model-fp16.safetensors")
}

fn scratch(name: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("lorafuse-random-sdxl-{}-{name}", std::process::id()));
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

const UNET: &str = "model.diffusion_model.";
const VAE: &str = "first_stage_model.";
const TE1: &str = "conditioner.embedders.0.transformer.text_model.";
const TE2: &str = "conditioner.embedders.1.model.";

#[test]
fn tiny_config_reproduces_the_sdxl_fixture_keys_and_shapes() {
    let config = tiny_config();
    assert_eq!(config.family, Family::Sdxl);
    let got = as_map(&checkpoint_tensors(&config).unwrap());
    let want = shapes(&SafeTensorsFile::open(fixture()).unwrap());
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    let extra: Vec<_> = got.keys().filter(|k| !want.contains_key(*k)).collect();
    assert!(missing.is_empty() && extra.is_empty(), "missing {missing:?}\nextra {extra:?}");
    for (k, s) in &want {
        assert_eq!(&got[k], s, "shape of {k}");
    }
    // The demo's built-in tiny SDXL is this architecture.
    assert_eq!(lorafuse::bench::random_model::sdxl_tiny_config(), config);
}

#[test]
fn full_sdxl_has_sdxl_base_parameter_counts() {
    let specs = checkpoint_tensors(&sdxl_model_config()).unwrap();
    // diffusers' UNet2DConditionModel and AutoencoderKL, transformers' CLIPTextModel and
    // CLIPTextModelWithProjection at SDXL base's configuration.
    let counts = [params(&specs, UNET), params(&specs, VAE), params(&specs, TE1), params(&specs, TE2)];
    assert_eq!(counts, [2_567_463_684, 83_653_863, 123_060_480, 694_659_840], "UNet, VAE, CLIP-L, OpenCLIP-bigG");
    assert_eq!(params(&specs, ""), counts.iter().sum::<u64>(), "no tensor outside the four components");
    // Tensors per component of sd_xl_base_1.0.safetensors, less the buffers that file also
    // carries (CLIP-L's position_ids, OpenCLIP's logit_scale: 2515 keys in all).
    let count = |p: &str| specs.iter().filter(|s| s.key.starts_with(p)).count();
    assert_eq!([count(UNET), count(VAE), count(TE1), count(TE2)], [1680, 248, 196, 389]);
    assert_eq!(specs.len(), 2513);

    let full = as_map(&specs);
    for (k, s) in shapes(&SafeTensorsFile::open(fixture()).unwrap()) {
        let f = full.get(&k).unwrap_or_else(|| panic!("full-size list lacks fixture key {k}"));
        assert_eq!(f.len(), s.len(), "rank of {k}: full {f:?}, fixture {s:?}");
    }
    let want: [(&str, &[usize]); 10] = [
        ("model.diffusion_model.label_emb.0.0.weight", &[1280, 2816]),
        ("model.diffusion_model.input_blocks.4.1.proj_in.weight", &[640, 640]),
        ("model.diffusion_model.input_blocks.8.1.transformer_blocks.9.attn2.to_k.weight", &[1280, 2048]),
        ("model.diffusion_model.middle_block.1.transformer_blocks.9.ff.net.0.proj.weight", &[10240, 1280]),
        ("model.diffusion_model.output_blocks.2.2.conv.weight", &[1280, 1280, 3, 3]),
        ("model.diffusion_model.output_blocks.5.2.conv.weight", &[640, 640, 3, 3]),
        ("conditioner.embedders.1.model.transformer.resblocks.31.attn.in_proj_weight", &[3840, 1280]),
        ("conditioner.embedders.1.model.transformer.resblocks.0.attn.in_proj_bias", &[3840]),
        ("conditioner.embedders.1.model.text_projection", &[1280, 1280]),
        ("conditioner.embedders.1.model.positional_embedding", &[77, 1280]),
    ];
    for (k, s) in want {
        assert_eq!(full.get(k).map(Vec::as_slice), Some(s), "{k}");
    }
    assert!(!full.keys().any(|k| k.contains("resblocks.32.") || k.contains("q_proj") && k.starts_with(TE2)));
}

/// A small SDXL file through the writer: detection gives back the config it was written from,
/// the fused in_proj is one tensor, and `Pipeline::load` (plus the VAE encoder it does not load
/// for text-to-image) reads every key.
#[test]
fn written_small_sdxl_checkpoint_is_detected_and_fully_loaded() {
    let dir = scratch("ckpt");
    let config = tiny_config();
    let path = dir.join("tiny-sdxl.safetensors");
    let summary = write_checkpoint(&path, &config, StDType::F16, 3, &mut |_, _| {}).unwrap();
    assert_eq!(summary.bytes, std::fs::metadata(&path).unwrap().len());
    let files = ModelFiles::open(&path).unwrap();
    assert_eq!(detect(&files).unwrap(), config, "detection gives back the config");

    let file = SafeTensorsFile::open(&path).unwrap();
    let key = format!("{TE2}transformer.resblocks.1.attn.in_proj_weight");
    let c = config.clip2.as_ref().unwrap().hidden_size;
    assert_eq!(file.info(&key).unwrap().shape, [3 * c, c]);
    let v = file.read_f32(&key).unwrap();
    let bound = 1.0 / (c as f32).sqrt() * 1.001;
    assert!(v.iter().all(|x| x.abs() <= bound), "in_proj within ±1/√{c}");
    // q, k and v are drawn as one tensor: the thirds differ.
    let n = c * c;
    assert!(v[..n] != v[n..2 * n] && v[n..2 * n] != v[2 * n..]);

    let pipe = Pipeline::load_files(common::ctx(), &files, Precision::F32).unwrap();
    assert_eq!(pipe.family(), Family::Sdxl);
    let unread = files.unused_keys();
    assert!(unread.iter().all(|k| k.starts_with(VAE)), "only the VAE encoder is left: {unread:?}");
    let l = Loader::new(common::ctx(), files.vae(), &AdaptableWeights::default(), DType::F32);
    Vae::load(&l, &config.vae).unwrap();
    assert_eq!(files.unused_keys(), Vec::<String>::new(), "every written key is read");

    // The other dtypes go through the same writer.
    for dtype in [StDType::BF16, StDType::F32] {
        let p = dir.join(format!("{}.safetensors", dtype.name()));
        write_checkpoint(&p, &config, dtype, 3, &mut |_, _| {}).unwrap();
        let f = SafeTensorsFile::open(&p).unwrap();
        assert_eq!(f.info(&key).unwrap().dtype, dtype);
        assert_eq!(detect(&ModelFiles::open(&p).unwrap()).unwrap(), config);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn sdxl_kohya_lora_has_ldm_names_and_matches_its_model() {
    let dir = scratch("lora");
    let config = tiny_config();
    let path = dir.join("lora.safetensors");
    let n = write_kohya_lora_for(&path, &config, 2, 1, StDType::F16).unwrap();
    assert_eq!(n, lora_targets(&config).unwrap().len());
    let file = SafeTensorsFile::open(&path).unwrap();
    assert_eq!(file.metadata().get("ss_base_model_version").map(String::as_str), Some("sdxl_base_v1-0"));
    assert!(file.info("lora_unet_input_blocks_4_1_proj_in.lora_down.weight").is_some(), "kohya's SDXL names");
    assert!(!file.names().any(|k| k.contains("down_blocks")), "no diffusers paths");
    let model = dir.join("model.safetensors");
    write_checkpoint(&model, &config, StDType::F16, 0, &mut |_, _| {}).unwrap();
    let lora = LoraFile::open(&path, &ModelFiles::open(&model).unwrap()).unwrap();
    assert_eq!(lora.modules.len(), n, "every module finds its weight");
    assert!(lora.unmatched.is_empty(), "unmatched: {:?}", lora.unmatched);
    // SDXL base: 11 transformers (proj_in/out) with 70 blocks of 10 adapted linears.
    assert_eq!(kohya_lora_tensors(&sdxl_model_config(), 8).unwrap().len(), 3 * (11 * 2 + 70 * 10));
    let _ = std::fs::remove_dir_all(&dir);
}

/// `bench pipeline --family sdxl`: its narrow structure file is an SDXL checkpoint with SDXL
/// base's structure, and the benchmark config on it is SDXL base exactly.
#[test]
fn bench_structure_plus_sdxl_sizes_is_sdxl_base() {
    let dir = scratch("structure");
    let path = dir.join("structure.safetensors");
    write_sdxl_structure(&path).unwrap();
    assert!(std::fs::metadata(&path).unwrap().len() < 32 << 20, "a small file");
    let base = detect(&ModelFiles::open(&path).unwrap()).unwrap();
    assert_eq!(base.family, Family::Sdxl);
    assert_eq!(sdxl_config(&base).unwrap(), sdxl_model_config());
    // On the tiny fixture (shallower transformers) the sizes, depths included, are SDXL's too.
    assert_eq!(sdxl_config(&tiny_config()).unwrap(), sdxl_model_config());
    let sd1 = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/sd15-tiny/model-fp16.safetensors");
    let e = sdxl_config(&detect(&ModelFiles::open(sd1).unwrap()).unwrap()).unwrap_err();
    assert!(e.to_string().contains("SDXL"), "{e}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn inconsistent_configs_are_errors() {
    let mut c = sdxl_model_config();
    c.clip2 = None;
    assert!(checkpoint_tensors(&c).is_err(), "SDXL without its second encoder");
    let mut c = sdxl_model_config();
    c.unet.down_transformer_depth.pop();
    assert!(checkpoint_tensors(&c).is_err(), "depths per level");
}

/// The step rate `bench pipeline` reports is counted from the config: SD1.5 with CFG at 512²
/// is the 1.61 TFLOP; SDXL base with CFG at 1024² is 13.5 TFLOP.
#[test]
fn step_flops_are_counted_from_the_config() {
    use lorafuse::bench::flops::unet_flops;
    let sd15 = lorafuse::bench::random_model::sd15_model_config();
    let f = unet_flops(&sd15.unet, 2, 64, 64);
    assert!((f / 1.61e12 - 1.0).abs() < 0.005, "SD1.5 512² CFG: {f:e}");
    let xl = unet_flops(&sdxl_model_config().unet, 2, 128, 128);
    assert!((xl / 13.52e12 - 1.0).abs() < 0.005, "SDXL 1024² CFG: {xl:e}");
    // Convolutions and linears scale with the area, self-attention with its square.
    let half = unet_flops(&sdxl_model_config().unet, 2, 64, 64);
    assert!(xl > 4.0 * half && xl < 4.6 * half, "{xl:e} vs {half:e}");
}
