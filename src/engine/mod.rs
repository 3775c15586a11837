//! Storage engines: the [`KvsEngine`] trait and its implementations.
//!
//! The trait keeps the talent-plan contract (`set`, `get`, `remove` on
//! `String`s) and adds what a cache server needs: expiry, one atomic
//! read-modify-write primitive that conditional sets, counters, appends and
//! expiry changes are all built on, ordered scans, a key count, clearing,
//! a flush to stable storage and statistics. Both engines implement every
//! method for real; the server is generic over this one trait.

pub mod kvs;
pub mod memory;

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::Result;

/// A live value with its expiry, as [`KvsEngine::update`] sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The value.
    pub value: String,
    /// Expiry in Unix milliseconds; [`NO_EXPIRY`] for never.
    pub expires_at: u64,
}

/// `expires_at` of a key that never expires.
pub const NO_EXPIRY: u64 = 0;

/// What [`KvsEngine::update`] does to its key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Update {
    /// Leave the key as it is (nothing is written).
    Keep,
    /// Store this value and expiry, replacing any previous one.
    Put(Entry),
    /// Remove the key (nothing is written when it is already missing).
    Remove,
}

/// Counters and sizes an engine reports; fields an engine does not keep
/// stay zero. Part of the native `Stats` response: fields are only ever
/// appended.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[non_exhaustive]
pub struct EngineStats {
    /// Keys held (expired keys not yet reclaimed included, as Redis's
    /// `DBSIZE`).
    pub keys: u64,
    /// Bytes the engine accounts for its entries in memory (keys, values
    /// and per-entry overhead for the memory engine; index for `KvStore`).
    pub used_memory: u64,
    /// The memory bound, 0 for none.
    pub max_memory: u64,
    /// Bytes of live records on disk (`KvStore`).
    pub live_bytes: u64,
    /// Bytes of all segment files (`KvStore`).
    pub disk_bytes: u64,
    /// Keys removed because they expired (on read or in the background).
    pub expired: u64,
    /// Keys removed to stay under the memory bound.
    pub evicted: u64,
    /// Compactions that failed (`KvStore`).
    pub compaction_failures: u64,
}

/// A key-value storage engine shared by many threads.
///
/// Clones are cheap handles onto the same store; each method takes `&self`
/// so a clone can be moved to every worker thread.
///
/// Expiry: a key whose `expires_at` is not after the current Unix time in
/// milliseconds ([`now_ms`]) is missing to every method, including
/// [`update`](Self::update), and engines reclaim it without waiting for a
/// read.
pub trait KvsEngine: Clone + Send + 'static {
    /// Sets `key` to `value`, replacing any previous value and expiry.
    fn set(&self, key: String, value: String) -> Result<()>;

    /// Returns the value of `key`, or `None` when it is missing.
    fn get(&self, key: String) -> Result<Option<String>>;

    /// Removes `key`; [`KvsError::KeyNotFound`](crate::KvsError::KeyNotFound)
    /// when it is missing.
    fn remove(&self, key: String) -> Result<()>;

    /// Sets `key` to `value`, expiring at `expires_at` (Unix ms,
    /// [`NO_EXPIRY`] for never).
    fn set_expiring(&self, key: String, value: String, expires_at: u64) -> Result<()>;

    /// Sets `key` to `value`, expiring after `ttl` (rounded up to a whole
    /// millisecond, at least one).
    fn set_with_ttl(&self, key: String, value: String, ttl: Duration) -> Result<()> {
        self.set_expiring(key, value, deadline_after(ttl))
    }

    /// The live value and expiry of `key`.
    fn get_entry(&self, key: &str) -> Result<Option<Entry>>;

    /// Calls `f` with the bytes of `key`'s live value and returns `true`,
    /// or returns `false` when the key is missing. For a caller that only
    /// copies the value somewhere (the server, into a reply): engines that
    /// override it make no `String` of the value. `f` may run under an
    /// engine lock: it must not call the engine.
    fn get_with(&self, key: &str, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        Ok(self
            .get_entry(key)?
            .map(|entry| f(entry.value.as_bytes()))
            .is_some())
    }

    /// A hint that `key` is about to be read: an engine may start bringing
    /// its entry into the CPU cache, so that the reads of a batch wait for
    /// memory together rather than one after another. The default does
    /// nothing.
    fn prefetch(&self, key: &str) {
        let _ = key;
    }

    /// [`set_expiring`](Self::set_expiring) from borrowed strings, for a
    /// caller that holds them in a buffer (the server, in a request it
    /// decoded): engines that override it copy the bytes where they keep
    /// them without making `String`s of them first.
    fn set_from(&self, key: &str, value: &str, expires_at: u64) -> Result<()> {
        self.set_expiring(key.to_owned(), value.to_owned(), expires_at)
    }

    /// Atomic read-modify-write of one key: `f` sees the key's live entry
    /// (or `None`) and returns what to do with it and a result to hand
    /// back. No other write to `key` comes between the read and the write,
    /// so conditional sets, counters and appends built on it are not racy.
    /// A write has the same durability as [`set`](Self::set).
    ///
    /// `f` runs while the engine holds the lock that serialises writes to
    /// `key` (the [`KvStore`](crate::KvStore) writer lock; a
    /// [`MemoryEngine`](crate::MemoryEngine) stripe lock, shared with the
    /// keys hashed to the same stripe), so it must not call the engine: a
    /// `get` of a key in the same stripe, or any write, waits for that lock
    /// forever. Keep it short, too: operations on the keys sharing the lock
    /// wait for it.
    fn update<R>(&self, key: String, f: impl FnOnce(Option<Entry>) -> (Update, R)) -> Result<R>;

    /// Up to `limit` live keys in ascending byte order, strictly after
    /// `after` (from the first key when `None`). A scan resumed from the
    /// last key returned sees every key that exists throughout exactly
    /// once.
    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>>;

    /// Number of keys held (see [`EngineStats::keys`]).
    fn len(&self) -> u64;

    /// Whether the engine holds no key.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Removes every key, with the same durability as a `remove`.
    fn clear(&self) -> Result<()>;

    /// Forces every acknowledged write to stable storage, whatever the
    /// sync mode; a no-op for engines with nothing on disk.
    fn flush(&self) -> Result<()>;

    /// Current counters and sizes.
    fn stats(&self) -> EngineStats;

    /// Whether the server may run this engine's reads (`write` false) or
    /// writes (`write` true) in one pool job together with other
    /// connections' requests (`thread_pool::Batcher`): only where no such
    /// call waits long, since the requests of a shared job run one after
    /// another. The default, `false`, gives each connection's batch a job
    /// of its own, so that a call that waits (on a disk, on a lock held
    /// across I/O, in a test engine that holds it) never holds up another
    /// connection's requests.
    fn shares_pool_jobs(&self, write: bool) -> bool {
        let _ = write;
        false
    }
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// The expiry `ttl` from now: rounded up to a whole millisecond, at least
/// one, saturating instead of overflowing.
pub fn deadline_after(ttl: Duration) -> u64 {
    let ms = u64::try_from(ttl.as_nanos().div_ceil(1_000_000))
        .unwrap_or(u64::MAX)
        .max(1);
    now_ms().saturating_add(ms)
}

/// Whether an entry expiring at `expires_at` has expired at `now`.
pub fn expired_at(expires_at: u64, now: u64) -> bool {
    expires_at != NO_EXPIRY && expires_at <= now
}
