//! Launcher for `shaders/embedding.wgsl`: row gather `out[q] = table[ids[q]]`.
//!
//! The table may be larger than one storage binding (SD1.5's CLIP token embedding is 49408 × 768
//! f32 = 152 MB, lavapipe binds 128 MiB): it is cut into row ranges that fit, the output too, and
//! the ids are routed on the host so each dispatch gathers only the ids that fall in its ranges.
//! The routed (output row, table row) pairs travel in one small storage buffer created here.

use std::collections::BTreeMap;

use bytemuck::{Pod, Zeroable};

use crate::gpu::{flat_groups, launch, Arg, KernelSource, PipelineKey, Recorder};
use crate::tensor::{chunks, max_window_elems, GpuTensor, Window};
use crate::{wgsl, Context, Error, Result};

pub static SRC: KernelSource = wgsl!("embedding");
const WG: u32 = 256;

#[repr(C)]
#[derive(Clone, Copy, Pod, Zeroable)]
struct Params {
    n: u32,
    cols: u32,
    d: u32,
    t_shift: u32,
    o_shift: u32,
}

/// A read-only storage buffer holding `words` (filled at creation, so no queue write is ordered
/// against earlier work). It is not pooled: a bind group that uses it keeps it alive (wgpu-core's
/// `BindGroup` holds an `Arc` of every buffer it binds), so launchers can drop their handle once
/// the dispatch is recorded.
pub(crate) fn storage_from_words(ctx: &Context, op: &'static str, words: &[u32]) -> Result<wgpu::Buffer> {
    let size = (words.len().max(1) * 4) as u64;
    ctx.scoped(op, || {
        let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(op),
            size,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: true,
        });
        match buf.slice(..).get_mapped_range_mut() {
            Ok(mut v) => {
                let mut bytes: Vec<u8> = bytemuck::cast_slice(words).to_vec();
                bytes.resize(size as usize, 0);
                v.copy_from_slice(&bytes);
            }
            Err(e) => return Err(Error::Gpu { op, msg: format!("map {op} buffer: {e}") }),
        }
        buf.unmap();
        Ok(buf)
    })
}

/// Gather rows of `table [V, D]` → `[ids.len(), D]`. Every id must be < V.
pub fn embedding(ctx: &Context, rec: &mut Recorder, table: &GpuTensor, ids: &[u32]) -> Result<GpuTensor> {
    const OP: &str = "embedding";
    let &[v, d] = table.shape.as_slice() else {
        return Err(Error::shape(OP, format!("table must be [V, D], got {:?}", table.shape)));
    };
    if let Some((i, &id)) = ids.iter().enumerate().find(|(_, &id)| id as usize >= v) {
        return Err(Error::invalid(
            OP,
            format!("id {id} (position {i}) is out of range for a table of V = {v} rows {:?}", table.shape),
        ));
    }
    let n = ids.len();
    let out = GpuTensor::empty(ctx, &[n, d], table.dtype)?;
    if n == 0 || d == 0 {
        return Ok(out);
    }
    // Chunk sizes: columns (all unless one row exceeds a binding), then table rows and output
    // rows per window; a window of `rows` rows spans (rows-1)·D + cols elements. Output chunks are
    // also bounded so one chunk's pairs fit a binding.
    let cap = max_window_elems(ctx, table.dtype).clamp(1, 1 << 31) as usize;
    let cw = d.min(cap);
    let rows_per = if cw < d { 1 } else { (cap - d) / d + 1 };
    let align = ctx.caps.storage_align.max(8) as usize;
    let pair_cap = ((ctx.caps.max_binding as usize).saturating_sub(align) / 8).max(1);
    let (t_rows, o_rows) = (rows_per, rows_per.min(pair_cap));

    // Route: (table chunk, output chunk) -> flattened (output row, table row) pairs, local.
    let mut routes: BTreeMap<(usize, usize), Vec<u32>> = BTreeMap::new();
    for (q, &id) in ids.iter().enumerate() {
        let (tc, oc) = (id as usize / t_rows, q / o_rows);
        let e = routes.entry((tc, oc)).or_default();
        e.push((q - oc * o_rows) as u32);
        e.push((id as usize - tc * t_rows) as u32);
    }
    // One buffer, each route's segment starting at the storage offset alignment.
    let align_words = align / 4;
    let mut words: Vec<u32> = Vec::with_capacity(2 * n + routes.len() * align_words);
    let mut segments = Vec::with_capacity(routes.len());
    for (&(tc, oc), pairs) in &routes {
        words.resize(words.len().div_ceil(align_words) * align_words, 0);
        segments.push((tc, oc, words.len() * 4, pairs.len() / 2));
        words.extend_from_slice(pairs);
    }
    let buf = storage_from_words(ctx, OP, &words)?;
    let key = PipelineKey::new(&SRC, "main", table.dtype).with("WG", WG);
    for (c0, nc) in chunks(d, cw) {
        for &(tc, oc, byte_off, count) in &segments {
            let tr0 = tc * t_rows;
            let tr = t_rows.min(v - tr0);
            let or0 = oc * o_rows;
            let or = o_rows.min(n - or0);
            let tw = table.window(ctx, tr0 * d + c0, (tr - 1) * d + nc)?;
            let ow = out.window(ctx, or0 * d + c0, (or - 1) * d + nc)?;
            let pw = Window { buffer: &buf, offset: byte_off as u64, size: count as u64 * 8, shift: 0 };
            let total = count * nc;
            let p = Params { n: total as u32, cols: nc as u32, d: d as u32, t_shift: tw.shift, o_shift: ow.shift };
            let groups = flat_groups(ctx, OP, total, WG)?;
            let args = [Arg::Read(tw), Arg::Read(pw), Arg::Write(ow), Arg::Uniform(bytemuck::bytes_of(&p))];
            launch(ctx, rec, &SRC, &key, &args, groups, vec![table.keep(), out.keep()])?;
        }
    }
    Ok(out)
}
