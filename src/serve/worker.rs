//! The one thread that owns the GPU: it creates the device, loads the model once, then takes jobs
//! from the [`FairQueue`] one at a time, reporting live progress and honouring interrupts
//! between steps. HTTP handlers never touch the device; they only queue jobs and await replies.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use base64::Engine as _;
use tokio::sync::oneshot;

use super::a1111::Txt2ImgRequest;
use super::metrics::Metrics;
use super::preview::preview_png_base64;
use super::queue::FairQueue;
use crate::pipeline::image::{encode_png, to_rgb8, write_png};
use crate::pipeline::infotext::request_infotext;
use crate::pipeline::request::{Precision, Request};
use crate::pipeline::txt2img::{Pipeline, Progress, Watch};
use crate::schedulers::SamplerKind;
use crate::weights::detect::Family;
use crate::weights::hash::{model_hash, sha256_hex};
use crate::{Context, ContextOptions, Error, Result};

/// One txt2img request on its way to the GPU.
pub struct Job {
    pub id: u64,
    /// The fairness key (the caller's).
    pub key: String,
    pub api: Txt2ImgRequest,
    /// The library request, complete: seed drawn, LoRA folder set, sampler and clip skip chosen.
    pub req: Request,
    pub sampler: SamplerKind,
    /// Set by an interrupt or the request's timeout; checked before and between steps.
    pub cancel: Arc<AtomicBool>,
    pub reply: oneshot::Sender<Outcome>,
}

/// How a job ended.
pub enum Outcome {
    Done(Finished),
    /// Interrupted between steps (`POST /sdapi/v1/interrupt`) or timed out: the images decoded
    /// from where sampling got to, as A1111 answers (none when it stopped before sampling).
    Interrupted(Option<Finished>),
    /// Never ran: the server is shutting down.
    Rejected(String),
    Failed(Error),
}

/// A finished job's images (base64 PNGs, empty when `send_images` is false) and what A1111
/// reports about them.
pub struct Finished {
    pub images: Vec<String>,
    pub seeds: Vec<u64>,
    pub infotexts: Vec<String>,
    /// Stopped by an interrupt: the last image is what sampling had reached.
    pub interrupted: bool,
}

/// The loaded checkpoint as A1111's model list describes it.
#[derive(Clone, Debug)]
pub struct ModelInfo {
    pub path: PathBuf,
    /// File stem, as the CLI's infotext `Model` field.
    pub name: String,
    /// A1111's 10-digit `Model hash` (empty for a diffusers folder, as in the CLI).
    pub hash: String,
    pub sha256: String,
}

impl ModelInfo {
    /// A1111's checkpoint title: `name.safetensors [hash]`.
    pub fn title(&self) -> String {
        let file = self.path.file_name().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        if self.hash.is_empty() {
            file
        } else {
            format!("{file} [{}]", self.hash)
        }
    }

    fn of(path: &Path) -> Result<ModelInfo> {
        let name = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let (hash, sha256) =
            if path.is_file() { (model_hash(path)?, sha256_hex(path, 0)?) } else { (String::new(), String::new()) };
        Ok(ModelInfo { path: path.to_path_buf(), name, hash, sha256 })
    }
}

/// The running job, as `GET /sdapi/v1/progress` reports it.
#[derive(Clone, Debug)]
pub struct Running {
    pub id: u64,
    /// Whose job it is: only that key may interrupt it.
    pub key: String,
    pub started: Instant,
    pub image: usize,
    pub images: usize,
    pub step: usize,
    pub steps: usize,
    pub cancel: Arc<AtomicBool>,
    /// Set with `cancel` by `POST /interrupt` (not by a timeout): the answer then carries the
    /// image decoded from where sampling got to.
    pub interrupted_by_user: Arc<AtomicBool>,
}

impl Running {
    /// Fraction of the job done, 0..1.
    pub fn fraction(&self) -> f64 {
        if self.images == 0 || self.steps == 0 {
            return 0.0;
        }
        ((self.image as f64 + self.step as f64 / self.steps as f64) / self.images as f64).clamp(0.0, 1.0)
    }
}

/// A preview is made only while someone asked for one this recently, so sampling pays for the
/// readback only while a client watches.
const PREVIEW_WANTED_FOR: Duration = Duration::from_secs(5);

/// What the worker is doing now, shared with the handlers.
#[derive(Default)]
pub struct Live {
    running: Mutex<Option<Running>>,
    /// The running job's latest preview (base64 PNG); `None` between jobs.
    preview: Mutex<Option<String>>,
    preview_asked: Mutex<Option<Instant>>,
}

