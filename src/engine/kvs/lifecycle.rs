//! Opening (lock, recovery, threads) and closing (join, sync, trim) a
//! `KvStore`.

use std::cell::RefCell;
use std::fs::OpenOptions;
use std::fs::TryLockError;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::mpsc::{self, Sender};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;

use super::background::{compactor, syncer};
use super::hint;
use super::reader::Reader;
use super::writer::{self, GroupCommit, Writer};
use super::{Core, KvStore, Options, SyncMode, recovery, segment};
use crate::{KvsError, Result};

/// Tries at taking the directory lock, 10 ms apart, before giving up.
const LOCK_RETRIES: u32 = 20;

/// Owned by every clone through an `Arc`: when the last clone goes, it stops
/// and joins the background threads, then syncs, then the lock is released.
pub(super) struct Guard {
    pub(super) core: Arc<Core>,
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
        let mut w = self.core.lock_writer();
        if w.read_only.is_some() {
            return;
        }
        if let Err(e) = w.trim() {
            tracing::warn!(error = %e, dir = %self.core.dir.display(), "cannot trim the active segment");
            return;
        }
        // The newest segment's hint, so the next open need not scan and
        // sort it (the largest part of an open with hints otherwise). Kept
        // as it is when nothing was appended since an open that read it.
        // Best effort: the next open checks it against the file anyway.
        let hint_still_valid = w.lsn == 0 && self.core.newest_hinted;
        if !w.sealed && !hint_still_valid {
            let crc = w.crc.clone().finalize();
            match hint::write_open(&self.core.dir, w.active, w.pos, crc) {
                Ok(true) => {}
                Ok(false) => tracing::warn!(
                    segment = w.active,
                    "the newest segment does not read back as written; no hint for it"
                ),
                Err(e) => {
                    tracing::warn!(error = %e, segment = w.active, "cannot write the hint of the newest segment")
                }
            }
        }
    }
}

impl KvStore {
    /// Opens (or creates) the store in directory `path` with default options.
    pub fn open(path: impl Into<PathBuf>) -> Result<KvStore> {
        KvStore::open_with(path, Options::default())
    }

    /// Opens (or creates) the store in directory `path`.
    ///
    /// The store assumes it is the only writer of the directory's files
    /// while open (the `LOCK` file keeps other kvs processes out): segments
    /// are memory-mapped, and another process truncating one would make
    /// reads of it fault (SIGBUS) instead of failing with an error, and one
    /// rewriting records would change values after their checksum was
    /// checked. Damage done while the store is closed is detected on open:
    /// records carry checksums and sealed segments carry a seal.
    ///
    /// Errors name the file and the operation that failed. A full disk does
    /// not stop the open: reads are served and writes fail with
    /// [`KvsError::ReadOnly`] until space is freed.
    pub fn open_with(path: impl Into<PathBuf>, opts: Options) -> Result<KvStore> {
        let dir = path.into();
        std::fs::create_dir_all(&dir).map_err(segment::io_at("create directory", &dir))?;
        let lock_path = dir.join("LOCK");
        let lock = match OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
        {
            Ok(lock) => lock,
            // A read-only directory: an flock on a read-only descriptor
            // works, and the store opens for reads only.
            Err(e) if recovery::not_writable(&e) && lock_path.exists() => {
                std::fs::File::open(&lock_path).map_err(segment::io_at("open", &lock_path))?
            }
            Err(e) => return Err(segment::io_at("open", &lock_path)(e).into()),
        };
        // NOTE: a lock can be held for a moment by nobody who uses the
        // store: a thread of this process forking a child (any
        // `Command::spawn`) while the previous handle's descriptor was open
        // shares the lock until the child execs. Retry briefly before
        // calling the directory locked; another live store holds it for
        // far longer.
        let mut tries = 0;
        loop {
            match lock.try_lock() {
                Ok(()) => break,
                Err(TryLockError::WouldBlock) if tries < LOCK_RETRIES => {
                    tries += 1;
                    std::thread::sleep(std::time::Duration::from_millis(10));
                }
                Err(TryLockError::WouldBlock) => return Err(KvsError::Locked { dir }),
                Err(TryLockError::Error(e)) => {
                    return Err(segment::io_at("lock", &lock_path)(e).into());
                }
            }
        }
        let rec = recovery::recover(&dir, opts.segment_max_bytes)?;
        let index = rec.index;
        tracing::debug!(dir = %dir.display(), keys = index.len(), active = rec.active, "store opened");
        let map = if rec.sealed || rec.read_only.is_some() {
            None
        } else {
            writer::map_active(&rec.file, rec.pos, &segment::path(&dir, rec.active))?
        };
        let writer = Writer {
            active: rec.active,
            map,
            segment_size: opts.segment_max_bytes,
            file: Arc::new(rec.file),
            pos: rec.pos,
            lsn: 0,
            disk_bytes: rec.disk_bytes,
            live_bytes: rec.live_bytes,
            index_bytes: rec.index_bytes,
            crc: crc32fast::Hasher::new_with_initial(rec.crc),
            sealed: rec.sealed,
            read_only: rec.read_only,
            manifest: rec.manifest,
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
            newest_hinted: rec.newest_hinted,
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
}
