//! Reading GPU memory back to the host.

use crate::{Context, Error, Result};

/// Map a MAP_READ buffer after all submitted work and copy out its first `len` bytes.
pub(crate) fn map_read(ctx: &Context, buf: &wgpu::Buffer, len: u64) -> Result<Vec<u8>> {
    let (tx, rx) = std::sync::mpsc::channel();
    buf.map_async(wgpu::MapMode::Read, 0..len, move |r| {
        let _ = tx.send(r);
    });
    ctx.sync()?;
    rx.recv().map_err(|e| Error::Readback(e.to_string()))?.map_err(|e| Error::Readback(e.to_string()))?;
    let out = buf.get_mapped_range(0..len).map_err(|e| Error::Readback(e.to_string()))?.to_vec();
    buf.unmap();
    Ok(out)
}
