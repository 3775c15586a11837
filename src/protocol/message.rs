//! The request and response enums. Their postcard encoding is the wire
//! format: variant order and field order are part of the protocol and must
//! only ever be appended to.

use serde::{Deserialize, Serialize};

use crate::server::StatsSnapshot;
use crate::{KvsError, Result};

/// A client request.
///
/// Generic over the string type so that a client encodes borrowed `&str`
/// keys and values without copying them, and the server decodes them
/// borrowed from the request frame. Both encode identically.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request<S = String> {
    /// Liveness check; answered with [`Response::Pong`] without touching
    /// the engine.
    Ping,
    /// The value of `key`: [`Response::Value`].
    Get {
        /// The key.
        key: S,
    },
    /// Sets `key` to `value`, expiring after `ttl_ms` milliseconds when
    /// given: [`Response::Ok`].
    Set {
        /// The key.
        key: S,
        /// The value.
        value: S,
        /// Time to live in milliseconds; `None` keeps the value until it is
        /// overwritten or removed.
        ttl_ms: Option<u64>,
    },
    /// Removes `key`: [`Response::Ok`], or an error of kind
    /// [`ErrorKind::KeyNotFound`].
    Remove {
        /// The key.
        key: S,
    },
    /// The values of several keys at once: [`Response::Values`], in the
    /// order of `keys`.
    GetMany {
        /// The keys.
        keys: Vec<S>,
    },
    /// Authenticates the connection when the server requires a password:
    /// [`Response::Ok`], or an error of kind [`ErrorKind::Auth`]. Protocol
    /// version 1, appended in kvs 0.2.
    Auth {
        /// The server's password.
        password: S,
    },
    /// The server's counters: [`Response::Stats`]. Appended in kvs 0.2.
    Stats,
}

/// A server response. Responses come back in request order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Answer to [`Request::Ping`].
    Pong,
    /// Answer to a successful [`Request::Set`] or [`Request::Remove`].
    Ok,
    /// Answer to [`Request::Get`]: `None` when the key is missing.
    Value(Option<String>),
    /// Answer to [`Request::GetMany`], one entry per requested key.
    Values(Vec<Option<String>>),
    /// The request failed. Also sent unprompted just before the server
    /// closes a connection it refuses (a limit or a broken frame).
    Error {
        /// What went wrong, for programs.
        kind: ErrorKind,
        /// What went wrong, for people.
        message: String,
    },
    /// Answer to [`Request::Stats`]. Appended in kvs 0.2.
    Stats(StatsSnapshot),
}

/// The kind of a [`Response::Error`]. Encoded as its variant index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ErrorKind {
    /// `Remove` named a missing key.
    KeyNotFound,
    /// The engine failed (I/O error, corrupt data, ...).
    Server,
    /// The request broke the protocol (bad version, malformed payload).
    Protocol,
    /// A server limit was hit (frame size, connections, batch size).
    Limit,
    /// The request is well formed but cannot be served as asked (e.g. a
    /// TTL on an engine without expiry).
    InvalidInput,
    /// The connection must authenticate first, or gave a wrong password.
    Auth,
    /// The memory engine is full and its policy is `noeviction`.
    OutOfMemory,
    /// The store serves reads only for now (e.g. its disk is full).
    ReadOnly,
}

impl Response {
    /// The error response for `err`, keeping its kind.
    pub fn from_error(err: &KvsError) -> Response {
        let (kind, message) = match err {
            KvsError::KeyNotFound => (ErrorKind::KeyNotFound, "Key not found".to_owned()),
            KvsError::Protocol(m) => (ErrorKind::Protocol, m.clone()),
            KvsError::Limit(m) => (ErrorKind::Limit, m.clone()),
            KvsError::InvalidInput(m) => (ErrorKind::InvalidInput, m.clone()),
            KvsError::Auth(m) => (ErrorKind::Auth, m.clone()),
            KvsError::OutOfMemory(m) => (ErrorKind::OutOfMemory, m.clone()),
            KvsError::ReadOnly(m) => (ErrorKind::ReadOnly, m.clone()),
            other => (ErrorKind::Server, other.to_string()),
        };
        Response::Error { kind, message }
    }

    /// `Ok(self)` unless this is [`Response::Error`], which becomes the
    /// matching [`KvsError`].
    pub fn into_result(self) -> Result<Response> {
        match self {
            Response::Error { kind, message } => Err(match kind {
                ErrorKind::KeyNotFound => KvsError::KeyNotFound,
                ErrorKind::Server => KvsError::Server(message),
                ErrorKind::Protocol => KvsError::Protocol(message),
                ErrorKind::Limit => KvsError::Limit(message),
                ErrorKind::InvalidInput => KvsError::InvalidInput(message),
                ErrorKind::Auth => KvsError::Auth(message),
                ErrorKind::OutOfMemory => KvsError::OutOfMemory(message),
                ErrorKind::ReadOnly => KvsError::ReadOnly(message),
            }),
            other => Ok(other),
        }
    }
}
