//! RESP2 on the server: the wire format of `protocol::resp` and the
//! commands of `command`, plugged into the one connection loop.

use std::sync::Arc;

use bytes::BytesMut;

use super::ServerConfig;
use super::connection::{Decoded, Protocol};
use super::job::{Encoded, Job, JobContext, Lookup, encode_hit, reserve_reply};
use crate::KvsEngine;
use crate::command::{self, EngineCommand, Scope, ServerContext, Session, Step};
use crate::protocol::resp::{Limits, Reply, RespDecoder, bulk_len, put_bulk};

/// Requests in flight for a connection that has not authenticated.
const UNAUTHENTICATED_IN_FLIGHT: usize = 4;

/// One connection's side of RESP.
pub(crate) struct Resp {
    decoder: RespDecoder,
    session: Session,
    limits: Limits,
    commands: Arc<ServerContext>,
}

impl Resp {
    pub(crate) fn new(cfg: &ServerConfig, commands: Arc<ServerContext>) -> Resp {
        Resp {
            decoder: RespDecoder::new(),
            session: Session::new(&commands),
            limits: Limits {
                max_bulk_len: cfg.max_frame_len,
                ..Limits::default()
            },
            commands,
        }
    }
}

impl Protocol for Resp {
    type Job = RespJob;

    fn decode(&mut self, buf: &mut BytesMut, ctx: &JobContext) -> Decoded<RespJob> {
        let authenticated = self.session.is_authenticated();
        let (session, commands) = (&mut self.session, &self.commands);
        let decoded = self
            .decoder
            .decode_with(buf, &self.limits, authenticated, |args| {
                command::dispatch_args(args, session, commands)
            });
        match decoded {
            Ok(None) => Decoded::Incomplete,
            Ok(Some(step)) => match step {
                Step::Reply(reply) => Decoded::Answer(reply.into()),
                // Drained like an error: input pipelined after QUIT is read
                // and dropped, so the close does not reset away the +OK.
                Step::Close(reply) => Decoded::Last {
                    output: reply.into(),
                    why: "client quit",
                    drain: true,
                },
                Step::Engine(cmd) => Decoded::Run(RespJob(cmd)),
            },
            Err(e) => {
                ctx.stats.counter(ctx.connection).protocol_error();
                tracing::debug!(connection = ctx.connection, "RESP protocol error: {e:?}");
                Decoded::Last {
                    output: e.reply().into(),
                    why: "RESP protocol error",
                    drain: true,
                }
            }
        }
    }

    fn encode(&mut self, output: &RespOutput, bytes: &[u8], wbuf: &mut BytesMut, _: &JobContext) {
        match output {
            RespOutput::Reply(reply) => reply.encode(wbuf),
            RespOutput::Encoded(encoded) => wbuf.extend_from_slice(encoded.of(bytes)),
        }
    }

    fn limit_error(&self, e: &crate::KvsError) -> RespOutput {
        match e {
            crate::KvsError::Limit(message) => Reply::error(format!("ERR {message}")),
            other => Reply::error(format!("ERR {other}")),
        }
        .into()
    }

    fn max_in_flight(&self, cfg: &ServerConfig) -> usize {
        if self.session.is_authenticated() {
            cfg.max_in_flight
        } else {
            UNAUTHENTICATED_IN_FLIGHT.min(cfg.max_in_flight)
        }
    }
}

/// What a RESP command answers: a reply, or one its job already encoded
/// into the job's bytes (a `GET` hit, its value copied once, straight from
/// the engine).
pub(crate) enum RespOutput {
    Reply(Reply),
    Encoded(Encoded),
}

impl From<Reply> for RespOutput {
    fn from(reply: Reply) -> RespOutput {
        RespOutput::Reply(reply)
    }
}

/// A RESP command that needs the engine.
pub(crate) struct RespJob(EngineCommand);

impl Job for RespJob {
    type Output = RespOutput;

    fn for_each_key(&self, f: &mut dyn FnMut(&[u8], bool)) {
        self.0.for_each_key(|key, writes| f(key.as_bytes(), writes));
    }

    fn scope(&self) -> Scope {
        self.0.scope()
    }

    fn prefetch<E: KvsEngine>(&self, engine: &E) {
        if let Some(key) = self.0.plain_get() {
            engine.prefetch(key);
        }
    }

    fn run<E: KvsEngine>(self, engine: &E, ctx: &JobContext, bytes: &mut Vec<u8>) -> RespOutput {
        // A value as large as the biggest bulk accepted must be readable
        // back: room for the bulk header on top.
        let budget = ctx.config.max_frame_len + 64;
        if let Some(key) = self.0.plain_get() {
            return get(engine, key, ctx, budget, bytes);
        }
        let done = self.0.execute(engine, &ctx.commands, budget);
        ctx.stats
            .counter(ctx.connection)
            .lookups(done.hits, done.misses);
        done.reply.into()
    }

    fn output_len(output: &RespOutput) -> usize {
        match output {
            RespOutput::Reply(reply) => reply.encoded_len(),
            RespOutput::Encoded(encoded) => encoded.len(),
        }
    }

    fn refused(len: usize) -> RespOutput {
        Reply::error(format!(
            "ERR server busy: no room for a {len} byte reply now; retry later"
        ))
        .into()
    }

    fn failed(n: usize) -> Vec<RespOutput> {
        std::iter::repeat_with(|| Reply::error("ERR internal error; see the server log").into())
            .take(n)
            .collect()
    }
}

/// A plain `GET`: on a hit the bulk reply goes into `bytes`, the value
/// copied once, straight from the engine; the same replies as
/// `EngineCommand::execute` otherwise.
fn get<E: KvsEngine>(
    engine: &E,
    key: &str,
    ctx: &JobContext,
    budget: usize,
    bytes: &mut Vec<u8>,
) -> RespOutput {
    let found = encode_hit(engine, key, ctx, bytes, |value, out| {
        let len = bulk_len(value.len());
        if len > budget {
            return false;
        }
        reserve_reply(out, len);
        put_bulk(out, value);
        true
    });
    match found {
        Ok(Lookup::Miss) => Reply::nil().into(),
        Ok(Lookup::Hit(encoded)) => RespOutput::Encoded(encoded),
        Ok(Lookup::TooLarge) => command::over_budget(budget).into(),
        Err(e) => command::engine_error(&e).into(),
    }
}
