//! Protocol-neutral commands: Redis 7's argument rules, reply shapes and
//! error texts, and how each command runs against a [`KvsEngine`].
//!
//! A command runs in two steps, so the connection task never blocks and
//! never touches the engine:
//!
//! 1. [`dispatch`] (on the connection task): look the command up, check
//!    its arity and the session's authentication, parse its arguments.
//!    Commands that need no engine (`PING`, `AUTH`, `CLIENT`, `CONFIG`,
//!    ...) answer right away ([`Step::Reply`], or [`Step::Close`] for
//!    `QUIT`); the others become an [`EngineCommand`] ([`Step::Engine`]).
//! 2. [`EngineCommand::execute`] (on a pool thread): run against the
//!    engine and build the reply, stopping at the response budget.
//!
//! ```ignore
//! let ctx = Arc::new(ServerContext::new(Box::new(move || stats.snapshot())));
//! let mut session = Session::new(&ctx);
//! match dispatch(args, &mut session, &ctx) {
//!     Step::Reply(reply) => write(reply),
//!     Step::Close(reply) => { write(reply); close() }
//!     Step::Engine(cmd) => {
//!         cmd.for_each_key(|key, writes| order_after_earlier_writes(key, writes));
//!         let done = pool.run(move || cmd.execute(&engine, &ctx, max_reply_bytes));
//!         counter.lookups(done.hits, done.misses);
//!         write(done.reply)
//!     }
//! }
//! ```
//!
//! Conditional and read-modify-write commands (`SET NX/XX/GET`, `INCR`,
//! `APPEND`, `EXPIRE`, `GETDEL`, ...) each make exactly one
//! [`KvsEngine::update`] call, never a get followed by a set.
//!
//! Keys and values are UTF-8 `String`s in the engine: an argument that is
//! not UTF-8 gets [`NOT_UTF8`] at dispatch and nothing is written.

mod connection;
mod counters;
mod info;
mod keys;
mod scan;
mod strings;
mod table;

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;

use crate::protocol::resp::Reply;
use crate::server::StatsSnapshot;
use crate::{KvsEngine, KvsError};

pub use scan::glob_match;

/// The error for an argument that must be UTF-8 text and is not.
pub const NOT_UTF8: &str = "ERR invalid argument: kvs keys and values must be UTF-8 text";

/// Redis's reply to most commands before `AUTH`.
pub const NOAUTH: &str = "NOAUTH Authentication required.";

/// Redis's reply to a wrong password or user.
pub const WRONGPASS: &str = "WRONGPASS invalid username-password pair or user is disabled.";

/// The Redis version kvs reports (`HELLO`, `INFO`): clients gate features
/// on it, and kvs speaks the Redis 7.0 commands it implements.
pub const REDIS_VERSION: &str = "7.0.0";

/// Per-connection state.
#[derive(Debug)]
pub struct Session {
    id: u64,
    authenticated: bool,
    name: Option<Bytes>,
}

impl Session {
    /// A new connection's session: a fresh id, authenticated when the
    /// server has no password.
    pub fn new(ctx: &ServerContext) -> Session {
        Session {
            id: ctx.next_session_id.fetch_add(1, Ordering::Relaxed),
            authenticated: ctx.requirepass.is_none(),
            name: None,
        }
    }

    /// The id `CLIENT ID` and `HELLO` report.
    pub fn id(&self) -> u64 {
        self.id
    }

    /// Whether the connection may run every command (and so gets the full
    /// protocol limits rather than the unauthenticated ones).
    pub fn is_authenticated(&self) -> bool {
        self.authenticated
    }

    /// The name set by `CLIENT SETNAME` or `HELLO ... SETNAME`.
    pub fn name(&self) -> Option<&Bytes> {
        self.name.as_ref()
    }
}

/// Facts about the server that `INFO` reports.
#[derive(Debug, Clone, Default)]
pub struct ServerInfo {
    /// The TCP port it listens on.
    pub tcp_port: u16,
    /// The engine's name (`kvs`, `memory`).
    pub engine: String,
    /// Whether writes are persisted (`INFO persistence`).
    pub persistent: bool,
}

