//! kvs's own protocol on the server: length-delimited frames carrying
//! postcard [`Request`]s and [`Response`]s (`docs/protocol.md`).

use std::sync::LazyLock;
use std::time::Duration;

use bytes::{BufMut, Bytes, BytesMut};
use tokio_util::codec::Decoder;
use tracing::{error, warn};

use super::ServerConfig;
use super::connection::{Decoded, Protocol};
use super::job::{Encoded, Job, JobContext, Lookup, encode_hit, reserve_reply};
use crate::engine::{NO_EXPIRY, deadline_after};
use crate::protocol::{
    ErrorKind, FrameCodec, PROTOCOL_VERSION, Request, Response, decode_borrowed, encode_frame,
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
    fn route(&mut self, job: NativeJob, ctx: &JobContext) -> Decoded<NativeJob> {
        let answer = |response: Response| Decoded::Answer(response.into());
        match &job.request {
            Request::Ping => answer(Response::Pong),
            Request::Auth { password } => match &ctx.config.password {
                None => answer(error(
                    ErrorKind::Auth,
                    "AUTH called without any password configured for the server",
                )),
                Some(expected) if expected.matches(job.text(*password)) => {
                    self.authenticated = true;
                    self.codec = FrameCodec::new(ctx.config.max_frame_len);
                    answer(Response::Ok)
                }
                Some(_) => answer(error(ErrorKind::Auth, "invalid password")),
            },
            _ if !self.authenticated => answer(error(ErrorKind::Auth, "authentication required")),
            _ => Decoded::Run(job),
        }
    }
}

impl Protocol for Native {
    type Job = NativeJob;

    fn decode(&mut self, buf: &mut BytesMut, ctx: &JobContext) -> Decoded<NativeJob> {
        match self.codec.decode(buf) {
            Ok(None) => Decoded::Incomplete,
            Ok(Some(frame)) => {
                let frame = frame.freeze();
                if frame.first() != Some(&PROTOCOL_VERSION) {
                    ctx.stats.counter(ctx.connection).protocol_error();
                    // Later frames may not even be framed the same way.
                    let output = decode_borrowed::<Request<&str>>(&frame).err().map_or_else(
                        || error(ErrorKind::Protocol, "bad version"),
                        |e| Response::from_error(&e),
                    );
                    return Decoded::Last {
                        output: output.into(),
                        why: "unsupported protocol version",
                        drain: true,
                    };
                }
                match NativeJob::decode(frame) {
                    Ok(job) => self.route(job, ctx),
                    Err(e) => {
                        ctx.stats.counter(ctx.connection).protocol_error();
                        tracing::debug!(connection = ctx.connection, "bad request: {e}");
                        Decoded::Answer(Response::from_error(&e).into())
                    }
                }
            }
            // The stream cannot be resynchronised after a refused header:
            // answer, then close.
            Err(e) => {
                ctx.stats.counter(ctx.connection).protocol_error();
                Decoded::Last {
                    output: Response::from_error(&e).into(),
                    why: "frame over the limit",
                    drain: true,
                }
            }
        }
    }

    fn encode(
        &mut self,
        output: &NativeOutput,
        bytes: &[u8],
        wbuf: &mut BytesMut,
        ctx: &JobContext,
    ) {
        let output = match output {
            NativeOutput::Encoded(encoded) => {
                wbuf.extend_from_slice(encoded.of(bytes));
                return;
            }
            NativeOutput::Response(response) => response,
        };
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

    fn limit_error(&self, e: &KvsError) -> NativeOutput {
        Response::from_error(e).into()
    }

    fn max_in_flight(&self, cfg: &ServerConfig) -> usize {
        if self.authenticated {
            cfg.max_in_flight
        } else {
            UNAUTHENTICATED_IN_FLIGHT.min(cfg.max_in_flight)
        }
    }
}

/// What a native request answers: a response, or a whole frame its job
/// already encoded into the job's bytes.
pub(crate) enum NativeOutput {
    Response(Response),
    Encoded(Encoded),
}

impl From<Response> for NativeOutput {
    fn from(response: Response) -> NativeOutput {
        NativeOutput::Response(response)
    }
}

/// Where a string of a request lies in its frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Span {
    start: usize,
    end: usize,
}

/// A native request, its strings left in the frame they came in: neither
/// the key nor the value is copied before the engine copies it where it
/// keeps it.
pub(crate) struct NativeJob {
    frame: Bytes,
    request: Request<Span>,
}

