//! What the connections measure: per-operation HDR latency histograms and
//! counters, kept per connection without sharing and merged at the end,
//! plus the two atomics the progress line reads.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::wire::Outcome;
use super::workload::{Kind, Op};

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
            latency: new_histogram(),
            errors: 0,
            lost: 0,
            max_ns: 0,
        }
    }
}

/// A histogram of nanoseconds up to [`HIGHEST_NS`].
fn new_histogram() -> Histogram<u64> {
    // Constant bounds that meet the constructor's requirements
    // (1 <= low, 2 * low <= high, sigfig <= 5): it cannot fail.
    Histogram::new_with_bounds(1, HIGHEST_NS, SIGFIG).expect("constant histogram bounds are valid")
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

/// How far behind its schedule an open-loop client sent: the time from
/// each measured request's due time to its write.
#[derive(Debug, Clone)]
pub struct SendLag {
    /// Lag of every measured open-loop request, in nanoseconds.
    pub lag: Histogram<u64>,
    /// Exact largest lag, in nanoseconds.
    pub max_ns: u64,
    /// Requests sent more than [`LATE_AFTER`] after their due time.
    pub late: u64,
    /// Late requests that were due while every slot of their connection's
    /// window was taken: more connections or a deeper pipeline were needed.
    pub window_waits: u64,
    /// Measured requests due before the end of a `--duration` run but not
    /// sent by then: the schedule was cut short.
    pub unsent: u64,
}

impl Default for SendLag {
    fn default() -> SendLag {
        SendLag {
            lag: new_histogram(),
            max_ns: 0,
            late: 0,
            window_waits: 0,
            unsent: 0,
        }
    }
}

impl SendLag {
    /// Records the send of a measured request `lag` after its due time;
    /// `window_full` when its connection's window was full while it was due.
    pub fn record(&mut self, lag: Duration, window_full: bool) {
        let ns = u64::try_from(lag.as_nanos()).unwrap_or(u64::MAX);
        self.lag.saturating_record(ns.max(1));
        self.max_ns = self.max_ns.max(ns);
        if lag > LATE_AFTER {
            self.late += 1;
            self.window_waits += u64::from(window_full);
        }
    }

    fn merge(&mut self, other: &SendLag) {
        // Same bounds on both sides, so adding cannot fail.
        let _ = self.lag.add(&other.lag);
        self.max_ns = self.max_ns.max(other.max_ns);
        self.late += other.late;
        self.window_waits += other.window_waits;
        self.unsent += other.unsent;
    }
}

/// A request sent later than this after its due time counts as late: the
/// client's timer wakes on millisecond ticks, so up to about a millisecond
/// is the harness's own granularity.
pub const LATE_AFTER: Duration = Duration::from_millis(1);

/// Everything one connection (or, merged, the whole run) measured.
#[derive(Debug, Clone, Default)]
pub struct Measured {
    /// GET measurements.
    pub get: OpStats,
    /// SET measurements.
    pub set: OpStats,
    /// Cache-aside fills (`--on-miss set`): the SET after a GET miss.
    pub fill: OpStats,
    /// GETs that found their key (scan GETs not included).
    pub hits: u64,
    /// GETs that found nothing (scan GETs not included).
    pub misses: u64,
    /// Scan GETs (`--scan`) that found their one-time key.
    pub scan_hits: u64,
    /// Scan GETs that found nothing.
    pub scan_misses: u64,
    /// Open loop: how late requests went out.
    pub send: SendLag,
    /// Bytes written during the measured part.
    pub bytes_out: u64,
    /// Bytes read during the measured part.
    pub bytes_in: u64,
    /// Errors not tied to a measured request: error replies during the
    /// warm-up, and failed connections.
    pub unmeasured_errors: u64,
    /// The first few error messages, for the report.
    pub error_samples: Vec<String>,
    /// When the last measured reply arrived.
    pub last_reply: Option<Instant>,
}

impl Measured {
    /// Records the reply to a measured request of `kind`.
    pub fn record(&mut self, op: Op, kind: Kind, outcome: Outcome, latency: Duration) {
        let stats = self.stats_mut(op, kind);
        stats.record(latency);
        match (outcome, kind) {
            (Outcome::Hit, Kind::Scan) => self.scan_hits += 1,
            (Outcome::Miss, Kind::Scan) => self.scan_misses += 1,
            (Outcome::Hit, _) => self.hits += 1,
            (Outcome::Miss, _) => self.misses += 1,
            (Outcome::Stored, _) => {}
            (Outcome::Error(message), _) => {
                self.stats_mut(op, kind).errors += 1;
                self.note_error(message);
            }
        }
    }

    /// Records a measured request that will never be answered.
    pub fn lost(&mut self, op: Op, kind: Kind) {
        let stats = self.stats_mut(op, kind);
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
        self.get.errors + self.set.errors + self.fill.errors + self.unmeasured_errors
    }

    /// Adds `other` into `self`.
    pub fn merge(&mut self, other: &Measured) {
        self.get.merge(&other.get);
        self.set.merge(&other.set);
        self.fill.merge(&other.fill);
        self.hits += other.hits;
        self.misses += other.misses;
        self.scan_hits += other.scan_hits;
        self.scan_misses += other.scan_misses;
        self.send.merge(&other.send);
        self.bytes_out += other.bytes_out;
        self.bytes_in += other.bytes_in;
        self.unmeasured_errors += other.unmeasured_errors;
        for message in &other.error_samples {
            self.note_error(message.clone());
        }
        self.last_reply = self.last_reply.max(other.last_reply);
    }

    fn stats_mut(&mut self, op: Op, kind: Kind) -> &mut OpStats {
        match (op, kind) {
            (_, Kind::Fill) => &mut self.fill,
            (Op::Get, _) => &mut self.get,
            (Op::Set, _) => &mut self.set,
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
