//! One generation request through the server, whichever route it came by (txt2img or img2img):
//! the policy's checks, the queue, the wait for the GPU worker and A1111's answer.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use axum::http::StatusCode;
use axum::Json;
use serde_json::Value;
use tokio::sync::oneshot;

use super::a1111::{InfoFields, Txt2ImgRequest, Txt2ImgResponse};
use super::api_error::ApiError;
use super::policy::{Ask, Caller};
use super::queue::PushError;
use super::routes::{shutting_down, AppState, Shared};
use super::worker::{Job, Outcome};
use crate::pipeline::init::InitImage;
use crate::pipeline::request::Request;

type ApiResult<T> = Result<T, ApiError>;

/// Gives the caller's concurrent-job slot back, and cancels the job if the client went away
/// before it was answered (the handler future is dropped then).
struct InFlight<'a> {
    state: &'a AppState,
    key: String,
    cancel: Arc<AtomicBool>,
    answered: bool,
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        if !self.answered {
            self.cancel.store(true, Ordering::SeqCst);
        }
        self.state.meter.release(&self.key);
    }
}

/// A1111's seed: -1 draws one (below 2³², as A1111 and the CLI do).
pub(super) fn seed(s: i64) -> ApiResult<u64> {
    match s {
        -1 => {
            let t =
                std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0);
            Ok((t as u64 ^ (t >> 64) as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32)
        }
        s if s >= 0 => Ok(s as u64),
        s => Err(ApiError::bad_request(format!("seed {s} is not valid (-1 for a random seed, or ≥ 0)"))),
    }
}

/// A1111's `disable_extra_networks`: the tags are still taken out of the prompt, but no LoRA
/// is applied.
fn without_tags_if(disable: bool, prompt: &str) -> ApiResult<String> {
    Ok(if disable { crate::lora::extract_extra_networks(prompt)?.text } else { prompt.to_string() })
}

/// Refuses a caller over its request rate (429) or a server that is shutting down (503) before
/// the body is even read.
pub(super) fn admit(state: &AppState, caller: &Caller) -> ApiResult<()> {
    if state.shutting_down.load(Ordering::SeqCst) {
        return Err(shutting_down());
    }
    state.meter.admit_rate(caller).map_err(|wait| {
        state.metrics.job("refused");
        ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "RateLimited",
            format!(
                "more than the {} tier's requests_per_minute = {}; retry in {wait} s",
                caller.tier, caller.limits.requests_per_minute
            ),
        )
        .limit("requests_per_minute")
        .retry_after(wait)
    })?;
    Ok(())
}

