//! What `lorafuse serve` shows about itself: live previews in `progress.current_image`,
//! `/metrics` in Prometheus' text format, and the LoRA cache's budget (eviction counted there).

mod serve_common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use serve_common::*;

/// `/metrics` parsed as Prometheus' text format: every sample line is `name{labels} value`,
/// every name was declared by `# TYPE` first, and no series repeats.
fn scrape(s: &Server) -> BTreeMap<String, f64> {
    let r = s.get("/metrics");
    assert_eq!(r.status, 200);
    assert!(r.header("content-type").unwrap_or_default().starts_with("text/plain; version=0.0.4"), "{:?}", r.headers);
    let mut typed = std::collections::BTreeSet::new();
    let mut out = BTreeMap::new();
    for line in r.text().lines() {
        if let Some(t) = line.strip_prefix("# TYPE ") {
            let (name, kind) = t.split_once(' ').expect("# TYPE name kind");
            assert!(["counter", "gauge", "histogram"].contains(&kind), "{line}");
            assert!(typed.insert(name.to_string()), "{name} declared twice");
            continue;
        }
        if line.starts_with('#') || line.is_empty() {
            continue;
        }
        let (series, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("not a sample: {line:?}"));
        let name = series.split('{').next().unwrap();
        let family = ["_bucket", "_sum", "_count"].iter().fold(name, |n, suf| n.strip_suffix(suf).unwrap_or(n));
        assert!(typed.contains(name) || typed.contains(family), "{name} has no # TYPE");
        assert!(series.chars().all(|c| c.is_ascii_alphanumeric() || "_{}=\",.+".contains(c)), "{line}");
        let v: f64 = value.parse().unwrap_or_else(|_| panic!("not a number: {line:?}"));
        assert!(out.insert(series.to_string(), v).is_none(), "{series} twice");
    }
    out
}

fn metric(m: &BTreeMap<String, f64>, series: &str) -> f64 {
    *m.get(series).unwrap_or_else(|| panic!("no {series} in {m:?}"))
}

