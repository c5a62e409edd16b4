//! Checkpoint key names: the one place that knows how diffusers module paths map to the original
//! (LDM / CompVis) single-file keys of an SD1.x checkpoint, both ways, and which keys a
//! checkpoint may carry that no model reads.
//!
//! Spec: `/work/shared/docs/formats.md` §1.1–1.4 (diffusers `convert_ldm_unet_checkpoint` /
//! `convert_ldm_vae_checkpoint` index formulas). Model code names weights the diffusers way; a
//! single-file checkpoint is read through [`diffusers_to_ldm`]. The index arithmetic depends on
//! facts of the file (resnets per level, which up levels have attention, number of VAE levels),
//! gathered by [`LdmLayout::from_keys`] rather than assumed from SD1.5.

use std::collections::BTreeSet;

/// The models a Stable Diffusion checkpoint holds (SDXL adds the second text encoder).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Component {
    Unet,
    Vae,
    TextEncoder,
    /// SDXL's OpenCLIP ViT-bigG text encoder (`CLIPTextModelWithProjection` in diffusers).
    TextEncoder2,
}

impl Component {
    pub const ALL: [Component; 4] = [Component::Unet, Component::Vae, Component::TextEncoder, Component::TextEncoder2];

    /// The diffusers folder name.
    pub fn name(self) -> &'static str {
        match self {
            Component::Unet => "unet",
            Component::Vae => "vae",
            Component::TextEncoder => "text_encoder",
            Component::TextEncoder2 => "text_encoder_2",
        }
    }
}

/// Single-file prefixes of the SD1.x components.
pub const LDM_UNET: &str = "model.diffusion_model.";
pub const LDM_VAE: &str = "first_stage_model.";
pub const LDM_TEXT: &str = "cond_stage_model.transformer.";
/// SDXL single files: the CLIP ViT-L encoder with transformers' names, and the OpenCLIP
/// ViT-bigG encoder with OpenCLIP's own (fused `in_proj`, `[width, proj]` `text_projection`).
pub const SDXL_TEXT1: &str = "conditioner.embedders.0.transformer.";
pub const SDXL_TEXT2: &str = "conditioner.embedders.1.model.";

/// Which part of a stored tensor holds a diffusers weight.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Part {
    Whole,
    /// Third `i` (0 = q, 1 = k, 2 = v) of the first dimension: OpenCLIP's fused `in_proj`.
    Third(usize),
    /// The 2-D transpose: OpenCLIP stores `text_projection` as `[width, proj]`, transformers
    /// as a linear weight `[proj, width]`.
    Transposed,
}

/// Where a diffusers weight lives in a file.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Source {
    pub key: String,
    pub part: Part,
}

impl Source {
    fn whole(key: String) -> Source {
        Source { key, part: Part::Whole }
    }

    /// The shape of the part, from the stored shape; `None` if the part does not fit it.
    pub fn shape(&self, stored: &[usize]) -> Option<Vec<usize>> {
        match self.part {
            Part::Whole => Some(stored.to_vec()),
            Part::Third(_) => {
                let (&rows, rest) = stored.split_first()?;
                (rows % 3 == 0 && rows > 0).then(|| [&[rows / 3][..], rest].concat())
            }
            Part::Transposed => match stored {
                [a, b] => Some(vec![*b, *a]),
                _ => None,
            },
        }
    }

    /// The part's values from the stored tensor's (row-major, `stored` shape) values.
    pub fn extract<T: Copy>(&self, stored: &[usize], data: Vec<T>) -> Vec<T> {
        match self.part {
            Part::Whole => data,
            Part::Third(i) => {
                let n = data.len() / 3;
                data[i * n..(i + 1) * n].to_vec()
            }
            Part::Transposed => {
                let (r, c) = (stored[0], stored[1]);
                let mut out = Vec::with_capacity(data.len());
                for j in 0..c {
                    out.extend((0..r).map(|i| data[i * c + j]));
                }
                out
            }
        }
    }
}

