//! The `lorafuse` command line.

mod args;
mod demo;
mod env;
mod from_png;
mod generate;
mod grid;
mod inspect;
mod lora_bake;
mod lora_cmd;
mod lora_compare;
mod lora_extract;
mod lora_merge;
mod progress;
mod realtime;
mod serve;
mod taesd_args;
mod tokenize;
mod write_model;

use anyhow::{Context as _, Result};
use clap::parser::ValueSource;
use clap::{ArgMatches, CommandFactory, FromArgMatches, Parser, Subcommand};
use lorafuse::bench::kernels::{run, BenchOptions};
use lorafuse::gpu::Autotune;
use lorafuse::pipeline::request::Precision;
use lorafuse::weights::detect::Family;
use lorafuse::{Context, ContextOptions};

#[derive(Parser)]
#[command(name = "lorafuse", version, about = "Stable Diffusion with stacked LoRAs on any GPU (wgpu + WGSL)")]
struct Cli {
    /// Pick the adapter whose name contains this text (also: LORAFUSE_ADAPTER).
    #[arg(long, global = true)]
    adapter: Option<String>,
    /// Force f32 kernels even where the adapter has SHADER_F16.
    #[arg(long, global = true)]
    no_f16: bool,
    /// No progress bars.
    #[arg(long, short, global = true)]
    quiet: bool,
    /// Where compiled GPU pipelines are kept between runs (Vulkan), so later runs start faster
    /// [default: the user's cache folder + lorafuse, e.g. ~/.cache/lorafuse].
    #[arg(long, global = true, value_name = "DIR", env = "LORAFUSE_CACHE_DIR")]
    cache_dir: Option<std::path::PathBuf>,
    /// Keep no pipeline cache on disk.
    #[arg(long, global = true)]
    no_cache: bool,
    /// When kernels time their tile shapes at first use and keep the fastest (in the cache folder):
    /// on GPUs (gpu), everywhere (always) or never (off).
    #[arg(long, global = true, default_value = "gpu", env = "LORAFUSE_AUTOTUNE", value_parser = args::named::<Autotune>)]
    autotune: Autotune,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Run the whole pipeline on the bundled tiny model (random weights) and write demo.png.
    Demo(demo::DemoArgs),
    /// Generate images from a prompt with your own checkpoint.
    Generate(args::GenerateArgs),
    /// A comparison grid (A1111's X/Y/Z plot) over LoRA weights, LoRA sets, seeds, CFG, steps,
    /// samplers or prompt search/replace, with the model and LoRA files loaded once.
    Grid(grid::GridArgs),
    /// What the text encoder sees for a prompt: token ids after A1111 parsing, one weight per id,
    /// token strings and 75-token chunks (--raw: plain CLIP tokenization of the text).
    Tokenize(tokenize::TokenizeArgs),
    /// Show the GPU adapter lorafuse would use and what it supports; with -m, also the model's
    /// family and architecture as detected from its keys.
    Info {
        /// A checkpoint (single file or diffusers folder) to describe.
        #[arg(short = 'm', long)]
        model: Option<std::path::PathBuf>,
    },
    /// What a LoRA file is (kind, rank, alpha, targets, base model) and, with --model, how many
    /// of its modules match that checkpoint.
    Inspect(inspect::InspectArgs),
    /// An AUTOMATIC1111-compatible HTTP API (txt2img with LoRA tags, loras, samplers, progress,
    /// interrupt, options) over one loaded model, with per-tier LoRA quotas and a fair queue.
    Serve(serve::ServeArgs),
    /// LoRA tools: extract a LoRA from two checkpoints, resize one, bake LoRAs into a checkpoint.
    Lora {
        #[command(subcommand)]
        what: lora_cmd::LoraCmd,
    },
    /// Benchmarks.
    Bench {
        #[command(subcommand)]
        what: BenchWhat,
    },
}

