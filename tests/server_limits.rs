//! Hardening: what no request may do to the server (issue 10's wire
//! findings), each against a real server on 127.0.0.1:0.

mod server_support;

use std::time::Duration;

use bytes::{BufMut, BytesMut};
use kvs::protocol::{ErrorKind, PROTOCOL_VERSION, Request, Response, encode_frame};
use kvs::server::{ServerConfig, rss_bytes};
use kvs::{KvsError, MemoryEngine};
use server_support::{GatedEngine, TestServer, read_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config(f: impl FnOnce(&mut ServerConfig)) -> ServerConfig {
    let mut c = ServerConfig::default();
    f(&mut c);
    c
}

/// A 1 KB request naming one 1 MiB value 1,024 times must not make the
/// server build a 1 GiB answer: it stops at the frame limit and answers
/// `Limit`, and the connection goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn get_many_amplification_is_cut_off_while_building() {
    let engine = MemoryEngine::new();
    let server = TestServer::start(engine, ServerConfig::default()).await;
    let mut c = server.client().await;
    c.set("big", &"x".repeat(1 << 20)).await.unwrap();
    let before = rss_bytes();
    let keys = vec!["big"; 1024];
    let err = c.get_many(&keys).await.unwrap_err();
    assert!(matches!(err, KvsError::Limit(_)), "{err:?}");
    let grown = rss_bytes().saturating_sub(before);
    println!("RSS grew {} MiB for the refused GetMany", grown >> 20);
    assert!(grown < 64 << 20, "RSS grew {} MiB", grown >> 20);
    // Under the limit it is served, and the connection still works.
    assert_eq!(c.get_many(&keys[..8]).await.unwrap().len(), 8);
    c.ping().await.unwrap();
    server.stop().await;
}

/// A header declaring more than the maximum, followed by body bytes, gets
/// the documented `Limit` error and an orderly close, not a reset.
#[tokio::test]
async fn over_limit_frame_with_body_is_answered_before_closing() {
    let server =
        TestServer::start(MemoryEngine::new(), config(|c| c.max_frame_len = 64 << 10)).await;
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    let mut frame = BytesMut::new();
    frame.put_u32((64 << 10) + 1);
    frame.put_u8(PROTOCOL_VERSION);
    frame.extend_from_slice(&vec![7u8; 200 << 10]);
    s.write_all(&frame).await.unwrap();
    let response = read_response(&mut s).await;
    assert!(
        matches!(
            response,
            Some(Response::Error {
                kind: ErrorKind::Limit,
                ..
            })
        ),
        "{response:?}"
    );
    let mut rest = Vec::new();
    let n = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest))
        .await
        .expect("server did not close")
        .expect("connection reset instead of closed");
    assert_eq!(n, 0);
    server.stop().await;
}

/// 100 connections each declare a 16 MiB frame and send half of it: the
/// bytes the server buffers stay under the input budget, the stalled
/// frames time out, and the server keeps serving.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn partial_frames_stay_under_the_input_budget() {
    let budget = 48 << 20;
    let server = TestServer::start(
        MemoryEngine::new(),
        config(|c| {
            c.input_budget = budget;
            c.frame_timeout = Duration::from_secs(3);
        }),
    )
    .await;
    let before = rss_bytes();
    let half = std::sync::Arc::new(vec![1u8; 8 << 20]);
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let addr = server.addr;
        let half = half.clone();
        tasks.push(tokio::spawn(async move {
            let mut s = TcpStream::connect(addr).await.unwrap();
            let mut head = BytesMut::new();
            head.put_u32(16 << 20);
            head.put_u8(PROTOCOL_VERSION);
            s.write_all(&head).await.unwrap();
            // Blocks once the server stops reading; bounded either way.
            let _ = tokio::time::timeout(Duration::from_secs(2), s.write_all(&half)).await;
            s
        }));
    }
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(t.await.unwrap());
    }
    let peak = rss_bytes().saturating_sub(before);
    println!(
        "100 x 8 MiB partial frames: RSS grew {} MiB (budget {} MiB)",
        peak >> 20,
        budget >> 20
    );
    // The budget, each connection's free 64 KiB, and slack for the
    // allocator and the test's own buffers.
    assert!(
        peak < budget as u64 + (100 << 16) + (48 << 20),
        "RSS grew {} MiB",
        peak >> 20
    );
    drop(streams);
    let mut c = server.client().await;
    c.set("after", "ok").await.unwrap();
    assert_eq!(c.get("after").await.unwrap().as_deref(), Some("ok"));
    server.stop().await;
}

