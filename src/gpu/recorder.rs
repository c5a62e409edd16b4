//! Command recording. Launchers push [`Dispatch`]es (pipeline + bind group + grid) into a
//! [`Recorder`]; `submit` encodes them all into one compute pass of one command buffer, which is
//! what keeps wgpu's per-dispatch CPU cost low. A recorded list can be kept and replayed (the same
//! bind groups every denoising step), since a dispatch owns everything it binds.

use std::sync::Arc;

use crate::gpu::pipelines::Recipe;
use crate::gpu::pool::PooledBuffer;
use crate::{Context, Error, Result};

/// One recorded kernel launch. It keeps the pooled buffers it binds alive, so that a tensor dropped
/// before submission cannot hand its buffer to an upload that `queue.write_buffer` would run first.
/// Inside an arena scope (`Context::arena`) the buffer of a dead tensor is still handed to later
/// tensors of the same recording, which only dispatches recorded after this one write.
#[derive(Clone)]
pub struct Dispatch {
    pub label: &'static str,
    /// The pipeline variant (kernel, entry, dtype and override constants), for profiles.
    pub variant: Arc<str>,
    /// How to build the pipeline again (a second device compiles ahead with it).
    pub recipe: Arc<Recipe>,
    /// The bytes of each uniform binding, in binding order: drivers that specialize a pipeline
    /// on uniform values (lavapipe inlines those that bound loops) must see the same ones when
    /// compiling ahead.
    pub uniforms: Arc<Vec<Vec<u8>>>,
    /// The arithmetic and memory traffic of this dispatch where its launcher counts them (GEMM,
    /// conv, attention), for profiles; zero elsewhere.
    pub work: Work,
    /// What the launch was, by shape ("gemm 8192x320x320"), where its launcher says; profiles
    /// group by it.
    pub class: Option<Arc<str>>,
    pub pipeline: wgpu::ComputePipeline,
    pub bind_group: wgpu::BindGroup,
    pub groups: [u32; 3],
    #[allow(dead_code)] // held only to keep the buffers alive
    pub(crate) keep: Vec<Arc<PooledBuffer>>,
}

/// Floating-point operations (a multiply-add is 2) and bytes a dispatch reads and writes.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct Work {
    pub flops: f64,
    pub bytes: f64,
}

/// Dispatches per query set when profiling (two timestamps each; wgpu caps a set at 4096).
const PROFILE_CHUNK: usize = 2048;

