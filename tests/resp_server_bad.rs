//! Broken RESP against a running kvs server: each is answered with a
//! Redis-style `-ERR Protocol error: ...` and the connection closes, the
//! server's memory does not follow what a request merely declares, and
//! the server keeps serving its other connections throughout.
//!
//! One test in its own binary, so the process's RSS is the server's
//! (plus this thread) and no other test allocates meanwhile.

mod resp_server_support;
mod resp_support;

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use kvs::server::rss_bytes;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use resp_server_support::{Engine, KvsServer};
use resp_support::{RawConn, cmd, reply_len};

const PROTOCOL_ERROR: &str = "-ERR Protocol error: ";

fn show(b: &[u8]) -> String {
    String::from_utf8_lossy(b).escape_debug().to_string()
}

/// Sends `request` and reads until the server closes, which it must do by
/// itself (the write side stays open): what it answered.
fn refused(addr: SocketAddr, request: &[u8]) -> String {
    let mut conn = RawConn::connect(addr).unwrap();
    conn.send(request).unwrap();
    let got = conn
        .read_to_close()
        .unwrap_or_else(|| panic!("still open after {}", show(request)));
    String::from_utf8_lossy(&got).into_owned()
}

/// A connection that is kept open through everything and must keep
/// working.
struct Bystander {
    conn: RawConn,
    n: u64,
}

impl Bystander {
    fn check(&mut self, after: &str) {
        self.n += 1;
        let set = cmd(&format!("SET bystander {}", self.n));
        assert_eq!(self.conn.call(&set), b"+OK\r\n", "after {after}");
        assert_eq!(
            self.conn.call(&cmd("INCR bystander")),
            format!(":{}\r\n", self.n + 1).into_bytes(),
            "after {after}"
        );
    }
}

/// Each malformed request, and the error text that must answer it.
const MALFORMED: &[(&[u8], &str)] = &[
    (b"*99999999999\r\n", "invalid multibulk length"),
    (b"*1\r\n$-5\r\n", "invalid bulk length"),
    (b"*abc\r\n", "invalid multibulk length"),
    (
        b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16777217\r\n",
        "invalid bulk length",
    ),
    (b"*1\r\n$9223372036854775808\r\n", "invalid bulk length"),
    (b"*1\r\n$4\r\nPINGxx", "expected CRLF after bulk data"),
    (
        b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\r",
        "expected CRLF after bulk data",
    ),
    (b"*1\r\n:1\r\n", "expected '$', got ':'"),
    (b"*2\r\n*1\r\n", "expected '$', got '*'"),
    (b"ECHO \"abc\r\n", "unbalanced quotes in request"),
];

/// Streams `byte` without a line end (up to 1 GiB) while reading: the
/// server must refuse the line once past 64 KiB, answer, and close long
/// before the GiB is sent.
fn endless_line(addr: SocketAddr, start: &[u8], want: &str) {
    const GIB: usize = 1 << 30;
    let mut conn = RawConn::connect(addr).unwrap();
    let mut writer = conn.try_clone_stream();
    let start = start.to_vec();
    let sender = std::thread::spawn(move || {
        let chunk = vec![b'1'; 64 << 10];
        let mut sent = 0;
        if writer.write_all(&start).is_err() {
            return sent;
        }
        while sent < GIB {
            match writer.write(&chunk) {
                Ok(n) => sent += n,
                Err(_) => break,
            }
        }
        sent
    });
    let got = conn.read_to_close().expect("the server closes");
    let sent = sender.join().unwrap();
    assert_eq!(
        show(&got),
        show(format!("{PROTOCOL_ERROR}{want}\r\n").as_bytes())
    );
    assert!(
        sent < 64 << 20,
        "{sent} bytes sent before the server closed"
    );
}

/// RESP-looking noise: tokens a parser cares about, random bytes between.
fn noise(rng: &mut StdRng) -> Vec<u8> {
    const TOKENS: &[&[u8]] = &[
        b"*",
        b"$",
        b"\r\n",
        b"\r",
        b"\n",
        b"-",
        b"0",
        b"1",
        b"3",
        b"12",
        b"99999",
        b"\"",
        b"'",
        b"\\",
        b" ",
        b"PING",
        b"SET",
        b"GET",
        b"k",
        b"*1\r\n",
        b"$4\r\n",
        b"*2\r\n$3\r\nGET\r\n",
    ];
    let mut out = Vec::new();
    let first: &[u8] = match rng.random_range(0..3) {
        0 => b"*",
        1 => b"P",
        _ => &[rng.random_range(0..=255u8)],
    };
    out.extend_from_slice(first);
    for _ in 0..rng.random_range(0..40) {
        if rng.random_range(0..3) == 0 {
            out.push(rng.random());
        } else {
            out.extend_from_slice(TOKENS[rng.random_range(0..TOKENS.len())]);
        }
    }
    out
}

