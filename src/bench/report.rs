//! The figures of a finished run: a [`Report`] that prints as the human
//! table, serialises as the `--json` document and writes as `--csv` rows
//! (same figures in all three).

use std::fmt;
use std::time::Duration;

use serde::Serialize;

use super::options::{BenchOptions, Stop};
use super::stats::{Measured, OpStats};
use super::verdict::Schedule;

/// Latency and count summary of one operation kind (or of all).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct OpSummary {
    /// Measured requests.
    pub ops: u64,
    /// Measured requests per second of the measured time.
    pub throughput: f64,
    /// Requests answered with an error or not at all.
    pub errors: u64,
    /// Mean latency, microseconds.
    pub mean_us: f64,
    /// Median latency, microseconds.
    pub p50_us: f64,
    /// 90th percentile, microseconds.
    pub p90_us: f64,
    /// 99th percentile, microseconds.
    pub p99_us: f64,
    /// 99.9th percentile, microseconds.
    pub p999_us: f64,
    /// Largest latency, microseconds (exact, not bucketed).
    pub max_us: f64,
}

impl OpSummary {
    fn new(stats: &OpStats, elapsed: Duration) -> OpSummary {
        let h = &stats.latency;
        let us = |ns: u64| ns as f64 / 1000.0;
        let (mean, q) = if h.is_empty() {
            (0.0, [0; 4])
        } else {
            (
                h.mean() / 1000.0,
                // A bucket's reported value is its upper edge, which can
                // pass the exact maximum.
                [0.5, 0.9, 0.99, 0.999].map(|q| h.value_at_quantile(q).min(stats.max_ns)),
            )
        };
        OpSummary {
            ops: stats.ops(),
            throughput: rate(stats.ops(), elapsed),
            errors: stats.errors,
            mean_us: mean,
            p50_us: us(q[0]),
            p90_us: us(q[1]),
            p99_us: us(q[2]),
            p999_us: us(q[3]),
            max_us: us(stats.max_ns),
        }
    }
}

/// Preload phase figures.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct PreloadSummary {
    /// Keys written.
    pub keys: u64,
    /// Seconds it took.
    pub secs: f64,
    /// Error replies.
    pub errors: u64,
}

/// Everything a run measured, with the options that shaped it.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Report {
    /// `kvs` or `resp`.
    pub protocol: String,
    /// Server address.
    pub addr: String,
    /// Connections.
    pub connections: usize,
    /// Requests in flight per connection.
    pub pipeline: usize,
    /// GET:SET mix.
    pub ratio: String,
    /// Key space size.
    pub keys: u64,
    /// Key distribution.
    pub key_dist: String,
    /// Value size, bytes.
    pub value_size: usize,
    /// Seed.
    pub seed: u64,
    /// Open-loop target rate, requests/s; `null` for closed loop.
    pub rate: Option<f64>,
    /// Warm-up, seconds.
    pub warmup_secs: f64,
    /// `--requests`, if the run was sized by count.
    pub requests: Option<u64>,
    /// `--duration`, if the run was sized by time.
    pub duration_secs: Option<f64>,
    /// Measured time: from the end of the warm-up to the last measured
    /// reply, seconds.
    pub elapsed_secs: f64,
    /// Measured requests.
    pub ops: u64,
    /// Measured requests per second.
    pub throughput: f64,
    /// Every error: measured requests answered with an error or lost, plus
    /// error replies during the warm-up and failed connections.
    pub errors: u64,
    /// GETs that found their key.
    pub hits: u64,
    /// GETs that found nothing.
    pub misses: u64,
    /// `hits / (hits + misses)`; `null` without GETs. Scan GETs are not
    /// counted here.
    pub hit_ratio: Option<f64>,
    /// Bytes written during the measured time.
    pub bytes_out: u64,
    /// Bytes read during the measured time.
    pub bytes_in: u64,
    /// Bytes in both directions per second of the measured time, in KiB
    /// (as memtier_benchmark's KB/sec).
    pub kbytes_per_sec: f64,
    /// `--on-miss`: `none` or `set`.
    pub on_miss: String,
    /// `--scan EVERY:LENGTH`, if given.
    pub scan: Option<String>,
    /// Scan GETs that found their one-time key.
    pub scan_hits: u64,
    /// Scan GETs that found nothing.
    pub scan_misses: u64,
    /// GET figures (scan GETs included).
    pub get: OpSummary,
    /// SET figures (the mix's SETs).
    pub set: OpSummary,
    /// Cache-aside fills: SETs after GET misses, measured from their send.
    pub fill: OpSummary,
    /// GET and SET of the mix together (fills not included).
    pub all: OpSummary,
    /// Open loop: how closely the schedule was kept; `null` for closed
    /// loop.
    pub schedule: Option<Schedule>,
    /// What the figures must be read with (an open loop that did not keep
    /// its schedule, ...). Also printed on stderr.
    pub warnings: Vec<String>,
    /// The first few distinct error messages.
    pub error_samples: Vec<String>,
    /// Preload figures, when `--preload` was given.
    pub preload: Option<PreloadSummary>,
}