/// Facts of a single-file checkpoint that the index formulas need.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LdmLayout {
    /// UNet resnets per down level (SD: 2). Input/output block indices step by this + 1.
    pub unet_layers_per_block: usize,
    /// Per up level: whether its output blocks carry attention. The upsampler then sits in slot 2
    /// of the level's last output block, else in slot 1 (SD1: up level 0 has none).
    pub unet_up_attention: Vec<bool>,
    /// Number of VAE levels: the LDM decoder numbers them bottom-up, diffusers top-down.
    pub vae_levels: usize,
    /// The text-encoder keys lack the `text_model.` level (early SD1 files).
    pub text_legacy: bool,
    /// The text encoders sit under SDXL's `conditioner.embedders.*` rather than SD1's
    /// `cond_stage_model.`.
    pub sdxl_text: bool,
}

/// Block and level indices above this are not from any real model; [`LdmLayout::from_keys`]
/// ignores them so a hostile key cannot make it size a table by them.
const MAX_INDEX: usize = 4096;

/// Splits `"12.rest"` into `(12, "rest")`.
fn split_index(s: &str) -> Option<(usize, &str)> {
    let (n, rest) = s.split_once('.')?;
    if n.is_empty() || !n.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    Some((n.parse().ok()?, rest))
}

fn bounded_index(s: &str) -> Option<(usize, &str)> {
    split_index(s).filter(|&(i, _)| i <= MAX_INDEX)
}

impl LdmLayout {
    /// The layout a single file of this UNet would have (to name a diffusers folder's weights the
    /// LDM way, as kohya LoRAs for SDXL do).
    pub fn for_unet(layers_per_block: usize, up_attention: &[bool], vae_levels: usize, sdxl_text: bool) -> LdmLayout {
        LdmLayout {
            unet_layers_per_block: layers_per_block,
            unet_up_attention: up_attention.to_vec(),
            vae_levels,
            text_legacy: false,
            sdxl_text,
        }
    }

    /// Reads the layout from the keys of a single-file checkpoint. Missing components give the
    /// SD1 defaults, so a layout always exists (detection reports what is missing).
    pub fn from_keys<'a>(keys: impl IntoIterator<Item = &'a str>) -> LdmLayout {
        let mut first_op: Option<usize> = None;
        let mut max_input = 0usize;
        let mut attn_outputs = BTreeSet::new();
        let mut max_output = 0usize;
        let mut vae_levels = 0usize;
        let (mut text_new, mut text_any, mut sdxl_text) = (false, false, false);
        for key in keys {
            sdxl_text |= key.starts_with(SDXL_TEXT1) || key.starts_with(SDXL_TEXT2);
            if let Some(r) = key.strip_prefix(LDM_UNET) {
                if let Some((i, rest)) = r.strip_prefix("input_blocks.").and_then(bounded_index) {
                    max_input = max_input.max(i);
                    if rest.starts_with("0.op.") {
                        first_op = Some(first_op.map_or(i, |f| f.min(i)));
                    }
                } else if let Some((i, rest)) = r.strip_prefix("output_blocks.").and_then(bounded_index) {
                    max_output = max_output.max(i);
                    if rest.starts_with("1.") && !rest.starts_with("1.conv.") {
                        attn_outputs.insert(i);
                    }
                }
            } else if let Some(r) = key.strip_prefix(LDM_VAE) {
                let level = r.strip_prefix("decoder.up.").or_else(|| r.strip_prefix("encoder.down."));
                if let Some((i, _)) = level.and_then(bounded_index) {
                    vae_levels = vae_levels.max(i.saturating_add(1));
                }
            } else if let Some(r) = key.strip_prefix(LDM_TEXT) {
                text_any = true;
                text_new |= r.starts_with("text_model.");
            }
        }
        // The first downsampler sits right after level 0's resnets; without one (a single
        // level) every input block after conv_in is a resnet.
        let layers = match first_op {
            Some(op) if op >= 2 => op - 1,
            Some(_) => 2,
            None if max_input > 0 => max_input,
            None => 2,
        };
        let per = layers + 1;
        let up_levels = if max_output > 0 || !attn_outputs.is_empty() { max_output / per + 1 } else { 0 };
        let unet_up_attention = (0..up_levels).map(|b| attn_outputs.iter().any(|&i| i / per == b)).collect();
        LdmLayout {
            unet_layers_per_block: layers,
            unet_up_attention,
            vae_levels,
            text_legacy: text_any && !text_new,
            sdxl_text,
        }
    }
}

