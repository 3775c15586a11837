//! The per-clone read path: no lock, own file handles.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::fs::File;
use std::io;
use std::sync::atomic::Ordering;

use super::Core;
use super::record::RECORD_HEADER_LEN;
use super::segment::{self, SegmentId};
use crate::{KvsError, Result};

/// How often a read retries after finding its segment deleted under it.
/// Each retry means a compaction published meanwhile; more than a few in a
/// row means something else is wrong.
const MAX_RETRIES: usize = 16;

/// Read handles of one `KvStore` clone, opened lazily.
#[derive(Default)]
pub struct Reader {
    files: HashMap<SegmentId, File>,
    seen_retired_below: SegmentId,
    buf: Vec<u8>,
}

impl Reader {
    /// Drops handles of segments that compaction retired.
    fn refresh(&mut self, core: &Core) {
        let retired = core.retired_below.load(Ordering::Acquire);
        if retired != self.seen_retired_below {
            self.files.retain(|&id, _| id >= retired);
            self.seen_retired_below = retired;
        }
    }

    fn file(&mut self, core: &Core, id: SegmentId) -> io::Result<&File> {
        match self.files.entry(id) {
            Entry::Occupied(e) => Ok(e.into_mut()),
            Entry::Vacant(v) => Ok(v.insert(File::open(segment::path(&core.dir, id))?)),
        }
    }

    /// Reads the current value of `key`.
    pub fn get(&mut self, core: &Core, key: &str) -> Result<Option<String>> {
        for _ in 0..MAX_RETRIES {
            self.refresh(core);
            let Some(entry) = core.index.get(key) else { return Ok(None) };
            let loc = entry.value().load();
            drop(entry);
            if loc.expired() {
                return Ok(None);
            }
            let mut buf = std::mem::take(&mut self.buf);
            let file = match self.file(core, loc.seg) {
                Ok(f) => f,
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    // Compaction retired the segment after we read the index;
                    // the index already points elsewhere.
                    self.buf = buf;
                    continue;
                }
                Err(e) => return Err(e.into()),
            };
            let r = segment::read_record(
                file,
                || segment::path(&core.dir, loc.seg),
                loc.offset,
                loc.len as usize,
                Some(key),
                &mut buf,
            );
            let out = r.and_then(|h| {
                let v = &buf[RECORD_HEADER_LEN + h.key_len..];
                String::from_utf8(v.to_vec()).map_err(|_| KvsError::Corrupt {
                    path: segment::path(&core.dir, loc.seg),
                    offset: loc.offset,
                    reason: "value is not UTF-8".into(),
                })
            });
            // Keep small buffers for reuse; give big ones back to the allocator.
            if buf.capacity() <= 64 << 10 {
                self.buf = buf;
            }
            return out.map(Some);
        }
        Err(KvsError::Io(io::Error::other(format!(
            "key `{key}` kept moving between segments; gave up after {MAX_RETRIES} tries"
        ))))
    }
}
