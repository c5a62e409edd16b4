//! `lorafuse lora extract` and `lorafuse lora resize`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lorafuse::lora::extract::{extract, ExtractOptions};
use lorafuse::lora::lowrank::{LowRankFile, SvdReport};
use lorafuse::lora::resize::{resize, stored_dtype, ResizeOptions, ResizeRule};
use lorafuse::pipeline::image::write_atomic;
use lorafuse::weights::{ModelFiles, StDType};

use crate::progress::Progress;
use crate::Cli;

#[derive(Args, Clone, Debug)]
pub struct ExtractArgs {
    /// The base checkpoint (file or diffusers folder).
    #[arg(long)]
    pub base: PathBuf,
    /// The fine-tuned checkpoint, same family and shapes.
    #[arg(long)]
    pub tuned: PathBuf,
    /// Rank of linear and 1×1 modules (with --energy: the cap).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Also extract the resnet / sampler 3×3 convs (LoCon) at this rank.
    #[arg(long)]
    pub conv_rank: Option<usize>,
    /// Per module, the smallest rank retaining this fraction of ‖ΔW‖² (0 < E ≤ 1).
    #[arg(long)]
    pub energy: Option<f64>,
    /// A text encoder whose largest |ΔW| is at most this is left out (kohya's min_diff).
    #[arg(long, default_value_t = 0.01)]
    pub min_diff: f32,
    /// Full SVD of every module, as kohya's script. By default a fixed rank of a large module
    /// (≥ 256 rows and columns) uses a randomized top-rank SVD: many times faster, its reported
    /// error is the exact error of the written factors: the optimum's to 4 digits on a fine-tune-like
    /// 1/i spectrum, 0.35 % above it on pure noise.
    #[arg(long)]
    pub exact_svd: bool,
    /// fp32, fp16 or bf16.
    #[arg(long, default_value = "fp32")]
    pub save_precision: String,
    /// Write the per-module report as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(short = 'o', long)]
    pub out: PathBuf,
}

#[derive(Args, Clone, Debug)]
pub struct ResizeArgs {
    /// The LoRA to resize (kohya LoRA/LoCon, LyCORIS LoHa/LoKr, PEFT).
    pub input: PathBuf,
    /// The new rank; with a dynamic rule, the cap (kohya --new_rank).
    #[arg(long)]
    pub rank: Option<usize>,
    /// Rank of conv modules (default: --rank).
    #[arg(long)]
    pub conv_rank: Option<usize>,
    /// Keep singular values above s_max / X.
    #[arg(long, conflicts_with_all = ["sv_fro", "sv_cumulative"])]
    pub sv_ratio: Option<f64>,
    /// Keep the fewest singular values whose √Σs² reaches this fraction of ‖ΔW‖_F.
    #[arg(long, conflicts_with = "sv_cumulative")]
    pub sv_fro: Option<f64>,
    /// Keep the fewest singular values whose Σs reaches this fraction of the sum.
    #[arg(long)]
    pub sv_cumulative: Option<f64>,
    /// A model the LoRA is for: module shapes (conv kernels of LoHa/LoKr) come from it.
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// Write the per-module report as JSON here.
    #[arg(long)]
    pub report: Option<PathBuf>,
    #[arg(short = 'o', long)]
    pub out: PathBuf,
}

pub(crate) fn out_dir_exists(p: &Path) -> Result<()> {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            bail!("output folder {} does not exist", dir.display());
        }
    }
    Ok(())
}

pub(crate) fn print_table(r: &SvdReport, resized: bool) {
    let old = if resized { " old" } else { "" };
    println!("{:<72}{}  rank   alpha   rel.err  energy", "module", old);
    for m in &r.modules {
        let o = m.old_rank.map(|o| format!(" {o:>3}")).unwrap_or_default();
        println!(
            "{:<72}{o}  {:>4}  {:>6.2}  {:>8.2e}  {:>6.2}%",
            m.key,
            m.rank,
            m.alpha,
            m.rel_error,
            100.0 * m.retained_energy
        );
    }
    for (k, why) in &r.skipped {
        println!("skipped {k}: {why}");
    }
    let ranks: Vec<usize> = r.modules.iter().map(|m| m.rank).collect();
    println!(
        "{} modules, ranks {}..{}; total relative error {:.3e}, retained energy {:.3}%; {} values",
        r.modules.len(),
        ranks.iter().min().unwrap_or(&0),
        ranks.iter().max().unwrap_or(&0),
        r.total_rel_error,
        100.0 * r.total_retained_energy,
        r.params
    );
}

