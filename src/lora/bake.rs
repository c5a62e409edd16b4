//! Baking LoRAs into a checkpoint: the weights `generate` would run with those LoRAs merged,
//! written in the input's own layout and dtypes (a single LDM file stays one file with the same
//! keys; a diffusers folder stays a folder with its configs).
//!
//! Every changed weight is `W + Σ mult·ΔW` built on the host from the stored values in f64 and
//! rounded once to the stored dtype; DoRA's magnitude step runs in LoRA order as merged mode does.
//! Tensors no LoRA touches are copied byte for byte. The input is memory-mapped and the output
//! streamed one tensor at a time, so a 7 GB checkpoint never sits in memory twice; the output is
//! built beside the target under a temporary name and renamed into place only when complete.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::{Path, PathBuf};

use half::{bf16, f16};

use super::apply::dora_patch;
use super::{LoraFile, LoraModule, LoraSpec, ModuleIndex};
use crate::error::{Error, Result};
use crate::weights::dtype::decode_f32;
use crate::weights::hash::lora_hash;
use crate::weights::names::{diffusers_to_source, Part, Source};
use crate::weights::{detect, Component, Layout, ModelFiles, SafeTensorsFile, StDType};

const OP: &str = "lora_bake";

/// The safetensors metadata key listing what was baked (a JSON array, appended to by later bakes).
pub const BAKED_KEY: &str = "lorafuse_baked";

/// What one LoRA contributed.
#[derive(Clone, Debug)]
pub struct BakedLora {
    pub name: String,
    pub path: PathBuf,
    pub unet_weight: f32,
    pub te_weight: f32,
    /// SHA-256 of the file's data (the hash civitai and A1111 index LoRAs by).
    pub hash: String,
    /// Modules merged into a weight of the model.
    pub merged: usize,
    /// Module keys of the file that match no weight of the model.
    pub unmatched: Vec<String>,
}

/// What [`bake`] wrote.
#[derive(Clone, Debug, Default)]
pub struct BakeReport {
    pub loras: Vec<BakedLora>,
    /// Stored tensors rewritten with a merge.
    pub changed_tensors: usize,
    /// Stored tensors copied byte for byte.
    pub copied_tensors: usize,
    /// Safetensors files written (1 for a single file).
    pub files: usize,
}

/// One module's share of a stored tensor.
struct Contribution<'a> {
    part: Part,
    module: &'a LoraModule,
    mult: f32,
}

/// Contributions by stored tensor, per scope: `""` for a single file, the component folder's
/// name for a diffusers folder.
type Plan<'a> = BTreeMap<(String, String), Vec<Contribution<'a>>>;

