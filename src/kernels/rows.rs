//! Launch plumbing shared by the row kernels (`layer_norm`, `softmax`): a power-of-two team of
//! threads per row, several rows per workgroup when rows are short, rows split into runs whose
//! windows fit one binding.

use crate::gpu::{fold_groups, KernelSource, PipelineKey};
use crate::tensor::{chunks, max_window_elems, GpuTensor};
use crate::{Context, Error, Result};

/// Threads per workgroup of the row kernels.
pub(crate) const ROW_WG: u32 = 256;

/// Threads per row for rows of `len` values: about 8 values per thread (what the shaders keep in
/// registers), a power of two in 8..=ROW_WG; a workgroup takes ROW_WG / that many rows.
pub(crate) fn row_threads(len: usize) -> u32 {
    len.div_ceil(8).next_power_of_two().clamp(8, ROW_WG as usize) as u32
}

/// How a row kernel covers the rows of `len` elements of a (non-empty) tensor.
pub(crate) struct RowTeams {
    rows: usize,
    /// Rows per launch (their windows fit one binding).
    per: usize,
    /// Threads per row.
    tpr: u32,
}

impl RowTeams {
    /// The launch plan for `x` viewed as rows of `len`, or a limit error naming `op` and `what`
    /// (the row) when one row exceeds a binding.
    pub(crate) fn new(ctx: &Context, op: &'static str, x: &GpuTensor, len: usize, what: String) -> Result<RowTeams> {
        let rows = x.numel() / len;
        let max_window = max_window_elems(ctx, x.dtype) as usize;
        let per = max_window / len;
        if per == 0 {
            return Err(Error::limit(op, what, len as u64, max_window as u64));
        }
        Ok(RowTeams { rows, per, tpr: row_threads(len) })
    }

    /// The pipeline of `src`'s `main` with this team size.
    pub(crate) fn key(&self, src: &KernelSource, x: &GpuTensor) -> PipelineKey {
        PipelineKey::new(src, "main", x.dtype).with("WG", ROW_WG).with("TPR", self.tpr)
    }

    /// `(first row, rows)` of each launch.
    pub(crate) fn runs(&self) -> impl Iterator<Item = (usize, usize)> {
        chunks(self.rows, self.per)
    }

    /// The grid for a launch over `n` rows.
    pub(crate) fn groups(&self, ctx: &Context, op: &'static str, n: usize) -> Result<[u32; 3]> {
        fold_groups(ctx, op, (n as u64).div_ceil((ROW_WG / self.tpr) as u64))
    }
}
