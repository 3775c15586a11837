//! kvs's own protocol on the server: length-delimited frames carrying
//! postcard [`Request`]s and [`Response`]s (`docs/protocol.md`).

use bytes::BytesMut;
use tokio_util::codec::Decoder;
use tracing::{error, warn};

use super::ServerConfig;
use super::connection::{Decoded, Protocol};
use super::job::{Job, JobContext};
use crate::protocol::{
    ErrorKind, FrameCodec, PROTOCOL_VERSION, Request, Response, decode_message, encode_frame,
};
use crate::{KvsEngine, KvsError};

/// Largest frame a connection may send before it has authenticated, and
/// how many of its requests may be in flight: enough for `Auth` and
/// `Ping`, too little to make the server hold much for a stranger.
pub(crate) const UNAUTHENTICATED_FRAME_LEN: usize = 16 * 1024;
pub(crate) const UNAUTHENTICATED_IN_FLIGHT: usize = 4;

/// Bytes each value in a `Values` response adds beyond its own length (at
/// most: option tag and length varint), so the budget check while building
/// the response errs on the safe side.
const PER_VALUE_OVERHEAD: usize = 1 + 5;

/// One connection's side of the native protocol.
pub(crate) struct Native {
    codec: FrameCodec,
    authenticated: bool,
}

impl Native {
    pub(crate) fn new(cfg: &ServerConfig) -> Native {
        let authenticated = cfg.password.is_none();
        let limit = if authenticated {
            cfg.max_frame_len
        } else {
            UNAUTHENTICATED_FRAME_LEN.min(cfg.max_frame_len)
        };
        Native {
            codec: FrameCodec::new(limit),
            authenticated,
        }
    }

    /// Answers what needs no engine; passes the rest on.
    fn route(&mut self, request: Request, ctx: &JobContext) -> Decoded<NativeJob> {
        match request {
            Request::Ping => Decoded::Answer(Response::Pong),
            Request::Auth { password } => match &ctx.config.password {
                None => Decoded::Answer(error(
                    ErrorKind::Auth,
                    "AUTH called without any password configured for the server",
                )),
                Some(expected) if expected.matches(&password) => {
                    self.authenticated = true;
                    self.codec = FrameCodec::new(ctx.config.max_frame_len);
                    Decoded::Answer(Response::Ok)
                }
                Some(_) => Decoded::Answer(error(ErrorKind::Auth, "invalid password")),
            },
            _ if !self.authenticated => {
                Decoded::Answer(error(ErrorKind::Auth, "authentication required"))
            }
            request => Decoded::Run(NativeJob(request)),
        }
    }
}

impl Protocol for Native {
    type Job = NativeJob;

    fn decode(&mut self, buf: &mut BytesMut, ctx: &JobContext) -> Decoded<NativeJob> {
        match self.codec.decode(buf) {
            Ok(None) => Decoded::Incomplete,
            Ok(Some(frame)) => {
                if frame.first() != Some(&PROTOCOL_VERSION) {
                    ctx.stats.counter(ctx.connection).protocol_error();
                    // Later frames may not even be framed the same way.
                    let output = decode_message::<Request>(&frame).err().map_or_else(
                        || error(ErrorKind::Protocol, "bad version"),
                        |e| Response::from_error(&e),
                    );
                    return Decoded::Last {
                        output,
                        why: "unsupported protocol version",
                        drain: true,
                    };
                }
                match decode_message::<Request>(&frame) {
                    Ok(request) => self.route(request, ctx),
                    Err(e) => {
                        ctx.stats.counter(ctx.connection).protocol_error();
                        tracing::debug!(connection = ctx.connection, "bad request: {e}");
                        Decoded::Answer(Response::from_error(&e))
                    }
                }
            }
            // The stream cannot be resynchronised after a refused header:
            // answer, then close.
            Err(e) => {
                ctx.stats.counter(ctx.connection).protocol_error();
                Decoded::Last {
                    output: Response::from_error(&e),
                    why: "frame over the limit",
                    drain: true,
                }
            }
        }
    }

    fn encode(&mut self, output: &Response, wbuf: &mut BytesMut, ctx: &JobContext) {
        let max = ctx.config.max_frame_len;
        if let Err(e) = encode_frame(output, max, wbuf) {
            // Too large for a frame: the client still gets one response in
            // this slot, so the order holds. The config guarantees
            // `max_frame_len` fits this short message.
            let fallback = error(
                ErrorKind::Limit,
                "response exceeds the maximum frame length",
            );
            if encode_frame(&fallback, max, wbuf).is_err() {
                warn!("cannot encode a response: {e}");
            }
        }
    }

    fn limit_error(&self, e: &KvsError) -> Response {
        Response::from_error(e)
    }

    fn max_in_flight(&self, cfg: &ServerConfig) -> usize {
        if self.authenticated {
            cfg.max_in_flight
        } else {
            UNAUTHENTICATED_IN_FLIGHT.min(cfg.max_in_flight)
        }
    }
}

