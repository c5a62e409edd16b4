//! CPU truth for `kernels::embedding`: plain row gather.

/// `table` is `[V, D]` flattened; returns `[ids.len(), D]` flattened.
pub fn embedding(table: &[f32], d: usize, ids: &[u32]) -> Vec<f32> {
    let mut out = Vec::with_capacity(ids.len() * d);
    for &id in ids {
        let r = id as usize;
        out.extend_from_slice(&table[r * d..(r + 1) * d]);
    }
    out
}
