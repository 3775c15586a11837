//! The protocol seam of the load generator: how a request is written and
//! how a reply is recognised, for each wire protocol the harness speaks.
//!
//! A [`Wire`] only encodes into and parses out of byte buffers; the
//! connection driver owns the socket. Implementations are zero-sized and
//! used through generics, so the hot loop is monomorphised per protocol.

use bytes::BytesMut;

use super::workload::Op;
use crate::Result;

/// What a reply said about its request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// A GET found its key.
    Hit,
    /// A GET found nothing.
    Miss,
    /// A SET was acknowledged.
    Stored,
    /// The server answered with an error (its message), or with a reply
    /// that does not fit the request.
    Error(String),
}

/// One wire protocol, client side.
pub trait Wire: Send + Sync + 'static {
    /// Appends one request to `buf`.
    fn encode(op: Op, key: &str, value: &str, buf: &mut BytesMut) -> Result<()>;

    /// Recognises the reply at the start of `buf`, which answers a request
    /// of kind `op`: `Ok(Some((outcome, bytes)))` once the whole reply is
    /// there, `Ok(None)` while it is incomplete, `Err` when the bytes
    /// break the protocol (the connection cannot be trusted after that).
    fn parse(op: Op, buf: &[u8]) -> Result<Option<(Outcome, usize)>>;
}
