//! Opens a store in `./kvs-data` (or the directory given as the first
//! argument), writes, reads, removes, compacts, reopens, and prints what it
//! did.

use std::time::Instant;

use kvs::{KvStore, KvsEngine};

fn main() -> kvs::Result<()> {
    let dir = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "kvs-data".to_string());
    let n = 100_000;
    let store = KvStore::open(&dir)?;

    let t = Instant::now();
    for i in 0..n {
        store.set(format!("key{i:06}"), format!("value {i}"))?;
    }
    println!("set {n} keys in {:?}", t.elapsed());

    let t = Instant::now();
    for i in (0..n).step_by(7) {
        assert_eq!(store.get(format!("key{i:06}"))?, Some(format!("value {i}")));
    }
    println!("read back every 7th key in {:?}", t.elapsed());

    store.remove("key000000".to_string())?;
    store.compact()?;
    let stats = store.stats();
    println!(
        "after remove + compaction: {} keys, {} live bytes, {} on disk",
        stats.keys, stats.live_bytes, stats.disk_bytes
    );
    drop(store);

    let t = Instant::now();
    let store = KvStore::open(&dir)?;
    println!("reopened {} keys in {:?}", store.stats().keys, t.elapsed());
    println!("key000001 = {:?}", store.get("key000001".to_string())?);
    println!(
        "key000000 = {:?} (removed)",
        store.get("key000000".to_string())?
    );
    Ok(())
}