/// Bakes `loras` into the model at `model` and writes the result to `out` (a file for a single
/// file, a folder for a diffusers folder). `progress(done, total, tensor)` is called per tensor.
/// Every input is checked before anything is written; on error nothing is left at `out`.
pub fn bake(
    model: &Path,
    loras: &[LoraSpec],
    out: &Path,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<BakeReport> {
    if loras.is_empty() {
        return Err(Error::invalid(OP, "nothing to bake: give at least one LoRA"));
    }
    if !model.exists() {
        return Err(Error::invalid(OP, format!("model {} does not exist", model.display())));
    }
    check_output(model, out)?;
    let files = ModelFiles::open(model)?;
    detect(&files)?;
    let index = ModuleIndex::new(&files);
    let mut parsed = Vec::with_capacity(loras.len());
    for spec in loras {
        if !spec.path.is_file() {
            return Err(Error::invalid(OP, format!("LoRA {} does not exist", spec.path.display())));
        }
        let st = SafeTensorsFile::open(&spec.path)?;
        let file = LoraFile::from_file(&spec.path, &st, &index)?;
        parsed.push((spec, file, lora_hash(&spec.path)?));
    }
    let (plan, mut report) = make_plan(&files, &parsed)?;
    let record = baked_record(&report);
    let mut stats = Stats::default();
    let tmp = temp_beside(out)?;
    let folder = files.layout() == Layout::DiffusersFolder;
    let mut work = || -> Result<()> {
        if folder {
            bake_folder(model, &tmp, &plan, &record, &mut stats, progress)?;
        } else {
            let src = SafeTensorsFile::open(model)?;
            stats.total = src.len();
            rewrite(&src, &tmp, "", &plan, &record, &mut stats, progress)?;
            stats.files = 1;
        }
        if let Some((scope, key)) = plan.keys().find(|k| !stats.applied.contains(*k)) {
            // Cannot happen for keys the index found in the files; kept as a loud check.
            return Err(Error::invalid(OP, format!("{scope}/{key}: a planned merge found no stored tensor")));
        }
        Ok(())
    };
    let done = work();
    finish(done, &tmp, out, folder)?;
    report.changed_tensors = stats.changed;
    report.copied_tensors = stats.copied;
    report.files = stats.files;
    Ok(report)
}

#[derive(Default)]
struct Stats {
    total: usize,
    done: usize,
    changed: usize,
    copied: usize,
    files: usize,
    applied: BTreeSet<(String, String)>,
}

/// `-o` must not be the input (or inside a folder input); a folder bakes into a new or empty
/// folder, a file into a file.
fn check_output(model: &Path, out: &Path) -> Result<()> {
    let canon = |p: &Path| p.canonicalize().ok();
    let model_c = canon(model);
    // A target that does not exist yet: its parent's real path plus its name.
    let out_c = canon(out).or_else(|| {
        let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
        Some(canon(parent)?.join(out.file_name()?))
    });
    if let (Some(m), Some(o)) = (&model_c, &out_c) {
        if m == o {
            return Err(Error::invalid(
                OP,
                format!("-o {} is the input model; write the baked model to a new path", out.display()),
            ));
        }
        if model.is_dir() && (o.starts_with(m) || m.starts_with(o)) {
            return Err(Error::invalid(
                OP,
                format!("-o {} lies inside the input folder (or contains it); choose another path", out.display()),
            ));
        }
    }
    if same_file(model, out) {
        return Err(Error::invalid(OP, format!("-o {} is the input model (a link to it)", out.display())));
    }
    if out.file_name().is_none() {
        return Err(Error::invalid(OP, format!("-o {} is not a file or folder name", out.display())));
    }
    let parent = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    if !parent.is_dir() {
        return Err(Error::invalid(OP, format!("-o {}: folder {} does not exist", out.display(), parent.display())));
    }
    if model.is_dir() {
        if out.is_file() {
            return Err(Error::invalid(
                OP,
                format!("-o {} is a file; a diffusers folder bakes into a folder", out.display()),
            ));
        }
        if out.is_dir() && std::fs::read_dir(out)?.next().is_some() {
            return Err(Error::invalid(OP, format!("-o {} is a folder that is not empty", out.display())));
        }
    } else if out.is_dir() {
        return Err(Error::invalid(
            OP,
            format!("-o {} is a folder; a single-file checkpoint bakes into a .safetensors file", out.display()),
        ));
    }
    Ok(())
}

/// Two names of one file (a hard link): writing one would replace the other's content.
#[cfg(unix)]
fn same_file(a: &Path, b: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    match (std::fs::metadata(a), std::fs::metadata(b)) {
        (Ok(x), Ok(y)) => x.is_file() && x.dev() == y.dev() && x.ino() == y.ino(),
        _ => false,
    }
}

#[cfg(not(unix))]
fn same_file(_: &Path, _: &Path) -> bool {
    false
}

/// Where every matched module lands in the stored tensors, and the per-LoRA counts.
fn make_plan<'a>(files: &ModelFiles, parsed: &'a [(&LoraSpec, LoraFile, String)]) -> Result<(Plan<'a>, BakeReport)> {
    let mut plan: Plan = BTreeMap::new();
    let mut report = BakeReport::default();
    let family = crate::weights::detect::detect(files)?.family;
    for (spec, file, hash) in parsed {
        // Block weights (`:lbw=…`) scale each module as they do at generate time.
        let blocks = spec.lbw.as_ref().map(|b| b.resolve(Some(family))).transpose()?;
        let mut done = BakedLora {
            name: spec.name(),
            path: spec.path.clone(),
            unet_weight: spec.unet_weight,
            te_weight: spec.te_weight,
            hash: hash.clone(),
            merged: 0,
            unmatched: file.unmatched.clone(),
        };
        for m in &file.modules {
            let Some((scope, source)) = locate(files, m) else {
                done.unmatched.push(m.key.clone());
                continue;
            };
            done.merged += 1;
            let mut mult = if m.component == Component::Unet { spec.unet_weight } else { spec.te_weight };
            if let Some(b) = &blocks {
                mult *= b.multiplier(m.component, &m.target);
            }
            if mult == 0.0 {
                continue;
            }
            plan.entry((scope, source.key)).or_default().push(Contribution { part: source.part, module: m, mult });
        }
        if done.merged == 0 {
            return Err(Error::invalid(
                OP,
                format!("{}: none of its modules matches a weight of this model", spec.path.display()),
            ));
        }
        report.loras.push(done);
    }
    Ok((plan, report))
}

