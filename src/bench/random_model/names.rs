//! The diffusers-named tensors of each component of a [`ModelConfig`], derived by the diffusers
//! architecture rules (the names and shapes the model code asks the weight reader for). The
//! parent module maps them to single-file keys.

use super::invalid;
use crate::weights::detect::{ClipConfig, UNetConfig, VaeConfig};
use crate::Result;

/// Diffusers-named tensors of one component, in model order.
pub(super) struct Names(pub(super) Vec<(String, Vec<usize>)>);

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

pub(super) fn unet_names(u: &UNetConfig) -> Result<Names> {
    let ch = &u.block_out_channels;
    let levels = ch.len();
    let l = u.layers_per_block;
    let flags = [u.down_cross_attention.len(), u.up_cross_attention.len()];
    let depths = [u.down_transformer_depth.len(), u.up_transformer_depth.len()];
    if levels == 0 || l == 0 || flags != [levels; 2] || depths != [levels; 2] {
        return Err(invalid(format!(
            "UNet config needs at least one level and one resnet, with attention flags and transformer depths per \
             level (levels {levels}, resnets {l}, down/up flags {flags:?}, down/up depths {depths:?})"
        )));
    }
    let (t, ctx) = (u.time_embed_dim, u.cross_attention_dim);
    let mut n = Names(Vec::new());
    n.conv3("conv_in", ch[0], u.in_channels);
    n.wb("time_embedding.linear_1", &[t, ch[0]]);
    n.wb("time_embedding.linear_2", &[t, t]);
    // SDXL: pooled text + six size embeddings projected into the time embedding (`label_emb`).
    if let Some(a) = &u.addition {
        n.wb("add_embedding.linear_1", &[t, a.in_dim]);
        n.wb("add_embedding.linear_2", &[t, t]);
    }
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

pub(super) fn vae_names(v: &VaeConfig) -> Result<Names> {
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

/// A transformers `CLIPTextModel` (with `text_projection`, bias-free, when the config has a
/// projection: SDXL's second encoder, `CLIPTextModelWithProjection`).
pub(super) fn clip_names(c: &ClipConfig) -> Names {
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
    if let Some(p) = c.projection_dim {
        n.add("text_projection.weight".into(), &[p, d]);
    }
    n
}
