//! lorafuse: Stable Diffusion with any number of stacked LoRAs on any GPU, through wgpu and WGSL.
//!
//! Layers, bottom up:
//! - [`gpu`]: device creation (or adoption of a host app's device), buffer pool, command recording.
//! - [`tensor`]: GPU tensors (buffer + offset + shape + dtype) and host tensors.
//! - [`kernels`]: one launcher per WGSL kernel in `shaders/`, keyed by a typed [`gpu::PipelineKey`].
//! - [`reference`]: plain CPU versions of every kernel (f64 accumulation), the truth for tests.
//! - [`weights`]: safetensors files, key names, model-family detection.
//! - [`models`]: CLIP (tokenizer, prompt syntax), UNet, VAE.
//! - [`schedulers`], [`pipeline`]: samplers, seeded noise, text-to-image orchestration.
//! - [`grid`]: comparison grids (X/Y/Z plots) and reading A1111 infotext back.
//! - [`bench`]: kernel benchmarks at Stable Diffusion shapes.

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
pub mod tensor;
pub mod weights;

pub use error::{Error, Result};
pub use gpu::{Context, ContextOptions, DType, Recorder};
pub use tensor::{GpuTensor, HostTensor};
