//! `KvStore`: the log-structured engine. See `docs/design.md` for the disk
//! format, recovery and compaction.

mod compaction;
mod index;
mod reader;
pub mod record;
mod recovery;
mod segment;
mod writer;

use std::cell::RefCell;
use std::fs::{File, OpenOptions, TryLockError};
use std::path::PathBuf;
use std::str::FromStr;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, Sender};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use index::{Index, Loc, Slot, now_ms};
use reader::Reader;
use record::{Kind, MAX_KEY_LEN, MAX_VALUE_LEN};
use segment::SegmentId;
use std::ops::Bound;
use writer::{GroupCommit, Writer};

use crate::engine::{EngineStats, Entry, Update};
use crate::{KvsEngine, KvsError, Result};

/// When appended records are forced to stable storage.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SyncMode {
    /// fsync before `set`/`remove` returns; concurrent writers share one fsync.
    Always,
    /// A background thread fsyncs once a second (the default).
    #[default]
    EverySec,
    /// Never fsync explicitly; the OS writes back when it likes.
    Never,
}

impl FromStr for SyncMode {
    type Err = KvsError;

    fn from_str(s: &str) -> Result<SyncMode> {
        match s {
            "always" => Ok(SyncMode::Always),
            "every-sec" | "every_sec" | "everysec" => Ok(SyncMode::EverySec),
            "never" => Ok(SyncMode::Never),
            other => Err(KvsError::InvalidInput(format!(
                "unknown sync mode `{other}` (expected always, every-sec or never)"
            ))),
        }
    }
}

impl std::fmt::Display for SyncMode {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            SyncMode::Always => "always",
            SyncMode::EverySec => "every-sec",
            SyncMode::Never => "never",
        })
    }
}

/// Tuning for [`KvStore::open_with`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct Options {
    /// Durability of writes.
    pub sync: SyncMode,
    /// The active segment is closed and a new one started past this size.
    pub segment_max_bytes: u64,
    /// Compaction starts when stale bytes exceed
    /// `live_bytes * compaction_stale_ratio + compaction_min_stale_bytes`.
    pub compaction_min_stale_bytes: u64,
    /// See `compaction_min_stale_bytes`.
    pub compaction_stale_ratio: f64,
    /// Run compaction on the background thread when the threshold is passed.
    /// When false, compaction only runs through [`KvStore::compact`].
    pub auto_compact: bool,
    /// Test hook: stop compactions at this step, leaving the files as a
    /// crash there would.
    #[doc(hidden)]
    pub fail_point: Option<FailPoint>,
}

/// Steps of a compaction at which a test can simulate a crash.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailPoint {
    /// The output is complete in its temp file, not yet renamed.
    BeforeRename,
    /// The output is renamed and synced; nothing published or deleted.
    BeforePublish,
    /// Published, and the oldest input deleted; the others remain.
    AfterFirstDelete,
    /// `clear`: the `Clear` record is durable; no old segment deleted.
    ClearBeforeRetire,
    /// `clear`: the oldest old segment deleted; the others remain.
    ClearAfterFirstDelete,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sync: SyncMode::EverySec,
            segment_max_bytes: 64 << 20,
            compaction_min_stale_bytes: 64 << 20,
            compaction_stale_ratio: 1.0,
            auto_compact: true,
            fail_point: None,
        }
    }
}

/// Sizes reported by [`KvStore::stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stats {
    /// Keys in the index (expired ones included until compaction).
    pub keys: usize,
    /// Bytes of the records the index points to.
    pub live_bytes: u64,
    /// Bytes in all segment files.
    pub disk_bytes: u64,
}

