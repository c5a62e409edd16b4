//! `lorafuse lora …`: the LoRA tools, one file per tool.

use anyhow::Result;
use clap::Subcommand;

use crate::{lora_bake, lora_compare, lora_extract, lora_merge, Cli};

#[derive(Subcommand)]
pub enum LoraCmd {
    /// Extract a LoRA (kohya LoRA/LoCon layout) from a base and a fine-tuned checkpoint by
    /// truncated SVD of their difference, with the error of every module.
    Extract(lora_extract::ExtractArgs),
    /// Change a LoRA's rank (kohya resize_lora's rules), with the error of every module.
    Resize(lora_extract::ResizeArgs),
    /// Write a checkpoint with LoRAs merged into its weights, in the input's layout and dtype.
    Bake(lora_bake::BakeArgs),
    /// Merge LoRAs into one file: exact concatenation along the rank, or SVD to a rank with the
    /// error of every module.
    Merge(lora_merge::MergeArgs),
    /// Compare LoRAs: per-module cosine and subspace similarity of their ΔW, and where stacking
    /// them interferes.
    Compare(lora_compare::CompareArgs),
}

pub fn run(cli: &Cli, what: &LoraCmd) -> Result<()> {
    match what {
        LoraCmd::Extract(a) => lora_extract::run_extract(cli, a),
        LoraCmd::Resize(a) => lora_extract::run_resize(cli, a),
        LoraCmd::Bake(a) => lora_bake::run(cli, a),
        LoraCmd::Merge(a) => lora_merge::run(cli, a),
        LoraCmd::Compare(a) => lora_compare::run(cli, a),
    }
}
