//! Picking a kernel variant (tile shape) for this adapter by measuring, at first use (autotune).
//!
//! The portable kernels' best tiles depend on the GPU (register file, occupancy, caches) and on
//! the shape, so on GPUs each shape class gets a short search the first time it is seen: every
//! candidate the device limits allow runs the real shape a few times and the fastest is kept, in
//! memory and in the context's [`TuneStore`](crate::gpu::TuneStore) on disk. Later runs read the
//! choice back and measure nothing. CPU adapters keep their fitted kernels unless
//! [`Autotune::Always`] is set (their variants take seconds each to compile).

use std::time::Instant;

use crate::gpu::Autotune;
use crate::{Context, Recorder, Result};

/// Whether this context searches at all.
pub fn enabled(ctx: &Context) -> bool {
    match ctx.autotune {
        Autotune::Off => false,
        Autotune::Gpu => !ctx.caps.is_cpu(),
        Autotune::Always => true,
    }
}

/// How a family of variants is named in the store, and how each one is recorded for timing.
pub struct Search<'a, K> {
    /// The store key of the shape class, e.g. `gemm.f16.nt.m4096.n512.k512`.
    pub key: String,
    /// Runnable candidates (already filtered by the device limits).
    pub candidates: Vec<K>,
    /// What runs when nothing is measured or the search fails.
    pub fallback: K,
    pub name: fn(&K) -> String,
    pub parse: fn(&str) -> Option<K>,
    /// Record one run of the real shape with a candidate.
    pub record: &'a dyn Fn(&mut Recorder, &K) -> Result<()>,
    /// Flops of one run: a submission repeats the run up to about 0.1 GFLOP (at most 20 times),
    /// so that the submission's own cost does not decide.
    pub flops: f64,
}

/// The stored choice for the search's class, else the fastest candidate, measured now and stored.
/// With autotune disabled: the fallback.
pub fn pick<K: Clone + PartialEq + std::fmt::Debug>(ctx: &Context, s: Search<'_, K>) -> K {
    if !enabled(ctx) {
        return s.fallback;
    }
    if let Some(k) = ctx.tune.get(&s.key).and_then(|v| (s.parse)(&v)) {
        if s.candidates.contains(&k) || k == s.fallback {
            return k;
        }
    }
    match measure(ctx, &s) {
        Ok(best) => {
            log::debug!("autotune {}: {best:?}", s.key);
            ctx.tune.set(&s.key, &(s.name)(&best));
            best
        }
        Err(e) => {
            log::warn!("autotune {} failed ({e}); using {:?}", s.key, s.fallback);
            s.fallback
        }
    }
}

fn measure<K: Clone + PartialEq>(ctx: &Context, s: &Search<'_, K>) -> Result<K> {
    let mut best = (f64::INFINITY, s.fallback.clone());
    let mut cands = s.candidates.clone();
    if !cands.contains(&s.fallback) {
        cands.push(s.fallback.clone());
    }
    for cand in cands {
        let mut rec = Recorder::new();
        let mut ok = true;
        let reps = (1e8 / s.flops.max(1.0)).clamp(1.0, 20.0) as usize;
        for _ in 0..reps {
            ok &= (s.record)(&mut rec, &cand).is_ok();
        }
        if !ok || rec.is_empty() {
            continue;
        }
        rec.replay(ctx)?; // compiles the pipeline; not timed
        ctx.sync()?;
        let mut t = f64::INFINITY;
        for _ in 0..3 {
            let t0 = Instant::now();
            rec.replay(ctx)?;
            ctx.sync()?;
            t = t.min(t0.elapsed().as_secs_f64());
        }
        if t < best.0 {
            best = (t, cand);
        }
    }
    Ok(best.1)
}
