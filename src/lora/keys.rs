//! Which model weight an adapter key targets: the index of the model's real module names that
//! resolves kohya's underscored names (ambiguous: `to_out_0` vs `to_out.0`) and PEFT dotted paths.

use std::collections::HashMap;

use crate::weights::names::{self, Component, LDM_UNET};
use crate::weights::{Layout, ModelFiles};

/// A weight of the model that an adapter may change.
#[derive(Clone, Debug)]
pub struct Target {
    pub component: Component,
    /// Diffusers path of the weight, ending in `.weight`.
    pub weight: String,
    pub shape: Vec<usize>,
}

/// Module names of one model, by kohya underscored name and by diffusers dotted path.
pub struct ModuleIndex {
    by_kohya: HashMap<String, usize>,
    by_path: HashMap<(Component, String), usize>,
    targets: Vec<Target>,
}

impl ModuleIndex {
    /// Every `.weight` of the UNet and text encoder, with LDM aliases for single files.
    pub fn new(files: &ModelFiles) -> ModuleIndex {
        let mut idx = ModuleIndex { by_kohya: HashMap::new(), by_path: HashMap::new(), targets: Vec::new() };
        let lay = files.ldm_layout();
        for key in files.keys() {
            let (component, name, ldm) = match files.layout() {
                Layout::SingleFile => {
                    let Some(lay) = lay else { continue };
                    let Some((c, n)) = names::ldm_to_diffusers(&key, lay) else { continue };
                    let ldm = key.strip_prefix(LDM_UNET).map(str::to_string);
                    (c, n, ldm)
                }
                Layout::DiffusersFolder => {
                    let Some((folder, n)) = key.split_once('/') else { continue };
                    let Some(c) = Component::ALL.iter().copied().find(|c| c.name() == folder) else { continue };
                    (c, n.to_string(), None)
                }
            };
            if component == Component::Vae {
                continue;
            }
            let Some(module) = name.strip_suffix(".weight") else { continue };
            let Some(shape) = files.builder(component).shape(&name) else { continue };
            if shape.len() < 2 {
                continue;
            }
            let prefix = if component == Component::Unet { "lora_unet_" } else { "lora_te_" };
            let i = idx.targets.len();
            idx.by_kohya.insert(format!("{prefix}{}", module.replace('.', "_")), i);
            if let Some(l) = ldm.as_deref().and_then(|l| l.strip_suffix(".weight")) {
                idx.by_kohya.insert(format!("lora_unet_{}", l.replace('.', "_")), i);
            }
            idx.by_path.insert((component, module.to_string()), i);
            idx.targets.push(Target { component, weight: name.clone(), shape });
        }
        idx
    }

    /// An index over explicit weights `(component, diffusers path ending in .weight, shape)`,
    /// e.g. the weights a loaded model registered (for models built without a file).
    pub fn from_targets(targets: impl IntoIterator<Item = (Component, String, Vec<usize>)>) -> ModuleIndex {
        let mut idx = ModuleIndex { by_kohya: HashMap::new(), by_path: HashMap::new(), targets: Vec::new() };
        for (component, name, shape) in targets {
            let Some(module) = name.strip_suffix(".weight") else { continue };
            if component == Component::Vae || shape.len() < 2 {
                continue;
            }
            let prefix = if component == Component::Unet { "lora_unet_" } else { "lora_te_" };
            let i = idx.targets.len();
            idx.by_kohya.insert(format!("{prefix}{}", module.replace('.', "_")), i);
            idx.by_path.insert((component, module.to_string()), i);
            idx.targets.push(Target { component, weight: name.clone(), shape });
        }
        idx
    }

    /// Number of adaptable weights.
    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The target of an adapter module key (the part before the tensor suffix).
    pub fn resolve(&self, module_key: &str) -> Option<&Target> {
        if let Some(rest) = module_key.strip_prefix("lora_te1_") {
            return self.by_kohya.get(&format!("lora_te_{rest}")).map(|&i| &self.targets[i]);
        }
        if module_key.starts_with("lora_") {
            return self.by_kohya.get(module_key).map(|&i| &self.targets[i]);
        }
        let (component, path) = if let Some(p) = module_key.strip_prefix("unet.") {
            (Component::Unet, p.to_string())
        } else if let Some(p) = module_key.strip_prefix("text_encoder.") {
            let p = if p.starts_with("text_model.") { p.to_string() } else { format!("text_model.{p}") };
            (Component::TextEncoder, p)
        } else {
            return None;
        };
        self.by_path.get(&(component, path)).map(|&i| &self.targets[i])
    }
}

/// Keys that only another base model has (SDXL's second text encoder or deep transformer stacks).
pub fn sdxl_only_key(module_key: &str) -> bool {
    module_key.starts_with("lora_te2_")
        || module_key.starts_with("text_encoder_2.")
        || module_key.contains("input_blocks_7_1_transformer_blocks_9")
        || module_key.contains("transformer_blocks_9")
        || module_key.contains("add_embedding")
}
