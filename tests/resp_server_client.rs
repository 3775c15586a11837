//! kvs as a Rust application sees it through the `redis` crate (1.x,
//! the async multiplexed connection): every command of the RESP subset
//! through typed calls, pipelines and SCAN iterators, on both engines.

mod resp_server_support;
mod resp_support;

use std::collections::{BTreeSet, HashMap};

use redis::aio::MultiplexedConnection;
use redis::{
    AsyncTypedCommands, ExistenceCheck, InfoDict, IntegerReplyOrNoOp, SetExpiry, SetOptions,
};
use resp_server_support::{ENGINES, KvsServer, redis_connect as connect};

/// `cmd` with `args`, its reply decoded as `T`.
async fn query<T: redis::FromRedisValue>(
    con: &mut MultiplexedConnection,
    cmd: &str,
    args: &[&str],
) -> redis::RedisResult<T> {
    redis::cmd(cmd).arg(args).query_async(con).await
}

async fn every_command(con: &mut MultiplexedConnection) {
    // Connection and server.
    assert_eq!(con.ping().await.unwrap(), "PONG");
    assert_eq!(con.ping_message("hi").await.unwrap(), "hi");
    assert_eq!(
        query::<String>(con, "ECHO", &["héllo"]).await.unwrap(),
        "héllo"
    );
    assert_eq!(query::<String>(con, "SELECT", &["0"]).await.unwrap(), "OK");
    let err = query::<String>(con, "SELECT", &["1"]).await.unwrap_err();
    assert!(
        err.to_string().contains("DB index is out of range"),
        "{err}"
    );
    let hello: HashMap<String, redis::Value> = query(con, "HELLO", &["2"]).await.unwrap();
    assert_eq!(hello.get("proto"), Some(&redis::Value::Int(2)), "{hello:?}");
    assert!(hello.contains_key("server") && hello.contains_key("version"));
    let err = query::<redis::Value>(con, "HELLO", &["3"])
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("NOPROTO"), "{err}");
    con.client_setname("e2e-test").await.unwrap();
    assert_eq!(
        con.client_getname().await.unwrap().as_deref(),
        Some("e2e-test")
    );
    assert!(con.client_id().await.unwrap() > 0);
    assert_eq!(
        query::<String>(con, "CLIENT", &["SETINFO", "LIB-NAME", "e2e"])
            .await
            .unwrap(),
        "OK"
    );
    let count: usize = query(con, "COMMAND", &["COUNT"]).await.unwrap();
    let commands: Vec<redis::Value> = query(con, "COMMAND", &[]).await.unwrap();
    assert_eq!(commands.len(), count);
    assert!(count >= 38, "COMMAND COUNT {count}");
    let _docs: redis::Value = query(con, "COMMAND", &["DOCS", "get"]).await.unwrap();
    let save: Vec<String> = query(con, "CONFIG", &["GET", "save"]).await.unwrap();
    assert_eq!(save.first().map(String::as_str), Some("save"));
    let none: Vec<String> = query(con, "CONFIG", &["GET", "no-such-name"])
        .await
        .unwrap();
    assert!(none.is_empty());
    let (secs, micros): (u64, u64) = query(con, "TIME", &[]).await.unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    assert!(secs.abs_diff(now) <= 5 && micros < 1_000_000);

    // Strings.
    con.flushdb().await.unwrap();
    assert_eq!(con.get("k").await.unwrap(), None);
    con.set("k", "v").await.unwrap();
    assert_eq!(con.get("k").await.unwrap().as_deref(), Some("v"));
    let nx = SetOptions::default().conditional_set(ExistenceCheck::NX);
    assert_eq!(con.set_options("k", "w", nx).await.unwrap(), None);
    assert_eq!(con.get("k").await.unwrap().as_deref(), Some("v"));
    let xx_get = SetOptions::default()
        .conditional_set(ExistenceCheck::XX)
        .get(true)
        .with_expiration(SetExpiry::EX(100));
    assert_eq!(
        con.set_options("k", "w", xx_get).await.unwrap().as_deref(),
        Some("v")
    );
    assert_eq!(
        con.ttl("k").await.unwrap(),
        IntegerReplyOrNoOp::IntegerReply(100)
    );
    let keep = SetOptions::default().with_expiration(SetExpiry::KEEPTTL);
    con.set_options("k", "x", keep).await.unwrap();
    assert_eq!(
        con.ttl("k").await.unwrap(),
        IntegerReplyOrNoOp::IntegerReply(100)
    );
    let px = SetOptions::default().with_expiration(SetExpiry::PX(50_000));
    con.set_options("k", "y", px).await.unwrap();
    assert!(
        matches!(con.pttl("k").await.unwrap(), IntegerReplyOrNoOp::IntegerReply(t) if t > 40_000 && t <= 50_000)
    );
    let at = now + 1000;
    let exat = SetOptions::default().with_expiration(SetExpiry::EXAT(at));
    con.set_options("k", "z", exat).await.unwrap();
    assert!(
        matches!(con.ttl("k").await.unwrap(), IntegerReplyOrNoOp::IntegerReply(t) if t > 990 && t <= 1000)
    );
    let pxat = SetOptions::default().with_expiration(SetExpiry::PXAT(at * 1000));
    con.set_options("k", "z", pxat).await.unwrap();
    assert!(matches!(con.ttl("k").await.unwrap(), IntegerReplyOrNoOp::IntegerReply(t) if t > 990));
    con.set_ex("ex", "1", 100).await.unwrap();
    assert_eq!(
        con.ttl("ex").await.unwrap(),
        IntegerReplyOrNoOp::IntegerReply(100)
    );
    con.pset_ex("pex", "1", 100_000).await.unwrap();
    assert_eq!(
        con.ttl("pex").await.unwrap(),
        IntegerReplyOrNoOp::IntegerReply(100)
    );
    assert!(con.set_nx("fresh", "1").await.unwrap());
    assert!(!con.set_nx("fresh", "2").await.unwrap());
    assert_eq!(con.get_del("fresh").await.unwrap().as_deref(), Some("1"));
    assert_eq!(con.get_del("fresh").await.unwrap(), None);
    con.mset(&[("a", "1"), ("b", "2"), ("c", "3")])
        .await
        .unwrap();
    assert_eq!(
        con.mget(&["a", "missing", "c"]).await.unwrap(),
        vec![Some("1".to_owned()), None, Some("3".to_owned())]
    );
    assert_eq!(con.append("a", "23").await.unwrap(), 3);
    assert_eq!(con.strlen("a").await.unwrap(), 3);
    assert_eq!(con.strlen("missing").await.unwrap(), 0);
    con.set("unicode", "héllo ✓").await.unwrap();
    assert_eq!(con.strlen("unicode").await.unwrap(), "héllo ✓".len());
    // A value that is not UTF-8 is refused and writes nothing.
    let err = redis::cmd("SET")
        .arg("bin")
        .arg(&[0xffu8, 0xfe][..])
        .query_async::<()>(con)
        .await
        .unwrap_err();
    assert_eq!(err.code(), Some("ERR"), "{err}");
    assert!(!con.exists("bin").await.unwrap());

    // Counters.
    assert_eq!(con.incr("n", 1).await.unwrap(), 1);
    assert_eq!(query::<i64>(con, "INCR", &["n"]).await.unwrap(), 2);
    assert_eq!(query::<i64>(con, "DECR", &["n"]).await.unwrap(), 1);
    assert_eq!(con.incr("n", 10).await.unwrap(), 11);
    assert_eq!(con.decr("n", 20).await.unwrap(), -9);
    let err = con.incr("unicode", 1).await.unwrap_err();
    assert!(err.to_string().contains("not an integer"), "{err}");
    con.set("max", i64::MAX).await.unwrap();
    let err = con.incr("max", 1).await.unwrap_err();
    assert!(err.to_string().contains("overflow"), "{err}");

    // Keys and expiry.
    assert!(con.exists("a").await.unwrap());
    assert_eq!(
        query::<usize>(con, "EXISTS", &["a", "b", "missing", "a"])
            .await
            .unwrap(),
        3
    );
    assert_eq!(con.del(&["a", "missing"]).await.unwrap(), 1);
    assert_eq!(con.unlink(&["b", "c", "missing"]).await.unwrap(), 2);
    con.set("t", "v").await.unwrap();
    assert_eq!(
        con.ttl("t").await.unwrap(),
        IntegerReplyOrNoOp::ExistsButNotRelevant
    );
    assert_eq!(
        con.ttl("missing").await.unwrap(),
        IntegerReplyOrNoOp::NotExists
    );
    assert!(con.expire("t", 100).await.unwrap());
    assert!(!con.expire("missing", 100).await.unwrap());
    let expire = |opt: &'static str, secs: &'static str| {
        redis::cmd("EXPIRE").arg("t").arg(secs).arg(opt).clone()
    };
    assert_eq!(expire("NX", "5").query_async::<i64>(con).await.unwrap(), 0);
    assert_eq!(
        expire("XX", "200").query_async::<i64>(con).await.unwrap(),
        1
    );
    assert_eq!(
        expire("GT", "100").query_async::<i64>(con).await.unwrap(),
        0
    );
    assert_eq!(
        expire("LT", "150").query_async::<i64>(con).await.unwrap(),
        1
    );
    assert_eq!(
        con.ttl("t").await.unwrap(),
        IntegerReplyOrNoOp::IntegerReply(150)
    );
    assert!(con.pexpire("t", 300_000).await.unwrap());
    assert_eq!(
        con.ttl("t").await.unwrap(),
        IntegerReplyOrNoOp::IntegerReply(300)
    );
    assert!(con.persist("t").await.unwrap());
    assert!(!con.persist("t").await.unwrap());
    assert_eq!(
        con.ttl("t").await.unwrap(),
        IntegerReplyOrNoOp::ExistsButNotRelevant
    );
    assert!(con.pexpire("t", 20).await.unwrap());
    tokio::time::sleep(std::time::Duration::from_millis(60)).await;
    assert_eq!(con.get("t").await.unwrap(), None);
    assert!(!con.exists("t").await.unwrap());

    // Whole keyspace.
    con.flushdb().await.unwrap();
    con.mset(&[("user:1", "a"), ("user:2", "b"), ("admin:1", "c")])
        .await
        .unwrap();
    assert_eq!(query::<usize>(con, "DBSIZE", &[]).await.unwrap(), 3);
    let mut users = con.keys("user:*").await.unwrap();
    users.sort();
    assert_eq!(users, ["user:1", "user:2"]);
    let info: InfoDict = query(con, "INFO", &[]).await.unwrap();
    assert!(info.get::<u64>("keyspace_hits").is_some(), "{info:?}");
    assert!(info.get::<u64>("total_commands_processed").unwrap() > 50);
    let keyspace: InfoDict = query(con, "INFO", &["keyspace"]).await.unwrap();
    let db0: String = keyspace.get("db0").unwrap();
    assert!(db0.starts_with("keys=3,"), "{db0}");
    con.flushall().await.unwrap();
    assert_eq!(query::<usize>(con, "DBSIZE", &[]).await.unwrap(), 0);
}

