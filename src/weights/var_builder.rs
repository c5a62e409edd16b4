//! Path-scoped weight access by diffusers names, whatever layout the files have.
//!
//! Model code asks `vb.pp("down_blocks").pp(0).pp("resnets").pp(1).get("conv1.weight", &shape)`.
//! A diffusers folder stores that name as is; a single-file checkpoint stores it under the LDM key
//! that [`names::diffusers_to_ldm`] computes. The builder checks the shape the model expects and
//! reshapes the one difference that is layout, not content: a 1×1 conv `[O, I, 1, 1]` and a linear
//! `[O, I]` hold the same numbers (LDM VAE attention; SD1 vs SD2 `proj_in`).
//!
//! Every successful read is recorded, so after loading [`super::ModelFiles::unused_keys`] can
//! report what the model never asked for.
//!
//! The builder only reads: uploading to the GPU and recording where each weight went (for LoRAs)
//! is the job of the layer loader one layer up (`Loader` in the `nn` module).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use half::f16;

use super::names::{self, Component, LdmLayout, Part, Source};
use super::safetensors::{quoted, SafeTensorsFile, TensorInfo};
use crate::{Error, HostTensor, Result};

const OP: &str = "weights";

/// The tensors of one or more files (one checkpoint, or the shards of one diffusers component).
pub(crate) struct Store {
    label: String,
    files: Vec<SafeTensorsFile>,
    index: HashMap<String, usize>,
    /// Prepended to every stored name: a standalone LDM VAE file (`decoder.up.0…`) then reads as
    /// the `first_stage_model.` part of a checkpoint.
    prefix: String,
    used: Mutex<HashSet<String>>,
}

impl Store {
    /// `label` names the store in messages (the file, or the shard index).
    pub(crate) fn new(label: String, files: Vec<SafeTensorsFile>) -> Result<Store> {
        Self::with_prefix(label, files, "")
    }

    /// A store whose keys are the files' names with `prefix` in front.
    pub(crate) fn with_prefix(label: String, files: Vec<SafeTensorsFile>, prefix: &str) -> Result<Store> {
        let mut index = HashMap::new();
        for (i, f) in files.iter().enumerate() {
            for name in f.names() {
                if let Some(prev) = index.insert(format!("{prefix}{name}"), i) {
                    return Err(Error::invalid(
                        OP,
                        format!(
                            "{label}: tensor {} is in both {} and {}",
                            quoted(name),
                            files[prev].label(),
                            f.label()
                        ),
                    ));
                }
            }
        }
        Ok(Store { label, files, index, prefix: prefix.to_string(), used: Mutex::new(HashSet::new()) })
    }

    /// The name in the file of store key `key`.
    pub(crate) fn file_name<'a>(&self, key: &'a str) -> &'a str {
        key.strip_prefix(self.prefix.as_str()).unwrap_or(key)
    }

    pub(crate) fn label(&self) -> &str {
        &self.label
    }

    pub(crate) fn info(&self, key: &str) -> Option<(&SafeTensorsFile, &TensorInfo)> {
        let f = self.files.get(*self.index.get(key)?)?;
        Some((f, f.info(self.file_name(key))?))
    }

    /// All keys, sorted.
    pub(crate) fn keys(&self) -> Vec<&str> {
        let mut k: Vec<&str> = self.index.keys().map(String::as_str).collect();
        k.sort_unstable();
        k
    }

    fn mark_used(&self, key: &str) {
        // A poisoned lock only means another reader panicked; the set is still valid.
        let mut used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        used.insert(key.to_string());
    }

    /// Keys never read, sorted.
    pub(crate) fn unread(&self) -> Vec<String> {
        let used = self.used.lock().unwrap_or_else(|e| e.into_inner());
        self.keys().into_iter().filter(|k| !used.contains(*k)).map(str::to_string).collect()
    }
}

/// How a builder turns diffusers names into stored keys.
#[derive(Clone)]
pub(crate) enum Naming {
    Diffusers,
    Ldm(Arc<LdmLayout>),
}

/// Weights of one component, addressed by diffusers paths. Cheap to clone and to scope.
#[derive(Clone)]
pub struct VarBuilder {
    store: Arc<Store>,
    component: Component,
    naming: Naming,
    prefix: String,
    /// Benchmark mode: every `get` returns seeded pseudo-random values of the shape the model
    /// asks for, while the structure (which optional weights exist) still comes from the store.
    /// Lets a small file with the real key set stand in for a full-size checkpoint.
    synthetic: Option<u64>,
}

