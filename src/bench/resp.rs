//! RESP2, client side: `GET`/`SET` as arrays of bulk strings, and a reply
//! recogniser that skips over any RESP2 value without copying it.

use bytes::{BufMut, BytesMut};

use super::wire::{Outcome, Wire};
use super::workload::Op;
use crate::{KvsError, Result};

/// Nesting depth of reply arrays accepted; GET and SET never answer with
/// arrays at all, so this only bounds a hostile or confused server.
const MAX_DEPTH: usize = 8;

/// The Redis protocol, version 2.
#[derive(Debug, Clone, Copy)]
pub struct RespWire;

impl Wire for RespWire {
    fn encode(op: Op, key: &str, value: &str, buf: &mut BytesMut) -> Result<()> {
        match op {
            Op::Get => {
                buf.put_slice(b"*2\r\n$3\r\nGET\r\n");
                put_bulk(buf, key.as_bytes());
            }
            Op::Set => {
                buf.put_slice(b"*3\r\n$3\r\nSET\r\n");
                put_bulk(buf, key.as_bytes());
                put_bulk(buf, value.as_bytes());
            }
        }
        Ok(())
    }

    fn parse(op: Op, buf: &[u8]) -> Result<Option<(Outcome, usize)>> {
        let Some((reply, len)) = parse_reply(buf, 0)? else {
            return Ok(None);
        };
        let outcome = match (op, reply) {
            (Op::Get, Reply::Bulk) => Outcome::Hit,
            (Op::Get, Reply::Nil) => Outcome::Miss,
            (Op::Set, Reply::Simple) => Outcome::Stored,
            (_, Reply::Error) => {
                Outcome::Error(String::from_utf8_lossy(line_body(&buf[1..len])).into_owned())
            }
            (op, other) => Outcome::Error(format!("unexpected reply to {op:?}: {other:?}")),
        };
        Ok(Some((outcome, len)))
    }
}

/// The shape of a reply; its contents are not needed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Reply {
    Simple,
    Error,
    Integer,
    Bulk,
    Nil,
    Array,
}

fn put_bulk(buf: &mut BytesMut, data: &[u8]) {
    buf.put_u8(b'$');
    put_decimal(buf, data.len());
    buf.put_slice(b"\r\n");
    buf.put_slice(data);
    buf.put_slice(b"\r\n");
}

fn put_decimal(buf: &mut BytesMut, mut n: usize) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    loop {
        at -= 1;
        digits[at] = b'0' + (n % 10) as u8;
        n /= 10;
        if n == 0 {
            break;
        }
    }
    buf.put_slice(&digits[at..]);
}

/// The line at the start of `buf` without its CRLF, and the bytes it
/// takes with the CRLF; `None` until the CRLF has arrived.
fn line(buf: &[u8]) -> Option<(&[u8], usize)> {
    let end = buf.windows(2).position(|w| w == b"\r\n")?;
    Some((&buf[..end], end + 2))
}

/// `line` minus anything from a CR on: for an error message.
fn line_body(buf: &[u8]) -> &[u8] {
    buf.split(|&b| b == b'\r').next().unwrap_or_default()
}

fn parse_int(digits: &[u8]) -> Result<i64> {
    std::str::from_utf8(digits)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| {
            KvsError::Protocol(format!(
                "bad RESP length `{}`",
                String::from_utf8_lossy(digits)
            ))
        })
}

