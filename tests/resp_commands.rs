//! Command behaviour that has no redis-server twin to compare with: UTF-8
//! only keys and values, the response budget, SCAN's exactly-once
//! guarantee under concurrent writes, atomic counters on both engines,
//! authentication state, expiry over time, and the shapes of replies that
//! carry varying values (INFO, HELLO, TIME, COMMAND).

mod resp_support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread;
use std::time::Duration;

use kvs::command::{NOT_UTF8, Scope, ServerContext, Session, Step, dispatch, glob_match};
use kvs::{KvStore, KvsEngine, MemoryEngine};
use resp_support::{Kvs, reply_len};

fn kvs() -> Kvs<MemoryEngine> {
    Kvs::new(MemoryEngine::new(), None)
}

fn not_utf8() -> String {
    format!("-{NOT_UTF8}\r\n")
}

#[test]
fn non_utf8_arguments_are_refused_and_write_nothing() {
    let mut k = kvs();
    let bad: &[u8] = b"\xff\xfe";
    for args in [
        vec![&b"SET"[..], bad, b"v"],
        vec![b"SET", b"k", bad],
        vec![b"MSET", b"a", b"1", b"k", bad],
        vec![b"APPEND", b"k", bad],
        vec![b"SETNX", bad, b"v"],
        vec![b"SETEX", b"k", b"100", bad],
    ] {
        assert_eq!(
            String::from_utf8_lossy(&k.call(&args)),
            not_utf8(),
            "{args:?}"
        );
    }
    assert_eq!(k.line("DBSIZE"), ":0\r\n");
    assert_eq!(k.call(&[b"GET", bad]), not_utf8().into_bytes());
    assert_eq!(k.call(&[b"DEL", b"a", bad]), not_utf8().into_bytes());
    // ECHO and PING never reach the engine: any bytes go.
    assert_eq!(k.call(&[b"ECHO", bad]), b"$2\r\n\xff\xfe\r\n");
}

#[test]
fn replies_stop_at_the_budget() {
    let mut k = kvs();
    k.budget = 1000;
    let value = "x".repeat(300);
    for i in 0..10 {
        assert_eq!(k.line(&format!("SET key{i} {value}")), "+OK\r\n");
    }
    let over = "-ERR reply exceeds the maximum of 1000 bytes\r\n";
    // Three values fit (3 * 307 + header), four do not.
    assert!(k.line("MGET key0 key1 key2").starts_with("*3\r\n"));
    assert_eq!(k.line("MGET key0 key1 key2 key3"), over);
    // 1,000 copies of one key cannot build a 300 KB reply.
    let many: Vec<&[u8]> = std::iter::once(&b"MGET"[..])
        .chain(std::iter::repeat_n(&b"key0"[..], 1000))
        .collect();
    assert_eq!(String::from_utf8_lossy(&k.call(&many)), over);
    k.budget = 300;
    assert_eq!(
        k.line("GET key0"),
        "-ERR reply exceeds the maximum of 300 bytes\r\n"
    );
    // KEYS and SCAN count the keys they return.
    k.budget = 60;
    assert_eq!(
        k.line("KEYS *"),
        "-ERR reply exceeds the maximum of 60 bytes\r\n"
    );
    assert!(k.line("KEYS key1").starts_with("*1\r\n"));
    assert_eq!(
        k.line("SCAN 0 COUNT 100"),
        "-ERR reply exceeds the maximum of 60 bytes\r\n"
    );
    assert!(k.line("SCAN 0 COUNT 2").starts_with("*2\r\n"));
}

/// Every key a full SCAN returns, following the cursor from 0 to 0.
fn full_scan(k: &mut Kvs<impl KvsEngine>, count: usize, pattern: Option<&str>) -> Vec<String> {
    let mut cursor = "0".to_owned();
    let mut keys = Vec::new();
    for _ in 0..1_000_000 {
        let mut line = format!("SCAN {cursor} COUNT {count}");
        if let Some(p) = pattern {
            line.push_str(&format!(" MATCH {p}"));
        }
        let reply = k.feed(&resp_support::cmd(&line));
        let (next, page) = parse_scan(&reply);
        keys.extend(page);
        if next == "0" {
            return keys;
        }
        cursor = next;
    }
    panic!("SCAN did not finish");
}

