//! Concurrency over TCP on both engines: INCR is atomic across many
//! connections (raw sockets), and a full SCAN (through the `redis` crate)
//! returns every key that exists throughout exactly once while other
//! connections write and delete keys around them.

mod resp_server_support;
mod resp_support;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use redis::AsyncTypedCommands;
use resp_server_support::{ENGINES, KvsServer, redis_connect as connect};
use resp_support::{RawConn, cmd};

/// Connections of the atomicity test, and INCRs each sends.
const CONNECTIONS: usize = 50;
const INCRS: usize = 10_000;
/// INCRs pipelined in one go: enough to keep the debug-build test to
/// seconds, small enough that many connections interleave.
const WINDOW: usize = 500;

/// Sends `INCRS` INCRs of `counter` in windows on a raw socket (the
/// client side as cheap as it gets, so the server is what is measured);
/// the values they returned, in order.
fn increment(addr: SocketAddr) -> Vec<i64> {
    let mut conn = RawConn::connect(addr).unwrap();
    let window: Vec<u8> = cmd("INCR counter").repeat(WINDOW);
    let mut seen = Vec::with_capacity(INCRS);
    for _ in 0..INCRS / WINDOW {
        conn.send(&window).unwrap();
        for _ in 0..WINDOW {
            let reply = conn.reply().unwrap();
            let text = std::str::from_utf8(&reply).unwrap();
            let value = text
                .strip_prefix(':')
                .and_then(|t| t.strip_suffix("\r\n"))
                .unwrap_or_else(|| panic!("INCR answered {text:?}"));
            seen.push(value.parse().unwrap());
        }
    }
    seen
}

#[test]
fn fifty_connections_increment_one_key_atomically_on_both_engines() {
    for engine in ENGINES {
        let server = KvsServer::start(engine);
        let addr = server.addr;
        let started = std::time::Instant::now();
        let threads: Vec<_> = (0..CONNECTIONS)
            .map(|_| std::thread::spawn(move || increment(addr)))
            .collect();
        let mut seen = Vec::with_capacity(CONNECTIONS * INCRS);
        for t in threads {
            let mine = t.join().unwrap();
            // One connection's increments are ordered.
            assert!(mine.windows(2).all(|w| w[0] < w[1]), "{engine:?}");
            seen.extend(mine);
        }
        println!(
            "{engine:?}: {} INCRs in {:?}",
            CONNECTIONS * INCRS,
            started.elapsed()
        );
        let want = (CONNECTIONS * INCRS) as i64;
        let total = server.connect().call(&cmd("GET counter"));
        assert_eq!(
            total,
            format!("${}\r\n{want}\r\n", want.to_string().len()).into_bytes(),
            "{engine:?}"
        );
        // Every INCR saw a different value: 1 ..= 500,000, each once.
        seen.sort_unstable();
        assert!(
            seen.iter().copied().eq(1..=want),
            "{engine:?}: INCR replies are not 1..={want} each once"
        );
        server.stop();
    }
}

/// Keys that exist for the whole scan.
const STABLE: usize = 4000;
/// Full scans made while the writers run.
const ROUNDS: usize = 4;

#[test]
fn scan_returns_every_stable_key_exactly_once_under_concurrent_writes() {
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    for engine in ENGINES {
        let server = KvsServer::start(engine);
        let addr = server.addr;
        server.block_on(async move {
            let mut con = connect(addr).await;
            let mut pipe = redis::pipe();
            for i in 0..STABLE {
                pipe.set(stable(i), "v").ignore();
            }
            pipe.query_async::<()>(&mut con).await.unwrap();

            // Writers: keys that sort between, before and after the
            // stable ones come and go (SET, DEL, expiring SET), and the
            // stable ones are overwritten, on two other connections.
            let stop = Arc::new(AtomicBool::new(false));
            let writers: Vec<_> = (0..2u64)
                .map(|w| {
                    let stop = Arc::clone(&stop);
                    tokio::spawn(async move {
                        let mut rng = StdRng::seed_from_u64(seed ^ (w + 1));
                        let mut con = connect(addr).await;
                        let mut batches = 0u64;
                        while !stop.load(Ordering::Relaxed) || batches < 5 {
                            let mut pipe = redis::pipe();
                            for _ in 0..50 {
                                let i = rng.random_range(0..STABLE);
                                let temp = match rng.random_range(0..4) {
                                    0 => format!("a{i}"),
                                    1 => format!("z{i}"),
                                    _ => format!("{}:t{}", stable(i), rng.random_range(0..3)),
                                };
                                match rng.random_range(0..5) {
                                    0 | 1 => pipe.set(&temp, "t").ignore(),
                                    2 => pipe.del(&temp).ignore(),
                                    3 => pipe.set_ex(&temp, "t", 1).ignore(),
                                    _ => pipe.set(stable(i), rng.random_range(0..100)).ignore(),
                                };
                            }
                            pipe.query_async::<()>(&mut con).await.unwrap();
                            batches += 1;
                        }
                        batches
                    })
                })
                .collect();

            let mut rng = StdRng::seed_from_u64(seed);
            for round in 0..ROUNDS {
                let pattern = (round % 2 == 1).then_some("k:*");
                let mut seen: BTreeMap<String, usize> = BTreeMap::new();
                let mut cursor: u64 = 0;
                let mut calls = 0;
                loop {
                    let mut cmd = redis::cmd("SCAN");
                    cmd.arg(cursor);
                    if let Some(p) = pattern {
                        cmd.arg("MATCH").arg(p);
                    }
                    cmd.arg("COUNT").arg(rng.random_range(1..300));
                    // The cursor comes back as a decimal string, as every
                    // client library expects.
                    let (next, keys): (String, Vec<String>) =
                        cmd.query_async(&mut con).await.unwrap();
                    for key in keys {
                        *seen.entry(key).or_default() += 1;
                    }
                    cursor = next.parse().unwrap_or_else(|_| panic!("cursor {next:?}"));
                    calls += 1;
                    assert!(calls < 100_000, "SCAN does not end");
                    if cursor == 0 {
                        break;
                    }
                }
                let twice: Vec<_> = seen.iter().filter(|(_, n)| **n > 1).collect();
                assert!(
                    twice.is_empty(),
                    "{engine:?} round {round} (seed {seed}): returned more than once: {:?}",
                    &twice[..twice.len().min(10)]
                );
                let missing: Vec<String> = (0..STABLE)
                    .map(stable)
                    .filter(|k| !seen.contains_key(k))
                    .collect();
                assert!(
                    missing.is_empty(),
                    "{engine:?} round {round} (seed {seed}): {} stable keys missing, e.g. {:?}",
                    missing.len(),
                    &missing[..missing.len().min(10)]
                );
                if let Some(p) = pattern {
                    let prefix = p.trim_end_matches('*');
                    assert!(seen.keys().all(|k| k.starts_with(prefix)));
                }
            }
            stop.store(true, Ordering::Relaxed);
            for w in writers {
                assert!(w.await.unwrap() >= 5);
            }
            // The stable keys are all still there.
            let mut users = con.keys("k:?????").await.unwrap();
            users.sort();
            assert_eq!(users, (0..STABLE).map(stable).collect::<Vec<_>>());
        });
        server.stop();
    }
}

fn stable(i: usize) -> String {
    format!("k:{i:05}")
}
