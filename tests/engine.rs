//! KvStore behaviour: every check is repeated after a reopen.

use std::time::Duration;

use kvs::{KvStore, KvsEngine, KvsError, Options, SyncMode};
use tempfile::TempDir;

fn small_opts() -> Options {
    let mut o = Options::default();
    o.segment_max_bytes = 4096;
    o.compaction_min_stale_bytes = 8192;
    o.auto_compact = false;
    o
}

fn get(s: &KvStore, k: &str) -> Option<String> {
    s.get(k.to_string()).unwrap()
}

#[test]
fn set_get_overwrite_remove_survive_reopen() {
    let dir = TempDir::new().unwrap();
    {
        let s = KvStore::open(dir.path()).unwrap();
        s.set("a".into(), "1".into()).unwrap();
        s.set("b".into(), "2".into()).unwrap();
        s.set("a".into(), "3".into()).unwrap();
        s.remove("b".into()).unwrap();
        assert_eq!(get(&s, "a").as_deref(), Some("3"));
        assert_eq!(get(&s, "b"), None);
        assert_eq!(get(&s, "never"), None);
    }
    let s = KvStore::open(dir.path()).unwrap();
    assert_eq!(get(&s, "a").as_deref(), Some("3"));
    assert_eq!(get(&s, "b"), None);
    assert!(matches!(s.remove("b".into()), Err(KvsError::KeyNotFound)));
    assert!(matches!(
        s.remove("never".into()),
        Err(KvsError::KeyNotFound)
    ));
}

#[test]
fn unicode_empty_and_large_values() {
    let dir = TempDir::new().unwrap();
    let big: String = (0..2 << 20)
        .map(|i| char::from(b'a' + (i % 26) as u8))
        .collect();
    let cases = [
        ("ключ", "значение ✓ 日本語 🦀".to_string()),
        ("empty", String::new()),
        ("", "empty key".to_string()),
        ("big", big.clone()),
    ];
    {
        let s = KvStore::open(dir.path()).unwrap();
        for (k, v) in &cases {
            s.set(k.to_string(), v.clone()).unwrap();
        }
        for (k, v) in &cases {
            assert_eq!(get(&s, k).as_ref(), Some(v), "key {k:?}");
        }
    }
    let s = KvStore::open(dir.path()).unwrap();
    for (k, v) in &cases {
        assert_eq!(get(&s, k).as_ref(), Some(v), "key {k:?} after reopen");
    }
    s.compact().unwrap();
    assert_eq!(get(&s, "big").map(|v| v.len()), Some(big.len()));
}

#[test]
fn oversized_key_is_refused_and_store_keeps_working() {
    let dir = TempDir::new().unwrap();
    let s = KvStore::open(dir.path()).unwrap();
    let key = "k".repeat(kvs::engine::kvs::record::MAX_KEY_LEN + 1);
    assert!(matches!(
        s.set(key, "v".into()),
        Err(KvsError::InvalidInput(_))
    ));
    s.set("ok".into(), "v".into()).unwrap();
    drop(s);
    let s = KvStore::open(dir.path()).unwrap();
    assert_eq!(get(&s, "ok").as_deref(), Some("v"));
}

#[test]
fn second_open_of_a_locked_dir_fails_naming_it() {
    let dir = TempDir::new().unwrap();
    let s = KvStore::open(dir.path()).unwrap();
    match KvStore::open(dir.path()) {
        Err(e @ KvsError::Locked { .. }) => {
            assert!(
                e.to_string().contains(&dir.path().display().to_string()),
                "{e}"
            );
        }
        Err(e) => panic!("wrong error {e}"),
        Ok(_) => panic!("second open succeeded"),
    }
    let clone = s.clone();
    drop(s);
    assert!(
        matches!(KvStore::open(dir.path()), Err(KvsError::Locked { .. })),
        "a clone still holds it"
    );
    drop(clone);
    KvStore::open(dir.path()).expect("lock released with the last clone");
}

#[test]
fn segments_rotate_and_reopen_reads_all() {
    let dir = TempDir::new().unwrap();
    {
        let s = KvStore::open_with(dir.path(), small_opts()).unwrap();
        for i in 0..500 {
            s.set(format!("k{i}"), format!("v{i}")).unwrap();
        }
        assert!(s.active_segment() > 3, "4 KiB segments should have rotated");
    }
    let s = KvStore::open_with(dir.path(), small_opts()).unwrap();
    for i in 0..500 {
        assert_eq!(get(&s, &format!("k{i}")), Some(format!("v{i}")));
    }
}