#[derive(Subcommand)]
enum BenchWhat {
    /// Kernels at SD1.5 shapes, against the device's measured FMA peak.
    Kernels {
        /// Print one JSON object instead of a table.
        #[arg(long)]
        json: bool,
        /// Quarter-size shapes (a smoke run; numbers are not comparable).
        #[arg(long)]
        quick: bool,
        /// Time budget per kernel, in milliseconds.
        #[arg(long, default_value_t = 400.0)]
        budget_ms: f64,
    },
    /// Stacked LoRAs at full SD1.5 shapes: UNet step time with 0..12 LoRAs in merged and fused
    /// mode, and the time to switch a 6-LoRA set.
    Lora {
        /// Image side in pixels (the UNet runs at size/8).
        #[arg(long, default_value_t = 512)]
        size: usize,
        #[arg(long, default_value_t = 32)]
        rank: usize,
        /// LoRA counts to measure.
        #[arg(long, value_delimiter = ',', default_value = "0,1,3,6,12")]
        counts: Vec<usize>,
        /// f32, f16 or auto
        #[arg(long, default_value = "auto", value_parser = args::named::<Precision>)]
        precision: Precision,
        /// Time budget per measurement, in milliseconds.
        #[arg(long, default_value_t = 2000.0)]
        budget_ms: f64,
        #[arg(long)]
        json: bool,
    },
    /// One interactive image's latency at SD1.5 shapes (synthetic weights): LCM 4 steps, a
    /// 3-LoRA stack, TAESD decode; text encoding, each step, decode, and a LoRA weight change.
    Realtime(realtime::RealtimeArgs),
    /// Write a full-size SD1.5 single-file checkpoint with random weights (and a kohya LoRA).
    WriteSd15(write_model::WriteModelArgs),
    /// Write a full-size SDXL base single-file checkpoint with random weights (and a kohya LoRA):
    /// both text encoders (OpenCLIP's in its own layout), 6.94 GB in fp16.
    WriteSdxl(write_model::WriteModelArgs),
    /// One full-size SD1.5 or SDXL generation with synthetic weights: step time, VAE time, and
    /// peak memory per phase.
    Pipeline {
        /// sd15 or sdxl (SDXL base's sizes).
        #[arg(long, default_value = "sd15", value_parser = family)]
        family: Family,
        /// Image side in pixels.
        #[arg(long, default_value_t = 512)]
        size: usize,
        #[arg(long, default_value_t = 2)]
        steps: usize,
        /// f32, f16 or auto
        #[arg(long, default_value = "auto", value_parser = args::named::<Precision>)]
        precision: Precision,
        /// Also time every dispatch of one UNet step and one VAE decode (timestamp queries) and
        /// print where the time goes: GEMM and conv by shape, attention self/cross, norms,
        /// elementwise and copies, with FLOPs, bytes and the share of the FMA probe's peak.
        #[arg(long)]
        profile: bool,
        /// Decode in overlapping tiles (as `generate --vae-tiling`).
        #[arg(long)]
        vae_tiling: bool,
        /// Tile side in latent pixels [default: 64]; needs --vae-tiling.
        #[arg(long, value_name = "N")]
        vae_tile_size: Option<usize>,
        /// Tile overlap in latent pixels [default: 16]; needs --vae-tiling.
        #[arg(long, value_name = "N")]
        vae_tile_overlap: Option<usize>,
        #[arg(long)]
        json: bool,
    },
}

fn family(s: &str) -> std::result::Result<Family, String> {
    match s {
        "sd15" | "sd1" => Ok(Family::Sd1),
        "sdxl" => Ok(Family::Sdxl),
        _ => Err(format!("unknown model family {s:?} (expected sd15 or sdxl)")),
    }
}

fn context(cli: &Cli) -> Result<Context> {
    Context::new(&context_options(cli)).context("cannot start the GPU")
}

fn context_options(cli: &Cli) -> ContextOptions {
    let pipeline_cache_dir = if cli.no_cache {
        None
    } else {
        cli.cache_dir.clone().or_else(|| dirs::cache_dir().map(|d| d.join("lorafuse")))
    };
    ContextOptions { adapter: cli.adapter.clone(), disable_f16: cli.no_f16, pipeline_cache_dir, autotune: cli.autotune }
}

