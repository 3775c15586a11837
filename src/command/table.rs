//! The command table: names, arities, flags and key positions as Redis 7
//! declares them, and the lookup, arity and authentication checks that
//! come before any command parses its arguments (in Redis's order).

use super::{
    NOAUTH, ServerContext, Session, Step, connection, counters, info, keys, scan, strings,
};
use crate::protocol::resp::Reply;

/// What parses and runs a command's first step.
type Run = fn(&[&[u8]], &mut Session, &ServerContext) -> Step;

/// One command as `COMMAND` describes it.
pub(super) struct Spec {
    /// Lower-case name.
    pub name: &'static str,
    /// Redis's arity: `n` exactly n arguments (name included), `-n` at
    /// least n.
    pub arity: i32,
    /// Redis's command flags, as `COMMAND` lists them.
    pub flags: &'static [&'static str],
    /// First key argument, last (negative: from the end), step.
    pub keys: (i32, i32, i32),
    /// Runs before authentication.
    pub no_auth: bool,
    pub run: Run,
}

const fn spec(
    name: &'static str,
    arity: i32,
    flags: &'static [&'static str],
    keys: (i32, i32, i32),
    run: Run,
) -> Spec {
    Spec {
        name,
        arity,
        flags,
        keys,
        no_auth: false,
        run,
    }
}

const NO_KEYS: (i32, i32, i32) = (0, 0, 0);
const ONE_KEY: (i32, i32, i32) = (1, 1, 1);
const ALL_KEYS: (i32, i32, i32) = (1, -1, 1);
const R: &[&str] = &["readonly", "fast"];
const W: &[&str] = &["write", "denyoom"];
const WF: &[&str] = &["write", "denyoom", "fast"];
const DEL: &[&str] = &["write"];
const CONN: &[&str] = &["noscript", "loading", "stale", "fast"];

/// Every command kvs answers.
pub(super) static COMMANDS: &[Spec] = &[
    // strings
    spec("get", 2, R, ONE_KEY, strings::get),
    spec("set", -3, W, ONE_KEY, strings::set),
    spec("setex", 4, W, ONE_KEY, strings::setex),
    spec("psetex", 4, W, ONE_KEY, strings::psetex),
    spec("setnx", 3, WF, ONE_KEY, strings::setnx),
    spec("getdel", 2, &["write", "fast"], ONE_KEY, strings::getdel),
    spec("mget", -2, R, ALL_KEYS, strings::mget),
    spec("mset", -3, W, (1, -1, 2), strings::mset),
    spec("append", 3, WF, ONE_KEY, strings::append),
    spec("strlen", 2, R, ONE_KEY, strings::strlen),
    // counters
    spec("incr", 2, WF, ONE_KEY, counters::incr),
    spec("decr", 2, WF, ONE_KEY, counters::decr),
    spec("incrby", 3, WF, ONE_KEY, counters::incrby),
    spec("decrby", 3, WF, ONE_KEY, counters::decrby),
    // keys and expiry
    spec("del", -2, DEL, ALL_KEYS, keys::del),
    spec("unlink", -2, &["write", "fast"], ALL_KEYS, keys::del),
    spec("exists", -2, R, ALL_KEYS, keys::exists),
    spec("expire", -3, &["write", "fast"], ONE_KEY, keys::expire),
    spec("pexpire", -3, &["write", "fast"], ONE_KEY, keys::pexpire),
    spec("ttl", 2, R, ONE_KEY, keys::ttl),
    spec("pttl", 2, R, ONE_KEY, keys::pttl),
    spec("persist", 2, &["write", "fast"], ONE_KEY, keys::persist),
    spec("dbsize", 1, R, NO_KEYS, keys::dbsize),
    spec("flushdb", -1, DEL, NO_KEYS, keys::flush),
    spec("flushall", -1, DEL, NO_KEYS, keys::flush),
    // scans
    spec("scan", -2, &["readonly"], NO_KEYS, scan::scan),
    spec("keys", 2, &["readonly"], NO_KEYS, scan::keys),
    // connection and server
    spec("ping", -1, &["fast", "stale"], NO_KEYS, connection::ping),
    spec("echo", 2, &["fast"], NO_KEYS, connection::echo),
    Spec {
        no_auth: true,
        ..spec("quit", -1, CONN, NO_KEYS, connection::quit)
    },
    Spec {
        no_auth: true,
        ..spec("auth", -2, CONN, NO_KEYS, connection::auth)
    },
    Spec {
        no_auth: true,
        ..spec("hello", -1, CONN, NO_KEYS, connection::hello)
    },
    spec("select", 2, CONN, NO_KEYS, connection::select),
    spec(
        "client",
        -2,
        &["noscript", "loading", "stale"],
        NO_KEYS,
        connection::client,
    ),
    spec(
        "command",
        -1,
        &["loading", "stale"],
        NO_KEYS,
        connection::command,
    ),
    spec(
        "config",
        -2,
        &["admin", "noscript", "loading", "stale"],
        NO_KEYS,
        connection::config,
    ),
    spec("info", -1, &["loading", "stale"], NO_KEYS, info::info),
    spec(
        "time",
        1,
        &["loading", "stale", "fast"],
        NO_KEYS,
        connection::time,
    ),
];

