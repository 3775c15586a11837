//! Counters: INCR, DECR, INCRBY, DECRBY, each one atomic
//! [`KvsEngine::update`] that keeps the key's expiry, as Redis does.

use super::{EngineCommand, Executed, Op, ServerContext, Session, Step, engine_error, integer};
use crate::KvsEngine;
use crate::engine::{Entry, NO_EXPIRY, Update};
use crate::protocol::resp::{Reply, parse_i64};

/// Add `by` to the integer at `key` (missing counts as 0).
#[derive(Debug)]
pub(super) struct IncrBy {
    pub key: String,
    pub by: i64,
}

fn engine(key: &[u8], by: i64) -> Step {
    match super::text(key) {
        Ok(key) => Step::Engine(EngineCommand(Op::Counter(IncrBy { key, by }))),
        Err(reply) => Step::Reply(reply),
    }
}

pub(super) fn incr(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    engine(args[1], 1)
}

pub(super) fn decr(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    engine(args[1], -1)
}

pub(super) fn incrby(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    match integer(args[2]) {
        Ok(by) => engine(args[1], by),
        Err(reply) => Step::Reply(reply),
    }
}

pub(super) fn decrby(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    match integer(args[2]) {
        // Negating i64::MIN overflows; Redis refuses it up front.
        Ok(i64::MIN) => Step::Reply(Reply::error("ERR decrement would overflow")),
        Ok(by) => engine(args[1], -by),
        Err(reply) => Step::Reply(reply),
    }
}

/// Why a counter update wrote nothing.
enum Refused {
    NotAnInteger,
    Overflow,
}

impl IncrBy {
    pub(super) fn execute<E: KvsEngine>(self, engine: &E) -> Executed {
        let by = self.by;
        let result = engine.update(self.key, |old| {
            let (current, expires_at) = match &old {
                None => (0, NO_EXPIRY),
                Some(e) => match parse_i64(e.value.as_bytes()) {
                    Some(n) => (n, e.expires_at),
                    None => return (Update::Keep, Err(Refused::NotAnInteger)),
                },
            };
            match current.checked_add(by) {
                Some(n) => (
                    Update::Put(Entry {
                        value: n.to_string(),
                        expires_at,
                    }),
                    Ok(n),
                ),
                None => (Update::Keep, Err(Refused::Overflow)),
            }
        });
        let reply = match result {
            Ok(Ok(n)) => Reply::Integer(n),
            Ok(Err(Refused::NotAnInteger)) => super::not_an_integer(),
            Ok(Err(Refused::Overflow)) => Reply::error("ERR increment or decrement would overflow"),
            Err(e) => engine_error(&e),
        };
        reply.into()
    }
}
