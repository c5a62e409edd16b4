//! Launcher for `shaders/attention.wgsl`: multi-head attention (self and cross, optional causal
//! mask) as one flash-attention kernel with an online softmax; the `[Sq, Sk]` score matrix is never
//! stored.
//!
//! Layout (no permutes): `q [B, Sq, H·D]`, `k, v [B, Sk, H·D]`, out `[B, Sq, H·D]`; head `h` uses
//! columns `h·D..(h+1)·D`. Head dims 1..=160.
//!
//! Tiling: a workgroup owns BQ query rows of one (batch, head) and walks K/V in tiles of BK keys
//! staged in workgroup memory; scores are computed in SR×4 register blocks and P·V accumulates in
//! OR rows × OC4 vec4 columns per thread (at most 64 floats), the head dim being split over CG
//! lanes, so D = 160 does not need 160 accumulators per thread. Tile sizes are chosen per head
//! dim, query count and dtype to fit `ctx.caps.max_workgroup_storage` ([`Tiling::choose`]); every
//! head dim also has a tiling within the 16 KiB WebGPU default.
//!
//! Kernel choice: on CPU adapters (lavapipe) [`attention_into`] runs
//! [`attention_sg`](crate::kernels::attention_sg) instead (no workgroup memory, no barriers; about
//! 20× faster there) wherever it can: fixed-width subgroups, D % 4 == 0, 4-element-aligned
//! tensors. GPUs keep this kernel.
//!
//! Big tensors: launches cover whole batches whose q/k/v/out slices fit one binding; a batch whose
//! q slice alone is too big is split by query rows. A single batch's K or V must fit one binding.

use crate::gpu::{KernelSource, PipelineKey, Recorder};
use crate::kernels::attention_launch::{annotate, check_out, head_dim, launch_attention};
use crate::kernels::attention_sg;
use crate::kernels::autotune::{self, Search};
use crate::tensor::{DType, GpuTensor};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("attention");

pub use super::attention_launch::MAX_HEAD_DIM;

const OP: &str = "attention";

/// One tiling of the kernel (its WGSL override constants; see the shader's header).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Tiling {
    /// Threads per workgroup.
    pub nt: u32,
    /// Query rows per workgroup.
    pub bq: u32,
    /// Keys per tile (a multiple of 4).
    pub bk: u32,
    /// vec4 columns of the head dim, `ceil(D/4)`.
    pub c4: u32,
    /// O phase: column lanes per row and vec4 columns per lane (`cg·oc4 ≥ c4`, `oc4 ≤ 4`).
    pub cg: u32,
    pub oc4: u32,
    /// O phase: rows per thread (1, 2 or 4); `bq = nt/cg·or`.
    pub or: u32,
    /// S phase: rows per thread (1, 2 or 4), each with 4 keys; `bq·bk = nt·sr·4`.
    pub sr: u32,
    /// Row strides (in vec4) of the Q tile, the K/V tile and the P tile.
    pub qstr4: u32,
    pub kstr4: u32,
    pub pstr4: u32,
}

impl Tiling {
    /// Bytes of workgroup memory the kernel declares with this tiling.
    pub fn workgroup_bytes(&self, dtype: DType) -> u64 {
        let v4 = 4 * dtype.size() as u64;
        let [bq, bk, qstr4, kstr4, pstr4] = [self.bq, self.bk, self.qstr4, self.kstr4, self.pstr4].map(|x| x as u64);
        let round = |b: u64| b.div_ceil(16) * 16;
        round(v4 * bq * qstr4) + round(v4 * bk * kstr4) + 16 * bq * pstr4 + 4 * (bq * (bk / 4) + bq)
    }

    /// The tiling for head dim `d`, `sq` query rows and `dtype`, within `budget` bytes of
    /// workgroup memory and `max_threads` invocations.
    pub fn choose(d: usize, sq: usize, dtype: DType, budget: u32, max_threads: u32) -> Option<Tiling> {
        Self::ranked(d, sq, dtype, budget, max_threads).into_iter().next()
    }

