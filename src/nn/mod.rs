//! Weight-holding layers built through a [`Loader`] (a weight reader plus the context, dtype and
//! map of LoRA-adaptable weights of the model being loaded), each a thin owner of GPU tensors that calls
//! one kernel. Field names follow checkpoint keys.

pub mod adaptable;
mod conv;
mod linear;
pub mod loader;
mod norm;

pub use adaptable::{AdaptableWeights, LoraSlot, WeightLayout};
pub use conv::Conv2d;
pub use linear::Linear;
pub use loader::Loader;
pub use norm::{GroupNorm, LayerNorm};
