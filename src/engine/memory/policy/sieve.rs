//! SIEVE: one FIFO, a visited bit per item, and a hand moving from the
//! oldest item to the newest. The hand evicts the first unvisited item and
//! clears the bit of the visited ones it passes, which stay where they are;
//! new items enter at the head.
//!
//! The list is kept as two FIFOs: `ahead` holds the items from the hand to
//! the head (new items join its back), `behind` the items the hand has
//! passed, oldest first. When the hand reaches the head it wraps to the
//! oldest item: `behind` becomes `ahead`. Every step is O(1) and no item
//! moves, which is exactly SIEVE's order.

use super::alive;
use crate::engine::memory::item::ItemRef;
use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::Ordering;

#[derive(Default)]
pub struct Sieve {
    ahead: VecDeque<ItemRef>,
    behind: VecDeque<ItemRef>,
}

impl Sieve {
    /// Queues `item`; the number of handles queued.
    pub fn insert(&mut self, item: &ItemRef) -> usize {
        self.ahead.push_back(item.clone());
        self.ahead.len() + self.behind.len()
    }

    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.ahead.len() + self.behind.len()
    }

    /// Drops the handles of removed items.
    pub fn compact(&mut self) {
        self.ahead.retain(alive);
        self.behind.retain(alive);
    }

    pub fn victim(&mut self) -> Option<ItemRef> {
        // Two full turns of the hand clear every bit; readers setting bits
        // meanwhile cannot keep it turning past that.
        let mut budget = 2 * (self.ahead.len() + self.behind.len()) + 1;
        loop {
            if self.ahead.is_empty() {
                mem::swap(&mut self.ahead, &mut self.behind);
            }
            let item = self.ahead.pop_front()?;
            if !alive(&item) {
                continue;
            }
            budget = budget.saturating_sub(1);
            if item.meta.swap(0, Ordering::Relaxed) != 0 && budget > 0 {
                self.behind.push_back(item);
                continue;
            }
            return Some(item);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::engine::NO_EXPIRY;

    /// SIEVE as the paper writes it: one list, oldest first, and a hand
    /// index; visited items stay in place.
    #[derive(Default)]
    struct Reference {
        list: Vec<(usize, bool)>,
        hand: usize,
    }

    impl Reference {
        fn evict(&mut self) -> Option<usize> {
            if self.list.is_empty() {
                return None;
            }
            loop {
                if self.hand >= self.list.len() {
                    self.hand = 0;
                }
                if self.list[self.hand].1 {
                    self.list[self.hand].1 = false;
                    self.hand += 1;
                } else {
                    return Some(self.list.remove(self.hand).0);
                }
            }
        }
    }

    #[test]
    fn two_fifos_evict_exactly_what_sieve_evicts() {
        for seed in 0..20u64 {
            let mut rng = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
            let mut next = || {
                rng ^= rng << 13;
                rng ^= rng >> 7;
                rng ^= rng << 17;
                rng
            };
            let mut sieve = Sieve::default();
            let mut reference = Reference::default();
            let mut items: Vec<ItemRef> = Vec::new();
            for _ in 0..2_000 {
                match next() % 3 {
                    0 => {
                        let id = items.len();
                        let item = ItemRef::new(&id.to_string(), "", NO_EXPIRY);
                        sieve.insert(&item);
                        reference.list.push((id, false));
                        items.push(item);
                    }
                    1 if !reference.list.is_empty() => {
                        let (id, _) = reference.list[next() as usize % reference.list.len()];
                        items[id].meta.store(1, Ordering::Relaxed);
                        if let Some(e) = reference.list.iter_mut().find(|e| e.0 == id) {
                            e.1 = true;
                        }
                    }
                    _ => {
                        let got = sieve
                            .victim()
                            .map(|item| item.key().parse::<usize>().unwrap());
                        if let Some(id) = got {
                            items[id].removed.store(true, Ordering::Relaxed);
                        }
                        assert_eq!(got, reference.evict(), "seed {seed}");
                    }
                }
            }
        }
    }
}
