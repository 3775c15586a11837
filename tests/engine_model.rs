//! Random operations against KvStore and a BTreeMap, with random reopens and
//! compactions. The seed is printed on failure; set KVS_MODEL_SEED to replay.

use std::collections::BTreeMap;

use kvs::{KvStore, KvsEngine, KvsError, Options};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use tempfile::TempDir;

fn opts() -> Options {
    let mut o = Options::default();
    o.segment_max_bytes = 1024;
    o.compaction_min_stale_bytes = 4096;
    o
}

fn run(seed: u64, steps: usize) {
    let dir = TempDir::new().unwrap();
    let mut rng = StdRng::seed_from_u64(seed);
    let mut model: BTreeMap<String, String> = BTreeMap::new();
    let mut store = KvStore::open_with(dir.path(), opts()).unwrap();
    for step in 0..steps {
        let key = format!("key{}", rng.random_range(0..40));
        let ctx = || format!("seed {seed}, step {step}, key {key}");
        match rng.random_range(0..100) {
            0..45 => {
                let len = rng.random_range(0..200);
                let value: String = (0..len).map(|_| rng.random_range('a'..='z')).collect();
                store.set(key.clone(), value.clone()).unwrap();
                model.insert(key.clone(), value);
            }
            45..65 => {
                let got = store.remove(key.clone());
                match model.remove(&key) {
                    Some(_) => got.unwrap_or_else(|e| panic!("{}: {e}", ctx())),
                    None => assert!(matches!(got, Err(KvsError::KeyNotFound)), "{}", ctx()),
                }
            }
            65..95 => assert_eq!(
                store.get(key.clone()).unwrap(),
                model.get(&key).cloned(),
                "{}",
                ctx()
            ),
            95..98 => {
                drop(store);
                store = KvStore::open_with(dir.path(), opts()).unwrap();
            }
            _ => store.compact().unwrap(),
        }
    }
    drop(store);
    let store = KvStore::open_with(dir.path(), opts()).unwrap();
    for i in 0..40 {
        let key = format!("key{i}");
        assert_eq!(
            store.get(key.clone()).unwrap(),
            model.get(&key).cloned(),
            "seed {seed}, final {key}"
        );
    }
}

#[test]
fn random_operations_match_a_btreemap() {
    let seeds: Vec<u64> = match std::env::var("KVS_MODEL_SEED") {
        Ok(s) => vec![s.parse().expect("KVS_MODEL_SEED is a u64")],
        Err(_) => {
            let base: u64 = rand::random();
            (0..6).map(|i| base.wrapping_add(i)).collect()
        }
    };
    for seed in seeds {
        eprintln!("model seed {seed}");
        let r = std::panic::catch_unwind(|| run(seed, 2000));
        if r.is_err() {
            panic!("model test failed; replay with KVS_MODEL_SEED={seed}");
        }
    }
}
