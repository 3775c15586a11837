//! S3-FIFO: new items enter a small FIFO (10% of the bytes); those read
//! while there move to the main FIFO, the others are evicted and remembered
//! in a ghost FIFO of key hashes, so a key that comes back soon goes
//! straight to main. Main evicts in FIFO order, reinserting items read
//! since their last pass with their 2-bit frequency decremented.
//! One-hit wonders (scans) leave through the small FIFO without
//! displacing the main working set.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{alive, worth_compacting};
use crate::engine::memory::item::Item;

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
    queue: VecDeque<(Weak<Item>, u64)>,
    bytes: u64,
}

impl Fifo {
    fn new() -> Fifo {
        Fifo {
            queue: VecDeque::new(),
            bytes: 0,
        }
    }

    fn push(&mut self, handle: Weak<Item>, charge: u64) {
        self.bytes += charge;
        self.queue.push_back((handle, charge));
    }

    fn pop(&mut self) -> Option<(Weak<Item>, u64)> {
        let (handle, charge) = self.queue.pop_front()?;
        self.bytes -= charge;
        Some((handle, charge))
    }

    fn compact(&mut self) {
        self.queue.retain(|(h, _)| alive(h).is_some());
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

    pub fn insert(&mut self, item: &Arc<Item>, charge: u64, live: usize) {
        let hash = self.hasher.hash_one(item.key());
        let handle = Arc::downgrade(item);
        if self.forget_ghost(hash) {
            self.main.push(handle, charge);
        } else {
            self.small.push(handle, charge);
        }
        if worth_compacting(self.small.queue.len() + self.main.queue.len(), live) {
            self.small.compact();
            self.main.compact();
        }
    }

    pub fn victim(&mut self) -> Option<Arc<Item>> {
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
    fn evict_small(&mut self) -> Option<Arc<Item>> {
        let (handle, charge) = self.small.pop()?;
        let item = alive(&handle)?;
        if item.meta.load(Ordering::Relaxed) >= TO_MAIN {
            item.meta.store(0, Ordering::Relaxed);
            self.main.push(handle, charge);
            return None;
        }
        self.remember_ghost(self.hasher.hash_one(item.key()));
        Some(item)
    }

    /// Main evicts in FIFO order; an item read since its last pass goes
    /// around again with its frequency decremented.
    fn evict_main(&mut self) -> Option<Arc<Item>> {
        // Each item's frequency drops at every pass, so this ends within
        // MAX_FREQ + 1 turns.
        loop {
            let (handle, charge) = self.main.pop()?;
            let Some(item) = alive(&handle) else {
                continue;
            };
            let f = item.meta.load(Ordering::Relaxed);
            if f > 0 {
                item.meta.store(f - 1, Ordering::Relaxed);
                self.main.push(handle, charge);
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
