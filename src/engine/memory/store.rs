//! The shared state behind every clone of a [`MemoryEngine`](super::MemoryEngine):
//! the keys in stripes, each stripe behind one lock, and the byte
//! accounting.
//!
//! A stripe holds a hash table of its items (point reads and writes: one
//! hash, one probe, one key comparison) and the expiry index of those with
//! a deadline. Every read and write of a key runs under its stripe's lock,
//! so an overwrite is never seen half done, [`update`](crate::KvsEngine::update)
//! is an atomic read-modify-write and the accounting is exact.
//!
//! The same items are also in ordered sets for scans, fewer of them than
//! stripes (set `i % SHARDS` holds stripe `i`'s keys) so that a scan
//! merges few of them; a key's set changes only when the key is added,
//! removed or moved to a new item, under its stripe lock and then its
//! set's lock. A scan takes only the sets' locks.

use std::borrow::Borrow;
use std::cmp::{Ordering as CmpOrdering, Reverse};
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::hash::{BuildHasher, RandomState};
use std::ops::Bound;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use hashbrown::HashTable;

use super::item::{ItemRef, MAX_LEN, charge};
use super::policy::{EvictionPolicy, Policy};
use crate::engine::{NO_EXPIRY, expired_at, now_ms};
use crate::{KvsError, Result};

/// Redis's text for a write refused under `noeviction` (RESP answers
/// `-OOM ` and this); the message of every [`KvsError::OutOfMemory`] the
/// memory engine returns.
pub const OOM_MESSAGE: &str = "command not allowed when used memory > 'maxmemory'.";

/// Stripes. Enough that threads working on different keys rarely share
/// one, and that a table's rehash, which moves the whole stripe under its
/// lock while the stripe's reads wait, moves a 64th of the keys; few enough
/// that `clear` can take them all. Scans do not visit stripes (they merge
/// the `SHARDS` ordered sets), so they do not pay for more of them.
const STRIPES: usize = 64;

/// Ordered sets. A scan seeks in each, so fewer is a cheaper scan; more is
/// less waiting among threads adding or removing keys at once.
const SHARDS: usize = 8;

/// An item in a stripe's ordered set, ordered and looked up by its key.
struct ByKey(ItemRef);

impl Borrow<str> for ByKey {
    fn borrow(&self) -> &str {
        self.0.key()
    }
}

impl PartialEq for ByKey {
    fn eq(&self, other: &ByKey) -> bool {
        self.0.key() == other.0.key()
    }
}

impl Eq for ByKey {}

impl PartialOrd for ByKey {
    fn partial_cmp(&self, other: &ByKey) -> Option<CmpOrdering> {
        Some(self.cmp(other))
    }
}

impl Ord for ByKey {
    fn cmp(&self, other: &ByKey) -> CmpOrdering {
        self.0.key().cmp(other.0.key())
    }
}

/// One stripe. An item is in `table` (and in its shard's ordered set)
/// exactly when it is indexed, and in `expiry` exactly when it is indexed
/// with a deadline; they change together under the stripe lock.
#[derive(Default)]
pub struct Stripe {
    table: HashTable<ItemRef>,
    /// `(expires_at, item address)` to the item: the address makes equal
    /// deadlines distinct and is unique while the item is indexed.
    expiry: BTreeMap<(u64, usize), ItemRef>,
}

/// A stripe locked for one key, with that key's hash and the stripe's
/// number.
pub struct Locked<'a> {
    stripe: MutexGuard<'a, Stripe>,
    hash: u64,
    index: usize,
}

/// A key's live-or-expired entry as seen under its stripe lock.
pub struct View<'l> {
    /// The item.
    pub item: &'l ItemRef,
    /// Its value.
    pub value: &'l str,
    /// Its expiry.
    pub expires_at: u64,
}

