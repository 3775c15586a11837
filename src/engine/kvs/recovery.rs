//! Rebuilding the index from the segments on open.
//!
//! Segments are scanned in parallel, each into a list sorted by key with
//! only its last record per key; the lists are then merged (for equal keys
//! the newest segment wins, and a winning tombstone drops the key) and the
//! result is inserted into the skip list in key order. Sorted insertion keeps
//! every skip-list search on the cached right edge of the list, several
//! times faster than inserting in log or hash order; a compacted segment is
//! already in key order, so its sort is a single pass.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::FileExt;
use std::path::Path;
use std::sync::atomic::{AtomicUsize, Ordering};

use super::hint::{self, KeyedRec};
use super::index::{self, Index, Key, Loc, now_ms};
use super::manifest::Manifest;
use super::record::{self, Kind, SEGMENT_HEADER_LEN};
use super::scan::{self, ScanEnd};
use super::segment::{self, SegmentId};
use crate::{KvsError, Result};

/// What recovery hands to the writer.
pub struct Recovered {
    /// The index of every live key.
    pub index: Index,
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
    /// Estimated memory of the index ([`index::entry_bytes`] summed).
    pub index_bytes: u64,
    /// CRC-32 of the active segment's bytes up to `pos`.
    pub crc: u32,
    /// The newest segment is sealed (a crash between sealing it and
    /// creating the next): the first write starts a new one.
    pub sealed: bool,
    /// Why the store can only be read (its files are not writable).
    pub read_only: Option<String>,
    /// The live segments, as written to the manifest.
    pub manifest: Manifest,
    /// The newest segment was read from a hint written at close, which
    /// stays valid for as long as nothing is appended.
    pub newest_hinted: bool,
}

/// Deletes segments (and their hints) that the manifest says are dead:
/// left by a compaction or a clear that stopped before deleting all its
/// inputs. Best effort: they are never read again, and a failure (a
/// read-only store) only leaves them taking space.
fn remove_dead(dir: &Path, dead: &[SegmentId]) {
    for &id in dead {
        let p = segment::path(dir, id);
        tracing::info!(file = %p.display(), "deleting a segment the manifest lists as retired");
        if hint::remove(dir, id).is_err() || std::fs::remove_file(&p).is_err() {
            return;
        }
    }
    if !dead.is_empty() {
        let _ = segment::sync_dir(dir);
    }
}

/// The last record of each key in one segment, sorted by key.
struct Scanned {
    id: SegmentId,
    records: Vec<KeyedRec>,
    /// Every key of `records`, one after the other.
    keys: String,
    /// The segment holds a `Clear` record: `records` are only those after
    /// the last one, and every older segment is dead.
    cleared: bool,
    end: ScanEnd,
    version: u16,
    sealed: bool,
    crc: u32,
    /// Read from a hint file rather than scanned.
    hinted: bool,
}

