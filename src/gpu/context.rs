//! Device creation and the capability snapshot that kernels choose their variants from.
//!
//! A [`Context`] is either created here (adapter picked by `LORAFUSE_ADAPTER` or by preference for
//! a discrete GPU) or built around a device and queue that a host application already owns, so
//! lorafuse can be embedded in another wgpu program without a second device.

use std::sync::{Arc, Mutex};

use crate::gpu::disk_cache::DiskCache;
use crate::gpu::pipelines::PipelineCache;
use crate::gpu::pool::{Arena, BufferPool};
use crate::gpu::tune::{Autotune, TuneStore};
use crate::gpu::twin::Twin;
use crate::{Error, Result};

/// What kind of adapter the device runs on. Kernels pick CPU-friendly variants (bigger tiles,
/// fewer workgroups) on [`AdapterKind::Cpu`] (lavapipe, SwiftShader).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum AdapterKind {
    DiscreteGpu,
    IntegratedGpu,
    VirtualGpu,
    Cpu,
    Other,
}

impl From<wgpu::DeviceType> for AdapterKind {
    fn from(t: wgpu::DeviceType) -> Self {
        match t {
            wgpu::DeviceType::DiscreteGpu => AdapterKind::DiscreteGpu,
            wgpu::DeviceType::IntegratedGpu => AdapterKind::IntegratedGpu,
            wgpu::DeviceType::VirtualGpu => AdapterKind::VirtualGpu,
            wgpu::DeviceType::Cpu => AdapterKind::Cpu,
            wgpu::DeviceType::Other => AdapterKind::Other,
        }
    }
}

impl AdapterKind {
    /// Preference when several adapters are available (lower is better).
    fn rank(self) -> u32 {
        match self {
            AdapterKind::DiscreteGpu => 0,
            AdapterKind::IntegratedGpu => 1,
            AdapterKind::VirtualGpu => 2,
            AdapterKind::Other => 3,
            AdapterKind::Cpu => 4,
        }
    }
}

/// Prints wgpu's variant names (`DiscreteGpu`, `Cpu`, ...), as `lorafuse info` always has.
impl std::fmt::Display for AdapterKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Debug::fmt(self, f)
    }
}

/// What the device can do, captured once; kernels read this instead of querying wgpu.
#[derive(Clone, Debug)]
pub struct Caps {
    pub adapter_name: String,
    pub backend: String,
    pub device_type: AdapterKind,
    pub driver: String,
    pub shader_f16: bool,
    pub subgroups: bool,
    pub subgroup_min_size: u32,
    pub subgroup_max_size: u32,
    pub timestamps: bool,
    pub timestamps_inside_passes: bool,
    pub max_binding: u64,
    pub max_buffer: u64,
    pub storage_align: u64,
    pub max_workgroup_storage: u32,
    pub max_invocations: u32,
    pub max_workgroups_per_dim: u32,
    pub max_storage_buffers_per_stage: u32,
}

/// Options for [`Context::new`].
#[derive(Clone, Debug, Default)]
pub struct ContextOptions {
    /// Substring of the adapter name to pick; overrides `LORAFUSE_ADAPTER`.
    pub adapter: Option<String>,
    /// Do not request SHADER_F16 even where available (forces the f32 paths).
    pub disable_f16: bool,
    /// Keep compiled pipelines in this folder between runs, where the backend supports it
    /// (Vulkan); saved by [`Context::save_pipeline_cache`] and when the context is dropped.
    pub pipeline_cache_dir: Option<std::path::PathBuf>,
    /// Where kernels measure their tile shapes at first use (kept in `pipeline_cache_dir`).
    pub autotune: Autotune,
}

/// The GPU device plus everything shared by kernels: pipeline cache, buffer pool, capabilities.
pub struct Context {
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub caps: Caps,
    pub(crate) pool: BufferPool,
    pub(crate) pipelines: PipelineCache,
    /// When set, every newly handed-out tensor is filled with NaN so that kernels which forget to
    /// write an element are caught by tests.
    poison: std::sync::atomic::AtomicBool,
    lost: Arc<Mutex<Option<String>>>,
    /// The open arena scope, if any (see [`Context::arena`]).
    arena: Mutex<Option<Arc<Arena>>>,
    /// Compiled pipelines persisted between runs (see [`ContextOptions::pipeline_cache_dir`]).
    pub(crate) disk_cache: Option<DiskCache>,
    /// Tile shapes measured on this adapter (see [`TuneStore`]).
    pub tune: TuneStore,
    /// Pipeline variants already dispatched once (see [`Recorder::warm_up`](crate::Recorder)).
    pub(crate) warmed: Mutex<std::collections::HashSet<Arc<str>>>,
    /// Bytes written by `queue.write_buffer` since the last flush (see [`Context::note_upload`]).
    queued_upload: std::sync::atomic::AtomicU64,
    pub autotune: Autotune,
    /// The adapter, where this context created the device (not for [`Context::from_device`]).
    adapter: Option<wgpu::Adapter>,
    /// A second device that compiles ahead (see [`Twin`]); opened at first need.
    twin: std::sync::OnceLock<Option<Twin>>,
}

