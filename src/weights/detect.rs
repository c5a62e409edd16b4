//! Model-family detection and the model configuration, read from keys and shapes.
//!
//! Structural, as ComfyUI's `detect_unet_config` (formats.md §1.5): the family comes from which
//! key groups exist (OpenCLIP text encoder → SD2, second embedder / `label_emb` → SDXL, LoRA
//! suffixes → not a checkpoint), never from SD1.5's 768 / 320 numbers, so tiny test models and
//! unusual widths work. The configuration is read through the [`VarBuilder`]s by diffusers
//! names, so one code path serves single files and folders. What shapes cannot tell follows the
//! SD1 rules (8 UNet heads, CLIP head width 64, 32 norm groups, quick_gelu, VAE scale 0.18215);
//! a folder's `config.json` overrides those.

use super::names::{Component, LDM_TEXT, LDM_UNET, LDM_VAE};
use super::safetensors::quoted;
use super::var_builder::{Store, VarBuilder};
use super::{Layout, ModelFiles};
use crate::{Error, Result};

const OP: &str = "detect";

/// Levels, resnets or layers counted from names stop here: no SD model comes close, and it
/// bounds the probing on hostile files.
const MAX_COUNT: usize = 64;

/// The UNet (diffusers `UNet2DConditionModel` fields).
#[derive(Clone, Debug, PartialEq)]
pub struct UNetConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    /// Channels per level, top (full resolution) first.
    pub block_out_channels: Vec<usize>,
    /// Resnets per down level (up levels have one more).
    pub layers_per_block: usize,
    /// Per down level, top first: whether it has cross-attention transformers.
    pub down_cross_attention: Vec<bool>,
    /// Per up level, bottom (diffusers `up_blocks.0`) first.
    pub up_cross_attention: Vec<bool>,
    pub mid_cross_attention: bool,
    /// Transformer blocks per attention module.
    pub transformer_layers_per_block: usize,
    /// Width of the text context (CLIP hidden size).
    pub cross_attention_dim: usize,
    /// Attention heads in every transformer (SD1 rule: 8; diffusers' `attention_head_dim`).
    pub num_heads: usize,
    /// Width of the timestep embedding MLP (4 × block_out_channels[0] in SD).
    pub time_embed_dim: usize,
    /// `proj_in`/`proj_out` are linear (SD2 style) rather than 1×1 convs.
    pub use_linear_projection: bool,
    pub norm_num_groups: usize,
}

/// The VAE (diffusers `AutoencoderKL` fields).
#[derive(Clone, Debug, PartialEq)]
pub struct VaeConfig {
    pub in_channels: usize,
    pub out_channels: usize,
    pub latent_channels: usize,
    /// Encoder channels per level, top first (the decoder mirrors them).
    pub block_out_channels: Vec<usize>,
    /// Encoder resnets per level (decoder: one more).
    pub layers_per_block: usize,
    pub mid_attention: bool,
    pub norm_num_groups: usize,
    pub scaling_factor: f32,
}

/// The CLIP text encoder (transformers `CLIPTextConfig` fields).
#[derive(Clone, Debug, PartialEq)]
pub struct ClipConfig {
    pub vocab_size: usize,
    pub hidden_size: usize,
    pub intermediate_size: usize,
    pub num_hidden_layers: usize,
    pub num_attention_heads: usize,
    pub max_position_embeddings: usize,
    pub hidden_act: String,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub clip: ClipConfig,
    /// The checkpoint is marked v-prediction (`v_pred` key, or the folder's scheduler config).
    pub v_prediction: bool,
}

fn fail(files: &ModelFiles, msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, format!("{}: {msg}", files.path().display()))
}

/// Detects the family of `files` and reads the SD1.x configuration from their shapes.
/// SD2.x, SDXL and files that are not checkpoints (LoRAs, VAEs, ...) are errors saying what was
/// found.
pub fn detect(files: &ModelFiles) -> Result<ModelConfig> {
    match files.layout() {
        Layout::SingleFile => classify_single(files)?,
        Layout::DiffusersFolder => classify_folder(files)?,
    }
    let unet = unet_config(files)?;
    let vae = vae_config(files)?;
    let clip = clip_config(files)?;
    if clip.hidden_size != unet.cross_attention_dim {
        return Err(fail(
            files,
            format!(
                "text encoder width {} does not match the UNet cross-attention width {}",
                clip.hidden_size, unet.cross_attention_dim
            ),
        ));
    }
    let v_prediction = match files.layout() {
        Layout::SingleFile => files.raw_store(Component::Unet).info("v_pred").is_some(),
        Layout::DiffusersFolder => scheduler_prediction(files) == Some("v_prediction".to_string()),
    };
    Ok(ModelConfig { unet, vae, clip, v_prediction })
}