/// The stored tensor (and the part of it) that holds a module's target weight.
fn locate(files: &ModelFiles, m: &LoraModule) -> Option<(String, Source)> {
    match files.layout() {
        Layout::SingleFile => {
            let source = diffusers_to_source(m.component, &m.target, files.ldm_layout()?)?;
            Some((String::new(), source))
        }
        Layout::DiffusersFolder => {
            Some((m.component.name().to_string(), Source { key: m.target.clone(), part: Part::Whole }))
        }
    }
}

/// The metadata value recording this bake.
fn baked_record(report: &BakeReport) -> Vec<serde_json::Value> {
    report
        .loras
        .iter()
        .map(|l| {
            serde_json::json!({
                "name": l.name,
                "unet_weight": l.unet_weight,
                "te_weight": l.te_weight,
                "sha256": l.hash,
                "modules": l.merged,
            })
        })
        .collect()
}

fn temp_beside(out: &Path) -> Result<PathBuf> {
    let dir = out.parent().filter(|p| !p.as_os_str().is_empty()).unwrap_or(Path::new("."));
    let name = out.file_name().ok_or_else(|| Error::invalid(OP, format!("{} is not a path", out.display())))?;
    Ok(dir.join(format!(".{}.partial-{}", name.to_string_lossy(), std::process::id())))
}

/// Renames the finished temp into place, or removes it when the work failed.
fn finish(done: Result<()>, tmp: &Path, out: &Path, folder: bool) -> Result<()> {
    let remove = |p: &Path| {
        let _ = if folder { std::fs::remove_dir_all(p) } else { std::fs::remove_file(p) };
    };
    if let Err(e) = done {
        remove(tmp);
        return Err(e);
    }
    if folder && out.is_dir() {
        // Checked empty before starting; rename cannot replace a folder on every platform.
        if let Err(e) = std::fs::remove_dir(out) {
            remove(tmp);
            return Err(Error::invalid(OP, format!("-o {}: cannot replace the empty folder: {e}", out.display())));
        }
    }
    if let Err(e) = std::fs::rename(tmp, out) {
        remove(tmp);
        return Err(Error::invalid(OP, format!("cannot move the baked model to {}: {e}", out.display())));
    }
    Ok(())
}

/// Copies the folder, rewriting the safetensors of the UNet and text encoders.
fn bake_folder(
    model: &Path,
    tmp: &Path,
    plan: &Plan,
    record: &[serde_json::Value],
    stats: &mut Stats,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    let mut weights = Vec::new();
    let mut copies = Vec::new();
    collect(model, Path::new(""), &mut weights, &mut copies)?;
    let mut opened = Vec::new();
    for rel in weights {
        let f = SafeTensorsFile::open(model.join(&rel))?;
        stats.total += f.len();
        opened.push((rel, f));
    }
    std::fs::create_dir(tmp)?;
    for rel in copies {
        let dst = tmp.join(&rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)?;
        }
        std::fs::copy(model.join(&rel), &dst)?;
    }
    for (rel, f) in opened {
        let scope = rel.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        let dst = tmp.join(&rel);
        if let Some(p) = dst.parent() {
            std::fs::create_dir_all(p)?;
        }
        rewrite(&f, &dst, &scope, plan, record, stats, progress)?;
        stats.files += 1;
    }
    Ok(())
}

