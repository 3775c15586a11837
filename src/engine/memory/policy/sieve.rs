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

use std::collections::VecDeque;
use std::mem;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Weak};

use super::{alive, worth_compacting};
use crate::engine::memory::item::Item;

#[derive(Default)]
pub struct Sieve {
    ahead: VecDeque<Weak<Item>>,
    behind: VecDeque<Weak<Item>>,
}

impl Sieve {
    pub fn insert(&mut self, item: &Arc<Item>, live: usize) {
        self.ahead.push_back(Arc::downgrade(item));
        if worth_compacting(self.ahead.len() + self.behind.len(), live) {
            self.ahead.retain(|h| alive(h).is_some());
            self.behind.retain(|h| alive(h).is_some());
        }
    }

    pub fn victim(&mut self) -> Option<Arc<Item>> {
        // Two full turns of the hand clear every bit; readers setting bits
        // meanwhile cannot keep it turning past that.
        let mut budget = 2 * (self.ahead.len() + self.behind.len()) + 1;
        loop {
            if self.ahead.is_empty() {
                mem::swap(&mut self.ahead, &mut self.behind);
            }
            let handle = self.ahead.pop_front()?;
            let Some(item) = alive(&handle) else {
                continue;
            };
            budget = budget.saturating_sub(1);
            if item.meta.swap(0, Ordering::Relaxed) != 0 && budget > 0 {
                self.behind.push_back(handle);
                continue;
            }
            return Some(item);
        }
    }
}
