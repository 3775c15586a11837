//! RESP2 on the server: the wire format of `protocol::resp` and the
//! commands of `command`, plugged into the one connection loop.

use std::sync::Arc;

use bytes::BytesMut;

use super::ServerConfig;
use super::connection::{Decoded, Protocol};
use super::job::{Job, JobContext};
use crate::KvsEngine;
use crate::command::{self, EngineCommand, Scope, ServerContext, Session, Step};
use crate::protocol::resp::{Limits, Reply, RespDecoder};

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
                Step::Reply(reply) => Decoded::Answer(reply),
                // Drained like an error: input pipelined after QUIT is read
                // and dropped, so the close does not reset away the +OK.
                Step::Close(reply) => Decoded::Last {
                    output: reply,
                    why: "client quit",
                    drain: true,
                },
                Step::Engine(cmd) => Decoded::Run(RespJob(cmd)),
            },
            Err(e) => {
                ctx.stats.counter(ctx.connection).protocol_error();
                tracing::debug!(connection = ctx.connection, "RESP protocol error: {e:?}");
                Decoded::Last {
                    output: e.reply(),
                    why: "RESP protocol error",
                    drain: true,
                }
            }
        }
    }

    fn encode(&mut self, output: &Reply, _: &[u8], wbuf: &mut BytesMut, _: &JobContext) {
        output.encode(wbuf);
    }

    fn limit_error(&self, e: &crate::KvsError) -> Reply {
        match e {
            crate::KvsError::Limit(message) => Reply::error(format!("ERR {message}")),
            other => Reply::error(format!("ERR {other}")),
        }
    }

    fn max_in_flight(&self, cfg: &ServerConfig) -> usize {
        if self.session.is_authenticated() {
            cfg.max_in_flight
        } else {
            UNAUTHENTICATED_IN_FLIGHT.min(cfg.max_in_flight)
        }
    }
}

/// A RESP command that needs the engine.
pub(crate) struct RespJob(EngineCommand);

impl Job for RespJob {
    type Output = Reply;

    fn for_each_key(&self, f: &mut dyn FnMut(&[u8], bool)) {
        self.0.for_each_key(|key, writes| f(key.as_bytes(), writes));
    }

    fn scope(&self) -> Scope {
        self.0.scope()
    }

    fn run<E: KvsEngine>(self, engine: &E, ctx: &JobContext, _: &mut Vec<u8>) -> Reply {
        // A value as large as the biggest bulk accepted must be readable
        // back: room for the bulk header on top.
        let budget = ctx.config.max_frame_len + 64;
        let done = self.0.execute(engine, &ctx.commands, budget);
        ctx.stats
            .counter(ctx.connection)
            .lookups(done.hits, done.misses);
        done.reply
    }

    fn output_len(output: &Reply) -> usize {
        output.encoded_len()
    }

    fn refused(len: usize) -> Reply {
        Reply::error(format!(
            "ERR server busy: no room for a {len} byte reply now; retry later"
        ))
    }

    fn failed(n: usize) -> Vec<Reply> {
        std::iter::repeat_with(|| Reply::error("ERR internal error; see the server log"))
            .take(n)
            .collect()
    }
}
