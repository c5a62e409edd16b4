//! LoRA block weights, as A1111's LoRA Block Weight extension (hako-mikan/sd-webui-lora-block-weight)
//! defines them: `lbw=1,0,0,…` (17 values for SD1.x/2.x, 12 for SDXL; the extension's 26 and 20
//! value forms too) or `lbw=PRESET`. Each adapted module's multiplier is the LoRA weight times the
//! value of its block; every text-encoder module belongs to `BASE`.
//!
//! Blocks follow the extension: a UNet module's block is the `input_blocks_N` / `middle_block` /
//! `output_blocks_N` of its LDM name (computed here from the diffusers path), blocks a short list
//! leaves out weigh 0 (the extension's `to26`), and modules in no block (time embedding, `conv_out`,
//! SDXL's `add_embedding`) keep weight 1.

use std::fmt;

use crate::weights::detect::Family;
use crate::weights::Component;
use crate::{Error, Result};

const OP: &str = "lora_block_weight";

/// Every block the extension knows, in its 26-value order.
pub const BLOCKS_26: [&str; 26] = [
    "BASE", "IN00", "IN01", "IN02", "IN03", "IN04", "IN05", "IN06", "IN07", "IN08", "IN09", "IN10", "IN11", "M00",
    "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08", "OUT09", "OUT10", "OUT11",
];
/// SD1.x/2.x LoRA blocks (those with attention).
pub const BLOCKS_17: [&str; 17] = [
    "BASE", "IN01", "IN02", "IN04", "IN05", "IN07", "IN08", "M00", "OUT03", "OUT04", "OUT05", "OUT06", "OUT07",
    "OUT08", "OUT09", "OUT10", "OUT11",
];
/// SDXL LoRA blocks (those with attention).
pub const BLOCKS_12: [&str; 12] =
    ["BASE", "IN04", "IN05", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02", "OUT03", "OUT04", "OUT05"];
/// SDXL LyCORIS/LoCon blocks (every block SDXL has).
pub const BLOCKS_20: [&str; 20] = [
    "BASE", "IN00", "IN01", "IN02", "IN03", "IN04", "IN05", "IN06", "IN07", "IN08", "M00", "OUT00", "OUT01", "OUT02",
    "OUT03", "OUT04", "OUT05", "OUT06", "OUT07", "OUT08",
];

/// The extension's built-in presets (`DEF_WEIGHT_PRESET`), 17 values each.
const PRESETS_SD1: [(&str, [f32; 17]); 10] = [
    ("NONE", [0.; 17]),
    ("ALL", [1.; 17]),
    ("INS", [1., 1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0.]),
    ("IND", [1., 0., 0., 0., 1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0.]),
    ("INALL", [1., 1., 1., 1., 1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0.]),
    ("MIDD", [1., 0., 0., 0., 1., 1., 1., 1., 1., 1., 1., 1., 0., 0., 0., 0., 0.]),
    ("OUTD", [1., 0., 0., 0., 0., 0., 0., 0., 1., 1., 1., 1., 0., 0., 0., 0., 0.]),
    ("OUTS", [1., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 0., 1., 1., 1., 1., 1.]),
    ("OUTALL", [1., 0., 0., 0., 0., 0., 0., 0., 1., 1., 1., 1., 1., 1., 1., 1., 1.]),
    ("ALL0.5", [0.5; 17]),
];

/// The same presets for SDXL's 12 blocks. The extension ships none for SDXL, so these keep each
/// preset's meaning by depth: shallow/deep input (IN04-05 / IN07-08), deep output (OUT00-02), shallow
/// output (OUT03-05), with the text encoder on as in every SD1 preset but NONE.
const PRESETS_SDXL: [(&str, [f32; 12]); 10] = [
    ("NONE", [0.; 12]),
    ("ALL", [1.; 12]),
    ("INS", [1., 1., 1., 0., 0., 0., 0., 0., 0., 0., 0., 0.]),
    ("IND", [1., 0., 0., 1., 1., 0., 0., 0., 0., 0., 0., 0.]),
    ("INALL", [1., 1., 1., 1., 1., 0., 0., 0., 0., 0., 0., 0.]),
    ("MIDD", [1., 0., 0., 1., 1., 1., 1., 1., 1., 0., 0., 0.]),
    ("OUTD", [1., 0., 0., 0., 0., 0., 1., 1., 1., 0., 0., 0.]),
    ("OUTS", [1., 0., 0., 0., 0., 0., 0., 0., 0., 1., 1., 1.]),
    ("OUTALL", [1., 0., 0., 0., 0., 0., 1., 1., 1., 1., 1., 1.]),
    ("ALL0.5", [0.5; 12]),
];

/// The names of the built-in presets (the same for every family).
pub fn preset_names() -> Vec<&'static str> {
    PRESETS_SD1.iter().map(|(n, _)| *n).collect()
}

/// Block weights as the user wrote them: a preset name or the values.
#[derive(Clone, Debug, PartialEq)]
pub enum BlockWeights {
    Preset(String),
    Values(Vec<f32>),
}

fn unknown_preset(s: &str) -> Error {
    Error::invalid(
        OP,
        format!("lbw={s}: not a preset ({}) nor 12, 17, 20 or 26 comma-separated numbers", preset_names().join(", ")),
    )
}

impl std::str::FromStr for BlockWeights {
    type Err = Error;