fn scheduler_prediction(files: &ModelFiles) -> Option<String> {
    let text = std::fs::read_to_string(files.path().join("scheduler/scheduler_config.json")).ok()?;
    let v: serde_json::Value = serde_json::from_str(&text).ok()?;
    Some(v.get("prediction_type")?.as_str()?.to_string())
}

/// The first key satisfying `pred`, quoted for a message.
fn find<'a>(keys: &[&'a str], pred: impl Fn(&str) -> bool) -> Option<&'a str> {
    keys.iter().copied().find(|k| pred(k))
}

/// The `attn2.to_k` in-width and `proj_in` rank of the first UNet attention of a store.
fn context_and_projection(store: &Store, keys: &[&str], prefix: &str) -> (Option<usize>, Option<usize>) {
    let width = find(keys, |k| k.starts_with(prefix) && k.ends_with("attn2.to_k.weight"))
        .and_then(|k| store.info(k))
        .and_then(|(_, i)| i.shape.get(1).copied());
    let rank = find(keys, |k| k.starts_with(prefix) && k.ends_with("proj_in.weight"))
        .and_then(|k| store.info(k))
        .map(|(_, i)| i.shape.len());
    (width, rank)
}

fn classify_single(files: &ModelFiles) -> Result<()> {
    let store = files.raw_store(Component::Unet);
    let keys = store.keys();
    if let Some(k) =
        find(&keys, |k| k.starts_with("conditioner.embedders.1.") || k.contains("diffusion_model.label_emb."))
    {
        return Err(fail(files, format!("not supported yet: SDXL (found {})", quoted(k))));
    }
    if let Some(k) =
        find(&keys, |k| k.starts_with("cond_stage_model.model.") || k.starts_with("conditioner.embedders.0.model."))
    {
        return Err(fail(files, format!("not supported yet: SD2.x (OpenCLIP text encoder, found {})", quoted(k))));
    }
    if !keys.iter().any(|k| k.starts_with(LDM_UNET)) {
        return Err(fail(files, not_a_checkpoint(&keys)));
    }
    if let (Some(1024), Some(2)) = context_and_projection(store, &keys, LDM_UNET) {
        return Err(fail(files, "not supported yet: SD2.x (linear proj_in with 1024-wide context)"));
    }
    for (prefix, what) in [(LDM_TEXT, "CLIP text encoder"), (LDM_VAE, "VAE")] {
        if !keys.iter().any(|k| k.starts_with(prefix)) {
            return Err(fail(files, format!("checkpoint has a UNet but no {what} ({prefix}* keys)")));
        }
    }
    Ok(())
}

fn classify_folder(files: &ModelFiles) -> Result<()> {
    if files.path().join("text_encoder_2").is_dir() {
        return Err(fail(files, "not supported yet: SDXL (folder has text_encoder_2/)"));
    }
    let unet = files.raw_store(Component::Unet);
    let keys = unet.keys();
    if let Some(k) = find(&keys, |k| k.starts_with("add_embedding.")) {
        return Err(fail(files, format!("not supported yet: SDXL (unet has {})", quoted(k))));
    }
    if let (Some(1024), Some(2)) = context_and_projection(unet, &keys, "") {
        return Err(fail(files, "not supported yet: SD2.x (linear proj_in with 1024-wide context)"));
    }
    Ok(())
}

