//! Kernel sources, typed pipeline keys, the lazy pipeline cache and the one function that records
//! a launch (bind group from [`Arg`]s, uniform upload, grid check).
//!
//! Every kernel is a real `.wgsl` file in `shaders/`, embedded with [`wgsl!`](crate::wgsl). A file
//! declares its storage element type as the line `alias ST = f32;`; the f16 variant of the same
//! file is made by prepending `enable f16;` and swapping that line for `alias ST = f16;`, so one
//! source serves both dtypes and stays valid WGSL on its own. Tile sizes are WGSL `override`
//! constants, given per pipeline in the key.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use crate::gpu::pool::PooledBuffer;
use crate::gpu::{DType, Dispatch, Recorder, Window, Work};
use crate::{Context, Error, Result};

/// An embedded kernel source.
#[derive(Clone, Copy, Debug)]
pub struct KernelSource {
    /// The file stem in `shaders/` (also the stem of its launcher and reference).
    pub name: &'static str,
    pub source: &'static str,
}

/// Embed `shaders/<name>.wgsl` as a [`KernelSource`].
#[macro_export]
macro_rules! wgsl {
    ($name:literal) => {
        $crate::gpu::pipelines::KernelSource {
            name: $name,
            source: include_str!(concat!(env!("CARGO_MANIFEST_DIR"), "/shaders/", $name, ".wgsl")),
        }
    };
}

/// What selects one compiled pipeline: kernel file, entry point, storage dtype and override
/// constants (tile sizes, flags).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct PipelineKey {
    pub kernel: &'static str,
    pub entry: &'static str,
    pub dtype: DType,
    pub constants: Vec<(&'static str, u32)>,
}

impl PipelineKey {
    pub fn new(kernel: &KernelSource, entry: &'static str, dtype: DType) -> Self {
        PipelineKey { kernel: kernel.name, entry, dtype, constants: Vec::new() }
    }
    pub fn with(mut self, name: &'static str, value: u32) -> Self {
        self.constants.push((name, value));
        self
    }
    /// A readable variant name, used as the wgpu label.
    pub fn label(&self) -> String {
        let mut s = format!("{}.{}.{}", self.kernel, self.entry, self.dtype.name());
        for (k, v) in &self.constants {
            s.push_str(&format!(".{k}={v}"));
        }
        s
    }
}

/// The binding kinds of a pipeline's group 0, in binding order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BindKind {
    Read,
    ReadWrite,
    Uniform,
}

