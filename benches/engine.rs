//! Engine throughput: kvs against sled and redb doing the same work in the
//! same run, plus open time and index memory per key for a 1M-key store.
//!
//! Durability for every engine: no fsync per operation (kvs `SyncMode::Never`,
//! sled with its background flusher off, redb `Durability::None` per commit;
//! redb runs one write transaction per `set`, the unit a `set` is).
//!
//! `KVS_BENCH_LARGE=0` skips the 1M-key sets (they take minutes to preload).

use std::alloc::{GlobalAlloc, Layout, System};
use std::hint::black_box;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, Throughput, criterion_group};
use kvs::{KvStore, KvsEngine, Options, SyncMode};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redb::{ReadableDatabase, TableDefinition};
use tempfile::TempDir;

/// Counts live heap bytes so the index cost per key can be reported.
struct Counting;
static LIVE: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size(), Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new, Ordering::Relaxed);
        LIVE.fetch_sub(l.size(), Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

const TABLE: TableDefinition<&str, &str> = TableDefinition::new("kv");

trait Engine {
    fn name(&self) -> &'static str;
    fn set(&self, k: String, v: String);
    fn get(&self, k: String) -> bool;
    fn preload(&self, keys: &[String], value: &str);
}

struct Kvs(KvStore);
struct Sled(sled::Db);
struct Redb(redb::Database);

impl Engine for Kvs {
    fn name(&self) -> &'static str {
        "kvs"
    }
    fn set(&self, k: String, v: String) {
        self.0.set(k, v).unwrap();
    }
    fn get(&self, k: String) -> bool {
        self.0.get(k).unwrap().is_some()
    }
    fn preload(&self, keys: &[String], value: &str) {
        for k in keys {
            self.0.set(k.clone(), value.to_string()).unwrap();
        }
    }
}

impl Engine for Sled {
    fn name(&self) -> &'static str {
        "sled"
    }
    fn set(&self, k: String, v: String) {
        self.0.insert(k.as_bytes(), v.as_bytes()).unwrap();
    }
    fn get(&self, k: String) -> bool {
        self.0
            .get(k.as_bytes())
            .unwrap()
            .map(|v| String::from_utf8(v.to_vec()).unwrap())
            .is_some()
    }
    fn preload(&self, keys: &[String], value: &str) {
        for k in keys {
            self.0.insert(k.as_bytes(), value.as_bytes()).unwrap();
        }
    }
}

impl Engine for Redb {
    fn name(&self) -> &'static str {
        "redb"
    }
    fn set(&self, k: String, v: String) {
        let mut tx = self.0.begin_write().unwrap();
        tx.set_durability(redb::Durability::None).unwrap();
        tx.open_table(TABLE)
            .unwrap()
            .insert(k.as_str(), v.as_str())
            .unwrap();
        tx.commit().unwrap();
    }
    fn get(&self, k: String) -> bool {
        let tx = self.0.begin_read().unwrap();
        let t = tx.open_table(TABLE).unwrap();
        t.get(k.as_str())
            .unwrap()
            .map(|g| g.value().to_string())
            .is_some()
    }
    fn preload(&self, keys: &[String], value: &str) {
        for chunk in keys.chunks(10_000) {
            let mut tx = self.0.begin_write().unwrap();
            tx.set_durability(redb::Durability::None).unwrap();
            {
                let mut t = tx.open_table(TABLE).unwrap();
                for k in chunk {
                    t.insert(k.as_str(), value).unwrap();
                }
            }
            tx.commit().unwrap();
        }
    }
}

fn open_all(dir: &TempDir) -> Vec<Box<dyn Engine>> {
    let mut o = Options::default();
    o.sync = SyncMode::Never;
    let kvs = KvStore::open_with(dir.path().join("kvs"), o).unwrap();
    let sled = sled::Config::new()
        .path(dir.path().join("sled"))
        .flush_every_ms(None)
        .open()
        .unwrap();
    let redb = redb::Database::create(dir.path().join("redb")).unwrap();
    vec![
        Box::new(Kvs(kvs)),
        Box::new(Sled(sled)),
        Box::new(Redb(redb)),
    ]
}

