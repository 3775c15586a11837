//! The in-memory index: key to the position of its latest record.

use std::borrow::Borrow;
use std::hash::{Hash, Hasher, RandomState};
use std::ops::Bound;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering, fence};
use std::time::{SystemTime, UNIX_EPOCH};

use crossbeam_skiplist::SkipMap;
use triomphe::{Arc, HeaderSlice};

use super::segment::SegmentId;

/// Where a key's latest record lives. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Loc {
    /// Segment holding the record.
    pub seg: SegmentId,
    /// Whole record length.
    pub len: u32,
    /// Offset of the record in the segment.
    pub offset: u64,
    /// Expiry in Unix milliseconds; 0 for never.
    pub expires_at: u64,
}

impl Loc {
    /// Whether the key has expired at `now` (Unix milliseconds).
    pub fn expired_at(&self, now: u64) -> bool {
        self.expires_at != 0 && self.expires_at <= now
    }

    /// Whether the key has expired now; reads the clock only for keys with
    /// an expiry.
    pub fn expired(&self) -> bool {
        self.expires_at != 0 && self.expired_at(now_ms())
    }
}

/// The index: every live key once, reachable two ways. A hash set serves
/// point lookups (`get`, the writer's checks); a skip list keeps the keys in
/// order for `scan`, the expiry sweep and compaction. Both hold the same
/// [`Key`] (one `Arc` of a [`Node`], the [`Slot`] with the key bytes after
/// it in one allocation; neither is ever copied).
///
/// NOTE: a key's position changes in place, in its [`Slot`]; the node is
/// never replaced while the key lives (crossbeam unlinks an old entry
/// before linking a replacement, so a concurrent `get` could find no entry
/// for a key that was never removed). Only the holder of the writer lock
/// inserts, removes or stores; readers take no lock.
///
/// Recovery fills only the skip list (in key order, which is cheap); the
/// hash set is filled after the open by the background thread
/// ([`Index::fill_hashed`]), and until it is complete, lookups use the skip
/// list. That keeps the hash inserts (random order into a large table,
/// about as costly as the rest of an open with hints) off the open path.
pub struct Index {
    /// Hashed with std's `RandomState` (SipHash-1-3, a random key per
    /// process): clients choose the keys, and a hash they could steer into
    /// collisions would turn lookups into long probes.
    hash: papaya::HashSet<Key, RandomState>,
    ordered: SkipMap<Key, ()>,
    /// Every key in `ordered` is in `hash` too: point lookups use it.
    hashed: AtomicBool,
}

/// One key's entry, shared by both structures of the [`Index`]: its
/// [`Slot`] and, in the same allocation, its bytes.
pub type Node = HeaderSlice<Slot, str>;

/// A shared handle to a [`Node`], hashed, compared and borrowed as its key
/// string so that both structures look it up by `&str`.
///
/// A `triomphe::Arc` of the slot with the key after it: one allocation
/// per key (std's `Arc` cannot hold an unsized key beside a header, so the
/// key was a `Box<str>` of its own), and no weak count.
#[derive(Clone)]
pub struct Key(Arc<Node>);

impl Key {
    /// A new node for `key` at `loc`, in no index yet.
    pub fn new(key: &str, loc: Loc) -> Key {
        Key(Arc::from_header_and_str(Slot::new(loc), key))
    }

    /// Whether both handles are the same node (not only the same key).
    pub fn same(&self, other: &Key) -> bool {
        Arc::ptr_eq(&self.0, &other.0)
    }

    /// The key.
    pub fn key(&self) -> &str {
        &self.0.slice
    }

    /// The key's current position (see [`Slot::load`]).
    pub fn load(&self) -> Loc {
        self.0.header.load()
    }

    /// Moves the key. Only the holder of the writer lock may call it.
    pub fn store(&self, loc: Loc) {
        self.0.header.store(loc)
    }
}

impl Borrow<str> for Key {
    fn borrow(&self) -> &str {
        self.key()
    }
}

impl Hash for Key {
    fn hash<H: Hasher>(&self, h: &mut H) {
        // The same bytes `str::hash` feeds, as `Borrow<str>` requires.
        self.key().hash(h)
    }
}

