//! The timestep embedding: diffusers `Timesteps` (sinusoidal, `flip_sin_to_cos=True`,
//! `freq_shift=0`, as SD1.x and SDXL configure it) followed by `TimestepEmbedding`
//! (`linear_1` → SiLU → `linear_2`).
//!
//! It is split from the rest of the UNet so that a sampling loop can record the big graph once per
//! resolution and redo only these four dispatches per step (five with SDXL's added embedding).
//!
//! [`AddedEmbedding`] is SDXL's `text_time` conditioning (`add_time_proj` + `add_embedding`). It
//! depends on the prompt and the image size but not on the timestep, so it is computed once per
//! generation and each step's time embedding only adds it (diffusers: `emb = emb + aug_emb`).
//!
//! [`TembProjections`] then applies every resnet's `time_emb_proj` to SiLU(embedding): the resnets
//! of one width share one GEMM launch over their stacked weights (SD1: 3 launches instead of 22).

use super::fused::{linear_into, multi_linear, slice, stack_copies};
use crate::kernels::binary::add_into;
use crate::kernels::concat::concat;
use crate::kernels::matmul::linear;
use crate::kernels::timestep_embedding::timestep_embedding;
use crate::kernels::unary::{unary, UnaryOp};
use crate::nn::{AdaptableWeights, Linear, Loader};
use crate::weights::detect::AdditionConfig;
use crate::{Context, DType, Error, GpuTensor, Recorder, Result};

/// The per-resnet time projections `[B, Cout]` of one forward pass, in forward order.
pub type TembIter = std::vec::IntoIter<GpuTensor>;

/// diffusers `TimestepEmbedding` with the sinusoidal projection in front of it.
pub struct TimestepEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
    /// Width of the sinusoidal projection (diffusers: `block_out_channels[0]`).
    pub proj_dim: usize,
    pub dtype: DType,
}

impl TimestepEmbedding {
    /// `l` is the UNet's `time_embedding` scope.
    pub fn load(l: &Loader, proj_dim: usize, embed_dim: usize) -> Result<TimestepEmbedding> {
        Ok(TimestepEmbedding {
            linear_1: Linear::load(&l.pp("linear_1"), proj_dim, embed_dim, true)?,
            linear_2: {
                // Runs through `linear_into`, not `forward`: its LoRAs are merged.
                let lin = Linear::load(&l.pp("linear_2"), embed_dim, embed_dim, true)?;
                l.adaptable().rebind(&lin.lora, &lin.weight);
                lin
            },
            proj_dim,
            dtype: l.dtype(),
        })
    }

    /// One timestep per batch item → `[B, embed_dim]`, plus `added [B, embed_dim]` when given.
    pub fn forward(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        timesteps: &[f32],
        added: Option<&GpuTensor>,
    ) -> Result<GpuTensor> {
        let out = GpuTensor::empty(ctx, &[timesteps.len(), self.linear_2.out_features], self.dtype)?;
        self.forward_into(ctx, rec, timesteps, added, &out)?;
        Ok(out)
    }

