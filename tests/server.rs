//! The server in-process on 127.0.0.1:0, driven through `KvsClient` and
//! raw sockets: every command, every limit at its edge, hostile clients,
//! and the shutdown path.

mod server_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use kvs::protocol::{ErrorKind, Request, Response, encode_frame};
use kvs::server::ServerConfig;
use kvs::thread_pool::{SharedQueueThreadPool, ThreadPool};
use kvs::{KvsClient, KvsError, MemoryEngine};
use server_support::{GatedEngine, TestServer, raw_frame, read_response};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn config() -> ServerConfig {
    ServerConfig::default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_command() {
    let server = TestServer::start(MemoryEngine::new(), config()).await;
    let mut c = server.client().await;
    c.ping().await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), None);
    c.set("k", "v1").await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("v1"));
    c.set("k", "v2").await.unwrap();
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some("v2"));
    c.set("empty", "").await.unwrap();
    assert_eq!(c.get("empty").await.unwrap().as_deref(), Some(""));
    assert_eq!(
        c.get_many(&["k", "nope", "empty"]).await.unwrap(),
        vec![Some("v2".to_owned()), None, Some(String::new())]
    );
    assert_eq!(c.get_many(&[]).await.unwrap(), Vec::<Option<String>>::new());
    c.remove("k").await.unwrap();
    assert_eq!(c.get("k").await.unwrap(), None);
    assert!(matches!(c.remove("k").await, Err(KvsError::KeyNotFound)));
    // The memory engine keeps expiries.
    c.set_with_ttl("t", "v", Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(c.get("t").await.unwrap().as_deref(), Some("v"));
    assert!(matches!(
        c.set_with_ttl("t", "v", Duration::ZERO).await,
        Err(KvsError::InvalidInput(_))
    ));
    c.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn unicode_keys_and_values() {
    let server = TestServer::start(MemoryEngine::new(), config()).await;
    let mut c = server.client().await;
    let pairs = [
        ("ключ", "значение"),
        ("キー", "値 🎉"),
        ("emoji 🔑", "👩‍👩‍👧‍👦"),
        ("nul\0byte", "tab\tnewline\n"),
    ];
    for (k, v) in pairs {
        c.set(k, v).await.unwrap();
    }
    for (k, v) in pairs {
        assert_eq!(c.get(k).await.unwrap().as_deref(), Some(v));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_megabyte_values() {
    let server = TestServer::start(MemoryEngine::new(), config()).await;
    let mut c = server.client().await;
    let values: Vec<String> = (0..4u8)
        .map(|i| ((b'a' + i) as char).to_string().repeat(1 << 20))
        .collect();
    for (i, v) in values.iter().enumerate() {
        c.set(&format!("big{i}"), v).await.unwrap();
    }
    for (i, v) in values.iter().enumerate() {
        assert_eq!(c.get(&format!("big{i}")).await.unwrap().as_ref(), Some(v));
    }
    // Pipelined too: four 1 MB responses in flight at once.
    let keys: Vec<String> = (0..4).map(|i| format!("big{i}")).collect();
    let requests: Vec<Request<&str>> = keys
        .iter()
        .map(|k| Request::Get { key: k.as_str() })
        .collect();
    let responses = c.pipeline(&requests).await.unwrap();
    for (r, v) in responses.into_iter().zip(&values) {
        assert_eq!(r, Response::Value(Some(v.clone())));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hundred_concurrent_clients() {
    let server = TestServer::start(MemoryEngine::new(), config()).await;
    let mut tasks = Vec::new();
    for t in 0..100 {
        let addr = server.addr;
        tasks.push(tokio::spawn(async move {
            let mut c = KvsClient::connect(addr).await.unwrap();
            for i in 0..20 {
                let (k, v) = (format!("c{t}-k{i}"), format!("v{t}-{i}"));
                c.set(&k, &v).await.unwrap();
                assert_eq!(c.get(&k).await.unwrap(), Some(v));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    let mut c = server.client().await;
    assert_eq!(c.get("c99-k19").await.unwrap().as_deref(), Some("v99-19"));
    server.stop().await;
}

/// Responses come back in request order however requests interleave on
/// the pool, at the default in-flight limit and at its edge of one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pipelined_bursts_keep_order() {
    for max_in_flight in [1, 2, config().max_in_flight] {
        let mut cfg = config();
        cfg.max_in_flight = max_in_flight;
        let server = TestServer::start(MemoryEngine::new(), cfg).await;
        let mut c = server.client().await;
        let keys: Vec<String> = (0..1000).map(|i| format!("key{i}")).collect();
        let vals: Vec<String> = (0..1000).map(|i| format!("value{i}")).collect();
        let mut requests = Vec::new();
        for i in 0..1000 {
            requests.push(Request::Set {
                key: keys[i].as_str(),
                value: vals[i].as_str(),
                ttl_ms: None,
            });
            requests.push(Request::Get { key: &keys[i] });
            if i % 7 == 0 {
                requests.push(Request::Ping);
                requests.push(Request::Remove { key: "never-set" });
            }
        }
        let responses = c.pipeline(&requests).await.unwrap();
        assert_eq!(responses.len(), requests.len());
        for (req, resp) in requests.iter().zip(&responses) {
            match req {
                Request::Set { .. } => assert_eq!(resp, &Response::Ok),
                Request::Get { key } => {
                    let i: usize = key[3..].parse().unwrap();
                    assert_eq!(resp, &Response::Value(Some(vals[i].clone())));
                }
                Request::Ping => assert_eq!(resp, &Response::Pong),
                Request::Remove { .. } => assert!(matches!(
                    resp,
                    Response::Error {
                        kind: ErrorKind::KeyNotFound,
                        ..
                    }
                )),
                _ => unreachable!("not sent"),
            }
        }
        // The lean path: queue, flush, receive one by one.
        for key in &keys[..100] {
            c.queue(&Request::Get { key: key.as_str() }).unwrap();
        }
        c.flush().await.unwrap();
        assert_eq!(c.pending(), 100);
        for val in &vals[..100] {
            assert_eq!(c.recv().await.unwrap(), Response::Value(Some(val.clone())));
        }
        assert!(matches!(c.recv().await, Err(KvsError::InvalidInput(_))));
        server.stop().await;
    }
}

/// Requests of one connection run concurrently: with a gate holding a
/// `set` inside the engine, `get`s pipelined behind it still execute (in
/// another pool job: the server groups at most 8 requests per job), while
/// the responses keep request order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_connection_runs_requests_concurrently() {
    let engine = GatedEngine::new();
    let server = TestServer::start(engine.clone(), config()).await;
    let mut c = server.client().await;
    engine.close_gate();
    c.queue(&Request::Set {
        key: "slow",
        value: "1",
        ttl_ms: None,
    })
    .unwrap();
    for _ in 0..8 {
        c.queue(&Request::Get { key: "other" }).unwrap();
    }
    c.flush().await.unwrap();
    engine.wait_entered(1).await;
    tokio::time::timeout(Duration::from_secs(5), async {
        while engine.gets() < 1 {
            tokio::task::yield_now().await;
        }
    })
    .await
    .expect("no get ran while the set was held");
    engine.open_gate();
    assert_eq!(c.recv().await.unwrap(), Response::Ok);
    for _ in 0..8 {
        assert_eq!(c.recv().await.unwrap(), Response::Value(None));
    }
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connection_cap_refuses_with_an_error_frame() {
    let mut cfg = config();
    cfg.max_connections = 3;
    let server = TestServer::start(MemoryEngine::new(), cfg).await;
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut c = server.client().await;
        c.ping().await.unwrap(); // exactly at the cap: served
        held.push(c);
    }
    let mut extra = server.client().await;
    let err = extra.ping().await.unwrap_err();
    assert!(
        matches!(&err, KvsError::Limit(m) if m.contains("too many connections")),
        "{err}"
    );
    // The refused client fails fast and the held ones keep working.
    for c in &mut held {
        c.ping().await.unwrap();
    }
    // Freeing a slot lets a new client in (once the server has seen the
    // close; bounded retries).
    drop(held.pop());
    let mut admitted = false;
    for _ in 0..100 {
        let mut c = server.client().await;
        if c.ping().await.is_ok() {
            admitted = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(admitted, "a freed slot was never reused");
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_timeout_closes_idle_connections_only() {
    let mut cfg = config();
    // Wide margins: a loaded CI machine can delay a ping by hundreds of ms.
    cfg.idle_timeout = Duration::from_millis(1500);
    let server = TestServer::start(MemoryEngine::new(), cfg).await;
    // Requests spaced under the limit keep a connection open well past it.
    let mut busy = server.client().await;
    let start = Instant::now();
    while start.elapsed() < Duration::from_millis(3000) {
        busy.ping().await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // An idle one is closed after the limit, not before.
    let mut idle = TcpStream::connect(server.addr).await.unwrap();
    let start = Instant::now();
    let mut buf = [0u8; 16];
    let n = tokio::time::timeout(Duration::from_secs(10), idle.read(&mut buf))
        .await
        .expect("idle connection never closed")
        .unwrap_or(0);
    assert_eq!(n, 0);
    let waited = start.elapsed();
    assert!(
        waited >= Duration::from_millis(1400),
        "closed after {waited:?}"
    );
    // (`busy` has now been idle too long itself: closed as well.)
    assert!(busy.ping().await.is_err());
    server.client().await.ping().await.unwrap();
    server.stop().await;
}

/// A frame that has started must finish within `frame_timeout`, even when
/// bytes keep trickling in (slowloris); the idle limit is separate.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_timeout_drops_stalled_and_trickling_frames() {
    let mut cfg = config();
    cfg.frame_timeout = Duration::from_millis(300);
    cfg.idle_timeout = Duration::from_secs(60);
    let server = TestServer::start(MemoryEngine::new(), cfg).await;

    // Stalled after half a header.
    let mut stalled = TcpStream::connect(server.addr).await.unwrap();
    stalled.write_all(&[0, 0]).await.unwrap();
    let start = Instant::now();
    assert_eq!(read_to_close(&mut stalled).await, 0);
    assert!(start.elapsed() >= Duration::from_millis(250));

    // One byte every 50 ms of a 40-byte frame: would take 2 s.
    let mut trickle = TcpStream::connect(server.addr).await.unwrap();
    let frame = raw_frame(&[1; 36]);
    let start = Instant::now();
    let mut closed = false;
    for b in frame {
        if trickle.write_all(&[b]).await.is_err() {
            closed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        let mut probe = [0u8; 1];
        if let Ok(Ok(0)) = tokio::time::timeout(Duration::ZERO, trickle.read(&mut probe)).await {
            closed = true;
            break;
        }
    }
    assert!(closed, "slowloris frame was never cut off");
    assert!(start.elapsed() < Duration::from_millis(1500));

    // A complete frame within the limit is fine, and others are served.
    let mut c = server.client().await;
    c.ping().await.unwrap();
    server.stop().await;
}

/// Reads until the peer closes; returns the bytes read (bounded wait).
async fn read_to_close(s: &mut TcpStream) -> usize {
    let mut total = 0;
    let mut buf = [0u8; 1024];
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            match s.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(n) => total += n,
            }
        }
    })
    .await
    .expect("server never closed the connection");
    total
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frame_size_limit_at_its_edge() {
    let mut cfg = config();
    cfg.max_frame_len = 1024;
    let server = TestServer::start(MemoryEngine::new(), cfg).await;

    // A Set whose payload is exactly 1024 bytes: version, tag, key "k"
    // (2 bytes), value length varint (2 bytes), value, ttl None (1 byte).
    let value = "v".repeat(1024 - 1 - 1 - 2 - 2 - 1);
    let mut buf = BytesMut::new();
    let set = Request::Set {
        key: "k",
        value: value.as_str(),
        ttl_ms: None,
    };
    encode_frame(&set, 1024, &mut buf).unwrap();
    assert_eq!(buf.len(), 4 + 1024);
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    s.write_all(&buf).await.unwrap();
    assert_eq!(read_response(&mut s).await, Some(Response::Ok));

    // One byte more: refused with a Limit error, then closed.
    let mut over = BytesMut::new();
    over.put_u32(1025);
    over.put_bytes(1, 1025);
    s.write_all(&over).await.unwrap();
    match read_response(&mut s).await {
        Some(Response::Error {
            kind: ErrorKind::Limit,
            ..
        }) => {}
        other => panic!("expected a limit error, got {other:?}"),
    }
    assert_eq!(read_to_close(&mut s).await, 0);

    // A 4 GiB declaration is refused on the header alone: the answer comes
    // without sending any body.
    let mut huge = TcpStream::connect(server.addr).await.unwrap();
    huge.write_all(&u32::MAX.to_be_bytes()).await.unwrap();
    assert!(matches!(
        read_response(&mut huge).await,
        Some(Response::Error {
            kind: ErrorKind::Limit,
            ..
        })
    ));

    // The client refuses to send what the server would refuse.
    let mut c = server.client().await;
    assert_eq!(c.get("k").await.unwrap().as_deref(), Some(value.as_str()));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn responses_over_the_frame_limit_become_errors() {
    let mut cfg = config();
    cfg.max_frame_len = 1024;
    let server = TestServer::start(MemoryEngine::new(), cfg).await;
    let mut c = server.client().await;
    let v = "x".repeat(600);
    c.set("a", &v).await.unwrap();
    c.set("b", &v).await.unwrap();
    assert!(matches!(
        c.get_many(&["a", "b"]).await,
        Err(KvsError::Limit(_))
    ));
    assert_eq!(c.get_many(&["a"]).await.unwrap(), vec![Some(v)]);
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn batch_size_limit_at_its_edge() {
    let mut cfg = config();
    cfg.max_batch_keys = 4;
    let server = TestServer::start(MemoryEngine::new(), cfg).await;
    let mut c = server.client().await;
    assert_eq!(c.get_many(&["a"; 4]).await.unwrap().len(), 4);
    assert!(matches!(
        c.get_many(&["a"; 5]).await,
        Err(KvsError::Limit(_))
    ));
    c.ping().await.unwrap();
    server.stop().await;
}

/// Garbage payloads get a protocol error and the connection goes on
/// (the framing is intact); a wrong version byte closes it. Seeded.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn garbage_payloads() {
    let server = TestServer::start(MemoryEngine::new(), config()).await;
    let seed: u64 = std::env::var("KVS_TEST_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x5eed);
    let mut state = seed;
    let mut next = move || {
        // xorshift64: deterministic and dependency-free.
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let mut s = TcpStream::connect(server.addr).await.unwrap();
    for round in 0..200 {
        let len = (next() % 64) as usize;
        let mut payload = vec![1u8]; // the right version, garbage after it
        payload.extend((0..len).map(|_| next() as u8));
        s.write_all(&raw_frame(&payload)).await.unwrap();
        match read_response(&mut s).await {
            Some(Response::Error {
                kind: ErrorKind::Protocol,
                ..
            }) => {}
            // Random bytes can happen to be a valid request.
            Some(_) => {}
            None => panic!("seed {seed} round {round}: connection closed on {payload:?}"),
        }
    }
    s.write_all(&raw_frame(&[1, 0])).await.unwrap();
    assert_eq!(read_response(&mut s).await, Some(Response::Pong));

    // An empty frame has no version byte.
    s.write_all(&raw_frame(&[])).await.unwrap();
    assert!(matches!(
        read_response(&mut s).await,
        Some(Response::Error {
            kind: ErrorKind::Protocol,
            ..
        })
    ));
    assert_eq!(read_to_close(&mut s).await, 0);

    // A future version: answered with a protocol error, then closed.
    let mut v2 = TcpStream::connect(server.addr).await.unwrap();
    v2.write_all(&raw_frame(&[2, 0])).await.unwrap();
    match read_response(&mut v2).await {
        Some(Response::Error {
            kind: ErrorKind::Protocol,
            message,
        }) => assert!(message.contains("version"), "{message}"),
        other => panic!("{other:?}"),
    }
    assert_eq!(read_to_close(&mut v2).await, 0);

    // Not kvs at all (an HTTP request): a letter first, so it is read as a
    // RESP inline command and answered with a RESP error.
    let mut http = TcpStream::connect(server.addr).await.unwrap();
    http.write_all(b"GET / HTTP/1.1\r\n\r\n").await.unwrap();
    let mut answer = [0u8; 4];
    http.read_exact(&mut answer).await.unwrap();
    assert_eq!(&answer, b"-ERR");
    // A first byte no native frame can start with under the limit (the
    // high byte of its length) that is a blank: RESP too, as Redis skips
    // blanks before an inline command.
    for request in [
        &b" PING\r\n"[..],
        b"\r\nPING\r\n",
        b"\n\nPING\r\n",
        b"\tPING\r\n",
    ] {
        let mut blank = TcpStream::connect(server.addr).await.unwrap();
        blank.write_all(request).await.unwrap();
        let mut reply = [0u8; 64];
        let n = blank.read(&mut reply).await.unwrap();
        assert_eq!(&reply[..n], b"+PONG\r\n", "{request:?}");
    }

    server.client().await.ping().await.unwrap();
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn clients_disconnecting_mid_frame_do_not_disturb_others() {
    let server = TestServer::start(MemoryEngine::new(), config()).await;
    let mut steady = server.client().await;
    for i in 0..50 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let frame = raw_frame(&[1, 1, 3, b'a', b'b', b'c']);
        let cut = 1 + i % (frame.len() - 1);
        s.write_all(&frame[..cut]).await.unwrap();
        drop(s);
        steady.set("k", &i.to_string()).await.unwrap();
    }
    // Also mid-response: a client that sends a request for a big value and
    // leaves without reading it.
    steady.set("big", &"x".repeat(1 << 20)).await.unwrap();
    for _ in 0..10 {
        let mut s = TcpStream::connect(server.addr).await.unwrap();
        let mut buf = BytesMut::new();
        encode_frame(&Request::Get { key: "big" }, 1 << 24, &mut buf).unwrap();
        s.write_all(&buf).await.unwrap();
        drop(s);
    }
    assert_eq!(steady.get("k").await.unwrap().as_deref(), Some("49"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_panicking_request_is_a_server_error() {
    let engine = GatedEngine::new();
    let server = TestServer::start(engine, config()).await;
    let mut c = server.client().await;
    let err = c.set(GatedEngine::PANIC_KEY, "x").await.unwrap_err();
    assert!(matches!(err, KvsError::Server(_)), "{err}");
    c.set("fine", "1").await.unwrap();
    assert_eq!(c.get("fine").await.unwrap().as_deref(), Some("1"));
    server.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn invalid_config_is_refused() {
    for change in [
        (|c: &mut ServerConfig| c.max_connections = 0) as fn(&mut ServerConfig),
        |c| c.max_in_flight = 0,
        |c| c.max_frame_len = kvs::server::MIN_FRAME_LEN - 1,
        |c| c.frame_timeout = Duration::ZERO,
        |c| c.idle_timeout = Duration::ZERO,
    ] {
        let mut cfg = config();
        change(&mut cfg);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let pool = Arc::new(<SharedQueueThreadPool as ThreadPool>::new(1).unwrap());
        let result = kvs::server::run(
            listener,
            MemoryEngine::new(),
            pool,
            cfg,
            tokio_util::sync::CancellationToken::new(),
        )
        .await;
        assert!(matches!(result, Err(KvsError::InvalidInput(_))));
    }
}

/// Cancel while requests are inside the engine: each gets its answer, no
/// new connection is accepted, `run` returns, the writes are there.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_answers_in_flight_requests() {
    let engine = GatedEngine::new();
    let server = TestServer::start(engine.clone(), config()).await;
    let addr = server.addr;
    engine.close_gate();
    let mut writers = Vec::new();
    for i in 0..3 {
        writers.push(tokio::spawn(async move {
            let mut c = KvsClient::connect(addr).await.unwrap();
            c.set(&format!("k{i}"), "v").await
        }));
    }
    // A pipelining client with several requests executing at once.
    let mut piped = KvsClient::connect(addr).await.unwrap();
    for i in 0..5 {
        let key = format!("p{i}");
        piped
            .queue(&Request::Set {
                key: key.as_str(),
                value: "v",
                ttl_ms: None,
            })
            .unwrap();
    }
    piped.flush().await.unwrap();
    // The three writers, and the first of the pipelined sets (which run
    // in order in one pool job).
    engine.wait_entered(4).await;

    let token = server.token.clone();
    token.cancel();
    // The listener goes away promptly: new connections are refused.
    let mut refused = false;
    for _ in 0..200 {
        if TcpStream::connect(addr).await.is_err() {
            refused = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(refused, "still accepting after cancel");

    engine.open_gate();
    for w in writers {
        w.await.unwrap().unwrap();
    }
    for _ in 0..5 {
        assert_eq!(piped.recv().await.unwrap(), Response::Ok);
    }
    server.stop().await;
    for i in 0..3 {
        assert_eq!(engine.inner_get(&format!("k{i}")).as_deref(), Some("v"));
    }
    for i in 0..5 {
        assert_eq!(engine.inner_get(&format!("p{i}")).as_deref(), Some("v"));
    }
}

/// Idle and mid-pipeline connections do not hold shutdown up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn shutdown_is_prompt_with_open_connections() {
    let server = TestServer::start(MemoryEngine::new(), config()).await;
    let mut idle = Vec::new();
    for _ in 0..20 {
        let mut c = server.client().await;
        c.ping().await.unwrap();
        idle.push(c);
    }
    let counter = Arc::new(AtomicUsize::new(0));
    let busy = {
        let (addr, counter) = (server.addr, counter.clone());
        tokio::spawn(async move {
            let mut c = KvsClient::connect(addr).await.unwrap();
            while c.set("k", "v").await.is_ok() {
                counter.fetch_add(1, Ordering::Relaxed);
            }
        })
    };
    while counter.load(Ordering::Relaxed) < 100 {
        tokio::task::yield_now().await;
    }
    let start = Instant::now();
    server.stop().await;
    assert!(
        start.elapsed() < Duration::from_secs(3),
        "{:?}",
        start.elapsed()
    );
    busy.await.unwrap();
    for mut c in idle {
        assert!(c.ping().await.is_err());
    }
}

/// `try_recv` hands out what has arrived without waiting.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn try_recv_takes_only_buffered_responses() {
    let server = TestServer::start(MemoryEngine::new(), config()).await;
    let mut c = server.client().await;
    assert!(c.try_recv().unwrap().is_none());
    for _ in 0..10 {
        c.queue(&Request::<&str>::Ping).unwrap();
    }
    let mut got = 0;
    while got < 10 {
        assert_eq!(c.recv().await.unwrap(), Response::Pong);
        got += 1;
        while let Some(r) = c.try_recv().unwrap() {
            assert_eq!(r, Response::Pong);
            got += 1;
        }
    }
    assert_eq!(c.pending(), 0);
    assert!(c.try_recv().unwrap().is_none());
    server.stop().await;
}
