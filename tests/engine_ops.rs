//! `update`, `clear`, expiry and `stats` of KvStore: atomicity under
//! threads, and what survives a reopen or a crash in the middle of a clear.

use std::path::Path;
use std::time::{Duration, Instant};

use kvs::engine::kvs::FailPoint;
use kvs::engine::{Entry, NO_EXPIRY, Update};
use kvs::{KvStore, KvsEngine, Options, SyncMode};
use tempfile::TempDir;

fn opts() -> Options {
    let mut o = Options::default();
    o.segment_max_bytes = 4096;
    o.auto_compact = false;
    o
}

fn incr(s: &KvStore, key: &str) -> u64 {
    s.update(key.to_string(), |cur| {
        let n = cur.map_or(0, |e| e.value.parse::<u64>().expect("a number")) + 1;
        (
            Update::Put(Entry {
                value: n.to_string(),
                expires_at: NO_EXPIRY,
            }),
            n,
        )
    })
    .unwrap()
}

fn segment_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "log")
        })
        .count()
}

#[test]
fn concurrent_increments_are_never_lost_across_a_reopen() {
    const THREADS: u64 = 8;
    const N: u64 = 250;
    for sync in [SyncMode::Never, SyncMode::Always] {
        let dir = TempDir::new().unwrap();
        let mut o = opts();
        o.sync = sync;
        o.auto_compact = true;
        o.compaction_min_stale_bytes = 8192;
        for round in 1..=2u64 {
            let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
            std::thread::scope(|scope| {
                for _ in 0..THREADS {
                    let s = s.clone();
                    scope.spawn(move || {
                        let mut last = 0;
                        for _ in 0..N {
                            let n = incr(&s, "counter");
                            assert!(n > last, "counter went back from {last} to {n}");
                            last = n;
                        }
                    });
                }
            });
            assert_eq!(
                s.get("counter".into()).unwrap(),
                Some((round * THREADS * N).to_string()),
                "{sync:?}, round {round}"
            );
        }
        let s = KvStore::open_with(dir.path(), o).unwrap();
        assert_eq!(
            s.get("counter".into()).unwrap(),
            Some((2 * THREADS * N).to_string()),
            "{sync:?} after reopen"
        );
    }
}

#[test]
fn update_keep_and_remove_write_nothing_when_nothing_changes() {
    let dir = TempDir::new().unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    s.set("k".into(), "v".into()).unwrap();
    let before = s.log_position();
    let seen = s.update("k".into(), |cur| (Update::Keep, cur)).unwrap();
    assert_eq!(seen.map(|e| e.value).as_deref(), Some("v"));
    let seen = s
        .update("missing".into(), |cur| (Update::Remove, cur))
        .unwrap();
    assert_eq!(seen, None);
    assert_eq!(
        s.log_position(),
        before,
        "Keep and a no-op Remove append nothing"
    );
    s.update("k".into(), |_| (Update::Remove, ())).unwrap();
    assert_eq!(s.get("k".into()).unwrap(), None);
    assert_ne!(s.log_position(), before);
}

#[test]
fn clear_survives_a_reopen_and_deletes_old_segments() {
    let dir = TempDir::new().unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    for i in 0..500 {
        s.set(format!("k{i}"), format!("value-{i}")).unwrap();
    }
    assert!(segment_count(dir.path()) > 3);
    s.clear().unwrap();
    assert_eq!(s.len(), 0);
    assert_eq!(s.scan(None, 10).unwrap(), Vec::<String>::new());
    assert_eq!(segment_count(dir.path()), 1, "older segments deleted");
    let st = s.stats();
    assert_eq!((st.keys, st.live_bytes, st.used_memory), (0, 0, 0));
    s.set("after".into(), "clear".into()).unwrap();
    drop(s);
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(s.len(), 1);
    assert_eq!(s.get("k1".into()).unwrap(), None);
    assert_eq!(s.get("after".into()).unwrap().as_deref(), Some("clear"));
}

#[test]
fn clear_is_kept_when_the_process_stops_before_or_while_deleting() {
    for point in [
        FailPoint::ClearBeforeRetire,
        FailPoint::ClearAfterFirstDelete,
    ] {
        let dir = TempDir::new().unwrap();
        let mut o = opts();
        o.fail_point = Some(point);
        let s = KvStore::open_with(dir.path(), o).unwrap();
        for i in 0..500 {
            s.set(format!("k{i}"), format!("value-{i}")).unwrap();
        }
        let segs = segment_count(dir.path());
        assert!(
            s.clear().is_err(),
            "{point:?}: the injected stop is reported"
        );
        assert_eq!(s.len(), 0);
        s.set("after".into(), "clear".into()).unwrap();
        drop(s);
        let left = segment_count(dir.path());
        assert!(
            left > 2,
            "{point:?}: old segments are still there ({segs} -> {left})"
        );
        let s = KvStore::open_with(dir.path(), opts()).unwrap();
        assert_eq!(
            s.len(),
            1,
            "{point:?}: the Clear record kills every older record"
        );
        assert_eq!(s.get("k499".into()).unwrap(), None, "{point:?}");
        assert_eq!(s.get("after".into()).unwrap().as_deref(), Some("clear"));
        // Compaction later reclaims the dead segments.
        s.compact().unwrap();
        assert!(segment_count(dir.path()) <= 2, "{point:?}");
        drop(s);
        let s = KvStore::open_with(dir.path(), opts()).unwrap();
        assert_eq!(s.scan(None, 10).unwrap(), vec!["after".to_string()]);
    }
}

