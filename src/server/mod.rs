//! The network server.
//!
//! [`run`] serves an engine on a bound listener until a
//! [`CancellationToken`] is cancelled, then shuts down gracefully: it stops
//! accepting, lets every connection finish the requests it is executing
//! and send their responses, waits for the connections to close, flushes
//! the engine to stable storage and releases the pool. Tests and
//! benchmarks call it in-process on `127.0.0.1:0`; `kvs-server` goes
//! through [`serve`], which also opens the engine and binds the address.

mod config;
mod connection;
mod engine;
mod inbuf;
mod job;
mod launch;
mod native;
mod pipeline;
mod reject;
mod resp;
mod stats;

use std::sync::Arc;
use std::time::Duration;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tracing::{error, info, warn};

pub(crate) use config::constant_time_eq;
pub use config::{MAX_FRAME_LEN, MAX_TIMEOUT, MIN_FRAME_LEN, Password, ServerConfig};
pub use engine::{ENGINE_RECORD, EngineKind, check_and_record_engine};
pub use launch::{Settings, serve};
pub use stats::{Counter, ServerStats, StatsSnapshot, rss_bytes};

use crate::command::ServerContext;
use crate::thread_pool::{Batcher, SharedQueueThreadPool};
use crate::{KvsEngine, Result};
use connection::Shared;
use reject::reject;

/// First and longest pause after a failed `accept` (EMFILE and the like):
/// the loop backs off instead of spinning on an error that persists.
const ACCEPT_BACKOFF: (Duration, Duration) = (Duration::from_millis(5), Duration::from_secs(1));

/// Requests per pool job when the connections of one I/O turn send
/// theirs together: this many queued go to the pool at once, so that at
/// high pipeline depths the pool works while the I/O thread still reads
/// the turn's other connections.
const JOB_REQUESTS: usize = 32;

/// Serves `engine` on `listener` until `token` is cancelled, then shuts
/// down gracefully (see the module docs) and returns.
///
/// Every engine call runs on `pool`. The pool is dropped, which joins its
/// workers, before this returns, unless the caller kept another `Arc` to
/// it. `Err` only for an invalid `config` or a failed final flush.
pub async fn run<E: KvsEngine>(
    listener: TcpListener,
    engine: E,
    pool: Arc<SharedQueueThreadPool>,
    config: ServerConfig,
    token: CancellationToken,
) -> Result<()> {
    run_with_stats(listener, engine, pool, config, token, Arc::default()).await
}

/// What RESP commands see of the server: its password, `CONFIG GET`
/// table, `INFO` facts and counters.
fn command_context(
    config: &ServerConfig,
    listener: &TcpListener,
    stats: &Arc<ServerStats>,
) -> ServerContext {
    let counters = Arc::clone(stats);
    let mut ctx = ServerContext::new(Box::new(move || counters.snapshot()));
    ctx.requirepass = config.password.as_ref().map(|p| p.expose().to_owned());
    ctx.info = config.info.clone();
    ctx.info.tcp_port = listener.local_addr().map_or(0, |a| a.port());
    ctx.set_config("maxclients", config.max_connections.to_string());
    ctx.set_config("proto-max-bulk-len", config.max_frame_len.to_string());
    ctx.set_config("timeout", config.idle_timeout.as_secs().to_string());
    ctx.set_config(
        "requirepass",
        if config.password.is_some() {
            "(set)"
        } else {
            ""
        },
    );
    for (name, value) in &config.config_get {
        ctx.set_config(name, value.clone());
    }
    ctx
}

/// [`run`], counting into `stats` (which the caller may read while the
/// server runs).
pub async fn run_with_stats<E: KvsEngine>(
    listener: TcpListener,
    engine: E,
    pool: Arc<SharedQueueThreadPool>,
    config: ServerConfig,
    token: CancellationToken,
    stats: Arc<ServerStats>,
) -> Result<()> {
    config.validate()?;
    let connections = Arc::new(Semaphore::new(config.max_connections));
    let rejecting = Arc::new(Semaphore::new(config.max_rejecting));
    let commands = Arc::new(command_context(&config, &listener, &stats));
    let shared = Arc::new(Shared {
        batcher: Arc::new(Batcher::new(pool, JOB_REQUESTS)),
        input_budget: Arc::new(Semaphore::new(config.input_budget)),
        replies: Arc::new(job::ReplyBudget::new(config.reply_budget)),
        config,
        stats,
        commands,
    });
    let tracker = TaskTracker::new();
    let mut backoff = ACCEPT_BACKOFF.0;
    let mut next_id: u64 = 0;

    loop {
        let accepted = tokio::select! {
            () = token.cancelled() => break,
            accepted = listener.accept() => accepted,
        };
        match accepted {
            Ok((stream, peer)) => {
                backoff = ACCEPT_BACKOFF.0;
                next_id += 1;
                if let Ok(permit) = connections.clone().try_acquire_owned() {
                    let shared = shared.clone();
                    let (engine, token) = (engine.clone(), token.clone());
                    let conn =
                        connection::serve(stream, peer, shared, engine, token, permit, next_id);
                    tracker.spawn(conn);
                } else {
                    shared.stats.connection_refused();
                    // The refusal itself is bounded: past `max_rejecting`
                    // refusals in progress, close at once.
                    if let Ok(permit) = rejecting.clone().try_acquire_owned() {
                        let max_frame_len = shared.config.max_frame_len;
                        tracker.spawn(reject(stream, peer, max_frame_len, permit));
                    }
                }
            }
            Err(e) => {
                warn!("accept failed: {e}; retrying in {backoff:?}");
                tokio::select! {
                    () = token.cancelled() => break,
                    () = tokio::time::sleep(backoff) => {}
                }
                backoff = (backoff * 2).min(ACCEPT_BACKOFF.1);
            }
        }
    }

    drop(listener);
    info!(
        connections = tracker.len(),
        "shutting down: waiting for connections to finish"
    );
    tracker.close();
    tracker.wait().await;
    let (jobs, batches) = shared.batcher.counts();
    info!(jobs, batches, "pool jobs sent for the connections' batches");

    // Every response has been sent; make what they acknowledged durable.
    let flushed = shared.batcher.pool().run(move || engine.flush()).await;
    // Dropping the last handle joins the pool's workers: a blocking wait,
    // so not on a runtime worker.
    let _ = tokio::task::spawn_blocking(move || drop(shared)).await;
    match flushed.and_then(|r| r) {
        Ok(()) => {
            info!("shutdown complete");
            Ok(())
        }
        Err(e) => {
            error!("final flush failed: {e}");
            Err(e)
        }
    }
}
