//! The in-memory index: key to the position of its latest record.

use std::time::{SystemTime, UNIX_EPOCH};

use super::segment::SegmentId;

/// Where a key's latest record lives. 24 bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
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
pub type Index = crossbeam_skiplist::SkipMap<String, Loc>;

/// Current Unix time in milliseconds.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}
