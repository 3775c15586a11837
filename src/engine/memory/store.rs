//! The shared state behind every clone of a [`MemoryEngine`](super::MemoryEngine):
//! the index, the per-key write locks with their expiry indexes, and the
//! byte accounting. Every change to the index goes through here, under the
//! key's stripe lock, so the accounting is exact.

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crossbeam_skiplist::SkipMap;

use super::item::{Body, Item, Key};
use super::policy::{EvictionPolicy, Policy};
use crate::engine::{NO_EXPIRY, expired_at};
use crate::{KvsError, Result};

/// Redis's text for a write refused under `noeviction` (RESP answers
/// `-OOM ` and this); the message of every [`KvsError::OutOfMemory`] the
/// memory engine returns.
pub const OOM_MESSAGE: &str = "command not allowed when used memory > 'maxmemory'.";

/// Stripes of write locks. Enough that writers of different keys rarely
/// share one, few enough that `clear` can take them all.
const STRIPES: usize = 256;

/// What one stripe lock guards besides the writes of its keys: the keys of
/// the stripe that have an expiry, by deadline.
#[derive(Default)]
pub struct Stripe {
    /// `(expires_at, item address)` to the item: the address makes equal
    /// deadlines distinct and is unique while the item is indexed.
    pub expiry: BTreeMap<(u64, usize), Arc<Item>>,
}

/// The index, locks and counters.
pub struct Store {
    /// Every key, ordered; the map's key is the item itself.
    pub map: SkipMap<Key, ()>,
    stripes: Box<[Mutex<Stripe>]>,
    hasher: RandomState,
    /// Bytes accounted for all entries ([`Body::charge`]).
    pub used: AtomicU64,
    /// Keys removed because they expired.
    pub expired: AtomicU64,
    /// Keys removed to stay under the bound.
    pub evicted: AtomicU64,
    /// The bound on `used`, 0 for none.
    pub max_memory: u64,
    /// What goes when the bound is reached.
    pub policy: Policy,
}

impl Default for Store {
    fn default() -> Store {
        Store::new(0, EvictionPolicy::DEFAULT)
    }
}

fn address(item: &Arc<Item>) -> usize {
    Arc::as_ptr(item) as usize
}

impl Store {
    /// An empty store bounded to `max_memory` bytes (0: unbounded).
    pub fn new(max_memory: u64, eviction: EvictionPolicy) -> Store {
        Store {
            map: SkipMap::new(),
            stripes: (0..STRIPES).map(|_| Mutex::default()).collect(),
            hasher: RandomState::new(),
            used: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            max_memory,
            policy: Policy::new(eviction, max_memory),
        }
    }

