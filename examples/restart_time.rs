//! Open after a crash vs a clean open of the same data (issue 10 #5).
//!
//! `cargo run --release --example restart_time -- [N]` (default 200,000
//! keys of 100 B, default 64 MiB segments). A child process writes the keys
//! and aborts without closing (as kill -9: the reserved, zeroed end of the
//! active segment stays); the parent then times, on fresh copies of that
//! image, an open after the crash, an open after the crash with a torn
//! record (garbage written into the reserved end), and a clean open (after
//! a close has cut the reserved end). 11 of each, interleaved; the minimum (least disturbed by other load on
//! the machine) and the median are printed.

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
        let dst = to.join(p.file_name().unwrap());
        fs::copy(&p, &dst).unwrap();
        // On disk before timing, as a crashed store's files are once the
        // kernel has written them back: otherwise the fsync after cutting
        // a torn tail would pay for writing the whole fresh copy.
        fs::File::open(&dst).unwrap().sync_all().unwrap();
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

/// Times one open of a fresh copy of `image` prepared by `prepare`;
/// returns the time and the key count seen.
fn time_open(image: &Path, work: &Path, prepare: &dyn Fn(&Path)) -> (Duration, u64) {
    copy_dir(image, work);
    prepare(work);
    // The copy just wrote these pages: every case reads from the page
    // cache alike.
    let t = Instant::now();
    let s = KvStore::open_with(work, opts()).unwrap();
    let took = t.elapsed();
    (took, s.len())
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
    // A clean image: open once and close (which cuts the reserved end).
    let clean_image = root.path().join("clean");
    copy_dir(&image, &clean_image);
    drop(KvStore::open_with(&clean_image, opts()).unwrap());
    let none = |_: &Path| {};
    let tear = |dir: &Path| {
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
    };
    // Interleaved, so a change in machine load hits all three alike.
    let (mut clean, mut crash, mut torn) = (Vec::new(), Vec::new(), Vec::new());
    for _ in 0..11 {
        for (times, img, prep) in [
            (&mut clean, &clean_image, &none as &dyn Fn(&Path)),
            (&mut crash, &image, &none),
            (&mut torn, &image, &tear),
        ] {
            let (t, keys) = time_open(img, &work, prep);
            assert_eq!(keys, n);
            times.push(t);
        }
    }
    let report = |name: &str, v: &mut Vec<Duration>, base: (Duration, Duration)| {
        v.sort();
        let (min, med) = (v[0], v[v.len() / 2]);
        println!(
            "{name:<28} min {min:>10.1?} ({:.2}x clean)   median {med:>10.1?} ({:.2}x clean)",
            min.as_secs_f64() / base.0.as_secs_f64(),
            med.as_secs_f64() / base.1.as_secs_f64(),
        );
    };
    clean.sort();
    let base = (clean[0], clean[clean.len() / 2]);
    println!("keys {n}, active segment after the crash {active_len} bytes");
    report("clean open", &mut clean, base);
    report("open after crash", &mut crash, base);
    report("open after crash, torn", &mut torn, base);
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
