//! `lora merge`: LoRAs with weights into one kohya LoRA/LoCon file, Σ wᵢ·ΔWᵢ per module.
//!
//! Without a rank the low-rank modules are concatenated along the rank, which is exact: the
//! downs are stacked, the ups set side by side, each input's weight × alpha/rank folded into its
//! factors. LoHa/LoKr/Tucker modules have no such factors: their weighted dense ΔW is factored at
//! its numerical rank (error ~ f32 rounding, reported). With a rank, each module's sum is
//! truncated by SVD (factored when every input is low-rank, so ΔW is never formed) and the error
//! of every module is reported, as extract and resize do.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::delta::{matmul, Mat};
use super::extract::kohya_key;
use super::keys::naming_layout;
use super::lowrank::{LowRankFile, LowRankModule, ModuleError, SvdReport};
use super::module::{LoraKind, LoraModule};
use super::resize::{dense, parse_standalone};
use super::svd::{svd, svd_factored, Spectrum};
use super::{LoraFile, ModuleIndex};
use crate::error::{Error, Result};
use crate::weights::detect::{detect, Family};
use crate::weights::{ModelFiles, SafeTensorsFile};

const OP: &str = "lora_merge";

/// One LoRA to merge and its weight.
#[derive(Clone, Debug, PartialEq)]
pub struct MergeInput {
    pub path: PathBuf,
    pub weight: f32,
}

impl MergeInput {
    /// `PATH[:WEIGHT]` (weight 1 without one). Split at the last ':' only when what follows is a
    /// number, so a Windows path `C:\loras\a.safetensors` stays whole.
    pub fn parse(s: &str) -> Result<MergeInput> {
        let (path, weight) = match s.rsplit_once(':') {
            Some((p, w)) if !p.is_empty() => match w.trim().parse::<f32>() {
                Ok(v) => (p, v),
                Err(_) => (s, 1.0),
            },
            _ => (s, 1.0),
        };
        if path.is_empty() {
            return Err(Error::invalid(OP, format!("'{s}' names no file")));
        }
        if !weight.is_finite() {
            return Err(Error::invalid(OP, format!("'{s}': the weight {weight} is not a finite number")));
        }
        Ok(MergeInput { path: PathBuf::from(path), weight })
    }
}

#[derive(Clone, Debug, Default)]
pub struct MergeOptions {
    /// Truncate every module to this rank by SVD; `None` concatenates.
    pub rank: Option<usize>,
    /// Rank of k×k conv modules (default: `rank`); needs `rank`.
    pub conv_rank: Option<usize>,
}

/// Refuses an output path that is one of the inputs (it would be overwritten while merged).
pub fn check_output(out: &Path, inputs: &[MergeInput]) -> Result<()> {
    let Ok(o) = std::fs::canonicalize(out) else { return Ok(()) };
    match inputs.iter().find(|i| std::fs::canonicalize(&i.path).is_ok_and(|p| p == o)) {
        Some(i) => Err(Error::invalid(OP, format!("the output {} is also an input", i.path.display()))),
        None => Ok(()),
    }
}

/// All inputs' modules that change one weight.
struct Slot {
    key: String,
    shape: Vec<usize>,
    /// (input index, module).
    parts: Vec<(usize, LoraModule)>,
}

impl Slot {
    fn rows_cols(&self) -> (usize, usize) {
        (self.shape[0], self.shape.iter().skip(1).product())
    }
    fn conv(&self) -> bool {
        self.shape.iter().skip(2).any(|&k| k > 1)
    }
}

fn name(p: &Path) -> String {
    p.file_name().map(|n| n.to_string_lossy().to_string()).unwrap_or_else(|| p.display().to_string())
}

fn refuse_dora(path: &Path, m: &LoraModule) -> Result<()> {
    if m.kind == LoraKind::Dora {
        return Err(Error::invalid(
            OP,
            format!(
                "{}: module {} is DoRA; its magnitude vector rescales the whole weight, so it is no ΔW \
                 that adds to others and cannot be merged",
                path.display(),
                m.key
            ),
        ));
    }
    Ok(())
}