/// Swaps a leading name part using `table` (pairs `(diffusers, ldm)`), in either direction.
fn swap(s: &str, table: &[(&str, &str)], to_ldm: bool) -> Option<String> {
    table.iter().find_map(|&(d, l)| {
        let (from, to) = if to_ldm { (d, l) } else { (l, d) };
        s.strip_prefix(from).map(|rest| format!("{to}{rest}"))
    })
}

const UNET_FIXED: &[(&str, &str)] = &[
    ("time_embedding.linear_1.", "time_embed.0."),
    ("time_embedding.linear_2.", "time_embed.2."),
    ("conv_in.", "input_blocks.0.0."),
    ("conv_norm_out.", "out.0."),
    ("conv_out.", "out.2."),
    ("add_embedding.linear_1.", "label_emb.0.0."),
    ("add_embedding.linear_2.", "label_emb.0.2."),
];

const UNET_RESNET: &[(&str, &str)] = &[
    ("norm1.", "in_layers.0."),
    ("conv1.", "in_layers.2."),
    ("time_emb_proj.", "emb_layers.1."),
    ("norm2.", "out_layers.0."),
    ("conv2.", "out_layers.3."),
    ("conv_shortcut.", "skip_connection."),
];

const VAE_FIXED: &[(&str, &str)] = &[
    ("encoder.conv_in.", "encoder.conv_in."),
    ("encoder.conv_out.", "encoder.conv_out."),
    ("encoder.conv_norm_out.", "encoder.norm_out."),
    ("decoder.conv_in.", "decoder.conv_in."),
    ("decoder.conv_out.", "decoder.conv_out."),
    ("decoder.conv_norm_out.", "decoder.norm_out."),
    ("quant_conv.", "quant_conv."),
    ("post_quant_conv.", "post_quant_conv."),
];

const VAE_RESNET: &[(&str, &str)] = &[
    ("norm1.", "norm1."),
    ("conv1.", "conv1."),
    ("norm2.", "norm2."),
    ("conv2.", "conv2."),
    ("conv_shortcut.", "nin_shortcut."),
];

/// The LDM VAE attention is made of 1×1 convs `[C, C, 1, 1]`; diffusers has linears `[C, C]`
/// (the variable builder reshapes).
const VAE_ATTN: &[(&str, &str)] =
    &[("group_norm.", "norm."), ("to_q.", "q."), ("to_k.", "k."), ("to_v.", "v."), ("to_out.0.", "proj_out.")];

/// Pre-0.14 diffusers VAE attention names for the same tensors, as `(old, current)`.
const VAE_ATTN_OLD: &[(&str, &str)] =
    &[("query.", "to_q."), ("key.", "to_k."), ("value.", "to_v."), ("proj_attn.", "to_out.0.")];