    /// A preset name or the values; what no family accepts (an unknown preset, a count other than
    /// 12, 17, 20 or 26, a value that is not a finite number) is an error.
    fn from_str(s: &str) -> Result<BlockWeights> {
        let s = s.trim();
        if let Some((name, _)) = PRESETS_SD1.iter().find(|(n, _)| *n == s) {
            return Ok(BlockWeights::Preset(name.to_string()));
        }
        if !s.contains(',') {
            return Err(unknown_preset(s));
        }
        let mut values = Vec::new();
        for (i, v) in s.split(',').enumerate() {
            match v.trim().parse::<f32>() {
                Ok(w) if w.is_finite() => values.push(w),
                _ => {
                    return Err(Error::invalid(
                        OP,
                        format!("lbw={s}: value {} ({:?}) is not a finite number", i + 1, v.trim()),
                    ))
                }
            }
        }
        if ![12, 17, 20, 26].contains(&values.len()) {
            return Err(Error::invalid(
                OP,
                format!("lbw={s}: {} values; expected 17 (SD1.x) or 12 (SDXL) (or 26 / 20)", values.len()),
            ));
        }
        Ok(BlockWeights::Values(values))
    }
}

impl fmt::Display for BlockWeights {
    /// The `lbw=` value: the preset name, or the values.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            BlockWeights::Preset(p) => f.write_str(p),
            BlockWeights::Values(v) => {
                // f32's Display is the shortest text that reads back to the same value ("1", "0.5").
                let parts: Vec<String> = v.iter().map(|w| w.to_string()).collect();
                f.write_str(&parts.join(","))
            }
        }
    }
}

fn family_name(family: Option<Family>) -> &'static str {
    match family {
        Some(Family::Sdxl) => "SDXL",
        _ => "SD1.x",
    }
}

impl BlockWeights {
    /// The weight of every block for a model of `family` (SD1.x when unknown).
    pub fn resolve(&self, family: Option<Family>) -> Result<BlockTable> {
        let sdxl = family == Some(Family::Sdxl);
        let (names, values): (&[&str], Vec<f32>) = match self {
            BlockWeights::Preset(p) => {
                let found = if sdxl {
                    PRESETS_SDXL.iter().find(|(n, _)| n == p).map(|(_, v)| (&BLOCKS_12[..], v.to_vec()))
                } else {
                    PRESETS_SD1.iter().find(|(n, _)| n == p).map(|(_, v)| (&BLOCKS_17[..], v.to_vec()))
                };
                found.ok_or_else(|| unknown_preset(p))?
            }
            BlockWeights::Values(v) => {
                let names: &[&str] = match (sdxl, v.len()) {
                    (false, 17) => &BLOCKS_17,
                    (false, 26) => &BLOCKS_26,
                    (true, 12) => &BLOCKS_12,
                    (true, 20) => &BLOCKS_20,
                    (_, n) => {
                        let want = if sdxl { "12 (or 20 for LyCORIS)" } else { "17 (or 26 for LyCORIS)" };
                        return Err(Error::invalid(
                            OP,
                            format!("lbw={self}: {n} values, but a {} model takes {want}", family_name(family)),
                        ));
                    }
                };
                (names, v.clone())
            }
        };
        // Blocks the list leaves out weigh 0, as the extension's `to26` makes them.
        let mut w = [0f32; 26];
        for (name, v) in names.iter().zip(values) {
            let i = BLOCKS_26.iter().position(|b| b == name).expect("every list names known blocks");
            w[i] = v;
        }
        Ok(BlockTable(w))
    }
}

/// Weights of the 26 blocks ([`BLOCKS_26`] order) for one model.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BlockTable(pub [f32; 26]);

impl BlockTable {
    /// The factor for the module adapting `target` (a diffusers weight path) of `component`.
    pub fn multiplier(&self, component: Component, target: &str) -> f32 {
        block_of(component, target).map_or(1.0, |b| self.0[b])
    }

    pub fn bits(&self) -> [u32; 26] {
        self.0.map(f32::to_bits)
    }
}

/// The block ([`BLOCKS_26`] index) of the weight `target` of `component`: 0 (BASE) for the text
/// encoders; for the UNet the LDM block the diffusers path converts to (A1111's
/// `convert_diffusers_name_to_compvis`, two resnets per level); `None` outside every block.
pub fn block_of(component: Component, target: &str) -> Option<usize> {
    match component {
        Component::TextEncoder | Component::TextEncoder2 => return Some(0),
        Component::Unet => {}
        _ => return None,
    }
    let parts: Vec<&str> = target.split('.').collect();
    let num = |i: usize| parts.get(i).and_then(|p| p.parse::<usize>().ok());
    match parts.first().copied()? {
        "conv_in" => Some(1),
        "mid_block" => Some(13),
        "down_blocks" => {
            let level = num(1)?;
            let n = match *parts.get(2)? {
                "attentions" | "resnets" => 1 + 3 * level + num(3)?,
                "downsamplers" => 3 + 3 * level,
                _ => return None,
            };
            (n <= 11).then_some(1 + n)
        }
        "up_blocks" => {
            let level = num(1)?;
            let n = match *parts.get(2)? {
                "attentions" | "resnets" => 3 * level + num(3)?,
                "upsamplers" => 3 * level + 2,
                _ => return None,
            };
            (n <= 11).then_some(14 + n)
        }
        _ => None,
    }
}
