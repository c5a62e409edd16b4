//! lorafuse: Stable Diffusion with any number of stacked LoRAs on any GPU, through wgpu and WGSL.
//!
//! Layers, bottom up (a module imports only from lower layers; `tests/layers.rs` checks it):
//! - [`error`]: the one error type.
//! - [`gpu`]: device creation (or adoption of a host app's device), buffer pool, the pipeline cache
//!   keyed by a typed [`gpu::PipelineKey`], command recording. [`schedulers`]: samplers as
//!   per-step linear coefficients (pure f64, no GPU).
//! - [`tensor`]: GPU tensors (buffer + offset + shape + dtype), host tensors, binding windows.
//! - [`kernels`]: one launcher per WGSL kernel in `shaders/`. [`weights`]: safetensors files, key
//!   names, model-family detection, hashes; a pure, path-scoped reader.
//! - [`reference`]: plain CPU versions of every kernel (f64 accumulation), the truth for tests.
//! - [`nn`]: weight-holding layers built through a [`nn::Loader`].
//! - [`models`]: CLIP (tokenizer, prompt syntax), UNet, VAE.
//! - [`lora`]: LoRA files, `<lora:…>` tags, merged and fused application.
//! - [`pipeline`]: one request type resolved once, text-to-image, A1111 infotext, seeded noise.
//! - [`grid`]: comparison grids (X/Y/Z plots). [`bench`]: benchmarks at Stable Diffusion shapes.
//! - [`serve`]: `lorafuse serve`, an A1111-compatible HTTP API with tiers, quotas and a fair queue.

pub mod bench;
pub mod error;
pub mod gpu;
pub mod grid;
pub mod kernels;
pub mod lora;
pub mod models;
mod named_enum;
pub mod nn;
pub mod pipeline;
pub mod reference;
pub mod schedulers;
pub mod serve;
pub mod tensor;
pub mod weights;

pub use error::{Error, Result};
pub use gpu::{Context, ContextOptions, DType, Recorder};
pub use tensor::{GpuTensor, HostTensor};