fn unet_to_ldm(p: &str, lay: &LdmLayout) -> Option<String> {
    if let Some(k) = swap(p, UNET_FIXED, true) {
        return Some(k);
    }
    let l = lay.unet_layers_per_block;
    let per = l + 1;
    let block = |b: usize, j: usize| per.checked_mul(b)?.checked_add(j);
    if let Some((b, r)) = p.strip_prefix("down_blocks.").and_then(split_index) {
        if let Some((j, r)) = r.strip_prefix("resnets.").and_then(split_index) {
            if j >= l {
                return None;
            }
            return Some(format!("input_blocks.{}.0.{}", block(b, j + 1)?, swap(r, UNET_RESNET, true)?));
        }
        if let Some((j, r)) = r.strip_prefix("attentions.").and_then(split_index) {
            if j >= l {
                return None;
            }
            return Some(format!("input_blocks.{}.1.{r}", block(b, j + 1)?));
        }
        let r = r.strip_prefix("downsamplers.0.conv.")?;
        return Some(format!("input_blocks.{}.0.op.{r}", block(b.checked_add(1)?, 0)?));
    }
    if let Some(r) = p.strip_prefix("mid_block.") {
        if let Some((j, r)) = r.strip_prefix("resnets.").and_then(split_index) {
            let slot = [0, 2].get(j)?;
            return Some(format!("middle_block.{slot}.{}", swap(r, UNET_RESNET, true)?));
        }
        return r.strip_prefix("attentions.0.").map(|r| format!("middle_block.1.{r}"));
    }
    let (b, r) = p.strip_prefix("up_blocks.").and_then(split_index)?;
    if let Some((j, r)) = r.strip_prefix("resnets.").and_then(split_index) {
        if j > l {
            return None;
        }
        return Some(format!("output_blocks.{}.0.{}", block(b, j)?, swap(r, UNET_RESNET, true)?));
    }
    if let Some((j, r)) = r.strip_prefix("attentions.").and_then(split_index) {
        if j > l {
            return None;
        }
        return Some(format!("output_blocks.{}.1.{r}", block(b, j)?));
    }
    let r = r.strip_prefix("upsamplers.0.conv.")?;
    let slot = if lay.unet_up_attention.get(b).copied().unwrap_or(false) { 2 } else { 1 };
    Some(format!("output_blocks.{}.{slot}.conv.{r}", block(b, l)?))
}

fn unet_to_diffusers(k: &str, lay: &LdmLayout) -> Option<String> {
    if let Some(p) = swap(k, UNET_FIXED, false) {
        return Some(p);
    }
    let l = lay.unet_layers_per_block;
    let per = l + 1;
    if let Some((i, r)) = k.strip_prefix("input_blocks.").and_then(split_index) {
        let (b, j) = (i.checked_sub(1)? / per, (i.checked_sub(1)?) % per);
        let (slot, r) = split_index(r)?;
        return match (j == l, slot) {
            (true, 0) => r.strip_prefix("op.").map(|r| format!("down_blocks.{b}.downsamplers.0.conv.{r}")),
            (false, 0) => Some(format!("down_blocks.{b}.resnets.{j}.{}", swap(r, UNET_RESNET, false)?)),
            (false, 1) => Some(format!("down_blocks.{b}.attentions.{j}.{r}")),
            _ => None,
        };
    }
    if let Some((slot, r)) = k.strip_prefix("middle_block.").and_then(split_index) {
        return match slot {
            0 | 2 => Some(format!("mid_block.resnets.{}.{}", slot / 2, swap(r, UNET_RESNET, false)?)),
            1 => Some(format!("mid_block.attentions.0.{r}")),
            _ => None,
        };
    }
    let (i, r) = k.strip_prefix("output_blocks.").and_then(split_index)?;
    let (b, j) = (i / per, i % per);
    let (slot, r) = split_index(r)?;
    match (slot, r.strip_prefix("conv.")) {
        (0, _) => Some(format!("up_blocks.{b}.resnets.{j}.{}", swap(r, UNET_RESNET, false)?)),
        (1 | 2, Some(r)) if j == l => Some(format!("up_blocks.{b}.upsamplers.0.conv.{r}")),
        (1, None) => Some(format!("up_blocks.{b}.attentions.{j}.{r}")),
        _ => None,
    }
}