/// Slots keyed by the output's kohya key, and the family the keys are written for.
type Loaded = (BTreeMap<String, Slot>, Family, Vec<(String, String)>);

/// Matched through the model: any key convention, written with the model's kohya names.
fn load_with_model(inputs: &[MergeInput], model: &ModelFiles) -> Result<Loaded> {
    let index = ModuleIndex::new(model);
    let family = index.family.unwrap_or(Family::Sd1);
    // SDXL UNet modules are written under their LDM names, as kohya's SDXL tools (and extract) do.
    let lay = naming_layout(model, detect(model).ok().as_ref());
    let mut slots = BTreeMap::new();
    let mut skipped = Vec::new();
    for (i, inp) in inputs.iter().enumerate() {
        let file = SafeTensorsFile::open(&inp.path)?;
        let lf = LoraFile::from_file(&inp.path, &file, &index)?;
        for k in lf.unmatched {
            skipped.push((k, format!("{}: targets no weight of the model", name(&inp.path))));
        }
        for m in lf.modules {
            refuse_dora(&inp.path, &m)?;
            let key = kohya_key(family, m.component, &m.target, lay.as_ref())?;
            let slot =
                slots.entry(key.clone()).or_insert_with(|| Slot { key, shape: m.target_shape.clone(), parts: vec![] });
            slot.parts.push((i, m));
        }
    }
    Ok((slots, family, skipped))
}

fn suggest_model() -> &'static str {
    "give -m MODEL to match the modules to the model's layers"
}

/// Without a model: keys as the files spell them (diffusers/PEFT paths turned into kohya names),
/// so the files must share one convention and agree on every shape.
fn load_standalone(inputs: &[MergeInput]) -> Result<Loaded> {
    let mut slots: BTreeMap<String, Slot> = BTreeMap::new();
    let mut first_convention: Option<(bool, &Path)> = None;
    let mut first_base: Option<(&'static str, String, &Path)> = None;
    let mut parsed = Vec::new();
    for inp in inputs {
        let file = SafeTensorsFile::open(&inp.path)?;
        let s = parse_standalone(&inp.path, &file)?;
        if let Some((base, why)) = s.base.clone() {
            match &first_base {
                Some((b, w, p)) if *b != base => {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "LoRAs for different base models: {} is for {b} ({w}), {} for {base} ({why})",
                            p.display(),
                            inp.path.display()
                        ),
                    ))
                }
                Some(_) => {}
                None => first_base = Some((base, why, &inp.path)),
            }
        }
        parsed.push(s.modules);
    }
    let family = match first_base {
        Some(("SDXL", ..)) => Family::Sdxl,
        _ => Family::Sd1,
    };
    for (i, (inp, modules)) in inputs.iter().zip(parsed).enumerate() {
        for m in modules {
            refuse_dora(&inp.path, &m)?;
            let kohya = m.key.starts_with("lora_");
            match first_convention {
                Some((k, p)) if k != kohya => {
                    let style = |k: bool| if k { "kohya (lora_unet_…)" } else { "diffusers/PEFT (unet.…)" };
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "{} uses {} keys, {} uses {} keys; {}",
                            p.display(),
                            style(k),
                            inp.path.display(),
                            style(kohya),
                            suggest_model()
                        ),
                    ));
                }
                Some(_) => {}
                None => first_convention = Some((kohya, &inp.path)),
            }
            let key = if kohya {
                m.key.clone()
            } else {
                let path = m.key.split_once('.').map(|(_, p)| p).unwrap_or(&m.key);
                kohya_key(family, m.component, path, None)?
            };
            let slot =
                slots.entry(key.clone()).or_insert_with(|| Slot { key, shape: m.target_shape.clone(), parts: vec![] });
            let dims = |s: &[usize]| (s[0], s.iter().skip(1).product::<usize>());
            if dims(&slot.shape) != dims(&m.target_shape) {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "module {} is {:?} in {} but {:?} in {}: LoRAs for different models? {}",
                        slot.key,
                        slot.shape,
                        name(&inputs[slot.parts[0].0].path),
                        m.target_shape,
                        name(&inp.path),
                        suggest_model()
                    ),
                ));
            }
            // A 1×1 conv may be written 2-D by one file and 4-D by another: keep the 4-D.
            if m.target_shape.len() > slot.shape.len() {
                slot.shape = m.target_shape.clone();
            }
            slot.parts.push((i, m));
        }
    }
    Ok((slots, family, Vec::new()))
}

