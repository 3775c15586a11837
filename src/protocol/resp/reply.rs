//! Replies and their RESP2 encoding.

use std::borrow::Cow;

use bytes::{BufMut, Bytes, BytesMut};

/// One RESP2 reply.
///
/// `Simple` and `Error` are status lines: a CR or LF inside them would
/// break the framing, so encoding replaces each with a space (as Redis
/// does for error texts). `Error` holds the full text after `-`,
/// prefix included (`ERR ...`, `WRONGPASS ...`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reply {
    /// `+text`.
    Simple(Cow<'static, str>),
    /// `-text`.
    Error(Cow<'static, str>),
    /// `:n`.
    Integer(i64),
    /// `$len` and the bytes; `None` is the nil bulk `$-1`.
    Bulk(Option<Bytes>),
    /// `*n` and the elements; `None` is the nil array `*-1`.
    Array(Option<Vec<Reply>>),
}

impl Reply {
    /// `+OK`.
    pub const fn ok() -> Reply {
        Reply::Simple(Cow::Borrowed("OK"))
    }

    /// The nil bulk string, `$-1`.
    pub const fn nil() -> Reply {
        Reply::Bulk(None)
    }

    /// A status reply.
    pub fn simple(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Simple(text.into())
    }

    /// An error reply; `text` starts with its code (`ERR`, `NOAUTH`, ...).
    pub fn error(text: impl Into<Cow<'static, str>>) -> Reply {
        Reply::Error(text.into())
    }

    /// A bulk string.
    pub fn bulk(data: impl Into<Bytes>) -> Reply {
        Reply::Bulk(Some(data.into()))
    }

    /// An array.
    pub fn array(items: Vec<Reply>) -> Reply {
        Reply::Array(Some(items))
    }

    /// Whether this is an error reply.
    pub fn is_error(&self) -> bool {
        matches!(self, Reply::Error(_))
    }

    /// Appends the RESP2 encoding to `dst`.
    pub fn encode(&self, dst: &mut BytesMut) {
        match self {
            // The reply of every write: no scan for line ends.
            Reply::Simple(s) if s == "OK" => dst.put_slice(b"+OK\r\n"),
            Reply::Simple(s) => put_line(dst, b'+', s.as_bytes()),
            Reply::Error(s) => put_line(dst, b'-', s.as_bytes()),
            Reply::Integer(n) => {
                dst.put_u8(b':');
                put_int(dst, *n);
                dst.put_slice(b"\r\n");
            }
            Reply::Bulk(None) => dst.put_slice(b"$-1\r\n"),
            Reply::Bulk(Some(data)) => put_bulk(dst, data),
            Reply::Array(None) => dst.put_slice(b"*-1\r\n"),
            Reply::Array(Some(items)) => {
                dst.put_u8(b'*');
                put_int(dst, items.len() as i64);
                dst.put_slice(b"\r\n");
                for item in items {
                    item.encode(dst);
                }
            }
        }
    }

    /// The bytes [`encode`](Self::encode) appends.
    pub fn encoded_len(&self) -> usize {
        match self {
            Reply::Simple(s) | Reply::Error(s) => s.len() + 3,
            Reply::Integer(n) => int_len(*n) + 3,
            Reply::Bulk(None) | Reply::Array(None) => 5,
            Reply::Bulk(Some(data)) => bulk_len(data.len()),
            Reply::Array(Some(items)) => {
                int_len(items.len() as i64)
                    + 3
                    + items.iter().map(Reply::encoded_len).sum::<usize>()
            }
        }
    }
}

/// Encoded size of a bulk string of `len` bytes: what a command that
/// bounds its reply adds per element before building it.
pub fn bulk_len(len: usize) -> usize {
    1 + int_len(len as i64) + 2 + len + 2
}

/// Encoded size of the header of an array of `len` elements.
pub fn array_header_len(len: usize) -> usize {
    1 + int_len(len as i64) + 2
}

fn put_line(dst: &mut BytesMut, tag: u8, text: &[u8]) {
    dst.put_u8(tag);
    if text.iter().any(|&b| b == b'\r' || b == b'\n') {
        dst.extend(
            text.iter()
                .map(|&b| if b == b'\r' || b == b'\n' { b' ' } else { b }),
        );
    } else {
        dst.put_slice(text);
    }
    dst.put_slice(b"\r\n");
}

/// Appends the bulk string `$len\r\n<data>\r\n`, [`bulk_len`] bytes.
pub fn put_bulk(dst: &mut impl BufMut, data: &[u8]) {
    dst.put_u8(b'$');
    put_int(dst, data.len() as i64);
    dst.put_slice(b"\r\n");
    dst.put_slice(data);
    dst.put_slice(b"\r\n");
}

fn put_int(dst: &mut impl BufMut, n: i64) {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut m = n.unsigned_abs();
    loop {
        at -= 1;
        digits[at] = b'0' + (m % 10) as u8;
        m /= 10;
        if m == 0 {
            break;
        }
    }
    if n < 0 {
        dst.put_u8(b'-');
    }
    dst.put_slice(&digits[at..]);
}

fn int_len(n: i64) -> usize {
    let digits = n.unsigned_abs().checked_ilog10().unwrap_or(0) as usize + 1;
    digits + usize::from(n < 0)
}
