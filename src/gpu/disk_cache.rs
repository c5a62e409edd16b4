//! The driver's compiled pipelines kept on disk between runs (wgpu's `PipelineCache`, Vulkan
//! only), so a second run does not compile every kernel variant again on drivers that keep no
//! cache of their own.
//!
//! One file per adapter class (wgpu's `pipeline_cache_key`: vendor, device, driver and wgpu
//! version), written atomically (temporary file + rename) so a crash never leaves a torn cache;
//! data the driver rejects is dropped (`fallback`) rather than failing the run.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::{Error, Result};

pub(crate) struct DiskCache {
    pub(crate) cache: wgpu::PipelineCache,
    path: PathBuf,
    /// A pipeline was created through the cache since it was loaded or saved.
    dirty: AtomicBool,
}

impl DiskCache {
    /// The cache for this adapter in `dir`, loaded from its file when there is one. `None` when
    /// the device cannot keep pipeline caches (no `PIPELINE_CACHE` feature or no key for the
    /// backend).
    pub(crate) fn open(device: &wgpu::Device, info: &wgpu::AdapterInfo, dir: &Path) -> Option<DiskCache> {
        if !device.features().contains(wgpu::Features::PIPELINE_CACHE) {
            return None;
        }
        let path = dir.join(wgpu::util::pipeline_cache_key(info)?);
        let data = std::fs::read(&path).ok();
        // SAFETY: the data was written by `save` from `PipelineCache::get_data` for an adapter with
        // the same key; wgpu validates its header and `fallback` discards data the driver rejects.
        let cache = unsafe {
            device.create_pipeline_cache(&wgpu::PipelineCacheDescriptor {
                label: Some("lorafuse.pipeline_cache"),
                data: data.as_deref(),
                fallback: true,
            })
        };
        log::debug!(
            "pipeline cache {} ({})",
            path.display(),
            data.map_or("none yet".to_string(), |d| format!("{} KiB loaded", d.len() >> 10))
        );
        Some(DiskCache { cache, path, dirty: AtomicBool::new(false) })
    }

    pub(crate) fn mark_dirty(&self) {
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Write the cache when pipelines were added since the last save.
    pub(crate) fn save(&self) -> Result<()> {
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let Some(data) = self.cache.get_data() else {
            return Ok(());
        };
        let io = |e: std::io::Error| {
            Error::Io(std::io::Error::new(e.kind(), format!("pipeline cache {}: {e}", self.path.display())))
        };
        if let Some(dir) = self.path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = self.path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, &data).map_err(io)?;
        std::fs::rename(&tmp, &self.path).map_err(io)?;
        log::debug!("pipeline cache saved: {} KiB to {}", data.len() >> 10, self.path.display());
        Ok(())
    }
}