/// Says what a file without SD checkpoint keys looks like.
fn not_a_checkpoint(keys: &[&str]) -> String {
    if keys.is_empty() {
        return "contains no tensors, not a checkpoint".to_string();
    }
    let lora_markers = [".lora_down.", ".lora_up.", ".lora_A.", ".lora_B.", ".hada_w1_a", ".lokr_w1", ".lokr_w2"];
    if let Some(k) = find(keys, |k| k.starts_with("lora_unet_") || k.starts_with("lora_te")) {
        return format!("looks like a LoRA file (lora_unet_* / lora_te* keys such as {}), not a checkpoint", quoted(k));
    }
    if let Some(k) = find(keys, |k| lora_markers.iter().any(|m| k.contains(m))) {
        return format!("looks like a LoRA / LyCORIS file (keys such as {}), not a checkpoint", quoted(k));
    }
    if keys.contains(&"conv_in.weight") && keys.iter().any(|k| k.starts_with("down_blocks.")) {
        return "looks like a diffusers UNet weights file; open the model folder (with unet/, vae/, text_encoder/) instead"
            .to_string();
    }
    if keys.contains(&"encoder.conv_in.weight") && keys.contains(&"decoder.conv_in.weight") {
        return "looks like a standalone VAE file, not a checkpoint".to_string();
    }
    if keys.iter().any(|k| k.starts_with("text_model.")) {
        return "looks like a standalone CLIP text encoder, not a checkpoint".to_string();
    }
    if keys.iter().any(|k| *k == "emb_params" || k.starts_with("string_to_param")) {
        return "looks like a textual-inversion embedding, not a checkpoint".to_string();
    }
    let first: Vec<String> = keys.iter().take(3).map(|k| quoted(k)).collect();
    format!(
        "not a Stable Diffusion checkpoint: none of its {} tensors is under {LDM_UNET}* (first: {})",
        keys.len(),
        first.join(", ")
    )
}

/// The stored shape of `name`, or the builder's missing-key error.
fn shape(vb: &VarBuilder, name: &str) -> Result<Vec<usize>> {
    match vb.shape(name) {
        Some(s) => Ok(s),
        None => vb.get_unchecked(name).map(|t| t.shape),
    }
}

/// Dimension `i` of the stored shape of `name`.
fn dim(vb: &VarBuilder, name: &str, i: usize) -> Result<usize> {
    let s = shape(vb, name)?;
    s.get(i).copied().ok_or_else(|| {
        Error::shape(
            OP,
            format!(
                "{} weight {} has shape {s:?}, expected at least {} dims",
                vb.component().name(),
                quoted(&vb.path(name)),
                i + 1
            ),
        )
    })
}

/// How many `i` in 0.. have `vb.contains(&name(i))`, stopping at the first gap.
fn count(vb: &VarBuilder, name: impl Fn(usize) -> String) -> usize {
    (0..MAX_COUNT).take_while(|&i| vb.contains(&name(i))).count()
}

/// A non-negative integer field of a folder's config.json.
fn cfg_usize(files: &ModelFiles, c: Component, field: &str) -> Option<usize> {
    files.config_json(c)?.get(field)?.as_u64().and_then(|v| usize::try_from(v).ok())
}

fn unet_config(files: &ModelFiles) -> Result<UNetConfig> {
    let vb = files.unet();
    let in_channels = dim(&vb, "conv_in.weight", 1)?;
    let out_channels = dim(&vb, "conv_out.weight", 0)?;
    let levels = count(&vb, |b| format!("down_blocks.{b}.resnets.0.conv1.weight"));
    if levels == 0 {
        // Names the key that is missing, in the file's own layout.
        dim(&vb, "down_blocks.0.resnets.0.conv1.weight", 0)?;
    }
    let block_out_channels = (0..levels)
        .map(|b| dim(&vb, &format!("down_blocks.{b}.resnets.0.conv1.weight"), 0))
        .collect::<Result<Vec<_>>>()?;
    let layers_per_block = count(&vb, |j| format!("down_blocks.0.resnets.{j}.conv1.weight"));
    let has_attn = |p: String| vb.contains(&format!("{p}.attentions.0.proj_in.weight"));
    let down_cross_attention: Vec<bool> = (0..levels).map(|b| has_attn(format!("down_blocks.{b}"))).collect();
    let up_cross_attention: Vec<bool> = (0..levels).map(|b| has_attn(format!("up_blocks.{b}"))).collect();
    let mid_cross_attention = has_attn("mid_block".to_string());

    let first_attn = (0..levels)
        .find(|&b| down_cross_attention[b])
        .map(|b| format!("down_blocks.{b}.attentions.0"))
        .or_else(|| mid_cross_attention.then(|| "mid_block.attentions.0".to_string()))
        .ok_or_else(|| fail(files, "the UNet has no cross-attention transformer"))?;
    let attn = vb.pp(&first_attn);
    let transformer_layers_per_block = count(&attn, |k| format!("transformer_blocks.{k}.norm1.weight"));
    let cross_attention_dim = dim(&attn, "transformer_blocks.0.attn2.to_k.weight", 1)?;
    let use_linear_projection = shape(&attn, "proj_in.weight")?.len() == 2;
    let time_embed_dim = dim(&vb, "time_embedding.linear_1.weight", 0)?;

    let heads = cfg_usize(files, Component::Unet, "num_attention_heads")
        .or_else(|| cfg_usize(files, Component::Unet, "attention_head_dim"))
        .unwrap_or(8);
    let groups = cfg_usize(files, Component::Unet, "norm_num_groups").unwrap_or(32);
    Ok(UNetConfig {
        in_channels,
        out_channels,
        block_out_channels,
        layers_per_block,
        down_cross_attention,
        up_cross_attention,
        mid_cross_attention,
        transformer_layers_per_block,
        cross_attention_dim,
        num_heads: heads,
        time_embed_dim,
        use_linear_projection,
        norm_num_groups: groups,
    })
}

