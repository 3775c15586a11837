//! One stored key: a single allocation holding a small header, the key and
//! the value, shared through a counted handle ([`ItemRef`]) by the stripe's
//! hash table, its ordered set, its expiry index and the policy queues.
//!
//! ```text
//! 0      4      8             16      20        24       28     29   32
//! | refs | meta | expires_at  | key   | value   | value  | rem- | pad | key bytes | value bytes (capacity) |
//! |      |      |             | len   | len     | cap    | oved |     |
//! ```
//!
//! 32 header bytes: with a 16-byte key and a 100-byte value the block is
//! 148 bytes, one 160-byte malloc chunk (the skip-list node, `Arc` block,
//! value `Mutex` and two string allocations it replaces took about 264).
//!
//! The key never changes. The value and the expiry change only under the
//! key's stripe lock, and the value is read only under it: an overwrite that fits
//! the capacity is written in place, so the key stays in every index
//! throughout and a concurrent reader (who takes the same lock) never
//! misses it. An overwrite that does not fit makes a new item, which
//! replaces the old one in each index under the same lock.

use std::alloc::{Layout, alloc, dealloc, handle_alloc_error};
use std::cell::UnsafeCell;
use std::ptr::NonNull;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering, fence};

use crate::engine::NO_EXPIRY;

/// Bytes accounted per entry beyond its key and value: the item header
/// and its malloc chunk rounding, the hash-table slot, the ordered set's
/// slot and the policy queue slot, with the slack each has. Measured, not
/// guessed, by `tests/memory_overhead.rs` (release, `--ignored --exact`,
/// 16-byte keys and 100-byte values, RSS from `/proc/self/statm`, glibc
/// malloc, x86-64), two ways:
/// - `per_entry_overhead`: 1,000,000 inserts, RSS growth minus key and
///   value bytes per entry: 100.1 bytes with S3-FIFO's queues (16-byte
///   slots), 92.1 with SIEVE or LRU (8-byte slots), 84.1 with no queue;
/// - `per_entry_overhead_at_the_bound`: 10x a 64 MiB bound written through
///   the engine, so entries are evicted all along: RSS per entry held,
///   minus key and value, 130.0 with S3-FIFO (its queues' ring buffers
///   keep room for the longest they have been; removals leave B-tree
///   nodes part full), 115.7 with SIEVE.
///
/// The largest, rounded up: the bound is what this figure is for.
pub const ENTRY_OVERHEAD: u64 = 136;

/// Extra bytes accounted for an entry with an expiry: its slot in the
/// stripe's expiry index (a `BTreeMap` entry of 24 bytes plus node slack).
pub const EXPIRY_OVERHEAD: u64 = 40;

/// Bytes an entry with a key of `key_len` bytes, a value of `value_len`
/// bytes and expiry `expires_at` is accounted for against the bound.
pub fn charge(key_len: usize, value_len: usize, expires_at: u64) -> u64 {
    let expiry = if expires_at == NO_EXPIRY {
        0
    } else {
        EXPIRY_OVERHEAD
    };
    (key_len + value_len) as u64 + ENTRY_OVERHEAD + expiry
}

/// The largest key or value an item holds (lengths are stored as `u32`).
pub const MAX_LEN: usize = u32::MAX as usize;

/// The header; the key and value bytes follow it in the same allocation.
#[repr(C)]
pub struct Item {
    refs: AtomicU32,
    /// Policy bits: SIEVE's visited bit, S3-FIFO's frequency, LRU's clock.
    pub meta: AtomicU32,
    /// Written only under the key's stripe lock; atomic so that a scan can
    /// skip expired keys holding only its order-shard lock.
    expires_at: AtomicU64,
    key_len: u32,
    /// Written and read only under the key's stripe lock.
    value_len: UnsafeCell<u32>,
    capacity: u32,
    /// Set under the key's stripe lock when the item leaves the index, so
    /// queues drop it without a lookup.
    pub removed: AtomicBool,
}

/// A counted handle on an [`Item`]; the item is freed with its last handle.
pub struct ItemRef(NonNull<Item>);

