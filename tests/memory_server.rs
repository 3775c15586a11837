//! `kvs-server --engine memory --max-memory … --eviction …` as a child
//! process over the native protocol: the flags, the errors, and the
//! process's resident memory against the bound.

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::thread;
use std::time::Duration;

use kvs::engine::memory::OOM_MESSAGE;
use kvs::{KvsClient, KvsError};
use tempfile::TempDir;

const SERVER: &str = env!("CARGO_BIN_EXE_kvs-server");

/// A `kvs-server` child, killed by its PID when dropped.
struct Server {
    child: Child,
    addr: SocketAddr,
    _dir: TempDir,
}

impl Server {
    fn start(args: &[&str]) -> Server {
        let dir = TempDir::new().unwrap();
        let mut child = Command::new(SERVER)
            .args(["--addr", "127.0.0.1:0", "--log-level", "info"])
            .args(args)
            .current_dir(dir.path())
            .env_remove("KVS_MAX_MEMORY")
            .env_remove("KVS_EVICTION")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = mpsc::channel();
        thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(rest) = line.split("listening on ").nth(1) {
                    let addr = rest.split_whitespace().next().unwrap_or("").to_owned();
                    let _ = tx.send(addr);
                }
            }
        });
        let Ok(addr) = rx.recv_timeout(Duration::from_secs(20)) else {
            let _ = child.kill();
            panic!("server did not start");
        };
        Server {
            child,
            addr: addr.parse().unwrap(),
            _dir: dir,
        }
    }

    /// Resident set size of the child, from /proc.
    #[allow(dead_code)]
    fn rss(&self) -> u64 {
        rss_of(self.child.id())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Resident bytes of process `pid` (`/proc/PID/statm`, second field, in
/// pages).
fn rss_of(pid: u32) -> u64 {
    let statm = std::fs::read_to_string(format!("/proc/{pid}/statm")).unwrap();
    let pages: u64 = statm.split_whitespace().nth(1).unwrap().parse().unwrap();
    // SAFETY: sysconf has no preconditions.
    let page = unsafe { libc::sysconf(libc::_SC_PAGESIZE) } as u64;
    pages * page
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
    let mut c = KvsClient::connect(server.addr).await.unwrap();
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
    let mut child = Command::new(SERVER)
        .args(["--addr", "127.0.0.1:0", "--engine", "memory"])
        .env("KVS_MAX_MEMORY", "100kb")
        .env("KVS_EVICTION", "sieve")
        .current_dir(dir.path())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let addr: SocketAddr = loop {
        let line = lines.next().expect("server exited").unwrap();
        if let Some(rest) = line.split("listening on ").nth(1) {
            assert!(line.contains("eviction=sieve"), "{line}");
            assert!(line.contains("max_memory=102400"), "{line}");
            break rest.split_whitespace().next().unwrap().parse().unwrap();
        }
    };
    let mut c = KvsClient::connect(addr).await.unwrap();
    let value = "x".repeat(100);
    for i in 0..5_000 {
        c.set(&format!("k{i}"), &value).await.unwrap();
    }
    assert_eq!(c.get("k0").await.unwrap(), None);
    assert_eq!(c.get("k4999").await.unwrap().as_deref(), Some(&*value));
    let _ = child.kill();
    let _ = child.wait();
}
