//! The background threads: compaction (and the retirement of cleared
//! segments, and the expiry sweep) on one thread, the every-second sync on
//! another.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::sync::mpsc::{Receiver, RecvTimeoutError, Sender};
use std::time::Duration;

use super::Core;
use super::compaction;
use super::hint;
use super::index::{self, now_ms};
use super::segment::SegmentId;
use super::writer::Writer;
use crate::{KvsError, Result};

/// Who waits for a background job's result, if anyone.
pub(super) type Reply = Option<Sender<Result<()>>>;

/// Work for the compaction thread, which runs one job at a time so that
/// compaction and the retirement of cleared segments never interleave.
pub(super) enum Job {
    /// Compact every segment older than the active one.
    Compact(Reply),
    /// Delete every segment below this id, once everything written is
    /// durable: they precede a durable `Clear` record (see `clear`).
    Retire(SegmentId, Reply),
    /// Write the hint files missing for sealed segments.
    Hints(Reply),
}

/// Index entries the expiry sweep looks at per tick of the compaction
/// thread (once a second).
const SWEEP_BATCH: usize = 10_000;

/// Pause after a failed automatic compaction.
const COMPACTION_RETRY_MS: u64 = 30_000;

impl Core {
    pub(super) fn request(&self, job: Job) -> bool {
        let tx = self.compact_tx.lock().unwrap_or_else(|p| p.into_inner());
        match tx.as_ref() {
            Some(tx) => tx.send(job).is_ok(),
            None => false,
        }
    }

    pub(super) fn maybe_compact(&self, w: &Writer) {
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

    /// Drops expired keys from the index, looking at up to [`SWEEP_BATCH`]
    /// entries after `cursor`; returns where the next sweep starts. No
    /// tombstone is needed: the record carries its expiry, so recovery
    /// and compaction drop it too.
    fn sweep_expired(&self, cursor: Option<String>) -> Option<String> {
        let now = now_ms();
        let mut found = Vec::new();
        let mut e = match &cursor {
            Some(k) => self.index.after(k),
            None => self.index.front(),
        };
        let mut last = None;
        for _ in 0..SWEEP_BATCH {
            let Some(entry) = e else {
                last = None;
                break;
            };
            let loc = entry.key().load();
            if loc.expired_at(now) {
                found.push((entry.key().clone(), loc));
            }
            last = Some(entry.key().key().to_owned());
            e = entry.next();
        }
        if !found.is_empty() {
            let mut w = self.lock_writer();
            for (node, loc) in found {
                // The same node still at the same place: neither rewritten
                // nor removed and set again since the walk saw it.
                if self.index.node(node.key()).is_some_and(|n| n.same(&node))
                    && node.load() == loc
                    && self.index.remove(node.key())
                {
                    w.live_bytes = w.live_bytes.saturating_sub(loc.len as u64);
                    w.index_bytes = w.index_bytes.saturating_sub(index::entry_bytes(node.key()));
                    self.expired.fetch_add(1, Ordering::Relaxed);
                }
            }
            self.maybe_compact(&w);
        }
        last
    }
}

/// The background thread: runs compactions and clear retirements in
/// request order, and sweeps expired keys once a second.
pub(super) fn compactor(core: Arc<Core>, rx: Receiver<Job>) {
    // First the hash half of the index, which recovery left empty.
    let t = std::time::Instant::now();
    core.index.fill_hashed(
        |f| {
            let _w = core.lock_writer();
            f()
        },
        || core.stopping.load(Ordering::Relaxed),
    );
    tracing::debug!(keys = core.index.len(), elapsed = ?t.elapsed(), "hash index filled");
    let mut cursor = None;
    // Segments a hint was attempted for (written, or the scan found them
    // unusable): not scanned again every second.
    let mut tried = std::collections::HashSet::new();
    loop {
        let job = match rx.recv_timeout(Duration::from_secs(1)) {
            Ok(job) => job,
            Err(RecvTimeoutError::Timeout) => {
                let c = cursor.take();
                cursor = catch("expiry sweep", &core, || Ok(core.sweep_expired(c))).unwrap_or(None);
                if let Err(e) = catch("writing hints", &core, || write_hints(&core, &mut tried)) {
                    tracing::warn!(error = %e, dir = %core.dir.display(), "writing hint files failed");
                }
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        match job {
            Job::Compact(reply) => {
                let r = catch("compaction", &core, || compact_once(&core));
                if r.is_err() {
                    // Also after a panic, so the next threshold crossing
                    // asks again.
                    core.compaction_pending.store(false, Ordering::Release);
                }
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Job::Hints(reply) => {
                tried.clear();
                let r = catch("writing hints", &core, || write_hints(&core, &mut tried));
                if let Some(reply) = reply {
                    let _ = reply.send(r);
                }
            }
            Job::Retire(below, reply) => {
                let r = catch("deleting cleared segments", &core, || {
                    compaction::retire_below(&core, below)
                });
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

/// Runs `f`, turning a panic into an error (logged and counted in
/// `compaction_failures`), so one bad job does not take the thread and
/// every later compaction with it.
fn catch<T>(what: &str, core: &Core, f: impl FnOnce() -> Result<T>) -> Result<T> {
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)) {
        Ok(r) => r,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| s.to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "unknown panic".to_string());
            core.compaction_failures.fetch_add(1, Ordering::Relaxed);
            core.compaction_failed_at.store(now_ms(), Ordering::Relaxed);
            tracing::error!(dir = %core.dir.display(), panic = %msg, "{what} panicked; the thread goes on");
            Err(KvsError::TaskPanicked(format!("{what}: {msg}")))
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

pub(super) fn syncer(core: Arc<Core>, stop: Receiver<()>) {
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

/// Writes the hint of every sealed segment that has none (see
/// `hint::write_missing`); off the request path, on the compaction thread,
/// so no compaction deletes a segment meanwhile.
fn write_hints(core: &Core, tried: &mut std::collections::HashSet<SegmentId>) -> Result<()> {
    let below = core.lock_writer().active;
    hint::write_missing(&core.dir, below, tried)?;
    Ok(())
}
