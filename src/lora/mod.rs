//! LoRA / LyCORIS adapter files: parsing every common layout (kohya LoRA/LoCon, LyCORIS LoHa/LoKr,
//! diffusers/PEFT, DoRA), mapping keys to the model's weights, and exact ΔW per module.

pub mod apply;
pub mod bake;
pub mod block_weights;
pub mod cache;
pub mod compare;
mod delta;
pub mod extract;
pub mod inspect;
pub mod keys;
pub mod lowrank;
pub mod merge;
mod module;
pub mod resize;
pub mod runtime;
pub mod source;
pub mod svd;
pub mod tags;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};
use crate::weights::detect::Family;
use crate::weights::{ModelFiles, SafeTensorsFile};
pub use apply::{ActiveLora, ApplyReport, LoraApplied, LoraMode, LoraState};
pub use block_weights::{BlockTable, BlockWeights};
pub use cache::{LoraCache, LoraCacheStats};
use delta::Mat;
pub use keys::{ModuleIndex, Target};
pub use module::{LoraKind, LoraModule};
pub use runtime::LoraRuntime;
pub use source::{lora_name, resolve_in_dir, LoraSpec};
pub use tags::{extract_extra_networks, ExtraNetworks, LoraTag};

const OP: &str = "lora_file";

/// Tensor suffixes and the role they play; longest first so `.lora_A.weight` wins over `.weight`.
const SUFFIXES: &[(&str, &str)] = &[
    (".lora_linear_layer.down.weight", "down"),
    (".lora_linear_layer.up.weight", "up"),
    (".lora_down.weight", "down"),
    (".lora_up.weight", "up"),
    (".lora_mid.weight", "mid"),
    (".lora_A.weight", "down"),
    (".lora_B.weight", "up"),
    (".lora.down.weight", "down"),
    (".lora.up.weight", "up"),
    (".hada_w1_a", "w1a"),
    (".hada_w1_b", "w1b"),
    (".hada_w2_a", "w2a"),
    (".hada_w2_b", "w2b"),
    (".hada_t1", "t1"),
    (".hada_t2", "t2"),
    (".lokr_w1_a", "k1a"),
    (".lokr_w1_b", "k1b"),
    (".lokr_w2_a", "k2a"),
    (".lokr_w2_b", "k2b"),
    (".lokr_w1", "w1"),
    (".lokr_w2", "w2"),
    (".lokr_t2", "kt2"),
    (".dora_scale", "dora"),
    (".lora_magnitude_vector.weight", "dora"),
    (".lora_magnitude_vector", "dora"),
    (".alpha", "alpha"),
    (".scale", "scale"),
];

/// A parsed adapter file whose modules are matched to one model.
#[derive(Debug)]
pub struct LoraFile {
    pub path: PathBuf,
    pub kind: LoraKind,
    pub modules: Vec<LoraModule>,
    /// Module keys of the file that target no weight of the model.
    pub unmatched: Vec<String>,
    pub metadata: BTreeMap<String, String>,
}

/// Tensors by module key and canonical role (f32), and the names that are no module's tensor.
pub(crate) type Groups = BTreeMap<String, BTreeMap<&'static str, Mat>>;

/// A LoRA file's tensors grouped by module (see [`Groups`]).
pub(crate) fn group_tensors(path: &Path, file: &SafeTensorsFile) -> Result<(Groups, Vec<String>)> {
    let mut groups = Groups::new();
    let mut other = Vec::new();
    for name in file.names() {
        let Some((module, role)) = split_key(name) else {
            other.push(name.to_string());
            continue;
        };
        let info = file.info(name).ok_or_else(|| Error::invalid(OP, format!("{}: no {name}", path.display())))?;
        let m = Mat { shape: info.shape.clone(), data: file.read_f32(name)? };
        groups.entry(module.to_string()).or_default().insert(role, m);
    }
    Ok((groups, other))
}

/// What `lorafuse inspect` prints about an adapter.
#[derive(Clone, Debug)]
pub struct LoraSummary {
    pub kind: LoraKind,
    pub min_rank: usize,
    pub max_rank: usize,
    /// The alpha of the first module that has one.
    pub alpha: Option<f32>,
    pub targets: usize,
    pub unet_targets: usize,
    pub text_encoder_targets: usize,
    pub unmatched: usize,
    /// `sd_v1`, `sd_v2`, `sdxl` or `unknown`, from metadata and shapes.
    pub base_guess: String,
}

fn split_key(name: &str) -> Option<(&str, &'static str)> {
    SUFFIXES.iter().find_map(|(s, role)| name.strip_suffix(s).map(|m| (m, *role)))
}

fn other_base(path: &Path, model: Option<Family>, why: impl std::fmt::Display) -> Error {
    let model = model.unwrap_or(Family::Sd1).name();
    Error::invalid(OP, format!("{}: LoRA for another base model (the model is {model}): {why}", path.display()))
}