fn parse_scan(reply: &[u8]) -> (String, Vec<String>) {
    assert!(
        reply.starts_with(b"*2\r\n"),
        "{}",
        String::from_utf8_lossy(reply)
    );
    let bulks = |mut at: usize, n: usize| {
        let mut out = Vec::new();
        for _ in 0..n {
            let len = reply_len(&reply[at..]).unwrap();
            let item = &reply[at..at + len];
            let body = item.iter().position(|&b| b == b'\n').unwrap() + 1;
            out.push(String::from_utf8(item[body..len - 2].to_vec()).unwrap());
            at += len;
        }
        (out, at)
    };
    let (cursor, at) = bulks(4, 1);
    let header_end = at + reply[at..].iter().position(|&b| b == b'\n').unwrap() + 1;
    let count: usize = std::str::from_utf8(&reply[at + 1..header_end - 2])
        .unwrap()
        .parse()
        .unwrap();
    let (keys, _) = bulks(header_end, count);
    (cursor[0].clone(), keys)
}

#[test]
fn scan_returns_every_stable_key_exactly_once_under_concurrent_writes() {
    let k = kvs();
    for i in 0..2000 {
        k.engine.set(format!("stable:{i:05}"), "v".into()).unwrap();
    }
    let stop = Arc::new(AtomicBool::new(false));
    let writer = {
        let engine = k.engine.clone();
        let stop = stop.clone();
        thread::spawn(move || {
            // Churn keys interleaved with the stable ones, before and
            // after the scan's position.
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                let key = format!("stable:{:05}x{}", i % 2000, i % 3);
                engine.set(key.clone(), "w".into()).unwrap();
                if i.is_multiple_of(2) {
                    let _ = engine.remove(key);
                }
                i += 1;
            }
        })
    };
    let mut scanner = k.connection();
    let keys = full_scan(&mut scanner, 7, None);
    stop.store(true, Ordering::Relaxed);
    writer.join().unwrap();
    let stable: Vec<&String> = keys.iter().filter(|k| !k.contains('x')).collect();
    let mut unique = stable.clone();
    unique.dedup();
    assert_eq!(unique.len(), stable.len(), "a key came back twice");
    assert_eq!(stable.len(), 2000, "a stable key was missed");
    // Engine order: sorted.
    assert!(keys.windows(2).all(|w| w[0] < w[1]));
}

#[test]
fn scan_match_count_and_type() {
    let mut k = kvs();
    for i in 0..100 {
        k.engine.set(format!("user:{i}"), "v".into()).unwrap();
        k.engine.set(format!("item:{i}"), "v".into()).unwrap();
    }
    let users = full_scan(&mut k, 10, Some("user:*"));
    assert_eq!(users.len(), 100);
    assert!(users.iter().all(|u| u.starts_with("user:")));
    assert_eq!(full_scan(&mut k, 1000, None).len(), 200);
    assert_eq!(full_scan(&mut k, 1, Some("item:4?")).len(), 10);
    let (_, page) = parse_scan(&k.feed(&resp_support::cmd("SCAN 0 TYPE list COUNT 1000")));
    assert!(page.is_empty());
    let (_, page) = parse_scan(&k.feed(&resp_support::cmd("SCAN 0 TYPE string COUNT 5")));
    assert_eq!(page.len(), 5);
    // An unknown cursor is refused rather than restarting silently.
    assert!(
        k.line("SCAN 12345")
            .starts_with("-ERR unknown or expired SCAN cursor")
    );
}

#[test]
fn glob_patterns_as_redis() {
    let cases: &[(&str, &str, bool)] = &[
        ("*", "", true),
        ("*", "abc", true),
        ("a*", "a", true),
        ("*b", "", false),
        ("a?c", "abc", true),
        ("a?c", "ac", false),
        ("a[bc]d", "acd", true),
        ("a[^bc]d", "acd", false),
        ("a[^bc]d", "axd", true),
        ("a[b-d]e", "ace", true),
        ("a[d-b]e", "ace", true),
        ("a\\*", "a*", true),
        ("a\\*", "ab", false),
        ("a\\", "a\\", true),
        ("*a*b*c*", "xxaxxbxxcxx", true),
        ("*a*b*c*", "xxaxxcxxbxx", false),
        ("h[", "h", false),
        ("[\\]]", "]", true),
        ("***", "x", true),
    ];
    for &(pattern, s, want) in cases {
        assert_eq!(
            glob_match(pattern.as_bytes(), s.as_bytes()),
            want,
            "{pattern} vs {s}"
        );
    }
}

