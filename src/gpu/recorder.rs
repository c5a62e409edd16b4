//! Command recording. Launchers push [`Dispatch`]es (pipeline + bind group + grid) into a
//! [`Recorder`]; `submit` encodes them all into one compute pass of one command buffer, which is
//! what keeps wgpu's per-dispatch CPU cost low. A recorded list can be kept and replayed (the same
//! bind groups every denoising step), since a dispatch owns everything it binds.

use std::sync::Arc;

use crate::gpu::pool::PooledBuffer;
use crate::{Context, Error, Result};

/// One recorded kernel launch. It keeps the pooled buffers it binds alive, so that a tensor dropped
/// before submission cannot hand its buffer to an upload that `queue.write_buffer` would run first.
/// Inside an arena scope (`Context::arena`) the buffer of a dead tensor is still handed to later
/// tensors of the same recording, which only dispatches recorded after this one write.
#[derive(Clone)]
pub struct Dispatch {
    pub label: &'static str,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    #[allow(dead_code)] // held only to keep the buffers alive
    pub(crate) keep: Vec<Arc<PooledBuffer>>,
}

#[derive(Default, Clone)]
pub struct Recorder {
    pub dispatches: Vec<Dispatch>,
}

impl Recorder {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn push(&mut self, d: Dispatch) {
        self.dispatches.push(d);
    }

    pub fn len(&self) -> usize {
        self.dispatches.len()
    }

    pub fn is_empty(&self) -> bool {
        self.dispatches.is_empty()
    }

    fn encode(&self, pass: &mut wgpu::ComputePass<'_>) {
        for d in &self.dispatches {
            pass.set_pipeline(&d.pipeline);
            pass.set_bind_group(0, &d.bind_group, &[]);
            pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
        }
    }

    /// Encode everything recorded into one pass, submit, and clear the recorder. The index lets
    /// a caller wait for this work alone ([`Context::wait_for`]).
    pub fn submit(&mut self, ctx: &Context) -> Result<wgpu::SubmissionIndex> {
        let index = self.replay(ctx)?;
        self.dispatches.clear();
        Ok(index)
    }

    /// Encode and submit the recorded dispatches, keeping them for another replay.
    pub fn replay(&self, ctx: &Context) -> Result<wgpu::SubmissionIndex> {
        ctx.scoped("submit", || {
            let mut enc =
                ctx.device.create_command_encoder(&wgpu::CommandEncoderDescriptor { label: Some("lorafuse.recorder") });
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("lorafuse.pass"),
                    timestamp_writes: None,
                });
                self.encode(&mut pass);
            }
            Ok(ctx.queue.submit([enc.finish()]))
        })
    }

    /// Replay `reps` times inside one timed pass and return GPU milliseconds per repetition, from
    /// timestamp queries at the pass boundaries. `None` when the device has no timestamp queries.
    pub fn time_gpu(&self, ctx: &Context, reps: u32) -> Result<Option<f64>> {
        if !ctx.caps.timestamps {
            return Ok(None);
        }
        let qs = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
            label: Some("lorafuse.timer"),
            ty: wgpu::QueryType::Timestamp,
            count: 2,
        });
        let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lorafuse.timer.resolve"),
            size: 16,
            usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
            mapped_at_creation: false,
        });
        let read = ctx.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("lorafuse.timer.read"),
            size: 16,
            usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            mapped_at_creation: false,
        });
        ctx.scoped("time_gpu", || {
            let mut enc = ctx.device.create_command_encoder(&Default::default());
            {
                let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                    label: Some("lorafuse.timed"),
                    timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                        query_set: &qs,
                        beginning_of_pass_write_index: Some(0),
                        end_of_pass_write_index: Some(1),
                    }),
                });
                for _ in 0..reps {
                    self.encode(&mut pass);
                }
            }
            enc.resolve_query_set(&qs, 0..2, &resolve, 0);
            enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, 16);
            ctx.queue.submit([enc.finish()]);
            Ok(())
        })?;
        let bytes = crate::gpu::readback::map_read(ctx, &read, 16)?;
        let t: &[u64] = bytemuck::cast_slice(&bytes);
        let ticks = t[1].saturating_sub(t[0]) as f64;
        let ns = ticks * ctx.queue.get_timestamp_period() as f64;
        if ns <= 0.0 {
            return Err(Error::Device("timestamp query returned no elapsed time".into()));
        }
        Ok(Some(ns / 1e6 / reps.max(1) as f64))
    }
}
