//! Parsed LoRA files of one model, keyed by path and content hash, so a grid, a batch or a
//! server's requests parse each file once. A memory budget bounds what is kept: past it the least
//! recently used files are dropped (a long-running server sees many LoRAs over its life).

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::SystemTime;

use super::keys::ModuleIndex;
use super::LoraFile;
use crate::weights::hash::lora_hash;
use crate::weights::SafeTensorsFile;
use crate::{Error, Result};

const OP: &str = "lora";

struct Cached {
    len: u64,
    modified: Option<SystemTime>,
    hash: String,
    file: Arc<LoraFile>,
    /// The cache's clock when the file was last asked for (least recently used goes first).
    used: u64,
}

/// What the cache holds and how it was used.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LoraCacheStats {
    pub hits: u64,
    pub misses: u64,
    pub evictions: u64,
    pub entries: usize,
    /// Bytes charged for the files held (each file is charged its size on disk).
    pub bytes: u64,
    pub budget: u64,
}

/// Parsed LoRA files of one model (matching depends on the model's module names).
pub struct LoraCache {
    by_path: HashMap<PathBuf, Cached>,
    clock: u64,
    stats: LoraCacheStats,
}

impl Default for LoraCache {
    fn default() -> Self {
        LoraCache {
            by_path: HashMap::new(),
            clock: 0,
            stats: LoraCacheStats { budget: u64::MAX, ..Default::default() },
        }
    }
}

impl LoraCache {
    /// The parsed file at `path` and its [`lora_hash`]: from the cache when the file's size and
    /// time are unchanged or, after re-hashing, when its content is; parsed otherwise.
    pub fn get(&mut self, path: &Path, index: &ModuleIndex) -> Result<(Arc<LoraFile>, String)> {
        let meta = std::fs::metadata(path).map_err(|e| Error::invalid(OP, format!("LoRA {}: {e}", path.display())))?;
        if !meta.is_file() {
            return Err(Error::invalid(OP, format!("LoRA {} is not a file", path.display())));
        }
        let key = path.canonicalize().unwrap_or_else(|_| path.to_path_buf());
        let modified = meta.modified().ok();
        self.clock += 1;
        let now = self.clock;
        if let Some(c) = self.by_path.get_mut(&key) {
            if c.len == meta.len() && c.modified == modified && modified.is_some() {
                c.used = now;
                self.stats.hits += 1;
                return Ok((c.file.clone(), c.hash.clone()));
            }
        }
        let hash = lora_hash(path)?;
        if let Some(c) = self.by_path.get_mut(&key) {
            if c.hash == hash {
                self.stats.bytes = self.stats.bytes - c.len + meta.len();
                c.len = meta.len();
                c.modified = modified;
                c.used = now;
                self.stats.hits += 1;
                return Ok((c.file.clone(), hash));
            }
        }
        self.stats.misses += 1;
        let st = SafeTensorsFile::open(path)?;
        let file = Arc::new(LoraFile::from_file(path, &st, index)?);
        let old = self
            .by_path
            .insert(key, Cached { len: meta.len(), modified, hash: hash.clone(), file: file.clone(), used: now });
        self.stats.bytes = self.stats.bytes - old.map_or(0, |o| o.len) + meta.len();
        self.evict();
        Ok((file, hash))
    }

    /// Drop the least recently used files until the budget holds; the file just asked for stays
    /// even when it alone is over the budget (it is in use).
    fn evict(&mut self) {
        while self.stats.bytes > self.stats.budget && self.by_path.len() > 1 {
            let Some(oldest) = self.by_path.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| k.clone()) else { break };
            if let Some(c) = self.by_path.remove(&oldest) {
                self.stats.bytes -= c.len;
                self.stats.evictions += 1;
                log::info!("lora cache: dropped {} (over the {} byte budget)", oldest.display(), self.stats.budget);
            }
        }
    }

    /// Bound what the cache keeps (bytes of LoRA files); files over it are dropped now.
    pub fn set_budget(&mut self, bytes: u64) {
        self.stats.budget = bytes;
        self.evict();
    }

    pub fn stats(&self) -> LoraCacheStats {
        LoraCacheStats { entries: self.by_path.len(), ..self.stats }
    }

    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}
