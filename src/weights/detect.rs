//! Model-family detection and the model configuration, read from keys and shapes.
//!
//! Structural, as ComfyUI's `detect_unet_config` (formats.md §1.5): the family comes from which
//! key groups exist (OpenCLIP text encoder → SD2, second embedder / `label_emb` → SDXL, LoRA
//! suffixes → not a checkpoint), never from SD1.5's 768 / 320 numbers, so tiny test models and
//! unusual widths work. The configuration is read through the [`VarBuilder`]s by diffusers
//! names, so one code path serves single files and folders. What shapes cannot tell follows the
//! SD1 rules (8 UNet heads, CLIP head width 64, 32 norm groups, quick_gelu, VAE scale 0.18215);
//! a folder's `config.json` overrides those.

use super::names::{Component, LDM_TEXT, LDM_UNET, LDM_VAE, SDXL_TEXT1, SDXL_TEXT2};
use super::safetensors::quoted;
use super::var_builder::{Store, VarBuilder};
use super::{Layout, ModelFiles};
use crate::{Error, Result};

const OP: &str = "detect";

/// Levels, resnets or layers counted from names stop here: no SD model comes close, and it
/// bounds the probing on hostile files.
const MAX_COUNT: usize = 64;

/// The model families lorafuse runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Family {
    /// SD 1.x: one CLIP ViT-L text encoder, 4-level UNet.
    Sd1,
    /// SDXL base and its fine-tunes (Pony, Illustrious, NoobAI, ...): two text encoders, pooled
    /// text and size conditioning (`text_time`).
    Sdxl,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Sd1 => "SD1.x",
            Family::Sdxl => "SDXL",
        }
    }
}

/// diffusers' `text_time` added conditioning (SDXL): six size/crop numbers, each embedded
/// sinusoidally at `time_embed_dim`, concatenated with the pooled text embedding and projected
/// into the time embedding by `add_embedding`.
#[derive(Clone, Debug, PartialEq)]
pub struct AdditionConfig {
    /// `addition_time_embed_dim` (SDXL: 256).
    pub time_embed_dim: usize,
    /// Input width of `add_embedding.linear_1`: pooled width + 6 · `time_embed_dim` (SDXL: 2816).
    pub in_dim: usize,
}

impl AdditionConfig {
    /// The pooled text embedding's width.
    pub fn pooled_dim(&self) -> usize {
        self.in_dim - 6 * self.time_embed_dim
    }
}

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
    /// Transformer blocks per attention module, per down level (top first; 0 without attention).
    pub down_transformer_depth: Vec<usize>,
    /// The same per up level (bottom first); SDXL's are the down levels' reversed.
    pub up_transformer_depth: Vec<usize>,
    pub mid_transformer_depth: usize,
    /// Width of the text context (CLIP hidden size; SDXL: both encoders' widths together).
    pub cross_attention_dim: usize,
    /// Attention heads per down level (SD1 rule: 8 everywhere; SDXL: width / 64). Up level i
    /// has the heads of down level `levels - 1 - i`, the mid block those of the last level.
    pub heads: Vec<usize>,
    /// Width of the timestep embedding MLP (4 × block_out_channels[0] in SD).
    pub time_embed_dim: usize,
    /// `proj_in`/`proj_out` are linear (SD2 style) rather than 1×1 convs.
    pub use_linear_projection: bool,
    pub norm_num_groups: usize,
    /// SDXL's pooled-text and size conditioning; `None` for SD1.
    pub addition: Option<AdditionConfig>,
}

impl UNetConfig {
    /// Heads of up level `i` (diffusers reverses the per-level list for the up blocks).
    pub fn up_heads(&self, i: usize) -> usize {
        let n = self.heads.len();
        self.heads[n - 1 - i.min(n - 1)]
    }