#[test]
fn compaction_frees_space_and_removed_keys_stay_removed() {
    let dir = TempDir::new().unwrap();
    {
        let s = KvStore::open_with(dir.path(), small_opts()).unwrap();
        for round in 0..20 {
            for i in 0..50 {
                s.set(format!("k{i}"), format!("v{i}-{round}")).unwrap();
            }
        }
        for i in 0..25 {
            s.remove(format!("k{i}")).unwrap();
        }
        let before = s.stats();
        s.compact().unwrap();
        let after = s.stats();
        assert_eq!(after.keys, 25);
        assert_eq!(after.live_bytes, before.live_bytes);
        assert!(
            after.disk_bytes < before.disk_bytes / 5,
            "{before:?} -> {after:?}"
        );
        let segments = std::fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .path()
                    .extension()
                    .is_some_and(|x| x == "log")
            })
            .count();
        assert_eq!(segments, 2, "the compacted segment and the new active one");
        for i in 0..50 {
            let want = (i >= 25).then(|| format!("v{i}-19"));
            assert_eq!(get(&s, &format!("k{i}")), want);
        }
    }
    let s = KvStore::open_with(dir.path(), small_opts()).unwrap();
    for i in 0..50 {
        let want = (i >= 25).then(|| format!("v{i}-19"));
        assert_eq!(get(&s, &format!("k{i}")), want, "after reopen");
    }
}

#[test]
fn automatic_compaction_runs_in_the_background() {
    let dir = TempDir::new().unwrap();
    let mut o = small_opts();
    o.auto_compact = true;
    let s = KvStore::open_with(dir.path(), o).unwrap();
    let value = "x".repeat(100);
    for _ in 0..2000 {
        s.set("same".into(), value.clone()).unwrap();
    }
    // 2000 overwrites of ~130 bytes pass the 8 KiB threshold many times over;
    // wait (bounded) for the background thread to catch up.
    let mut ok = false;
    for _ in 0..200 {
        if s.stats().disk_bytes < 64 << 10 {
            ok = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    assert!(ok, "disk still {:?}", s.stats());
    assert_eq!(get(&s, "same"), Some(value));
}

#[test]
fn expired_keys_read_as_missing_and_compaction_drops_them() {
    let dir = TempDir::new().unwrap();
    let s = KvStore::open_with(dir.path(), small_opts()).unwrap();
    s.set_with_ttl("short".into(), "v".into(), Duration::from_millis(30))
        .unwrap();
    s.set_with_ttl("long".into(), "v".into(), Duration::from_secs(3600))
        .unwrap();
    assert_eq!(get(&s, "short").as_deref(), Some("v"));
    std::thread::sleep(Duration::from_millis(60));
    assert_eq!(get(&s, "short"), None);
    assert!(matches!(
        s.remove("short".into()),
        Err(KvsError::KeyNotFound)
    ));
    s.compact().unwrap();
    assert_eq!(s.stats().keys, 1);
    drop(s);
    let s = KvStore::open_with(dir.path(), small_opts()).unwrap();
    assert_eq!(get(&s, "short"), None);
    assert_eq!(get(&s, "long").as_deref(), Some("v"));
}

#[test]
fn sync_always_group_commit_from_many_threads() {
    let dir = TempDir::new().unwrap();
    let mut o = Options::default();
    o.sync = SyncMode::Always;
    {
        let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
        std::thread::scope(|scope| {
            for t in 0..8 {
                let s = s.clone();
                scope.spawn(move || {
                    for i in 0..100 {
                        s.set(format!("t{t}-{i}"), format!("{i}")).unwrap();
                    }
                });
            }
        });
    }
    let s = KvStore::open_with(dir.path(), o).unwrap();
    assert_eq!(s.stats().keys, 800);
    assert_eq!(get(&s, "t7-99").as_deref(), Some("99"));
}

#[test]
fn sync_modes_parse() {
    assert_eq!("always".parse::<SyncMode>().unwrap(), SyncMode::Always);
    assert_eq!("every-sec".parse::<SyncMode>().unwrap(), SyncMode::EverySec);
    assert_eq!("never".parse::<SyncMode>().unwrap(), SyncMode::Never);
    assert!("sometimes".parse::<SyncMode>().is_err());
}