impl Report {
    /// The report of a run with `options` that measured `m` over
    /// `elapsed`.
    pub fn new(
        options: &BenchOptions,
        m: &Measured,
        elapsed: Duration,
        preload: Option<PreloadSummary>,
    ) -> Report {
        let mut all = m.get.clone();
        // Same histogram bounds on both sides; merging cannot fail.
        let _ = all.latency.add(&m.set.latency);
        all.errors += m.set.errors;
        all.lost += m.set.lost;
        all.max_ns = all.max_ns.max(m.set.max_ns);
        let ops = all.ops();
        let schedule = Schedule::new(options, m, ops, elapsed);
        let warnings = schedule
            .as_ref()
            .map(|s| s.warnings(ops))
            .unwrap_or_default();
        let reads = m.hits + m.misses;
        Report {
            protocol: options.protocol.to_string(),
            addr: options.addr.to_string(),
            connections: options.connections,
            pipeline: options.pipeline,
            ratio: options.ratio.to_string(),
            keys: options.keys,
            key_dist: options.key_dist.to_string(),
            value_size: options.value_size,
            seed: options.seed,
            rate: options.rate,
            warmup_secs: options.warmup.as_secs_f64(),
            requests: match options.stop {
                Stop::Requests(n) => Some(n),
                Stop::Duration(_) => None,
            },
            duration_secs: match options.stop {
                Stop::Requests(_) => None,
                Stop::Duration(d) => Some(d.as_secs_f64()),
            },
            elapsed_secs: elapsed.as_secs_f64(),
            ops,
            throughput: rate(ops, elapsed),
            errors: m.errors(),
            hits: m.hits,
            misses: m.misses,
            hit_ratio: (reads > 0).then(|| m.hits as f64 / reads as f64),
            bytes_out: m.bytes_out,
            bytes_in: m.bytes_in,
            kbytes_per_sec: rate(m.bytes_out + m.bytes_in, elapsed) / 1024.0,
            on_miss: options.on_miss.to_string(),
            scan: options.scan.map(|s| s.to_string()),
            scan_hits: m.scan_hits,
            scan_misses: m.scan_misses,
            get: OpSummary::new(&m.get, elapsed),
            set: OpSummary::new(&m.set, elapsed),
            fill: OpSummary::new(&m.fill, elapsed),
            all: OpSummary::new(&all, elapsed),
            schedule,
            warnings,
            error_samples: m.error_samples.clone(),
            preload,
        }
    }

    /// The `--json` document.
    pub fn to_json(&self) -> String {
        // A tree of plain numbers, strings and options: serialising it
        // cannot fail.
        serde_json::to_string_pretty(self).unwrap_or_default()
    }

    /// The `--csv` document: a header and one row per operation (GET, SET,
    /// FILL when there were fills, ALL), latencies in milliseconds. The
    /// ALL row carries the run's KB/s and hit figures.
    pub fn to_csv(&self) -> String {
        let mut out = String::from(
            "op,requests,rps,kbytes_per_sec,mean_ms,p50_ms,p90_ms,p99_ms,p999_ms,max_ms,errors,hits,misses,hit_ratio\n",
        );
        let ratio = self.hit_ratio.map_or(String::new(), |r| format!("{r:.4}"));
        for (name, s) in self.rows() {
            let ms = |us: f64| format!("{:.3}", us / 1000.0);
            let (kbps, hits, misses, ratio) = match name {
                "ALL" => (
                    format!("{:.1}", self.kbytes_per_sec),
                    self.hits.to_string(),
                    self.misses.to_string(),
                    ratio.clone(),
                ),
                "GET" => (
                    String::new(),
                    self.hits.to_string(),
                    self.misses.to_string(),
                    ratio.clone(),
                ),
                _ => Default::default(),
            };
            out.push_str(&format!(
                "{name},{},{:.1},{kbps},{},{},{},{},{},{},{},{hits},{misses},{ratio}\n",
                s.ops,
                s.throughput,
                ms(s.mean_us),
                ms(s.p50_us),
                ms(s.p90_us),
                ms(s.p99_us),
                ms(s.p999_us),
                ms(s.max_us),
                s.errors
            ));
        }
        out
    }