fn vae_to_ldm(p: &str, lay: &LdmLayout) -> Option<String> {
    if let Some(k) = swap(p, VAE_FIXED, true) {
        return Some(k);
    }
    let (side, r) = p.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return None;
    }
    if let Some(r) = r.strip_prefix("mid_block.") {
        if let Some((j, r)) = r.strip_prefix("resnets.").and_then(split_index) {
            let n = [1, 2].get(j)?;
            return Some(format!("{side}.mid.block_{n}.{}", swap(r, VAE_RESNET, true)?));
        }
        let r = r.strip_prefix("attentions.0.")?;
        let modern = swap(r, VAE_ATTN_OLD, true).unwrap_or_else(|| r.to_string());
        return Some(format!("{side}.mid.attn_1.{}", swap(&modern, VAE_ATTN, true)?));
    }
    let (level, r) = match side {
        "encoder" => r.strip_prefix("down_blocks.").and_then(split_index)?,
        _ => {
            let (k, r) = r.strip_prefix("up_blocks.").and_then(split_index)?;
            (lay.vae_levels.checked_sub(1)?.checked_sub(k)?, r)
        }
    };
    let (ldm_level, sampler) = if side == "encoder" { ("down", "downsample") } else { ("up", "upsample") };
    if let Some((j, r)) = r.strip_prefix("resnets.").and_then(split_index) {
        return Some(format!("{side}.{ldm_level}.{level}.block.{j}.{}", swap(r, VAE_RESNET, true)?));
    }
    let r = r.strip_prefix(if side == "encoder" { "downsamplers.0.conv." } else { "upsamplers.0.conv." })?;
    Some(format!("{side}.{ldm_level}.{level}.{sampler}.conv.{r}"))
}

fn vae_to_diffusers(k: &str, lay: &LdmLayout) -> Option<String> {
    if let Some(p) = swap(k, VAE_FIXED, false) {
        return Some(p);
    }
    let (side, r) = k.split_once('.')?;
    if side != "encoder" && side != "decoder" {
        return None;
    }
    if let Some(r) = r.strip_prefix("mid.") {
        if let Some(r) = r.strip_prefix("attn_1.") {
            return Some(format!("{side}.mid_block.attentions.0.{}", swap(r, VAE_ATTN, false)?));
        }
        let (j, r) = match r.split_once('.')? {
            ("block_1", r) => (0, r),
            ("block_2", r) => (1, r),
            _ => return None,
        };
        return Some(format!("{side}.mid_block.resnets.{j}.{}", swap(r, VAE_RESNET, false)?));
    }
    let (ldm_level, blocks, sampler) = if side == "encoder" {
        ("down.", "down_blocks", "downsample.conv.")
    } else {
        ("up.", "up_blocks", "upsample.conv.")
    };
    let (level, r) = r.strip_prefix(ldm_level).and_then(split_index)?;
    let level = if side == "encoder" { level } else { lay.vae_levels.checked_sub(1)?.checked_sub(level)? };
    if let Some((j, r)) = r.strip_prefix("block.").and_then(split_index) {
        return Some(format!("{side}.{blocks}.{level}.resnets.{j}.{}", swap(r, VAE_RESNET, false)?));
    }
    let r = r.strip_prefix(sampler)?;
    Some(format!("{side}.{blocks}.{level}.{}samplers.0.conv.{r}", &ldm_level[..ldm_level.len() - 1]))
}

/// The single-file key holding the tensor that diffusers calls `name` in `component`, when it
/// is a whole stored tensor. `None` when the LDM layout has no such tensor (e.g. a misspelt or
/// non-SD name) or only a part of one (see [`diffusers_to_source`]).
pub fn diffusers_to_ldm(component: Component, name: &str, lay: &LdmLayout) -> Option<String> {
    diffusers_to_source(component, name, lay).filter(|s| s.part == Part::Whole).map(|s| s.key)
}

