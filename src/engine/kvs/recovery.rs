//! Rebuilding the index from the segments on open.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::index::{Index, Loc, Slot};
use super::record::{self, Kind, SEGMENT_HEADER_LEN};
use super::segment::{self, ScanEnd, SegmentId};
use crate::{KvsError, Result};

/// What recovery hands to the writer.
pub struct Recovered {
    /// Segment to append to.
    pub active: SegmentId,
    /// Its file, opened for writing.
    pub file: File,
    /// Its length: where the next record goes.
    pub pos: u64,
    /// Bytes in all segments.
    pub disk_bytes: u64,
    /// Bytes of the records the index points to.
    pub live_bytes: u64,
}

/// Scans every segment of `dir` in id order into `index` (which must be
/// empty). See "Recovery" in `docs/design.md`.
pub fn recover(dir: &Path, index: &Index, segment_size: u64) -> Result<Recovered> {
    let ids = segment::list_and_clean(dir)?;
    let Some(&newest) = ids.last() else {
        let file = segment::create(dir, 1, segment_size)?;
        return Ok(Recovered {
            active: 1,
            file,
            pos: SEGMENT_HEADER_LEN,
            disk_bytes: SEGMENT_HEADER_LEN,
            live_bytes: 0,
        });
    };

    // NOTE: a HashMap first, then one bulk insert into the skip list: most of
    // a log is usually overwrites, and HashMap updates are far cheaper than
    // skip-list node churn.
    let mut map: HashMap<String, Loc> = HashMap::new();
    let mut disk_bytes = 0;
    let mut newest_len = 0;
    for &id in &ids {
        let p = segment::path(dir, id);
        let end = segment::scan(&p, |rec| {
            let loc = Loc {
                seg: id,
                len: rec.header.record_len() as u32,
                offset: rec.offset,
                expires_at: rec.header.expires_at,
            };
            match rec.header.kind {
                Kind::Put => match map.get_mut(rec.key) {
                    Some(slot) => *slot = loc,
                    None => {
                        map.insert(rec.key.to_owned(), loc);
                    }
                },
                Kind::Tombstone => {
                    map.remove(rec.key);
                }
            }
        })?;
        let len = match end {
            ScanEnd::Clean { len } => len,
            ScanEnd::Bad {
                offset,
                reason,
                len,
                followed_by_valid: false,
            } if id == newest => {
                if offset >= SEGMENT_HEADER_LEN && segment::zero_from(&p, offset, len)? {
                    // The reserved, never written end of the active segment.
                    offset
                } else {
                    cut_tail(&p, offset, &reason, len)?
                }
            }
            ScanEnd::Bad { offset, reason, .. } => {
                return Err(KvsError::Corrupt {
                    path: p,
                    offset,
                    reason,
                });
            }
        };
        disk_bytes += len;
        if id == newest {
            newest_len = len;
        }
    }

    let live_bytes = map.values().map(|l| l.len as u64).sum();
    for (k, v) in map {
        index.insert(k, Slot::new(v));
    }
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .open(segment::path(dir, newest))?;
    segment::reserve(&file, segment_size.max(newest_len))?;
    Ok(Recovered {
        active: newest,
        file,
        pos: newest_len,
        disk_bytes,
        live_bytes,
    })
}

/// Truncates a torn tail of the newest segment at `offset`; returns the new
/// length. A segment cut inside its header is reset to an empty segment.
fn cut_tail(p: &Path, offset: u64, reason: &str, len: u64) -> Result<u64> {
    tracing::warn!(
        file = %p.display(),
        offset,
        dropped_bytes = len - offset,
        reason,
        "torn tail in the newest segment; cutting it back to the last valid record"
    );
    let file = OpenOptions::new().write(true).open(p)?;
    let new_len = if offset < SEGMENT_HEADER_LEN {
        file.set_len(0)?;
        file.write_all_at(&record::segment_header(), 0)?;
        SEGMENT_HEADER_LEN
    } else {
        file.set_len(offset)?;
        offset
    };
    file.sync_all()?;
    Ok(new_len)
}
