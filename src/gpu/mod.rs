//! GPU plumbing: device context, buffer pool, command recording.

pub mod context;
pub mod pool;
pub mod recorder;

pub use context::{Caps, Context, ContextOptions};
pub use recorder::{Dispatch, Recorder};