/// Files under `dir`: the safetensors of the adaptable components (to rewrite), everything else
/// (to copy).
fn collect(root: &Path, rel: &Path, weights: &mut Vec<PathBuf>, copies: &mut Vec<PathBuf>) -> Result<()> {
    let mut entries: Vec<_> = std::fs::read_dir(root.join(rel))?.collect::<std::io::Result<_>>()?;
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let r = rel.join(e.file_name());
        let path = root.join(&r);
        if path.is_dir() {
            collect(root, &r, weights, copies)?;
            continue;
        }
        let top = r.components().next().map(|c| c.as_os_str().to_string_lossy().into_owned()).unwrap_or_default();
        let adaptable = [Component::Unet, Component::TextEncoder, Component::TextEncoder2]
            .iter()
            .any(|c| c.name() == top && r.components().count() == 2);
        if adaptable && r.extension().is_some_and(|x| x == "safetensors") {
            weights.push(r);
        } else {
            copies.push(r);
        }
    }
    Ok(())
}

/// Writes `src` to `dst` with the planned merges of `scope`: same tensors, dtypes, shapes and
/// data offsets, metadata plus the bake record.
fn rewrite(
    src: &SafeTensorsFile,
    dst: &Path,
    scope: &str,
    plan: &Plan,
    record: &[serde_json::Value],
    stats: &mut Stats,
    progress: &mut dyn FnMut(usize, usize, &str),
) -> Result<()> {
    let mut order: Vec<(&str, &crate::weights::TensorInfo)> = src.tensors().collect();
    order.sort_by_key(|(_, i)| i.data_offsets);
    let mut header = serde_json::Map::new();
    let mut meta: serde_json::Map<String, serde_json::Value> =
        src.metadata().iter().map(|(k, v)| (k.clone(), serde_json::Value::String(v.clone()))).collect();
    let mut baked: Vec<serde_json::Value> =
        src.metadata().get(BAKED_KEY).and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default();
    baked.extend(record.iter().cloned());
    meta.insert(BAKED_KEY.into(), serde_json::Value::String(serde_json::Value::Array(baked).to_string()));
    header.insert("__metadata__".into(), serde_json::Value::Object(meta));
    for (name, info) in &order {
        header.insert(
            name.to_string(),
            serde_json::json!({
                "dtype": info.dtype.name(),
                "shape": info.shape,
                "data_offsets": [info.data_offsets.0, info.data_offsets.1],
            }),
        );
    }
    let mut text = serde_json::Value::Object(header).to_string().into_bytes();
    // The reference writer pads the header with spaces to 8 bytes, which keeps data aligned.
    while !text.len().is_multiple_of(8) {
        text.push(b' ');
    }
    let file = File::create(dst).map_err(|e| Error::invalid(OP, format!("{}: cannot create: {e}", dst.display())))?;
    let mut w = BufWriter::with_capacity(1 << 20, file);
    w.write_all(&(text.len() as u64).to_le_bytes())?;
    w.write_all(&text)?;
    let mut at = 0usize;
    for (name, info) in &order {
        if info.data_offsets.0 != at {
            return Err(Error::invalid(OP, format!("{}: tensors do not tile the data section", src.label())));
        }
        let key = (scope.to_string(), name.to_string());
        match plan.get(&key) {
            Some(cs) => {
                let bytes = merged_bytes(src, name, info, cs)?;
                w.write_all(&bytes)?;
                stats.changed += 1;
                stats.applied.insert(key);
            }
            None => {
                w.write_all(src.bytes(name)?)?;
                stats.copied += 1;
            }
        }
        at = info.data_offsets.1;
        stats.done += 1;
        progress(stats.done, stats.total, name);
    }
    let file = w.into_inner().map_err(|e| Error::invalid(OP, format!("{}: {}", dst.display(), e.error())))?;
    file.sync_all().ok();
    Ok(())
}