    /// The operation rows shown: GET and SET when they ran, FILL when
    /// there were fills, ALL always.
    fn rows(&self) -> Vec<(&'static str, &OpSummary)> {
        [
            ("GET", &self.get),
            ("SET", &self.set),
            ("FILL", &self.fill),
            ("ALL", &self.all),
        ]
        .into_iter()
        .filter(|(name, s)| s.ops > 0 || *name == "ALL")
        .collect()
    }
}

fn rate(ops: u64, elapsed: Duration) -> f64 {
    let secs = elapsed.as_secs_f64();
    if secs > 0.0 { ops as f64 / secs } else { 0.0 }
}

impl fmt::Display for Report {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let load = match self.rate {
            Some(rate) => format!("open loop at {rate} req/s"),
            None => "closed loop".to_owned(),
        };
        writeln!(
            f,
            "{} {}: {} connections, pipeline {}, GET:SET {}, {} keys {}, {} B values, {load}, seed {}",
            self.protocol,
            self.addr,
            self.connections,
            self.pipeline,
            self.ratio,
            self.keys,
            self.key_dist,
            self.value_size,
            self.seed,
        )?;
        if let Some(p) = &self.preload {
            writeln!(
                f,
                "preload: {} keys in {:.2} s, {} errors",
                p.keys, p.secs, p.errors
            )?;
        }
        writeln!(
            f,
            "{} requests in {:.2} s: {:.0} req/s, {:.1} KB/s, {} errors",
            self.ops, self.elapsed_secs, self.throughput, self.kbytes_per_sec, self.errors
        )?;
        if let Some(s) = &self.schedule {
            writeln!(
                f,
                "schedule: {:.0} of {} req/s ({:.1}%), {} sent late (> {:.0} ms; lag p99 {:.3} ms, max {:.3} ms), {} unsent; window {} in flight covers latency up to {:.3} ms",
                s.achieved_rate,
                s.target_rate,
                100.0 * s.achieved_ratio,
                s.sent_late,
                s.late_after_us / 1000.0,
                s.send_lag_p99_us / 1000.0,
                s.send_lag_max_us / 1000.0,
                s.unsent,
                s.window,
                s.window_covers_latency_us / 1000.0,
            )?;
        }
        let from = if self.rate.is_some() {
            "from each request's due time"
        } else {
            "from each request's send time"
        };
        writeln!(f, "latency in ms, {from}:")?;
        writeln!(
            f,
            "{:<4} {:>10} {:>11} {:>8} {:>8} {:>8} {:>8} {:>8} {:>8} {:>7}",
            "op", "requests", "req/s", "mean", "p50", "p90", "p99", "p99.9", "max", "errors"
        )?;
        for (name, s) in self.rows() {
            let ms = |us: f64| us / 1000.0;
            writeln!(
                f,
                "{name:<4} {:>10} {:>11.0} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>8.3} {:>7}",
                s.ops,
                s.throughput,
                ms(s.mean_us),
                ms(s.p50_us),
                ms(s.p90_us),
                ms(s.p99_us),
                ms(s.p999_us),
                ms(s.max_us),
                s.errors
            )?;
        }
        if let Some(ratio) = self.hit_ratio {
            writeln!(
                f,
                "GET hits {} misses {} ({:.2}% hits){}",
                self.hits,
                self.misses,
                100.0 * ratio,
                if self.on_miss == "set" {
                    format!(", {} fills (--on-miss set)", self.fill.ops)
                } else {
                    String::new()
                }
            )?;
        }
        if let Some(scan) = &self.scan {
            writeln!(
                f,
                "scans {scan}: {} one-time GETs ({} hits), not in the hit ratio",
                self.scan_hits + self.scan_misses,
                self.scan_hits
            )?;
        }
        for message in &self.error_samples {
            writeln!(f, "error: {message}")?;
        }
        for warning in &self.warnings {
            writeln!(f, "WARNING: {warning}")?;
        }
        Ok(())
    }
}
