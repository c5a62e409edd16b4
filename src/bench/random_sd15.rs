//! Random-weight Stable Diffusion 1.x checkpoints written to disk: the Rust counterpart of
//! `../shared/tools/make_random_sd15.py`, for measuring `lorafuse generate` on a real 2.1 GB
//! single-file checkpoint on machines without torch.
//!
//! The tensor list is derived from a [`ModelConfig`] by the diffusers architecture rules (the
//! names the model code reads) and mapped to the original (LDM) single-file keys through
//! [`diffusers_to_ldm`], the same mapping the loader uses, so a written file holds exactly the
//! keys and shapes a loader of real SD1.x files meets. [`sd15_model_config`] is SD1.5 itself;
//! the detected config of any SD1.x file (e.g. the tiny test fixture) reproduces that file's key
//! set.
//!
//! Values are seeded per tensor from a hash of its key, so they do not depend on write order:
//! weights uniform in ±1/√fan_in, norm scales 1 ± 0.02, biases ±0.02 (the scheme of the
//! `VarBuilder` synthetic mode), which keeps activations finite through UNet and VAE.
//! Files are streamed tensor by tensor; memory stays at one chunk whatever the model size.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use crate::weights::detect::{ClipConfig, Family, ModelConfig, UNetConfig, VaeConfig};
use crate::weights::names::{diffusers_to_ldm, Component, LdmLayout};
use crate::weights::StDType;
use crate::{Error, Result};

const OP: &str = "random_sd15";

/// Elements generated and converted per write.
const CHUNK: usize = 1 << 20;

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

/// Diffusers-named tensors of one component, in model order.
struct Names(Vec<(String, Vec<usize>)>);

impl Names {
    fn add(&mut self, name: String, shape: &[usize]) {
        self.0.push((name, shape.to_vec()));
    }
    /// `p.weight` of `shape` and `p.bias` of `[shape[0]]`.
    fn wb(&mut self, p: &str, shape: &[usize]) {
        self.add(format!("{p}.weight"), shape);
        self.add(format!("{p}.bias"), &shape[..1]);
    }
    fn norm(&mut self, p: &str, c: usize) {
        self.wb(p, &[c]);
    }
    fn conv3(&mut self, p: &str, out: usize, inp: usize) {
        self.wb(p, &[out, inp, 3, 3]);
    }
    /// A resnet `inp → out`; `temb` adds the UNet's timestep projection.
    fn resnet(&mut self, p: &str, inp: usize, out: usize, temb: Option<usize>) {
        self.norm(&format!("{p}.norm1"), inp);
        self.conv3(&format!("{p}.conv1"), out, inp);
        if let Some(t) = temb {
            self.wb(&format!("{p}.time_emb_proj"), &[out, t]);
        }
        self.norm(&format!("{p}.norm2"), out);
        self.conv3(&format!("{p}.conv2"), out, out);
        if inp != out {
            self.wb(&format!("{p}.conv_shortcut"), &[out, inp, 1, 1]);
        }
    }
    /// A UNet `Transformer2DModel` of width `c` with `ctx`-wide cross-attention.
    fn transformer(&mut self, p: &str, c: usize, ctx: usize, depth: usize, u: &UNetConfig) {
        let proj: &[usize] = if u.use_linear_projection { &[c, c] } else { &[c, c, 1, 1] };
        self.norm(&format!("{p}.norm"), c);
        self.wb(&format!("{p}.proj_in"), proj);
        for k in 0..depth {
            let b = format!("{p}.transformer_blocks.{k}");
            for (attn, kv) in [("attn1", c), ("attn2", ctx)] {
                self.add(format!("{b}.{attn}.to_q.weight"), &[c, c]);
                self.add(format!("{b}.{attn}.to_k.weight"), &[c, kv]);
                self.add(format!("{b}.{attn}.to_v.weight"), &[c, kv]);
                self.wb(&format!("{b}.{attn}.to_out.0"), &[c, c]);
            }
            for n in 1..=3 {
                self.norm(&format!("{b}.norm{n}"), c);
            }
            // GEGLU: one projection to twice the 4c inner width (value and gate).
            self.wb(&format!("{b}.ff.net.0.proj"), &[8 * c, c]);
            self.wb(&format!("{b}.ff.net.2"), &[c, 4 * c]);
        }
        self.wb(&format!("{p}.proj_out"), proj);
    }
}

fn invalid(msg: impl Into<String>) -> Error {
    Error::invalid(OP, msg)
}

