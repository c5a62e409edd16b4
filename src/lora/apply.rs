//! Putting a set of LoRAs onto a loaded model, and taking them off again.
//!
//! - **merged**: for every touched weight, one [`lora_merge`] launch writes
//!   `W = W₀ + Σᵢ sᵢ·Bᵢ·Aᵢ (+ dense ΔW)` into the weight the model reads, from a pristine copy `W₀`
//!   made on the GPU the first time the weight is touched. Changing the set restores from that
//!   copy (a bit-exact copy, never a subtraction, which would drift in f16) and merges again.
//!   Sampling then costs exactly what it costs without LoRAs.
//! - **fused**: the low-rank factors of every adapter of a layer are concatenated along the rank
//!   (user weight and alpha/rank folded into B) and handed to the layer's slot, so
//!   [`Linear::forward`](crate::nn::Linear) runs `x·Wᵀ + b + Σ sᵢ·Bᵢ(Aᵢ·x)`. Nothing is written
//!   into the weights and a weight change costs an upload of the factors. Adapters without a
//!   low-rank form (LoHa, LoKr, Tucker LoCon, DoRA) and layers without a runtime path
//!   (convolutions, stacked time projections) are merged, so the result is the same in both modes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use super::{BlockTable, LoraFile, LoraModule};
use crate::kernels::binary::add;
use crate::kernels::conv2d::{pack_weight, unpack_host};
use crate::kernels::lora_linear::{LoraAdapter, LoraStack};
use crate::kernels::lora_merge::lora_merge;
use crate::kernels::matmul::linear;
use crate::named_enum::named_enum;
use crate::nn::adaptable::{slot_set, AdaptableWeights, LoraSlot, WeightEntry, WeightLayout};
use crate::weights::Component;
use crate::{Context, DType, Error, GpuTensor, HostTensor, Recorder, Result};

const OP: &str = "lora_apply";

/// How adapters reach the weights (see the module docs).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub enum LoraMode {
    /// Fused when the weights change from image to image (grids over LoRA weights), merged
    /// otherwise; merged falls back to fused when the pristine copies would exceed the budget.
    #[default]
    Auto,
    Merged,
    Fused,
}

named_enum!(LoraMode, op = "lora_mode", unknown = |s| format!("unknown LoRA mode {s:?} (auto, merged or fused)"), {
    Auto => "auto",
    Merged => "merged",
    Fused => "fused",
});

/// One LoRA of a request, with its multipliers for the UNet and the text encoder.
#[derive(Clone, Debug)]
pub struct ActiveLora {
    /// Display name (the file stem), used in logs and infotext.
    pub name: String,
    pub file: Arc<LoraFile>,
    pub unet_weight: f32,
    pub te_weight: f32,
    /// Per-block factors (`lbw=`), on top of the weights.
    pub blocks: Option<BlockTable>,
}

impl ActiveLora {
    pub fn new(name: impl Into<String>, file: Arc<LoraFile>, unet_weight: f32, te_weight: f32) -> ActiveLora {
        ActiveLora { name: name.into(), file, unet_weight, te_weight, blocks: None }
    }

    /// The multiplier of module `m`: the component's weight times its block's weight.
    fn weight(&self, m: &LoraModule) -> f32 {
        let w = match m.component {
            Component::Unet => self.unet_weight,
            _ => self.te_weight,
        };
        match &self.blocks {
            Some(b) => w * b.multiplier(m.component, &m.target),
            None => w,
        }
    }
}

/// What one LoRA did to the model.
#[derive(Clone, Debug)]
pub struct LoraApplied {
    pub name: String,
    /// Modules that found their weight in the model.
    pub applied: usize,
    /// Modules in the file, matched or not (unmatched key groups included).
    pub total: usize,
    /// Adapter keys of the file that target nothing in this model.
    pub unmatched: Vec<String>,
}

/// What [`LoraState::apply`] did.
#[derive(Clone, Debug, Default)]
pub struct ApplyReport {
    pub loras: Vec<LoraApplied>,
    /// Weights written by a merge.
    pub merged_weights: usize,
    /// Layers running adapters at run time.
    pub fused_weights: usize,
    /// Nothing changed: the same set with the same weights was already applied.
    pub unchanged: bool,
}

/// What is applied now: file identity, weights and the mode (compared to skip redundant work).
type Signature = (Vec<(usize, u32, u32, Option<[u32; 26]>)>, LoraMode, bool);

/// The LoRA state of one loaded model: pristine copies of the weights touched so far, which of
/// them currently hold a merge, and which layer slots hold runtime adapters.
#[derive(Default)]
pub struct LoraState {
    pristine: HashMap<(Component, String), GpuTensor>,
    merged: Vec<(Component, String)>,
    fused: Vec<LoraSlot>,
    current: Option<Signature>,
    /// Most bytes of pristine copies merged mode may keep before `Auto` prefers fused.
    pub pristine_budget: u64,
}

