//! Profiling aid: times `KvStore::open` of a store with N keys (created on
//! first run). `cargo run --release --example open_time -- DIR N`

use std::time::Instant;

use kvs::{KvStore, KvsEngine, Options, SyncMode};

fn main() -> kvs::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "open-time-data".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut o = Options::default();
    o.sync = SyncMode::Never;
    if !std::path::Path::new(&dir).exists() {
        let s = KvStore::open_with(&dir, o.clone())?;
        let value = "v".repeat(100);
        for i in 0..n {
            // Keys in a scattered order (a bijection of 0..n when n is not a
            // multiple of the prime), as random writes leave them in the log.
            let k = (i * 7_919_993) % n;
            s.set(format!("key{k:010}"), value.clone())?;
        }
    }
    for _ in 0..3 {
        let t = Instant::now();
        let s = KvStore::open_with(&dir, o.clone())?;
        println!("open {} keys: {:?}", s.stats().keys, t.elapsed());
    }
    Ok(())
}
