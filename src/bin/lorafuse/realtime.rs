//! `lorafuse bench realtime`: one interactive image's latency (see `lorafuse::bench::realtime`).

use anyhow::Result;
use clap::Args;
use lorafuse::bench::realtime::{run as run_bench, RealtimeOptions};
use lorafuse::pipeline::request::Precision;
use lorafuse::Context;

use crate::args::named;
use crate::demo;

#[derive(Args, Clone, Debug)]
pub struct RealtimeArgs {
    /// Image side in pixels (64 for a smoke run; numbers are not comparable).
    #[arg(long, default_value_t = 512)]
    pub size: usize,
    /// LCM steps.
    #[arg(long, default_value_t = 4)]
    pub steps: usize,
    /// Guidance scale: 1 skips the unconditional pass (UNet batch 1); any other value runs CFG.
    #[arg(long, default_value_t = 1.0)]
    pub cfg: f32,
    /// Also time the same steps at this guidance scale, right after in the same process (e.g. 7:
    /// what --cfg 1 saves).
    #[arg(long, value_name = "CFG")]
    pub compare_cfg: Option<f32>,
    /// LoRAs in the stack (1 to 3).
    #[arg(long, default_value_t = 3)]
    pub loras: usize,
    #[arg(long, default_value_t = 32)]
    pub rank: usize,
    /// f32, f16 or auto
    #[arg(long, default_value = "auto", value_parser = named::<Precision>)]
    pub precision: Precision,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    pub json: bool,
    /// The bundled tiny model's shapes and a 16-wide TAESD instead of SD1.5's: a smoke run that
    /// exercises every phase in seconds (numbers are not comparable).
    #[arg(long)]
    pub quick: bool,
}

pub fn run(ctx: &Context, a: &RealtimeArgs, quiet: bool) -> Result<()> {
    let opts = RealtimeOptions {
        size: a.size,
        steps: a.steps,
        cfg: a.cfg,
        loras: a.loras,
        rank: a.rank,
        precision: a.precision,
        compare_cfg: a.compare_cfg,
        tiny: a.quick,
        taesd_width: if a.quick { 16 } else { RealtimeOptions::default().taesd_width },
    };
    opts.validate()?;
    let dir = std::env::temp_dir().join(format!("lorafuse-bench-realtime-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let structure = dir.join("sd15-structure.safetensors");
    let quiet = quiet || a.json;
    let r = std::fs::write(&structure, demo::TINY_MODEL).map_err(anyhow::Error::from).and_then(|()| {
        Ok(run_bench(ctx, &structure, &dir, &opts, |m| {
            if !quiet {
                eprintln!("{m}");
            }
        })?)
    });
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    if a.json {
        println!("{}", serde_json::to_string(&r)?);
    } else {
        print!("{}", r.table());
    }
    Ok(())
}
