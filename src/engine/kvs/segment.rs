//! Segment files: naming, listing, creation, and reading records back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Header, Kind, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::{KvsError, Result};

/// Segment ids are `u32`: at one segment per 64 MiB that is 256 PiB of writes.
pub type SegmentId = u32;

/// The highest segment id accepted at open. Ids start at 1 and grow by one
/// or two per sealed segment, so a file above this is not one of ours (a
/// stray `00000000004294967295.log` would otherwise exhaust the ids and
/// stop every write); open refuses it by name instead.
pub const MAX_SEGMENT_ID: SegmentId = u32::MAX - (1 << 20);

/// Free bytes a new segment leaves on its file system at least, for the
/// directory's own metadata and the store's small files.
const FREE_SLACK: u64 = 64 << 10;

/// Wraps an I/O error with the operation and file it came from, keeping its
/// kind, so "Permission denied" says what was denied where.
pub fn io_at<'a>(op: &'static str, p: &'a Path) -> impl FnOnce(io::Error) -> io::Error + 'a {
    move |e| io::Error::new(e.kind(), format!("{op} {}: {e}", p.display()))
}

/// Path of segment `id` in `dir`.
pub fn path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{id:020}.log"))
}

/// Path of the unfinished compaction output `id` in `dir`.
pub fn tmp_path(dir: &Path, id: SegmentId) -> PathBuf {
    dir.join(format!("{id:020}.log.tmp"))
}

/// The id in a segment file name: exactly the 20 digits [`path`] writes, so
/// that a stray `7.log` is not mistaken for segment 7 under another name.
fn parse_id(stem: &str) -> Option<SegmentId> {
    if stem.len() != 20 || !stem.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    stem.parse().ok()
}

/// The id after `id`; an error rather than a wrap to 0, which would sort
/// before every other segment.
pub fn next_id(id: SegmentId) -> Result<SegmentId> {
    id.checked_add(1)
        .ok_or_else(|| KvsError::InvalidInput("segment ids exhausted".to_string()))
}

/// Lists the segment ids in `dir`, sorted, and deletes leftover temp files.
pub fn list_and_clean(dir: &Path) -> Result<Vec<SegmentId>> {
    let mut ids = Vec::new();
    let mut removed = false;
    for entry in fs::read_dir(dir).map_err(io_at("list directory", dir))? {
        let entry = entry.map_err(io_at("list directory", dir))?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log.tmp") {
            if parse_id(stem).is_some() {
                tracing::warn!(file = %entry.path().display(), "deleting unfinished compaction output");
                fs::remove_file(entry.path()).map_err(io_at("delete", &entry.path()))?;
                removed = true;
            }
        } else if let Some(stem) = name.strip_suffix(".log")
            && let Some(id) = parse_id(stem)
        {
            if id > MAX_SEGMENT_ID {
                return Err(KvsError::InvalidInput(format!(
                    "{} is named like a segment, but id {id} is above the highest kvs uses \
                     ({MAX_SEGMENT_ID}): a stray file? move it out of the data directory",
                    entry.path().display()
                )));
            }
            ids.push(id);
        }
    }
    if removed {
        sync_dir(dir).map_err(io_at("sync directory", dir))?;
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Makes creations, renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Bytes available to us on the file system of `dir`.
pub fn free_bytes(dir: &Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c = std::ffi::CString::new(dir.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "NUL in directory name"))?;
    let mut st = std::mem::MaybeUninit::<libc::statvfs>::uninit();
    // SAFETY: `c` is a NUL-terminated path and `st` points to writable
    // memory of the right type, which statvfs fills on success.
    if unsafe { libc::statvfs(c.as_ptr(), st.as_mut_ptr()) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: statvfs returned 0, so it initialized `st`.
    let st = unsafe { st.assume_init() };
    // The field types differ between platforms (u64 on Linux x86-64).
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The error a write gets when no segment can be made for it.
pub fn no_space(dir: &Path, need: u64, free: u64) -> KvsError {
    KvsError::ReadOnly(format!(
        "no space for a new segment in {}: {need} bytes needed, {free} available; \
         serving reads only until space is freed",
        dir.display()
    ))
}

/// How much to reserve for a new segment that needs at least `need` bytes
/// and would like `want`, given the space free in `dir`: at most half of
/// what is free, so a nearly full disk gets small segments rather than
/// none (and compaction keeps room for its output).
pub fn size_for(dir: &Path, want: u64, need: u64) -> Result<u64> {
    let free = free_bytes(dir).map_err(io_at("check free space of", dir))?;
    if free < need + FREE_SLACK {
        return Err(no_space(dir, need + FREE_SLACK, free));
    }
    Ok(want.min(free / 2).max(need))
}

/// Creates segment `id` with its header and room for at least `need` bytes
/// (up to `want`, see [`size_for`]) reserved, synced, and syncs the
/// directory.
pub fn create(dir: &Path, id: SegmentId, want: u64, need: u64) -> Result<File> {
    let size = size_for(dir, want, need)?;
    let p = path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)
        .map_err(io_at("create segment", &p))?;
    let init = || -> io::Result<()> {
        reserve(&file, size).map_err(io_at("reserve space for", &p))?;
        file.write_all_at(&record::segment_header(), 0)
            .map_err(io_at("write header of", &p))?;
        file.sync_all().map_err(io_at("sync", &p))?;
        sync_dir(dir).map_err(io_at("sync directory", dir))
    };
    if let Err(e) = init() {
        // A half-made segment left behind would make every later attempt
        // fail with "already exists" (and recovery read it as the newest).
        drop(file);
        let _ = fs::remove_file(&p);
        let _ = sync_dir(dir);
        if e.kind() == io::ErrorKind::StorageFull {
            let free = free_bytes(dir).unwrap_or(0);
            return Err(no_space(dir, size, free));
        }
        return Err(e.into());
    }
    Ok(file)
}

/// Grows `file` to at least `size` bytes with the blocks allocated.
///
/// NOTE: the active segment is written through a shared memory map. A store
/// to a mapped page that the file system cannot back (disk full) is a SIGBUS,
/// not an error, so the blocks are reserved up front with `posix_fallocate`,
/// where running out of space is an ordinary error.
pub fn reserve(file: &File, size: u64) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    if file.metadata()?.len() >= size {
        return Ok(());
    }
    let len =
        libc::off_t::try_from(size).map_err(|_| io::Error::other("segment size out of range"))?;
    // SAFETY: plain syscall on an fd we own; no memory is passed.
    match unsafe { libc::posix_fallocate(file.as_raw_fd(), 0, len) } {
        0 => Ok(()),
        libc::EOPNOTSUPP | libc::EINVAL => file.set_len(size),
        err => Err(io::Error::from_raw_os_error(err)),
    }
}

