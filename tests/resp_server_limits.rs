//! The server's limits as a RESP client meets them over TCP: the
//! connection cap answers in RESP with Redis's words, a stalled partial
//! request and an idle connection are closed on time without disturbing
//! others, and a shutdown with a pipeline in flight sends whole replies
//! in order, then closes.

mod resp_server_support;
mod resp_support;

use std::time::{Duration, Instant};

use kvs::server::ServerConfig;
use resp_server_support::{Engine, KvsServer};
use resp_support::{RawConn, cmd};

#[test]
fn over_the_connection_cap_a_resp_client_gets_redis_words() {
    let mut config = ServerConfig::default();
    config.max_connections = 2;
    let server = KvsServer::with_config(Engine::Memory, config);
    let mut first = server.connect();
    let mut second = server.connect();
    assert_eq!(first.call(&cmd("PING")), b"+PONG\r\n");
    assert_eq!(second.call(&cmd("PING")), b"+PONG\r\n");
    for request in [&cmd("PING")[..], b"PING\r\n"] {
        let mut third = server.connect();
        third.send(request).unwrap();
        assert_eq!(
            third.read_to_close().expect("closed"),
            b"-ERR max number of clients reached\r\n"
        );
    }
    // The served ones carry on, and a freed slot is reused.
    assert_eq!(first.call(&cmd("SET k v")), b"+OK\r\n");
    drop(second);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut again = server.connect();
        again.send(&cmd("GET k")).unwrap();
        match again.reply() {
            Ok(reply) if reply == b"$1\r\nv\r\n" => break,
            other => {
                assert!(Instant::now() < deadline, "slot never freed: {other:?}");
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }
}

#[test]
fn stalled_partial_requests_and_idle_connections_are_closed_on_time() {
    let mut config = ServerConfig::default();
    config.frame_timeout = Duration::from_millis(300);
    config.idle_timeout = Duration::from_millis(1500);
    let server = KvsServer::with_config(Engine::Memory, config);
    let mut busy = server.connect();
    let started = Instant::now();
    // A partial multibulk, a partial bulk, a partial inline line.
    let mut stalled: Vec<RawConn> = [&b"*2\r\n$3\r\nGET\r\n"[..], b"*1\r\n$4\r\nPI", b"GET k"]
        .iter()
        .map(|partial| {
            let mut c = server.connect();
            c.send(partial).unwrap();
            c
        })
        .collect();
    let mut idle = server.connect();
    // Requests spaced under both limits keep a connection open.
    while started.elapsed() < Duration::from_millis(900) {
        assert_eq!(busy.call(&cmd("PING")), b"+PONG\r\n");
        std::thread::sleep(Duration::from_millis(100));
    }
    for c in &mut stalled {
        // Closed by the frame timeout, long before the idle timeout.
        assert_eq!(c.read_to_close().expect("closed"), b"");
    }
    let stalled_closed = started.elapsed();
    assert!(
        stalled_closed < Duration::from_millis(1500),
        "stalled requests closed only after {stalled_closed:?}"
    );
    assert_eq!(idle.read_to_close().expect("closed"), b"");
    let idle_closed = started.elapsed();
    assert!(
        idle_closed >= Duration::from_millis(1500),
        "idle connection closed after only {idle_closed:?}"
    );
    assert_eq!(busy.call(&cmd("PING")), b"+PONG\r\n");
}

#[test]
fn shutdown_sends_whole_replies_in_order_then_closes() {
    for engine in [Engine::Memory, Engine::KvStore] {
        // A grace period longer than `stop` waits: the drain must end
        // because every accepted request was answered, not because the
        // grace ran out. (Most INCRs wait behind the previous one: a
        // request held that way was accepted and must run too.)
        let mut config = ServerConfig::default();
        config.shutdown_grace = Duration::from_secs(60);
        let server = KvsServer::with_config(engine, config);
        let mut conn = server.connect();
        let mut batch = Vec::new();
        for i in 0..500 {
            batch.extend(cmd(&format!("SET key{i} {i}")));
            batch.extend(cmd("INCR n"));
        }
        conn.send(&batch).unwrap();
        // The first reply shows the server has the batch.
        assert_eq!(conn.reply().unwrap(), b"+OK\r\n");
        server.stop();
        let rest = conn.read_to_close().expect("closed after the drain");
        // Every reply that went out is whole and in order; the ones not
        // yet read by the server when it stopped are simply not there.
        let mut at = 0;
        let mut n: usize = 1;
        while at < rest.len() {
            let len = resp_support::reply_len(&rest[at..]).expect("whole replies only");
            let reply = &rest[at..at + len];
            let want = if n.is_multiple_of(2) {
                b"+OK\r\n".to_vec()
            } else {
                format!(":{}\r\n", n.div_ceil(2)).into_bytes()
            };
            assert_eq!(reply, &want[..], "{engine:?} reply {n}");
            at += len;
            n += 1;
        }
    }
}
