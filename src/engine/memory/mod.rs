//! An engine that keeps everything in memory: the cache-only case.
//!
//! - [`item`]: one key, its value and expiry, and the policy bits.
//! - [`store`]: the ordered index, the striped write locks (each with the
//!   expiry index of its keys) and the byte accounting.
//! - [`expiry`]: the background thread that removes expired keys.
//! - [`policy`]: what to evict at the memory bound (SIEVE, S3-FIFO, LRU).
//! - [`size`]: parsing `--max-memory` sizes.
//!
//! Reads take no lock but the entry's own; every write to a key runs under
//! the key's stripe lock, so [`update`](KvsEngine::update) is an atomic
//! read-modify-write and the accounting is exact.

mod expiry;
mod item;
mod policy;
mod size;
mod store;

use std::ops::Bound;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::engine::{EngineStats, Entry, NO_EXPIRY, Update, expired_at, now_ms};
use crate::{KvsEngine, KvsError, Result};
use item::Body;
pub use item::{ENTRY_OVERHEAD, EXPIRY_OVERHEAD};
pub use policy::EvictionPolicy;
pub use size::parse_size;
pub use store::OOM_MESSAGE;
use store::Store;

/// How a [`MemoryEngine`] is bounded.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryOptions {
    /// Bound on the accounted bytes (keys, values and per-entry overhead,
    /// [`ENTRY_OVERHEAD`]); 0 for none.
    pub max_memory: u64,
    /// What happens at the bound.
    pub eviction: EvictionPolicy,
}

/// A [`KvsEngine`] on a concurrent skip list, with nothing on disk.
///
/// Clones share the store; a background thread removes expired keys and
/// stops after the last clone is dropped.
#[derive(Clone)]
pub struct MemoryEngine {
    store: Arc<Store>,
}

impl Default for MemoryEngine {
    fn default() -> MemoryEngine {
        MemoryEngine::new()
    }
}

impl MemoryEngine {
    /// Creates an empty, unbounded engine and starts its expiry thread.
    pub fn new() -> MemoryEngine {
        MemoryEngine::with_options(MemoryOptions::default())
    }

    /// Creates an empty engine bounded by `options`.
    pub fn with_options(options: MemoryOptions) -> MemoryEngine {
        let store = Arc::new(Store::new(options.max_memory, options.eviction));
        if let Err(e) = expiry::spawn(Arc::downgrade(&store)) {
            // Expired keys are still never returned and are removed when
            // touched; only the reclaiming of untouched ones is lost.
            tracing::error!("memory engine: cannot start the expiry thread: {e}");
        }
        MemoryEngine { store }
    }

    /// The live entry of an item, or `None` (and the item reclaimed) when it
    /// has expired.
    fn live(&self, item: &Arc<item::Item>) -> Option<Entry> {
        let body = item.body();
        if body.expires_at != NO_EXPIRY {
            let now = now_ms();
            if expired_at(body.expires_at, now) {
                drop(body);
                self.store.expire(item, now);
                return None;
            }
        }
        let entry = Entry {
            value: body.value.to_string(),
            expires_at: body.expires_at,
        };
        drop(body);
        self.store.policy.touch(item);
        Some(entry)
    }
}

impl KvsEngine for MemoryEngine {
    fn set(&self, key: String, value: String) -> Result<()> {
        self.set_expiring(key, value, NO_EXPIRY)
    }

    fn get(&self, key: String) -> Result<Option<String>> {
        Ok(self.get_entry(&key)?.map(|e| e.value))
    }

    fn remove(&self, key: String) -> Result<()> {
        let removed = self.update(key, |cur| match cur {
            Some(_) => (Update::Remove, true),
            None => (Update::Keep, false),
        })?;
        if removed {
            Ok(())
        } else {
            Err(KvsError::KeyNotFound)
        }
    }

