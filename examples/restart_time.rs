//! Open after a crash vs a clean open of the same data (issue 10 #5).
//!
//! `cargo run --release --example restart_time -- [N]` (default 200,000
//! keys of 100 B, default 64 MiB segments). A child process writes the keys
//! and aborts without closing (as kill -9: the reserved, zeroed end of the
//! active segment stays); the parent then times, on fresh copies of that
//! image, an open after the crash, an open after the crash with a torn
//! record (garbage written into the reserved end), and a clean open (after
//! a close has cut the reserved end). Median of 5 each.

use std::fs;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use kvs::{KvStore, KvsEngine, Options, SyncMode};

fn opts() -> Options {
    let mut o = Options::default();
    o.sync = SyncMode::Never;
    o.auto_compact = false;
    o
}

fn copy_dir(from: &Path, to: &Path) {
    let _ = fs::remove_dir_all(to);
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let p = e.unwrap().path();
        fs::copy(&p, to.join(p.file_name().unwrap())).unwrap();
    }
}

fn newest_segment(dir: &Path) -> PathBuf {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    v.sort();
    v.pop().unwrap()
}

/// Median open time over 5 opens, each of a fresh copy of `image` prepared
/// by `prepare`; also returns the key count seen.
fn time_open(image: &Path, work: &Path, prepare: impl Fn(&Path)) -> (Duration, u64) {
    let mut times = Vec::new();
    let mut keys = 0;
    for _ in 0..5 {
        copy_dir(image, work);
        prepare(work);
        // The copy just wrote these pages: every case reads from the page
        // cache alike.
        let t = Instant::now();
        let s = KvStore::open_with(work, opts()).unwrap();
        times.push(t.elapsed());
        keys = s.len();
        drop(s);
    }
    times.sort();
    (times[2], keys)
}

fn main() {
    let mut args = std::env::args().skip(1);
    let first = args.next();
    if first.as_deref() == Some("--write") {
        // Child: write and die without closing.
        let dir = args.next().unwrap();
        let n: u64 = args.next().unwrap().parse().unwrap();
        let s = KvStore::open_with(&dir, opts()).unwrap();
        let value = "v".repeat(100);
        for i in 0..n {
            s.set(format!("key{i:010}"), value.clone()).unwrap();
        }
        std::process::abort();
    }
    let n: u64 = first.and_then(|s| s.parse().ok()).unwrap_or(200_000);
    let root = tempfile::tempdir().unwrap();
    let image = root.path().join("crashed");
    let status = std::process::Command::new(std::env::current_exe().unwrap())
        .args(["--write", image.to_str().unwrap(), &n.to_string()])
        .status()
        .unwrap();
    assert!(!status.success(), "the writer aborts");
    let active_len = fs::metadata(newest_segment(&image)).unwrap().len();

    let work = root.path().join("work");
    let (crash, k1) = time_open(&image, &work.join("a"), |_| {});
    let (torn, k2) = time_open(&image, &work.join("b"), |dir| {
        // A torn record: garbage where the next record would have gone,
        // followed by the rest of the reserved zeros.
        let p = newest_segment(dir);
        let s = kvs_used_len(&p);
        fs::OpenOptions::new()
            .write(true)
            .open(&p)
            .unwrap()
            .write_all_at(&[0xA5u8; 300], s)
            .unwrap();
    });
    // A clean image: open once and close (which cuts the reserved end).
    let clean_image = root.path().join("clean");
    copy_dir(&image, &clean_image);
    drop(KvStore::open_with(&clean_image, opts()).unwrap());
    let (clean, k3) = time_open(&clean_image, &work.join("c"), |_| {});
    assert!(k1 == n && k2 == n && k3 == n, "{k1} {k2} {k3} of {n}");
    println!("keys {n}, active segment after the crash {active_len} bytes");
    println!("clean open:                {clean:?}");
    println!(
        "open after crash:          {crash:?} ({:.2}x clean)",
        crash.as_secs_f64() / clean.as_secs_f64()
    );
    println!(
        "open after crash, torn:    {torn:?} ({:.2}x clean)",
        torn.as_secs_f64() / clean.as_secs_f64()
    );
}

/// Where the records of a crashed active segment end: the first zero
/// record header after the segment header (the records are all 100 B
/// values, so a zero kind byte marks the end).
fn kvs_used_len(p: &Path) -> u64 {
    use kvs::engine::kvs::record::{Header, RECORD_HEADER_LEN, SEGMENT_HEADER_LEN};
    let bytes = fs::read(p).unwrap();
    let mut at = SEGMENT_HEADER_LEN as usize;
    while at + RECORD_HEADER_LEN <= bytes.len() {
        match Header::decode(bytes[at..at + RECORD_HEADER_LEN].try_into().unwrap()) {
            Ok(h) => at += h.record_len(),
            Err(_) => break,
        }
    }
    at as u64
}