fn main() {
    env::quiet_vulkan_loader();
    // The server's request log (queued, done, refused, timings) is info; everything else warns only.
    env_logger::Builder::from_env(env_logger::Env::default().default_filter_or("warn,lorafuse::serve=info")).init();
    let matches = Cli::command().try_get_matches().unwrap_or_else(|e| exit_on_clap_error(e));
    let mut cli = Cli::from_arg_matches(&matches).unwrap_or_else(|e| e.exit());
    if let Err(e) = apply_from_png(&mut cli, &matches).and_then(|()| run_cli(&cli)) {
        eprintln!("error: {e:#}");
        std::process::exit(1);
    }
}

/// A value the library rejected (an unknown sampler, precision, …) gets the library's one-line
/// message and status 1, as every other error does; clap's own usage errors keep clap's format.
fn exit_on_clap_error(e: clap::Error) -> ! {
    use std::error::Error as _;
    if let Some(lib) = e.source().and_then(|s| s.downcast_ref::<lorafuse::Error>()) {
        eprintln!("error: {lib}");
        std::process::exit(1);
    }
    e.exit()
}

/// `--from-png`: the image's recorded settings fill every option of `generate`/`grid` that was
/// not given on the command line (clap records where each value came from); then `--preset`.
fn apply_from_png(cli: &mut Cli, matches: &ArgMatches) -> Result<()> {
    let gen = match &mut cli.cmd {
        Cmd::Generate(a) => a,
        Cmd::Grid(g) => &mut g.gen,
        _ => return Ok(()),
    };
    let Some((_, sub)) = matches.subcommand() else {
        return Ok(());
    };
    let given = |id: &str| sub.value_source(id) == Some(ValueSource::CommandLine);
    if let Some(png) = gen.from_png.clone() {
        from_png::apply(gen, &png, &given)?;
    }
    // After the image's settings: a preset given now outranks them, an explicit option it.
    gen.apply_preset(&given);
    Ok(())
}

fn run_cli(cli: &Cli) -> Result<()> {
    match &cli.cmd {
        Cmd::Demo(args) => demo::run(&context(cli)?, args, cli.quiet),
        Cmd::Generate(args) => generate::run(&context(cli)?, args, cli.quiet),
        Cmd::Grid(args) => grid::run(&context(cli)?, args, cli.quiet),
        Cmd::Tokenize(args) => tokenize::run(args),
        Cmd::Serve(args) => serve::run(context_options(cli), args),
        Cmd::Inspect(args) => inspect::run(args),
        Cmd::Lora { what } => lora_cmd::run(cli, what),
        Cmd::Info { model } => {
            if let Some(m) = model {
                describe_model(m)?;
            }
            let ctx = context(cli)?;
            let c = &ctx.caps;
            println!("adapter:        {} ({}, {})", c.adapter_name, c.backend, c.device_type);
            println!("driver:         {}", c.driver);
            println!("shader f16:     {}", c.shader_f16);
            println!("subgroups:      {} (size {}..{})", c.subgroups, c.subgroup_min_size, c.subgroup_max_size);
            println!("timestamps:     {}", c.timestamps);
            println!("max binding:    {} MiB", c.max_binding >> 20);
            println!("max buffer:     {} MiB", c.max_buffer >> 20);
            println!("workgroup mem:  {} KiB", c.max_workgroup_storage >> 10);
            Ok(())
        }
        Cmd::Bench { what: BenchWhat::Pipeline { .. } } => bench_pipeline(cli),
        Cmd::Bench { what: BenchWhat::Lora { size, rank, counts, precision, budget_ms, json } } => {
            bench_lora(cli, *size, *rank, counts, *precision, *budget_ms, *json)
        }
        Cmd::Bench { what: BenchWhat::Realtime(args) } => realtime::run(&context(cli)?, args, cli.quiet),
        Cmd::Bench { what: BenchWhat::WriteSd15(args) } => write_model::run(args, Family::Sd1, cli.quiet),
        Cmd::Bench { what: BenchWhat::WriteSdxl(args) } => write_model::run(args, Family::Sdxl, cli.quiet),
        Cmd::Bench { what: BenchWhat::Kernels { json, quick, budget_ms } } => {
            if *budget_ms <= 0.0 || budget_ms.is_nan() {
                anyhow::bail!("--budget-ms must be positive, got {budget_ms}");
            }
            let ctx = context(cli)?;
            let bar =
                progress::Progress::new(cli.quiet, "{spinner} [{bar:30}] {pos}/{len} {msg} ({elapsed})", "cases")?;
            bar.set_message("measuring FMA peak");
            bar.tick_steadily();
            let report = run(&ctx, &BenchOptions { quick: *quick, budget_ms: *budget_ms }, |done, total, name| {
                bar.set_length(total as u64);
                bar.set_message(name.to_string());
                bar.set_position(done as u64);
            })?;
            bar.finish();
            if *json {
                println!("{}", serde_json::to_string(&report)?);
            } else {
                print!("{}", report.table());
            }
            Ok(())
        }
    }
}

