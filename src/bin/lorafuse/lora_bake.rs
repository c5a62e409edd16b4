//! `lorafuse lora bake`: a checkpoint with LoRAs merged into its weights, in the input's layout
//! and dtypes.

use std::path::PathBuf;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lorafuse::lora::bake::bake;
use lorafuse::lora::{resolve_in_dir, LoraSpec};

use crate::{progress, Cli};

#[derive(Args, Clone, Debug)]
pub struct BakeArgs {
    /// The checkpoint: a single .safetensors file (LDM names) or a diffusers folder.
    #[arg(short, long, value_name = "MODEL")]
    pub model: PathBuf,
    /// A LoRA: PATH, PATH:WEIGHT or PATH:unet=W1,te=W2 (repeatable); a bare NAME is looked up in
    /// --lora-dir.
    #[arg(long = "lora", value_name = "PATH[:W]", required = true)]
    pub loras: Vec<String>,
    /// Folder that LoRA names which are not a file are looked up in.
    #[arg(long, value_name = "DIR")]
    pub lora_dir: Option<PathBuf>,
    /// Where to write: a .safetensors file for a single-file model, a new (or empty) folder for a
    /// diffusers folder. Never the input.
    #[arg(short, long, value_name = "OUT")]
    pub output: PathBuf,
}

/// The specs with names resolved in the LoRA folder where they are not files themselves.
fn specs(a: &BakeArgs) -> Result<Vec<LoraSpec>> {
    let mut out = Vec::new();
    for s in &a.loras {
        let mut spec: LoraSpec = s.parse()?;
        if !spec.path.is_file() {
            match &a.lora_dir {
                Some(dir) => spec.path = resolve_in_dir(dir, &spec.path.to_string_lossy())?,
                None => bail!("LoRA {} does not exist", spec.path.display()),
            }
        }
        out.push(spec);
    }
    Ok(out)
}

pub fn run(cli: &Cli, a: &BakeArgs) -> Result<()> {
    let loras = specs(a)?;
    let bar = progress::Progress::new(cli.quiet, "{msg} [{bar:30}] {pos}/{len} tensors ({elapsed})", "tensors")?;
    bar.set_message("baking");
    let report = bake(&a.model, &loras, &a.output, &mut |done, total, _name| {
        bar.set_length(total as u64);
        bar.set_position(done as u64);
    })
    .with_context(|| format!("baking into {}", a.output.display()));
    bar.finish();
    let report = report?;
    for l in &report.loras {
        println!(
            "{}: {} modules merged (unet {}, te {}), sha256 {}",
            l.name,
            l.merged,
            l.unet_weight,
            l.te_weight,
            &l.hash[..l.hash.len().min(12)]
        );
        if !l.unmatched.is_empty() {
            eprintln!("warning: LoRA {}: {} keys match nothing in this model", l.name, l.unmatched.len());
            for k in l.unmatched.iter().take(20) {
                eprintln!("  unmatched: {k}");
            }
            if l.unmatched.len() > 20 {
                eprintln!("  … and {} more", l.unmatched.len() - 20);
            }
        }
    }
    println!(
        "wrote {} ({} file(s)): {} tensors merged, {} copied unchanged",
        a.output.display(),
        report.files,
        report.changed_tensors,
        report.copied_tensors
    );
    Ok(())
}
