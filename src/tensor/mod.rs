//! Tensors: [`GpuTensor`] (pooled buffer + byte offset + shape + dtype) and [`HostTensor`] (f32 on
//! the CPU, for references, fixtures and results).
//!
//! Tensors are contiguous and row-major (NCHW for images). A tensor may be larger than one storage
//! binding (lavapipe allows 128 MiB, SD1.5's f32 token embedding is 152 MB): kernels bind
//! [`Window`]s of it, each within the device limit, and split their work accordingly.

pub mod windows;

use std::sync::Arc;

use half::f16;

use crate::gpu::pool::{ArenaToken, PooledBuffer};
use crate::gpu::readback::map_read;
use crate::{Context, Error, Result};

pub use crate::gpu::{DType, Window};
pub use windows::{chunks, flat_run, max_window_elems, runs};

/// Row-major f32 data on the host.
#[derive(Clone, Debug, PartialEq)]
pub struct HostTensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

impl HostTensor {
    pub fn new(shape: &[usize], data: Vec<f32>) -> Result<Self> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "host_tensor",
                format!("shape {shape:?} holds {n} elements, data has {}", data.len()),
            ));
        }
        Ok(HostTensor { shape: shape.to_vec(), data })
    }
    pub fn zeros(shape: &[usize]) -> Self {
        HostTensor { shape: shape.to_vec(), data: vec![0.0; shape.iter().product()] }
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    /// The same values rounded to `dtype` (what the GPU sees after upload).
    pub fn rounded(&self, dtype: DType) -> HostTensor {
        HostTensor { shape: self.shape.clone(), data: self.data.iter().map(|&x| dtype.round(x)).collect() }
    }
}

/// A contiguous GPU tensor. Cloning is cheap (the buffer is shared).
#[derive(Clone)]
pub struct GpuTensor {
    pub(crate) buf: Arc<PooledBuffer>,
    /// Byte offset of element 0 in the buffer.
    pub(crate) offset: u64,
    pub shape: Vec<usize>,
    pub dtype: DType,
    /// Set when allocated inside an arena scope (`Context::arena`): shared by every handle of
    /// the tensor, it hands the buffer to the arena's free list when the last handle goes.
    pub(crate) arena: Option<Arc<ArenaToken>>,
}

impl GpuTensor {
    /// An uninitialised tensor from the pool (NaN-filled when the context poisons allocations).
    /// Inside an arena scope (`Context::arena`) it may reuse the buffer of a tensor that died in
    /// the scope: write it only with dispatches recorded in the same scope, never with uploads.
    pub fn empty(ctx: &Context, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        Self::alloc(ctx, shape, dtype, true)
    }

    /// [`GpuTensor::empty`] that never takes part in an arena: for tensors whose contents come
    /// from the CPU or from work submitted at record time (uploads, clears, copies), which
    /// `queue` ordering would put before the recorded pass. Mostly long-lived (weights), so its
    /// buffer is sized exactly rather than by size class.
    pub(crate) fn empty_outside_arena(ctx: &Context, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        Self::alloc(ctx, shape, dtype, false)
    }

