//! Safetensors files, checkpoint key names and model-family detection.
//!
//! - [`safetensors`]: one file, validated header, lazy memory-mapped reads as f32 / f16.
//! - [`names`]: diffusers ↔ LDM key mapping for the SD1.x UNet, VAE and CLIP text encoder.
//! - [`var_builder`]: [`VarBuilder`], weights by diffusers path whatever the file layout.
//! - [`detect`]: family (SD1 / SD2 / SDXL / not a checkpoint) and [`ModelConfig`] from shapes.
//!
//! This file owns [`ModelFiles`]: opening a single-file checkpoint or a diffusers folder.
//!
//! ```no_run
//! # fn main() -> lorafuse::Result<()> {
//! use lorafuse::weights::{detect, ModelFiles};
//! let files = ModelFiles::open("model.safetensors")?; // or a diffusers folder
//! let config = detect(&files)?; // errors for SD2 / SDXL / LoRA files
//! let c0 = config.unet.block_out_channels[0];
//! let w = files.unet().pp("conv_in").get("weight", &[c0, 4, 3, 3])?;
//! # Ok(()) }
//! ```

pub mod detect;
pub mod dtype;
pub mod hash;
pub mod names;
pub mod safetensors;
pub mod var_builder;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

pub use detect::{detect, ClipConfig, ModelConfig, UNetConfig, VaeConfig};
pub use dtype::StDType;
pub use names::{Component, LdmLayout};
pub use safetensors::{SafeTensorsFile, TensorInfo};
pub use var_builder::VarBuilder;

use crate::{Error, Result};
use var_builder::{Naming, Store};

const OP: &str = "weights";

/// How a model's weights are stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Layout {
    /// One `.safetensors` in the original (LDM) layout, as civitai / Tensor.Art ship them.
    SingleFile,
    /// A diffusers folder: `unet/`, `vae/`, `text_encoder/`, each with its weights and config.
    DiffusersFolder,
}

/// The opened weight files of one Stable Diffusion model. Tensors are read lazily.
pub struct ModelFiles {
    layout: Layout,
    path: PathBuf,
    /// Single file: one store shared by every component. Folder: one per component present.
    stores: BTreeMap<Component, Arc<Store>>,
    ldm: Option<Arc<LdmLayout>>,
    configs: BTreeMap<Component, serde_json::Value>,
}

impl ModelFiles {
    /// Opens a single-file checkpoint (a file) or a diffusers folder (a directory).
    pub fn open(path: impl AsRef<Path>) -> Result<ModelFiles> {
        let path = path.as_ref();
        if path.is_dir() {
            return Self::open_folder(path);
        }
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
        if matches!(ext.as_str(), "ckpt" | "pt" | "pth" | "bin") {
            return Err(Error::invalid(
                OP,
                format!("{}: pickle checkpoints (.{ext}) are not supported; use a .safetensors file", path.display()),
            ));
        }
        let file = SafeTensorsFile::open(path)?;
        let ldm = Arc::new(LdmLayout::from_keys(file.names()));
        let store = Store::new(file.label().to_string(), vec![file])?;
        let store = Arc::new(store);
        Ok(ModelFiles {
            layout: Layout::SingleFile,
            path: path.to_path_buf(),
            stores: Component::ALL.iter().map(|&c| (c, store.clone())).collect(),
            ldm: Some(ldm),
            configs: BTreeMap::new(),
        })
    }

