//! `lorafuse bench lora`: the cost of stacked LoRAs at full SD1.5 shapes (synthetic weights).
//!
//! For 0, 1, 3, 6 and 12 rank-r LoRAs (kohya files written with random factors for every
//! attention projection, `proj_in/out` and feed-forward layer of the UNet, and the text
//! encoder's attention and MLP), in merged and in fused mode: the GPU time of one UNet
//! evaluation with CFG (batch 2, the recorded graph replayed), and the wall time to switch from
//! one 6-LoRA set to another (restore + merge, or re-upload of the runtime factors).

use std::path::{Path, PathBuf};
use std::time::Instant;

use half::f16;
use serde::Serialize;

use super::pipeline::sd15_config;
use crate::lora::{LoraMode, LoraSpec};
use crate::pipeline::request::Precision;
use crate::pipeline::txt2img::Pipeline;
use crate::weights::detect::detect;
use crate::weights::{Component, ModelFiles};
use crate::{Context, Error, Result};

#[derive(Clone, Debug, Serialize)]
pub struct LoraStepResult {
    pub mode: String,
    pub loras: usize,
    pub step_ms: f64,
    /// Step time over the no-LoRA step time.
    pub ratio: f64,
    /// What the extra FLOPs of the runtime path predict for that ratio (1 for merged).
    pub predicted_ratio: f64,
    /// Kernel launches of the recorded UNet graph (merged mode: the same as without LoRAs).
    pub dispatches: usize,
    pub merged_weights: usize,
    pub fused_layers: usize,
}

#[derive(Clone, Debug, Serialize)]
pub struct LoraBenchReport {
    pub adapter: String,
    pub precision: String,
    pub size: usize,
    pub rank: usize,
    pub adapted_modules: usize,
    pub base_step_ms: f64,
    pub base_dispatches: usize,
    pub steps: Vec<LoraStepResult>,
    /// Wall ms to replace one 6-LoRA set by another, per mode.
    pub switch6_ms: Vec<(String, f64)>,
}

/// Whether a weight of the UNet or text encoder is one the usual kohya LoRA trains.
fn trained(c: Component, path: &str) -> bool {
    let m = path.trim_end_matches(".weight");
    match c {
        Component::Unet => {
            m.contains(".attentions.")
                && ["to_q", "to_k", "to_v", "to_out.0", "proj_in", "proj_out", "ff.net.0.proj", "ff.net.2"]
                    .iter()
                    .any(|s| m.ends_with(s))
        }
        Component::TextEncoder | Component::TextEncoder2 => {
            ["q_proj", "k_proj", "v_proj", "out_proj", "fc1", "fc2"].iter().any(|s| m.ends_with(s))
        }
        Component::Vae => false,
    }
}

