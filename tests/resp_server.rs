//! The whole RESP path over TCP compared byte for byte with a real
//! `redis-server` started by the test: the same request bytes go to a
//! kvs server (in this process on 127.0.0.1:0, on both engines) and to
//! Redis, and the replies must be identical (except where a script line
//! says otherwise, see `resp_support/scripts.rs`). `resp_compat.rs` pins
//! the command layer in process; this adds the listener, the first-byte
//! sniffing, the pipeline, partial reads and the closes.

mod resp_server_support;
mod resp_support;

use std::io::Write;
use std::time::Duration;

use kvs::server::ServerConfig;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use resp_server_support::{ENGINES, Engine, KvsServer};
use resp_support::scripts::{
    self, AUTH, AUTH_HELLO, CONNECTION, COUNTERS, KEYS, RAW, SCANS, STRINGS, pipelined, show,
};
use resp_support::{RawConn, RedisServer, cmd, multibulk, reply_len};

/// Sends `request` and half-closes; everything the peer sends until it
/// closes.
fn exchange_to_close(addr: std::net::SocketAddr, request: &[u8]) -> Vec<u8> {
    let mut conn = RawConn::connect(addr).unwrap();
    conn.send(request).unwrap();
    conn.shutdown_write();
    conn.read_to_close()
        .unwrap_or_else(|| panic!("{addr} kept the connection open after EOF"))
}

