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
use super::record::{self, Kind};
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

/// One record of a [`Keyed`] list: its key is `keys[start..end]`.
pub type KeyedRec = (usize, usize, Loc, Kind);

/// What a segment holds, per key (its last record), sorted by key, with
/// every key in one buffer: what recovery reads, without an allocation
/// per key.
pub struct Keyed {
    /// The keys, one after the other.
    pub keys: String,
    /// `(start, end, position, kind)`; kind is `Put` or `Tombstone`.
    pub records: Vec<KeyedRec>,
    /// The segment holds a `Clear`: `records` are those after the last one.
    pub cleared: bool,
    /// Written at a clean close for the newest, unsealed segment.
    pub open: bool,
}

impl Keyed {
    /// The same list with its keys in one buffer.
    pub fn from_latest(l: Latest) -> Keyed {
        let mut keys = String::with_capacity(l.records.iter().map(|r| r.0.len()).sum());
        let records = l
            .records
            .into_iter()
            .map(|(k, loc, kind)| {
                let start = keys.len();
                keys.push_str(&k);
                (start, keys.len(), loc, kind)
            })
            .collect();
        Keyed {
            keys,
            records,
            cleared: l.cleared,
            open: l.open,
        }
    }

    /// The key of record `r`.
    #[cfg(test)]
    pub fn key(&self, r: &KeyedRec) -> &str {
        &self.keys[r.0..r.1]
    }
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
    let entries = l
        .records
        .iter()
        .map(|(k, loc, kind)| (k.as_bytes(), *loc, *kind));
    write_entries(
        dir,
        id,
        seg_len,
        seg_crc,
        l.cleared,
        l.open,
        l.records.len(),
        entries,
    )
}

/// [`write`] from borrowed keys: `count` entries, sorted by key, one per key.
#[allow(clippy::too_many_arguments)]
fn write_entries<'a>(
    dir: &Path,
    id: SegmentId,
    seg_len: u64,
    seg_crc: u32,
    cleared: bool,
    open: bool,
    count: usize,
    entries: impl Iterator<Item = (&'a [u8], Loc, Kind)>,
) -> io::Result<()> {
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
        let flags = if open { FLAG_OPEN } else { 0 };
        h.extend_from_slice(&flags.to_le_bytes());
        h.extend_from_slice(&seg_len.to_le_bytes());
        h.extend_from_slice(&seg_crc.to_le_bytes());
        h.push(cleared as u8);
        h.extend_from_slice(&(count as u64).to_le_bytes());
        put(&mut bw, &h)?;
        let mut e = Vec::with_capacity(ENTRY_LEN + 64);
        let mut written = 0;
        for (key, loc, kind) in entries {
            e.clear();
            e.push(kind as u8);
            e.extend_from_slice(&(key.len() as u32).to_le_bytes());
            e.extend_from_slice(&loc.offset.to_le_bytes());
            e.extend_from_slice(&loc.len.to_le_bytes());
            e.extend_from_slice(&loc.expires_at.to_le_bytes());
            e.extend_from_slice(key);
            put(&mut bw, &e)?;
            written += 1;
        }
        if written != count {
            return Err(io::Error::other(format!(
                "hint of {count} entries got {written}"
            )));
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
) -> Option<std::result::Result<Keyed, String>> {
    // `fs::read` sizes the buffer from the file's length: one allocation
    // and one copy.
    let bytes = match fs::read(path(dir, id)) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return None,
        Err(e) => return Some(Err(format!("read: {e}"))),
    };
    Some(decode(&bytes, id, seg_len, seg_crc))
}

