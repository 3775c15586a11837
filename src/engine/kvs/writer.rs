//! The single writer: appends records, rotates segments, group commit.

use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use memmap2::{MmapOptions, MmapRaw};

use super::manifest::Manifest;
use super::record::{self, RECORD_HEADER_LEN, SEAL_RECORD_LEN, SEGMENT_HEADER_LEN};
use super::segment::{self, SegmentId};
use crate::Result;

/// Maps the active segment for writing; `None` when the file has no room
/// past `pos` (a full disk left it unreserved): the next write rotates.
pub fn map_active(file: &File, pos: u64, p: &Path) -> Result<Option<MmapRaw>> {
    let len = file.metadata().map_err(segment::io_at("stat", p))?.len();
    if len <= pos {
        return Ok(None);
    }
    // A raw map: no `&[u8]`/`&mut [u8]` over the whole mapping ever
    // exists, so the writer's stores and the readers' loads of other
    // bytes of the same file never alias a reference. The unsafe is at
    // each access (`append`, `Reader::read`).
    let map = MmapOptions::new()
        .map_raw(file)
        .map_err(segment::io_at("map", p))?;
    Ok(Some(map))
}

/// State owned by whoever holds the writer lock.
pub struct Writer {
    /// Id of the segment being appended to.
    pub active: SegmentId,
    /// Its file. An `Arc` so the group-commit syncer can fsync it without
    /// holding the writer lock.
    pub file: Arc<File>,
    /// Append position in the active segment.
    pub pos: u64,
    /// Log sequence number: bytes appended since open, across segments.
    pub lsn: u64,
    /// Bytes in all segment files.
    pub disk_bytes: u64,
    /// Bytes of the records the index points to.
    pub live_bytes: u64,
    /// Estimated memory of the index entries.
    pub index_bytes: u64,
    /// The active segment, mapped shared: a copy into it is in the OS page
    /// cache at once (a killed process loses nothing), without a syscall.
    /// `None` once sealed or trimmed, or when there was no room to reserve.
    pub map: Option<MmapRaw>,
    /// Size new segments would like to have.
    pub segment_size: u64,
    /// CRC-32 of the active segment's bytes up to `pos`, for its seal.
    /// Updated with each record as it is written (not read back from the
    /// file later), so a seal or a close-time hint that matches the file
    /// proves the file holds what the writer wrote.
    pub crc: crc32fast::Hasher,
    /// The active segment carries its seal: nothing more goes into it.
    pub sealed: bool,
    /// Why nothing can be written (the files are not writable), if so.
    pub read_only: Option<String>,
    /// The live segments as the manifest on disk lists them.
    pub manifest: Manifest,
}

impl Writer {
    /// Bytes of the active segment that are mapped (0 when unmapped).
    fn room_end(&self) -> u64 {
        self.map.as_ref().map_or(0, |m| m.len() as u64)
    }

    /// Appends one record, `header` (from [`record::header_without_crc`])
    /// then `key` then `value`, rotating to a new segment when it does not
    /// fit with room left for the seal; returns its offset. The parts are
    /// copied straight into the map, with no encode buffer between, and the
    /// record's crc is computed over the copy (one pass over contiguous
    /// bytes, which is cheaper than three over the parts).
    pub fn append(
        &mut self,
        header: &[u8; RECORD_HEADER_LEN],
        key: &[u8],
        value: &[u8],
        dir: &Path,
        commit: &GroupCommit,
    ) -> Result<u64> {
        self.check_writable()?;
        let len = (RECORD_HEADER_LEN + key.len() + value.len()) as u64;
        if self.sealed || self.pos + len + SEAL_RECORD_LEN > self.room_end() {
            let next = segment::next_id(self.active)?;
            self.rotate(dir, next, len, commit)?;
        }
        let offset = self.pos;
        let Some(map) = &self.map else {
            // `rotate` maps the new segment or fails, so this is not reached.
            return Err(crate::KvsError::Io(std::io::Error::other(
                "active segment is not mapped after a rotation",
            )));
        };
        // SAFETY: `offset + len <= map.len()` (checked above, and a rotation
        // makes a segment big enough for the record and its seal), so the
        // three destinations, back to back from `offset`, are inside the
        // mapping, which lives as long as `map`. Only the holder of the
        // writer lock stores into it, and only past every published record,
        // which readers may be loading concurrently through their own
        // read-only maps (raw pointers on both sides, no references). The
        // sources are the caller's separate allocations. Assumed outside
        // the process: no one else truncates or writes the segment files
        // (see `KvStore::open`); a truncation under the map would be a
        // SIGBUS.
        unsafe {
            let dst = map.as_mut_ptr().add(offset as usize);
            std::ptr::copy_nonoverlapping(header.as_ptr(), dst, RECORD_HEADER_LEN);
            let dst = dst.add(RECORD_HEADER_LEN);
            std::ptr::copy_nonoverlapping(key.as_ptr(), dst, key.len());
            let dst = dst.add(key.len());
            std::ptr::copy_nonoverlapping(value.as_ptr(), dst, value.len());
        }
        // SAFETY: the record's bytes after its crc field, inside the
        // mapping as above, were just stored by this thread, and nothing
        // stores into them while this slice lives: the record is not
        // published yet (the index does not point at it), so no reader looks
        // at it, and only we write. The crc field itself is written through
        // the raw pointer after the slice is gone.
        let crc = unsafe {
            let body = map.as_ptr().add(offset as usize + 4);
            crc32fast::hash(std::slice::from_raw_parts(body, len as usize - 4))
        };
        // SAFETY: the first 4 bytes of the record, inside the mapping.
        unsafe {
            std::ptr::copy_nonoverlapping(
                crc.to_le_bytes().as_ptr(),
                map.as_mut_ptr().add(offset as usize),
                4,
            );
        }
        // SAFETY: the whole record, inside the mapping, complete now and
        // still unpublished (as above): no store into it while this lives.
        self.crc.update(unsafe {
            std::slice::from_raw_parts(map.as_ptr().add(offset as usize), len as usize)
        });
        self.pos += len;
        self.lsn += len;
        self.disk_bytes += len;
        Ok(offset)
    }