/// A kohya LoRA of rank `rank` over every trained weight of `pipe`, random factors from `seed`.
/// Returns the number of modules.
pub fn write_random_lora(pipe: &Pipeline, path: &Path, rank: usize, seed: u64) -> Result<usize> {
    let mut h = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut next = move || {
        h ^= h << 13;
        h ^= h >> 7;
        h ^= h << 17;
        (h >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    };
    let mut tensors: Vec<(String, Vec<usize>, Vec<u8>)> = Vec::new();
    for ((c, p), e) in pipe.adaptable.entries() {
        if !trained(c, &p) {
            continue;
        }
        let shape = e.shape();
        let (n, k) = (shape[0], shape.iter().product::<usize>() / shape[0]);
        let prefix = if c == Component::Unet { "lora_unet_" } else { "lora_te_" };
        let key = format!("{prefix}{}", p.trim_end_matches(".weight").replace('.', "_"));
        let scale_d = 1.0 / (k as f32).sqrt();
        let down: Vec<f16> = (0..rank * k).map(|_| f16::from_f32(next() * scale_d)).collect();
        let up: Vec<f16> = (0..n * rank).map(|_| f16::from_f32(next() * 0.01)).collect();
        tensors.push((format!("{key}.lora_down.weight"), vec![rank, k], bytemuck::cast_slice(&down).to_vec()));
        tensors.push((format!("{key}.lora_up.weight"), vec![n, rank], bytemuck::cast_slice(&up).to_vec()));
        let alpha = [f16::from_f32(rank as f32)];
        tensors.push((format!("{key}.alpha"), vec![], bytemuck::cast_slice(&alpha).to_vec()));
    }
    let modules = tensors.len() / 3;
    let views = tensors
        .iter()
        .map(|(n, s, b)| {
            safetensors::tensor::TensorView::new(safetensors::Dtype::F16, s.clone(), b)
                .map(|v| (n.clone(), v))
                .map_err(|e| Error::invalid("bench_lora", format!("{n}: {e}")))
        })
        .collect::<Result<Vec<_>>>()?;
    let meta = std::collections::HashMap::from([
        ("ss_network_dim".to_string(), rank.to_string()),
        ("ss_network_alpha".to_string(), rank.to_string()),
        ("ss_base_model_version".to_string(), "sd_v1".to_string()),
    ]);
    let bytes = safetensors::serialize(views, Some(meta)).map_err(|e| Error::invalid("bench_lora", e.to_string()))?;
    std::fs::write(path, bytes)?;
    Ok(modules)
}

/// Extra FLOPs per UNet evaluation with CFG (batch 2) of running `loras` rank-`rank` adapters on
/// every trained UNet layer at run time: `2·M·r·(K + N)` per layer and adapter, M the tokens the
/// layer sees (its block's resolution, or the 77 context tokens for cross-attention k/v).
pub fn fused_extra_flops(pipe: &Pipeline, size: usize, rank: usize, loras: usize) -> f64 {
    let side = size / 8;
    let mut total = 0.0;
    for ((c, p), e) in pipe.adaptable.entries() {
        if c != Component::Unet || !trained(c, &p) {
            continue;
        }
        let level = |prefix: &str| p.strip_prefix(prefix).and_then(|r| r.split('.').next()?.parse::<u32>().ok());
        let res = if let Some(i) = level("down_blocks.") {
            side >> i
        } else if let Some(i) = level("up_blocks.") {
            side >> 3u32.saturating_sub(i)
        } else {
            side >> 3
        };
        let cross_kv = p.contains("attn2.to_k") || p.contains("attn2.to_v");
        let m = 2.0 * if cross_kv { 77.0 } else { (res * res) as f64 };
        let shape = e.shape();
        let (n, k) = (shape[0] as f64, (shape.iter().product::<usize>() / shape[0]) as f64);
        total += 2.0 * m * rank as f64 * (k + n) * loras as f64;
    }
    total
}

/// GPU ms of one UNet evaluation with CFG at `size`², with whatever LoRAs are applied now.
fn unet_step_ms(ctx: &Context, pipe: &Pipeline, size: usize, budget_ms: f64) -> Result<(f64, usize)> {
    let graph = super::unet_graph(ctx, pipe, size)?;
    // Warm-up (pipeline compilation, first touches), then single timed replays; the minimum
    // is reported, since on a shared machine other work only ever adds time.
    let t0 = Instant::now();
    graph.replay(ctx)?;
    ctx.sync()?;
    let first = t0.elapsed().as_secs_f64() * 1e3;
    let reps = ((budget_ms / first.max(1e-3)) as u32).clamp(3, 50);
    let mut best = f64::INFINITY;
    for _ in 0..reps {
        let ms = match graph.time_gpu(ctx, 1)? {
            Some(ms) => ms,
            None => {
                let t = Instant::now();
                graph.replay(ctx)?;
                ctx.sync()?;
                t.elapsed().as_secs_f64() * 1e3
            }
        };
        best = best.min(ms);
    }
    Ok((best, graph.len()))
}

pub struct LoraBenchOptions {
    pub size: usize,
    pub rank: usize,
    pub counts: Vec<usize>,
    pub precision: Precision,
    pub budget_ms: f64,
}

pub fn run(
    ctx: &Context,
    structure: &Path,
    work_dir: &Path,
    o: &LoraBenchOptions,
    mut progress: impl FnMut(&str),
) -> Result<LoraBenchReport> {
    let config = sd15_config(&detect(&ModelFiles::open(structure)?)?);
    progress("loading synthetic SD1.5 weights");
    let pipe = Pipeline::synthetic(ctx, structure, config, o.precision)?;
    let max = o.counts.iter().copied().max().unwrap_or(0).max(12);
    let mut files: Vec<PathBuf> = Vec::new();
    let mut modules = 0;
    for i in 0..max {
        progress(&format!("writing random LoRA {}/{max}", i + 1));
        let p = work_dir.join(format!("bench_lora_{i}.safetensors"));
        modules = write_random_lora(&pipe, &p, o.rank, 1000 + i as u64)?;
        files.push(p);
    }
    let specs = |n: usize, w: f32| -> Vec<LoraSpec> { files[..n].iter().map(|p| LoraSpec::new(p, w)).collect() };
    progress("step without LoRAs");
    let (base, base_dispatches) = unet_step_ms(ctx, &pipe, o.size, o.budget_ms)?;
    let base_flops = super::pipeline::SD15_CFG_STEP_FLOPS_512 * (o.size as f64 / 512.0).powi(2);
    let mut steps = Vec::new();
    for mode in [LoraMode::Merged, LoraMode::Fused] {
        for &n in &o.counts {
            progress(&format!("{} LoRAs, {} mode", n, mode.name()));
            let (_, rep) = pipe.set_loras(ctx, &specs(n, 0.8), mode, false)?;
            let (ms, dispatches) =
                if n == 0 { (base, base_dispatches) } else { unet_step_ms(ctx, &pipe, o.size, o.budget_ms)? };
            steps.push(LoraStepResult {
                mode: mode.name().to_string(),
                loras: n,
                step_ms: ms,
                ratio: ms / base,
                predicted_ratio: match mode {
                    LoraMode::Fused => 1.0 + fused_extra_flops(&pipe, o.size, o.rank, n) / base_flops,
                    _ => 1.0,
                },
                dispatches,
                merged_weights: rep.merged_weights,
                fused_layers: rep.fused_weights,
            });
        }
    }
    let mut switch6_ms = Vec::new();
    for mode in [LoraMode::Merged, LoraMode::Fused] {
        progress(&format!("switching 6-LoRA sets, {} mode", mode.name()));
        let a: Vec<LoraSpec> = specs(6, 0.8);
        let b: Vec<LoraSpec> = files[max - 6..].iter().map(|p| LoraSpec::new(p, 0.6)).collect();
        pipe.set_loras(ctx, &a, mode, false)?;
        ctx.sync()?;
        let t = Instant::now();
        pipe.set_loras(ctx, &b, mode, false)?;
        ctx.sync()?;
        switch6_ms.push((mode.name().to_string(), t.elapsed().as_secs_f64() * 1e3));
    }
    pipe.clear_loras(ctx)?;
    Ok(LoraBenchReport {
        adapter: ctx.caps.adapter_name.clone(),
        precision: format!("{:?}", pipe.dtype),
        size: o.size,
        rank: o.rank,
        adapted_modules: modules,
        base_step_ms: base,
        base_dispatches,
        steps,
        switch6_ms,
    })
}
