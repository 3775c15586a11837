//! The kvs framed protocol, client side, without allocating per reply.
//!
//! Requests go through [`encode_frame`], like [`crate::KvsClient`]. Replies
//! are decoded into [`WireResponse`], a borrowing mirror of
//! [`Response`](crate::protocol::Response): a GET's value is a slice of the
//! read buffer instead of a fresh `String`, so the harness does not pay an
//! allocation, a copy and a UTF-8 check per hit that the server does not.
//! A unit test keeps the mirror in step with `Response`.

use bytes::BytesMut;
use serde::Deserialize;

use super::wire::{Outcome, Wire};
use super::workload::Op;
use crate::protocol::{
    DEFAULT_MAX_FRAME_LEN, ErrorKind, HEADER_LEN, PROTOCOL_VERSION, Request, encode_frame,
};
use crate::{KvsError, Result};

/// The kvs protocol.
#[derive(Debug, Clone, Copy)]
pub struct KvsWire;

/// [`Response`](crate::protocol::Response) with borrowed payloads; same
/// variants in the same order, hence the same postcard encoding.
#[derive(Debug, Deserialize)]
enum WireResponse<'a> {
    Pong,
    Ok,
    Value(#[serde(borrow)] Option<&'a [u8]>),
    Values(
        #[serde(borrow)]
        #[expect(dead_code, reason = "decoded only to be reported as unexpected")]
        Vec<Option<&'a [u8]>>,
    ),
    Error {
        kind: ErrorKind,
        #[serde(borrow)]
        message: &'a [u8],
    },
}

impl Wire for KvsWire {
    fn encode(op: Op, key: &str, value: &str, buf: &mut BytesMut) -> Result<()> {
        match op {
            Op::Get => encode_frame(&Request::Get { key }, DEFAULT_MAX_FRAME_LEN, buf),
            Op::Set => {
                let request = Request::Set {
                    key,
                    value,
                    ttl_ms: None,
                };
                encode_frame(&request, DEFAULT_MAX_FRAME_LEN, buf)
            }
        }
    }

    fn parse(op: Op, buf: &[u8]) -> Result<Option<(Outcome, usize)>> {
        let Some(head) = buf.first_chunk::<HEADER_LEN>() else {
            return Ok(None);
        };
        let len = u32::from_be_bytes(*head) as usize;
        if len > DEFAULT_MAX_FRAME_LEN {
            return Err(KvsError::Protocol(format!(
                "reply frame of {len} bytes exceeds {DEFAULT_MAX_FRAME_LEN}"
            )));
        }
        let Some(payload) = buf.get(HEADER_LEN..HEADER_LEN + len) else {
            return Ok(None);
        };
        let body = match payload.split_first() {
            Some((&PROTOCOL_VERSION, body)) => body,
            Some((version, _)) => {
                return Err(KvsError::Protocol(format!(
                    "reply with protocol version {version}, expected {PROTOCOL_VERSION}"
                )));
            }
            None => return Err(KvsError::Protocol("empty reply frame".to_owned())),
        };
        let response: WireResponse<'_> = match postcard::take_from_bytes(body) {
            Ok((response, [])) => response,
            Ok(_) => return Err(KvsError::Protocol("trailing bytes in a reply".to_owned())),
            Err(e) => return Err(KvsError::Protocol(format!("malformed reply: {e}"))),
        };
        let outcome = match (op, response) {
            (Op::Get, WireResponse::Value(Some(_))) => Outcome::Hit,
            (Op::Get, WireResponse::Value(None)) => Outcome::Miss,
            (Op::Set, WireResponse::Ok) => Outcome::Stored,
            (_, WireResponse::Error { kind, message }) => {
                Outcome::Error(format!("{kind:?}: {}", String::from_utf8_lossy(message)))
            }
            (op, other) => Outcome::Error(format!("unexpected reply to {op:?}: {other:?}")),
        };
        Ok(Some((outcome, HEADER_LEN + len)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{Response, decode_message};

    fn frame(response: &Response) -> BytesMut {
        let mut buf = BytesMut::new();
        encode_frame(response, 1 << 20, &mut buf).unwrap();
        buf
    }

    #[test]
    fn mirror_reads_every_response() {
        let cases = [
            (
                Op::Get,
                Response::Value(Some("v".repeat(300))),
                Outcome::Hit,
            ),
            (Op::Get, Response::Value(Some(String::new())), Outcome::Hit),
            (Op::Get, Response::Value(None), Outcome::Miss),
            (Op::Set, Response::Ok, Outcome::Stored),
        ];
        for (op, response, want) in cases {
            let buf = frame(&response);
            assert_eq!(
                KvsWire::parse(op, &buf).unwrap(),
                Some((want, buf.len())),
                "{response:?}"
            );
            // Every strict prefix is incomplete, not an error.
            for cut in 0..buf.len() {
                assert_eq!(KvsWire::parse(op, &buf[..cut]).unwrap(), None);
            }
        }
        let error = Response::Error {
            kind: ErrorKind::Server,
            message: "disk full".into(),
        };
        let buf = frame(&error);
        let Some((Outcome::Error(m), n)) = KvsWire::parse(Op::Set, &buf).unwrap() else {
            panic!("not an error outcome");
        };
        assert_eq!(n, buf.len());
        assert!(m.contains("Server") && m.contains("disk full"), "{m}");
        // Replies that do not fit their request are errors, not hits.
        for (op, response) in [
            (Op::Get, Response::Ok),
            (Op::Set, Response::Pong),
            (Op::Get, Response::Values(vec![None, Some("x".into())])),
        ] {
            let got = KvsWire::parse(op, &frame(&response)).unwrap().unwrap().0;
            assert!(matches!(got, Outcome::Error(_)), "{response:?}");
        }
    }

    #[test]
    fn requests_decode_as_the_server_sees_them() {
        let mut buf = BytesMut::new();
        KvsWire::encode(Op::Set, "key:1", "value", &mut buf).unwrap();
        KvsWire::encode(Op::Get, "key:1", "value", &mut buf).unwrap();
        let mut codec = crate::protocol::FrameCodec::new(1 << 20);
        use tokio_util::codec::Decoder;
        let set: Request = decode_message(&codec.decode(&mut buf).unwrap().unwrap()).unwrap();
        let get: Request = decode_message(&codec.decode(&mut buf).unwrap().unwrap()).unwrap();
        assert_eq!(
            set,
            Request::Set {
                key: "key:1".into(),
                value: "value".into(),
                ttl_ms: None
            }
        );
        assert_eq!(
            get,
            Request::Get {
                key: "key:1".into()
            }
        );
    }

    #[test]
    fn broken_replies_are_protocol_errors() {
        assert!(KvsWire::parse(Op::Get, &[0, 0, 0, 1, 9]).is_err());
        assert!(KvsWire::parse(Op::Get, &[0, 0, 0, 0]).is_err());
        assert!(KvsWire::parse(Op::Get, &[0, 0, 0, 2, PROTOCOL_VERSION, 99]).is_err());
        assert!(KvsWire::parse(Op::Get, &[0xff, 0xff, 0xff, 0xff]).is_err());
    }
}
