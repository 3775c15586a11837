//! Framing: a length-prefixed frame codec that never allocates for a
//! length it has not received, and the payload encoding around postcard.

use bytes::{BufMut, BytesMut};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use tokio_util::codec::{Decoder, LengthDelimitedCodec};

use super::{HEADER_LEN, PROTOCOL_VERSION};
use crate::{KvsError, Result};

/// Splits a byte stream into frame payloads.
///
/// Wraps [`LengthDelimitedCodec`] (4-byte big-endian length, the default
/// header) with one guard: the inner codec reserves the declared length as
/// soon as a header arrives, so a peer could pin `max_frame_len` bytes per
/// connection by sending four bytes and stalling. This codec reads the
/// header itself and only hands a frame to the inner codec once all of it
/// is buffered, so memory follows the bytes actually received.
#[derive(Debug)]
pub struct FrameCodec {
    inner: LengthDelimitedCodec,
    max_frame_len: usize,
}

impl FrameCodec {
    /// A codec that refuses payloads longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> FrameCodec {
        let inner = LengthDelimitedCodec::builder()
            .length_field_length(HEADER_LEN)
            .big_endian()
            .max_frame_length(max_frame_len)
            .new_codec();
        FrameCodec {
            inner,
            max_frame_len,
        }
    }

    /// The largest payload this codec accepts.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// The payload length declared by the header at the start of `src`,
    /// once the header has arrived.
    fn declared_len(src: &[u8]) -> Option<usize> {
        let head: [u8; HEADER_LEN] = src.get(..HEADER_LEN)?.try_into().ok()?;
        Some(u32::from_be_bytes(head) as usize)
    }
}

impl Decoder for FrameCodec {
    type Item = BytesMut;
    type Error = KvsError;

    /// The next whole payload, `None` until one is buffered, or
    /// [`KvsError::Limit`] for a header that declares more than the
    /// maximum (the stream cannot be resynchronised after that).
    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<BytesMut>> {
        let Some(len) = FrameCodec::declared_len(src) else {
            return Ok(None);
        };
        if len > self.max_frame_len {
            return Err(KvsError::Limit(format!(
                "frame of {len} bytes exceeds the maximum of {} bytes",
                self.max_frame_len
            )));
        }
        if src.len() < HEADER_LEN + len {
            // NOTE: deliberately no `reserve(len)` here; see the type docs.
            return Ok(None);
        }
        // The whole frame is buffered, so the inner codec decodes header and
        // data in this one call and its own reservation is a no-op.
        Ok(self.inner.decode(src)?)
    }
}

/// Appends one frame carrying `message` to `dst`: header, version byte,
/// postcard body.
///
/// Serialises straight into `dst` (no intermediate buffer). A message whose
/// payload would exceed `max_frame_len` leaves `dst` as it was and returns
/// [`KvsError::Limit`].
pub fn encode_frame<T: Serialize + ?Sized>(
    message: &T,
    max_frame_len: usize,
    dst: &mut BytesMut,
) -> Result<()> {
    let start = dst.len();
    dst.put_u32(0); // patched below, once the length is known
    dst.put_u8(PROTOCOL_VERSION);
    let encoded = postcard::serialize_with_flavor(message, BytesFlavor(dst));
    let len = dst.len() - start - HEADER_LEN;
    if let Err(e) = encoded {
        dst.truncate(start);
        return Err(KvsError::Protocol(format!("cannot encode message: {e}")));
    }
    if len > max_frame_len || len > u32::MAX as usize {
        dst.truncate(start);
        return Err(KvsError::Limit(format!(
            "message of {len} bytes exceeds the maximum frame of {max_frame_len} bytes"
        )));
    }
    dst[start..start + HEADER_LEN].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(())
}

/// Decodes a frame payload (as returned by [`FrameCodec`]): checks the
/// version byte, then decodes the postcard body, which must fill the rest
/// of the payload exactly. Every failure is [`KvsError::Protocol`].
pub fn decode_message<T: DeserializeOwned>(payload: &[u8]) -> Result<T> {
    decode_borrowed(payload)
}