    /// [`TimestepEmbedding::forward`] into an existing `out [B, embed_dim]`: a graph recorded
    /// with `out` as its `temb` sees the new timesteps when replayed after this is submitted.
    pub fn forward_into(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        timesteps: &[f32],
        added: Option<&GpuTensor>,
        out: &GpuTensor,
    ) -> Result<()> {
        const OP: &str = "unet.time_embedding";
        if timesteps.is_empty() {
            return Err(Error::invalid(OP, "no timesteps (one per batch item is needed)"));
        }
        let n = self.linear_2.out_features;
        if out.shape != [timesteps.len(), n] || out.dtype != self.dtype {
            return Err(Error::shape(
                OP,
                format!(
                    "out {:?} {} must be [{}, {n}] {} for {} timesteps",
                    out.shape,
                    out.dtype.name(),
                    timesteps.len(),
                    self.dtype.name(),
                    timesteps.len()
                ),
            ));
        }
        if let Some(a) = added {
            if a.shape != out.shape || a.dtype != self.dtype {
                return Err(Error::shape(
                    OP,
                    format!(
                        "the added embedding {:?} {} must be [{}, {n}] {} like the time embedding",
                        a.shape,
                        a.dtype.name(),
                        timesteps.len(),
                        self.dtype.name()
                    ),
                ));
            }
        }
        let t = timestep_embedding(ctx, rec, timesteps, self.proj_dim, self.dtype)?;
        let h = self.linear_1.forward(ctx, rec, &t)?;
        let h = unary(ctx, rec, &h, UnaryOp::Silu)?;
        match added {
            None => linear_into(ctx, rec, &h, &self.linear_2, out),
            // diffusers rounds `emb` to the storage dtype before adding `aug_emb`; so does this.
            // The plain GEMM reads the same weight `linear_into` does (its LoRAs are merged).
            Some(a) => {
                let e = linear(ctx, rec, &h, &self.linear_2.weight, self.linear_2.bias.as_ref())?;
                add_into(ctx, rec, &e, a, out)
            }
        }
    }
}

/// How many size/crop numbers SDXL's `text_time` conditioning embeds per batch item
/// (original height, width, crop top, left, target height, width).
pub const TIME_IDS: usize = 6;

/// diffusers' `text_time` added conditioning: `add_time_proj` (the sinusoidal [`timestep_embedding`]
/// at `time_dim`, `flip_sin_to_cos=True`, shift 0) of each time id, concatenated after the pooled
/// text embedding, through `add_embedding` (a `TimestepEmbedding`: `linear_1` → SiLU →
/// `linear_2`).
pub struct AddedEmbedding {
    pub linear_1: Linear,
    pub linear_2: Linear,
    /// `addition_time_embed_dim`: the sinusoidal width per time id.
    pub time_dim: usize,
    /// Width of the pooled text embedding.
    pub pooled_dim: usize,
    pub dtype: DType,
}

impl AddedEmbedding {
    /// `l` is the UNet's `add_embedding` scope; `embed_dim` the time embedding's width.
    pub fn load(l: &Loader, cfg: &AdditionConfig, embed_dim: usize) -> Result<AddedEmbedding> {
        let times = TIME_IDS * cfg.time_embed_dim;
        if cfg.time_embed_dim == 0 || cfg.in_dim <= times {
            return Err(Error::invalid(
                "unet.add_embedding",
                format!(
                    "add_embedding takes {} inputs, which leaves no room for a pooled text embedding next to \
                     {TIME_IDS} time ids of width {}",
                    cfg.in_dim, cfg.time_embed_dim
                ),
            ));
        }
        // Both run through `Linear::forward` (once per generation), so fused LoRAs apply too.
        Ok(AddedEmbedding {
            linear_1: Linear::load(&l.pp("linear_1"), cfg.in_dim, embed_dim, true)?,
            linear_2: Linear::load(&l.pp("linear_2"), embed_dim, embed_dim, true)?,
            time_dim: cfg.time_embed_dim,
            pooled_dim: cfg.in_dim - times,
            dtype: l.dtype(),
        })
    }