impl Locked<'_> {
    /// The entry of `key` (which must be the key this stripe was locked
    /// for), live or expired.
    pub fn view(&self, key: &str) -> Option<View<'_>> {
        let item = self.stripe.table.find(self.hash, |i| i.key() == key)?;
        // SAFETY: the item is in this stripe's table and the guard borrowed
        // for the view's lifetime holds the stripe lock.
        let value = unsafe { item.value() };
        let expires_at = item.expires_at();
        Some(View {
            item,
            value,
            expires_at,
        })
    }
}

/// Padding so that two locks never share a cache line.
#[repr(align(128))]
#[derive(Default)]
struct Padded<T>(Mutex<T>);

/// The stripes, the ordered sets and the counters.
pub struct Store {
    stripes: Box<[Padded<Stripe>]>,
    /// Stripe `i`'s keys are in set `i % SHARDS`. Lock order: a stripe,
    /// then a set.
    order: Box<[Padded<BTreeSet<ByKey>>]>,
    /// SipHash-1-3 with a per-process random key (std's `RandomState`),
    /// not hashbrown's default (foldhash's fast variant), which its own
    /// docs rule out where someone may craft colliding inputs: clients
    /// choose the keys, and a stripe's probes run under its lock, so keys
    /// crafted to collide would stall every client of that stripe.
    hasher: RandomState,
    keys: AtomicU64,
    /// Bytes accounted for all entries ([`charge`]).
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

/// Why an item leaves the index, for the counters and the policy.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Why {
    Removed,
    Expired,
    Evicted,
}

impl Store {
    /// An empty store bounded to `max_memory` bytes (0: unbounded).
    pub fn new(max_memory: u64, eviction: EvictionPolicy) -> Store {
        Store {
            stripes: (0..STRIPES).map(|_| Padded::default()).collect(),
            order: (0..SHARDS).map(|_| Padded::default()).collect(),
            hasher: RandomState::new(),
            keys: AtomicU64::new(0),
            used: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            evicted: AtomicU64::new(0),
            max_memory,
            policy: Policy::new(eviction, max_memory),
        }
    }