/// Queued upload bytes after which pending writes are submitted (see [`Context::note_upload`]).
const UPLOAD_FLUSH: u64 = 16 << 20;

/// An open arena scope; closing it (drop) drops the scope's free list. Returned by
/// [`Context::arena`]; a guard from a nested call owns nothing.
#[must_use = "the arena closes when the guard is dropped: bind it, e.g. `let _g = ctx.arena();`"]
pub struct ArenaGuard<'a> {
    ctx: &'a Context,
    owns: bool,
}

impl Drop for ArenaGuard<'_> {
    fn drop(&mut self) {
        if self.owns {
            let a = self.ctx.arena.lock().ok().and_then(|mut g| g.take());
            if let Some(a) = a {
                log::debug!("arena closed: {} allocations reused dead intermediates", a.reused());
            }
        }
    }
}

const NO_ADAPTER_HELP: &str = "lorafuse needs a GPU through Vulkan, Metal, DX12 or OpenGL. On Linux without a \
GPU, install the Mesa software driver: `apt-get install mesa-vulkan-drivers` (Debian/Ubuntu) or \
`dnf install mesa-vulkan-drivers` (Fedora). On a machine with a GPU, install its vendor's Vulkan driver. \
Set LORAFUSE_ADAPTER=<name substring> to pick one adapter among several.";

fn backend_rank(b: wgpu::Backend) -> u32 {
    match b {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        wgpu::Backend::Gl => 1,
        _ => 2,
    }
}

impl Caps {
    /// Whether the adapter is a CPU implementation (lavapipe, SwiftShader).
    pub fn is_cpu(&self) -> bool {
        self.device_type == AdapterKind::Cpu
    }
}

impl Context {
    /// Create a device on the best adapter (see module docs).
    pub fn new(opts: &ContextOptions) -> Result<Context> {
        pollster::block_on(Self::new_async(opts))
    }

    async fn new_async(opts: &ContextOptions) -> Result<Context> {
        // GL only when no modern backend has an adapter: probing it prints EGL noise and its
        // compute support is the weakest.
        let mut adapters = Vec::new();
        for backends in [wgpu::Backends::VULKAN | wgpu::Backends::METAL | wgpu::Backends::DX12, wgpu::Backends::GL] {
            let mut desc = wgpu::InstanceDescriptor::new_without_display_handle();
            desc.backends = backends;
            desc.flags = wgpu::InstanceFlags::empty();
            let instance = wgpu::Instance::new(desc.with_env());
            adapters = instance.enumerate_adapters(wgpu::Backends::all()).await;
            if !adapters.is_empty() {
                break;
            }
        }
        if adapters.is_empty() {
            return Err(Error::NoAdapter(NO_ADAPTER_HELP.into()));
        }
        let wanted = opts.adapter.clone().or_else(|| std::env::var("LORAFUSE_ADAPTER").ok()).filter(|s| !s.is_empty());
        let adapter = if let Some(w) = wanted {
            let lw = w.to_lowercase();
            let names: Vec<String> = adapters.iter().map(|a| a.get_info().name).collect();
            adapters.into_iter().find(|a| a.get_info().name.to_lowercase().contains(&lw)).ok_or_else(|| {
                Error::NoAdapter(format!(
                    "no adapter name contains {w:?} (LORAFUSE_ADAPTER); available: {}",
                    names.join(", ")
                ))
            })?
        } else {
            let mut a = adapters;
            a.sort_by_key(|a| {
                let i = a.get_info();
                (AdapterKind::from(i.device_type).rank(), backend_rank(i.backend))
            });
            a.into_iter().next().expect("non-empty")
        };

        let af = adapter.features();
        let mut features = wgpu::Features::empty();
        for f in [
            wgpu::Features::SHADER_F16,
            wgpu::Features::SUBGROUP,
            wgpu::Features::TIMESTAMP_QUERY,
            wgpu::Features::TIMESTAMP_QUERY_INSIDE_ENCODERS,
            wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES,
            wgpu::Features::PIPELINE_CACHE,
        ] {
            if af.contains(f) && !(opts.disable_f16 && f == wgpu::Features::SHADER_F16) {
                features |= f;
            }
        }
        // Ask for everything the adapter offers: the defaults (128 MiB bindings, 16 KiB
        // workgroup memory) are far below what real GPUs give.
        let limits = adapter.limits();
        let (device, queue) = adapter
            .request_device(&wgpu::DeviceDescriptor {
                label: Some("lorafuse"),
                required_features: features,
                required_limits: limits,
                experimental_features: wgpu::ExperimentalFeatures::disabled(),
                memory_hints: wgpu::MemoryHints::Performance,
                trace: wgpu::Trace::Off,
            })
            .await
            .map_err(|e| Error::Device(format!("request_device failed: {e}")))?;
        let info = adapter.get_info();
        let mut ctx = Self::build(device, queue, &info);
        ctx.disk_cache = opts.pipeline_cache_dir.as_deref().and_then(|d| DiskCache::open(&ctx.device, &info, d));
        ctx.tune = TuneStore::open(&info, opts.pipeline_cache_dir.as_deref());
        ctx.autotune = opts.autotune;
        ctx.adapter = Some(adapter);
        Ok(ctx)
    }

