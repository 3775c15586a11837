//! Redis's own tools against kvs, as child processes: `redis-cli` as a
//! user drives it (one-shot commands, `--scan`, `info`, `--pipe` mass
//! insert, `-a`) and `redis-benchmark` with and without pipelining,
//! which must report no error.
//!
//! Where the output is deterministic, `redis-cli`'s output against kvs is
//! compared with its output against a real `redis-server`.

mod child_support;
mod resp_server_support;
mod resp_support;

use std::collections::BTreeSet;
use std::io::Write;
use std::process::{Command, Output, Stdio};

use resp_server_support::{ENGINES, Engine, KvsServer};

/// Whether the redis-tools binary `tool` runs (SKIPPED if not; CI installs it).
fn tool_installed(test: &str, tool: &str) -> bool {
    child_support::tool_installed(test, tool, "redis-tools")
}
use resp_support::{RedisServer, cmd, multibulk};

/// `redis-cli -p port args...`.
fn cli(port: u16, args: &[&str]) -> Output {
    Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-cli")
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// What a user sees: exit status, stdout and stderr.
fn seen(out: &Output) -> (Option<i32>, String, String) {
    (
        out.status.code(),
        stdout(out),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn redis_cli_drives_kvs_as_it_drives_redis() {
    if !tool_installed("redis_cli_drives_kvs", "redis-cli") {
        return;
    }
    let Some(redis) = RedisServer::start("redis_cli_drives_kvs", None) else {
        return;
    };
    for engine in ENGINES {
        let kvs = KvsServer::start(engine);
        let mut theirs = redis.connect();
        theirs.call(&cmd("FLUSHALL"));
        let sessions: &[&[&str]] = &[
            &["set", "a", "1"],
            &["get", "a"],
            &["incr", "n"],
            &["incr", "n"],
            &["incrby", "n", "40"],
            &["get", "missing"],
            &["set", "b", "hello world"],
            &["mget", "a", "b", "missing"],
            &["mset", "x", "1", "y", "2"],
            &["exists", "a", "x", "nope"],
            &["append", "a", "23"],
            &["strlen", "a"],
            &["expire", "a", "100"],
            &["ttl", "a"],
            &["persist", "a"],
            &["del", "x", "y"],
            &["dbsize"],
            &["ping"],
            &["echo", "hi there"],
            &["select", "1"],
            &["incr", "b"],
            &["nosuchcommand", "x"],
            &["get"],
            &["config", "get", "save"],
            &["--no-raw", "get", "a"],
            &["--no-raw", "incr", "n"],
            &["--no-raw", "mget", "a", "missing"],
            &["--no-raw", "incr", "b"],
            &["--csv", "mget", "a", "b"],
            &["-r", "3", "incr", "r"],
            &["flushdb"],
            &["dbsize"],
        ];
        for args in sessions {
            let ours = seen(&cli(kvs.port(), args));
            let want = seen(&cli(redis.addr.port(), args));
            assert_eq!(ours, want, "{engine:?}: redis-cli {args:?}");
        }
        // Commands typed on stdin, one a line.
        let script = "set k v\nget k\nincr c\nincr c\ndel k\nget k\n";
        let run = |port: u16| {
            let mut child = Command::new("redis-cli")
                .args(["-p", &port.to_string()])
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .spawn()
                .unwrap();
            child
                .stdin
                .take()
                .unwrap()
                .write_all(script.as_bytes())
                .unwrap();
            stdout(&child.wait_with_output().unwrap())
        };
        assert_eq!(run(kvs.port()), run(redis.addr.port()));
        kvs.stop();
    }
}

#[test]
fn redis_cli_scan_and_info() {
    if !tool_installed("redis_cli_scan_and_info", "redis-cli") {
        return;
    }
    for engine in ENGINES {
        let kvs = KvsServer::start(engine);
        let mut conn = kvs.connect();
        let mut batch = Vec::new();
        for i in 0..2500 {
            batch.extend(cmd(&format!("SET user:{i} {i}")));
            batch.extend(cmd(&format!("SET item:{i} {i}")));
        }
        conn.send(&batch).unwrap();
        for _ in 0..5000 {
            assert_eq!(conn.reply().unwrap(), b"+OK\r\n");
        }
        let out = cli(kvs.port(), &["--scan"]);
        assert!(out.status.success());
        let keys: Vec<String> = stdout(&out).lines().map(str::to_owned).collect();
        assert_eq!(keys.len(), 5000, "every key once");
        assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), 5000);

        let out = cli(kvs.port(), &["--scan", "--pattern", "user:12*"]);
        let got: BTreeSet<String> = stdout(&out).lines().map(str::to_owned).collect();
        let want: BTreeSet<String> = (0..2500)
            .map(|i| format!("user:{i}"))
            .filter(|k| k.starts_with("user:12"))
            .collect();
        assert_eq!(got, want);
        let out = cli(kvs.port(), &["--scan", "--pattern", "item:*"]);
        assert_eq!(stdout(&out).lines().count(), 2500);

        let out = cli(kvs.port(), &["info"]);
        assert!(out.status.success());
        let info = stdout(&out);
        for want in [
            "# Server",
            &format!("tcp_port:{}", kvs.port()),
            "# Clients",
            "# Memory",
            "# Stats",
            "# Keyspace",
            "db0:keys=5000,",
        ] {
            assert!(
                info.contains(want),
                "{engine:?}: info lacks {want}:\n{info}"
            );
        }
        let out = cli(kvs.port(), &["info", "keyspace"]);
        assert!(stdout(&out).contains("db0:keys=5000,"));
        kvs.stop();
    }
}

/// `count` SET commands in RESP, as `redis-cli --pipe` wants them.
fn mass_insert(count: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(count * 48);
    for i in 0..count {
        let key = format!("key:{i}");
        let value = format!("value:{i}");
        out.extend(multibulk(&[b"SET", key.as_bytes(), value.as_bytes()]));
    }
    out
}

#[test]
fn redis_cli_pipe_mass_inserts_100000_keys() {
    if !tool_installed("redis_cli_pipe", "redis-cli") {
        return;
    }
    const KEYS: usize = 100_000;
    let input = mass_insert(KEYS);
    for engine in ENGINES {
        let kvs = KvsServer::start(engine);
        let mut child = Command::new("redis-cli")
            .args(["-p", &kvs.port().to_string(), "--pipe"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let mut stdin = child.stdin.take().unwrap();
        let feed = {
            let input = input.clone();
            std::thread::spawn(move || stdin.write_all(&input).unwrap())
        };
        let out = child.wait_with_output().unwrap();
        feed.join().unwrap();
        let text = stdout(&out);
        assert!(out.status.success(), "{engine:?}: {text}");
        assert!(
            text.contains(&format!("errors: 0, replies: {KEYS}")),
            "{engine:?}: {text}"
        );
        let mut conn = kvs.connect();
        assert_eq!(
            conn.call(&cmd("DBSIZE")),
            format!(":{KEYS}\r\n").into_bytes()
        );
        assert_eq!(conn.call(&cmd("GET key:99999")), b"$11\r\nvalue:99999\r\n");
        assert_eq!(conn.call(&cmd("GET key:0")), b"$7\r\nvalue:0\r\n");
        kvs.stop();
    }
}

#[test]
fn redis_cli_authenticates_with_a() {
    if !tool_installed("redis_cli_a", "redis-cli") {
        return;
    }
    let Some(redis) = RedisServer::start("redis_cli_a", Some("sekret")) else {
        return;
    };
    let kvs = KvsServer::with_password(Engine::Memory, "sekret");
    let sessions: &[&[&str]] = &[
        &["set", "a", "1"],
        &["-a", "sekret", "--no-auth-warning", "set", "a", "1"],
        &["-a", "sekret", "--no-auth-warning", "get", "a"],
        &["-a", "wrong", "--no-auth-warning", "get", "a"],
        &[
            "--user",
            "default",
            "--pass",
            "sekret",
            "--no-auth-warning",
            "incr",
            "n",
        ],
        &[
            "--user",
            "bob",
            "--pass",
            "sekret",
            "--no-auth-warning",
            "incr",
            "n",
        ],
        &[
            "-a",
            "sekret",
            "--no-auth-warning",
            "--no-raw",
            "get",
            "nope",
        ],
        &["ping"],
        &["get", "a"],
    ];
    for args in sessions {
        let ours = seen(&cli(kvs.port(), args));
        let want = seen(&cli(redis.addr.port(), args));
        assert_eq!(ours, want, "redis-cli {args:?}");
    }
    // The password from the environment, as redis-cli documents.
    let out = Command::new("redis-cli")
        .args(["-p", &kvs.port().to_string(), "get", "a"])
        .env("REDISCLI_AUTH", "sekret")
        .output()
        .unwrap();
    assert_eq!(stdout(&out), "1\n");
    // --pipe with a password.
    let mut child = Command::new("redis-cli")
        .args([
            "-p",
            &kvs.port().to_string(),
            "-a",
            "sekret",
            "--no-auth-warning",
            "--pipe",
        ])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(&mass_insert(1000))
        .unwrap();
    let out = child.wait_with_output().unwrap();
    assert!(
        stdout(&out).contains("errors: 0, replies: 1000"),
        "{}",
        stdout(&out)
    );
}

/// Runs redis-benchmark and returns the tests it reported, after checking
/// that it reported no error of any kind (redis-benchmark 7 stops at the
/// first error reply, so an error also shows as a missing test).
fn benchmark(port: u16, extra: &[&str]) -> Vec<String> {
    let out = Command::new("redis-benchmark")
        .args(["-p", &port.to_string()])
        .args([
            "-t",
            "ping,set,get,incr,mset",
            "-n",
            "2000",
            "-c",
            "10",
            "-q",
        ])
        .args(extra)
        .stdin(Stdio::null())
        .output()
        .expect("run redis-benchmark");
    let (code, stdout, stderr) = seen(&out);
    let all = format!("{stdout}\n{stderr}");
    assert_eq!(code, Some(0), "{all}");
    for bad in ["rror", "WARN", "nvalid", "refused", "closed"] {
        assert!(
            !all.contains(bad),
            "redis-benchmark {extra:?} said {bad:?}:\n{all}"
        );
    }
    // `-q` prints one line per test: "SET: 1234.56 requests per second,
    // p50=...", with carriage-return progress lines before it.
    let tests: Vec<String> = stdout
        .split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
        .map(|l| l.split(':').next().unwrap().trim().to_owned())
        .collect();
    for line in stdout
        .split(['\r', '\n'])
        .filter(|l| l.contains("requests per second"))
    {
        let rps: f64 = line
            .split(':')
            .nth(1)
            .unwrap()
            .split_whitespace()
            .next()
            .unwrap()
            .parse()
            .unwrap();
        assert!(rps > 0.0, "{line}");
    }
    tests
}

#[test]
fn redis_benchmark_reports_no_errors() {
    if !tool_installed("redis_benchmark", "redis-benchmark") {
        return;
    }
    for engine in ENGINES {
        let kvs = KvsServer::start(engine);
        let want = [
            "PING_INLINE",
            "PING_MBULK",
            "SET",
            "GET",
            "INCR",
            "MSET (10 keys)",
        ];
        for (run, extra) in [&[][..], &["-P", "16"]].iter().enumerate() {
            let tests = benchmark(kvs.port(), extra);
            assert_eq!(tests, want, "{engine:?} {extra:?}");
            // Every INCR of the fixed key arrived and counted once.
            let mut conn = kvs.connect();
            let n = 2000 * (run + 1);
            assert_eq!(
                conn.call(&cmd("GET counter:__rand_int__")),
                format!("${}\r\n{n}\r\n", n.to_string().len()).into_bytes(),
                "{engine:?} {extra:?}"
            );
        }
        kvs.stop();
    }
    // With a password, random keys over a keyspace and 100-byte values.
    let kvs = KvsServer::with_password(Engine::Memory, "sekret");
    let tests = benchmark(kvs.port(), &["-a", "sekret", "-r", "1000", "-d", "100"]);
    assert_eq!(tests.len(), 6);
    let mut conn = kvs.connect();
    conn.call(&cmd("AUTH sekret"));
    let size = conn.call(&cmd("DBSIZE"));
    assert!(size.starts_with(b":") && size != b":0\r\n");
}