fn bench_lora(
    cli: &Cli,
    size: usize,
    rank: usize,
    counts: &[usize],
    precision: Precision,
    budget_ms: f64,
    json: bool,
) -> Result<()> {
    if size == 0 || !size.is_multiple_of(8) || rank == 0 {
        anyhow::bail!("--size must be a positive multiple of 8 and --rank positive");
    }
    let ctx = context(cli)?;
    let dir = std::env::temp_dir().join(format!("lorafuse-bench-lora-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let structure = dir.join("sd15-structure.safetensors");
    std::fs::write(&structure, demo::TINY_MODEL)?;
    let quiet = cli.quiet || json;
    let opts = lorafuse::bench::lora::LoraBenchOptions { size, rank, counts: counts.to_vec(), precision, budget_ms };
    let r = lorafuse::bench::lora::run(&ctx, &structure, &dir, &opts, |m| {
        if !quiet {
            eprintln!("{m}");
        }
    });
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    if json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    println!(
        "adapter: {} ({}), {}x{}, rank {}, {} modules per LoRA",
        r.adapter, r.precision, r.size, r.size, r.rank, r.adapted_modules
    );
    println!("UNet step with CFG, no LoRA: {:.1} ms", r.base_step_ms);
    println!(
        "{:<8} {:>6} {:>12} {:>8} {:>10} {:>10} {:>8} {:>8}",
        "mode", "loras", "step ms", "ratio", "flops-pred", "dispatches", "merged", "fused"
    );
    for s in &r.steps {
        println!(
            "{:<8} {:>6} {:>12.1} {:>8.3} {:>10.3} {:>10} {:>8} {:>8}",
            s.mode, s.loras, s.step_ms, s.ratio, s.predicted_ratio, s.dispatches, s.merged_weights, s.fused_layers
        );
    }
    for (mode, ms) in &r.switch6_ms {
        println!("switch a 6-LoRA set ({mode}): {ms:.0} ms");
    }
    Ok(())
}

/// `info -m`: what detection read from a checkpoint.
fn describe_model(path: &std::path::Path) -> anyhow::Result<()> {
    use anyhow::Context as _;
    let files = lorafuse::weights::ModelFiles::open(path).with_context(|| format!("reading {}", path.display()))?;
    let c = lorafuse::weights::detect(&files)?;
    let u = &c.unet;
    println!("model:          {} ({})", path.display(), c.family.name());
    println!(
        "unet:           widths {:?}, transformer depth down {:?} mid {} up {:?}, heads {:?}, context {}",
        u.block_out_channels,
        u.down_transformer_depth,
        u.mid_transformer_depth,
        u.up_transformer_depth,
        u.heads,
        u.cross_attention_dim
    );
    if let Some(a) = &u.addition {
        println!("added cond:     pooled {} + 6 size ids × {}", a.pooled_dim(), a.time_embed_dim);
    }
    let te = |t: &lorafuse::weights::ClipConfig| {
        format!(
            "{} layers × {} ({} heads, {})",
            t.num_hidden_layers, t.hidden_size, t.num_attention_heads, t.hidden_act
        )
    };
    println!("text encoder:   {}", te(&c.clip));
    if let Some(t2) = &c.clip2 {
        println!("text encoder 2: {}, projection {}", te(t2), t2.projection_dim.unwrap_or(0));
    }
    println!("vae:            widths {:?}, scaling factor {}", c.vae.block_out_channels, c.vae.scaling_factor);
    println!("prediction:     {}", if c.v_prediction { "v" } else { "epsilon" });
    Ok(())
}

fn bench_pipeline(cli: &Cli) -> Result<()> {
    let Cmd::Bench {
        what:
            BenchWhat::Pipeline {
                family,
                size,
                steps,
                precision,
                profile,
                vae_tiling,
                vae_tile_size,
                vae_tile_overlap,
                json,
            },
    } = &cli.cmd
    else {
        unreachable!("bench_pipeline runs only for `bench pipeline`");
    };
    if *size == 0 || !size.is_multiple_of(8) || *steps == 0 {
        anyhow::bail!("--size must be a positive multiple of 8 and --steps positive");
    }
    let vae_tiling = args::vae_tiling(*vae_tiling, *vae_tile_size, *vae_tile_overlap)?;
    let ctx = context(cli)?;
    let dir = std::env::temp_dir().join(format!("lorafuse-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let structure = dir.join("structure.safetensors");
    let written = match family {
        Family::Sd1 => std::fs::write(&structure, demo::TINY_MODEL).map_err(anyhow::Error::from),
        Family::Sdxl => lorafuse::bench::pipeline::write_sdxl_structure(&structure).map_err(anyhow::Error::from),
    };
    let quiet = cli.quiet || *json;
    let opts = lorafuse::bench::pipeline::PipelineBenchOptions {
        family: *family,
        size: *size,
        steps: *steps,
        precision: *precision,
        profile: *profile,
        vae_tiling,
    };
    let r = written.and_then(|()| {
        Ok(lorafuse::bench::pipeline::run(&ctx, &structure, &opts, |m| {
            if !quiet {
                eprintln!("{m}");
            }
        })?)
    });
    let _ = std::fs::remove_dir_all(&dir);
    let r = r?;
    if *json {
        println!("{}", serde_json::to_string(&r)?);
        return Ok(());
    }
    let tiling = r.vae_tiling.map_or("whole".to_string(), |t| format!("tiled {}/{}", t.tile, t.overlap));
    println!(
        "adapter: {} ({}), {} {}x{}, {} steps, VAE {tiling}",
        r.adapter, r.precision, r.family, r.size, r.size, r.steps
    );
    println!("load (synthetic weights + upload): {:.1} s", r.load_s);
    let ms: Vec<String> = r.step_ms.iter().map(|m| format!("{m:.0}")).collect();
    println!(
        "UNet step with CFG (ms): {}  ->  {:.3} TFLOP/s ({:.0} GFLOP per step)",
        ms.join(", "),
        r.step_tflops,
        r.step_gflop
    );
    println!("VAE decode: {:.0} ms", r.vae_ms);
    println!("GPU buffers held (pool peak): {:.0} MiB", r.pool_mib);
    let mib = |v: Option<f64>| v.map_or("-".to_string(), |v| format!("{v:.0}"));
    let note = if r.rss_peak_per_phase { "" } else { " (cumulative: the high-water mark could not be reset)" };
    println!("peak memory per phase, MiB{note}:");
    println!(
        "{:<10} {:>9} {:>10} {:>9} {:>10} {:>9}",
        "phase", "seconds", "RSS peak", "RSS end", "pool peak", "pool end"
    );
    for p in &r.phases {
        println!(
            "{:<10} {:>9.1} {:>10} {:>9} {:>10.0} {:>9.0}",
            p.phase,
            p.seconds,
            mib(p.rss_peak_mib),
            mib(p.rss_end_mib),
            p.pool_peak_mib,
            p.pool_end_mib
        );
    }
    match &r.profile {
        Some(p) => {
            println!("FMA probe: {:.1} GFLOP/s", p.peak_gflops);
            print!("{}", p.unet_step.table("UNet step with CFG", Some(p.peak_gflops)));
            print!("{}", p.vae_decode.table("VAE decode", Some(p.peak_gflops)));
        }
        None if *profile => println!("profile: this adapter has no timestamp queries"),
        None => {}
    }
    Ok(())
}
