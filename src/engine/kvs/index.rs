//! The in-memory index: key to the position of its latest record.

use std::sync::atomic::{AtomicU64, Ordering, fence};
use std::time::{SystemTime, UNIX_EPOCH};

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

/// The index type.
///
/// NOTE: values are [`Slot`]s updated in place rather than replaced with
/// `SkipMap::insert`: crossbeam's insert over an existing key unlinks the old
/// node before linking the new one, so a concurrent `get` could find no entry
/// at all for a key that was never removed.
pub type Index = crossbeam_skiplist::SkipMap<String, Slot>;

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

/// Estimated bytes one index entry takes: the key's heap bytes, the
/// `String` and [`Slot`] inline, and the skip-list node (refcount, height,
/// and on average two tower pointers) rounded up for allocator overhead.
pub fn entry_bytes(key: &str) -> u64 {
    const NODE_OVERHEAD: usize = 48;
    (key.len() + std::mem::size_of::<String>() + std::mem::size_of::<Slot>() + NODE_OVERHEAD) as u64
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
