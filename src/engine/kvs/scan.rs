//! Reading a whole segment on open: every record in order with the seal
//! checked, and deciding what bad bytes at its end are (the zeroed,
//! reserved end, a torn tail, or damage).

use std::fs::File;
use std::io::{self, BufReader, Read};
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::record::{self, Header, Kind, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
use super::segment::io_at;
use crate::{KvsError, Result};

/// A record found by [`scan`].
pub struct Scanned<'a> {
    /// Offset of the record in its segment.
    pub offset: u64,
    /// Its decoded header.
    pub header: Header,
    /// Its key bytes (UTF-8 checked).
    pub key: &'a str,
}

/// How a scan ended.
#[derive(Clone)]
pub enum ScanEnd {
    /// Every byte was a valid record.
    Clean {
        /// File length.
        len: u64,
    },
    /// A bad or cut record starts at `offset`.
    Bad {
        /// Offset of the first byte that is not part of a valid record.
        offset: u64,
        /// What was wrong.
        reason: String,
        /// File length.
        len: u64,
    },
}

/// What a scan found besides the records.
pub struct Scan {
    /// Where the valid records end.
    pub end: ScanEnd,
    /// Format version in the header (0 when the header is bad).
    pub version: u16,
    /// The segment ends with a valid seal.
    pub sealed: bool,
    /// CRC-32 of the bytes before the stop (header and valid records,
    /// the seal included when there is one).
    pub crc: u32,
}

