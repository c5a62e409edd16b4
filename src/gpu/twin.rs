//! A second device on the same adapter that compiles pipeline variants ahead, beside the main one.
//!
//! Worth it only where a driver compiles a pipeline at its first dispatch, single-threaded, into
//! a cache that both devices read: lavapipe JITs each variant with LLVM when it first runs (1–7 s
//! for a large kernel) on its queue thread, and keeps the object code in Mesa's shader cache keyed
//! by the shader's IR. A variant the twin has run is then found in that cache when the main device
//! runs it, so two cores compile where one did. The twin binds small placeholder storage buffers
//! and the main dispatch's own uniform bytes (lavapipe decides per pipeline, from the first
//! values it sees, whether to inline uniforms that bound loops, which changes the IR), and
//! dispatches zero workgroups, which compiles without executing anything.

use crate::gpu::pipelines::{build_pipeline, BindKind, Recipe};
use crate::{Error, Result};

/// Bytes of each placeholder storage binding: above the fixed part and one element of every
/// kernel's arrays, which is all wgpu checks a binding's size against.
const PLACEHOLDER: u64 = 4096;

pub(crate) struct Twin {
    device: wgpu::Device,
    queue: wgpu::Queue,
}

impl Twin {
    /// A device with the same features and limits as `main`, or `None` where the adapter will not
    /// give a second one (the main path does not need it).
    pub(crate) fn open(adapter: &wgpu::Adapter, main: &wgpu::Device) -> Option<Twin> {
        let desc = wgpu::DeviceDescriptor {
            label: Some("lorafuse.twin"),
            required_features: main.features(),
            required_limits: main.limits(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::MemoryUsage,
            trace: wgpu::Trace::Off,
        };
        match pollster::block_on(adapter.request_device(&desc)) {
            Ok((device, queue)) => Some(Twin { device, queue }),
            Err(e) => {
                log::debug!("no second device for compiling ahead: {e}");
                None
            }
        }
    }

    /// Build `recipe`'s pipeline here and dispatch it with zero workgroups, its uniform bindings
    /// holding `uniforms` (the main dispatch's bytes), then wait until the queue has run it (the
    /// driver has compiled it by then).
    pub(crate) fn compile(&self, recipe: &Recipe, uniforms: &[Vec<u8>]) -> Result<()> {
        let label = recipe.key.label();
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let run = || -> Result<()> {
            let (layout, pipeline) = build_pipeline(&self.device, None, recipe, &label)?;
            let mut next_uniform = uniforms.iter();
            let buffers: Vec<wgpu::Buffer> = recipe
                .kinds
                .iter()
                .map(|k| match k {
                    BindKind::Uniform => {
                        let bytes = next_uniform.next().map(|b| b.as_slice()).unwrap_or(&[0; 16]);
                        let buf = self.device.create_buffer(&wgpu::BufferDescriptor {
                            label: Some("lorafuse.twin.params"),
                            size: bytes.len() as u64,
                            usage: wgpu::BufferUsages::UNIFORM,
                            mapped_at_creation: true,
                        });
                        if let Ok(mut v) = buf.slice(..).get_mapped_range_mut() {
                            v.copy_from_slice(bytes);
                        }
                        buf.unmap();
                        buf
                    }
                    BindKind::Read | BindKind::ReadWrite => self.device.create_buffer(&wgpu::BufferDescriptor {
                        label: Some("lorafuse.twin.placeholder"),
                        size: PLACEHOLDER,
                        usage: wgpu::BufferUsages::STORAGE,
                        mapped_at_creation: false,
                    }),
                })
                .collect();
            let entries: Vec<wgpu::BindGroupEntry> = buffers
                .iter()
                .enumerate()
                .map(|(i, b)| wgpu::BindGroupEntry { binding: i as u32, resource: b.as_entire_binding() })
                .collect();
            let bind_group = self.device.create_bind_group(&wgpu::BindGroupDescriptor {
                label: Some("lorafuse.twin"),
                layout: &layout,
                entries: &entries,
            });
            let mut enc = self.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&Default::default());
                pass.set_pipeline(&pipeline);
                pass.set_bind_group(0, &bind_group, &[]);
                pass.dispatch_workgroups(0, 0, 0);
            }
            self.queue.submit([enc.finish()]);
            self.device
                .poll(wgpu::PollType::wait_indefinitely())
                .map_err(|e| Error::Device(format!("poll failed: {e}")))?;
            Ok(())
        };
        let r = run();
        let e1 = pollster::block_on(val.pop());
        let e2 = pollster::block_on(oom.pop());
        if let Some(e) = e1.or(e2) {
            return Err(Error::Shader { kernel: label, msg: e.to_string() });
        }
        r
    }
}
