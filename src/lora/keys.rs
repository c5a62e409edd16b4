//! Which model weight an adapter key targets: the index of the model's real module names that
//! resolves kohya's underscored names (ambiguous: `to_out_0` vs `to_out.0`) and PEFT dotted paths.

use std::collections::HashMap;

use crate::weights::detect::{detect, Family, ModelConfig};
use crate::weights::names::{self, Component, LdmLayout, LDM_UNET};
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
    /// The model's family, where known: a LoRA made for another one is refused by name.
    pub family: Option<Family>,
}

/// The kohya prefix of a component's modules.
fn kohya_prefix(c: Component) -> &'static str {
    match c {
        Component::Unet => "lora_unet_",
        Component::TextEncoder2 => "lora_te2_",
        _ => "lora_te_",
    }
}

impl ModuleIndex {
    fn empty(family: Option<Family>) -> ModuleIndex {
        ModuleIndex { by_kohya: HashMap::new(), by_path: HashMap::new(), targets: Vec::new(), family }
    }

    /// One adaptable weight, reachable by its kohya name, its LDM-style kohya alias (UNet weights
    /// of a model with an LDM layout) and its diffusers path.
    fn add(&mut self, component: Component, name: &str, shape: Vec<usize>, lay: Option<&LdmLayout>) {
        if component == Component::Vae || shape.len() < 2 {
            return;
        }
        let Some(module) = name.strip_suffix(".weight") else { return };
        if self.by_path.contains_key(&(component, module.to_string())) {
            return;
        }
        let i = self.targets.len();
        self.by_kohya.insert(format!("{}{}", kohya_prefix(component), module.replace('.', "_")), i);
        if component == Component::Unet {
            if let Some(k) = lay.and_then(|l| ldm_kohya_name(name, l)) {
                self.by_kohya.insert(k, i);
            }
        }
        self.by_path.insert((component, module.to_string()), i);
        self.targets.push(Target { component, weight: name.to_string(), shape });
    }

    /// Every `.weight` of the UNet and text encoders, with LDM aliases for the UNet (from the
    /// file's layout, or for a folder the layout its config implies).
    pub fn new(files: &ModelFiles) -> ModuleIndex {
        let config = detect(files).ok();
        let mut idx = ModuleIndex::empty(config.as_ref().map(|c| c.family));
        let lay = naming_layout(files, config.as_ref());
        let lay = lay.as_ref();
        for key in files.keys() {
            let found: Vec<(Component, String)> = match files.layout() {
                Layout::SingleFile => match lay {
                    Some(l) => names::ldm_to_diffusers_all(&key, l),
                    None => Vec::new(),
                },
                Layout::DiffusersFolder => {
                    let Some((folder, n)) = key.split_once('/') else { continue };
                    let Some(c) = Component::ALL.iter().copied().find(|c| c.name() == folder) else { continue };
                    vec![(c, n.to_string())]
                }
            };
            for (component, name) in found {
                if component == Component::Vae || !name.ends_with(".weight") {
                    continue;
                }
                let Some(shape) = files.builder(component).shape(&name) else { continue };
                idx.add(component, &name, shape, lay);
            }
        }
        idx
    }

    /// An index over explicit weights `(component, diffusers path ending in .weight, shape)`,
    /// e.g. the weights a loaded model registered (for models built without a file).
    pub fn from_targets(targets: impl IntoIterator<Item = (Component, String, Vec<usize>)>) -> ModuleIndex {
        let mut idx = ModuleIndex::empty(None);
        for (component, name, shape) in targets {
            idx.add(component, &name, shape, None);
        }
        idx
    }

    /// Every adaptable weight, in the order the model's files list them.
    pub fn targets(&self) -> &[Target] {
        &self.targets
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
        } else if let Some(p) = module_key.strip_prefix("text_encoder_2.") {
            let p = if p.starts_with("text_model.") || p.starts_with("text_projection") {
                p.to_string()
            } else {
                format!("text_model.{p}")
            };
            (Component::TextEncoder2, p)
        } else if let Some(p) = module_key.strip_prefix("text_encoder.") {
            let p = if p.starts_with("text_model.") { p.to_string() } else { format!("text_model.{p}") };
            (Component::TextEncoder, p)
        } else {
            return None;
        };
        self.by_path.get(&(component, path)).map(|&i| &self.targets[i])
    }
}

/// The LDM layout a model's UNet weights are named by: the single file's own, or for a folder
/// the one its config implies (`config`: the model's detected config, if any).
pub(crate) fn naming_layout(files: &ModelFiles, config: Option<&ModelConfig>) -> Option<LdmLayout> {
    files.ldm_layout().cloned().or_else(|| {
        config.map(|c| {
            LdmLayout::for_unet(
                c.unet.layers_per_block,
                &c.unet.up_cross_attention,
                c.vae.block_out_channels.len(),
                c.family == Family::Sdxl,
            )
        })
    })
}

/// The kohya name of a UNet weight by its original (LDM) module path,
/// `lora_unet_input_blocks_4_1_transformer_blocks_0_attn1_to_q`: kohya trains SDXL on that UNet,
/// so its SDXL LoRAs carry these names. `None` if the layout has no such weight.
pub(crate) fn ldm_kohya_name(name: &str, lay: &LdmLayout) -> Option<String> {
    let ldm = names::diffusers_to_ldm(Component::Unet, name, lay)?;
    let module = ldm.strip_prefix(LDM_UNET)?.strip_suffix(".weight")?;
    Some(format!("lora_unet_{}", module.replace('.', "_")))
}

/// Keys that only another base model has (SDXL's second text encoder or deep transformer stacks).
pub fn sdxl_only_key(module_key: &str) -> bool {
    module_key.starts_with("lora_te2_")
        || module_key.starts_with("text_encoder_2.")
        || module_key.contains("input_blocks_7_1_transformer_blocks_9")
        || module_key.contains("transformer_blocks_9")
        || module_key.contains("add_embedding")
}
