//! What the connections measure: per-operation HDR latency histograms and
//! counters, kept per connection without sharing and merged at the end,
//! plus the two atomics the progress line reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::wire::Outcome;
use super::workload::Op;

/// Highest latency a histogram resolves: 60 s, in nanoseconds. Longer
/// latencies are clamped into the top bucket; `max_ns` stays exact.
const HIGHEST_NS: u64 = 60_000_000_000;
/// Significant decimal digits kept: 3 means a latency is reported within
/// 0.1% of its true value.
const SIGFIG: u8 = 3;
/// Error messages kept for the report; the rest are only counted.
pub const MAX_ERROR_SAMPLES: usize = 5;

/// Measurements of one operation kind.
#[derive(Debug, Clone)]
pub struct OpStats {
    /// Latency of every measured reply, error replies included, in
    /// nanoseconds.
    pub latency: Histogram<u64>,
    /// Measured requests answered with an error or not answered at all.
    pub errors: u64,
    /// Measured requests never answered (their connection failed).
    pub lost: u64,
    /// Exact largest latency, in nanoseconds.
    pub max_ns: u64,
}

impl Default for OpStats {
    fn default() -> OpStats {
        OpStats {
            // Constant bounds that meet the constructor's requirements
            // (1 <= low, 2 * low <= high, sigfig <= 5): it cannot fail.
            latency: Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG)
                .expect("constant histogram bounds are valid"),
            errors: 0,
            lost: 0,
            max_ns: 0,
        }
    }
}

impl OpStats {
    fn record(&mut self, latency: Duration) {
        let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX).max(1);
        self.latency.saturating_record(ns);
        self.max_ns = self.max_ns.max(ns);
    }

    /// Measured requests: replies (error replies included) plus the ones
    /// lost with their connection.
    pub fn ops(&self) -> u64 {
        self.latency.len() + self.lost
    }

    fn merge(&mut self, other: &OpStats) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.latency.add(&other.latency);
        self.errors += other.errors;
        self.lost += other.lost;
        self.max_ns = self.max_ns.max(other.max_ns);
    }
}

/// Everything one connection (or, merged, the whole run) measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// GET measurements.
    pub get: OpStats,
    /// SET measurements.
    pub set: OpStats,
    /// GETs that found their key.
    pub hits: u64,
    /// GETs that found nothing.
    pub misses: u64,
    /// Errors not tied to a measured request: error replies during the
    /// warm-up, and failed connections.
    pub unmeasured_errors: u64,
    /// The first few error messages, for the report.
    pub error_samples: Vec<String>,
    /// When the last measured reply arrived.
    pub last_reply: Option<Instant>,
}

impl Measured {
    /// Records the reply to a measured request.
    pub fn record(&mut self, op: Op, outcome: Outcome, latency: Duration) {
        let stats = self.op_mut(op);
        stats.record(latency);
        match outcome {
            Outcome::Hit => self.hits += 1,
            Outcome::Miss => self.misses += 1,
            Outcome::Stored => {}
            Outcome::Error(message) => {
                self.op_mut(op).errors += 1;
                self.note_error(message);
            }
        }
    }

    /// Records a measured request that will never be answered.
    pub fn lost(&mut self, op: Op) {
        let stats = self.op_mut(op);
        stats.lost += 1;
        stats.errors += 1;
    }

    /// Keeps `message` if fewer than [`MAX_ERROR_SAMPLES`] distinct ones
    /// are kept.
    pub fn note_error(&mut self, message: String) {
        if self.error_samples.len() < MAX_ERROR_SAMPLES && !self.error_samples.contains(&message) {
            self.error_samples.push(message);
        }
    }

    /// Every error: both operations' and the unmeasured ones.
    pub fn errors(&self) -> u64 {
        self.get.errors + self.set.errors + self.unmeasured_errors
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Measured) {
        self.get.merge(&other.get);
        self.set.merge(&other.set);
        self.hits += other.hits;
        self.misses += other.misses;
        self.unmeasured_errors += other.unmeasured_errors;
        for message in &other.error_samples {
            self.note_error(message.clone());
        }
        self.last_reply = self.last_reply.max(other.last_reply);
    }

    fn op_mut(&mut self, op: Op) -> &mut OpStats {
        match op {
            Op::Get => &mut self.get,
            Op::Set => &mut self.set,
        }
    }
}

/// Counters the progress line reads while the run goes on. Connections
/// add to them once per batch of replies, not per reply.
#[derive(Debug, Default)]
pub struct Live {
    /// Measured replies so far.
    pub ops: AtomicU64,
    /// Errors so far.
    pub errors: AtomicU64,
}

impl Live {
    /// Adds a batch.
    pub fn add(&self, ops: u64, errors: u64) {
        if ops > 0 {
            self.ops.fetch_add(ops, Ordering::Relaxed);
        }
        if errors > 0 {
            self.errors.fetch_add(errors, Ordering::Relaxed);
        }
    }
}