/// The rank a module is truncated to under `o`, if any.
fn fixed_rank(o: &MergeOptions, slot: &Slot) -> Option<usize> {
    if slot.conv() {
        o.conv_rank.or(o.rank)
    } else {
        o.rank
    }
}

/// Numerical rank: singular values above s_max · max(rows, cols) · ε(f32), numpy's
/// `matrix_rank` tolerance at f32 precision.
fn numerical_rank(sp: &Spectrum) -> usize {
    let s0 = sp.s.first().copied().unwrap_or(0.0);
    let tol = s0 * sp.rows.max(sp.cols) as f64 * f32::EPSILON as f64;
    sp.s.iter().filter(|&&v| v > tol && v > 0.0).count()
}

/// Stacked factors `up (rows × k)`, `down (k × cols)` whose product is a sum of ΔWs.
struct Stack {
    rows: usize,
    k: usize,
    /// Column-major by rank so appending a block is a push: `up_t[k][row]`.
    up_t: Vec<f32>,
    down: Vec<f32>,
}

impl Stack {
    /// Appends `c · up @ down`; |c| is split as √|c| on each side (the sign on up), so neither
    /// factor of a small- or large-weight input drifts out of fp16/bf16 range on its own.
    fn push(&mut self, up: &[f32], down: &[f32], r: usize, c: f32) {
        if c == 0.0 {
            return;
        }
        let (a, b) = (c.signum() * c.abs().sqrt(), c.abs().sqrt());
        for j in 0..r {
            self.up_t.extend((0..self.rows).map(|i| up[i * r + j] * a));
        }
        self.down.extend(down.iter().map(|v| v * b));
        self.k += r;
    }

    fn up(&self) -> Vec<f32> {
        let mut up = vec![0f32; self.rows * self.k];
        for j in 0..self.k {
            for i in 0..self.rows {
                up[i * self.k + j] = self.up_t[j * self.rows + i];
            }
        }
        up
    }
}

