//! [`Loader`]: what a layer needs to build itself from a checkpoint. It pairs the pure weight
//! reader ([`VarBuilder`]: path scoping, key resolution, shape checks) with the GPU side: the
//! [`Context`] to upload into, the [`DType`] to store weights as, and the [`AdaptableWeights`] that
//! records where each adaptable weight went, so LoRAs can reach it after loading.
//!
//! Model code asks `Linear::load(&l.pp("to_q"), in, out, bias)`; scoping a loader scopes its
//! reader, and every scope shares the same adaptable-weights map.

use half::f16;

use super::adaptable::{AdaptableWeights, LoraSlot, WeightLayout};
use crate::kernels::conv2d::PackedConvWeight;
use crate::weights::{Component, VarBuilder};
use crate::{Context, DType, GpuTensor, HostTensor, Result};

/// A [`VarBuilder`] scope plus the context, storage dtype and adaptable weights of the model being
/// loaded. Cheap to clone and to scope.
#[derive(Clone)]
pub struct Loader<'a> {
    ctx: &'a Context,
    reader: VarBuilder,
    adaptable: AdaptableWeights,
    dtype: DType,
}

impl<'a> Loader<'a> {
    /// Layers built from this loader read through `reader`, upload as `dtype` and register their
    /// adaptable weights in `adaptable` (pass `&AdaptableWeights::default()` when no LoRA will
    /// need them).
    pub fn new(ctx: &'a Context, reader: VarBuilder, adaptable: &AdaptableWeights, dtype: DType) -> Loader<'a> {
        Loader { ctx, reader, adaptable: adaptable.clone(), dtype }
    }

    /// A loader for the sub-module `segment` (any `Display`, so `.pp(0)` works).
    pub fn pp(&self, segment: impl ToString) -> Loader<'a> {
        Loader { reader: self.reader.pp(segment), ..self.clone() }
    }

    /// The same scope, storing weights as `dtype` (the VAE's f32 fallback decoder).
    pub fn with_dtype(&self, dtype: DType) -> Loader<'a> {
        Loader { dtype, ..self.clone() }
    }

    pub fn ctx(&self) -> &'a Context {
        self.ctx
    }

    pub fn dtype(&self) -> DType {
        self.dtype
    }

    pub fn reader(&self) -> &VarBuilder {
        &self.reader
    }

    pub fn adaptable(&self) -> &AdaptableWeights {
        &self.adaptable
    }

    pub fn component(&self) -> Component {
        self.reader.component()
    }

    /// Whether `name` resolves to a stored tensor.
    pub fn contains(&self, name: &str) -> bool {
        self.reader.contains(name)
    }

    /// The stored shape of `name` (before any 1×1 reshape).
    pub fn shape(&self, name: &str) -> Option<Vec<usize>> {
        self.reader.shape(name)
    }

    /// Reads `name` to the host as f32 (for weights the model combines or rescales on the CPU
    /// before uploading).
    pub fn get(&self, name: &str, shape: &[usize]) -> Result<HostTensor> {
        self.reader.get(name, shape)
    }

    /// Reads `name` to the host as f16.
    pub fn get_f16(&self, name: &str, shape: &[usize]) -> Result<Vec<f16>> {
        self.reader.get_f16(name, shape)
    }

    /// Reads `name` with shape `shape` and uploads it as the loader's dtype (f16 weights go up
    /// without an f32 copy).
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<GpuTensor> {
        match self.dtype {
            DType::F32 => GpuTensor::from_host(self.ctx, &self.reader.get(name, shape)?, DType::F32),
            DType::F16 => GpuTensor::from_f16(self.ctx, shape, &self.reader.get_f16(name, shape)?),
        }
    }

    /// Uploads host values computed at load time as the loader's dtype.
    pub fn upload(&self, shape: &[usize], data: &[f32]) -> Result<GpuTensor> {
        GpuTensor::from_slice(self.ctx, shape, data, self.dtype)
    }

    /// Records that `name` under this loader's path now lives in `tensor` (see
    /// [`AdaptableWeights`]); `slot` when its layer can apply adapters at run time.
    pub fn register(&self, name: &str, tensor: &GpuTensor, slot: Option<LoraSlot>) {
        let path = self.reader.path(name);
        self.adaptable.insert(self.reader.component(), path, tensor.clone(), WeightLayout::Plain, slot);
    }

    /// [`Loader::register`] for a convolution weight stored packed (merged only: no slot).
    pub fn register_packed(&self, name: &str, w: &PackedConvWeight) {
        let layout = WeightLayout::ConvPacked { shape: w.shape, tm: w.tm };
        self.adaptable.insert(self.reader.component(), self.reader.path(name), w.packed.clone(), layout, None);
    }

    /// Reads the convolution weight `name` `[Cout, Cin, KH, KW]` and uploads it packed with block
    /// `tm` as the loader's dtype.
    pub fn packed_conv(&self, name: &str, shape: [usize; 4], tm: u32) -> Result<PackedConvWeight> {
        match self.dtype {
            DType::F32 => {
                PackedConvWeight::from_host(self.ctx, &self.reader.get(name, &shape)?.data, shape, tm, DType::F32)
            }
            DType::F16 => PackedConvWeight::from_host_f16(self.ctx, &self.reader.get_f16(name, &shape)?, shape, tm),
        }
    }
}
