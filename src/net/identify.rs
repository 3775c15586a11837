//! Naming what answered when a kvs client reaches something else: a Redis
//! server, an HTTP server, or bytes of no known protocol. The errors say
//! so instead of "frame of 1213486160 bytes exceeds the maximum".
//!
//! A kvs server's reply starts with a 4-byte big-endian frame length, far
//! under 2^24, so its first byte is 0; RESP replies start with one of
//! `+ - : $ * _`, HTTP with `HTTP/`. A Redis server says nothing at all to
//! a kvs frame (it waits, for a line end it cannot find after a NUL), so
//! [`probe`] asks on a second connection: a native `Ping` frame, which a
//! kvs server answers (its RESP side is chosen by the first byte, so it is
//! not involved) and most HTTP servers refuse with a 400; if nothing comes
//! back, 64 KiB of filler, which makes Redis give up on the line with an
//! error reply.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::protocol::PROTOCOL_VERSION;

/// A native `Ping` frame (`docs/protocol.md`).
const PING: [u8; 6] = [0, 0, 0, 2, PROTOCOL_VERSION, 0];
/// How long the probe waits for an answer to its `Ping` alone.
const PING_WAIT: Duration = Duration::from_millis(300);
/// Filler sent after an unanswered `Ping`: Redis reads a buffer that starts
/// with NUL as an inline command whose line end it never finds (it looks
/// for it with `strchr`), and answers `-ERR Protocol error: too big inline
/// request` only once more than 64 KiB are buffered.
const FILLER_LEN: usize = 64 * 1024 + 1;
/// The reply of a kvs server to the probe's `Ping`: a `Pong` frame.
const PONG: [u8; 6] = [0, 0, 0, 2, PROTOCOL_VERSION, 0];
/// Bytes of a foreign reply quoted in an error.
const QUOTE_LEN: usize = 60;

/// What a peer that is not a kvs server appears to be, from the first
/// bytes it sent, as the end of a sentence about `addr`; `None` when the
/// bytes could be the start of a kvs frame (or there are none).
///
/// For example: "the server at 127.0.0.1:6379 answered in the Redis
/// protocol (RESP), not kvs's: `-ERR unknown command`".
pub fn describe_foreign(addr: &str, first: &[u8]) -> Option<String> {
    let head = *first.first()?;
    if head == 0 {
        return None;
    }
    let quoted = quote(first);
    Some(if first.starts_with(b"HTTP/") {
        format!("the server at {addr} looks like HTTP, not kvs: it answered `{quoted}`")
    } else if looks_like_resp(first) {
        format!(
            "the server at {addr} answered in the Redis protocol (RESP), not kvs's: `{quoted}` \
             (for Redis use a Redis client, or kvs-bench --protocol resp)"
        )
    } else if first.starts_with(b"SSH-") {
        format!("the server at {addr} is an SSH server, not kvs: `{quoted}`")
    } else if looks_textual(first) {
        format!("the server at {addr} does not speak kvs's protocol: it answered `{quoted}`")
    } else {
        let hex: Vec<String> = first.iter().take(16).map(|b| format!("{b:02x}")).collect();
        format!(
            "the server at {addr} does not speak kvs's protocol: its reply starts with bytes {}",
            hex.join(" ")
        )
    })
}

/// Asks the server at `peer` on a fresh connection what it speaks, for a
/// connection whose first reply is slow to come: `Some(description)` when
/// it answers as a foreign protocol, `None` when it answers as kvs, says
/// nothing within `wait`, or cannot be reached (the caller keeps waiting on
/// its own connection then).
pub async fn probe(peer: SocketAddr, shown_as: &str, wait: Duration) -> Option<String> {
    let ask = async {
        let mut stream = TcpStream::connect(peer).await.ok()?;
        stream.write_all(&PING).await.ok()?;
        let mut first = read_some(&mut stream, PING_WAIT).await;
        if first.is_empty() {
            stream.write_all(&[b' '; FILLER_LEN]).await.ok()?;
            first = read_some(&mut stream, wait).await;
        }
        if first.starts_with(&PONG) {
            return None;
        }
        describe_foreign(shown_as, &first)
    };
    tokio::time::timeout(wait, ask).await.ok().flatten()
}

/// The bytes that arrive within `wait` (enough to tell a `Pong` from
/// anything else), or fewer when the peer closes.
async fn read_some(stream: &mut TcpStream, wait: Duration) -> Vec<u8> {
    let mut buf = Vec::with_capacity(128);
    let _ = tokio::time::timeout(wait, async {
        while buf.len() < PONG.len() {
            match stream.read_buf(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) if buf[0] != 0 => break,
                Ok(_) => {}
            }
        }
    })
    .await;
    buf
}

/// A RESP2/3 reply's start: `+OK`, `-ERR ...`, `$5`, `*2`, `:1`, `$-1`,
/// `_` (RESP3 null). Error text may echo any bytes, so only the type byte
/// and the one after it are judged.
fn looks_like_resp(first: &[u8]) -> bool {
    match first {
        [b'+' | b'-', next, ..] => next.is_ascii_uppercase(),
        [b'$' | b'*' | b':', next, ..] => next.is_ascii_digit() || *next == b'-',
        [b'_', b'\r', ..] => true,
        _ => false,
    }
}

fn looks_textual(bytes: &[u8]) -> bool {
    bytes
        .iter()
        .take(QUOTE_LEN)
        .all(|&b| b == b'\r' || b == b'\n' || b == b'\t' || (0x20..0x7f).contains(&b))
}

/// The first line of `bytes`, lossily decoded and cut to [`QUOTE_LEN`].
fn quote(bytes: &[u8]) -> String {
    let line = bytes
        .split(|&b| b == b'\r' || b == b'\n')
        .next()
        .unwrap_or_default();
    let cut = &line[..line.len().min(QUOTE_LEN)];
    String::from_utf8_lossy(cut)
        .chars()
        .map(|c| if c.is_control() { '.' } else { c })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_what_answered() {
        let at = "h:1";
        let redis = describe_foreign(at, b"-ERR unknown command '\0\0'\r\n").unwrap();
        assert!(redis.contains("Redis protocol"), "{redis}");
        assert!(redis.contains("h:1"), "{redis}");
        let pong = describe_foreign(at, b"+PONG\r\n").unwrap();
        assert!(pong.contains("Redis protocol"), "{pong}");
        let http = describe_foreign(at, b"HTTP/1.1 400 Bad Request\r\nServer: x\r\n").unwrap();
        assert!(http.contains("looks like HTTP"), "{http}");
        assert!(http.contains("`HTTP/1.1 400 Bad Request`"), "{http}");
        let ssh = describe_foreign(at, b"SSH-2.0-OpenSSH_9.2\r\n").unwrap();
        assert!(ssh.contains("SSH"), "{ssh}");
        let binary = describe_foreign(at, &[0x16, 0x03, 0x01, 0xff]).unwrap();
        assert!(binary.contains("16 03 01 ff"), "{binary}");
        // A kvs frame header, or nothing yet: not foreign.
        assert_eq!(describe_foreign(at, &[0, 0, 0, 2, 1, 0]), None);
        assert_eq!(describe_foreign(at, &[]), None);
    }
}
