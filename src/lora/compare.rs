//! `lora compare`: how similar LoRAs' ΔWs are, module by module, per UNet block and overall, and
//! where stacking them interferes.
//!
//! - Cosine: ⟨ΔW_a, ΔW_b⟩_F / (‖ΔW_a‖_F ‖ΔW_b‖_F) of the weighted ΔWs (a negative multiplier flips
//!   the sign). Per block and overall the sums run over every module of the two LoRAs, a module
//!   one of them lacks counting as zero: Σ⟨a,b⟩ / √(Σ‖a‖² Σ‖b‖²).
//! - Subspace similarity (Hu et al. 2021): with U, V the top-K left / right singular vectors,
//!   φ_out = ‖U_aᵀU_b‖²_F / K and φ_in = ‖V_aᵀV_b‖²_F / K, K = min(--subspace-rank, both ranks);
//!   1 = the same directions, 0 = orthogonal ones, regardless of sign and scale.
//! - Strength of a module in a LoRA: ‖w·ΔW‖_F / ‖W‖_F (relative to the base weight) with a model,
//!   else the module's share of the LoRA's total energy ‖w·ΔW‖² / Σ‖w·ΔW‖².
//! - Interference of a shared module: √(strength_a · strength_b) · max(|cosine|, φ_out): both
//!   change the layer strongly and write into the same output directions.
//!
//! Modules are matched through the model's names with a model (any key convention), by the key
//! as written without one. DoRA modules are compared by the low-rank update of their direction.

mod delta;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::LazyLock;

use self::delta::{subspace_similarity, Basis, Delta};
use super::block_weights::block_of;
use super::extract::kohya_key;
use super::keys::naming_layout;
use super::{file_kind, LoraFile, LoraKind, LoraSpec, ModuleIndex};
use crate::error::{Error, Result};
use crate::weights::detect::{detect, Family};
use crate::weights::names::LdmLayout;
use crate::weights::{Component, ModelFiles, SafeTensorsFile};

const OP: &str = "lora_compare";

/// Rows of the per-block tables and the heat-map, in order: text encoders, the UNet blocks as
/// A1111's LoRA Block Weight extension numbers them, and modules in no block.
pub const BLOCK_ROWS: [&str; 28] = [
    "TE", "TE2", "IN00", "IN01", "IN02", "IN03", "IN04", "IN05", "IN06", "IN07", "IN08", "IN09", "IN10", "IN11", "MID",
    "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11",
    "OTHER",
];
const ROW_OTHER: usize = 27;

#[derive(Clone, Debug)]
pub struct CompareOptions {
    /// K of the subspace similarity (capped per module by the two ranks).
    pub subspace_rank: usize,
}

impl Default for CompareOptions {
    fn default() -> Self {
        CompareOptions { subspace_rank: 4 }
    }
}

/// One compared LoRA.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ComparedLora {
    pub name: String,
    pub path: String,
    pub unet_weight: f32,
    pub te_weight: f32,
    pub kind: String,
    pub modules: usize,
    /// Σ‖w·ΔW‖²_F over its modules.
    pub energy: f64,
}

/// One module both LoRAs `a` and `b` (indices into [`CompareReport::loras`]) change.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModuleSim {
    /// kohya-style name (`lora_unet_…`, `lora_te_…`): from the model's weight path with a model,
    /// the key as written without one.
    pub module: String,
    pub block: String,
    pub a: usize,
    pub b: usize,
    /// The matrix compared: `[out, in·kh·kw]`.
    pub rows: usize,
    pub cols: usize,
    pub cosine: f64,
    /// K of the subspace similarity.
    pub k: usize,
    pub phi_out: f64,
    pub phi_in: f64,
    pub strength_a: f64,
    pub strength_b: f64,
    pub interference: f64,
}

/// One block of one pair.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BlockSim {
    pub block: String,
    /// Cosine over the block's modules (absent ones count as zero); None when either LoRA leaves
    /// the block unchanged.
    pub cosine: Option<f64>,
    /// φ_out of the shared modules, averaged with weights ‖ΔW_a‖·‖ΔW_b‖; None without one.
    pub phi_out: Option<f64>,
    /// The largest interference of its shared modules (0 without one).
    pub interference: f64,
    pub shared: usize,
}

/// One pair of LoRAs.
#[derive(Clone, Debug, serde::Serialize)]
pub struct PairSim {
    pub a: usize,
    pub b: usize,
    /// Cosine over all modules (absent ones count as zero).
    pub cosine: f64,
    pub shared: usize,
    pub only_a: usize,
    pub only_b: usize,
    /// One entry per [`CompareReport::blocks`] row.
    pub blocks: Vec<BlockSim>,
}