/// What [`Recorder::warm_up`] did.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WarmUp {
    /// Pipeline variants that ran for the first time on this context.
    pub variants: usize,
    /// How many of them the second device compiled ahead.
    pub ahead: usize,
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

    /// Compile ahead, visibly: dispatch zero workgroups of each pipeline variant of this recording
    /// that this context has not run yet, one submission at a time, calling `report(done, total)`
    /// after each. Drivers that compile a pipeline at its first dispatch (lavapipe: 1–7 s per
    /// large kernel) then spend that time here, where a caller can show it, instead of silently
    /// inside the first real submission; a zero-sized dispatch compiles without running, so any
    /// recording can be warmed. Where the context has a [`Twin`](crate::gpu::twin::Twin), it takes
    /// variants from the other end of the list on a second thread.
    pub fn warm_up(&self, ctx: &Context, mut report: impl FnMut(usize, usize)) -> Result<WarmUp> {
        let mut seen = ctx.warmed.lock().unwrap_or_else(|e| e.into_inner());
        let mut fresh: Vec<&Dispatch> = Vec::new();
        for d in &self.dispatches {
            if !seen.contains(&d.variant) && !fresh.iter().any(|f| f.variant == d.variant) {
                fresh.push(d);
            }
        }
        let total = fresh.len();
        let twin = if total >= 2 { ctx.twin() } else { None };
        let claims = Claims::new(total);
        let ahead = std::sync::atomic::AtomicUsize::new(0);
        std::thread::scope(|s| -> Result<()> {
            if let Some(twin) = twin {
                let claims = &claims;
                let fresh = &fresh;
                let ahead = &ahead;
                s.spawn(move || {
                    // Marks everything the twin took as done on every exit, panics included, so
                    // the main thread never waits for a variant nobody compiles.
                    let _release = claims.release_on_drop();
                    for i in (0..fresh.len()).rev() {
                        if !claims.take(i, Claim::Twin) {
                            break;
                        }
                        let started = std::time::Instant::now();
                        let recipe = &fresh[i].recipe;
                        match twin.compile(recipe, &fresh[i].uniforms) {
                            Ok(()) => {
                                ahead.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                let secs = started.elapsed().as_secs_f64();
                                log::debug!("compiled {} ahead in {secs:.2} s", recipe.key.label());
                            }
                            Err(e) => log::debug!("compiling ahead failed (the main device compiles it): {e}"),
                        }
                        claims.finish(i);
                    }
                });
            }
            let result = (|| {
                for (i, d) in fresh.iter().enumerate() {
                    if !claims.take(i, Claim::Main) {
                        claims.wait(i);
                    }
                    let started = std::time::Instant::now();
                    let one = Recorder { dispatches: vec![Dispatch { groups: [0, 0, 0], ..(*d).clone() }] };
                    one.replay(ctx)?;
                    ctx.sync()?;
                    log::debug!("first dispatch of {} took {:.2} s", d.variant, started.elapsed().as_secs_f64());
                    seen.insert(d.variant.clone());
                    report(i + 1, total);
                }
                Ok(())
            })();
            // On an error, stop the twin at its next variant.
            claims.close();
            result
        })?;
        Ok(WarmUp { variants: total, ahead: ahead.into_inner() })
    }

    /// Name the dispatches recorded since index `from` as one launch of `class` and spread its
    /// `work` evenly over them (a launch split by binding windows shares its count).
    pub fn annotate(&mut self, from: usize, class: String, work: Work) {
        let Some(ds) = self.dispatches.get_mut(from..) else { return };
        let n = ds.len().max(1) as f64;
        let class: Arc<str> = Arc::from(class);
        for d in ds {
            d.work = Work { flops: work.flops / n, bytes: work.bytes / n };
            d.class = Some(class.clone());
        }
    }

    /// GPU milliseconds of each recorded dispatch, run in order, each in its own timed pass
    /// (so only `TIMESTAMP_QUERY` is needed). A pass per dispatch adds the driver's pass cost to
    /// each, so the sum is somewhat above a normal replay. `None` without timestamp queries.
    pub fn profile(&self, ctx: &Context) -> Result<Option<Vec<f64>>> {
        if !ctx.caps.timestamps {
            return Ok(None);
        }
        let period = ctx.queue.get_timestamp_period() as f64;
        let mut out = Vec::with_capacity(self.dispatches.len());
        for chunk in self.dispatches.chunks(PROFILE_CHUNK) {
            let queries = 2 * chunk.len() as u32;
            let bytes = 8 * queries as u64;
            let qs = ctx.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("lorafuse.profile"),
                ty: wgpu::QueryType::Timestamp,
                count: queries,
            });
            let resolve = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("lorafuse.profile.resolve"),
                size: bytes,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            });
            let read = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("lorafuse.profile.read"),
                size: bytes,
                usage: wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            ctx.scoped("profile", || {
                let mut enc = ctx.device.create_command_encoder(&Default::default());
                for (i, d) in chunk.iter().enumerate() {
                    let mut pass = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: Some(d.label),
                        timestamp_writes: Some(wgpu::ComputePassTimestampWrites {
                            query_set: &qs,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    });
                    pass.set_pipeline(&d.pipeline);
                    pass.set_bind_group(0, &d.bind_group, &[]);
                    pass.dispatch_workgroups(d.groups[0], d.groups[1], d.groups[2]);
                }
                enc.resolve_query_set(&qs, 0..queries, &resolve, 0);
                enc.copy_buffer_to_buffer(&resolve, 0, &read, 0, bytes);
                ctx.queue.submit([enc.finish()]);
                Ok(())
            })?;
            let raw = crate::gpu::readback::map_read(ctx, &read, bytes)?;
            let t: &[u64] = bytemuck::cast_slice(&raw);
            out.extend(t.chunks_exact(2).map(|p| p[1].saturating_sub(p[0]) as f64 * period / 1e6));
        }
        Ok(Some(out))
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

#[derive(Clone, Copy, PartialEq, Eq)]
enum Claim {
    Free,
    Main,
    Twin,
    Done,
}

/// Which thread compiles which variant during [`Recorder::warm_up`].
struct Claims {
    state: std::sync::Mutex<Vec<Claim>>,
    changed: std::sync::Condvar,
}

impl Claims {
    fn new(n: usize) -> Self {
        Claims { state: std::sync::Mutex::new(vec![Claim::Free; n]), changed: std::sync::Condvar::new() }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Claim>> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Claim variant `i` for `who`; false if another thread had it.
    fn take(&self, i: usize, who: Claim) -> bool {
        let mut g = self.lock();
        if g[i] == Claim::Free {
            g[i] = who;
            true
        } else {
            false
        }
    }

    fn finish(&self, i: usize) {
        self.lock()[i] = Claim::Done;
        self.changed.notify_all();
    }

    /// Block until the twin is done with variant `i` (no-op for any other state).
    fn wait(&self, i: usize) {
        let mut g = self.lock();
        while g[i] == Claim::Twin {
            g = self.changed.wait(g).unwrap_or_else(|e| e.into_inner());
        }
    }

    /// Claim every free variant for the main thread, so the twin stops.
    fn close(&self) {
        for c in self.lock().iter_mut() {
            if *c == Claim::Free {
                *c = Claim::Main;
            }
        }
    }

    fn release_on_drop(&self) -> impl Drop + '_ {
        struct Release<'a>(&'a Claims);
        impl Drop for Release<'_> {
            fn drop(&mut self) {
                for c in self.0.lock().iter_mut() {
                    if *c == Claim::Twin {
                        *c = Claim::Done;
                    }
                }
                self.0.changed.notify_all();
            }
        }
        Release(self)
    }
}
