//! The single writer: appends records, rotates segments, group commit.

use std::fs::File;
use std::path::Path;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};

use memmap2::MmapMut;

use super::record::SEGMENT_HEADER_LEN;
use super::segment::{self, SegmentId};
use crate::Result;

/// Maps the active segment for writing.
pub fn map_active(file: &File) -> Result<MmapMut> {
    // SAFETY: the active segment is only written through this map, by the
    // holder of the writer lock, at offsets past every published record.
    // Readers map the same file read-only and only read published records,
    // which are never written again; no one truncates the file while this
    // map exists (rotation drops the map first).
    Ok(unsafe { MmapMut::map_mut(file)? })
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
    /// Encode buffer, reused.
    pub buf: Vec<u8>,
    /// The active segment, mapped shared: a copy into it is in the OS page
    /// cache at once (a killed process loses nothing), without a syscall.
    pub map: MmapMut,
    /// Size of new segments.
    pub segment_size: u64,
}

impl Writer {
    /// Appends the encoded record in `self.buf`, rotating to a new segment
    /// when it does not fit; returns its offset.
    pub fn append_buf(&mut self, dir: &Path, commit: &GroupCommit) -> Result<u64> {
        let len = self.buf.len() as u64;
        if self.pos + len > self.map.len() as u64 {
            let next = segment::next_id(self.active)?;
            self.rotate(dir, next, len, commit)?;
        }
        let offset = self.pos;
        // Through a raw pointer, not `&mut self.map[..]`: readers read
        // earlier bytes of the same file through their own maps, and no
        // reference should claim the whole map exclusively.
        // SAFETY: `offset + len <= self.map.len()` (checked above, and a
        // rotation makes a segment big enough for the record); `buf` is a
        // separate allocation.
        unsafe {
            std::ptr::copy_nonoverlapping(
                self.buf.as_ptr(),
                self.map.as_mut_ptr().add(offset as usize),
                len as usize,
            );
        }
        self.pos += len;
        self.lsn += len;
        self.disk_bytes += len;
        Ok(offset)
    }

    /// Cuts the active segment to its records, unmapping it first (a store
    /// past the new end would be a SIGBUS). Appending afterwards needs a
    /// rotation; used when sealing and when the store closes.
    pub fn trim(&mut self) -> std::io::Result<()> {
        self.map = MmapMut::map_anon(1)?;
        self.file.set_len(self.pos)
    }

    /// Seals the active segment (cut to its used length and synced) and
    /// starts segment `new_id`, big enough for a record of `need` bytes.
    pub fn rotate(
        &mut self,
        dir: &Path,
        new_id: SegmentId,
        need: u64,
        commit: &GroupCommit,
    ) -> Result<()> {
        let size = self.segment_size.max(SEGMENT_HEADER_LEN + need);
        // NOTE: the old segment is cut to its records and synced before the
        // new one exists, so after a power loss only the newest segment can
        // have a torn tail, which is the only place recovery may cut.
        self.trim()?;
        if let Err(e) = self.file.sync_data() {
            commit.poison(&e);
            return Err(e.into());
        }
        let file = segment::create(dir, new_id, size)?;
        self.map = map_active(&file)?;
        self.file = Arc::new(file);
        self.active = new_id;
        self.pos = SEGMENT_HEADER_LEN;
        self.disk_bytes += SEGMENT_HEADER_LEN;
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
                let (file, target) = current();
                let r = file.sync_data();
                s = self.lock();
                s.syncing = false;
                match &r {
                    Ok(()) => s.synced_lsn = s.synced_lsn.max(target),
                    Err(e) => s.failed = Some(e.to_string()),
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
    }

    /// The error every write gets once an fsync has failed.
    pub fn check(&self) -> Result<()> {
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