    fn set_expiring(&self, key: String, value: String, expires_at: u64) -> Result<()> {
        let mut stripe = self.store.lock(&key);
        if let Some(item) = self.store.lookup(&key) {
            let now = now_ms();
            if expired_at(expires_at, now) {
                // Redis: a SET with a deadline already past deletes the key.
                self.store.remove_locked(&mut stripe, &item);
                return Ok(());
            }
            self.store.expire_locked(&mut stripe, &item, now);
        } else if expired_at(expires_at, now_ms()) {
            return Ok(());
        }
        let body = Body {
            value: value.into_boxed_str(),
            expires_at,
        };
        self.store.write_locked(&mut stripe, key, body)?;
        drop(stripe);
        self.store.evict_to_bound();
        Ok(())
    }

    fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        let Some(entry) = self.store.map.get(key) else {
            return Ok(None);
        };
        Ok(self.live(&entry.key().0))
    }

    fn update<R>(&self, key: String, f: impl FnOnce(Option<Entry>) -> (Update, R)) -> Result<R> {
        let mut stripe = self.store.lock(&key);
        let now = now_ms();
        let mut current = self.store.lookup(&key);
        if let Some(item) = &current
            && self.store.expire_locked(&mut stripe, item, now)
        {
            current = None;
        }
        let live = current.as_ref().map(|item| {
            let body = item.body();
            Entry {
                value: body.value.to_string(),
                expires_at: body.expires_at,
            }
        });
        let (update, result) = f(live);
        match update {
            Update::Keep => {}
            Update::Put(entry) => {
                if let Some(item) = &current
                    && expired_at(entry.expires_at, now)
                {
                    self.store.remove_locked(&mut stripe, item);
                } else if !expired_at(entry.expires_at, now) {
                    let body = Body {
                        value: entry.value.into_boxed_str(),
                        expires_at: entry.expires_at,
                    };
                    self.store.write_locked(&mut stripe, key, body)?;
                }
            }
            Update::Remove => {
                if let Some(item) = &current {
                    self.store.remove_locked(&mut stripe, item);
                }
            }
        }
        drop(stripe);
        self.store.evict_to_bound();
        Ok(result)
    }

    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let mut keys = Vec::new();
        if limit == 0 {
            return Ok(keys);
        }
        // NOTE: lower_bound + next, never SkipMap::range (it leaks the
        // nodes it visits in crossbeam-skiplist 0.1.3).
        let mut cur = match after {
            Some(after) => self.store.map.lower_bound(Bound::Excluded(after)),
            None => self.store.map.front(),
        };
        let now = now_ms();
        while let Some(e) = cur {
            let item = &e.key().0;
            if !expired_at(item.body().expires_at, now) {
                keys.push(item.key().to_owned());
                if keys.len() == limit {
                    break;
                }
            }
            cur = e.next();
        }
        Ok(keys)
    }

    fn len(&self) -> u64 {
        self.store.map.len() as u64
    }

    fn clear(&self) -> Result<()> {
        let mut stripes = self.store.lock_all();
        self.store.clear_locked(&mut stripes);
        Ok(())
    }

    fn flush(&self) -> Result<()> {
        Ok(())
    }

    fn stats(&self) -> EngineStats {
        EngineStats {
            keys: self.len(),
            used_memory: self.store.used.load(Ordering::Relaxed),
            max_memory: self.store.max_memory,
            expired: self.store.expired.load(Ordering::Relaxed),
            evicted: self.store.evicted.load(Ordering::Relaxed),
            ..EngineStats::default()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn set_get_remove() {
        let e = MemoryEngine::new();
        e.set("a".into(), "1".into()).unwrap();
        let c = e.clone();
        assert_eq!(c.get("a".into()).unwrap().as_deref(), Some("1"));
        c.remove("a".into()).unwrap();
        assert_eq!(e.get("a".into()).unwrap(), None);
        assert!(matches!(e.remove("a".into()), Err(KvsError::KeyNotFound)));
    }

    #[test]
    fn the_expiry_thread_stops_after_the_last_handle_is_dropped() {
        let store = Arc::new(Store::default());
        let thread = expiry::spawn(Arc::downgrade(&store)).unwrap();
        std::thread::sleep(expiry::TICK * 2);
        assert!(!thread.is_finished());
        drop(store);
        let start = std::time::Instant::now();
        while !thread.is_finished() {
            assert!(start.elapsed() < std::time::Duration::from_secs(5));
            std::thread::sleep(expiry::TICK / 4);
        }
    }
}
