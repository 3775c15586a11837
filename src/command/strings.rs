//! String commands: GET, SET (and SETEX, PSETEX, SETNX), GETDEL, MGET,
//! MSET, APPEND, STRLEN.

use super::{
    EngineCommand, Executed, Op as AnyOp, ServerContext, Session, Step, engine_error, integer,
    over_budget, syntax_error, text,
};
use crate::KvsEngine;
use crate::engine::{Entry, NO_EXPIRY, Update, expired_at, now_ms};
use crate::protocol::resp::{Reply, array_header_len, bulk_len};

/// Longest value `APPEND` may build: the largest bulk string a client may
/// send, so every stored value can be read back in one reply.
pub(super) const MAX_VALUE_LEN: usize = crate::protocol::DEFAULT_MAX_FRAME_LEN;

/// The expiry a write gives its key, resolved when it runs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Expiry {
    /// No expiry (a plain `SET` clears any previous one).
    Clear,
    /// Whatever the key had (`KEEPTTL`).
    Keep,
    /// This many milliseconds after the command runs.
    In(u64),
    /// At this Unix time in milliseconds.
    At(u64),
}

impl Expiry {
    /// The `expires_at` to store, given the key's current one.
    fn resolve(self, current: u64, now: u64) -> u64 {
        match self {
            Expiry::Clear => NO_EXPIRY,
            Expiry::Keep => current,
            Expiry::In(ms) => now.saturating_add(ms),
            Expiry::At(ms) => ms,
        }
    }
}

/// `SET`'s condition on the key's existence.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Cond {
    Always,
    /// Only when missing.
    Nx,
    /// Only when present.
    Xx,
}

#[derive(Debug)]
pub(super) enum Op {
    Get(String),
    Set {
        key: String,
        value: String,
        expiry: Expiry,
        cond: Cond,
        /// Answer the previous value (`GET` option).
        get: bool,
    },
    SetNx(String, String),
    GetDel(String),
    MGet(Vec<String>),
    MSet(Vec<(String, String)>),
    Append(String, String),
    Strlen(String),
}

fn engine(op: Op) -> Step {
    Step::Engine(EngineCommand(AnyOp::Strings(op)))
}

macro_rules! tri {
    ($e:expr) => {
        match $e {
            Ok(v) => v,
            Err(reply) => return Step::Reply(reply),
        }
    };
}

pub(super) fn get(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    engine(Op::Get(tri!(text(args[1]))))
}

pub(super) fn getdel(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    engine(Op::GetDel(tri!(text(args[1]))))
}

pub(super) fn strlen(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    engine(Op::Strlen(tri!(text(args[1]))))
}

pub(super) fn append(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    engine(Op::Append(tri!(text(args[1])), tri!(text(args[2]))))
}

pub(super) fn setnx(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    engine(Op::SetNx(tri!(text(args[1])), tri!(text(args[2]))))
}

pub(super) fn mget(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    engine(Op::MGet(tri!(super::texts(&args[1..]))))
}

pub(super) fn mset(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    if args.len().is_multiple_of(2) {
        return Step::Reply(super::table::wrong_arity("mset"));
    }
    let mut pairs = Vec::with_capacity(args.len() / 2);
    for pair in args[1..].chunks_exact(2) {
        pairs.push((tri!(text(pair[0])), tri!(text(pair[1]))));
    }
    engine(Op::MSet(pairs))
}

/// `ERR invalid expire time in 'cmd' command`.
pub(super) fn invalid_expire(cmd: &str) -> Reply {
    Reply::error(format!("ERR invalid expire time in '{cmd}' command"))
}

/// An expiry argument as Redis's `getExpireMillisecondsOrReply` checks it:
/// an integer, positive, in milliseconds without overflow (also once the
/// current time is added to a relative one).
fn expiry_arg(arg: &[u8], seconds: bool, absolute: bool, cmd: &str) -> Result<Expiry, Reply> {
    let n = integer(arg)?;
    if n <= 0 || (seconds && n > i64::MAX / 1000) {
        return Err(invalid_expire(cmd));
    }
    let ms = if seconds { n * 1000 } else { n };
    // Positive, so the conversion cannot fail.
    let ms = ms as u64;
    if absolute {
        return Ok(Expiry::At(ms));
    }
    if (now_ms() as i64).checked_add(ms as i64).is_none() {
        return Err(invalid_expire(cmd));
    }
    Ok(Expiry::In(ms))
}