    /// A standalone VAE file (`--vae`): diffusers `AutoencoderKL` names (`decoder.up_blocks.…`)
    /// or the original LDM ones (`decoder.up.…`, with or without `first_stage_model.`), as
    /// people download them (`sdxl_vae.safetensors`, `vae-ft-mse-840000-ema-pruned.safetensors`).
    /// Only its [`Component::Vae`] builder is meaningful.
    pub fn open_vae(path: impl AsRef<Path>) -> Result<ModelFiles> {
        let path = path.as_ref();
        let file = SafeTensorsFile::open(path)?;
        let names: Vec<String> = file.names().map(str::to_string).collect();
        let has = |p: &str| names.iter().any(|n| n.starts_with(p));
        let label = file.label().to_string();
        let (store, ldm) = if has("decoder.up_blocks.") || has("decoder.mid_block.") {
            (Store::new(label, vec![file])?, None)
        } else if has(&format!("{}decoder.", names::LDM_VAE)) {
            let lay = LdmLayout::from_keys(names.iter().map(String::as_str));
            (Store::new(label, vec![file])?, Some(lay))
        } else if has("decoder.up.") || has("decoder.mid.") {
            let prefixed: Vec<String> = names.iter().map(|n| format!("{}{n}", names::LDM_VAE)).collect();
            let lay = LdmLayout::from_keys(prefixed.iter().map(String::as_str));
            (Store::with_prefix(label, vec![file], names::LDM_VAE)?, Some(lay))
        } else {
            let first: Vec<&str> = names.iter().take(3).map(String::as_str).collect();
            return Err(Error::invalid(
                OP,
                format!(
                    "{}: not a VAE file: no decoder.up_blocks.* (diffusers) or decoder.up.* (LDM) weights (first keys: {})",
                    path.display(),
                    first.join(", ")
                ),
            ));
        };
        let store = Arc::new(store);
        Ok(ModelFiles {
            layout: Layout::SingleFile,
            path: path.to_path_buf(),
            stores: BTreeMap::from([(Component::Vae, store.clone()), (Component::TextEncoder, store)]),
            ldm: ldm.map(Arc::new),
            configs: BTreeMap::new(),
        })
    }

    fn open_folder(dir: &Path) -> Result<ModelFiles> {
        let mut stores = BTreeMap::new();
        let mut configs = BTreeMap::new();
        for c in Component::ALL {
            let sub = dir.join(c.name());
            // Only SDXL folders have a second text encoder.
            if c == Component::TextEncoder2 && !sub.exists() {
                continue;
            }
            if !sub.is_dir() {
                return Err(Error::invalid(
                    OP,
                    format!(
                        "{}: no {}/ folder (expected a diffusers Stable Diffusion folder)",
                        dir.display(),
                        c.name()
                    ),
                ));
            }
            stores.insert(c, Arc::new(open_component(&sub, c)?));
            let cfg = sub.join("config.json");
            if cfg.is_file() {
                configs.insert(c, read_json(&cfg)?);
            }
        }
        Ok(ModelFiles { layout: Layout::DiffusersFolder, path: dir.to_path_buf(), stores, ldm: None, configs })
    }

    pub fn layout(&self) -> Layout {
        self.layout
    }

    /// The file or folder opened.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The single-file key facts (`None` for a folder).
    pub fn ldm_layout(&self) -> Option<&LdmLayout> {
        self.ldm.as_deref()
    }

    /// A component's `config.json` (folders only).
    pub fn config_json(&self, c: Component) -> Option<&serde_json::Value> {
        self.configs.get(&c)
    }

    /// Whether the files hold component `c` (a folder's `text_encoder_2/`; a single file has a
    /// store for every component, detection checks its keys).
    pub fn has(&self, c: Component) -> bool {
        self.stores.contains_key(&c)
    }

    fn store(&self, c: Component) -> &Arc<Store> {
        // Unet, vae and text_encoder always exist (open fails otherwise); a folder without
        // text_encoder_2 reads it from the text encoder's store, where its names are missing.
        self.stores.get(&c).or_else(|| self.stores.get(&Component::TextEncoder)).expect("text encoder store")
    }

    /// The weights of `c`, by diffusers names.
    pub fn builder(&self, c: Component) -> VarBuilder {
        let naming = match &self.ldm {
            Some(l) => Naming::Ldm(l.clone()),
            None => Naming::Diffusers,
        };
        VarBuilder::new(self.store(c).clone(), c, naming)
    }

    pub fn unet(&self) -> VarBuilder {
        self.builder(Component::Unet)
    }

    pub fn vae(&self) -> VarBuilder {
        self.builder(Component::Vae)
    }

