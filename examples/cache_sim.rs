//! Trace-driven cache simulator: replays one seeded cache-aside trace (GET,
//! and SET on a miss) through every kvs eviction policy, through `moka` and
//! `quick_cache` with the same byte weigher, and through `redis-server`
//! with `allkeys-lru` and `allkeys-lfu`, and prints hit ratios (and the
//! in-process replay speed of each kvs policy against the unbounded
//! engine) as Markdown rows.
//!
//! ```text
//! cargo run --release --example cache_sim -- [--requests 400000] [--bound 8mb]
//!     [--seed 42] [--no-redis] [--redis-server PATH] [--redis-plus-base]
//!     [--trace-overhead BYTES]
//! ```
//!
//! Workloads: Zipf 0.8 and 0.99 over a key space 10x the number of entries
//! the bound holds, and Zipf 0.99 with a one-time scan of as many new keys
//! as the cache holds every tenth of the trace; values of 100 B and 1 KiB.
//! The first fifth of each trace warms the cache and is not counted; scan
//! requests are not counted (they miss everywhere).
//!
//! Redis gets `maxmemory` = the bound, as kvs. Its `used_memory` includes
//! a fixed base of about 0.9 MB that kvs's accounting does not have; with
//! `--redis-plus-base` Redis gets the bound plus the `used_memory` of the
//! empty instance instead, so only entries compete for the bound.
//!
//! `--trace-overhead` sizes the key space with another per-entry figure
//! than `ENTRY_OVERHEAD` (e.g. 168, the accounting before the hash-table
//! index), so an earlier table's traces can be replayed exactly.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use kvs::engine::memory::{ENTRY_OVERHEAD, EvictionPolicy, MemoryOptions, parse_size};
use kvs::{KvsEngine, MemoryEngine};
use rand::SeedableRng;
use rand::rngs::SmallRng;
use rand_distr::{Distribution, Zipf};

/// Bytes of every key (`key:%012d`, `scn:%012d`).
const KEY_LEN: u64 = 16;

struct Args {
    requests: usize,
    bound: u64,
    seed: u64,
    redis: Option<String>,
    redis_plus_base: bool,
    /// Per-entry bytes the key space is sized with (10x the entries the
    /// bound holds); `ENTRY_OVERHEAD` unless given, to replay the traces
    /// of an earlier accounting.
    trace_overhead: u64,
}

fn args() -> Args {
    let mut a = Args {
        requests: 400_000,
        bound: 8 << 20,
        seed: 42,
        redis: Some("redis-server".to_owned()),
        redis_plus_base: false,
        trace_overhead: ENTRY_OVERHEAD,
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut val = || it.next().unwrap_or_else(|| panic!("{flag} needs a value"));
        match flag.as_str() {
            "--requests" => a.requests = val().parse().expect("--requests"),
            "--bound" => a.bound = parse_size(&val()).expect("--bound"),
            "--seed" => a.seed = val().parse().expect("--seed"),
            "--no-redis" => a.redis = None,
            "--redis-server" => a.redis = Some(val()),
            "--redis-plus-base" => a.redis_plus_base = true,
            "--trace-overhead" => a.trace_overhead = val().parse().expect("--trace-overhead"),
            other => panic!("unknown flag {other}"),
        }
    }
    a
}

/// One request: a key of the Zipf key space, or a one-time scan key.
#[derive(Clone, Copy)]
enum Req {
    Key(u32),
    Scan(u32),
}

impl Req {
    fn key(self) -> String {
        match self {
            Req::Key(i) => format!("key:{i:012}"),
            Req::Scan(i) => format!("scn:{i:012}"),
        }
    }
}

struct Workload {
    name: String,
    value_size: usize,
    trace: Vec<Req>,
}