/// Internal errors carry an id, not the server's paths and offsets.
#[tokio::test]
async fn internal_errors_do_not_leak_details() {
    let server = TestServer::start(GatedEngine::new(), ServerConfig::default()).await;
    let mut c = server.client().await;
    let err = c.get(GatedEngine::CORRUPT_KEY).await.unwrap_err();
    let KvsError::Server(message) = err else {
        panic!("{err:?}")
    };
    assert!(message.contains("error id"), "{message}");
    assert!(!message.contains("/srv/secret"), "{message}");
    assert!(!message.contains("257"), "{message}");
    server.stop().await;
}

/// A call after `queue` without `recv` must not return the queued
/// request's response as its own.
#[tokio::test]
async fn call_after_queue_is_refused_not_misanswered() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    let mut c = server.client().await;
    c.set("a", "1").await.unwrap();
    c.set("b", "2").await.unwrap();
    c.queue(&Request::Get { key: "a" }).unwrap();
    let err = c.get("b").await.unwrap_err();
    assert!(matches!(err, KvsError::InvalidInput(_)), "{err:?}");
    assert_eq!(c.recv().await.unwrap(), Response::Value(Some("1".into())));
    assert_eq!(c.get("b").await.unwrap().as_deref(), Some("2"));
    server.stop().await;
}

/// Refusals are bounded: while `max_rejecting` refusals linger, a further
/// connection over the cap is closed at once rather than given a task.
#[tokio::test]
async fn refusals_beyond_the_bound_are_closed_at_once() {
    let server = TestServer::start(
        MemoryEngine::new(),
        config(|c| {
            c.max_connections = 1;
            c.max_rejecting = 1;
        }),
    )
    .await;
    let mut served = server.client().await;
    served.ping().await.unwrap();
    // Refused with an error; it keeps its connection open, so its refusal
    // lingers.
    let mut first = TcpStream::connect(server.addr).await.unwrap();
    let response = read_response(&mut first).await;
    assert!(matches!(
        response,
        Some(Response::Error {
            kind: ErrorKind::Limit,
            ..
        })
    ));
    // The next one gets no task: closed without a frame.
    let mut second = TcpStream::connect(server.addr).await.unwrap();
    let mut buf = Vec::new();
    let n = tokio::time::timeout(Duration::from_millis(900), second.read_to_end(&mut buf))
        .await
        .expect("not closed at once")
        .unwrap_or(0);
    assert_eq!(n, 0, "got {buf:?}");
    drop(first);
    server.stop().await;
}

