//! One client connection: reads frames, runs up to `max_in_flight` of its
//! requests on the pool at once, and writes the responses back in request
//! order.
//!
//! A single task owns the socket and both buffers and drives everything
//! from one `select!`, so reading, executing and writing overlap without
//! locks: responses leave as soon as they are next in order, new frames
//! are read while earlier requests execute, and a client that pipelines is
//! never serialised behind one request at a time.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::BytesMut;
use futures::FutureExt;
use futures::StreamExt;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tokio::time::Instant;
use tokio_util::codec::Decoder;
use tokio_util::sync::CancellationToken;
use tracing::{debug, warn};

use super::ServerConfig;
use super::pipeline::{Answer, Pipeline};
use crate::protocol::{
    ErrorKind, FrameCodec, PROTOCOL_VERSION, Request, Response, decode_message, encode_frame,
};
use crate::thread_pool::SharedQueueThreadPool;
use crate::{KvsEngine, KvsError, Result};

/// What every connection task shares. The engine is not in here: engines
/// are `Send` but need not be `Sync`, so each connection owns its clones.
pub(crate) struct Shared {
    pub(crate) pool: Arc<SharedQueueThreadPool>,
    pub(crate) config: ServerConfig,
}

/// Read buffer growth step, and the size both buffers start at.
const CHUNK: usize = 8 * 1024;
/// Past this many unsent response bytes the connection stops reading and
/// executing new requests until the client catches up.
const WRITE_HIGH_WATER: usize = 256 * 1024;
/// An empty buffer that grew past this (a large value went through) is
/// replaced by a small one, so idle connections do not pin memory.
const KEEP_CAPACITY: usize = 64 * 1024;
/// How long a refused connection is kept open so its client can read the
/// error frame (closing with unread input would reset it instead).
const REJECT_LINGER: Duration = Duration::from_secs(1);

/// Serves one accepted connection until it closes; holds `_permit` (its
/// slot under `max_connections`) until then.
pub(crate) async fn serve<E: KvsEngine>(
    mut stream: TcpStream,
    peer: SocketAddr,
    shared: Arc<Shared>,
    engine: E,
    token: CancellationToken,
    _permit: OwnedSemaphorePermit,
) {
    debug!(%peer, "connection opened");
    // Responses are small and latency matters more than packet count; the
    // write path already batches whatever is ready into one write.
    if let Err(e) = stream.set_nodelay(true) {
        debug!(%peer, "cannot set TCP_NODELAY: {e}");
    }
    match drive(&mut stream, &shared, engine, &token).await {
        Ok(end) => debug!(%peer, "connection closed: {end}"),
        Err(e) => debug!(%peer, "connection dropped: {e}"),
    }
}

/// Answers a connection over the cap with one error frame, then closes it.
pub(crate) async fn reject(mut stream: TcpStream, peer: SocketAddr, max_frame_len: usize) {
    debug!(%peer, "connection refused: too many connections");
    let mut frame = BytesMut::new();
    let response = Response::Error {
        kind: ErrorKind::Limit,
        message: "too many connections".to_owned(),
    };
    if encode_frame(&response, max_frame_len, &mut frame).is_err() {
        return;
    }
    let linger = async {
        stream.write_all(&frame).await?;
        stream.shutdown().await?;
        // Drain until the client closes, so the close is not a reset that
        // could destroy the error frame before the client reads it.
        let mut sink = [0u8; 512];
        while stream.read(&mut sink).await? > 0 {}
        Ok::<_, std::io::Error>(())
    };
    let _ = tokio::time::timeout(REJECT_LINGER, linger).await;
}

