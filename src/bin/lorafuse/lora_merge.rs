//! `lorafuse lora merge`: LoRAs with weights into one kohya LoRA/LoCon file.

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lorafuse::lora::merge::{check_output, merge, MergeInput, MergeOptions};
use lorafuse::lora::resize::stored_dtype;
use lorafuse::weights::{ModelFiles, StDType};

use crate::lora_extract::{out_dir_exists, print_table, progress, write};
use crate::Cli;

#[derive(Args, Clone, Debug)]
pub struct MergeArgs {
    /// LoRAs as PATH or PATH:WEIGHT (a negative weight subtracts).
    #[arg(required = true, value_name = "PATH[:W]")]
    pub inputs: Vec<String>,
    /// Truncate every module's weighted sum to this rank by SVD (default: exact concatenation).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Rank of k×k conv modules (default: --rank).
    #[arg(long)]
    pub conv_rank: Option<usize>,
    /// A model the LoRAs are for: modules are matched to its layers (files may mix kohya and
    /// diffusers/PEFT keys) and written with its kohya names.
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// fp32, fp16 or bf16 (default: the inputs' dtype when they share one, else fp32).
    #[arg(long)]
    pub dtype: Option<String>,
    /// Write the per-module report as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(short = 'o', long)]
    pub out: PathBuf,
}

fn dtype(a: &MergeArgs, inputs: &[MergeInput]) -> Result<StDType> {
    Ok(match a.dtype.as_deref() {
        Some("fp32" | "f32" | "float") => StDType::F32,
        Some("fp16" | "f16") => StDType::F16,
        Some("bf16") => StDType::BF16,
        Some(s) => bail!("--dtype must be fp32, fp16 or bf16, got '{s}'"),
        None => {
            let dts = inputs.iter().map(|i| stored_dtype(&i.path)).collect::<lorafuse::Result<Vec<_>>>()?;
            if dts.iter().all(|d| *d == dts[0]) {
                dts[0]
            } else {
                StDType::F32
            }
        }
    })
}

pub fn run(cli: &Cli, a: &MergeArgs) -> Result<()> {
    let inputs = a.inputs.iter().map(|s| MergeInput::parse(s)).collect::<lorafuse::Result<Vec<_>>>()?;
    for i in &inputs {
        if !i.path.is_file() {
            bail!("LoRA {} does not exist", i.path.display());
        }
    }
    check_output(&a.out, &inputs)?;
    if let Some(j) = &a.report {
        check_output(j, &inputs)?;
        out_dir_exists(j)?;
    }
    out_dir_exists(&a.out)?;
    let dt = dtype(a, &inputs)?;
    let model = match &a.model {
        Some(p) => Some(ModelFiles::open(p).with_context(|| format!("model {}", p.display()))?),
        None => None,
    };
    let opts = MergeOptions { rank: a.rank, conv_rank: a.conv_rank };
    let bar = progress(cli)?;
    let t0 = Instant::now();
    let (file, mut report) = merge(&inputs, model.as_ref(), &opts, &mut |i, n, key| bar.item(i, n, key))?;
    bar.finish();
    let secs = t0.elapsed().as_secs_f64();
    write(&file, &mut report, dt, &a.out, a.report.as_deref())?;
    print_table(&report, true);
    println!(
        "wrote {} in {secs:.1} s: {} bytes (inputs {} bytes)",
        a.out.display(),
        report.bytes.unwrap_or(0),
        report.old_bytes.unwrap_or(0)
    );
    Ok(())
}