impl NativeJob {
    /// Decodes the request in `frame` (its payload: version byte first).
    fn decode(frame: Bytes) -> crate::Result<NativeJob> {
        let request = decode_borrowed::<Request<&str>>(&frame)?;
        let span = |s: &str| {
            // Postcard hands out strings borrowed from the input slice.
            let start = (s.as_ptr() as usize)
                .checked_sub(frame.as_ptr() as usize)
                .filter(|start| start + s.len() <= frame.len())
                .expect("postcard lends strings from the frame it decodes");
            Span {
                start,
                end: start + s.len(),
            }
        };
        let request = match request {
            Request::Ping => Request::Ping,
            Request::Get { key } => Request::Get { key: span(key) },
            Request::Set { key, value, ttl_ms } => Request::Set {
                key: span(key),
                value: span(value),
                ttl_ms,
            },
            Request::Remove { key } => Request::Remove { key: span(key) },
            Request::GetMany { keys } => Request::GetMany {
                keys: keys.into_iter().map(span).collect(),
            },
            Request::Auth { password } => Request::Auth {
                password: span(password),
            },
            Request::Stats => Request::Stats,
        };
        Ok(NativeJob { frame, request })
    }

    /// The string at `span`.
    fn text(&self, span: Span) -> &str {
        // SAFETY: spans are private to this module and only made in
        // `decode`, from strings postcard borrowed from this job's own
        // frame after checking them for UTF-8; `Bytes` never changes its
        // contents, and the slicing is bounds-checked.
        unsafe { std::str::from_utf8_unchecked(&self.frame[span.start..span.end]) }
    }
}

impl Job for NativeJob {
    type Output = NativeOutput;

    fn for_each_key(&self, f: &mut dyn FnMut(&[u8], bool)) {
        let raw = |span: &Span| &self.frame[span.start..span.end];
        match &self.request {
            Request::Get { key } => f(raw(key), false),
            Request::Set { key, .. } | Request::Remove { key } => f(raw(key), true),
            Request::GetMany { keys } => keys.iter().for_each(|key| f(raw(key), false)),
            Request::Ping | Request::Auth { .. } | Request::Stats => {}
        }
    }

    fn prefetch<E: KvsEngine>(&self, engine: &E) {
        if let Request::Get { key } = &self.request {
            engine.prefetch(self.text(*key));
        }
    }

    fn run<E: KvsEngine>(self, engine: &E, ctx: &JobContext, bytes: &mut Vec<u8>) -> NativeOutput {
        let result = match &self.request {
            Request::Get { key } => get(engine, self.text(*key), ctx, bytes),
            Request::Set { key, value, ttl_ms } => {
                let expires_at =
                    ttl_ms.map_or(NO_EXPIRY, |ms| deadline_after(Duration::from_millis(ms)));
                engine
                    .set_from(self.text(*key), self.text(*value), expires_at)
                    .map(|()| Response::Ok.into())
            }
            Request::Remove { key } => engine
                .remove(self.text(*key).to_owned())
                .map(|()| Response::Ok.into()),
            Request::GetMany { keys } => {
                get_many(engine, keys.iter().map(|&key| self.text(key)), ctx).map(Into::into)
            }
            Request::Stats => {
                let mut snapshot = ctx.stats.snapshot();
                snapshot.engine = engine.stats();
                Ok(Response::Stats(snapshot).into())
            }
            // Answered on the connection; never sent to the pool.
            Request::Ping => Ok(Response::Pong.into()),
            Request::Auth { .. } => Ok(Response::Ok.into()),
        };
        result.unwrap_or_else(|e| client_error(&e, ctx).into())
    }

    fn output_len(output: &NativeOutput) -> usize {
        match output {
            NativeOutput::Encoded(encoded) => encoded.len(),
            NativeOutput::Response(Response::Value(Some(v))) => v.len() + 16,
            NativeOutput::Response(Response::Values(values)) => {
                values
                    .iter()
                    .map(|v| PER_VALUE_OVERHEAD + v.as_ref().map_or(0, String::len))
                    .sum::<usize>()
                    + 16
            }
            NativeOutput::Response(_) => 64,
        }
    }

    fn refused(len: usize) -> NativeOutput {
        error(
            ErrorKind::Limit,
            &format!("server busy: no room for a {len} byte reply now; retry later"),
        )
        .into()
    }

    fn failed(n: usize) -> Vec<NativeOutput> {
        std::iter::repeat_with(|| {
            error(
                ErrorKind::Server,
                "internal error: the request failed on the server",
            )
            .into()
        })
        .take(n)
        .collect()
    }
}

/// The postcard bytes of `Response::Value(Some(_))` before the value's
/// length: the variant index and the `Some` tag.
static VALUE_PREFIX: LazyLock<Vec<u8>> = LazyLock::new(|| {
    let mut encoded =
        postcard::to_allocvec(&Response::Value(Some(String::new()))).expect("a response encodes");
    // The empty string's length, a one-byte zero varint.
    encoded.pop();
    encoded
});

