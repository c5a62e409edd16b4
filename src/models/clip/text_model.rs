//! The CLIP text transformer (transformers `CLIPTextModel`) on the GPU, with A1111's clip skip
//! and its "Original" emphasis.
//!
//! Module names mirror the checkpoint keys under `text_model.`: `embeddings.{token,position}_
//! embedding`, `encoder.layers.N.{layer_norm1, self_attn.{q,k,v,out}_proj, layer_norm2,
//! mlp.{fc1,fc2}}`, `final_layer_norm`. Pre-LayerNorm blocks, causal self-attention, LayerNorm
//! eps 1e-5 (CLIPTextConfig's default, which SD1.x never changes).
//!
//! Clip skip follows A1111's numbering: `clip_skip = k` takes transformers' `hidden_states[-k]`
//! (the output of layer L−k, 1-based L−k+1 layers run) and, for k > 1, applies the final LayerNorm
//! to it, as `sd_hijack_clip.encode_with_transformers` does. k = 1 is the ordinary last hidden
//! state. Layers after the chosen one are never run.

use crate::kernels::attention::attention;
use crate::kernels::binary::add;
use crate::kernels::embedding::embedding;
use crate::kernels::unary::{unary, UnaryOp};
use crate::models::clip::prompt::ParsedPrompt;
use crate::nn::{LayerNorm, Linear, Loader};
use crate::weights::detect::ClipConfig;
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

const OP: &str = "clip_text";
/// transformers `CLIPTextConfig.layer_norm_eps`.
const LN_EPS: f32 = 1e-5;

/// The MLP nonlinearity named by `hidden_act`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(1.702x)`: OpenAI CLIP, SD1.x.
    QuickGelu,
    /// Exact (erf) GELU, transformers' `"gelu"`.
    Gelu,
}

impl Activation {
    pub fn from_name(name: &str) -> Result<Activation> {
        match name {
            "quick_gelu" => Ok(Activation::QuickGelu),
            "gelu" => Ok(Activation::Gelu),
            other => {
                Err(Error::invalid(OP, format!("hidden_act {other:?} is not supported (quick_gelu and gelu are)")))
            }
        }
    }

    fn op(self) -> UnaryOp {
        match self {
            Activation::QuickGelu => UnaryOp::QuickGelu,
            Activation::Gelu => UnaryOp::Gelu,
        }
    }
}

/// `CLIPTextEmbeddings`: token gather plus learned absolute positions.
pub struct ClipTextEmbeddings {
    /// `[vocab, width]`; may exceed one storage binding (the gather kernel splits it).
    pub token_embedding: GpuTensor,
    /// `[max_positions, width]`.
    pub position_embedding: GpuTensor,
}

impl ClipTextEmbeddings {
    pub fn load(l: &Loader, cfg: &ClipConfig) -> Result<ClipTextEmbeddings> {
        let c = cfg.hidden_size;
        Ok(ClipTextEmbeddings {
            token_embedding: l.pp("token_embedding").tensor("weight", &[cfg.vocab_size, c])?,
            position_embedding: l.pp("position_embedding").tensor("weight", &[cfg.max_position_embeddings, c])?,
        })
    }

    /// `ids` (B·S, S = max positions) → `[B, S, width]`.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, ids: &[u32], seq: usize) -> Result<GpuTensor> {
        let c = self.token_embedding.shape[1];
        let tok = embedding(ctx, rec, &self.token_embedding, ids)?.reshape(&[ids.len() / seq, seq, c])?;
        // Positions 0..seq, broadcast over the batch.
        let pos = self.position_embedding.view(0, &[seq, c])?;
        add(ctx, rec, &tok, &pos)
    }
}

/// `CLIPAttention`: causal multi-head self-attention with biased projections.
pub struct ClipAttention {
    pub q_proj: Linear,
    pub k_proj: Linear,
    pub v_proj: Linear,
    pub out_proj: Linear,
    pub heads: usize,
}

impl ClipAttention {
    pub fn load(l: &Loader, cfg: &ClipConfig) -> Result<ClipAttention> {
        let c = cfg.hidden_size;
        Ok(ClipAttention {
            q_proj: Linear::load(&l.pp("q_proj"), c, c, true)?,
            k_proj: Linear::load(&l.pp("k_proj"), c, c, true)?,
            v_proj: Linear::load(&l.pp("v_proj"), c, c, true)?,
            out_proj: Linear::load(&l.pp("out_proj"), c, c, true)?,
            heads: cfg.num_attention_heads,
        })
    }

    /// `x [B, S, C]` → `[B, S, C]`. The `1/√D` scale is the kernel's default, as in CLIP.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let q = self.q_proj.forward(ctx, rec, x)?;
        let k = self.k_proj.forward(ctx, rec, x)?;
        let v = self.v_proj.forward(ctx, rec, x)?;
        let o = attention(ctx, rec, &q, &k, &v, self.heads, true)?;
        self.out_proj.forward(ctx, rec, &o)
    }
}

/// `CLIPMLP`: fc1 → activation → fc2.
pub struct ClipMlp {
    pub fc1: Linear,
    pub fc2: Linear,
    pub act: Activation,
}

