//! The index's two halves (a hash set for point lookups, a skip list for
//! order) must agree, and a `get` must never miss a live key while the
//! writer overwrites, removes and inserts around it (the hash set grows
//! under the readers) and compaction moves it.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use kvs::{KvStore, KvsEngine, Options};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tempfile::TempDir;

fn opts() -> Options {
    let mut o = Options::default();
    o.segment_max_bytes = 64 << 10;
    o.compaction_min_stale_bytes = 128 << 10;
    o
}

fn seed() -> u64 {
    std::env::var("KVS_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x1d_e7)
}

#[test]
fn a_get_never_misses_a_live_key_during_overwrites_removes_growth_and_compaction() {
    let seed = seed();
    let dir = TempDir::new().unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    // Keys that live throughout: overwritten again and again, each value
    // naming its key.
    let live: Vec<String> = (0..64).map(|i| format!("live{i:03}")).collect();
    for k in &live {
        s.set(k.clone(), format!("{k}=0")).unwrap();
    }
    let stop = AtomicBool::new(false);
    let reads = AtomicUsize::new(0);
    std::thread::scope(|scope| {
        for r in 0..3 {
            let s = s.clone();
            let (stop, reads, live) = (&stop, &reads, &live);
            scope.spawn(move || {
                let mut i = r;
                while !stop.load(Ordering::Relaxed) {
                    let k = &live[i % live.len()];
                    match s.get(k.clone()) {
                        Ok(Some(v)) => {
                            assert!(v.starts_with(&format!("{k}=")), "seed {seed}: {k} read {v}")
                        }
                        other => panic!("seed {seed}: a live key {k} read as {other:?}"),
                    }
                    let e = s.get_entry(k).unwrap();
                    assert!(e.is_some(), "seed {seed}: get_entry missed {k}");
                    reads.fetch_add(1, Ordering::Relaxed);
                    i += 5;
                }
            });
        }
        let w = s.clone();
        let (stop, live) = (&stop, &live);
        scope.spawn(move || {
            let mut rng = StdRng::seed_from_u64(seed);
            for round in 0..4 {
                // Growth: thousands of new keys make the hash set resize
                // while the readers look up.
                for i in 0..5000 {
                    w.set(format!("grow{round}-{i}"), "g".repeat(20)).unwrap();
                    let k = &live[rng.random_range(0..live.len())];
                    w.set(k.clone(), format!("{k}={round}-{i}")).unwrap();
                }
                // Removal of most of them, more overwrites between.
                for i in 0..5000 {
                    if i % 10 != 0 {
                        w.remove(format!("grow{round}-{i}")).unwrap();
                    }
                    if i % 3 == 0 {
                        let k = &live[rng.random_range(0..live.len())];
                        w.set(k.clone(), format!("{k}=r{round}-{i}")).unwrap();
                    }
                }
                w.compact().unwrap();
            }
            stop.store(true, Ordering::Relaxed);
        });
    });
    assert!(reads.load(Ordering::Relaxed) > 100, "readers ran");
    // Both halves agree: every key `scan` lists is found by `get`, and the
    // count matches.
    let keys = s.scan(None, usize::MAX).unwrap();
    assert_eq!(keys.len() as u64, s.len(), "seed {seed}");
    assert_eq!(keys.len(), 64 + 4 * 500, "seed {seed}");
    for k in &keys {
        assert!(s.get(k.clone()).unwrap().is_some(), "seed {seed}: {k}");
    }
    assert!(s.get("grow0-1".into()).unwrap().is_none());
}

#[test]
fn clear_and_expiry_leave_both_halves_empty_of_the_key() {
    let dir = TempDir::new().unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    for i in 0..1000 {
        s.set(format!("k{i:04}"), "v".into()).unwrap();
    }
    s.clear().unwrap();
    assert_eq!(s.len(), 0);
    assert!(s.get("k0001".into()).unwrap().is_none());
    assert!(s.scan(None, 10).unwrap().is_empty());
    // Set again after the clear: found both ways.
    s.set("k0001".into(), "again".into()).unwrap();
    assert_eq!(s.get("k0001".into()).unwrap().as_deref(), Some("again"));
    assert_eq!(s.scan(None, 10).unwrap(), vec!["k0001".to_string()]);
    // An expired key is gone from `get` at once and from `scan`.
    let now = kvs::engine::now_ms();
    s.set_expiring("gone".into(), "x".into(), now + 50).unwrap();
    std::thread::sleep(std::time::Duration::from_millis(80));
    assert!(s.get("gone".into()).unwrap().is_none());
    assert_eq!(s.scan(None, 10).unwrap(), vec!["k0001".to_string()]);
    // `update` sees what `get` sees.
    let seen = s
        .update("k0001".into(), |e| {
            (kvs::engine::Update::Keep, e.map(|e| e.value))
        })
        .unwrap();
    assert_eq!(seen.as_deref(), Some("again"));
}

/// What the store holds, read both ways.
fn contents(s: &KvStore) -> Vec<(String, String)> {
    let keys = s.scan(None, usize::MAX).unwrap();
    keys.into_iter()
        .map(|k| {
            let v = s.get(k.clone()).unwrap().expect("scan and get agree");
            (k, v)
        })
        .collect()
}

fn hint_files(dir: &std::path::Path) -> BTreeSet<String> {
    std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".hint"))
        .collect()
}