    /// Locks the stripe of `key`. Every read and write of a key happens
    /// under it. No code holds two stripe locks except
    /// [`lock_all`](Self::lock_all), which takes them in order, so there is
    /// no deadlock.
    pub fn lock(&self, key: &str) -> Locked<'_> {
        let hash = self.hasher.hash_one(key);
        // The table uses the low bits and the top seven; the stripe takes
        // bits from the middle, so keys of one stripe still spread.
        let index = (hash >> 32) as usize % STRIPES;
        Locked {
            stripe: lock(&self.stripes[index].0),
            hash,
            index,
        }
    }

    /// Every stripe lock, in order.
    pub fn lock_all(&self) -> Vec<MutexGuard<'_, Stripe>> {
        self.stripes.iter().map(|s| lock(&s.0)).collect()
    }

    /// The ordered set holding stripe `i`'s keys, locked.
    fn order_of(&self, i: usize) -> MutexGuard<'_, BTreeSet<ByKey>> {
        lock(&self.order[i % SHARDS].0)
    }

    /// The number of stripes, for the expiry sweep.
    pub fn stripe_count(&self) -> usize {
        STRIPES
    }

    /// Locks stripe `i` (the expiry sweep walks them one by one).
    pub fn lock_index(&self, i: usize) -> MutexGuard<'_, Stripe> {
        lock(&self.stripes[i].0)
    }

    /// Keys held, expired ones not yet reclaimed included.
    pub fn len(&self) -> u64 {
        self.keys.load(Ordering::Relaxed)
    }

    /// Writes `value` and `expires_at` to `key` (the key `locked` was
    /// taken for), in place when the key exists and the value fits. The
    /// caller calls [`evict_to_bound`](Self::evict_to_bound) after
    /// releasing the lock.
    ///
    /// Under `noeviction` a write that would take the total over the bound
    /// is refused with [`KvsError::OutOfMemory`] and changes nothing; under
    /// every policy an entry larger than the whole bound is refused.
    pub fn write_locked(
        &self,
        locked: &mut Locked<'_>,
        key: &str,
        value: &str,
        expires_at: u64,
    ) -> Result<()> {
        if key.len() > MAX_LEN || value.len() > MAX_LEN {
            return Err(KvsError::InvalidInput(format!(
                "key or value over {MAX_LEN} bytes"
            )));
        }
        let new_charge = charge(key.len(), value.len(), expires_at);
        if self.max_memory != 0 && new_charge > self.max_memory {
            return Err(KvsError::OutOfMemory(OOM_MESSAGE.to_owned()));
        }
        let (hash, index) = (locked.hash, locked.index);
        let Stripe { table, expiry } = &mut *locked.stripe;
        let dead = match table.find_mut(hash, |i| i.key() == key) {
            Some(slot) if !is_dead(slot) => {
                // SAFETY (this block): `slot` is in the stripe whose lock
                // `locked` holds.
                let old_expiry = slot.expires_at();
                let old_charge = unsafe { slot.charge() };
                self.reserve(old_charge, new_charge)?;
                if old_expiry != NO_EXPIRY {
                    expiry.remove(&(old_expiry, slot.address()));
                }
                if slot.fits(value.len()) {
                    unsafe { slot.overwrite(value, expires_at) };
                    self.policy.touch(slot);
                } else {
                    let item = ItemRef::new(key, value, expires_at);
                    item.meta
                        .store(slot.meta.load(Ordering::Relaxed), Ordering::Relaxed);
                    let old = std::mem::replace(slot, item.clone());
                    self.order_of(index).replace(ByKey(item.clone()));
                    old.removed.store(true, Ordering::Relaxed);
                    self.policy.removed(old_charge, false);
                    self.policy.insert(&item, new_charge, self.len());
                }
                if expires_at != NO_EXPIRY {
                    expiry.insert((expires_at, slot.address()), slot.clone());
                }
                return Ok(());
            }
            Some(_) => true,
            None => false,
        };
        if dead {
            // An expired entry goes first, counted as expired as when a
            // read had found it, so that this write is a fresh insert: it
            // must not inherit the dead entry's policy bits (a SIEVE visit,
            // an S3-FIFO frequency) or queue place, nor count as a hit.
            self.remove_locked_as(locked, key, Why::Expired);
        }
        self.reserve(0, new_charge)?;
        let item = ItemRef::new(key, value, expires_at);
        let Stripe { table, expiry } = &mut *locked.stripe;
        if expires_at != NO_EXPIRY {
            expiry.insert((expires_at, item.address()), item.clone());
        }
        self.order_of(index).insert(ByKey(item.clone()));
        table.insert_unique(hash, item.clone(), |i| self.hasher.hash_one(i.key()));
        let live = self.keys.fetch_add(1, Ordering::Relaxed) + 1;
        self.policy.insert(&item, new_charge, live);
        Ok(())
    }

    /// Moves the accounting from `old` to `new` bytes. Under `noeviction`
    /// the growth is reserved with a compare-and-swap, so concurrent
    /// writers cannot together pass the bound.
    fn reserve(&self, old: u64, new: u64) -> Result<()> {
        // Most overwrites keep their size: no read-modify-write of the
        // counter every writer shares.
        if new == old {
            return Ok(());
        }
        if new < old {
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
            let mut locked = self.lock(victim.key());
            let current = locked.view(victim.key());
            if current.is_some_and(|c| ItemRef::ptr_eq(c.item, &victim)) {
                self.remove_locked_as(&mut locked, victim.key(), Why::Evicted);
            }
        }
    }

    /// Removes `key` (the key `locked` was taken for); whether it was
    /// there, live or expired.
    pub fn remove_locked(&self, locked: &mut Locked<'_>, key: &str) -> bool {
        self.remove_locked_as(locked, key, Why::Removed)
    }

    fn remove_locked_as(&self, locked: &mut Locked<'_>, key: &str, why: Why) -> bool {
        let (hash, index) = (locked.hash, locked.index);
        let Stripe { table, expiry } = &mut *locked.stripe;
        let Ok(entry) = table.find_entry(hash, |i| i.key() == key) else {
            return false;
        };
        let (item, _) = entry.remove();
        if table.capacity() > 1024 && table.len() * 4 < table.capacity() {
            // Give back a table emptied by deletes or evictions; halving
            // at a quarter full leaves room, so this cannot thrash.
            table.shrink_to(table.len() * 2, |i| self.hasher.hash_one(i.key()));
        }
        // SAFETY: the item was in this stripe, whose lock `locked` holds.
        let (expires_at, charge) = (item.expires_at(), unsafe { item.charge() });
        if expires_at != NO_EXPIRY {
            expiry.remove(&(expires_at, item.address()));
        }
        self.order_of(index).remove(key);
        item.removed.store(true, Ordering::Relaxed);
        self.keys.fetch_sub(1, Ordering::Relaxed);
        self.used.fetch_sub(charge, Ordering::Relaxed);
        match why {
            Why::Removed => {}
            Why::Expired => {
                self.expired.fetch_add(1, Ordering::Relaxed);
            }
            Why::Evicted => {
                self.evicted.fetch_add(1, Ordering::Relaxed);
            }
        }
        self.policy.removed(charge, why == Why::Evicted);
        true
    }

    /// Removes `key` if it is indexed and expired at `now`, counting it as
    /// expired; whether it did.
    pub fn expire_locked(&self, locked: &mut Locked<'_>, key: &str, now: u64) -> bool {
        let due = locked
            .view(key)
            .is_some_and(|v| expired_at(v.expires_at, now));
        due && self.remove_locked_as(locked, key, Why::Expired)
    }

    /// Removes from stripe `i` up to `max` keys due at `now`; how many.
    pub fn sweep_stripe(&self, i: usize, now: u64, max: usize) -> usize {
        let mut locked = Locked {
            stripe: self.lock_index(i),
            hash: 0,
            index: i,
        };
        let mut removed = 0;
        while removed < max {
            let Some((&(deadline, _), item)) = locked.stripe.expiry.first_key_value() else {
                break;
            };
            if deadline > now {
                break;
            }
            let item = item.clone();
            locked.hash = self.hasher.hash_one(item.key());
            // The index is exact (entries leave it with their item), so
            // this removes the first entry; popping it otherwise keeps the
            // loop finite whatever happens.
            if !self.remove_locked_as(&mut locked, item.key(), Why::Expired) {
                locked.stripe.expiry.pop_first();
            }
            removed += 1;
        }
        removed
    }

    /// Up to `limit` keys live at `now`, in ascending order, strictly after
    /// `after`: the smallest of every ordered set's, merged.
    ///
    /// Each set is read in batches under its lock and resumed after the
    /// last key it gave, so a key that is indexed throughout the call is
    /// met exactly when the merge reaches it; the keys returned ascend, so a
    /// scan resumed after the last key returned sees every key that exists
    /// throughout exactly once.
    pub fn scan(&self, after: Option<&str>, limit: usize, now: u64) -> Vec<String> {
        let mut keys = Vec::new();
        if limit == 0 {
            return keys;
        }
        // Per set, a batch large enough that a page of a few keys per set
        // is read with one lock and one seek each.
        let batch = (limit / SHARDS).clamp(2, 256) + 1;
        let mut pending: Vec<std::vec::IntoIter<ItemRef>> = Vec::with_capacity(SHARDS);
        // Smallest key first: (key, stripe).
        let mut heads: BinaryHeap<Reverse<(ByKey, usize)>> = BinaryHeap::new();
        for i in 0..SHARDS {
            let mut items = self.read_shard(i, after, batch, now).into_iter();
            if let Some(first) = items.next() {
                heads.push(Reverse((ByKey(first), i)));
            }
            pending.push(items);
        }
        while let Some(Reverse((ByKey(item), i))) = heads.pop() {
            keys.push(item.key().to_owned());
            if keys.len() == limit {
                break;
            }
            let next = match pending[i].next() {
                Some(next) => Some(next),
                None => {
                    let mut more = self.read_shard(i, Some(item.key()), batch, now).into_iter();
                    let next = more.next();
                    pending[i] = more;
                    next
                }
            };
            if let Some(next) = next {
                heads.push(Reverse((ByKey(next), i)));
            }
        }
        keys
    }

    /// Up to `n` items of ordered set `i` live at `now`, ascending, after
    /// `after`.
    fn read_shard(&self, i: usize, after: Option<&str>, n: usize, now: u64) -> Vec<ItemRef> {
        let order = lock(&self.order[i].0);
        let lower = match after {
            Some(after) => Bound::Excluded(after),
            None => Bound::Unbounded,
        };
        order
            .range::<str, _>((lower, Bound::Unbounded))
            .filter(|e| !expired_at(e.0.expires_at(), now))
            .take(n)
            .map(|e| e.0.clone())
            .collect()
    }

    /// Removes every key. The caller holds every stripe lock, so no write
    /// runs meanwhile and the accounting returns to zero exactly.
    pub fn clear_locked(&self, stripes: &mut [MutexGuard<'_, Stripe>]) {
        for s in stripes.iter_mut() {
            for item in s.table.iter() {
                item.removed.store(true, Ordering::Relaxed);
            }
            **s = Stripe::default();
        }
        for shard in self.order.iter() {
            lock(&shard.0).clear();
        }
        self.keys.store(0, Ordering::Relaxed);
        self.used.store(0, Ordering::Relaxed);
        self.policy.clear();
    }
}