    pub fn mid_heads(&self) -> usize {
        self.heads.last().copied().unwrap_or(8)
    }
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
    /// Width of `text_projection` (SDXL's second encoder: the pooled embedding); `None` when the
    /// encoder has none.
    pub projection_dim: Option<usize>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct ModelConfig {
    pub family: Family,
    pub unet: UNetConfig,
    pub vae: VaeConfig,
    pub clip: ClipConfig,
    /// SDXL's second text encoder (OpenCLIP ViT-bigG, with projection).
    pub clip2: Option<ClipConfig>,
    /// The checkpoint is marked v-prediction (`v_pred` key, or the folder's scheduler config).
    pub v_prediction: bool,
    /// The checkpoint is marked zero terminal SNR (`ztsnr` key, or the folder's scheduler config
    /// says `rescale_betas_zero_snr`), as NoobAI v-pred files are.
    pub zero_terminal_snr: bool,
}

fn fail(files: &ModelFiles, msg: impl std::fmt::Display) -> Error {
    Error::invalid(OP, format!("{}: {msg}", files.path().display()))
}

/// Detects the family of `files` and reads its configuration from their shapes. SD2.x, the
/// SDXL refiner and files that are not checkpoints (LoRAs, VAEs, ...) are errors saying what was
/// found.
pub fn detect(files: &ModelFiles) -> Result<ModelConfig> {
    let family = match files.layout() {
        Layout::SingleFile => classify_single(files)?,
        Layout::DiffusersFolder => classify_folder(files)?,
    };
    let clip = clip_config(files, Component::TextEncoder)?;
    let clip2 = match family {
        Family::Sd1 => None,
        Family::Sdxl => Some(clip_config(files, Component::TextEncoder2)?),
    };
    let unet = unet_config(files, family, clip2.as_ref())?;
    let vae = vae_config(files, family)?;
    let context = clip.hidden_size + clip2.as_ref().map_or(0, |c| c.hidden_size);
    if context != unet.cross_attention_dim {
        let widths = match &clip2 {
            Some(c2) => format!("text encoder widths {} + {} = {context}", clip.hidden_size, c2.hidden_size),
            None => format!("text encoder width {context}"),
        };
        return Err(fail(
            files,
            format!("{widths} does not match the UNet cross-attention width {}", unet.cross_attention_dim),
        ));
    }
    if let (Some(a), Some(c2)) = (&unet.addition, &clip2) {
        if c2.projection_dim != Some(a.pooled_dim()) {
            return Err(fail(
                files,
                format!(
                    "the UNet's add_embedding expects a {}-wide pooled text embedding, text encoder 2 projects to {:?}",
                    a.pooled_dim(),
                    c2.projection_dim
                ),
            ));
        }
    }
    // Single files mark these with keys whose values do not matter (kohya / ComfyUI write a 0-d
    // or 1-element tensor); a folder says so in its scheduler config.
    let (v_prediction, zero_terminal_snr) = match files.layout() {
        Layout::SingleFile => {
            let store = files.raw_store(Component::Unet);
            (store.info("v_pred").is_some(), store.info("ztsnr").is_some())
        }
        Layout::DiffusersFolder => {
            let sched = scheduler_json(files);
            let field = |k: &str| sched.as_ref().and_then(|v| v.get(k).cloned());
            (
                field("prediction_type").is_some_and(|p| p == "v_prediction"),
                field("rescale_betas_zero_snr").is_some_and(|z| z == true),
            )
        }
    };
    Ok(ModelConfig { family, unet, vae, clip, clip2, v_prediction, zero_terminal_snr })
}

fn scheduler_json(files: &ModelFiles) -> Option<serde_json::Value> {
    let text = std::fs::read_to_string(files.path().join("scheduler/scheduler_config.json")).ok()?;
    serde_json::from_str(&text).ok()
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

fn classify_single(files: &ModelFiles) -> Result<Family> {
    let store = files.raw_store(Component::Unet);
    let keys = store.keys();
    let has = |p: &str| keys.iter().any(|k| k.starts_with(p));
    if !keys.iter().any(|k| k.starts_with(LDM_UNET)) {
        return Err(fail(files, not_a_checkpoint(&keys)));
    }
    if has(SDXL_TEXT2) || has(SDXL_TEXT1) {
        for (prefix, what) in [(SDXL_TEXT1, "CLIP ViT-L text encoder"), (SDXL_TEXT2, "OpenCLIP ViT-bigG text encoder")]
        {
            if !has(prefix) {
                return Err(fail(files, format!("SDXL checkpoint without its {what} ({prefix}* keys)")));
            }
        }
        if !has(&format!("{LDM_UNET}label_emb.")) {
            return Err(fail(
                files,
                format!("SDXL checkpoint whose UNet has no {LDM_UNET}label_emb.* (the pooled-text and size embedding)"),
            ));
        }
        if !has(LDM_VAE) {
            return Err(fail(files, format!("checkpoint has a UNet but no VAE ({LDM_VAE}* keys)")));
        }
        return Ok(Family::Sdxl);
    }
    if let Some(k) = find(&keys, |k| k.starts_with("conditioner.embedders.0.model.")) {
        return Err(fail(
            files,
            format!("not supported yet: the SDXL refiner (OpenCLIP-only conditioner, found {})", quoted(k)),
        ));
    }
    if let Some(k) = find(&keys, |k| k.contains("diffusion_model.label_emb.")) {
        return Err(fail(
            files,
            format!(
                "not supported yet: a UNet with class/size conditioning but no SDXL text encoders (found {})",
                quoted(k)
            ),
        ));
    }
    if let Some(k) = find(&keys, |k| k.starts_with("cond_stage_model.model.")) {
        return Err(fail(files, format!("not supported yet: SD2.x (OpenCLIP text encoder, found {})", quoted(k))));
    }
    if let (Some(1024), Some(2)) = context_and_projection(store, &keys, LDM_UNET) {
        return Err(fail(files, "not supported yet: SD2.x (linear proj_in with 1024-wide context)"));
    }
    for (prefix, what) in [(LDM_TEXT, "CLIP text encoder"), (LDM_VAE, "VAE")] {
        if !keys.iter().any(|k| k.starts_with(prefix)) {
            return Err(fail(files, format!("checkpoint has a UNet but no {what} ({prefix}* keys)")));
        }
    }
    Ok(Family::Sd1)
}

fn classify_folder(files: &ModelFiles) -> Result<Family> {
    let unet = files.raw_store(Component::Unet);
    let keys = unet.keys();
    let add_embedding = find(&keys, |k| k.starts_with("add_embedding."));
    if files.has(Component::TextEncoder2) {
        if add_embedding.is_none() {
            return Err(fail(files, "SDXL folder (text_encoder_2/) whose UNet has no add_embedding.* weights"));
        }
        return Ok(Family::Sdxl);
    }
    if let Some(k) = add_embedding {
        return Err(fail(
            files,
            format!("the UNet has {} (SDXL-style added conditioning) but the folder has no text_encoder_2/", quoted(k)),
        ));
    }
    if let (Some(1024), Some(2)) = context_and_projection(unet, &keys, "") {
        return Err(fail(files, "not supported yet: SD2.x (linear proj_in with 1024-wide context)"));
    }
    Ok(Family::Sd1)
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

/// Per-level integers of a folder's UNet config field (an int for every level or a list).
fn cfg_levels(files: &ModelFiles, field: &str, levels: usize) -> Option<Vec<usize>> {
    let v = files.config_json(Component::Unet)?.get(field)?;
    if let Some(n) = v.as_u64() {
        return Some(vec![usize::try_from(n).ok()?; levels]);
    }
    let list: Vec<usize> =
        v.as_array()?.iter().map(|x| x.as_u64().and_then(|n| usize::try_from(n).ok())).collect::<Option<_>>()?;
    (list.len() == levels).then_some(list)
}

fn unet_config(files: &ModelFiles, family: Family, clip2: Option<&ClipConfig>) -> Result<UNetConfig> {
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
    let depth = |p: String| count(&vb, |k| format!("{p}.attentions.0.transformer_blocks.{k}.norm1.weight"));
    let down_transformer_depth: Vec<usize> = (0..levels).map(|b| depth(format!("down_blocks.{b}"))).collect();
    let up_transformer_depth: Vec<usize> = (0..levels).map(|b| depth(format!("up_blocks.{b}"))).collect();
    let mid_transformer_depth = depth("mid_block".to_string());
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
    let cross_attention_dim = dim(&attn, "transformer_blocks.0.attn2.to_k.weight", 1)?;
    let use_linear_projection = shape(&attn, "proj_in.weight")?.len() == 2;
    let time_embed_dim = dim(&vb, "time_embedding.linear_1.weight", 0)?;

    // diffusers' `attention_head_dim` holds the head count when `num_attention_heads` is unset
    // (a historical misnomer that every SD config relies on).
    let heads = cfg_levels(files, "num_attention_heads", levels)
        .or_else(|| cfg_levels(files, "attention_head_dim", levels))
        .unwrap_or_else(|| match family {
            Family::Sd1 => vec![8; levels],
            // SDXL fixes the head width at 64 (ComfyUI's `num_head_channels`).
            Family::Sdxl => block_out_channels.iter().map(|c| (c / 64).max(1)).collect(),
        });
    let groups = cfg_usize(files, Component::Unet, "norm_num_groups").unwrap_or(32);
    let addition = match family {
        Family::Sd1 => None,
        Family::Sdxl => {
            let in_dim = dim(&vb, "add_embedding.linear_1.weight", 1)?;
            let pooled = clip2.and_then(|c| c.projection_dim).unwrap_or(0);
            let time = cfg_usize(files, Component::Unet, "addition_time_embed_dim")
                .or_else(|| (in_dim > pooled && (in_dim - pooled).is_multiple_of(6)).then(|| (in_dim - pooled) / 6))
                .ok_or_else(|| {
                    fail(
                        files,
                        format!(
                            "add_embedding takes {in_dim} inputs, which is not the {pooled}-wide pooled text embedding \
                             plus six size embeddings"
                        ),
                    )
                })?;
            if 6 * time >= in_dim || time % 2 != 0 {
                return Err(fail(
                    files,
                    format!("addition_time_embed_dim {time} does not fit add_embedding's {in_dim} inputs"),
                ));
            }
            Some(AdditionConfig { time_embed_dim: time, in_dim })
        }
    };
    Ok(UNetConfig {
        in_channels,
        out_channels,
        block_out_channels,
        layers_per_block,
        down_cross_attention,
        up_cross_attention,
        mid_cross_attention,
        down_transformer_depth,
        up_transformer_depth,
        mid_transformer_depth,
        cross_attention_dim,
        heads,
        time_embed_dim,
        use_linear_projection,
        norm_num_groups: groups,
        addition,
    })
}

/// The configuration of a standalone VAE file ([`ModelFiles::open_vae`]) for a model of
/// `family` (whose scaling factor it takes: a VAE file does not state one).
pub fn vae_file_config(files: &ModelFiles, family: Family) -> Result<VaeConfig> {
    vae_config(files, family)
}

fn vae_config(files: &ModelFiles, family: Family) -> Result<VaeConfig> {
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
    let default_scale = match family {
        Family::Sd1 => 0.18215,
        Family::Sdxl => 0.13025,
    };
    let scaling_factor = cfg.and_then(|c| c.get("scaling_factor")?.as_f64()).map_or(default_scale, |v| v as f32);
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

fn clip_config(files: &ModelFiles, c: Component) -> Result<ClipConfig> {
    let top = match c {
        Component::TextEncoder2 => files.text_encoder_2(),
        _ => files.text_encoder(),
    };
    let vb = top.pp("text_model");
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
    let num_attention_heads = match cfg_usize(files, c, "num_attention_heads") {
        Some(h) => h,
        None if hidden_size >= 64 && hidden_size % 64 == 0 => hidden_size / 64,
        None => {
            return Err(fail(files, format!("CLIP width {hidden_size} is not a multiple of the head width 64")));
        }
    };
    // OpenCLIP ViT-bigG (SDXL's second encoder) uses exact GELU, OpenAI's CLIP the quick one.
    let default_act = if c == Component::TextEncoder2 { "gelu" } else { "quick_gelu" };
    let hidden_act = files
        .config_json(c)
        .and_then(|j| j.get("hidden_act")?.as_str().map(str::to_string))
        .unwrap_or_else(|| default_act.to_string());
    let projection_dim = match c {
        Component::TextEncoder2 => Some(dim(&top, "text_projection.weight", 0)?),
        _ => None,
    };
    Ok(ClipConfig {
        vocab_size,
        hidden_size,
        intermediate_size,
        num_hidden_layers,
        num_attention_heads,
        max_position_embeddings,
        hidden_act,
        projection_dim,
    })
}