fn vae_config(files: &ModelFiles) -> Result<VaeConfig> {
    let vb = files.vae();
    let in_channels = dim(&vb, "encoder.conv_in.weight", 1)?;
    let out_channels = dim(&vb, "decoder.conv_out.weight", 0)?;
    let levels = count(&vb, |b| format!("encoder.down_blocks.{b}.resnets.0.conv1.weight"));
    if levels == 0 {
        dim(&vb, "encoder.down_blocks.0.resnets.0.conv1.weight", 0)?;
    }
    let block_out_channels = (0..levels)
        .map(|b| dim(&vb, &format!("encoder.down_blocks.{b}.resnets.0.conv1.weight"), 0))
        .collect::<Result<Vec<_>>>()?;
    let layers_per_block = count(&vb, |j| format!("encoder.down_blocks.0.resnets.{j}.conv1.weight"));
    let latent_channels = dim(&vb, "decoder.conv_in.weight", 1)?;
    let mid_attention = vb.contains("encoder.mid_block.attentions.0.to_q.weight");
    let cfg = files.config_json(Component::Vae);
    let scaling_factor = cfg.and_then(|c| c.get("scaling_factor")?.as_f64()).map_or(0.18215, |v| v as f32);
    let groups = cfg_usize(files, Component::Vae, "norm_num_groups").unwrap_or(32);
    Ok(VaeConfig {
        in_channels,
        out_channels,
        latent_channels,
        block_out_channels,
        layers_per_block,
        mid_attention,
        norm_num_groups: groups,
        scaling_factor,
    })
}

fn clip_config(files: &ModelFiles) -> Result<ClipConfig> {
    let vb = files.text_encoder().pp("text_model");
    let tok = shape(&vb, "embeddings.token_embedding.weight")?;
    let (vocab_size, hidden_size) = match tok[..] {
        [v, h] => (v, h),
        _ => return Err(fail(files, format!("CLIP token embedding has shape {tok:?}, expected [vocab, width]"))),
    };
    let max_position_embeddings = dim(&vb, "embeddings.position_embedding.weight", 0)?;
    let num_hidden_layers = count(&vb, |i| format!("encoder.layers.{i}.layer_norm1.weight"));
    if num_hidden_layers == 0 {
        dim(&vb, "encoder.layers.0.layer_norm1.weight", 0)?;
    }
    let intermediate_size = dim(&vb, "encoder.layers.0.mlp.fc1.weight", 0)?;
    let num_attention_heads = match cfg_usize(files, Component::TextEncoder, "num_attention_heads") {
        Some(h) => h,
        None if hidden_size >= 64 && hidden_size % 64 == 0 => hidden_size / 64,
        None => {
            return Err(fail(files, format!("CLIP width {hidden_size} is not a multiple of the SD1 head width 64")));
        }
    };
    let hidden_act = files
        .config_json(Component::TextEncoder)
        .and_then(|c| c.get("hidden_act")?.as_str().map(str::to_string))
        .unwrap_or_else(|| "quick_gelu".to_string());
    Ok(ClipConfig {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        max_position_embeddings,
        hidden_act,
    })
}