/// One merged module and what it lost (`None`: the weighted sum is exactly zero).
fn merge_slot(slot: &Slot, inputs: &[MergeInput], o: &MergeOptions) -> Result<Option<(LowRankModule, ModuleError)>> {
    let (rows, cols) = slot.rows_cols();
    let at = |e: Error| Error::invalid(OP, format!("{}: {e}", slot.key));
    let mut st = Stack { rows, k: 0, up_t: Vec::new(), down: Vec::new() };
    let mut dense_sum: Option<Vec<f32>> = None;
    let mut old_rank = 0;
    for (i, m) in &slot.parts {
        let w = inputs[*i].weight;
        old_rank += m.factor_rank();
        if let Some((down, up, scale)) = m.low_rank() {
            st.push(&up.data, &down.data, down.shape[0], w * scale);
        } else {
            let d = dense(m).map_err(at)?;
            let acc = dense_sum.get_or_insert_with(|| vec![0f32; rows * cols]);
            for (a, v) in acc.iter_mut().zip(&d.data) {
                *a += w * v;
            }
        }
    }
    let fixed = fixed_rank(o, slot);
    // A sum of low-rank parts has no direction beyond its stacked rank.
    let cap = if dense_sum.is_none() { st.k } else { rows.min(cols) };
    let (up, down, rank, err) = match (fixed, dense_sum) {
        (None, dense) => {
            // Concatenation; a dense part joins as its own rank-truncated factors.
            let mut tail = 0.0;
            if let Some(d) = dense {
                let sp = svd(&d, rows, cols).map_err(at)?;
                let r = numerical_rank(&sp);
                if r > 0 {
                    let (u, v) = sp.factors(r)?;
                    st.push(&u, &v, r, 1.0);
                }
                tail = sp.s.iter().skip(r).map(|v| v * v).sum();
            }
            if st.k == 0 {
                return Ok(None);
            }
            let up = st.up();
            let sp = svd_factored(&up, rows, st.k, &st.down, cols).map_err(at)?;
            let energy = sp.energy() + tail;
            let rel = if energy > 0.0 { (tail / energy).sqrt() } else { 0.0 };
            let kept = if energy > 0.0 { 1.0 - tail / energy } else { 1.0 };
            (up, st.down, st.k, (rel, kept, energy, sp.s[0]))
        }
        (Some(r), dense) => {
            let sp = match dense {
                None => svd_factored(&st.up(), rows, st.k, &st.down, cols).map_err(at)?,
                Some(mut d) => {
                    if st.k > 0 {
                        let up = Mat { shape: vec![rows, st.k], data: st.up() };
                        let down = Mat { shape: vec![st.k, cols], data: std::mem::take(&mut st.down) };
                        let p = matmul(&up, &down, &slot.key)?;
                        d.iter_mut().zip(&p.data).for_each(|(a, v)| *a += v);
                    }
                    svd(&d, rows, cols).map_err(at)?
                }
            };
            let r = r.min(cap);
            let (up, down) = sp.factors(r)?;
            let e = (sp.relative_error(r), sp.retained_energy(r), sp.energy(), sp.s[0]);
            (up, down, r, e)
        }
    };
    let (down_shape, up_shape) = if slot.shape.len() == 4 {
        (vec![rank, slot.shape[1], slot.shape[2], slot.shape[3]], vec![rows, rank, 1, 1])
    } else {
        (vec![rank, cols], vec![rows, rank])
    };
    let alpha = rank as f32;
    let module = LowRankModule { key: slot.key.clone(), down_shape, down, up_shape, up, alpha };
    let report = ModuleError {
        key: slot.key.clone(),
        rows,
        cols,
        old_rank: Some(old_rank),
        rank,
        alpha,
        rel_error: err.0,
        retained_energy: err.1,
        energy: err.2,
        s_max: err.3,
    };
    Ok(Some((module, report)))
}