pub(crate) fn write(
    file: &LowRankFile,
    report: &mut SvdReport,
    dtype: StDType,
    out: &Path,
    json: Option<&Path>,
) -> Result<()> {
    let bytes = file.to_bytes(dtype)?;
    report.bytes = Some(bytes.len() as u64);
    let text = report.to_json()?;
    write_atomic(out, &bytes).with_context(|| format!("writing {}", out.display()))?;
    if let Some(j) = json {
        write_atomic(j, text.as_bytes()).with_context(|| format!("writing {}", j.display()))?;
    }
    Ok(())
}

fn dtype(s: &str) -> Result<StDType> {
    Ok(match s {
        "fp32" | "f32" | "float" => StDType::F32,
        "fp16" | "f16" => StDType::F16,
        "bf16" => StDType::BF16,
        _ => bail!("--save-precision must be fp32, fp16 or bf16, got '{s}'"),
    })
}

pub(crate) fn progress(cli: &Cli) -> Result<Progress> {
    Progress::new(cli.quiet, "{msg} [{bar:30}] {pos}/{len} modules ({elapsed})", "modules")
}

pub fn run_extract(cli: &Cli, a: &ExtractArgs) -> Result<()> {
    let dt = dtype(&a.save_precision)?;
    out_dir_exists(&a.out)?;
    if let Some(j) = &a.report {
        out_dir_exists(j)?;
    }
    let base = ModelFiles::open(&a.base).with_context(|| format!("base model {}", a.base.display()))?;
    let tuned = ModelFiles::open(&a.tuned).with_context(|| format!("tuned model {}", a.tuned.display()))?;
    let opts = ExtractOptions {
        rank: a.rank,
        conv_rank: a.conv_rank,
        energy: a.energy,
        min_diff: a.min_diff,
        exact: a.exact_svd,
    };
    let bar = progress(cli)?;
    let t0 = Instant::now();
    let (mut file, mut report) = extract(&base, &tuned, &opts, &mut |i, n, key| bar.item(i, n, key))?;
    bar.finish();
    let secs = t0.elapsed().as_secs_f64();
    // kohya titles the model-spec record by the output's name.
    if let Some(stem) = a.out.file_stem() {
        file.metadata.insert("modelspec.title".into(), stem.to_string_lossy().into_owned());
    }
    write(&file, &mut report, dt, &a.out, a.report.as_deref())?;
    print_table(&report, false);
    println!("wrote {} ({} bytes) in {secs:.1} s", a.out.display(), report.bytes.unwrap_or(0));
    Ok(())
}

pub fn run_resize(cli: &Cli, a: &ResizeArgs) -> Result<()> {
    let rule = match (a.sv_ratio, a.sv_fro, a.sv_cumulative) {
        (Some(x), _, _) => ResizeRule::SvRatio(x),
        (_, Some(x), _) => ResizeRule::SvFro(x),
        (_, _, Some(x)) => ResizeRule::SvCumulative(x),
        _ if a.rank.is_some() => ResizeRule::Rank,
        _ => bail!("give --rank R, --sv-ratio X, --sv-fro F or --sv-cumulative C"),
    };
    out_dir_exists(&a.out)?;
    if let Some(j) = &a.report {
        out_dir_exists(j)?;
    }
    let model = match &a.model {
        Some(p) => Some(ModelFiles::open(p).with_context(|| format!("model {}", p.display()))?),
        None => None,
    };
    let dt = stored_dtype(&a.input)?;
    let opts = ResizeOptions { rule, rank: a.rank, conv_rank: a.conv_rank };
    let bar = progress(cli)?;
    let t0 = Instant::now();
    let (file, mut report) = resize(&a.input, model.as_ref(), &opts, &mut |i, n, key| bar.item(i, n, key))?;
    bar.finish();
    let secs = t0.elapsed().as_secs_f64();
    write(&file, &mut report, dt, &a.out, a.report.as_deref())?;
    print_table(&report, true);
    let (old, new) = (report.old_bytes.unwrap_or(0), report.bytes.unwrap_or(0));
    println!(
        "wrote {} in {secs:.1} s: {new} bytes, was {old} ({:+.1}%)",
        a.out.display(),
        if old > 0 { 100.0 * (new as f64 - old as f64) / old as f64 } else { 0.0 }
    );
    Ok(())
}