/// A native request that needs the engine.
pub(crate) struct NativeJob(Request);

impl Job for NativeJob {
    type Output = Response;

    fn for_each_key(&self, f: &mut dyn FnMut(&[u8], bool)) {
        match &self.0 {
            Request::Get { key } => f(key.as_bytes(), false),
            Request::Set { key, .. } | Request::Remove { key } => f(key.as_bytes(), true),
            Request::GetMany { keys } => keys.iter().for_each(|key| f(key.as_bytes(), false)),
            Request::Ping | Request::Auth { .. } | Request::Stats => {}
        }
    }

    fn run<E: KvsEngine>(self, engine: &E, ctx: &JobContext) -> Response {
        let counter = ctx.stats.counter(ctx.connection);
        let result = match self.0 {
            Request::Get { key } => engine.get(key).map(|value| {
                let hit = value.is_some();
                counter.lookups(u64::from(hit), u64::from(!hit));
                Response::Value(value)
            }),
            Request::Set {
                key,
                value,
                ttl_ms: None,
            } => engine.set(key, value).map(|()| Response::Ok),
            Request::Set {
                key,
                value,
                ttl_ms: Some(ms),
            } => engine
                .set_with_ttl(key, value, std::time::Duration::from_millis(ms))
                .map(|()| Response::Ok),
            Request::Remove { key } => engine.remove(key).map(|()| Response::Ok),
            Request::GetMany { keys } => get_many(engine, keys, ctx),
            Request::Stats => {
                let mut snapshot = ctx.stats.snapshot();
                snapshot.engine = engine.stats();
                Ok(Response::Stats(snapshot))
            }
            // Answered on the connection; never sent to the pool.
            Request::Ping => Ok(Response::Pong),
            Request::Auth { .. } => Ok(Response::Ok),
        };
        result.unwrap_or_else(|e| client_error(&e, ctx))
    }

    fn output_len(output: &Response) -> usize {
        match output {
            Response::Value(Some(v)) => v.len() + 16,
            Response::Values(values) => {
                values
                    .iter()
                    .map(|v| PER_VALUE_OVERHEAD + v.as_ref().map_or(0, String::len))
                    .sum::<usize>()
                    + 16
            }
            _ => 64,
        }
    }

    fn refused(len: usize) -> Response {
        error(
            ErrorKind::Limit,
            &format!("server busy: no room for a {len} byte reply now; retry later"),
        )
    }

    fn failed(n: usize) -> Vec<Response> {
        vec![
            error(
                ErrorKind::Server,
                "internal error: the request failed on the server"
            );
            n
        ]
    }
}

/// The values of `keys`, stopping as soon as the response would exceed the
/// largest frame: a small request naming one large value many times must
/// not make the server build an answer it cannot send.
fn get_many<E: KvsEngine>(
    engine: &E,
    keys: Vec<String>,
    ctx: &JobContext,
) -> crate::Result<Response> {
    let budget = ctx.config.max_frame_len.saturating_sub(16);
    let mut used = 0usize;
    let mut values = Vec::with_capacity(keys.len());
    let (mut hits, mut misses) = (0, 0);
    for key in keys {
        let value = engine.get(key)?;
        used += PER_VALUE_OVERHEAD + value.as_ref().map_or(0, String::len);
        if used > budget {
            return Err(KvsError::Limit(format!(
                "response exceeds the maximum frame of {} bytes",
                ctx.config.max_frame_len
            )));
        }
        if value.is_some() {
            hits += 1;
        } else {
            misses += 1;
        }
        values.push(value);
    }
    ctx.stats.counter(ctx.connection).lookups(hits, misses);
    Ok(Response::Values(values))
}

fn error(kind: ErrorKind, message: &str) -> Response {
    Response::Error {
        kind,
        message: message.to_owned(),
    }
}

/// The response for an engine error: expected conditions keep their
/// message; anything internal (I/O, corruption, a full disk) goes to the
/// log in full with an error id, and the client gets only the id, so
/// paths and offsets on the server never reach a remote client.
pub(crate) fn client_error(e: &KvsError, ctx: &JobContext) -> Response {
    match e {
        KvsError::KeyNotFound
        | KvsError::InvalidInput(_)
        | KvsError::Limit(_)
        | KvsError::Protocol(_)
        | KvsError::Auth(_)
        | KvsError::OutOfMemory(_) => Response::from_error(e),
        KvsError::ReadOnly(_) => {
            let id = ctx.stats.next_error_id();
            error!(error_id = id, "write refused: {e}");
            error(
                ErrorKind::ReadOnly,
                &format!("the store is read-only for now (error id {id}; see the server log)"),
            )
        }
        _ => {
            let id = ctx.stats.next_error_id();
            error!(error_id = id, "request failed: {e}");
            error(
                ErrorKind::Server,
                &format!("internal error (error id {id}; see the server log)"),
            )
        }
    }
}