impl Live {
    fn lock(&self) -> MutexGuard<'_, Option<Running>> {
        self.running.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn snapshot(&self) -> Option<Running> {
        self.lock().clone()
    }

    /// The running job's latest preview, and a note that previews are wanted.
    pub fn take_preview_interest(&self) -> Option<String> {
        *self.preview_asked.lock().unwrap_or_else(|e| e.into_inner()) = Some(Instant::now());
        self.preview.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    fn preview_wanted(&self) -> bool {
        self.preview_asked.lock().unwrap_or_else(|e| e.into_inner()).is_some_and(|t| t.elapsed() < PREVIEW_WANTED_FOR)
    }

    fn set_preview(&self, p: Option<String>) {
        *self.preview.lock().unwrap_or_else(|e| e.into_inner()) = p;
    }

    /// Ask `key`'s running job to stop at its next step; `false` when none of its jobs runs.
    pub fn interrupt(&self, key: &str) -> bool {
        match self.lock().as_ref().filter(|r| r.key == key) {
            Some(r) => {
                r.interrupted_by_user.store(true, Ordering::SeqCst);
                r.cancel.store(true, Ordering::SeqCst);
                true
            }
            None => false,
        }
    }

    fn update(&self, f: impl FnOnce(&mut Running)) {
        if let Some(r) = self.lock().as_mut() {
            f(r);
        }
    }
}

/// What the worker needs to start.
pub struct WorkerSetup {
    pub context: ContextOptions,
    pub model: PathBuf,
    pub precision: Precision,
    /// Where `save_images` writes.
    pub outdir: PathBuf,
    pub lora_cache_bytes: u64,
}

/// Start the worker: device and model are ready when this returns `Ok`.
pub fn spawn(
    setup: WorkerSetup,
    queue: Arc<FairQueue<Job>>,
    live: Arc<Live>,
    metrics: Arc<Metrics>,
) -> Result<(std::thread::JoinHandle<()>, ModelInfo)> {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel::<Result<ModelInfo>>();
    let handle = std::thread::Builder::new().name("lorafuse-gpu".into()).spawn(move || {
        let loaded = (|| -> Result<(Context, Pipeline, ModelInfo)> {
            let ctx = Context::new(&setup.context)?;
            let t0 = Instant::now();
            let pipe = Pipeline::load(&ctx, &setup.model, setup.precision)?;
            pipe.set_lora_cache_budget(setup.lora_cache_bytes);
            log::info!("loaded {} in {:.1}s", setup.model.display(), t0.elapsed().as_secs_f64());
            Ok((ctx, pipe, ModelInfo::of(&setup.model)?))
        })();
        let (ctx, pipe, model) = match loaded {
            Ok(l) => l,
            Err(e) => {
                let _ = ready_tx.send(Err(e));
                return;
            }
        };
        let _ = ready_tx.send(Ok(model.clone()));
        let w = Worker { ctx: &ctx, pipe: &pipe, model: &model, outdir: &setup.outdir, live: &live, metrics: &metrics };
        w.account();
        while let Some(job) = queue.pop() {
            w.serve_job(job);
        }
        log::info!("GPU worker stopped");
    })?;
    match ready_rx.recv() {
        Ok(Ok(model)) => Ok((handle, model)),
        Ok(Err(e)) => {
            let _ = handle.join();
            Err(e)
        }
        Err(_) => {
            let _ = handle.join();
            Err(Error::Device("the GPU worker stopped while loading the model".into()))
        }
    }
}

/// The worker's loaded state, borrowed for one job at a time.
struct Worker<'a> {
    ctx: &'a Context,
    pipe: &'a Pipeline,
    model: &'a ModelInfo,
    outdir: &'a Path,
    live: &'a Live,
    metrics: &'a Metrics,
}

