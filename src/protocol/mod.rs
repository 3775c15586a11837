//! Wire protocol: request/response types, framing, limits. See
//! `docs/protocol.md`, which documents every byte.
//!
//! A frame is a 4-byte big-endian length (the `LengthDelimitedCodec`
//! default header) followed by that many payload bytes; the payload is one
//! [`PROTOCOL_VERSION`] byte and then a postcard-encoded [`Request`] or
//! [`Response`]. The version byte travels in every frame instead of a
//! handshake so a pipelining client never waits a round trip before its
//! first request.

mod codec;
mod message;
pub mod resp;

pub use codec::{FrameCodec, decode_borrowed, decode_message, encode_frame};
pub use message::{ErrorKind, Request, Response};

/// The protocol version this build speaks; the first payload byte of
/// every frame.
pub const PROTOCOL_VERSION: u8 = 1;

/// Bytes of the length prefix in front of every payload.
pub const HEADER_LEN: usize = 4;

/// The default largest payload (version byte included) either side accepts:
/// 16 MiB. A frame that declares more is refused before anything is
/// allocated for it.
pub const DEFAULT_MAX_FRAME_LEN: usize = 16 << 20;