fn workload(a: &Args, zipf_s: f64, scans: bool, value_size: usize) -> Workload {
    let entries = a.bound / (KEY_LEN + value_size as u64 + a.trace_overhead);
    let key_space = 10 * entries;
    let mut rng = SmallRng::seed_from_u64(a.seed ^ value_size as u64 ^ zipf_s.to_bits());
    let zipf = Zipf::new(key_space as f64, zipf_s).expect("valid Zipf parameters");
    // Zipf rank r is key perm[r]: popular keys are spread over the key
    // order rather than all at its start.
    let mut perm: Vec<u32> = (0..key_space as u32).collect();
    for i in (1..perm.len()).rev() {
        let j = (rand::RngExt::random_range(&mut rng, 0..=i as u64)) as usize;
        perm.swap(i, j);
    }
    let mut trace = Vec::with_capacity(a.requests + 10 * entries as usize);
    let mut scan_key = 0u32;
    let scan_every = a.requests / 10;
    for n in 0..a.requests {
        if scans && n > 0 && n % scan_every == 0 {
            for _ in 0..entries {
                trace.push(Req::Scan(scan_key));
                scan_key += 1;
            }
        }
        let rank = zipf.sample(&mut rng) as usize - 1;
        trace.push(Req::Key(perm[rank]));
    }
    Workload {
        name: format!(
            "zipf {zipf_s}{}, {} B values",
            if scans { " + scans" } else { "" },
            value_size
        ),
        value_size,
        trace,
    }
}

/// CPU time of the calling thread: unlike wall time, it does not count
/// the time other processes on a shared machine take from this one.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Replays `trace` cache-aside through `get_or_fill` (true on a hit) and
/// returns the hit ratio over the counted requests and the CPU time the
/// replay took on this thread per engine operation (GET or fill SET).
fn replay(w: &Workload, mut get_or_fill: impl FnMut(&str) -> bool) -> (f64, Duration) {
    let warm = w.trace.len() / 5;
    let (mut hits, mut counted, mut fills) = (0u64, 0u64, 0u64);
    let start = thread_cpu();
    for (n, req) in w.trace.iter().enumerate() {
        let hit = get_or_fill(&req.key());
        fills += !hit as u64;
        if n >= warm && matches!(req, Req::Key(_)) {
            counted += 1;
            hits += hit as u64;
        }
    }
    let ops = w.trace.len() as u32 + fills as u32;
    (hits as f64 / counted as f64, (thread_cpu() - start) / ops)
}

fn kvs_engine(bound: u64, policy: EvictionPolicy, value: &str) -> impl FnMut(&str) -> bool {
    let e = MemoryEngine::with_options(MemoryOptions {
        max_memory: bound,
        eviction: policy,
    });
    let value = value.to_owned();
    move |key| {
        if e.get(key.to_owned()).expect("get").is_some() {
            true
        } else {
            e.set(key.to_owned(), value.clone()).expect("set");
            false
        }
    }
}

#[derive(Clone)]
struct Bytes;

impl quick_cache::Weighter<String, String> for Bytes {
    fn weight(&self, key: &String, val: &String) -> u64 {
        key.len() as u64 + val.len() as u64 + ENTRY_OVERHEAD
    }
}

/// A redis-server child on a free loopback port, killed on drop.
struct Redis {
    child: Child,
    conn: BufReader<TcpStream>,
}

