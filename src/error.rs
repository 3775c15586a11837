//! The one error type of the crate.

use std::io;
use std::path::PathBuf;

/// Every error kvs returns.
///
/// Expected conditions (a missing key, a locked directory) are their own
/// variants so callers can match on them instead of parsing strings.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum KvsError {
    /// An I/O error from the file system or the network.
    #[error("I/O error: {0}")]
    Io(#[from] io::Error),

    /// `remove` (or a client request) named a key that is not in the store.
    #[error("Key not found")]
    KeyNotFound,

    /// A log segment failed its checksum or is malformed somewhere other
    /// than the tail of the newest segment.
    #[error("corrupt data in {}: offset {offset}: {reason}", path.display())]
    Corrupt {
        /// The damaged file.
        path: PathBuf,
        /// Byte offset of the damaged record.
        offset: u64,
        /// What was wrong.
        reason: String,
    },

    /// A segment was written by a format version this build cannot read.
    #[error("unsupported format version {version} in {}", path.display())]
    UnsupportedVersion {
        /// The file.
        path: PathBuf,
        /// The version found in its header.
        version: u16,
    },

    /// Another process (or another `open` in this one) holds the data
    /// directory.
    #[error("data directory {} is locked by another kvs process", dir.display())]
    Locked {
        /// The directory.
        dir: PathBuf,
    },

    /// The data directory was created by a different engine.
    #[error("data directory {} holds engine `{recorded}`, but `{requested}` was requested", dir.display())]
    EngineMismatch {
        /// The directory.
        dir: PathBuf,
        /// Engine recorded in the directory.
        recorded: String,
        /// Engine asked for.
        requested: String,
    },

    /// A caller passed an argument that cannot be used.
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// A job run through the async bridge panicked.
    #[error("task panicked: {0}")]
    TaskPanicked(String),

    /// A peer broke the wire protocol (bad frame, bad payload, wrong version).
    #[error("protocol error: {0}")]
    Protocol(String),

    /// The server answered a request with an error.
    #[error("server error: {0}")]
    Server(String),

    /// The server refused the request or connection because of a limit.
    #[error("limit exceeded: {0}")]
    Limit(String),

    /// The store, pool or connection is closed or shutting down.
    #[error("closed: {0}")]
    Closed(String),

    /// A write would take the memory engine over its bound and the
    /// eviction policy is `noeviction` (nothing was written).
    #[error("out of memory: {0}")]
    OutOfMemory(String),

    /// The store serves reads only for now (a full disk, a damaged sealed
    /// segment); the message names the directory or file and the reason.
    #[error("read-only: {0}")]
    ReadOnly(String),

    /// The connection has not authenticated, or gave a wrong password.
    #[error("authentication: {0}")]
    Auth(String),
}

/// The crate's result type.
pub type Result<T> = std::result::Result<T, KvsError>;
