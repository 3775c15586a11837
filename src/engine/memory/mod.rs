//! An engine that keeps everything in memory: the cache-only case.
//!
//! - [`item`]: one key, its value and expiry, and the policy bits, in one
//!   allocation.
//! - [`store`]: the stripes (each a hash table, an ordered set and an
//!   expiry index behind one lock) and the byte accounting.
//! - [`expiry`]: the background thread that removes expired keys.
//! - [`policy`]: what to evict at the memory bound (SIEVE, S3-FIFO, LRU).
//! - [`size`]: parsing `--max-memory` sizes.
//!
//! Every read and write of a key runs under the key's stripe lock (held for
//! a hash probe and a copy), so [`update`](KvsEngine::update) is an atomic
//! read-modify-write, an overwrite is never seen half done, and the
//! accounting is exact.

mod expiry;
mod item;
mod policy;
mod size;
mod store;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use crate::engine::{EngineStats, Entry, NO_EXPIRY, Update, expired_at, now_ms};
use crate::{KvsEngine, KvsError, Result};
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

/// A [`KvsEngine`] on striped hash tables with ordered sets beside them,
/// with nothing on disk.
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

    /// Calls `f` with the value and expiry of `key` under its stripe lock
    /// and marks the key used; `false` (and a reclaimed key) when it is
    /// missing or expired.
    fn with_live(&self, key: &str, f: impl FnOnce(&str, u64)) -> bool {
        let mut locked = self.store.lock(key);
        let Some(view) = locked.view(key) else {
            return false;
        };
        if view.expires_at != NO_EXPIRY {
            let now = now_ms();
            if expired_at(view.expires_at, now) {
                self.store.expire_locked(&mut locked, key, now);
                return false;
            }
        }
        self.store.policy.touch(view.item);
        f(view.value, view.expires_at);
        true
    }
}

impl KvsEngine for MemoryEngine {
    /// Every call is a few lock-protected memory operations.
    fn shares_pool_jobs(&self, _write: bool) -> bool {
        true
    }

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
        self.set_from(&key, &value, expires_at)
    }

    fn set_from(&self, key: &str, value: &str, expires_at: u64) -> Result<()> {
        let mut locked = self.store.lock(key);
        if expires_at != NO_EXPIRY && expired_at(expires_at, now_ms()) {
            // Redis: a SET with a deadline already past deletes the key.
            self.store.remove_locked(&mut locked, key);
            return Ok(());
        }
        self.store
            .write_locked(&mut locked, key, value, expires_at)?;
        drop(locked);
        self.store.evict_to_bound();
        Ok(())
    }

    fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        let mut entry = None;
        self.with_live(key, |value, expires_at| {
            entry = Some(Entry {
                value: value.to_owned(),
                expires_at,
            });
        });
        Ok(entry)
    }

    fn get_with(&self, key: &str, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        Ok(self.with_live(key, |value, _| f(value.as_bytes())))
    }

    fn update<R>(&self, key: String, f: impl FnOnce(Option<Entry>) -> (Update, R)) -> Result<R> {
        let mut locked = self.store.lock(&key);
        let now = now_ms();
        self.store.expire_locked(&mut locked, &key, now);
        let live = locked.view(&key).map(|view| Entry {
            value: view.value.to_owned(),
            expires_at: view.expires_at,
        });
        let (update, result) = f(live);
        match update {
            Update::Keep => {}
            Update::Put(entry) => {
                if expired_at(entry.expires_at, now) {
                    self.store.remove_locked(&mut locked, &key);
                } else {
                    self.store
                        .write_locked(&mut locked, &key, &entry.value, entry.expires_at)?;
                }
            }
            Update::Remove => {
                self.store.remove_locked(&mut locked, &key);
            }
        }
        drop(locked);
        self.store.evict_to_bound();
        Ok(result)
    }

    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        Ok(self.store.scan(after, limit, now_ms()))
    }

    fn len(&self) -> u64 {
        self.store.len()
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