/// One argument of a launch.
pub enum Arg<'a> {
    /// A storage binding only read by the kernel.
    Read(Window<'a>),
    /// A storage binding the kernel writes.
    Write(Window<'a>),
    /// Uniform bytes (padded to 16 bytes here).
    Uniform(&'a [u8]),
}

impl Arg<'_> {
    fn kind(&self) -> BindKind {
        match self {
            Arg::Read(_) => BindKind::Read,
            Arg::Write(_) => BindKind::ReadWrite,
            Arg::Uniform(_) => BindKind::Uniform,
        }
    }
}

struct Compiled {
    layout: wgpu::BindGroupLayout,
    pipeline: wgpu::ComputePipeline,
    label: Arc<str>,
    recipe: Arc<Recipe>,
}

/// A pipeline is compiled per key and per binding layout.
type CacheKey = (PipelineKey, Vec<BindKind>);

/// Every pipeline compiled so far, by key and binding kinds; one per [`Context`].
#[derive(Default)]
pub(crate) struct PipelineCache {
    pipelines: Mutex<HashMap<CacheKey, Arc<Compiled>>>,
}

/// The WGSL text for `dtype`.
pub fn specialize(src: &KernelSource, dtype: DType) -> Result<String> {
    const LINE: &str = "alias ST = f32;";
    match dtype {
        DType::F32 => Ok(src.source.to_string()),
        DType::F16 => {
            if !src.source.contains(LINE) {
                return Err(Error::Shader {
                    kernel: src.name.into(),
                    msg: format!("has no `{LINE}` line, so it has no f16 variant"),
                });
            }
            Ok(format!("enable f16;\n{}", src.source.replacen(LINE, "alias ST = f16;", 1)))
        }
    }
}

/// Everything needed to build one pipeline again, on this device or another one of the same
/// adapter (see [`Twin`](crate::gpu::twin::Twin)).
#[derive(Clone, Debug)]
pub struct Recipe {
    pub src: KernelSource,
    pub key: PipelineKey,
    pub kinds: Vec<BindKind>,
}

/// Build the bind group layout and pipeline of `recipe` on `device`; the caller opens the error
/// scope.
pub(crate) fn build_pipeline(
    device: &wgpu::Device,
    cache: Option<&wgpu::PipelineCache>,
    recipe: &Recipe,
    label: &str,
) -> Result<(wgpu::BindGroupLayout, wgpu::ComputePipeline)> {
    let text = specialize(&recipe.src, recipe.key.dtype)?;
    let entries: Vec<wgpu::BindGroupLayoutEntry> = recipe
        .kinds
        .iter()
        .enumerate()
        .map(|(i, k)| wgpu::BindGroupLayoutEntry {
            binding: i as u32,
            visibility: wgpu::ShaderStages::COMPUTE,
            ty: match k {
                BindKind::Uniform => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Uniform,
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
                BindKind::Read | BindKind::ReadWrite => wgpu::BindingType::Buffer {
                    ty: wgpu::BufferBindingType::Storage { read_only: *k == BindKind::Read },
                    has_dynamic_offset: false,
                    min_binding_size: None,
                },
            },
            count: None,
        })
        .collect();
    let layout =
        device.create_bind_group_layout(&wgpu::BindGroupLayoutDescriptor { label: Some(label), entries: &entries });
    let pl = device.create_pipeline_layout(&wgpu::PipelineLayoutDescriptor {
        label: Some(label),
        bind_group_layouts: &[Some(&layout)],
        immediate_size: 0,
    });
    // SAFETY: the kernels in shaders/ are ours, tested against CPU references at awkward shapes;
    // every index is guarded by explicit bounds tests in the WGSL, so wgpu's injected clamping
    // would only cost time (17-40% on matmul).
    let module = unsafe {
        device.create_shader_module_trusted(
            wgpu::ShaderModuleDescriptor { label: Some(label), source: wgpu::ShaderSource::Wgsl(text.into()) },
            wgpu::ShaderRuntimeChecks::unchecked(),
        )
    };
    let constants: Vec<(&str, f64)> = recipe.key.constants.iter().map(|(k, v)| (*k, *v as f64)).collect();
    let pipeline = device.create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
        label: Some(label),
        layout: Some(&pl),
        module: &module,
        entry_point: Some(recipe.key.entry),
        compilation_options: wgpu::PipelineCompilationOptions {
            constants: &constants,
            // Kernels write workgroup memory before reading it; zero-init only costs.
            zero_initialize_workgroup_memory: false,
        },
        cache,
    });
    Ok((layout, pipeline))
}

impl PipelineCache {
    fn get(&self, ctx: &Context, src: &KernelSource, key: &PipelineKey, kinds: &[BindKind]) -> Result<Arc<Compiled>> {
        let k = (key.clone(), kinds.to_vec());
        if let Some(c) = self.pipelines.lock().expect("pipeline cache lock").get(&k) {
            return Ok(c.clone());
        }
        if key.dtype == DType::F16 && !ctx.caps.shader_f16 {
            return Err(Error::dtype(src.name, "the f16 variant needs SHADER_F16, which this adapter lacks"));
        }
        let label = key.label();
        let recipe = Arc::new(Recipe { src: *src, key: key.clone(), kinds: kinds.to_vec() });
        let started = std::time::Instant::now();
        let compiled = ctx
            .scoped(src.name, || {
                let (layout, pipeline) =
                    build_pipeline(&ctx.device, ctx.disk_cache.as_ref().map(|c| &c.cache), &recipe, &label)?;
                if let Some(c) = &ctx.disk_cache {
                    c.mark_dirty();
                }
                Ok(Compiled { layout, pipeline, label: Arc::from(label.as_str()), recipe: recipe.clone() })
            })
            .map_err(|e| Error::Shader { kernel: label.clone(), msg: e.to_string() })?;
        log::debug!("compiled {label} in {:.2} s", started.elapsed().as_secs_f64());
        let c = Arc::new(compiled);
        self.pipelines.lock().expect("pipeline cache lock").insert(k, c.clone());
        Ok(c)
    }
}

