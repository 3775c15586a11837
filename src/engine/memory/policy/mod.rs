//! Which entry to evict when the memory bound is reached.
//!
//! Each policy keeps its own queue of handles to the items, behind one
//! mutex taken on insert and on eviction only; a read marks its item with
//! one relaxed atomic store ([`Policy::touch`]) and takes no other lock.
//! A removed item stays in the queues as a dead handle until the policy
//! meets it or compacts its queues; since a handle keeps the whole item
//! allocated, the queues are compacted once the bytes of dead items pass a
//! sixteenth of the bound, by the insert or the removal that takes them
//! there ([`Policy::removed`]), and by the expiry thread's tick once
//! removals pause ([`Policy::tick`]), so that memory comes back even when
//! nothing is written any more.
//!
//! - [`sieve`]: SIEVE (Zhang et al., NSDI '24): a FIFO with a visited bit
//!   and a hand that keeps visited items in place.
//! - [`s3fifo`]: S3-FIFO (Yang et al., SOSP '23): a small probationary
//!   FIFO, a main FIFO with reinsertion and a ghost FIFO of recent victims.
//! - [`lru`]: Redis's approximated LRU: sample five entries, evict the
//!   least recently used of a pool of the best candidates seen.

mod lru;
mod s3fifo;
mod sieve;

use std::fmt;
use std::str::FromStr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::item::{Item, ItemRef};
use crate::{KvsError, Result};

/// What the memory engine does when a write would take it over its bound.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EvictionPolicy {
    /// Refuse the write with [`KvsError::OutOfMemory`]; nothing is lost.
    NoEviction,
    /// Redis's sampled approximation of least-recently-used.
    Lru,
    /// SIEVE.
    Sieve,
    /// S3-FIFO.
    S3Fifo,
}

impl EvictionPolicy {
    /// The default for a bounded memory engine, chosen by measurement
    /// (BENCHMARKS.md, "Cache hit ratio").
    pub const DEFAULT: EvictionPolicy = EvictionPolicy::S3Fifo;

    /// Every policy, for benchmarks and help texts.
    pub const ALL: [EvictionPolicy; 4] = [
        EvictionPolicy::NoEviction,
        EvictionPolicy::Lru,
        EvictionPolicy::Sieve,
        EvictionPolicy::S3Fifo,
    ];

    /// The name used by `--eviction`.
    pub fn name(self) -> &'static str {
        match self {
            EvictionPolicy::NoEviction => "noeviction",
            EvictionPolicy::Lru => "lru",
            EvictionPolicy::Sieve => "sieve",
            EvictionPolicy::S3Fifo => "s3fifo",
        }
    }
}

impl Default for EvictionPolicy {
    fn default() -> EvictionPolicy {
        EvictionPolicy::DEFAULT
    }
}

impl fmt::Display for EvictionPolicy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EvictionPolicy {
    type Err = KvsError;

    /// Accepts the names of [`name`](Self::name) and Redis's
    /// `allkeys-lru` for [`Lru`](Self::Lru).
    fn from_str(s: &str) -> Result<EvictionPolicy> {
        match s.to_ascii_lowercase().as_str() {
            "noeviction" => Ok(EvictionPolicy::NoEviction),
            "lru" | "allkeys-lru" => Ok(EvictionPolicy::Lru),
            "sieve" => Ok(EvictionPolicy::Sieve),
            "s3fifo" | "s3-fifo" => Ok(EvictionPolicy::S3Fifo),
            other => Err(KvsError::InvalidInput(format!(
                "unknown eviction policy `{other}` (expected noeviction, lru, sieve or s3fifo)"
            ))),
        }
    }
}

/// A policy's queues.
enum Queues {
    None,
    Lru(lru::Lru),
    Sieve(sieve::Sieve),
    S3Fifo(s3fifo::S3Fifo),
}

