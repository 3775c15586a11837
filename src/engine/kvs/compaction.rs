//! Compaction: rewrite live records into a new segment, off the request path.
//! The steps and why a crash at any of them is safe are in `docs/design.md`.

use std::collections::HashMap;
use std::fs::{self, File, OpenOptions};
use std::io::{BufWriter, Write};
use std::sync::atomic::Ordering;

use super::hint;
use super::index::{self, Loc, now_ms};
use super::record::{self, SEGMENT_HEADER_LEN};
use super::segment::{self, SegmentId};
use super::{Core, FailPoint};
use crate::{KvsError, Result};

/// Index updates published per writer-lock hold, so writers wait at most
/// one chunk.
const PUBLISH_CHUNK: usize = 1024;

fn fail_if(core: &Core, here: FailPoint) -> Result<()> {
    if here == FailPoint::Start && core.opts.fail_point == Some(FailPoint::Panic) {
        panic!("injected compaction panic");
    }
    if core.opts.fail_point == Some(here) {
        return Err(KvsError::Io(std::io::Error::other(format!(
            "injected crash at {here:?}"
        ))));
    }
    Ok(())
}

/// Runs one compaction.
pub fn run(core: &Core) -> Result<()> {
    fail_if(core, FailPoint::Start)?;
    // Step 1: seal the active segment; `out` sorts after every input.
    let (out, lsn) = {
        let mut w = core.lock_writer();
        let out = segment::next_id(w.active)?;
        w.rotate(&core.dir, segment::next_id(out)?, 0, &core.commit)?;
        (out, w.lsn)
    };
    core.commit.mark_durable(lsn);
    let inputs: Vec<SegmentId> = segment::list_and_clean(&core.dir)?
        .into_iter()
        .filter(|&id| id < out)
        .collect();

    // Step 2: copy live records of the inputs into the temp file.
    let tmp = segment::tmp_path(&core.dir, out);
    let copied = match copy_live(core, out, &tmp) {
        Ok(c) => c,
        Err(e) => {
            let _ = fs::remove_file(&tmp);
            return Err(e);
        }
    };
    fail_if(core, FailPoint::BeforeRename)?;

    // Step 3: make the output durable under its real name.
    let final_path = segment::path(&core.dir, out);
    fs::rename(&tmp, &final_path).map_err(segment::io_at("rename compaction output", &tmp))?;
    // Counted as soon as it exists, so a compaction that fails after this
    // point leaves the books matching the files.
    core.lock_writer().disk_bytes += copied.out_len;
    segment::sync_dir(&core.dir).map_err(segment::io_at("sync directory", &core.dir))?;
    // Its hint, from the index order it was written in (sorted, one record
    // per key, all puts). Best effort: without it the next open scans.
    let latest = hint::Latest {
        records: copied
            .moved
            .iter()
            .filter_map(|(k, _, new)| new.map(|n| (k.clone(), n, record::Kind::Put)))
            .collect(),
        cleared: false,
        open: false,
    };
    if let Err(e) = hint::write(&core.dir, out, copied.out_len, copied.out_crc, &latest) {
        tracing::warn!(error = %e, segment = out, "cannot write the hint of a compaction output");
    }
    drop(latest);
    fail_if(core, FailPoint::BeforePublish)?;

    // Step 4: publish, in chunks, only entries nobody changed meanwhile.
    for chunk in copied.moved.chunks(PUBLISH_CHUNK) {
        let mut w = core.lock_writer();
        for (key, old, new) in chunk {
            match new {
                Some(new) => {
                    if let Some(n) = core.index.node(key)
                        && n.load() == *old
                    {
                        n.store(*new);
                    }
                }
                None => {
                    if core.index.get(key).is_some_and(|loc| loc == *old) {
                        core.index.remove(key);
                        w.live_bytes = w.live_bytes.saturating_sub(old.len as u64);
                        w.index_bytes = w.index_bytes.saturating_sub(index::entry_bytes(key));
                        core.expired.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
        }
    }

    // Step 5: retire the inputs, oldest first.
    let freed = delete_oldest_first(core, out, &inputs, FailPoint::AfterFirstDelete)?;
    tracing::info!(
        segment = out,
        inputs = inputs.len(),
        freed_bytes = freed,
        written_bytes = copied.out_len,
        "compaction done"
    );
    Ok(())
}

/// Raises `retired_below` to `below` and deletes segments `ids` (all
/// below it) oldest first; returns the bytes freed.
fn delete_oldest_first(
    core: &Core,
    below: SegmentId,
    ids: &[SegmentId],
    fail_point: FailPoint,
) -> Result<u64> {
    core.retired_below.fetch_max(below, Ordering::AcqRel);
    {
        // NOTE: the manifest moves its low end first: what is below it is
        // dead from then on, so a crash between two deletions leaves
        // leftovers that open deletes, not a missing segment.
        let mut w = core.lock_writer();
        if w.manifest.low < below {
            let mut listed = w.manifest.clone();
            listed.low = below;
            listed.gaps.retain(|&g| g > below);
            listed.write(&core.dir)?;
            w.manifest = listed;
        }
    }
    let mut freed = 0;
    for (i, &id) in ids.iter().enumerate() {
        if i == 1 {
            fail_if(core, fail_point)?;
        }
        let p = segment::path(&core.dir, id);
        let size = fs::metadata(&p).map_err(segment::io_at("stat", &p))?.len();
        // The hint first: a hint without its segment is never read (a
        // later segment with that id would not match its length and CRC).
        hint::remove(&core.dir, id).map_err(segment::io_at("delete hint of", &p))?;
        fs::remove_file(&p).map_err(segment::io_at("delete", &p))?;
        // NOTE: one directory sync per unlink: recovery relies on the
        // segments left after a crash being the newest ones, which needs the
        // unlinks to reach the disk in order on any file system.
        segment::sync_dir(&core.dir).map_err(segment::io_at("sync directory", &core.dir))?;
        freed += size;
        let mut w = core.lock_writer();
        w.disk_bytes = w.disk_bytes.saturating_sub(size);
    }
    Ok(freed)
}

/// Deletes every segment below `below`, which starts with a `Clear`
/// record: they hold nothing live. Runs on the compaction thread, so it
/// never overlaps a compaction.
pub fn retire_below(core: &Core, below: SegmentId) -> Result<()> {
    // NOTE: the `Clear` record must be durable before what it kills is
    // deleted: otherwise a crash could leave a suffix of the old segments
    // and no `Clear`, a state that never existed.
    core.sync_all()?;
    fail_if(core, FailPoint::ClearBeforeRetire)?;
    let ids: Vec<SegmentId> = segment::list_and_clean(&core.dir)?
        .into_iter()
        .filter(|&id| id < below)
        .collect();
    let freed = delete_oldest_first(core, below, &ids, FailPoint::ClearAfterFirstDelete)?;
    tracing::info!(
        segments = ids.len(),
        freed_bytes = freed,
        "cleared segments deleted"
    );
    Ok(())
}

struct Copied {
    /// (key, position before, position after or `None` for an expired key).
    moved: Vec<(String, Loc, Option<Loc>)>,
    out_len: u64,
    /// CRC-32 of the whole output, seal included (for its hint).
    out_crc: u32,
}

fn copy_live(core: &Core, out: SegmentId, tmp: &std::path::Path) -> Result<Copied> {
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(tmp)
        .map_err(segment::io_at("create", tmp))?;
    let mut bw = BufWriter::with_capacity(1 << 20, file);
    let mut crc = crc32fast::Hasher::new();
    let header = record::segment_header();
    bw.write_all(&header)
        .map_err(segment::io_at("write", tmp))?;
    crc.update(&header);
    let mut pos = SEGMENT_HEADER_LEN;
    let mut handles: HashMap<SegmentId, File> = HashMap::new();
    let mut moved = Vec::new();
    let mut buf = Vec::new();
    let now = now_ms();
    for entry in core.index.iter() {
        if core.stopping.load(Ordering::Relaxed) {
            return Err(KvsError::Closed(
                "store is closing; compaction abandoned".into(),
            ));
        }
        let old = entry.key().load();
        if old.seg >= out {
            continue;
        }
        if old.expired_at(now) {
            moved.push((entry.key().key().to_owned(), old, None));
            continue;
        }
        let f = match handles.get(&old.seg) {
            Some(f) => f,
            None => {
                let p = segment::path(&core.dir, old.seg);
                let f = File::open(&p).map_err(segment::io_at("open segment", &p))?;
                handles.entry(old.seg).or_insert(f)
            }
        };
        segment::read_record(
            f,
            || segment::path(&core.dir, old.seg),
            old.offset,
            old.len as usize,
            Some(entry.key().key()),
            &mut buf,
        )?;
        bw.write_all(&buf).map_err(segment::io_at("write", tmp))?;
        crc.update(&buf);
        moved.push((
            entry.key().key().to_owned(),
            old,
            Some(Loc {
                seg: out,
                offset: pos,
                ..old
            }),
        ));
        pos += old.len as u64;
    }
    // Sealed like every segment but the newest: recovery can tell the
    // output whole from one cut at a record boundary.
    buf.clear();
    pos += record::encode_seal(&mut buf, pos, crc.clone().finalize()) as u64;
    bw.write_all(&buf).map_err(segment::io_at("write", tmp))?;
    crc.update(&buf);
    let file = bw
        .into_inner()
        .map_err(|e| segment::io_at("write", tmp)(e.into_error()))?;
    file.sync_all().map_err(segment::io_at("sync", tmp))?;
    Ok(Copied {
        moved,
        out_len: pos,
        out_crc: crc.finalize(),
    })
}