/// One adapter module's share of a weight.
struct Contribution<'a> {
    module: &'a LoraModule,
    mult: f32,
}

impl LoraState {
    pub fn new() -> LoraState {
        LoraState { pristine_budget: 4 << 30, ..Default::default() }
    }

    /// Bytes held by pristine copies.
    pub fn pristine_bytes(&self) -> u64 {
        self.pristine.values().map(GpuTensor::bytes).sum()
    }

    /// Restore every touched weight and empty every slot: the model as loaded.
    pub fn clear(&mut self, ctx: &Context, adaptable: &AdaptableWeights) -> Result<()> {
        for slot in self.fused.drain(..) {
            slot_set(&slot, None);
        }
        let mut rec = Recorder::new();
        for key in self.merged.drain(..) {
            let (Some(entry), Some(p)) = (adaptable.get(key.0, &key.1), self.pristine.get(&key)) else {
                return Err(Error::invalid(OP, format!("{}: lost track of a merged weight", key.1)));
            };
            lora_merge(ctx, &mut rec, p, &entry.tensor, None)?;
        }
        rec.submit(ctx)?;
        self.current = None;
        Ok(())
    }

    /// Make the model run with exactly `loras` (an empty list restores it). `weights_vary` says
    /// the caller will change weights between images, which makes `Auto` choose fused.
    pub fn apply(
        &mut self,
        ctx: &Context,
        adaptable: &AdaptableWeights,
        dtype: DType,
        loras: &[ActiveLora],
        mode: LoraMode,
        weights_vary: bool,
    ) -> Result<ApplyReport> {
        let sig: Signature = (
            loras
                .iter()
                .map(|l| {
                    let blocks = l.blocks.as_ref().map(BlockTable::bits);
                    (Arc::as_ptr(&l.file) as usize, l.unet_weight.to_bits(), l.te_weight.to_bits(), blocks)
                })
                .collect(),
            mode,
            weights_vary,
        );
        if self.current.as_ref() == Some(&sig) {
            return Ok(ApplyReport { unchanged: true, ..Default::default() });
        }
        self.clear(ctx, adaptable)?;
        match self.apply_inner(ctx, adaptable, dtype, loras, mode, weights_vary) {
            Ok(report) => {
                self.current = Some(sig);
                Ok(report)
            }
            Err(e) => {
                // Leave the model as loaded rather than half-patched.
                self.clear(ctx, adaptable)?;
                Err(e)
            }
        }
    }

