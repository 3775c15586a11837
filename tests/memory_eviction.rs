//! The memory engine's bound: never over it, `noeviction` loses nothing,
//! concurrent writers overshoot by at most one entry each, and the
//! policies keep what is read.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread;

use kvs::engine::memory::{ENTRY_OVERHEAD, EvictionPolicy, MemoryOptions, OOM_MESSAGE};
use kvs::engine::{Entry, Update};
use kvs::{KvsEngine, KvsError, MemoryEngine};
use proptest::prelude::*;

fn engine(max_memory: u64, eviction: EvictionPolicy) -> MemoryEngine {
    MemoryEngine::with_options(MemoryOptions {
        max_memory,
        eviction,
    })
}

fn charge(key: &str, value: &str) -> u64 {
    (key.len() + value.len()) as u64 + ENTRY_OVERHEAD
}

/// Every live key and value, through the public API.
fn contents(e: &MemoryEngine) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut after: Option<String> = None;
    loop {
        let page = e.scan(after.as_deref(), 64).unwrap();
        let Some(last) = page.last().cloned() else {
            return out;
        };
        for k in page {
            if let Some(entry) = e.get_entry(&k).unwrap() {
                out.insert(k, entry.value);
            }
        }
        after = Some(last);
    }
}

#[derive(Debug, Clone)]
enum Op {
    Set(u8, usize),
    Append(u8, usize),
    Remove(u8),
    Get(u8),
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        4 => (0u8..40, 0usize..400).prop_map(|(k, n)| Op::Set(k, n)),
        2 => (0u8..40, 1usize..100).prop_map(|(k, n)| Op::Append(k, n)),
        1 => (0u8..40).prop_map(Op::Remove),
        3 => (0u8..40).prop_map(Op::Get),
    ]
}

fn policy() -> impl Strategy<Value = EvictionPolicy> {
    prop::sample::select(EvictionPolicy::ALL.to_vec())
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    /// A model tracks every key's value and bytes; the engine may only
    /// drop keys (never change them), never holds more bytes than the
    /// bound, accounts exactly what it holds, and under `noeviction`
    /// drops nothing and refuses exactly the writes that do not fit.
    #[test]
    fn never_over_the_bound(
        eviction in policy(),
        max in 1_500u64..6_000,
        ops in prop::collection::vec(op(), 1..150),
    ) {
        let e = engine(max, eviction);
        let mut model: BTreeMap<String, String> = BTreeMap::new();
        for op in ops {
            let used: u64 = model.iter().map(|(k, v)| charge(k, v)).sum();
            match op {
                Op::Set(k, n) => {
                    let key = format!("key{k}");
                    let value = "v".repeat(n);
                    let old = model.get(&key).map_or(0, |v| charge(&key, v));
                    let fits = used - old + charge(&key, &value) <= max;
                    match e.set(key.clone(), value.clone()) {
                        Ok(()) => {
                            model.insert(key, value);
                        }
                        Err(KvsError::OutOfMemory(m)) => {
                            prop_assert_eq!(m, OOM_MESSAGE);
                            prop_assert!(!fits || eviction != EvictionPolicy::NoEviction);
                        }
                        Err(other) => prop_assert!(false, "{other}"),
                    }
                    if eviction == EvictionPolicy::NoEviction {
                        prop_assert_eq!(fits, model.get(&format!("key{k}")) == Some(&"v".repeat(n)));
                    }
                }
                Op::Append(k, n) => {
                    let key = format!("key{k}");
                    let r = e.update(key.clone(), |cur| {
                        let mut v = cur.map(|c| c.value).unwrap_or_default();
                        v.push_str(&"a".repeat(n));
                        (Update::Put(Entry { value: v.clone(), expires_at: 0 }), v)
                    });
                    match r {
                        Ok(v) => {
                            model.insert(key, v);
                        }
                        Err(KvsError::OutOfMemory(_)) => {}
                        Err(other) => prop_assert!(false, "{other}"),
                    }
                }
                Op::Remove(k) => {
                    let key = format!("key{k}");
                    let _ = e.remove(key.clone());
                    model.remove(&key);
                }
                Op::Get(k) => {
                    let key = format!("key{k}");
                    if let Some(v) = e.get(key.clone()).unwrap() {
                        prop_assert_eq!(Some(&v), model.get(&key));
                    }
                }
            }
            let stats = e.stats();
            prop_assert!(stats.used_memory <= max, "{} > {}", stats.used_memory, max);
            let held = contents(&e);
            let held_bytes: u64 = held.iter().map(|(k, v)| charge(k, v)).sum();
            prop_assert_eq!(stats.used_memory, held_bytes);
            for (k, v) in &held {
                prop_assert_eq!(Some(v), model.get(k), "{} holds a value never written", k);
            }
            if eviction == EvictionPolicy::NoEviction {
                prop_assert_eq!(&held, &model);
                prop_assert_eq!(stats.evicted, 0);
            } else {
                // Evicted keys leave the model too.
                model.retain(|k, _| held.contains_key(k));
            }
        }
    }
}

