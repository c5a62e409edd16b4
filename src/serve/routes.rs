//! The HTTP routes: A1111's `/sdapi/v1/*` subset and `/openapi.json`. Handlers check the caller,
//! the body and the policy, then hand the job to the GPU worker through the queue and await its
//! reply; nothing here blocks on the device.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use axum::body::Body;
use axum::extract::{RawQuery, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::Html;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{json, Value};

use super::a1111::{self, clip_skip_value, Txt2ImgRequest, Txt2ImgResponse};
use super::api_error::ApiError;
use super::img2img::Img2ImgRequest;
use super::loras::LoraEntry;
use super::metrics::Metrics;
use super::policy::{Caller, Config, Meter};
use super::queue::FairQueue;
use super::worker::{Job, Live, ModelInfo};

/// Everything the handlers share.
pub struct AppState {
    pub config: Config,
    pub queue: Arc<FairQueue<Job>>,
    pub live: Arc<Live>,
    pub metrics: Arc<Metrics>,
    pub meter: Meter,
    pub model: ModelInfo,
    pub lora_dir: PathBuf,
    pub loras: RwLock<Vec<LoraEntry>>,
    /// A1111's `CLIP_stop_at_last_layers` option: the clip skip of requests that do not override it.
    pub clip_skip: Mutex<usize>,
    pub outdir: PathBuf,
    pub next_id: AtomicU64,
    pub shutting_down: AtomicBool,
}

pub(super) type Shared = Arc<AppState>;
type ApiResult<T> = Result<T, ApiError>;

pub fn router(state: Shared) -> Router {
    Router::new()
        .route("/sdapi/v1/txt2img", post(txt2img))
        .route("/sdapi/v1/img2img", post(img2img))
        .route("/sdapi/v1/loras", get(loras))
        .route("/sdapi/v1/refresh-loras", post(refresh_loras))
        .route("/sdapi/v1/sd-models", get(sd_models))
        .route("/sdapi/v1/samplers", get(|| async { Json(a1111::samplers()) }))
        .route("/sdapi/v1/schedulers", get(|| async { Json(a1111::schedulers()) }))
        .route("/sdapi/v1/progress", get(progress))
        .route("/sdapi/v1/interrupt", post(interrupt))
        .route("/sdapi/v1/options", get(get_options).post(set_options))
        .route("/openapi.json", get(|| async { Json(super::openapi::document()) }))
        .route("/lorafuse/v1/tier", get(tier))
        .route("/metrics", get(metrics))
        .route("/", get(|| async { Html(include_str!("web/index.html")) }))
        .fallback(|| async { ApiError::new(StatusCode::NOT_FOUND, "NotFound", "no such route; see /openapi.json") })
        .with_state(state)
}

fn caller(state: &AppState, headers: &HeaderMap) -> ApiResult<Caller> {
    let auth = match headers.get(header::AUTHORIZATION) {
        None => None,
        Some(v) => Some(v.to_str().map_err(|_| unauthorized("the Authorization header is not text"))?),
    };
    state.config.caller(auth).map_err(unauthorized)
}

fn unauthorized(detail: impl Into<String>) -> ApiError {
    ApiError::new(StatusCode::UNAUTHORIZED, "Unauthorized", detail)
}

/// The body as JSON of type `T`, read within `body_timeout_s` (a client trickling bytes, a
/// slow-loris, would otherwise hold a connection and its memory as long as it likes) and
/// `max_body_bytes`; every failure is a JSON 4xx (A1111/FastAPI answer 422 for malformed and
/// mistyped bodies alike).
async fn json_body<T: serde::de::DeserializeOwned>(state: &AppState, body: Body) -> ApiResult<T> {
    let limit = state.config.server.max_body_bytes;
    let wait = state.config.server.body_timeout_s;
    let bytes = match tokio::time::timeout(Duration::from_secs_f64(wait), axum::body::to_bytes(body, limit)).await {
        Err(_) => {
            return Err(ApiError::new(
                StatusCode::REQUEST_TIMEOUT,
                "RequestTimeout",
                format!("the request body did not arrive within body_timeout_s = {wait}"),
            )
            .limit("body_timeout_s"))
        }
        Ok(Err(e)) => {
            // `to_bytes` reports an over-long body through a `LengthLimitError` in its chain.
            let mut source: Option<&(dyn std::error::Error + 'static)> = Some(&e);
            let mut too_long = false;
            while let Some(s) = source {
                too_long |= s.is::<http_body_util::LengthLimitError>();
                source = s.source();
            }
            return Err(if too_long {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    "PayloadTooLarge",
                    format!("the request body is over the length limit max_body_bytes = {limit}"),
                )
                .limit("max_body_bytes")
            } else {
                ApiError::bad_request(format!("cannot read the request body: {e}"))
            });
        }
        Ok(Ok(b)) => b,
    };
    serde_json::from_slice(&bytes)
        .map_err(|e| ApiError::new(StatusCode::UNPROCESSABLE_ENTITY, "ValidationError", e.to_string()))
}

async fn txt2img(State(state): State<Shared>, headers: HeaderMap, body: Body) -> ApiResult<Json<Txt2ImgResponse>> {
    let caller = caller(&state, &headers)?;
    super::submit::admit(&state, &caller)?;
    let api: Txt2ImgRequest = json_body(&state, body).await?;
    let parameters = serde_json::to_value(&api).unwrap_or(Value::Null);
    super::submit::submit(state, caller, api, None, parameters, "txt2img").await
}

async fn img2img(State(state): State<Shared>, headers: HeaderMap, body: Body) -> ApiResult<Json<Txt2ImgResponse>> {
    let caller = caller(&state, &headers)?;
    super::submit::admit(&state, &caller)?;
    let api: Img2ImgRequest = json_body(&state, body).await?;
    let parameters = serde_json::to_value(&api).unwrap_or(Value::Null);
    // Decoding and resizing the images is CPU work of a few milliseconds per megapixel.
    let init = api.init()?;
    super::submit::submit(state, caller, api.base, Some(init), parameters, "img2img").await
}

pub fn shutting_down() -> ApiError {
    ApiError::new(StatusCode::SERVICE_UNAVAILABLE, "ShuttingDown", "the server is shutting down; the job was not run")
        .retry_after(30)
}

/// The caller's tier and its limits (the web page shows them; not an A1111 route).
async fn tier(State(state): State<Shared>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let c = caller(&state, &headers)?;
    Ok(Json(json!({"tier": c.tier, "limits": c.limits})))
}

async fn loras(State(state): State<Shared>) -> Json<Vec<LoraEntry>> {
    Json(state.loras.read().unwrap_or_else(|e| e.into_inner()).clone())
}

async fn refresh_loras(State(state): State<Shared>) -> ApiResult<Json<Value>> {
    let dir = state.lora_dir.clone();
    let found = tokio::task::spawn_blocking(move || super::loras::scan(&dir))
        .await
        .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "ServerError", e.to_string()))??;
    *state.loras.write().unwrap_or_else(|e| e.into_inner()) = found;
    Ok(Json(Value::Null))
}

