//! Profiling aid: times `KvStore::open` of a store with N keys (created on
//! first run), without and with hint files, and reports the process's
//! resident set after the open.
//! `cargo run --release --example open_time -- DIR N [hinted [write]]`
//! With `hinted`, only opens that read every hint are timed (5 of them),
//! and each close after them; with `write` as well, one key is set before
//! each close, so that the close writes the newest segment's hint.
//!
//! After each close the allocator is trimmed (not timed): the close frees
//! millions of small blocks, and glibc would otherwise consolidate them
//! inside the next open's first large allocation, which a process opening
//! the store once never pays.

use std::time::Instant;

use kvs::{KvStore, KvsEngine, Options, SyncMode};

/// User + system CPU seconds of this process so far (every thread).
fn cpu_s() -> f64 {
    // SAFETY: `getrusage` fills the zeroed struct it is given.
    let mut u: libc::rusage = unsafe { std::mem::zeroed() };
    unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut u) };
    let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
    t(u.ru_utime) + t(u.ru_stime)
}

/// `VmRSS` and `VmHWM` of this process, in MiB.
fn rss_mib() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|kb| kb.parse::<f64>().ok())
            .map_or(0.0, |kb| kb / 1024.0)
    };
    (field("VmRSS:"), field("VmHWM:"))
}

/// Returns freed memory to the system, consolidating glibc's free lists.
fn trim_allocator() {
    // SAFETY: `malloc_trim` only reorganises the allocator's own free lists.
    unsafe { libc::malloc_trim(0) };
}

fn remove_hints(dir: &str) -> std::io::Result<()> {
    for e in std::fs::read_dir(dir)? {
        let p = e?.path();
        if p.extension().is_some_and(|x| x == "hint") {
            std::fs::remove_file(p)?;
        }
    }
    Ok(())
}

fn main() -> kvs::Result<()> {
    let mut args = std::env::args().skip(1);
    let dir = args.next().unwrap_or_else(|| "open-time-data".into());
    let n: u64 = args
        .next()
        .and_then(|s| s.parse().ok())
        .unwrap_or(1_000_000);
    let hinted_only = args.next().as_deref() == Some("hinted");
    let write_before_close = args.next().as_deref() == Some("write");
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
    if hinted_only {
        // Every segment's hint, the newest's included (written at close).
        let s = KvStore::open_with(&dir, o.clone())?;
        s.write_hints()?;
        drop(s);
        trim_allocator();
        let mut best = (f64::MAX, f64::MAX);
        let mut close_best = (f64::MAX, f64::MAX);
        for round in 0..5 {
            let (t, c) = (Instant::now(), cpu_s());
            let s = KvStore::open_with(&dir, o.clone())?;
            let (wall, cpu) = (t.elapsed().as_secs_f64(), cpu_s() - c);
            let keys = s.stats().keys;
            let (rss, hwm) = rss_mib();
            println!(
                "round {round}: open {keys} keys with hints: {wall:.3} s wall, {cpu:.3} s CPU; \
                 RSS {rss:.0} MiB (peak {hwm:.0} MiB)"
            );
            if write_before_close {
                s.set(format!("key{:010}", round), "v".repeat(100))?;
            }
            let (t, c) = (Instant::now(), cpu_s());
            drop(s);
            let (close_wall, close_cpu) = (t.elapsed().as_secs_f64(), cpu_s() - c);
            println!("  close {close_wall:.3} s wall, {close_cpu:.3} s CPU");
            close_best = (close_best.0.min(close_wall), close_best.1.min(close_cpu));
            trim_allocator();
            best = (best.0.min(wall), best.1.min(cpu));
        }
        println!(
            "best of 5 with hints: {:.3} s wall, {:.3} s CPU; close {:.3} s wall, {:.3} s CPU",
            best.0, best.1, close_best.0, close_best.1
        );
        return Ok(());
    }
    // Interleaved: open without hint files (every segment scanned and
    // sorted), then with them; best of 3 each.
    let (mut scan_best, mut hint_best) = (f64::MAX, f64::MAX);
    for round in 0..3 {
        remove_hints(&dir)?;
        let t = Instant::now();
        let s = KvStore::open_with(&dir, o.clone())?;
        let scan = t.elapsed().as_secs_f64();
        let keys = s.stats().keys;
        s.write_hints()?;
        drop(s);
        trim_allocator();
        let t = Instant::now();
        let s = KvStore::open_with(&dir, o.clone())?;
        let hinted = t.elapsed().as_secs_f64();
        assert_eq!(s.stats().keys, keys);
        let (rss, hwm) = rss_mib();
        drop(s);
        trim_allocator();
        println!(
            "round {round}: open {keys} keys: scan {scan:.3} s, with hints {hinted:.3} s; \
             RSS after {rss:.0} MiB (peak {hwm:.0} MiB)"
        );
        scan_best = scan_best.min(scan);
        hint_best = hint_best.min(hinted);
    }
    println!(
        "best of 3: scan {scan_best:.3} s, with hints {hint_best:.3} s ({:.2}x)",
        scan_best / hint_best
    );
    Ok(())
}
