//! What a protocol hands the pipeline to run on the pool, and what every
//! such job can reach while it runs.

use std::sync::Arc;

use super::{ServerConfig, ServerStats};
use crate::KvsEngine;
use crate::command::{Scope, ServerContext};

/// One decoded request that needs the engine. Each protocol has its own
/// request type; the pipeline, the pool and the ordering rules are shared.
pub(crate) trait Job: Send + 'static {
    /// What the request answers, before encoding.
    type Output: Send + 'static;

    /// Calls `f(key, writes)` for every key the request touches, so the
    /// pipeline can keep read-your-writes order within a connection.
    fn for_each_key(&self, f: &mut dyn FnMut(&[u8], bool));

    /// Whether the request touches only its keys or the whole keyspace
    /// (`FLUSHDB`, `SCAN`), for the same ordering.
    fn scope(&self) -> Scope {
        Scope::Keys
    }

    /// Runs the request on a pool thread.
    fn run<E: KvsEngine>(self, engine: &E, ctx: &JobContext) -> Self::Output;

    /// The outputs of `n` requests whose job failed (panicked) on the pool.
    fn failed(n: usize) -> Vec<Self::Output>;
}

/// Shared, read-only state every job can use.
pub(crate) struct JobContext {
    pub(crate) config: ServerConfig,
    pub(crate) stats: Arc<ServerStats>,
    /// The connection the job belongs to, for counters.
    pub(crate) connection: u64,
    /// What RESP commands read: password, `CONFIG GET` table, cursors.
    pub(crate) commands: Arc<ServerContext>,
}
