//! GPU plumbing: device context, buffer pool, storage types, pipeline cache and launches, command
//! recording, readback. Nothing here knows about tensors or kernels.

pub mod binding;
pub mod context;
mod disk_cache;
pub mod dtype;
pub mod pipelines;
pub mod pool;
pub(crate) mod readback;
pub mod recorder;
pub mod tune;
pub(crate) mod twin;

pub use binding::Window;
pub use context::{AdapterKind, Caps, Context, ContextOptions};
pub use dtype::DType;
pub use pipelines::{flat_groups, fold_groups, launch, Arg, KernelSource, PipelineKey};
pub use recorder::{Dispatch, Recorder, WarmUp, Work};
pub use tune::{Autotune, TuneStore};
