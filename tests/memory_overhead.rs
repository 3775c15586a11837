//! Measures the memory engine's real bytes per entry (the figure behind
//! `ENTRY_OVERHEAD`): RSS growth over 1,000,000 inserts of 16-byte keys
//! and 100-byte values. `#[ignore]`: run it in release, alone:
//!
//! `KVS_EVICTION=s3fifo cargo test --release --test memory_overhead -- --ignored --nocapture`

use kvs::engine::memory::{ENTRY_OVERHEAD, EvictionPolicy, MemoryOptions};
use kvs::{KvsEngine, MemoryEngine};

fn rss() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    pages * unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64
}

#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn per_entry_overhead() {
    let policy: EvictionPolicy = std::env::var("KVS_EVICTION")
        .unwrap_or_else(|_| "s3fifo".into())
        .parse()
        .unwrap();
    const N: u64 = 1_000_000;
    // A bound far above the data: the policy's queues exist, nothing goes.
    let e = MemoryEngine::with_options(MemoryOptions {
        max_memory: 1 << 40,
        eviction: policy,
    });
    let value = "v".repeat(100);
    let before = rss();
    for i in 0..N {
        e.set(format!("key:{i:012}"), value.clone()).unwrap();
    }
    let after = rss();
    let payload = N * (16 + 100);
    let per_entry = (after - before) as f64 / N as f64;
    let overhead = (after - before - payload) as f64 / N as f64;
    println!(
        "policy {policy}: RSS +{} bytes for {N} entries: {per_entry:.1} bytes/entry, \
         {overhead:.1} beyond key+value (ENTRY_OVERHEAD = {ENTRY_OVERHEAD}); accounted used_memory {}",
        after - before,
        e.stats().used_memory
    );
    assert_eq!(e.len(), N);
}

/// The same at the bound: 10x the bound written through a bounded engine,
/// so eviction runs all along (policy queues, S3-FIFO's ghost, freed and
/// reused blocks). Prints RSS growth per entry held.
#[test]
#[ignore = "measurement: run in release with --ignored --nocapture"]
fn per_entry_overhead_at_the_bound() {
    let policy: EvictionPolicy = std::env::var("KVS_EVICTION")
        .unwrap_or_else(|_| "s3fifo".into())
        .parse()
        .unwrap();
    let value_size: usize = std::env::var("VALUE_SIZE")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(100);
    let bound: u64 = 64 << 20;
    let e = MemoryEngine::with_options(MemoryOptions {
        max_memory: bound,
        eviction: policy,
    });
    let value = "v".repeat(value_size);
    let before = rss();
    let n = 10 * bound / value_size as u64;
    for i in 0..n {
        e.set(format!("key:{i:012}"), value.clone()).unwrap();
    }
    let after = rss();
    let held = e.len();
    println!(
        "policy {policy}, {value_size} B values, bound {bound}: {held} entries held, \
         RSS +{} = {:.2} x bound, {:.1} bytes/entry held (accounted {} each)",
        after - before,
        (after - before) as f64 / bound as f64,
        (after - before) as f64 / held as f64,
        16 + value_size as u64 + ENTRY_OVERHEAD
    );
}
