//! Hint files: for a sealed segment (and for the newest one at a clean
//! close), the last record of each key, sorted by key, so that recovery
//! need not decode and sort the whole segment.
//! Layout and crash safety are in `docs/design.md` ("Hint files").
//!
//! A hint is only ever an optimisation: a missing, stale or damaged one is
//! ignored (recovery scans the segment), never an error.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use super::index::Loc;
use super::record::Kind;
use super::scan::{self, ScanEnd};
use super::segment::{self, SegmentId};

const MAGIC: &[u8; 4] = b"KVSH";
const VERSION: u16 = 1;
/// magic 4 | version 2 | flags 2 | seg_len 8 | seg_crc 4 | cleared 1 | count 8
const HEADER_LEN: usize = 29;
/// Flag: written at a clean close for the newest segment, which has no
/// seal and is appended to again after the next open.
const FLAG_OPEN: u16 = 1;
/// kind 1 | key_len 4 | offset 8 | len 4 | expires_at 8
const ENTRY_LEN: usize = 25;

/// What a segment holds, per key (its last record), sorted by key.
pub struct Latest {
    /// `(key, position, kind)`; kind is `Put` or `Tombstone`.
    pub records: Vec<(String, Loc, Kind)>,
    /// The segment holds a `Clear`: `records` are those after the last one.
    pub cleared: bool,
    /// The segment was the newest, unsealed, when the hint was written
    /// (at a clean close); otherwise it was sealed.
    pub open: bool,
}

/// Path of the hint of segment `id`.
pub fn path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{id:020}.hint"))
}

fn tmp_path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{id:020}.hint.tmp"))
}

/// Sorts records in log order by key, keeping only the last per key.
pub fn latest_per_key(mut records: Vec<(String, Loc, Kind)>) -> Vec<(String, Loc, Kind)> {
    // Stable, so equal keys stay in log order and the last one is the latest.
    records.sort_by(|a, b| a.0.cmp(&b.0));
    let mut latest: Vec<(String, Loc, Kind)> = Vec::with_capacity(records.len());
    for r in records {
        match latest.last_mut() {
            Some(last) if last.0 == r.0 => *last = r,
            _ => latest.push(r),
        }
    }
    latest
}

/// Writes the hint of a segment whose whole file (`seg_len` bytes, CRC-32
/// `seg_crc`, seal included) was checked: temp file, fsync, rename,
/// directory fsync, so a hint that exists is whole.
pub fn write(dir: &Path, id: SegmentId, seg_len: u64, seg_crc: u32, l: &Latest) -> io::Result<()> {
    let tmp = tmp_path(dir, id);
    let r = (|| {
        let file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .open(&tmp)?;
        let mut bw = BufWriter::with_capacity(1 << 20, file);
        let mut crc = crc32fast::Hasher::new();
        let mut put = |bw: &mut BufWriter<File>, b: &[u8]| -> io::Result<()> {
            crc.update(b);
            bw.write_all(b)
        };
        let mut h = Vec::with_capacity(HEADER_LEN);
        h.extend_from_slice(MAGIC);
        h.extend_from_slice(&VERSION.to_le_bytes());
        let flags = if l.open { FLAG_OPEN } else { 0 };
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&seg_len.to_le_bytes());
        h.extend_from_slice(&seg_crc.to_le_bytes());
        h.push(l.cleared as u8);
        h.extend_from_slice(&(l.records.len() as u64).to_le_bytes());
        put(&mut bw, &h)?;
        let mut e = Vec::with_capacity(ENTRY_LEN + 64);
        for (key, loc, kind) in &l.records {
            e.clear();
            e.push(*kind as u8);
            e.extend_from_slice(&(key.len() as u32).to_le_bytes());
            e.extend_from_slice(&loc.offset.to_le_bytes());
            e.extend_from_slice(&loc.len.to_le_bytes());
            e.extend_from_slice(&loc.expires_at.to_le_bytes());
            e.extend_from_slice(key.as_bytes());
            put(&mut bw, &e)?;
        }
        let sum = crc.finalize();
        bw.write_all(&sum.to_le_bytes())?;
        let file = bw.into_inner().map_err(|e| e.into_error())?;
        file.sync_all()?;
        fs::rename(&tmp, path(dir, id))?;
        segment::sync_dir(dir)
    })();
    if r.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    r
}

/// Reads the hint of segment `id`, if there is one and it is whole and
/// describes a segment of `seg_len` bytes with CRC-32 `seg_crc`. `Err`
/// says why a hint that exists was not usable.
pub fn read(
    dir: &Path,
    id: SegmentId,
    seg_len: u64,
    seg_crc: u32,
) -> Option<std::result::Result<Latest, String>> {
    let p = path(dir, id);
    let mut bytes = Vec::new();
    match File::open(&p) {
        Ok(mut f) => {
            if let Err(e) = f.read_to_end(&mut bytes) {
                return Some(Err(format!("read: {e}")));
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("open: {e}"))),
    }
    Some(decode(&bytes, id, seg_len, seg_crc))
}