/// State shared by every clone and the background threads.
pub(crate) struct Core {
    dir: PathBuf,
    opts: Options,
    index: Index,
    writer: Mutex<Writer>,
    commit: GroupCommit,
    /// Segments below this id were retired by compaction; readers drop
    /// their handles to them.
    retired_below: AtomicU32,
    /// Set when the last handle goes; a running compaction gives up.
    stopping: AtomicBool,
    /// A compaction request is queued or running.
    compaction_pending: AtomicBool,
    /// When (Unix ms) an automatic compaction last failed: the next waits
    /// [`COMPACTION_RETRY_MS`], so a persistent failure (a corrupt input,
    /// a full disk) does not start one per write, each sealing a segment.
    compaction_failed_at: AtomicU64,
    /// Requests to the compaction thread; `None` once closing.
    compact_tx: Mutex<Option<Sender<Job>>>,
    /// Compactions that failed since open.
    compaction_failures: AtomicU64,
    /// Expired keys dropped from the index since open.
    expired: AtomicU64,
    /// Holds the directory lock for as long as the store is open.
    _lock: File,
}

/// Who waits for a background job's result, if anyone.
type Reply = Option<Sender<Result<()>>>;

/// Work for the compaction thread, which runs one job at a time so that
/// compaction and the retirement of cleared segments never interleave.
enum Job {
    /// Compact every segment older than the active one.
    Compact(Reply),
    /// Delete every segment below this id, once everything written is
    /// durable: they precede a durable `Clear` record (see `clear`).
    Retire(SegmentId, Reply),
}

/// Index entries the expiry sweep looks at per tick of the compaction
/// thread (once a second).
const SWEEP_BATCH: usize = 10_000;

/// Pause after a failed automatic compaction.
const COMPACTION_RETRY_MS: u64 = 30_000;

impl Core {
    fn lock_writer(&self) -> MutexGuard<'_, Writer> {
        // NOTE: a std Mutex: it is held for one append and never across an
        // await. A panic under it cannot leave the file and the counters
        // inconsistent in a way a later append would make worse (an append
        // either completes or is cut back), so poisoning is ignored.
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Waits until everything up to `lsn` is on stable storage.
    fn wait_durable(&self, lsn: u64) -> Result<()> {
        self.commit.wait_durable(lsn, || {
            let w = self.lock_writer();
            (Arc::clone(&w.file), w.lsn)
        })
    }

    /// Waits until everything written so far is on stable storage.
    fn sync_all(&self) -> Result<()> {
        let lsn = self.lock_writer().lsn;
        self.wait_durable(lsn)
    }