/// Longer than every command name.
const MAX_NAME: usize = 16;

/// The command named `name`, in any case.
///
/// The name is lowered once into a stack buffer, so each table entry costs
/// a length check and a plain comparison.
pub(super) fn lookup(name: &[u8]) -> Option<&'static Spec> {
    let mut lower = [0u8; MAX_NAME];
    let lower = lower.get_mut(..name.len())?;
    for (l, &c) in lower.iter_mut().zip(name) {
        *l = c.to_ascii_lowercase();
    }
    COMMANDS.iter().find(|s| s.name.as_bytes() == &lower[..])
}

/// Whether `argc` arguments (name included) fit `arity`.
pub(super) fn arity_ok(arity: i32, argc: usize) -> bool {
    let argc = i64::try_from(argc).unwrap_or(i64::MAX);
    let arity = i64::from(arity);
    if arity >= 0 {
        argc == arity
    } else {
        argc >= -arity
    }
}

/// `ERR wrong number of arguments for 'name' command`; `name` is
/// `container|sub` for a subcommand.
pub(super) fn wrong_arity(name: &str) -> Reply {
    Reply::error(format!(
        "ERR wrong number of arguments for '{name}' command"
    ))
}

/// Redis's reply to an unknown command: its name and the start of its
/// arguments, each quoted, at most about 128 bytes of them.
pub(super) fn unknown_command(args: &[&[u8]]) -> Reply {
    let name = args.first().map(|n| lossy(n, 128)).unwrap_or_default();
    let mut listed = String::new();
    for arg in args.iter().skip(1) {
        if listed.len() >= 128 {
            break;
        }
        let room = 128 - listed.len();
        listed.push('\'');
        listed.push_str(&lossy(arg, room));
        listed.push_str("' ");
    }
    Reply::error(format!(
        "ERR unknown command '{name}', with args beginning with: {listed}"
    ))
}

/// `ERR unknown subcommand 'x'. Try CONTAINER HELP.`
pub(super) fn unknown_subcommand(sub: &[u8], container: &str) -> Reply {
    Reply::error(format!(
        "ERR unknown subcommand '{}'. Try {container} HELP.",
        lossy(sub, 128)
    ))
}

/// At most `max` bytes of `b` as text, as Redis's `%.*s` prints them.
fn lossy(b: &[u8], max: usize) -> String {
    String::from_utf8_lossy(&b[..b.len().min(max)]).into_owned()
}

pub(super) fn dispatch(args: &[&[u8]], session: &mut Session, ctx: &ServerContext) -> Step {
    let Some(name) = args.first() else {
        return Step::Reply(unknown_command(args));
    };
    let Some(spec) = lookup(name) else {
        return Step::Reply(unknown_command(args));
    };
    if !arity_ok(spec.arity, args.len()) {
        return Step::Reply(wrong_arity(spec.name));
    }
    if !session.authenticated && !spec.no_auth {
        return Step::Reply(Reply::error(NOAUTH));
    }
    (spec.run)(args, session, ctx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_name_is_found_in_any_case() {
        for spec in COMMANDS {
            assert!(spec.name.len() < MAX_NAME, "{}", spec.name);
            assert_eq!(spec.name, spec.name.to_ascii_lowercase());
            let upper = spec.name.to_ascii_uppercase();
            for name in [spec.name.as_bytes(), upper.as_bytes()] {
                assert_eq!(lookup(name).map(|s| s.name), Some(spec.name));
            }
        }
        assert_eq!(lookup(b"gEt").map(|s| s.name), Some("get"));
        for unknown in [
            &b""[..],
            b"ge",
            b"gett",
            b"getxxxxxxxxxxxxxxxxxxxx",
            b"g\xc3\xa9t",
        ] {
            assert!(lookup(unknown).is_none(), "{unknown:?}");
        }
    }
}
