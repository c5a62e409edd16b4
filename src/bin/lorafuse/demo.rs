//! `lorafuse demo`: the whole pipeline end to end on the bundled tiny model (real SD1.x
//! architecture, random weights — its images are structured noise, not pictures), so a fresh
//! machine can run the main job without downloading anything. `--family sdxl` does the same with
//! a tiny SDXL (both text encoders, size conditioning, the SDXL VAE scale) written with random
//! weights at start: the binary carries only the SD1 model.

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use lorafuse::lora::LoraMode;
use lorafuse::pipeline::request::Precision;
use lorafuse::pipeline::rng::RngKind;
use lorafuse::schedulers::{SamplerKind, Spacing};
use lorafuse::weights::detect::Family;
use lorafuse::weights::StDType;
use lorafuse::Context;

use crate::args::GenerateArgs;
use crate::generate;
use crate::grid::{self, GridArgs};

/// The sd15-tiny single-file checkpoint (fp16, LDM layout), 16 MB.
pub static TINY_MODEL: &[u8] = include_bytes!("../../../tests/fixtures/sd15-tiny/model-fp16.safetensors");
/// A kohya LoRA (rank 4) for it, for the demo's LoRA-weight grid.
pub static TINY_LORA: &[u8] = include_bytes!("../../../tests/fixtures/sd15-tiny/loras/kohya_lora.safetensors");

#[derive(Args, Clone, Debug)]
pub struct DemoArgs {
    /// sd15 (the bundled model) or sdxl (a tiny SDXL written with random weights).
    #[arg(long, default_value = "sd15", value_parser = crate::family)]
    pub family: Family,
    #[arg(short = 'p', long, default_value = "masterpiece, best quality, 1girl, blonde hair, tiara, forest")]
    pub prompt: String,
    #[arg(long, default_value_t = 42)]
    pub seed: u64,
    #[arg(long, default_value_t = 20)]
    pub steps: usize,
    /// Image side in pixels (multiple of 8).
    #[arg(long, default_value_t = 128)]
    pub size: usize,
    #[arg(short = 'o', long, default_value = "demo.png")]
    pub output: PathBuf,
    /// Where the LoRA-weight grid goes (its cells beside it).
    #[arg(long, default_value = "demo-grid.png")]
    pub grid: PathBuf,
    /// Skip the LoRA-weight grid.
    #[arg(long)]
    pub no_grid: bool,
}

pub fn run(ctx: &Context, a: &DemoArgs, quiet: bool) -> Result<()> {
    let dir = std::env::temp_dir().join(format!("lorafuse-demo-{}", std::process::id()));
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    let r = run_in(ctx, a, quiet, &dir);
    let _ = std::fs::remove_dir_all(&dir);
    r
}

fn run_in(ctx: &Context, a: &DemoArgs, quiet: bool, dir: &std::path::Path) -> Result<()> {
    let lora = dir.join("demo_lora.safetensors");
    let model = match a.family {
        Family::Sd1 => {
            let model = dir.join("sd15-tiny.safetensors");
            std::fs::write(&model, TINY_MODEL).with_context(|| format!("writing {}", model.display()))?;
            std::fs::write(&lora, TINY_LORA).with_context(|| format!("writing {}", lora.display()))?;
            model
        }
        Family::Sdxl => {
            use lorafuse::bench::random_model::{sdxl_tiny_config, write_checkpoint, write_kohya_lora_with};
            let model = dir.join("sdxl-tiny.safetensors");
            let config = sdxl_tiny_config();
            write_checkpoint(&model, &config, StDType::F16, 0, &mut |_, _| {})
                .with_context(|| format!("writing {}", model.display()))?;
            write_kohya_lora_with(&lora, &config, 4, 1, StDType::F16, 0.25)
                .with_context(|| format!("writing {}", lora.display()))?;
            model
        }
    };
    let args = GenerateArgs {
        model,
        prompt: a.prompt.clone(),
        negative_prompt: "lowres, bad anatomy, worst quality".into(),
        steps: a.steps,
        cfg: 7.0,
        sampler: SamplerKind::DpmPP2MKarras,
        spacing: Spacing::Leading,
        seed: Some(a.seed),
        rng: RngKind::Philox,
        width: Some(a.size),
        height: Some(a.size),
        batch: 1,
        clip_skip: 1,
        size_cond: None,
        vae: None,
        prediction: None,
        zero_terminal_snr: None,
        cfg_rescale: 0.0,
        precision: Precision::Auto,
        output: a.output.clone(),
        noise_file: None,
        save_tensors: None,
        loras: Vec::new(),
        lora_dir: "loras".into(),
        max_loras: None,
        lora_mode: LoraMode::Auto,
        vae_tiling: false,
        vae_tile_size: None,
        vae_tile_overlap: None,
        from_png: None,
        init: Default::default(),
        taesd: Default::default(),
    };
    generate::run(ctx, &args, quiet)?;
    if a.no_grid {
        return Ok(());
    }
    // The same prompt and seed with the demo LoRA at 0 … 1.0, one model load.
    let mut gen = args.clone();
    gen.loras = vec![lora.display().to_string()];
    gen.output = a.grid.clone();
    gen.steps = a.steps.min(8);
    let g = GridArgs {
        gen,
        x: Some("lora-weight:demo_lora=0,0.3,0.5,0.8,1.0".into()),
        y: None,
        z: None,
        max_cells: 64,
        timings: false,
    };
    grid::run(ctx, &g, quiet)
}