/// Scans every segment of `dir` into a new index. See "Recovery" in
/// `docs/design.md`.
pub fn recover(dir: &Path, segment_size: u64) -> Result<Recovered> {
    let mut ids = segment::list_and_clean(dir)?;
    let listed = Manifest::read(dir)?;
    if let Some(m) = &listed {
        let live = m.check(dir, &ids)?;
        remove_dead(dir, &ids[..ids.len() - live.len()]);
        ids = live;
    }
    let Some(&newest) = ids.last() else {
        let need = SEGMENT_HEADER_LEN + record::SEAL_RECORD_LEN;
        let file = segment::create(dir, 1, segment_size, need)?;
        let manifest = Manifest::of(&[1]);
        manifest.write(dir)?;
        return Ok(Recovered {
            manifest,
            index: Index::with_capacity(0),
            active: 1,
            file,
            pos: SEGMENT_HEADER_LEN,
            disk_bytes: SEGMENT_HEADER_LEN,
            live_bytes: 0,
            index_bytes: 0,
            crc: crc32fast::hash(&record::segment_header()),
            sealed: false,
            read_only: None,
            newest_hinted: false,
        });
    };

    let mut scanned = scan_parallel(dir, &ids)?;
    // At least the keys there will be (more when segments share keys):
    // the hash set is made at its final size instead of growing through
    // every power of two.
    let index = Index::with_capacity(scanned.iter().map(|s| s.records.len()).sum());
    let mut disk_bytes = 0;
    for s in &mut scanned {
        if s.id == newest {
            continue;
        }
        let p = segment::path(dir, s.id);
        let len = match &s.end {
            ScanEnd::Clean { len } => *len,
            // A reserved end (zeros only) holds no records, in any segment
            // (an older one may have one from before segments were
            // sealed); anything else in an older segment is damage.
            ScanEnd::Bad { offset, len, .. }
                if *offset >= SEGMENT_HEADER_LEN && scan::zero_from(&p, *offset, *len)? =>
            {
                *offset
            }
            ScanEnd::Bad { offset, reason, .. } => {
                return Err(KvsError::Corrupt {
                    path: p,
                    offset: *offset,
                    reason: reason.clone(),
                });
            }
        };
        if s.version >= 2 && !s.sealed {
            // NOTE: every segment but the newest was sealed before the next
            // one was created (or before a compaction output got its name),
            // so a missing seal means the file lost its end: refuse rather
            // than silently lose the keys that were there.
            return Err(KvsError::Corrupt {
                path: p,
                offset: len,
                reason: format!(
                    "sealed segment has no valid seal: it ends after {len} bytes at a record \
                     boundary, so it was cut short or its end was replaced; restore it from a \
                     backup (or move it away to accept losing its keys)"
                ),
            });
        }
        disk_bytes += len;
    }
    // `scanned` has one entry per id, and `ids` is not empty (checked above).
    let last = scanned
        .last()
        .expect("one scan per listed segment, and ids is not empty");
    let (newest_end, newest_scan_crc, newest_sealed, newest_hinted) =
        (last.end.clone(), last.crc, last.sealed, last.hinted);
    let newest_path = segment::path(dir, newest);

    // The merge and the skip-list inserts overlap: one thread merges and
    // hands sorted chunks to this one, which inserts them (the hash half of
    // the index is filled after the open, see `Index`). Meanwhile a
    // third decides where the newest segment ends: after a crash that
    // reads its reserved end (up to `segment_max_bytes` of zeros), which
    // then costs no wall time. Records before the stop are valid whatever
    // it decides, and an error it finds fails the open all the same.
    let (live_bytes, index_bytes, newest_res) = std::thread::scope(|scope| {
        let newest_job = scope.spawn(|| match &newest_end {
            ScanEnd::Clean { len } => Ok((*len, newest_scan_crc)),
            ScanEnd::Bad {
                offset,
                reason,
                len,
            } => newest_tail(&newest_path, *offset, reason, *len, newest_scan_crc),
        });
        // The merge thread makes each key's node (its one allocation,
        // from the key in the segment's key buffer); this one links them
        // into the skip list.
        let (tx, rx) = std::sync::mpsc::sync_channel::<Vec<Key>>(4);
        let merged = scope.spawn(move || {
            const CHUNK: usize = 8192;
            let mut chunk = Vec::with_capacity(CHUNK);
            let (mut live_bytes, mut index_bytes) = (0, 0);
            merge(&scanned, |key, loc| {
                live_bytes += loc.len as u64;
                index_bytes += index::entry_bytes(key);
                chunk.push(Key::new(key, loc));
                if chunk.len() == CHUNK {
                    let full = std::mem::replace(&mut chunk, Vec::with_capacity(CHUNK));
                    let _ = tx.send(full);
                }
            });
            let _ = tx.send(chunk);
            (live_bytes, index_bytes)
        });
        for chunk in rx {
            for key in chunk {
                index.insert_ordered(key);
            }
        }
        let (live_bytes, index_bytes) = match merged.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        let r = match newest_job.join() {
            Ok(r) => r,
            Err(panic) => std::panic::resume_unwind(panic),
        };
        (live_bytes, index_bytes, r)
    });
    let (newest_len, newest_crc) = newest_res?;
    disk_bytes += newest_len;
    let p = newest_path;
    let mut read_only = None;
    let file = match OpenOptions::new().read(true).write(true).open(&p) {
        Ok(file) => file,
        Err(e) if not_writable(&e) => {
            // A read-only file system or files we may not write: serve
            // reads; every write gets `ReadOnly` with this reason.
            let why = format!(
                "{} is not writable (open for writing {}: {e}); serving reads only",
                dir.display(),
                p.display()
            );
            tracing::error!("{why}");
            read_only = Some(why);
            File::open(&p).map_err(segment::io_at("open segment", &p))?
        }
        Err(e) => return Err(segment::io_at("open for writing", &p)(e).into()),
    };
    if !newest_sealed && read_only.is_none() {
        reserve_newest(dir, &p, &file, segment_size, newest_len)?;
    }
    let manifest = Manifest::of(&ids);
    if read_only.is_none() && listed.as_ref() != Some(&manifest) {
        if listed.is_none() {
            tracing::info!(dir = %dir.display(), segments = ids.len(), "writing the manifest of a store that had none");
        }
        manifest.write(dir)?;
    }
    Ok(Recovered {
        manifest,
        index,
        active: newest,
        file,
        pos: newest_len,
        disk_bytes,
        live_bytes,
        index_bytes,
        crc: newest_crc,
        sealed: newest_sealed,
        read_only,
        newest_hinted,
    })
}

