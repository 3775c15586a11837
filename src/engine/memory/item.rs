//! One stored key: its value and expiry behind a small lock, and the
//! per-entry bits the eviction policies use.
//!
//! NOTE: an overwrite replaces the value inside the item instead of
//! inserting a new skip-list node: crossbeam's `insert` over an existing key
//! unlinks the old node before linking the new one, so a concurrent `get`
//! or `scan` could miss a key that was never removed.

use std::borrow::Borrow;
use std::cmp::Ordering;
use std::sync::atomic::{AtomicBool, AtomicU32};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::engine::NO_EXPIRY;

/// Bytes accounted per entry beyond its key and value: the skip-list node,
/// the `Arc<Item>` block, the key and value allocations' headers and the
/// policy queue slot. Measured, not guessed: `tests/memory_overhead.rs`
/// (`per_entry_overhead`, run in release with `--ignored`) inserts
/// 1,000,000 entries of 16-byte keys and 100-byte values, reads the
/// process RSS before and after (`/proc/self/statm`) and divides the growth
/// minus the key and value bytes by the number of entries: 166.7 bytes with
/// S3-FIFO's queues (16-byte slots), 158.7 with SIEVE or LRU (8-byte slots),
/// 150.7 with no queue (glibc malloc, x86-64). The largest, rounded up.
pub const ENTRY_OVERHEAD: u64 = 168;

/// Extra bytes accounted for an entry with an expiry: its slot in the
/// stripe's expiry index (a `BTreeMap` entry of 24 bytes plus node slack).
pub const EXPIRY_OVERHEAD: u64 = 40;

/// The mutable part of an entry.
#[derive(Debug)]
pub struct Body {
    /// The value.
    pub value: Box<str>,
    /// Expiry in Unix ms, [`NO_EXPIRY`] for never.
    pub expires_at: u64,
}

impl Body {
    /// Bytes an entry with this body and a key of `key_len` bytes is
    /// accounted for against the memory bound.
    pub fn charge(&self, key_len: usize) -> u64 {
        let expiry = if self.expires_at == NO_EXPIRY {
            0
        } else {
            EXPIRY_OVERHEAD
        };
        (key_len + self.value.len()) as u64 + ENTRY_OVERHEAD + expiry
    }
}

/// A key with its body; shared by the index, the policy queues (weakly) and
/// the expiry index.
#[derive(Debug)]
pub struct Item {
    key: Box<str>,
    /// Written only under the key's stripe lock; read by `get` without it.
    body: Mutex<Body>,
    /// Policy bits: SIEVE's visited bit, S3-FIFO's frequency, LRU's clock.
    pub meta: AtomicU32,
    /// Set under the key's stripe lock when the item leaves the index, so
    /// queues drop it without a lookup.
    pub removed: AtomicBool,
}

impl Item {
    /// A new item.
    pub fn new(key: String, body: Body) -> Arc<Item> {
        Arc::new(Item {
            key: key.into_boxed_str(),
            body: Mutex::new(body),
            meta: AtomicU32::new(0),
            removed: AtomicBool::new(false),
        })
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// Locks the body. A panic while it was held cannot leave it half
    /// written (every write is one assignment), so poisoning is ignored.
    pub fn body(&self) -> MutexGuard<'_, Body> {
        self.body.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// The skip list's key: the item itself, ordered and looked up by its key
/// string, so the key is stored once.
#[derive(Debug, Clone)]
pub struct Key(pub Arc<Item>);

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> Ordering {
        self.0.key().cmp(other.0.key())
    }
}