/// Authentication: nothing but Ping and Auth before it, a wrong password
/// is refused, oversized and deeply pipelined input before it is cut short.
#[tokio::test]
async fn native_auth() {
    let password = kvs::server::Password::new("s3cret".to_owned()).unwrap();
    let server =
        TestServer::start(MemoryEngine::new(), config(|c| c.password = Some(password))).await;
    let mut c = server.client().await;
    c.ping().await.unwrap();
    assert!(matches!(c.get("a").await, Err(KvsError::Auth(_))));
    assert!(matches!(c.auth("wrong").await, Err(KvsError::Auth(_))));
    assert!(matches!(c.set("a", "1").await, Err(KvsError::Auth(_))));
    c.auth("s3cret").await.unwrap();
    c.set("a", "1").await.unwrap();
    assert_eq!(c.get("a").await.unwrap().as_deref(), Some("1"));

    // Pipelined before authenticating: each answered with Auth, in order.
    let mut p = server.client().await;
    let requests: Vec<Request<&str>> = (0..20).map(|_| Request::Get { key: "a" }).collect();
    for r in p.pipeline(&requests).await.unwrap() {
        assert!(
            matches!(
                r,
                Response::Error {
                    kind: ErrorKind::Auth,
                    ..
                }
            ),
            "{r:?}"
        );
    }
    // A large frame before authenticating is refused.
    let mut big = server.client().await;
    let value = "v".repeat(64 << 10);
    let err = big.set("k", &value).await.unwrap_err();
    assert!(matches!(err, KvsError::Limit(_)), "{err:?}");
    server.stop().await;
}

/// The native `Stats` request counts a known workload exactly.
#[tokio::test]
async fn stats_count_a_known_workload() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    let mut c = server.client().await;
    for i in 0..10 {
        c.set(&format!("k{i}"), "v").await.unwrap();
    }
    for i in 0..15 {
        c.get(&format!("k{i}")).await.unwrap();
    }
    let s = c.stats().await.unwrap();
    assert_eq!(s.hits, 10);
    assert_eq!(s.misses, 5);
    assert_eq!(s.commands, 26, "{s:?}"); // 10 sets, 15 gets, this stats
    assert_eq!(s.engine.keys, 10);
    assert_eq!(s.connections_current, 1);
    assert!(s.bytes_in > 0 && s.bytes_out > 0);
    server.stop().await;
}

#[test]
fn config_edges_are_validated_not_overflowed() {
    let huge = Duration::from_secs(u64::MAX);
    for bad in [
        config(|c| c.idle_timeout = huge),
        config(|c| c.frame_timeout = huge),
        config(|c| c.shutdown_grace = huge),
        config(|c| c.idle_timeout = Duration::ZERO),
        config(|c| c.max_connections = 0),
        config(|c| c.max_connections = usize::MAX),
        config(|c| c.max_frame_len = usize::MAX),
        config(|c| c.input_budget = 1),
        config(|c| c.max_in_flight = 0),
    ] {
        assert!(bad.validate().is_err(), "{bad:?}");
    }
    assert!(
        config(|c| c.idle_timeout = kvs::server::MAX_TIMEOUT)
            .validate()
            .is_ok()
    );
}

#[allow(dead_code)]
fn frame(request: &Request<&str>) -> BytesMut {
    let mut b = BytesMut::new();
    encode_frame(request, 1 << 20, &mut b).unwrap();
    b
}

/// Protocol errors in either protocol are counted (and logged with the
/// peer's address at debug level).
#[tokio::test]
async fn protocol_errors_are_counted() {
    let server = TestServer::start(MemoryEngine::new(), ServerConfig::default()).await;
    // A native frame with the right version and an undecodable body: the
    // connection stays open.
    let mut native = TcpStream::connect(server.addr).await.unwrap();
    native
        .write_all(&server_support::raw_frame(&[PROTOCOL_VERSION, 0xff, 0xff]))
        .await
        .unwrap();
    let response = read_response(&mut native).await;
    assert!(
        matches!(
            response,
            Some(Response::Error {
                kind: ErrorKind::Protocol,
                ..
            })
        ),
        "{response:?}"
    );
    // A RESP request with a negative bulk length: answered, then closed.
    let mut resp = TcpStream::connect(server.addr).await.unwrap();
    resp.write_all(b"*1\r\n$-5\r\n").await.unwrap();
    let mut answer = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), resp.read_to_end(&mut answer))
        .await
        .unwrap()
        .unwrap();
    assert!(answer.starts_with(b"-ERR Protocol error"), "{answer:?}");
    let mut c = server.client().await;
    assert_eq!(c.stats().await.unwrap().protocol_errors, 2);
    server.stop().await;
}