/// Whether `e` says the file system or the file refuses writing.
pub fn not_writable(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::ReadOnlyFilesystem | std::io::ErrorKind::PermissionDenied
    )
}

/// Reserves the rest of the newest segment again (closing cut it off). On a
/// full disk it reserves what fits, or nothing: the store still opens and
/// serves reads, and writes fail with `ReadOnly` until space returns.
fn reserve_newest(dir: &Path, p: &Path, file: &File, segment_size: u64, used: u64) -> Result<()> {
    let want = segment_size.max(used);
    let free = segment::free_bytes(dir).unwrap_or(u64::MAX);
    let target = want.min(used + free / 2);
    match segment::reserve(file, target) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::StorageFull => {
            tracing::error!(
                file = %p.display(),
                wanted_bytes = target - used,
                free_bytes = free,
                "disk full: no room to reserve the active segment; serving reads, writes fail until space is freed"
            );
            Ok(())
        }
        Err(e) => Err(segment::io_at("reserve space for", p)(e).into()),
    }
}

/// Scans the segments on up to one thread per CPU; results in `ids` order.
fn scan_parallel(dir: &Path, ids: &[SegmentId]) -> Result<Vec<Scanned>> {
    let threads = std::thread::available_parallelism()
        .map_or(1, |n| n.get())
        .min(ids.len());
    // Each thread takes the next segment when it is done with one, so a big
    // and a small segment do not land on the same thread.
    let next = AtomicUsize::new(0);
    let mut results = std::thread::scope(|scope| {
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                scope.spawn(|| {
                    let mut done = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        let Some(&id) = ids.get(i) else { return done };
                        done.push((i, scan_one(dir, id, i + 1 == ids.len())));
                    }
                })
            })
            .collect();
        let mut all = Vec::with_capacity(ids.len());
        for h in handles {
            match h.join() {
                Ok(done) => all.extend(done),
                Err(panic) => std::panic::resume_unwind(panic),
            }
        }
        all
    });
    results.sort_unstable_by_key(|(i, _)| *i);
    results.into_iter().map(|(_, r)| r).collect()
}

