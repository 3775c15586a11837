//! Which engines the server can serve, and the record of the engine in
//! the data dir.

use std::fmt;
use std::fs;
use std::io::{self, Write};
use std::path::Path;
use std::str::FromStr;

use crate::{KvsError, Result};

/// The engines `kvs-server --engine` accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EngineKind {
    /// [`KvStore`], the persistent log engine.
    Kvs,
    /// [`MemoryEngine`]: nothing on disk but the engine record.
    Memory,
}

impl EngineKind {
    /// The name used on the command line and in the engine record.
    pub fn name(self) -> &'static str {
        match self {
            EngineKind::Kvs => "kvs",
            EngineKind::Memory => "memory",
        }
    }
}

impl fmt::Display for EngineKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for EngineKind {
    type Err = KvsError;

    fn from_str(s: &str) -> Result<EngineKind> {
        match s {
            "kvs" => Ok(EngineKind::Kvs),
            "memory" => Ok(EngineKind::Memory),
            other => Err(KvsError::InvalidInput(format!(
                "unknown engine `{other}` (expected kvs or memory)"
            ))),
        }
    }
}

/// The file in the data directory naming the engine that owns it.
pub const ENGINE_RECORD: &str = "engine";

/// Checks `dir` against `kind` and records `kind` there when nothing is
/// recorded yet.
///
/// A directory recorded for another engine is
/// [`KvsError::EngineMismatch`]: serving it with the wrong engine would
/// ignore (memory) or misread (kvs) what is there.
pub fn check_and_record_engine(dir: &Path, kind: EngineKind) -> Result<()> {
    let path = dir.join(ENGINE_RECORD);
    match fs::read_to_string(&path) {
        Ok(recorded) => {
            let recorded = recorded.trim();
            if recorded == kind.name() {
                Ok(())
            } else {
                Err(KvsError::EngineMismatch {
                    dir: dir.to_owned(),
                    recorded: recorded.to_owned(),
                    requested: kind.name().to_owned(),
                })
            }
        }
        Err(e) if e.kind() == io::ErrorKind::NotFound => write_record(dir, kind),
        Err(e) => Err(with_context(e, &format!("cannot read {}", path.display()))),
    }
}

/// Writes the record through a temporary file and a rename so a crash
/// leaves either no record or a whole one.
fn write_record(dir: &Path, kind: EngineKind) -> Result<()> {
    let tmp = dir.join(format!("{ENGINE_RECORD}.tmp"));
    let context = |e| with_context(e, &format!("cannot write {}", tmp.display()));
    let mut file = fs::File::create(&tmp).map_err(context)?;
    writeln!(file, "{}", kind.name()).map_err(context)?;
    file.sync_all().map_err(context)?;
    fs::rename(&tmp, dir.join(ENGINE_RECORD)).map_err(context)?;
    // NOTE: fsync the directory so the rename itself survives a crash.
    fs::File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| with_context(e, &format!("cannot sync {}", dir.display())))
}

/// An I/O error whose message says what was being done.
pub(crate) fn with_context(e: io::Error, what: &str) -> KvsError {
    KvsError::Io(io::Error::new(e.kind(), format!("{what}: {e}")))
}
