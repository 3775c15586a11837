//! `kvs-server --engine memory --max-memory … --eviction …` as a child
//! process over the native protocol: the flags, the errors, and the
//! process's resident memory against the bound.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::thread;
use std::time::Duration;

use std::io::{Read, Write};
use std::net::TcpStream;

use kvs::engine::memory::OOM_MESSAGE;
use kvs::protocol::{Request, Response};
use kvs::{KvsClient, KvsError};
use tempfile::TempDir;

mod child_support;
use child_support::{SERVER, ServerChild, rss_of, server_command};

/// A `kvs-server` child with `args`, in a temporary directory it owns.
struct Server {
    child: ServerChild,
    _dir: TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let dir = TempDir::new().unwrap();
        let mut cmd = server_command();
        cmd.args(args).current_dir(dir.path());
        Server {
            child: ServerChild::spawn(cmd),
            _dir: dir,
        }
    }

    fn addr(&self) -> SocketAddr {
        self.child.addr
    }

    fn rss(&self) -> u64 {
        self.child.rss()
    }
}

#[test]
fn the_kvs_engine_refuses_a_memory_bound_at_startup() {
    let dir = TempDir::new().unwrap();
    let out = Command::new(SERVER)
        .args([
            "--addr",
            "127.0.0.1:0",
            "--engine",
            "kvs",
            "--max-memory",
            "1mb",
        ])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("--max-memory bounds the memory engine only"),
        "{stderr}"
    );
    let out = Command::new(SERVER)
        .args(["--addr", "127.0.0.1:0", "--engine", "memory"])
        .args(["--max-memory", "12xb"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("invalid size `12xb`"));
    let out = Command::new(SERVER)
        .args(["--addr", "127.0.0.1:0", "--engine", "memory"])
        .args(["--max-memory", "1mb", "--eviction", "random"])
        .current_dir(dir.path())
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("unknown eviction policy"));
}

#[tokio::test]
async fn noeviction_answers_redis_oom_text_and_keeps_every_key() {
    let server = Server::start(&[
        "--engine",
        "memory",
        "--max-memory",
        "100kb",
        "--eviction",
        "noeviction",
    ]);
    let mut c = KvsClient::connect(server.addr()).await.unwrap();
    let value = "x".repeat(100);
    let mut stored = 0;
    let err = loop {
        match c.set(&format!("k{stored}"), &value).await {
            Ok(()) => stored += 1,
            Err(e) => break e,
        }
        assert!(stored < 10_000, "the bound is not enforced");
    };
    assert!(
        matches!(&err, KvsError::OutOfMemory(m) if m.contains(OOM_MESSAGE)),
        "{err}"
    );
    assert!(stored > 100, "{stored}");
    for i in 0..stored {
        assert_eq!(
            c.get(&format!("k{i}")).await.unwrap().as_deref(),
            Some(&*value)
        );
    }
    c.ping().await.unwrap();
}

#[tokio::test]
async fn with_eviction_the_environment_sets_the_bound_and_old_keys_go() {
    let dir = TempDir::new().unwrap();
    let mut cmd = server_command();
    cmd.args(["--engine", "memory"])
        .env("KVS_MAX_MEMORY", "100kb")
        .env("KVS_EVICTION", "sieve")
        .current_dir(dir.path());
    let server = ServerChild::spawn(cmd);
    let log = server.log();
    let line = log.lines().find(|l| l.contains("listening on")).unwrap();
    assert!(line.contains("eviction=sieve"), "{line}");
    assert!(line.contains("max_memory=102400"), "{line}");
    let addr = server.addr;
    let mut c = KvsClient::connect(addr).await.unwrap();
    let value = "x".repeat(100);
    for i in 0..5_000 {
        c.set(&format!("k{i}"), &value).await.unwrap();
    }
    assert_eq!(c.get("k0").await.unwrap(), None);
    assert_eq!(c.get("k4999").await.unwrap().as_deref(), Some(&*value));
}

