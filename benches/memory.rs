//! The memory engine's own cost per operation at 1,000,000 keys of 16 B
//! (`key:%012d`: every key shares a 10-byte prefix, as the server benches'
//! keys do) and 100 B values, against the same work on a
//! `crossbeam_skiplist::SkipMap<String, String>` (the index the engine used
//! before its hash tables) and on `quick_cache::sync::Cache` (a well-kept
//! concurrent cache), in the same run.
//!
//! `cargo bench --bench memory`; `KVS_BENCH_KEYS=N` changes the key count.

use std::hint::black_box;
use std::time::Duration;

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use crossbeam_skiplist::SkipMap;
use kvs::{KvsEngine, MemoryEngine};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

trait Map {
    fn name(&self) -> &'static str;
    fn set(&self, k: String, v: String);
    fn get(&self, k: String) -> bool;
    /// Up to `n` keys from `after` on, in order; `None` where unordered.
    fn scan(&self, after: &str, n: usize) -> Option<usize>;
}

impl Map for MemoryEngine {
    fn name(&self) -> &'static str {
        "kvs-memory"
    }
    fn set(&self, k: String, v: String) {
        KvsEngine::set(self, k, v).unwrap()
    }
    fn get(&self, k: String) -> bool {
        KvsEngine::get(self, k).unwrap().is_some()
    }
    fn scan(&self, after: &str, n: usize) -> Option<usize> {
        Some(KvsEngine::scan(self, Some(after), n).unwrap().len())
    }
}

impl Map for SkipMap<String, String> {
    fn name(&self) -> &'static str {
        "skipmap"
    }
    fn set(&self, k: String, v: String) {
        self.insert(k, v);
    }
    fn get(&self, k: String) -> bool {
        // The value is copied out, as the engine's `get` does.
        self.get(&k).map(|e| e.value().clone()).is_some()
    }
    fn scan(&self, after: &str, n: usize) -> Option<usize> {
        // lower_bound + next, as the engine did (range() leaks in 0.1.3).
        let mut cur = self.lower_bound(std::ops::Bound::Excluded(after));
        let mut keys = Vec::with_capacity(n);
        while let Some(e) = cur {
            keys.push(e.key().clone());
            if keys.len() == n {
                break;
            }
            cur = e.next();
        }
        Some(keys.len())
    }
}

impl Map for quick_cache::sync::Cache<String, String> {
    fn name(&self) -> &'static str {
        "quick_cache"
    }
    fn set(&self, k: String, v: String) {
        self.insert(k, v);
    }
    fn get(&self, k: String) -> bool {
        quick_cache::sync::Cache::get(self, &k).is_some()
    }
    fn scan(&self, _after: &str, _n: usize) -> Option<usize> {
        None
    }
}

fn key(i: u64) -> String {
    format!("key:{i:012}")
}

fn per_operation(c: &mut Criterion) {
    let n: u64 = std::env::var("KVS_BENCH_KEYS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(1_000_000);
    let value = "v".repeat(100);
    let maps: Vec<Box<dyn Map>> = vec![
        Box::new(MemoryEngine::new()),
        Box::new(SkipMap::<String, String>::new()),
        Box::new(quick_cache::sync::Cache::<String, String>::new(
            2 * n as usize,
        )),
    ];
    let mut g = c.benchmark_group(format!("memory/{n}keys/100B"));
    g.throughput(Throughput::Elements(1));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for m in &maps {
        for i in 0..n {
            m.set(key(i), value.clone());
        }
        let mut rng = StdRng::seed_from_u64(1);
        g.bench_function(BenchmarkId::new("get_hit", m.name()), |b| {
            b.iter(|| assert!(black_box(m.get(key(rng.random_range(0..n))))))
        });
        g.bench_function(BenchmarkId::new("get_miss", m.name()), |b| {
            b.iter(|| assert!(!black_box(m.get(key(n + rng.random_range(0..n))))))
        });
        g.bench_function(BenchmarkId::new("set_overwrite", m.name()), |b| {
            b.iter(|| m.set(key(rng.random_range(0..n)), value.clone()))
        });
        if m.scan("", 1).is_some() {
            for page in [10, 1000] {
                g.bench_function(BenchmarkId::new(format!("scan_{page}"), m.name()), |b| {
                    b.iter(|| {
                        let after = key(rng.random_range(0..n - page as u64));
                        assert_eq!(m.scan(&after, page), Some(page));
                    })
                });
            }
        }
    }
    g.finish();
}

criterion_group!(benches, per_operation);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
