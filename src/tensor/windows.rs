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
    runs(total, move |_, left| step.min(left))
}

/// `(start, len)` of consecutive runs covering `0..total`, where `len_at(start, left)` chooses each
/// run's length (for runs whose size depends on where they start, e.g. an input halo); a length
/// is clamped to `1..=left`.
pub fn runs(total: usize, mut len_at: impl FnMut(usize, usize) -> usize) -> impl Iterator<Item = (usize, usize)> {
    let mut start = 0;
    std::iter::from_fn(move || {
        if start >= total {
            return None;
        }
        let left = total - start;
        let len = len_at(start, left).clamp(1, left);
        let run = (start, len);
        start += len;
        Some(run)
    })
}

/// Elements per run of a flat elementwise launch: as many as fit one binding, rounded down to a
/// multiple of 1024 so that run starts stay multiples of 1024 elements.
pub fn flat_run(ctx: &Context, dtype: DType) -> usize {
    (max_window_elems(ctx, dtype) / 1024 * 1024).max(1024) as usize
}
