//! Size-bucketed reuse of storage buffers. Creating a wgpu buffer costs a driver allocation and,
//! on first bind, descriptor work; the pool hands a dropped tensor's buffer to the next tensor of
//! the same size class. Reuse is safe without fences because wgpu orders every later use of a
//! buffer after the earlier ones recorded on the same queue.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// Usage of every pooled buffer: bound as storage, copied in (uploads) and out (readback).
pub const POOL_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
struct Inner {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    total: u64,
}

#[derive(Default, Clone)]
pub struct BufferPool {
    inner: Arc<Mutex<Inner>>,
}

/// A buffer on loan from the pool; returns itself when dropped.
pub struct PooledBuffer {
    buffer: Option<wgpu::Buffer>,
    class: u64,
    pool: Arc<Mutex<Inner>>,
}

impl PooledBuffer {
    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buffer.as_ref().expect("buffer present until drop")
    }
    /// Allocated size in bytes (the size class, ≥ the requested size).
    pub fn size(&self) -> u64 {
        self.class
    }
}

impl Drop for PooledBuffer {
    fn drop(&mut self) {
        if let (Some(b), Ok(mut g)) = (self.buffer.take(), self.pool.lock()) {
            g.free.entry(self.class).or_default().push(b);
        }
    }
}

/// Round a request up so that near sizes share buffers: 256-byte granularity below 64 KiB, then
/// eighths of a power of two (at most 12.5% waste).
pub fn size_class(bytes: u64) -> u64 {
    let b = bytes.max(256).div_ceil(256) * 256;
    if b <= 65536 {
        return b;
    }
    let p = 63 - b.leading_zeros() as u64; // 2^p <= b
    let step = 1u64 << (p - 3);
    b.div_ceil(step) * step
}

impl BufferPool {
    pub fn get(&self, device: &wgpu::Device, bytes: u64) -> PooledBuffer {
        let class = size_class(bytes);
        let mut g = self.inner.lock().expect("pool lock");
        let reused = g.free.get_mut(&class).and_then(|v| v.pop());
        let buffer = match reused {
            Some(b) => b,
            None => {
                g.total += class;
                device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("lorafuse.pool"),
                    size: class,
                    usage: POOL_USAGE,
                    mapped_at_creation: false,
                })
            }
        };
        PooledBuffer { buffer: Some(buffer), class, pool: self.inner.clone() }
    }

    pub fn total_bytes(&self) -> u64 {
        self.inner.lock().map(|g| g.total).unwrap_or(0)
    }

    pub fn trim(&self) {
        if let Ok(mut g) = self.inner.lock() {
            let freed: u64 = g.free.iter().map(|(k, v)| k * v.len() as u64).sum();
            g.free.clear();
            g.total -= freed;
        }
    }
}