fn unet_names(u: &UNetConfig) -> Result<Names> {
    let ch = &u.block_out_channels;
    let levels = ch.len();
    let l = u.layers_per_block;
    if levels == 0 || l == 0 || u.down_cross_attention.len() != levels || u.up_cross_attention.len() != levels {
        return Err(invalid(format!(
            "UNet config needs at least one level and one resnet, with attention flags per level (levels {levels}, \
             resnets {l}, down flags {}, up flags {})",
            u.down_cross_attention.len(),
            u.up_cross_attention.len()
        )));
    }
    let (t, ctx) = (u.time_embed_dim, u.cross_attention_dim);
    let mut n = Names(Vec::new());
    n.conv3("conv_in", ch[0], u.in_channels);
    n.wb("time_embedding.linear_1", &[t, ch[0]]);
    n.wb("time_embedding.linear_2", &[t, t]);
    // Channels of every down-path output, in order: the up path takes them back as skips.
    let mut skips = vec![ch[0]];
    let mut cur = ch[0];
    for (b, &c) in ch.iter().enumerate() {
        for j in 0..l {
            n.resnet(&format!("down_blocks.{b}.resnets.{j}"), cur, c, Some(t));
            cur = c;
            if u.down_cross_attention[b] {
                n.transformer(&format!("down_blocks.{b}.attentions.{j}"), c, ctx, u.down_transformer_depth[b], u);
            }
            skips.push(c);
        }
        if b + 1 < levels {
            n.conv3(&format!("down_blocks.{b}.downsamplers.0.conv"), c, c);
            skips.push(c);
        }
    }
    n.resnet("mid_block.resnets.0", cur, cur, Some(t));
    if u.mid_cross_attention {
        n.transformer("mid_block.attentions.0", cur, ctx, u.mid_transformer_depth, u);
    }
    n.resnet("mid_block.resnets.1", cur, cur, Some(t));
    for (b, &c) in ch.iter().rev().enumerate() {
        for j in 0..=l {
            let skip = skips.pop().ok_or_else(|| invalid("UNet skip connections do not balance"))?;
            n.resnet(&format!("up_blocks.{b}.resnets.{j}"), cur + skip, c, Some(t));
            cur = c;
            if u.up_cross_attention[b] {
                n.transformer(&format!("up_blocks.{b}.attentions.{j}"), c, ctx, u.up_transformer_depth[b], u);
            }
        }
        if b + 1 < levels {
            n.conv3(&format!("up_blocks.{b}.upsamplers.0.conv"), c, c);
        }
    }
    n.norm("conv_norm_out", ch[0]);
    n.conv3("conv_out", u.out_channels, ch[0]);
    Ok(n)
}

fn vae_names(v: &VaeConfig) -> Result<Names> {
    let ch = &v.block_out_channels;
    let (levels, l, lat) = (ch.len(), v.layers_per_block, v.latent_channels);
    if levels == 0 || l == 0 {
        return Err(invalid(format!("VAE config needs at least one level and one resnet ({levels}, {l})")));
    }
    let top = ch[levels - 1];
    let mut n = Names(Vec::new());
    let mid = |n: &mut Names, side: &str| {
        n.resnet(&format!("{side}.mid_block.resnets.0"), top, top, None);
        if v.mid_attention {
            let a = format!("{side}.mid_block.attentions.0");
            n.norm(&format!("{a}.group_norm"), top);
            for p in ["to_q", "to_k", "to_v", "to_out.0"] {
                n.wb(&format!("{a}.{p}"), &[top, top]);
            }
        }
        n.resnet(&format!("{side}.mid_block.resnets.1"), top, top, None);
    };
    n.conv3("encoder.conv_in", ch[0], v.in_channels);
    let mut cur = ch[0];
    for (b, &c) in ch.iter().enumerate() {
        for j in 0..l {
            n.resnet(&format!("encoder.down_blocks.{b}.resnets.{j}"), cur, c, None);
            cur = c;
        }
        if b + 1 < levels {
            n.conv3(&format!("encoder.down_blocks.{b}.downsamplers.0.conv"), c, c);
        }
    }
    mid(&mut n, "encoder");
    n.norm("encoder.conv_norm_out", top);
    n.conv3("encoder.conv_out", 2 * lat, top);
    n.wb("quant_conv", &[2 * lat, 2 * lat, 1, 1]);
    n.wb("post_quant_conv", &[lat, lat, 1, 1]);
    n.conv3("decoder.conv_in", top, lat);
    mid(&mut n, "decoder");
    cur = top;
    for (b, &c) in ch.iter().rev().enumerate() {
        for j in 0..=l {
            n.resnet(&format!("decoder.up_blocks.{b}.resnets.{j}"), cur, c, None);
            cur = c;
        }
        if b + 1 < levels {
            n.conv3(&format!("decoder.up_blocks.{b}.upsamplers.0.conv"), c, c);
        }
    }
    n.norm("decoder.conv_norm_out", ch[0]);
    n.conv3("decoder.conv_out", v.out_channels, ch[0]);
    Ok(n)
}