/// Where the tensor that diffusers calls `name` in `component` lives in a single file.
pub fn diffusers_to_source(component: Component, name: &str, lay: &LdmLayout) -> Option<Source> {
    match component {
        Component::Unet => unet_to_ldm(name, lay).map(|k| Source::whole(format!("{LDM_UNET}{k}"))),
        Component::Vae => vae_to_ldm(name, lay).map(|k| Source::whole(format!("{LDM_VAE}{k}"))),
        Component::TextEncoder => {
            let r = name.strip_prefix("text_model.")?;
            Some(Source::whole(if lay.sdxl_text {
                format!("{SDXL_TEXT1}text_model.{r}")
            } else if lay.text_legacy {
                format!("{LDM_TEXT}{r}")
            } else {
                format!("{LDM_TEXT}text_model.{r}")
            }))
        }
        Component::TextEncoder2 => openclip_source(name),
    }
}

/// transformers CLIP names → OpenCLIP's, per encoder layer.
const OPENCLIP_LAYER: &[(&str, &str)] = &[
    ("layer_norm1.", "ln_1."),
    ("layer_norm2.", "ln_2."),
    ("mlp.fc1.", "mlp.c_fc."),
    ("mlp.fc2.", "mlp.c_proj."),
    ("self_attn.out_proj.", "attn.out_proj."),
];

/// SDXL's second text encoder in a single file (OpenCLIP layout, under [`SDXL_TEXT2`]).
fn openclip_source(name: &str) -> Option<Source> {
    let whole = |k: &str| Some(Source::whole(format!("{SDXL_TEXT2}{k}")));
    if name == "text_projection.weight" {
        return Some(Source { key: format!("{SDXL_TEXT2}text_projection"), part: Part::Transposed });
    }
    let r = name.strip_prefix("text_model.")?;
    match r {
        "embeddings.token_embedding.weight" => return whole("token_embedding.weight"),
        "embeddings.position_embedding.weight" => return whole("positional_embedding"),
        _ => {}
    }
    if let Some(r) = r.strip_prefix("final_layer_norm.") {
        return whole(&format!("ln_final.{r}"));
    }
    let (i, r) = r.strip_prefix("encoder.layers.").and_then(split_index)?;
    let block = format!("transformer.resblocks.{i}.");
    for (q, third) in [("self_attn.q_proj.", 0), ("self_attn.k_proj.", 1), ("self_attn.v_proj.", 2)] {
        if let Some(t) = r.strip_prefix(q) {
            let t = match t {
                "weight" => "in_proj_weight",
                "bias" => "in_proj_bias",
                _ => return None,
            };
            return Some(Source { key: format!("{SDXL_TEXT2}{block}attn.{t}"), part: Part::Third(third) });
        }
    }
    swap(r, OPENCLIP_LAYER, true).and_then(|k| whole(&format!("{block}{k}")))
}

/// The component and diffusers name of a single-file key; `None` for keys outside the SD1
/// components (see [`skip_reason`] for the ones that are expected).
pub fn ldm_to_diffusers(key: &str, lay: &LdmLayout) -> Option<(Component, String)> {
    if let Some(k) = key.strip_prefix(LDM_UNET) {
        return unet_to_diffusers(k, lay).map(|p| (Component::Unet, p));
    }
    if let Some(k) = key.strip_prefix(LDM_VAE) {
        return vae_to_diffusers(k, lay).map(|p| (Component::Vae, p));
    }
    let r = key.strip_prefix(LDM_TEXT).or_else(|| key.strip_prefix(SDXL_TEXT1))?;
    let r = r.strip_prefix("text_model.").unwrap_or(r);
    let known = ["embeddings.", "encoder.", "final_layer_norm."].iter().any(|p| r.starts_with(p));
    known.then(|| (Component::TextEncoder, format!("text_model.{r}")))
}

