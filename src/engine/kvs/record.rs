//! The on-disk record and segment header (layout in `docs/design.md`).

/// First bytes of every segment file.
pub const SEGMENT_MAGIC: [u8; 4] = *b"KVSL";
/// Format version written after the magic. Version 2 seals every segment
/// but the newest with a [`Kind::Seal`] record.
pub const FORMAT_VERSION: u16 = 2;
/// The oldest version still read: version 1 segments have no seal.
pub const OLDEST_VERSION: u16 = 1;
/// Size of the segment header: magic, version, reserved.
pub const SEGMENT_HEADER_LEN: u64 = 8;
/// Size of the fixed record header: crc, kind, key_len, value_len, expires_at.
pub const RECORD_HEADER_LEN: usize = 21;
/// Length of a seal's value: the covered length (u64) and crc (u32).
pub const SEAL_VALUE_LEN: usize = 12;
/// Length of a whole seal record.
pub const SEAL_RECORD_LEN: u64 = (RECORD_HEADER_LEN + SEAL_VALUE_LEN) as u64;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 64 << 10;
/// Longest value accepted.
pub const MAX_VALUE_LEN: usize = 256 << 20;

/// What a record says about its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// The key has the record's value.
    Put = 1,
    /// The key was removed.
    Tombstone = 2,
    /// Every record before this one in log order is dead (`clear`); key
    /// and value are empty.
    Clear = 3,
    /// The last record of a sealed segment: its value is the length of
    /// the segment before the seal and the CRC-32 of those bytes.
    Seal = 4,
}

impl TryFrom<u8> for Kind {
    type Error = u8;

    fn try_from(b: u8) -> Result<Kind, u8> {
        match b {
            1 => Ok(Kind::Put),
            2 => Ok(Kind::Tombstone),
            3 => Ok(Kind::Clear),
            4 => Ok(Kind::Seal),
            other => Err(other),
        }
    }
}

/// Returns the segment header bytes.
pub fn segment_header() -> [u8; SEGMENT_HEADER_LEN as usize] {
    let mut h = [0u8; SEGMENT_HEADER_LEN as usize];
    h[..4].copy_from_slice(&SEGMENT_MAGIC);
    h[4..6].copy_from_slice(&FORMAT_VERSION.to_le_bytes());
    h
}

/// Why a segment header was refused.
pub enum HeaderError {
    /// Not a kvs segment.
    BadMagic,
    /// A kvs segment of another format version.
    Version(u16),
}

/// Checks a segment header; returns its format version.
pub fn check_segment_header(h: &[u8; SEGMENT_HEADER_LEN as usize]) -> Result<u16, HeaderError> {
    if h[..4] != SEGMENT_MAGIC {
        return Err(HeaderError::BadMagic);
    }
    let version = u16::from_le_bytes([h[4], h[5]]);
    if !(OLDEST_VERSION..=FORMAT_VERSION).contains(&version) {
        return Err(HeaderError::Version(version));
    }
    Ok(version)
}

/// Appends a seal record covering `covered_len` bytes whose CRC-32 is
/// `crc`; returns its length ([`SEAL_RECORD_LEN`]).
pub fn encode_seal(buf: &mut Vec<u8>, covered_len: u64, crc: u32) -> usize {
    let mut v = [0u8; SEAL_VALUE_LEN];
    v[..8].copy_from_slice(&covered_len.to_le_bytes());
    v[8..].copy_from_slice(&crc.to_le_bytes());
    encode(buf, Kind::Seal, b"", &v, 0)
}

/// The covered length and crc in a seal's value (exactly
/// [`SEAL_VALUE_LEN`] bytes, which `Header::decode` checked).
pub fn decode_seal(value: &[u8]) -> (u64, u32) {
    let mut l = [0u8; 8];
    l.copy_from_slice(&value[..8]);
    let mut c = [0u8; 4];
    c.copy_from_slice(&value[8..12]);
    (u64::from_le_bytes(l), u32::from_le_bytes(c))
}

