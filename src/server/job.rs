//! What a protocol hands the pipeline to run on the pool, and what every
//! such job can reach while it runs.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

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

    /// Called on the pool for every request of a job before any of them
    /// runs: a read may ask the engine to prefetch its key, so that the
    /// job's reads overlap their memory latency.
    fn prefetch<E: KvsEngine>(&self, engine: &E) {
        let _ = engine;
    }

    /// Runs the request on a pool thread. `bytes` belongs to the job's
    /// [`Outputs`]: an output may be encoded into it on the pool (a value
    /// copied there once, straight from the engine) and name its place.
    fn run<E: KvsEngine>(self, engine: &E, ctx: &JobContext, bytes: &mut Vec<u8>) -> Self::Output;

    /// The outputs of `n` requests whose job failed (panicked) on the pool.
    fn failed(n: usize) -> Vec<Self::Output>;

    /// About how many bytes `output` takes (its encoded size).
    fn output_len(output: &Self::Output) -> usize;

    /// The answer instead of a reply of `len` bytes that the server's
    /// reply budget cannot hold now.
    fn refused(len: usize) -> Self::Output;
}

/// Replies at most this large are not charged to the reply budget (their
/// memory is bounded by requests in flight times this).
const FREE_REPLY_BYTES: usize = 64 * 1024;

/// Bytes of large replies built and not yet written, across connections:
/// a client that pipelines GETs of a large value and never reads cannot
/// make the server hold more than this.
pub(crate) struct ReplyBudget {
    used: AtomicUsize,
    max: usize,
}

impl ReplyBudget {
    pub(crate) fn new(max: usize) -> ReplyBudget {
        ReplyBudget {
            used: AtomicUsize::new(0),
            max,
        }
    }

    /// Charges `output` to the budget when it is large; a large output
    /// the budget cannot hold is replaced by [`Job::refused`] (`true`).
    pub(crate) fn charge<J: Job>(
        self: &Arc<Self>,
        output: J::Output,
    ) -> (Charged<J::Output>, bool) {
        let bytes = J::output_len(&output);
        if bytes <= FREE_REPLY_BYTES {
            return (
                Charged {
                    output,
                    charge: None,
                },
                false,
            );
        }
        let mut used = self.used.load(Ordering::Relaxed);
        loop {
            if used + bytes > self.max {
                let refused = Charged {
                    output: J::refused(bytes),
                    charge: None,
                };
                return (refused, true);
            }
            match self.used.compare_exchange_weak(
                used,
                used + bytes,
                Ordering::AcqRel,
                Ordering::Relaxed,
            ) {
                Ok(_) => break,
                Err(now) => used = now,
            }
        }
        (
            Charged {
                output,
                charge: Some(Charge {
                    budget: Arc::clone(self),
                    bytes,
                }),
            },
            false,
        )
    }
}

/// The outputs of one pool job, in request order, and the bytes some of
/// them were encoded into on the pool.
pub(crate) struct Outputs<O> {
    pub(crate) list: Vec<Charged<O>>,
    pub(crate) bytes: Vec<u8>,
}

impl<O> Default for Outputs<O> {
    fn default() -> Self {
        Outputs {
            list: Vec::new(),
            bytes: Vec::new(),
        }
    }
}

/// A reply its job encoded into the job's bytes: `bytes[start..end]` of
/// its [`Outputs`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Encoded {
    start: usize,
    end: usize,
}

impl Encoded {
    /// Its length in bytes.
    pub(crate) fn len(&self) -> usize {
        self.end - self.start
    }

    /// Its bytes, in the [`Outputs::bytes`] of its job.
    pub(crate) fn of<'a>(&self, bytes: &'a [u8]) -> &'a [u8] {
        &bytes[self.start..self.end]
    }
}

/// What a read answered straight from the engine's bytes found.
pub(crate) enum Lookup {
    Miss,
    /// The reply, encoded.
    Hit(Encoded),
    /// A hit whose reply `encode` refused as too large (nothing written).
    TooLarge,
}

/// Reads `key` through [`KvsEngine::get_with`] and, on a hit, encodes the
/// reply into `bytes` with `encode` (the value copied once, straight from
/// the engine; `encode` returns `false`, having written nothing, for a
/// reply too large); counts the lookup. Only this reply may follow the
/// bytes' current end, whatever the engine does (calls back twice, or
/// fails after calling back).
pub(crate) fn encode_hit<E: KvsEngine>(
    engine: &E,
    key: &str,
    ctx: &JobContext,
    bytes: &mut Vec<u8>,
    mut encode: impl FnMut(&[u8], &mut Vec<u8>) -> bool,
) -> crate::Result<Lookup> {
    let start = bytes.len();
    let mut fits = true;
    let hit = engine
        .get_with(key, &mut |value| {
            bytes.truncate(start);
            fits = encode(value, bytes);
        })
        .inspect_err(|_| bytes.truncate(start))?;
    ctx.stats
        .counter(ctx.connection)
        .lookups(u64::from(hit), u64::from(!hit));
    Ok(match (hit, fits) {
        (false, _) => Lookup::Miss,
        (true, true) => Lookup::Hit(Encoded {
            start,
            end: bytes.len(),
        }),
        (true, false) => Lookup::TooLarge,
    })
}

/// Makes room in a job's bytes for a reply of `len` bytes: exactly that
/// much for a large one, whose charge to the [`ReplyBudget`] is its length
/// (amortized growth could otherwise double what it holds), amortized for
/// the small ones that go free.
pub(crate) fn reserve_reply(bytes: &mut Vec<u8>, len: usize) {
    if len > FREE_REPLY_BYTES {
        bytes.reserve_exact(len);
    } else {
        bytes.reserve(len);
    }
}

/// An output with the budget it holds until it has been written.
pub(crate) struct Charged<O> {
    pub(crate) output: O,
    pub(crate) charge: Option<Charge>,
}

impl<O> From<O> for Charged<O> {
    fn from(output: O) -> Charged<O> {
        Charged {
            output,
            charge: None,
        }
    }
}

/// Budget held by one large reply; returned when dropped (written, or
/// the connection gone).
pub(crate) struct Charge {
    budget: Arc<ReplyBudget>,
    bytes: usize,
}

impl Drop for Charge {
    fn drop(&mut self) {
        self.budget.used.fetch_sub(self.bytes, Ordering::AcqRel);
    }
}

/// Shared, read-only state every job can use.
pub(crate) struct JobContext {
    pub(crate) config: ServerConfig,
    pub(crate) stats: Arc<ServerStats>,
    /// The connection the job belongs to, for counters.
    pub(crate) connection: u64,
    /// What RESP commands read: password, `CONFIG GET` table, cursors.
    pub(crate) commands: Arc<ServerContext>,
    /// Large replies built and not yet written, server-wide.
    pub(crate) replies: Arc<ReplyBudget>,
}
