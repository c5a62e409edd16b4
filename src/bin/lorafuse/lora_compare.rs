//! `lorafuse lora compare`: per-module, per-block and overall similarity of LoRAs' ΔWs, and the
//! modules where stacking them interferes; a heat-map PNG and a JSON report on request.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lorafuse::grid::heatmap;
use lorafuse::lora::compare::{compare, CompareOptions, CompareReport};
use lorafuse::lora::LoraSpec;
use lorafuse::pipeline::image::{encode_png, write_atomic};
use lorafuse::weights::ModelFiles;

use crate::progress::Progress;
use crate::Cli;

/// Definitions printed by `--help` (kept short; the README says more).
const ABOUT: &str = "\
cosine: <dWa, dWb>_F / (|dWa|_F |dWb|_F) of the weighted dWs (per module; per block and overall \
with absent modules counting as zero). phi_out / phi_in: normalized subspace similarity of the \
top-K left / right singular vectors (Hu et al. 2021), |Ua^T Ub|_F^2 / K, 1 = same directions. \
strength: |w dW|_F / |W|_F with -m MODEL, else the module's share of the LoRA's energy \
|w dW|^2 / sum |w dW|^2. interference = sqrt(strength_a strength_b) * max(|cosine|, phi_out).";

#[derive(Args, Clone, Debug)]
#[command(after_help = ABOUT)]
pub struct CompareArgs {
    /// The LoRAs: PATH or PATH:WEIGHT (default 1; PATH:unet=W1,te=W2 too), at least two.
    #[arg(value_name = "LORA[:W]", required = true, num_args = 1..)]
    pub loras: Vec<String>,
    /// A model the LoRAs are for: modules match across key conventions (kohya, PEFT) and
    /// strengths are relative to its weights.
    #[arg(short = 'm', long)]
    pub model: Option<PathBuf>,
    /// K of the subspace similarity (capped by the modules' ranks).
    #[arg(long, default_value_t = 4)]
    pub subspace_rank: usize,
    /// How many of the most interfering modules to print.
    #[arg(long, default_value_t = 20)]
    pub top: usize,
    /// Write a per-block heat-map PNG here.
    #[arg(long, value_name = "OUT.png")]
    pub heatmap: Option<PathBuf>,
    /// Write everything computed as JSON here.
    #[arg(long, value_name = "OUT.json")]
    pub json: Option<PathBuf>,
}

fn out_dir_exists(p: &Path) -> Result<()> {
    if let Some(dir) = p.parent().filter(|d| !d.as_os_str().is_empty()) {
        if !dir.is_dir() {
            bail!("output folder {} does not exist", dir.display());
        }
    }
    Ok(())
}

fn opt(v: Option<f64>) -> String {
    v.map_or("-".to_string(), |v| format!("{v:+.3}"))
}

fn print_report(r: &CompareReport, top: usize) {
    for (i, l) in r.loras.iter().enumerate() {
        println!(
            "[{}] {} ({}, {} modules, weight unet {} te {}, energy {:.3e})",
            i + 1,
            l.name,
            l.kind,
            l.modules,
            l.unet_weight,
            l.te_weight,
            l.energy
        );
    }
    for p in &r.pairs {
        println!(
            "\n[{}] vs [{}]: overall cosine {:+.4} over {} shared modules ({} only in [{}], {} only in [{}])",
            p.a + 1,
            p.b + 1,
            p.cosine,
            p.shared,
            p.only_a,
            p.a + 1,
            p.only_b,
            p.b + 1
        );
        println!("  {:<6} {:>7} {:>7} {:>6} {:>12}", "block", "cosine", "phi_out", "shared", "interference");
        for b in &p.blocks {
            println!(
                "  {:<6} {:>7} {:>7} {:>6} {:>12.3e}",
                b.block,
                opt(b.cosine),
                b.phi_out.map_or("-".to_string(), |v| format!("{v:.3}")),
                b.shared,
                b.interference
            );
        }
    }
    let strength = if r.strength == "relative_to_base" { "|w dW|/|W|" } else { "share of the LoRA's energy" };
    println!("\nmost interfering modules (strength = {strength}, K = {}):", r.subspace_rank);
    println!(
        "{:<72} {:>5} {:>9} {:>9} {:>7} {:>7} {:>7} {:>9}",
        "module", "pair", "str_a", "str_b", "cosine", "phi_out", "phi_in", "score"
    );
    for m in r.top(top) {
        println!(
            "{:<72} {:>5} {:>9.3e} {:>9.3e} {:>+7.3} {:>7.3} {:>7.3} {:>9.3e}",
            m.module,
            format!("{}-{}", m.a + 1, m.b + 1),
            m.strength_a,
            m.strength_b,
            m.cosine,
            m.phi_out,
            m.phi_in,
            m.interference
        );
    }
    for n in &r.notes {
        println!("note: {n}");
    }
}

pub fn run(cli: &Cli, a: &CompareArgs) -> Result<()> {
    let specs = a.loras.iter().map(|s| s.parse::<LoraSpec>()).collect::<lorafuse::Result<Vec<_>>>()?;
    for p in [&a.heatmap, &a.json].into_iter().flatten() {
        out_dir_exists(p)?;
    }
    let model = match &a.model {
        Some(p) => Some(ModelFiles::open(p).with_context(|| format!("model {}", p.display()))?),
        None => None,
    };
    let bar = Progress::new(cli.quiet, "{msg} [{bar:30}] {pos}/{len} modules ({elapsed})", "modules")?;
    bar.set_message("singular vectors".to_string());
    let opts = CompareOptions { subspace_rank: a.subspace_rank };
    let report = compare(&specs, model.as_ref(), &opts, &mut |i, n, _| {
        bar.set_length(n as u64);
        bar.set_position(i as u64);
    });
    bar.finish();
    let report = report?;
    // Everything is encoded before anything is written, so a failure writes nothing.
    let png = match &a.heatmap {
        Some(_) => {
            let img = heatmap::render(&heatmap::from_report(&report))?;
            let names: Vec<&str> = report.loras.iter().map(|l| l.name.as_str()).collect();
            Some(encode_png(img.width, img.height, &img.rgb, &format!("lora compare: {}", names.join(", ")))?)
        }
        None => None,
    };
    let json = match &a.json {
        Some(_) => Some(report.to_json()?),
        None => None,
    };
    print_report(&report, a.top);
    if let (Some(p), Some(bytes)) = (&a.heatmap, &png) {
        write_atomic(p, bytes).with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    if let (Some(p), Some(text)) = (&a.json, &json) {
        write_atomic(p, text.as_bytes()).with_context(|| format!("writing {}", p.display()))?;
        println!("wrote {}", p.display());
    }
    Ok(())
}