impl ClipMlp {
    pub fn load(l: &Loader, cfg: &ClipConfig) -> Result<ClipMlp> {
        let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(ClipMlp {
            fc1: Linear::load(&l.pp("fc1"), c, i, true)?,
            fc2: Linear::load(&l.pp("fc2"), i, c, true)?,
            act: Activation::from_name(&cfg.hidden_act)?,
        })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let h = self.fc1.forward(ctx, rec, x)?;
        let h = unary(ctx, rec, &h, self.act.op())?;
        self.fc2.forward(ctx, rec, &h)
    }
}

/// `CLIPEncoderLayer`: `x += attn(ln1(x)); x += mlp(ln2(x))`.
pub struct ClipEncoderLayer {
    pub layer_norm1: LayerNorm,
    pub self_attn: ClipAttention,
    pub layer_norm2: LayerNorm,
    pub mlp: ClipMlp,
}

impl ClipEncoderLayer {
    pub fn load(l: &Loader, cfg: &ClipConfig) -> Result<ClipEncoderLayer> {
        let c = cfg.hidden_size;
        Ok(ClipEncoderLayer {
            layer_norm1: LayerNorm::load(&l.pp("layer_norm1"), c, LN_EPS)?,
            self_attn: ClipAttention::load(&l.pp("self_attn"), cfg)?,
            layer_norm2: LayerNorm::load(&l.pp("layer_norm2"), c, LN_EPS)?,
            mlp: ClipMlp::load(&l.pp("mlp"), cfg)?,
        })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let h = self.layer_norm1.forward(ctx, rec, x)?;
        let h = self.self_attn.forward(ctx, rec, &h)?;
        let x = add(ctx, rec, x, &h)?;
        let h = self.layer_norm2.forward(ctx, rec, &x)?;
        let h = self.mlp.forward(ctx, rec, &h)?;
        add(ctx, rec, &x, &h)
    }
}

/// `CLIPTextModel` up to the final LayerNorm; with `text_projection` where the checkpoint has one
/// (`CLIPTextModelWithProjection`, SDXL's second encoder, whose pooled output SDXL uses).
pub struct ClipTextModel {
    pub embeddings: ClipTextEmbeddings,
    pub layers: Vec<ClipEncoderLayer>,
    pub final_layer_norm: LayerNorm,
    /// `[projection_dim, width]`, no bias.
    pub text_projection: Option<Linear>,
    pub cfg: ClipConfig,
    pub dtype: DType,
}

impl ClipTextModel {
    /// Load as the loader's dtype from the text-encoder component (a reader from
    /// `files.text_encoder()`, whose names start with `text_model.`); a loader already scoped to
    /// `text_model` works too.
    pub fn load(l: &Loader, cfg: &ClipConfig) -> Result<ClipTextModel> {
        if cfg.hidden_size == 0
            || cfg.num_attention_heads == 0
            || !cfg.hidden_size.is_multiple_of(cfg.num_attention_heads)
        {
            return Err(Error::invalid(
                OP,
                format!("width {} is not a positive multiple of {} heads", cfg.hidden_size, cfg.num_attention_heads),
            ));
        }
        if cfg.num_hidden_layers == 0 || cfg.max_position_embeddings == 0 {
            return Err(Error::invalid(
                OP,
                format!("{} layers, {} positions", cfg.num_hidden_layers, cfg.max_position_embeddings),
            ));
        }
        Activation::from_name(&cfg.hidden_act)?;
        let text_projection = match cfg.projection_dim {
            Some(p) => Some(Linear::load(&l.pp("text_projection"), cfg.hidden_size, p, false)?),
            None => None,
        };
        let root = l.pp("text_model");
        let l = if root.contains("embeddings.token_embedding.weight") { root } else { l.clone() };
        let enc = l.pp("encoder").pp("layers");
        let layers =
            (0..cfg.num_hidden_layers).map(|i| ClipEncoderLayer::load(&enc.pp(i), cfg)).collect::<Result<Vec<_>>>()?;
        Ok(ClipTextModel {
            embeddings: ClipTextEmbeddings::load(&l.pp("embeddings"), cfg)?,
            layers,
            final_layer_norm: LayerNorm::load(&l.pp("final_layer_norm"), cfg.hidden_size, LN_EPS)?,
            text_projection,
            cfg: cfg.clone(),
            dtype: l.dtype(),
        })
    }

    /// Tokens per sequence (77 for every SD1.x checkpoint).
    pub fn seq_len(&self) -> usize {
        self.cfg.max_position_embeddings
    }

    /// Encoder layers that clip skip `clip_skip` runs (A1111 numbering, see the module docs).
    pub fn layers_for(&self, clip_skip: usize) -> Result<usize> {
        let n = self.layers.len();
        if clip_skip == 0 || clip_skip > n {
            return Err(Error::invalid(
                OP,
                format!("clip skip {clip_skip} is outside 1..={n} (1 = last layer, 2 = penultimate, ...)"),
            ));
        }
        Ok(n + 1 - clip_skip)
    }

