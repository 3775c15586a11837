//! Tuning and reporting types of `KvStore`.

use std::str::FromStr;

use crate::{KvsError, Result};

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
    /// Before a compaction does anything.
    Start,
    /// The compaction panics at its start.
    Panic,
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