// SAFETY: the counts, policy bits and expiry are atomic; the value and its
// length (behind `UnsafeCell`) are only touched under the key's stripe lock
// (see the `unsafe fn`s below), which orders every access to them; the key
// bytes never change after `new`.
unsafe impl Send for ItemRef {}
// SAFETY: as for Send.
unsafe impl Sync for ItemRef {}

fn layout(key_len: usize, capacity: usize) -> Layout {
    // Cannot fail: both lengths are at most u32::MAX (checked by `new`),
    // far under isize::MAX on a 64-bit target.
    Layout::new::<Item>()
        .extend(Layout::array::<u8>(key_len + capacity).expect("item size"))
        .expect("item size")
        .0
        .pad_to_align()
}

impl ItemRef {
    /// A new item holding `key` and `value`, with one handle. Both lengths
    /// must be at most [`MAX_LEN`] (the caller checks).
    pub fn new(key: &str, value: &str, expires_at: u64) -> ItemRef {
        assert!(key.len() <= MAX_LEN && value.len() <= MAX_LEN);
        let layout = layout(key.len(), value.len());
        // SAFETY: the layout has a non-zero size (the header). The header
        // is written before any read; the bytes after it, `key.len() +
        // value.len()` of them, are inside the allocation by `layout`.
        unsafe {
            let p = alloc(layout) as *mut Item;
            let Some(ptr) = NonNull::new(p) else {
                handle_alloc_error(layout)
            };
            p.write(Item {
                refs: AtomicU32::new(1),
                meta: AtomicU32::new(0),
                expires_at: AtomicU64::new(expires_at),
                key_len: key.len() as u32,
                value_len: UnsafeCell::new(value.len() as u32),
                capacity: value.len() as u32,
                removed: AtomicBool::new(false),
            });
            let bytes = p.add(1) as *mut u8;
            bytes.copy_from_nonoverlapping(key.as_ptr(), key.len());
            bytes
                .add(key.len())
                .copy_from_nonoverlapping(value.as_ptr(), value.len());
            ItemRef(ptr)
        }
    }

    /// Whether `a` and `b` are handles on the same item.
    pub fn ptr_eq(a: &ItemRef, b: &ItemRef) -> bool {
        a.0 == b.0
    }

    /// The item's address: a tie-breaker in the expiry index, unique while
    /// the item is indexed.
    pub fn address(&self) -> usize {
        self.0.as_ptr() as usize
    }
}

impl Clone for ItemRef {
    fn clone(&self) -> ItemRef {
        let old = self.refs.fetch_add(1, Ordering::Relaxed);
        // A handle lives in at most four indexes and a few transient
        // copies; a count this high means a leak, and wrapping would free a
        // live item.
        if old > u32::MAX / 2 {
            std::process::abort();
        }
        ItemRef(self.0)
    }
}

impl Drop for ItemRef {
    fn drop(&mut self) {
        if self.refs.fetch_sub(1, Ordering::Release) != 1 {
            return;
        }
        // Every other handle's last use happened before its decrement.
        fence(Ordering::Acquire);
        let layout = layout(self.key_len as usize, self.capacity as usize);
        // SAFETY: this was the last handle, so nothing else can reach the
        // item; it was allocated by `new` with this same layout.
        unsafe { dealloc(self.0.as_ptr() as *mut u8, layout) }
    }
}

impl std::ops::Deref for ItemRef {
    type Target = Item;

    fn deref(&self) -> &Item {
        // SAFETY: a handle keeps the item allocated.
        unsafe { self.0.as_ref() }
    }
}

impl std::fmt::Debug for ItemRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("ItemRef").field(&self.key()).finish()
    }
}

impl Item {
    /// The expiry (Unix ms, [`NO_EXPIRY`] for never); exact under the
    /// key's stripe lock, possibly just overwritten without it.
    pub fn expires_at(&self) -> u64 {
        self.expires_at.load(Ordering::Relaxed)
    }

    /// Whether a value of `len` bytes is written in place by
    /// [`overwrite`](ItemRef::overwrite): it fits, and wastes at most an
    /// eighth of the capacity (a shrinking value gets a tight new item).
    pub fn fits(&self, len: usize) -> bool {
        let cap = self.capacity as usize;
        len <= cap && cap - len <= cap / 8
    }
}

