//! Limits and timeouts of a running server.

use std::time::Duration;

use crate::protocol::DEFAULT_MAX_FRAME_LEN;
use crate::{KvsError, Result};

/// Every limit the server enforces, each with a default.
#[derive(Debug, Clone)]
#[non_exhaustive]
pub struct ServerConfig {
    /// Connections served at once. A client over the cap is accepted, sent
    /// a [`Limit`](crate::protocol::ErrorKind::Limit) error frame and
    /// closed, so it fails fast instead of waiting in the backlog.
    pub max_connections: usize,
    /// Largest frame payload accepted or sent (see `docs/protocol.md`).
    pub max_frame_len: usize,
    /// Requests of one connection executing at once; further pipelined
    /// requests wait in the socket buffer.
    pub max_in_flight: usize,
    /// Keys in one `GetMany`.
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
}

impl Default for ServerConfig {
    fn default() -> ServerConfig {
        ServerConfig {
            max_connections: 1024,
            max_frame_len: DEFAULT_MAX_FRAME_LEN,
            max_in_flight: 32,
            max_batch_keys: 1024,
            frame_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(300),
            shutdown_grace: Duration::from_secs(5),
        }
    }
}

impl ServerConfig {
    /// Rejects limits that would make the server unusable.
    pub fn validate(&self) -> Result<()> {
        let bad = |what: &str| Err(KvsError::InvalidInput(format!("{what} must be positive")));
        if self.max_connections == 0 {
            return bad("max_connections");
        }
        // Room for any error response with a short message.
        if self.max_frame_len < MIN_FRAME_LEN || self.max_frame_len > u32::MAX as usize {
            return Err(KvsError::InvalidInput(format!(
                "max_frame_len must be between {MIN_FRAME_LEN} and {}",
                u32::MAX
            )));
        }
        if self.max_in_flight == 0 {
            return bad("max_in_flight");
        }
        if self.frame_timeout.is_zero() {
            return bad("frame_timeout");
        }
        if self.idle_timeout.is_zero() {
            return bad("idle_timeout");
        }
        Ok(())
    }
}

/// The smallest `max_frame_len` allowed: every error response the server
/// makes up itself fits in it.
pub const MIN_FRAME_LEN: usize = 64;