#[test]
fn every_command_through_the_redis_crate() {
    for engine in ENGINES {
        let server = KvsServer::start(engine);
        let addr = server.addr;
        server.block_on(async move {
            let mut con = connect(addr).await;
            every_command(&mut con).await;
            // QUIT: +OK; the multiplexed connection then reports the
            // close on the next command.
            assert_eq!(query::<String>(&mut con, "QUIT", &[]).await.unwrap(), "OK");
            assert!(con.ping().await.is_err());
        });
        server.stop();
    }
}

#[test]
fn pipelines_through_the_redis_crate() {
    for engine in ENGINES {
        let server = KvsServer::start(engine);
        let addr = server.addr;
        server.block_on(async move {
            let mut con = connect(addr).await;
            let (n, got, many, missing): (i64, Option<String>, Vec<Option<String>>, bool) =
                redis::pipe()
                    .set("a", "1")
                    .ignore()
                    .set("b", "2")
                    .ignore()
                    .incr("n", 5)
                    .get("a")
                    .mget(&["a", "b", "zz"])
                    .exists("zz")
                    .query_async(&mut con)
                    .await
                    .unwrap();
            assert_eq!(n, 5);
            assert_eq!(got.as_deref(), Some("1"));
            assert_eq!(many, vec![Some("1".into()), Some("2".into()), None]);
            assert!(!missing);

            // An error in the middle of a pipeline answers in place; the
            // commands around it run.
            let results: Vec<redis::RedisResult<String>> = redis::pipe()
                .ignore_errors()
                .set("x", "text")
                .incr("x", 1)
                .get("x")
                .query_async(&mut con)
                .await
                .unwrap();
            assert_eq!(results.len(), 3);
            assert_eq!(results[0].as_deref().ok(), Some("OK"));
            let err = results[1].as_ref().unwrap_err();
            assert!(err.to_string().contains("not an integer"), "{err}");
            assert_eq!(results[2].as_deref().ok(), Some("text"));

            // Large pipelines: 10,000 SETs, then 10,000 GETs.
            let mut set = redis::pipe();
            for i in 0..10_000 {
                set.set(format!("key:{i}"), format!("value:{i}")).ignore();
            }
            set.query_async::<()>(&mut con).await.unwrap();
            let mut get = redis::pipe();
            for i in 0..10_000 {
                get.get(format!("key:{i}"));
            }
            let values: Vec<Option<String>> = get.query_async(&mut con).await.unwrap();
            for (i, v) in values.iter().enumerate() {
                assert_eq!(v.as_deref(), Some(format!("value:{i}").as_str()));
            }
            assert_eq!(
                query::<usize>(&mut con, "DBSIZE", &[]).await.unwrap(),
                10_000 + 4
            );

            // Several multiplexed users of one connection at once.
            let tasks: Vec<_> = (0..8)
                .map(|t| {
                    let mut con = con.clone();
                    tokio::spawn(async move {
                        for i in 0..200 {
                            let key = format!("t{t}:{i}");
                            let (_, v): ((), Option<String>) = redis::pipe()
                                .set(&key, i)
                                .get(&key)
                                .query_async(&mut con)
                                .await
                                .unwrap();
                            assert_eq!(v, Some(i.to_string()));
                        }
                    })
                })
                .collect();
            for t in tasks {
                t.await.unwrap();
            }
        });
        server.stop();
    }
}