/// One whole reply at the start of `buf` and its length in bytes.
fn parse_reply(buf: &[u8], depth: usize) -> Result<Option<(Reply, usize)>> {
    let Some(&kind) = buf.first() else {
        return Ok(None);
    };
    let Some((body, head)) = line(&buf[1..]) else {
        return Ok(None);
    };
    let head = head + 1;
    let reply = match kind {
        b'+' => (Reply::Simple, head),
        b'-' => (Reply::Error, head),
        b':' => {
            parse_int(body)?;
            (Reply::Integer, head)
        }
        b'_' => (Reply::Nil, head),
        b'$' => match parse_int(body)? {
            -1 => (Reply::Nil, head),
            n if n >= 0 => {
                let end = head + n as usize + 2;
                if buf.len() < end {
                    return Ok(None);
                }
                if &buf[end - 2..end] != b"\r\n" {
                    return Err(KvsError::Protocol("bulk string without CRLF".to_owned()));
                }
                (Reply::Bulk, end)
            }
            n => return Err(KvsError::Protocol(format!("bulk string of length {n}"))),
        },
        b'*' => match parse_int(body)? {
            -1 => (Reply::Nil, head),
            n if n >= 0 && depth < MAX_DEPTH => {
                let mut at = head;
                for _ in 0..n {
                    match parse_reply(&buf[at..], depth + 1)? {
                        Some((_, len)) => at += len,
                        None => return Ok(None),
                    }
                }
                (Reply::Array, at)
            }
            n => return Err(KvsError::Protocol(format!("unusable array of length {n}"))),
        },
        other => {
            return Err(KvsError::Protocol(format!(
                "unknown RESP reply type {:?}",
                other as char
            )));
        }
    };
    Ok(Some(reply))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn commands_are_arrays_of_bulk_strings() {
        let mut buf = BytesMut::new();
        RespWire::encode(Op::Set, "key:1", "hello", &mut buf).unwrap();
        RespWire::encode(Op::Get, "key:1", "hello", &mut buf).unwrap();
        assert_eq!(
            &buf[..],
            b"*3\r\n$3\r\nSET\r\n$5\r\nkey:1\r\n$5\r\nhello\r\n*2\r\n$3\r\nGET\r\n$5\r\nkey:1\r\n"
        );
        buf.clear();
        RespWire::encode(Op::Set, "k", &"x".repeat(4096), &mut buf).unwrap();
        assert!(buf.starts_with(b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4096\r\nxx"));
    }

    #[test]
    fn replies() {
        let cases: [(Op, &[u8], Outcome); 5] = [
            (Op::Set, b"+OK\r\n", Outcome::Stored),
            (Op::Get, b"$-1\r\n", Outcome::Miss),
            (Op::Get, b"$5\r\nhe\r\nl\r\n", Outcome::Hit),
            (Op::Get, b"$0\r\n\r\n", Outcome::Hit),
            (
                Op::Get,
                b"-ERR wrong\r\n",
                Outcome::Error("ERR wrong".into()),
            ),
        ];
        for (op, reply, want) in cases {
            assert_eq!(
                RespWire::parse(op, reply).unwrap(),
                Some((want, reply.len())),
                "{:?}",
                String::from_utf8_lossy(reply)
            );
            for cut in 0..reply.len() {
                assert_eq!(RespWire::parse(op, &reply[..cut]).unwrap(), None);
            }
        }
        // Pipelined: the first reply only.
        let two = b"+OK\r\n$-1\r\n";
        assert_eq!(
            RespWire::parse(Op::Set, two).unwrap(),
            Some((Outcome::Stored, 5))
        );
        // Replies of the wrong shape are errors; arrays are skipped whole.
        let array = b"*2\r\n$1\r\na\r\n*1\r\n:7\r\n";
        let (got, len) = RespWire::parse(Op::Get, array).unwrap().unwrap();
        assert!(matches!(got, Outcome::Error(_)));
        assert_eq!(len, array.len());
        assert!(matches!(
            RespWire::parse(Op::Get, b"+OK\r\n").unwrap(),
            Some((Outcome::Error(_), 5))
        ));
    }

    #[test]
    fn garbage_is_a_protocol_error() {
        for bad in [
            &b"?\r\n"[..],
            b"$x\r\n",
            b"$-2\r\n",
            b"$1\r\nab\r\n",
            b":\r\n",
        ] {
            assert!(RespWire::parse(Op::Get, bad).is_err(), "{bad:?}");
        }
        let deep = "*1\r\n".repeat(MAX_DEPTH + 1) + ":1\r\n";
        assert!(RespWire::parse(Op::Get, deep.as_bytes()).is_err());
    }
}
