//! Storage engines: the [`KvsEngine`] trait and its implementations.

pub mod kvs;
pub mod memory;

use crate::Result;

/// A key-value storage engine shared by many threads.
///
/// Clones are cheap handles onto the same store; each method takes `&self`
/// so a clone can be moved to every worker thread.
pub trait KvsEngine: Clone + Send + 'static {
    /// Sets `key` to `value`, replacing any previous value.
    fn set(&self, key: String, value: String) -> Result<()>;

    /// Returns the value of `key`, or `None` when it is missing.
    fn get(&self, key: String) -> Result<Option<String>>;

    /// Removes `key`; [`KvsError::KeyNotFound`](crate::KvsError::KeyNotFound)
    /// when it is missing.
    fn remove(&self, key: String) -> Result<()>;
}
