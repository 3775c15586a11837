//! Segment files: naming, listing, creation (sized to the free space),
//! and reading one record back. Scanning a whole segment is in `scan`.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::record::{self, Header, Kind, RECORD_HEADER_LEN};
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
        if let Some(stem) = name.strip_suffix(".hint.tmp") {
            // An unfinished hint: never read, and rewritten later.
            if parse_id(stem).is_some() {
                fs::remove_file(entry.path()).map_err(io_at("delete", &entry.path()))?;
            }
        } else if let Some(stem) = name.strip_suffix(".log.tmp") {
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
