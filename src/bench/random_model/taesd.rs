//! A random-weight TAESD decoder in madebyollin's standalone layout (`taesd_decoder.safetensors`),
//! at any width (the published one is 64), for benchmarks and tests that need the real
//! architecture without the file.
//!
//! The standalone decoder is an `nn.Sequential`: `Clamp` (no weights), conv latent→W, ReLU, then
//! levels of 3, 3, 3 and 1 blocks, each level but the last followed by a nearest ×2 upsample and
//! a bias-free conv W→W, the last level by the output conv W→3. A block is three 3×3 convs
//! (`conv.0`, `conv.2`, `conv.4`, ReLU between) and an identity skip.

use std::collections::BTreeMap;
use std::path::Path;

use super::write::{write_file, Fill};
use super::{invalid, TensorSpec, WriteSummary};
use crate::weights::StDType;
use crate::Result;

/// Blocks per decoder level, lowest resolution first (as `models::vae::taesd`).
const DECODER_BLOCKS: [usize; 4] = [3, 3, 3, 1];

/// The tensors of a standalone TAESD decoder of `width` channels for `latent_channels` latents.
pub fn taesd_decoder_tensors(width: usize, latent_channels: usize) -> Result<Vec<TensorSpec>> {
    if width == 0 || latent_channels == 0 {
        return Err(invalid("a TAESD decoder needs a positive width and latent channel count"));
    }
    let mut out = Vec::new();
    let conv = |out: &mut Vec<TensorSpec>, key: String, cout: usize, cin: usize, bias: bool| {
        out.push(TensorSpec { key: format!("{key}.weight"), shape: vec![cout, cin, 3, 3] });
        if bias {
            out.push(TensorSpec { key: format!("{key}.bias"), shape: vec![cout] });
        }
    };
    // Index 0 is the parameterless Clamp, 2 the ReLU.
    conv(&mut out, "1".into(), width, latent_channels, true);
    let mut idx = 3;
    for (level, &blocks) in DECODER_BLOCKS.iter().enumerate() {
        for _ in 0..blocks {
            for c in [0, 2, 4] {
                conv(&mut out, format!("{idx}.conv.{c}"), width, width, true);
            }
            idx += 1;
        }
        if level + 1 < DECODER_BLOCKS.len() {
            // The upsample, then a bias-free conv.
            conv(&mut out, format!("{}", idx + 1), width, width, false);
            idx += 2;
        } else {
            conv(&mut out, format!("{idx}"), 3, width, true);
        }
    }
    Ok(out)
}

/// Writes a random standalone TAESD decoder (weights uniform in ±1/√fan_in, biases ±0.02, as the
/// checkpoints of this module).
pub fn write_taesd_decoder(path: &Path, width: usize, seed: u64, dtype: StDType) -> Result<WriteSummary> {
    let specs: Vec<_> = taesd_decoder_tensors(width, 4)?
        .into_iter()
        .map(|s| {
            let fill = if s.shape.len() > 1 {
                Fill::Uniform { offset: 0.0, scale: 1.0 / (s.shape[1..].iter().product::<usize>() as f32).sqrt() }
            } else {
                Fill::Uniform { offset: 0.0, scale: 0.02 }
            };
            (s, fill)
        })
        .collect();
    write_file(path, &specs, dtype, seed, &BTreeMap::new(), &mut |_, _| {})
}