/// The family a LoRA was made for, where its metadata or keys say, with the evidence: kohya's
/// `ss_base_model_version` / modelspec architecture, keys only one family has (`lora_te2_`,
/// `text_encoder_2.`, SD1's single `lora_te_` encoder), or the text width its cross-attention
/// keys project from (768 SD1.x, 1024 SD2.x, 2048 SDXL).
pub(crate) fn lora_base(
    meta: &BTreeMap<String, String>,
    groups: &BTreeMap<String, BTreeMap<&'static str, Mat>>,
) -> Option<(&'static str, String)> {
    let version = meta.get("ss_base_model_version").map(String::as_str).unwrap_or("");
    let arch = meta.get("modelspec.architecture").map(String::as_str).unwrap_or("");
    if version.starts_with("sdxl") || arch.contains("-xl-") {
        return Some(("SDXL", format!("its metadata says {}", if version.is_empty() { arch } else { version })));
    }
    if version.starts_with("sd_v2") || meta.get("ss_v2").is_some_and(|v| v == "True") {
        return Some(("SD2.x", "its metadata says SD 2".to_string()));
    }
    if version.starts_with("sd_v1") {
        return Some(("SD1.x", format!("its metadata says {version}")));
    }
    if let Some(k) = groups.keys().find(|k| keys::sdxl_only_key(k)) {
        return Some(("SDXL", format!("key {k} only exists in SDXL")));
    }
    for (k, parts) in groups {
        let cross = k.ends_with("attn2_to_k") || k.ends_with("attn2.to_k");
        let width = parts.get("down").and_then(|d| d.shape.get(1).copied());
        if let (true, Some(w)) = (cross, width) {
            match w {
                768 => return Some(("SD1.x", format!("{k} projects a 768-wide text context"))),
                1024 => return Some(("SD2.x", format!("{k} projects a 1024-wide text context"))),
                2048 => return Some(("SDXL", format!("{k} projects a 2048-wide text context"))),
                _ => {}
            }
        }
    }
    if let Some(k) = groups.keys().find(|k| k.starts_with("lora_te_")) {
        return Some((
            "SD1.x",
            format!("key {k} is for a single text encoder (SDXL LoRAs name lora_te1_ / lora_te2_)"),
        ));
    }
    None
}

/// PEFT alpha from `lora_adapter_metadata` (`<component>.lora_alpha`, or bare `lora_alpha`).
fn peft_alpha(meta: &BTreeMap<String, String>, module_key: &str) -> Option<f32> {
    let json: serde_json::Value = serde_json::from_str(meta.get("lora_adapter_metadata")?).ok()?;
    let (comp, path) = module_key.split_once('.').unwrap_or(("", module_key));
    let field = |name: &str| json.get(format!("{comp}.{name}")).or_else(|| json.get(name));
    // PEFT's per-module override: the first `alpha_pattern` key whose regex matches the end
    // of the module path, `(.*\.)?KEY$` (peft `get_pattern_key`).
    if let Some(patterns) = field("alpha_pattern").and_then(|v| v.as_object()) {
        for (key, v) in patterns {
            let hit = regex::Regex::new(&format!(r"^(.*\.)?(?:{key})$")).is_ok_and(|re| re.is_match(path));
            if hit {
                return v.as_f64().map(|a| a as f32);
            }
        }
    }
    field("lora_alpha")?.as_f64().map(|a| a as f32)
}

impl LoraFile {
    /// Parse `path` and match its modules against `model`.
    pub fn open(path: impl AsRef<Path>, model: &ModelFiles) -> Result<LoraFile> {
        let path = path.as_ref();
        let file = SafeTensorsFile::open(path)?;
        Self::from_file(path, &file, &ModuleIndex::new(model))
    }

