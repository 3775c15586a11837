//! One client connection: tells the protocol apart by the first byte, then
//! reads requests, runs them through the [`Pipeline`] and writes the
//! responses back in request order.
//!
//! A single task owns the socket and both buffers and drives everything
//! from one `select!`, so reading, executing and writing overlap without
//! locks: responses leave as soon as they are next in order, new requests
//! are read while earlier ones execute, and a client that pipelines is
//! never serialised behind one request at a time. The loop itself knows
//! nothing of either protocol: a [`Protocol`] decodes requests into jobs or
//! immediate answers and encodes the outputs.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tracing::debug;

use super::inbuf::{CHUNK, InBuf};
use super::job::{Charge, Charged, Job, JobContext, Outputs, ReplyBudget};
use super::native::Native;
use super::pipeline::Pipeline;
use super::resp::Resp;
use super::{ServerConfig, ServerStats};
use crate::command::ServerContext;
use crate::thread_pool::Batcher;
use crate::{KvsEngine, KvsError, Result};

/// What every connection task shares. The engine is not in here: engines
/// are `Send` but need not be `Sync`, so each connection owns its clones.
pub(crate) struct Shared {
    /// Engine calls go to the pool through it, batched per I/O turn.
    pub(crate) batcher: Arc<Batcher>,
    pub(crate) config: ServerConfig,
    pub(crate) stats: Arc<ServerStats>,
    /// Bytes of request input buffered across all connections.
    pub(crate) input_budget: Arc<Semaphore>,
    /// What RESP commands share.
    pub(crate) commands: Arc<ServerContext>,
    /// Large replies built and not yet written, across connections.
    pub(crate) replies: Arc<ReplyBudget>,
}

/// Past this many unsent response bytes the connection stops reading and
/// executing new requests until the client catches up.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// An empty write buffer that grew past this is replaced by a small one.
const KEEP_CAPACITY: usize = 64 * 1024;
/// After refusing a request it cannot resynchronise after, the server
/// reads and discards up to this much input, for at most [`LINGER`], so
/// the client reads the error instead of a connection reset.
const LINGER_BYTES: usize = 16 << 20;
pub(crate) const LINGER: Duration = Duration::from_secs(1);

/// A decoded request, as the connection loop sees it.
pub(crate) enum Decoded<J: Job> {
    /// Not a whole request yet.
    Incomplete,
    /// Run it on the pool.
    Run(J),
    /// Answered without the engine.
    Answer(J::Output),
    /// Answer, then read no more: the client quit, or the stream cannot be
    /// resynchronised. `drain`: unread input may follow, so read and
    /// discard it before closing.
    Last {
        output: J::Output,
        why: &'static str,
        drain: bool,
    },
}

/// A wire protocol, server side.
pub(crate) trait Protocol: Send + 'static {
    /// The requests that need the engine.
    type Job: Job;

    /// The next request in `buf`, consuming its bytes.
    fn decode(&mut self, buf: &mut BytesMut, ctx: &JobContext) -> Decoded<Self::Job>;

    /// Appends the encoding of `output` to `wbuf`; `bytes` are those its
    /// job encoded on the pool ([`Outputs::bytes`]).
    fn encode(
        &mut self,
        output: &<Self::Job as Job>::Output,
        bytes: &[u8],
        wbuf: &mut BytesMut,
        ctx: &JobContext,
    );

    /// Requests of this connection executing at once (fewer before it has
    /// authenticated).
    fn max_in_flight(&self, cfg: &ServerConfig) -> usize;

    /// The answer to a request refused for a limit before it was decoded.
    fn limit_error(&self, e: &KvsError) -> <Self::Job as Job>::Output;
}

/// Why a connection ended, and whether its unread input should be drained
/// before closing.
struct End {
    why: &'static str,
    drain: bool,
}

impl End {
    fn new(why: &'static str) -> End {
        End { why, drain: false }
    }
}

/// Serves one accepted connection until it closes; holds `_permit` (its
/// slot under `max_connections`) until then.
pub(crate) async fn serve<E: KvsEngine>(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    engine: E,
    token: CancellationToken,
    _permit: OwnedSemaphorePermit,
    id: u64,
) {
    debug!(%peer, id, "connection opened");
    shared.stats.connection_opened();
    // Responses are small and latency matters more than packet count; the
    // write path already batches whatever is ready into one write.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, "cannot set TCP_NODELAY: {e}");
    }
    let ctx = Arc::new(JobContext {
        config: shared.config.clone(),
        stats: Arc::clone(&shared.stats),
        connection: id,
        commands: Arc::clone(&shared.commands),
        replies: Arc::clone(&shared.replies),
    });
    // The first byte tells the protocol; wait for it as for any request.
    let mut first = [0u8; 1];
    let peeked = tokio::select! {
        peeked = stream.peek(&mut first) => peeked,
        () = token.cancelled() => Ok(0),
        () = tokio::time::sleep(shared.config.idle_timeout) => Ok(0),
    };
    if !matches!(peeked, Ok(1)) {
        debug!(%peer, "connection closed before its first request");
        shared.stats.connection_closed();
        return;
    }
    let result = if is_resp(first[0], shared.config.max_frame_len) {
        let resp = Resp::new(&shared.config, Arc::clone(&shared.commands));
        drive(&mut stream, peer, &shared, engine, &token, resp, ctx).await
    } else {
        let native = Native::new(&shared.config);
        drive(&mut stream, peer, &shared, engine, &token, native, ctx).await
    };
    match result {
        Ok(end) => {
            debug!(%peer, "connection closed: {}", end.why);
            if end.drain {
                linger(&mut stream).await;
            }
        }
        Err(e) => debug!(%peer, "connection dropped: {e}"),
    }
    shared.stats.connection_closed();
}

