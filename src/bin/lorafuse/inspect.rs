//! `lorafuse inspect LORA [--model M]`: a LoRA's kind, rank, alpha, targets and base model, and,
//! with a model, how many of its modules find their weight.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use lorafuse::lora::{inspect::summarize, LoraFile, LoraSummary};
use lorafuse::weights::{detect, ModelFiles, SafeTensorsFile};

#[derive(Args, Clone, Debug)]
pub struct InspectArgs {
    /// The LoRA file (.safetensors).
    pub lora: PathBuf,
    /// Also match it against this checkpoint (single file or diffusers folder).
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

fn print_summary(s: &LoraSummary) {
    let rank = if s.max_rank == 0 {
        "full (no low-rank factors)".to_string()
    } else if s.min_rank == s.max_rank {
        s.max_rank.to_string()
    } else {
        format!("{}..{}", s.min_rank, s.max_rank)
    };
    println!("kind:      {}", s.kind.name());
    println!("rank:      {rank}");
    match s.alpha {
        Some(a) => println!("alpha:     {a} (scale {:.4})", if s.max_rank > 0 { a / s.max_rank as f32 } else { 1.0 }),
        None => println!("alpha:     none (scale 1)"),
    }
    println!("targets:   {} modules ({} UNet, {} text encoder)", s.targets, s.unet_targets, s.text_encoder_targets);
    println!("trained for: {}", s.base_guess);
}

pub fn run(a: &InspectArgs) -> Result<()> {
    let file = SafeTensorsFile::open(&a.lora).with_context(|| format!("reading {}", a.lora.display()))?;
    let raw = summarize(&file);
    if raw.targets == 0 {
        anyhow::bail!("{}: no LoRA/LyCORIS adapter keys (is it a checkpoint?)", a.lora.display());
    }
    let mut json = serde_json::json!({
        "file": a.lora.display().to_string(),
        "kind": raw.kind.name(),
        "min_rank": raw.min_rank,
        "max_rank": raw.max_rank,
        "alpha": raw.alpha,
        "modules": raw.targets,
        "unet_modules": raw.unet_targets,
        "text_encoder_modules": raw.text_encoder_targets,
        "base": raw.base_guess,
    });
    if !a.json {
        println!("file:      {}", a.lora.display());
        print_summary(&raw);
    }
    if let Some(m) = &a.model {
        let files = ModelFiles::open(m).with_context(|| format!("reading {}", m.display()))?;
        let family = detect(&files)?.family;
        let lora = LoraFile::open(&a.lora, &files)?;
        let matched = lora.modules.len();
        let total = matched + lora.unmatched.len();
        json["model"] = serde_json::json!(m.display().to_string());
        json["model_family"] = serde_json::json!(family.name());
        json["matched"] = serde_json::json!(matched);
        json["total"] = serde_json::json!(total);
        json["unmatched_keys"] = serde_json::json!(lora.unmatched);
        if !a.json {
            println!("model:     {} ({})", m.display(), family.name());
            println!("matches:   {matched}/{total} modules");
            for k in lora.unmatched.iter().take(20) {
                println!("  unmatched: {k}");
            }
            if lora.unmatched.len() > 20 {
                println!("  … and {} more", lora.unmatched.len() - 20);
            }
        }
    }
    if a.json {
        println!("{json}");
    }
    Ok(())
}
