//! Grid axes: `KIND:VALUES` as given to `--x/--y/--z`, checked completely when parsed (unknown
//! kinds, unknown LoRA names, empty lists and bad numbers are errors before any work), and
//! applied to a [`Request`] cell by cell.
//!
//! Values are comma-separated; a value may be double-quoted to hold commas (`"a, b"`), with `""`
//! for a literal quote, as in A1111's X/Y/Z plot.

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use crate::lora::{lora_name, resolve_in_dir, BlockWeights, LoraSpec};
use crate::pipeline::infotext::{a1111_sampler_name, fmt_num, sampler_from_a1111};
use crate::pipeline::request::Request;
use crate::schedulers::SamplerKind;
use crate::{Error, Result};

const OP: &str = "grid_axis";

/// What an axis varies.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum AxisKind {
    /// `lora-weight:NAME=W1,W2,…`: one LoRA's multiplier (UNet and text encoder).
    LoraWeight,
    /// `lora:none,A,B,A+B`: which of the LoRAs this axis names are on.
    Lora,
    Seed,
    Cfg,
    Steps,
    Sampler,
    /// `prompt-sr:FROM,TO1,TO2`: replace FROM in the prompts; the first cell keeps FROM.
    PromptSr,
    /// `lbw:NAME=PRESET1,PRESET2,…`: one LoRA's block weights (a value list goes in quotes).
    Lbw,
}

impl AxisKind {
    pub const ALL: [AxisKind; 8] = [
        AxisKind::LoraWeight,
        AxisKind::Lora,
        AxisKind::Seed,
        AxisKind::Cfg,
        AxisKind::Steps,
        AxisKind::Sampler,
        AxisKind::PromptSr,
        AxisKind::Lbw,
    ];

    pub fn name(self) -> &'static str {
        match self {
            AxisKind::LoraWeight => "lora-weight",
            AxisKind::Lora => "lora",
            AxisKind::Seed => "seed",
            AxisKind::Cfg => "cfg",
            AxisKind::Steps => "steps",
            AxisKind::Sampler => "sampler",
            AxisKind::PromptSr => "prompt-sr",
            AxisKind::Lbw => "lbw",
        }
    }
}

impl std::str::FromStr for AxisKind {
    type Err = Error;
    fn from_str(s: &str) -> Result<AxisKind> {
        AxisKind::ALL.into_iter().find(|k| k.name() == s).ok_or_else(|| {
            let names: Vec<&str> = AxisKind::ALL.iter().map(|k| k.name()).collect();
            Error::invalid(OP, format!("unknown axis kind {s:?}; valid: {}", names.join(", ")))
        })
    }
}

/// One value of an axis, with everything resolved (LoRA files found, numbers parsed).
#[derive(Clone, Debug, PartialEq)]
pub enum AxisValue {
    LoraWeight {
        name: String,
        path: PathBuf,
        weight: f32,
    },
    LoraSet {
        /// The LoRAs this value turns on.
        on: Vec<LoraSpec>,
        /// Every LoRA the axis names: those not in `on` are turned off.
        axis_names: Vec<String>,
    },
    Seed(u64),
    Cfg(f32),
    Steps(usize),
    Sampler(SamplerKind),
    PromptSr {
        from: String,
        to: String,
    },
    /// The LoRA `spec.path` (named `name`) with these block weights; `spec` is what the LoRA is
    /// when the request lacks it.
    Lbw {
        name: String,
        spec: LoraSpec,
        lbw: BlockWeights,
    },
}

/// A parsed axis: its kind, values and the label of each value.
#[derive(Clone, Debug, PartialEq)]
pub struct Axis {
    pub kind: AxisKind,
    pub values: Vec<AxisValue>,
    pub labels: Vec<String>,
}

/// Where axis LoRA names are looked up: the `--lora` list (by file stem) first, then the LoRA
/// folder.
#[derive(Clone, Copy, Debug)]
pub struct LoraLookup<'a> {
    pub loras: &'a [LoraSpec],
    pub lora_dir: &'a Path,
}

impl LoraLookup<'_> {
    /// The LoRA called `name` (a file stem): the `--lora` entry with that stem, else
    /// `NAME.safetensors` in the LoRA folder at weight 1.
    pub fn find(&self, name: &str) -> Result<LoraSpec> {
        if let Some(s) = self.loras.iter().find(|s| lora_name(&s.path) == name) {
            return Ok(s.clone());
        }
        match resolve_in_dir(self.lora_dir, name) {
            Ok(path) => Ok(LoraSpec::new(path, 1.0)),
            Err(_) => Err(Error::invalid(
                OP,
                format!(
                    "unknown LoRA {name:?}: not among --lora and no {name}.safetensors in {}",
                    self.lora_dir.display()
                ),
            )),
        }
    }
}

