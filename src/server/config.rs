//! Limits and timeouts of a running server.

use std::fmt;
use std::time::Duration;

use crate::command::ServerInfo;
use crate::protocol::DEFAULT_MAX_FRAME_LEN;
use crate::{KvsError, Result};

/// Every limit the server enforces, each with a default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Connections served at once. A client over the cap is accepted, sent
    /// a [`Limit`](crate::protocol::ErrorKind::Limit) error and closed, so
    /// it fails fast instead of waiting in the backlog.
    pub max_connections: usize,
    /// Connections over the cap being refused at once; past this they are
    /// closed without an answer, so a flood cannot pin tasks and fds.
    pub max_rejecting: usize,
    /// Largest frame payload accepted or sent (see `docs/protocol.md`);
    /// also the largest RESP bulk string and the largest reply.
    pub max_frame_len: usize,
    /// Bytes of partial requests buffered across all connections (beyond
    /// a small free allowance per connection). A connection that needs
    /// more waits for budget while its frame timeout runs.
    pub input_budget: usize,
    /// Bytes of large replies (over 64 KiB each) built and not yet
    /// written, across all connections. A large reply that does not fit
    /// is answered with an error instead (Redis's nearest equivalent is
    /// `client-output-buffer-limit`).
    pub reply_budget: usize,
    /// Requests of one connection executing at once; further pipelined
    /// requests wait in the socket buffer.
    pub max_in_flight: usize,
    /// Keys in one `GetMany` or one RESP command (`MGET`, `DEL`, `MSET`...).
    pub max_batch_keys: usize,
    /// A frame whose first byte has arrived must be complete within this
    /// time, and a response that has started going out must make progress
    /// within it; otherwise the connection is dropped (slowloris, stalled
    /// readers).
    pub frame_timeout: Duration,
    /// A connection with no request for this long is closed.
    pub idle_timeout: Duration,
    /// After shutdown starts, a connection still not done (its client not
    /// reading its responses) is dropped after this long.
    pub shutdown_grace: Duration,
    /// When set, clients must authenticate (native `Auth`, RESP `AUTH`).
    pub password: Option<Password>,
    /// What RESP `INFO` says about the server (engine, persistence); the
    /// TCP port is filled in from the listener.
    pub info: ServerInfo,
    /// `CONFIG GET` answers beyond the defaults (`maxmemory`,
    /// `appendfsync`, ...), set from the server's flags.
    pub config_get: Vec<(String, String)>,
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_connections: 1024,
            max_rejecting: 64,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            input_budget: 256 << 20,
            reply_budget: 256 << 20,
            max_in_flight: 32,
            max_batch_keys: 4096,
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
            password: None,
            info: ServerInfo::default(),
            config_get: Vec::new(),
        }
    }
}

/// The longest timeout accepted: a year. Longer values would only hide a
/// typo, and every deadline stays far from overflowing an `Instant`.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(365 * 24 * 3600);

/// The largest `max_frame_len`: 256 MiB. It keeps the first byte of a
/// native frame (the high byte of its length) at or below 0x10, apart from
/// the first byte of any RESP request (`*` or a letter).
pub const MAX_FRAME_LEN: usize = 256 << 20;

/// Most connections accepted (far above any file descriptor limit).
pub const MAX_CONNECTIONS: usize = 1 << 20;

impl ServerConfig {
    /// Rejects limits that would make the server unusable or overflow.
    pub fn validate(&self) -> Result<()> {
        let bad = |msg: String| Err(KvsError::InvalidInput(msg));
        if self.max_connections == 0 || self.max_connections > MAX_CONNECTIONS {
            return bad(format!(
                "max_connections must be between 1 and {MAX_CONNECTIONS}"
            ));
        }
        if self.max_rejecting == 0 || self.max_rejecting > MAX_CONNECTIONS {
            return bad(format!(
                "max_rejecting must be between 1 and {MAX_CONNECTIONS}"
            ));
        }
        // Room for any error response with a short message.
        if !(MIN_FRAME_LEN..=MAX_FRAME_LEN).contains(&self.max_frame_len) {
            return bad(format!(
                "max_frame_len must be between {MIN_FRAME_LEN} and {MAX_FRAME_LEN}"
            ));
        }
        // One connection's buffer may reach twice a frame while it grows.
        let min_budget = 2 * self.max_frame_len;
        if self.input_budget < min_budget || self.input_budget > u32::MAX as usize {
            return bad(format!(
                "input_budget must be between twice max_frame_len ({min_budget}) and {}",
                u32::MAX
            ));
        }
        // Room for the largest reply at least twice over.
        if self.reply_budget < min_budget {
            return bad(format!(
                "reply_budget must be at least twice max_frame_len ({min_budget})"
            ));
        }
        if self.max_in_flight == 0 || self.max_in_flight > 1 << 16 {
            return bad("max_in_flight must be between 1 and 65536".to_owned());
        }
        if self.max_batch_keys == 0 || self.max_batch_keys > 1 << 20 {
            return bad("max_batch_keys must be between 1 and 1048576".to_owned());
        }
        for (name, value) in [
            ("frame_timeout", self.frame_timeout),
            ("idle_timeout", self.idle_timeout),
            ("shutdown_grace", self.shutdown_grace),
        ] {
            if value.is_zero() && name != "shutdown_grace" {
                return bad(format!("{name} must be positive"));
            }
            if value > MAX_TIMEOUT {
                return bad(format!(
                    "{name} of {}s is over the maximum of {}s",
                    value.as_secs(),
                    MAX_TIMEOUT.as_secs()
                ));
            }
        }
        Ok(())
    }
}

/// The smallest `max_frame_len` allowed: every error response the server
/// makes up itself fits in it.
pub const MIN_FRAME_LEN: usize = 256;

/// The server's password: compared in constant time, never printed.
#[derive(Clone)]
pub struct Password(String);

impl Password {
    /// Wraps `password`; empty passwords are refused (Redis treats an
    /// empty `requirepass` as none).
    pub fn new(password: String) -> Result<Password> {
        if password.is_empty() {
            return Err(KvsError::InvalidInput("the password is empty".to_owned()));
        }
        Ok(Password(password))
    }

    /// The password itself, for the RESP command layer's own check.
    pub(crate) fn expose(&self) -> &str {
        &self.0
    }

    /// Whether `candidate` is the password, in time that depends only on
    /// the lengths (a byte-wise early exit would tell an attacker how much
    /// of a guess was right).
    pub fn matches(&self, candidate: &str) -> bool {
        constant_time_eq(self.0.as_bytes(), candidate.as_bytes())
    }
}

/// Whether `a == b`, in time that depends only on the lengths (a byte-wise
/// early exit would tell an attacker how much of a guessed password was
/// right). Both protocols' password checks go through it.
pub(crate) fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..a.len().max(b.len()) {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0xff);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}
