//! The public methods of `KvStore`: the `KvsEngine` operations and the
//! store's own (compaction on demand, sizes).

use std::sync::atomic::Ordering;
use std::sync::mpsc;

use super::background::Job;
use super::index::now_ms;
use super::record::Kind;
use super::segment::{self, SegmentId};
use super::write::check_sizes;
use super::{KvStore, Stats, SyncMode};
use crate::engine::{EngineStats, Entry, Update};
use crate::{KvsEngine, KvsError, Result};

impl KvStore {
    /// Runs a compaction on the background thread now and waits for it.
    pub fn compact(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        if !self.core().request(Job::Compact(Some(tx))) {
            return Err(KvsError::Closed("store is closing".into()));
        }
        rx.recv()
            .map_err(|_| KvsError::Closed("compaction thread stopped".into()))?
    }

    /// Writes the hint files missing for sealed segments on the background
    /// thread now and waits (it also does so once a second by itself).
    pub fn write_hints(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        if !self.core().request(Job::Hints(Some(tx))) {
            return Err(KvsError::Closed("store is closing".into()));
        }
        rx.recv()
            .map_err(|_| KvsError::Closed("background thread stopped".into()))?
    }

    /// Current sizes.
    pub fn sizes(&self) -> Stats {
        let core = self.core();
        let w = core.lock_writer();
        Stats {
            keys: core.index.len(),
            live_bytes: w.live_bytes,
            disk_bytes: w.disk_bytes,
        }
    }

    /// Id of the newest segment (for tests and tools).
    #[doc(hidden)]
    pub fn active_segment(&self) -> SegmentId {
        self.core().lock_writer().active
    }

    /// Where the next record goes: (segment, offset). For tests.
    #[doc(hidden)]
    pub fn log_position(&self) -> (SegmentId, u64) {
        let w = self.core().lock_writer();
        (w.active, w.pos)
    }
}

impl KvsEngine for KvStore {
    /// Reads are an index lookup and a copy out of a mapped segment (a
    /// page fault on data not in the page cache is the one wait); writes
    /// are a copy into the mapped active segment under the writer lock,
    /// except under `SyncMode::Always`, where each waits for an fsync:
    /// those go in jobs of their own, so that concurrent writers share one
    /// fsync instead of waiting for one each in turn.
    fn shares_pool_jobs(&self, write: bool) -> bool {
        !write || self.core().opts.sync != SyncMode::Always
    }

    fn set(&self, key: String, value: String) -> Result<()> {
        self.core().write(Kind::Put, &key, &value, 0)
    }

    fn get(&self, key: String) -> Result<Option<String>> {
        Ok(self
            .reader
            .borrow_mut()
            .get(self.core(), &key)?
            .map(|e| e.value))
    }

    fn remove(&self, key: String) -> Result<()> {
        self.core().write(Kind::Tombstone, &key, "", 0)
    }

    fn set_expiring(&self, key: String, value: String, expires_at: u64) -> Result<()> {
        self.core().write(Kind::Put, &key, &value, expires_at)
    }

    fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.reader.borrow_mut().get(self.core(), key)
    }

    /// Looks the key up and prefetches the start of its record.
    fn prefetch(&self, key: &str) {
        self.reader.borrow_mut().prefetch(self.core(), key);
    }

    fn get_with(&self, key: &str, f: &mut dyn FnMut(&[u8])) -> Result<bool> {
        self.reader.borrow_mut().get_with(self.core(), key, f)
    }

    fn set_from(&self, key: &str, value: &str, expires_at: u64) -> Result<()> {
        self.core().write(Kind::Put, key, value, expires_at)
    }

    /// `f` runs under the writer lock: it must not call into this store.
    fn update<R>(&self, key: String, f: impl FnOnce(Option<Entry>) -> (Update, R)) -> Result<R> {
        let core = self.core();
        let (lsn, r) = {
            let mut w = core.lock_writer();
            let loc = core.index.get(&key);
            let current = match loc {
                Some(loc) if !loc.expired() => {
                    // NOTE: the record cannot be deleted under us: compaction
                    // deletes its inputs only after repointing every index
                    // entry, and repointing takes the writer lock we hold.
                    Some(self.reader.borrow_mut().read(core, &key, loc)?)
                }
                _ => None,
            };
            let live = current.is_some();
            let (what, r) = f(current);
            let lsn = match what {
                Update::Keep => None,
                Update::Put(e) => {
                    check_sizes(&key, &e.value)?;
                    Some(core.append_locked(&mut w, Kind::Put, &key, &e.value, e.expires_at)?)
                }
                Update::Remove if live => {
                    Some(core.append_locked(&mut w, Kind::Tombstone, &key, "", 0)?)
                }
                Update::Remove => None,
            };
            (lsn, r)
        };
        if let Some(lsn) = lsn {
            core.durable(lsn)?;
        }
        Ok(r)
    }

    fn scan(&self, after: Option<&str>, limit: usize) -> Result<Vec<String>> {
        let index = &self.core().index;
        let now = now_ms();
        let mut out = Vec::with_capacity(limit.min(1024));
        let mut e = match after {
            Some(k) => index.after(k),
            None => index.front(),
        };
        while out.len() < limit {
            let Some(entry) = e else { break };
            if !entry.key().load().expired_at(now) {
                out.push(entry.key().key().to_owned());
            }
            e = entry.next();
        }
        Ok(out)
    }

    fn len(&self) -> u64 {
        self.core().index.len() as u64
    }

    /// Writes a `Clear` record as the first record of a new segment,
    /// empties the index, and (once the record is durable) deletes every
    /// older segment. See "Clearing" in `docs/design.md`.
    fn clear(&self) -> Result<()> {
        let core = self.core();
        let (lsn, seg) = {
            let mut w = core.lock_writer();
            core.commit.check()?;
            let next = segment::next_id(w.active)?;
            w.rotate(&core.dir, next, 0, &core.commit)?;
            core.commit.mark_durable(w.lsn);
            core.append_record(&mut w, Kind::Clear, b"", b"", 0)?;
            core.index.clear();
            w.live_bytes = 0;
            w.index_bytes = 0;
            (w.lsn, w.active)
        };
        core.durable(lsn)?;
        let (tx, rx) = mpsc::channel();
        if core.request(Job::Retire(seg, Some(tx))) {
            rx.recv()
                .map_err(|_| KvsError::Closed("compaction thread stopped".into()))??;
        }
        Ok(())
    }

    /// Forces everything written so far to stable storage, whatever the
    /// sync mode.
    fn flush(&self) -> Result<()> {
        self.core().sync_all()
    }

    fn stats(&self) -> EngineStats {
        let core = self.core();
        let w = core.lock_writer();
        EngineStats {
            keys: core.index.len() as u64,
            used_memory: w.index_bytes,
            live_bytes: w.live_bytes,
            disk_bytes: w.disk_bytes,
            expired: core.expired.load(Ordering::Relaxed),
            compaction_failures: core.compaction_failures.load(Ordering::Relaxed),
            ..EngineStats::default()
        }
    }
}
