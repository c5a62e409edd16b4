//! Kernel launchers, one file per `shaders/<stem>.wgsl`, each with its CPU twin in
//! `reference/<stem>.rs` and its tests in `tests/ops_*.rs`.
//!
//! Layout conventions: tensors are contiguous row-major; images are NCHW; linear weights are
//! `[out, in]` as in PyTorch checkpoints. Storage is f32 or f16; arithmetic is always f32.

pub mod registry;
pub mod unary;

pub use registry::{fold_groups, launch, Arg, KernelSource, PipelineKey};
