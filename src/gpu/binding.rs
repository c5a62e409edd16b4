//! A bindable range of a storage buffer, what a launch binds for each tensor operand.

/// A bindable range of a buffer. `shift` is the element index, inside the binding, of the first
/// requested element (bindings must start at the storage offset alignment); kernels take it as a
/// parameter. Tensors hand these out (`GpuTensor::window`).
pub struct Window<'a> {
    pub buffer: &'a wgpu::Buffer,
    pub offset: u64,
    pub size: u64,
    pub shift: u32,
}

impl<'a> Window<'a> {
    pub fn resource(&self) -> wgpu::BindingResource<'_> {
        wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: self.buffer,
            offset: self.offset,
            size: std::num::NonZeroU64::new(self.size),
        })
    }

    /// The whole of `buffer` (a small buffer a launcher created itself), with no shift.
    pub fn whole(buffer: &'a wgpu::Buffer) -> Window<'a> {
        Window { buffer, offset: 0, size: buffer.size(), shift: 0 }
    }

    /// A second binding of the same range (a kernel may bind one range under two types).
    pub fn again(&self) -> Window<'a> {
        Window { buffer: self.buffer, offset: self.offset, size: self.size, shift: self.shift }
    }
}