/// Server-wide state commands read: shared by every connection (in an
/// `Arc`), touched only briefly.
pub struct ServerContext {
    /// The password `AUTH` checks; `None`: every connection is
    /// authenticated from the start.
    pub requirepass: Option<String>,
    /// What `CONFIG GET` answers: `(name, value)` pairs, names in lower
    /// case (`save`, `appendonly`, `maxmemory`, ...); names not listed
    /// answer nothing, as unknown names do in Redis.
    pub config: Vec<(String, String)>,
    /// Facts for `INFO`.
    pub info: ServerInfo,
    stats: Box<dyn Fn() -> StatsSnapshot + Send + Sync>,
    cursors: Mutex<scan::CursorTable>,
    next_session_id: AtomicU64,
}

impl ServerContext {
    /// A context without a password, with the default `CONFIG GET` table;
    /// `stats` is called for each `INFO`.
    pub fn new(stats: Box<dyn Fn() -> StatsSnapshot + Send + Sync>) -> ServerContext {
        ServerContext {
            requirepass: None,
            config: default_config(),
            info: ServerInfo::default(),
            stats,
            cursors: Mutex::new(scan::CursorTable::default()),
            next_session_id: AtomicU64::new(1),
        }
    }

    /// Sets what `CONFIG GET name` answers (e.g. `maxmemory` and
    /// `maxmemory-policy` from the server's flags), replacing any value.
    pub fn set_config(&mut self, name: &str, value: impl Into<String>) {
        let name = name.to_ascii_lowercase();
        let value = value.into();
        match self.config.iter_mut().find(|(n, _)| *n == name) {
            Some(entry) => entry.1 = value,
            None => self.config.push((name, value)),
        }
    }

    /// Whether `user` (only `default` exists) and `password` are accepted,
    /// compared in constant time; without a password every password is
    /// (Redis's `nopass` default user). For the native protocol's `Auth`;
    /// RESP's `AUTH` and `HELLO AUTH` go through it too.
    pub fn check_password(&self, user: &[u8], password: &[u8]) -> bool {
        user == b"default"
            && self
                .requirepass
                .as_ref()
                .is_none_or(|expected| connection::password_matches(password, expected.as_bytes()))
    }

    fn stats(&self) -> StatsSnapshot {
        (self.stats)()
    }
}