fn concurrent_incr<E: KvsEngine>(engine: E) {
    let k = Kvs::new(engine, None);
    let threads: Vec<_> = (0..8)
        .map(|_| {
            let mut c = k.connection();
            thread::spawn(move || {
                for _ in 0..500 {
                    assert!(c.line("INCR n").starts_with(':'));
                    assert!(c.line("INCRBY m 3").starts_with(':'));
                    assert!(c.line("APPEND s x").starts_with(':'));
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let mut c = k.connection();
    assert_eq!(c.line("GET n"), "$4\r\n4000\r\n");
    assert_eq!(c.line("GET m"), "$5\r\n12000\r\n");
    assert_eq!(c.line("STRLEN s"), ":4000\r\n");
}

#[test]
fn counters_are_atomic_on_the_memory_engine() {
    concurrent_incr(MemoryEngine::new());
}

#[test]
fn counters_are_atomic_on_kvstore() {
    let dir = tempfile::tempdir().unwrap();
    concurrent_incr(KvStore::open(dir.path()).unwrap());
}

#[test]
fn set_nx_has_one_winner() {
    let k = kvs();
    let winners: usize = (0..8)
        .map(|i| {
            let mut c = k.connection();
            thread::spawn(move || c.line(&format!("SET lock {i} NX")) == "+OK\r\n")
        })
        .collect::<Vec<_>>()
        .into_iter()
        .map(|t| usize::from(t.join().unwrap()))
        .sum();
    assert_eq!(winners, 1);
}

#[test]
fn expiry_takes_effect() {
    let mut k = kvs();
    assert_eq!(k.line("SET a 1 PX 50"), "+OK\r\n");
    assert_eq!(k.line("SET b 1"), "+OK\r\n");
    assert_eq!(k.line("PEXPIRE b 50"), ":1\r\n");
    assert_eq!(k.line("SETEX c 100 v"), "+OK\r\n");
    assert_eq!(k.line("GET a"), "$1\r\n1\r\n");
    thread::sleep(Duration::from_millis(120));
    assert_eq!(k.line("GET a"), "$-1\r\n");
    assert_eq!(k.line("EXISTS a b"), ":0\r\n");
    assert_eq!(k.line("TTL c"), ":100\r\n");
    // EXAT in the past: set and gone at once.
    assert_eq!(k.line("SET d 1 EXAT 1"), "+OK\r\n");
    assert_eq!(k.line("GET d"), "$-1\r\n");
}

#[test]
fn authentication_gates_commands() {
    let k = Kvs::new(MemoryEngine::new(), Some("s3cret"));
    let mut c = k.connection();
    assert!(!c.session.is_authenticated());
    assert_eq!(c.line("SET a 1"), "-NOAUTH Authentication required.\r\n");
    assert_eq!(c.line("DBSIZE"), "-NOAUTH Authentication required.\r\n");
    assert_eq!(
        c.line("AUTH s3cre"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert_eq!(
        c.line("AUTH s3cret!"),
        "-WRONGPASS invalid username-password pair or user is disabled.\r\n"
    );
    assert!(!c.session.is_authenticated());
    assert_eq!(c.line("AUTH s3cret"), "+OK\r\n");
    assert!(c.session.is_authenticated());
    assert_eq!(c.line("SET a 1"), "+OK\r\n");
    // HELLO AUTH authenticates another connection.
    let mut d = k.connection();
    assert!(d.line("HELLO 2 AUTH default s3cret").starts_with("*14\r\n"));
    assert_eq!(d.line("GET a"), "$1\r\n1\r\n");
    // RESP3 is refused without authenticating.
    let mut e = k.connection();
    assert_eq!(
        e.line("HELLO 3 AUTH default s3cret"),
        "-NOPROTO unsupported protocol version\r\n"
    );
    assert!(!e.session.is_authenticated());
}

#[test]
fn varying_replies_have_redis_shapes() {
    let mut k = kvs();
    k.line("MSET a 1 b 2");
    let id = k.session.id();
    assert_eq!(k.line("CLIENT ID"), format!(":{id}\r\n"));
    let hello = k.line("HELLO");
    assert!(hello.starts_with("*14\r\n$6\r\nserver\r\n$3\r\nkvs\r\n$7\r\nversion\r\n"));
    assert!(hello.contains(&format!("$2\r\nid\r\n:{id}\r\n")));
    let time = k.line("TIME");
    assert!(time.starts_with("*2\r\n$10\r\n"), "{time}");
    let info = k.line("INFO");
    for section in [
        "Server",
        "Clients",
        "Memory",
        "Persistence",
        "Stats",
        "Keyspace",
    ] {
        assert!(
            info.contains(&format!("# {section}\r\n")),
            "{section} in {info}"
        );
    }
    assert!(info.contains("redis_version:"));
    assert!(info.contains("\r\n\r\n# Clients\r\n"));
    assert!(
        info.ends_with("# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n\r\n"),
        "{info}"
    );
    let keyspace = k.line("INFO keyspace");
    assert_eq!(
        keyspace,
        "$44\r\n# Keyspace\r\ndb0:keys=2,expires=0,avg_ttl=0\r\n\r\n"
    );
    let count = k.line("COMMAND COUNT");
    let entries = k.line("COMMAND");
    assert!(entries.starts_with(&format!("*{}\r\n", &count[1..count.len() - 2])));
    assert!(
        k.line("COMMAND INFO get nosuch")
            .starts_with("*2\r\n*10\r\n$3\r\nget\r\n:2\r\n")
    );
    assert!(k.line("COMMAND INFO get nosuch").ends_with("*-1\r\n"));
    assert_eq!(k.line("CLIENT SETINFO lib-name redis-py"), "+OK\r\n");
    assert_eq!(
        k.line("CONFIG GET maxmemory*").matches("maxmemory").count(),
        2
    );
}

#[test]
fn engine_commands_name_their_keys_and_scope() {
    let ctx = ServerContext::new(Box::new(Default::default));
    let mut session = Session::new(&ctx);
    let keys_of = |line: &str, session: &mut Session| {
        let args = line
            .split(' ')
            .map(|a| bytes::Bytes::copy_from_slice(a.as_bytes()))
            .collect();
        match dispatch(args, session, &ctx) {
            Step::Engine(cmd) => {
                let mut keys = Vec::new();
                cmd.for_each_key(|k, w| keys.push((k.to_owned(), w)));
                (keys, cmd.scope(), cmd.writes())
            }
            other => panic!("{line}: {other:?}"),
        }
    };
    let w = |k: &str| (k.to_owned(), true);
    let r = |k: &str| (k.to_owned(), false);
    assert_eq!(
        keys_of("GET a", &mut session),
        (vec![r("a")], Scope::Keys, false)
    );
    assert_eq!(
        keys_of("SET a 1 NX", &mut session),
        (vec![w("a")], Scope::Keys, true)
    );
    assert_eq!(
        keys_of("MSET a 1 b 2", &mut session),
        (vec![w("a"), w("b")], Scope::Keys, true)
    );
    assert_eq!(
        keys_of("MGET a b", &mut session),
        (vec![r("a"), r("b")], Scope::Keys, false)
    );
    assert_eq!(
        keys_of("INCR n", &mut session),
        (vec![w("n")], Scope::Keys, true)
    );
    assert_eq!(
        keys_of("DEL a b", &mut session),
        (vec![w("a"), w("b")], Scope::Keys, true)
    );
    assert_eq!(
        keys_of("TTL a", &mut session),
        (vec![r("a")], Scope::Keys, false)
    );
    assert_eq!(
        keys_of("FLUSHDB", &mut session),
        (vec![], Scope::WritesAll, true)
    );
    assert_eq!(
        keys_of("SCAN 0", &mut session),
        (vec![], Scope::ReadsAll, false)
    );
    assert_eq!(
        keys_of("DBSIZE", &mut session),
        (vec![], Scope::ReadsAll, false)
    );
}

#[test]
fn quit_closes_and_protocol_errors_close() {
    let mut k = kvs();
    assert_eq!(k.feed(b"PING\r\nQUIT\r\nPING\r\n"), b"+PONG\r\n+OK\r\n");
    assert!(k.closed);
    let mut k = kvs();
    assert_eq!(
        k.feed(b"*1\r\n$4\r\nPINGxx"),
        b"-ERR Protocol error: expected CRLF after bulk data\r\n"
    );
    assert!(k.closed);
}

#[test]
fn append_stops_at_the_largest_value() {
    let mut k = kvs();
    let chunk = "x".repeat(8 << 20);
    assert_eq!(
        k.call(&[b"APPEND", b"big", chunk.as_bytes()]),
        b":8388608\r\n"
    );
    assert_eq!(
        k.call(&[b"APPEND", b"big", chunk.as_bytes()]),
        b":16777216\r\n"
    );
    assert_eq!(
        k.line("APPEND big y"),
        "-ERR string exceeds maximum allowed size (proto-max-bulk-len)\r\n"
    );
    assert_eq!(k.line("STRLEN big"), ":16777216\r\n");
}

#[test]
fn the_cursor_table_is_bounded() {
    let mut k = kvs();
    k.line("MSET a 1 b 2 c 3");
    let first = parse_scan(&k.feed(&resp_support::cmd("SCAN 0 COUNT 1"))).0;
    assert_ne!(first, "0");
    // The first cursor still resumes after a few others...
    for _ in 0..100 {
        k.line("SCAN 0 COUNT 1");
    }
    let (_, page) = parse_scan(&k.feed(&resp_support::cmd(&format!("SCAN {first} COUNT 1"))));
    assert_eq!(page, ["b"]);
    // ...but not after the table's 16 Ki entries have turned over.
    for _ in 0..(16 << 10) {
        k.line("SCAN 0 COUNT 1");
    }
    assert!(
        k.line(&format!("SCAN {first}"))
            .starts_with("-ERR unknown or expired SCAN cursor")
    );
}

#[test]
fn context_helpers_for_the_server() {
    let mut ctx = ServerContext::new(Box::new(Default::default));
    assert!(ctx.check_password(b"default", b"anything"));
    ctx.requirepass = Some("pw".into());
    assert!(ctx.check_password(b"default", b"pw"));
    for (user, pass) in [
        (&b"default"[..], &b"pW"[..]),
        (b"default", b"pw "),
        (b"default", b""),
        (b"bob", b"pw"),
    ] {
        assert!(!ctx.check_password(user, pass), "{user:?} {pass:?}");
    }
    ctx.set_config("maxmemory", "1048576");
    ctx.set_config("Maxmemory-Policy", "allkeys-lru");
    ctx.requirepass = None;
    let mut k = Kvs::new(MemoryEngine::new(), None);
    k.ctx = Arc::new(ctx);
    assert_eq!(
        k.line("CONFIG GET maxmemory"),
        "*2\r\n$9\r\nmaxmemory\r\n$7\r\n1048576\r\n"
    );
    assert_eq!(
        k.line("CONFIG GET maxmemory-policy"),
        "*2\r\n$16\r\nmaxmemory-policy\r\n$11\r\nallkeys-lru\r\n"
    );
}

#[test]
fn a_full_memory_engine_answers_redis_oom() {
    use kvs::engine::memory::{EvictionPolicy, MemoryOptions};
    let engine = MemoryEngine::with_options(MemoryOptions {
        max_memory: 4096,
        eviction: EvictionPolicy::NoEviction,
    });
    let mut k = Kvs::new(engine, None);
    let value = "x".repeat(1000);
    let mut replies = Vec::new();
    for i in 0..10 {
        replies.push(k.line(&format!("SET k{i} {value}")));
    }
    assert_eq!(replies[0], "+OK\r\n");
    assert_eq!(
        replies.last().unwrap(),
        "-OOM command not allowed when used memory > 'maxmemory'.\r\n"
    );
    // Reads and deletes still work.
    assert_eq!(k.line("DEL k0"), ":1\r\n");
    assert_eq!(k.line("EXISTS k1"), ":1\r\n");
}

#[test]
fn what_the_server_moves_across_threads_can_move() {
    fn send<T: Send + 'static>() {}
    fn shared<T: Send + Sync + 'static>() {}
    send::<kvs::command::EngineCommand>();
    send::<kvs::command::Executed>();
    send::<Session>();
    shared::<ServerContext>();
    send::<kvs::protocol::resp::RespDecoder>();
}