    /// Every tiling that fits, best first by [`Tiling::choose`]'s preference (the autotune
    /// measures the first few on GPUs).
    pub fn ranked(d: usize, sq: usize, dtype: DType, budget: u32, max_threads: u32) -> Vec<Tiling> {
        if d == 0 || d > MAX_HEAD_DIM {
            return Vec::new();
        }
        let c4 = (d as u32).div_ceil(4);
        // Fewest column lanes that leave at most 4 vec4 columns (16 accumulators per row) each.
        let Some(cg) = [1u32, 2, 4, 8, 16].into_iter().find(|&cg| c4.div_ceil(cg) <= 4) else {
            return Vec::new();
        };
        let oc4 = c4.div_ceil(cg);
        // Odd vec4 strides put neighbouring rows in different banks.
        let odd = |n: u32| n | 1;
        let mut fitting = Vec::new();
        for nt in [128u32, 64, 32, 16] {
            for or in [4u32, 2, 1] {
                if nt > max_threads || nt % cg != 0 {
                    continue;
                }
                let bq = nt / cg * or;
                for bk in [64u32, 32, 16, 8, 4] {
                    // S phase: sr rows × 4 keys per thread, sr ∈ {1, 2, 4}.
                    if (bq * bk) % (4 * nt) != 0 {
                        continue;
                    }
                    let sr = bq * bk / (4 * nt);
                    if ![1, 2, 4].contains(&sr) || bq % sr != 0 {
                        continue;
                    }
                    let t =
                        Tiling { nt, bq, bk, c4, cg, oc4, or, sr, qstr4: odd(c4), kstr4: odd(c4), pstr4: odd(bk / 4) };
                    if t.workgroup_bytes(dtype) <= budget as u64 {
                        fitting.push(t);
                    }
                }
            }
        }
        // Preference: key tiles of at least 16 (barriers per flop), workgroups of at least 64
        // threads (16 or 32 only as a last resort, for small workgroup memory), then the O-phase row
        // reuse (each V load feeds `or` rows), then the work per tile, then more threads.
        let score = |t: &Tiling| (t.bk >= 16, t.nt >= 64, t.or, t.bq * t.bk, t.nt);
        // Far fewer queries than rows (text encoder, tests): the best tiling that is not much
        // taller than the query count, or else the shortest.
        let want_rows = (sq.max(1) as u32).next_power_of_two().max(16);
        let (mut fit, mut tall): (Vec<Tiling>, Vec<Tiling>) = fitting.into_iter().partition(|t| t.bq <= want_rows);
        fit.sort_by_key(|t| std::cmp::Reverse(score(t)));
        tall.sort_by_key(|t| (t.bq, std::cmp::Reverse(score(t))));
        fit.extend(tall);
        fit
    }

    /// How a tiling is written in the autotune store: its eleven constants, `x`-separated.
    pub fn name(&self) -> String {
        let t = self;
        [t.nt, t.bq, t.bk, t.c4, t.cg, t.oc4, t.or, t.sr, t.qstr4, t.kstr4, t.pstr4].map(|v| v.to_string()).join("x")
    }

    /// The inverse of [`Tiling::name`].
    pub fn parse(s: &str) -> Option<Tiling> {
        let v: Vec<u32> = s.split('x').map(|p| p.parse().ok()).collect::<Option<_>>()?;
        match v[..] {
            [nt, bq, bk, c4, cg, oc4, or, sr, qstr4, kstr4, pstr4] => {
                Some(Tiling { nt, bq, bk, c4, cg, oc4, or, sr, qstr4, kstr4, pstr4 })
            }
            _ => None,
        }
    }

