//! diffusers `Transformer2DModel` (continuous input) and its `BasicTransformerBlock`s as SD1.x and
//! SDXL use them: GroupNorm (eps 1e-6) → `proj_in` → blocks of [LayerNorm → self-attention,
//! LayerNorm → cross-attention on the text context, LayerNorm → GEGLU feed-forward], each with a
//! residual → `proj_out` → residual with the block's input.
//!
//! `proj_in`/`proj_out` are 1×1 convs in SD1 checkpoints and linears in SD2 and SDXL ones; the same
//! numbers either way (the weight reader serves a `[O, I, 1, 1]` conv as an `[O, I]` linear), so both
//! run as linears on tokens, next to the layout change that the attention needs anyway. Heads and
//! the number of blocks come from the caller per level (SDXL: head width 64, 1 to 10 blocks).

use super::fused::{linear_transposed, load_stacked, multi_linear, slice};
use super::layout::nchw_to_tokens;
use crate::kernels::attention::attention;
use crate::kernels::binary::add;
use crate::kernels::geglu::geglu;
use crate::kernels::lora_linear::LoraStack;
use crate::kernels::matmul::linear;
use crate::nn::{GroupNorm, LayerNorm, Linear, Loader};
use crate::{Context, Error, GpuTensor, Recorder, Result};

const OP: &str = "unet.transformer";

/// `Transformer2DModel.norm` eps (diffusers hard-codes 1e-6 there).
const GN_EPS: f32 = 1e-6;
/// `BasicTransformerBlock` LayerNorm eps (diffusers' `norm_eps` default, unchanged by SD1).
const LN_EPS: f32 = 1e-5;
/// GEGLU inner width = 4 × model width (`FeedForward(mult=4)`).
const FF_MULT: usize = 4;

/// diffusers `Attention` (`to_q`, `to_k`, `to_v` without bias; `to_out.0` with bias).
///
/// The projections of one input run as one GEMM: `to_q`/`to_k`/`to_v` for self-attention,
/// `to_k`/`to_v` for cross-attention (both read the context). Their weights live stacked in
/// `stacked`; the `Linear`s view their slices of it.
pub struct Attention {
    pub to_q: Linear,
    pub to_k: Linear,
    pub to_v: Linear,
    pub to_out: Linear,
    pub stacked: GpuTensor,
    pub cross: bool,
    pub heads: usize,
}

impl Attention {
    /// Self-attention when `context_dim` is `None`, else cross-attention on a context of that
    /// width.
    pub fn load(l: &Loader, dim: usize, context_dim: Option<usize>, heads: usize) -> Result<Attention> {
        let to_out = Linear::load(&l.pp("to_out").pp(0), dim, dim, true)?;
        let (to_q, to_k, to_v, stacked) = match context_dim {
            None => {
                let (w, lin) = load_stacked(&[l.pp("to_q"), l.pp("to_k"), l.pp("to_v")], dim, dim)?;
                let [q, k, v] = <[Linear; 3]>::try_from(lin).map_err(|_| Error::invalid(OP, "stacking q/k/v"))?;
                (q, k, v, w)
            }
            Some(cd) => {
                let q = Linear::load(&l.pp("to_q"), dim, dim, false)?;
                let (w, lin) = load_stacked(&[l.pp("to_k"), l.pp("to_v")], cd, dim)?;
                let [k, v] = <[Linear; 2]>::try_from(lin).map_err(|_| Error::invalid(OP, "stacking k/v"))?;
                (q, k, v, w)
            }
        };
        Ok(Attention { to_q, to_k, to_v, to_out, stacked, cross: context_dim.is_some(), heads })
    }

    /// `x [B, S, dim]` attends to itself (`context` `None`), or to `context [B, Sc, context_dim]`
    /// for cross-attention.
    pub fn forward(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        context: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        let fused_lora = [&self.to_q, &self.to_k, &self.to_v].iter().any(|l| l.adapters().is_some());
        let (q, k, v) = match (self.cross, context) {
            // Runtime LoRAs on a projection: each runs on its own (its slice of the stack).
            (cross, c) if fused_lora && cross == c.is_some() => {
                let src = c.unwrap_or(x);
                (self.to_q.forward(ctx, rec, x)?, self.to_k.forward(ctx, rec, src)?, self.to_v.forward(ctx, rec, src)?)
            }
            (true, Some(c)) => {
                let q = self.to_q.forward(ctx, rec, x)?;
                let kv = multi_linear(ctx, rec, c, &self.stacked)?;
                (q, slice(&kv, 0)?, slice(&kv, 1)?)
            }
            (false, None) => {
                let qkv = multi_linear(ctx, rec, x, &self.stacked)?;
                (slice(&qkv, 0)?, slice(&qkv, 1)?, slice(&qkv, 2)?)
            }
            (cross, _) => {
                let want = if cross { "cross-attention needs" } else { "self-attention takes no" };
                return Err(Error::invalid(OP, format!("{want} context")));
            }
        };
        let o = attention(ctx, rec, &q, &k, &v, self.heads, false)?;
        self.to_out.forward(ctx, rec, &o)
    }
}