// The methods that reach the key and value bytes live on the handle, not on
// `Item`: a `&Item` (and a pointer derived from it) covers only the 32-byte
// header, so the bytes after it must be reached from the allocation's own
// pointer, the `NonNull` the handle holds.
impl ItemRef {
    /// The first key byte; the value bytes follow the key's.
    fn bytes(&self) -> *mut u8 {
        // SAFETY: the allocation holds the header and then the key and
        // value bytes (`repr(C)`, and `layout` puts them there), so one
        // header past its start is in bounds. The pointer comes from
        // `alloc` through the `NonNull`, never through a reference, so it
        // may reach the whole allocation.
        unsafe { self.0.as_ptr().add(1).cast::<u8>() }
    }

    /// The key.
    pub fn key(&self) -> &str {
        // SAFETY: `new` copied a whole `&str` of `key_len` bytes to
        // `bytes()`, inside the allocation this handle keeps alive for the
        // returned borrow, and the key bytes are never written again.
        unsafe {
            let bytes = std::slice::from_raw_parts(self.bytes(), self.key_len as usize);
            std::str::from_utf8_unchecked(bytes)
        }
    }

    /// The value.
    ///
    /// # Safety
    /// The caller holds the stripe lock of this item's key for as long as
    /// it uses the returned `&str`.
    pub unsafe fn value(&self) -> &str {
        // SAFETY: the `value_len` bytes after the key were written from a
        // whole `&str`, by `new` or by `overwrite` under the lock the caller
        // holds, which keeps them (and `value_len`) unchanged while the
        // returned borrow lives; they are inside the allocation (`value_len
        // <= capacity`), which this handle keeps alive.
        unsafe {
            let len = *self.value_len.get() as usize;
            let bytes = std::slice::from_raw_parts(self.bytes().add(self.key_len as usize), len);
            std::str::from_utf8_unchecked(bytes)
        }
    }

    /// Bytes accounted for this entry.
    ///
    /// # Safety
    /// The caller holds the stripe lock of this item's key.
    pub unsafe fn charge(&self) -> u64 {
        // SAFETY: `value_len` is written only under the lock the caller
        // holds.
        let value_len = unsafe { *self.value_len.get() };
        charge(self.key_len as usize, value_len as usize, self.expires_at())
    }

    /// Replaces the value and expiry in place.
    ///
    /// # Safety
    /// The caller holds the stripe lock of this item's key, and
    /// `self.fits(value.len())`.
    pub unsafe fn overwrite(&self, value: &str, expires_at: u64) {
        debug_assert!(self.fits(value.len()));
        // SAFETY: `value.len() <= capacity` bytes after the key are inside
        // the allocation, reached through the allocation's pointer
        // (`bytes`); every reader of the value and of `value_len` holds the
        // lock the caller holds, so none sees them change, and no `&str`
        // into the old value outlives that lock.
        unsafe {
            self.bytes()
                .add(self.key_len as usize)
                .copy_from_nonoverlapping(value.as_ptr(), value.len());
            *self.value_len.get() = value.len() as u32;
        }
        self.expires_at.store(expires_at, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_header_is_32_bytes_and_an_item_one_allocation() {
        assert_eq!(std::mem::size_of::<Item>(), 32);
        assert_eq!(layout(16, 100).size(), 152);
        let item = ItemRef::new("key", "value", 7);
        assert_eq!(item.key(), "key");
        // SAFETY: no other thread can see this item.
        unsafe {
            assert_eq!(item.value(), "value");
            assert_eq!(item.expires_at(), 7);
            assert!(item.fits(5) && !item.fits(6) && !item.fits(4));
            item.overwrite("VALUE", NO_EXPIRY);
            assert_eq!(item.value(), "VALUE");
            assert_eq!(item.charge(), 8 + ENTRY_OVERHEAD);
        }
        let other = item.clone();
        assert!(ItemRef::ptr_eq(&item, &other));
        drop(item);
        assert_eq!(other.key(), "key");
    }

    #[test]
    fn empty_keys_and_values_and_large_capacities_fit() {
        let item = ItemRef::new("", "", NO_EXPIRY);
        assert!(item.fits(0) && !item.fits(1));
        let big = ItemRef::new("k", &"x".repeat(4096), NO_EXPIRY);
        assert!(big.fits(4096) && big.fits(3600) && !big.fits(3500));
    }
}
