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
    compact_tx: Mutex<Option<Sender<CompactRequest>>>,
    /// Holds the directory lock for as long as the store is open.
    _lock: File,
}

type CompactRequest = Option<Sender<Result<()>>>;

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

    fn request_compaction(&self, reply: CompactRequest) -> bool {
        let tx = self.compact_tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(reply).is_ok(),
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
            && !self.request_compaction(None)
        {
            self.compaction_pending.store(false, Ordering::Release);
        }
    }

    /// Appends one record and updates the index. Returns the lsn to wait for.
    fn append(&self, kind: Kind, key: String, value: &str, expires_at: u64) -> Result<u64> {
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
        let mut w = self.lock_writer();
        let entry = self.index.get(key.as_str());
        let old = entry.as_ref().map(|e| e.value().load());
        if kind == Kind::Tombstone && old.is_none_or(|l| l.expired()) {
            return Err(KvsError::KeyNotFound);
        }
        let mut buf = std::mem::take(&mut w.buf);
        buf.clear();
        let len =
            record::encode(&mut buf, kind, key.as_bytes(), value.as_bytes(), expires_at) as u64;
        w.buf = buf;
        let seg_before = w.active;
        self.commit.check()?;
        let offset = w.append_buf(&self.dir, &self.commit)?;
        if w.active != seg_before {
            // The rotation synced everything before this record.
            self.commit.mark_durable(w.lsn - len);
        }
        if let Some(old) = old {
            w.live_bytes = w.live_bytes.saturating_sub(old.len as u64);
        }
        match kind {
            Kind::Put => {
                let loc = Loc {
                    seg: w.active,
                    len: len as u32,
                    offset,
                    expires_at,
                };
                match &entry {
                    Some(e) => e.value().store(loc),
                    None => {
                        self.index.insert(key, Slot::new(loc));
                    }
                }
                w.live_bytes += len;
            }
            Kind::Tombstone => {
                self.index.remove(key.as_str());
            }
        }
        self.maybe_compact(&w);
        Ok(w.lsn)
    }

    fn write(&self, kind: Kind, key: String, value: &str, expires_at: u64) -> Result<()> {
        let lsn = self.append(kind, key, value, expires_at)?;
        if self.opts.sync == SyncMode::Always {
            self.wait_durable(lsn)?;
        }
        Ok(())
    }
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
        if !self.core().request_compaction(Some(tx)) {
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

fn compactor(core: Arc<Core>, rx: Receiver<CompactRequest>) {
    while let Ok(reply) = rx.recv() {
        let lsn_before = core.lock_writer().lsn;
        let r = compaction::run(&core);
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
                tracing::error!(error = %e, dir = %core.dir.display(), "compaction failed");
            }
        }
        if let Some(reply) = reply {
            let _ = reply.send(r);
        }
    }
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
        self.reader.borrow_mut().get(self.core(), &key)
    }

    fn remove(&self, key: String) -> Result<()> {
        self.core().write(Kind::Tombstone, key, "", 0)
    }

    fn set_expiring(&self, key: String, value: String, expires_at: u64) -> Result<()> {
        self.core().write(Kind::Put, key, &value, expires_at)
    }

    fn get_entry(&self, _key: &str) -> Result<Option<Entry>> {
        Err(not_yet("get_entry"))
    }

    fn update<R>(&self, _key: String, _f: impl FnOnce(Option<Entry>) -> (Update, R)) -> Result<R> {
        Err(not_yet("update"))
    }

    fn scan(&self, _after: Option<&str>, _limit: usize) -> Result<Vec<String>> {
        Err(not_yet("scan"))
    }

    fn len(&self) -> u64 {
        self.core().index.len() as u64
    }

    fn clear(&self) -> Result<()> {
        Err(not_yet("clear"))
    }

    /// Forces everything written so far to stable storage, whatever the
    /// sync mode.
    fn flush(&self) -> Result<()> {
        self.core().sync_all()
    }

    fn stats(&self) -> EngineStats {
        let s = self.sizes();
        EngineStats {
            keys: s.keys as u64,
            live_bytes: s.live_bytes,
            disk_bytes: s.disk_bytes,
            ..EngineStats::default()
        }
    }
}

// TODO(engine helper): replaced by real implementations before issue 8 lands.
fn not_yet(what: &str) -> KvsError {
    KvsError::InvalidInput(format!("{what} is not implemented by this engine yet"))
}