/// `script` as it is compared over TCP: the server reports its own idle
/// timeout (Redis's default is none).
fn over_tcp(script: &str) -> String {
    script
        .lines()
        .filter(|l| !l.contains("CONFIG GET timeout"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn scripts_match(engine: Engine) {
    let test = format!("scripts_match_redis_over_tcp ({engine:?})");
    let Some(redis) = RedisServer::start(&test, None) else {
        return;
    };
    let kvs = KvsServer::start(engine);
    let mut ours = kvs.connect();
    let mut theirs = redis.connect();
    let mut n = 0;
    for script in [STRINGS, COUNTERS, KEYS, SCANS, CONNECTION] {
        n += scripts::compare(|request| ours.call(request), &mut theirs, &over_tcp(script));
    }
    println!("{n} replies over TCP identical to redis-server's");
}

#[test]
fn scripts_match_redis_over_tcp_on_the_memory_engine() {
    scripts_match(Engine::Memory);
}

#[test]
fn scripts_match_redis_over_tcp_on_kvstore() {
    scripts_match(Engine::KvStore);
}

/// Reads `n` replies from `conn`, concatenated.
fn replies(conn: &mut RawConn, n: usize) -> Vec<u8> {
    let mut out = Vec::new();
    for _ in 0..n {
        out.extend(conn.reply().unwrap());
    }
    out
}

#[test]
fn pipelined_batches_match_redis_whole_and_in_random_pieces() {
    let Some(redis) = RedisServer::start("pipelined_batches_match_redis", None) else {
        return;
    };
    let seed: u64 = rand::rng().random();
    println!("seed {seed}");
    let mut rng = StdRng::seed_from_u64(seed);
    let mut total = 0;
    for engine in ENGINES {
        let kvs = KvsServer::start(engine);
        for inline in [false, true] {
            for pieces in [false, true] {
                let mut ours = kvs.connect();
                let mut theirs = redis.connect();
                for script in [STRINGS, COUNTERS, KEYS, CONNECTION] {
                    let (request, n) = pipelined(&over_tcp(script), inline);
                    if pieces {
                        // The same bytes in random small writes: every
                        // command also arrives split at every kind of
                        // boundary.
                        let mut rest = &request[..];
                        while !rest.is_empty() {
                            let len = rng.random_range(1..=rest.len().min(40));
                            ours.send(&rest[..len]).unwrap();
                            rest = &rest[len..];
                            if rng.random_range(0..8) == 0 {
                                std::thread::sleep(Duration::from_millis(1));
                            }
                        }
                    } else {
                        ours.send(&request).unwrap();
                    }
                    theirs.send(&request).unwrap();
                    let (got, want) = (replies(&mut ours, n), replies(&mut theirs, n));
                    assert_eq!(
                        show(&got),
                        show(&want),
                        "{engine:?} inline {inline} pieces {pieces} (seed {seed})"
                    );
                    total += n;
                }
            }
        }
    }
    println!("{total} pipelined replies over TCP identical to redis-server's");
}

#[test]
fn a_large_pipeline_keeps_its_order() {
    // More requests than the server runs at once, with replies larger
    // than a socket buffer, all written before any reply is read.
    let Some(redis) = RedisServer::start("a_large_pipeline_keeps_its_order", None) else {
        return;
    };
    let kvs = KvsServer::start(Engine::Memory);
    let mut request = Vec::new();
    let mut n = 0;
    let value = "v".repeat(1000);
    for i in 0..2000 {
        request.extend(cmd(&format!("SET key{i} {value}{i}")));
        request.extend(cmd(&format!("INCR counter{}", i % 7)));
        request.extend(cmd(&format!("GET key{}", i / 2)));
        request.extend(cmd(&format!("MGET key{i} key{} nokey", i / 3)));
        n += 4;
    }
    request.extend(cmd("DBSIZE"));
    n += 1;
    // A writer thread: neither side reads its replies until the
    // requests are all sent, so a blocking write could deadlock.
    let send = |addr| {
        let request = request.clone();
        let mut conn = RawConn::connect(addr).unwrap();
        let mut writer = conn.try_clone_stream();
        let t = std::thread::spawn(move || writer.write_all(&request).unwrap());
        let got = replies(&mut conn, n);
        t.join().unwrap();
        got
    };
    let got = send(kvs.addr);
    let want = send(redis.addr);
    assert_eq!(got.len(), want.len());
    assert!(got == want, "replies differ from redis-server's");
}

#[test]
fn raw_protocol_matches_redis_over_tcp() {
    let Some(redis) = RedisServer::start("raw_protocol_matches_redis_over_tcp", None) else {
        return;
    };
    let kvs = KvsServer::start(Engine::Memory);
    let mut n = 0;
    for raw in RAW {
        let got = exchange_to_close(kvs.addr, raw);
        let want = exchange_to_close(redis.addr, raw);
        assert_eq!(show(&got), show(&want), "request {}", show(raw));
        n += 1;
    }
    // Too long lines without a line end: refused once past 64 KiB.
    for (raw, repeat) in [(&b"A"[..], 70_000), (b"*1", 70_000), (b"*1\r\n$1", 70_000)] {
        let mut request = raw.to_vec();
        request.extend(std::iter::repeat_n(b'1', repeat));
        let got = exchange_to_close(kvs.addr, &request);
        let want = exchange_to_close(redis.addr, &request);
        assert_eq!(show(&got), show(&want), "request {}...", show(raw));
        n += 1;
    }
    println!("{n} raw exchanges over TCP identical to redis-server's");
}

#[test]
fn unknown_commands_and_wrong_arity_match_redis_on_every_command() {
    // Every command kvs lists in COMMAND, called with too few and too
    // many arguments, in any case; plus unknown names with arguments.
    let Some(redis) = RedisServer::start("unknown_and_arity", None) else {
        return;
    };
    let kvs = KvsServer::start(Engine::Memory);
    let mut ours = kvs.connect();
    let mut theirs = redis.connect();
    let names = command_names(&mut ours);
    assert!(names.len() >= 38, "COMMAND lists {} commands", names.len());
    let mut n = 0;
    for name in &names {
        for args in [vec![], vec!["a"; 9], vec!["a"; 2]] {
            if matches!(name.as_str(), "quit" | "flushall" | "flushdb") {
                continue; // closes or wipes; their arity is in the scripts
            }
            let mut line: Vec<&[u8]> = vec![name.as_bytes()];
            line.extend(args.iter().map(|a| a.as_bytes()));
            let request = multibulk(&line);
            let got = ours.call(&request);
            let want = theirs.call(&request);
            if want.starts_with(b"-ERR wrong number") || want.starts_with(b"-ERR unknown") {
                assert_eq!(show(&got), show(&want), "{}", show(&request));
                n += 1;
            }
        }
    }
    for line in [
        "NOSUCH",
        "nosuch a b c",
        "GETX k",
        "SET_ k v",
        "FLUSH",
        "CLUSTER INFO",
        "MULTI",
        "EVAL x 0",
        "SUBSCRIBE c",
        "LPUSH l a",
        "HSET h f v",
    ] {
        let got = ours.call(&cmd(line));
        let want = theirs.call(&cmd(line));
        if want.starts_with(b"-ERR unknown command") {
            assert_eq!(show(&got), show(&want), "{line}");
        } else {
            // Redis has it and kvs does not: kvs words it as Redis does
            // for a command it lacks.
            assert!(
                got.starts_with(b"-ERR unknown command '"),
                "{line}: {}",
                show(&got)
            );
        }
        n += 1;
    }
    println!("{n} error replies identical to redis-server's");
}

/// The lower-case names in a `COMMAND` reply.
fn command_names(conn: &mut RawConn) -> Vec<String> {
    let reply = conn.call(&cmd("COMMAND"));
    let header_end = reply.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut at = header_end;
    let mut names = Vec::new();
    while at < reply.len() {
        let len = reply_len(&reply[at..]).unwrap();
        let entry = &reply[at..at + len];
        // *N\r\n$len\r\nname\r\n...
        let first = entry.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
        let name_hdr = entry[first..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .unwrap();
        let start = first + name_hdr + 2;
        let name_len: usize = std::str::from_utf8(&entry[first + 1..first + name_hdr])
            .unwrap()
            .parse()
            .unwrap();
        names.push(String::from_utf8(entry[start..start + name_len].to_vec()).unwrap());
        at += len;
    }
    names
}

#[test]
fn authentication_matches_redis_over_tcp() {
    let Some(redis) = RedisServer::start("authentication_over_tcp", Some("sekret")) else {
        return;
    };
    for engine in ENGINES {
        let kvs = KvsServer::with_password(engine, "sekret");
        for script in [AUTH, AUTH_HELLO] {
            let mut ours = kvs.connect();
            scripts::compare(|r| ours.call(r), &mut redis.connect(), script);
        }
        // HELLO 2 AUTH answers the same map as Redis: the same fields in
        // the same order (their values name the server).
        let hello = cmd("HELLO 2 AUTH default sekret");
        let (ours, theirs) = (kvs.connect().call(&hello), redis.connect().call(&hello));
        assert_eq!(map_keys(&ours), map_keys(&theirs), "{}", show(&ours));
        // QUIT before authenticating: +OK, then the close.
        let quit = multibulk(&[b"QUIT"]);
        assert_eq!(
            show(&exchange_to_close(kvs.addr, &quit)),
            show(&exchange_to_close(redis.addr, &quit))
        );
    }
}

/// The keys of a RESP2 map reply (an array of alternating keys and
/// values), as text.
fn map_keys(reply: &[u8]) -> Vec<String> {
    assert_eq!(reply[0], b'*', "not an array: {}", show(reply));
    let mut at = reply.windows(2).position(|w| w == b"\r\n").unwrap() + 2;
    let mut keys = Vec::new();
    let mut index = 0;
    while at < reply.len() {
        let len = reply_len(&reply[at..]).unwrap();
        if index % 2 == 0 {
            keys.push(String::from_utf8_lossy(&reply[at..at + len]).into_owned());
        }
        at += len;
        index += 1;
    }
    keys
}

#[test]
fn commands_pipelined_before_auth_match_redis() {
    let Some(redis) = RedisServer::start("pipelined_before_auth", Some("sekret")) else {
        return;
    };
    let kvs = KvsServer::with_password(Engine::Memory, "sekret");
    // More than the few requests an unauthenticated connection may have
    // in flight; the AUTH in the middle of the batch must apply to every
    // command after it and to none before.
    let mut batch = Vec::new();
    let mut n = 0;
    for i in 0..25 {
        batch.extend(cmd(&format!("SET k{i} v")));
        batch.extend(cmd(&format!("GET k{i}")));
        batch.extend(cmd("PING"));
        n += 3;
    }
    batch.extend(cmd("AUTH wrong"));
    batch.extend(cmd("AUTH sekret"));
    n += 2;
    for i in 0..25 {
        batch.extend(cmd(&format!("SET k{i} v{i}")));
        batch.extend(cmd(&format!("GET k{i}")));
        n += 2;
    }
    batch.extend(cmd("DBSIZE"));
    batch.extend(b"GET k3\r\n");
    n += 2;
    let mut got = kvs.connect();
    let mut want = redis.connect();
    got.send(&batch).unwrap();
    want.send(&batch).unwrap();
    assert_eq!(show(&replies(&mut got, n)), show(&replies(&mut want, n)));

    // Inline, before AUTH, the same.
    let inline = b"GET a\r\nSET a b\r\nPING\r\nAUTH default sekret\r\nSET a b\r\nGET a\r\n";
    let mut got = kvs.connect();
    let mut want = redis.connect();
    got.send(inline).unwrap();
    want.send(inline).unwrap();
    assert_eq!(show(&replies(&mut got, 6)), show(&replies(&mut want, 6)));
}

#[test]
fn big_requests_before_auth_are_refused_as_redis_does() {
    let Some(redis) = RedisServer::start("big_requests_before_auth", Some("sekret")) else {
        return;
    };
    let kvs = KvsServer::with_password(Engine::KvStore, "sekret");
    let big = "x".repeat(16 << 10);
    let over = multibulk(&[b"SET", b"k", format!("{big}y").as_bytes()]);
    let at_limit = multibulk(&[b"SET", b"k", big.as_bytes()]);
    let many = multibulk(&[&b"a"[..]; 11]);
    let ten = multibulk(&[&b"a"[..]; 10]);
    for request in [&b"*11\r\n"[..], b"*1\r\n$16385\r\n", &over, &many] {
        let got = exchange_to_close(kvs.addr, request);
        let want = exchange_to_close(redis.addr, request);
        assert_eq!(show(&got), show(&want), "{}", show(&request[..20]));
        assert!(got.starts_with(b"-ERR Protocol error: unauthenticated"));
    }
    // At the limits: NOAUTH, and the connection stays usable.
    for request in [&at_limit, &ten] {
        let mut got = kvs.connect();
        let mut want = redis.connect();
        assert_eq!(show(&got.call(request)), show(&want.call(request)));
        let auth = cmd("AUTH sekret");
        assert_eq!(got.call(&auth), b"+OK\r\n");
        // Authenticated, the big bulk is fine.
        assert_eq!(got.call(&over), b"+OK\r\n");
        assert_eq!(got.call(&cmd("STRLEN k")), b":16385\r\n");
    }
}

#[test]
fn native_and_resp_clients_share_the_port_and_the_data() {
    // The first byte tells them apart: a native KvsClient and RESP
    // clients (multibulk and inline) on one listener see each other's
    // writes.
    for engine in ENGINES {
        let kvs = KvsServer::start(engine);
        let mut resp = kvs.connect();
        assert_eq!(resp.call(&cmd("SET from-resp 1")), b"+OK\r\n");
        let addr = kvs.addr;
        let native = kvs.block_on(async move {
            let mut client = kvs::KvsClient::connect(addr).await.unwrap();
            let seen = client.get("from-resp").await.unwrap();
            client.set("from-native", "2").await.unwrap();
            seen
        });
        assert_eq!(native.as_deref(), Some("1"));
        let mut inline = kvs.connect();
        assert_eq!(inline.call(b"GET from-native\r\n"), b"$1\r\n2\r\n");
        assert_eq!(resp.call(&cmd("DBSIZE")), b":2\r\n");
        kvs.stop();
    }
}

#[test]
fn info_reports_this_server_and_its_traffic() {
    let kvs = KvsServer::start(Engine::KvStore);
    let mut conn = kvs.connect();
    for i in 0..10 {
        conn.call(&cmd(&format!("SET k{i} v")));
    }
    conn.call(&cmd("GET k1"));
    conn.call(&cmd("GET missing"));
    let _other = kvs.connect().call(&cmd("PING"));
    let info = String::from_utf8(conn.call(&cmd("INFO"))).unwrap();
    for want in [
        "# Server\r\n".to_owned(),
        format!("tcp_port:{}\r\n", kvs.port()),
        "# Clients\r\n".to_owned(),
        "# Memory\r\n".to_owned(),
        "# Persistence\r\n".to_owned(),
        "# Stats\r\n".to_owned(),
        "# Keyspace\r\n".to_owned(),
        "db0:keys=10,".to_owned(),
    ] {
        assert!(info.contains(&want), "INFO lacks {want:?}:\n{info}");
    }
    let field = |name: &str| -> u64 {
        let line = info
            .lines()
            .find(|l| l.starts_with(&format!("{name}:")))
            .unwrap_or_else(|| panic!("INFO lacks {name}:\n{info}"));
        line[name.len() + 1..].trim().parse().unwrap()
    };
    assert!(field("keyspace_hits") >= 1);
    assert!(field("keyspace_misses") >= 1);
    assert!(field("total_commands_processed") >= 12);
    assert!(field("connected_clients") >= 1);
    assert!(field("total_connections_received") >= 2);
    let keyspace = String::from_utf8(conn.call(&cmd("INFO keyspace"))).unwrap();
    assert!(keyspace.contains("db0:keys=10,"), "{keyspace}");
    assert!(!keyspace.contains("# Server"), "{keyspace}");
}

#[test]
fn the_bulk_limit_is_the_servers_frame_limit_to_the_byte() {
    let mut config = ServerConfig::default();
    config.max_frame_len = 4096;
    let server = KvsServer::with_config(Engine::KvStore, config);
    let at_limit = "x".repeat(4096);
    let mut conn = server.connect();
    let set = multibulk(&[b"SET", b"k", at_limit.as_bytes()]);
    assert_eq!(conn.call(&set), b"+OK\r\n");
    assert_eq!(conn.call(&cmd("STRLEN k")), b":4096\r\n");
    // One byte more is refused when its header arrives, before its data.
    let got = exchange_to_close(server.addr, b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$4097\r\n");
    assert_eq!(got, b"-ERR Protocol error: invalid bulk length\r\n");
    assert_eq!(conn.call(&cmd("STRLEN k")), b":4096\r\n");
}