/// Scans one segment, or reads its hint instead when the hint matches the
/// whole file's length and CRC-32 (which is also what a seal would prove).
/// Only the `newest` segment may use a hint written at close for an open
/// segment: an older one was sealed since, and its file no longer matches.
fn scan_one(dir: &Path, id: SegmentId, newest: bool) -> Result<Scanned> {
    if hint::path(dir, id).exists() {
        let p = segment::path(dir, id);
        let (len, crc) = hint::file_crc(&p).map_err(segment::io_at("read", &p))?;
        match hint::read(dir, id, len, crc) {
            Some(Ok(l)) if l.open && !newest => tracing::warn!(
                file = %hint::path(dir, id).display(),
                "ignoring a hint written for the open segment: this one is sealed; scanning it"
            ),
            Some(Ok(l)) => {
                return Ok(Scanned {
                    id,
                    records: l.records,
                    keys: l.keys,
                    cleared: l.cleared,
                    end: ScanEnd::Clean { len },
                    version: record::FORMAT_VERSION,
                    sealed: !l.open,
                    crc,
                    hinted: true,
                });
            }
            Some(Err(why)) => tracing::warn!(
                file = %hint::path(dir, id).display(),
                reason = %why,
                "ignoring the hint file; scanning the segment"
            ),
            None => {}
        }
    }
    let (latest, scan) = hint::scan_latest(dir, id)?;
    let latest = hint::Keyed::from_latest(latest);
    Ok(Scanned {
        id,
        records: latest.records,
        keys: latest.keys,
        cleared: latest.cleared,
        end: scan.end,
        version: scan.version,
        sealed: scan.sealed,
        crc: scan.crc,
        hinted: false,
    })
}

/// Merges the per-segment lists in key order, newest segment first among
/// equal keys, and calls `emit` for every key whose latest record is a put
/// that has not expired. Segments older than the newest one holding a
/// `Clear` record are dead and skipped.
///
/// A winner tree over the list heads: each key costs about log2(lists)
/// comparisons. The linear pick over every head it replaces compared each
/// key once per list, twice over (the pick and the skip of equal keys):
/// with the 20 segments of 10M keys, the merge and its `memcmp` were 37%
/// of the open.
fn merge(scanned: &[Scanned], mut emit: impl FnMut(&str, Loc)) {
    let first_live = scanned.iter().rposition(|s| s.cleared).unwrap_or(0);
    let now = now_ms();
    let lists: Vec<List<'_>> = scanned[first_live..]
        .iter()
        .map(|s| List {
            keys: &s.keys,
            records: &s.records,
        })
        .collect();
    let mut pos = vec![0usize; lists.len()];
    let mut tree = Winners::new(lists.len(), &lists, &pos);
    loop {
        let b = tree.winner();
        let Some(key) = head_of(&lists, &pos, b) else {
            return;
        };
        let (_, _, loc, kind) = lists[b].records[pos[b]];
        pos[b] += 1;
        tree.replay(b, &lists, &pos);
        // Older records of the same key (lists are in segment id order, and
        // among equal keys the tree puts the newest list first).
        loop {
            let w = tree.winner();
            if head_of(&lists, &pos, w) != Some(key) {
                break;
            }
            pos[w] += 1;
            tree.replay(w, &lists, &pos);
        }
        if kind == Kind::Put && !loc.expired_at(now) {
            emit(key, loc);
        }
    }
}

/// One segment's sorted list, as the merge reads it.
struct List<'a> {
    keys: &'a str,
    records: &'a [KeyedRec],
}

/// The key at the head of list `i`, if it has one left.
fn head_of<'a>(lists: &[List<'a>], pos: &[usize], i: usize) -> Option<&'a str> {
    let l = lists.get(i)?;
    l.records.get(pos[i]).map(|r| &l.keys[r.0..r.1])
}

/// A winner (tournament) tree over list indices: `nodes[1]` is the list
/// whose head comes first (smallest key; among equal keys the highest
/// index, the newest segment). Leaves are `nodes[size..size + lists]`;
/// a leaf past the lists, or a list run out, loses every match.
struct Winners {
    size: usize,
    nodes: Vec<usize>,
}