    /// Locks the stripe of `key`. Every write to a key happens under it.
    /// No code holds two stripe locks except [`lock_all`](Self::lock_all),
    /// which takes them in order, so there is no deadlock.
    pub fn lock(&self, key: &str) -> MutexGuard<'_, Stripe> {
        let i = (self.hasher.hash_one(key) as usize) % STRIPES;
        lock(&self.stripes[i])
    }

    /// Every stripe lock, in order.
    pub fn lock_all(&self) -> Vec<MutexGuard<'_, Stripe>> {
        self.stripes.iter().map(lock).collect()
    }

    /// The number of stripes, for the expiry sweep.
    pub fn stripe_count(&self) -> usize {
        STRIPES
    }

    /// Locks stripe `i` (the expiry sweep walks them one by one).
    pub fn lock_index(&self, i: usize) -> MutexGuard<'_, Stripe> {
        lock(&self.stripes[i])
    }

    /// The item indexed under `key`, live or expired.
    pub fn lookup(&self, key: &str) -> Option<Arc<Item>> {
        self.map.get(key).map(|e| e.key().0.clone())
    }

    /// Writes `body` to `key`, in place when the key exists. The caller
    /// holds the key's stripe lock (`stripe`), and calls
    /// [`evict_to_bound`](Self::evict_to_bound) after releasing it.
    ///
    /// Under `noeviction` a write that would take the total over the bound
    /// is refused with [`KvsError::OutOfMemory`] and changes nothing; under
    /// every policy an entry larger than the whole bound is refused.
    pub fn write_locked(&self, stripe: &mut Stripe, key: String, body: Body) -> Result<()> {
        let new_charge = body.charge(key.len());
        if self.max_memory != 0 && new_charge > self.max_memory {
            return Err(KvsError::OutOfMemory(OOM_MESSAGE.to_owned()));
        }
        match self.lookup(&key) {
            Some(item) => {
                let mut old = item.body();
                let old_charge = old.charge(key.len());
                self.reserve(old_charge, new_charge)?;
                if old.expires_at != NO_EXPIRY {
                    stripe.expiry.remove(&(old.expires_at, address(&item)));
                }
                if body.expires_at != NO_EXPIRY {
                    stripe
                        .expiry
                        .insert((body.expires_at, address(&item)), item.clone());
                }
                *old = body;
                drop(old);
                self.policy.touch(&item);
            }
            None => {
                self.reserve(0, new_charge)?;
                let expires_at = body.expires_at;
                let item = Item::new(key, body);
                if expires_at != NO_EXPIRY {
                    stripe
                        .expiry
                        .insert((expires_at, address(&item)), item.clone());
                }
                self.map.insert(Key(item.clone()), ());
                self.policy.insert(&item, new_charge, self.map.len());
            }
        }
        Ok(())
    }

    /// Moves the accounting from `old` to `new` bytes. Under `noeviction`
    /// the growth is reserved with a compare-and-swap, so concurrent
    /// writers cannot together pass the bound.
    fn reserve(&self, old: u64, new: u64) -> Result<()> {
        if new <= old {
            self.used.fetch_sub(old - new, Ordering::Relaxed);
            return Ok(());
        }
        let grow = new - old;
        if self.max_memory != 0 && self.policy.kind() == EvictionPolicy::NoEviction {
            let max = self.max_memory;
            self.used
                .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |used| {
                    used.checked_add(grow).filter(|total| *total <= max)
                })
                .map_err(|_| KvsError::OutOfMemory(OOM_MESSAGE.to_owned()))?;
        } else {
            self.used.fetch_add(grow, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Evicts until the total is within the bound (or nothing is left to
    /// evict). Called by a writer after it released its stripe lock, so
    /// taking the victim's stripe lock cannot deadlock; concurrent writers
    /// each bring the total back, so it exceeds the bound by at most one
    /// entry per writer in flight.
    pub fn evict_to_bound(&self) {
        if self.max_memory == 0 {
            return;
        }
        while self.used.load(Ordering::Relaxed) > self.max_memory {
            let Some(victim) = self.policy.victim() else {
                return;
            };
            let mut stripe = self.lock(victim.key());
            let current = self.lookup(victim.key());
            if current.is_some_and(|c| Arc::ptr_eq(&c, &victim)) {
                self.remove_locked(&mut stripe, &victim);
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Removes `item`, which the caller found indexed under its key while
    /// holding the key's stripe lock (`stripe`).
    pub fn remove_locked(&self, stripe: &mut Stripe, item: &Arc<Item>) {
        let body = item.body();
        if body.expires_at != NO_EXPIRY {
            stripe.expiry.remove(&(body.expires_at, address(item)));
        }
        let charge = body.charge(item.key().len());
        drop(body);
        item.removed.store(true, Ordering::Relaxed);
        self.map.remove(item.key());
        self.used.fetch_sub(charge, Ordering::Relaxed);
    }

    /// Removes `item` if it is still indexed and expired at `now`, counting
    /// it as expired. Takes the stripe lock.
    pub fn expire(&self, item: &Arc<Item>, now: u64) {
        let mut stripe = self.lock(item.key());
        self.expire_locked(&mut stripe, item, now);
    }

    /// [`expire`](Self::expire) under the stripe lock; whether it removed
    /// the item.
    pub fn expire_locked(&self, stripe: &mut Stripe, item: &Arc<Item>, now: u64) -> bool {
        let current = self.lookup(item.key());
        let same = current.is_some_and(|c| Arc::ptr_eq(&c, item));
        if same && expired_at(item.body().expires_at, now) {
            self.remove_locked(stripe, item);
            self.expired.fetch_add(1, Ordering::Relaxed);
            true
        } else {
            false
        }
    }

    /// Removes every key. The caller holds every stripe lock, so no write
    /// runs meanwhile and the accounting returns to zero exactly.
    pub fn clear_locked(&self, stripes: &mut [MutexGuard<'_, Stripe>]) {
        let mut cur = self.map.front();
        while let Some(e) = cur {
            e.key().0.removed.store(true, Ordering::Relaxed);
            e.remove();
            cur = e.next();
        }
        for s in stripes.iter_mut() {
            s.expiry.clear();
        }
        self.used.store(0, Ordering::Relaxed);
        self.policy.clear();
    }
}

fn lock(m: &Mutex<Stripe>) -> MutexGuard<'_, Stripe> {
    // A panic under a stripe lock happens between whole steps of a write
    // (a user closure of `update` runs before anything is changed), so the
    // data is consistent and poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}
