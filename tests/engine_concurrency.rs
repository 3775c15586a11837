//! Many clones on many threads, with compactions going on.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kvs::{KvStore, KvsEngine, Options};
use tempfile::TempDir;

fn opts() -> Options {
    let mut o = Options::default();
    o.segment_max_bytes = 16 << 10;
    o.compaction_min_stale_bytes = 32 << 10;
    o
}

#[test]
fn clones_write_and_read_concurrently() {
    let dir = TempDir::new().unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    std::thread::scope(|scope| {
        for t in 0..8 {
            let s = s.clone();
            scope.spawn(move || {
                for i in 0..300 {
                    let k = format!("t{t}-k{}", i % 50);
                    s.set(k.clone(), format!("{t}-{i}")).unwrap();
                    assert_eq!(s.get(k).unwrap(), Some(format!("{t}-{i}")));
                }
            });
        }
    });
    drop(s);
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    for t in 0..8 {
        for k in 0..50 {
            let last = 250 + k;
            assert_eq!(
                s.get(format!("t{t}-k{k}")).unwrap(),
                Some(format!("{t}-{last}"))
            );
        }
    }
}

#[test]
fn readers_never_see_errors_or_wrong_values_during_compactions() {
    let dir = TempDir::new().unwrap();
    let mut o = opts();
    o.auto_compact = true;
    let s = KvStore::open_with(dir.path(), o).unwrap();
    let fixed: Vec<(String, String)> = (0..200)
        .map(|i| {
            (
                format!("fixed{i}"),
                format!("value-{i}-{}", "x".repeat(i % 40)),
            )
        })
        .collect();
    for (k, v) in &fixed {
        s.set(k.clone(), v.clone()).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let reads = Arc::new(AtomicUsize::new(0));
    let first_seg = s.active_segment();
    std::thread::scope(|scope| {
        for r in 0..4 {
            let s = s.clone();
            let (stop, reads, fixed) = (stop.clone(), reads.clone(), &fixed);
            scope.spawn(move || {
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let (k, v) = &fixed[i % fixed.len()];
                    match s.get(k.clone()) {
                        Ok(Some(got)) => assert_eq!(&got, v, "wrong value for {k}"),
                        other => panic!("reader got {other:?} for {k}"),
                    }
                    reads.fetch_add(1, Ordering::Relaxed);
                    i += 7;
                }
            });
        }
        let writer = s.clone();
        let stop = stop.clone();
        scope.spawn(move || {
            for round in 0..6 {
                for i in 0..300 {
                    writer
                        .set(format!("churn{i}"), format!("{round}-{}", "y".repeat(64)))
                        .unwrap();
                }
                writer.compact().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    assert!(reads.load(Ordering::Relaxed) > 100, "readers ran");
    assert!(
        s.active_segment() >= first_seg + 12,
        "six compactions each moved the active segment by two"
    );
    for (k, v) in &fixed {
        assert_eq!(s.get(k.clone()).unwrap().as_ref(), Some(v));
    }
}
