//! Redis's approximated LRU: each item records the clock of its last
//! access; eviction samples five random entries into a pool of the
//! sixteen oldest candidates seen and evicts the oldest whose clock has
//! not moved since it was sampled.
//!
//! The clock counts inserts (it is bumped under the queue lock, so reads
//! only load it): items read between the same two inserts are equally
//! recent, which is finer than Redis's one-second clock.

use super::alive;
use crate::engine::memory::item::{Item, ItemRef};
use std::sync::atomic::{AtomicU32, Ordering};

/// Entries sampled per eviction (Redis's `maxmemory-samples` default).
const SAMPLES: usize = 5;

/// Candidates kept between evictions (Redis's `EVPOOL_SIZE`).
const POOL: usize = 16;

static CLOCK: AtomicU32 = AtomicU32::new(1);

/// Marks a read with the current clock.
pub fn touch(item: &Item) {
    let now = CLOCK.load(Ordering::Relaxed);
    if item.meta.load(Ordering::Relaxed) != now {
        item.meta.store(now, Ordering::Relaxed);
    }
}

#[derive(Default)]
pub struct Lru {
    entries: Vec<ItemRef>,
    /// `(clock when sampled, item)`, oldest first.
    pool: Vec<(u32, ItemRef)>,
    rng: u64,
}

impl Lru {
    /// Records `item` as just used; the number of handles kept.
    pub fn insert(&mut self, item: &ItemRef) -> usize {
        let now = CLOCK.fetch_add(1, Ordering::Relaxed).wrapping_add(1);
        item.meta.store(now, Ordering::Relaxed);
        self.entries.push(item.clone());
        self.entries.len()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Drops the handles of removed items (victims included: they stay in
    /// `entries` until sampled or compacted).
    pub fn compact(&mut self) {
        self.entries.retain(alive);
        self.pool.retain(|(_, item)| alive(item));
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: statistical quality is plenty for sampling.
        if self.rng == 0 {
            self.rng = 0x9E37_79B9_7F4A_7C15;
        }
        self.rng ^= self.rng >> 12;
        self.rng ^= self.rng << 25;
        self.rng ^= self.rng >> 27;
        self.rng.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn victim(&mut self) -> Option<ItemRef> {
        let now = CLOCK.load(Ordering::Relaxed);
        // Age with wrap-around: the clock is a u32 counter.
        let age = |stamp: u32| now.wrapping_sub(stamp);
        loop {
            let mut sampled = 0;
            let mut tries = 0;
            while sampled < SAMPLES && !self.entries.is_empty() && tries < 4 * SAMPLES {
                tries += 1;
                let i = (self.next_random() % self.entries.len() as u64) as usize;
                if !alive(&self.entries[i]) {
                    self.entries.swap_remove(i);
                    continue;
                }
                let item = self.entries[i].clone();
                sampled += 1;
                if self.pool.iter().any(|(_, p)| ItemRef::ptr_eq(p, &item)) {
                    continue;
                }
                let stamp = item.meta.load(Ordering::Relaxed);
                self.pool.push((stamp, item));
            }
            // Oldest (largest age) first; keep the best POOL.
            self.pool
                .sort_by_key(|(stamp, _)| std::cmp::Reverse(age(*stamp)));
            self.pool.truncate(POOL);
            if self.pool.is_empty() {
                return None;
            }
            while !self.pool.is_empty() {
                let (stamp, item) = self.pool.remove(0);
                let fresh = item.meta.load(Ordering::Relaxed) == stamp;
                if fresh && !item.removed.load(Ordering::Relaxed) {
                    // Its handle in `entries` dies with it and is swept
                    // when sampled or compacted.
                    return Some(item);
                }
            }
            if self.entries.is_empty() {
                return None;
            }
        }
    }
}