impl Redis {
    fn start(bin: &str, policy: &str, bound: u64, plus_base: bool) -> Option<Redis> {
        let port = TcpListener::bind("127.0.0.1:0")
            .ok()?
            .local_addr()
            .ok()?
            .port();
        let child = Command::new(bin)
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args([
                "--save",
                "",
                "--appendonly",
                "no",
                "--maxmemory-policy",
                policy,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .ok()?;
        let mut conn = None;
        for _ in 0..100 {
            if let Ok(s) = TcpStream::connect(("127.0.0.1", port)) {
                conn = Some(s);
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let stream = conn?;
        stream.set_nodelay(true).ok()?;
        let mut r = Redis {
            child,
            conn: BufReader::new(stream),
        };
        let base = if plus_base { r.used_memory() } else { 0 };
        let max = (bound + base).to_string();
        r.command(&["CONFIG", "SET", "maxmemory", &max]);
        Some(r)
    }

    fn command(&mut self, args: &[&str]) -> Option<Vec<u8>> {
        let mut out = format!("*{}\r\n", args.len()).into_bytes();
        for a in args {
            out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
            out.extend_from_slice(a.as_bytes());
            out.extend_from_slice(b"\r\n");
        }
        self.conn.get_mut().write_all(&out).expect("write to redis");
        let mut line = String::new();
        self.conn.read_line(&mut line).expect("read from redis");
        match line.as_bytes().first() {
            Some(b'$') => {
                let n: i64 = line[1..].trim().parse().expect("bulk length");
                if n < 0 {
                    return None;
                }
                let mut buf = vec![0; n as usize + 2];
                self.conn.read_exact(&mut buf).expect("bulk");
                buf.truncate(n as usize);
                Some(buf)
            }
            Some(b'+') | Some(b':') => Some(line.trim_end().as_bytes()[1..].to_vec()),
            _ => panic!("redis: {line}"),
        }
    }

    fn used_memory(&mut self) -> u64 {
        self.info_field("used_memory")
    }

    fn info_field(&mut self, name: &str) -> u64 {
        let info = self.command(&["INFO", "memory"]).unwrap_or_default();
        let info = String::from_utf8_lossy(&info);
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{name}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn main() {
    let a = args();
    println!(
        "requests per trace {} (+ scans), bound {} bytes, seed {}, ENTRY_OVERHEAD {ENTRY_OVERHEAD}, \
         key space sized with {} B per entry, redis maxmemory = bound{}",
        a.requests,
        a.bound,
        a.seed,
        a.trace_overhead,
        if a.redis_plus_base {
            " + empty used_memory"
        } else {
            ""
        }
    );
    println!();
    println!(
        "| workload | kvs lru | kvs sieve | kvs s3fifo | moka | quick_cache | redis allkeys-lru | redis allkeys-lfu |"
    );
    println!("|---|---|---|---|---|---|---|---|");
    let mut speed = Vec::new();
    for value_size in [100usize, 1024] {
        for (s, scans) in [(0.8, false), (0.99, false), (0.99, true)] {
            let w = workload(&a, s, scans, value_size);
            let value = "v".repeat(w.value_size);
            let mut row = vec![w.name.clone()];
            let (_, unbounded) = replay(&w, kvs_engine(0, EvictionPolicy::NoEviction, &value));
            let mut times = vec![("unbounded", unbounded)];
            for policy in [
                EvictionPolicy::Lru,
                EvictionPolicy::Sieve,
                EvictionPolicy::S3Fifo,
            ] {
                let (ratio, t) = replay(&w, kvs_engine(a.bound, policy, &value));
                row.push(format!("{:.2}%", ratio * 100.0));
                times.push((policy.name(), t));
            }
            let moka: moka::sync::Cache<String, String> = moka::sync::Cache::builder()
                .max_capacity(a.bound)
                .weigher(|k: &String, v: &String| {
                    (k.len() as u64 + v.len() as u64 + ENTRY_OVERHEAD) as u32
                })
                .build();
            let (ratio, _) = replay(&w, |key| {
                if moka.get(key).is_some() {
                    true
                } else {
                    moka.insert(key.to_owned(), value.clone());
                    false
                }
            });
            row.push(format!("{:.2}%", ratio * 100.0));
            let entries = (a.bound / (KEY_LEN + value_size as u64 + ENTRY_OVERHEAD)) as usize;
            let mut qc = quick_cache::unsync::Cache::with_weighter(entries, a.bound, Bytes);
            let (ratio, _) = replay(&w, |key| {
                if qc.get(key).is_some() {
                    true
                } else {
                    qc.insert(key.to_owned(), value.clone());
                    false
                }
            });
            row.push(format!("{:.2}%", ratio * 100.0));
            for policy in ["allkeys-lru", "allkeys-lfu"] {
                let redis = a
                    .redis
                    .as_deref()
                    .and_then(|bin| Redis::start(bin, policy, a.bound, a.redis_plus_base));
                match redis {
                    Some(mut r) => {
                        let (ratio, _) = replay(&w, |key| {
                            if r.command(&["GET", key]).is_some() {
                                true
                            } else {
                                r.command(&["SET", key, &value]);
                                false
                            }
                        });
                        row.push(format!("{:.2}%", ratio * 100.0));
                    }
                    None => row.push("SKIPPED (no redis-server)".to_owned()),
                }
            }
            println!("| {} |", row.join(" | "));
            speed.push((w.name, times));
        }
    }
    println!();
    println!(
        "In-process engine speed (one thread replaying the trace, GET + SET on miss): operations (GETs and \
         fills) per CPU-second of the replaying thread, and ratio to the unbounded engine:"
    );
    println!();
    println!("| workload | unbounded | lru | sieve | s3fifo |");
    println!("|---|---|---|---|---|");
    for (name, times) in speed {
        let base = times[0].1.as_secs_f64();
        let cells: Vec<String> = times
            .iter()
            .map(|(_, t)| {
                let s = t.as_secs_f64();
                format!("{:.0}k/s ({:.2}x)", 1.0 / s / 1e3, base / s)
            })
            .collect();
        println!("| {name} | {} |", cells.join(" | "));
    }
}
