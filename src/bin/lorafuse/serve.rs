//! `lorafuse serve`: the command-line face of `lorafuse::serve` (options, config file, logs).

use std::path::PathBuf;

use anyhow::{Context as _, Result};
use clap::Args;
use lorafuse::pipeline::request::Precision;
use lorafuse::serve::policy::Config;
use lorafuse::serve::{run as serve, ServeOptions};
use lorafuse::ContextOptions;

use crate::args::named;

#[derive(Args, Clone, Debug)]
pub struct ServeArgs {
    /// Checkpoint: a single .safetensors file or a diffusers folder (loaded once).
    #[arg(short = 'm', long)]
    pub model: PathBuf,
    /// Folder that `<lora:NAME:W>` tags and /sdapi/v1/loras read.
    #[arg(long, default_value = "loras")]
    pub lora_dir: PathBuf,
    /// Address to listen on; the default takes local connections only.
    #[arg(long, default_value = "127.0.0.1")]
    pub host: String,
    /// Port (0: a free one, printed on start).
    #[arg(long, default_value_t = 7860)]
    pub port: u16,
    /// TOML policy: API keys, tiers and their limits, queue size, timeout (built-in free/pro tiers without it).
    #[arg(long)]
    pub config: Option<PathBuf>,
    /// Where `save_images: true` writes PNGs.
    #[arg(long, default_value = "outputs/txt2img-images")]
    pub outdir: PathBuf,
    /// f32, f16 or auto
    #[arg(long, default_value = "auto", value_parser = named::<Precision>)]
    pub precision: Precision,
}

pub fn run(context: ContextOptions, a: &ServeArgs) -> Result<()> {
    let config = match &a.config {
        Some(p) => Config::load(p)?,
        None => Config::default(),
    };
    if !a.model.exists() {
        anyhow::bail!("model {} does not exist", a.model.display());
    }
    eprintln!("loading {} …", a.model.display());
    serve(ServeOptions {
        model: a.model.clone(),
        lora_dir: a.lora_dir.clone(),
        host: a.host.clone(),
        port: a.port,
        config,
        context,
        precision: a.precision,
        outdir: a.outdir.clone(),
    })
    .context("lorafuse serve")
}
