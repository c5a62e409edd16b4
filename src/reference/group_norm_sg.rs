//! CPU truth for `kernels::group_norm_sg`: the same function as for the workgroup kernel (the two
//! kernels share one contract), re-exported under the kernel's stem.

pub use crate::reference::group_norm::group_norm;