fn decode(b: &[u8], id: SegmentId, seg_len: u64, seg_crc: u32) -> Result<Keyed, String> {
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
    let mut records: Vec<KeyedRec> = Vec::with_capacity(count as usize);
    // Every key is copied into one buffer: no allocation per key.
    let mut keys = String::with_capacity(body.len() - HEADER_LEN - count as usize * ENTRY_LEN);
    let mut last: Option<&str> = None;
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
        if last.is_some_and(|last| last >= key) {
            return Err("keys out of order".into());
        }
        last = Some(key);
        let start = keys.len();
        keys.push_str(key);
        records.push((start, keys.len(), loc, kind));
    }
    if at != body.len() {
        return Err("bytes after the last entry".into());
    }
    Ok(Keyed {
        keys,
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
/// end cut off). Writes nothing when the file does not read back as
/// exactly that (a hint must describe the file as it is).
///
/// One streaming pass over the file: the whole-file CRC is checked instead
/// of each record's (equal bytes make equal records, and the writer encoded
/// them), keys are copied into one buffer instead of a `String` each, and
/// values are only fed to the CRC. The scan recovery would do (a CRC and an
/// allocation per record) made a clean close 4 to 5 times slower.
pub fn write_open(dir: &Path, id: SegmentId, len: u64, crc: u32) -> crate::Result<bool> {
    let p = segment::path(dir, id);
    let Some(w) = walk_written(&p, id, len, crc).map_err(segment::io_at("read", &p))? else {
        return Ok(false);
    };
    let key = |e: &WalkedEntry| &w.keys[e.key..e.key + e.key_len as usize];
    // Sorted by key, then log order (the last of equal keys is the
    // latest). Keys often share a long prefix (`user:0000...`), which makes
    // every comparison a long `memcmp`: each entry carries the 8 bytes
    // after the prefix all keys share, compared first.
    let common = w.entries.iter().fold(None, |common: Option<&[u8]>, e| {
        let k = key(e);
        Some(common.map_or(k, |c| {
            &c[..c.iter().zip(k).take_while(|(a, b)| a == b).count()]
        }))
    });
    let skip = common.map_or(0, <[u8]>::len);
    let mut order: Vec<(u64, &WalkedEntry)> = w
        .entries
        .iter()
        .map(|e| (prefix_after(key(e), skip), e))
        .collect();
    order.sort_unstable_by(|(pa, a), (pb, b)| {
        pa.cmp(pb)
            .then_with(|| key(a).cmp(key(b)))
            .then(a.loc.offset.cmp(&b.loc.offset))
    });
    let mut latest: Vec<&WalkedEntry> = Vec::with_capacity(order.len());
    for (_, e) in order {
        match latest.last_mut() {
            Some(last) if key(last) == key(e) => *last = e,
            _ => latest.push(e),
        }
    }
    let entries = latest.iter().map(|e| (key(e), e.loc, e.kind));
    write_entries(dir, id, len, crc, w.cleared, true, latest.len(), entries)
        .map_err(segment::io_at("write hint for", &p))?;
    Ok(true)
}

/// The 8 bytes of `key` from `skip` on, big-endian, zero-padded: keys
/// with a smaller value sort first (a tie says nothing).
fn prefix_after(key: &[u8], skip: usize) -> u64 {
    let mut b = [0u8; 8];
    let rest = key.get(skip..).unwrap_or_default();
    let n = rest.len().min(8);
    b[..n].copy_from_slice(&rest[..n]);
    u64::from_be_bytes(b)
}

/// A put or tombstone found by [`walk_written`]; its key is
/// `keys[key..key + key_len]`.
struct WalkedEntry {
    key: usize,
    key_len: u32,
    kind: Kind,
    loc: Loc,
}

struct Walked {
    keys: Vec<u8>,
    entries: Vec<WalkedEntry>,
    cleared: bool,
}

/// The puts and tombstones of the unsealed segment `p` (after its last
/// `Clear`), in log order, if the file is exactly `len` bytes with CRC-32
/// `crc` and made of whole records; `None` otherwise.
fn walk_written(p: &Path, id: SegmentId, len: u64, crc: u32) -> io::Result<Option<Walked>> {
    use std::io::BufRead;
    let mut r = io::BufReader::with_capacity(1 << 20, File::open(p)?);
    let mut sum = crc32fast::Hasher::new();
    let mut w = Walked {
        keys: Vec::new(),
        entries: Vec::new(),
        cleared: false,
    };
    // A short file reads as `UnexpectedEof`: not what the writer appended.
    let read = |r: &mut io::BufReader<File>, b: &mut [u8]| -> io::Result<bool> {
        match r.read_exact(b) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(false),
            Err(e) => Err(e),
        }
    };
    let mut seg_header = [0u8; record::SEGMENT_HEADER_LEN as usize];
    if !read(&mut r, &mut seg_header)? || record::check_segment_header(&seg_header).is_err() {
        return Ok(None);
    }
    sum.update(&seg_header);
    let mut at = record::SEGMENT_HEADER_LEN;
    while at < len {
        let mut h = [0u8; record::RECORD_HEADER_LEN];
        if !read(&mut r, &mut h)? {
            return Ok(None);
        }
        sum.update(&h);
        let Ok(header) = record::Header::decode(&h) else {
            return Ok(None);
        };
        let rec_len = header.record_len() as u64;
        if len - at < rec_len {
            return Ok(None);
        }
        let key = w.keys.len();
        w.keys.resize(key + header.key_len, 0);
        if !read(&mut r, &mut w.keys[key..])? {
            return Ok(None);
        }
        sum.update(&w.keys[key..]);
        let mut value_left = header.value_len;
        while value_left > 0 {
            let buf = r.fill_buf()?;
            if buf.is_empty() {
                return Ok(None);
            }
            let n = buf.len().min(value_left);
            sum.update(&buf[..n]);
            r.consume(n);
            value_left -= n;
        }
        match header.kind {
            Kind::Put | Kind::Tombstone => w.entries.push(WalkedEntry {
                key,
                key_len: header.key_len as u32,
                kind: header.kind,
                loc: Loc {
                    seg: id,
                    len: rec_len as u32,
                    offset: at,
                    expires_at: header.expires_at,
                },
            }),
            Kind::Clear => {
                w.entries.clear();
                w.keys.clear();
                w.cleared = true;
            }
            // A sealed segment gets its hint as a sealed one.
            Kind::Seal => return Ok(None),
        }
        at += rec_len;
    }
    if !r.fill_buf()?.is_empty() || sum.finalize() != crc {
        return Ok(None);
    }
    Ok(Some(w))
}

/// Deletes the hint of segment `id`, if any (before the segment itself).
pub fn remove(dir: &Path, id: SegmentId) -> io::Result<()> {
    match fs::remove_file(path(dir, id)) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Writes segment 7 of `dir` from `(kind, key, value, expires_at)`
    /// records; returns its length and CRC-32.
    fn segment(dir: &Path, recs: &[(Kind, &str, &str, u64)]) -> (u64, u32) {
        let mut b = record::segment_header().to_vec();
        for &(kind, k, v, exp) in recs {
            record::encode(&mut b, kind, k.as_bytes(), v.as_bytes(), exp);
        }
        fs::write(segment::path(dir, 7), &b).unwrap();
        (b.len() as u64, crc32fast::hash(&b))
    }

    fn entries(l: &Latest) -> Vec<(String, Loc, Kind)> {
        l.records.clone()
    }

    fn keyed_entries(l: &Keyed) -> Vec<(String, Loc, Kind)> {
        let e = |r: &KeyedRec| (l.key(r).to_owned(), r.2, r.3);
        l.records.iter().map(e).collect()
    }

    #[test]
    fn the_close_hint_lists_what_a_scan_finds() {
        use Kind::{Clear, Put, Tombstone};
        // Larger than the reader's buffer: the value spans refills.
        let big = "v".repeat(3 << 20);
        let cases: Vec<Vec<(Kind, &str, &str, u64)>> = vec![
            vec![],
            vec![(Put, "b", "1", 0), (Put, "a", "2", 0), (Put, "b", "3", 99)],
            vec![
                (Put, "k1", "x", 0),
                (Tombstone, "k1", "", 0),
                (Put, "k2", "y", 5),
                (Put, "k1", "z", 0),
                (Tombstone, "k2", "", 0),
                (Put, "", "empty key", 0),
            ],
            vec![
                (Put, "gone", "x", 0),
                (Clear, "", "", 0),
                (Put, "kept", "y", 0),
                (Tombstone, "old", "", 0),
                (Put, "kept", &big, 0),
            ],
        ];
        for (i, recs) in cases.iter().enumerate() {
            let dir = tempfile::TempDir::new().unwrap();
            let (len, crc) = segment(dir.path(), recs);
            assert!(write_open(dir.path(), 7, len, crc).unwrap(), "case {i}");
            let hinted = read(dir.path(), 7, len, crc).unwrap().unwrap();
            let (scanned, _) = scan_latest(dir.path(), 7).unwrap();
            assert_eq!(keyed_entries(&hinted), entries(&scanned), "case {i}");
            assert_eq!(hinted.cleared, scanned.cleared, "case {i}");
            assert!(hinted.open, "case {i}");
        }
    }

    #[test]
    fn the_close_hint_sorts_keys_that_share_prefixes_or_are_prefixes() {
        // Keys sharing 9 bytes, differing past the 8 compared first, one a
        // prefix of others, one ending in a zero byte (ties the padding).
        let keys = [
            "user:0000123456789b",
            "user:0000",
            "user:0000123456789a",
            "user:00001",
            "user:0000\0",
            "user:00001234567890",
            "user:0000\0\0",
            "user:00001",
        ];
        let recs: Vec<(Kind, &str, &str, u64)> =
            keys.iter().map(|k| (Kind::Put, *k, "v", 0)).collect();
        let dir = tempfile::TempDir::new().unwrap();
        let (len, crc) = segment(dir.path(), &recs);
        assert!(write_open(dir.path(), 7, len, crc).unwrap());
        let hinted = read(dir.path(), 7, len, crc).unwrap().unwrap();
        let (scanned, _) = scan_latest(dir.path(), 7).unwrap();
        assert_eq!(keyed_entries(&hinted), entries(&scanned));
        assert_eq!(hinted.records.len(), 7);
    }

    #[test]
    fn no_close_hint_for_a_file_other_than_what_was_written() {
        let dir = tempfile::TempDir::new().unwrap();
        let recs = [(Kind::Put, "a", "1", 0), (Kind::Put, "b", "2", 0)];
        let (len, crc) = segment(dir.path(), &recs);
        let p = segment::path(dir.path(), 7);
        // Another CRC, another length (shorter and longer than the file).
        assert!(!write_open(dir.path(), 7, len, crc ^ 1).unwrap());
        assert!(!write_open(dir.path(), 7, len - 1, crc).unwrap());
        assert!(!write_open(dir.path(), 7, len + 1, crc).unwrap());
        // Bytes past the length the writer reports.
        let mut b = fs::read(&p).unwrap();
        b.push(0);
        fs::write(&p, &b).unwrap();
        assert!(!write_open(dir.path(), 7, len, crc).unwrap());
        // A record header damaged (the CRC given is of the damaged bytes).
        b.pop();
        b[record::SEGMENT_HEADER_LEN as usize + 4] = 9;
        fs::write(&p, &b).unwrap();
        assert!(!write_open(dir.path(), 7, len, crc32fast::hash(&b)).unwrap());
        // A sealed segment.
        let (len, crc) = segment(dir.path(), &recs);
        let mut b = fs::read(&p).unwrap();
        record::encode_seal(&mut b, len, crc);
        fs::write(&p, &b).unwrap();
        let sealed = (b.len() as u64, crc32fast::hash(&b));
        assert!(!write_open(dir.path(), 7, sealed.0, sealed.1).unwrap());
        assert!(!path(dir.path(), 7).exists(), "no hint was written");
    }
}
