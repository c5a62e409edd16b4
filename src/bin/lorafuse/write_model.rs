//! `lorafuse bench write-sd15|write-sdxl --out FILE`: a full-size SD1.5 or SDXL base single-file
//! checkpoint with random weights (and optionally a kohya LoRA for it), as
//! `make_random_sd15.py` writes without torch.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use lorafuse::bench::random_model::{write_kohya_lora, write_kohya_lora_sdxl, write_sd15, write_sdxl};
use lorafuse::weights::detect::Family;
use lorafuse::weights::StDType;

#[derive(Args, Clone, Debug)]
pub struct WriteModelArgs {
    /// The checkpoint to write (.safetensors, LDM layout; in fp16 about 2.13 GB for SD1.5,
    /// 6.94 GB for SDXL).
    #[arg(long)]
    pub out: PathBuf,
    /// fp16, bf16 or fp32.
    #[arg(long, default_value = "fp16")]
    pub dtype: String,
    #[arg(long, default_value_t = 0)]
    pub seed: u64,
    /// Also write a kohya LoRA for this model (UNet attention modules) here.
    #[arg(long)]
    pub lora: Option<PathBuf>,
    /// The LoRA's rank (its alpha equals the rank).
    #[arg(long, default_value_t = 32)]
    pub rank: usize,
}

fn parse_dtype(s: &str) -> Result<StDType> {
    Ok(match s {
        "fp16" | "f16" => StDType::F16,
        "bf16" => StDType::BF16,
        "fp32" | "f32" => StDType::F32,
        _ => bail!("--dtype must be fp16, bf16 or fp32, got '{s}'"),
    })
}

pub fn run(a: &WriteModelArgs, family: Family, quiet: bool) -> Result<()> {
    let dtype = parse_dtype(&a.dtype)?;
    if a.lora.is_some() && a.rank == 0 {
        bail!("--rank must be positive");
    }
    if let Some(dir) = a.out.parent().filter(|d| !d.as_os_str().is_empty()) {
        // Before minutes of writing, not after the first chunk.
        if !dir.is_dir() {
            bail!("output folder {} does not exist", dir.display());
        }
    }
    let bar = if quiet {
        ProgressBar::hidden()
    } else {
        let b = ProgressBar::new(0);
        b.set_style(ProgressStyle::with_template(
            "writing [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ({elapsed}, eta {eta})",
        )?);
        b
    };
    let t0 = Instant::now();
    let write = match family {
        Family::Sd1 => write_sd15,
        Family::Sdxl => write_sdxl,
    };
    let summary = write(&a.out, dtype, a.seed, &mut |done, total| {
        bar.set_length(total);
        bar.set_position(done);
    })
    .with_context(|| format!("writing {}", a.out.display()))?;
    bar.finish_and_clear();
    println!(
        "wrote {}: {} {} tensors, {} parameters, {} bytes ({:.1} s)",
        a.out.display(),
        family.name(),
        summary.tensors,
        summary.parameters,
        summary.bytes,
        t0.elapsed().as_secs_f64()
    );
    if let Some(lora) = &a.lora {
        let write_lora = match family {
            Family::Sd1 => write_kohya_lora,
            Family::Sdxl => write_kohya_lora_sdxl,
        };
        let modules = write_lora(lora, a.rank, a.seed.wrapping_add(1), dtype)
            .with_context(|| format!("writing {}", lora.display()))?;
        println!("wrote {}: {modules} adapted modules, rank {}", lora.display(), a.rank);
    }
    Ok(())
}