/// A record found by [`scan`].
pub struct Scanned<'a> {
    /// Offset of the record in its segment.
    pub offset: u64,
    /// Its decoded header.
    pub header: Header,
    /// Its key bytes (UTF-8 checked).
    pub key: &'a str,
}

/// How a scan ended.
#[derive(Clone)]
pub enum ScanEnd {
    /// Every byte was a valid record.
    Clean {
        /// File length.
        len: u64,
    },
    /// A bad or cut record starts at `offset`.
    Bad {
        /// Offset of the first byte that is not part of a valid record.
        offset: u64,
        /// What was wrong.
        reason: String,
        /// File length.
        len: u64,
    },
}

/// What a scan found besides the records.
pub struct Scan {
    /// Where the valid records end.
    pub end: ScanEnd,
    /// Format version in the header (0 when the header is bad).
    pub version: u16,
    /// The segment ends with a valid seal.
    pub sealed: bool,
    /// CRC-32 of the bytes before the stop (header and valid records,
    /// the seal included when there is one).
    pub crc: u32,
}

/// Reads every record of segment file `p` in order, calling `f` for each
/// valid one (a seal is checked here and not passed on), and reports
/// where (if anywhere) the valid records stop. A file too short for its
/// header is `Bad` at offset 0.
pub fn scan(p: &Path, mut f: impl FnMut(Scanned<'_>)) -> Result<Scan> {
    let file = File::open(p).map_err(io_at("open segment", p))?;
    let len = file.metadata().map_err(io_at("stat", p))?.len();
    let mut rd = BufReader::with_capacity(1 << 20, file);
    let mut hasher = crc32fast::Hasher::new();
    let mut sealed = false;
    let bad = |offset: u64, reason: String, version, sealed, crc| Scan {
        end: ScanEnd::Bad {
            offset,
            reason,
            len,
        },
        version,
        sealed,
        crc,
    };

    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    if len < SEGMENT_HEADER_LEN {
        return Ok(bad(
            0,
            "segment shorter than its header".into(),
            0,
            false,
            0,
        ));
    }
    rd.read_exact(&mut h).map_err(io_at("read", p))?;
    let version = match record::check_segment_header(&h) {
        Ok(v) => v,
        Err(record::HeaderError::BadMagic) => {
            return Ok(bad(0, "not a kvs segment (bad magic)".into(), 0, false, 0));
        }
        Err(record::HeaderError::Version(version)) => {
            return Err(KvsError::UnsupportedVersion {
                path: p.to_path_buf(),
                version,
            });
        }
    };
    hasher.update(&h);

    let mut offset = SEGMENT_HEADER_LEN;
    let mut buf = Vec::with_capacity(4096);
    macro_rules! stop {
        ($reason:expr) => {
            return Ok(bad(
                offset,
                $reason.into(),
                version,
                sealed,
                hasher.clone().finalize(),
            ))
        };
    }
    while offset < len {
        if sealed {
            stop!("bytes after the seal");
        }
        if len - offset < RECORD_HEADER_LEN as u64 {
            stop!("record header cut short");
        }
        buf.resize(RECORD_HEADER_LEN, 0);
        rd.read_exact(&mut buf).map_err(io_at("read", p))?;
        let hb: &[u8; RECORD_HEADER_LEN] = buf[..].try_into().expect("buffer sized to the header");
        let header = match Header::decode(hb) {
            Ok(h) => h,
            Err(reason) => stop!(reason),
        };
        let rec_len = header.record_len() as u64;
        if len - offset < rec_len {
            stop!("record cut short");
        }
        buf.resize(rec_len as usize, 0);
        rd.read_exact(&mut buf[RECORD_HEADER_LEN..])
            .map_err(io_at("read", p))?;
        if !record::crc_ok(&buf, header.crc) {
            stop!("checksum mismatch");
        }
        if header.kind == Kind::Seal {
            let (covered, crc) = record::decode_seal(&buf[RECORD_HEADER_LEN..]);
            if covered != offset || crc != hasher.clone().finalize() {
                stop!(format!(
                    "the seal does not match the segment (it covers {covered} bytes, \
                     {offset} precede it, or their checksum differs): the segment was \
                     cut or altered"
                ));
            }
            sealed = true;
            hasher.update(&buf);
            offset += rec_len;
            continue;
        }
        let key_bytes = &buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.key_len];
        let Ok(key) = std::str::from_utf8(key_bytes) else {
            stop!("key is not UTF-8");
        };
        f(Scanned {
            offset,
            header,
            key,
        });
        hasher.update(&buf);
        offset += rec_len;
    }
    Ok(Scan {
        end: ScanEnd::Clean { len },
        version,
        sealed,
        crc: hasher.finalize(),
    })
}