    pub fn text_encoder(&self) -> VarBuilder {
        self.builder(Component::TextEncoder)
    }

    pub fn text_encoder_2(&self) -> VarBuilder {
        self.builder(Component::TextEncoder2)
    }

    /// Stored keys, sorted: single-file keys as is; folder keys as `"<component>/<name>"`.
    pub fn keys(&self) -> Vec<String> {
        self.tagged(|s| s.keys().into_iter().map(str::to_string).collect())
    }

    fn tagged(&self, f: impl Fn(&Store) -> Vec<String>) -> Vec<String> {
        match self.layout {
            Layout::SingleFile => f(self.store(Component::Unet)),
            Layout::DiffusersFolder => self
                .stores
                .iter()
                .flat_map(|(c, s)| f(s).into_iter().map(move |k| format!("{}/{k}", c.name())))
                .collect(),
        }
    }

    /// Keys no builder has read so far and that [`names::skip_reason`] does not expect: after
    /// loading a model, anything here is a tensor the engine ignored without knowing why.
    pub fn unused_keys(&self) -> Vec<String> {
        self.tagged(|s| s.unread().into_iter().filter(|k| names::skip_reason(k).is_none()).collect())
    }

    /// Keys expected to go unread, with the reason (EMA copies, schedule buffers, ...).
    pub fn skipped_keys(&self) -> Vec<(String, &'static str)> {
        self.keys()
            .into_iter()
            .filter_map(|k| {
                let bare = k.split_once('/').map_or(k.as_str(), |(_, n)| n);
                let reason = names::skip_reason(if self.layout == Layout::SingleFile { &k } else { bare })?;
                Some((k, reason))
            })
            .collect()
    }

    /// Raw stored keys of one component's store (the whole file for single files).
    pub(crate) fn raw_store(&self, c: Component) -> &Store {
        self.store(c)
    }
}

fn read_json(path: &Path) -> Result<serde_json::Value> {
    let text =
        std::fs::read_to_string(path).map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
    serde_json::from_str(&text).map_err(|e| Error::invalid(OP, format!("{}: not valid JSON ({e})", path.display())))
}

/// The weights of one diffusers component folder: the full-precision file, else the `.fp16`
/// variant, else a sharded index of either.
fn open_component(sub: &Path, c: Component) -> Result<Store> {
    let base =
        if matches!(c, Component::TextEncoder | Component::TextEncoder2) { "model" } else { "diffusion_pytorch_model" };
    let candidates = [
        format!("{base}.safetensors"),
        format!("{base}.fp16.safetensors"),
        format!("{base}.safetensors.index.json"),
        format!("{base}.fp16.safetensors.index.json"),
    ];
    let Some(found) = candidates.iter().map(|n| sub.join(n)).find(|p| p.is_file()) else {
        return Err(Error::invalid(
            OP,
            format!(
                "{}: no weights; looked for {} (pickle .bin files are not supported)",
                sub.display(),
                candidates.join(", ")
            ),
        ));
    };
    let label = found.display().to_string();
    if !label.ends_with(".index.json") {
        return Store::new(label, vec![SafeTensorsFile::open(&found)?]);
    }
    let index = read_json(&found)?;
    let map = index
        .get("weight_map")
        .and_then(|m| m.as_object())
        .ok_or_else(|| Error::invalid(OP, format!("{label}: no \"weight_map\" object")))?;
    let mut shards: Vec<&str> = Vec::new();
    for v in map.values() {
        let name = v
            .as_str()
            .filter(|n| !n.contains(['/', '\\']) && *n != ".." && !n.is_empty())
            .ok_or_else(|| Error::invalid(OP, format!("{label}: weight_map entry {v} is not a plain file name")))?;
        if !shards.contains(&name) {
            shards.push(name);
        }
    }
    shards.sort_unstable();
    let files = shards.iter().map(|n| SafeTensorsFile::open(sub.join(n))).collect::<Result<Vec<_>>>()?;
    Store::new(label, files)
}