    /// Pooled `text_embeds [B, pooled_dim]` and `time_ids` (`B·6` numbers, item by item) →
    /// `[B, embed_dim]`.
    pub fn forward(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        text_embeds: &GpuTensor,
        time_ids: &[f32],
    ) -> Result<GpuTensor> {
        const OP: &str = "unet.add_embedding";
        let b = match text_embeds.shape.as_slice() {
            &[b, p] if b > 0 && p == self.pooled_dim => b,
            s => {
                return Err(Error::shape(
                    OP,
                    format!("text_embeds must be [B ≥ 1, {}] (the pooled text embedding), got {s:?}", self.pooled_dim),
                ))
            }
        };
        if time_ids.len() != TIME_IDS * b {
            return Err(Error::shape(
                OP,
                format!(
                    "{} time ids for {b} pooled text embeddings; {TIME_IDS} per item are needed (original size, \
                     crop, target size)",
                    time_ids.len()
                ),
            ));
        }
        if text_embeds.dtype != self.dtype {
            return Err(Error::dtype(
                OP,
                format!("text_embeds is {} but the UNet was loaded as {}", text_embeds.dtype.name(), self.dtype.name()),
            ));
        }
        // `[B·6, d]` row-major is `[B, 6·d]`: each item's six embeddings side by side, as
        // diffusers' `reshape((B, -1))` lays them out.
        let t = timestep_embedding(ctx, rec, time_ids, self.time_dim, self.dtype)?;
        let t = t.reshape(&[b, TIME_IDS * self.time_dim])?;
        let h = concat(ctx, rec, &[text_embeds, &t], 1)?;
        let h = self.linear_1.forward(ctx, rec, &h)?;
        let h = unary(ctx, rec, &h, UnaryOp::Silu)?;
        self.linear_2.forward(ctx, rec, &h)
    }
}

/// The resnets of one width: their `time_emb_proj` weights stacked `[n, Cout, T]`.
struct TembGroup {
    stacked: GpuTensor,
    /// Index of each slice's resnet in forward order.
    members: Vec<usize>,
}

/// The `time_emb_proj` GEMMs of all resnets, grouped by width.
pub struct TembProjections {
    groups: Vec<TembGroup>,
    count: usize,
}

impl TembProjections {
    /// Stacks the resnets' `time_emb_proj` linears `projections` (in forward order) by output
    /// width and points each one's weight at its slice, so no copy stays behind.
    pub fn build(
        ctx: &Context,
        projections: &mut [&mut Linear],
        adaptable: &AdaptableWeights,
    ) -> Result<TembProjections> {
        let mut widths: Vec<usize> = projections.iter().map(|p| p.out_features).collect();
        widths.sort_unstable();
        widths.dedup();
        let mut groups = Vec::new();
        for w in widths {
            let members: Vec<usize> = (0..projections.len()).filter(|&i| projections[i].out_features == w).collect();
            let parts: Vec<&GpuTensor> = members.iter().map(|&i| &projections[i].weight).collect();
            match stack_copies(ctx, &parts)? {
                Some(stacked) => {
                    let per = parts[0].numel();
                    let shape = parts[0].shape.clone();
                    for (slot, &i) in members.iter().enumerate() {
                        let view = stacked.view(slot * per, &shape)?;
                        adaptable.rebind(&projections[i].lora, &view);
                        projections[i].weight = view;
                    }
                    groups.push(TembGroup { stacked, members });
                }
                // Unaligned weights (odd f16 sizes): one launch per resnet.
                None => {
                    for i in members {
                        let wt = &projections[i].weight;
                        adaptable.rebind(&projections[i].lora, wt);
                        let mut shape = vec![1];
                        shape.extend_from_slice(&wt.shape);
                        groups.push(TembGroup { stacked: wt.reshape(&shape)?, members: vec![i] });
                    }
                }
            }
        }
        Ok(TembProjections { groups, count: projections.len() })
    }

    /// `silu_temb [B, T]` → each resnet's projection `[B, Cout]` (no bias), in forward order.
    pub fn forward(&self, ctx: &Context, rec: &mut Recorder, silu_temb: &GpuTensor) -> Result<Vec<GpuTensor>> {
        let mut out: Vec<Option<GpuTensor>> = vec![None; self.count];
        for g in &self.groups {
            let y = multi_linear(ctx, rec, silu_temb, &g.stacked)?;
            for (slot, &i) in g.members.iter().enumerate() {
                out[i] = Some(slice(&y, slot)?);
            }
        }
        out.into_iter()
            .map(|t| t.ok_or_else(|| Error::invalid("unet.temb_projections", "a resnet has no time projection")))
            .collect()
    }
}