fn copy_dir(from: &std::path::Path, to: &std::path::Path) {
    std::fs::create_dir_all(to).unwrap();
    for e in std::fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_name() != "LOCK" {
            std::fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

#[test]
fn reopen_after_close_with_and_without_the_newest_segments_hint() {
    let seed = seed();
    let dir = TempDir::new().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut o = opts();
    o.auto_compact = false;
    {
        let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
        for i in 0..3000 {
            let k = format!("k{}", rng.random_range(0..800));
            if i % 7 == 0 {
                let _ = s.remove(k);
            } else {
                s.set(k, format!("v{i}")).unwrap();
            }
        }
    }
    let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
    let newest = format!("{:020}.hint", s.active_segment());
    assert!(
        hint_files(dir.path()).contains(&newest),
        "seed {seed}: a clean close writes the newest segment's hint"
    );
    let want = contents(&s);
    drop(s);

    // With the hint, and without it: the same store.
    let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
    assert_eq!(contents(&s), want, "seed {seed}: with the hint");
    drop(s);
    std::fs::remove_file(dir.path().join(&newest)).unwrap();
    let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
    assert_eq!(contents(&s), want, "seed {seed}: without the hint");
    drop(s);
    assert!(hint_files(dir.path()).contains(&newest), "written again");

    // Writes after an open that used the hint make it stale: a copy taken
    // while the store is open (what a crash leaves) must not use it, with
    // the segment appended to and with it sealed by a rotation.
    let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
    let first = s.active_segment();
    s.remove("k1".into()).ok();
    s.set("k2".into(), "after-hint".into()).unwrap();
    s.set("new-key".into(), "after-hint".into()).unwrap();
    let appended = contents(&s);
    let crash1 = TempDir::new().unwrap();
    copy_dir(dir.path(), crash1.path());
    let mut i = 0;
    while s.active_segment() == first {
        s.set(format!("fill{i}"), "f".repeat(200)).unwrap();
        i += 1;
    }
    let rotated = contents(&s);
    let crash2 = TempDir::new().unwrap();
    copy_dir(dir.path(), crash2.path());
    drop(s);
    let c1 = KvStore::open_with(crash1.path(), o.clone()).unwrap();
    assert_eq!(
        contents(&c1),
        appended,
        "seed {seed}: appended after the hint"
    );
    let c2 = KvStore::open_with(crash2.path(), o.clone()).unwrap();
    assert_eq!(contents(&c2), rotated, "seed {seed}: sealed after the hint");
    drop((c1, c2));
    let s = KvStore::open_with(dir.path(), o).unwrap();
    assert_eq!(contents(&s), rotated, "seed {seed}: clean reopen");
}
