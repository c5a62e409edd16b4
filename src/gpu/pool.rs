//! Size-bucketed reuse of storage buffers. Creating a wgpu buffer costs a driver allocation and,
//! on first bind, descriptor work; the pool hands a dropped tensor's buffer to the next tensor of
//! the same size class. Reuse is safe without fences because wgpu orders every later use of a
//! buffer after the earlier ones recorded on the same queue.
//!
//! The pool only gets a buffer back when nothing holds it, and a recorded dispatch holds every
//! buffer it binds (so the recording can be replayed). A recorded graph would therefore keep every
//! intermediate it ever allocated. An [`Arena`] (opened with `Context::arena`) reuses buffers
//! *within* one recording by liveness instead: see its docs for why that is safe.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::thread::ThreadId;

/// Usage of every pooled buffer: bound as storage, copied in (uploads) and out (readback).
pub const POOL_USAGE: wgpu::BufferUsages =
    wgpu::BufferUsages::STORAGE.union(wgpu::BufferUsages::COPY_SRC).union(wgpu::BufferUsages::COPY_DST);

#[derive(Default)]
struct Inner {
    free: HashMap<u64, Vec<wgpu::Buffer>>,
    total: u64,
    /// The most `total` has been since the last `reset_peak` (benchmarks report it per phase).
    peak: u64,
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
        self.get_class(device, size_class(bytes))
    }

    /// A buffer of `bytes` rounded up only to 256, for long-lived tensors (weights, uploads): a
    /// size class would waste up to an eighth of each, and wgpu zero-fills that tail on first use,
    /// so it would be resident memory (85 MB of SD1.5's weights in f16).
    pub fn get_exact(&self, device: &wgpu::Device, bytes: u64) -> PooledBuffer {
        self.get_class(device, bytes.max(256).div_ceil(256) * 256)
    }

    fn get_class(&self, device: &wgpu::Device, class: u64) -> PooledBuffer {
        let mut g = self.inner.lock().expect("pool lock");
        let reused = g.free.get_mut(&class).and_then(|v| v.pop());
        let buffer = match reused {
            Some(b) => b,
            None => {
                g.total += class;
                g.peak = g.peak.max(g.total);
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

    /// The most bytes the pool held at once since it was made or [`BufferPool::reset_peak`].
    pub fn peak_bytes(&self) -> u64 {
        self.inner.lock().map(|g| g.peak).unwrap_or(0)
    }

    /// Starts a new peak from what the pool holds now.
    pub fn reset_peak(&self) {
        if let Ok(mut g) = self.inner.lock() {
            g.peak = g.total;
        }
    }

    pub fn trim(&self) {
        if let Ok(mut g) = self.inner.lock() {
            let freed: u64 = g.free.iter().map(|(k, v)| k * v.len() as u64).sum();
            g.free.clear();
            g.total -= freed;
        }
    }
}

/// Free list of one recording scope: buffers of tensors that died while the scope was open, by
/// size class, handed to the next tensors allocated in the scope.
///
/// Why a recycled buffer is safe although the dead tensor's dispatches still bind it (and replay):
/// the recording runs in order in one compute pass (wgpu puts a barrier between dispatches that
/// touch the same buffer), and a tensor without handles has no later reader, so every use of the
/// old tensor is ordered before the first write of the new one, on every replay. This holds only
/// for contents written by dispatches of the same recording: a CPU upload (`queue.write_buffer`),
/// a clear or a copy submitted at record time runs *before* the pass, where an earlier user of the
/// buffer would overwrite it. So tensors filled that way never come from, nor go to, an arena
/// (`GpuTensor::from_slice` and friends allocate outside it), and work recorded in an arena must
/// be submitted as one ordered sequence (one recorder, replayed as a whole).
pub(crate) struct Arena {
    free: Mutex<BTreeMap<u64, Vec<Arc<PooledBuffer>>>>,
    owner: ThreadId,
    reused: AtomicU64,
}

/// A recycled buffer may be at most this many times the request's size class, so a small tensor
/// does not take a big buffer that a later big tensor would then have to allocate anew.
const MAX_OVERSIZE: u64 = 2;

impl Arena {
    pub(crate) fn new(owner: ThreadId) -> Self {
        Arena { free: Mutex::new(BTreeMap::new()), owner, reused: AtomicU64::new(0) }
    }

    pub(crate) fn owner(&self) -> ThreadId {
        self.owner
    }

    /// The smallest free buffer that holds `bytes` (within [`MAX_OVERSIZE`]), if any.
    pub(crate) fn take(&self, bytes: u64) -> Option<Arc<PooledBuffer>> {
        let class = size_class(bytes);
        let mut g = self.free.lock().ok()?;
        let (&k, v) = g.range_mut(class..=class.saturating_mul(MAX_OVERSIZE)).find(|(_, v)| !v.is_empty())?;
        let b = v.pop();
        if v.is_empty() {
            g.remove(&k);
        }
        if b.is_some() {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        b
    }

    fn put(&self, buf: Arc<PooledBuffer>) {
        if let Ok(mut g) = self.free.lock() {
            g.entry(buf.size()).or_default().push(buf);
        }
    }

    /// How many allocations were served from the free list.
    pub(crate) fn reused(&self) -> u64 {
        self.reused.load(Ordering::Relaxed)
    }
}

/// Shared by every handle (clone, view, reshape) of one tensor allocated in an arena; when the
/// last handle goes while that arena is still open, the buffer joins its free list. After the
/// arena closed the token does nothing and the buffer goes back to the pool as usual.
pub(crate) struct ArenaToken {
    buf: Arc<PooledBuffer>,
    arena: Weak<Arena>,
}

impl ArenaToken {
    pub(crate) fn new(buf: Arc<PooledBuffer>, arena: &Arc<Arena>) -> Self {
        ArenaToken { buf, arena: Arc::downgrade(arena) }
    }
}

impl Drop for ArenaToken {
    fn drop(&mut self) {
        if let Some(a) = self.arena.upgrade() {
            a.put(self.buf.clone());
        }
    }
}
