//! Random-weight Stable Diffusion checkpoints written to disk (SD1.x and SDXL): the Rust
//! counterpart of `../shared/tools/make_random_sd15.py`, for measuring `lorafuse generate` on a
//! real multi-gigabyte single-file checkpoint on machines without torch.
//!
//! The tensor list is derived from a [`ModelConfig`] by the diffusers architecture rules (the
//! names the model code reads, [`names`]) and mapped to the original single-file keys through
//! [`diffusers_to_source`], the same mapping the loader uses, so a written file holds exactly the
//! keys and shapes a loader of real files meets. Where the single file stores several diffusers
//! weights in one tensor (OpenCLIP's fused `attn.in_proj_weight` = q, k, v stacked) the parts are
//! put back together into that one tensor; where it stores a transpose (OpenCLIP's
//! `text_projection`, `[width, proj]`) the stored shape is transposed. [`sd15_model_config`] is
//! SD1.5 and [`sdxl_model_config`] SDXL base; the detected config of any SD1.x / SDXL file (e.g.
//! a tiny test fixture) reproduces that file's key set.
//!
//! Values are seeded per tensor from a hash of its key, so they do not depend on write order:
//! weights uniform in ±1/√fan_in, norm scales 1 ± 0.02, biases ±0.02 (the scheme of the
//! `VarBuilder` synthetic mode), which keeps activations finite through UNet and VAE.
//! Files are streamed tensor by tensor ([`write`]); memory stays at one chunk whatever the model
//! size.

mod names;
mod taesd;
mod write;

use std::collections::BTreeMap;
use std::path::Path;

use crate::weights::detect::{AdditionConfig, ClipConfig, Family, ModelConfig, UNetConfig, VaeConfig};
use crate::weights::names::{diffusers_to_ldm, diffusers_to_source, Component, LdmLayout, Part, LDM_UNET};
use crate::weights::StDType;
use crate::{Error, Result};
use names::{clip_names, unet_names, vae_names};
pub use taesd::{taesd_decoder_tensors, write_taesd_decoder};
use write::{write_file, Fill};

const OP: &str = "random_model";

/// One tensor of a file to write.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TensorSpec {
    pub key: String,
    pub shape: Vec<usize>,
}

impl TensorSpec {
    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }
}

/// What a write produced.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WriteSummary {
    pub tensors: usize,
    pub parameters: u64,
    /// File size, header included.
    pub bytes: u64,
}

/// SD1.5's architecture: UNet 320/640/1280/1280 with 2 resnets per level, cross-attention in down
/// levels 0–2, up levels 1–3 and the middle, 8 heads, 768-wide context; VAE 128/256/512/512;
/// CLIP ViT-L/14 text model (12 layers, 768 wide, 3072 MLP, 49408 tokens, 77 positions).
pub fn sd15_model_config() -> ModelConfig {
    ModelConfig {
        family: Family::Sd1,
        unet: UNetConfig {
            in_channels: 4,
            out_channels: 4,
            block_out_channels: vec![320, 640, 1280, 1280],
            layers_per_block: 2,
            down_cross_attention: vec![true, true, true, false],
            up_cross_attention: vec![false, true, true, true],
            mid_cross_attention: true,
            down_transformer_depth: vec![1, 1, 1, 0],
            up_transformer_depth: vec![0, 1, 1, 1],
            mid_transformer_depth: 1,
            cross_attention_dim: 768,
            heads: vec![8; 4],
            time_embed_dim: 1280,
            use_linear_projection: false,
            norm_num_groups: 32,
            addition: None,
        },
        vae: VaeConfig {
            in_channels: 3,
            out_channels: 3,
            latent_channels: 4,
            block_out_channels: vec![128, 256, 512, 512],
            layers_per_block: 2,
            mid_attention: true,
            norm_num_groups: 32,
            scaling_factor: 0.18215,
        },
        clip: ClipConfig {
            vocab_size: 49408,
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            max_position_embeddings: 77,
            hidden_act: "quick_gelu".into(),
            projection_dim: None,
        },
        clip2: None,
        v_prediction: false,
        zero_terminal_snr: false,
    }
}

