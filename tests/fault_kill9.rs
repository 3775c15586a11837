//! kill -9 loop: a real `kvs-server` child on a free loopback port takes
//! pipelined sets and removes from a `KvsClient`, is SIGKILLed while
//! requests are in flight, and restarted on the same directory; every
//! acknowledged write and remove must be there after each restart.
//!
//! What is checked, for both `--sync always` and `--sync every-sec`: a key
//! whose last request was acknowledged reads exactly as that request left
//! it; a key with requests still in flight at the kill reads as its last
//! acknowledged state or as one of the in-flight requests left it. For
//! `every-sec` this is the same promise: SIGKILL ends the process, not the
//! machine, so records already copied into the shared map are in the page
//! cache and survive without an fsync (power loss is what every-sec may lose,
//! and is not simulated here).
//!
//! 5 cycles per mode in `cargo test`; `cargo test --test fault_kill9 --
//! --ignored` runs 50 per mode. Seeded (KVS_KILL9_SEED), seed printed.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::Path;

use kvs::KvsClient;
use kvs::protocol::{ErrorKind, Request, Response};
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};

mod child_support;
use child_support::{ServerChild, server_command};

const KEYS: usize = 300;
const WINDOW: usize = 32;

/// A `kvs-server` child on `dir` with `--sync sync`.
fn start_server(dir: &Path, sync: &str) -> ServerChild {
    let mut cmd = server_command();
    cmd.args(["--sync", sync]).arg("--dir").arg(dir);
    ServerChild::spawn(cmd)
}

/// What one request does to its key: `Some(value)` for a set, `None` for
/// a remove.
type Effect = Option<String>;

#[derive(Default)]
struct Model {
    /// State left by the last acknowledged request of each key.
    acked: BTreeMap<String, Effect>,
    /// Effects of requests sent but not acknowledged when the server died.
    in_flight: BTreeMap<String, Vec<Effect>>,
}

async fn load(addr: SocketAddr, model: &mut Model, rng: &mut StdRng, cycle: usize) {
    let mut client = KvsClient::connect(addr).await.unwrap();
    let ops = rng.random_range(200..1200);
    let mut sent: std::collections::VecDeque<(String, Effect)> = Default::default();
    let mut seq = 0;
    let mut acked = 0;
    while acked < ops {
        while sent.len() < WINDOW {
            let key = format!("key{:03}", rng.random_range(0..KEYS));
            let effect = if rng.random_range(0..4) == 0 {
                client
                    .queue(&Request::Remove { key: key.as_str() })
                    .unwrap();
                None
            } else {
                let value = format!("c{cycle}-{seq}");
                client
                    .queue(&Request::Set {
                        key: key.as_str(),
                        value: value.as_str(),
                        ttl_ms: None,
                    })
                    .unwrap();
                Some(value)
            };
            seq += 1;
            sent.push_back((key, effect));
        }
        let response = client
            .recv()
            .await
            .unwrap_or_else(|e| panic!("cycle {cycle}: {e}"));
        let (key, effect) = sent.pop_front().unwrap();
        match (&response, &effect) {
            (Response::Ok, _) => {}
            (
                Response::Error {
                    kind: ErrorKind::KeyNotFound,
                    ..
                },
                None,
            ) => {
                assert_eq!(
                    model.acked.get(&key).cloned().flatten(),
                    None,
                    "{key}: server said missing, model has it"
                );
            }
            other => panic!("unexpected response {other:?}"),
        }
        model.acked.insert(key, effect);
        acked += 1;
    }
    // Leave the window full and sent: these are in flight at the kill.
    client.flush().await.unwrap();
    for (key, effect) in sent {
        model.in_flight.entry(key).or_default().push(effect);
    }
}

async fn check(addr: SocketAddr, model: &mut Model, ctx: &str) {
    let mut client = KvsClient::connect(addr).await.unwrap();
    for i in 0..KEYS {
        let key = format!("key{i:03}");
        let got = client.get(&key).await.unwrap();
        let acked = model.acked.get(&key).cloned().flatten();
        match model.in_flight.remove(&key) {
            None => assert_eq!(got, acked, "{ctx}: {key} lost its acknowledged state"),
            Some(pending) => assert!(
                got == acked || pending.contains(&got),
                "{ctx}: {key} = {got:?}, neither acknowledged {acked:?} nor in flight {pending:?}"
            ),
        }
        // What is there now is the state the next cycle builds on.
        model.acked.insert(key, got);
    }
}

fn cycles(sync: &str, n: usize) {
    let seed: u64 = match std::env::var("KVS_KILL9_SEED") {
        Ok(s) => s.parse().expect("KVS_KILL9_SEED is a u64"),
        Err(_) => rand::random(),
    };
    eprintln!("kill -9 loop: sync {sync}, {n} cycles, seed {seed} (replay with KVS_KILL9_SEED)");
    let mut rng = StdRng::seed_from_u64(seed);
    let dir = tempfile::tempdir().unwrap();
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut model = Model::default();
    for cycle in 0..n {
        let server = start_server(dir.path(), sync);
        let ctx = format!("sync {sync}, seed {seed}, cycle {cycle}");
        let run = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rt.block_on(check(server.addr, &mut model, &ctx));
            rt.block_on(load(server.addr, &mut model, &mut rng, cycle));
        }));
        if let Err(panic) = run {
            eprintln!("{ctx}: server log:\n{}", server.log());
            std::panic::resume_unwind(panic);
        }
        server.kill9();
    }
    let server = start_server(dir.path(), sync);
    let ctx = format!("sync {sync}, seed {seed}, final");
    rt.block_on(check(server.addr, &mut model, &ctx));
}

#[test]
fn kill9_keeps_acknowledged_writes_and_removes_sync_always() {
    cycles("always", 5);
}

#[test]
fn kill9_keeps_acknowledged_writes_and_removes_sync_every_sec() {
    cycles("every-sec", 5);
}

#[test]
#[ignore = "soak: 50 cycles per sync mode"]
fn kill9_soak_50_cycles_each_mode() {
    cycles("always", 50);
    cycles("every-sec", 50);
}
