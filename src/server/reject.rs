//! Refusing a connection over the cap: an error the client can read in
//! whichever protocol it speaks, then close.

use std::net::SocketAddr;

use bytes::BytesMut;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::OwnedSemaphorePermit;
use tracing::debug;

use super::connection::linger;
use crate::protocol::{DEFAULT_MAX_FRAME_LEN, ErrorKind, Response, encode_frame};

/// Answers a connection over the cap with one error, then closes it;
/// holds `_permit` (its slot under `max_rejecting`) until then.
///
/// The protocol is told by the first byte, as for a served connection, if
/// it arrives within a short wait; a client that sends nothing first
/// (it waits for a greeting) gets the native error frame.
pub(crate) async fn reject(
    mut stream: TcpStream,
    peer: SocketAddr,
    max_frame_len: usize,
    _permit: OwnedSemaphorePermit,
) {
    debug!(%peer, "connection refused: too many connections");
    let mut first = [0u8; 1];
    let peeked = tokio::time::timeout(
        std::time::Duration::from_millis(100),
        stream.peek(&mut first),
    )
    .await;
    let resp = matches!(peeked, Ok(Ok(1)) if super::connection::is_resp(first[0], max_frame_len));
    let mut out = BytesMut::new();
    if resp {
        out.extend_from_slice(b"-ERR max number of clients reached\r\n");
    } else {
        let response = Response::Error {
            kind: ErrorKind::Limit,
            message: "too many connections".to_owned(),
        };
        if encode_frame(&response, DEFAULT_MAX_FRAME_LEN, &mut out).is_err() {
            return;
        }
    }
    if stream.write_all(&out).await.is_ok() {
        linger(&mut stream).await;
    }
}