    fn apply_inner(
        &mut self,
        ctx: &Context,
        adaptable: &AdaptableWeights,
        dtype: DType,
        loras: &[ActiveLora],
        mode: LoraMode,
        weights_vary: bool,
    ) -> Result<ApplyReport> {
        let mut report = ApplyReport::default();
        let mut by_weight: BTreeMap<(Component, String), (WeightEntry, Vec<Contribution>)> = BTreeMap::new();
        for l in loras {
            let mut done = LoraApplied {
                name: l.name.clone(),
                applied: 0,
                total: l.file.modules.len() + l.file.unmatched.len(),
                unmatched: l.file.unmatched.clone(),
            };
            for m in &l.file.modules {
                let Some(entry) = adaptable.get(m.component, &m.target) else {
                    done.unmatched.push(m.key.clone());
                    continue;
                };
                done.applied += 1;
                let mult = l.weight(m);
                if mult == 0.0 {
                    continue;
                }
                let key = (m.component, m.target.clone());
                by_weight.entry(key).or_insert_with(|| (entry, Vec::new())).1.push(Contribution { module: m, mult });
            }
            if done.applied == 0 {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "{}: none of its {} modules matches a weight of this model",
                        l.file.path.display(),
                        done.total
                    ),
                ));
            }
            report.loras.push(done);
        }
        let fused_mode = match mode {
            LoraMode::Fused => true,
            LoraMode::Merged => false,
            LoraMode::Auto => {
                let new_bytes: u64 = by_weight
                    .iter()
                    .filter(|(k, _)| !self.pristine.contains_key(*k))
                    .map(|(_, (e, _))| e.tensor.bytes())
                    .sum();
                weights_vary || self.pristine_bytes() + new_bytes > self.pristine_budget
            }
        };
        let mut rec = Recorder::new();
        for (key, (entry, cs)) in &by_weight {
            // Runtime path: the low-rank adapters of a layer that has one. DoRA normalizes the
            // whole patched weight, so a weight with a DoRA adapter is merged as a whole.
            let runtime = fused_mode && entry.slot.is_some() && cs.iter().all(|c| c.module.dora_scale.is_none());
            let (fused, merged): (Vec<&Contribution>, Vec<&Contribution>) =
                cs.iter().partition(|c| runtime && c.module.low_rank().is_some());
            if !fused.is_empty() {
                let stack = fused_stack(ctx, entry, &fused, dtype)?;
                let slot = entry.slot.as_ref().ok_or_else(|| Error::invalid(OP, "fusable weight without a slot"))?;
                slot_set(slot, Some(Arc::new(stack)));
                self.fused.push(slot.clone());
                report.fused_weights += 1;
            }
            if !merged.is_empty() {
                if !self.pristine.contains_key(key) {
                    let copy = GpuTensor::empty(ctx, &entry.tensor.shape, entry.tensor.dtype)?;
                    lora_merge(ctx, &mut rec, &entry.tensor, &copy, None)?;
                    self.pristine.insert(key.clone(), copy);
                }
                let pristine = &self.pristine[key];
                self.merge_one(ctx, &mut rec, key, entry, pristine, &merged)?;
                self.merged.push(key.clone());
                report.merged_weights += 1;
                // Keep the host-side factor uploads of one submission bounded.
                if rec.len() >= 64 {
                    rec.submit(ctx)?;
                }
            }
        }
        rec.submit(ctx)?;
        Ok(report)
    }

    fn merge_one(
        &self,
        ctx: &Context,
        rec: &mut Recorder,
        key: &(Component, String),
        entry: &WeightEntry,
        pristine: &GpuTensor,
        cs: &[&Contribution],
    ) -> Result<()> {
        let shape = entry.shape();
        let n = shape.first().copied().unwrap_or(1);
        let numel: usize = shape.iter().product();
        let k = numel / n.max(1);
        let has_dora = cs.iter().any(|c| c.module.dora_scale.is_some());
        let mut downs: Vec<(HostTensor, HostTensor, f32)> = Vec::new();
        let mut full: Option<Vec<f32>> = None;
        if has_dora {
            // DoRA normalizes the patched weight, so the whole sum is built on the host in
            // order (multiple DoRA adapters are order-dependent) from W₀.
            // The pristine copy may have been recorded just now.
            rec.submit(ctx)?;
            let w0 = match entry.layout {
                WeightLayout::Plain => pristine.to_vec(ctx)?,
                WeightLayout::ConvPacked { shape, tm } => unpack_host(&pristine.to_vec(ctx)?, shape, tm)?,
            };
            let mut w: Vec<f64> = w0.iter().map(|&v| v as f64).collect();
            for c in cs {
                let d = c.module.delta()?;
                match &c.module.dora_scale {
                    Some(m) => dora_patch(&mut w, &d.data, m, n, k, c.mult as f64, &key.1)?,
                    None => w.iter_mut().zip(&d.data).for_each(|(a, &b)| *a += c.mult as f64 * b as f64),
                }
            }
            full = Some(w.iter().zip(&w0).map(|(&a, &b)| (a - b as f64) as f32).collect());
        } else {
            for c in cs {
                match c.module.low_rank() {
                    Some((down, up, scale)) => downs.push((down, up, scale * c.mult)),
                    None => {
                        let d = c.module.delta()?;
                        let f = full.get_or_insert_with(|| vec![0.0; numel]);
                        f.iter_mut().zip(&d.data).for_each(|(a, &b)| *a += c.mult * b);
                    }
                }
            }
        }
        let full = match full {
            Some(f) => Some(GpuTensor::from_slice(ctx, &[n, k], &f, DType::F32)?),
            None => None,
        };
        // Σ sᵢ·Bᵢ·Aᵢ as one f32 GEMM (the tiled kernel, far faster than a per-element rank loop):
        // `B_cat [N, ΣR] · A_catᵀᵀ`, with A_cat handed over transposed `[K, ΣR]` as the linear's weight.
        let full = if downs.is_empty() {
            full
        } else {
            let (u, d) = concat_factors(&downs, n, k, &key.1)?;
            let r = d.shape[0];
            let mut dt = vec![0f32; k * r];
            for j in 0..r {
                for c in 0..k {
                    dt[c * r + j] = d.data[j * k + c];
                }
            }
            let ut = GpuTensor::from_host(ctx, &u, DType::F32)?;
            let dtt = GpuTensor::from_slice(ctx, &[k, r], &dt, DType::F32)?;
            let product = linear(ctx, rec, &ut, &dtt, None)?;
            match full {
                Some(f) => Some(add(ctx, rec, &product, &f)?),
                None => Some(product),
            }
        };
        match entry.layout {
            WeightLayout::Plain => {
                let w2 = entry.tensor.reshape(&[n, k])?;
                let p2 = pristine.reshape(&[n, k])?;
                lora_merge(ctx, rec, &p2, &w2, full.as_ref())
            }
            WeightLayout::ConvPacked { shape, tm } => {
                // The delta is packed the way the weight is, then added element for element.
                let full = match full {
                    Some(f) => Some(pack_weight(ctx, rec, &f.reshape(&shape)?, tm)?.packed),
                    None => None,
                };
                let blocks = shape[0].div_ceil(tm as usize);
                let rows = [blocks, entry.tensor.numel() / blocks];
                let full = full.map(|f| f.reshape(&rows)).transpose()?;
                lora_merge(ctx, rec, &pristine.reshape(&rows)?, &entry.tensor.reshape(&rows)?, full.as_ref())
            }
        }
    }
}

