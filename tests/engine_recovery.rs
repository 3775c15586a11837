//! Damage the files, reopen, and check what survives.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use kvs::engine::kvs::FailPoint;
use kvs::{KvStore, KvsEngine, KvsError, Options};
use tempfile::TempDir;

fn segments(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v
}

fn newest(dir: &Path) -> PathBuf {
    segments(dir).pop().unwrap()
}

fn opts() -> Options {
    let mut o = Options::default();
    o.segment_max_bytes = 2048;
    o.auto_compact = false;
    o
}

fn get(s: &KvStore, k: &str) -> Option<String> {
    s.get(k.to_string()).unwrap()
}

/// Writes `n` keys k0..k{n-1} and returns the log position after each write.
fn fill(dir: &Path, n: usize) -> Vec<u64> {
    let s = KvStore::open_with(dir, opts()).unwrap();
    let mut ends = Vec::new();
    for i in 0..n {
        s.set(format!("k{i}"), format!("value-{i}")).unwrap();
        ends.push(s.log_position().1);
    }
    ends
}

/// Used length of the newest segment.
fn ends_of(dir: &Path) -> u64 {
    KvStore::open_with(dir, opts()).unwrap().log_position().1
}

#[test]
fn garbage_appended_to_newest_segment_is_cut() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 100);
    let p = newest(dir.path());
    let clean_len = fs::metadata(&p).unwrap().len();
    let used = ends_of(dir.path());
    for garbage in [&b"\x00"[..], b"garbage!", &[0xffu8; 100], &[7u8; 21]] {
        OpenOptions::new()
            .append(true)
            .open(&p)
            .unwrap()
            .write_all(garbage)
            .unwrap();
        let s = KvStore::open_with(dir.path(), opts()).unwrap();
        assert!(
            fs::metadata(&p).unwrap().len() >= clean_len,
            "space reserved again"
        );
        assert!(
            fs::read(&p).unwrap()[used as usize..]
                .iter()
                .all(|&b| b == 0),
            "no garbage left"
        );
        for i in 0..100 {
            assert_eq!(get(&s, &format!("k{i}")), Some(format!("value-{i}")));
        }
    }
    // The store keeps working after the cut, across another reopen.
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    s.set("after".into(), "cut".into()).unwrap();
    drop(s);
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(get(&s, "after").as_deref(), Some("cut"));
    assert_eq!(get(&s, "k99").as_deref(), Some("value-99"));
}

#[test]
fn truncation_at_every_offset_of_the_last_two_records() {
    let dir = TempDir::new().unwrap();
    let n = 40;
    let ends = fill(dir.path(), n);
    let p = newest(dir.path());
    let original = fs::read(&p).unwrap();
    assert!(
        ends.windows(2).all(|w| w[0] < w[1]),
        "one segment: {ends:?}"
    );
    let full = *ends.last().unwrap();
    let last_two_start = ends[n - 3];
    for cut in last_two_start..full {
        fs::write(&p, &original[..cut as usize]).unwrap();
        let s = KvStore::open_with(dir.path(), opts()).unwrap();
        for (i, &end) in ends.iter().enumerate() {
            // Every record that ends at or before the cut survives; the
            // records cut into are gone.
            let want = (end <= cut).then(|| format!("value-{i}"));
            assert_eq!(get(&s, &format!("k{i}")), want, "cut at {cut}: k{i}");
        }
        drop(s);
    }
}

#[test]
fn newest_segment_cut_inside_its_header_is_reset() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 100);
    let p = newest(dir.path());
    let others = segments(dir.path()).len() - 1;
    fs::write(&p, b"KVS").unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert!(others > 0);
    // Keys in older segments survive; the store accepts writes.
    assert_eq!(get(&s, "k0").as_deref(), Some("value-0"));
    s.set("new".into(), "v".into()).unwrap();
    drop(s);
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(get(&s, "new").as_deref(), Some("v"));
}

#[test]
fn flipped_byte_in_an_older_segment_is_an_error_naming_file_and_offset() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 200);
    let segs = segments(dir.path());
    assert!(segs.len() >= 3);
    let victim = &segs[0];
    let mut bytes = fs::read(victim).unwrap();
    let at = 8 + 21 + 1; // inside the first record's key
    bytes[at] ^= 0x01;
    fs::write(victim, &bytes).unwrap();
    match KvStore::open_with(dir.path(), opts()) {
        Err(KvsError::Corrupt { path, offset, .. }) => {
            assert_eq!(&path, victim);
            assert_eq!(offset, 8);
        }
        Err(e) => panic!("wrong error: {e}"),
        Ok(_) => panic!("opened a corrupt store"),
    }
}

#[test]
fn flipped_byte_inside_the_newest_segment_is_not_mistaken_for_a_torn_tail() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 30);
    let p = newest(dir.path());
    let mut bytes = fs::read(&p).unwrap();
    bytes[8 + 21] ^= 0x01; // first record's key; valid records follow it
    fs::write(&p, &bytes).unwrap();
    let err = KvStore::open_with(dir.path(), opts())
        .err()
        .expect("must not open");
    assert!(matches!(err, KvsError::Corrupt { .. }), "{err}");
    assert_eq!(fs::read(&p).unwrap(), bytes, "nothing was cut");
}

#[test]
fn unknown_format_version_is_refused() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 5);
    let p = newest(dir.path());
    let mut bytes = fs::read(&p).unwrap();
    bytes[4] = 99;
    fs::write(&p, &bytes).unwrap();
    assert!(matches!(
        KvStore::open_with(dir.path(), opts()),
        Err(KvsError::UnsupportedVersion { version: 99, .. })
    ));
}

