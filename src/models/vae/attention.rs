//! The VAE mid-block self-attention (diffusers `Attention` built from the old `AttentionBlock`):
//! GroupNorm, one head as wide as the channels over the H·W pixels as tokens, `to_out.0`, and a
//! residual connection. Weights are linears `[C, C]` (the builder reshapes single-file 1×1 convs).
//!
//! Why not the flash-attention kernel: its head dim is capped at `MAX_HEAD_DIM` (160) and SD's
//! VAE head is 512 wide, so this block is written with matmul + softmax, which also keeps one code
//! path for the tiny test model and the real one. Scores are `[B, S, S]` (S = latent pixels): 64
//! MiB in f32 for a 512×512 image; bigger ones run in query chunks ([`Attention::forward_chunked`]).
//!
//! Layout: images are NCHW, i.e. channel-major `[B, C, S]`, while the score matmul needs
//! token-major queries. The kernels have no transpose, so exactly two permutations are done with
//! the embedding gather (rows of width 1, see [`transpose`]); everything else is arranged so no
//! other permute is needed: keys come channel-major straight from a 1×1 conv, which is `Kᵀ`.

use crate::kernels::binary::add;
use crate::kernels::conv2d::Conv2dParams;
use crate::kernels::embedding::embedding;
use crate::kernels::matmul::matmul;
use crate::kernels::softmax::softmax;
use crate::kernels::unary::{unary_into, UnaryOp};
use crate::models::vae::{check_input, EPS};
use crate::nn::{Conv2d, GroupNorm, Linear, Loader};
use crate::tensor::max_window_elems;
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

const OP: &str = "vae.attention";

/// Largest score matrix (elements) computed at once: 256 MiB in f32. SD1.5 at 512×512 (S = 4096)
/// fits in one piece; 1024×1024 (S = 16384) runs in chunks of 4096 queries.
pub const MAX_SCORE_ELEMS: usize = 1 << 26;

/// `[B, R, S]` → `[B, S, R]` as a gather of single elements (the embedding kernel with a table of
/// width 1). The index list is built on the host and uploaded with the dispatch, no readback.
/// A dedicated transpose kernel would do this without the index buffer (4 bytes per element).
pub fn transpose(ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
    let &[b, r, s] = x.shape.as_slice() else {
        return Err(Error::shape("vae.transpose", format!("expected [B, R, S], got {:?}", x.shape)));
    };
    let n = b * r * s;
    if n > u32::MAX as usize {
        return Err(Error::limit("vae.transpose", "elements (u32 gather indices)", n as u64, u32::MAX as u64));
    }
    let mut ids = Vec::with_capacity(n);
    for bi in 0..b {
        let base = bi * r * s;
        for si in 0..s {
            ids.extend((0..r).map(|ri| (base + ri * s + si) as u32));
        }
    }
    let out = embedding(ctx, rec, &x.reshape(&[n, 1])?, &ids)?;
    out.reshape(&[b, s, r])
}

/// Reads a `[C, C]` projection (and its bias, zeros when absent) as f32, scaled by `scale`.
fn projection(l: &Loader, c: usize, scale: f32) -> Result<(Vec<f32>, Vec<f32>)> {
    let w = l.get("weight", &[c, c])?.data.iter().map(|v| v * scale).collect();
    let b =
        if l.contains("bias") { l.get("bias", &[c])?.data.iter().map(|v| v * scale).collect() } else { vec![0.0; c] };
    Ok((w, b))
}

/// Single-head spatial self-attention with GroupNorm and residual.
pub struct Attention {
    pub group_norm: GroupNorm,
    /// `to_q` with the softmax scale `1/√C` folded into weight and bias at load time, so the
    /// `[B, S, S]` scores need no separate scaling pass (and stay small in f16).
    pub to_q: Linear,
    /// `to_k` as a 1×1 conv: its NCHW output `[B, C, S]` is exactly `Kᵀ` for the score matmul.
    pub to_k: Conv2d,
    pub to_v: Linear,
    pub to_out: Linear,
    pub channels: usize,
    pub dtype: DType,
}