    /// Check that this tiling is one the kernel can run for head dim `d` on this device.
    pub fn validate(&self, ctx: &Context, d: usize, dtype: DType) -> Result<()> {
        let t = *self;
        let [nt, bq, bk, c4, cg, oc4, or, sr, qstr4, kstr4, pstr4] =
            [t.nt, t.bq, t.bk, t.c4, t.cg, t.oc4, t.or, t.sr, t.qstr4, t.kstr4, t.pstr4].map(|x| x as u64);
        let ok = [nt, bq, bk, cg, oc4].iter().all(|&x| x > 0)
            && c4 == (d as u64).div_ceil(4)
            && cg * oc4 >= c4
            && oc4 <= 4
            && [or, sr].iter().all(|x| [1, 2, 4].contains(x))
            && nt % cg == 0
            && bq == nt / cg * or
            && bk % 4 == 0
            && bq % sr == 0
            && (bq / sr) * (bk / 4) == nt
            && qstr4 >= c4
            && kstr4 >= c4
            && pstr4 >= bk / 4
            && bq * qstr4.max(pstr4) < 1 << 24
            && bk * kstr4 < 1 << 24;
        if !ok {
            return Err(Error::invalid(OP, format!("tiling {t:?} is inconsistent for head dim {d}")));
        }
        if t.nt > ctx.caps.max_invocations {
            return Err(Error::limit(OP, "threads per workgroup", t.nt as u64, ctx.caps.max_invocations as u64));
        }
        let bytes = t.workgroup_bytes(dtype);
        if bytes > ctx.caps.max_workgroup_storage as u64 {
            return Err(Error::limit(
                OP,
                format!("workgroup bytes of tiling {t:?}"),
                bytes,
                ctx.caps.max_workgroup_storage as u64,
            ));
        }
        Ok(())
    }
}

/// Multi-head attention with scale `1/√D`: `softmax(q·kᵀ/√D [causal]) · v` per head.
/// `q [B, Sq, H·D]`, `k, v [B, Sk, H·D]` → `[B, Sq, H·D]`; `causal` masks key j > query i.
pub fn attention(
    ctx: &Context,
    rec: &mut Recorder,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    heads: usize,
    causal: bool,
) -> Result<GpuTensor> {
    let d = head_dim(q, k, v, heads)?;
    attention_scaled(ctx, rec, q, k, v, heads, causal, 1.0 / (d as f32).sqrt())
}

/// [`attention`] with an explicit softmax scale instead of `1/√D`.
#[allow(clippy::too_many_arguments)]
pub fn attention_scaled(
    ctx: &Context,
    rec: &mut Recorder,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    heads: usize,
    causal: bool,
    scale: f32,
) -> Result<GpuTensor> {
    head_dim(q, k, v, heads)?;
    let out = GpuTensor::empty(ctx, &q.shape, q.dtype)?;
    attention_into(ctx, rec, q, k, v, &out, heads, causal, scale)?;
    Ok(out)
}

/// Attention into an existing `out` of q's shape and dtype (it may not share a buffer with q, k
/// or v).
#[allow(clippy::too_many_arguments)]
pub fn attention_into(
    ctx: &Context,
    rec: &mut Recorder,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    out: &GpuTensor,
    heads: usize,
    causal: bool,
    scale: f32,
) -> Result<()> {
    let d = head_dim(q, k, v, heads)?;
    // CPU adapters: the subgroup kernel (no workgroup memory, no barriers), where it can run.
    if let Some(r) = attention_sg::default_rows(ctx, d) {
        if [q, k, v, out].iter().all(|t| t.vec4_aligned(ctx)) {
            return attention_sg::attention_sg_into(ctx, rec, q, k, v, out, heads, causal, scale, r);
        }
    }
    let ranked = Tiling::ranked(d, q.shape[1], q.dtype, ctx.caps.max_workgroup_storage, ctx.caps.max_invocations);
    let Some(&first) = ranked.first() else {
        return Err(Error::limit(
            OP,
            format!("workgroup bytes for head dim {d}"),
            16384,
            ctx.caps.max_workgroup_storage as u64,
        ));
    };
    let t = tuned_tiling(ctx, q, k, heads, causal, &ranked).unwrap_or(first);
    attention_tiled(ctx, rec, q, k, v, out, heads, causal, scale, t)
}