fn clip_names(c: &ClipConfig) -> Names {
    let (d, i) = (c.hidden_size, c.intermediate_size);
    let mut n = Names(Vec::new());
    n.add("text_model.embeddings.token_embedding.weight".into(), &[c.vocab_size, d]);
    n.add("text_model.embeddings.position_embedding.weight".into(), &[c.max_position_embeddings, d]);
    for k in 0..c.num_hidden_layers {
        let p = format!("text_model.encoder.layers.{k}");
        for proj in ["q_proj", "k_proj", "v_proj", "out_proj"] {
            n.wb(&format!("{p}.self_attn.{proj}"), &[d, d]);
        }
        n.norm(&format!("{p}.layer_norm1"), d);
        n.wb(&format!("{p}.mlp.fc1"), &[i, d]);
        n.wb(&format!("{p}.mlp.fc2"), &[d, i]);
        n.norm(&format!("{p}.layer_norm2"), d);
    }
    n.norm("text_model.final_layer_norm", d);
    n
}

/// The single-file layout facts a checkpoint of `config` has.
pub fn ldm_layout(config: &ModelConfig) -> LdmLayout {
    LdmLayout {
        unet_layers_per_block: config.unet.layers_per_block,
        unet_up_attention: config.unet.up_cross_attention.clone(),
        vae_levels: config.vae.block_out_channels.len(),
        text_legacy: false,
        sdxl_text: false,
    }
}