/// Appends one encoded record to `buf` and returns its length.
pub fn encode(buf: &mut Vec<u8>, kind: Kind, key: &[u8], value: &[u8], expires_at: u64) -> usize {
    let start = buf.len();
    buf.extend_from_slice(&header_without_crc(
        kind,
        key.len(),
        value.len(),
        expires_at,
    ));
    buf.extend_from_slice(key);
    buf.extend_from_slice(value);
    let crc = crc32fast::hash(&buf[start + 4..]);
    buf[start..start + 4].copy_from_slice(&crc.to_le_bytes());
    buf.len() - start
}

/// The fixed header of a record with its crc field zero: the crc, of
/// every byte of the record after it, goes into the first 4 bytes once
/// the key and value follow.
pub fn header_without_crc(
    kind: Kind,
    key_len: usize,
    value_len: usize,
    expires_at: u64,
) -> [u8; RECORD_HEADER_LEN] {
    let mut h = [0u8; RECORD_HEADER_LEN];
    h[4] = kind as u8;
    h[5..9].copy_from_slice(&(key_len as u32).to_le_bytes());
    h[9..13].copy_from_slice(&(value_len as u32).to_le_bytes());
    h[13..21].copy_from_slice(&expires_at.to_le_bytes());
    h
}

/// The fixed header of a record, decoded but not yet checked against its body.
#[derive(Debug, Clone, Copy)]
pub struct Header {
    /// Stored checksum.
    pub crc: u32,
    /// Record kind.
    pub kind: Kind,
    /// Key length in bytes.
    pub key_len: usize,
    /// Value length in bytes.
    pub value_len: usize,
    /// Expiry in Unix milliseconds, 0 for none.
    pub expires_at: u64,
}

impl Header {
    /// Decodes and sanity-checks a header; `Err` names what is impossible.
    pub fn decode(b: &[u8; RECORD_HEADER_LEN]) -> Result<Header, String> {
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let kind = Kind::try_from(b[4]).map_err(|k| format!("unknown record kind {k}"))?;
        let key_len = u32_at(5) as usize;
        let value_len = u32_at(9) as usize;
        if key_len > MAX_KEY_LEN || value_len > MAX_VALUE_LEN {
            return Err(format!(
                "impossible lengths key={key_len} value={value_len}"
            ));
        }
        if kind == Kind::Tombstone && value_len != 0 {
            return Err("tombstone with a value".to_string());
        }
        if kind == Kind::Clear && (key_len != 0 || value_len != 0) {
            return Err("clear record with a key or value".to_string());
        }
        if kind == Kind::Seal && (key_len != 0 || value_len != SEAL_VALUE_LEN) {
            return Err("seal record of the wrong size".to_string());
        }
        let mut e = [0u8; 8];
        e.copy_from_slice(&b[13..21]);
        Ok(Header {
            crc: u32_at(0),
            kind,
            key_len,
            value_len,
            expires_at: u64::from_le_bytes(e),
        })
    }

    /// Length of the whole record.
    pub fn record_len(&self) -> usize {
        RECORD_HEADER_LEN + self.key_len + self.value_len
    }
}

/// Checks the crc of a whole record (header included).
pub fn crc_ok(record: &[u8], stored: u32) -> bool {
    crc32fast::hash(&record[4..]) == stored
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_crc() {
        let mut buf = Vec::new();
        let n = encode(&mut buf, Kind::Put, b"key", b"value", 42);
        assert_eq!(n, RECORD_HEADER_LEN + 8);
        let h = Header::decode(buf[..RECORD_HEADER_LEN].try_into().unwrap()).unwrap();
        assert_eq!(
            (h.kind, h.key_len, h.value_len, h.expires_at),
            (Kind::Put, 3, 5, 42)
        );
        assert!(crc_ok(&buf, h.crc));
        for i in 4..buf.len() {
            let mut bad = buf.clone();
            bad[i] ^= 0x40;
            assert!(!crc_ok(&bad, h.crc), "flip at {i} undetected");
        }
    }

    #[test]
    fn rejects_bad_kind_and_lengths() {
        let mut buf = Vec::new();
        encode(&mut buf, Kind::Put, b"k", b"v", 0);
        let mut h: [u8; RECORD_HEADER_LEN] = buf[..RECORD_HEADER_LEN].try_into().unwrap();
        h[4] = 9;
        assert!(Header::decode(&h).is_err());
        h[4] = 1;
        h[9..13].copy_from_slice(&u32::MAX.to_le_bytes());
        assert!(Header::decode(&h).is_err());
    }
}