/// [`decode_message`] into a type that may borrow from `payload` (such as
/// a `Request<&str>`): strings are checked for UTF-8, not copied.
pub fn decode_borrowed<'a, T: Deserialize<'a>>(payload: &'a [u8]) -> Result<T> {
    match payload.split_first() {
        None => Err(KvsError::Protocol("empty frame".to_owned())),
        Some((&PROTOCOL_VERSION, body)) => match postcard::take_from_bytes(body) {
            Ok((message, [])) => Ok(message),
            Ok((_, rest)) => Err(KvsError::Protocol(format!(
                "malformed payload: {} trailing bytes",
                rest.len()
            ))),
            Err(e) => Err(KvsError::Protocol(format!("malformed payload: {e}"))),
        },
        Some((&version, _)) => Err(KvsError::Protocol(format!(
            "unsupported protocol version {version} (this build speaks {PROTOCOL_VERSION})"
        ))),
    }
}

/// A postcard output flavor that appends to a `BytesMut`, copying slices
/// (string bodies) in one call instead of byte by byte.
struct BytesFlavor<'a>(&'a mut BytesMut);

impl postcard::ser_flavors::Flavor for BytesFlavor<'_> {
    type Output = ();

    fn try_extend(&mut self, data: &[u8]) -> postcard::Result<()> {
        self.0.extend_from_slice(data);
        Ok(())
    }

    fn try_push(&mut self, data: u8) -> postcard::Result<()> {
        self.0.put_u8(data);
        Ok(())
    }

    fn finalize(self) -> postcard::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::protocol::{ErrorKind, Request, Response};

    #[test]
    fn round_trip_through_length_delimited_framing() {
        let mut buf = BytesMut::new();
        let req: Request<&str> = Request::Set {
            key: "ключ",
            value: "v",
            ttl_ms: Some(1500),
        };
        encode_frame(&req, 1024, &mut buf).unwrap();
        // The plain tokio-util codec reads our frames: same header.
        let mut plain = LengthDelimitedCodec::new();
        let payload = plain.decode(&mut buf.clone()).unwrap().unwrap();
        let owned: Request = decode_message(&payload).unwrap();
        assert_eq!(
            owned,
            Request::Set {
                key: "ключ".into(),
                value: "v".into(),
                ttl_ms: Some(1500)
            }
        );
        let mut codec = FrameCodec::new(1024);
        assert_eq!(codec.decode(&mut buf).unwrap().unwrap(), payload);
        assert!(buf.is_empty());
    }

    #[test]
    fn documented_bytes() {
        // These exact bytes are in docs/protocol.md.
        let mut buf = BytesMut::new();
        encode_frame(&Request::<&str>::Get { key: "a" }, 64, &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 4, 1, 1, 1, b'a']);
        buf.clear();
        let set = Request::<&str>::Set {
            key: "k",
            value: "vv",
            ttl_ms: Some(300),
        };
        encode_frame(&set, 64, &mut buf).unwrap();
        assert_eq!(
            &buf[..],
            &[0, 0, 0, 10, 1, 2, 1, b'k', 2, b'v', b'v', 1, 0xac, 0x02]
        );
        buf.clear();
        encode_frame(&Request::<&str>::Ping, 64, &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 2, 1, 0]);
        buf.clear();
        encode_frame(&Response::Value(Some("hi".into())), 64, &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 6, 1, 2, 1, 2, b'h', b'i']);
        buf.clear();
        let err = Response::Error {
            kind: ErrorKind::KeyNotFound,
            message: "no".into(),
        };
        encode_frame(&err, 64, &mut buf).unwrap();
        assert_eq!(&buf[..], &[0, 0, 0, 6, 1, 4, 0, 2, b'n', b'o']);

        let frame = |message: &dyn erased::Encode| {
            let mut buf = BytesMut::new();
            message.encode(&mut buf);
            buf.to_vec()
        };
        let no_ttl = Request::<&str>::Set {
            key: "k",
            value: "vv",
            ttl_ms: None,
        };
        assert_eq!(
            frame(&no_ttl),
            [0, 0, 0, 8, 1, 2, 1, b'k', 2, b'v', b'v', 0]
        );
        let remove = Request::<&str>::Remove { key: "k" };
        assert_eq!(frame(&remove), [0, 0, 0, 4, 1, 3, 1, b'k']);
        let many = Request::<&str>::GetMany {
            keys: vec!["a", "b"],
        };
        assert_eq!(frame(&many), [0, 0, 0, 7, 1, 4, 2, 1, b'a', 1, b'b']);
        assert_eq!(frame(&Response::Pong), [0, 0, 0, 2, 1, 0]);
        assert_eq!(frame(&Response::Ok), [0, 0, 0, 2, 1, 1]);
        assert_eq!(frame(&Response::Value(None)), [0, 0, 0, 3, 1, 2, 0]);
        let values = Response::Values(vec![Some("a".into()), None]);
        assert_eq!(frame(&values), [0, 0, 0, 7, 1, 3, 2, 1, 1, b'a', 0]);
        let auth = Request::<&str>::Auth { password: "pw" };
        assert_eq!(frame(&auth), [0, 0, 0, 5, 1, 5, 2, b'p', b'w']);
        assert_eq!(frame(&Request::<&str>::Stats), [0, 0, 0, 2, 1, 6]);
        let denied = Response::Error {
            kind: ErrorKind::Auth,
            message: "no".into(),
        };
        assert_eq!(frame(&denied), [0, 0, 0, 6, 1, 4, 5, 2, b'n', b'o']);
    }

    /// Lets `documented_bytes` encode requests and responses through one
    /// closure.
    mod erased {
        use super::*;

        pub(super) trait Encode {
            fn encode(&self, buf: &mut BytesMut);
        }

        impl<T: Serialize> Encode for T {
            fn encode(&self, buf: &mut BytesMut) {
                encode_frame(self, 64, buf).unwrap();
            }
        }
    }

    #[test]
    fn oversize_header_is_refused_without_reserving() {
        let mut codec = FrameCodec::new(100);
        let mut buf = BytesMut::from(&[0u8, 0, 0, 100][..]);
        assert!(codec.decode(&mut buf).unwrap().is_none());
        assert!(buf.capacity() < 100, "reserved {}", buf.capacity());
        let mut big = BytesMut::from(&[0u8, 0, 0, 101][..]);
        assert!(matches!(codec.decode(&mut big), Err(KvsError::Limit(_))));
        let mut huge = BytesMut::from(&[0xffu8, 0xff, 0xff, 0xff][..]);
        assert!(matches!(codec.decode(&mut huge), Err(KvsError::Limit(_))));
    }

    #[test]
    fn encode_refuses_oversize_and_leaves_buffer() {
        let mut buf = BytesMut::from(&b"xyz"[..]);
        let value = "x".repeat(100);
        let req = Request::<&str>::Get { key: &value };
        // 1 version + 1 tag + 1 length varint + 100 = 103 bytes.
        assert!(matches!(
            encode_frame(&req, 102, &mut buf),
            Err(KvsError::Limit(_))
        ));
        assert_eq!(&buf[..], b"xyz");
        encode_frame(&req, 103, &mut buf).unwrap();
        assert_eq!(buf.len(), 3 + 4 + 103);
    }

    #[test]
    fn bad_payloads_are_protocol_errors() {
        let bad = |p: &[u8]| matches!(decode_message::<Request>(p), Err(KvsError::Protocol(_)));
        assert!(bad(&[]));
        assert!(bad(&[2, 0]));
        assert!(bad(&[1, 99]));
        assert!(bad(&[1, 0, 0]));
        assert!(bad(&[1, 1, 5, b'a']));
        assert!(bad(&[1, 1, 2, 0xff, 0xfe]));
        assert_eq!(decode_message::<Request>(&[1, 0]).unwrap(), Request::Ping);
    }
}