pub(super) fn set(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    // Options first, values after, in Redis's order: `SET k v EX x NX XX`
    // is a syntax error before it is a bad integer. Repeating an option is
    // allowed (the last value wins); combining exclusive ones is not.
    let (mut nx, mut xx, mut get, mut keepttl) = (false, false, false, false);
    let mut unit: Option<(&[u8], &[u8])> = None;
    let mut i = 3;
    while i < args.len() {
        let opt = args[i].to_ascii_uppercase();
        let next = args.get(i + 1);
        match (&opt[..], next) {
            (b"NX", _) if !xx => nx = true,
            (b"XX", _) if !nx => xx = true,
            (b"GET", _) => get = true,
            (b"KEEPTTL", _) if unit.is_none() => keepttl = true,
            (kind @ (b"EX" | b"PX" | b"EXAT" | b"PXAT"), Some(arg))
                if !keepttl && unit.is_none_or(|(k, _)| k == kind) =>
            {
                let kind: &[u8] = match kind {
                    b"EX" => b"EX",
                    b"PX" => b"PX",
                    b"EXAT" => b"EXAT",
                    _ => b"PXAT",
                };
                unit = Some((kind, arg));
                i += 1;
            }
            _ => return Step::Reply(syntax_error()),
        }
        i += 1;
    }
    let expiry = match unit {
        None if keepttl => Expiry::Keep,
        None => Expiry::Clear,
        Some((kind, arg)) => {
            let seconds = kind == b"EX" || kind == b"EXAT";
            tri!(expiry_arg(arg, seconds, kind.len() == 4, "set"))
        }
    };
    let key = tri!(text(args[1]));
    let value = tri!(text(args[2]));
    let cond = match (nx, xx) {
        (true, _) => Cond::Nx,
        (_, true) => Cond::Xx,
        _ => Cond::Always,
    };
    engine(Op::Set {
        key,
        value,
        expiry,
        cond,
        get,
    })
}

fn set_expiring(args: &[&[u8]], seconds: bool, cmd: &str) -> Step {
    let key = tri!(text(args[1]));
    let expiry = tri!(expiry_arg(args[2], seconds, false, cmd));
    let value = tri!(text(args[3]));
    engine(Op::Set {
        key,
        value,
        expiry,
        cond: Cond::Always,
        get: false,
    })
}

pub(super) fn setex(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    set_expiring(args, true, "setex")
}

pub(super) fn psetex(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    set_expiring(args, false, "psetex")
}

/// A bulk reply of an optional value, or the budget error when it would
/// not fit.
fn value_reply(value: Option<String>, budget: usize) -> Reply {
    match value {
        Some(v) if bulk_len(v.len()) > budget => over_budget(budget),
        Some(v) => Reply::bulk(v),
        None => Reply::nil(),
    }
}

fn lookup(value: Option<String>, budget: usize) -> Executed {
    let hit = value.is_some();
    Executed {
        reply: value_reply(value, budget),
        hits: u64::from(hit),
        misses: u64::from(!hit),
    }
}

impl Op {
    pub(super) fn for_each_key(&self, f: &mut impl FnMut(&str, bool)) {
        match self {
            Op::Get(k) | Op::Strlen(k) => f(k, false),
            Op::Set { key, .. } => f(key, true),
            Op::SetNx(k, _) | Op::GetDel(k) | Op::Append(k, _) => f(k, true),
            Op::MGet(keys) => keys.iter().for_each(|k| f(k, false)),
            Op::MSet(pairs) => pairs.iter().for_each(|(k, _)| f(k, true)),
        }
    }