/// Whether every byte of `p` from `offset` to `len` is zero: the unused,
/// reserved end of an active segment rather than a torn record.
pub fn zero_from(p: &Path, offset: u64, len: u64) -> io::Result<bool> {
    Ok(last_nonzero(p, offset, len)?.is_none())
}

/// Offset of the last non-zero byte of `p` in `offset..len`, reading
/// backwards in 1 MiB chunks (word-at-a-time compares, no per-byte work).
pub fn last_nonzero(p: &Path, offset: u64, len: u64) -> io::Result<Option<u64>> {
    let file = File::open(p).map_err(io_at("open segment", p))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut end = len;
    while end > offset {
        let n = (end - offset).min(buf.len() as u64) as usize;
        let at = end - n as u64;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(io_at("read", p))?;
        let (pre, words, post) = {
            // SAFETY: any bit pattern is a valid u64; align_to only splits
            // the slice at alignment boundaries.
            unsafe { buf[..n].align_to::<u64>() }
        };
        if let Some(i) = post.iter().rposition(|&b| b != 0) {
            return Ok(Some(at + (pre.len() + words.len() * 8 + i) as u64));
        }
        if let Some(w) = words.iter().rposition(|&w| w != 0) {
            let base = pre.len() + w * 8;
            let i = buf[base..base + 8]
                .iter()
                .rposition(|&b| b != 0)
                .unwrap_or(0);
            return Ok(Some(at + (base + i) as u64));
        }
        if let Some(i) = pre.iter().rposition(|&b| b != 0) {
            return Ok(Some(at + i as u64));
        }
        end = at;
    }
    Ok(None)
}

