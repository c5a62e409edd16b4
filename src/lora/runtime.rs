//! The LoRAs of one loaded model: its module index, a cache of parsed files (each parsed once),
//! and the [`LoraState`] that puts a set on the weights, skipping the work when the set and its
//! weights did not change since the last image.

use std::sync::Arc;

use super::{
    lora_name, ActiveLora, ApplyReport, LoraCache, LoraCacheStats, LoraFile, LoraMode, LoraSpec, LoraState, ModuleIndex,
};
use crate::nn::AdaptableWeights;
use crate::{Context, DType, Result};

/// Per-model LoRA bookkeeping.
pub struct LoraRuntime {
    index: ModuleIndex,
    cache: LoraCache,
    state: LoraState,
}

impl LoraRuntime {
    pub fn new(index: ModuleIndex) -> LoraRuntime {
        LoraRuntime { index, cache: LoraCache::default(), state: LoraState::new() }
    }

    /// Parse (or take from the cache) one LoRA file for this model, with its hash.
    pub fn file(&mut self, spec: &LoraSpec) -> Result<(Arc<LoraFile>, String)> {
        self.cache.get(&spec.path, &self.index)
    }

    pub fn cache_stats(&self) -> LoraCacheStats {
        self.cache.stats()
    }

    pub fn set_cache_budget(&mut self, bytes: u64) {
        self.cache.set_budget(bytes)
    }

    /// Put exactly `specs` on the model's weights (an empty list restores them) in `mode`.
    /// Returns each file's hash, in the order of `specs`, and what was applied.
    pub fn set(
        &mut self,
        ctx: &Context,
        adaptable: &AdaptableWeights,
        dtype: DType,
        specs: &[LoraSpec],
        mode: LoraMode,
        weights_vary: bool,
    ) -> Result<(Vec<String>, ApplyReport)> {
        // Block weights are checked against the model first: a wrong count fails before any file
        // is read or weight touched.
        let blocks = specs
            .iter()
            .map(|s| s.lbw.as_ref().map(|b| b.resolve(self.index.family)).transpose())
            .collect::<Result<Vec<_>>>()?;
        let mut active = Vec::with_capacity(specs.len());
        let mut hashes = Vec::with_capacity(specs.len());
        for (s, blocks) in specs.iter().zip(blocks) {
            let (file, hash) = self.file(s)?;
            hashes.push(hash);
            let mut a = ActiveLora::new(lora_name(&s.path), file, s.unet_weight, s.te_weight);
            a.blocks = blocks;
            active.push(a);
        }
        let report = self.state.apply(ctx, adaptable, dtype, &active, mode, weights_vary)?;
        if !report.unchanged {
            log_report(&report, mode);
        }
        Ok((hashes, report))
    }

    /// The model as loaded, without any LoRA.
    pub fn clear(&mut self, ctx: &Context, adaptable: &AdaptableWeights) -> Result<()> {
        self.state.clear(ctx, adaptable)
    }
}

fn log_report(report: &ApplyReport, mode: LoraMode) {
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
