//! Where each adaptable weight of a loaded model lives on the GPU, by diffusers path, so LoRAs
//! can reach it after loading: the merged mode writes into the tensor (a view when the model
//! stacked several weights into one buffer), the fused mode hands a [`LoraStack`] to the layer
//! through its slot.
//!
//! Layers register themselves while loading through the [`Loader`](super::Loader) they are built
//! from. A weight whose layer does not run through [`Linear::forward`](super::Linear)
//! (stacked time projections, the transposed `proj_out`) is registered without a slot, so a fused
//! request for it is merged instead.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use crate::kernels::lora_linear::LoraStack;
use crate::weights::Component;
use crate::GpuTensor;

/// A layer's runtime adapters (fused mode); `None` runs the plain layer.
pub type LoraSlot = Arc<Mutex<Option<Arc<LoraStack>>>>;

/// The adapters currently in a slot (poisoning cannot leave a half-written `Option`).
pub fn slot_get(slot: &LoraSlot) -> Option<Arc<LoraStack>> {
    slot.lock().unwrap_or_else(|e| e.into_inner()).clone()
}

pub fn slot_set(slot: &LoraSlot, v: Option<Arc<LoraStack>>) {
    *slot.lock().unwrap_or_else(|e| e.into_inner()) = v;
}

/// How a weight's elements are laid out in its tensor.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WeightLayout {
    /// As in the checkpoint: `[out, in]`, or `[Cout, Cin, KH, KW]`.
    Plain,
    /// A convolution weight `shape = [Cout, Cin, KH, KW]` stored packed for the conv kernel,
    /// `[ceil(Cout/tm), Cin, KH, KW, tm]` (see `kernels::conv2d::pack_host`): packed once at load
    /// rather than before every use. A merge packs its delta the same way.
    ConvPacked { shape: [usize; 4], tm: u32 },
}

/// One adaptable weight: the tensor the forward pass reads, its layout, and the slot of its layer
/// when the layer can apply adapters at run time.
#[derive(Clone)]
pub struct WeightEntry {
    pub tensor: GpuTensor,
    pub layout: WeightLayout,
    pub slot: Option<LoraSlot>,
}

impl WeightEntry {
    /// The weight's shape as the checkpoint has it, whatever its storage layout.
    pub fn shape(&self) -> Vec<usize> {
        match self.layout {
            WeightLayout::Plain => self.tensor.shape.clone(),
            WeightLayout::ConvPacked { shape, .. } => shape.to_vec(),
        }
    }
}

/// Every adaptable weight of one pipeline, keyed by component and diffusers path
/// (`down_blocks.0.attentions.0.proj_in.weight`). Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct AdaptableWeights {
    inner: Arc<Mutex<BTreeMap<(Component, String), WeightEntry>>>,
}

impl AdaptableWeights {
    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<(Component, String), WeightEntry>> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Record (or replace) where `path` lives.
    pub fn insert(
        &self,
        component: Component,
        path: String,
        tensor: GpuTensor,
        layout: WeightLayout,
        slot: Option<LoraSlot>,
    ) {
        self.map().insert((component, path), WeightEntry { tensor, layout, slot });
    }

    /// The layer owning `slot` no longer runs through its own forward (the model stacked its
    /// weight elsewhere): point its entry at `tensor` and drop the slot, so its LoRAs are merged.
    pub fn rebind(&self, slot: &LoraSlot, tensor: &GpuTensor) {
        for e in self.map().values_mut() {
            if e.slot.as_ref().is_some_and(|s| Arc::ptr_eq(s, slot)) {
                e.tensor = tensor.clone();
                e.layout = WeightLayout::Plain;
                e.slot = None;
            }
        }
    }

    pub fn get(&self, component: Component, path: &str) -> Option<WeightEntry> {
        self.map().get(&(component, path.to_string())).cloned()
    }

    /// Every entry, in key order.
    pub fn entries(&self) -> Vec<((Component, String), WeightEntry)> {
        self.map().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn len(&self) -> usize {
        self.map().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}
