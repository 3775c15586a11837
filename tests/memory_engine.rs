//! The memory engine: expiry, atomic read-modify-write, ordered scans,
//! counts and statistics.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use kvs::engine::{Entry, NO_EXPIRY, Update, now_ms};
use kvs::{KvsEngine, KvsError, MemoryEngine};

fn sleep_until(unix_ms: u64) {
    let now = now_ms();
    if unix_ms > now {
        thread::sleep(Duration::from_millis(unix_ms - now));
    }
}

fn incr(e: &MemoryEngine, key: &str) -> i64 {
    e.update(key.to_owned(), |cur| {
        let n = cur.map_or(0, |c| c.value.parse::<i64>().unwrap()) + 1;
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

#[test]
fn fifty_threads_of_increments_through_update_lose_none() {
    let e = MemoryEngine::new();
    thread::scope(|s| {
        for _ in 0..50 {
            let e = e.clone();
            s.spawn(move || {
                for _ in 0..10_000 {
                    incr(&e, "counter");
                }
            });
        }
    });
    assert_eq!(e.get("counter".into()).unwrap().as_deref(), Some("500000"));
}

#[test]
fn update_keep_put_remove() {
    let e = MemoryEngine::new();
    let seen = e.update("k".into(), |cur| (Update::Keep, cur)).unwrap();
    assert_eq!(seen, None);
    assert!(e.is_empty());
    e.update("k".into(), |_| {
        (
            Update::Put(Entry {
                value: "v".into(),
                expires_at: now_ms() + 60_000,
            }),
            (),
        )
    })
    .unwrap();
    let entry = e.get_entry("k").unwrap().unwrap();
    assert_eq!(entry.value, "v");
    assert!(entry.expires_at > now_ms());
    let seen = e.update("k".into(), |cur| (Update::Remove, cur)).unwrap();
    assert_eq!(seen.map(|c| c.value).as_deref(), Some("v"));
    assert_eq!(e.get("k".into()).unwrap(), None);
    assert_eq!(e.stats().used_memory, 0);
}

#[test]
fn a_key_with_px_50_is_there_at_40_ms_and_gone_at_60_ms() {
    let e = MemoryEngine::new();
    for round in 0..5 {
        let key = format!("k{round}");
        let t0 = now_ms();
        e.set_expiring(key.clone(), "v".into(), t0 + 50).unwrap();
        sleep_until(t0 + 40);
        let got = e.get(key.clone()).unwrap();
        // Only conclusive when the read finished before the deadline: a
        // busy machine may oversleep.
        if now_ms() < t0 + 50 {
            assert_eq!(got.as_deref(), Some("v"), "round {round}: gone early");
        }
        sleep_until(t0 + 60);
        assert_eq!(e.get(key.clone()).unwrap(), None, "round {round}");
        assert_eq!(e.get_entry(&key).unwrap(), None);
        assert!(e.scan(None, 10).unwrap().is_empty());
    }
    // A deadline far enough away is always conclusive.
    e.set_with_ttl("long".into(), "v".into(), Duration::from_secs(30))
        .unwrap();
    thread::sleep(Duration::from_millis(40));
    assert_eq!(e.get("long".into()).unwrap().as_deref(), Some("v"));
}

#[test]
fn a_plain_set_clears_the_ttl_and_set_with_ttl_sets_it_again() {
    let e = MemoryEngine::new();
    e.set_with_ttl("k".into(), "1".into(), Duration::from_millis(50))
        .unwrap();
    e.set("k".into(), "2".into()).unwrap();
    thread::sleep(Duration::from_millis(120));
    let entry = e.get_entry("k").unwrap().unwrap();
    assert_eq!(entry.value, "2");
    assert_eq!(entry.expires_at, NO_EXPIRY);
    e.set_with_ttl("k".into(), "3".into(), Duration::from_millis(50))
        .unwrap();
    thread::sleep(Duration::from_millis(120));
    assert_eq!(e.get("k".into()).unwrap(), None);
    assert!(matches!(e.remove("k".into()), Err(KvsError::KeyNotFound)));
}

#[test]
fn a_deadline_in_the_past_deletes_the_key() {
    let e = MemoryEngine::new();
    e.set("k".into(), "v".into()).unwrap();
    e.set_expiring("k".into(), "w".into(), now_ms() - 1)
        .unwrap();
    assert_eq!(e.get("k".into()).unwrap(), None);
    assert_eq!(e.len(), 0);
    assert_eq!(e.stats().used_memory, 0);
}

#[test]
fn scan_is_ordered_resumable_and_skips_expired_keys() {
    let e = MemoryEngine::new();
    for i in (0..100).rev() {
        e.set(format!("key{i:03}"), "v".into()).unwrap();
    }
    e.set_expiring("key050x".into(), "v".into(), now_ms() - 1)
        .unwrap();
    e.set_expiring("key051x".into(), "v".into(), now_ms() + 30)
        .unwrap();
    thread::sleep(Duration::from_millis(60));
    let mut all = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = e.scan(after.as_deref(), 7).unwrap();
        assert!(page.len() <= 7);
        if page.is_empty() {
            break;
        }
        after = page.last().cloned();
        all.extend(page);
    }
    let expected: Vec<String> = (0..100).map(|i| format!("key{i:03}")).collect();
    assert_eq!(all, expected);
    assert_eq!(e.scan(Some("key098"), 10).unwrap(), vec!["key099"]);
    assert_eq!(e.scan(Some("key0985"), 10).unwrap(), vec!["key099"]);
    assert!(e.scan(None, 0).unwrap().is_empty());
}

#[test]
fn scans_and_gets_under_overwrites_see_every_stable_key_exactly_once() {
    let e = MemoryEngine::new();
    let stable: Vec<String> = (0..2_000).map(|i| format!("s{i:05}")).collect();
    for k in &stable {
        e.set(k.clone(), "0".into()).unwrap();
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for t in 0..2 {
            let (e, stable, stop) = (e.clone(), &stable, &stop);
            s.spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    // Overwrite stable keys and churn others around them.
                    e.set(stable[i % stable.len()].clone(), i.to_string())
                        .unwrap();
                    let churn = format!("s{:05}x", i % stable.len());
                    e.set(churn.clone(), "c".into()).unwrap();
                    let _ = e.remove(churn);
                    i += 2;
                }
            });
        }
        for _ in 0..5 {
            let mut seen = BTreeSet::new();
            let mut after: Option<String> = None;
            loop {
                let page = e.scan(after.as_deref(), 100).unwrap();
                let Some(last) = page.last().cloned() else {
                    break;
                };
                for k in page {
                    if !k.ends_with('x') {
                        assert!(seen.insert(k.clone()), "{k} returned twice");
                    }
                }
                after = Some(last);
            }
            assert_eq!(seen.len(), stable.len());
            for k in &stable {
                assert!(e.get(k.clone()).unwrap().is_some(), "{k} missing");
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
}

#[test]
fn len_clear_and_stats_follow_the_contents() {
    let e = MemoryEngine::new();
    assert_eq!(e.stats().used_memory, 0);
    for i in 0..1_000 {
        e.set(format!("k{i}"), "x".repeat(i % 50)).unwrap();
    }
    assert_eq!(e.len(), 1_000);
    let stats = e.stats();
    assert_eq!(stats.keys, 1_000);
    let payload: u64 = (0..1_000)
        .map(|i: usize| (format!("k{i}").len() + i % 50) as u64)
        .sum();
    assert!(stats.used_memory > payload, "{stats:?}");
    // Overwrites in place change the accounting by the value's growth.
    let before = e.stats().used_memory;
    e.set("k0".into(), "y".repeat(100)).unwrap();
    assert_eq!(e.stats().used_memory, before + 100);
    e.clear().unwrap();
    assert_eq!(e.len(), 0);
    assert_eq!(e.stats().used_memory, 0);
    assert!(e.scan(None, 10).unwrap().is_empty());
    e.set("after".into(), "clear".into()).unwrap();
    assert_eq!(e.get("after".into()).unwrap().as_deref(), Some("clear"));
}

#[test]
fn expired_keys_are_counted_once() {
    let e = MemoryEngine::new();
    for i in 0..10 {
        e.set_expiring(format!("k{i}"), "v".into(), now_ms() + 20)
            .unwrap();
    }
    thread::sleep(Duration::from_millis(40));
    for i in 0..10 {
        assert_eq!(e.get(format!("k{i}")).unwrap(), None);
        assert_eq!(e.get(format!("k{i}")).unwrap(), None);
    }
    assert_eq!(e.stats().expired, 10);
    assert_eq!(e.len(), 0);
}

#[test]
fn unread_expired_keys_are_reclaimed_in_the_background() {
    let e = MemoryEngine::new();
    e.set("keep".into(), "me".into()).unwrap();
    let baseline = e.stats();
    for i in 0..100_000 {
        e.set_with_ttl(format!("ttl:{i}"), "x".repeat(32), Duration::from_secs(1))
            .unwrap();
    }
    // Held until their deadline (a slow debug build may already have
    // reclaimed the first ones).
    let filled = e.stats();
    assert!(filled.keys + filled.expired >= 100_001, "{filled:?}");
    let start = Instant::now();
    loop {
        let stats = e.stats();
        if stats.keys == baseline.keys && stats.used_memory == baseline.used_memory {
            assert_eq!(stats.expired, 100_000);
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(5),
            "not reclaimed within 5 s: {stats:?} (baseline {baseline:?})"
        );
        thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(e.get("keep".into()).unwrap().as_deref(), Some("me"));
}

/// A reader never misses a key that exists throughout, nor sees a value
/// half written, while writers overwrite it with values that fit in place,
/// values that need a new item (longer, or much shorter), and deadlines
/// that come and go.
#[test]
fn gets_during_overwrites_never_miss_a_live_key_or_see_a_torn_value() {
    let e = MemoryEngine::new();
    let keys: Vec<String> = (0..64).map(|i| format!("key:{i:012}")).collect();
    // Values are one letter repeated: a torn value mixes two letters.
    let value = |i: usize| {
        let len = [100, 100, 95, 300, 10, 100, 4096][i % 7];
        let letter = (b'a' + (i % 26) as u8) as char;
        letter.to_string().repeat(len)
    };
    for k in &keys {
        e.set(k.clone(), value(0)).unwrap();
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        for t in 0..2 {
            let (e, keys, stop) = (e.clone(), &keys, &stop);
            s.spawn(move || {
                let mut i = t;
                while !stop.load(Ordering::Relaxed) {
                    let k = keys[i % keys.len()].clone();
                    if i % 5 == 0 {
                        e.set_expiring(k, value(i), now_ms() + 60_000).unwrap();
                    } else {
                        e.set(k, value(i)).unwrap();
                    }
                    i += 2;
                }
            });
        }
        let start = Instant::now();
        let mut reads = 0u64;
        while start.elapsed() < Duration::from_secs(2) {
            for k in &keys {
                let v = e.get(k.clone()).unwrap();
                let v = v.unwrap_or_else(|| panic!("{k} missed after {reads} reads"));
                let first = v.as_bytes()[0];
                assert!(v.bytes().all(|b| b == first), "{k}: torn value");
                reads += 1;
            }
        }
        stop.store(true, Ordering::Relaxed);
    });
    assert_eq!(e.len(), keys.len() as u64);
}

/// SCAN's promise with small pages while keys around the stable ones are
/// created, grown into new items, expired and removed: every stable key
/// exactly once, in ascending order.
#[test]
fn small_page_scans_under_churn_return_each_stable_key_once_in_order() {
    let e = MemoryEngine::new();
    let stable: Vec<String> = (0..3_000).map(|i| format!("k{:06}", i * 2)).collect();
    for k in &stable {
        e.set(k.clone(), "s".into()).unwrap();
    }
    let stop = AtomicBool::new(false);
    thread::scope(|s| {
        let (w, stable_ref, stop_ref) = (e.clone(), &stable, &stop);
        s.spawn(move || {
            let mut i = 0usize;
            while !stop_ref.load(Ordering::Relaxed) {
                // Odd neighbours come and go; stable keys change size.
                let odd = format!("k{:06}", (i % 3_000) * 2 + 1);
                match i % 3 {
                    0 => w.set(odd, "o".into()).unwrap(),
                    1 => w.set_expiring(odd, "e".into(), now_ms() + 1).unwrap(),
                    _ => {
                        let _ = w.remove(odd);
                    }
                }
                let k = stable_ref[i % stable_ref.len()].clone();
                w.set(k, "s".repeat(1 + i % 300)).unwrap();
                i += 1;
            }
        });
        for limit in [1, 7, 64, 1_000] {
            let mut seen = Vec::new();
            let mut after: Option<String> = None;
            loop {
                let page = e.scan(after.as_deref(), limit).unwrap();
                assert!(page.len() <= limit);
                let Some(last) = page.last().cloned() else {
                    break;
                };
                for k in page {
                    if let Some(prev) = after.as_ref() {
                        assert!(k > *prev, "{k} after {prev}");
                    }
                    after = Some(k.clone());
                    if k.ends_with(['0', '2', '4', '6', '8']) {
                        seen.push(k);
                    }
                }
                after = Some(last);
            }
            assert_eq!(seen, stable, "limit {limit}");
        }
        stop.store(true, Ordering::Relaxed);
    });
}
