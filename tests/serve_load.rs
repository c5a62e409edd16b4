//! `lorafuse serve` under load on the tiny model: 50 concurrent clients × 2 requests, most on one
//! key and a few on another. Not a timed assertion: it checks that every request is answered
//! (done, or a clear 429/503), that no job is lost or run twice, and that the queue's per-key
//! round-robin keeps the small key from waiting behind the big one; it prints p50/p95 latency
//! and throughput (BENCHMARKS.md records them).

mod serve_common;

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::json;
use serve_common::*;

const CLIENTS: usize = 50;
const PER_CLIENT: usize = 2;
/// Clients on `k-load-b`; the rest use `k-load-a`.
const SMALL_KEY_CLIENTS: usize = 5;

struct Answer {
    key: &'static str,
    seed: u64,
    status: u16,
    latency: Duration,
    done_at: Instant,
    seeds: Option<serde_json::Value>,
    retry_after: bool,
    images: usize,
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[test]
fn fifty_clients_two_requests_each() {
    let s = Arc::new(Server::start("load", "queue_size = 64\nrequest_timeout_s = 600"));
    // A first request compiles the kernels, so the run measures serving, not compiling.
    assert_eq!(s.txt2img(Some("k-pro"), small(json!({"steps": 1, "seed": 1}))).status, 200);
    let start = Instant::now();
    let clients: Vec<_> = (0..CLIENTS)
        .map(|c| {
            let s = s.clone();
            std::thread::spawn(move || {
                let key = if c < SMALL_KEY_CLIENTS { "k-load-b" } else { "k-load-a" };
                (0..PER_CLIENT)
                    .map(|j| {
                        let seed = 10_000 + (c * PER_CLIENT + j) as u64;
                        let t = Instant::now();
                        let r = s.txt2img(Some(key), small(json!({"steps": 1, "seed": seed})));
                        let done_at = Instant::now();
                        let ok = r.status == 200;
                        Answer {
                            key,
                            seed,
                            status: r.status,
                            latency: done_at - t,
                            done_at,
                            seeds: ok.then(|| info(&r)["all_seeds"].clone()),
                            retry_after: r.header("retry-after").is_some(),
                            images: if ok { r.json()["images"].as_array().map_or(0, |a| a.len()) } else { 0 },
                        }
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    let answers: Vec<Answer> = clients.into_iter().flat_map(|t| t.join().expect("a client thread")).collect();
    let wall = start.elapsed();
    assert_eq!(answers.len(), CLIENTS * PER_CLIENT);

    let mut seen = BTreeSet::new();
    let mut latencies = Vec::new();
    let (mut done, mut refused) = (0, 0);
    for a in &answers {
        match a.status {
            200 => {
                // The job that ran is the one asked for, once, with its image.
                assert_eq!(a.seeds, Some(json!([a.seed])));
                assert_eq!(a.images, 1);
                assert!(seen.insert(a.seed), "seed {} answered twice", a.seed);
                latencies.push(a.latency);
                done += 1;
            }
            429 | 503 => {
                assert!(a.retry_after, "a {} without Retry-After", a.status);
                refused += 1;
            }
            other => panic!("request with seed {} got {other}", a.seed),
        }
    }
    // The server counted the same: nothing lost between the queue and the worker.
    let m = s.get("/metrics").text();
    let count = |series: &str| -> f64 {
        m.lines().find_map(|l| l.strip_prefix(series)).and_then(|v| v.trim().parse().ok()).unwrap_or(-1.0)
    };
    assert_eq!(count("lorafuse_jobs_total{status=\"done\"}"), (done + 1) as f64, "{m}");
    assert_eq!(count("lorafuse_jobs_total{status=\"refused\"}"), refused as f64, "{m}");
    assert_eq!(count("lorafuse_queue_length"), 0.0);

    // Fairness: the small key's jobs are served in turn with the big key's, so all of them are
    // done early instead of its second round waiting behind the big key's whole backlog.
    let mut order: Vec<&Answer> = answers.iter().filter(|a| a.status == 200).collect();
    order.sort_by_key(|a| a.done_at);
    let last_small = order.iter().rposition(|a| a.key == "k-load-b").expect("the small key was served");
    let small_done = order.iter().filter(|a| a.key == "k-load-b").count();
    assert_eq!(small_done, SMALL_KEY_CLIENTS * PER_CLIENT, "the small key lost requests");
    assert!(
        last_small < order.len() * 2 / 5,
        "the small key's last job finished {} of {}: it waited behind the big key",
        last_small + 1,
        order.len()
    );

    latencies.sort();
    println!(
        "load: {} requests from {CLIENTS} clients: {done} done, {refused} refused (429/503); wall {:.1} s, \
         throughput {:.2} images/s; latency p50 {:.2} s, p95 {:.2} s, max {:.2} s; small key done by {} of {}",
        answers.len(),
        wall.as_secs_f64(),
        done as f64 / wall.as_secs_f64(),
        percentile(&latencies, 0.5).as_secs_f64(),
        percentile(&latencies, 0.95).as_secs_f64(),
        latencies.last().unwrap().as_secs_f64(),
        last_small + 1,
        order.len()
    );
}