/// The eviction state of one engine.
pub struct Policy {
    kind: EvictionPolicy,
    queues: Mutex<Queues>,
    /// Bytes of removed items whose handles may still be queued.
    dead: AtomicU64,
    /// `dead` that triggers a compaction at the insert or removal that
    /// passes it; 0 when no queue is kept.
    dead_limit: u64,
    /// `dead` as [`tick`](Self::tick) last saw it.
    dead_at_tick: AtomicU64,
}

impl Policy {
    /// State for `kind` with a bound of `max_memory` bytes (0: unbounded,
    /// and no queue is kept at all).
    pub fn new(kind: EvictionPolicy, max_memory: u64) -> Policy {
        let queues = match kind {
            _ if max_memory == 0 => Queues::None,
            EvictionPolicy::NoEviction => Queues::None,
            EvictionPolicy::Lru => Queues::Lru(lru::Lru::default()),
            EvictionPolicy::Sieve => Queues::Sieve(sieve::Sieve::default()),
            EvictionPolicy::S3Fifo => Queues::S3Fifo(s3fifo::S3Fifo::new(max_memory)),
        };
        // 0 where nothing is queued: `removed` then counts nothing.
        let dead_limit = match queues {
            Queues::None => 0,
            _ => (max_memory / 16).max(4096),
        };
        Policy {
            kind,
            queues: Mutex::new(queues),
            dead: AtomicU64::new(0),
            dead_limit,
            dead_at_tick: AtomicU64::new(0),
        }
    }

    /// The policy.
    pub fn kind(&self) -> EvictionPolicy {
        self.kind
    }

    fn lock(&self) -> MutexGuard<'_, Queues> {
        // Queue operations do not panic between steps that must go
        // together (a push or a pop each), so a poisoned queue is usable.
        self.queues.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Records a new item of `charge` bytes; `live` is the number of keys,
    /// to know when dead handles are worth compacting away.
    pub fn insert(&self, item: &ItemRef, charge: u64, live: u64) {
        let mut queues = self.lock();
        let len = match &mut *queues {
            Queues::None => return,
            Queues::Lru(q) => q.insert(item),
            Queues::Sieve(q) => q.insert(item),
            Queues::S3Fifo(q) => q.insert(item, charge),
        };
        if self.dead.load(Ordering::Relaxed) > self.dead_limit || worth_compacting(len, live) {
            self.compact(&mut queues);
        }
    }

    /// Drops the handles of removed items, and with them (when no reader
    /// holds one) the items' memory.
    fn compact(&self, queues: &mut Queues) {
        // Handles of items removed from here on may survive this pass
        // (they are counted again); those removed before are gone.
        self.dead.swap(0, Ordering::Relaxed);
        match queues {
            Queues::None => {}
            Queues::Lru(q) => q.compact(),
            Queues::Sieve(q) => q.compact(),
            Queues::S3Fifo(q) => q.compact(),
        }
    }

    /// Records that an item of `charge` bytes left the index: `evicted`
    /// when it is a victim the queues already gave up (SIEVE and S3-FIFO
    /// pop their victims; LRU's sample array keeps them until compacted).
    pub fn removed(&self, charge: u64, evicted: bool) {
        let queued = match self.kind {
            EvictionPolicy::NoEviction => false,
            EvictionPolicy::Lru => true,
            EvictionPolicy::Sieve | EvictionPolicy::S3Fifo => !evicted,
        };
        if queued && self.dead_limit != 0 {
            let dead = self.dead.fetch_add(charge, Ordering::Relaxed) + charge;
            // Removals alone (deletes, expiry, LRU's evictions) must free
            // memory too, not only the next insert.
            if dead > self.dead_limit {
                self.compact(&mut self.lock());
            }
        }
    }

