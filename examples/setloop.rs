//! Profiling aid: a tight loop of `set` (and `get`) on a fresh store.
//! `cargo run --release --example setloop -- DIR VALUE_SIZE N`

use std::time::Instant;

use kvs::{KvStore, KvsEngine, Options, SyncMode};

fn main() -> kvs::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "setloop-data".into());
    let size: usize = args.next().and_then(|s| s.parse().ok()).unwrap_or(100);
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let mut o = Options::default();
    o.sync = SyncMode::Never;
    let s = KvStore::open_with(&dir, o)?;
    let value = "v".repeat(size);
    let t = Instant::now();
    for i in 0..n {
        s.set(format!("key{:010}", i % 10_000), value.clone())?;
    }
    println!("set: {:?}/op", t.elapsed() / n as u32);
    let t = Instant::now();
    for i in 0..n {
        s.get(format!("key{:010}", i % 10_000))?;
    }
    println!("get: {:?}/op", t.elapsed() / n as u32);
    Ok(())
}