/// Whether a whole, valid record starts anywhere in `p` after `offset`
/// (file length `len`, last non-zero byte at `last`): then the bad bytes at
/// `offset` are damage inside the file, not a torn tail. Only runs on a
/// damaged segment, and only up to the last non-zero byte: a torn write in
/// front of the zeroed, reserved end of the active segment (up to
/// `segment_max_bytes`) costs one backwards zero check, not a search at
/// every byte position of it.
pub fn valid_record_after(p: &Path, offset: u64, last: u64, len: u64) -> io::Result<bool> {
    // A record's kind byte is not zero, so none starts after `last`; one
    // that starts before it may end in zeros past it.
    const MARGIN: u64 = 64 << 10;
    let start = offset + 1;
    if start > last {
        return Ok(false);
    }
    let file = File::open(p).map_err(io_at("open segment", p))?;
    let end = len.min(last + 1 + MARGIN);
    let mut rest = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut rest, start)
        .map_err(io_at("read", p))?;
    let mut long = Vec::new();
    for at in 0..=(last - start) as usize {
        let Some(hb) = rest.get(at..at + RECORD_HEADER_LEN) else {
            break;
        };
        let hb: &[u8; RECORD_HEADER_LEN] = hb.try_into().expect("slice is exactly a header long");
        let Ok(h) = Header::decode(hb) else { continue };
        let rec = match rest.get(at..at + h.record_len()) {
            Some(rec) => rec,
            None => {
                // Longer than the buffer: read just this candidate.
                let rec_start = start + at as u64;
                if rec_start + h.record_len() as u64 > len {
                    continue;
                }
                long.resize(h.record_len(), 0);
                file.read_exact_at(&mut long, rec_start)
                    .map_err(io_at("read", p))?;
                &long[..]
            }
        };
        if record::crc_ok(rec, h.crc) {
            return Ok(true);
        }
    }
    Ok(false)
}

/// Checks a whole put record in `rec` (its bytes exactly) and returns its
/// header. `key` (when given) must match the record's key.
pub fn check_record(rec: &[u8], key: Option<&str>) -> std::result::Result<Header, &'static str> {
    if rec.len() < RECORD_HEADER_LEN {
        return Err("record shorter than a header");
    }
    let hb: &[u8; RECORD_HEADER_LEN] = rec[..RECORD_HEADER_LEN]
        .try_into()
        .expect("length checked above");
    let header = Header::decode(hb).map_err(|_| "bad record header")?;
    if header.record_len() != rec.len() || !record::crc_ok(rec, header.crc) {
        return Err("checksum mismatch");
    }
    if let Some(k) = key
        && &rec[RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.key_len] != k.as_bytes()
    {
        return Err("record holds another key");
    }
    if header.kind != Kind::Put {
        return Err("index points at a tombstone");
    }
    Ok(header)
}

/// Reads the record of `len` bytes at `offset` in `file` into `buf`, checks
/// it, and returns its header. `key` (when given) must match the record's.
pub fn read_record(
    file: &File,
    p: impl Fn() -> PathBuf,
    offset: u64,
    len: usize,
    key: Option<&str>,
    buf: &mut Vec<u8>,
) -> Result<Header> {
    buf.resize(len, 0);
    file.read_exact_at(buf, offset)?;
    check_record(buf, key).map_err(|reason| KvsError::Corrupt {
        path: p(),
        offset,
        reason: reason.to_string(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_nonzero_finds_the_last_set_byte_at_any_alignment() {
        let dir = tempfile::TempDir::new().unwrap();
        let p = dir.path().join("f");
        let len = (1 << 20) + 77;
        for at in [0usize, 1, 7, 8, 9, 4095, 1 << 20, (1 << 20) + 5, len - 1] {
            let mut bytes = vec![0u8; len];
            bytes[at] = 3;
            fs::write(&p, &bytes).unwrap();
            assert_eq!(last_nonzero(&p, 0, len as u64).unwrap(), Some(at as u64));
            assert_eq!(
                last_nonzero(&p, at as u64 + 1, len as u64).unwrap(),
                None,
                "{at}"
            );
            assert!(!zero_from(&p, at as u64, len as u64).unwrap());
        }
    }

    #[test]
    fn a_record_after_garbage_is_found_even_when_it_ends_in_zeros() {
        let dir = tempfile::TempDir::new().unwrap();
        let p = dir.path().join("f");
        let mut bytes = vec![0u8; 100];
        bytes[10] = 0xAA; // the damage
        let at = bytes.len();
        record::encode(&mut bytes, Kind::Put, b"k", &[0u8; 200_000], 0);
        bytes.extend_from_slice(&[0u8; 5000]);
        fs::write(&p, &bytes).unwrap();
        let len = bytes.len() as u64;
        let last = last_nonzero(&p, 11, len).unwrap().unwrap();
        assert!(last < at as u64 + 30, "the value is zeros");
        assert!(valid_record_after(&p, 10, last, len).unwrap());
        // Without the record, only garbage: a torn tail.
        bytes.truncate(at);
        bytes.extend_from_slice(&[0u8; 5000]);
        fs::write(&p, &bytes).unwrap();
        let len = bytes.len() as u64;
        assert_eq!(last_nonzero(&p, 11, len).unwrap(), None);
        assert!(!valid_record_after(&p, 9, 10, len).unwrap());
    }
}
