//! Key commands: DEL, UNLINK, EXISTS, EXPIRE, PEXPIRE, TTL, PTTL, PERSIST,
//! DBSIZE, FLUSHDB, FLUSHALL.

use super::strings::invalid_expire;
use super::{
    EngineCommand, Executed, Op as AnyOp, Scope, ServerContext, Session, Step, engine_error,
    integer, syntax_error, text, texts,
};
use crate::engine::{Entry, NO_EXPIRY, Update, now_ms};
use crate::protocol::resp::Reply;
use crate::{KvsEngine, KvsError};

/// `EXPIRE`'s condition on the key's current expiry.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct ExpireIf {
    nx: bool,
    xx: bool,
    gt: bool,
    lt: bool,
}

impl ExpireIf {
    /// Whether a key expiring at `current` ([`NO_EXPIRY`]: never) may be
    /// given `when`; no expiry counts as an infinite one for GT and LT.
    fn allows(self, current: u64, when: i64) -> bool {
        let persistent = current == NO_EXPIRY;
        let current = i64::try_from(current).unwrap_or(i64::MAX);
        !(self.nx && !persistent
            || self.xx && persistent
            || self.gt && (persistent || when <= current)
            || self.lt && !persistent && when >= current)
    }
}

#[derive(Debug)]
pub(super) enum Op {
    Del(Vec<String>),
    Exists(Vec<String>),
    Expire {
        key: String,
        /// Milliseconds after the command runs (negative: in the past).
        in_ms: i64,
        cond: ExpireIf,
    },
    Ttl {
        key: String,
        millis: bool,
    },
    Persist(String),
    DbSize,
    Flush,
}

fn engine(op: Op) -> Step {
    Step::Engine(EngineCommand(AnyOp::Keys(op)))
}

pub(super) fn del(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    match texts(&args[1..]) {
        Ok(keys) => engine(Op::Del(keys)),
        Err(reply) => Step::Reply(reply),
    }
}

pub(super) fn exists(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    match texts(&args[1..]) {
        Ok(keys) => engine(Op::Exists(keys)),
        Err(reply) => Step::Reply(reply),
    }
}

fn expire_generic(args: &[&[u8]], seconds: bool, cmd: &str) -> Step {
    // Redis's order: options, then the time, then the key.
    let mut cond = ExpireIf::default();
    for opt in &args[3..] {
        match &opt.to_ascii_uppercase()[..] {
            b"NX" => cond.nx = true,
            b"XX" => cond.xx = true,
            b"GT" => cond.gt = true,
            b"LT" => cond.lt = true,
            _ => {
                return Step::Reply(Reply::error(format!(
                    "ERR Unsupported option {}",
                    String::from_utf8_lossy(opt)
                )));
            }
        }
    }
    if cond.nx && (cond.xx || cond.gt || cond.lt) {
        return Step::Reply(Reply::error(
            "ERR NX and XX, GT or LT options at the same time are not compatible",
        ));
    }
    if cond.gt && cond.lt {
        return Step::Reply(Reply::error(
            "ERR GT and LT options at the same time are not compatible",
        ));
    }
    let when = match integer(args[2]) {
        Ok(n) => n,
        Err(reply) => return Step::Reply(reply),
    };
    let in_ms = if seconds {
        when.checked_mul(1000)
    } else {
        Some(when)
    };
    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
    let Some(in_ms) = in_ms.filter(|ms| ms.checked_add(now).is_some()) else {
        return Step::Reply(invalid_expire(cmd));
    };
    match text(args[1]) {
        Ok(key) => engine(Op::Expire { key, in_ms, cond }),
        Err(reply) => Step::Reply(reply),
    }
}

pub(super) fn expire(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    expire_generic(args, true, "expire")
}

pub(super) fn pexpire(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    expire_generic(args, false, "pexpire")
}

fn ttl_generic(args: &[&[u8]], millis: bool) -> Step {
    match text(args[1]) {
        Ok(key) => engine(Op::Ttl { key, millis }),
        Err(reply) => Step::Reply(reply),
    }
}

