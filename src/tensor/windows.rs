//! Splitting work into binding-sized pieces. A tensor may exceed one storage binding; launchers
//! cut their work into runs (rows, columns, batches, channel blocks...) whose windows each fit,
//! and walk them with [`chunks`].

use crate::{Context, DType};

/// Number of elements of `dtype` that always fit in one binding whatever the window's alignment.
pub fn max_window_elems(ctx: &Context, dtype: DType) -> u64 {
    (ctx.caps.max_binding.saturating_sub(ctx.caps.storage_align)) / dtype.size() as u64
}

/// `(start, len)` of the runs of at most `step` items that cover `0..total`, in order; the last one
/// may be shorter. A `step` of 0 is taken as 1.
pub fn chunks(total: usize, step: usize) -> impl Iterator<Item = (usize, usize)> {
    let step = step.max(1);
    (0..total).step_by(step).map(move |start| (start, step.min(total - start)))
}