/// Checks, queues and runs one request; `init` is img2img's start, `parameters` the body as
/// A1111 echoes it back.
pub(super) async fn submit(
    state: Shared,
    caller: Caller,
    api: Txt2ImgRequest,
    init: Option<InitImage>,
    parameters: Value,
    route: &str,
) -> ApiResult<Json<Txt2ImgResponse>> {
    for w in api.ignored() {
        log::warn!("{route} ({}): {w}", caller.key);
    }
    let sampler = api.sampler()?;
    let clip_skip = match api.clip_skip_override()? {
        Some(c) => c,
        None => *state.clip_skip.lock().unwrap_or_else(|e| e.into_inner()),
    };
    let images = api.batch_size.checked_mul(api.n_iter).filter(|&n| n > 0).ok_or_else(|| {
        ApiError::bad_request(format!(
            "batch_size × n_iter = {} × {} is not a number of images (each must be at least 1)",
            api.batch_size, api.n_iter
        ))
    })?;
    // The policy first: a request over its tier's size or step limits is a quota refusal (403)
    // whatever else is wrong with it.
    let mut ask = Ask { loras: 0, width: api.width, height: api.height, steps: api.steps, images };
    let quota = |caller: &Caller, ask: &Ask| {
        caller.check(ask).map_err(|r| ApiError::new(StatusCode::FORBIDDEN, "QuotaExceeded", r.message).limit(r.limit))
    };
    quota(&caller, &ask)?;
    let denoising_strength = match (&init, api.enable_hr) {
        (Some(i), _) => Some(i.strength),
        (None, true) => Some(api.denoising_strength.unwrap_or(0.7)),
        (None, false) => None,
    };
    let req = Request {
        prompt: without_tags_if(api.disable_extra_networks, &api.prompt)?,
        negative_prompt: without_tags_if(api.disable_extra_networks, &api.negative_prompt)?,
        steps: api.steps,
        cfg: api.cfg_scale,
        sampler,
        seed: seed(api.seed)?,
        width: api.width,
        height: api.height,
        batch: images,
        clip_skip,
        lora_dir: state.lora_dir.clone(),
        hires: if init.is_none() { api.hires()? } else { None },
        init,
        ..Request::new("")
    };
    req.validate()?;
    // Tags resolve inside the LoRA folder only (no `..`, absolute paths or escaping symlinks).
    ask.loras = req.resolve()?.loras.len();
    quota(&caller, &ask)?;
    if !state.meter.acquire(&caller) {
        state.metrics.job("refused");
        return Err(ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "TooManyJobs",
            format!(
                "the {} tier's concurrent_jobs = {} are all queued or running",
                caller.tier, caller.limits.concurrent_jobs
            ),
        )
        .limit("concurrent_jobs")
        .retry_after(1));
    }
    // An interrupted job still reports the seeds it was given, as A1111 does.
    let planned: Vec<u64> = (0..images as u64).map(|i| req.seed.wrapping_add(i)).collect();
    let cancel = Arc::new(AtomicBool::new(false));
    let mut in_flight = InFlight { state: &state, key: caller.key.clone(), cancel: cancel.clone(), answered: false };
    let (tx, rx) = oneshot::channel();
    let id = state.next_id.fetch_add(1, Ordering::SeqCst);
    let job = Job { id, key: caller.key.clone(), api: api.clone(), req, sampler, cancel: cancel.clone(), reply: tx };
    state.queue.push(&caller.key, job).map_err(|e| match e {
        PushError::Full { capacity } => {
            state.metrics.job("refused");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "QueueFull",
                format!("the queue is full ({capacity} jobs waiting); retry later"),
            )
            .limit("queue_size")
            .retry_after(5)
        }
        PushError::Closed => shutting_down(),
    })?;
    log::info!("job {id} ({}, tier {}): queued, {} waiting", caller.key, caller.tier, state.queue.len());
    let timeout = Duration::from_secs_f64(state.config.server.request_timeout_s);
    let outcome = match tokio::time::timeout(timeout, rx).await {
        Ok(Ok(o)) => o,
        Ok(Err(_)) => {
            return Err(ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ServerError", "the GPU worker stopped"))
        }
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::GATEWAY_TIMEOUT,
                "Timeout",
                format!("not finished within request_timeout_s = {}; cancelled", state.config.server.request_timeout_s),
            )
            .limit("request_timeout_s"))
        }
    };
    in_flight.answered = true;
    let (images, seeds, infotexts, interrupted) = match outcome {
        Outcome::Done(f) => (f.images, f.seeds, f.infotexts, false),
        // A1111 answers an interrupt with what was sampled so far, and the seeds it was given.
        Outcome::Interrupted(Some(f)) => (f.images, planned, f.infotexts, true),
        Outcome::Interrupted(None) => (Vec::new(), planned, Vec::new(), true),
        Outcome::Rejected(why) => return Err(ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ShuttingDown", why)),
        Outcome::Failed(e) => return Err(e.into()),
    };
    let info = InfoFields {
        req: &api,
        denoising_strength,
        sampler,
        clip_skip,
        seeds: &seeds,
        infotexts: &infotexts,
        model_name: &state.model.name,
        model_hash: &state.model.hash,
        interrupted,
    }
    .to_json();
    Ok(Json(Txt2ImgResponse { images, parameters, info: info.to_string() }))
}