/// Merges `inputs` (weights applied) into one kohya LoRA/LoCon file. With `model` the modules
/// are matched to its layers, whatever key convention each file uses.
pub fn merge(
    inputs: &[MergeInput],
    model: Option<&ModelFiles>,
    o: &MergeOptions,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<(LowRankFile, SvdReport)> {
    if inputs.is_empty() {
        return Err(Error::invalid(OP, "give at least one LoRA to merge"));
    }
    if o.rank == Some(0) || o.conv_rank == Some(0) {
        return Err(Error::invalid(OP, "rank must be at least 1"));
    }
    if o.conv_rank.is_some() && o.rank.is_none() {
        return Err(Error::invalid(OP, "a conv rank needs a rank (without one the modules are concatenated)"));
    }
    for i in inputs {
        if !i.weight.is_finite() {
            return Err(Error::invalid(OP, format!("{}: the weight {} is not finite", i.path.display(), i.weight)));
        }
        if !i.path.is_file() {
            return Err(Error::invalid(OP, format!("{} does not exist", i.path.display())));
        }
    }
    let (slots, family, skipped) = match model {
        Some(mf) => load_with_model(inputs, mf)?,
        None => load_standalone(inputs)?,
    };
    // Ranks are checked before any work, so a bad rank writes nothing.
    for s in slots.values() {
        let (rows, cols) = s.rows_cols();
        if let Some(r) = fixed_rank(o, s).filter(|&r| r > rows.min(cols)) {
            return Err(Error::invalid(
                OP,
                format!("rank {r} is above {}'s rank {} (a {rows}×{cols} matrix)", s.key, rows.min(cols)),
            ));
        }
    }
    let mut out = LowRankFile::default();
    let mut report = SvdReport { skipped, ..Default::default() };
    let n = slots.len();
    for (i, s) in slots.values().enumerate() {
        progress(i, n, &s.key);
        match merge_slot(s, inputs, o)? {
            Some((m, e)) => {
                out.modules.push(m);
                report.modules.push(e);
            }
            None => report.skipped.push((s.key.clone(), "the weighted ΔW is zero".into())),
        }
    }
    progress(n, n, "");
    if out.modules.is_empty() {
        return Err(Error::invalid(OP, "the weighted sum changes no module"));
    }
    out.metadata = metadata(inputs, family, o, &out)?;
    report.old_bytes = Some(inputs.iter().filter_map(|i| std::fs::metadata(&i.path).ok()).map(|m| m.len()).sum());
    report.finish(out.params());
    Ok((out, report))
}

/// kohya `ss_*` fields of the merged file; the comment lists the inputs and their weights.
fn metadata(
    inputs: &[MergeInput],
    family: Family,
    o: &MergeOptions,
    out: &LowRankFile,
) -> Result<BTreeMap<String, String>> {
    let first_meta = SafeTensorsFile::open(&inputs[0].path)?.metadata().clone();
    let uniform = |ranks: Vec<usize>| match (ranks.iter().min(), ranks.iter().max()) {
        (Some(a), Some(b)) if a == b => a.to_string(),
        (None, _) => String::new(),
        _ => "Dynamic".to_string(),
    };
    let conv = |m: &&LowRankModule| m.down_shape.len() == 4 && m.down_shape[2] * m.down_shape[3] > 1;
    let dim = uniform(out.modules.iter().filter(|m| !conv(m)).map(|m| m.down_shape[0]).collect());
    let conv_dim = uniform(out.modules.iter().filter(conv).map(|m| m.down_shape[0]).collect());
    let mut m = BTreeMap::new();
    m.insert("ss_network_module".into(), "networks.lora".into());
    let dim = if dim.is_empty() { conv_dim.clone() } else { dim };
    m.insert("ss_network_dim".into(), dim.clone());
    m.insert("ss_network_alpha".into(), dim);
    if !conv_dim.is_empty() {
        m.insert("ss_network_args".into(), format!("{{\"conv_dim\": \"{conv_dim}\", \"conv_alpha\": \"{conv_dim}\"}}"));
    }
    let version = match family {
        Family::Sd1 => "sd_v1",
        Family::Sdxl => "sdxl_base_v1-0",
    };
    let version = first_meta.get("ss_base_model_version").cloned().unwrap_or_else(|| version.to_string());
    m.insert("ss_base_model_version".into(), version);
    m.insert("ss_v2".into(), first_meta.get("ss_v2").cloned().unwrap_or_else(|| "False".into()));
    if let Some(v) = first_meta.get("ss_sd_model_name") {
        m.insert("ss_sd_model_name".into(), v.clone());
    }
    let terms: Vec<String> = inputs.iter().map(|i| format!("{} × {}", name(&i.path), i.weight)).collect();
    let how = match o.rank {
        None => "concatenated along the rank".to_string(),
        Some(r) => format!("SVD to rank {r}{}", o.conv_rank.map(|c| format!(", conv rank {c}")).unwrap_or_default()),
    };
    m.insert("ss_training_comment".into(), format!("merged by lorafuse: {} ({how})", terms.join(" + ")));
    Ok(m)
}