/// Split a value list on commas outside double quotes.
fn split_values(s: &str) -> Result<Vec<String>> {
    let mut out = Vec::new();
    let mut cur = String::new();
    let mut quoted = false;
    let mut was_quoted = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '"' if quoted && chars.peek() == Some(&'"') => {
                cur.push('"');
                chars.next();
            }
            '"' if quoted => quoted = false,
            '"' if cur.trim().is_empty() => {
                cur.clear();
                quoted = true;
                was_quoted = true;
            }
            ',' if !quoted => {
                out.push(if was_quoted {
                    std::mem::take(&mut cur)
                } else {
                    std::mem::take(&mut cur).trim().to_string()
                });
                was_quoted = false;
            }
            c => cur.push(c),
        }
    }
    if quoted {
        return Err(Error::invalid(OP, format!("unclosed quote in {s:?}")));
    }
    out.push(if was_quoted { cur } else { cur.trim().to_string() });
    Ok(out)
}

fn number<T: std::str::FromStr>(kind: AxisKind, v: &str) -> Result<T> {
    v.parse().map_err(|_| Error::invalid(OP, format!("{}: {v:?} is not a valid number", kind.name())))
}

impl Axis {
    /// Parse `KIND:VALUES`.
    pub fn parse(spec: &str, lookup: &LoraLookup) -> Result<Axis> {
        let (kind, rest) = spec
            .split_once(':')
            .ok_or_else(|| Error::invalid(OP, format!("{spec:?} is not KIND:VALUES (e.g. seed:1,2,3)")))?;
        let kind: AxisKind = kind.trim().parse()?;
        let mut rest = rest.to_string();
        let mut lora_weight: Option<(String, LoraSpec)> = None;
        if matches!(kind, AxisKind::LoraWeight | AxisKind::Lbw) {
            let what = if kind == AxisKind::Lbw { "NAME=PRESET1,PRESET2,…" } else { "NAME=W1,W2,…" };
            let (name, ws) = rest
                .split_once('=')
                .ok_or_else(|| Error::invalid(OP, format!("{} needs {what}, got {rest:?}", kind.name())))?;
            let name = name.trim().to_string();
            let spec = lookup.find(&name)?;
            lora_weight = Some((name, spec));
            rest = ws.to_string();
        }
        if rest.trim().is_empty() {
            return Err(Error::invalid(OP, format!("{}: the value list is empty", kind.name())));
        }
        let raw = split_values(&rest)?;
        if kind != AxisKind::PromptSr {
            if let Some(i) = raw.iter().position(|v| v.is_empty()) {
                return Err(Error::invalid(OP, format!("{}: value {} of {rest:?} is empty", kind.name(), i + 1)));
            }
        } else if raw[0].is_empty() {
            return Err(Error::invalid(OP, "prompt-sr: the search text (first value) is empty"));
        }
        // Every LoRA a `lora:` axis names, so each value can turn the others off.
        let mut axis_names: Vec<String> = Vec::new();
        if kind == AxisKind::Lora {
            for v in &raw {
                for n in v.split('+').map(str::trim) {
                    if n.is_empty() {
                        return Err(Error::invalid(OP, format!("lora: {v:?} has an empty LoRA name")));
                    }
                    if n != "none" && !axis_names.iter().any(|a| a == n) {
                        axis_names.push(n.to_string());
                    }
                }
            }
        }
        let mut values = Vec::with_capacity(raw.len());
        let mut labels = Vec::with_capacity(raw.len());
        for v in &raw {
            let (value, label) = match kind {
                AxisKind::LoraWeight => {
                    let (name, spec) = lora_weight.clone().expect("set above for lora-weight");
                    let path = spec.path;
                    let w: f32 = number(kind, v)?;
                    if !w.is_finite() {
                        return Err(Error::invalid(OP, format!("lora-weight: {v:?} is not finite")));
                    }
                    let label = format!("{name}: {}", fmt_num(w as f64));
                    (AxisValue::LoraWeight { name, path, weight: w }, label)
                }
                AxisKind::Lora => {
                    let mut on = Vec::new();
                    if v != "none" {
                        for n in v.split('+').map(str::trim) {
                            if n == "none" {
                                return Err(Error::invalid(OP, format!("lora: {v:?} mixes none with LoRA names")));
                            }
                            on.push(lookup.find(n)?);
                        }
                    }
                    (AxisValue::LoraSet { on, axis_names: axis_names.clone() }, v.clone())
                }
                AxisKind::Seed => {
                    let s: u64 = number(kind, v)?;
                    (AxisValue::Seed(s), format!("Seed: {s}"))
                }
                AxisKind::Cfg => {
                    let c: f32 = number(kind, v)?;
                    if !c.is_finite() {
                        return Err(Error::invalid(OP, format!("cfg: {v:?} is not finite")));
                    }
                    (AxisValue::Cfg(c), format!("CFG scale: {}", fmt_num(c as f64)))
                }
                AxisKind::Steps => {
                    let s: usize = number(kind, v)?;
                    if s == 0 {
                        return Err(Error::invalid(OP, "steps: 0 steps"));
                    }
                    (AxisValue::Steps(s), format!("Steps: {s}"))
                }
                AxisKind::Sampler => {
                    let k = sampler_from_a1111(v, None).map_err(|_| {
                        let names: Vec<&str> = SamplerKind::ALL.iter().map(|k| k.name()).collect();
                        Error::invalid(OP, format!("sampler: unknown sampler {v:?}; valid: {}", names.join(", ")))
                    })?;
                    (AxisValue::Sampler(k), format!("Sampler: {}", a1111_sampler_name(k)))
                }
                AxisKind::PromptSr => (AxisValue::PromptSr { from: raw[0].clone(), to: v.clone() }, v.clone()),
                AxisKind::Lbw => {
                    let (name, spec) = lora_weight.clone().expect("set above for lbw");
                    let lbw: BlockWeights =
                        v.parse().map_err(|e: Error| Error::invalid(OP, format!("lbw: {name}: {e}")))?;
                    let label = format!("{name}: lbw={lbw}");
                    (AxisValue::Lbw { name, spec, lbw }, label)
                }
            };
            values.push(value);
            labels.push(label);
        }
        Ok(Axis { kind, values, labels })
    }