/// SDXL base's architecture (`sd_xl_base_1.0`): UNet 320/640/1280 with 2 resnets per level,
/// no attention in level 0, transformer depth 2 and 10 in levels 1 and 2 and 10 in the middle,
/// heads = width / 64, linear `proj_in`/`proj_out`, 2048-wide context, `text_time` added
/// conditioning (six size ids at 256 + the 1280-wide pooled text = 2816 inputs); VAE as SD1's
/// (scaling factor 0.13025); CLIP ViT-L text model and OpenCLIP ViT-bigG (32 layers, 1280 wide,
/// 20 heads, 5120 MLP, exact GELU, 1280-wide projection).
pub fn sdxl_model_config() -> ModelConfig {
    let sd15 = sd15_model_config();
    let widths = [320, 640, 1280];
    ModelConfig {
        family: Family::Sdxl,
        unet: UNetConfig {
            block_out_channels: widths.to_vec(),
            down_cross_attention: vec![false, true, true],
            up_cross_attention: vec![true, true, false],
            mid_cross_attention: true,
            down_transformer_depth: vec![0, 2, 10],
            up_transformer_depth: vec![10, 2, 0],
            mid_transformer_depth: 10,
            cross_attention_dim: 768 + 1280,
            heads: widths.iter().map(|w| w / 64).collect(),
            use_linear_projection: true,
            addition: Some(AdditionConfig { time_embed_dim: 256, in_dim: 1280 + 6 * 256 }),
            ..sd15.unet
        },
        vae: VaeConfig { scaling_factor: 0.13025, ..sd15.vae },
        clip2: Some(ClipConfig {
            vocab_size: 49408,
            hidden_size: 1280,
            intermediate_size: 5120,
            num_hidden_layers: 32,
            num_attention_heads: 20,
            max_position_embeddings: 77,
            hidden_act: "gelu".into(),
            projection_dim: Some(1280),
        }),
        ..sd15
    }
}