/// The `CONFIG GET` answers of a server with default settings: what
/// clients and `redis-benchmark` ask for.
pub fn default_config() -> Vec<(String, String)> {
    [
        ("save", ""),
        ("appendonly", "no"),
        ("appendfsync", "everysec"),
        ("maxmemory", "0"),
        ("maxmemory-policy", "noeviction"),
        ("databases", "1"),
        ("timeout", "0"),
        ("maxclients", "1024"),
        ("proto-max-bulk-len", "16777216"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect()
}

/// What the connection does with a command.
#[derive(Debug)]
pub enum Step {
    /// Answer this.
    Reply(Reply),
    /// Answer this, then close the connection (`QUIT`).
    Close(Reply),
    /// Run this on the engine (a pool thread) and answer what it returns.
    Engine(EngineCommand),
}

/// A parsed command that needs the engine.
#[derive(Debug)]
pub struct EngineCommand(Op);

/// What [`EngineCommand::execute`] returns: the reply and the key lookups
/// it made, for the hit/miss counters.
#[derive(Debug)]
pub struct Executed {
    /// The reply.
    pub reply: Reply,
    /// Lookups that found a live value.
    pub hits: u64,
    /// Lookups that found none.
    pub misses: u64,
}

impl From<Reply> for Executed {
    fn from(reply: Reply) -> Executed {
        Executed {
            reply,
            hits: 0,
            misses: 0,
        }
    }
}

/// Every engine command; each family's module builds and runs its own.
#[derive(Debug)]
enum Op {
    Strings(strings::Op),
    Keys(keys::Op),
    Counter(counters::IncrBy),
    Scan(scan::Op),
    Info(info::Info),
}

/// How a command touches the keyspace, for ordering pipelined commands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Only the keys [`EngineCommand::for_each_key`] lists.
    Keys,
    /// Reads every key (`SCAN`, `KEYS`, `DBSIZE`, `INFO`).
    ReadsAll,
    /// Writes every key (`FLUSHDB`, `FLUSHALL`).
    WritesAll,
}

impl EngineCommand {
    /// Calls `f(key, writes)` for each key the command reads or writes.
    pub fn for_each_key(&self, mut f: impl FnMut(&str, bool)) {
        match &self.0 {
            Op::Strings(op) => op.for_each_key(&mut f),
            Op::Keys(op) => op.for_each_key(&mut f),
            Op::Counter(op) => f(&op.key, true),
            Op::Scan(_) | Op::Info(_) => {}
        }
    }

    /// The key of a plain `GET`, which the server may answer straight
    /// from the engine's bytes ([`KvsEngine::get_with`]).
    pub fn plain_get(&self) -> Option<&str> {
        match &self.0 {
            Op::Strings(strings::Op::Get(key)) => Some(key),
            _ => None,
        }
    }

    /// Whether the command touches listed keys or the whole keyspace.
    pub fn scope(&self) -> Scope {
        match &self.0 {
            Op::Keys(op) => op.scope(),
            Op::Scan(_) | Op::Info(_) => Scope::ReadsAll,
            Op::Strings(_) | Op::Counter(_) => Scope::Keys,
        }
    }

    /// Whether the command may write.
    pub fn writes(&self) -> bool {
        let mut writes = self.scope() == Scope::WritesAll;
        self.for_each_key(|_, w| writes |= w);
        writes
    }

    /// Runs the command; a reply that would pass `budget` bytes is not
    /// built and an error answers instead. Blocks: call on a pool thread.
    pub fn execute<E: KvsEngine>(self, engine: &E, ctx: &ServerContext, budget: usize) -> Executed {
        match self.0 {
            Op::Strings(op) => op.execute(engine, budget),
            Op::Keys(op) => op.execute(engine),
            Op::Counter(op) => op.execute(engine),
            Op::Scan(op) => op.execute(engine, ctx, budget),
            Op::Info(op) => op.execute(engine, ctx),
        }
    }
}

/// Runs one command's first step; see the module docs.
pub fn dispatch(args: Vec<Bytes>, session: &mut Session, ctx: &ServerContext) -> Step {
    let args: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
    table::dispatch(&args, session, ctx)
}

/// [`dispatch`] for arguments lent by the decoder
/// ([`RespDecoder::decode_with`](crate::protocol::resp::RespDecoder::decode_with)):
/// what the server calls, with no vector or reference count per command.
pub fn dispatch_args(args: &[&[u8]], session: &mut Session, ctx: &ServerContext) -> Step {
    table::dispatch(args, session, ctx)
}

/// The reply for an engine error: short and stable for the client, the
/// detail to the server log.
pub fn engine_error(e: &KvsError) -> Reply {
    match e {
        KvsError::OutOfMemory(_) => {
            Reply::error("OOM command not allowed when used memory > 'maxmemory'.")
        }
        KvsError::ReadOnly(_) => {
            tracing::warn!(error = %e, "write refused");
            Reply::error("READONLY the store serves reads only for now; see the server log")
        }
        KvsError::Limit(msg) => Reply::error(format!("ERR {msg}")),
        // The request's own fault (a key over the engine's size limit):
        // the client's error, not the server's.
        KvsError::InvalidInput(msg) => {
            tracing::debug!(error = %e, "request refused by the engine");
            Reply::error(format!("ERR {msg}"))
        }
        _ => {
            tracing::error!(error = %e, "engine error");
            Reply::error("ERR internal error; see the server log")
        }
    }
}

/// The reply that replaces one that would pass `budget` bytes.
pub fn over_budget(budget: usize) -> Reply {
    Reply::error(format!("ERR reply exceeds the maximum of {budget} bytes"))
}

/// `ERR syntax error`.
fn syntax_error() -> Reply {
    Reply::error("ERR syntax error")
}

/// `ERR value is not an integer or out of range`.
fn not_an_integer() -> Reply {
    Reply::error("ERR value is not an integer or out of range")
}

/// An argument as an integer, as Redis parses one.
fn integer(arg: &[u8]) -> Result<i64, Reply> {
    crate::protocol::resp::parse_i64(arg).ok_or_else(not_an_integer)
}

/// An argument as engine text.
fn text(arg: &[u8]) -> Result<String, Reply> {
    // Keys and values are nearly always ASCII, which is checked a word at
    // a time; `from_utf8` costs several times more on short arguments.
    if arg.is_ascii() {
        // SAFETY: every ASCII byte sequence is valid UTF-8.
        return Ok(unsafe { String::from_utf8_unchecked(arg.to_vec()) });
    }
    std::str::from_utf8(arg)
        .map(str::to_owned)
        .map_err(|_| Reply::error(NOT_UTF8))
}

/// Every argument as engine text.
fn texts(args: &[&[u8]]) -> Result<Vec<String>, Reply> {
    args.iter().map(|a| text(a)).collect()
}