/// Every component and diffusers name a single-file key holds: one for most keys, three for
/// OpenCLIP's fused `in_proj` (q, k, v).
pub fn ldm_to_diffusers_all(key: &str, lay: &LdmLayout) -> Vec<(Component, String)> {
    if let Some(r) = key.strip_prefix(SDXL_TEXT2) {
        return openclip_to_diffusers(r).into_iter().map(|n| (Component::TextEncoder2, n)).collect();
    }
    ldm_to_diffusers(key, lay).into_iter().collect()
}

/// OpenCLIP names (under [`SDXL_TEXT2`]) → transformers CLIP names.
fn openclip_to_diffusers(r: &str) -> Vec<String> {
    let one = |n: String| vec![n];
    match r {
        "token_embedding.weight" => return one("text_model.embeddings.token_embedding.weight".into()),
        "positional_embedding" => return one("text_model.embeddings.position_embedding.weight".into()),
        "text_projection" => return one("text_projection.weight".into()),
        _ => {}
    }
    if let Some(t) = r.strip_prefix("ln_final.") {
        return one(format!("text_model.final_layer_norm.{t}"));
    }
    let Some((i, t)) = r.strip_prefix("transformer.resblocks.").and_then(split_index) else { return Vec::new() };
    let layer = format!("text_model.encoder.layers.{i}.");
    let fused = match t {
        "attn.in_proj_weight" => Some("weight"),
        "attn.in_proj_bias" => Some("bias"),
        _ => None,
    };
    if let Some(suffix) = fused {
        return ["q_proj", "k_proj", "v_proj"].iter().map(|p| format!("{layer}self_attn.{p}.{suffix}")).collect();
    }
    swap(t, OPENCLIP_LAYER, false).map(|n| vec![format!("{layer}{n}")]).unwrap_or_default()
}

/// An older diffusers spelling of `name` to try when a folder lacks the current one.
pub fn legacy_diffusers_name(component: Component, name: &str) -> Option<String> {
    if component != Component::Vae {
        return None;
    }
    let (head, r) = name.split_once("mid_block.attentions.0.")?;
    swap(r, VAE_ATTN_OLD, false).map(|r| format!("{head}mid_block.attentions.0.{r}"))
}

/// Noise-schedule buffers some LDM checkpoints carry; the sampler computes its own.
const SCHEDULE_BUFFERS: &[&str] = &[
    "betas",
    "alphas_cumprod",
    "alphas_cumprod_prev",
    "sqrt_alphas_cumprod",
    "sqrt_one_minus_alphas_cumprod",
    "log_one_minus_alphas_cumprod",
    "sqrt_recip_alphas_cumprod",
    "sqrt_recipm1_alphas_cumprod",
    "posterior_variance",
    "posterior_log_variance_clipped",
    "posterior_mean_coef1",
    "posterior_mean_coef2",
    "logvar",
    "denoiser.sigmas",
];

/// Why a key that no model reads is expected in a checkpoint, or `None` if it is not expected
/// (then an unread key is worth reporting). Applies to single-file keys and diffusers names.
pub fn skip_reason(key: &str) -> Option<&'static str> {
    if key.starts_with("model_ema.") {
        return Some("EMA copy of the UNet: the non-EMA model.diffusion_model.* weights are used");
    }
    if key == "position_ids" || key.ends_with(".position_ids") {
        return Some("CLIP position_ids buffer (merges often corrupt it): positions are always 0..n");
    }
    if SCHEDULE_BUFFERS.contains(&key) {
        return Some("noise-schedule buffer: the scheduler computes its own");
    }
    if key.starts_with("embedding_manager") {
        return Some("textual-inversion training state");
    }
    if key == "v_pred" || key == "ztsnr" {
        return Some("marker key (v-prediction / zero terminal SNR), read by detection");
    }
    if key.ends_with("logit_scale") {
        return Some("CLIP contrastive logit scale, unused for conditioning");
    }
    None
}
