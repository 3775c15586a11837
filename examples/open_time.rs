//! Profiling aid: times `KvStore::open` of a store with N keys (created on
//! first run), without and with hint files.
//! `cargo run --release --example open_time -- DIR N`

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
    // Interleaved: open without hint files (every segment scanned and
    // sorted), then with them; best of 3 each.
    let (mut scan_best, mut hint_best) = (f64::MAX, f64::MAX);
    for round in 0..3 {
        for e in std::fs::read_dir(&dir)? {
            let p = e?.path();
            if p.extension().is_some_and(|x| x == "hint") {
                std::fs::remove_file(p)?;
            }
        }
        let t = Instant::now();
        let s = KvStore::open_with(&dir, o.clone())?;
        let scan = t.elapsed().as_secs_f64();
        let keys = s.stats().keys;
        s.write_hints()?;
        drop(s);
        let t = Instant::now();
        let s = KvStore::open_with(&dir, o.clone())?;
        let hinted = t.elapsed().as_secs_f64();
        assert_eq!(s.stats().keys, keys);
        drop(s);
        println!("round {round}: open {keys} keys: scan {scan:.3} s, with hints {hinted:.3} s");
        scan_best = scan_best.min(scan);
        hint_best = hint_best.min(hinted);
    }
    println!(
        "best of 3: scan {scan_best:.3} s, with hints {hint_best:.3} s ({:.2}x)",
        scan_best / hint_best
    );
    Ok(())
}
