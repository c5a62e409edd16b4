//! Kernel choices measured on this adapter (tile shapes that a short autotune picked at first use),
//! kept on disk beside the pipeline cache so that later runs do not measure again.
//!
//! One JSON file per adapter, named from the adapter's identity (name, vendor and device ids,
//! driver, backend) and lorafuse's version, since a new build may change the kernels and so their
//! best tiles. Written atomically (temporary file + rename); an unreadable file is ignored and
//! measured again, never an error.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;

use crate::named_enum::named_enum;
use crate::{Error, Result};

/// When kernels measure their variants on this adapter (see [`TuneStore`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Autotune {
    /// On GPUs, where tile shapes decide the speed and a few candidates compile in milliseconds;
    /// not on CPU adapters (lavapipe), whose kernels have one fitted shape and compile slowly.
    #[default]
    Gpu,
    /// Everywhere (tests exercise the search on lavapipe with it).
    Always,
    /// Never: the built-in defaults.
    Off,
}

named_enum!(Autotune, op = "autotune", unknown = |s| format!("unknown autotune mode {s:?} (expected gpu, always or off)"), {
    Gpu => "gpu",
    Always => "always",
    Off => "off",
});

#[derive(Default)]
pub struct TuneStore {
    path: Option<PathBuf>,
    choices: Mutex<BTreeMap<String, String>>,
    dirty: AtomicBool,
}

impl TuneStore {
    /// The store for this adapter in `dir` (memory only without one), with what earlier runs saved.
    pub(crate) fn open(info: &wgpu::AdapterInfo, dir: Option<&Path>) -> TuneStore {
        let Some(dir) = dir else { return TuneStore::default() };
        let id = format!(
            "{}-{:04x}-{:04x}-{:?}-{}-{}",
            info.name, info.vendor, info.device, info.backend, info.driver, info.driver_info
        );
        let safe: String = id.chars().map(|c| if c.is_ascii_alphanumeric() || c == '-' { c } else { '_' }).collect();
        let safe: String = safe.chars().take(120).collect();
        let path = dir.join(format!("tune-{}-{safe}.json", env!("CARGO_PKG_VERSION")));
        let choices = std::fs::read(&path)
            .ok()
            .and_then(|d| serde_json::from_slice::<BTreeMap<String, String>>(&d).ok())
            .unwrap_or_default();
        log::debug!("autotune store {} ({} choices)", path.display(), choices.len());
        TuneStore { path: Some(path), choices: Mutex::new(choices), dirty: AtomicBool::new(false) }
    }

    fn map(&self) -> std::sync::MutexGuard<'_, BTreeMap<String, String>> {
        self.choices.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The choice recorded for `key`, if any.
    pub fn get(&self, key: &str) -> Option<String> {
        self.map().get(key).cloned()
    }

    pub fn set(&self, key: &str, choice: &str) {
        self.map().insert(key.to_string(), choice.to_string());
        self.dirty.store(true, Ordering::Relaxed);
    }

    /// Every recorded choice (for reports and tests).
    pub fn entries(&self) -> Vec<(String, String)> {
        self.map().iter().map(|(k, v)| (k.clone(), v.clone())).collect()
    }

    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }

    /// Write the file when choices were added since it was read or last written.
    pub(crate) fn save(&self) -> Result<()> {
        let Some(path) = &self.path else { return Ok(()) };
        if !self.dirty.swap(false, Ordering::Relaxed) {
            return Ok(());
        }
        let data = serde_json::to_vec_pretty(&*self.map()).map_err(|e| Error::invalid("autotune", e.to_string()))?;
        let io = |e: std::io::Error| Error::Io(std::io::Error::new(e.kind(), format!("{}: {e}", path.display())));
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir).map_err(io)?;
        }
        let tmp = path.with_extension(format!("tmp{}", std::process::id()));
        std::fs::write(&tmp, data).map_err(io)?;
        std::fs::rename(&tmp, path).map_err(io)
    }
}
