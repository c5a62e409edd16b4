//! The LoRAs of a loaded pipeline: the request's `--lora` list plus the prompt's
//! `<lora:NAME:…>` tags, parsed once per file (cache) and applied through [`LoraState`], which
//! skips the work when the set and its weights did not change since the last image.

use std::sync::Arc;

use super::txt2img::{Pipeline, Request};
use crate::lora::{
    lora_name, resolve_in_dir, ActiveLora, ApplyReport, LoraCache, LoraFile, LoraMode, LoraSpec, LoraState, ModuleIndex,
};
use crate::models::clip::prompt::extract_extra_networks;
use crate::{Context, Error, Result};

/// Per-pipeline LoRA bookkeeping.
pub struct LoraRuntime {
    pub(crate) index: ModuleIndex,
    pub(crate) cache: LoraCache,
    pub(crate) state: LoraState,
}

impl LoraRuntime {
    pub fn new(index: ModuleIndex) -> LoraRuntime {
        LoraRuntime { index, cache: LoraCache::default(), state: LoraState::new() }
    }
}

/// A LoRA an image was made with (for infotext: `Lora hashes: "NAME: HASH"`).
#[derive(Clone, Debug, PartialEq)]
pub struct UsedLora {
    pub name: String,
    /// SHA-256 (hex) of the file after its header; civitai shows the first 12 digits.
    pub hash: String,
    pub unet_weight: f32,
    pub te_weight: f32,
}

impl UsedLora {
    /// The 12-digit form A1111 writes and civitai looks up.
    pub fn short_hash(&self) -> &str {
        &self.hash[..self.hash.len().min(12)]
    }
}

impl Request {
    /// Every LoRA the request asks for: `loras`, then the prompt's tags resolved in `lora_dir`,
    /// checked against `max_loras`. Needs no model, so callers can check before loading one.
    pub fn lora_specs(&self) -> Result<Vec<LoraSpec>> {
        let mut specs = self.loras.clone();
        let (_, tags, _) = extract_extra_networks(&self.prompt)?;
        for t in tags {
            let path = resolve_in_dir(&self.lora_dir, &t.name)?;
            specs.push(LoraSpec { path, unet_weight: t.unet_weight, te_weight: t.te_weight });
        }
        if let Some(max) = self.max_loras {
            if specs.len() > max {
                return Err(Error::limit("lora", "LoRAs in one request (--max-loras)", specs.len() as u64, max as u64));
            }
        }
        Ok(specs)
    }
}

impl Pipeline {
    /// Parse (or take from the cache) one LoRA file for this model.
    pub fn lora_file(&self, spec: &LoraSpec) -> Result<(Arc<LoraFile>, String)> {
        let mut rt = self.loras.lock().unwrap_or_else(|e| e.into_inner());
        let rt = &mut *rt;
        rt.cache.get(&spec.path, &rt.index)
    }

    /// Put exactly `specs` on the model (an empty list restores it) in `mode`.
    pub fn set_loras(
        &self,
        ctx: &Context,
        specs: &[LoraSpec],
        mode: LoraMode,
        weights_vary: bool,
    ) -> Result<(Vec<UsedLora>, ApplyReport)> {
        let mut rt = self.loras.lock().unwrap_or_else(|e| e.into_inner());
        let rt = &mut *rt;
        let mut active = Vec::with_capacity(specs.len());
        let mut used = Vec::with_capacity(specs.len());
        for s in specs {
            let (file, hash) = rt.cache.get(&s.path, &rt.index)?;
            let name = lora_name(&s.path);
            used.push(UsedLora { name: name.clone(), hash, unet_weight: s.unet_weight, te_weight: s.te_weight });
            active.push(ActiveLora { name, file, unet_weight: s.unet_weight, te_weight: s.te_weight });
        }
        let report = rt.state.apply(ctx, &self.registry, self.dtype, &active, mode, weights_vary)?;
        if !report.unchanged {
            for l in &report.loras {
                log::info!("lora {}: applied {}/{} modules", l.name, l.applied, l.total);
                if !l.unmatched.is_empty() {
                    log::info!("lora {}: {} keys match nothing in this model", l.name, l.unmatched.len());
                    for k in &l.unmatched {
                        log::debug!("lora {}: unmatched {k}", l.name);
                    }
                }
            }
            log::info!(
                "loras: {} weights merged, {} layers fused ({} mode)",
                report.merged_weights,
                report.fused_weights,
                mode.name()
            );
        }
        Ok((used, report))
    }

    /// The model as loaded, without any LoRA.
    pub fn clear_loras(&self, ctx: &Context) -> Result<()> {
        let mut rt = self.loras.lock().unwrap_or_else(|e| e.into_inner());
        rt.state.clear(ctx, &self.registry)
    }

    pub(crate) fn apply_request_loras(&self, ctx: &Context, req: &Request) -> Result<(Vec<UsedLora>, ApplyReport)> {
        let specs = req.lora_specs()?;
        self.set_loras(ctx, &specs, req.lora_mode, req.lora_weights_vary)
    }
}