#[test]
fn expired_keys_are_reclaimed_in_the_background_and_not_recovered() {
    let dir = TempDir::new().unwrap();
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    for i in 0..100 {
        s.set_with_ttl(format!("t{i}"), "v".into(), Duration::from_millis(20))
            .unwrap();
        s.set(format!("p{i}"), "v".into()).unwrap();
    }
    assert_eq!(s.get_entry("p1").unwrap().unwrap().expires_at, NO_EXPIRY);
    s.set_with_ttl("long".into(), "v".into(), Duration::from_secs(3600))
        .unwrap();
    assert!(s.get_entry("long").unwrap().unwrap().expires_at > NO_EXPIRY);
    s.remove("long".into()).unwrap();
    let used = s.stats().used_memory;
    assert!(used > 0);
    // The sweep runs once a second; give it a bounded while.
    let deadline = Instant::now() + Duration::from_secs(10);
    while s.len() > 100 && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(s.len(), 100, "expired keys left the index");
    let st = s.stats();
    assert_eq!(st.expired, 100);
    assert!(st.used_memory < used);
    assert_eq!(s.get("t5".into()).unwrap(), None);
    drop(s);
    let s = KvStore::open_with(dir.path(), opts()).unwrap();
    assert_eq!(s.len(), 100, "expired records are not loaded again");
    assert_eq!(s.scan(None, 1).unwrap(), vec!["p0".to_string()]);
}

/// The borrowed calls the server uses agree with the `String` ones, on
/// both engines: values, misses, expiry, and a reopen for `KvStore`.
#[test]
fn get_with_and_set_from_agree_with_get_and_set() {
    fn check<E: KvsEngine>(engine: &E) {
        let read = |key: &str| {
            let mut seen = None;
            let found = engine
                .get_with(key, &mut |v| seen = Some(v.to_vec()))
                .unwrap();
            assert_eq!(found, seen.is_some(), "`f` runs exactly on a hit");
            seen.map(|v| String::from_utf8(v).unwrap())
        };
        engine.set_from("k", "välue", NO_EXPIRY).unwrap();
        assert_eq!(read("k").as_deref(), Some("välue"));
        assert_eq!(
            engine.get("k".to_owned()).unwrap().as_deref(),
            Some("välue")
        );
        engine.set("s".to_owned(), "from set".to_owned()).unwrap();
        assert_eq!(read("s").as_deref(), Some("from set"));
        assert_eq!(read("missing"), None);
        // Overwrite in place, then with a longer value.
        engine.set_from("k", "v2", NO_EXPIRY).unwrap();
        engine.set_from("k", &"x".repeat(5000), NO_EXPIRY).unwrap();
        assert_eq!(read("k"), Some("x".repeat(5000)));
        // A deadline in the future is kept; one in the past hides the key.
        let later = kvs::engine::now_ms() + 60_000;
        engine.set_from("t", "ttl", later).unwrap();
        assert_eq!(engine.get_entry("t").unwrap().unwrap().expires_at, later);
        engine.set_from("gone", "v", 1).unwrap();
        assert_eq!(read("gone"), None);
        assert_eq!(engine.get("gone".to_owned()).unwrap(), None);
    }
    check(&kvs::MemoryEngine::new());
    let dir = TempDir::new().unwrap();
    {
        let store = KvStore::open_with(dir.path(), opts()).unwrap();
        check(&store);
    }
    let store = KvStore::open_with(dir.path(), opts()).unwrap();
    let mut seen = Vec::new();
    assert!(store.get_with("k", &mut |v| seen = v.to_vec()).unwrap());
    assert_eq!(
        seen,
        "x".repeat(5000).into_bytes(),
        "a set_from survives a reopen"
    );
}

/// `prefetch` is only a hint: on keys present, missing, expired or moved by
/// a compaction it changes nothing a read or the counters show.
#[test]
fn prefetch_changes_nothing_a_read_sees() {
    let dir = TempDir::new().unwrap();
    let store = KvStore::open_with(dir.path(), opts()).unwrap();
    for i in 0..200 {
        store.set(format!("k{i:03}"), "v".repeat(i)).unwrap();
    }
    store.set_from("old", "x", 1).unwrap();
    let before = store.stats();
    for key in ["k000", "k199", "missing", "old", ""] {
        store.prefetch(key);
    }
    assert_eq!(store.stats().keys, before.keys);
    assert_eq!(store.stats().live_bytes, before.live_bytes);
    store.compact().unwrap();
    store.prefetch("k150");
    for i in 0..200 {
        assert_eq!(
            store.get(format!("k{i:03}")).unwrap(),
            Some("v".repeat(i)),
            "k{i:03}"
        );
    }
    assert_eq!(store.get("old".to_owned()).unwrap(), None);
}