/// Everything `lora compare` computes.
#[derive(Clone, Debug, serde::Serialize)]
pub struct CompareReport {
    pub loras: Vec<ComparedLora>,
    /// `relative_to_base` (‖w·ΔW‖/‖W‖) or `energy_share` (‖w·ΔW‖² / the LoRA's Σ).
    pub strength: String,
    pub subspace_rank: usize,
    /// The block rows some LoRA changes, in [`BLOCK_ROWS`] order.
    pub blocks: Vec<String>,
    pub pairs: Vec<PairSim>,
    /// Every shared module of every pair.
    pub modules: Vec<ModuleSim>,
    pub notes: Vec<String>,
}

impl CompareReport {
    /// The `n` shared modules with the largest interference, largest first.
    pub fn top(&self, n: usize) -> Vec<&ModuleSim> {
        let mut v: Vec<&ModuleSim> = self.modules.iter().collect();
        v.sort_by(|x, y| y.interference.total_cmp(&x.interference).then_with(|| x.module.cmp(&y.module)));
        v.truncate(n);
        v
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::invalid(OP, e.to_string()))
    }
}

/// A module of one LoRA, ready to compare.
struct Entry {
    component: Component,
    /// The model's weight path (with a model) or the key.
    target: String,
    row: usize,
    delta: Delta,
    energy: f64,
}

struct Loaded {
    entries: BTreeMap<String, Entry>,
    info: ComparedLora,
}

/// How modules are named when a model resolves them: kohya's names for its family and layout.
struct Naming {
    index: ModuleIndex,
    family: Family,
    layout: Option<LdmLayout>,
}

/// The [`BLOCK_ROWS`] index of a block of [`super::block_weights::BLOCKS_26`] (0 = BASE).
fn row_of_block(component: Component, block: Option<usize>) -> usize {
    match (component, block) {
        (Component::TextEncoder, _) => 0,
        (Component::TextEncoder2, _) => 1,
        (_, Some(b @ 1..=12)) => 2 + (b - 1),
        (_, Some(13)) => 14,
        (_, Some(b @ 14..=25)) => 15 + (b - 14),
        _ => ROW_OTHER,
    }
}

/// `down_blocks_1_attentions_0` / `up_blocks.2.resnets.1`: a UNet block in kohya or PEFT spelling.
static DIFFUSERS_BLOCK: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^(down_blocks|up_blocks)[_.](\d+)[_.](attentions|resnets|downsamplers|upsamplers)[_.](\d+)")
        .expect("a valid pattern")
});

/// The row of a UNet module named only by its key: LDM names (`input_blocks_4_1_…`) give the
/// block directly, kohya diffusers names (`down_blocks_1_attentions_0_…`) and PEFT paths are
/// turned into the diffusers path [`block_of`] reads.
fn row_of_key(component: Component, key: &str) -> usize {
    if component != Component::Unet {
        return row_of_block(component, None);
    }
    let rest = key.strip_prefix("lora_unet_").or_else(|| key.strip_prefix("unet.")).unwrap_or(key);
    let num = |s: &str| s.split(['_', '.']).next().and_then(|n| n.parse::<usize>().ok());
    let block = if let Some(n) = rest.strip_prefix("input_blocks").and_then(|r| num(&r[1..])) {
        Some(1 + n)
    } else if rest.starts_with("middle_block") {
        Some(13)
    } else if let Some(n) = rest.strip_prefix("output_blocks").and_then(|r| num(&r[1..])) {
        Some(14 + n)
    } else {
        let path = match DIFFUSERS_BLOCK.captures(rest) {
            Some(c) => format!("{}.{}.{}.{}", &c[1], &c[2], &c[3], &c[4]),
            None if rest.starts_with("mid_block") => "mid_block".to_string(),
            None => rest.to_string(),
        };
        block_of(component, &path)
    };
    row_of_block(component, block.filter(|&b| b <= 25))
}