/// The stored tensor `name` with its contributions added, encoded in its own dtype.
fn merged_bytes(
    src: &SafeTensorsFile,
    name: &str,
    info: &crate::weights::TensorInfo,
    cs: &[Contribution],
) -> Result<Vec<u8>> {
    let bytes = src.bytes(name)?;
    let stored = decode_f32(info.dtype, bytes).ok_or_else(|| {
        Error::dtype(OP, format!("{}: {name} is {}, not a float weight", src.label(), info.dtype.name()))
    })?;
    let mut w: Vec<f64> = stored.into_iter().map(f64::from).collect();
    // Parts in first-seen order; within a part the contributions keep LoRA order (DoRA needs it).
    let mut parts: Vec<Part> = Vec::new();
    for c in cs {
        if !parts.contains(&c.part) {
            parts.push(c.part);
        }
    }
    for part in parts {
        let source = Source { key: name.to_string(), part };
        let shape = source
            .shape(&info.shape)
            .ok_or_else(|| Error::shape(OP, format!("{name}: {part:?} does not fit {:?}", info.shape)))?;
        let mut v = source.extract(&info.shape, w.clone());
        for c in cs.iter().filter(|c| c.part == part) {
            add_module(&mut v, &shape, c)?;
        }
        insert(part, &info.shape, &mut w, &v);
    }
    encode(info.dtype, &w).ok_or_else(|| {
        Error::dtype(OP, format!("{}: {name} is {}; bake writes F32, F16, BF16 or F64", src.label(), info.dtype.name()))
    })
}

/// `v += mult·ΔW`, or DoRA's magnitude step, on the weight in its diffusers shape.
fn add_module(v: &mut [f64], shape: &[usize], c: &Contribution) -> Result<()> {
    let m = c.module;
    if shape != m.target_shape.as_slice() {
        return Err(Error::shape(OP, format!("{}: stored {shape:?}, the LoRA targets {:?}", m.target, m.target_shape)));
    }
    let d = m.delta()?;
    match &m.dora_scale {
        Some(mag) => {
            let n = shape.first().copied().unwrap_or(1);
            let k = v.len() / n.max(1);
            dora_patch(v, &d.data, mag, n, k, c.mult as f64, &m.target)?;
        }
        None => {
            let mult = c.mult as f64;
            v.iter_mut().zip(&d.data).for_each(|(a, &b)| *a += mult * b as f64);
        }
    }
    Ok(())
}

/// Writes a part's values back into the stored tensor (the inverse of [`Source::extract`]).
fn insert(part: Part, stored: &[usize], w: &mut [f64], v: &[f64]) {
    match part {
        Part::Whole => w.copy_from_slice(v),
        Part::Third(i) => {
            let n = w.len() / 3;
            w[i * n..(i + 1) * n].copy_from_slice(v);
        }
        Part::Transposed => {
            let (r, c) = (stored[0], stored[1]);
            // v is [c, r]: v[j, i] = w[i, j].
            for j in 0..c {
                for i in 0..r {
                    w[i * c + j] = v[j * r + i];
                }
            }
        }
    }
}

/// Rounds once from f64 to the stored dtype. `None` for dtypes bake does not write.
fn encode(dtype: StDType, w: &[f64]) -> Option<Vec<u8>> {
    let mut out = Vec::with_capacity(w.len() * dtype.size());
    match dtype {
        StDType::F64 => w.iter().for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        StDType::F32 => w.iter().for_each(|&v| out.extend_from_slice(&(v as f32).to_le_bytes())),
        StDType::F16 => w.iter().for_each(|&v| out.extend_from_slice(&f16::from_f64(v).to_le_bytes())),
        StDType::BF16 => w.iter().for_each(|&v| out.extend_from_slice(&bf16::from_f64(v).to_le_bytes())),
        _ => return None,
    }
    Some(out)
}

/// A bake record's LoRAs, read back from a file's metadata (empty when it has none).
pub fn baked_loras(meta: &BTreeMap<String, String>) -> Vec<serde_json::Value> {
    meta.get(BAKED_KEY).and_then(|v| serde_json::from_str(v).ok()).unwrap_or_default()
}
