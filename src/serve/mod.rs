//! `lorafuse serve`: an AUTOMATIC1111-compatible HTTP API over one loaded model.
//!
//! - [`a1111`]: request/response JSON with A1111's field names and defaults.
//! - [`routes`]: the axum handlers; [`api_error`]: A1111-style JSON errors.
//! - [`policy`]: API keys → tiers → limits (TOML), rate and concurrency meters.
//! - [`queue`]: the bounded, per-key round-robin job queue.
//! - [`worker`]: the one thread that owns the GPU and the [`crate::pipeline::txt2img::Pipeline`].
//! - [`loras`]: the LoRA folder's index; [`openapi`]: `/openapi.json`.
//! - [`preview`]: live previews from latents; [`metrics`]: `/metrics` for Prometheus.
//!
//! The tokio runtime only parses, checks and waits; generation runs on the worker thread, so a
//! long job never stalls `progress` or `interrupt`.

pub mod a1111;
pub mod api_error;
pub mod img2img;
pub mod loras;
pub mod metrics;
pub mod openapi;
pub mod policy;
pub mod preview;
pub mod queue;
pub mod routes;
pub mod submit;
pub mod worker;

use std::io::Write as _;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};

use crate::pipeline::request::Precision;
use crate::{ContextOptions, Error, Result};
use policy::Config;
use queue::FairQueue;
use routes::AppState;
use worker::{Live, Outcome, WorkerSetup};

/// What `lorafuse serve` is started with.
pub struct ServeOptions {
    pub model: PathBuf,
    pub lora_dir: PathBuf,
    pub host: String,
    /// 0 picks a free port (printed on stdout).
    pub port: u16,
    pub config: Config,
    pub context: ContextOptions,
    pub precision: Precision,
    /// Where `save_images` writes.
    pub outdir: PathBuf,
}

/// Load the model, serve until SIGINT/SIGTERM, then finish the running job, answer the queued
/// ones with 503 and return. Prints `listening on http://ADDR` on stdout once requests are taken.
pub fn run(opts: ServeOptions) -> Result<()> {
    let queue = Arc::new(FairQueue::new(opts.config.server.queue_size));
    let live = Arc::new(Live::default());
    let metrics = Arc::new(metrics::Metrics::default());
    let setup = WorkerSetup {
        context: opts.context,
        model: opts.model.clone(),
        precision: opts.precision,
        outdir: opts.outdir.clone(),
        // `as` saturates: a negative or NaN budget keeps nothing beyond the files in use.
        lora_cache_bytes: (opts.config.server.lora_cache_mib * 1_048_576.0) as u64,
    };
    let (worker, model) = worker::spawn(setup, queue.clone(), live.clone(), metrics.clone())?;
    let loras = loras::scan(&opts.lora_dir)?;
    log::info!("{} LoRAs in {}", loras.len(), opts.lora_dir.display());
    let state = Arc::new(AppState {
        config: opts.config,
        queue: queue.clone(),
        live,
        metrics,
        meter: policy::Meter::default(),
        model,
        lora_dir: opts.lora_dir,
        loras: RwLock::new(loras),
        clip_skip: Mutex::new(1),
        outdir: opts.outdir,
        next_id: AtomicU64::new(1),
        shutting_down: AtomicBool::new(false),
    });
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build()?;
    let served = runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind((opts.host.as_str(), opts.port)).await?;
        let addr = listener.local_addr()?;
        let mut out = std::io::stdout();
        let _ = writeln!(out, "lorafuse serve: listening on http://{addr}");
        let _ = out.flush();
        axum::serve(listener, routes::router(state.clone()))
            .with_graceful_shutdown(shutdown_signal(state.clone()))
            .await
    });
    // Whatever ended the server, nothing may stay queued or wait for a worker that is gone.
    reject_queued(&state);
    worker.join().map_err(|_| Error::Device("the GPU worker panicked".into()))?;
    served.map_err(Error::Io)
}

async fn shutdown_signal(state: Arc<AppState>) {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let term = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    log::warn!("shutting down: finishing the running job, rejecting {} queued", state.queue.len());
    reject_queued(&state);
}

fn reject_queued(state: &AppState) {
    state.shutting_down.store(true, Ordering::SeqCst);
    for job in state.queue.close() {
        state.metrics.job("rejected");
        let _ = job.reply.send(Outcome::Rejected("the server is shutting down; the job was not run".into()));
    }
}