/// The connection loop. Returns why the connection ended; `Err` only for
/// socket errors.
async fn drive<E: KvsEngine>(
    stream: &mut TcpStream,
    shared: &Shared,
    template: E,
    token: &CancellationToken,
) -> Result<&'static str> {
    let cfg = &shared.config;
    let (mut rd, mut wr) = stream.split();
    let mut codec = FrameCodec::new(cfg.max_frame_len);
    let mut rbuf = BytesMut::with_capacity(CHUNK);
    let mut wbuf = BytesMut::with_capacity(CHUNK);
    let mut pipeline = Pipeline::new(template, shared.pool.clone());

    // `accepting`: new frames are still decoded and executed (false after
    // shutdown starts or the stream is beyond repair). `eof`: the client
    // sent everything it will send.
    let mut accepting = true;
    let mut eof = false;
    let mut end = "client closed";
    let now = Instant::now();
    let mut partial_since: Option<Instant> = None;
    let mut last_activity = now;
    let mut write_progress = now;
    let mut shutdown_by: Option<Instant> = None;
    let timer = tokio::time::sleep_until(now + cfg.idle_timeout);
    tokio::pin!(timer);

    loop {
        while pipeline.len() < cfg.max_in_flight
            && wbuf.len() < WRITE_HIGH_WATER
            && !pipeline.is_blocked()
            && accepting
        {
            match codec.decode(&mut rbuf) {
                Ok(Some(frame)) => {
                    partial_since = None;
                    last_activity = Instant::now();
                    if frame.first() != Some(&PROTOCOL_VERSION) {
                        // Later frames may not even be framed the same way.
                        accepting = false;
                        end = "unsupported protocol version";
                    }
                    match decode_request(&frame, cfg) {
                        Ok(request) => pipeline.submit(request),
                        Err(response) => pipeline.push_ready(response),
                    }
                }
                Ok(None) => break,
                Err(e) => {
                    // The stream cannot be resynchronised after a refused
                    // header: answer, then close.
                    pipeline.push_ready(Response::from_error(&e));
                    accepting = false;
                    end = "frame over the limit";
                    rbuf = BytesMut::new();
                }
            }
        }
        pipeline.launch_batch();
        if (!accepting || eof) && pipeline.is_empty() && wbuf.is_empty() {
            return Ok(end);
        }

        let can_read = accepting
            && !eof
            && pipeline.len() < cfg.max_in_flight
            && wbuf.len() < WRITE_HIGH_WATER;
        if rbuf.is_empty() {
            partial_since = None;
            if rbuf.capacity() > KEEP_CAPACITY {
                rbuf = BytesMut::with_capacity(CHUNK);
            }
        } else if can_read && partial_since.is_none() {
            partial_since = Some(Instant::now());
        }
        if can_read && rbuf.capacity() - rbuf.len() < CHUNK / 2 {
            rbuf.reserve(CHUNK);
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
            Some((engine, answer)) = pipeline.in_flight.next(), if !pipeline.in_flight.is_empty() => {
                if wbuf.is_empty() {
                    write_progress = Instant::now();
                }
                finish(engine, answer, cfg, &mut pipeline, &mut wbuf);
                // Collect every other finished response now, so that one
                // write carries them all.
                while let Some(Some((engine, answer))) = pipeline.in_flight.next().now_or_never() {
                    finish(engine, answer, cfg, &mut pipeline, &mut wbuf);
                }
            }
            written = wr.write_buf(&mut wbuf), if !wbuf.is_empty() => {
                if written? == 0 {
                    return Err(std::io::Error::from(std::io::ErrorKind::WriteZero).into());
                }
                write_progress = Instant::now();
                if wbuf.is_empty() {
                    last_activity = write_progress;
                    if wbuf.capacity() > KEEP_CAPACITY {
                        wbuf = BytesMut::with_capacity(CHUNK);
                    }
                }
            }
            read = rd.read_buf(&mut rbuf), if can_read => {
                if read? == 0 {
                    eof = true;
                    if !rbuf.is_empty() {
                        end = "client disconnected mid-frame";
                    }
                }
            }
            () = token.cancelled(), if shutdown_by.is_none() => {
                // Stop taking requests; the ones in flight still finish and
                // their responses still go out.
                accepting = false;
                end = "server shutting down";
                shutdown_by = Some(Instant::now() + cfg.shutdown_grace);
            }
            () = &mut timer, if deadline.is_some() => {
                return Ok(deadline.map_or("timeout", |(_, why)| why));
            }
        }
    }
}

/// Decodes one frame into a request, or the error response it earns.
fn decode_request(frame: &[u8], cfg: &ServerConfig) -> std::result::Result<Request, Response> {
    let request: Request = decode_message(frame).map_err(|e| Response::from_error(&e))?;
    match &request {
        Request::GetMany { keys } if keys.len() > cfg.max_batch_keys => {
            Err(Response::from_error(&KvsError::Limit(format!(
                "batch of {} keys exceeds the maximum of {}",
                keys.len(),
                cfg.max_batch_keys
            ))))
        }
        _ => Ok(request),
    }
}

/// Records the answer as finished and queues its responses for sending.
fn finish<E: KvsEngine>(
    engine: Option<E>,
    answer: Answer,
    cfg: &ServerConfig,
    pipeline: &mut Pipeline<E>,
    wbuf: &mut BytesMut,
) {
    match answer {
        Answer::One(response) => {
            pipeline.finished(engine, 1);
            queue_response(&response, cfg, wbuf);
        }
        Answer::Many(responses) => {
            pipeline.finished(engine, responses.len());
            for response in &responses {
                queue_response(response, cfg, wbuf);
            }
        }
    }
}

fn queue_response(response: &Response, cfg: &ServerConfig, wbuf: &mut BytesMut) {
    if let Err(e) = encode_frame(response, cfg.max_frame_len, wbuf) {
        // Too large for a frame (a big batch): the client still gets one
        // response in this slot, so the order holds. The config guarantees
        // `max_frame_len` fits this short message.
        let fallback = Response::from_error(&KvsError::Limit(
            "response exceeds the maximum frame length".to_owned(),
        ));
        if encode_frame(&fallback, cfg.max_frame_len, wbuf).is_err() {
            warn!("cannot encode a response: {e}");
        }
    }
}
