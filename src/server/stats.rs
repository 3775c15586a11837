//! Server-wide counters: what `INFO` (RESP) and the native `Stats`
//! request report, next to the engine's own [`EngineStats`].
//!
//! Counters are updated on every request from every connection task, so
//! they are sharded: each connection adds to one of a few cache-line
//! padded slots chosen by its id, and a snapshot sums the slots. Counting
//! then costs an uncontended relaxed add.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use serde::{Deserialize, Serialize};

use crate::engine::EngineStats;

/// Slots the counters are spread over.
const SHARDS: usize = 16;

/// The counters of one shard, on its own cache lines.
#[derive(Default)]
#[repr(align(128))]
struct Shard {
    commands: AtomicU64,
    hits: AtomicU64,
    misses: AtomicU64,
    bytes_in: AtomicU64,
    bytes_out: AtomicU64,
    protocol_errors: AtomicU64,
}

/// Counters shared by every connection of one server.
pub struct ServerStats {
    started: Instant,
    shards: [Shard; SHARDS],
    connections_current: AtomicU64,
    connections_total: AtomicU64,
    connections_refused: AtomicU64,
    error_ids: AtomicU64,
}

impl Default for ServerStats {
    fn default() -> ServerStats {
        ServerStats {
            started: Instant::now(),
            shards: Default::default(),
            connections_current: AtomicU64::new(0),
            connections_total: AtomicU64::new(0),
            connections_refused: AtomicU64::new(0),
            error_ids: AtomicU64::new(0),
        }
    }
}

/// What a connection counts with: a handle onto one shard.
#[derive(Clone, Copy)]
pub struct Counter<'a> {
    shard: &'a Shard,
}

impl Counter<'_> {
    /// Commands processed (each pipelined command counts).
    pub fn commands(&self, n: u64) {
        self.shard.commands.fetch_add(n, Ordering::Relaxed);
    }

    /// Key lookups that found a value / found none.
    pub fn lookups(&self, hits: u64, misses: u64) {
        if hits > 0 {
            self.shard.hits.fetch_add(hits, Ordering::Relaxed);
        }
        if misses > 0 {
            self.shard.misses.fetch_add(misses, Ordering::Relaxed);
        }
    }

    /// Bytes read from clients.
    pub fn bytes_in(&self, n: u64) {
        self.shard.bytes_in.fetch_add(n, Ordering::Relaxed);
    }

    /// Bytes written to clients.
    pub fn bytes_out(&self, n: u64) {
        self.shard.bytes_out.fetch_add(n, Ordering::Relaxed);
    }

    /// A request that broke the protocol.
    pub fn protocol_error(&self) {
        self.shard.protocol_errors.fetch_add(1, Ordering::Relaxed);
    }
}

impl ServerStats {
    /// The counter handle for connection `id`.
    pub fn counter(&self, id: u64) -> Counter<'_> {
        Counter {
            shard: &self.shards[id as usize % SHARDS],
        }
    }

    /// A connection was accepted and is served.
    pub fn connection_opened(&self) {
        self.connections_current.fetch_add(1, Ordering::Relaxed);
        self.connections_total.fetch_add(1, Ordering::Relaxed);
    }

    /// A served connection closed.
    pub fn connection_closed(&self) {
        self.connections_current.fetch_sub(1, Ordering::Relaxed);
    }

    /// A connection was refused (over the connection cap).
    pub fn connection_refused(&self) {
        self.connections_refused.fetch_add(1, Ordering::Relaxed);
    }

    /// A fresh id for an internal error: the client's message and the
    /// server log both carry it.
    pub fn next_error_id(&self) -> u64 {
        self.error_ids.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Sums the shards.
    pub fn snapshot(&self) -> StatsSnapshot {
        let sum = |f: fn(&Shard) -> &AtomicU64| {
            self.shards
                .iter()
                .map(|s| f(s).load(Ordering::Relaxed))
                .sum::<u64>()
        };
        StatsSnapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            connections_current: self.connections_current.load(Ordering::Relaxed),
            connections_total: self.connections_total.load(Ordering::Relaxed),
            connections_refused: self.connections_refused.load(Ordering::Relaxed),
            commands: sum(|s| &s.commands),
            hits: sum(|s| &s.hits),
            misses: sum(|s| &s.misses),
            bytes_in: sum(|s| &s.bytes_in),
            bytes_out: sum(|s| &s.bytes_out),
            protocol_errors: sum(|s| &s.protocol_errors),
            rss_bytes: rss_bytes(),
            engine: EngineStats::default(),
        }
    }
}

/// Every counter at one moment: the body of the native `Stats` response
/// and the source of RESP `INFO`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatsSnapshot {
    /// Seconds since the server started.
    pub uptime_secs: u64,
    /// Connections being served.
    pub connections_current: u64,
    /// Connections served since start.
    pub connections_total: u64,
    /// Connections refused over the cap.
    pub connections_refused: u64,
    /// Commands processed.
    pub commands: u64,
    /// Lookups that found a value.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
    /// Bytes read from clients.
    pub bytes_in: u64,
    /// Bytes written to clients.
    pub bytes_out: u64,
    /// Requests that broke the protocol.
    pub protocol_errors: u64,
    /// Resident set size of the process, from `/proc/self/statm`.
    pub rss_bytes: u64,
    /// The engine's figures.
    pub engine: EngineStats,
}

/// Resident set size of this process in bytes; 0 where `/proc` is absent.
pub fn rss_bytes() -> u64 {
    let Ok(statm) = std::fs::read_to_string("/proc/self/statm") else {
        return 0;
    };
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    // SAFETY: sysconf has no preconditions; it reads a constant.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    pages * u64::try_from(page).unwrap_or(4096)
}