/// A `redis-server` child on a free loopback port with a pipelining RESP
/// writer; `None` (after printing SKIPPED, or failing under `CI=true`) when
/// redis-server is not installed.
struct Redis {
    child: Child,
    conn: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Redis {
    fn start(maxmemory: u64) -> Option<Redis> {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let spawned = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .args(["--maxmemory", &maxmemory.to_string()])
            .args(["--maxmemory-policy", "allkeys-lru"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn();
        let child = match spawned {
            Ok(child) => child,
            Err(e) => {
                assert!(
                    std::env::var("CI").as_deref() != Ok("true"),
                    "redis-server is required in CI: {e}"
                );
                // Straight to stderr: the test harness captures println!.
                let _ = std::io::Write::write_all(
                    &mut std::io::stderr(),
                    format!("SKIPPED: redis-server comparison (cannot start redis-server: {e})\n")
                        .as_bytes(),
                );
                return None;
            }
        };
        for _ in 0..200 {
            if let Ok(conn) = TcpStream::connect(("127.0.0.1", port)) {
                let reader = BufReader::new(conn.try_clone().unwrap());
                return Some(Redis {
                    child,
                    conn,
                    reader,
                });
            }
            thread::sleep(Duration::from_millis(25));
        }
        panic!("redis-server did not start");
    }

    /// Sends `commands` in one write and reads one reply line (plus bulk
    /// body) per command; returns the last reply.
    fn pipeline(&mut self, commands: &[Vec<&str>]) -> String {
        let mut out = Vec::new();
        for args in commands {
            out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
            for a in args {
                out.extend_from_slice(format!("${}\r\n{a}\r\n", a.len()).as_bytes());
            }
        }
        self.conn.write_all(&out).unwrap();
        let mut last = String::new();
        for _ in commands {
            last = self.reply();
        }
        last
    }

    fn reply(&mut self) -> String {
        let line = self.line();
        if let Some(n) = line.strip_prefix('$') {
            let n: i64 = n.parse().unwrap();
            if n < 0 {
                return String::new();
            }
            let mut body = vec![0; n as usize + 2];
            self.reader.read_exact(&mut body).unwrap();
            body.truncate(n as usize);
            return String::from_utf8(body).unwrap();
        }
        assert!(!line.starts_with('-'), "redis: {line}");
        line
    }

    fn line(&mut self) -> String {
        let mut line = String::new();
        self.reader.read_line(&mut line).unwrap();
        assert!(line.ends_with("\r\n"), "redis closed the connection");
        line.truncate(line.len() - 2);
        line
    }

    fn info(&mut self, field: &str) -> u64 {
        let info = self.pipeline(&[vec!["INFO", "memory"]]);
        info.lines()
            .find_map(|l| l.strip_prefix(&format!("{field}:")))
            .and_then(|v| v.trim().parse().ok())
            .unwrap()
    }

    fn fill(&mut self, keys: u64, value: &str) {
        let keys: Vec<String> = (0..keys).map(|i| format!("key:{i:012}")).collect();
        for batch in keys.chunks(100) {
            let commands: Vec<Vec<&str>> = batch
                .iter()
                .map(|k| vec!["SET", k.as_str(), value])
                .collect();
            self.pipeline(&commands);
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Fills `kvs-server --max-memory bound` (and, when installed, redis-server
/// with the same maxmemory) with 10x `bound` bytes of values of
/// `value_size`, and checks kvs's RSS stays within 1.2x the bound plus
/// the empty server's RSS. Returns (kvs RSS, redis RSS) after the fill.
async fn fill_ten_times_the_bound(bound: u64, value_size: usize) -> (u64, Option<u64>) {
    let bound_arg = bound.to_string();
    let server = Server::start(&["--engine", "memory", "--max-memory", &bound_arg]);
    let mut c = KvsClient::connect(server.addr()).await.unwrap();
    c.ping().await.unwrap();
    let baseline = server.rss();
    let value = "v".repeat(value_size);
    let keys = 10 * bound / value_size as u64;
    let names: Vec<String> = (0..keys).map(|i| format!("key:{i:012}")).collect();
    let mut highest = 0;
    for (n, batch) in names.chunks(100).enumerate() {
        let requests: Vec<Request<&str>> = batch
            .iter()
            .map(|k| Request::Set {
                key: k.as_str(),
                value: value.as_str(),
                ttl_ms: None,
            })
            .collect();
        for r in c.pipeline(&requests).await.unwrap() {
            assert!(matches!(r, Response::Ok), "{r:?}");
        }
        if n % 50 == 0 {
            highest = highest.max(server.rss());
        }
    }
    let rss = server.rss();
    highest = highest.max(rss);
    let limit = bound + bound / 5 + baseline;
    println!(
        "kvs-server --max-memory {bound}, {keys} x {value_size} B: empty RSS {baseline}, \
         after {rss} (highest sampled {highest}); limit 1.2 x bound + empty = {limit}; \
         (RSS - empty) / bound = {:.2}",
        (rss - baseline) as f64 / bound as f64
    );
    assert!(
        highest <= limit,
        "RSS {highest} over 1.2 x {bound} + {baseline}"
    );
    drop(server);

    let redis = Redis::start(bound).map(|mut r| {
        let pid = r.child.id();
        let empty = rss_of(pid);
        r.fill(keys, &value);
        let rss = rss_of(pid);
        let used = r.info("used_memory");
        println!(
            "redis-server --maxmemory {bound} allkeys-lru, same fill: empty RSS {empty}, after {rss}, \
             used_memory {used}; (RSS - empty) / bound = {:.2}",
            (rss - empty) as f64 / bound as f64
        );
        rss
    });
    (rss, redis)
}

#[tokio::test]
async fn rss_stays_near_a_small_bound() {
    // 16 MiB, not less: what an empty server has not yet touched when its
    // baseline is read (a connection's buffers for a pipeline of 100 x 4 KiB,
    // the pool threads' first stack pages and malloc caches, entries waiting
    // for the skip list's epoch to free them) is fixed, about 0.7 MiB in a
    // debug build. At a 4 MiB bound that alone is a sixth of the bound: the
    // 100 B fill measured 1.14 to 1.20 there from run to run, a test of the
    // machine's noise, not of the bound.
    fill_ten_times_the_bound(16 << 20, 100).await;
    fill_ten_times_the_bound(16 << 20, 4096).await;
}

#[tokio::test]
#[ignore = "measurement: 64 MiB bound, 640 MiB written; run in release with --ignored --nocapture"]
async fn rss_stays_near_a_64_mib_bound() {
    fill_ten_times_the_bound(64 << 20, 100).await;
    fill_ten_times_the_bound(64 << 20, 4096).await;
}

#[tokio::test]
#[ignore = "measurement: 1M keys; run in release with --ignored --nocapture"]
async fn memory_per_key_at_a_million_100_byte_values() {
    const KEYS: u64 = 1_000_000;
    let value = "v".repeat(100);
    let server = Server::start(&["--engine", "memory"]);
    let mut c = KvsClient::connect(server.addr()).await.unwrap();
    c.ping().await.unwrap();
    let empty = server.rss();
    let names: Vec<String> = (0..KEYS).map(|i| format!("key:{i:012}")).collect();
    for batch in names.chunks(100) {
        let requests: Vec<Request<&str>> = batch
            .iter()
            .map(|k| Request::Set {
                key: k.as_str(),
                value: value.as_str(),
                ttl_ms: None,
            })
            .collect();
        c.pipeline(&requests).await.unwrap();
    }
    let rss = server.rss();
    println!(
        "kvs memory engine, {KEYS} x (16 B key + 100 B value): RSS {empty} -> {rss}: {:.1} B/key",
        (rss - empty) as f64 / KEYS as f64
    );
    drop(server);
    if let Some(mut r) = Redis::start(0) {
        let pid = r.child.id();
        let empty = rss_of(pid);
        let used_empty = r.info("used_memory");
        r.fill(KEYS, &value);
        let rss = rss_of(pid);
        let used = r.info("used_memory");
        println!(
            "redis-server, same keys: used_memory {used_empty} -> {used}: {:.1} B/key; RSS {empty} -> {rss}: {:.1} B/key",
            (used - used_empty) as f64 / KEYS as f64,
            (rss - empty) as f64 / KEYS as f64
        );
    }
}