pub(super) fn ttl(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    ttl_generic(args, false)
}

pub(super) fn pttl(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    ttl_generic(args, true)
}

pub(super) fn persist(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    match text(args[1]) {
        Ok(key) => engine(Op::Persist(key)),
        Err(reply) => Step::Reply(reply),
    }
}

pub(super) fn dbsize(_: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    engine(Op::DbSize)
}

/// FLUSHDB and FLUSHALL, with an optional ASYNC or SYNC (both flush
/// before answering here).
pub(super) fn flush(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    match args {
        [_] => engine(Op::Flush),
        [_, mode] if mode.eq_ignore_ascii_case(b"ASYNC") || mode.eq_ignore_ascii_case(b"SYNC") => {
            engine(Op::Flush)
        }
        _ => Step::Reply(syntax_error()),
    }
}

impl Op {
    pub(super) fn for_each_key(&self, f: &mut impl FnMut(&str, bool)) {
        match self {
            Op::Del(keys) => keys.iter().for_each(|k| f(k, true)),
            Op::Exists(keys) => keys.iter().for_each(|k| f(k, false)),
            Op::Expire { key, .. } | Op::Persist(key) => f(key, true),
            Op::Ttl { key, .. } => f(key, false),
            Op::DbSize | Op::Flush => {}
        }
    }

    pub(super) fn scope(&self) -> Scope {
        match self {
            Op::DbSize => Scope::ReadsAll,
            Op::Flush => Scope::WritesAll,
            _ => Scope::Keys,
        }
    }

    pub(super) fn execute<E: KvsEngine>(self, engine: &E) -> Executed {
        let result = match self {
            Op::Del(keys) => keys
                .into_iter()
                .try_fold(0, |n, key| match engine.remove(key) {
                    Ok(()) => Ok(n + 1),
                    Err(KvsError::KeyNotFound) => Ok(n),
                    Err(e) => Err(e),
                })
                .map(Reply::Integer),
            Op::Exists(keys) => keys
                .iter()
                .try_fold(0, |n, key| {
                    engine.get_entry(key).map(|e| n + i64::from(e.is_some()))
                })
                .map(Reply::Integer),
            Op::Expire { key, in_ms, cond } => engine
                .update(key, |old| {
                    let Some(old) = old else {
                        return (Update::Keep, 0);
                    };
                    let now = i64::try_from(now_ms()).unwrap_or(i64::MAX);
                    let when = now.saturating_add(in_ms);
                    if !cond.allows(old.expires_at, when) {
                        return (Update::Keep, 0);
                    }
                    if when <= now {
                        return (Update::Remove, 1);
                    }
                    let entry = Entry {
                        value: old.value,
                        // Positive: checked just above.
                        expires_at: when as u64,
                    };
                    (Update::Put(entry), 1)
                })
                .map(Reply::Integer),
            Op::Ttl { key, millis } => engine.get_entry(&key).map(|e| {
                Reply::Integer(match e {
                    None => -2,
                    Some(e) if e.expires_at == NO_EXPIRY => -1,
                    Some(e) => {
                        let left = e.expires_at.saturating_sub(now_ms());
                        let left = i64::try_from(left).unwrap_or(i64::MAX);
                        if millis {
                            left
                        } else {
                            left.saturating_add(500) / 1000
                        }
                    }
                })
            }),
            Op::Persist(key) => engine
                .update(key, |old| match old {
                    Some(e) if e.expires_at != NO_EXPIRY => (
                        Update::Put(Entry {
                            value: e.value,
                            expires_at: NO_EXPIRY,
                        }),
                        1,
                    ),
                    _ => (Update::Keep, 0),
                })
                .map(Reply::Integer),
            Op::DbSize => Ok(Reply::Integer(
                i64::try_from(engine.len()).unwrap_or(i64::MAX),
            )),
            Op::Flush => engine.clear().map(|()| Reply::ok()),
        };
        result.unwrap_or_else(|e| engine_error(&e)).into()
    }
}
