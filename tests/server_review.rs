//! Faults found by a review of the server, each with the test that would
//! have caught it: memory a few requests could pin, work a request could
//! make quadratic, and answers lost or mislabelled.

mod resp_support;
mod server_support;

use std::time::Duration;

use kvs::MemoryEngine;
use kvs::server::{ServerConfig, rss_bytes};
use resp_support::multibulk;
use server_support::TestServer;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(f: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut c = ServerConfig::default();
    f(&mut c);
    c
}

/// Reads until `n` RESP replies' worth of top-level lines are in, for
/// simple replies (+, -, :) and bulk strings.
async fn read_reply(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            if let Some(len) = reply_len(&buf) {
                buf.truncate(len);
                return;
            }
            let mut chunk = vec![0u8; 1 << 16];
            let n = s.read(&mut chunk).await.unwrap();
            assert!(n > 0, "closed after {:?}", String::from_utf8_lossy(&buf));
            buf.extend_from_slice(&chunk[..n]);
        }
    })
    .await
    .expect("no reply");
    buf
}

fn reply_len(buf: &[u8]) -> Option<usize> {
    let line = buf.windows(2).position(|w| w == b"\r\n")? + 2;
    match buf[0] {
        b'$' => {
            let n: i64 = std::str::from_utf8(&buf[1..line - 2]).ok()?.parse().ok()?;
            if n < 0 {
                return Some(line);
            }
            let end = line + n as usize + 2;
            (buf.len() >= end).then_some(end)
        }
        _ => Some(line),
    }
}

/// Pipelined GETs of a large value from clients that never read: the
/// replies built and waiting are bounded by the reply budget (before: 2.8
/// KB of requests took 2.2 GiB).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unread_large_replies_stay_under_the_reply_budget() {
    let budget = 32 << 20;
    let server = TestServer::start(
        MemoryEngine::new(),
        config(|c| {
            c.reply_budget = budget;
        }),
    )
    .await;
    let mut c = server.client().await;
    c.set("big", &"x".repeat(4 << 20)).await.unwrap();
    let before = rss_bytes();
    let mut idle = Vec::new();
    for _ in 0..4 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let mut req = Vec::new();
        for _ in 0..32 {
            req.extend(multibulk(&[b"GET", b"big"]));
        }
        s.write_all(&req).await.unwrap();
        idle.push(s);
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    let grown = rss_bytes().saturating_sub(before);
    println!(
        "4 x 32 unread GETs of 4 MiB: RSS grew {} MiB (budget {} MiB)",
        grown >> 20,
        budget >> 20
    );
    // The budget, the replies in sockets and write buffers, and replies
    // being built on the pool's threads.
    assert!(
        grown < (budget + (96 << 20)) as u64,
        "grew {} MiB",
        grown >> 20
    );
    // A reader gets its value or a "server busy" error, never a hang.
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&multibulk(&[b"STRLEN", b"big"])).await.unwrap();
    assert_eq!(read_reply(&mut s).await, b":4194304\r\n");
    drop(idle);
    server.stop().await;
}

/// A command naming more keys than `max_batch_keys` is refused at once
/// (before: ordering 100k-key EXISTS commands took 25 s of a runtime
/// thread).
#[tokio::test]
async fn commands_with_too_many_keys_are_refused() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    let keys: Vec<Vec<u8>> = (0..100_000).map(|i| format!("k{i}").into_bytes()).collect();
    let mut args: Vec<&[u8]> = vec![b"EXISTS"];
    args.extend(keys.iter().map(|k| k.as_slice()));
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&multibulk(&args)).await.unwrap();
    let reply = read_reply(&mut s).await;
    assert!(
        reply.starts_with(b"-ERR too many keys"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    s.write_all(&multibulk(&[b"EXISTS", b"a", b"b"]))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await, b":0\r\n");
    server.stop().await;
}

/// Connections that sent one large request and went idle give their input
/// budget back (before: 16 such connections blocked every large request
/// for the idle timeout).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_return_their_input_budget() {
    let server = TestServer::start(
        MemoryEngine::new(),
        config(|c| {
            c.max_frame_len = 4 << 20;
            c.input_budget = 8 << 20;
            c.frame_timeout = Duration::from_secs(5);
        }),
    )
    .await;
    let value = vec![b'v'; (4 << 20) - 1024];
    let mut idle = Vec::new();
    for i in 0..4 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let key = format!("k{i}");
        s.write_all(&multibulk(&[b"SET", key.as_bytes(), &value]))
            .await
            .unwrap();
        assert_eq!(read_reply(&mut s).await, b"+OK\r\n", "set {i}");
        idle.push(s);
    }
    server.stop().await;
}