impl PartialEq for Key {
    fn eq(&self, other: &Key) -> bool {
        self.key() == other.key()
    }
}

impl Eq for Key {}

impl PartialOrd for Key {
    fn partial_cmp(&self, other: &Key) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Key {
    fn cmp(&self, other: &Key) -> std::cmp::Ordering {
        self.key().cmp(other.key())
    }
}

/// An entry of the ordered walk.
pub type OrderedEntry<'a> = crossbeam_skiplist::map::Entry<'a, Key, ()>;

impl Index {
    /// An empty index with room for `capacity` keys in its hash set.
    pub fn with_capacity(capacity: usize) -> Index {
        Index {
            hash: papaya::HashSet::builder()
                .capacity(capacity)
                .hasher(RandomState::new())
                .build(),
            ordered: SkipMap::new(),
            hashed: AtomicBool::new(false),
        }
    }

    /// The current position of `key`, if it is in the index. Lock-free.
    pub fn get(&self, key: &str) -> Option<Loc> {
        if self.hashed.load(Ordering::Acquire) {
            self.hash.pin().get(key).map(|k| k.load())
        } else {
            self.ordered.get(key).map(|e| e.key().load())
        }
    }

    /// A handle to the node of `key`, to read or move it under the writer
    /// lock.
    pub fn node(&self, key: &str) -> Option<Key> {
        if self.hashed.load(Ordering::Acquire) {
            self.hash.pin().get(key).cloned()
        } else {
            self.ordered.get(key).map(|e| e.key().clone())
        }
    }

    /// Puts every key of the skip list into the hash set, then switches
    /// point lookups to it; `CHUNK` keys per call of `locked`, which runs
    /// its argument under the writer lock (so no key is removed while its
    /// chunk is copied: one removed before is skipped, one removed after
    /// leaves both halves, and one inserted meanwhile went into both).
    /// Gives up (lookups stay on the skip list) when `stop` says so.
    pub fn fill_hashed(&self, locked: impl Fn(&mut dyn FnMut()), stop: impl Fn() -> bool) {
        const CHUNK: usize = 1024;
        let mut cursor = self.ordered.front();
        while cursor.is_some() {
            if stop() {
                return;
            }
            locked(&mut || {
                let hash = self.hash.pin();
                for _ in 0..CHUNK {
                    let Some(e) = cursor.take() else { return };
                    if !e.is_removed() {
                        hash.insert(e.key().clone());
                    }
                    cursor = e.next();
                }
            });
        }
        self.hashed.store(true, Ordering::Release);
    }

    /// Adds `key`, which is not in the index, at `loc`. Writer lock only.
    pub fn insert(&self, key: &str, loc: Loc) -> Key {
        let k = Key::new(key, loc);
        self.insert_key(k.clone());
        k
    }

    fn insert_key(&self, k: Key) {
        // Ordered first: a key a `get` can find is already in `scan`.
        self.ordered.insert(k.clone(), ());
        self.hash.pin().insert(k);
    }

    /// Recovery only, before anyone reads: adds `key` to the ordered half
    /// alone ([`Index::fill_hashed`] adds it to the other after the open).
    pub fn insert_ordered(&self, key: Key) {
        self.ordered.insert(key, ());
    }

    /// Removes `key`; returns whether it was there. Writer lock only.
    pub fn remove(&self, key: &str) -> bool {
        // The skip list has every key; the hash set may not have it yet.
        self.hash.pin().remove(key);
        self.ordered.remove(key).is_some()
    }

    /// Removes every key. Writer lock only.
    pub fn clear(&self) {
        self.hash.pin().clear();
        self.ordered.clear();
    }

    /// Keys in the index.
    pub fn len(&self) -> usize {
        self.ordered.len()
    }

    /// The first key in order.
    pub fn front(&self) -> Option<OrderedEntry<'_>> {
        self.ordered.front()
    }

    /// The first key after `key` in order.
    pub fn after(&self, key: &str) -> Option<OrderedEntry<'_>> {
        // NOTE: never `SkipMap::range()`: crossbeam-skiplist 0.1.3 leaks
        // the nodes it visits.
        self.ordered.lower_bound(Bound::Excluded(key))
    }

    /// Every key in order.
    pub fn iter(&self) -> crossbeam_skiplist::map::Iter<'_, Key, ()> {
        self.ordered.iter()
    }
}