/// A small SDXL with every architectural feature of the base model (no attention at level 0,
/// deeper transformers below it, linear projections, `text_time` conditioning, CLIP-L style and
/// OpenCLIP style text encoders with projection, 0.13025 VAE) at test widths: the architecture of
/// the sdxl-tiny fixture (a test checks they agree), small enough to write on every
/// `lorafuse demo --family sdxl` (about 11 M parameters).
pub fn sdxl_tiny_config() -> ModelConfig {
    let full = sdxl_model_config();
    let clip = ClipConfig {
        vocab_size: 49408,
        hidden_size: 64,
        intermediate_size: 128,
        num_hidden_layers: 3,
        num_attention_heads: 1,
        max_position_embeddings: 77,
        hidden_act: "quick_gelu".into(),
        projection_dim: None,
    };
    ModelConfig {
        unet: UNetConfig {
            block_out_channels: vec![32, 64, 64],
            down_transformer_depth: vec![0, 1, 2],
            up_transformer_depth: vec![2, 1, 0],
            mid_transformer_depth: 2,
            cross_attention_dim: 2 * 64,
            heads: vec![1; 3],
            time_embed_dim: 4 * 32,
            addition: Some(AdditionConfig { time_embed_dim: 8, in_dim: 64 + 6 * 8 }),
            ..full.unet
        },
        vae: VaeConfig { block_out_channels: vec![32, 32, 64, 64], ..full.vae },
        clip2: Some(ClipConfig { hidden_act: "gelu".into(), projection_dim: Some(64), ..clip.clone() }),
        clip,
        ..full
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid(OP, msg)
}

/// The single-file layout facts a checkpoint of `config` has.
pub fn ldm_layout(config: &ModelConfig) -> LdmLayout {
    LdmLayout::for_unet(
        config.unet.layers_per_block,
        &config.unet.up_cross_attention,
        config.vae.block_out_channels.len(),
        config.family == Family::Sdxl,
    )
}

/// Every tensor of a single-file (LDM layout) checkpoint of `config`, sorted by key: the UNet
/// under `model.diffusion_model.`, the VAE under `first_stage_model.` (mid attention as 1×1
/// convs, as LDM stores it), and the text encoders: SD1's CLIP under
/// `cond_stage_model.transformer.text_model.`, SDXL's under `conditioner.embedders.0.transformer.`
/// and, in OpenCLIP's layout, `conditioner.embedders.1.model.` (see the module docs).
pub fn checkpoint_tensors(config: &ModelConfig) -> Result<Vec<TensorSpec>> {
    if (config.family == Family::Sdxl) != config.clip2.is_some() {
        return Err(invalid(format!(
            "a {} config {} a second text encoder",
            config.family.name(),
            if config.clip2.is_some() { "with" } else { "without" }
        )));
    }
    let lay = ldm_layout(config);
    let mut parts = vec![
        (Component::Unet, unet_names(&config.unet)?),
        (Component::Vae, vae_names(&config.vae)?),
        (Component::TextEncoder, clip_names(&config.clip)),
    ];
    if let Some(c2) = &config.clip2 {
        parts.push((Component::TextEncoder2, clip_names(c2)));
    }
    let mut out = BTreeMap::new();
    // Fused keys: the shape of each third (q, k, v) as the names arrive.
    let mut fused: BTreeMap<String, [Option<Vec<usize>>; 3]> = BTreeMap::new();
    let mut put = |key: String, shape: Vec<usize>| match out.insert(key.clone(), shape) {
        Some(_) => Err(invalid(format!("two tensors map to the single-file key '{key}'"))),
        None => Ok(()),
    };
    for (comp, names) in parts {
        for (name, mut shape) in names.0 {
            let src = diffusers_to_source(comp, &name, &lay)
                .ok_or_else(|| invalid(format!("{} tensor '{name}' has no single-file key", comp.name())))?;
            match src.part {
                Part::Whole => {
                    if comp == Component::Vae && name.contains(".mid_block.attentions.") && shape.len() == 2 {
                        shape.extend([1, 1]);
                    }
                    put(src.key, shape)?;
                }
                Part::Transposed => match shape[..] {
                    [a, b] => put(src.key, vec![b, a])?,
                    _ => return Err(invalid(format!("'{name}' is stored transposed but has shape {shape:?}"))),
                },
                Part::Third(i) => {
                    let slot = fused.entry(src.key.clone()).or_default();
                    if slot.get_mut(i).and_then(|s| s.replace(shape)).is_some() {
                        return Err(invalid(format!("two tensors map to part {i} of '{}'", src.key)));
                    }
                }
            }
        }
    }
    for (key, thirds) in fused {
        let [Some(q), Some(k), Some(v)] = thirds else {
            return Err(invalid(format!("fused tensor '{key}' lacks one of q, k, v")));
        };
        if q != k || q != v || q.is_empty() {
            return Err(invalid(format!("fused tensor '{key}' has parts of shapes {q:?}, {k:?}, {v:?}")));
        }
        put(key, [&[3 * q[0]][..], &q[1..]].concat())?;
    }
    Ok(out.into_iter().map(|(key, shape)| TensorSpec { key, shape }).collect())
}

/// The UNet modules a kohya LoRA made by `make_random_sd15.py --lora` adapts: in every attention
/// transformer, proj_in/proj_out, attn1/attn2 to_q/to_k/to_v/to_out.0, ff.net.0.proj and ff.net.2.
/// Returns (diffusers module path, weight shape), in model order.
pub fn lora_targets(config: &ModelConfig) -> Result<Vec<(String, Vec<usize>)>> {
    const ENDS: [&str; 8] =
        [".to_q", ".to_k", ".to_v", ".proj_in", ".proj_out", ".to_out.0", ".ff.net.0.proj", ".ff.net.2"];
    Ok(unet_names(&config.unet)?
        .0
        .into_iter()
        .filter_map(|(name, shape)| {
            let module = name.strip_suffix(".weight")?;
            (module.contains(".attentions.") && ENDS.iter().any(|e| module.ends_with(e)))
                .then(|| (module.to_string(), shape))
        })
        .collect())
}

/// The checkpoint scheme (see the module docs).
fn checkpoint_fill(spec: &TensorSpec) -> Fill {
    if spec.shape.len() >= 2 {
        // OpenCLIP's `text_projection` is stored `[in, out]` (used as `x @ P`): its fan-in is
        // the first dimension, not the rest as for PyTorch `[out, in, ...]` weights.
        let fan_in: usize = if spec.key.ends_with("text_projection") {
            spec.shape[0]
        } else {
            spec.shape[1..].iter().product::<usize>().max(1)
        };
        return Fill::Uniform { offset: 0.0, scale: 1.0 / (fan_in as f32).sqrt() };
    }
    // Every 1-D weight of SD1.x and SDXL is a norm scale.
    let offset = if spec.key.ends_with(".weight") { 1.0 } else { 0.0 };
    Fill::Uniform { offset, scale: 0.02 }
}

/// Writes a random-weight single-file checkpoint of `config` (see [`checkpoint_tensors`]) in
/// `dtype` (F16, BF16 or F32).
pub fn write_checkpoint(
    path: &Path,
    config: &ModelConfig,
    dtype: StDType,
    seed: u64,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<WriteSummary> {
    let specs: Vec<_> = checkpoint_tensors(config)?
        .into_iter()
        .map(|s| {
            let f = checkpoint_fill(&s);
            (s, f)
        })
        .collect();
    write_file(path, &specs, dtype, seed, &BTreeMap::new(), progress)
}

/// Writes a full-size SD1.5 random-weight checkpoint (1.066 B parameters; 2.13 GB in F16).
pub fn write_sd15(path: &Path, dtype: StDType, seed: u64, progress: &mut dyn FnMut(u64, u64)) -> Result<WriteSummary> {
    write_checkpoint(path, &sd15_model_config(), dtype, seed, progress)
}

/// Writes a full-size SDXL base random-weight checkpoint (3.47 B parameters; 6.94 GB in F16).
pub fn write_sdxl(path: &Path, dtype: StDType, seed: u64, progress: &mut dyn FnMut(u64, u64)) -> Result<WriteSummary> {
    write_checkpoint(path, &sdxl_model_config(), dtype, seed, progress)
}

/// The tensors of a kohya LoRA of `rank` over [`lora_targets`]: `lora_unet_<path with _>` +
/// `.lora_down.weight [R, in(,1,1)]`, `.lora_up.weight [out, R(,1,1)]`, `.alpha []`. The path is
/// the diffusers one for SD1 and the LDM one for SDXL (`input_blocks_4_1_…`), as kohya's
/// sd-scripts name them for each family.
pub fn kohya_lora_tensors(config: &ModelConfig, rank: usize) -> Result<Vec<TensorSpec>> {
    if rank == 0 {
        return Err(invalid("LoRA rank must be positive"));
    }
    let lay = ldm_layout(config);
    let mut out = Vec::new();
    for (module, w) in lora_targets(config)? {
        let path = match config.family {
            Family::Sd1 => module,
            Family::Sdxl => diffusers_to_ldm(Component::Unet, &format!("{module}.weight"), &lay)
                .and_then(|k| Some(k.strip_prefix(LDM_UNET)?.strip_suffix(".weight")?.to_string()))
                .ok_or_else(|| invalid(format!("UNet module '{module}' has no single-file name")))?,
        };
        let m = format!("lora_unet_{}", path.replace('.', "_"));
        let kernel = &w[2..];
        out.push(TensorSpec { key: format!("{m}.alpha"), shape: vec![] });
        out.push(TensorSpec { key: format!("{m}.lora_down.weight"), shape: [&[rank, w[1]], kernel].concat() });
        let ones = vec![1; kernel.len()];
        out.push(TensorSpec { key: format!("{m}.lora_up.weight"), shape: [&[w[0], rank], &ones[..]].concat() });
    }
    Ok(out)
}

/// kohya's `ss_base_model_version` of a family.
fn base_model_version(family: Family) -> &'static str {
    match family {
        Family::Sd1 => "sd_v1",
        Family::Sdxl => "sdxl_base_v1-0",
    }
}

/// [`write_kohya_lora`] for any config; returns the number of adapted modules.
pub fn write_kohya_lora_for(
    path: &Path,
    config: &ModelConfig,
    rank: usize,
    seed: u64,
    dtype: StDType,
) -> Result<usize> {
    write_kohya_lora_with(path, config, rank, seed, dtype, 0.01)
}

/// [`write_kohya_lora_for`] with `lora_up ~ N(0, up_std²)`: 0.01 is a benchmark's barely-there
/// adapter; ~0.25 changes a random model's image visibly (the demo's LoRA).
pub fn write_kohya_lora_with(
    path: &Path,
    config: &ModelConfig,
    rank: usize,
    seed: u64,
    dtype: StDType,
    up_std: f32,
) -> Result<usize> {
    let specs: Vec<_> = kohya_lora_tensors(config, rank)?
        .into_iter()
        .map(|s| {
            let f = if s.key.ends_with(".alpha") {
                Fill::Uniform { offset: rank as f32, scale: 0.0 }
            } else if s.key.ends_with(".lora_down.weight") {
                Fill::Normal { std: 1.0 / (s.shape[1] as f32).sqrt() }
            } else {
                Fill::Normal { std: up_std }
            };
            (s, f)
        })
        .collect();
    let metadata: BTreeMap<String, String> = [
        ("ss_network_dim", rank.to_string()),
        ("ss_network_alpha", rank.to_string()),
        ("ss_base_model_version", base_model_version(config.family).to_string()),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_string(), v))
    .collect();
    write_file(path, &specs, dtype, seed, &metadata, &mut |_, _| {})?;
    Ok(specs.len() / 3)
}

/// A kohya rank-`rank` LoRA for full-size SD1.5 (192 UNet attention modules; alpha = rank, so
/// the scale is 1), as `make_random_sd15.py --lora` writes: lora_down ~ N(0,1)/√in, lora_up ~
/// N(0,1)·0.01. Returns the number of adapted modules.
pub fn write_kohya_lora(path: &Path, rank: usize, seed: u64, dtype: StDType) -> Result<usize> {
    write_kohya_lora_for(path, &sd15_model_config(), rank, seed, dtype)
}

/// A kohya rank-`rank` LoRA for full-size SDXL base (140 transformers × 12 = 1680 UNet attention
/// modules, LDM-named), drawn as [`write_kohya_lora`] draws. Returns the number of modules.
pub fn write_kohya_lora_sdxl(path: &Path, rank: usize, seed: u64, dtype: StDType) -> Result<usize> {
    write_kohya_lora_for(path, &sdxl_model_config(), rank, seed, dtype)
}