/// Deterministic values for synthetic weights: uniform in ±`scale`, from a hash of the name so
/// every weight differs and loading order does not matter.
fn synthetic_values(seed: u64, name: &str, n: usize, scale: f32) -> Vec<f32> {
    let mut h = seed ^ 0x9e37_79b9_7f4a_7c15;
    for b in name.bytes() {
        h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
    }
    (0..n)
        .map(|_| {
            h ^= h << 13;
            h ^= h >> 7;
            h ^= h << 17;
            ((h >> 40) as f32 / (1u64 << 23) as f32 - 1.0) * scale
        })
        .collect()
}

/// Whether `stored` can serve a request for `expected` without moving data: equal, or the same
/// with trailing 1×1 kernel dims on one side.
fn compatible(stored: &[usize], expected: &[usize]) -> bool {
    let squeezed = |long: &[usize], short: &[usize]| {
        long.len() == short.len() + 2 && long.ends_with(&[1, 1]) && long[..short.len()] == *short
    };
    stored == expected || squeezed(stored, expected) || squeezed(expected, stored)
}

impl VarBuilder {
    pub(crate) fn new(store: Arc<Store>, component: Component, naming: Naming) -> VarBuilder {
        VarBuilder { store, component, naming, prefix: String::new(), synthetic: None }
    }

    /// The tensors of one `.safetensors` file under their stored names, as `component`: for
    /// standalone models whose keys follow no checkpoint layout (TAESD's `taesd_decoder.safetensors`,
    /// diffusers' `AutoencoderTiny` file).
    pub fn open_file(path: impl AsRef<std::path::Path>, component: Component) -> Result<VarBuilder> {
        let file = SafeTensorsFile::open(path)?;
        let store = Store::new(file.label().to_string(), vec![file])?;
        Ok(VarBuilder::new(Arc::new(store), component, Naming::Diffusers))
    }

    /// The same builder in synthetic mode (see the `synthetic` field): for benchmarks at full
    /// model size without the weights.
    pub fn synthetic(&self, seed: u64) -> VarBuilder {
        VarBuilder { synthetic: Some(seed), ..self.clone() }
    }

    fn synthetic_get(&self, seed: u64, name: &str, expected: &[usize]) -> Result<HostTensor> {
        let n: usize = expected.iter().product();
        // Weights around the scale of trained ones (fan-in scaled), norms around 1.
        let fan_in: usize = expected.iter().skip(1).product::<usize>().max(1);
        let is_norm_scale = name.ends_with("weight") && expected.len() == 1;
        let scale = if expected.len() == 1 { 0.02 } else { 1.0 / (fan_in as f32).sqrt() };
        let mut v = synthetic_values(seed, &self.path(name), n, scale);
        if is_norm_scale {
            v.iter_mut().for_each(|x| *x += 1.0);
        }
        HostTensor::new(expected, v)
    }

    /// A builder for the sub-module `segment` (any `Display`, so `.pp(0)` works).
    pub fn pp(&self, segment: impl ToString) -> VarBuilder {
        let mut b = self.clone();
        b.prefix.push_str(&segment.to_string());
        b.prefix.push('.');
        b
    }

    pub fn component(&self) -> Component {
        self.component
    }

    /// The full diffusers name of `name` under this builder's path.
    pub fn path(&self, name: &str) -> String {
        format!("{}{name}", self.prefix)
    }

    /// Where `name` is stored (the key may be absent from the file); `None` when the file's
    /// layout has no key for this name at all.
    pub fn source(&self, name: &str) -> Option<Source> {
        let path = self.path(name);
        match &self.naming {
            Naming::Ldm(layout) => names::diffusers_to_source(self.component, &path, layout),
            Naming::Diffusers => {
                if self.store.info(&path).is_none() {
                    if let Some(old) = names::legacy_diffusers_name(self.component, &path) {
                        if self.store.info(&old).is_some() {
                            return Some(Source { key: old, part: Part::Whole });
                        }
                    }
                }
                Some(Source { key: path, part: Part::Whole })
            }
        }
    }