/// A crash at each compaction step: reopen and find exactly the live data.
#[test]
fn crash_between_compaction_steps_loses_nothing() {
    for fp in [
        FailPoint::BeforeRename,
        FailPoint::BeforePublish,
        FailPoint::AfterFirstDelete,
    ] {
        let dir = TempDir::new().unwrap();
        let mut o = opts();
        o.fail_point = Some(fp);
        {
            let s = KvStore::open_with(dir.path(), o).unwrap();
            for round in 0..5 {
                for i in 0..60 {
                    s.set(format!("k{i}"), format!("v{i}-{round}")).unwrap();
                }
            }
            for i in 0..20 {
                s.remove(format!("k{i}")).unwrap();
            }
            assert!(s.compact().is_err(), "{fp:?} must interrupt the compaction");
            // Writes after the interrupted compaction land in newer segments.
            s.set("k59".into(), "after".into()).unwrap();
            s.remove("k58".into()).unwrap();
        }
        let check = |s: &KvStore| {
            for i in 0..60 {
                let want = match i {
                    0..20 | 58 => None,
                    59 => Some("after".to_string()),
                    _ => Some(format!("v{i}-4")),
                };
                assert_eq!(get(s, &format!("k{i}")), want, "{fp:?}: k{i}");
            }
        };
        let s = KvStore::open_with(dir.path(), opts()).unwrap();
        check(&s);
        assert!(
            !fs::read_dir(dir.path()).unwrap().any(|e| e
                .unwrap()
                .path()
                .to_string_lossy()
                .ends_with(".tmp"))
        );
        // A normal compaction afterwards, and another reopen.
        s.compact().unwrap();
        check(&s);
        drop(s);
        check(&KvStore::open_with(dir.path(), opts()).unwrap());
    }
}

#[test]
fn damaged_header_of_the_newest_segment_is_an_error_not_a_reset() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 30);
    let p = newest(dir.path());
    let mut bytes = fs::read(&p).unwrap();
    bytes[0] = b'X';
    fs::write(&p, &bytes).unwrap();
    let err = KvStore::open_with(dir.path(), opts())
        .err()
        .expect("must not open");
    assert!(
        matches!(&err, KvsError::Corrupt { offset: 0, path, .. } if path == &p),
        "{err}"
    );
    assert_eq!(
        fs::read(&p).unwrap(),
        bytes,
        "records behind the header kept"
    );
}

#[test]
fn newest_segment_that_is_all_zeros_is_reset() {
    // A crash inside segment creation: the previous segment was sealed,
    // space reserved for the new one, its header not written. Made here by
    // replacing the newest segment (the one after the last seal) with zeros.
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 100);
    let p = newest(dir.path());
    fs::write(&p, vec![0u8; 4096]).unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(get(&s, "k0").as_deref(), Some("value-0"));
    s.set("new".into(), "v".into()).unwrap();
    drop(s);
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(get(&s, "new").as_deref(), Some("v"));
    assert_eq!(get(&s, "k0").as_deref(), Some("value-0"));
}

#[test]
fn damaged_record_header_inside_the_newest_segment_is_an_error() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 30);
    let p = newest(dir.path());
    let mut bytes = fs::read(&p).unwrap();
    bytes[8 + 4] = 9; // the first record's kind byte; valid records follow
    fs::write(&p, &bytes).unwrap();
    let err = KvStore::open_with(dir.path(), opts())
        .err()
        .expect("must not open");
    assert!(matches!(&err, KvsError::Corrupt { offset: 8, .. }), "{err}");
    assert_eq!(fs::read(&p).unwrap(), bytes, "nothing was cut");
}

#[test]
fn files_that_only_look_like_segments_are_left_alone() {
    let dir = TempDir::new().unwrap();
    fill(dir.path(), 10);
    fs::write(dir.path().join("7.log"), b"not a segment").unwrap();
    fs::write(dir.path().join("notes.log"), b"mine").unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(get(&s, "k9").as_deref(), Some("value-9"));
    s.compact().unwrap();
    drop(s);
    assert_eq!(
        fs::read(dir.path().join("7.log")).unwrap(),
        b"not a segment"
    );
    assert_eq!(fs::read(dir.path().join("notes.log")).unwrap(), b"mine");
}

/// The seal's CRC of a segment continued across reopens starts from
/// recovery's CRC for the part there at the open (read through the hint
/// written at close, or from a scan without one) and goes on with each
/// record the writer copies into its map. It must cover all the segment's
/// bytes, or the next open refuses the sealed segment.
#[test]
fn a_segment_continued_across_reopens_is_sealed_whole() {
    let dir = TempDir::new().unwrap();
    let mut o = opts();
    o.segment_max_bytes = 16 << 10;
    let mut n = 0;
    for round in 0..6 {
        let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
        for _ in 0..80 {
            s.set(format!("k{n}"), format!("value-{n}-{}", "x".repeat(n % 97)))
                .unwrap();
            n += 1;
        }
        drop(s);
        if round % 2 == 1 {
            // Without hints the newest segment's CRC comes from a scan.
            for e in fs::read_dir(dir.path()).unwrap() {
                let p = e.unwrap().path();
                if p.extension().is_some_and(|e| e == "hint") {
                    fs::remove_file(p).unwrap();
                }
            }
        }
    }
    assert!(segments(dir.path()).len() >= 3, "no rotation happened");
    let s = KvStore::open_with(dir.path(), o).unwrap();
    for i in 0..n {
        assert_eq!(
            get(&s, &format!("k{i}")),
            Some(format!("value-{i}-{}", "x".repeat(i % 97)))
        );
    }
}
