//! SDXL's text conditioning, as A1111 builds it from its two encoders (and as diffusers'
//! `StableDiffusionXLPipeline.encode_prompt` does for one chunk without emphasis):
//!
//! - CLIP ViT-L (encoder 1) and OpenCLIP ViT-bigG (encoder 2) each encode the same 77-id chunks;
//!   encoder 2's tokenizer pads with `!` (id 0) after the end token, encoder 1's with the end
//!   token itself.
//! - Each gives its penultimate hidden states (`hidden_states[-2]`, no final LayerNorm), with the
//!   "Original" emphasis applied per encoder and chunk; the two are concatenated along the width
//!   (768 + 1280 = 2048 in the real model) and the chunks along the tokens.
//! - The pooled embedding comes from encoder 2 on the first chunk only: final LayerNorm of the last
//!   layer's output at the first end token, then `text_projection` (A1111 takes `zs[0].pooled`).
//!
//! Clip skip does not apply: A1111 fixes the penultimate layer for SDXL (its `CLIP_stop_at_last_
//! layers` setting only reaches encoder 1 behind the `sdxl_clip_l_skip` option, off by default),
//! and so does lorafuse; the pipeline says so when a clip skip is asked for.

use crate::models::clip::prompt::ParsedPrompt;
use crate::models::clip::text_model::{apply_emphasis_original, ClipTextModel};
use crate::models::clip::tokenizer::EOS;
use crate::{Context, Error, GpuTensor, Recorder, Result};

const OP: &str = "sdxl_text";

/// What encoder 2's tokenizer puts after the end token (`!`).
pub const PAD2: u32 = 0;

/// One prompt's SDXL conditioning.
pub struct SdxlText {
    /// `[1, 77·chunks, width1 + width2]` in the encoders' dtype.
    pub context: GpuTensor,
    /// The pooled embedding `[projection_dim]` (host values; it is tiny).
    pub pooled: Vec<f32>,
}

/// `ids` as encoder 2's tokenizer writes them: every id after a chunk's first end token is `!`.
pub fn pad_for_encoder2(ids: &[u32; 77]) -> [u32; 77] {
    let mut out = *ids;
    if let Some(end) = out.iter().position(|&t| t == EOS) {
        out[end + 1..].iter_mut().for_each(|t| *t = PAD2);
    }
    out
}

/// Encode `parsed` with both encoders (see the module docs).
pub fn encode_prompt_sdxl(
    ctx: &Context,
    te1: &ClipTextModel,
    te2: &ClipTextModel,
    parsed: &ParsedPrompt,
) -> Result<SdxlText> {
    let seq = te1.seq_len();
    if parsed.chunks.is_empty() {
        return Err(Error::invalid(OP, "a parsed prompt has at least one chunk; got none"));
    }
    if te2.seq_len() != seq || parsed.chunks[0].ids.len() != seq {
        return Err(Error::shape(
            OP,
            format!(
                "prompt chunks of {} ids, encoders of {seq} and {} positions",
                parsed.chunks[0].ids.len(),
                te2.seq_len()
            ),
        ));
    }
    let projection = te2.text_projection.as_ref().ok_or_else(|| {
        Error::invalid(OP, "SDXL's second text encoder has no text_projection (its pooled output needs one)")
    })?;
    let (n1, n2) = (te1.layers.len(), te2.layers.len());
    if n1 < 2 || n2 < 2 {
        return Err(Error::invalid(OP, format!("encoders of {n1} and {n2} layers; the penultimate needs two")));
    }
    let ids1: Vec<u32> = parsed.chunks.iter().flat_map(|c| c.ids).collect();
    let ids2: Vec<u32> = parsed.chunks.iter().flat_map(|c| pad_for_encoder2(&c.ids)).collect();
    let end = ids2[..seq].iter().position(|&t| t == EOS).unwrap_or(seq - 1);

    let mut rec = Recorder::new();
    let z1 = te1.hidden_states(ctx, &mut rec, &ids1, n1 - 1)?;
    let z2 = te2.hidden_states(ctx, &mut rec, &ids2[..], n2 - 1)?;
    // The last layer and final LayerNorm only for the first chunk's pooled vector.
    let first = z2.view(0, &[1, seq, te2.cfg.hidden_size])?;
    let last = te2.layers[n2 - 1].forward(ctx, &mut rec, &first)?;
    let last = te2.final_layer_norm.forward(ctx, &mut rec, &last)?;
    let row = last.view(end * te2.cfg.hidden_size, &[1, te2.cfg.hidden_size])?;
    let pooled = projection.forward(ctx, &mut rec, &row)?;
    if ctx.caps.is_cpu() {
        // The first prompt compiles the encoders' kernels: on two devices at once.
        rec.warm_up(ctx, |_, _| {})?;
    }
    rec.submit(ctx)?;

    let (c1, c2) = (te1.cfg.hidden_size, te2.cfg.hidden_size);
    let mut h1 = z1.to_vec(ctx)?;
    let mut h2 = z2.to_vec(ctx)?;
    for (i, chunk) in parsed.chunks.iter().enumerate() {
        apply_emphasis_original(&mut h1[i * seq * c1..(i + 1) * seq * c1], &chunk.weights, c1)?;
        apply_emphasis_original(&mut h2[i * seq * c2..(i + 1) * seq * c2], &chunk.weights, c2)?;
    }
    let tokens = ids1.len();
    let mut both = Vec::with_capacity(tokens * (c1 + c2));
    for t in 0..tokens {
        both.extend_from_slice(&h1[t * c1..(t + 1) * c1]);
        both.extend_from_slice(&h2[t * c2..(t + 1) * c2]);
    }
    let context = GpuTensor::from_slice(ctx, &[1, tokens, c1 + c2], &both, te1.dtype)?;
    Ok(SdxlText { context, pooled: pooled.to_vec(ctx)? })
}
