//! The manifest: which segments the store holds, so that a segment file
//! that disappears (deleted by hand, lost by a restore) is an error on open
//! instead of keys silently gone. Seals prove each segment whole; the
//! manifest proves the set whole. Layout and crash ordering are in
//! `docs/design.md` ("The manifest").
//!
//! Live segment ids form a range `low..=high`: segments are created with
//! the next id and deleted only from the low end (compaction, clearing).
//! The one exception is a compaction output, whose id is taken before its
//! file exists: such ids are `gaps`, which may be missing.

use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use super::segment::{self, SegmentId};
use crate::{KvsError, Result};

const MAGIC: &[u8; 4] = b"KVSM";
const VERSION: u16 = 1;
/// magic 4 | version 2 | low 4 | high 4 | gap count 4, then 4 per gap,
/// then the CRC-32 of everything before it, 4.
const FIXED_LEN: usize = 18;
/// More gaps than this is not a file kvs wrote: compaction leaves one.
const MAX_GAPS: usize = 1 << 16;

/// The file name, in the data directory.
pub const FILE_NAME: &str = "MANIFEST";

/// The set of live segments.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Manifest {
    /// Lowest live id: every segment below it is dead (its records are in
    /// a compaction output or behind a `Clear`), even if its file is still
    /// there.
    pub low: SegmentId,
    /// Newest segment.
    pub high: SegmentId,
    /// Ids in `low..high` that may have no file (sorted).
    pub gaps: Vec<SegmentId>,
}

/// Path of the manifest of `dir`.
pub fn path(dir: &Path) -> PathBuf {
    dir.join(FILE_NAME)
}

fn tmp_path(dir: &Path) -> PathBuf {
    dir.join(format!("{FILE_NAME}.tmp"))
}

impl Manifest {
    /// The manifest of a store holding exactly `ids` (sorted, not empty):
    /// every id missing between the first and the last is a gap.
    pub fn of(ids: &[SegmentId]) -> Manifest {
        let (low, high) = (ids[0], ids[ids.len() - 1]);
        let mut gaps = Vec::new();
        for pair in ids.windows(2) {
            gaps.extend(pair[0] + 1..pair[1]);
        }
        Manifest { low, high, gaps }
    }

    fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(FIXED_LEN + 4 * self.gaps.len());
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&VERSION.to_le_bytes());
        out.extend_from_slice(&self.low.to_le_bytes());
        out.extend_from_slice(&self.high.to_le_bytes());
        out.extend_from_slice(&(self.gaps.len() as u32).to_le_bytes());
        for g in &self.gaps {
            out.extend_from_slice(&g.to_le_bytes());
        }
        let crc = crc32fast::hash(&out);
        out.extend_from_slice(&crc.to_le_bytes());
        out
    }

    fn decode(bytes: &[u8]) -> std::result::Result<Manifest, String> {
        let word = |at: usize| u32::from_le_bytes(bytes[at..at + 4].try_into().expect("4 bytes"));
        if bytes.len() < FIXED_LEN || &bytes[..4] != MAGIC {
            return Err("not a kvs manifest (bad magic or too short)".into());
        }
        let version = u16::from_le_bytes([bytes[4], bytes[5]]);
        if version != VERSION {
            return Err(format!(
                "manifest version {version}, this kvs reads {VERSION}"
            ));
        }
        let count = word(14) as usize;
        if count > MAX_GAPS || bytes.len() != FIXED_LEN + 4 * count + 4 {
            return Err(format!(
                "length {} does not match {count} gaps",
                bytes.len()
            ));
        }
        let body = bytes.len() - 4;
        if crc32fast::hash(&bytes[..body]) != word(body) {
            return Err("checksum mismatch".into());
        }
        let (low, high) = (word(6), word(10));
        let gaps: Vec<SegmentId> = (0..count).map(|i| word(FIXED_LEN + 4 * i)).collect();
        if low > high || gaps.iter().any(|&g| g <= low || g >= high) {
            return Err(format!(
                "inconsistent: low {low}, high {high}, gaps {gaps:?}"
            ));
        }
        Ok(Manifest { low, high, gaps })
    }

    /// Writes the manifest: temp file, fsync, rename, directory fsync, so
    /// the manifest on disk is always a whole old or a whole new one.
    pub fn write(&self, dir: &Path) -> Result<()> {
        let tmp = tmp_path(dir);
        let r = (|| -> io::Result<()> {
            let mut f = File::create(&tmp).map_err(segment::io_at("create", &tmp))?;
            f.write_all(&self.encode())
                .map_err(segment::io_at("write", &tmp))?;
            f.sync_all().map_err(segment::io_at("sync", &tmp))?;
            let p = path(dir);
            fs::rename(&tmp, &p).map_err(segment::io_at("rename manifest", &tmp))?;
            segment::sync_dir(dir).map_err(segment::io_at("sync directory", dir))
        })();
        if let Err(e) = r {
            let _ = fs::remove_file(&tmp);
            if e.kind() == io::ErrorKind::StorageFull {
                let free = segment::free_bytes(dir).unwrap_or(0);
                return Err(segment::no_space(dir, 4096, free));
            }
            return Err(e.into());
        }
        Ok(())
    }

    /// Reads the manifest of `dir`; `None` if there is none (a new store,
    /// or one written before kvs kept a manifest).
    pub fn read(dir: &Path) -> Result<Option<Manifest>> {
        let p = path(dir);
        let bytes = match fs::read(&p) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(segment::io_at("read", &p)(e).into()),
        };
        Manifest::decode(&bytes)
            .map(Some)
            .map_err(|reason| KvsError::Corrupt {
                path: p,
                offset: 0,
                reason: format!(
                    "{reason}; the manifest lists the data directory's segments, so kvs \
                     cannot tell whether one is missing (restore it from a backup, or move it \
                     away to open without that check)"
                ),
            })
    }

    /// Checks the segments found on disk (`ids`, sorted) against the
    /// manifest and returns the ones to open: those below `low` are dead
    /// leftovers of a compaction or a clear that stopped before deleting
    /// them all. An error names the first segment missing.
    ///
    /// One id above `high` is accepted if it is the newest: a rotation
    /// creates the new segment before it records it here, and writes to it
    /// only after (see [`super::writer::Writer::rotate`]).
    pub fn check(&self, dir: &Path, ids: &[SegmentId]) -> Result<Vec<SegmentId>> {
        let live: Vec<SegmentId> = ids.iter().copied().filter(|&id| id >= self.low).collect();
        let mut expect = self.low;
        let mut found = live.iter().peekable();
        while expect <= self.high {
            if found.peek() == Some(&&expect) {
                found.next();
            } else if self.gaps.binary_search(&expect).is_err() {
                return Err(KvsError::Corrupt {
                    path: segment::path(dir, expect),
                    offset: 0,
                    reason: format!(
                        "segment is missing: the manifest lists segments {} to {} and this one \
                         is not in the directory, so the keys it held would be lost; restore \
                         it from a backup (or move {} away to accept losing them)",
                        self.low,
                        self.high,
                        path(dir).display()
                    ),
                });
            }
            expect += 1;
        }
        let above: Vec<SegmentId> = found.copied().collect();
        if above.len() > 1 || above.first().is_some_and(|&id| id != self.high + 1) {
            return Err(KvsError::Corrupt {
                path: segment::path(dir, above[above.len() - 1]),
                offset: 0,
                reason: format!(
                    "segment is not in the manifest (newest listed: {}): a file copied in \
                     from elsewhere? move it out of the data directory",
                    self.high
                ),
            });
        }
        Ok(live)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_refuses_damage() {
        let m = Manifest {
            low: 3,
            high: 9,
            gaps: vec![5],
        };
        let bytes = m.encode();
        assert_eq!(Manifest::decode(&bytes).unwrap(), m);
        for i in 0..bytes.len() {
            let mut bad = bytes.clone();
            bad[i] ^= 0x10;
            assert!(Manifest::decode(&bad).is_err(), "flip at {i} accepted");
        }
        assert!(Manifest::decode(&bytes[..bytes.len() - 1]).is_err());
    }

    #[test]
    fn of_records_every_hole() {
        assert_eq!(
            Manifest::of(&[2, 3, 5, 8]),
            Manifest {
                low: 2,
                high: 8,
                gaps: vec![4, 6, 7]
            }
        );
    }

    #[test]
    fn check_finds_missing_and_foreign_segments() {
        let dir = Path::new("/nonexistent");
        let m = Manifest {
            low: 3,
            high: 6,
            gaps: vec![4],
        };
        // Leftovers below `low` are dropped; the gap may be present or not.
        assert_eq!(m.check(dir, &[1, 2, 3, 5, 6]).unwrap(), vec![3, 5, 6]);
        assert_eq!(m.check(dir, &[3, 4, 5, 6]).unwrap(), vec![3, 4, 5, 6]);
        // The segment a rotation created before recording it.
        assert_eq!(m.check(dir, &[3, 5, 6, 7]).unwrap(), vec![3, 5, 6, 7]);
        for ids in [
            &[5, 6][..],
            &[3, 6],
            &[3, 5],
            &[3, 5, 6, 8],
            &[3, 5, 6, 7, 8],
        ] {
            let e = m.check(dir, ids).unwrap_err().to_string();
            assert!(e.contains(".log"), "{ids:?}: {e}");
        }
    }
}