    /// `ids`: B sequences of [`Self::seq_len`] ids, back to back → hidden states `[B, S, width]`,
    /// final LayerNorm applied. Everything is recorded into `rec`; nothing is read back.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, ids: &[u32], clip_skip: usize) -> Result<GpuTensor> {
        let run = self.layers_for(clip_skip)?;
        let x = self.hidden_states(ctx, rec, ids, run)?;
        self.final_layer_norm.forward(ctx, rec, &x)
    }

    /// The input embeddings, then the first `run` encoder layers, without the final LayerNorm
    /// (`hidden_states[run]` in transformers' numbering).
    pub fn hidden_states(&self, ctx: &Context, rec: &mut Recorder, ids: &[u32], run: usize) -> Result<GpuTensor> {
        let seq = self.seq_len();
        if ids.is_empty() || !ids.len().is_multiple_of(seq) {
            return Err(Error::shape(
                OP,
                format!("{} ids is not a positive multiple of the sequence length {seq}", ids.len()),
            ));
        }
        if run > self.layers.len() {
            return Err(Error::invalid(OP, format!("{run} layers asked of a {}-layer encoder", self.layers.len())));
        }
        let vocab = self.cfg.vocab_size;
        if let Some((i, &id)) = ids.iter().enumerate().find(|&(_, &id)| id as usize >= vocab) {
            return Err(Error::invalid(
                OP,
                format!("token id {id} at position {i} is outside the vocabulary of {vocab}"),
            ));
        }
        let mut x = self.embeddings.forward(ctx, rec, ids, seq)?;
        for layer in &self.layers[..run] {
            x = layer.forward(ctx, rec, &x)?;
        }
        Ok(x)
    }

    /// One prompt's conditioning as A1111 builds it: every 77-id chunk encoded (one batched
    /// forward), "Original" emphasis applied per chunk, chunks concatenated along the token axis
    /// → `[1, 77·chunks, width]` in the model's dtype.
    ///
    /// Submits its own work and reads the hidden states back: the emphasis needs a whole-chunk
    /// mean, and this runs once per prompt, outside the sampling loop. The result is uploaded
    /// before returning, so it can be used in any later recorder.
    pub fn encode_prompt(&self, ctx: &Context, parsed: &ParsedPrompt, clip_skip: usize) -> Result<GpuTensor> {
        let seq = self.seq_len();
        if parsed.chunks.is_empty() {
            return Err(Error::invalid(OP, "a parsed prompt has at least one chunk; got none"));
        }
        if parsed.chunks[0].ids.len() != seq {
            return Err(Error::shape(
                OP,
                format!("prompt chunks hold {} ids, the model's sequence length is {seq}", parsed.chunks[0].ids.len()),
            ));
        }
        let ids: Vec<u32> = parsed.chunks.iter().flat_map(|c| c.ids).collect();
        let mut rec = Recorder::new();
        let z = self.forward(ctx, &mut rec, &ids, clip_skip)?;
        if ctx.caps.is_cpu() {
            // The first prompt compiles the encoder's kernels: on two devices at once.
            rec.warm_up(ctx, |_, _| {})?;
        }
        rec.submit(ctx)?;
        let mut data = z.to_vec(ctx)?;
        let c = self.cfg.hidden_size;
        for (chunk, z) in parsed.chunks.iter().zip(data.chunks_mut(seq * c)) {
            apply_emphasis_original(z, &chunk.weights, c)?;
        }
        GpuTensor::from_slice(ctx, &[1, ids.len(), c], &data, self.dtype)
    }
}

/// A1111's "Original" emphasis on one chunk's hidden states `z [tokens, width]` (row-major),
/// `weights` one per token: `z *= w` (broadcast over the width), then the whole chunk is rescaled
/// so its mean equals the mean it had before weighting.
///
/// Both means and the products are taken in f64 and each value is rounded once: the rescale
/// divides by the weighted mean, and a chunk whose mean is near zero (random-weight test models)
/// would otherwise amplify f32 rounding of the products. A weighted mean of exactly zero gives
/// infinities, as in A1111; real CLIP states never have one (fixed large channels dominate).
pub fn apply_emphasis_original(z: &mut [f32], weights: &[f32], width: usize) -> Result<()> {
    if width == 0 || z.len() != weights.len() * width {
        return Err(Error::shape(
            "emphasis",
            format!("{} values for {} weights of width {width}", z.len(), weights.len()),
        ));
    }
    if weights.iter().all(|&w| w == 1.0) {
        return Ok(());
    }
    let n = z.len() as f64;
    let original = z.iter().map(|&v| v as f64).sum::<f64>() / n;
    let weighted = z
        .chunks(width)
        .zip(weights)
        .map(|(row, &w)| row.iter().map(|&v| v as f64).sum::<f64>() * w as f64)
        .sum::<f64>()
        / n;
    let ratio = original / weighted;
    for (row, &w) in z.chunks_mut(width).zip(weights) {
        let f = w as f64 * ratio;
        row.iter_mut().for_each(|v| *v = (*v as f64 * f) as f32);
    }
    Ok(())
}
