//! Peak memory per phase of a benchmark: the process's resident set high-water mark (`VmHWM`
//! in `/proc/self/status`, Linux) and the buffer pool's peak.
//!
//! On CPU drivers (lavapipe) "GPU memory" is host memory, so the resident set is what a user
//! runs out of; on a GPU it shows the host side only and the pool figure is the device side.
//! The high-water mark is reset between phases by writing `5` to `/proc/self/clear_refs`
//! (Linux ≥ 4.0); where that is not allowed each phase's figure is the peak so far, and the
//! report says so.

use serde::Serialize;

use crate::Context;

const MIB: f64 = (1 << 20) as f64;

/// One phase's memory and duration.
#[derive(Clone, Debug, Serialize)]
pub struct PhaseMemory {
    pub phase: String,
    pub seconds: f64,
    /// Resident set high-water mark during the phase (MiB); `None` without `/proc`.
    pub rss_peak_mib: Option<f64>,
    /// Resident set when the phase ended (MiB).
    pub rss_end_mib: Option<f64>,
    /// Most bytes the buffer pool held at once during the phase (MiB).
    pub pool_peak_mib: f64,
    /// What the pool held when the phase ended (MiB).
    pub pool_end_mib: f64,
}

/// A `kB` field of `/proc/self/status`, in bytes.
fn status_field(name: &str) -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with(name))?;
    let kb: u64 = line[name.len()..].trim().trim_end_matches("kB").trim().parse().ok()?;
    Some(kb * 1024)
}

/// The resident set's high-water mark in bytes (`VmHWM`).
pub fn rss_peak_bytes() -> Option<u64> {
    status_field("VmHWM:")
}

/// The resident set now, in bytes (`VmRSS`).
pub fn rss_bytes() -> Option<u64> {
    status_field("VmRSS:")
}

/// Resets the resident set's high-water mark to the current resident set; false where the
/// kernel does not allow it.
pub fn reset_rss_peak() -> bool {
    std::fs::write("/proc/self/clear_refs", "5").is_ok()
}

/// Splits a run into phases, each with its own peaks.
pub struct Phases {
    list: Vec<PhaseMemory>,
    start: std::time::Instant,
    /// Every reset of the high-water mark succeeded (else the peaks are cumulative).
    pub resets: bool,
}

impl Phases {
    /// Starts the first phase now (resetting both peaks).
    pub fn start(ctx: &Context) -> Phases {
        ctx.reset_pool_peak();
        Phases { list: Vec::new(), start: std::time::Instant::now(), resets: reset_rss_peak() }
    }

    /// Ends the current phase as `name` and starts the next.
    pub fn end(&mut self, ctx: &Context, name: &str) {
        let mib = |b: u64| b as f64 / MIB;
        self.list.push(PhaseMemory {
            phase: name.to_string(),
            seconds: self.start.elapsed().as_secs_f64(),
            rss_peak_mib: rss_peak_bytes().map(mib),
            rss_end_mib: rss_bytes().map(mib),
            pool_peak_mib: mib(ctx.pool_peak_bytes()),
            pool_end_mib: mib(ctx.pool_bytes()),
        });
        ctx.reset_pool_peak();
        self.resets &= reset_rss_peak();
        self.start = std::time::Instant::now();
    }

    pub fn finish(self) -> Vec<PhaseMemory> {
        self.list
    }
}
