//! The LoRA folder as `GET /sdapi/v1/loras` lists it: every `.safetensors` file under it (sub-folders
//! included, names relative to it without the extension, as `<lora:NAME>` takes them), with the
//! kohya training metadata (`ss_*` keys). Read once at start (and on `refresh-loras`); symlinks that
//! lead out of the folder are skipped, as prompt tags cannot reach them either.

use std::path::{Path, PathBuf};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::weights::SafeTensorsFile;
use crate::Result;

/// One entry of A1111's `/sdapi/v1/loras`.
#[derive(Clone, Debug, Serialize)]
pub struct LoraEntry {
    pub name: String,
    /// kohya's `ss_output_name` where the file has one (A1111's alias), else the name.
    pub alias: String,
    pub path: String,
    pub metadata: Map<String, Value>,
}

/// Files deeper than this are not listed (a loop of directory symlinks cannot hang the scan).
const MAX_DEPTH: usize = 8;

/// Scan `dir`. A missing folder is an empty index (the server still serves without LoRAs).
pub fn scan(dir: &Path) -> Result<Vec<LoraEntry>> {
    let Ok(root) = dir.canonicalize() else {
        log::warn!("LoRA folder {} does not exist: no LoRAs", dir.display());
        return Ok(Vec::new());
    };
    let mut out = Vec::new();
    walk(&root, &root, 0, &mut out);
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(out)
}

fn walk(root: &Path, dir: &Path, depth: usize, out: &mut Vec<LoraEntry>) {
    if depth > MAX_DEPTH {
        return;
    }
    let Ok(entries) = std::fs::read_dir(dir) else { return };
    for e in entries.flatten() {
        let path = e.path();
        let Ok(real) = path.canonicalize() else { continue };
        if !real.starts_with(root) {
            log::warn!("{} leads out of the LoRA folder: skipped", path.display());
            continue;
        }
        if real.is_dir() {
            walk(root, &path, depth + 1, out);
        } else if path.extension().is_some_and(|x| x == "safetensors") {
            match entry(root, &path) {
                Some(l) => out.push(l),
                None => log::warn!("{}: not a readable safetensors file, skipped", path.display()),
            }
        }
    }
}

fn entry(root: &Path, path: &Path) -> Option<LoraEntry> {
    let rel = path.strip_prefix(root).ok()?.with_extension("");
    let name = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect::<Vec<_>>().join("/");
    let file = SafeTensorsFile::open(path).ok()?;
    let mut metadata = Map::new();
    for (k, v) in file.metadata().iter().filter(|(k, _)| k.starts_with("ss_")) {
        // A1111 decodes the JSON-valued keys (tag frequencies, dataset dirs) for its clients.
        let value = match v.trim_start().chars().next() {
            Some('{' | '[') => serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone())),
            _ => Value::String(v.clone()),
        };
        metadata.insert(k.clone(), value);
    }
    let alias = file.metadata().get("ss_output_name").cloned().unwrap_or_else(|| name.clone());
    Some(LoraEntry { name, alias, path: display(path), metadata })
}

fn display(p: &Path) -> String {
    PathBuf::from(p).display().to_string()
}