    fn request(&self, job: Job) -> bool {
        let tx = self.compact_tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    fn maybe_compact(&self, w: &Writer) {
        if !self.opts.auto_compact {
            return;
        }
        let failed_at = self.compaction_failed_at.load(Ordering::Relaxed);
        if failed_at != 0 && now_ms().saturating_sub(failed_at) < COMPACTION_RETRY_MS {
            return;
        }
        let stale = w.disk_bytes.saturating_sub(w.live_bytes);
        let limit = w.live_bytes as f64 * self.opts.compaction_stale_ratio
            + self.opts.compaction_min_stale_bytes as f64;
        if stale as f64 > limit
            && !self.compaction_pending.swap(true, Ordering::AcqRel)
            && !self.request(Job::Compact(None))
        {
            self.compaction_pending.store(false, Ordering::Release);
        }
    }

    /// Appends a put or tombstone of `key` and updates the index; the
    /// caller holds the writer lock (`w`) and checked the sizes. Returns
    /// the lsn to wait for.
    fn append_locked(
        &self,
        w: &mut Writer,
        kind: Kind,
        key: String,
        value: &str,
        expires_at: u64,
    ) -> Result<u64> {
        let entry = self.index.get(key.as_str());
        let old = entry.as_ref().map(|e| e.value().load());
        let len = self.append_record(w, kind, key.as_bytes(), value.as_bytes(), expires_at)?;
        if let Some(old) = old {
            w.live_bytes = w.live_bytes.saturating_sub(old.len as u64);
        }
        match kind {
            Kind::Put => {
                let loc = Loc {
                    seg: w.active,
                    len: len as u32,
                    offset: w.pos - len,
                    expires_at,
                };
                match &entry {
                    Some(e) => e.value().store(loc),
                    None => {
                        w.index_bytes += index::entry_bytes(&key);
                        self.index.insert(key, Slot::new(loc));
                    }
                }
                w.live_bytes += len;
            }
            Kind::Tombstone | Kind::Clear => {
                if self.index.remove(key.as_str()).is_some() {
                    w.index_bytes = w.index_bytes.saturating_sub(index::entry_bytes(&key));
                }
            }
        }
        self.maybe_compact(w);
        Ok(w.lsn)
    }

    /// Encodes and appends one record (rotating when it does not fit);
    /// returns its length. The caller holds the writer lock.
    fn append_record(
        &self,
        w: &mut Writer,
        kind: Kind,
        key: &[u8],
        value: &[u8],
        expires_at: u64,
    ) -> Result<u64> {
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let len = record::encode(&mut buf, kind, key, value, expires_at) as u64;
        w.buf = buf;
        let seg_before = w.active;
        self.commit.check()?;
        w.append_buf(&self.dir, &self.commit)?;
        if w.active != seg_before {
            // The rotation synced everything before this record.
            self.commit.mark_durable(w.lsn - len);
        }
        Ok(len)
    }

    fn write(&self, kind: Kind, key: String, value: &str, expires_at: u64) -> Result<()> {
        check_sizes(&key, value)?;
        let lsn = {
            let mut w = self.lock_writer();
            if kind == Kind::Tombstone
                && self
                    .index
                    .get(key.as_str())
                    .is_none_or(|e| e.value().load().expired())
            {
                return Err(KvsError::KeyNotFound);
            }
            self.append_locked(&mut w, kind, key, value, expires_at)?
        };
        self.durable(lsn)
    }

    /// Waits for `lsn` when the sync mode asks writes to wait.
    fn durable(&self, lsn: u64) -> Result<()> {
        if self.opts.sync == SyncMode::Always {
            self.wait_durable(lsn)?;
        }
        Ok(())
    }

    /// Drops expired keys from the index, looking at up to [`SWEEP_BATCH`]
    /// entries after `cursor`; returns where the next sweep starts. No
    /// tombstone is needed: the record carries its expiry, so recovery
    /// and compaction drop it too.
    fn sweep_expired(&self, cursor: Option<String>) -> Option<String> {
        let now = now_ms();
        let mut found = Vec::new();
        let mut e = match &cursor {
            Some(k) => self.index.lower_bound(Bound::Excluded(k.as_str())),
            None => self.index.front(),
        };
        let mut last = None;
        for _ in 0..SWEEP_BATCH {
            let Some(entry) = e else {
                last = None;
                break;
            };
            let loc = entry.value().load();
            if loc.expired_at(now) {
                found.push((entry.key().clone(), loc));
            }
            last = Some(entry.key().clone());
            e = entry.next();
        }
        if !found.is_empty() {
            let mut w = self.lock_writer();
            for (key, loc) in found {
                if let Some(entry) = self.index.get(key.as_str())
                    && entry.value().load() == loc
                    && entry.remove()
                {
                    w.live_bytes = w.live_bytes.saturating_sub(loc.len as u64);
                    w.index_bytes = w.index_bytes.saturating_sub(index::entry_bytes(&key));
                    self.expired.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.maybe_compact(&w);
        }
        last
    }
}

fn check_sizes(key: &str, value: &str) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(KvsError::InvalidInput(format!(
            "key of {} bytes is over the {MAX_KEY_LEN} byte limit",
            key.len()
        )));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(KvsError::InvalidInput(format!(
            "value of {} bytes is over the {MAX_VALUE_LEN} byte limit",
            value.len()
        )));
    }
    Ok(())
}

/// Owned by every clone through an `Arc`: when the last clone goes, it stops
/// and joins the background threads, then syncs, then the lock is released.
struct Guard {
    core: Arc<Core>,
    stop_syncer: Option<Sender<()>>,
    threads: Vec<JoinHandle<()>>,
}

impl Drop for Guard {
    fn drop(&mut self) {
        self.core.stopping.store(true, Ordering::Release);
        self.core
            .compact_tx
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .take();
        self.stop_syncer.take();
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
        if self.core.opts.sync != SyncMode::Never
            && let Err(e) = self.core.sync_all()
        {
            tracing::error!(error = %e, dir = %self.core.dir.display(), "final sync failed");
        }
        // NOTE: the reserved, unwritten end of the active segment is cut
        // off, so the next open need not read it to prove it is all zeros
        // (up to `segment_max_bytes` of reading); the open reserves it again.
        // Every clone is gone and the threads are joined: nothing else maps
        // the file.
        if let Err(e) = self.core.lock_writer().trim() {
            tracing::warn!(error = %e, dir = %self.core.dir.display(), "cannot trim the active segment");
        }
    }
}

/// The log-structured store.
///
/// Clones share the index and the writer; each clone has its own read
/// handles, so give each thread its own clone and reuse it (a clone opens
/// segment files on its first reads).
pub struct KvStore {
    guard: Arc<Guard>,
    reader: RefCell<Reader>,
}

impl Clone for KvStore {
    fn clone(&self) -> KvStore {
        KvStore {
            guard: Arc::clone(&self.guard),
            reader: RefCell::new(Reader::default()),
        }
    }
}

impl KvStore {
    /// Opens (or creates) the store in directory `path` with default options.
    pub fn open(path: impl Into<PathBuf>) -> Result<KvStore> {
        KvStore::open_with(path, Options::default())
    }

