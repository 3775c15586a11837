//! The request decoder: multibulk and inline commands out of a byte buffer.

use std::fmt;
use std::ops::Range;

use bytes::{Buf, Bytes, BytesMut};

use super::inline::split_args;
use super::{Limits, Reply, UNAUTHENTICATED_MAX_ARRAY_LEN, UNAUTHENTICATED_MAX_BULK_LEN};

/// Arguments reserved up front for a multibulk command, whatever count it
/// declares: the table grows with the arguments that actually arrive.
const INITIAL_ARGS: usize = 8;

/// A request that breaks RESP; the connection cannot continue after it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ProtocolError {
    /// `*` count that is not a canonical integer or is over the limit.
    InvalidMultibulkLength,
    /// `$` length that is not a canonical integer, negative or over the
    /// limit.
    InvalidBulkLength,
    /// An array element that is not a bulk string.
    ExpectedDollar(u8),
    /// A `*` count line longer than the inline limit.
    TooBigMultibulkCount,
    /// A `$` length line longer than the inline limit.
    TooBigBulkCount,
    /// An inline line longer than the inline limit.
    TooBigInline,
    /// An inline line whose quotes do not close.
    UnbalancedQuotes,
    /// A bulk string not followed by CRLF (Redis skips two bytes blindly;
    /// kvs refuses to guess).
    MissingCrlf,
    /// Over [`UNAUTHENTICATED_MAX_ARRAY_LEN`] before authentication.
    UnauthenticatedMultibulkLength,
    /// Over [`UNAUTHENTICATED_MAX_BULK_LEN`] before authentication.
    UnauthenticatedBulkLength,
}

impl fmt::Display for ProtocolError {
    /// Redis's text, without the `ERR ` prefix.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Protocol error: ")?;
        match self {
            ProtocolError::InvalidMultibulkLength => f.write_str("invalid multibulk length"),
            ProtocolError::InvalidBulkLength => f.write_str("invalid bulk length"),
            ProtocolError::ExpectedDollar(got) => write!(f, "expected '$', got '{}'", *got as char),
            ProtocolError::TooBigMultibulkCount => f.write_str("too big mbulk count string"),
            ProtocolError::TooBigBulkCount => f.write_str("too big bulk count string"),
            ProtocolError::TooBigInline => f.write_str("too big inline request"),
            ProtocolError::UnbalancedQuotes => f.write_str("unbalanced quotes in request"),
            ProtocolError::MissingCrlf => f.write_str("expected CRLF after bulk data"),
            ProtocolError::UnauthenticatedMultibulkLength => {
                f.write_str("unauthenticated multibulk length")
            }
            ProtocolError::UnauthenticatedBulkLength => f.write_str("unauthenticated bulk length"),
        }
    }
}

impl std::error::Error for ProtocolError {}

impl ProtocolError {
    /// The reply to send before closing: `-ERR Protocol error: ...`.
    pub fn reply(&self) -> Reply {
        Reply::Error(format!("ERR {self}").into())
    }
}

/// How far into a multibulk command the buffer has been parsed.
#[derive(Debug, Default, Clone, Copy)]
struct Partial {
    /// Bytes of the buffer parsed so far (all of them belong to this
    /// command).
    pos: usize,
    /// Arguments the command declared.
    count: usize,
}

/// Arguments handed to the caller from the stack; a command with more
/// goes through a vector.
const STACK_ARGS: usize = 8;

/// Past this capacity the decoder's argument table is given back after
/// the command that grew it, so one huge command does not pin its table.
const KEEP_ARGS: usize = 1024;

/// Splits a byte stream into commands.
///
/// Call [`decode_with`](Self::decode_with) with the connection's read
/// buffer after each read. Between calls the caller may only append to
/// the buffer: the decoder remembers how far it parsed a partially
/// received multibulk command so a large or slowly arriving one is not
/// parsed again from its start.
#[derive(Debug, Default)]
pub struct RespDecoder {
    partial: Option<Partial>,
    /// Where each complete argument of the current multibulk command lies
    /// in the buffer; emptied after each command, its capacity kept, so a
    /// command costs no allocation for it.
    args: Vec<Range<usize>>,
    /// Bytes from the start of the line being waited for that are known
    /// to hold no line end, so a line trickling in a byte at a time is
    /// searched once, not once per read.
    scanned: usize,
}

/// One step of parsing: done, or more bytes are needed.
type Step<T> = Result<Option<T>, ProtocolError>;

impl RespDecoder {
    /// A decoder at the start of a stream.
    pub fn new() -> RespDecoder {
        RespDecoder::default()
    }

    /// The next command's arguments, copied out of `buf`; see
    /// [`decode_with`](Self::decode_with), which lends them instead.
    pub fn decode(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        authenticated: bool,
    ) -> Result<Option<Vec<Bytes>>, ProtocolError> {
        self.decode_with(buf, limits, authenticated, |args| {
            args.iter().map(|a| Bytes::copy_from_slice(a)).collect()
        })
    }

