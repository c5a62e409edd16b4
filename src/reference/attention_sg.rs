//! CPU truth for `kernels::attention_sg`: the same function as for the tiled kernel (the two
//! kernels share one contract), re-exported under the kernel's stem.

pub use crate::reference::attention::{attention, attention_rows};