    /// Called by the expiry thread every tick: compacts when removed items
    /// still hold memory and no removal happened since the last tick, so
    /// the bytes under the limit that no insert or removal will come to
    /// collect (all keys expired, nothing written) are freed within two
    /// ticks of the last removal. A pass costs O(queue length); running it
    /// only once removals pause keeps a steady stream of deletes from
    /// paying it every tick.
    pub fn tick(&self) {
        let dead = self.dead.load(Ordering::Relaxed);
        let before = self.dead_at_tick.swap(dead, Ordering::Relaxed);
        if dead != 0 && dead == before {
            self.compact(&mut self.lock());
            self.dead_at_tick.store(0, Ordering::Relaxed);
        }
    }

    /// Marks a read (or overwrite) of `item`. Lock-free.
    pub fn touch(&self, item: &Item) {
        match self.kind {
            EvictionPolicy::NoEviction => {}
            EvictionPolicy::Lru => lru::touch(item),
            EvictionPolicy::Sieve => {
                // Load first: a hot item's cache line stays shared.
                if item.meta.load(Ordering::Relaxed) == 0 {
                    item.meta.store(1, Ordering::Relaxed);
                }
            }
            EvictionPolicy::S3Fifo => s3fifo::touch(item),
        }
    }

    /// Takes the next victim out of the queues: a live item the caller
    /// removes, or `None` when there is nothing left to evict.
    pub fn victim(&self) -> Option<ItemRef> {
        match &mut *self.lock() {
            Queues::None => None,
            Queues::Lru(q) => q.victim(),
            Queues::Sieve(q) => q.victim(),
            Queues::S3Fifo(q) => q.victim(),
        }
    }

    /// Forgets every item (the engine was cleared).
    pub fn clear(&self) {
        match &mut *self.lock() {
            Queues::None => {}
            Queues::Lru(q) => *q = lru::Lru::default(),
            Queues::Sieve(q) => *q = sieve::Sieve::default(),
            Queues::S3Fifo(q) => q.clear(),
        }
        self.dead.store(0, Ordering::Relaxed);
    }
}

/// Whether a queue of `len` handles over `live` keys holds enough dead ones
/// to be worth a compaction pass (amortised O(1) per insert).
fn worth_compacting(len: usize, live: u64) -> bool {
    len as u64 > 2 * live + 1024
}

/// Whether a queue handle's item is still indexed.
fn alive(handle: &ItemRef) -> bool {
    !handle.removed.load(Ordering::Relaxed)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NO_EXPIRY;

    impl Policy {
        fn queued(&self) -> usize {
            match &*self.lock() {
                Queues::None => 0,
                Queues::Lru(q) => q.len(),
                Queues::Sieve(q) => q.len(),
                Queues::S3Fifo(q) => q.len(),
            }
        }
    }

    /// A queued handle keeps its whole item allocated, so removed items
    /// leave the queues once their bytes reach a sixteenth of the bound,
    /// even while the live count stays high.
    #[test]
    fn removed_items_leave_the_queues_after_a_sixteenth_of_the_bound() {
        for kind in [
            EvictionPolicy::Lru,
            EvictionPolicy::Sieve,
            EvictionPolicy::S3Fifo,
        ] {
            let bound = 1 << 20;
            let policy = Policy::new(kind, bound);
            let live: Vec<ItemRef> = (0..1_000)
                .map(|i| ItemRef::new(&format!("live{i}"), "v", NO_EXPIRY))
                .collect();
            for item in &live {
                policy.insert(item, 100, 1_000);
            }
            // 2,000 items of 100 bytes come and go: 200 kB dead, three
            // times the 64 kB limit; the live count alone would trigger a
            // compaction only past 3,024 handles, which are never queued.
            for i in 0..2_000 {
                let item = ItemRef::new(&format!("gone{i}"), "v", NO_EXPIRY);
                policy.insert(&item, 100, 1_000);
                item.removed.store(true, Ordering::Relaxed);
                policy.removed(100, false);
            }
            let queued = policy.queued();
            assert!(queued < 1_000 + 700, "{kind}: {queued} handles queued");
        }
    }
}