    /// Opens (or creates) the store in directory `path`.
    pub fn open_with(path: impl Into<PathBuf>, opts: Options) -> Result<KvStore> {
        let dir = path.into();
        std::fs::create_dir_all(&dir)?;
        let lock = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(dir.join("LOCK"))?;
        match lock.try_lock() {
            Ok(()) => {}
            Err(TryLockError::WouldBlock) => return Err(KvsError::Locked { dir }),
            Err(TryLockError::Error(e)) => return Err(e.into()),
        }
        let index = Index::new();
        let rec = recovery::recover(&dir, &index, opts.segment_max_bytes)?;
        tracing::debug!(dir = %dir.display(), keys = index.len(), active = rec.active, "store opened");
        let writer = Writer {
            active: rec.active,
            map: writer::map_active(&rec.file)?,
            segment_size: opts.segment_max_bytes,
            file: Arc::new(rec.file),
            pos: rec.pos,
            lsn: 0,
            disk_bytes: rec.disk_bytes,
            live_bytes: rec.live_bytes,
            index_bytes: rec.index_bytes,
            buf: Vec::new(),
        };
        let (compact_tx, compact_rx) = mpsc::channel();
        let core = Arc::new(Core {
            dir,
            opts,
            index,
            writer: Mutex::new(writer),
            commit: GroupCommit::default(),
            retired_below: AtomicU32::new(0),
            stopping: AtomicBool::new(false),
            compaction_pending: AtomicBool::new(false),
            compaction_failed_at: AtomicU64::new(0),
            compact_tx: Mutex::new(Some(compact_tx)),
            compaction_failures: AtomicU64::new(0),
            expired: AtomicU64::new(0),
            _lock: lock,
        });

        let mut threads = Vec::new();
        let c = Arc::clone(&core);
        threads.push(
            std::thread::Builder::new()
                .name("kvs-compactor".into())
                .spawn(move || compactor(c, compact_rx))?,
        );
        let mut stop_syncer = None;
        if core.opts.sync == SyncMode::EverySec {
            let (tx, rx) = mpsc::channel();
            let c = Arc::clone(&core);
            threads.push(
                std::thread::Builder::new()
                    .name("kvs-syncer".into())
                    .spawn(move || syncer(c, rx))?,
            );
            stop_syncer = Some(tx);
        }
        let guard = Arc::new(Guard {
            core,
            stop_syncer,
            threads,
        });
        Ok(KvStore {
            guard,
            reader: RefCell::new(Reader::default()),
        })
    }

    fn core(&self) -> &Core {
        &self.guard.core
    }