    /// `ReadOnly` when the store's files cannot be written.
    pub fn check_writable(&self) -> Result<()> {
        match &self.read_only {
            Some(why) => Err(crate::KvsError::ReadOnly(why.clone())),
            None => Ok(()),
        }
    }

    /// Cuts the active segment to its records, unmapping it first (a store
    /// past the new end would be a SIGBUS). Appending afterwards needs a
    /// rotation; used when sealing and when the store closes.
    pub fn trim(&mut self) -> std::io::Result<()> {
        self.map = None;
        self.file.set_len(self.pos)
    }

    /// Seals the active segment: cut to its records, the seal appended
    /// with `pwrite` (so it needs no reserved room), synced. Idempotent.
    fn seal(&mut self, dir: &Path, commit: &GroupCommit) -> Result<()> {
        if self.sealed {
            return Ok(());
        }
        let p = segment::path(dir, self.active);
        self.trim().map_err(segment::io_at("trim", &p))?;
        let mut seal = Vec::with_capacity(SEAL_RECORD_LEN as usize);
        record::encode_seal(&mut seal, self.pos, self.crc.clone().finalize());
        if let Err(e) = std::os::unix::fs::FileExt::write_all_at(&*self.file, &seal, self.pos) {
            // A partial seal would read as a torn tail; cut it back so a
            // later attempt starts from the same place.
            let _ = self.file.set_len(self.pos);
            if e.kind() == std::io::ErrorKind::StorageFull {
                let free = segment::free_bytes(dir).unwrap_or(0);
                return Err(segment::no_space(dir, SEAL_RECORD_LEN, free));
            }
            return Err(segment::io_at("write the seal of", &p)(e).into());
        }
        if let Err(e) = self.file.sync_data() {
            commit.poison(&e);
            return Err(segment::io_at("sync", &p)(e).into());
        }
        self.crc.update(&seal);
        self.pos += SEAL_RECORD_LEN;
        self.lsn += SEAL_RECORD_LEN;
        self.disk_bytes += SEAL_RECORD_LEN;
        self.sealed = true;
        Ok(())
    }

    /// Seals the active segment and starts segment `new_id`, big enough for
    /// a record of `need` bytes. After a failure the old segment stays
    /// sealed and the next write tries again (a full disk: reads go on,
    /// writes fail with `ReadOnly` until space returns).
    pub fn rotate(
        &mut self,
        dir: &Path,
        new_id: SegmentId,
        need: u64,
        commit: &GroupCommit,
    ) -> Result<()> {
        self.check_writable()?;
        // NOTE: the old segment is sealed and synced before the new one
        // exists, so after a power loss only the newest segment can have a
        // torn tail (the only place recovery may cut), and every older one
        // carries a seal that proves it whole.
        self.seal(dir, commit)?;
        let min = SEGMENT_HEADER_LEN + need + SEAL_RECORD_LEN;
        let file = segment::create(dir, new_id, self.segment_size.max(min), min)?;
        let p = segment::path(dir, new_id);
        let map = match map_active(&file, SEGMENT_HEADER_LEN, &p) {
            Ok(Some(m)) => m,
            r => {
                // Not left behind: a second attempt would find it existing.
                drop(file);
                let _ = std::fs::remove_file(&p);
                let _ = segment::sync_dir(dir);
                return Err(match r {
                    Err(e) => e,
                    _ => crate::KvsError::Io(std::io::Error::other(format!(
                        "{} was created without room",
                        p.display()
                    ))),
                });
            }
        };
        // NOTE: the manifest records the new segment after it exists and
        // before anything is written to it, so on open a segment missing
        // from the listed range is a lost one, and one past it is an empty
        // segment from a rotation that stopped here.
        let mut listed = self.manifest.clone();
        listed.gaps.extend(self.active + 1..new_id);
        listed.high = new_id;
        if let Err(e) = listed.write(dir) {
            drop(map);
            drop(file);
            let _ = std::fs::remove_file(&p);
            let _ = segment::sync_dir(dir);
            return Err(e);
        }
        self.manifest = listed;
        self.map = Some(map);
        self.file = Arc::new(file);
        self.active = new_id;
        self.pos = SEGMENT_HEADER_LEN;
        self.disk_bytes += SEGMENT_HEADER_LEN;
        self.crc = crc32fast::Hasher::new();
        self.crc.update(&record::segment_header());
        self.sealed = false;
        Ok(())
    }
}