    pub(super) fn execute<E: KvsEngine>(self, engine: &E, budget: usize) -> Executed {
        let result = match self {
            Op::Get(key) => engine.get(key).map(|v| lookup(v, budget)),
            Op::GetDel(key) => engine
                .update(key, |old| match old {
                    Some(e) => (Update::Remove, Some(e.value)),
                    None => (Update::Keep, None),
                })
                .map(|v| lookup(v, budget)),
            Op::Strlen(key) => engine
                .get_entry(&key)
                .map(|e| Reply::Integer(e.map_or(0, |e| e.value.len() as i64)).into()),
            // The common case, a plain SET (or SETEX): one write, no read.
            Op::Set {
                key,
                value,
                expiry: expiry @ (Expiry::Clear | Expiry::In(_)),
                cond: Cond::Always,
                get: false,
            } => {
                let expires_at = match expiry {
                    Expiry::In(ms) => now_ms().saturating_add(ms),
                    _ => NO_EXPIRY,
                };
                engine
                    .set_expiring(key, value, expires_at)
                    .map(|()| Reply::ok().into())
            }
            Op::Set {
                key,
                value,
                expiry,
                cond,
                get,
            } => engine
                .update(key, |old| {
                    let written = match cond {
                        Cond::Always => true,
                        Cond::Nx => old.is_none(),
                        Cond::Xx => old.is_some(),
                    };
                    let current = old.as_ref().map_or(NO_EXPIRY, |e| e.expires_at);
                    let previous = old.map(|e| e.value);
                    if !written {
                        return (Update::Keep, (false, previous));
                    }
                    let now = match expiry {
                        Expiry::In(_) | Expiry::At(_) => now_ms(),
                        // Nothing to compare with: the expiry is kept or
                        // cleared.
                        Expiry::Clear | Expiry::Keep => 0,
                    };
                    let expires_at = expiry.resolve(current, now);
                    let update = if expired_at(expires_at, now) {
                        // An EXAT/PXAT in the past: set and expired at once.
                        Update::Remove
                    } else {
                        Update::Put(Entry { value, expires_at })
                    };
                    (update, (true, previous))
                })
                .map(|(written, previous)| {
                    if get {
                        value_reply(previous, budget).into()
                    } else if written {
                        Reply::ok().into()
                    } else {
                        Reply::nil().into()
                    }
                }),
            Op::SetNx(key, value) => engine
                .update(key, |old| match old {
                    Some(_) => (Update::Keep, 0),
                    None => (
                        Update::Put(Entry {
                            value,
                            expires_at: NO_EXPIRY,
                        }),
                        1,
                    ),
                })
                .map(|n| Reply::Integer(n).into()),
            Op::Append(key, value) => engine
                .update(key, |old| {
                    let (mut current, expires_at) =
                        old.map_or((String::new(), NO_EXPIRY), |e| (e.value, e.expires_at));
                    if current.len() + value.len() > MAX_VALUE_LEN {
                        return (Update::Keep, None);
                    }
                    current.push_str(&value);
                    let len = current.len() as i64;
                    (
                        Update::Put(Entry {
                            value: current,
                            expires_at,
                        }),
                        Some(len),
                    )
                })
                .map(|len| match len {
                    Some(len) => Reply::Integer(len).into(),
                    None => {
                        Reply::error("ERR string exceeds maximum allowed size (proto-max-bulk-len)")
                            .into()
                    }
                }),
            Op::MGet(keys) => Ok(mget_bounded(engine, keys, budget)),
            Op::MSet(pairs) => pairs
                .into_iter()
                .try_for_each(|(k, v)| engine.set(k, v))
                .map(|()| Reply::ok().into()),
        };
        result.unwrap_or_else(|e| engine_error(&e).into())
    }
}

/// `MGET`, stopping as soon as the reply would pass `budget` bytes.
fn mget_bounded<E: KvsEngine>(engine: &E, keys: Vec<String>, budget: usize) -> Executed {
    let mut size = array_header_len(keys.len());
    let mut items = Vec::with_capacity(keys.len());
    let (mut hits, mut misses) = (0, 0);
    for key in keys {
        let value = match engine.get(key) {
            Ok(v) => v,
            Err(e) => return engine_error(&e).into(),
        };
        size += value.as_ref().map_or(5, |v| bulk_len(v.len()));
        if size > budget {
            return over_budget(budget).into();
        }
        match value {
            Some(v) => {
                hits += 1;
                items.push(Reply::bulk(v));
            }
            None => {
                misses += 1;
                items.push(Reply::nil());
            }
        }
    }
    Executed {
        reply: Reply::array(items),
        hits,
        misses,
    }
}
