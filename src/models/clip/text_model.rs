//! The CLIP text transformer (transformers `CLIPTextModel`) on the GPU, with A1111's clip skip,
//! its "Original" emphasis and its cond/uncond padding.
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
use crate::nn::{LayerNorm, Linear};
use crate::weights::detect::ClipConfig;
use crate::weights::var_builder::VarBuilder;
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
    pub fn load(ctx: &Context, vb: &VarBuilder, cfg: &ClipConfig, dtype: DType) -> Result<ClipTextEmbeddings> {
        let c = cfg.hidden_size;
        Ok(ClipTextEmbeddings {
            token_embedding: crate::nn::load(ctx, &vb.pp("token_embedding"), "weight", &[cfg.vocab_size, c], dtype)?,
            position_embedding: crate::nn::load(
                ctx,
                &vb.pp("position_embedding"),
                "weight",
                &[cfg.max_position_embeddings, c],
                dtype,
            )?,
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
    pub fn load(ctx: &Context, vb: &VarBuilder, cfg: &ClipConfig, dtype: DType) -> Result<ClipAttention> {
        let c = cfg.hidden_size;
        Ok(ClipAttention {
            q_proj: Linear::load(ctx, &vb.pp("q_proj"), c, c, true, dtype)?,
            k_proj: Linear::load(ctx, &vb.pp("k_proj"), c, c, true, dtype)?,
            v_proj: Linear::load(ctx, &vb.pp("v_proj"), c, c, true, dtype)?,
            out_proj: Linear::load(ctx, &vb.pp("out_proj"), c, c, true, dtype)?,
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
    pub fn load(ctx: &Context, vb: &VarBuilder, cfg: &ClipConfig, dtype: DType) -> Result<ClipMlp> {
        let (c, i) = (cfg.hidden_size, cfg.intermediate_size);
        Ok(ClipMlp {
            fc1: Linear::load(ctx, &vb.pp("fc1"), c, i, true, dtype)?,
            fc2: Linear::load(ctx, &vb.pp("fc2"), i, c, true, dtype)?,
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
    pub fn load(ctx: &Context, vb: &VarBuilder, cfg: &ClipConfig, dtype: DType) -> Result<ClipEncoderLayer> {
        let c = cfg.hidden_size;
        Ok(ClipEncoderLayer {
            layer_norm1: LayerNorm::load(ctx, &vb.pp("layer_norm1"), c, LN_EPS, dtype)?,
            self_attn: ClipAttention::load(ctx, &vb.pp("self_attn"), cfg, dtype)?,
            layer_norm2: LayerNorm::load(ctx, &vb.pp("layer_norm2"), c, LN_EPS, dtype)?,
            mlp: ClipMlp::load(ctx, &vb.pp("mlp"), cfg, dtype)?,
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

/// `CLIPTextModel` up to the final LayerNorm (no pooling: SD uses the token states).
pub struct ClipTextModel {
    pub embeddings: ClipTextEmbeddings,
    pub layers: Vec<ClipEncoderLayer>,
    pub final_layer_norm: LayerNorm,
    pub cfg: ClipConfig,
    pub dtype: DType,
}

impl ClipTextModel {
    /// Load from the text-encoder component's builder (`files.text_encoder()`, whose names start
    /// with `text_model.`); a builder already scoped to `text_model` works too.
    pub fn load(ctx: &Context, vb: &VarBuilder, cfg: &ClipConfig, dtype: DType) -> Result<ClipTextModel> {
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
        let root = vb.pp("text_model");
        let vb = if root.contains("embeddings.token_embedding.weight") { root } else { vb.clone() };
        let enc = vb.pp("encoder").pp("layers");
        let layers = (0..cfg.num_hidden_layers)
            .map(|i| ClipEncoderLayer::load(ctx, &enc.pp(i), cfg, dtype))
            .collect::<Result<Vec<_>>>()?;
        Ok(ClipTextModel {
            embeddings: ClipTextEmbeddings::load(ctx, &vb.pp("embeddings"), cfg, dtype)?,
            layers,
            final_layer_norm: LayerNorm::load(ctx, &vb.pp("final_layer_norm"), cfg.hidden_size, LN_EPS, dtype)?,
            cfg: cfg.clone(),
            dtype,
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
        let seq = self.seq_len();
        if ids.is_empty() || !ids.len().is_multiple_of(seq) {
            return Err(Error::shape(
                OP,
                format!("{} ids is not a positive multiple of the sequence length {seq}", ids.len()),
            ));
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
        self.final_layer_norm.forward(ctx, rec, &x)
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

/// How cond and uncond of different lengths (different chunk counts) are reconciled.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CondPadding {
    /// A1111 "Pad prompt/negative prompt" (`pad_cond_uncond`): the shorter one gets copies of
    /// the empty prompt's encoding appended, one per missing chunk.
    EmptyPrompt,
    /// A1111 "Pad prompt/negative prompt (v0)" (`pad_cond_uncond_v0`, DDIM's behaviour before
    /// 1.6): only uncond changes, padded with copies of its last token vector, or truncated.
    LastVectorV0,
}

/// Make cond `[B, Tc, C]` and uncond `[B, Tu, C]` the same length so they batch into one UNet
/// call (with neither option set, A1111 runs two UNet calls instead, which needs no padding).
/// `empty` is the empty prompt's encoding `[1, 77, C]` (`encode_prompt` of `""`), used by
/// [`CondPadding::EmptyPrompt`]. Equal lengths come back unchanged (same buffers).
///
/// Runs on the host through a readback (inputs must be submitted); it happens once per
/// generation. The outputs have the inputs' dtype.
pub fn pad_to_same_length(
    ctx: &Context,
    cond: &GpuTensor,
    uncond: &GpuTensor,
    empty: &GpuTensor,
    mode: CondPadding,
) -> Result<(GpuTensor, GpuTensor)> {
    const OP: &str = "pad_cond_uncond";
    let desc = || format!("cond {:?}, uncond {:?}, empty {:?}", cond.shape, uncond.shape, empty.shape);
    let (&[b, tc, c], &[bu, tu, cu]) = (cond.shape.as_slice(), uncond.shape.as_slice()) else {
        return Err(Error::shape(OP, format!("want [B, T, C] conds: {}", desc())));
    };
    if b != bu || c != cu || cond.dtype != uncond.dtype {
        return Err(Error::shape(OP, format!("batch, width or dtype differ: {}", desc())));
    }
    if tc == 0 || tu == 0 {
        return Err(Error::shape(OP, format!("a cond without tokens: {}", desc())));
    }
    if tc == tu {
        return Ok((cond.clone(), uncond.clone()));
    }
    match mode {
        CondPadding::EmptyPrompt => {
            let &[1, te, ce] = empty.shape.as_slice() else {
                return Err(Error::shape(OP, format!("empty must be [1, T, C]: {}", desc())));
            };
            if ce != c || te == 0 {
                return Err(Error::shape(OP, format!("empty's width differs or it is empty: {}", desc())));
            }
            // A1111 repeats `(Tc − Tu) // Te` times; the lengths are whole chunks, so exact.
            let (short, long) = if tc < tu { (cond, tu) } else { (uncond, tc) };
            let missing = long - short.shape[1];
            if !missing.is_multiple_of(te) {
                return Err(Error::shape(
                    OP,
                    format!("length difference {missing} is not a multiple of {te}: {}", desc()),
                ));
            }
            let s = short.to_vec(ctx)?;
            let e = empty.to_vec(ctx)?;
            let t_short = short.shape[1];
            let mut out = Vec::with_capacity(b * long * c);
            for bi in 0..b {
                out.extend_from_slice(&s[bi * t_short * c..(bi + 1) * t_short * c]);
                for _ in 0..missing / te {
                    out.extend_from_slice(&e);
                }
            }
            let padded = GpuTensor::from_slice(ctx, &[b, long, c], &out, short.dtype)?;
            Ok(if tc < tu { (padded, uncond.clone()) } else { (cond.clone(), padded) })
        }
        CondPadding::LastVectorV0 => {
            let u = uncond.to_vec(ctx)?;
            let mut out = Vec::with_capacity(b * tc * c);
            for bi in 0..b {
                let rows = &u[bi * tu * c..(bi + 1) * tu * c];
                out.extend_from_slice(&rows[..tu.min(tc) * c]);
                for _ in tu..tc {
                    out.extend_from_slice(&rows[(tu - 1) * c..]);
                }
            }
            Ok((cond.clone(), GpuTensor::from_slice(ctx, &[b, tc, c], &out, uncond.dtype)?))
        }
    }
}
