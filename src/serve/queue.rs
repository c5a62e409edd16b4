//! The bounded job queue between the HTTP handlers and the GPU worker. FIFO within a key and
//! round-robin across keys, so one key with many queued jobs cannot starve another's single job.
//! Closing it (shutdown) hands back every waiting job so each can be answered.

use std::collections::{HashMap, VecDeque};
use std::sync::{Condvar, Mutex, MutexGuard};

/// Why a job was not queued.
#[derive(Debug, PartialEq, Eq)]
pub enum PushError {
    /// `capacity` jobs are already waiting.
    Full { capacity: usize },
    /// The server is shutting down.
    Closed,
}

struct State<T> {
    /// Keys with waiting jobs, in the order they are served next.
    turn: VecDeque<String>,
    jobs: HashMap<String, VecDeque<T>>,
    len: usize,
    closed: bool,
}

/// A bounded multi-key FIFO with per-key round-robin.
pub struct FairQueue<T> {
    capacity: usize,
    state: Mutex<State<T>>,
    ready: Condvar,
}

impl<T> FairQueue<T> {
    pub fn new(capacity: usize) -> FairQueue<T> {
        FairQueue {
            capacity,
            state: Mutex::new(State { turn: VecDeque::new(), jobs: HashMap::new(), len: 0, closed: false }),
            ready: Condvar::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State<T>> {
        // A panic while holding the lock leaves consistent data (every update is one step).
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub fn push(&self, key: &str, job: T) -> Result<(), PushError> {
        let mut s = self.lock();
        if s.closed {
            return Err(PushError::Closed);
        }
        if s.len >= self.capacity {
            return Err(PushError::Full { capacity: self.capacity });
        }
        let q = s.jobs.entry(key.to_string()).or_default();
        q.push_back(job);
        if q.len() == 1 {
            s.turn.push_back(key.to_string());
        }
        s.len += 1;
        drop(s);
        self.ready.notify_one();
        Ok(())
    }

    /// The next job (blocking); `None` once the queue is closed.
    pub fn pop(&self) -> Option<T> {
        let mut s = self.lock();
        loop {
            if s.closed {
                return None;
            }
            if let Some(job) = Self::take_next(&mut s) {
                return Some(job);
            }
            s = self.ready.wait(s).unwrap_or_else(|e| e.into_inner());
        }
    }

    fn take_next(s: &mut State<T>) -> Option<T> {
        let key = s.turn.pop_front()?;
        let q = s.jobs.get_mut(&key)?;
        let job = q.pop_front();
        if q.is_empty() {
            s.jobs.remove(&key);
        } else {
            s.turn.push_back(key);
        }
        s.len -= usize::from(job.is_some());
        job
    }

    pub fn len(&self) -> usize {
        self.lock().len
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuse new jobs, wake the worker, and return the waiting ones in the order they would
    /// have run.
    pub fn close(&self) -> Vec<T> {
        let mut s = self.lock();
        s.closed = true;
        let mut out = Vec::with_capacity(s.len);
        while let Some(j) = Self::take_next(&mut s) {
            out.push(j);
        }
        drop(s);
        self.ready.notify_all();
        out
    }
}