    /// As [`LoraFile::open`] with an already-open file and a prebuilt module index.
    pub fn from_file(path: &Path, file: &SafeTensorsFile, index: &ModuleIndex) -> Result<LoraFile> {
        let metadata = file.metadata().clone();
        let (groups, mut unmatched) = group_tensors(path, file)?;
        let sdxl_meta = metadata.get("ss_base_model_version").is_some_and(|v| v.starts_with("sdxl"))
            || metadata.get("modelspec.architecture").is_some_and(|v| v.contains("-xl-"));
        if let (Some(family), Some((base, why))) = (index.family, lora_base(&metadata, &groups)) {
            if base != family.name() {
                return Err(other_base(path, Some(family), format!("it was made for {base} ({why})")));
            }
        }
        let mut modules = Vec::new();
        for (key, parts) in groups {
            let Some(target) = index.resolve(&key) else {
                unmatched.push(key);
                continue;
            };
            let peft = !key.starts_with("lora_");
            let (mut m, dora) = LoraModule::from_parts(
                key.clone(),
                target.component,
                target.weight.clone(),
                target.shape.clone(),
                parts,
                || if peft { peft_alpha(&metadata, &key) } else { None },
            );
            let out = target.shape.first().copied().unwrap_or(0);
            let numel: usize = target.shape.iter().product();
            match m.produced_dims() {
                Some((o, i)) if o == out && o * i == numel => {}
                got => {
                    let why = format!(
                        "{}: key {key} does not fit {} {:?} (factors give {got:?}: {:?})",
                        path.display(),
                        target.weight,
                        target.shape,
                        m.parts.iter().map(|(r, t)| (*r, t.shape.clone())).collect::<Vec<_>>()
                    );
                    let wide = m.parts.get("down").is_some_and(|d| d.shape.get(1) == Some(&2048));
                    if (sdxl_meta || wide) && index.family != Some(Family::Sdxl) {
                        return Err(other_base(path, index.family, why));
                    }
                    return Err(Error::shape(OP, why));
                }
            }
            // from_parts gave the factor family (or DoRA); the target's key and kernel say more.
            if m.kind == LoraKind::Lora && peft {
                m.kind = LoraKind::Peft;
            } else if m.kind == LoraKind::Lora
                && (m.parts.contains_key("mid") || target.shape.iter().skip(2).any(|&k| k > 1))
            {
                m.kind = LoraKind::LoCon;
            }
            m.dora_scale = match dora {
                Some(d) => Some(crate::tensor::HostTensor::new(&d.shape, d.data)?),
                None => None,
            };
            modules.push(m);
        }
        if modules.is_empty() {
            // SD1 has one transformer block per Transformer2DModel; SDXL stacks 2 or 10.
            let deep =
                unmatched.iter().find(|k| k.contains("transformer_blocks_") && !k.contains("transformer_blocks_0_"));
            if index.family != Some(Family::Sdxl) && (sdxl_meta || deep.is_some()) {
                let why = match deep {
                    Some(k) => format!("no key matches an SD1.x weight; {k} needs a deeper transformer stack (SDXL)"),
                    None => "no key matches an SD1.x weight and the metadata says SDXL".to_string(),
                };
                return Err(other_base(path, index.family, why));
            }
            return Err(Error::invalid(
                OP,
                format!(
                    "{}: no LoRA module matches a weight of the model ({} keys unmatched)",
                    path.display(),
                    unmatched.len()
                ),
            ));
        }
        let kind = file_kind(&modules);
        Ok(LoraFile { path: path.to_path_buf(), kind, modules, unmatched, metadata })
    }

    /// Module targeting the diffusers weight `target` of `component`.
    pub fn module(&self, component: crate::weights::Component, target: &str) -> Option<&LoraModule> {
        self.modules.iter().find(|m| m.component == component && m.target == target)
    }

    pub fn summary(&self) -> LoraSummary {
        use crate::weights::Component;
        let ranks = self.modules.iter().map(|m| m.rank);
        let meta = self.metadata.get("ss_base_model_version").map(String::as_str).unwrap_or("");
        let base_guess = if meta.starts_with("sdxl") {
            "sdxl"
        } else if meta.starts_with("sd_v2")
            || self.metadata.get("ss_v2").is_some_and(|v| v == "True")
            || self.modules.iter().any(|m| m.target.contains("attn2.to_k") && m.target_shape.get(1) == Some(&1024))
        {
            "sd_v2"
        } else if meta.starts_with("sd_v1") || !self.modules.is_empty() {
            "sd_v1"
        } else {
            "unknown"
        };
        LoraSummary {
            kind: self.kind,
            min_rank: ranks.clone().min().unwrap_or(0),
            max_rank: ranks.max().unwrap_or(0),
            alpha: self.modules.iter().find_map(|m| m.alpha),
            targets: self.modules.len(),
            unet_targets: self.modules.iter().filter(|m| m.component == Component::Unet).count(),
            text_encoder_targets: self
                .modules
                .iter()
                .filter(|m| matches!(m.component, Component::TextEncoder | Component::TextEncoder2))
                .count(),
            unmatched: self.unmatched.len(),
            base_guess: base_guess.to_string(),
        }
    }
}

/// The file's kind: DoRA, LoHa, LoKr, PEFT win over LoCon, which wins over plain LoRA.
pub(crate) fn file_kind(modules: &[LoraModule]) -> LoraKind {
    let has = |k: LoraKind| modules.iter().any(|m| m.kind == k);
    [LoraKind::Dora, LoraKind::LoHa, LoraKind::LoKr, LoraKind::Peft, LoraKind::LoCon]
        .into_iter()
        .find(|&k| has(k))
        .unwrap_or(LoraKind::Lora)
}