    /// Adopt a device and queue owned by the host application. `info` is the adapter's info
    /// (for names and subgroup sizes). Features and limits are read from the device.
    pub fn from_device(device: wgpu::Device, queue: wgpu::Queue, info: &wgpu::AdapterInfo) -> Context {
        Self::build(device, queue, info)
    }

    fn build(device: wgpu::Device, queue: wgpu::Queue, info: &wgpu::AdapterInfo) -> Context {
        let f = device.features();
        let l = device.limits();
        let caps = Caps {
            adapter_name: info.name.clone(),
            backend: format!("{:?}", info.backend),
            device_type: info.device_type.into(),
            driver: format!("{} {}", info.driver, info.driver_info).trim().to_string(),
            shader_f16: f.contains(wgpu::Features::SHADER_F16),
            subgroups: f.contains(wgpu::Features::SUBGROUP),
            subgroup_min_size: info.subgroup_min_size,
            subgroup_max_size: info.subgroup_max_size,
            timestamps: f.contains(wgpu::Features::TIMESTAMP_QUERY),
            timestamps_inside_passes: f.contains(wgpu::Features::TIMESTAMP_QUERY_INSIDE_PASSES),
            max_binding: l.max_storage_buffer_binding_size.min(l.max_buffer_size),
            max_buffer: l.max_buffer_size,
            storage_align: l.min_storage_buffer_offset_alignment as u64,
            max_workgroup_storage: l.max_compute_workgroup_storage_size,
            max_invocations: l.max_compute_invocations_per_workgroup,
            max_workgroups_per_dim: l.max_compute_workgroups_per_dimension,
            max_storage_buffers_per_stage: l.max_storage_buffers_per_shader_stage,
        };
        let lost = Arc::new(Mutex::new(None));
        let lost2 = lost.clone();
        device.set_device_lost_callback(move |reason, msg| {
            if let Ok(mut g) = lost2.lock() {
                *g = Some(format!("{reason:?}: {msg}"));
            }
        });
        log::info!(
            "adapter: {} ({}, {}), f16={}, subgroups={}, timestamps={}, max binding {} MiB",
            caps.adapter_name,
            caps.backend,
            caps.device_type,
            caps.shader_f16,
            caps.subgroups,
            caps.timestamps,
            caps.max_binding >> 20
        );
        Context {
            device,
            queue,
            caps,
            pool: BufferPool::default(),
            pipelines: PipelineCache::default(),
            poison: std::sync::atomic::AtomicBool::new(false),
            disk_cache: None,
            tune: TuneStore::default(),
            warmed: Mutex::new(Default::default()),
            queued_upload: Default::default(),
            autotune: Autotune::default(),
            lost,
            arena: Mutex::new(None),
            adapter: None,
            twin: Default::default(),
        }
    }

    /// Fill every tensor handed out from now on with NaN (tests use this to catch unwritten outputs).
    pub fn set_poison(&self, on: bool) {
        self.poison.store(on, std::sync::atomic::Ordering::Relaxed);
    }

    pub(crate) fn poison(&self) -> bool {
        self.poison.load(std::sync::atomic::Ordering::Relaxed)
    }