    /// Runs a compaction on the background thread now and waits for it.
    pub fn compact(&self) -> Result<()> {
        let (tx, rx) = mpsc::channel();
        if !self.core().request(Job::Compact(Some(tx))) {
            return Err(KvsError::Closed("store is closing".into()));
        }
        rx.recv()
            .map_err(|_| KvsError::Closed("compaction thread stopped".into()))?
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

/// The background thread: runs compactions and clear retirements in
/// request order, and sweeps expired keys once a second.
fn compactor(core: Arc<Core>, rx: Receiver<Job>) {
    let mut cursor = None;
    loop {
        let job = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                cursor = core.sweep_expired(cursor);
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match job {
            Job::Compact(reply) => {
                let r = compact_once(&core);
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Job::Retire(below, reply) => {
                let r = compaction::retire_below(&core, below);
                if let Err(e) = &r {
                    tracing::error!(error = %e, dir = %core.dir.display(), "deleting cleared segments failed");
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
        }
    }
}

fn compact_once(core: &Core) -> Result<()> {
    let lsn_before = core.lock_writer().lsn;
    let r = compaction::run(core);
    core.compaction_pending.store(false, Ordering::Release);
    // Writes made while it ran found a compaction pending and asked for
    // none; if they pushed the stale bytes over the threshold again,
    // queue the next one now rather than at some later write.
    let w = core.lock_writer();
    if w.lsn != lsn_before {
        core.maybe_compact(&w);
    }
    drop(w);
    match &r {
        Ok(()) => core.compaction_failed_at.store(0, Ordering::Relaxed),
        Err(KvsError::Closed(_)) => {}
        Err(e) => {
            core.compaction_failed_at.store(now_ms(), Ordering::Relaxed);
            core.compaction_failures.fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, dir = %core.dir.display(), "compaction failed");
        }
    }
    r
}

fn syncer(core: Arc<Core>, stop: Receiver<()>) {
    loop {
        match stop.recv_timeout(Duration::from_secs(1)) {
            Err(RecvTimeoutError::Timeout) => {
                if let Err(e) = core.sync_all() {
                    tracing::error!(error = %e, dir = %core.dir.display(), "background fsync failed");
                }
            }
            _ => return,
        }
    }
}

impl KvsEngine for KvStore {
    fn set(&self, key: String, value: String) -> Result<()> {
        self.core().write(Kind::Put, key, &value, 0)
    }

    fn get(&self, key: String) -> Result<Option<String>> {
        Ok(self
            .reader
            .borrow_mut()
            .get(self.core(), &key)?
            .map(|e| e.value))
    }

    fn remove(&self, key: String) -> Result<()> {
        self.core().write(Kind::Tombstone, key, "", 0)
    }

    fn set_expiring(&self, key: String, value: String, expires_at: u64) -> Result<()> {
        self.core().write(Kind::Put, key, &value, expires_at)
    }

    fn get_entry(&self, key: &str) -> Result<Option<Entry>> {
        self.reader.borrow_mut().get(self.core(), key)
    }

    /// `f` runs under the writer lock: it must not call into this store.
    fn update<R>(&self, key: String, f: impl FnOnce(Option<Entry>) -> (Update, R)) -> Result<R> {
        let core = self.core();
        let (lsn, r) = {
            let mut w = core.lock_writer();
            let loc = core.index.get(key.as_str()).map(|e| e.value().load());
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
                    Some(core.append_locked(&mut w, Kind::Put, key, &e.value, e.expires_at)?)
                }
                Update::Remove if live => {
                    Some(core.append_locked(&mut w, Kind::Tombstone, key, "", 0)?)
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
        // NOTE: never `SkipMap::range()`: crossbeam-skiplist 0.1.3 leaks the
        // nodes it visits.
        let mut e = match after {
            Some(k) => index.lower_bound(Bound::Excluded(k)),
            None => index.front(),
        };
        while out.len() < limit {
            let Some(entry) = e else { break };
            if !entry.value().load().expired_at(now) {
                out.push(entry.key().clone());
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
