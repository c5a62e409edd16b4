//! Where LoRAs come from: `--lora PATH[:W]` / `PATH:unet=W1,te=W2` specs, `<lora:NAME:…>` prompt
//! tags resolved inside the LoRA folder (never outside it). Parsed files are kept by [`super::cache`].

use std::path::{Component as PathPart, Path, PathBuf};

use super::BlockWeights;
use crate::{Error, Result};

const OP: &str = "lora";

/// A LoRA the user asked for: a file and its multipliers. Build it with [`LoraSpec::new`] /
/// [`LoraSpec::weights`] and the `with_*` setters, so new fields do not touch every caller.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraSpec {
    pub path: PathBuf,
    pub unet_weight: f32,
    pub te_weight: f32,
    /// Per-block multipliers (`lbw=`), checked against the model's family when applied.
    pub lbw: Option<BlockWeights>,
}

impl LoraSpec {
    pub fn new(path: impl Into<PathBuf>, weight: f32) -> LoraSpec {
        LoraSpec::weights(path, weight, weight)
    }

    /// Separate UNet and text-encoder multipliers.
    pub fn weights(path: impl Into<PathBuf>, unet_weight: f32, te_weight: f32) -> LoraSpec {
        LoraSpec { path: path.into(), unet_weight, te_weight, lbw: None }
    }

    pub fn with_lbw(mut self, lbw: Option<BlockWeights>) -> LoraSpec {
        self.lbw = lbw;
        self
    }

    /// The name used in logs, prompts and infotext: the file stem.
    pub fn name(&self) -> String {
        lora_name(&self.path)
    }
}

/// A file's LoRA name: its stem (`loras/pop_art.safetensors` → `pop_art`).
pub fn lora_name(path: &Path) -> String {
    path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_else(|| path.display().to_string())
}

fn bad_weight(s: &str, whole: &str) -> Error {
    Error::invalid(OP, format!("--lora {whole:?}: weight {s:?} is not a finite number"))
}

fn weight(s: &str, whole: &str) -> Result<f32> {
    match s.trim().parse::<f32>() {
        Ok(w) if w.is_finite() => Ok(w),
        _ => Err(bad_weight(s, whole)),
    }
}

impl std::str::FromStr for LoraSpec {
    type Err = Error;

    /// `PATH`, `PATH:W` or `PATH:unet=W1,te=W2` (either part may be left out; it defaults to 1),
    /// any of them optionally followed by `:lbw=PRESET` or `:lbw=V1,V2,…` (block weights).
    /// Only the text after the last `:` is read as weights, and only when it looks like weights
    /// or the text before it names the file (an existing file or a `.safetensors` name), so paths
    /// with colons still work and `FILE:abc` says the weight is not a number.
    fn from_str(s: &str) -> Result<LoraSpec> {
        if s.is_empty() {
            return Err(Error::invalid(OP, "--lora needs a file path"));
        }
        let Some((path, tail)) = s.rsplit_once(':') else {
            return Ok(LoraSpec::new(s, 1.0));
        };
        if let Some(lbw) = tail.trim().strip_prefix("lbw=") {
            let lbw: BlockWeights = lbw.parse().map_err(|e: Error| Error::invalid(OP, format!("--lora {s:?}: {e}")))?;
            return Ok(path.parse::<LoraSpec>()?.with_lbw(Some(lbw)));
        }
        let looks_numeric = tail.trim().parse::<f32>().is_ok() || tail.trim().starts_with(['-', '+', '.']);
        let named = tail.contains('=');
        if path.is_empty() {
            return Ok(LoraSpec::new(s, 1.0));
        }
        if !looks_numeric && !named {
            // `FILE:abc` where FILE is the LoRA: a bad weight, not a path with a colon.
            let names_file = Path::new(path).is_file() || path.ends_with(".safetensors");
            if names_file && !Path::new(s).exists() {
                return Err(bad_weight(tail, s));
            }
            return Ok(LoraSpec::new(s, 1.0));
        }
        if !named {
            return Ok(LoraSpec::new(path, weight(tail, s)?));
        }
        let mut spec = LoraSpec::new(path, 1.0);
        for part in tail.split(',') {
            let (k, v) = part
                .split_once('=')
                .ok_or_else(|| Error::invalid(OP, format!("--lora {s:?}: expected unet=W or te=W, got {part:?}")))?;
            match k.trim() {
                "unet" => spec.unet_weight = weight(v, s)?,
                "te" | "text_encoder" => spec.te_weight = weight(v, s)?,
                other => {
                    return Err(Error::invalid(OP, format!("--lora {s:?}: unknown part {other:?} (unet or te)")));
                }
            }
        }
        Ok(spec)
    }
}

/// The file for `<lora:NAME:…>` in `dir`: `NAME`, or `NAME` plus `.safetensors`. `NAME` may
/// name a sub-folder but never leaves `dir` (no `..`, no absolute path, no symlink out).
pub fn resolve_in_dir(dir: &Path, name: &str) -> Result<PathBuf> {
    let rel = Path::new(name);
    let escapes = name.is_empty()
        || rel.is_absolute()
        || name.starts_with(['/', '\\'])
        || name.contains('\\')
        || rel.components().any(|c| !matches!(c, PathPart::Normal(_)));
    if escapes {
        return Err(Error::invalid(
            OP,
            format!("<lora:{name}>: the name must stay inside the LoRA folder {}", dir.display()),
        ));
    }
    let root = dir
        .canonicalize()
        .map_err(|e| Error::invalid(OP, format!("<lora:{name}>: LoRA folder {} cannot be read: {e}", dir.display())))?;
    for candidate in [dir.join(format!("{name}.safetensors")), dir.join(name)] {
        if !candidate.is_file() {
            continue;
        }
        let real = candidate.canonicalize()?;
        if !real.starts_with(&root) {
            return Err(Error::invalid(
                OP,
                format!("<lora:{name}>: {} leads outside {}", candidate.display(), dir.display()),
            ));
        }
        return Ok(candidate);
    }
    Err(Error::invalid(OP, format!("<lora:{name}>: no {name}.safetensors in {}", dir.display())))
}