#[test]
fn scan_iterators_return_every_key_once() {
    for engine in ENGINES {
        let server = KvsServer::start(engine);
        let addr = server.addr;
        server.block_on(async move {
            let mut con = connect(addr).await;
            let mut pipe = redis::pipe();
            for i in 0..3000 {
                pipe.set(format!("user:{i}"), i).ignore();
                pipe.set(format!("item:{i}"), i).ignore();
            }
            pipe.query_async::<()>(&mut con).await.unwrap();

            let mut all = Vec::new();
            let mut iter = con.scan::<String>().await.unwrap();
            while let Some(key) = iter.next_item().await {
                all.push(key.unwrap());
            }
            drop(iter);
            assert_eq!(all.len(), 6000);
            assert_eq!(all.iter().collect::<BTreeSet<_>>().len(), 6000);

            let mut users = Vec::new();
            let mut iter = con.scan_match::<_, String>("user:1*").await.unwrap();
            while let Some(key) = iter.next_item().await {
                users.push(key.unwrap());
            }
            drop(iter);
            let want: BTreeSet<String> = (0..3000)
                .map(|i| format!("user:{i}"))
                .filter(|k| k.starts_with("user:1"))
                .collect();
            assert_eq!(users.len(), want.len(), "no key twice");
            assert_eq!(users.into_iter().collect::<BTreeSet<_>>(), want);

            let opts = redis::ScanOptions::default()
                .with_pattern("item:2?")
                .with_count(7);
            let mut items = Vec::new();
            let mut iter = con.scan_options::<String>(opts).await.unwrap();
            while let Some(key) = iter.next_item().await {
                items.push(key.unwrap());
            }
            items.sort();
            let want: Vec<String> = (20..30).map(|i| format!("item:{i}")).collect();
            assert_eq!(items, want);
        });
        server.stop();
    }
}