impl Worker<'_> {
    /// Publish what only this thread can read (GPU pool, LoRA cache) for `/metrics`.
    fn account(&self) {
        let m = self.metrics;
        m.gpu_pool_bytes.store(self.ctx.pool_bytes(), Ordering::Relaxed);
        m.gpu_pool_peak_bytes.store(self.ctx.pool_peak_bytes(), Ordering::Relaxed);
        *m.lora.lock().unwrap_or_else(|e| e.into_inner()) = self.pipe.lora_cache_stats();
    }

    fn serve_job(&self, job: Job) {
        let by_user = Arc::new(AtomicBool::new(false));
        if job.cancel.load(Ordering::SeqCst) {
            self.metrics.job("interrupted");
            let _ = job.reply.send(Outcome::Interrupted(None));
            return;
        }
        *self.live.lock() = Some(Running {
            id: job.id,
            key: job.key.clone(),
            started: Instant::now(),
            image: 0,
            images: job.req.batch,
            step: 0,
            steps: job.req.steps,
            cancel: job.cancel.clone(),
            interrupted_by_user: by_user.clone(),
        });
        self.live.set_preview(None);
        let t0 = Instant::now();
        // A bug must not take the only GPU thread down with it: the job fails, the server goes on.
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| self.run_job(&job, &by_user)));
        *self.live.lock() = None;
        self.live.set_preview(None);
        let outcome = match run {
            Ok(Ok(f)) if f.interrupted => Outcome::Interrupted(Some(f)),
            Ok(Ok(f)) => Outcome::Done(f),
            Ok(Err(Error::Cancelled(_))) => Outcome::Interrupted(None),
            Ok(Err(e)) => Outcome::Failed(e),
            Err(_) => Outcome::Failed(Error::invalid("serve", "the generation panicked (a bug); the server goes on")),
        };
        let status = match &outcome {
            Outcome::Done(_) => "done",
            Outcome::Interrupted(_) => "interrupted",
            Outcome::Rejected(_) => "rejected",
            Outcome::Failed(_) => "failed",
        };
        self.metrics.job(status);
        // Before the reply, so a client that reads /metrics after its answer sees its job in it.
        self.account();
        log::info!("job {} ({}): {status} in {:.2}s", job.id, job.key, t0.elapsed().as_secs_f64());
        let _ = job.reply.send(outcome);
    }

    fn run_job(&self, job: &Job, by_user: &AtomicBool) -> Result<Finished> {
        let (pipe, live, metrics) = (self.pipe, self.live, self.metrics);
        // The model file's markers filled in, as the CLI does, so both write the same infotext.
        let req = pipe.with_model_defaults(&job.req);
        let cancel = job.cancel.clone();
        let sdxl = pipe.family() == Family::Sdxl;
        let mut last_step = Instant::now();
        let mut wants = |_step: usize| live.preview_wanted();
        let mut on_latents = |latents: &[f32], shape: [usize; 3]| {
            let t = Instant::now();
            match preview_png_base64(latents, shape, sdxl) {
                Ok(p) => live.set_preview(p),
                Err(e) => log::warn!("preview: {e}"),
            }
            metrics.previews.fetch_add(1, Ordering::Relaxed);
            metrics.preview_seconds_micros.fetch_add(t.elapsed().as_micros() as u64, Ordering::Relaxed);
        };
        let mut watch = Watch {
            cancelled: &move || cancel.load(Ordering::SeqCst),
            wants_latents: &mut wants,
            on_latents: &mut on_latents,
            // A1111 answers an interrupt with the image sampled so far; a timed-out or abandoned
            // request has no one to answer, so it stops at once.
            decode_on_cancel: &|| by_user.load(Ordering::SeqCst),
        };
        let out = pipe.generate_watched(
            self.ctx,
            &req,
            &mut |p| match p {
                Progress::Image { image, images } => {
                    last_step = Instant::now();
                    live.update(|r| {
                        r.image = image;
                        r.images = images;
                        r.step = 0;
                    })
                }
                Progress::Step { step, steps } => {
                    metrics.step(last_step.elapsed().as_secs_f64());
                    last_step = Instant::now();
                    live.update(|r| {
                        r.step = step;
                        r.steps = steps;
                    })
                }
                Progress::Decode | Progress::Compile { .. } => {}
            },
            &mut watch,
        )?;
        let mut finished = Finished {
            images: Vec::new(),
            seeds: out.seeds.clone(),
            infotexts: Vec::new(),
            interrupted: out.interrupted,
        };
        let stamp = super::a1111::job_timestamp();
        for (i, img) in out.images.iter().enumerate() {
            let info = request_infotext(&req, out.seeds[i], &self.model.name, &self.model.hash, &out.loras).render();
            // Hires fix's images are larger than the request's size: the image's own.
            let (height, width) = (img.shape[1], img.shape[2]);
            let rgb = to_rgb8(&img.data, height, width)?;
            if job.api.save_images {
                std::fs::create_dir_all(self.outdir)?;
                let path = self.outdir.join(format!("{stamp}-{}-{i}-{}.png", job.id, out.seeds[i]));
                write_png(&path, width, height, &rgb, &info)?;
            }
            if job.api.send_images {
                let png = encode_png(width, height, &rgb, &info)?;
                finished.images.push(base64::engine::general_purpose::STANDARD.encode(png));
            }
            finished.infotexts.push(info);
        }
        Ok(finished)
    }
}
