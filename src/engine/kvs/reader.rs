//! The per-clone read path: no lock, own read-only maps of the segments.

use std::collections::HashMap;
use std::collections::hash_map::Entry as MapEntry;
use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;

use memmap2::{MmapOptions, MmapRaw};

use super::Core;
use super::index::Loc;
use super::record::RECORD_HEADER_LEN;
use super::segment::{self, SegmentId};
use crate::engine::Entry;
use crate::{KvsError, Result};

/// How often a read retries after finding its segment deleted under it.
/// Each retry means a compaction published meanwhile; more than a few in a
/// row means something else is wrong.
const MAX_RETRIES: usize = 16;

/// Read handles of one `KvStore` clone: a read-only map per segment,
/// made on first use.
#[derive(Default)]
pub struct Reader {
    maps: HashMap<SegmentId, MmapRaw>,
    seen_retired_below: SegmentId,
}

impl Reader {
    /// Drops maps of segments that compaction retired.
    fn refresh(&mut self, core: &Core) {
        let retired = core.retired_below.load(Ordering::Acquire);
        if retired != self.seen_retired_below {
            self.maps.retain(|&id, _| id >= retired);
            self.seen_retired_below = retired;
        }
    }

    /// The map of segment `id`, covering at least `end` bytes.
    fn map(&mut self, core: &Core, id: SegmentId, end: usize) -> io::Result<&MmapRaw> {
        // A map made before the file grew (a reopened store extends its
        // newest segment) is made again.
        if self.maps.get(&id).is_some_and(|m| m.len() < end) {
            self.maps.remove(&id);
        }
        match self.maps.entry(id) {
            MapEntry::Occupied(e) => Ok(e.into_mut()),
            MapEntry::Vacant(v) => {
                let p = segment::path(&core.dir, id);
                // The error keeps its kind: `NotFound` means compaction
                // retired the segment, and the caller retries.
                let file = File::open(&p).map_err(segment::io_at("open segment", &p))?;
                // A raw read-only map: pointers only, never a `&[u8]` over
                // bytes the writer may be storing into.
                let map = MmapOptions::new()
                    .map_raw_read_only(&file)
                    .map_err(segment::io_at("map", &p))?;
                Ok(v.insert(map))
            }
        }
    }

    /// Asks the CPU to load the first lines of `key`'s record (see
    /// [`KvsEngine::prefetch`](crate::KvsEngine::prefetch)); does nothing
    /// for a missing key or one whose segment cannot be mapped.
    pub fn prefetch(&mut self, core: &Core, key: &str) {
        /// Lines of a record fetched ahead: the header and a short value.
        const LINES: usize = 3;
        self.refresh(core);
        let Some(loc) = core.index.get(key) else {
            return;
        };
        let (start, len) = (loc.offset as usize, loc.len as usize);
        let Ok(map) = self.map(core, loc.seg, start + len) else {
            return;
        };
        if start + len > map.len() {
            return;
        }
        for line in 0..len.div_ceil(64).min(LINES) {
            // `wrapping_add` (no dereference): the address is inside the
            // mapping, checked above.
            prefetch_read(map.as_ptr().wrapping_add(start + 64 * line));
        }
    }

    /// Reads the current live entry of `key`.
    pub fn get(&mut self, core: &Core, key: &str) -> Result<Option<Entry>> {
        self.find(core, key, |core, reader, loc| reader.read(core, key, loc))
    }

    /// Calls `f` with the value bytes of the current live entry of `key`;
    /// `false` when there is none. No copy is made and the bytes are not
    /// checked for UTF-8 (the record's CRC is).
    pub fn get_with(&mut self, core: &Core, key: &str, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        self.find(core, key, |core, reader, loc| {
            reader.with_record(core, key, loc, |value, _| {
                f(value);
                Ok(())
            })
        })
        .map(|found| found.is_some())
    }

    /// Looks `key` up and runs `read` on its live position, again if the
    /// segment was deleted under it.
    fn find<R>(
        &mut self,
        core: &Core,
        key: &str,
        mut read: impl FnMut(&Core, &mut Self, Loc) -> Result<R>,
    ) -> Result<Option<R>> {
        for _ in 0..MAX_RETRIES {
            self.refresh(core);
            let Some(loc) = core.index.get(key) else {
                return Ok(None);
            };
            if loc.expired() {
                return Ok(None);
            }
            match read(core, self, loc) {
                Err(KvsError::Io(e)) if e.kind() == io::ErrorKind::NotFound => {
                    // Compaction retired the segment after we read the index;
                    // the index already points elsewhere.
                    continue;
                }
                r => return r.map(Some),
            }
        }
        Err(KvsError::Io(io::Error::other(format!(
            "key `{key}` kept moving between segments; gave up after {MAX_RETRIES} tries"
        ))))
    }

    /// Reads and checks the record of `key` at `loc`. A segment deleted
    /// under the reader is an `Io` error of kind `NotFound`.
    pub fn read(&mut self, core: &Core, key: &str, loc: Loc) -> Result<Entry> {
        self.with_record(core, key, loc, |value, expires_at| {
            let value = String::from_utf8(value.to_vec()).map_err(|_| "value is not UTF-8")?;
            Ok(Entry { value, expires_at })
        })
    }

    /// Checks the record of `key` at `loc` and calls `f` with its value
    /// and expiry; an `Err` from `f` is a reason the record is corrupt.
    fn with_record<R>(
        &mut self,
        core: &Core,
        key: &str,
        loc: Loc,
        f: impl FnOnce(&[u8], u64) -> std::result::Result<R, &'static str>,
    ) -> Result<R> {
        let start = loc.offset as usize;
        let end = start + loc.len as usize;
        let map = self.map(core, loc.seg, end)?;
        let corrupt = |reason: &str| KvsError::Corrupt {
            path: segment::path(&core.dir, loc.seg),
            offset: loc.offset,
            reason: reason.to_string(),
        };
        if end > map.len() {
            return Err(corrupt("index points past the end of the segment"));
        }
        // SAFETY: `start..end` is inside the mapping (checked above), which
        // `self.maps` keeps alive while `rec` is used. Only this record's
        // bytes are borrowed, and nothing writes them while the borrow
        // lives: the index published them after the writer stored them, the
        // writer only stores past published records, and segments are only
        // truncated past their records (sealing) or deleted (which leaves
        // existing maps valid). Assumed outside the process: nobody else
        // truncates or rewrites segment files while the store is open (see
        // `KvStore::open`); a truncation would fault here (SIGBUS).
        let rec = unsafe { std::slice::from_raw_parts(map.as_ptr().add(start), end - start) };
        let h = segment::check_record(rec, Some(key)).map_err(corrupt)?;
        f(&rec[RECORD_HEADER_LEN + h.key_len..], h.expires_at).map_err(corrupt)
    }
}

/// A hint to load the cache line at `p`; never faults, whatever `p` is.
#[inline]
fn prefetch_read(p: *const u8) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: a prefetch reads nothing the program sees and cannot fault,
    // even on an unmapped address.
    unsafe {
        std::arch::x86_64::_mm_prefetch::<{ std::arch::x86_64::_MM_HINT_T0 }>(p.cast());
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = p;
}
