//! Reaching servers: host names for `KvsClient`, `kvs-client` and
//! `kvs-bench`, and errors that name what answered when it is not kvs
//! (a Redis server, an HTTP server) instead of a frame error or a hang.

mod bench_support;
mod server_support;

use std::process::Command;
use std::time::Duration;

use bench_support::{Redis, responder};
use kvs::bench::{self, BenchOptions, Protocol, Stop};
use kvs::server::ServerConfig;
use kvs::{KvsClient, MemoryEngine};
use server_support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// Bounds every wait on a misbehaving peer.
const LIMIT: Duration = Duration::from_secs(15);

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn host_names_reach_the_server() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    let port = server.addr.port();
    let by_name = format!("localhost:{port}");
    let mut client = KvsClient::connect(&by_name).await.unwrap();
    client.set("k", "v").await.unwrap();
    assert_eq!(client.get("k").await.unwrap().as_deref(), Some("v"));

    // The CLI and the load tester take the same form.
    let argv = by_name.clone();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kvs-client"))
            .args(["--addr", &argv, "get", "k"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert!(out.status.success(), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "v\n");
    let opts = BenchOptions {
        addr: by_name,
        connections: 2,
        stop: Stop::Requests(100),
        ..BenchOptions::default()
    };
    let report = bench::run(&opts).await.unwrap();
    assert_eq!((report.ops, report.errors), (100, 0), "{report}");

    // Bad forms are refused with the form expected.
    for bad in ["localhost", "[::1:4000", "localhost:http"] {
        let err = KvsClient::connect(bad).await.unwrap_err().to_string();
        assert!(err.contains("HOST:PORT"), "{bad}: {err}");
    }
    server.stop().await;
}

/// Answers whatever arrives with an HTTP 400 and closes, as most HTTP
/// servers do with bytes that are not a request line.
async fn http_400(mut s: TcpStream) {
    let mut buf = [0u8; 64];
    if s.read(&mut buf).await.is_ok() {
        let _ = s
            .write_all(
                b"HTTP/1.1 400 Bad Request\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
            )
            .await;
    }
}

/// Like Redis with an inline command: it looks for the line end with
/// `strchr`, which stops at the first NUL, so a kvs frame gets no answer
/// until more than 64 KiB are buffered, then an error and a close.
async fn redis_inline(mut s: TcpStream) {
    let mut seen = Vec::new();
    let mut buf = [0u8; 16 * 1024];
    while let Ok(n) = s.read(&mut buf).await {
        if n == 0 {
            return;
        }
        seen.extend_from_slice(&buf[..n]);
        let line_end = seen
            .iter()
            .take_while(|&&b| b != 0)
            .position(|&b| b == b'\n');
        if line_end.is_some() {
            let _ = s.write_all(b"-ERR unknown command\r\n").await;
            seen.clear();
        } else if seen.len() > 64 * 1024 {
            let _ = s
                .write_all(b"-ERR Protocol error: too big inline request\r\n")
                .await;
            return;
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_servers_are_named() {
    let http = responder(http_400).await;
    let err = tokio::time::timeout(LIMIT, async {
        KvsClient::connect(http).await?.ping().await
    })
    .await
    .unwrap()
    .unwrap_err()
    .to_string();
    assert!(err.contains("looks like HTTP"), "{err}");
    assert!(err.contains(&http.to_string()), "{err}");

    // A Redis-like server says nothing to a kvs frame: the client asks on
    // a second connection rather than waiting out its timeout.
    let redisish = responder(redis_inline).await;
    let err = tokio::time::timeout(LIMIT, async {
        KvsClient::connect(redisish).await?.get("k").await
    })
    .await
    .expect("the client must not wait for ever on a silent RESP server")
    .unwrap_err()
    .to_string();
    assert!(err.contains("Redis protocol"), "{err}");

    // kvs-bench names it before any load is sent (exit 2: cannot start).
    let addr = redisish.to_string();
    let out = tokio::task::spawn_blocking(move || {
        Command::new(env!("CARGO_BIN_EXE_kvs-bench"))
            .args(["--addr", &addr, "-n", "10"])
            .output()
            .unwrap()
    })
    .await
    .unwrap();
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Redis protocol"),
        "{out:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_slow_kvs_server_is_not_mistaken_for_another() {
    // Answers its first request after 1.5 s, past the client's probe
    // delay: the probe finds kvs (or nothing) and the client keeps waiting.
    let slow = responder(|mut s: TcpStream| async move {
        let mut buf = [0u8; 64];
        let mut got = 0;
        while got < 6 {
            match s.read(&mut buf[got..]).await {
                Ok(0) | Err(_) => return,
                Ok(n) => got += n,
            }
        }
        tokio::time::sleep(Duration::from_millis(1500)).await;
        let pong = [0u8, 0, 0, 2, kvs::protocol::PROTOCOL_VERSION, 0];
        let _ = s.write_all(&pong).await;
        let _ = s.read(&mut buf).await;
    })
    .await;
    let mut client = KvsClient::connect(slow).await.unwrap();
    tokio::time::timeout(LIMIT, client.ping())
        .await
        .unwrap()
        .unwrap();

    // kvs also speaks RESP on the same port: kvs-bench's RESP mode runs
    // against it without errors.
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    let opts = BenchOptions {
        addr: server.addr.to_string(),
        protocol: Protocol::Resp,
        stop: Stop::Requests(10),
        ..BenchOptions::default()
    };
    let report = bench::run(&opts).await.unwrap();
    assert_eq!((report.ops, report.errors), (10, 0));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn against_redis_server_the_client_says_redis() {
    let Some(redis) = Redis::start_or_skip("against_redis_server_the_client_says_redis") else {
        return;
    };
    let err = tokio::time::timeout(LIMIT, async {
        KvsClient::connect(redis.addr).await?.ping().await
    })
    .await
    .expect("no 10 s wait on redis-server")
    .unwrap_err()
    .to_string();
    assert!(err.contains("Redis protocol"), "{err}");
    assert!(err.contains(&redis.addr.to_string()), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_server_listens_on_a_host_name() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let dir = tempfile::tempdir().unwrap();
    let mut child = Command::new(env!("CARGO_BIN_EXE_kvs-server"))
        .args(["--addr", &format!("localhost:{port}"), "--engine", "memory"])
        .args(["--log-level", "warn"])
        .arg("--dir")
        .arg(dir.path())
        .spawn()
        .unwrap();
    let outcome = tokio::time::timeout(LIMIT, async {
        loop {
            if let Ok(mut c) = KvsClient::connect(format!("localhost:{port}")).await {
                return c.ping().await;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await;
    let _ = child.kill();
    let _ = child.wait();
    outcome
        .expect("kvs-server --addr localhost:PORT did not come up")
        .unwrap();
}

/// kvs-bench authenticates every connection when given a password, in
/// both protocols; a wrong password fails the run with the server's word.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bench_authenticates_in_both_protocols() {
    let mut config = ServerConfig::default();
    config.password = Some(kvs::server::Password::new("pw".to_owned()).unwrap());
    let server = TestServer::start(MemoryEngine::new(), config).await;
    for protocol in [Protocol::Kvs, Protocol::Resp] {
        let mut opts = BenchOptions {
            addr: server.addr.to_string(),
            protocol,
            connections: 4,
            stop: Stop::Requests(200),
            password: Some("pw".to_owned()),
            ..BenchOptions::default()
        };
        let report = bench::run(&opts).await.unwrap();
        assert_eq!((report.ops, report.errors), (200, 0), "{protocol:?}");
        opts.password = Some("wrong".to_owned());
        let err = bench::run(&opts).await.unwrap_err().to_string();
        assert!(err.to_lowercase().contains("pass"), "{protocol:?}: {err}");
    }
    server.stop().await;
}
