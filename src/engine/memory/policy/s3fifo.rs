//! S3-FIFO: new items enter a small FIFO (10% of the bytes); those read
//! while there move to the main FIFO, the others are evicted and remembered
//! in a ghost FIFO of key hashes, so a key that comes back soon goes
//! straight to main. Main evicts in FIFO order, reinserting items read
//! since their last pass with their 2-bit frequency decremented.
//! One-hit wonders (scans) leave through the small FIFO without
//! displacing the main working set.

use super::alive;
use crate::engine::memory::item::{Item, ItemRef};
use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;

/// Highest frequency counted (2 bits, as in the paper).
const MAX_FREQ: u32 = 3;

/// Reads while in the small FIFO that earn a move to main.
const TO_MAIN: u32 = 1;

/// Marks a read: the frequency saturates at [`MAX_FREQ`].
pub fn touch(item: &Item) {
    let f = item.meta.load(Ordering::Relaxed);
    if f < MAX_FREQ {
        item.meta.store(f + 1, Ordering::Relaxed);
    }
}

struct Fifo {
    queue: VecDeque<(ItemRef, u64)>,
    bytes: u64,
}

impl Fifo {
    fn new() -> Fifo {
        Fifo {
            queue: VecDeque::new(),
            bytes: 0,
        }
    }

    fn push(&mut self, handle: ItemRef, charge: u64) {
        self.bytes += charge;
        self.queue.push_back((handle, charge));
    }

    fn pop(&mut self) -> Option<(ItemRef, u64)> {
        let (handle, charge) = self.queue.pop_front()?;
        self.bytes -= charge;
        Some((handle, charge))
    }

    fn compact(&mut self) {
        self.queue.retain(|(h, _)| alive(h));
        self.bytes = self.queue.iter().map(|(_, c)| c).sum();
    }
}

pub struct S3Fifo {
    small: Fifo,
    main: Fifo,
    ghost: VecDeque<u64>,
    ghost_set: HashMap<u64, u32>,
    small_target: u64,
    hasher: RandomState,
}

impl S3Fifo {
    pub fn new(max_memory: u64) -> S3Fifo {
        S3Fifo {
            small: Fifo::new(),
            main: Fifo::new(),
            ghost: VecDeque::new(),
            ghost_set: HashMap::new(),
            small_target: (max_memory / 10).max(1),
            hasher: RandomState::new(),
        }
    }

    pub fn clear(&mut self) {
        *self = S3Fifo {
            hasher: self.hasher.clone(),
            ..S3Fifo::new(self.small_target * 10)
        };
    }

    /// Queues `item` of `charge` bytes; the number of handles queued.
    pub fn insert(&mut self, item: &ItemRef, charge: u64) -> usize {
        let hash = self.hasher.hash_one(item.key());
        let handle = item.clone();
        if self.forget_ghost(hash) {
            self.main.push(handle, charge);
        } else {
            self.small.push(handle, charge);
        }
        self.small.queue.len() + self.main.queue.len()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.small.queue.len() + self.main.queue.len()
    }

    /// Drops the handles of removed items.
    pub fn compact(&mut self) {
        self.small.compact();
        self.main.compact();
    }

    pub fn victim(&mut self) -> Option<ItemRef> {
        loop {
            if self.small.bytes >= self.small_target || self.main.queue.is_empty() {
                if let Some(item) = self.evict_small() {
                    return Some(item);
                }
                if self.small.queue.is_empty() && self.main.queue.is_empty() {
                    return None;
                }
            } else if let Some(item) = self.evict_main() {
                return Some(item);
            }
        }
    }

    /// One step of the small FIFO: a victim, or `None` after moving an
    /// item to main or dropping a dead handle.
    fn evict_small(&mut self) -> Option<ItemRef> {
        let (item, charge) = self.small.pop()?;
        if !alive(&item) {
            return None;
        }
        if item.meta.load(Ordering::Relaxed) >= TO_MAIN {
            item.meta.store(0, Ordering::Relaxed);
            self.main.push(item, charge);
            return None;
        }
        self.remember_ghost(self.hasher.hash_one(item.key()));
        Some(item)
    }

    /// Main evicts in FIFO order; an item read since its last pass goes
    /// around again with its frequency decremented.
    fn evict_main(&mut self) -> Option<ItemRef> {
        // Each item's frequency drops at every pass, so this ends within
        // MAX_FREQ + 1 turns.
        loop {
            let (item, charge) = self.main.pop()?;
            if !alive(&item) {
                continue;
            }
            let f = item.meta.load(Ordering::Relaxed);
            if f > 0 {
                item.meta.store(f - 1, Ordering::Relaxed);
                self.main.push(item, charge);
                continue;
            }
            return Some(item);
        }
    }

    /// The ghost holds as many hashes as main holds items.
    fn remember_ghost(&mut self, hash: u64) {
        self.ghost.push_back(hash);
        *self.ghost_set.entry(hash).or_insert(0) += 1;
        while self.ghost.len() > self.main.queue.len().max(16) {
            if let Some(old) = self.ghost.pop_front() {
                self.drop_ghost(old);
            }
        }
    }

    fn forget_ghost(&mut self, hash: u64) -> bool {
        // The FIFO keeps the hash until it ages out; the set decides.
        self.ghost_set.remove(&hash).is_some()
    }

    fn drop_ghost(&mut self, hash: u64) {
        if let Some(n) = self.ghost_set.get_mut(&hash) {
            *n -= 1;
            if *n == 0 {
                self.ghost_set.remove(&hash);
            }
        }
    }
}