/// A [`Loc`] that readers load without a lock while the single writer
/// updates it: a sequence lock over three atomic words. Writers are
/// serialized by the writer mutex, which a seqlock needs.
pub struct Slot {
    seq: AtomicU64,
    seg_len: AtomicU64,
    offset: AtomicU64,
    expires_at: AtomicU64,
}

impl Slot {
    /// A slot holding `loc`.
    pub fn new(loc: Loc) -> Slot {
        Slot {
            seq: AtomicU64::new(0),
            seg_len: AtomicU64::new(((loc.seg as u64) << 32) | loc.len as u64),
            offset: AtomicU64::new(loc.offset),
            expires_at: AtomicU64::new(loc.expires_at),
        }
    }

    /// Reads a consistent position.
    pub fn load(&self) -> Loc {
        loop {
            let s1 = self.seq.load(Ordering::Acquire);
            if s1 & 1 == 1 {
                std::hint::spin_loop();
                continue;
            }
            let seg_len = self.seg_len.load(Ordering::Relaxed);
            let offset = self.offset.load(Ordering::Relaxed);
            let expires_at = self.expires_at.load(Ordering::Relaxed);
            fence(Ordering::Acquire);
            if self.seq.load(Ordering::Relaxed) == s1 {
                return Loc {
                    seg: (seg_len >> 32) as SegmentId,
                    len: seg_len as u32,
                    offset,
                    expires_at,
                };
            }
        }
    }

    /// Replaces the position. Only the holder of the writer lock may call it.
    pub fn store(&self, loc: Loc) {
        let s = self.seq.load(Ordering::Relaxed);
        self.seq.store(s.wrapping_add(1), Ordering::Relaxed);
        fence(Ordering::Release);
        self.seg_len
            .store(((loc.seg as u64) << 32) | loc.len as u64, Ordering::Relaxed);
        self.offset.store(loc.offset, Ordering::Relaxed);
        self.expires_at.store(loc.expires_at, Ordering::Relaxed);
        self.seq.store(s.wrapping_add(2), Ordering::Release);
    }
}