/// Reads every record of segment file `p` in order, calling `f` for each
/// valid one (a seal is checked here and not passed on), and reports
/// where (if anywhere) the valid records stop. A file too short for its
/// header is `Bad` at offset 0.
pub fn scan(p: &Path, mut f: impl FnMut(Scanned<'_>)) -> Result<Scan> {
    let file = File::open(p).map_err(io_at("open segment", p))?;
    let len = file.metadata().map_err(io_at("stat", p))?.len();
    let mut rd = BufReader::with_capacity(1 << 20, file);
    let mut hasher = crc32fast::Hasher::new();
    let mut sealed = false;
    let bad = |offset: u64, reason: String, version, sealed, crc| Scan {
        end: ScanEnd::Bad {
            offset,
            reason,
            len,
        },
        version,
        sealed,
        crc,
    };

    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    if len < SEGMENT_HEADER_LEN {
        return Ok(bad(
            0,
            "segment shorter than its header".into(),
            0,
            false,
            0,
        ));
    }
    rd.read_exact(&mut h).map_err(io_at("read", p))?;
    let version = match record::check_segment_header(&h) {
        Ok(v) => v,
        Err(record::HeaderError::BadMagic) => {
            return Ok(bad(0, "not a kvs segment (bad magic)".into(), 0, false, 0));
        }
        Err(record::HeaderError::Version(version)) => {
            return Err(KvsError::UnsupportedVersion {
                path: p.to_path_buf(),
                version,
            });
        }
    };
    hasher.update(&h);

    let mut offset = SEGMENT_HEADER_LEN;
    let mut buf = Vec::with_capacity(4096);
    macro_rules! stop {
        ($reason:expr) => {
            return Ok(bad(
                offset,
                $reason.into(),
                version,
                sealed,
                hasher.clone().finalize(),
            ))
        };
    }
    while offset < len {
        if sealed {
            stop!("bytes after the seal");
        }
        if len - offset < RECORD_HEADER_LEN as u64 {
            stop!("record header cut short");
        }
        buf.resize(RECORD_HEADER_LEN, 0);
        rd.read_exact(&mut buf).map_err(io_at("read", p))?;
        let hb: &[u8; RECORD_HEADER_LEN] = buf[..].try_into().expect("buffer sized to the header");
        let header = match Header::decode(hb) {
            Ok(h) => h,
            Err(reason) => stop!(reason),
        };
        let rec_len = header.record_len() as u64;
        if len - offset < rec_len {
            stop!("record cut short");
        }
        buf.resize(rec_len as usize, 0);
        rd.read_exact(&mut buf[RECORD_HEADER_LEN..])
            .map_err(io_at("read", p))?;
        if !record::crc_ok(&buf, header.crc) {
            stop!("checksum mismatch");
        }
        if header.kind == Kind::Seal {
            let (covered, crc) = record::decode_seal(&buf[RECORD_HEADER_LEN..]);
            if covered != offset || crc != hasher.clone().finalize() {
                stop!(format!(
                    "the seal does not match the segment (it covers {covered} bytes, \
                     {offset} precede it, or their checksum differs): the segment was \
                     cut or altered"
                ));
            }
            sealed = true;
            hasher.update(&buf);
            offset += rec_len;
            continue;
        }
        let key_bytes = &buf[RECORD_HEADER_LEN..RECORD_HEADER_LEN + header.key_len];
        let Ok(key) = std::str::from_utf8(key_bytes) else {
            stop!("key is not UTF-8");
        };
        f(Scanned {
            offset,
            header,
            key,
        });
        hasher.update(&buf);
        offset += rec_len;
    }
    Ok(Scan {
        end: ScanEnd::Clean { len },
        version,
        sealed,
        crc: hasher.finalize(),
    })
}

/// Whether every byte of `p` from `offset` to `len` is zero: the unused,
/// reserved end of an active segment rather than a torn record.
pub fn zero_from(p: &Path, offset: u64, len: u64) -> io::Result<bool> {
    Ok(last_nonzero(p, offset, len)?.is_none())
}

/// Offset of the last non-zero byte of `p` in `offset..len`, reading
/// backwards in 1 MiB chunks (word-at-a-time compares, no per-byte work).
pub fn last_nonzero(p: &Path, offset: u64, len: u64) -> io::Result<Option<u64>> {
    let file = File::open(p).map_err(io_at("open segment", p))?;
    let mut buf = vec![0u8; 1 << 20];
    let mut end = len;
    while end > offset {
        let n = (end - offset).min(buf.len() as u64) as usize;
        let at = end - n as u64;
        file.read_exact_at(&mut buf[..n], at)
            .map_err(io_at("read", p))?;
        let (pre, words, post) = {
            // SAFETY: any bit pattern is a valid u64; align_to only splits
            // the slice at alignment boundaries.
            unsafe { buf[..n].align_to::<u64>() }
        };
        if let Some(i) = post.iter().rposition(|&b| b != 0) {
            return Ok(Some(at + (pre.len() + words.len() * 8 + i) as u64));
        }
        if let Some(w) = words.iter().rposition(|&w| w != 0) {
            let base = pre.len() + w * 8;
            let i = buf[base..base + 8]
                .iter()
                .rposition(|&b| b != 0)
                .unwrap_or(0);
            return Ok(Some(at + (base + i) as u64));
        }
        if let Some(i) = pre.iter().rposition(|&b| b != 0) {
            return Ok(Some(at + i as u64));
        }
        end = at;
    }
    Ok(None)
}

/// Whether a whole, valid record starts anywhere in `p` after `offset`
/// (file length `len`, last non-zero byte at `last`): then the bad bytes at
/// `offset` are damage inside the file, not a torn tail. Only runs on a
/// damaged segment, and only up to the last non-zero byte: a torn write in
/// front of the zeroed, reserved end of the active segment (up to
/// `segment_max_bytes`) costs one backwards zero check, not a search at
/// every byte position of it.
pub fn valid_record_after(p: &Path, offset: u64, last: u64, len: u64) -> io::Result<bool> {
    // A record's kind byte is not zero, so none starts after `last`; one
    // that starts before it may end in zeros past it.
    const MARGIN: u64 = 64 << 10;
    let start = offset + 1;
    if start > last {
        return Ok(false);
    }
    let file = File::open(p).map_err(io_at("open segment", p))?;
    let end = len.min(last + 1 + MARGIN);
    let mut rest = vec![0u8; (end - start) as usize];
    file.read_exact_at(&mut rest, start)
        .map_err(io_at("read", p))?;
    let mut long = Vec::new();
    for at in 0..=(last - start) as usize {
        let Some(hb) = rest.get(at..at + RECORD_HEADER_LEN) else {
            break;
        };
        let hb: &[u8; RECORD_HEADER_LEN] = hb.try_into().expect("slice is exactly a header long");
        let Ok(h) = Header::decode(hb) else { continue };
        let rec = match rest.get(at..at + h.record_len()) {
            Some(rec) => rec,
            None => {
                // Longer than the buffer: read just this candidate.
                let rec_start = start + at as u64;
                if rec_start + h.record_len() as u64 > len {
                    continue;
                }
                long.resize(h.record_len(), 0);
                file.read_exact_at(&mut long, rec_start)
                    .map_err(io_at("read", p))?;
                &long[..]
            }
        };
        if record::crc_ok(rec, h.crc) {
            return Ok(true);
        }
    }
    Ok(false)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn last_nonzero_finds_the_last_set_byte_at_any_alignment() {
        let dir = tempfile::TempDir::new().unwrap();
        let p = dir.path().join("f");
        let len = (1 << 20) + 77;
        for at in [0usize, 1, 7, 8, 9, 4095, 1 << 20, (1 << 20) + 5, len - 1] {
            let mut bytes = vec![0u8; len];
            bytes[at] = 3;
            fs::write(&p, &bytes).unwrap();
            assert_eq!(last_nonzero(&p, 0, len as u64).unwrap(), Some(at as u64));
            assert_eq!(
                last_nonzero(&p, at as u64 + 1, len as u64).unwrap(),
                None,
                "{at}"
            );
            assert!(!zero_from(&p, at as u64, len as u64).unwrap());
        }
    }

    #[test]
    fn a_record_after_garbage_is_found_even_when_it_ends_in_zeros() {
        let dir = tempfile::TempDir::new().unwrap();
        let p = dir.path().join("f");
        let mut bytes = vec![0u8; 100];
        bytes[10] = 0xAA; // the damage
        let at = bytes.len();
        record::encode(&mut bytes, Kind::Put, b"k", &[0u8; 200_000], 0);
        bytes.extend_from_slice(&[0u8; 5000]);
        fs::write(&p, &bytes).unwrap();
        let len = bytes.len() as u64;
        let last = last_nonzero(&p, 11, len).unwrap().unwrap();
        assert!(last < at as u64 + 30, "the value is zeros");
        assert!(valid_record_after(&p, 10, last, len).unwrap());
        // Without the record, only garbage: a torn tail.
        bytes.truncate(at);
        bytes.extend_from_slice(&[0u8; 5000]);
        fs::write(&p, &bytes).unwrap();
        let len = bytes.len() as u64;
        assert_eq!(last_nonzero(&p, 11, len).unwrap(), None);
        assert!(!valid_record_after(&p, 9, 10, len).unwrap());
    }
}
