//! Kernel launchers, one file per `shaders/<stem>.wgsl`, each with its CPU twin in
//! `reference/<stem>.rs` and its tests in `tests/ops_*.rs`.
//!
//! Layout conventions: tensors are contiguous row-major; images are NCHW; linear weights are
//! `[out, in]` as in PyTorch checkpoints. Storage is f32 or f16; arithmetic is always f32.

mod affine;
pub mod attention;
mod attention_launch;
pub mod attention_sg;
pub mod autotune;
pub mod binary;
pub mod cfg_rescale;
pub mod concat;
pub mod conv2d;
pub mod conv_pack;
pub mod conv_tile;
pub mod embedding;
pub mod fma_peak;
pub mod geglu;
pub mod gemm_kernel;
pub mod group_norm;
pub mod group_norm_sg;
mod group_norm_split;
pub mod layer_norm;
pub mod lora_linear;
pub mod lora_merge;
pub mod matmul;
mod rows;
pub mod softmax;
pub mod timestep_embedding;
pub mod unary;
pub mod upsample;
