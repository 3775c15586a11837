//! `KvStore`: the log-structured engine. See `docs/design.md`.

use std::path::PathBuf;
use std::str::FromStr;
use std::time::Duration;

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
    /// Run compaction on a background thread when the threshold is passed.
    /// When false, compaction only runs through [`KvStore::compact`].
    pub auto_compact: bool,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            sync: SyncMode::EverySec,
            segment_max_bytes: 64 << 20,
            compaction_min_stale_bytes: 64 << 20,
            compaction_stale_ratio: 1.0,
            auto_compact: true,
        }
    }
}

/// The log-structured store. Cheap to clone; see the module docs.
#[derive(Clone)]
pub struct KvStore {}

impl KvStore {
    /// Opens (or creates) the store in directory `path` with default options.
    pub fn open(path: impl Into<PathBuf>) -> Result<KvStore> {
        KvStore::open_with(path, Options::default())
    }

    /// Opens (or creates) the store in directory `path`.
    pub fn open_with(path: impl Into<PathBuf>, options: Options) -> Result<KvStore> {
        let _ = (path.into(), options);
        todo!()
    }

    /// Sets `key` to `value`, expiring after `ttl`.
    pub fn set_with_ttl(&self, key: String, value: String, ttl: Duration) -> Result<()> {
        let _ = (key, value, ttl);
        todo!()
    }

    /// Forces everything written so far to stable storage.
    pub fn flush(&self) -> Result<()> {
        todo!()
    }

    /// Runs a compaction now and waits for it to finish.
    pub fn compact(&self) -> Result<()> {
        todo!()
    }
}

impl KvsEngine for KvStore {
    fn set(&self, key: String, value: String) -> Result<()> {
        let _ = (key, value);
        todo!()
    }

    fn get(&self, key: String) -> Result<Option<String>> {
        let _ = key;
        todo!()
    }

    fn remove(&self, key: String) -> Result<()> {
        let _ = key;
        todo!()
    }
}