/// diffusers `FeedForward` with `GEGLU`: `net.0.proj` [2·inner, dim] → value·gelu(gate) →
/// `net.2` [dim, inner].
pub struct FeedForward {
    pub proj: Linear,
    pub out: Linear,
}

impl FeedForward {
    pub fn load(l: &Loader, dim: usize) -> Result<FeedForward> {
        let inner = dim * FF_MULT;
        Ok(FeedForward {
            proj: Linear::load(&l.pp("net").pp(0).pp("proj"), dim, 2 * inner, true)?,
            out: Linear::load(&l.pp("net").pp(2), inner, dim, true)?,
        })
    }

    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let h = self.proj.forward(ctx, rec, x)?;
        let h = geglu(ctx, rec, &h)?;
        self.out.forward(ctx, rec, &h)
    }
}

pub struct BasicTransformerBlock {
    pub norm1: LayerNorm,
    pub attn1: Attention,
    pub norm2: LayerNorm,
    pub attn2: Attention,
    pub norm3: LayerNorm,
    pub ff: FeedForward,
}

impl BasicTransformerBlock {
    pub fn load(l: &Loader, dim: usize, context_dim: usize, heads: usize) -> Result<BasicTransformerBlock> {
        Ok(BasicTransformerBlock {
            norm1: LayerNorm::load(&l.pp("norm1"), dim, LN_EPS)?,
            attn1: Attention::load(&l.pp("attn1"), dim, None, heads)?,
            norm2: LayerNorm::load(&l.pp("norm2"), dim, LN_EPS)?,
            attn2: Attention::load(&l.pp("attn2"), dim, Some(context_dim), heads)?,
            norm3: LayerNorm::load(&l.pp("norm3"), dim, LN_EPS)?,
            ff: FeedForward::load(&l.pp("ff"), dim)?,
        })
    }

    /// Tokens `x [B, S, dim]`, `context [B, Sc, context_dim]` → `[B, S, dim]`.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor, context: &GpuTensor) -> Result<GpuTensor> {
        let h = self.norm1.forward(ctx, rec, x)?;
        let h = self.attn1.forward(ctx, rec, &h, None)?;
        let x = add(ctx, rec, &h, x)?;
        let h = self.norm2.forward(ctx, rec, &x)?;
        let h = self.attn2.forward(ctx, rec, &h, Some(context))?;
        let x = add(ctx, rec, &h, &x)?;
        let h = self.norm3.forward(ctx, rec, &x)?;
        let h = self.ff.forward(ctx, rec, &h)?;
        add(ctx, rec, &h, &x)
    }
}

/// diffusers `Transformer2DModel` (continuous input).
pub struct Transformer2DModel {
    pub norm: GroupNorm,
    pub proj_in: Linear,
    pub transformer_blocks: Vec<BasicTransformerBlock>,
    pub proj_out: Linear,
}

impl Transformer2DModel {
    pub fn load(
        l: &Loader,
        channels: usize,
        context_dim: usize,
        heads: usize,
        depth: usize,
        groups: usize,
    ) -> Result<Transformer2DModel> {
        let blocks = (0..depth)
            .map(|i| BasicTransformerBlock::load(&l.pp("transformer_blocks").pp(i), channels, context_dim, heads))
            .collect::<Result<Vec<_>>>()?;
        Ok(Transformer2DModel {
            norm: GroupNorm::load(&l.pp("norm"), groups, channels, GN_EPS)?,
            proj_in: Linear::load(&l.pp("proj_in"), channels, channels, true)?,
            transformer_blocks: blocks,
            proj_out: Linear::load(&l.pp("proj_out"), channels, channels, true)?,
        })
    }

    /// `x [B, C, H, W]`, `context [B, Sc, context_dim]` → `[B, C, H, W]`.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor, context: &GpuTensor) -> Result<GpuTensor> {
        let [_, _, h, w] = super::dims4(OP, x)?;
        let t = self.norm.forward(ctx, rec, x, false)?;
        let t = nchw_to_tokens(ctx, rec, &t)?;
        let mut t = self.proj_in.forward(ctx, rec, &t)?;
        for b in &self.transformer_blocks {
            t = b.forward(ctx, rec, &t, context)?;
        }
        // proj_out writes NCHW directly (W · tokensᵀ per image); its bias is then a per-channel
        // broadcast.
        let c = self.proj_out.out_features;
        let mut y = linear_transposed(ctx, rec, &t, &self.proj_out.weight)?;
        if let Some((a_cat, b_cat)) = self.proj_out.adapters().as_deref().and_then(LoraStack::factors) {
            // Fused LoRA, transposed the same way: Σ sᵢ·Bᵢ·(Aᵢ·tokensᵀ).
            let r = linear(ctx, rec, &t, a_cat, None)?;
            let dy = linear_transposed(ctx, rec, &r, b_cat)?;
            y = add(ctx, rec, &y, &dy)?;
        }
        let y = y.reshape(&[t.shape[0], c, h, w])?;
        let y = match &self.proj_out.bias {
            Some(b) => add(ctx, rec, &y, &b.reshape(&[c, 1, 1])?)?,
            None => y,
        };
        add(ctx, rec, &y, x)
    }
}