/// Whether a connection whose first byte is `first` speaks RESP: a
/// multibulk request starts with `*`, an inline command with a letter, or
/// with the blanks Redis skips before one (`telnet` users press Enter
/// first). A native frame starts with the high byte of its big-endian
/// length, at most `max_frame_len >> 24` (0x01 by default, 0x10 under
/// [`MAX_FRAME_LEN`](super::MAX_FRAME_LEN)), so a blank above that byte
/// cannot begin one.
pub(crate) fn is_resp(first: u8, max_frame_len: usize) -> bool {
    first == b'*'
        || first.is_ascii_alphabetic()
        || (first.is_ascii_whitespace() && usize::from(first) > max_frame_len >> 24)
}

/// Shuts the write side and reads and discards input (bounded in bytes
/// and time), so the close is not a reset that could destroy the last
/// response before the client reads it.
pub(crate) async fn linger(stream: &mut TcpStream) {
    let drain = async {
        stream.shutdown().await?;
        let mut sink = [0u8; 4096];
        let mut left = LINGER_BYTES;
        while left > 0 {
            let n = stream.read(&mut sink).await?;
            if n == 0 {
                break;
            }
            left = left.saturating_sub(n);
        }
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(LINGER, drain).await;
}

/// The connection loop. Returns why the connection ended; `Err` only for
/// socket errors.
async fn drive<E: KvsEngine, P: Protocol>(
    stream: &mut TcpStream,
    peer: SocketAddr,
    shared: &Shared,
    template: E,
    token: &CancellationToken,
    mut proto: P,
    ctx: Arc<JobContext>,
) -> Result<End> {
    let cfg = &shared.config;
    let counter = shared.stats.counter(ctx.connection);
    let (mut rd, mut wr) = stream.split();
    let mut inbuf = InBuf::new(Arc::clone(&shared.input_budget), cfg.input_budget);
    let mut wbuf = BytesMut::with_capacity(CHUNK);
    // Bytes ever written from `wbuf`, and the reply-budget charges of
    // large replies with the byte count that ends each (bytes ever queued
    // are `written_total + wbuf.len()`).
    let mut written_total = 0u64;
    let mut charges: VecDeque<(u64, Charge)> = VecDeque::new();
    let mut pipeline: Pipeline<E, P::Job> =
        Pipeline::new(template, Arc::clone(&shared.batcher), Arc::clone(&ctx));

    // `accepting`: new requests are still decoded and executed (false after
    // shutdown starts, the client quit or the stream is beyond repair).
    // `eof`: the client sent everything it will send.
    let mut accepting = true;
    let mut eof = false;
    let mut end = End::new("client closed");
    let now = Instant::now();
    let mut partial_since: Option<Instant> = None;
    let mut last_activity = now;
    let mut write_progress = now;
    let mut shutdown_by: Option<Instant> = None;
    let timer = tokio::time::sleep_until(now + cfg.idle_timeout);
    tokio::pin!(timer);
    // Made once: a fresh `cancelled()` per loop turn would register with,
    // and deregister from, the token's waiter list (a lock each) on every
    // request.
    let cancelled = token.cancelled();
    tokio::pin!(cancelled);

    loop {
        let mut decoded = false;
        while accepting
            && pipeline.len() < proto.max_in_flight(cfg)
            && wbuf.len() < WRITE_HIGH_WATER
            && !pipeline.is_blocked()
        {
            match proto.decode(inbuf.buf(), &ctx) {
                Decoded::Incomplete => break,
                Decoded::Run(job) => {
                    // Keys per request are bounded for both protocols: each
                    // decoded key costs far more than its wire bytes, and
                    // is tracked for ordering while it runs.
                    let mut keys = 0usize;
                    job.for_each_key(&mut |_, _| keys += 1);
                    if keys > cfg.max_batch_keys {
                        let e = KvsError::Limit(format!(
                            "too many keys in one command: {keys} (the maximum is {})",
                            cfg.max_batch_keys
                        ));
                        pipeline.push_ready(proto.limit_error(&e));
                    } else {
                        pipeline.submit(job);
                    }
                }
                Decoded::Answer(output) => pipeline.push_ready(output),
                Decoded::Last { output, why, drain } => {
                    pipeline.push_ready(output);
                    accepting = false;
                    end = End { why, drain };
                    if drain {
                        debug!(%peer, "last request: {why}");
                    }
                    inbuf.discard();
                }
            }
            counter.commands(1);
            decoded = true;
        }
        if decoded {
            // Once per turn, not per request: a pipelined read decodes many.
            partial_since = None;
            last_activity = Instant::now();
        }
        // A held request was accepted: it still runs once what it waits
        // for has finished, also after shutdown (or a protocol error)
        // stopped the loop above from asking.
        let _ = pipeline.is_blocked();
        pipeline.launch_batch();
        if (!accepting || eof) && pipeline.is_empty() && wbuf.is_empty() {
            return Ok(end);
        }

        let can_read = accepting
            && !eof
            && pipeline.len() < proto.max_in_flight(cfg)
            && wbuf.len() < WRITE_HIGH_WATER;
        if inbuf.is_empty() {
            partial_since = None;
            inbuf.shrink_if_empty();
        } else if can_read && partial_since.is_none() {
            partial_since = Some(Instant::now());
        }

        // The nearest applicable deadline, and what missing it means.
        let mut deadline: Option<(Instant, &'static str)> =
            shutdown_by.map(|d| (d, "shutdown grace period over"));
        let mut consider = |at: Instant, why: &'static str| {
            if deadline.is_none_or(|(d, _)| at < d) {
                deadline = Some((at, why));
            }
        };
        if !wbuf.is_empty() {
            consider(write_progress + cfg.frame_timeout, "client stopped reading");
        }
        if can_read {
            if let Some(since) = partial_since {
                consider(since + cfg.frame_timeout, "frame timeout");
            } else if pipeline.is_empty() && wbuf.is_empty() {
                consider(last_activity + cfg.idle_timeout, "idle timeout");
            }
        }
        if let Some((at, _)) = deadline
            && timer.deadline() != at
        {
            timer.as_mut().reset(at);
        }

        tokio::select! {
            biased;
            // Finished replies are taken only while the write buffer has
            // room; until then they wait, charged to the reply budget.
            Some(mut outputs) = pipeline.next_finished(),
                if pipeline.is_running() && wbuf.len() < WRITE_HIGH_WATER =>
            {
                if wbuf.is_empty() {
                    write_progress = Instant::now();
                }
                let mut queue = |outputs: &mut Outputs<_>, wbuf: &mut BytesMut| {
                    for Charged { output, charge } in outputs.list.drain(..) {
                        proto.encode(&output, &outputs.bytes, wbuf, &ctx);
                        if let Some(charge) = charge {
                            // Held until its last byte has been written.
                            charges.push_back((written_total + wbuf.len() as u64, charge));
                        }
                    }
                };
                queue(&mut outputs, &mut wbuf);
                pipeline.recycle(outputs);
                // Collect every other finished response now, so that one
                // write carries them all.
                while wbuf.len() < WRITE_HIGH_WATER
                    && let Some(mut outputs) = pipeline.try_next_finished()
                {
                    queue(&mut outputs, &mut wbuf);
                    pipeline.recycle(outputs);
                }
            }
            written = wr.write_buf(&mut wbuf), if !wbuf.is_empty() => {
                let written = written?;
                if written == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
                }
                counter.bytes_out(written as u64);
                written_total += written as u64;
                while charges.front().is_some_and(|(end, _)| *end <= written_total) {
                    charges.pop_front();
                }
                write_progress = Instant::now();
                if wbuf.is_empty() {
                    last_activity = write_progress;
                    if wbuf.capacity() > KEEP_CAPACITY {
                        wbuf = BytesMut::with_capacity(CHUNK);
                    }
                }
            }
            read = inbuf.read_from(&mut rd), if can_read => {
                let read = match read {
                    Err(e @ KvsError::Limit(_)) => {
                        // Answer, then drain: the request cannot be read.
                        pipeline.push_ready(proto.limit_error(&e));
                        counter.protocol_error();
                        debug!(%peer, "request refused: {e}");
                        accepting = false;
                        end = End { why: "request over the input budget", drain: true };
                        inbuf.discard();
                        continue;
                    }
                    other => other?,
                };
                counter.bytes_in(read as u64);
                if read == 0 {
                    eof = true;
                    if !inbuf.is_empty() {
                        end = End::new("client disconnected mid-request");
                    }
                }
            }
            () = &mut cancelled, if shutdown_by.is_none() => {
                // Stop taking requests; the ones in flight still finish and
                // their responses still go out.
                accepting = false;
                end = End::new("server shutting down");
                shutdown_by = Some(Instant::now() + cfg.shutdown_grace);
            }
            () = &mut timer, if deadline.is_some() => {
                return Ok(End::new(deadline.map_or("timeout", |(_, why)| why)));
            }
        }
    }
}