/// Whether `item` has expired (it is still indexed until someone removes
/// it). Reads the clock only for items with a deadline.
fn is_dead(item: &ItemRef) -> bool {
    let expires_at = item.expires_at();
    expires_at != NO_EXPIRY && expired_at(expires_at, now_ms())
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // A panic under a stripe lock happens between whole steps of a write
    // (a user closure of `update` runs before anything is changed), so the
    // data is consistent and poisoning is ignored.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writing a key whose entry has expired (and is still indexed, as
    /// until the sweep or a read reaches it) is a fresh insert: the dead
    /// entry's policy bits do not carry over, so it is not a hit, and the
    /// dead entry counts as expired.
    #[test]
    fn writing_over_an_expired_entry_is_a_fresh_insert() {
        for kind in [EvictionPolicy::Sieve, EvictionPolicy::S3Fifo] {
            let store = Store::new(1 << 20, kind);
            let mut locked = store.lock("k");
            // A deadline long past, so the entry is dead at once.
            store.write_locked(&mut locked, "k", "old", 1).unwrap();
            let dead = locked.view("k").unwrap().item.clone();
            // Read while it was live.
            store.policy.touch(&dead);
            store
                .write_locked(&mut locked, "k", "new", NO_EXPIRY)
                .unwrap();
            let view = locked.view("k").unwrap();
            assert_eq!(view.value, "new");
            assert!(!ItemRef::ptr_eq(view.item, &dead), "{kind}");
            assert!(dead.removed.load(Ordering::Relaxed), "{kind}");
            assert_eq!(view.item.meta.load(Ordering::Relaxed), 0, "{kind}");
            assert_eq!(store.expired.load(Ordering::Relaxed), 1, "{kind}");
            assert_eq!(store.len(), 1, "{kind}");
            assert_eq!(
                store.used.load(Ordering::Relaxed),
                charge(1, 3, NO_EXPIRY),
                "{kind}"
            );
        }
    }
}
