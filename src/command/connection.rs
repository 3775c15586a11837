//! Connection and server commands answered on the connection task:
//! PING, ECHO, QUIT, AUTH, HELLO, SELECT, CLIENT, COMMAND, CONFIG, TIME.

use std::time::{SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::table::{COMMANDS, Spec, arity_ok, unknown_subcommand, wrong_arity};
use super::{
    REDIS_VERSION, ServerContext, Session, Step, WRONGPASS, glob_match, integer, syntax_error,
};
use crate::protocol::resp::Reply;

fn reply(r: Reply) -> Step {
    Step::Reply(r)
}

pub(super) fn ping(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    match args {
        [_] => reply(Reply::simple("PONG")),
        [_, msg] => reply(Reply::bulk(Bytes::copy_from_slice(msg))),
        _ => reply(wrong_arity("ping")),
    }
}

pub(super) fn echo(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    reply(Reply::bulk(Bytes::copy_from_slice(args[1])))
}

pub(super) fn quit(_: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    Step::Close(Reply::ok())
}

/// Compares a password in constant time; the one comparison the native
/// `Auth` uses too.
pub(super) fn password_matches(given: &[u8], expected: &[u8]) -> bool {
    crate::server::constant_time_eq(expected, given)
}

/// Checks `user`/`password` against the server's; `Err` is the reply to
/// a refusal. Only the `default` user exists; without a password it
/// accepts any password, as Redis's `nopass` default user does.
fn authenticate(ctx: &ServerContext, user: &[u8], password: &[u8]) -> Result<(), Reply> {
    let ok = user == b"default"
        && ctx
            .requirepass
            .as_ref()
            .is_none_or(|expected| password_matches(password, expected.as_bytes()));
    if ok {
        Ok(())
    } else {
        Err(Reply::error(WRONGPASS))
    }
}

pub(super) fn auth(args: &[&[u8]], session: &mut Session, ctx: &ServerContext) -> Step {
    let result = match args {
        [_, password] => {
            if ctx.requirepass.is_none() {
                return reply(Reply::error(
                    "ERR AUTH <password> called without any password configured for the default \
                     user. Are you sure your configuration is correct?",
                ));
            }
            authenticate(ctx, b"default", password)
        }
        [_, user, password] => authenticate(ctx, user, password),
        _ => return reply(syntax_error()),
    };
    match result {
        Ok(()) => {
            session.authenticated = true;
            reply(Reply::ok())
        }
        Err(refusal) => reply(refusal),
    }
}

/// Whether Redis accepts `name` as a client name: printable ASCII without
/// spaces (empty clears the name).
fn valid_client_name(name: &[u8]) -> bool {
    name.iter().all(|&b| (b'!'..=b'~').contains(&b))
}

fn invalid_client_name() -> Reply {
    Reply::error("ERR Client names cannot contain spaces, newlines or special characters.")
}

fn set_name(session: &mut Session, name: &[u8]) {
    session.name = (!name.is_empty()).then(|| Bytes::copy_from_slice(name));
}

/// `HELLO [protover [AUTH user pass] [SETNAME name]]`. Only RESP2 is
/// spoken: `HELLO 3` answers `-NOPROTO` so RESP3 clients fall back.
pub(super) fn hello(args: &[&[u8]], session: &mut Session, ctx: &ServerContext) -> Step {
    let mut resp3 = false;
    if let Some(version) = args.get(1) {
        match crate::protocol::resp::parse_i64(version) {
            None => {
                return reply(Reply::error(
                    "ERR Protocol version is not an integer or out of range",
                ));
            }
            Some(2) => {}
            // Refused only after the options and authentication are
            // checked, as Redis orders them, and with no side effect.
            Some(3) => resp3 = true,
            Some(_) => return reply(no_proto()),
        }
    }
    let mut credentials = None;
    let mut name = None;
    let mut j = 2;
    while j < args.len() {
        let more = args.len() - 1 - j;
        let opt = &args[j];
        if opt.eq_ignore_ascii_case(b"AUTH") && more >= 2 {
            credentials = Some((&args[j + 1], &args[j + 2]));
            j += 2;
        } else if opt.eq_ignore_ascii_case(b"SETNAME") && more >= 1 {
            name = Some(&args[j + 1]);
            j += 1;
        } else {
            return reply(Reply::error(format!(
                "ERR Syntax error in HELLO option '{}'",
                String::from_utf8_lossy(opt)
            )));
        }
        j += 1;
    }
    if let Some((user, password)) = credentials {
        if let Err(refusal) = authenticate(ctx, user, password) {
            return reply(refusal);
        }
        if resp3 {
            return reply(no_proto());
        }
        session.authenticated = true;
    }
    if !session.authenticated {
        return reply(Reply::error(
            "NOAUTH HELLO must be called with the client already authenticated, otherwise the \
             HELLO AUTH <user> <pass> option can be used to authenticate the client and select \
             the RESP protocol version at the same time",
        ));
    }
    if resp3 {
        return reply(no_proto());
    }
    if let Some(name) = name {
        if !valid_client_name(name) {
            return reply(invalid_client_name());
        }
        set_name(session, name);
    }
    let id = i64::try_from(session.id).unwrap_or(i64::MAX);
    reply(Reply::array(vec![
        Reply::bulk("server"),
        Reply::bulk("kvs"),
        Reply::bulk("version"),
        Reply::bulk(REDIS_VERSION),
        Reply::bulk("proto"),
        Reply::Integer(2),
        Reply::bulk("id"),
        Reply::Integer(id),
        Reply::bulk("mode"),
        Reply::bulk("standalone"),
        Reply::bulk("role"),
        Reply::bulk("master"),
        Reply::bulk("modules"),
        Reply::array(Vec::new()),
    ]))
}

fn no_proto() -> Reply {
    Reply::error("NOPROTO unsupported protocol version")
}

/// `SELECT 0`; kvs has one database.
pub(super) fn select(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    match integer(args[1]) {
        Ok(0) => reply(Reply::ok()),
        // Redis reads the index as a C int, with this (sic) message.
        Ok(n) if i32::try_from(n).is_err() => reply(Reply::error(
            "ERR value is out of range, value must between -2147483648 and 2147483647",
        )),
        Ok(_) => reply(Reply::error("ERR DB index is out of range")),
        Err(r) => reply(r),
    }
}

/// Checks a subcommand's arity; `Err` is the reply.
fn sub_arity(args: &[&[u8]], container: &str, sub: &str, arity: i32) -> Result<(), Step> {
    if arity_ok(arity, args.len()) {
        Ok(())
    } else {
        Err(reply(wrong_arity(&format!("{container}|{sub}"))))
    }
}

macro_rules! arity {
    ($args:expr, $container:expr, $sub:expr, $arity:expr) => {
        if let Err(step) = sub_arity($args, $container, $sub, $arity) {
            return step;
        }
    };
}

pub(super) fn client(args: &[&[u8]], session: &mut Session, _: &ServerContext) -> Step {
    let sub = args[1].to_ascii_lowercase();
    match &sub[..] {
        b"setname" => {
            arity!(args, "client", "setname", 3);
            if !valid_client_name(args[2]) {
                return reply(invalid_client_name());
            }
            set_name(session, args[2]);
            reply(Reply::ok())
        }
        b"getname" => {
            arity!(args, "client", "getname", 2);
            reply(Reply::Bulk(session.name.clone()))
        }
        b"id" => {
            arity!(args, "client", "id", 2);
            reply(Reply::Integer(
                i64::try_from(session.id).unwrap_or(i64::MAX),
            ))
        }
        b"setinfo" => {
            // Redis 7.2: client libraries announce themselves; accepted
            // and not kept.
            arity!(args, "client", "setinfo", 4);
            let attr = &args[2];
            if attr.eq_ignore_ascii_case(b"lib-name") || attr.eq_ignore_ascii_case(b"lib-ver") {
                reply(Reply::ok())
            } else {
                reply(Reply::error(format!(
                    "ERR Unrecognized option '{}'",
                    String::from_utf8_lossy(attr)
                )))
            }
        }
        _ => reply(unknown_subcommand(args[1], "CLIENT")),
    }
}

/// One `COMMAND` entry, in Redis 7's ten-field shape.
fn command_entry(spec: &Spec) -> Reply {
    let flags = spec.flags.iter().map(|f| Reply::simple(*f)).collect();
    Reply::array(vec![
        Reply::bulk(spec.name),
        Reply::Integer(i64::from(spec.arity)),
        Reply::array(flags),
        Reply::Integer(i64::from(spec.keys.0)),
        Reply::Integer(i64::from(spec.keys.1)),
        Reply::Integer(i64::from(spec.keys.2)),
        Reply::array(Vec::new()),
        Reply::array(Vec::new()),
        Reply::array(Vec::new()),
        Reply::array(Vec::new()),
    ])
}

pub(super) fn command(args: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    let Some(sub) = args.get(1) else {
        return reply(Reply::array(COMMANDS.iter().map(command_entry).collect()));
    };
    match &sub.to_ascii_lowercase()[..] {
        b"count" => {
            arity!(args, "command", "count", 2);
            reply(Reply::Integer(COMMANDS.len() as i64))
        }
        b"info" => {
            arity!(args, "command", "info", -2);
            let names: &[&[u8]] = &args[2..];
            let entries = if names.is_empty() {
                COMMANDS.iter().map(command_entry).collect()
            } else {
                names
                    .iter()
                    .map(|n| super::table::lookup(n).map_or(Reply::Array(None), command_entry))
                    .collect()
            };
            reply(Reply::array(entries))
        }
        b"list" => {
            arity!(args, "command", "list", -2);
            reply(Reply::array(
                COMMANDS.iter().map(|s| Reply::bulk(s.name)).collect(),
            ))
        }
        b"docs" => {
            // No documentation is served: clients fall back to their own.
            arity!(args, "command", "docs", -2);
            reply(Reply::array(Vec::new()))
        }
        _ => reply(unknown_subcommand(sub, "COMMAND")),
    }
}

pub(super) fn config(args: &[&[u8]], _: &mut Session, ctx: &ServerContext) -> Step {
    match &args[1].to_ascii_lowercase()[..] {
        b"get" => {
            arity!(args, "config", "get", -3);
            // As Redis: a plain name answers under the name as given, a
            // pattern under each matching name; each setting once.
            let mut out = Vec::new();
            let mut seen = vec![false; ctx.config.len()];
            for given in &args[2..] {
                let pattern = given.to_ascii_lowercase();
                let plain = !pattern.iter().any(|b| b"[*?".contains(b));
                for (i, (name, value)) in ctx.config.iter().enumerate() {
                    let hit = if plain {
                        pattern == name.as_bytes()
                    } else {
                        glob_match(&pattern, name.as_bytes())
                    };
                    if hit && !seen[i] {
                        seen[i] = true;
                        out.push(if plain {
                            Reply::bulk(Bytes::copy_from_slice(given))
                        } else {
                            Reply::bulk(name.clone())
                        });
                        out.push(Reply::bulk(value.clone()));
                    }
                }
            }
            reply(Reply::array(out))
        }
        b"set" => {
            arity!(args, "config", "set", -4);
            reply(Reply::error(
                "ERR CONFIG SET is not supported by kvs; restart with new flags",
            ))
        }
        _ => reply(unknown_subcommand(args[1], "CONFIG")),
    }
}

pub(super) fn time(_: &[&[u8]], _: &mut Session, _: &ServerContext) -> Step {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap_or_default();
    reply(Reply::array(vec![
        Reply::bulk(now.as_secs().to_string()),
        Reply::bulk(now.subsec_micros().to_string()),
    ]))
}
