//! Where a recorded graph's GPU time goes: every dispatch timed on its own (timestamp queries),
//! grouped by what it computes — GEMM and conv by shape, attention self/cross, then the other
//! kernels by name — with each group's FLOPs and bytes and the rate they were done at.

use std::collections::HashMap;

use serde::Serialize;

use crate::gpu::{Dispatch, Recorder};
use crate::{Context, Result};

/// One group of dispatches.
#[derive(Clone, Debug, Serialize)]
pub struct ClassRow {
    /// `gemm 8192x320x320` (rows × cols × depth), `conv3x3/1 320->320 @64x64`,
    /// `attention self 4096x4096 d40`, or the kernel name (`group_norm`, `binary`, ...).
    pub class: String,
    /// Coarse family: gemm, conv, attention, norm, elementwise, copy.
    pub family: String,
    pub dispatches: usize,
    pub ms: f64,
    /// Share of the summed dispatch time.
    pub share: f64,
    /// Zero where the launcher does not count work (norms, elementwise, copies).
    pub gflop: f64,
    pub gflops: f64,
    pub gbytes: f64,
    pub gbs: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct GraphProfile {
    pub dispatches: usize,
    /// Sum of the per-dispatch times (each in its own pass).
    pub total_ms: f64,
    /// Classes by descending time.
    pub classes: Vec<ClassRow>,
    /// Per family: (family, ms, share).
    pub families: Vec<(String, f64, f64)>,
}

/// The family of a dispatch: from its class where the launcher named one, else its kernel.
pub fn family(d: &Dispatch) -> &'static str {
    if let Some(c) = d.class.as_deref() {
        for (prefix, fam) in [("gemm", "gemm"), ("conv", "conv"), ("attention", "attention"), ("pack", "copy")] {
            if c.starts_with(prefix) {
                return fam;
            }
        }
    }
    match d.label {
        "matmul" | "lora_linear" => "gemm",
        "conv2d" => "conv",
        "attention" | "attention_sg" => "attention",
        "group_norm" | "group_norm_sg" | "layer_norm" | "softmax" => "norm",
        "conv_pack" => "copy",
        "binary" | "unary" | "geglu" | "timestep_embedding" | "lora_merge" => "elementwise",
        "concat" | "upsample" | "embedding" => "copy",
        _ => "other",
    }
}

/// Time every dispatch of `rec` and group them; `None` without timestamp queries.
pub fn profile(ctx: &Context, rec: &Recorder) -> Result<Option<GraphProfile>> {
    // A first replay so one-time costs (driver compilation at first dispatch, first touches of
    // fresh buffers) stay out of the profile.
    rec.replay(ctx)?;
    ctx.sync()?;
    let Some(ms) = rec.profile(ctx)? else { return Ok(None) };
    Ok(Some(group(&rec.dispatches, &ms)))
}

/// Group per-dispatch times `ms` (one per dispatch of `ds`).
pub fn group(ds: &[Dispatch], ms: &[f64]) -> GraphProfile {
    let total: f64 = ms.iter().sum();
    let mut rows: HashMap<String, ClassRow> = HashMap::new();
    for (d, &t) in ds.iter().zip(ms) {
        let class = d.class.as_deref().unwrap_or(d.label).to_string();
        let r = rows.entry(class.clone()).or_insert_with(|| ClassRow {
            class,
            family: family(d).to_string(),
            dispatches: 0,
            ms: 0.0,
            share: 0.0,
            gflop: 0.0,
            gflops: 0.0,
            gbytes: 0.0,
            gbs: 0.0,
        });
        r.dispatches += 1;
        r.ms += t;
        r.gflop += d.work.flops / 1e9;
        r.gbytes += d.work.bytes / 1e9;
    }
    let mut classes: Vec<ClassRow> = rows.into_values().collect();
    let mut fam: HashMap<String, f64> = HashMap::new();
    for r in &mut classes {
        r.share = if total > 0.0 { r.ms / total } else { 0.0 };
        if r.ms > 0.0 {
            r.gflops = r.gflop / (r.ms * 1e-3);
            r.gbs = r.gbytes / (r.ms * 1e-3);
        }
        *fam.entry(r.family.clone()).or_default() += r.ms;
    }
    classes.sort_by(|a, b| b.ms.total_cmp(&a.ms).then_with(|| a.class.cmp(&b.class)));
    let mut families: Vec<(String, f64, f64)> =
        fam.into_iter().map(|(f, t)| (f, t, if total > 0.0 { t / total } else { 0.0 })).collect();
    families.sort_by(|a, b| b.1.total_cmp(&a.1));
    GraphProfile { dispatches: ds.len(), total_ms: total, classes, families }
}

impl GraphProfile {
    /// A text table; `peak_gflops` (the FMA probe) adds each class's share of the peak.
    pub fn table(&self, title: &str, peak_gflops: Option<f64>) -> String {
        let mut s = format!("{title}: {} dispatches, {:.1} ms summed\n", self.dispatches, self.total_ms);
        for (f, t, sh) in &self.families {
            s += &format!("  {f:<12} {t:>10.1} ms {:>6.1} %\n", sh * 100.0);
        }
        s += &format!(
            "  {:<40} {:>5} {:>10} {:>6} {:>9} {:>9} {:>8} {:>7}\n",
            "class", "disp", "ms", "%", "GFLOP", "GFLOP/s", "GB/s", "%peak"
        );
        for r in &self.classes {
            let peak = match (peak_gflops, r.gflop > 0.0) {
                (Some(p), true) if p > 0.0 => format!("{:.1}", 100.0 * r.gflops / p),
                _ => "-".into(),
            };
            s += &format!(
                "  {:<40} {:>5} {:>10.2} {:>6.1} {:>9.2} {:>9.1} {:>8.2} {:>7}\n",
                r.class,
                r.dispatches,
                r.ms,
                r.share * 100.0,
                r.gflop,
                r.gflops,
                r.gbs,
                peak
            );
        }
        s
    }
}