/// Estimated bytes one index entry takes: the shared [`Node`] (slot, key
/// bytes and `Arc` count in one allocation), the skip-list node (refcount,
/// height, the `Key` and on average two tower pointers) and the hash set's
/// share (its boxed entry and table slot at the load it keeps), as measured
/// with a counting allocator (`benches/engine.rs` prints the total).
pub fn entry_bytes(key: &str) -> u64 {
    // Measured with an 8-byte `Key`; a fat one is 8 more in each half.
    const ARC_COUNT: usize = 8;
    const ORDERED_NODE: usize = 32;
    const HASH_ENTRY: usize = 28;
    let wide = 2 * (std::mem::size_of::<Key>() - 8);
    (key.len() + std::mem::size_of::<Slot>() + ARC_COUNT + ORDERED_NODE + HASH_ENTRY + wide) as u64
}

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(offset: u64) -> Loc {
        Loc {
            seg: 1,
            len: 10,
            offset,
            expires_at: 0,
        }
    }

    fn filled(index: &Index) {
        index.fill_hashed(|f| f(), || false);
        assert!(index.hashed.load(Ordering::Relaxed));
    }

    #[test]
    fn both_halves_hold_the_same_keys_and_nodes() {
        let index = Index::with_capacity(0);
        for i in (50..100u64).rev() {
            index.insert_ordered(Key::new(&format!("k{i:03}"), at(i)));
        }
        // Before the fill, lookups go to the skip list.
        assert_eq!(index.get("k077"), Some(at(77)));
        assert_eq!(index.hash.len(), 0);
        filled(&index);
        assert_eq!(index.hash.len(), 50);
        for i in (0..50u64).rev() {
            index.insert(&format!("k{i:03}"), at(i));
        }
        assert_eq!(index.len(), 100);
        assert_eq!(index.get("k042"), Some(at(42)));
        // One node per key: moving it through the hash half moves it for
        // the ordered walk too.
        index.node("k042").unwrap().store(at(1042));
        let walked: Vec<(String, u64)> = index
            .iter()
            .map(|e| (e.key().key().to_owned(), e.key().load().offset))
            .collect();
        assert_eq!(walked.len(), 100);
        assert!(walked.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(walked[42], ("k042".to_string(), 1042));
        assert_eq!(index.after("k098").unwrap().key().key(), "k099");
        assert!(index.remove("k042"));
        assert!(!index.remove("k042"));
        assert_eq!(index.get("k042"), None);
        assert_eq!(index.len(), 99);
        index.clear();
        assert_eq!((index.len(), index.get("k001")), (0, None));
        assert!(index.front().is_none());
    }

    #[test]
    fn a_lookup_never_misses_a_key_while_the_hash_half_grows() {
        // Starts tiny: the inserts below resize the hash set many times
        // while readers look up keys that are there throughout.
        let index = Index::with_capacity(0);
        filled(&index);
        for i in 0..16u64 {
            index.insert(&format!("stable{i}"), at(i));
        }
        let done = std::sync::atomic::AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..200_000u64 {
                    index.insert(&format!("grow{i}"), at(i));
                    index.node("stable3").unwrap().store(at(i));
                }
                done.store(true, Ordering::Relaxed);
            });
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) {
                let k = format!("stable{}", n % 16);
                assert!(index.get(&k).is_some(), "missed {k} after {n} lookups");
                n += 1;
            }
        });
        assert_eq!(index.len(), 200_016);
    }

    #[test]
    fn the_fill_after_open_races_the_writer_and_readers_without_losing_a_key() {
        let index = Index::with_capacity(0);
        // As recovery leaves it: every key in the skip list only.
        for i in 0..60_000u64 {
            index.insert_ordered(Key::new(&format!("k{i:06}"), at(i)));
        }
        let writer = std::sync::Mutex::new(());
        let done = AtomicBool::new(false);
        std::thread::scope(|s| {
            s.spawn(|| {
                index.fill_hashed(
                    |f| {
                        let _w = writer.lock().unwrap();
                        f()
                    },
                    || false,
                )
            });
            s.spawn(|| {
                // Removes every third key (from either end, so some go
                // before the fill reaches them and some after), inserts
                // new ones and sets removed ones again, as `set`/`remove`
                // would under the writer lock.
                for i in 0..20_000u64 {
                    let _w = writer.lock().unwrap();
                    let j = if i % 2 == 0 { i * 3 } else { 59_999 - i * 3 };
                    assert!(index.remove(&format!("k{j:06}")));
                    index.insert(&format!("new{i:06}"), at(i));
                    if i % 4 == 0 {
                        index.insert(&format!("k{j:06}"), at(j + 1));
                    }
                }
                done.store(true, Ordering::Relaxed);
            });
            // Keys 1 mod 3 are never touched: a lookup must always find them,
            // whichever half it uses.
            let mut n = 0u64;
            while !done.load(Ordering::Relaxed) || !index.hashed.load(Ordering::Relaxed) {
                let i = (n * 3 + 1) % 60_000;
                assert_eq!(index.get(&format!("k{i:06}")), Some(at(i)), "lookup {n}");
                n += 1;
            }
        });
        // The halves agree key for key and node for node.
        assert_eq!(index.hash.len(), index.len());
        for e in index.iter() {
            let k = e.key();
            assert!(
                index.node(k.key()).is_some_and(|n| n.same(k)),
                "{}",
                k.key()
            );
        }
        assert_eq!(index.len(), 60_000 - 20_000 + 5_000 + 20_000);
    }

    #[test]
    fn slot_round_trips_and_readers_see_whole_values() {
        let a = Loc {
            seg: 7,
            len: 99,
            offset: 12345,
            expires_at: 0,
        };
        let slot = Slot::new(a);
        assert_eq!(slot.load(), a);
        let b = Loc {
            seg: u32::MAX,
            len: u32::MAX,
            offset: u64::MAX,
            expires_at: u64::MAX,
        };
        std::thread::scope(|s| {
            s.spawn(|| {
                for i in 0..100_000 {
                    slot.store(if i % 2 == 0 { b } else { a });
                }
            });
            for _ in 0..100_000 {
                let l = slot.load();
                assert!(l == a || l == b, "torn read {l:?}");
            }
        });
    }
}