/// Tilings the autotune measures per shape class: the best few by preference.
const TUNE_CANDIDATES: usize = 6;

/// The fastest of the first [`TUNE_CANDIDATES`] tilings for this shape class (dtype, head dim,
/// query and key counts rounded up to powers of two, causal), measured on first use where the
/// context autotunes (see [`autotune`]); `None` where it does not or the operands are huge.
fn tuned_tiling(
    ctx: &Context,
    q: &GpuTensor,
    k: &GpuTensor,
    heads: usize,
    causal: bool,
    ranked: &[Tiling],
) -> Option<Tiling> {
    let (b, sq, hd, sk) = (q.shape[0], q.shape[1], q.shape[2], k.shape[1]);
    if !autotune::enabled(ctx) || b * sq * hd > 1 << 26 || b * sk * hd > 1 << 26 || b * sq == 0 {
        return None;
    }
    let d = hd / heads.max(1);
    let p2 = |v: usize| v.next_power_of_two();
    let key = format!("attention.{}.d{d}.sq{}.sk{}.c{}", q.dtype.name(), p2(sq), p2(sk), causal as u8);
    let dt = q.dtype;
    // Uploaded tensors are never arena tensors, so a search may run inside a graph recording.
    let up = |rows: usize| GpuTensor::from_slice(ctx, &[b, rows, hd], &vec![0.1; b * rows * hd], dt);
    let (tq, tk, tv, to) = (up(sq).ok()?, up(sk).ok()?, up(sk).ok()?, up(sq).ok()?);
    let record =
        |rec: &mut Recorder, t: &Tiling| attention_dispatches(ctx, rec, &tq, &tk, &tv, &to, heads, causal, 0.1, *t);
    let flops = 4.0 * (b * sq * sk * hd) as f64;
    Some(autotune::pick(
        ctx,
        Search {
            key,
            candidates: ranked.iter().take(TUNE_CANDIDATES).copied().collect(),
            fallback: ranked[0],
            name: Tiling::name,
            parse: Tiling::parse,
            record: &record,
            flops,
        },
    ))
}

/// [`attention_into`] with an explicit [`Tiling`] (for tuning and for testing the small-memory
/// tilings); the tiling is validated against the head dim and the device limits.
#[allow(clippy::too_many_arguments)]
pub fn attention_tiled(
    ctx: &Context,
    rec: &mut Recorder,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    out: &GpuTensor,
    heads: usize,
    causal: bool,
    scale: f32,
    t: Tiling,
) -> Result<()> {
    let from = rec.len();
    attention_dispatches(ctx, rec, q, k, v, out, heads, causal, scale, t)?;
    annotate(rec, from, q, k, heads);
    Ok(())
}

#[allow(clippy::too_many_arguments)]
fn attention_dispatches(
    ctx: &Context,
    rec: &mut Recorder,
    q: &GpuTensor,
    k: &GpuTensor,
    v: &GpuTensor,
    out: &GpuTensor,
    heads: usize,
    causal: bool,
    scale: f32,
    t: Tiling,
) -> Result<()> {
    let d = head_dim(q, k, v, heads)?;
    t.validate(ctx, d, q.dtype)?;
    check_out(q, k, v, out, scale)?;
    let key = PipelineKey::new(&SRC, "main", q.dtype)
        .with("NT", t.nt)
        .with("BQ", t.bq)
        .with("BK", t.bk)
        .with("C4", t.c4)
        .with("CG", t.cg)
        .with("OC4", t.oc4)
        .with("OR", t.or)
        .with("SR", t.sr)
        .with("QSTR4", t.qstr4)
        .with("KSTR4", t.kstr4)
        .with("PSTR4", t.pstr4);

    launch_attention(ctx, rec, OP, &SRC, &key, q, k, v, out, heads, causal, scale, d, t.bq as usize, false)
}