/// `(up [N, ΣR] with each adapter's scale folded in, down [ΣR, K])`.
fn concat_factors(
    parts: &[(HostTensor, HostTensor, f32)],
    n: usize,
    k: usize,
    what: &str,
) -> Result<(HostTensor, HostTensor)> {
    let total: usize = parts.iter().map(|(d, _, _)| d.shape[0]).sum();
    let mut up = vec![0f32; n * total];
    let mut down = Vec::with_capacity(total * k);
    let mut col = 0;
    for (d, u, s) in parts {
        let r = d.shape[0];
        if d.numel() != r * k || u.numel() != n * r {
            return Err(Error::shape(
                OP,
                format!("{what}: factors {:?} and {:?} do not fit [{n}, {k}]", u.shape, d.shape),
            ));
        }
        down.extend_from_slice(&d.data);
        for row in 0..n {
            for j in 0..r {
                up[row * total + col + j] = u.data[row * r + j] * s;
            }
        }
        col += r;
    }
    Ok((HostTensor::new(&[n, total], up)?, HostTensor::new(&[total, k], down)?))
}

/// The layer's adapters as one rank-ΣR adapter (scales in B) for [`LoraStack`].
fn fused_stack(ctx: &Context, entry: &WeightEntry, cs: &[&Contribution], dtype: DType) -> Result<LoraStack> {
    let shape = entry.shape();
    let n = shape.first().copied().unwrap_or(1);
    let k = shape.iter().product::<usize>() / n.max(1);
    let parts = cs
        .iter()
        .map(|c| {
            let (d, u, s) =
                c.module.low_rank().ok_or_else(|| Error::invalid(OP, "fused adapter has no low-rank form"))?;
            Ok((d, u, s * c.mult))
        })
        .collect::<Result<Vec<_>>>()?;
    let (up, down) = concat_factors(&parts, n, k, &cs[0].module.target)?;
    LoraStack::new(ctx, &[LoraAdapter { down, up, scale: 1.0 }], dtype)
}

/// `W ← W + μ·(V ⊙ m/‖V‖ − W)` with `V = W + ΔW` (ΔW already alpha-scaled): DoRA's magnitude
/// step, norms per output row when `m` has one value per row, per input column otherwise.
pub(super) fn dora_patch(
    w: &mut [f64],
    delta: &[f32],
    m: &HostTensor,
    n: usize,
    k: usize,
    mu: f64,
    what: &str,
) -> Result<()> {
    let v: Vec<f64> = w.iter().zip(delta).map(|(&a, &b)| a + b as f64).collect();
    let eps = f32::EPSILON as f64;
    if m.numel() == n {
        for row in 0..n {
            let vr = &v[row * k..(row + 1) * k];
            let norm = vr.iter().map(|x| x * x).sum::<f64>().sqrt() + eps;
            let g = m.data[row] as f64 / norm;
            for j in 0..k {
                let i = row * k + j;
                w[i] += mu * (v[i] * g - w[i]);
            }
        }
        return Ok(());
    }
    // Per input channel: `m` is [1, in, (kh, kw)] over W viewed as [out, in, kh·kw].
    let inn = m.numel();
    let shape_m = m.shape.iter().product::<usize>();
    if inn == 0 || !k.is_multiple_of(inn) || shape_m != inn {
        return Err(Error::shape(
            OP,
            format!(
                "{what}: DoRA magnitude {:?} matches neither {n} rows nor the input channels of [{n}, {k}]",
                m.shape
            ),
        ));
    }
    let kk = k / inn;
    let mut norms = vec![0f64; inn];
    for row in 0..n {
        for (c, norm) in norms.iter_mut().enumerate() {
            for t in 0..kk {
                let x = v[row * k + c * kk + t];
                *norm += x * x;
            }
        }
    }
    for row in 0..n {
        for (c, norm) in norms.iter().enumerate() {
            let g = m.data[c] as f64 / (norm.sqrt() + eps);
            for t in 0..kk {
                let i = row * k + c * kk + t;
                w[i] += mu * (v[i] * g - w[i]);
            }
        }
    }
    Ok(())
}
