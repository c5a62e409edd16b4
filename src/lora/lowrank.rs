//! What extract and resize produce: kohya `lora_down`/`lora_up`/`alpha` modules with their
//! `ss_*` metadata, and the per-module error report.

use std::collections::{BTreeMap, HashMap};

use half::{bf16, f16};

use crate::error::{Error, Result};
use crate::weights::StDType;

const OP: &str = "lora_write";

/// One factored module, written as `{key}.lora_down.weight`, `{key}.lora_up.weight`, `{key}.alpha`.
#[derive(Clone, Debug)]
pub struct LowRankModule {
    pub key: String,
    pub down_shape: Vec<usize>,
    pub down: Vec<f32>,
    pub up_shape: Vec<usize>,
    pub up: Vec<f32>,
    pub alpha: f32,
}

/// A kohya LoRA/LoCon file in memory.
#[derive(Clone, Debug, Default)]
pub struct LowRankFile {
    pub modules: Vec<LowRankModule>,
    pub metadata: BTreeMap<String, String>,
}

fn encode(data: &[f32], dtype: StDType) -> Result<(safetensors::Dtype, Vec<u8>)> {
    Ok(match dtype {
        StDType::F32 => (safetensors::Dtype::F32, bytemuck::cast_slice(data).to_vec()),
        StDType::F16 => {
            let v: Vec<f16> = data.iter().map(|&x| f16::from_f32(x)).collect();
            (safetensors::Dtype::F16, bytemuck::cast_slice(&v).to_vec())
        }
        StDType::BF16 => {
            let v: Vec<bf16> = data.iter().map(|&x| bf16::from_f32(x)).collect();
            (safetensors::Dtype::BF16, bytemuck::cast_slice(&v).to_vec())
        }
        other => return Err(Error::invalid(OP, format!("cannot write a LoRA in {other:?}; use fp32, fp16 or bf16"))),
    })
}

impl LowRankFile {
    /// Number of stored values (the file size is about this times the dtype's width).
    pub fn params(&self) -> usize {
        self.modules.iter().map(|m| m.down.len() + m.up.len() + 1).sum()
    }

    /// The `.safetensors` bytes, every tensor in `dtype`.
    pub fn to_bytes(&self, dtype: StDType) -> Result<Vec<u8>> {
        let mut owned: Vec<(String, safetensors::Dtype, Vec<usize>, Vec<u8>)> = Vec::new();
        for m in &self.modules {
            let (dt, b) = encode(&m.down, dtype)?;
            owned.push((format!("{}.lora_down.weight", m.key), dt, m.down_shape.clone(), b));
            let (dt, b) = encode(&m.up, dtype)?;
            owned.push((format!("{}.lora_up.weight", m.key), dt, m.up_shape.clone(), b));
            let (dt, b) = encode(&[m.alpha], dtype)?;
            owned.push((format!("{}.alpha", m.key), dt, vec![], b));
        }
        let views = owned
            .iter()
            .map(|(n, dt, s, b)| {
                safetensors::tensor::TensorView::new(*dt, s.clone(), b)
                    .map(|v| (n.clone(), v))
                    .map_err(|e| Error::invalid(OP, format!("{n}: {e}")))
            })
            .collect::<Result<Vec<_>>>()?;
        let meta: HashMap<String, String> = self.metadata.clone().into_iter().collect();
        safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid(OP, e.to_string()))
    }
}

/// What the truncation of one module lost.
#[derive(Clone, Debug, serde::Serialize)]
pub struct ModuleError {
    /// kohya module key, e.g. `lora_unet_down_blocks_0_attentions_0_proj_in`.
    pub key: String,
    /// The matrix factored: `[out, in·kh·kw]`.
    pub rows: usize,
    pub cols: usize,
    /// Rank before (resize only) and after.
    pub old_rank: Option<usize>,
    pub rank: usize,
    pub alpha: f32,
    /// ‖ΔW − BA‖_F / ‖ΔW‖_F.
    pub rel_error: f64,
    /// Σ_{i<rank} s² / Σ s².
    pub retained_energy: f64,
    /// ‖ΔW‖²_F (weights the totals).
    pub energy: f64,
    /// Largest singular value.
    pub s_max: f64,
}

/// Per-module errors and the totals over all modules.
#[derive(Clone, Debug, Default, serde::Serialize)]
pub struct SvdReport {
    pub modules: Vec<ModuleError>,
    /// Modules left out, with why.
    pub skipped: Vec<(String, String)>,
    /// √(Σ tail energy / Σ energy) over all modules.
    pub total_rel_error: f64,
    pub total_retained_energy: f64,
    pub params: usize,
    /// Written file size (set by the caller that writes it), and the input's (resize).
    pub bytes: Option<u64>,
    pub old_bytes: Option<u64>,
}

impl SvdReport {
    /// Fills the totals from the modules.
    pub fn finish(&mut self, params: usize) {
        let total: f64 = self.modules.iter().map(|m| m.energy).sum();
        let kept: f64 = self.modules.iter().map(|m| m.energy * m.retained_energy).sum();
        let tail: f64 = self.modules.iter().map(|m| m.energy * m.rel_error * m.rel_error).sum();
        self.total_retained_energy = if total > 0.0 { kept / total } else { 1.0 };
        self.total_rel_error = if total > 0.0 { (tail / total).sqrt() } else { 0.0 };
        self.params = params;
    }

    pub fn to_json(&self) -> Result<String> {
        serde_json::to_string_pretty(self).map_err(|e| Error::invalid(OP, e.to_string()))
    }
}
