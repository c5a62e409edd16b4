//! `GET /metrics`: counters the worker and the handlers update, rendered in Prometheus' text
//! exposition format (version 0.0.4) so any scraper reads them without a client library.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use crate::lora::LoraCacheStats;

/// Upper bounds (seconds) of the step-time histogram: from a fast GPU's tens of milliseconds to a
/// software rasteriser's seconds.
const STEP_BUCKETS: [f64; 10] = [0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0];

/// How jobs ended (the label `status` of `lorafuse_jobs_total`).
pub const STATUSES: [&str; 5] = ["done", "interrupted", "rejected", "failed", "refused"];

#[derive(Default)]
struct Histogram {
    /// Per bucket (not cumulative; summed when rendered), then the +Inf overflow.
    counts: [u64; STEP_BUCKETS.len() + 1],
    sum: f64,
    count: u64,
}

/// What `/metrics` reports, besides the live values read when it is rendered.
#[derive(Default)]
pub struct Metrics {
    jobs: [AtomicU64; STATUSES.len()],
    steps: Mutex<Histogram>,
    /// The GPU buffer pool's bytes, as the worker last saw them.
    pub gpu_pool_bytes: AtomicU64,
    pub gpu_pool_peak_bytes: AtomicU64,
    /// Host time spent making previews (colour map, PNG). The latents' readback before it also
    /// waits for the step queued behind, which costs that step its overlap with the next.
    pub preview_seconds_micros: AtomicU64,
    pub previews: AtomicU64,
    /// The parsed-LoRA cache, as the worker last saw it.
    pub lora: Mutex<LoraCacheStats>,
}

/// Values owned elsewhere, read at render time.
pub struct Live {
    pub queue_len: usize,
    pub running: bool,
}

impl Metrics {
    /// Count a finished job; unknown status names are a bug and land in "failed".
    pub fn job(&self, status: &str) {
        let i = STATUSES.iter().position(|s| *s == status).unwrap_or(3);
        self.jobs[i].fetch_add(1, Ordering::Relaxed);
    }

    pub fn step(&self, seconds: f64) {
        let mut h = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        let i = STEP_BUCKETS.iter().position(|b| seconds <= *b).unwrap_or(STEP_BUCKETS.len());
        h.counts[i] += 1;
        h.sum += seconds;
        h.count += 1;
    }

    pub fn render(&self, live: &Live) -> String {
        let mut o = String::new();
        let gauge = |o: &mut String, name: &str, help: &str, kind: &str, v: f64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {v}");
        };
        gauge(&mut o, "lorafuse_queue_length", "Jobs waiting for the GPU.", "gauge", live.queue_len as f64);
        gauge(&mut o, "lorafuse_jobs_running", "Jobs on the GPU now.", "gauge", f64::from(u8::from(live.running)));
        let _ =
            writeln!(o, "# HELP lorafuse_jobs_total Jobs by how they ended (refused: turned away before queueing).");
        let _ = writeln!(o, "# TYPE lorafuse_jobs_total counter");
        for (s, n) in STATUSES.iter().zip(&self.jobs) {
            let _ = writeln!(o, "lorafuse_jobs_total{{status=\"{s}\"}} {}", n.load(Ordering::Relaxed));
        }
        {
            let h = self.steps.lock().unwrap_or_else(|e| e.into_inner());
            let _ = writeln!(o, "# HELP lorafuse_step_seconds Time of one sampling step.");
            let _ = writeln!(o, "# TYPE lorafuse_step_seconds histogram");
            let mut cum = 0;
            for (b, n) in STEP_BUCKETS.iter().zip(&h.counts) {
                cum += n;
                let _ = writeln!(o, "lorafuse_step_seconds_bucket{{le=\"{b}\"}} {cum}");
            }
            let _ = writeln!(o, "lorafuse_step_seconds_bucket{{le=\"+Inf\"}} {}", h.count);
            let _ = writeln!(o, "lorafuse_step_seconds_sum {}", h.sum);
            let _ = writeln!(o, "lorafuse_step_seconds_count {}", h.count);
        }
        let counter = |o: &mut String, name: &str, help: &str, v: u64| {
            let _ = writeln!(o, "# HELP {name} {help}\n# TYPE {name} counter\n{name} {v}");
        };
        let lora = *self.lora.lock().unwrap_or_else(|e| e.into_inner());
        counter(&mut o, "lorafuse_lora_cache_hits_total", "LoRA files taken from the parsed-file cache.", lora.hits);
        counter(&mut o, "lorafuse_lora_cache_misses_total", "LoRA files parsed from disk.", lora.misses);
        counter(&mut o, "lorafuse_lora_cache_evictions_total", "LoRA files dropped for the budget.", lora.evictions);
        gauge(&mut o, "lorafuse_lora_cache_entries", "Parsed LoRA files held.", "gauge", lora.entries as f64);
        gauge(
            &mut o,
            "lorafuse_lora_cache_bytes",
            "Bytes of LoRA files held (size on disk).",
            "gauge",
            lora.bytes as f64,
        );
        gauge(&mut o, "lorafuse_lora_cache_budget_bytes", "The LoRA cache's budget.", "gauge", lora.budget as f64);
        let pool = self.gpu_pool_bytes.load(Ordering::Relaxed) as f64;
        gauge(&mut o, "lorafuse_gpu_pool_bytes", "GPU memory held by the buffer pool.", "gauge", pool);
        let peak = self.gpu_pool_peak_bytes.load(Ordering::Relaxed) as f64;
        gauge(&mut o, "lorafuse_gpu_pool_peak_bytes", "Most GPU memory the buffer pool held.", "gauge", peak);
        counter(&mut o, "lorafuse_previews_total", "Live previews made.", self.previews.load(Ordering::Relaxed));
        let secs = self.preview_seconds_micros.load(Ordering::Relaxed) as f64 / 1e6;
        gauge(&mut o, "lorafuse_preview_seconds_total", "Time spent making previews.", "counter", secs);
        o
    }
}