/// Sends noise, half-closes, and checks what came back: whole RESP
/// replies (or nothing, for a native-protocol first byte), a protocol
/// error only as the last one; and the server closes.
fn random_bytes(addr: SocketAddr, rng: &mut StdRng, seed: u64) {
    let request = noise(rng);
    let mut conn = RawConn::connect(addr).unwrap();
    conn.send(&request).unwrap();
    conn.shutdown_write();
    let got = conn
        .read_to_close()
        .unwrap_or_else(|| panic!("still open after {} (seed {seed})", show(&request)));
    let resp = request[0] == b'*' || request[0].is_ascii_alphabetic();
    if !resp {
        return; // the native protocol's business (tests/fault_decoder.rs)
    }
    let mut at = 0;
    while at < got.len() {
        let len = reply_len(&got[at..])
            .unwrap_or_else(|| panic!("partial reply {} (seed {seed})", show(&got)));
        let reply = &got[at..at + len];
        at += len;
        if reply.starts_with(PROTOCOL_ERROR.as_bytes()) {
            assert_eq!(
                at,
                got.len(),
                "replies after a protocol error: {} for {} (seed {seed})",
                show(&got),
                show(&request)
            );
        }
    }
}

/// Connections that each declare a large bulk and then stall: none may
/// make the server reserve what was only declared.
fn stalled_declarations(addr: SocketAddr, conns: usize) -> Vec<RawConn> {
    (0..conns)
        .map(|i| {
            let mut c = RawConn::connect(addr).unwrap();
            let mut request = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$16000000\r\n".to_vec();
            request.extend(std::iter::repeat_n(b'x', 1000 + i));
            c.send(&request).unwrap();
            c
        })
        .collect()
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / f64::from(1 << 20)
}

#[test]
fn bad_resp_is_refused_without_memory_growth_while_others_are_served() {
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let server = KvsServer::start(Engine::Memory);
    let addr = server.addr;
    let mut bystander = Bystander {
        conn: server.connect(),
        n: 0,
    };
    bystander.check("start");

    // `*-1` (and `*0`) are empty commands to Redis: skipped, no error.
    let mut conn = server.connect();
    assert_eq!(conn.call(b"*-1\r\n*0\r\nPING\r\n"), b"+PONG\r\n");

    let pass = |rng: &mut StdRng, bystander: &mut Bystander, stalled: usize| {
        for (request, want) in MALFORMED {
            let got = refused(addr, request);
            assert_eq!(
                got,
                format!("{PROTOCOL_ERROR}{want}\r\n"),
                "request {}",
                show(request)
            );
            bystander.check(&show(request));
        }
        // Replies before the error still arrive, in order.
        let got = refused(addr, b"PING\r\n*1\r\n$4\r\nPING\r\n*1\r\n$-5\r\nPING\r\n");
        assert_eq!(
            got,
            format!("+PONG\r\n+PONG\r\n{PROTOCOL_ERROR}invalid bulk length\r\n")
        );
        endless_line(addr, b"SET k ", "too big inline request");
        endless_line(addr, b"*", "too big mbulk count string");
        endless_line(addr, b"*1\r\n$", "too big bulk count string");
        bystander.check("endless lines");
        for _ in 0..200 {
            random_bytes(addr, rng, seed);
        }
        bystander.check("random bytes");
        let held = stalled_declarations(addr, stalled);
        bystander.check("stalled declarations");
        held
    };

    // Two passes warm the allocator's arenas and the server's pools; after
    // them, RSS must stay flat (within the allocator's noise, about 2 MiB
    // here) however often the abuse repeats.
    for _ in 0..2 {
        drop(pass(&mut rng, &mut bystander, 100));
    }
    std::thread::sleep(Duration::from_millis(200));
    let before = rss_bytes();
    let mut peak = before;
    for _ in 0..3 {
        let held = pass(&mut rng, &mut bystander, 100);
        // 100 connections have each declared 16 MB: 1.6 GB if reserved.
        peak = peak.max(rss_bytes());
        drop(held);
    }
    std::thread::sleep(Duration::from_millis(200));
    let after = rss_bytes();
    println!(
        "RSS before {:.1} MiB, peak {:.1} MiB, after {:.1} MiB",
        mib(before),
        mib(peak),
        mib(after)
    );
    assert!(before > 0, "no RSS reading on this system");
    assert!(
        peak < before + (16 << 20),
        "RSS grew from {:.1} MiB to a peak of {:.1} MiB",
        mib(before),
        mib(peak)
    );
    assert!(
        after < before + (8 << 20),
        "RSS grew from {:.1} MiB to {:.1} MiB",
        mib(before),
        mib(after)
    );
    bystander.check("the end");
    // New connections are served too.
    let value = format!("{}", bystander.n + 1);
    assert_eq!(
        server.connect().call(&cmd("GET bystander")),
        format!("${}\r\n{value}\r\n", value.len()).into_bytes()
    );
}