    /// Calls `f` with the next command's arguments, lent from `buf`, then
    /// removes the command from the front of `buf`; `f`'s result.
    ///
    /// `Ok(None)`: no whole command is buffered yet; nothing of it has been
    /// removed (empty commands before it, `*0`, `*-1` and blank inline
    /// lines, are removed and skipped as Redis skips them). `limits` and
    /// `authenticated` may change between calls (Redis's tighter limits
    /// apply until the connection authenticates). An error means the
    /// stream is broken: answer [`ProtocolError::reply`] and close.
    ///
    /// Lending rather than returning the arguments is what makes a command
    /// cost no allocation and no reference count here: they are slices of
    /// the read buffer, and of the stack for the table of them.
    pub fn decode_with<R>(
        &mut self,
        buf: &mut BytesMut,
        limits: &Limits,
        authenticated: bool,
        f: impl FnOnce(&[&[u8]]) -> R,
    ) -> Result<Option<R>, ProtocolError> {
        let partial = loop {
            if let Some(partial) = self.partial {
                break partial;
            }
            let Some(&first) = buf.first() else {
                return Ok(None);
            };
            if first != b'*' {
                match decode_inline(buf, limits, &mut self.scanned)? {
                    None => return Ok(None),
                    Some(args) if args.is_empty() => continue,
                    Some(args) => {
                        let args: Vec<&[u8]> = args.iter().map(|a| &a[..]).collect();
                        return Ok(Some(f(&args)));
                    }
                }
            }
            let Some((count, pos)) = array_header(buf, limits, authenticated, &mut self.scanned)?
            else {
                return Ok(None);
            };
            let Ok(count) = usize::try_from(count) else {
                // A negative count is an empty command to Redis.
                buf.advance(pos);
                continue;
            };
            if count == 0 {
                buf.advance(pos);
                continue;
            }
            self.args.clear();
            self.args.reserve(count.min(INITIAL_ARGS));
            self.partial = Some(Partial { pos, count });
        };
        let Partial { mut pos, count } = partial;
        while self.args.len() < count {
            let parsed = bulk(&buf[pos..], limits, authenticated, &mut self.scanned);
            match parsed {
                Ok(Some((data, used))) => {
                    self.args.push(pos + data.start..pos + data.end);
                    pos += used;
                }
                Ok(None) => {
                    self.partial = Some(Partial { pos, count });
                    return Ok(None);
                }
                Err(e) => {
                    self.partial = Some(Partial { pos, count });
                    return Err(e);
                }
            }
        }
        self.partial = None;
        let out = lend(&buf[..pos], &self.args, f);
        buf.advance(pos);
        self.args.clear();
        if self.args.capacity() > KEEP_ARGS {
            self.args = Vec::new();
        }
        Ok(Some(out))
    }
}

/// Calls `f` with the slices of `frame` that `ranges` name.
fn lend<R>(frame: &[u8], ranges: &[Range<usize>], f: impl FnOnce(&[&[u8]]) -> R) -> R {
    if ranges.len() <= STACK_ARGS {
        let mut args: [&[u8]; STACK_ARGS] = [&[]; STACK_ARGS];
        for (arg, range) in args.iter_mut().zip(ranges) {
            *arg = &frame[range.clone()];
        }
        f(&args[..ranges.len()])
    } else {
        let args: Vec<&[u8]> = ranges.iter().map(|r| &frame[r.clone()]).collect();
        f(&args)
    }
}

/// The `*` line at the start of `buf`: the declared count and the bytes
/// the line takes.
fn array_header(
    buf: &[u8],
    limits: &Limits,
    authenticated: bool,
    scanned: &mut usize,
) -> Step<(i64, usize)> {
    let (count, used) = match short_header(buf, limits) {
        Some((count, used)) => {
            *scanned = 0;
            (count, used)
        }
        None => {
            let Some((line, used)) =
                header_line(buf, limits, ProtocolError::TooBigMultibulkCount, scanned)?
            else {
                return Ok(None);
            };
            let count = parse_i64(line).ok_or(ProtocolError::InvalidMultibulkLength)?;
            (count, used)
        }
    };
    if count > 0 && count as u64 > limits.max_array_len as u64 {
        return Err(ProtocolError::InvalidMultibulkLength);
    }
    if !authenticated && count > UNAUTHENTICATED_MAX_ARRAY_LEN as i64 {
        return Err(ProtocolError::UnauthenticatedMultibulkLength);
    }
    Ok(Some((count, used)))
}