/// Answers a GET: on a hit, the whole response frame goes into `bytes`,
/// the value copied once, straight from the engine.
fn get<E: KvsEngine>(
    engine: &E,
    key: &str,
    ctx: &JobContext,
    bytes: &mut Vec<u8>,
) -> crate::Result<NativeOutput> {
    let max = ctx.config.max_frame_len;
    Ok(
        match encode_hit(engine, key, ctx, bytes, |value, out| {
            value_frame(value, max, out)
        })? {
            Lookup::Miss => Response::Value(None).into(),
            Lookup::Hit(encoded) => NativeOutput::Encoded(encoded),
            Lookup::TooLarge => error(
                ErrorKind::Limit,
                "response exceeds the maximum frame length",
            )
            .into(),
        },
    )
}

/// Appends the frame of `Response::Value(Some(value))` to `out`, as
/// [`encode_frame`] would; `false` (nothing appended) when its payload
/// would be longer than `max_frame_len`.
fn value_frame(value: &[u8], max_frame_len: usize, out: &mut Vec<u8>) -> bool {
    let mut varint = [0u8; 10];
    let mut n = value.len();
    let mut used = 0;
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            varint[used] = byte;
            used += 1;
            break;
        }
        varint[used] = byte | 0x80;
        used += 1;
    }
    let payload = 1 + VALUE_PREFIX.len() + used + value.len();
    let Ok(len) = u32::try_from(payload) else {
        return false;
    };
    if payload > max_frame_len {
        return false;
    }
    reserve_reply(out, 4 + payload);
    out.put_u32(len);
    out.put_u8(PROTOCOL_VERSION);
    out.extend_from_slice(&VALUE_PREFIX);
    out.extend_from_slice(&varint[..used]);
    out.extend_from_slice(value);
    true
}

/// The values of `keys`, stopping as soon as the response would exceed the
/// largest frame: a small request naming one large value many times must
/// not make the server build an answer it cannot send.
fn get_many<'a, E: KvsEngine>(
    engine: &E,
    keys: impl ExactSizeIterator<Item = &'a str>,
    ctx: &JobContext,
) -> crate::Result<Response> {
    let budget = ctx.config.max_frame_len.saturating_sub(16);
    let mut used = 0usize;
    let mut values = Vec::with_capacity(keys.len());
    let (mut hits, mut misses) = (0, 0);
    for key in keys {
        let value = engine.get_entry(key)?.map(|entry| entry.value);
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_value_frame_is_the_frame_encode_frame_makes() {
        let max = 4 << 20;
        for len in [
            0, 1, 100, 127, 128, 300, 16_383, 16_384, 70_000, 2_097_151, 2_097_152,
        ] {
            let value: String = (0..len)
                .map(|i| char::from(b'a' + (i % 26) as u8))
                .collect();
            let mut expected = BytesMut::new();
            encode_frame(&Response::Value(Some(value.clone())), max, &mut expected).unwrap();
            let mut got = vec![7u8];
            assert!(value_frame(value.as_bytes(), max, &mut got), "{len}");
            assert_eq!(got[0], 7, "appends");
            assert_eq!(&got[1..], &expected[..], "{len} bytes");
        }
    }

    #[test]
    fn a_value_frame_over_the_limit_is_refused_where_encode_frame_refuses() {
        let value = "x".repeat(200);
        for max in 195..210 {
            let mut expected = BytesMut::new();
            let fits = encode_frame(&Response::Value(Some(value.clone())), max, &mut expected);
            let mut got = Vec::new();
            assert_eq!(
                value_frame(value.as_bytes(), max, &mut got),
                fits.is_ok(),
                "{max}"
            );
            assert_eq!(got, expected.to_vec(), "nothing written when refused");
        }
    }

    #[test]
    fn a_decoded_job_reads_its_strings_from_the_frame() {
        let request = Request::Set {
            key: "kéy",
            value: "välue",
            ttl_ms: Some(5),
        };
        let mut frame = BytesMut::new();
        encode_frame(&request, 1 << 20, &mut frame).unwrap();
        let job = NativeJob::decode(frame.split_off(4).freeze()).unwrap();
        let Request::Set { key, value, ttl_ms } = job.request else {
            panic!("not a set")
        };
        assert_eq!(
            (job.text(key), job.text(value), ttl_ms),
            ("kéy", "välue", Some(5))
        );
        let mut keys = Vec::new();
        job.for_each_key(&mut |k, writes| keys.push((k.to_vec(), writes)));
        assert_eq!(keys, vec![("kéy".as_bytes().to_vec(), true)]);
    }
}