impl Winners {
    fn new(n: usize, lists: &[List<'_>], pos: &[usize]) -> Winners {
        let size = n.next_power_of_two().max(1);
        let mut nodes = vec![usize::MAX; 2 * size];
        for i in 0..n {
            nodes[size + i] = i;
        }
        let mut t = Winners { size, nodes };
        for at in (1..size).rev() {
            t.nodes[at] = t.play(t.nodes[2 * at], t.nodes[2 * at + 1], lists, pos);
        }
        t
    }

    fn winner(&self) -> usize {
        self.nodes[if self.size == 1 { self.size } else { 1 }]
    }

    fn play(&self, a: usize, b: usize, lists: &[List<'_>], pos: &[usize]) -> usize {
        match (head_of(lists, pos, a), head_of(lists, pos, b)) {
            (None, _) => b,
            (Some(_), None) => a,
            (Some(x), Some(y)) => match x.cmp(y) {
                std::cmp::Ordering::Less => a,
                std::cmp::Ordering::Greater => b,
                std::cmp::Ordering::Equal => a.max(b),
            },
        }
    }

    /// Replays the matches from list `i`'s leaf up after its head moved.
    fn replay(&mut self, i: usize, lists: &[List<'_>], pos: &[usize]) {
        let mut at = (self.size + i) / 2;
        while at >= 1 {
            self.nodes[at] = self.play(self.nodes[2 * at], self.nodes[2 * at + 1], lists, pos);
            at /= 2;
        }
    }
}

/// Decides what the bad bytes at `offset` of the newest segment are, and
/// returns the segment's used length.
fn newest_tail(p: &Path, offset: u64, reason: &str, len: u64, crc: u32) -> Result<(u64, u32)> {
    let corrupt = |reason: String| KvsError::Corrupt {
        path: p.to_path_buf(),
        offset,
        reason,
    };
    if offset < SEGMENT_HEADER_LEN {
        // A crash inside segment creation leaves a file shorter than its
        // header, or reserved but still all zeros; anything else is a
        // damaged header in front of records that may matter.
        if len < SEGMENT_HEADER_LEN || scan::zero_from(p, 0, len)? {
            let new_len = cut_tail(p, 0, reason, len, len)?;
            return Ok((new_len, crc32fast::hash(&record::segment_header())));
        }
        return Err(corrupt(reason.to_string()));
    }
    let Some(last) = scan::last_nonzero(p, offset, len)? else {
        // The reserved, never written end of the active segment.
        return Ok((offset, crc));
    };
    if scan::valid_record_after(p, offset, last, len)? {
        return Err(corrupt(format!(
            "{reason}; valid records follow, so this is damage inside the file, not a torn tail"
        )));
    }
    match cut_tail(p, offset, reason, len, last + 1) {
        Ok(new_len) => Ok((new_len, crc)),
        // Read-only: the tail stays on disk; the store ends at `offset`
        // for as long as it is open (it cannot be written anyway).
        Err(KvsError::Io(e)) if not_writable(&e) => Ok((offset, crc)),
        Err(e) => Err(e),
    }
}

/// Removes a torn tail of the newest segment at `offset` (file length
/// `len`, every byte from `end` on already zero); returns the new used
/// length. A segment cut inside its header is reset to an empty segment.
///
/// NOTE: past the header the torn bytes are overwritten with zeros rather
/// than truncated: the rest of the file stays the reserved, zeroed end, so
/// the open does not free and then allocate again up to `segment_max_bytes`
/// of blocks (which cost more than the whole scan on a busy disk).
fn cut_tail(p: &Path, offset: u64, reason: &str, len: u64, end: u64) -> Result<u64> {
    tracing::warn!(
        file = %p.display(),
        offset,
        dropped_bytes = end.saturating_sub(offset),
        reason,
        "torn tail in the newest segment; cutting it back to the last valid record"
    );
    let cut = || -> std::io::Result<u64> {
        let file = OpenOptions::new().write(true).open(p)?;
        let new_len = if offset < SEGMENT_HEADER_LEN {
            file.set_len(0)?;
            file.write_all_at(&record::segment_header(), 0)?;
            file.sync_all()?;
            SEGMENT_HEADER_LEN
        } else {
            let zeros = vec![0u8; (end.min(len) - offset).min(1 << 20) as usize];
            let mut at = offset;
            while at < end.min(len) {
                let n = (end.min(len) - at).min(zeros.len() as u64) as usize;
                file.write_all_at(&zeros[..n], at)?;
                at += n as u64;
            }
            file.sync_data()?;
            offset
        };
        Ok(new_len)
    };
    Ok(cut().map_err(segment::io_at("cut the torn tail of", p))?)
}

#[cfg(test)]
mod merge_tests;