    pub fn len(&self) -> usize {
        self.values.len()
    }

    pub fn is_empty(&self) -> bool {
        self.values.is_empty()
    }

    /// The LoRA set or weights change along this axis.
    pub fn changes_loras(&self) -> bool {
        matches!(self.kind, AxisKind::LoraWeight | AxisKind::Lora | AxisKind::Lbw) && self.values.len() > 1
    }
}

/// Apply one cell's axis values to `req`. LoRA sets go first, so a `lora-weight` value on a LoRA
/// that the cell's `lora:` value turned off leaves it off instead of adding it back.
pub fn apply_values(req: &mut Request, values: &[&AxisValue]) {
    let mut off: HashSet<String> = HashSet::new();
    for v in values {
        if let AxisValue::LoraSet { on, axis_names } = v {
            req.loras.retain(|s| !axis_names.contains(&lora_name(&s.path)));
            for s in on {
                req.loras.push(s.clone());
            }
            for n in axis_names {
                if !on.iter().any(|s| &lora_name(&s.path) == n) {
                    off.insert(n.clone());
                }
            }
        }
    }
    for v in values {
        match v {
            AxisValue::LoraSet { .. } => {}
            AxisValue::LoraWeight { name, path, weight } => {
                if let Some(s) = req.loras.iter_mut().find(|s| &lora_name(&s.path) == name) {
                    s.unet_weight = *weight;
                    s.te_weight = *weight;
                } else if !off.contains(name) {
                    req.loras.push(LoraSpec::new(path.clone(), *weight));
                }
            }
            AxisValue::Lbw { name, spec, lbw } => {
                if let Some(s) = req.loras.iter_mut().find(|s| &lora_name(&s.path) == name) {
                    s.lbw = Some(lbw.clone());
                } else if !off.contains(name) {
                    req.loras.push(spec.clone().with_lbw(Some(lbw.clone())));
                }
            }
            AxisValue::Seed(s) => req.seed = *s,
            AxisValue::Cfg(c) => req.cfg = *c,
            AxisValue::Steps(s) => req.steps = *s,
            AxisValue::Sampler(k) => req.sampler = *k,
            AxisValue::PromptSr { from, to } => {
                req.prompt = req.prompt.replace(from.as_str(), to);
                req.negative_prompt = req.negative_prompt.replace(from.as_str(), to);
            }
        }
    }
}