#[test]
fn noeviction_refuses_writes_over_the_bound_and_keeps_every_key() {
    let max = 50_000;
    let e = engine(max, EvictionPolicy::NoEviction);
    let mut stored = Vec::new();
    let err = loop {
        let key = format!("key{}", stored.len());
        match e.set(key.clone(), "x".repeat(100)) {
            Ok(()) => stored.push(key),
            Err(err) => break err,
        }
    };
    assert!(
        matches!(&err, KvsError::OutOfMemory(m) if m == OOM_MESSAGE),
        "{err}"
    );
    assert_eq!(
        err.to_string(),
        "out of memory: command not allowed when used memory > 'maxmemory'."
    );
    let per = charge(stored.last().unwrap(), &"x".repeat(100));
    assert!(stored.len() as u64 >= max / per - 1, "{}", stored.len());
    // Growing an existing key is refused too; shrinking one is allowed.
    assert!(matches!(
        e.set(stored[0].clone(), "x".repeat(10_000)),
        Err(KvsError::OutOfMemory(_))
    ));
    e.set(stored[0].clone(), "small".into()).unwrap();
    for (i, k) in stored.iter().enumerate() {
        let want = if i == 0 {
            "small".to_owned()
        } else {
            "x".repeat(100)
        };
        assert_eq!(e.get(k.clone()).unwrap(), Some(want), "{k}");
    }
    assert!(e.stats().used_memory <= max);
    assert_eq!(e.stats().evicted, 0);
    assert_eq!(e.stats().max_memory, max);
    // Room made by a remove is usable again.
    e.remove(stored[1].clone()).unwrap();
    e.set("new".into(), "x".repeat(100)).unwrap();
}

#[test]
fn an_entry_larger_than_the_bound_is_refused_by_every_policy() {
    for policy in EvictionPolicy::ALL {
        let e = engine(10_000, policy);
        e.set("a".into(), "1".into()).unwrap();
        let r = e.set("big".into(), "x".repeat(20_000));
        assert!(matches!(r, Err(KvsError::OutOfMemory(_))), "{policy}");
        assert_eq!(e.get("a".into()).unwrap().as_deref(), Some("1"), "{policy}");
    }
}

#[test]
fn eight_concurrent_writers_overshoot_by_at_most_one_entry_each() {
    let value = "v".repeat(100);
    let entry = charge("t0-k000000", &value);
    let max = 200 * entry;
    for policy in EvictionPolicy::ALL {
        let e = engine(max, policy);
        let done = AtomicBool::new(false);
        let highest = AtomicU64::new(0);
        thread::scope(|s| {
            let writers: Vec<_> = (0..8)
                .map(|t| {
                    let (e, value) = (e.clone(), &value);
                    s.spawn(move || {
                        for i in 0..5_000 {
                            let key = format!("t{t}-k{i:06}");
                            match e.set(key.clone(), value.clone()) {
                                Ok(()) => {}
                                Err(KvsError::OutOfMemory(_))
                                    if policy == EvictionPolicy::NoEviction => {}
                                Err(err) => panic!("{policy}: {err}"),
                            }
                            if i % 3 == 0 {
                                let _ = e.get(key).unwrap();
                            }
                        }
                    })
                })
                .collect();
            s.spawn(|| {
                while !done.load(Ordering::Relaxed) {
                    highest.fetch_max(e.stats().used_memory, Ordering::Relaxed);
                }
            });
            for w in writers {
                w.join().unwrap();
            }
            done.store(true, Ordering::Relaxed);
        });
        let highest = highest.load(Ordering::Relaxed);
        let slack = if policy == EvictionPolicy::NoEviction {
            0
        } else {
            8 * entry
        };
        assert!(
            highest <= max + slack,
            "{policy}: {highest} > {max} + {slack}"
        );
        let stats = e.stats();
        assert!(stats.used_memory <= max, "{policy}: {stats:?}");
        let held = contents(&e);
        let bytes: u64 = held.iter().map(|(k, v)| charge(k, v)).sum();
        assert_eq!(stats.used_memory, bytes, "{policy}");
        if policy != EvictionPolicy::NoEviction {
            assert_eq!(stats.keys + stats.evicted, 40_000, "{policy}: {stats:?}");
        }
    }
}

#[test]
fn keys_read_often_survive_a_stream_of_one_time_keys() {
    let value = "v".repeat(100);
    let entry = charge("hot00", &value);
    for policy in [
        EvictionPolicy::Lru,
        EvictionPolicy::Sieve,
        EvictionPolicy::S3Fifo,
    ] {
        let e = engine(500 * entry, policy);
        let hot: Vec<String> = (0..20).map(|i| format!("hot{i:02}")).collect();
        for k in &hot {
            e.set(k.clone(), value.clone()).unwrap();
        }
        let mut misses = 0;
        for i in 0..10_000 {
            e.set(format!("scan{i:06}"), value.clone()).unwrap();
            if i % 25 == 0 {
                for k in &hot {
                    if e.get(k.clone()).unwrap().is_none() {
                        misses += 1;
                        e.set(k.clone(), value.clone()).unwrap();
                    }
                }
            }
        }
        assert_eq!(misses, 0, "{policy}");
        assert!(e.stats().evicted > 9_000, "{policy}: {:?}", e.stats());
    }
}

#[test]
fn clear_resets_the_accounting_and_the_queues() {
    for policy in EvictionPolicy::ALL {
        let e = engine(20_000, policy);
        for i in 0..50 {
            let _ = e.set(format!("k{i}"), "x".repeat(100));
        }
        e.clear().unwrap();
        assert_eq!(e.stats().used_memory, 0);
        for i in 0..50 {
            let _ = e.set(format!("j{i}"), "x".repeat(100));
        }
        let held = contents(&e);
        let bytes: u64 = held.iter().map(|(k, v)| charge(k, v)).sum();
        assert_eq!(e.stats().used_memory, bytes, "{policy}");
        assert!(bytes <= 20_000 && !held.is_empty(), "{policy}");
    }
}
