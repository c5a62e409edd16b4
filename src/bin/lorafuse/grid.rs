//! `lorafuse grid`: an X/Y/Z comparison grid over one loaded model (the model, and each LoRA
//! file, are loaded once for all cells).

use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context as _, Result};
use clap::Args;
use lorafuse::grid::{cell_path, compose, plan, Axis, AxisKind, LoraLookup, DEFAULT_MAX_CELLS};
use lorafuse::pipeline::image::{to_rgb8, write_png};
use lorafuse::pipeline::infotext::request_infotext;
use lorafuse::pipeline::request::Request;
use lorafuse::pipeline::txt2img::{Pipeline, Progress};
use lorafuse::Context;

use crate::args::GenerateArgs;
use crate::progress;

#[derive(Args, Clone, Debug)]
#[command(mut_arg("output", |a| a.default_value("grid.png")))]
pub struct GridArgs {
    #[command(flatten)]
    pub gen: GenerateArgs,
    /// Columns: KIND:VALUES with KIND one of lora-weight (NAME=0,0.5,1), lora (none,A,B,A+B),
    /// seed, cfg, steps, sampler, prompt-sr (FROM,TO1,TO2), lbw (NAME=PRESET1,PRESET2). Values with
    /// commas go in "quotes".
    #[arg(long, value_name = "KIND:VALUES")]
    pub x: Option<String>,
    /// Rows (same syntax as --x).
    #[arg(long, value_name = "KIND:VALUES")]
    pub y: Option<String>,
    /// One grid block per value, stacked under a title (same syntax as --x).
    #[arg(long, value_name = "KIND:VALUES")]
    pub z: Option<String>,
    /// Refuse grids with more cells than this.
    #[arg(long, default_value_t = DEFAULT_MAX_CELLS)]
    pub max_cells: usize,
    /// Print the load time, each cell's time and the total on stderr.
    #[arg(long)]
    pub timings: bool,
}

/// The request every cell starts from (the `generate` options), checked as `generate` checks it.
fn base_request(a: &GenerateArgs) -> Result<Request> {
    if a.batch != 1 {
        bail!("grid makes one image per cell: --batch must be 1, got {}", a.batch);
    }
    if a.save_tensors.is_some() {
        bail!("--save-tensors is not supported by grid (use generate on a cell's settings)");
    }
    if a.taesd.preview != crate::taesd_args::PreviewMode::None {
        bail!("--preview is not supported by grid (the grid image is written as cells finish)");
    }
    a.taesd.check(&a.output)?;
    // `--decoder taesd` makes a fast draft grid.
    Ok(a.taesd.apply(a.request()?))
}

pub fn run(ctx: &Context, g: &GridArgs, quiet: bool) -> Result<()> {
    let t_start = Instant::now();
    let a = &g.gen;
    let precision = a.precision;
    let base = base_request(a)?;
    let lookup = LoraLookup { loras: &base.loras, lora_dir: &base.lora_dir };
    let parse = |flag: &str, s: &Option<String>| -> Result<Option<Axis>> {
        s.as_deref().map(|s| Axis::parse(s, &lookup).with_context(|| format!("--{flag}"))).transpose()
    };
    let (x, y, z) = (parse("x", &g.x)?, parse("y", &g.y)?, parse("z", &g.z)?);
    if base.noise.noise.is_some() && [&x, &y, &z].iter().any(|a| a.as_ref().is_some_and(|a| a.kind == AxisKind::Seed)) {
        bail!("a seed axis has no effect with --noise-file (every cell would use the file's noise)");
    }
    let grid = plan(&base, x.as_ref(), y.as_ref(), z.as_ref(), g.max_cells)?;
    // Each cell's prompt tags resolve and its LoRA count is within `--max-loras` (before the load).
    let mut specs = Vec::new();
    for c in &grid.cells {
        specs.extend(c.req.lora_specs()?);
    }
    a.check_paths()?;
    a.check_block_weights(&specs)?;

    let t0 = Instant::now();
    let pipe = Pipeline::load_with_vae(ctx, &a.model, precision, a.vae.as_deref())
        .with_context(|| format!("loading {}", a.model.display()))?;
    a.taesd.attach(ctx, &pipe, &a.output)?;
    let load_s = t0.elapsed().as_secs_f64();
    let (model_name, hash) = a.model_identity()?;
    if !quiet {
        eprintln!("seed: {}", base.seed);
        eprintln!("precision: {}", precision.describe(ctx));
    }

    let n = grid.cells.len();
    let total_steps: u64 = grid.cells.iter().map(|c| c.req.steps as u64).sum();
    let bar = progress::Progress::new(
        quiet,
        "{msg} [{bar:30}] {pos}/{len} steps, {per_sec}, ETA {eta} ({elapsed})",
        "steps",
    )?;
    bar.set_length(total_steps);
    bar.tick_steadily();
    let with_z = z.is_some();
    let mut cells_rgb = Vec::with_capacity(n);
    let mut written = Vec::with_capacity(n + 1);
    let mut cell_s = Vec::with_capacity(n);
    let mut done_steps = 0u64;
    let mut first_info = None;
    let mut cell_size = (base.width, base.height);
    for (i, cell) in grid.cells.iter().enumerate() {
        bar.set_message(format!("cell {}/{n}", i + 1));
        let tc = Instant::now();
        let mut last = 0u64;
        let out = pipe.generate(ctx, &cell.req, &mut |p| match p {
            Progress::Step { step, .. } => {
                last = step as u64;
                bar.set_position(done_steps + last);
            }
            Progress::Compile { done, total } => bar.compiling(done, total),
            _ => {}
        })?;
        done_steps += last.max(cell.req.steps as u64);
        bar.set_position(done_steps);
        // The image's own size: with hires fix it is larger than the request's (first pass) size.
        let (h, w) = (out.images[0].shape[1], out.images[0].shape[2]);
        let rgb = to_rgb8(&out.images[0].data, h, w)?;
        let used = pipe.with_model_defaults(&cell.req);
        let info = a.with_vae(request_infotext(&used, out.seeds[0], &model_name, &hash, &out.loras)).render();
        let path = cell_path(&a.output, cell, with_z);
        write_png(&path, w, h, &rgb, &info)?;
        cell_size = (w, h);
        cell_s.push(tc.elapsed().as_secs_f64());
        first_info.get_or_insert(info);
        cells_rgb.push(rgb);
        written.push(path);
    }
    bar.finish();
    let (img, _) = compose(&cells_rgb, cell_size.0, cell_size.1, &grid.labels)?;
    // The grid carries the first cell's settings, as A1111's grids do.
    write_png(&a.output, img.width, img.height, &img.rgb, first_info.as_deref().unwrap_or(""))?;
    println!("{}", a.output.display());
    for p in &written {
        println!("{}", p.display());
    }
    if g.timings {
        print_timings(&a.output, load_s, &cell_s, t_start.elapsed().as_secs_f64());
    }
    Ok(())
}

fn print_timings(out: &Path, load_s: f64, cell_s: &[f64], total_s: f64) {
    let sum: f64 = cell_s.iter().sum();
    let cells: Vec<String> = cell_s.iter().map(|s| format!("{s:.2}")).collect();
    eprintln!("timings for {}: load {load_s:.2} s; cells (s) {}", out.display(), cells.join(", "));
    eprintln!(
        "timings: {} cells in {sum:.2} s ({:.2} s per cell); whole command {total_s:.2} s",
        cell_s.len(),
        sum / cell_s.len().max(1) as f64
    );
}