fn load(spec: &LoraSpec, naming: Option<&Naming>, bases: &mut Vec<(String, &'static str, String)>) -> Result<Loaded> {
    let path = &spec.path;
    if !path.is_file() {
        return Err(Error::invalid(OP, format!("LoRA {} does not exist", path.display())));
    }
    if spec.lbw.is_some() {
        return Err(Error::invalid(
            OP,
            format!("{}: block weights (lbw=) are not supported by compare", path.display()),
        ));
    }
    let file = SafeTensorsFile::open(path)?;
    let modules = match naming {
        Some(n) => LoraFile::from_file(path, &file, &n.index)?.modules,
        None => {
            let parsed = super::resize::parse_standalone(path, &file)?;
            if let Some((base, why)) = parsed.base {
                bases.push((path.display().to_string(), base, why));
            }
            parsed.modules
        }
    };
    let mut entries = BTreeMap::new();
    for m in &modules {
        let w = if m.component == Component::Unet { spec.unet_weight } else { spec.te_weight };
        let delta = Delta::new(m, w).map_err(|e| Error::invalid(OP, format!("{}: {e}", path.display())))?;
        let (id, row) = match naming {
            Some(n) => {
                let id = kohya_key(n.family, m.component, &m.target, n.layout.as_ref())?;
                (id, row_of_block(m.component, block_of(m.component, &m.target)))
            }
            None => (m.key.clone(), row_of_key(m.component, &m.key)),
        };
        let energy = delta.energy();
        let e = Entry { component: m.component, target: m.target.clone(), row, delta, energy };
        if entries.insert(id.clone(), e).is_some() {
            return Err(Error::invalid(OP, format!("{}: two modules change {id}", path.display())));
        }
    }
    let kind = file_kind(&modules);
    let info = ComparedLora {
        name: spec.name(),
        path: path.display().to_string(),
        unet_weight: spec.unet_weight,
        te_weight: spec.te_weight,
        kind: kind.name().to_string(),
        modules: entries.len(),
        energy: entries.values().map(|e| e.energy).sum(),
    };
    Ok(Loaded { entries, info })
}

fn cosine(dot: f64, ea: f64, eb: f64) -> f64 {
    if ea > 0.0 && eb > 0.0 {
        (dot / (ea * eb).sqrt()).clamp(-1.0, 1.0)
    } else {
        0.0
    }
}

/// ‖W‖_F of the base weight each shared module changes (with a model).
fn base_norms(model: &ModelFiles, loaded: &[Loaded], shared: &BTreeSet<String>) -> Result<BTreeMap<String, f64>> {
    let mut out = BTreeMap::new();
    for id in shared {
        let e = loaded.iter().find_map(|l| l.entries.get(id)).expect("a shared module has an entry");
        let w = model.builder(e.component).get_unchecked(&e.target)?;
        out.insert(id.clone(), w.data.iter().map(|&x| (x as f64) * (x as f64)).sum::<f64>().sqrt());
    }
    Ok(out)
}

/// Compares the LoRAs of `specs` (at least two); `model` matches modules across key conventions
/// and gives strengths relative to its weights. Errors, before any result: fewer than two
/// LoRAs, a missing or non-LoRA file, LoRAs for different base models or a shared module whose
/// shapes differ, and no module changed by two of them.
pub fn compare(
    specs: &[LoraSpec],
    model: Option<&ModelFiles>,
    o: &CompareOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<CompareReport> {
    if specs.len() < 2 {
        return Err(Error::invalid(OP, format!("give at least two LoRAs to compare (got {})", specs.len())));
    }
    if o.subspace_rank == 0 {
        return Err(Error::invalid(OP, "the subspace rank must be at least 1"));
    }
    let naming = model.map(|m| {
        let index = ModuleIndex::new(m);
        let family = index.family.unwrap_or(Family::Sd1);
        Naming { index, family, layout: naming_layout(m, detect(m).ok().as_ref()) }
    });
    let mut bases = Vec::new();
    let loaded = specs.iter().map(|s| load(s, naming.as_ref(), &mut bases)).collect::<Result<Vec<_>>>()?;
    if let Some((p0, b0, why0)) = bases.first() {
        if let Some((p, b, why)) = bases.iter().find(|(_, b, _)| b != b0) {
            return Err(Error::invalid(
                OP,
                format!("the LoRAs are for different base models: {p0} is for {b0} ({why0}), {p} for {b} ({why})"),
            ));
        }
    }
    // Modules changed by at least two LoRAs, with one shape.
    let mut owners: BTreeMap<&str, Vec<usize>> = BTreeMap::new();
    for (i, l) in loaded.iter().enumerate() {
        for id in l.entries.keys() {
            owners.entry(id).or_default().push(i);
        }
    }
    let shared: BTreeSet<String> = owners.iter().filter(|(_, v)| v.len() >= 2).map(|(id, _)| id.to_string()).collect();
    if shared.is_empty() {
        let hint = if model.is_none() { "; LoRAs with other key conventions match through -m MODEL" } else { "" };
        return Err(Error::invalid(OP, format!("no module is changed by two of the LoRAs: nothing to compare{hint}")));
    }
    for id in &shared {
        let dims: Vec<(usize, usize, usize)> = owners[id.as_str()]
            .iter()
            .map(|&i| (i, loaded[i].entries[id].delta.rows, loaded[i].entries[id].delta.cols))
            .collect();
        if let Some(&(j, r, c)) = dims.iter().find(|d| (d.1, d.2) != (dims[0].1, dims[0].2)) {
            let (i, r0, c0) = dims[0];
            return Err(Error::shape(
                OP,
                format!(
                    "{id} is {r0}×{c0} in {} but {r}×{c} in {}: LoRAs for different base models (SD1.x vs SDXL?)",
                    loaded[i].info.path, loaded[j].info.path
                ),
            ));
        }
    }
    let norms = match model {
        Some(m) => Some(base_norms(m, &loaded, &shared)?),
        None => None,
    };
    // Singular vectors of every shared module of every LoRA (the slow part).
    let k = o.subspace_rank;
    let mut bases_of: Vec<BTreeMap<String, Basis>> = loaded.iter().map(|_| BTreeMap::new()).collect();
    let todo: Vec<(usize, &String)> =
        shared.iter().flat_map(|id| owners[id.as_str()].iter().map(move |&i| (i, id))).collect();
    for (n, (i, id)) in todo.iter().enumerate() {
        progress(n, todo.len(), id);
        let b = loaded[*i].entries[*id].delta.basis(k, id)?;
        bases_of[*i].insert(id.to_string(), b);
    }
    progress(todo.len(), todo.len(), "");
    let strength = |l: &Loaded, id: &str| {
        let e = l.entries[id].energy;
        match &norms {
            Some(n) if n[id] > 0.0 => e.sqrt() / n[id],
            Some(_) => e.sqrt(),
            None if l.info.energy > 0.0 => e / l.info.energy,
            None => 0.0,
        }
    };
    let mut rows_used = [false; BLOCK_ROWS.len()];
    loaded.iter().flat_map(|l| l.entries.values()).for_each(|e| rows_used[e.row] = true);
    let rows: Vec<usize> = (0..BLOCK_ROWS.len()).filter(|&r| rows_used[r]).collect();
    let mut modules = Vec::new();
    let mut pairs = Vec::new();
    for a in 0..loaded.len() {
        for b in a + 1..loaded.len() {
            let (la, lb) = (&loaded[a], &loaded[b]);
            let n = BLOCK_ROWS.len();
            let (mut dot, mut ea, mut eb) = (vec![0f64; n], vec![0f64; n], vec![0f64; n]);
            let (mut phi_sum, mut phi_w, mut worst, mut count) =
                (vec![0f64; n], vec![0f64; n], vec![0f64; n], vec![0; n]);
            la.entries.values().for_each(|e| ea[e.row] += e.energy);
            lb.entries.values().for_each(|e| eb[e.row] += e.energy);
            for (id, x) in &la.entries {
                let Some(y) = lb.entries.get(id) else { continue };
                let d = x.delta.dot(&y.delta);
                let (ba, bb) = (&bases_of[a][id], &bases_of[b][id]);
                let kk = k.min(ba.rank).min(bb.rank);
                let (phi_out, phi_in) = subspace_similarity(ba, bb, kk);
                let c = cosine(d, x.energy, y.energy);
                let (sa, sb) = (strength(la, id), strength(lb, id));
                let score = (sa * sb).sqrt() * c.abs().max(phi_out);
                let r = x.row;
                dot[r] += d;
                let w = (x.energy * y.energy).sqrt();
                phi_sum[r] += w * phi_out;
                phi_w[r] += w;
                worst[r] = worst[r].max(score);
                count[r] += 1;
                modules.push(ModuleSim {
                    module: id.clone(),
                    block: BLOCK_ROWS[r].to_string(),
                    a,
                    b,
                    rows: x.delta.rows,
                    cols: x.delta.cols,
                    cosine: c,
                    k: kk,
                    phi_out,
                    phi_in,
                    strength_a: sa,
                    strength_b: sb,
                    interference: score,
                });
            }
            let blocks = rows
                .iter()
                .map(|&r| BlockSim {
                    block: BLOCK_ROWS[r].to_string(),
                    cosine: (ea[r] > 0.0 && eb[r] > 0.0).then(|| cosine(dot[r], ea[r], eb[r])),
                    phi_out: (count[r] > 0).then(|| if phi_w[r] > 0.0 { phi_sum[r] / phi_w[r] } else { 0.0 }),
                    interference: worst[r],
                    shared: count[r],
                })
                .collect();
            let shared_n: usize = count.iter().sum();
            pairs.push(PairSim {
                a,
                b,
                cosine: cosine(dot.iter().sum(), la.info.energy, lb.info.energy),
                shared: shared_n,
                only_a: la.entries.len() - shared_n,
                only_b: lb.entries.len() - shared_n,
                blocks,
            });
        }
    }
    let mut notes = Vec::new();
    if loaded.iter().any(|l| l.info.kind == LoraKind::Dora.name()) {
        notes.push("DoRA: the low-rank update of the direction is compared; the magnitude vector is left out".into());
    }
    Ok(CompareReport {
        loras: loaded.into_iter().map(|l| l.info).collect(),
        strength: if model.is_some() { "relative_to_base" } else { "energy_share" }.into(),
        subspace_rank: k,
        blocks: rows.iter().map(|&r| BLOCK_ROWS[r].to_string()).collect(),
        pairs,
        modules,
        notes,
    })
}