fn failed_error(why: &str) -> crate::KvsError {
    crate::KvsError::Io(std::io::Error::other(format!(
        "an fsync failed ({why}); writes since the last good one may not be on disk, \
         so the store refuses further writes until it is reopened"
    )))
}

/// Group commit: writers wait until an fsync covers their record, and one
/// fsync serves every writer that appended before it started.
#[derive(Default)]
pub struct GroupCommit {
    state: Mutex<SyncState>,
    done: Condvar,
    /// `state.failed` is set: lets [`GroupCommit::check`], called on every
    /// write, skip the mutex while all is well.
    failed: AtomicBool,
}

#[derive(Default)]
struct SyncState {
    synced_lsn: u64,
    syncing: bool,
    /// Set by the first failed fsync, for good: after a failed fsync the
    /// kernel may have dropped the dirty pages, so a later fsync that
    /// succeeds proves nothing about the records before it.
    failed: Option<String>,
}

/// Clears `syncing` if the syncer unwinds.
struct ClearSyncing<'a>(&'a GroupCommit);

impl Drop for ClearSyncing<'_> {
    fn drop(&mut self) {
        self.0.lock().syncing = false;
        self.0.done.notify_all();
    }
}

impl GroupCommit {
    fn lock(&self) -> MutexGuard<'_, SyncState> {
        // A panic while holding this lock leaves plain numbers behind, which
        // stay valid, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Returns once everything up to `lsn` is on stable storage. `current`
    /// gives the file to sync and the lsn it holds data up to; it is called
    /// without this lock held.
    pub fn wait_durable(&self, lsn: u64, current: impl Fn() -> (Arc<File>, u64)) -> Result<()> {
        let mut s = self.lock();
        loop {
            if let Some(why) = &s.failed {
                return Err(failed_error(why));
            }
            if s.synced_lsn >= lsn {
                return Ok(());
            }
            if !s.syncing {
                s.syncing = true;
                drop(s);
                // If `current` or the sync panics, the guard clears
                // `syncing` and wakes the waiters (one of them becomes the
                // syncer); otherwise every later `always` write would wait
                // forever for a sync nobody runs.
                let guard = ClearSyncing(self);
                let (file, target) = current();
                let r = file.sync_data();
                std::mem::forget(guard);
                s = self.lock();
                s.syncing = false;
                match &r {
                    Ok(()) => s.synced_lsn = s.synced_lsn.max(target),
                    Err(e) => {
                        s.failed = Some(e.to_string());
                        self.failed.store(true, Ordering::Release);
                    }
                }
                self.done.notify_all();
                r?;
                continue;
            }
            s = self.done.wait(s).unwrap_or_else(|p| p.into_inner());
        }
    }

    /// Records a failed fsync outside `wait_durable` (sealing a segment).
    pub fn poison(&self, e: &std::io::Error) {
        self.lock().failed.get_or_insert_with(|| e.to_string());
        self.failed.store(true, Ordering::Release);
    }

    /// The error every write gets once an fsync has failed.
    pub fn check(&self) -> Result<()> {
        if !self.failed.load(Ordering::Acquire) {
            return Ok(());
        }
        match &self.lock().failed {
            Some(why) => Err(failed_error(why)),
            None => Ok(()),
        }
    }

    /// Records that everything up to `lsn` is durable (after a rotation
    /// synced the old segment).
    pub fn mark_durable(&self, lsn: u64) {
        let mut s = self.lock();
        s.synced_lsn = s.synced_lsn.max(lsn);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_syncer_that_panics_does_not_leave_later_writers_waiting() {
        let dir = tempfile::TempDir::new().unwrap();
        let file = Arc::new(File::create(dir.path().join("f")).unwrap());
        let commit = Arc::new(GroupCommit::default());
        let r = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            commit.wait_durable(10, || panic!("injected"))
        }));
        assert!(r.is_err());
        // Would wait forever if `syncing` had stayed set; the thread is not
        // joined, so a failure here is an assertion, not a hung test.
        let (tx, rx) = std::sync::mpsc::channel();
        let c = Arc::clone(&commit);
        std::thread::spawn(move || {
            let r = c.wait_durable(10, || (Arc::clone(&file), 10));
            let _ = tx.send(r.is_ok());
        });
        assert_eq!(
            rx.recv_timeout(std::time::Duration::from_secs(10)),
            Ok(true)
        );
    }
}