impl Attention {
    pub fn load(l: &Loader, c: usize, groups: usize) -> Result<Attention> {
        let scale = 1.0 / (c as f32).sqrt();
        let (wq, bq) = projection(&l.pp("to_q"), c, scale)?;
        let to_q = Linear {
            weight: l.upload(&[c, c], &wq)?,
            bias: Some(l.upload(&[c], &bq)?),
            in_features: c,
            out_features: c,
            lora: Default::default(),
        };
        let (wk, bk) = projection(&l.pp("to_k"), c, 1.0)?;
        let to_k = Conv2d::from_host(l, [c, c, 1, 1], &wk, Some(l.upload(&[c], &bk)?), Conv2dParams::same(1, 1))?;
        let has_bias = |name: &str| l.pp(name).contains("bias");
        Ok(Attention {
            group_norm: GroupNorm::load(&l.pp("group_norm"), groups, c, EPS)?,
            to_q,
            to_k,
            to_v: Linear::load(&l.pp("to_v"), c, c, has_bias("to_v"))?,
            to_out: Linear::load(&l.pp("to_out").pp(0), c, c, has_bias("to_out.0"))?,
            channels: c,
            dtype: l.dtype(),
        })
    }

    /// `x [B, C, H, W]` → `x + to_out(softmax(q·kᵀ/√C)·v)` with q, k, v from `group_norm(x)`.
    /// Score matrices are kept within one storage binding and [`MAX_SCORE_ELEMS`].
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, x: &GpuTensor) -> Result<GpuTensor> {
        let budget = (max_window_elems(ctx, self.dtype) as usize).min(MAX_SCORE_ELEMS);
        self.forward_chunked(ctx, rec, x, budget)
    }

    /// [`Attention::forward`] with an explicit bound on score elements: when the batched
    /// `[B, S, S]` scores exceed `max_scores`, each image's queries are processed in chunks of
    /// `max_scores / S` rows (at least one), each chunk's output copied into place.
    pub fn forward_chunked(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        x: &GpuTensor,
        max_scores: usize,
    ) -> Result<GpuTensor> {
        check_input(OP, x, self.channels, self.dtype)?;
        let (b, c, s) = (x.shape[0], self.channels, x.shape[2] * x.shape[3]);
        let xn = self.group_norm.forward(ctx, rec, x, false)?;
        // Token-major normed input [B, S, C] for the q and v projections.
        let tokens = transpose(ctx, rec, &xn.reshape(&[b, c, s])?)?;
        let q = self.to_q.forward(ctx, rec, &tokens)?;
        let kt = self.to_k.forward(ctx, rec, &xn)?.reshape(&[b, c, s])?;
        let v = self.to_v.forward(ctx, rec, &tokens)?;
        let o = if b * s * s <= max_scores {
            // Scores [B, S, S], already scaled through to_q; output [B, S, C].
            let scores = matmul(ctx, rec, &q, &kt)?;
            let p = softmax(ctx, rec, &scores)?;
            matmul(ctx, rec, &p, &v)?
        } else {
            let rows = (max_scores / s).max(1);
            let o = GpuTensor::empty(ctx, &[b, s, c], self.dtype)?;
            for bi in 0..b {
                let (kb, vb) = (kt.view(bi * c * s, &[c, s])?, v.view(bi * s * c, &[s, c])?);
                let mut i0 = 0;
                while i0 < s {
                    let n = rows.min(s - i0);
                    let at = (bi * s + i0) * c;
                    let scores = matmul(ctx, rec, &q.view(at, &[n, c])?, &kb)?;
                    let p = softmax(ctx, rec, &scores)?;
                    let oc = matmul(ctx, rec, &p, &vb)?;
                    unary_into(ctx, rec, &oc, &o.view(at, &[n, c])?, UnaryOp::Scale(1.0))?;
                    i0 += n;
                }
            }
            o
        };
        let o = self.to_out.forward(ctx, rec, &o)?;
        let o = transpose(ctx, rec, &o)?.reshape(&x.shape)?;
        add(ctx, rec, x, &o)
    }
}