async fn sd_models(State(state): State<Shared>) -> Json<Value> {
    let m = &state.model;
    Json(json!([{
        "title": m.title(),
        "model_name": m.name,
        "hash": if m.hash.is_empty() { Value::Null } else { json!(m.hash) },
        "sha256": if m.sha256.is_empty() { Value::Null } else { json!(m.sha256) },
        "filename": m.path.display().to_string(),
        "config": null,
    }]))
}

/// A1111's `skip_current_image` query flag (pydantic reads true/1/yes/on, any case).
fn skips_image(query: Option<&str>) -> bool {
    query.unwrap_or_default().split('&').any(|kv| match kv.split_once('=') {
        Some(("skip_current_image", v)) => matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes" | "on"),
        _ => false,
    })
}

async fn progress(State(state): State<Shared>, RawQuery(query): RawQuery) -> Json<Value> {
    // Asking is what turns previews on (the worker reads latents back only while someone looks).
    let current_image = if skips_image(query.as_deref()) { None } else { state.live.take_preview_interest() };
    let running = state.live.snapshot();
    let waiting = state.queue.len();
    let (fraction, eta, interrupted, job_no, step, steps, job) = match &running {
        Some(r) => {
            let f = r.fraction();
            let elapsed = r.started.elapsed().as_secs_f64();
            let eta = if f > 0.0 { elapsed / f - elapsed } else { 0.0 };
            (f, eta, r.cancel.load(Ordering::SeqCst), r.image, r.step, r.steps, format!("job {}", r.id))
        }
        None => (0.0, 0.0, false, 0, 0, 0, String::new()),
    };
    Json(json!({
        "progress": fraction,
        "eta_relative": eta,
        "state": {
            "skipped": false,
            "interrupted": interrupted,
            "stopping_generation": false,
            "job": job,
            "job_count": waiting + usize::from(running.is_some()),
            "job_timestamp": a1111::job_timestamp(),
            "job_no": job_no,
            "sampling_step": step,
            "sampling_steps": steps,
        },
        "current_image": if running.is_some() { current_image } else { None },
        "textinfo": null,
        "current_task": null,
    }))
}

/// Stops the caller's running job at its next step (A1111 interrupts the current job; here only
/// its owner may, so one user cannot cancel another's work).
async fn interrupt(State(state): State<Shared>, headers: HeaderMap) -> ApiResult<Json<Value>> {
    let caller = caller(&state, &headers)?;
    let stopped = state.live.interrupt(&caller.key);
    Ok(Json(json!({"interrupted": stopped})))
}

async fn get_options(State(state): State<Shared>) -> Json<Value> {
    Json(json!({
        "sd_model_checkpoint": state.model.title(),
        "sd_checkpoint_hash": state.model.sha256,
        "CLIP_stop_at_last_layers": *state.clip_skip.lock().unwrap_or_else(|e| e.into_inner()),
        "samples_format": "png",
        "outdir_txt2img_samples": state.outdir.display().to_string(),
    }))
}

async fn set_options(State(state): State<Shared>, headers: HeaderMap, body: Body) -> ApiResult<Json<Value>> {
    caller(&state, &headers)?;
    let opts: serde_json::Map<String, Value> = json_body(&state, body).await?;
    let mut clip_skip = None;
    for (k, v) in &opts {
        match k.as_str() {
            "CLIP_stop_at_last_layers" => clip_skip = Some(clip_skip_value(v)?),
            "sd_model_checkpoint" => {
                let m = &state.model;
                let want = v.as_str().unwrap_or_default();
                let file = m.path.file_name().map(|f| f.to_string_lossy().into_owned()).unwrap_or_default();
                if ![m.title(), m.name.clone(), file].iter().any(|n| n == want) {
                    return Err(ApiError::bad_request(format!(
                        "sd_model_checkpoint {v}: only the loaded model {:?} is available",
                        m.title()
                    )));
                }
            }
            other => log::warn!("options: {other} is not supported and was ignored"),
        }
    }
    if let Some(c) = clip_skip {
        *state.clip_skip.lock().unwrap_or_else(|e| e.into_inner()) = c;
    }
    Ok(Json(Value::Null))
}

/// Prometheus' text format (not an A1111 route).
async fn metrics(State(state): State<Shared>) -> impl axum::response::IntoResponse {
    let live = super::metrics::Live { queue_len: state.queue.len(), running: state.live.snapshot().is_some() };
    ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], state.metrics.render(&live))
}