    /// Open an arena scope for recording a graph: until the guard drops, tensors that
    /// `GpuTensor::empty` hands out on this thread are arena tensors, and when the last handle of
    /// one goes its buffer is reused by later arena tensors instead of staying reserved for the
    /// dispatches that bound it. Tensors still alive when the scope closes (the graph's outputs)
    /// keep their buffers. Nested calls (or calls from another thread while one is open) return a
    /// guard that does nothing.
    ///
    /// Rules for the code inside (the pool module's `Arena` explains them): everything recorded
    /// in the scope goes into one recorder (or recorders submitted/replayed in recording order),
    /// and no tensor allocated in the scope is filled at record time by the CPU, a clear, a copy
    /// or a separately submitted recorder. The uploading constructors (`from_slice`, `from_f16`,
    /// `zeros`) already allocate outside the arena.
    pub fn arena(&self) -> ArenaGuard<'_> {
        let mut g = self.arena.lock().unwrap_or_else(|e| e.into_inner());
        let owns = g.is_none();
        if owns {
            *g = Some(Arc::new(Arena::new(std::thread::current().id())));
        }
        ArenaGuard { ctx: self, owns }
    }

    /// The open arena, if this thread opened it.
    pub(crate) fn active_arena(&self) -> Option<Arc<Arena>> {
        let g = self.arena.lock().ok()?;
        g.as_ref().filter(|a| a.owner() == std::thread::current().id()).cloned()
    }

    /// Write the pipelines compiled so far to the on-disk cache (a no-op without one, or when
    /// nothing new was compiled). Also done when the context is dropped.
    pub fn save_pipeline_cache(&self) -> Result<()> {
        self.tune.save()?;
        self.disk_cache.as_ref().map_or(Ok(()), |c| c.save())
    }

    /// Block until the submission `index` (and everything before it) is done.
    pub fn wait_for(&self, index: wgpu::SubmissionIndex) -> Result<()> {
        self.device
            .poll(wgpu::PollType::Wait { submission_index: Some(index), timeout: None })
            .map_err(|e| Error::Device(format!("poll failed: {e}")))?;
        self.check_lost()
    }

    /// Block until all submitted work is done.
    /// Account `bytes` queued by `queue.write_buffer`. wgpu stages every write in memory of its
    /// own until the next submission completes, so a model load (thousands of writes and no
    /// dispatch) would hold a second copy of all its weights at once; past [`UPLOAD_FLUSH`] queued
    /// bytes this submits the pending writes and waits, which frees their staging memory.
    pub(crate) fn note_upload(&self, bytes: usize) {
        use std::sync::atomic::Ordering;
        let queued = self.queued_upload.fetch_add(bytes as u64, Ordering::Relaxed) + bytes as u64;
        if queued >= UPLOAD_FLUSH {
            self.queued_upload.store(0, Ordering::Relaxed);
            self.queue.submit([]);
            let _ = self.device.poll(wgpu::PollType::wait_indefinitely());
        }
    }

    pub fn sync(&self) -> Result<()> {
        self.device
            .poll(wgpu::PollType::wait_indefinitely())
            .map_err(|e| Error::Device(format!("poll failed: {e}")))?;
        self.check_lost()
    }

    /// An error if the device was lost.
    pub fn check_lost(&self) -> Result<()> {
        match self.lost.lock().ok().and_then(|g| g.clone()) {
            Some(m) => Err(Error::Device(format!("device lost: {m}"))),
            None => Ok(()),
        }
    }

    /// Run `f` inside a validation + out-of-memory error scope and turn a captured wgpu error into
    /// [`Error::Gpu`] instead of wgpu's default panic.
    pub fn scoped<T>(&self, op: &'static str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let val = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let r = f();
        let e1 = pollster::block_on(val.pop());
        let e2 = pollster::block_on(oom.pop());
        if let Some(e) = e1.or(e2) {
            return Err(Error::Gpu { op, msg: e.to_string() });
        }
        r
    }

    /// The second device that compiles pipelines ahead on CPU adapters with at least two cores,
    /// where the adapter gives one (see [`Twin`]).
    pub(crate) fn twin(&self) -> Option<&Twin> {
        self.twin
            .get_or_init(|| {
                let cores = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1);
                match &self.adapter {
                    Some(a) if self.caps.is_cpu() && cores >= 2 => Twin::open(a, &self.device),
                    _ => None,
                }
            })
            .as_ref()
    }

    /// Bytes currently held by the buffer pool (free and in use).
    pub fn pool_bytes(&self) -> u64 {
        self.pool.total_bytes()
    }

    /// The most bytes the buffer pool held at once since the context was made or
    /// [`Context::reset_pool_peak`].
    pub fn pool_peak_bytes(&self) -> u64 {
        self.pool.peak_bytes()
    }

    /// Starts a new pool peak from what the pool holds now (per-phase peaks in benchmarks).
    pub fn reset_pool_peak(&self) {
        self.pool.reset_peak()
    }

    /// Drop every free buffer in the pool.
    pub fn trim_pool(&self) {
        self.pool.trim()
    }
}

impl Drop for Context {
    fn drop(&mut self) {
        if let Err(e) = self.save_pipeline_cache() {
            log::warn!("{e}");
        }
    }
}