/// A request larger than the whole input budget is answered with an
/// error, not left to wait and reset.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_request_over_the_whole_budget_is_answered() {
    let server = TestServer::start(
        MemoryEngine::new(),
        config(|c| {
            c.max_frame_len = 1 << 20;
            c.input_budget = 2 << 20;
        }),
    )
    .await;
    let value = vec![b'v'; 1 << 20];
    let mut args: Vec<&[u8]> = vec![b"MSET"];
    let keys: Vec<Vec<u8>> = (0..8).map(|i| format!("k{i}").into_bytes()).collect();
    for k in &keys {
        args.push(k);
        args.push(&value);
    }
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let req = multibulk(&args);
    let (mut rd, mut wr) = s.split();
    let writer = async {
        let _ = wr.write_all(&req).await;
    };
    let reader = async {
        let mut buf = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), rd.read_to_end(&mut buf)).await;
        buf
    };
    let ((), answer) = tokio::join!(writer, reader);
    assert!(
        answer.starts_with(b"-ERR"),
        "{}",
        String::from_utf8_lossy(&answer[..answer.len().min(200)])
    );
    let mut c = server.client().await;
    c.ping().await.unwrap();
    server.stop().await;
}

/// Long MATCH / KEYS patterns are refused (before: an 8 MiB pattern held a
/// pool thread for 70 s).
#[tokio::test]
async fn long_patterns_are_refused() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let pattern = vec![b'*'; 4096];
    s.write_all(&multibulk(&[b"KEYS", &pattern])).await.unwrap();
    let reply = read_reply(&mut s).await;
    assert!(
        reply.starts_with(b"-ERR pattern too long"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    s.write_all(&multibulk(&[b"SCAN", b"0", b"MATCH", &pattern]))
        .await
        .unwrap();
    let reply = read_reply(&mut s).await;
    assert!(
        reply.starts_with(b"-ERR pattern too long"),
        "{}",
        String::from_utf8_lossy(&reply)
    );
    server.stop().await;
}

/// The largest value a SET accepts can be read back (before: GET of it
/// answered "reply exceeds the maximum").
#[tokio::test]
async fn the_largest_value_can_be_read_back() {
    let max = 64 << 10;
    let server = TestServer::start(MemoryEngine::new(), config(|c| c.max_frame_len = max)).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let value = vec![b'v'; max];
    s.write_all(&multibulk(&[b"SET", b"k", &value]))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await, b"+OK\r\n");
    s.write_all(&multibulk(&[b"GET", b"k"])).await.unwrap();
    let reply = read_reply(&mut s).await;
    assert!(
        reply.starts_with(format!("${max}\r\n").as_bytes()),
        "{}",
        String::from_utf8_lossy(&reply[..40.min(reply.len())])
    );
    server.stop().await;
}

/// A key over the engine's limit is the client's error, not an internal
/// one.
#[tokio::test]
async fn an_oversized_key_is_a_client_error() {
    let dir = tempfile::tempdir().unwrap();
    let store = kvs::KvStore::open(dir.path()).unwrap();
    let server = TestServer::start(store, ServerConfig::default()).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let key = vec![b'k'; 70_000];
    s.write_all(&multibulk(&[b"SET", &key, b"v"]))
        .await
        .unwrap();
    let reply = read_reply(&mut s).await;
    let text = String::from_utf8_lossy(&reply);
    assert!(
        text.starts_with("-ERR") && !text.contains("internal"),
        "{text}"
    );
    server.stop().await;
}

/// A value that grew (APPEND) past what one reply may carry is refused by
/// GET with Redis-style error text, on the path that copies values
/// straight from the engine into the reply buffer.
#[tokio::test]
async fn a_get_over_the_reply_limit_is_refused() {
    let max = 1024;
    let server = TestServer::start(MemoryEngine::new(), config(|c| c.max_frame_len = max)).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let chunk = vec![b'a'; 1000];
    for i in 1..=2 {
        s.write_all(&multibulk(&[b"APPEND", b"big", &chunk]))
            .await
            .unwrap();
        assert_eq!(
            read_reply(&mut s).await,
            format!(":{}\r\n", 1000 * i).as_bytes()
        );
    }
    s.write_all(&multibulk(&[b"GET", b"big"])).await.unwrap();
    assert_eq!(
        read_reply(&mut s).await,
        format!("-ERR reply exceeds the maximum of {} bytes\r\n", max + 64).as_bytes()
    );
    // The connection goes on, and a value that fits still comes back.
    s.write_all(&multibulk(&[b"SET", b"small", b"v"]))
        .await
        .unwrap();
    assert_eq!(read_reply(&mut s).await, b"+OK\r\n");
    s.write_all(&multibulk(&[b"GET", b"small"])).await.unwrap();
    assert_eq!(read_reply(&mut s).await, b"$1\r\nv\r\n");
    server.stop().await;
}
