//! Progress of long commands on stderr: an indicatif bar on a terminal, plain lines otherwise.
//!
//! indicatif draws nothing when stderr is not a terminal, which left users of pipes, logs and CI
//! with minutes of silence (a cold lavapipe run spends them compiling kernels). Plain mode writes
//! one line per phase message and one per position change instead, each with the elapsed time.

use std::io::IsTerminal;
use std::sync::Mutex;
use std::time::Instant;

use anyhow::Result;
use indicatif::{ProgressBar, ProgressStyle};

enum Sink {
    Hidden,
    Bar(ProgressBar),
    Lines(Mutex<Lines>),
}

struct Lines {
    /// What the counted positions are ("steps", "cases").
    unit: &'static str,
    message: String,
    length: u64,
    position: u64,
    /// When the last "compiling kernels" line was written (seconds since start).
    compile_line_at: f64,
    /// When the last position line was written.
    position_line_at: f64,
}

/// A progress display; cheap to call from the library's progress callbacks.
pub struct Progress {
    sink: Sink,
    start: Instant,
}

impl Progress {
    /// `template` is the indicatif template used on a terminal; `unit` names the positions in
    /// plain lines. `quiet` shows nothing at all.
    pub fn new(quiet: bool, template: &str, unit: &'static str) -> Result<Progress> {
        let sink = if quiet {
            Sink::Hidden
        } else if std::io::stderr().is_terminal() {
            let b = ProgressBar::new(0);
            b.set_style(ProgressStyle::with_template(template)?);
            Sink::Bar(b)
        } else {
            Sink::Lines(Mutex::new(Lines {
                unit,
                message: String::new(),
                length: 0,
                position: 0,
                compile_line_at: 0.0,
                position_line_at: 0.0,
            }))
        };
        Ok(Progress { sink, start: Instant::now() })
    }

    fn lines(&self, f: impl FnOnce(&mut Lines, f64)) {
        if let Sink::Lines(l) = &self.sink {
            let mut l = l.lock().unwrap_or_else(|e| e.into_inner());
            f(&mut l, self.start.elapsed().as_secs_f64());
        }
    }

    /// The current phase ("image 1/2", "decoding"); a plain line when it changes.
    pub fn set_message(&self, msg: impl Into<String>) {
        let msg = msg.into();
        match &self.sink {
            Sink::Bar(b) => b.set_message(msg),
            Sink::Lines(_) => self.lines(|l, t| {
                if l.message != msg {
                    eprintln!("{msg} ({t:.1} s)");
                    l.message = msg;
                }
            }),
            Sink::Hidden => {}
        }
    }

    pub fn set_length(&self, len: u64) {
        match &self.sink {
            Sink::Bar(b) => b.set_length(len),
            Sink::Lines(_) => self.lines(|l, _| l.length = len),
            Sink::Hidden => {}
        }
    }

    /// Done `pos` of the length; a plain line per change ("image 1/2: 3/20 steps (41.2 s)").
    /// Long counts (the LoRA tools' hundreds of modules) write the first, the last and at most
    /// one line a second, so a log stays readable.
    pub fn set_position(&self, pos: u64) {
        match &self.sink {
            Sink::Bar(b) => b.set_position(pos),
            Sink::Lines(_) => self.lines(|l, t| {
                let due = l.length <= 50 || pos <= 1 || pos >= l.length || t - l.position_line_at >= 1.0;
                if pos != l.position && due {
                    l.position = pos;
                    l.position_line_at = t;
                    let prefix = if l.message.is_empty() { String::new() } else { format!("{}: ", l.message) };
                    eprintln!("{prefix}{pos}/{} {} ({t:.1} s)", l.length, l.unit);
                }
            }),
            Sink::Hidden => {}
        }
    }

    /// Item `done` of `total` (the LoRA tools' modules): a terminal bar shows the item's name;
    /// plain lines only count, throttled as [`Progress::set_position`], rather than naming every
    /// one of hundreds of modules.
    pub fn item(&self, done: usize, total: usize, name: &str) {
        self.set_length(total as u64);
        if let Sink::Bar(b) = &self.sink {
            b.set_message(name.to_string());
        }
        self.set_position(done as u64);
    }

    /// Kernels compiled ahead of sampling: the bar's message on a terminal; plain lines at the
    /// first, then at most one per 5 s, and the last (a cold lavapipe run compiles for a minute or
    /// more, so this is what tells a user that it is working).
    pub fn compiling(&self, done: usize, total: usize) {
        let msg = format!("compiling kernels {done}/{total}");
        match &self.sink {
            Sink::Bar(b) => b.set_message(msg),
            Sink::Lines(_) => self.lines(|l, t| {
                let due = t - l.compile_line_at >= 5.0;
                if done == 1 || done == total || due {
                    eprintln!("{msg} ({t:.1} s)");
                    l.compile_line_at = t;
                }
            }),
            Sink::Hidden => {}
        }
    }

    /// Start counting again from 0 (a new image).
    pub fn reset(&self) {
        match &self.sink {
            Sink::Bar(b) => b.reset(),
            Sink::Lines(_) => self.lines(|l, _| l.position = 0),
            Sink::Hidden => {}
        }
    }

    /// Keep a terminal spinner moving while nothing reports (e.g. the first step compiling kernels).
    pub fn tick_steadily(&self) {
        if let Sink::Bar(b) = &self.sink {
            b.enable_steady_tick(std::time::Duration::from_millis(200));
        }
    }

    pub fn finish(&self) {
        if let Sink::Bar(b) = &self.sink {
            b.finish_and_clear();
        }
    }
}