/// Record one dispatch of `key` with `args` bound at group 0 in order. `keep` are the tensors the
/// dispatch reads or writes (kept alive until the recorder is dropped).
pub fn launch(
    ctx: &Context,
    rec: &mut Recorder,
    src: &KernelSource,
    key: &PipelineKey,
    args: &[Arg<'_>],
    groups: [u32; 3],
    keep: Vec<Arc<PooledBuffer>>,
) -> Result<()> {
    let max = ctx.caps.max_workgroups_per_dim;
    if groups.iter().any(|&g| g > max) {
        return Err(Error::limit(
            src.name,
            format!("workgroups {groups:?} per dimension"),
            groups.iter().copied().max().unwrap_or(0) as u64,
            max as u64,
        ));
    }
    if groups.contains(&0) {
        return Ok(());
    }
    let kinds: Vec<BindKind> = args.iter().map(|a| a.kind()).collect();
    let compiled = ctx.pipelines.get(ctx, src, key, &kinds)?;
    let padded: Vec<Vec<u8>> = args
        .iter()
        .filter_map(|a| match a {
            Arg::Uniform(bytes) => {
                let mut b = bytes.to_vec();
                b.resize(b.len().div_ceil(16).max(1) * 16, 0);
                Some(b)
            }
            _ => None,
        })
        .collect();
    let mut next_uniform = padded.iter();
    let uniforms: Vec<Option<wgpu::Buffer>> = args
        .iter()
        .map(|a| match a {
            Arg::Uniform(_) => {
                let b = next_uniform.next().expect("one padded block per uniform");
                let buf = ctx.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("lorafuse.params"),
                    size: b.len() as u64,
                    usage: wgpu::BufferUsages::UNIFORM,
                    mapped_at_creation: true,
                });
                match buf.slice(..).get_mapped_range_mut() {
                    Ok(mut v) => v.copy_from_slice(b),
                    Err(e) => return Err(Error::Gpu { op: src.name, msg: format!("map params: {e}") }),
                }
                buf.unmap();
                Ok(Some(buf))
            }
            _ => Ok(None),
        })
        .collect::<Result<_>>()?;
    let entries: Vec<wgpu::BindGroupEntry> = args
        .iter()
        .zip(&uniforms)
        .enumerate()
        .map(|(i, (a, u))| wgpu::BindGroupEntry {
            binding: i as u32,
            resource: match a {
                Arg::Read(w) | Arg::Write(w) => w.resource(),
                Arg::Uniform(_) => u.as_ref().expect("uniform buffer").as_entire_binding(),
            },
        })
        .collect();
    let bind_group = ctx.scoped(src.name, || {
        Ok(ctx.device.create_bind_group(&wgpu::BindGroupDescriptor {
            label: Some(src.name),
            layout: &compiled.layout,
            entries: &entries,
        }))
    })?;
    rec.push(Dispatch {
        label: src.name,
        variant: compiled.label.clone(),
        recipe: compiled.recipe.clone(),
        uniforms: Arc::new(padded),
        work: Work::default(),
        class: None,
        pipeline: compiled.pipeline.clone(),
        bind_group,
        groups,
        keep,
    });
    Ok(())
}

/// The grid for `threads` invocations in workgroups of `wg` (one invocation per element, the
/// common case), folded as by [`fold_groups`].
pub fn flat_groups(ctx: &Context, op: &'static str, threads: usize, wg: u32) -> Result<[u32; 3]> {
    fold_groups(ctx, op, (threads as u64).div_ceil(wg as u64))
}

/// Spread `n` workgroups over x and y so no dimension exceeds the device limit. Kernels rebuild
/// the linear index as `wg.x + wg.y * num_workgroups.x` and return when it is ≥ n.
pub fn fold_groups(ctx: &Context, op: &'static str, n: u64) -> Result<[u32; 3]> {
    let max = ctx.caps.max_workgroups_per_dim.max(1) as u64;
    if n <= max {
        return Ok([n as u32, 1, 1]);
    }
    let y = n.div_ceil(max);
    if y > max {
        return Err(Error::limit(op, "workgroups", n, max * max));
    }
    let x = n.div_ceil(y);
    Ok([x as u32, y as u32, 1])
}