    /// The stored key that `name` reads (it may be absent from the file); `None` when the file's
    /// layout has no key for this name at all.
    pub fn key(&self, name: &str) -> Option<String> {
        self.source(name).map(|s| s.key)
    }

    fn resolve(&self, name: &str) -> Result<(Source, &SafeTensorsFile, &TensorInfo)> {
        let path = self.path(name);
        let c = self.component.name();
        let src = self.source(name).ok_or_else(|| {
            Error::invalid(
                OP,
                format!(
                    "{}: {c} weight {} has no key in the single-file (LDM) layout",
                    self.store.label(),
                    quoted(&path)
                ),
            )
        })?;
        let (file, info) = self.store.info(&src.key).ok_or_else(|| {
            let msg = match self.naming {
                Naming::Ldm(_) => {
                    format!(
                        "{}: missing tensor {} (the {c} weight {})",
                        self.store.label(),
                        quoted(&src.key),
                        quoted(&path)
                    )
                }
                Naming::Diffusers => format!("{}: missing {c} tensor {}", self.store.label(), quoted(&path)),
            };
            Error::invalid(OP, msg)
        })?;
        Ok((src, file, info))
    }

    /// Whether `name` resolves to a stored tensor.
    pub fn contains(&self, name: &str) -> bool {
        self.source(name).is_some_and(|s| self.store.info(&s.key).is_some_and(|(_, i)| s.shape(&i.shape).is_some()))
    }

    /// The shape of `name` as stored (before any 1×1 reshape), of its part where the file fuses
    /// or transposes it.
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        let s = self.source(name)?;
        s.shape(&self.store.info(&s.key)?.1.shape)
    }

    fn checked(&self, name: &str, expected: &[usize]) -> Result<(Source, &SafeTensorsFile, Vec<usize>)> {
        let (src, file, info) = self.resolve(name)?;
        let stored = info.shape.clone();
        let shape = src.shape(&stored);
        if !shape.as_deref().is_some_and(|s| compatible(s, expected)) {
            let place = if src.key == self.path(name) { String::new() } else { format!(" (at {})", quoted(&src.key)) };
            let part = match src.part {
                Part::Whole => String::new(),
                Part::Third(i) => format!(" (third {i} of a fused tensor)"),
                Part::Transposed => " (transposed)".to_string(),
            };
            return Err(Error::shape(
                OP,
                format!(
                    "{}: {} weight {}{place} has shape {stored:?}{part}, the model expects {expected:?}",
                    file.label(),
                    self.component.name(),
                    quoted(&self.path(name)),
                ),
            ));
        }
        Ok((src, file, stored))
    }

    /// Reads `name` as f32 with shape `expected` (checked; 1×1-conv ↔ linear reshaped).
    pub fn get(&self, name: &str, expected: &[usize]) -> Result<HostTensor> {
        if let Some(seed) = self.synthetic {
            return self.synthetic_get(seed, name, expected);
        }
        let (src, file, stored) = self.checked(name, expected)?;
        let data = src.extract(&stored, file.read_f32(self.store.file_name(&src.key))?);
        self.store.mark_used(&src.key);
        HostTensor::new(expected, data)
    }

    /// Reads `name` as f16 with shape `expected` (same checks as [`VarBuilder::get`]).
    pub fn get_f16(&self, name: &str, expected: &[usize]) -> Result<Vec<f16>> {
        if let Some(seed) = self.synthetic {
            return Ok(self.synthetic_get(seed, name, expected)?.data.iter().map(|&x| f16::from_f32(x)).collect());
        }
        let (src, file, stored) = self.checked(name, expected)?;
        let data = src.extract(&stored, file.read_f16(self.store.file_name(&src.key))?);
        self.store.mark_used(&src.key);
        Ok(data)
    }

    /// Reads `name` as f32 in its stored shape.
    pub fn get_unchecked(&self, name: &str) -> Result<HostTensor> {
        let (src, file, info) = self.resolve(name)?;
        let stored = info.shape.clone();
        let shape = src.shape(&stored).ok_or_else(|| {
            Error::shape(
                OP,
                format!("{}: {} has shape {stored:?}, which has no {:?}", file.label(), quoted(&src.key), src.part),
            )
        })?;
        let data = src.extract(&stored, file.read_f32(self.store.file_name(&src.key))?);
        self.store.mark_used(&src.key);
        HostTensor::new(&shape, data)
    }
}
