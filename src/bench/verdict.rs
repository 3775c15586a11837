//! Whether an open-loop run kept its schedule, and the warnings a report
//! carries when it did not: an achieved rate under 95 % of `--rate`, a
//! schedule cut short, a window (connections × pipeline) too small for the
//! rate, a client that fell behind by itself.

use std::time::Duration;

use serde::Serialize;

use super::options::{BenchOptions, Stop};
use super::stats::{LATE_AFTER, Measured};

/// The fraction of `--rate` below which a run did not keep its schedule.
pub const KEPT_RATIO: f64 = 0.95;

/// Open-loop figures: how closely the schedule was kept.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Schedule {
    /// `--rate`, requests per second.
    pub target_rate: f64,
    /// Measured requests sent per second of the measured time (the
    /// `--duration`, or until the last reply of a `--requests` run).
    pub achieved_rate: f64,
    /// `achieved_rate / target_rate`.
    pub achieved_ratio: f64,
    /// Measured requests sent more than `late_after_us` after their due
    /// time (their latency still runs from the due time).
    pub sent_late: u64,
    /// The lateness that counts as late, microseconds.
    pub late_after_us: f64,
    /// 99th percentile of the send lag (due time to write), microseconds.
    pub send_lag_p99_us: f64,
    /// Largest send lag, microseconds.
    pub send_lag_max_us: f64,
    /// Late requests that were due while their connection's window was
    /// full.
    pub window_waits: u64,
    /// Requests due before the end of a `--duration` run that were never
    /// sent: the schedule was cut short.
    pub unsent: u64,
    /// Requests in flight at most: connections × pipeline.
    pub window: u64,
    /// The latency under which that window can carry `--rate`,
    /// microseconds (`window / rate`).
    pub window_covers_latency_us: f64,
    /// `true` when the achieved rate reached 95 % of the target and the
    /// schedule was not cut: what `--strict` requires.
    pub kept: bool,
}

impl Schedule {
    /// The schedule figures of an open-loop run; `None` for closed loop.
    pub fn new(
        options: &BenchOptions,
        m: &Measured,
        ops: u64,
        elapsed: Duration,
    ) -> Option<Schedule> {
        let target = options.rate?;
        let span = match options.stop {
            Stop::Duration(d) => d,
            Stop::Requests(_) => elapsed,
        };
        let achieved = if span.is_zero() {
            0.0
        } else {
            ops as f64 / span.as_secs_f64()
        };
        let lag = &m.send.lag;
        let us = |ns: u64| ns as f64 / 1000.0;
        let p99 = if lag.is_empty() {
            0
        } else {
            lag.value_at_quantile(0.99).min(m.send.max_ns)
        };
        let window = (options.connections * options.pipeline) as u64;
        let ratio = achieved / target;
        Some(Schedule {
            target_rate: target,
            achieved_rate: achieved,
            achieved_ratio: ratio,
            sent_late: m.send.late,
            late_after_us: LATE_AFTER.as_secs_f64() * 1e6,
            send_lag_p99_us: us(p99),
            send_lag_max_us: us(m.send.max_ns),
            window_waits: m.send.window_waits,
            unsent: m.send.unsent,
            window,
            window_covers_latency_us: window as f64 / target * 1e6,
            kept: ratio >= KEPT_RATIO && m.send.unsent == 0,
        })
    }

    /// The warnings this schedule deserves, each a full sentence.
    pub fn warnings(&self, ops: u64) -> Vec<String> {
        let mut warnings = Vec::new();
        if self.achieved_ratio < KEPT_RATIO {
            warnings.push(format!(
                "achieved {:.0} req/s, {:.1}% of --rate {}: the server (or this client) \
                 did not keep up, so this is not a run at the rate asked for",
                self.achieved_rate,
                100.0 * self.achieved_ratio,
                self.target_rate
            ));
        }
        if self.unsent > 0 {
            warnings.push(format!(
                "the schedule was cut short: {} requests due before the end were never sent \
                 (their latency is not in the figures)",
                self.unsent
            ));
        }
        if self.window_waits > 0 {
            warnings.push(format!(
                "{} requests were due while their connection's window was full \
                 (connections x pipeline = {} in flight carries --rate {} only while latency \
                 stays under {:.0} us); their wait is in the latency: raise -c or -P if the \
                 server was not the cause",
                self.window_waits, self.window, self.target_rate, self.window_covers_latency_us
            ));
        }
        let client_late = self.sent_late - self.window_waits;
        if ops > 0 && client_late * 100 > ops {
            warnings.push(format!(
                "this client sent {client_late} requests late with room in their window \
                 (send lag p99 {:.3} ms, max {:.3} ms): the client, or other load on its \
                 machine, fell behind by itself; their wait is in the latency too \
                 (try --threads 2, or a quieter machine)",
                self.send_lag_p99_us / 1000.0,
                self.send_lag_max_us / 1000.0
            ));
        }
        warnings
    }
}
