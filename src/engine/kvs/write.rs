//! The write path: encode, append and index one record under the writer
//! lock, then wait for durability outside it.

use super::index::{self, Loc};
use super::record::{self, Kind, MAX_KEY_LEN, MAX_VALUE_LEN};
use super::writer::Writer;
use super::{Core, SyncMode};
use crate::{KvsError, Result};

impl Core {
    /// Appends a put or tombstone of `key` and updates the index; the
    /// caller holds the writer lock (`w`) and checked the sizes. Returns
    /// the lsn to wait for.
    pub(super) fn append_locked(
        &self,
        w: &mut Writer,
        kind: Kind,
        key: &str,
        value: &str,
        expires_at: u64,
    ) -> Result<u64> {
        let node = self.index.node(key);
        let old = node.as_ref().map(|n| n.load());
        let len = self.append_record(w, kind, key.as_bytes(), value.as_bytes(), expires_at)?;
        if let Some(old) = old {
            w.live_bytes = w.live_bytes.saturating_sub(old.len as u64);
        }
        match kind {
            Kind::Put => {
                let loc = Loc {
                    seg: w.active,
                    len: len as u32,
                    offset: w.pos - len,
                    expires_at,
                };
                match &node {
                    Some(n) => n.store(loc),
                    None => {
                        w.index_bytes += index::entry_bytes(key);
                        self.index.insert(key, loc);
                    }
                }
                w.live_bytes += len;
            }
            Kind::Tombstone | Kind::Clear | Kind::Seal => {
                if self.index.remove(key) {
                    w.index_bytes = w.index_bytes.saturating_sub(index::entry_bytes(key));
                }
            }
        }
        self.maybe_compact(w);
        Ok(w.lsn)
    }

    /// Encodes and appends one record (rotating when it does not fit);
    /// returns its length. The caller holds the writer lock.
    pub(super) fn append_record(
        &self,
        w: &mut Writer,
        kind: Kind,
        key: &[u8],
        value: &[u8],
        expires_at: u64,
    ) -> Result<u64> {
        let header = record::header_without_crc(kind, key.len(), value.len(), expires_at);
        let len = (header.len() + key.len() + value.len()) as u64;
        let seg_before = w.active;
        self.commit.check()?;
        w.append(&header, key, value, &self.dir, &self.commit)?;
        if w.active != seg_before {
            // The rotation synced everything before this record.
            self.commit.mark_durable(w.lsn - len);
        }
        Ok(len)
    }

    pub(super) fn write(&self, kind: Kind, key: &str, value: &str, expires_at: u64) -> Result<()> {
        check_sizes(key, value)?;
        let lsn = {
            let mut w = self.lock_writer();
            if kind == Kind::Tombstone && self.index.get(key).is_none_or(|loc| loc.expired()) {
                return Err(KvsError::KeyNotFound);
            }
            self.append_locked(&mut w, kind, key, value, expires_at)?
        };
        self.durable(lsn)
    }

    /// Waits for `lsn` when the sync mode asks writes to wait.
    pub(super) fn durable(&self, lsn: u64) -> Result<()> {
        if self.opts.sync == SyncMode::Always {
            self.wait_durable(lsn)?;
        }
        Ok(())
    }
}

pub(super) fn check_sizes(key: &str, value: &str) -> Result<()> {
    if key.len() > MAX_KEY_LEN {
        return Err(KvsError::InvalidInput(format!(
            "key of {} bytes is over the {MAX_KEY_LEN} byte limit",
            key.len()
        )));
    }
    if value.len() > MAX_VALUE_LEN {
        return Err(KvsError::InvalidInput(format!(
            "value of {} bytes is over the {MAX_VALUE_LEN} byte limit",
            value.len()
        )));
    }
    Ok(())
}