fn decode(b: &[u8], id: SegmentId, seg_len: u64, seg_crc: u32) -> Result<Latest, String> {
    if b.len() < HEADER_LEN + 4 {
        return Err("shorter than its header".into());
    }
    let (body, sum) = b.split_at(b.len() - 4);
    if crc32fast::hash(body) != u32::from_le_bytes(sum.try_into().map_err(|_| "sum")?) {
        return Err("checksum mismatch".into());
    }
    let u16_at = |at: usize| u16::from_le_bytes([body[at], body[at + 1]]);
    let u32_at =
        |at: usize| u32::from_le_bytes([body[at], body[at + 1], body[at + 2], body[at + 3]]);
    let u64_at = |at: usize| u64::from(u32_at(at)) | (u64::from(u32_at(at + 4)) << 32);
    if &body[..4] != MAGIC || u16_at(4) != VERSION {
        return Err("bad magic or version".into());
    }
    let flags = u16_at(6);
    if flags & !FLAG_OPEN != 0 {
        return Err(format!("unknown flags {flags:#x}"));
    }
    if u64_at(8) != seg_len || u32_at(16) != seg_crc {
        return Err("written for another version of the segment".into());
    }
    let cleared = body[20] == 1;
    let count = u64_at(21);
    if count > (body.len() / ENTRY_LEN) as u64 {
        return Err("entry count larger than the file".into());
    }
    let mut records: Vec<(String, Loc, Kind)> = Vec::with_capacity(count as usize);
    let mut at = HEADER_LEN;
    for _ in 0..count {
        if body.len() - at < ENTRY_LEN {
            return Err("entry cut short".into());
        }
        let kind = match body[at] {
            1 => Kind::Put,
            2 => Kind::Tombstone,
            k => return Err(format!("bad kind {k}")),
        };
        let key_len = u32_at(at + 1) as usize;
        let loc = Loc {
            seg: id,
            offset: u64_at(at + 5),
            len: u32_at(at + 13),
            expires_at: u64_at(at + 17),
        };
        at += ENTRY_LEN;
        if body.len() - at < key_len {
            return Err("key cut short".into());
        }
        if loc.offset.saturating_add(u64::from(loc.len)) > seg_len {
            return Err("record position past the segment".into());
        }
        let key = std::str::from_utf8(&body[at..at + key_len]).map_err(|_| "key not UTF-8")?;
        at += key_len;
        // The merge relies on each list being strictly sorted.
        if records.last().is_some_and(|last| last.0.as_str() >= key) {
            return Err("keys out of order".into());
        }
        records.push((key.to_owned(), loc, kind));
    }
    if at != body.len() {
        return Err("bytes after the last entry".into());
    }
    Ok(Latest {
        records,
        cleared,
        open: flags & FLAG_OPEN != 0,
    })
}

/// Whether segment `id` has a hint written for it as a sealed segment
/// (one written at close for the open segment is stale once the segment
/// is sealed, and is replaced).
fn has_sealed_hint(dir: &Path, id: SegmentId) -> bool {
    let mut h = [0u8; 8];
    File::open(path(dir, id)).is_ok_and(|mut f| {
        f.read_exact(&mut h).is_ok() && u16::from_le_bytes([h[6], h[7]]) & FLAG_OPEN == 0
    })
}

/// Length and CRC-32 of the whole file `p` (a sealed segment), read in
/// 1 MiB chunks: what a hint is checked against.
pub fn file_crc(p: &Path) -> io::Result<(u64, u32)> {
    let mut f = File::open(p)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut crc = crc32fast::Hasher::new();
    let mut len = 0u64;
    loop {
        let n = f.read(&mut buf)?;
        if n == 0 {
            return Ok((len, crc.finalize()));
        }
        crc.update(&buf[..n]);
        len += n as u64;
    }
}

/// Scans segment `id` and returns its last record per key, with the scan.
pub fn scan_latest(dir: &Path, id: SegmentId) -> crate::Result<(Latest, scan::Scan)> {
    let mut records = Vec::new();
    let mut cleared = false;
    let s = scan::scan(&segment::path(dir, id), |rec| {
        if rec.header.kind == Kind::Clear {
            records.clear();
            cleared = true;
            return;
        }
        let loc = Loc {
            seg: id,
            len: rec.header.record_len() as u32,
            offset: rec.offset,
            expires_at: rec.header.expires_at,
        };
        records.push((rec.key.to_owned(), loc, rec.header.kind));
    })?;
    let records = latest_per_key(records);
    Ok((
        Latest {
            records,
            cleared,
            open: false,
        },
        s,
    ))
}

/// Writes a hint for every sealed segment below `below` that has none;
/// returns how many were written. A segment that does not scan clean and
/// sealed gets none (recovery reports it).
pub fn write_missing(
    dir: &Path,
    below: SegmentId,
    tried: &mut std::collections::HashSet<SegmentId>,
) -> crate::Result<usize> {
    let mut n = 0;
    for id in segment::list_and_clean(dir)? {
        if id >= below || tried.contains(&id) || has_sealed_hint(dir, id) {
            continue;
        }
        tried.insert(id);
        let (latest, s) = scan_latest(dir, id)?;
        let ScanEnd::Clean { len } = s.end else {
            continue;
        };
        if !s.sealed {
            continue;
        }
        write(dir, id, len, s.crc, &latest)
            .map_err(segment::io_at("write hint for", &segment::path(dir, id)))?;
        n += 1;
    }
    Ok(n)
}

/// Writes the hint of the newest segment `id` at a clean close: its file
/// is `len` bytes with CRC-32 `crc` (what the writer appended, the reserved
/// end cut off). Scans the segment as recovery would; writes nothing when
/// the file does not read back as exactly that (a hint must describe the
/// file as it is).
pub fn write_open(dir: &Path, id: SegmentId, len: u64, crc: u32) -> crate::Result<bool> {
    let (mut latest, s) = scan_latest(dir, id)?;
    if s.sealed || s.crc != crc || !matches!(s.end, ScanEnd::Clean { len: l } if l == len) {
        return Ok(false);
    }
    latest.open = true;
    write(dir, id, len, crc, &latest)
        .map_err(segment::io_at("write hint for", &segment::path(dir, id)))?;
    Ok(true)
}

/// Deletes the hint of segment `id`, if any (before the segment itself).
pub fn remove(dir: &Path, id: SegmentId) -> io::Result<()> {
    match fs::remove_file(path(dir, id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}