#[test]
fn previews_while_sampling_and_metrics_that_move() {
    let s = Arc::new(Server::start("observe", "request_timeout_s = 300"));
    let before = scrape(&s);
    assert_eq!(metric(&before, "lorafuse_queue_length"), 0.0);
    assert_eq!(metric(&before, "lorafuse_jobs_total{status=\"done\"}"), 0.0);
    assert_eq!(metric(&before, "lorafuse_step_seconds_count"), 0.0);
    assert!(metric(&before, "lorafuse_gpu_pool_bytes") >= 0.0);
    assert_eq!(metric(&before, "lorafuse_lora_cache_budget_bytes"), 2048.0 * 1048576.0);

    let done = s.txt2img(None, small(json!({"seed": 3, "prompt": "a cat <lora:kohya_lora:0.5>"})));
    assert_eq!(done.status, 200, "{}", done.text());
    let after = scrape(&s);
    assert_eq!(metric(&after, "lorafuse_jobs_total{status=\"done\"}"), 1.0);
    assert_eq!(metric(&after, "lorafuse_step_seconds_count"), 2.0);
    assert!(metric(&after, "lorafuse_step_seconds_sum") > 0.0);
    assert_eq!(metric(&after, "lorafuse_step_seconds_bucket{le=\"+Inf\"}"), 2.0);
    assert!(metric(&after, "lorafuse_gpu_pool_bytes") > 0.0, "the model's buffers are pooled");
    assert_eq!(metric(&after, "lorafuse_lora_cache_misses_total"), 1.0);
    assert_eq!(metric(&after, "lorafuse_previews_total"), 0.0, "no one asked for a preview");

    let long = {
        let s = s.clone();
        std::thread::spawn(move || s.txt2img(Some("k-long"), small(json!({"steps": 1000, "seed": 1}))))
    };
    // Watched without previews first (skip_current_image), then with them, to see what they cost.
    let quiet = || s.get("/sdapi/v1/progress?skip_current_image=true").json();
    let step_of = |p: &serde_json::Value| p["state"]["sampling_step"].as_u64().unwrap_or(0);
    let t0 = Instant::now();
    while step_of(&quiet()) < 2 {
        assert!(t0.elapsed() < Duration::from_secs(180), "the long job does not sample");
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(scrape(&s)["lorafuse_jobs_running"], 1.0);
    let mean_step = |steps: u64, watch: &dyn Fn() -> serde_json::Value| {
        let a = scrape(&s);
        let from = step_of(&watch());
        while step_of(&watch()) < from + steps {
            std::thread::sleep(Duration::from_millis(20));
        }
        let b = scrape(&s);
        let d = |k: &str| b[k] - a[k];
        d("lorafuse_step_seconds_sum") / d("lorafuse_step_seconds_count")
    };
    let without = mean_step(10, &quiet);
    assert_eq!(scrape(&s)["lorafuse_previews_total"], 0.0, "previews made while no one asked");
    let with = mean_step(10, &|| s.progress());
    // Previews start once asked for; each is the latents' colour map at latent size (64 / 8).
    let first = s.wait_progress("a preview", |p| p["current_image"].is_string());
    let (w, h, px, _) = decode_png(first["current_image"].as_str().unwrap());
    assert_eq!((w, h, px.len()), (8, 8, 8 * 8 * 3));
    let t0 = Instant::now();
    let newer = s.wait_progress("a newer preview", |p| {
        p["current_image"].is_string() && p["current_image"] != first["current_image"]
    });
    assert!(t0.elapsed() < Duration::from_secs(60));
    // The step counter moves when a step is reported and the preview when its latents are read
    // back, so a newer preview can come with the same counter; it never goes back.
    assert!(newer["state"]["sampling_step"].as_u64() >= first["state"]["sampling_step"].as_u64(), "{newer}");
    let skipped = s.get("/sdapi/v1/progress?skip_current_image=true").json();
    assert!(skipped["current_image"].is_null(), "{skipped}");
    let mid = scrape(&s);
    assert!(mid["lorafuse_previews_total"] >= 2.0, "{mid:?}");
    assert!(mid["lorafuse_step_seconds_count"] > after["lorafuse_step_seconds_count"]);

    assert_eq!(s.post("/sdapi/v1/interrupt", Some("k-long"), &json!({})).json()["interrupted"], true);
    assert_eq!(long.join().unwrap().status, 200);
    let end = scrape(&s);
    assert_eq!(metric(&end, "lorafuse_jobs_total{status=\"interrupted\"}"), 1.0);
    assert_eq!(metric(&end, "lorafuse_jobs_running"), 0.0);
    assert!(s.progress()["current_image"].is_null(), "no preview between jobs");
    let (n, secs) = (end["lorafuse_previews_total"], end["lorafuse_preview_seconds_total"]);
    let steps = end["lorafuse_step_seconds_count"];
    println!(
        "previews: {n} made in {secs:.4} s of host time ({:.3} ms each); {steps} steps took {:.3} s in all; \
         mean step {:.1} ms without previews, {:.1} ms with one per step",
        1e3 * secs / n,
        end["lorafuse_step_seconds_sum"],
        1e3 * without,
        1e3 * with
    );

    // Turned away before the queue: counted as refused (the rate tier allows 2 a minute).
    for _ in 0..2 {
        s.txt2img(Some("k-rate"), small(json!({"steps": 0}))).assert_error(400, "steps");
    }
    s.txt2img(Some("k-rate"), small(json!({}))).assert_error(429, "requests_per_minute");
    assert_eq!(metric(&scrape(&s), "lorafuse_jobs_total{status=\"refused\"}"), 1.0);
}

#[test]
fn the_lora_cache_keeps_to_its_budget_least_recently_used_first() {
    // 1.2 MiB holds kohya_lora (640 kB) with peft_lora (375 kB) or lycoris_lokr (461 kB), not all
    // three, and not kohya_lora with kohya_locon (1.04 MB).
    let s = Server::start("lora-cache", "lora_cache_mib = 1.2");
    let dir = fixtures().join("loras");
    let size = |n: &str| std::fs::metadata(dir.join(format!("{n}.safetensors"))).unwrap().len() as f64;
    let budget = 1.2 * 1048576.0;
    let (lora, peft, lokr, locon) = (size("kohya_lora"), size("peft_lora"), size("lycoris_lokr"), size("kohya_locon"));
    assert!(lora + locon > budget && lora + peft + lokr > budget && lora + lokr <= budget && lora + peft <= budget);
    let run = |lora: &str| {
        let r = s.txt2img(None, small(json!({"prompt": format!("a cat <lora:{lora}:0.5>"), "steps": 1, "seed": 1})));
        assert_eq!(r.status, 200, "{}", r.text());
        let m = scrape(&s);
        let get = |k: &str| metric(&m, &format!("lorafuse_lora_cache_{k}"));
        assert!(get("bytes") <= budget, "{m:?}");
        (get("hits_total"), get("misses_total"), get("evictions_total"), get("entries"))
    };
    assert_eq!(run("kohya_lora"), (0.0, 1.0, 0.0, 1.0));
    assert_eq!(run("kohya_lora"), (1.0, 1.0, 0.0, 1.0), "parsed once");
    assert_eq!(run("kohya_locon"), (1.0, 2.0, 1.0, 1.0), "kohya_lora dropped for the budget");
    assert_eq!(run("kohya_lora"), (1.0, 3.0, 2.0, 1.0), "parsed again after eviction");
    assert_eq!(run("peft_lora"), (1.0, 4.0, 2.0, 2.0), "both fit");
    assert_eq!(run("kohya_lora"), (2.0, 4.0, 2.0, 2.0));
    // peft_lora is now the least recently used: it goes, kohya_lora stays.
    assert_eq!(run("lycoris_lokr"), (2.0, 5.0, 3.0, 2.0));
    assert_eq!(run("kohya_lora"), (3.0, 5.0, 3.0, 2.0), "the recently used file was kept");
}