/// Every tensor of a single-file (LDM layout) checkpoint of `config`, sorted by key: the UNet
/// under `model.diffusion_model.`, the VAE under `first_stage_model.` (mid attention as 1×1
/// convs, as LDM stores it), CLIP under `cond_stage_model.transformer.text_model.`.
pub fn checkpoint_tensors(config: &ModelConfig) -> Result<Vec<TensorSpec>> {
    let lay = ldm_layout(config);
    let parts = [
        (Component::Unet, unet_names(&config.unet)?),
        (Component::Vae, vae_names(&config.vae)?),
        (Component::TextEncoder, clip_names(&config.clip)),
    ];
    let mut out = BTreeMap::new();
    for (comp, names) in parts {
        for (name, mut shape) in names.0 {
            let key = diffusers_to_ldm(comp, &name, &lay)
                .ok_or_else(|| invalid(format!("{} tensor '{name}' has no single-file key", comp.name())))?;
            if comp == Component::Vae && name.contains(".mid_block.attentions.") && shape.len() == 2 {
                shape.extend([1, 1]);
            }
            if out.insert(key.clone(), shape).is_some() {
                return Err(invalid(format!("two tensors map to the single-file key '{key}'")));
            }
        }
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

/// How one tensor's values are drawn.
#[derive(Clone, Copy, Debug)]
enum Fill {
    /// `offset + U(-scale, scale)`.
    Uniform { offset: f32, scale: f32 },
    /// `N(0, 1) · std`.
    Normal { std: f32 },
}

/// The checkpoint scheme (see the module docs).
fn checkpoint_fill(spec: &TensorSpec) -> Fill {
    if spec.shape.len() >= 2 {
        let fan_in: usize = spec.shape[1..].iter().product::<usize>().max(1);
        return Fill::Uniform { offset: 0.0, scale: 1.0 / (fan_in as f32).sqrt() };
    }
    // Every 1-D weight of SD1.x is a norm scale.
    let offset = if spec.key.ends_with(".weight") { 1.0 } else { 0.0 };
    Fill::Uniform { offset, scale: 0.02 }
}

/// splitmix64: a small, fast generator whose stream depends only on its seed.
struct Rng(u64);

impl Rng {
    fn for_tensor(seed: u64, key: &str) -> Rng {
        let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1), never 0 (Box–Muller takes its log).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn fill(&mut self, how: Fill, out: &mut [f32]) {
        match how {
            Fill::Uniform { offset, scale } => {
                for x in out.iter_mut() {
                    let u = (self.next() >> 40) as f32 / (1u32 << 23) as f32 - 1.0;
                    *x = offset + u * scale;
                }
            }
            Fill::Normal { std } => {
                for pair in out.chunks_mut(2) {
                    let (r, a) = ((-2.0 * self.unit().ln()).sqrt(), std::f64::consts::TAU * self.unit());
                    pair[0] = (r * a.cos()) as f32 * std;
                    if let Some(y) = pair.get_mut(1) {
                        *y = (r * a.sin()) as f32 * std;
                    }
                }
            }
        }
    }
}

fn encode(dtype: StDType, src: &[f32], out: &mut Vec<u8>) {
    out.clear();
    match dtype {
        StDType::F16 => {
            let mut h = vec![f16::ZERO; src.len()];
            h.convert_from_f32_slice(src);
            h.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        StDType::BF16 => {
            let mut h = vec![bf16::ZERO; src.len()];
            h.convert_from_f32_slice(src);
            h.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        _ => src.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Streams a safetensors file: header, then each tensor generated chunk by chunk.
/// `progress(bytes_written, total_bytes)` is called after every chunk.
fn write_file(
    path: &Path,
    specs: &[(TensorSpec, Fill)],
    dtype: StDType,
    seed: u64,
    metadata: &BTreeMap<String, String>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<WriteSummary> {
    if !matches!(dtype, StDType::F16 | StDType::BF16 | StDType::F32) {
        return Err(Error::dtype(OP, format!("can write F16, BF16 or F32 weights, not {}", dtype.name())));
    }
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(|e| invalid(e.to_string()))?);
    }
    let mut offset = 0usize;
    for (s, _) in specs {
        let end = offset + s.numel() * dtype.size();
        header.insert(
            s.key.clone(),
            serde_json::json!({ "dtype": dtype.name(), "shape": s.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut text = serde_json::to_string(&header).map_err(|e| invalid(e.to_string()))?;
    // Readers that map the file may want the data 8-byte aligned (the reference writer pads so).
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let total = 8 + text.len() as u64 + offset as u64;
    let with_path = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut w = BufWriter::with_capacity(8 << 20, File::create(path).map_err(with_path)?);
    w.write_all(&(text.len() as u64).to_le_bytes()).map_err(with_path)?;
    w.write_all(text.as_bytes()).map_err(with_path)?;
    let mut done = 8 + text.len() as u64;
    let (mut vals, mut bytes) = (vec![0f32; CHUNK], Vec::with_capacity(CHUNK * 4));
    for (s, how) in specs {
        let mut rng = Rng::for_tensor(seed, &s.key);
        let mut left = s.numel();
        while left > 0 {
            let n = left.min(CHUNK);
            rng.fill(*how, &mut vals[..n]);
            encode(dtype, &vals[..n], &mut bytes);
            w.write_all(&bytes).map_err(with_path)?;
            left -= n;
            done += bytes.len() as u64;
            progress(done, total);
        }
    }
    w.flush().map_err(with_path)?;
    let parameters = specs.iter().map(|(s, _)| s.numel() as u64).sum();
    Ok(WriteSummary { tensors: specs.len(), parameters, bytes: total })
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

/// The tensors of a kohya LoRA of `rank` over [`lora_targets`]: `lora_unet_<path with _>` +
/// `.lora_down.weight [R, in(,1,1)]`, `.lora_up.weight [out, R(,1,1)]`, `.alpha []`.
pub fn kohya_lora_tensors(config: &ModelConfig, rank: usize) -> Result<Vec<TensorSpec>> {
    if rank == 0 {
        return Err(invalid("LoRA rank must be positive"));
    }
    let mut out = Vec::new();
    for (module, w) in lora_targets(config)? {
        let m = format!("lora_unet_{}", module.replace('.', "_"));
        let kernel = &w[2..];
        out.push(TensorSpec { key: format!("{m}.alpha"), shape: vec![] });
        out.push(TensorSpec { key: format!("{m}.lora_down.weight"), shape: [&[rank, w[1]], kernel].concat() });
        let ones = vec![1; kernel.len()];
        out.push(TensorSpec { key: format!("{m}.lora_up.weight"), shape: [&[w[0], rank], &ones[..]].concat() });
    }
    Ok(out)
}

/// [`write_kohya_lora`] for any config; returns the number of adapted modules.
pub fn write_kohya_lora_for(
    path: &Path,
    config: &ModelConfig,
    rank: usize,
    seed: u64,
    dtype: StDType,
) -> Result<usize> {
    let specs: Vec<_> = kohya_lora_tensors(config, rank)?
        .into_iter()
        .map(|s| {
            let f = if s.key.ends_with(".alpha") {
                Fill::Uniform { offset: rank as f32, scale: 0.0 }
            } else if s.key.ends_with(".lora_down.weight") {
                Fill::Normal { std: 1.0 / (s.shape[1] as f32).sqrt() }
            } else {
                Fill::Normal { std: 0.01 }
            };
            (s, f)
        })
        .collect();
    let metadata: BTreeMap<String, String> = [
        ("ss_network_dim", rank.to_string()),
        ("ss_network_alpha", rank.to_string()),
        ("ss_base_model_version", "sd_v1".to_string()),
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
