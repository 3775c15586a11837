//! Segment files: naming, listing, creation, and reading records back.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Header, Kind, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use crate::{KvsError, Result};

/// Segment ids are `u32`: at one segment per 64 MiB that is 256 PiB of writes.
pub type SegmentId = u32;

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
    for entry in fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if let Some(stem) = name.strip_suffix(".log.tmp") {
            if parse_id(stem).is_some() {
                tracing::warn!(file = %entry.path().display(), "deleting unfinished compaction output");
                fs::remove_file(entry.path())?;
                removed = true;
            }
        } else if let Some(stem) = name.strip_suffix(".log")
            && let Some(id) = parse_id(stem)
        {
            ids.push(id);
        }
    }
    if removed {
        sync_dir(dir)?;
    }
    ids.sort_unstable();
    Ok(ids)
}

/// Makes creations, renames and deletions in `dir` durable.
pub fn sync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Creates segment `id` with its header and `size` bytes reserved, synced,
/// and syncs the directory.
pub fn create(dir: &Path, id: SegmentId, size: u64) -> Result<File> {
    let p = path(dir, id);
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&p)?;
    let init = || -> io::Result<()> {
        reserve(&file, size)?;
        file.write_all_at(&record::segment_header(), 0)?;
        file.sync_all()?;
        sync_dir(dir)
    };
    if let Err(e) = init() {
        // A half-made segment left behind would make every later attempt
        // fail with "already exists" (and recovery read it as the newest).
        drop(file);
        let _ = fs::remove_file(&p);
        let _ = sync_dir(dir);
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

/// Reads every record of segment file `p` in order, calling `f` for each
/// valid one, and reports where (if anywhere) the valid records stop.
/// A file too short for its header is `Bad` at offset 0.
pub fn scan(p: &Path, mut f: impl FnMut(Scanned<'_>)) -> Result<ScanEnd> {
    let file = File::open(p)?;
    let len = file.metadata()?.len();
    let mut rd = BufReader::with_capacity(1 << 20, file);
    let bad = |offset: u64, reason: String| {
        Ok(ScanEnd::Bad {
            offset,
            reason,
            len,
        })
    };

    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    if len < SEGMENT_HEADER_LEN {
        return bad(0, "segment shorter than its header".into());
    }
    rd.read_exact(&mut h)?;
    match record::check_segment_header(&h) {
        Ok(()) => {}
        Err(record::HeaderError::BadMagic) => {
            return bad(0, "not a kvs segment (bad magic)".into());
        }
        Err(record::HeaderError::Version(version)) => {
            return Err(KvsError::UnsupportedVersion {
                path: p.to_path_buf(),
                version,
            });
        }
    }

    let mut offset = SEGMENT_HEADER_LEN;
    let mut buf = Vec::with_capacity(4096);
    while offset < len {
        if len - offset < RECORD_HEADER_LEN as u64 {
            return bad(offset, "record header cut short".into());
        }
        buf.resize(RECORD_HEADER_LEN, 0);
        rd.read_exact(&mut buf)?;
        let hb: &[u8; RECORD_HEADER_LEN] = buf[..].try_into().expect("buffer sized to the header");
        let header = match Header::decode(hb) {
            Ok(h) => h,
            Err(reason) => return bad(offset, reason),
        };
        let rec_len = header.record_len() as u64;
        if len - offset < rec_len {
            return bad(offset, "record cut short".into());
        }
        buf.resize(rec_len as usize, 0);
        rd.read_exact(&mut buf[RECORD_HEADER_LEN..])?;
        if !record::crc_ok(&buf, header.crc) {
            return bad(offset, "checksum mismatch".into());
        }
        let key_bytes = &buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.key_len];
        let Ok(key) = std::str::from_utf8(key_bytes) else {
            return bad(offset, "key is not UTF-8".into());
        };
        f(Scanned {
            offset,
            header,
            key,
        });
        offset += rec_len;
    }
    Ok(ScanEnd::Clean { len })
}

/// Whether every byte of `p` from `offset` to `len` is zero: the unused,
/// reserved end of an active segment rather than a torn record.
pub fn zero_from(p: &Path, offset: u64, len: u64) -> io::Result<bool> {
    let file = File::open(p)?;
    let mut buf = vec![0u8; 1 << 20];
    let mut at = offset;
    while at < len {
        let n = (len - at).min(buf.len() as u64) as usize;
        file.read_exact_at(&mut buf[..n], at)?;
        if buf[..n].iter().any(|&b| b != 0) {
            return Ok(false);
        }
        at += n as u64;
    }
    Ok(true)
}

/// Whether a whole, valid record starts anywhere in `p` after `offset`
/// (file length `len`): then the bad bytes at `offset` are damage inside the
/// file, not a torn tail. Tries every byte position; only runs on a damaged
/// segment.
pub fn valid_record_after(p: &Path, offset: u64, len: u64) -> io::Result<bool> {
    let start = offset + 1;
    let mut rest = vec![0u8; len.saturating_sub(start) as usize];
    File::open(p)?.read_exact_at(&mut rest, start)?;
    let mut at = 0usize;
    while at + RECORD_HEADER_LEN <= rest.len() {
        let hb: &[u8; RECORD_HEADER_LEN] = rest[at..at + RECORD_HEADER_LEN]
            .try_into()
            .expect("slice is exactly a header long");
        if let Ok(h) = Header::decode(hb)
            && let Some(rec) = rest.get(at..at + h.record_len())
            && record::crc_ok(rec, h.crc)
        {
            return Ok(true);
        }
        at += 1;
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
