//! The read-buffer growth policy every connection shares (server, client,
//! load tester): read in chunks, grow only when a chunk no longer fits,
//! and never reserve what a peer merely declared.

use bytes::BytesMut;

/// Growth step, and the size a read buffer starts at.
pub const CHUNK: usize = 8 * 1024;

/// The capacity `buf` should grow to before the next read, or `None` when
/// at least half a chunk is free: double it, and at least one chunk more
/// than it holds (amortised O(1) copies for a large frame arriving).
pub fn next_capacity(buf: &BytesMut) -> Option<usize> {
    (buf.capacity() - buf.len() < CHUNK / 2).then(|| (buf.capacity() * 2).max(buf.len() + CHUNK))
}

/// Grows `buf` per [`next_capacity`]; for connections without a memory
/// budget (clients).
pub fn make_room(buf: &mut BytesMut) {
    if let Some(target) = next_capacity(buf) {
        buf.reserve(target - buf.len());
    }
}