    fn alloc(ctx: &Context, shape: &[usize], dtype: DType, in_arena: bool) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        let bytes = (n as u64).checked_mul(dtype.size() as u64).ok_or_else(|| {
            Error::limit("tensor_empty", format!("bytes of shape {shape:?}"), u64::MAX, ctx.caps.max_buffer)
        })?;
        if bytes > ctx.caps.max_buffer {
            return Err(Error::limit(
                "tensor_empty",
                format!("bytes of tensor {shape:?} {}", dtype.name()),
                bytes,
                ctx.caps.max_buffer,
            ));
        }
        if dtype == DType::F16 && !ctx.caps.shader_f16 {
            return Err(Error::dtype("tensor_empty", "f16 tensors need SHADER_F16, which this adapter lacks"));
        }
        let bytes = bytes.max(4);
        let (buf, arena) = match ctx.active_arena().filter(|_| in_arena) {
            Some(a) => {
                let buf = a.take(bytes).unwrap_or_else(|| Arc::new(ctx.pool.get(&ctx.device, bytes)));
                let token = Arc::new(ArenaToken::new(buf.clone(), &a));
                (buf, Some(token))
            }
            None if !in_arena => (Arc::new(ctx.pool.get_exact(&ctx.device, bytes)), None),
            None => (Arc::new(ctx.pool.get(&ctx.device, bytes)), None),
        };
        let t = GpuTensor { buf, offset: 0, shape: shape.to_vec(), dtype, arena };
        // On a recycled arena buffer the fill lands before the recorded pass, where the dead
        // tensor's writers overwrite it: harmless, though it then catches nothing.
        if ctx.poison() {
            let pattern = vec![0xFFu8; t.buf.size() as usize];
            ctx.queue.write_buffer(t.buf.buffer(), 0, &pattern);
        }
        Ok(t)
    }

    /// A tensor of zeros.
    pub fn zeros(ctx: &Context, shape: &[usize], dtype: DType) -> Result<GpuTensor> {
        let t = Self::empty_outside_arena(ctx, shape, dtype)?;
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.clear_buffer(t.buf.buffer(), 0, None);
        ctx.queue.submit([enc.finish()]);
        Ok(t)
    }

    /// Upload f32 values, stored as `dtype`.
    pub fn from_slice(ctx: &Context, shape: &[usize], data: &[f32], dtype: DType) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "tensor_from_slice",
                format!("shape {shape:?} holds {n} elements, data has {}", data.len()),
            ));
        }
        let t = Self::empty_outside_arena(ctx, shape, dtype)?;
        match dtype {
            DType::F32 => t.write_bytes(ctx, bytemuck::cast_slice(data)),
            DType::F16 => {
                let h: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
                t.write_bytes(ctx, bytemuck::cast_slice(&h))
            }
        }
        Ok(t)
    }

    /// Upload f16 values as an f16 tensor (no f32 round trip).
    pub fn from_f16(ctx: &Context, shape: &[usize], data: &[f16]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if n != data.len() {
            return Err(Error::shape(
                "tensor_from_f16",
                format!("shape {shape:?} holds {n} elements, data has {}", data.len()),
            ));
        }
        let t = Self::empty_outside_arena(ctx, shape, DType::F16)?;
        t.write_bytes(ctx, bytemuck::cast_slice(data));
        Ok(t)
    }

    /// Queue a write of `bytes` at the start of this (fresh, offset 0) tensor.
    fn write_bytes(&self, ctx: &Context, bytes: &[u8]) {
        // Large uploads go in slices so wgpu's staging memory stays bounded; a ragged tail is
        // padded to the 4-byte copy granularity.
        const CHUNK: usize = 16 << 20;
        for (i, c) in bytes.chunks(CHUNK).enumerate() {
            ctx.note_upload(c.len());
            let off = self.offset + (i * CHUNK) as u64;
            if c.len() % 4 == 0 {
                ctx.queue.write_buffer(self.buf.buffer(), off, c);
            } else {
                let mut padded = c.to_vec();
                padded.resize(c.len().div_ceil(4) * 4, 0);
                ctx.queue.write_buffer(self.buf.buffer(), off, &padded);
            }
        }
    }

    pub fn from_host(ctx: &Context, h: &HostTensor, dtype: DType) -> Result<GpuTensor> {
        Self::from_slice(ctx, &h.shape, &h.data, dtype)
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn bytes(&self) -> u64 {
        (self.numel() * self.dtype.size()) as u64
    }

    /// The same data under another shape with the same element count.
    pub fn reshape(&self, shape: &[usize]) -> Result<GpuTensor> {
        if shape.iter().product::<usize>() != self.numel() {
            return Err(Error::shape("reshape", format!("{:?} -> {:?}", self.shape, shape)));
        }
        Ok(GpuTensor { shape: shape.to_vec(), ..self.clone() })
    }

    /// A view of `shape` starting `elem_offset` elements into this tensor.
    pub fn view(&self, elem_offset: usize, shape: &[usize]) -> Result<GpuTensor> {
        let n: usize = shape.iter().product();
        if elem_offset + n > self.numel() {
            return Err(Error::shape(
                "view",
                format!("view of {shape:?} at element {elem_offset} exceeds tensor {:?}", self.shape),
            ));
        }
        Ok(GpuTensor {
            buf: self.buf.clone(),
            offset: self.offset + (elem_offset * self.dtype.size()) as u64,
            shape: shape.to_vec(),
            dtype: self.dtype,
            arena: self.arena.clone(),
        })
    }

    /// Whether this tensor was allocated inside an arena scope (its buffer may be reused there
    /// once every handle is gone).
    pub fn in_arena(&self) -> bool {
        self.arena.is_some()
    }

    /// Whether two tensors share a buffer (kernels refuse outputs aliasing inputs).
    pub fn same_buffer(&self, other: &GpuTensor) -> bool {
        Arc::ptr_eq(&self.buf, &other.buf)
    }

    pub(crate) fn keep(&self) -> Arc<PooledBuffer> {
        self.buf.clone()
    }

    pub fn buffer(&self) -> &wgpu::Buffer {
        self.buf.buffer()
    }

    /// A binding covering elements `[start, start+len)`. Errors when it exceeds one binding.
    pub fn window(&self, ctx: &Context, start: usize, len: usize) -> Result<Window<'_>> {
        if start + len > self.numel() {
            return Err(Error::shape(
                "window",
                format!("elements {start}..{} of tensor {:?}", start + len, self.shape),
            ));
        }
        let es = self.dtype.size() as u64;
        let first = self.offset + start as u64 * es;
        let align = ctx.caps.storage_align.max(4);
        let base = first / align * align;
        let end = (first + len.max(1) as u64 * es).div_ceil(4) * 4;
        let size = (end - base).min(self.buf.size() - base);
        if size > ctx.caps.max_binding {
            return Err(Error::limit("window", "binding bytes", size, ctx.caps.max_binding));
        }
        Ok(Window { buffer: self.buf.buffer(), offset: base, size, shift: ((first - base) / es) as u32 })
    }

    /// Whether windows of this tensor starting at a multiple of 4 elements have a shift that is
    /// a multiple of 4, so kernels may bind them as arrays of vec4.
    pub fn vec4_aligned(&self, ctx: &Context) -> bool {
        let es = self.dtype.size() as u64;
        (self.offset / es).is_multiple_of(4) && ctx.caps.storage_align.max(4).is_multiple_of(4 * es)
    }

    /// The whole tensor as one binding.
    pub fn full(&self, ctx: &Context) -> Result<Window<'_>> {
        self.window(ctx, 0, self.numel())
    }

    /// Whether the whole tensor fits one binding.
    pub fn fits_binding(&self, ctx: &Context) -> bool {
        (self.numel() as u64) <= max_window_elems(ctx, self.dtype)
    }

    /// Read back as f32 (waits for all submitted work).
    pub fn to_vec(&self, ctx: &Context) -> Result<Vec<f32>> {
        let es = self.dtype.size() as u64;
        let start = self.offset / 4 * 4;
        let end = (self.offset + self.numel() as u64 * es).div_ceil(4) * 4;
        let staging = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lorafuse.readback"),
            size: (end - start).max(4),
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        let mut enc = ctx.device.create_command_encoder(&Default::default());
        enc.copy_buffer_to_buffer(self.buf.buffer(), start, &staging, 0, end - start);
        ctx.queue.submit([enc.finish()]);
        let bytes = map_read(ctx, &staging, end - start)?;
        let skip = (self.offset - start) as usize;
        let raw = &bytes[skip..skip + self.numel() * es as usize];
        Ok(match self.dtype {
            DType::F32 => bytemuck::pod_collect_to_vec::<u8, f32>(raw),
            DType::F16 => bytemuck::pod_collect_to_vec::<u8, f16>(raw).iter().map(|h| h.to_f32()).collect(),
        })
    }

    pub fn to_host(&self, ctx: &Context) -> Result<HostTensor> {
        Ok(HostTensor { shape: self.shape.clone(), data: self.to_vec(ctx)? })
    }
}