fn key(i: u64) -> String {
    format!("key{i:010}")
}

fn workloads(c: &mut Criterion, n: u64, value_size: usize) {
    let value: String = "v".repeat(value_size);
    let keys: Vec<String> = (0..n).map(key).collect();
    let dir = TempDir::new().unwrap();
    let engines = open_all(&dir);
    let mut g = c.benchmark_group(format!("engine/{n}keys/{value_size}B"));
    g.throughput(Throughput::Elements(1));
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    for e in &engines {
        e.preload(&keys, &value);
        let mut rng = StdRng::seed_from_u64(1);
        let mut seq = 0u64;
        g.bench_function(BenchmarkId::new("set_seq", e.name()), |b| {
            b.iter(|| {
                seq = (seq + 1) % n;
                e.set(key(seq), value.clone())
            })
        });
        g.bench_function(BenchmarkId::new("set_rand", e.name()), |b| {
            b.iter(|| e.set(key(rng.random_range(0..n)), value.clone()))
        });
        g.bench_function(BenchmarkId::new("get_hit", e.name()), |b| {
            b.iter(|| assert!(black_box(e.get(key(rng.random_range(0..n))))))
        });
        g.bench_function(BenchmarkId::new("get_miss", e.name()), |b| {
            b.iter(|| assert!(!black_box(e.get(key(n + rng.random_range(0..n))))))
        });
        g.bench_function(BenchmarkId::new("mixed_90get_10set", e.name()), |b| {
            b.iter(|| {
                let k = key(rng.random_range(0..n));
                if rng.random_range(0..10) == 0 {
                    e.set(k, value.clone())
                } else {
                    black_box(e.get(k));
                }
            })
        });
    }
    g.finish();
}

fn small(c: &mut Criterion) {
    workloads(c, 10_000, 100);
    workloads(c, 10_000, 4096);
}

fn large(c: &mut Criterion) {
    if std::env::var("KVS_BENCH_LARGE").as_deref() == Ok("0") {
        eprintln!("SKIPPED: 1M-key engine workloads (KVS_BENCH_LARGE=0)");
        return;
    }
    workloads(c, 1_000_000, 100);
}

/// Open time and index memory of a 1M-key store (100 B values); printed,
/// not a criterion measurement, since each open is a whole second-scale run.
fn open_1m(_c: &mut Criterion) {
    if std::env::var("KVS_BENCH_LARGE").as_deref() == Ok("0") {
        eprintln!("SKIPPED: 1M-key open time (KVS_BENCH_LARGE=0)");
        return;
    }
    let dir = TempDir::new().unwrap();
    let mut o = Options::default();
    o.sync = SyncMode::Never;
    let value = "v".repeat(100);
    {
        let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
        for i in 0..1_000_000 {
            s.set(key(i), value.clone()).unwrap();
        }
    }
    let mut times = Vec::new();
    let mut per_key = 0.0;
    for _ in 0..3 {
        let before = LIVE.load(Ordering::Relaxed);
        let t = Instant::now();
        let s = KvStore::open_with(dir.path(), o.clone()).unwrap();
        times.push(t.elapsed());
        per_key = (LIVE.load(Ordering::Relaxed) - before) as f64 / 1e6;
        assert_eq!(s.stats().keys, 1_000_000);
    }
    times.sort();
    println!(
        "open 1M keys (100 B values): median {:?} of {:?}",
        times[1], times
    );
    println!("index heap bytes per key (14-byte keys): {per_key:.1}");
}

criterion_group!(benches, small, large, open_1m);

fn main() {
    benches();
    criterion::Criterion::default()
        .configure_from_args()
        .final_summary();
}
