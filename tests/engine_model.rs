//! Random operations against KvStore and a BTreeMap, with random reopens,
//! compactions and clears. The seed is printed on failure; set
//! KVS_MODEL_SEED to replay.

use std::collections::BTreeMap;

use kvs::engine::{Entry, NO_EXPIRY, Update, now_ms};
use kvs::{KvStore, KvsEngine, KvsError, Options};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tempfile::TempDir;

const KEYS: usize = 40;

fn opts() -> Options {
    let mut o = Options::default();
    o.segment_max_bytes = 1024;
    o.compaction_min_stale_bytes = 4096;
    o
}

/// Model of the store: key to (value, expires_at). Expiries are either
/// long past or an hour ahead, so whether a key is live never depends on
/// when the test runs.
type Model = BTreeMap<String, (String, u64)>;

fn live(model: &Model, key: &str, now: u64) -> Option<Entry> {
    model
        .get(key)
        .filter(|(_, exp)| *exp == NO_EXPIRY || *exp > now)
        .map(|(v, exp)| Entry {
            value: v.clone(),
            expires_at: *exp,
        })
}

fn live_keys(model: &Model, now: u64) -> Vec<String> {
    model
        .keys()
        .filter(|k| live(model, k, now).is_some())
        .cloned()
        .collect()
}

fn random_value(rng: &mut StdRng) -> String {
    let len = rng.random_range(0..200);
    (0..len).map(|_| rng.random_range('a'..='z')).collect()
}

fn random_expiry(rng: &mut StdRng, now: u64) -> u64 {
    match rng.random_range(0..4) {
        0 => 1,               // long expired
        1 => now + 3_600_000, // an hour ahead
        _ => NO_EXPIRY,
    }
}

fn run(seed: u64, steps: usize) {
    let dir = TempDir::new().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model = Model::new();
    let mut store = KvStore::open_with(dir.path(), opts()).unwrap();
    for step in 0..steps {
        let key = format!("key{:02}", rng.random_range(0..KEYS));
        let now = now_ms();
        let ctx = || format!("seed {seed}, step {step}, key {key}");
        match rng.random_range(0..100) {
            0..30 => {
                let value = random_value(&mut rng);
                store.set(key.clone(), value.clone()).unwrap();
                model.insert(key.clone(), (value, NO_EXPIRY));
            }
            30..38 => {
                let value = random_value(&mut rng);
                let exp = random_expiry(&mut rng, now);
                store.set_expiring(key.clone(), value.clone(), exp).unwrap();
                model.insert(key.clone(), (value, exp));
            }
            38..50 => {
                let got = store.remove(key.clone());
                match live(&model, &key, now) {
                    Some(_) => {
                        got.unwrap_or_else(|e| panic!("{}: {e}", ctx()));
                        model.remove(&key);
                    }
                    None => assert!(matches!(got, Err(KvsError::KeyNotFound)), "{}", ctx()),
                }
            }
            50..62 => {
                // A counter-like read-modify-write: append a letter, keep,
                // or remove, depending on what is there.
                let choice = rng.random_range(0..3);
                let exp = random_expiry(&mut rng, now);
                let want_seen = live(&model, &key, now);
                let seen = store
                    .update(key.clone(), |cur| {
                        let what = match (&cur, choice) {
                            (_, 0) => Update::Keep,
                            (Some(_), 1) => Update::Remove,
                            (cur, _) => Update::Put(Entry {
                                value: format!(
                                    "{}x",
                                    cur.as_ref().map_or("", |e| e.value.as_str())
                                ),
                                expires_at: exp,
                            }),
                        };
                        (what, cur)
                    })
                    .unwrap_or_else(|e| panic!("{}: {e}", ctx()));
                assert_eq!(seen, want_seen, "{}: update saw", ctx());
                match (&want_seen, choice) {
                    (_, 0) => {}
                    (Some(_), 1) => {
                        model.remove(&key);
                    }
                    (cur, _) => {
                        let v = format!("{}x", cur.as_ref().map_or("", |e| e.value.as_str()));
                        model.insert(key.clone(), (v, exp));
                    }
                }
            }
            62..80 => assert_eq!(
                store.get(key.clone()).unwrap(),
                live(&model, &key, now).map(|e| e.value),
                "{}",
                ctx()
            ),
            80..86 => assert_eq!(
                store.get_entry(&key).unwrap(),
                live(&model, &key, now),
                "{}",
                ctx()
            ),
            86..92 => {
                let after = rng.random_bool(0.7).then(|| key.clone());
                let limit = rng.random_range(0..15);
                let want: Vec<String> = live_keys(&model, now)
                    .into_iter()
                    .filter(|k| after.as_ref().is_none_or(|a| k > a))
                    .take(limit)
                    .collect();
                assert_eq!(
                    store.scan(after.as_deref(), limit).unwrap(),
                    want,
                    "{}: scan after {after:?} limit {limit}",
                    ctx()
                );
            }
            92..95 => {
                drop(store);
                store = KvStore::open_with(dir.path(), opts()).unwrap();
            }
            95..98 => store.compact().unwrap(),
            _ => {
                if rng.random_range(0..4) == 0 {
                    store.clear().unwrap();
                    model.clear();
                    assert_eq!(store.len(), 0, "{}", ctx());
                }
            }
        }
    }
    drop(store);
    let store = KvStore::open_with(dir.path(), opts()).unwrap();
    let now = now_ms();
    for i in 0..KEYS {
        let key = format!("key{i:02}");
        assert_eq!(
            store.get_entry(&key).unwrap(),
            live(&model, &key, now),
            "seed {seed}, final {key}"
        );
    }
    assert_eq!(
        store.scan(None, usize::MAX).unwrap(),
        live_keys(&model, now),
        "seed {seed}, final scan"
    );
}

#[test]
fn random_operations_match_a_btreemap() {
    let seeds: Vec<u64> = match std::env::var("KVS_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("KVS_MODEL_SEED is a u64")],
        Err(_) => {
            let base: u64 = rand::random();
            (0..3).map(|i| base.wrapping_add(i)).collect()
        }
    };
    for seed in seeds {
        eprintln!("model seed {seed}");
        let r = std::panic::catch_unwind(|| run(seed, 1500));
        if r.is_err() {
            panic!("model test failed; replay with KVS_MODEL_SEED={seed}");
        }
    }
}
