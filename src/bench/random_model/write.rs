//! Streaming a safetensors file whose values are drawn tensor by tensor from a seeded
//! generator, so a multi-gigabyte checkpoint is written with one chunk in memory.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Write};
use std::path::Path;

use half::slice::HalfFloatSliceExt;
use half::{bf16, f16};

use super::{invalid, TensorSpec, WriteSummary, OP};
use crate::weights::StDType;
use crate::{Error, Result};

/// Elements generated and converted per write.
const CHUNK: usize = 1 << 20;

/// How one tensor's values are drawn.
#[derive(Clone, Copy, Debug)]
pub(super) enum Fill {
    /// `offset + U(-scale, scale)`.
    Uniform { offset: f32, scale: f32 },
    /// `N(0, 1) · std`.
    Normal { std: f32 },
}

/// splitmix64: a small, fast generator whose stream depends only on its seed.
struct Rng(u64);

impl Rng {
    fn for_tensor(seed: u64, key: &str) -> Rng {
        let mut h = seed ^ 0xcbf2_9ce4_8422_2325;
        for b in key.bytes() {
            h = (h ^ b as u64).wrapping_mul(0x0100_0000_01b3);
        }
        Rng(h)
    }
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    /// Uniform in (0, 1), never 0 (Box–Muller takes its log).
    fn unit(&mut self) -> f64 {
        ((self.next() >> 11) as f64 + 0.5) / (1u64 << 53) as f64
    }
    fn fill(&mut self, how: Fill, out: &mut [f32]) {
        match how {
            Fill::Uniform { offset, scale } => {
                for x in out.iter_mut() {
                    let u = (self.next() >> 40) as f32 / (1u32 << 23) as f32 - 1.0;
                    *x = offset + u * scale;
                }
            }
            Fill::Normal { std } => {
                for pair in out.chunks_mut(2) {
                    let (r, a) = ((-2.0 * self.unit().ln()).sqrt(), std::f64::consts::TAU * self.unit());
                    pair[0] = (r * a.cos()) as f32 * std;
                    if let Some(y) = pair.get_mut(1) {
                        *y = (r * a.sin()) as f32 * std;
                    }
                }
            }
        }
    }
}

fn encode(dtype: StDType, src: &[f32], out: &mut Vec<u8>) {
    out.clear();
    match dtype {
        StDType::F16 => {
            let mut h = vec![f16::ZERO; src.len()];
            h.convert_from_f32_slice(src);
            h.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        StDType::BF16 => {
            let mut h = vec![bf16::ZERO; src.len()];
            h.convert_from_f32_slice(src);
            h.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes()));
        }
        _ => src.iter().for_each(|x| out.extend_from_slice(&x.to_le_bytes())),
    }
}

/// Streams a safetensors file: header, then each tensor generated chunk by chunk.
/// `progress(bytes_written, total_bytes)` is called after every chunk.
pub(super) fn write_file(
    path: &Path,
    specs: &[(TensorSpec, Fill)],
    dtype: StDType,
    seed: u64,
    metadata: &BTreeMap<String, String>,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<WriteSummary> {
    if !matches!(dtype, StDType::F16 | StDType::BF16 | StDType::F32) {
        return Err(Error::dtype(OP, format!("can write F16, BF16 or F32 weights, not {}", dtype.name())));
    }
    let mut header = serde_json::Map::new();
    if !metadata.is_empty() {
        header.insert("__metadata__".into(), serde_json::to_value(metadata).map_err(|e| invalid(e.to_string()))?);
    }
    let mut offset = 0usize;
    for (s, _) in specs {
        let end = offset + s.numel() * dtype.size();
        header.insert(
            s.key.clone(),
            serde_json::json!({ "dtype": dtype.name(), "shape": s.shape, "data_offsets": [offset, end] }),
        );
        offset = end;
    }
    let mut text = serde_json::to_string(&header).map_err(|e| invalid(e.to_string()))?;
    // Readers that map the file may want the data 8-byte aligned (the reference writer pads so).
    while text.len() % 8 != 0 {
        text.push(' ');
    }
    let total = 8 + text.len() as u64 + offset as u64;
    let with_path = |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
    let mut w = BufWriter::with_capacity(8 << 20, File::create(path).map_err(with_path)?);
    w.write_all(&(text.len() as u64).to_le_bytes()).map_err(with_path)?;
    w.write_all(text.as_bytes()).map_err(with_path)?;
    let mut done = 8 + text.len() as u64;
    let (mut vals, mut bytes) = (vec![0f32; CHUNK], Vec::with_capacity(CHUNK * 4));
    for (s, how) in specs {
        let mut rng = Rng::for_tensor(seed, &s.key);
        let mut left = s.numel();
        while left > 0 {
            let n = left.min(CHUNK);
            rng.fill(*how, &mut vals[..n]);
            encode(dtype, &vals[..n], &mut bytes);
            w.write_all(&bytes).map_err(with_path)?;
            left -= n;
            done += bytes.len() as u64;
            progress(done, total);
        }
    }
    w.flush().map_err(with_path)?;
    let parameters = specs.iter().map(|(s, _)| s.numel() as u64).sum();
    Ok(WriteSummary { tensors: specs.len(), parameters, bytes: total })
}