#[test]
fn the_redis_crate_authenticates_with_a_password_in_its_url() {
    let server = KvsServer::with_password(ENGINES[0], "sekret");
    let addr = server.addr;
    server.block_on(async move {
        for url in [
            format!("redis://:sekret@{addr}/"),
            format!("redis://default:sekret@{addr}/"),
        ] {
            let client = redis::Client::open(url.as_str()).unwrap();
            let mut con = client.get_multiplexed_async_connection().await.unwrap();
            con.set("k", "v").await.unwrap();
            assert_eq!(con.get("k").await.unwrap().as_deref(), Some("v"));
        }
        // Without the password every command but AUTH/HELLO/PING/QUIT
        // answers NOAUTH.
        let mut con = connect(addr).await;
        let err = con.get("k").await.unwrap_err();
        assert_eq!(err.code(), Some("NOAUTH"), "{err}");
        // A wrong one fails the connection as it does against Redis.
        for url in [
            format!("redis://:wrong@{addr}/"),
            format!("redis://bob:sekret@{addr}/"),
        ] {
            let client = redis::Client::open(url.as_str()).unwrap();
            let err = client.get_multiplexed_async_connection().await.unwrap_err();
            assert_eq!(
                err.kind(),
                redis::ErrorKind::AuthenticationFailed,
                "{url}: {err}"
            );
        }
    });
}
