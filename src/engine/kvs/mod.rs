//! `KvStore`: the log-structured engine. See `docs/design.md` for the disk
//! format, recovery and compaction.
//!
//! One file per job: `options` (tuning), `write` (the append path under the
//! writer lock), `lifecycle` (open and close), `api` (the public methods),
//! `background` (compaction, clear retirement, expiry sweep, every-second
//! sync); below them `record`, `segment`, `reader`, `writer`, `index`,
//! `manifest`, `recovery` and `compaction`.

mod api;
mod background;
mod compaction;
mod hint;
mod index;
mod lifecycle;
mod manifest;
mod options;
mod reader;
pub mod record;
mod recovery;
mod scan;
mod segment;
mod write;
mod writer;

use std::cell::RefCell;
use std::fs::File;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64};
use std::sync::mpsc::Sender;
use std::sync::{Arc, Mutex, MutexGuard};

use background::Job;
use index::Index;
use lifecycle::Guard;
use reader::Reader;
use writer::{GroupCommit, Writer};

pub use options::{FailPoint, Options, Stats, SyncMode};
pub use segment::SegmentId;

use crate::Result;

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
    /// [`background::COMPACTION_RETRY_MS`], so a persistent failure (a corrupt input,
    /// a full disk) does not start one per write, each sealing a segment.
    compaction_failed_at: AtomicU64,
    /// Requests to the compaction thread; `None` once closing.
    compact_tx: Mutex<Option<Sender<Job>>>,
    /// Compactions that failed since open.
    compaction_failures: AtomicU64,
    /// Expired keys dropped from the index since open.
    expired: AtomicU64,
    /// The open read the newest segment from the hint written at the last
    /// close (still valid while nothing is appended).
    newest_hinted: bool,
    /// Holds the directory lock for as long as the store is open.
    _lock: File,
}

impl Core {
    pub(crate) fn lock_writer(&self) -> MutexGuard<'_, Writer> {
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
    pub(crate) fn sync_all(&self) -> Result<()> {
        let lsn = self.lock_writer().lsn;
        self.wait_durable(lsn)
    }
}

/// The log-structured store.
///
/// Clones share the index and the writer; each clone has its own read
/// handles, so give each thread its own clone and reuse it (a clone opens
/// segment files on its first reads).
pub struct KvStore {
    // NOTE: fields drop in declaration order. The reader's maps must be
    // gone before the last `Guard` drops, which trims the active segment
    // (a map past the new end would fault) and releases the lock.
    reader: RefCell<Reader>,
    guard: Arc<Guard>,
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
    fn core(&self) -> &Core {
        &self.guard.core
    }
}