/// One `$len\r\ndata\r\n` at the start of `buf`: where the data lies and
/// the bytes the whole element takes.
fn bulk(
    buf: &[u8],
    limits: &Limits,
    authenticated: bool,
    scanned: &mut usize,
) -> Step<(Range<usize>, usize)> {
    let Some(&first) = buf.first() else {
        return Ok(None);
    };
    if first != b'$' {
        return Err(ProtocolError::ExpectedDollar(first));
    }
    let (len, header) = match short_header(buf, limits) {
        Some((len, header)) => {
            *scanned = 0;
            (len, header)
        }
        None => {
            let Some((line, header)) =
                header_line(buf, limits, ProtocolError::TooBigBulkCount, scanned)?
            else {
                return Ok(None);
            };
            let len = parse_i64(line).ok_or(ProtocolError::InvalidBulkLength)?;
            (len, header)
        }
    };
    let len = usize::try_from(len).map_err(|_| ProtocolError::InvalidBulkLength)?;
    if len > limits.max_bulk_len {
        return Err(ProtocolError::InvalidBulkLength);
    }
    if !authenticated && len > UNAUTHENTICATED_MAX_BULK_LEN {
        return Err(ProtocolError::UnauthenticatedBulkLength);
    }
    let end = header + len;
    match buf.get(end..end + 2) {
        Some(b"\r\n") => Ok(Some((header..end, end + 2))),
        Some(_) => Err(ProtocolError::MissingCrlf),
        None if buf.len() > end && buf[end] != b'\r' => Err(ProtocolError::MissingCrlf),
        None => Ok(None),
    }
}

/// Most digits [`short_header`] takes: any such number fits an `i64`.
const SHORT_DIGITS: usize = 18;

/// The common header line, read in one pass: the type byte, a canonical
/// non-negative decimal of at most [`SHORT_DIGITS`] digits and CRLF, all
/// buffered, the line end within the inline limit. The number and the
/// bytes the line takes; `None` for anything else (negative, leading zero,
/// long, partial, malformed), which [`header_line`] and [`parse_i64`] then
/// handle in full. What this accepts they accept with the same value.
fn short_header(buf: &[u8], limits: &Limits) -> Option<(i64, usize)> {
    let digits = buf.get(1..)?;
    let mut n: i64 = 0;
    let mut len = 0;
    for &d in digits.iter().take(SHORT_DIGITS) {
        if !d.is_ascii_digit() {
            break;
        }
        n = n * 10 + i64::from(d - b'0');
        len += 1;
    }
    if len == 0 || (len > 1 && digits[0] == b'0') || 1 + len > limits.max_inline_len {
        return None;
    }
    match digits.get(len..len + 2) {
        Some(b"\r\n") => Some((n, 1 + len + 2)),
        _ => None,
    }
}

/// The body of the header line at the start of `buf` (type byte and CRLF
/// excluded) and the bytes the line takes; `too_big` when no line end
/// comes within the inline limit. A `\r` followed by anything but `\n`
/// ends the line too and yields an empty body, which no caller accepts
/// as a number. `scanned` carries how far earlier calls searched.
fn header_line<'a>(
    buf: &'a [u8],
    limits: &Limits,
    too_big: ProtocolError,
    scanned: &mut usize,
) -> Step<(&'a [u8], usize)> {
    let window = &buf[..buf.len().min(limits.max_inline_len + 1)];
    let from = (*scanned).min(window.len());
    match window[from..]
        .iter()
        .position(|&b| b == b'\r')
        .map(|p| from + p)
    {
        Some(cr) if cr + 1 < buf.len() => {
            *scanned = 0;
            if buf[cr + 1] == b'\n' {
                Ok(Some((&buf[1..cr], cr + 2)))
            } else {
                Ok(Some((b"", 0)))
            }
        }
        Some(cr) => {
            *scanned = cr;
            Ok(None)
        }
        None if buf.len() > limits.max_inline_len => Err(too_big),
        None => {
            *scanned = window.len();
            Ok(None)
        }
    }
}

/// A decimal integer as Redis's `string2ll` accepts it: an optional `-`,
/// no `+`, no leading zeros, no `-0`, no spaces, in range.
pub(crate) fn parse_i64(s: &[u8]) -> Option<i64> {
    let (negative, digits) = match s {
        [b'-', rest @ ..] => (true, rest),
        _ => (false, s),
    };
    match digits {
        [] => return None,
        [b'0'] if !negative => return Some(0),
        [b'0', ..] => return None,
        _ => {}
    }
    let mut n: i64 = 0;
    for &d in digits {
        if !d.is_ascii_digit() {
            return None;
        }
        let d = i64::from(d - b'0');
        n = n.checked_mul(10)?;
        n = if negative {
            n.checked_sub(d)?
        } else {
            n.checked_add(d)?
        };
    }
    Some(n)
}

/// One inline command line, removed from `buf`; an empty vector for a
/// blank line.
fn decode_inline(buf: &mut BytesMut, limits: &Limits, scanned: &mut usize) -> Step<Vec<Bytes>> {
    let window = &buf[..buf.len().min(limits.max_inline_len + 1)];
    let from = (*scanned).min(window.len());
    let Some(newline) = window[from..]
        .iter()
        .position(|&b| b == b'\n')
        .map(|p| from + p)
    else {
        if buf.len() > limits.max_inline_len {
            return Err(ProtocolError::TooBigInline);
        }
        *scanned = window.len();
        return Ok(None);
    };
    *scanned = 0;
    let line = buf.split_to(newline + 1);
    let mut line = &line[..newline];
    if let [rest @ .., b'\r'] = line {
        line = rest;
    }
    split_args(line)
        .map(Some)
        .ok_or(ProtocolError::UnbalancedQuotes)
}

#[cfg(test)]
mod tests;
