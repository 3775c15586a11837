//! `kvs-server` and `kvs-client` as a new user runs them: spawned
//! binaries in temporary directories, real signals.

use std::net::SocketAddr;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

mod child_support;
use child_support::{SERVER, ServerChild, rss_of, server_command};

const CLIENT: &str = env!("CARGO_BIN_EXE_kvs-client");

/// How long a signalled server may take to exit.
const EXIT_LIMIT: Duration = Duration::from_secs(10);

/// A `kvs-server` child in `dir`, as a new user starts one: the test's
/// `extra` arguments and environment on top of [`server_command`].
struct Server;

impl Server {
    fn start(dir: &Path, extra: &[&str]) -> ServerChild {
        Server::start_with_env(dir, extra, &[])
    }

    fn start_with_env(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> ServerChild {
        let mut cmd = server_command();
        cmd.args(extra).envs(env.iter().copied()).current_dir(dir);
        ServerChild::spawn(cmd)
    }
}

/// `kvs-client ARGS --addr` the server.
trait ClientOf {
    fn client(&self, args: &[&str]) -> Output;
}

impl ClientOf for ServerChild {
    fn client(&self, args: &[&str]) -> Output {
        client(self.addr, args)
    }
}

fn client(addr: SocketAddr, args: &[&str]) -> Output {
    Command::new(CLIENT)
        .args(args)
        .args(["--addr", &addr.to_string()])
        .env_remove("KVS_ADDR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

fn run(bin: &str, args: &[&str], dir: &Path) -> Output {
    Command::new(bin)
        .args(args)
        .current_dir(dir)
        .env_remove("KVS_ADDR")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn session_outputs_and_exit_codes() {
    for engine in ["memory", "kvs"] {
        let dir = tempfile::tempdir().unwrap();
        let server = Server::start(dir.path(), &["--engine", engine]);

        let o = server.client(&["set", "key1", "value1"]);
        assert!(o.status.success(), "{}", stderr(&o));
        assert_eq!(stdout(&o), "");
        let o = server.client(&["get", "key1"]);
        assert_eq!((o.status.code(), stdout(&o)), (Some(0), "value1\n".into()));
        let o = server.client(&["set", "ключ", "значение с пробелами"]);
        assert!(o.status.success());
        let o = server.client(&["get", "ключ"]);
        assert_eq!(stdout(&o), "значение с пробелами\n");

        let o = server.client(&["get", "missing"]);
        assert_eq!(
            (o.status.code(), stdout(&o)),
            (Some(0), "Key not found\n".into())
        );

        let o = server.client(&["rm", "key1"]);
        assert_eq!((o.status.code(), stdout(&o)), (Some(0), String::new()));
        let o = server.client(&["rm", "key1"]);
        assert_eq!(o.status.code(), Some(1));
        assert_eq!(stdout(&o), "");
        assert_eq!(stderr(&o), "Key not found\n");
        let o = server.client(&["get", "key1"]);
        assert_eq!(stdout(&o), "Key not found\n");

        let o = server.client(&["ping"]);
        assert_eq!((o.status.code(), stdout(&o)), (Some(0), "PONG\n".into()));

        // The address also comes from KVS_ADDR.
        let o = Command::new(CLIENT)
            .args(["get", "ключ"])
            .env("KVS_ADDR", server.addr.to_string())
            .output()
            .unwrap();
        assert_eq!(stdout(&o), "значение с пробелами\n");

        server.signal(libc::SIGTERM);
        assert_eq!(server.wait_exit(EXIT_LIMIT), Some(0));
    }
}

#[test]
fn start_log_names_version_engine_dir_and_sync() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--engine", "kvs", "--sync", "always"]);
    let log = server.log();
    for needle in [
        env!("CARGO_PKG_VERSION"),
        "engine=kvs",
        "sync=always",
        &dir.path().display().to_string(),
    ] {
        assert!(log.contains(needle), "{needle} missing from {log}");
    }
    server.signal(libc::SIGINT);
    assert_eq!(server.wait_exit(EXIT_LIMIT), Some(0));
}

#[test]
fn usage_errors_fail_with_a_message() {
    let dir = tempfile::tempdir().unwrap();
    for args in [
        &[][..],
        &["get"][..],
        &["get", "a", "b"][..],
        &["set", "k"][..],
        &["set", "k", "v", "extra"][..],
        &["rm"][..],
        &["frobnicate", "k"][..],
        &["get", "k", "--addr", "not-an-address"][..],
        &["get", "k", "--addr", "localhost:4000"][..],
    ] {
        let o = run(CLIENT, args, dir.path());
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!stderr(&o).is_empty(), "{args:?}: no message");
    }
    for args in [
        &["--addr", "nope"][..],
        &["--engine", "sled"][..],
        &["--sync", "sometimes"][..],
        &["--threads", "x"][..],
        &["extra"][..],
    ] {
        let o = run(SERVER, args, dir.path());
        assert!(!o.status.success(), "{args:?} succeeded");
        assert!(!stderr(&o).is_empty());
    }
}

#[test]
fn version_flags() {
    let dir = tempfile::tempdir().unwrap();
    for bin in [SERVER, CLIENT] {
        for flag in ["-V", "--version"] {
            let o = run(bin, &[flag], dir.path());
            assert!(o.status.success());
            assert!(stdout(&o).contains(env!("CARGO_PKG_VERSION")));
        }
    }
}

#[test]
fn unreachable_server_is_a_clear_error() {
    // A port nothing listens on: bound, then released.
    let addr = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let o = client(addr, &["get", "k"]);
    assert_eq!(o.status.code(), Some(1));
    let err = stderr(&o);
    assert!(err.contains("cannot connect"), "{err}");
    assert_eq!(err.lines().count(), 1, "{err}");
}

/// Startup failures: one line on stderr, non-zero exit, no panic.
#[test]
fn startup_failures_are_one_line_errors() {
    let dir = tempfile::tempdir().unwrap();
    let check = |o: Output, needle: &str| {
        let err = stderr(&o);
        assert_eq!(o.status.code(), Some(1), "{err}");
        assert!(err.contains(needle), "{needle} not in {err}");
        assert_eq!(err.lines().count(), 1, "{err}");
        assert!(!err.contains("panicked"));
    };

    // Port in use.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap().to_string();
    let o = run(
        SERVER,
        &["--engine", "memory", "--addr", &addr, "--log-level", "off"],
        dir.path(),
    );
    check(o, "cannot listen");

    // The data directory is a file.
    let file = dir.path().join("file");
    std::fs::write(&file, "x").unwrap();
    let o = run(
        SERVER,
        &["--dir", file.to_str().unwrap(), "--log-level", "off"],
        dir.path(),
    );
    check(o, "data directory");

    // Another engine is recorded: refused before binding (the port stays
    // free for the next step).
    let data = tempfile::tempdir().unwrap();
    let server = Server::start(data.path(), &["--engine", "memory"]);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(EXIT_LIMIT), Some(0));
    let o = run(
        SERVER,
        &["--engine", "kvs", "--addr", &addr, "--log-level", "off"],
        data.path(),
    );
    check(o, "memory");

    // A data directory locked by a running server.
    let locked = tempfile::tempdir().unwrap();
    let first = Server::start(locked.path(), &["--engine", "kvs"]);
    let o = run(
        SERVER,
        &["--addr", "127.0.0.1:0", "--log-level", "off"],
        locked.path(),
    );
    check(o, "locked");
    first.signal(libc::SIGTERM);
    assert_eq!(first.wait_exit(EXIT_LIMIT), Some(0));

    // No I/O threads.
    let o = run(
        SERVER,
        &[
            "--io-threads",
            "0",
            "--addr",
            "127.0.0.1:0",
            "--log-level",
            "off",
        ],
        dir.path(),
    );
    check(o, "--io-threads");
}

#[test]
fn sigterm_exits_zero_and_keeps_data() {
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--sync", "never"]);
    for i in 0..50 {
        let o = server.client(&["set", &format!("k{i}"), &format!("v{i}")]);
        assert!(o.status.success());
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(EXIT_LIMIT), Some(0));

    let server = Server::start(dir.path(), &[]);
    for i in 0..50 {
        let o = server.client(&["get", &format!("k{i}")]);
        assert_eq!(stdout(&o), format!("v{i}\n"));
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(EXIT_LIMIT), Some(0));
}

/// SIGKILL while clients write; after a restart, every write whose
/// `kvs-client set` exited 0 is there.
#[test]
fn sigkill_during_writes_keeps_acknowledged_writes() {
    let dir = tempfile::tempdir().unwrap();
    let mut server = Server::start(dir.path(), &[]);
    let addr = server.addr;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let writers: Vec<_> = (0..3)
        .map(|w| {
            let acked = acked.clone();
            thread::spawn(move || {
                for i in 0..10_000 {
                    let (k, v) = (format!("w{w}-{i}"), format!("value-{w}-{i}"));
                    if !client(addr, &["set", &k, &v]).status.success() {
                        break;
                    }
                    acked.lock().unwrap().push((k, v));
                }
            })
        })
        .collect();
    let start = Instant::now();
    while acked.lock().unwrap().len() < 60 {
        assert!(start.elapsed() < Duration::from_secs(60), "writes stalled");
        thread::sleep(Duration::from_millis(10));
    }
    server.child.kill().unwrap(); // SIGKILL, by PID
    server.child.wait().unwrap();
    for w in writers {
        w.join().unwrap();
    }
    drop(server);

    let server = Server::start(dir.path(), &[]);
    let acked = acked.lock().unwrap().clone();
    assert!(acked.len() >= 60);
    for (k, v) in &acked {
        let o = server.client(&["get", k]);
        assert_eq!(stdout(&o), format!("{v}\n"), "lost {k}");
    }
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(EXIT_LIMIT), Some(0));
}

/// Every server flag also reads an environment variable (containers).
#[test]
fn server_flags_read_environment_variables() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    let server = Server::start_with_env(
        dir.path(),
        &[],
        &[
            ("KVS_ENGINE", "memory"),
            ("KVS_DIR", data.to_str().unwrap()),
            ("KVS_SYNC", "never"),
            ("KVS_THREADS", "3"),
            ("KVS_MAX_CONNECTIONS", "1"),
        ],
    );
    let log = server.log();
    for needle in ["engine=memory", "sync=never", "threads=3", "data"] {
        assert!(log.contains(needle), "{needle} missing from {log}");
    }
    assert_eq!(
        std::fs::read_to_string(data.join("engine")).unwrap(),
        "memory\n"
    );
    // KVS_MAX_CONNECTIONS=1: one client at a time, the next is refused.
    let o = server.client(&["ping"]);
    assert!(o.status.success());
    let held = std::net::TcpStream::connect(server.addr).unwrap();
    let mut refused = false;
    for _ in 0..100 {
        let o = server.client(&["ping"]);
        if !o.status.success() {
            assert!(
                stderr(&o).contains("too many connections"),
                "{}",
                stderr(&o)
            );
            refused = true;
            break;
        }
        thread::sleep(Duration::from_millis(20));
    }
    assert!(refused);
    drop(held);
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(EXIT_LIMIT), Some(0));
}

/// Every numeric flag at and past its edges: a clear one-line startup
/// error, never an accepted value that later overflows (an idle timeout of
/// u64::MAX seconds used to panic every connection).
#[test]
fn numeric_flag_edges_are_startup_errors() {
    let dir = tempfile::tempdir().unwrap();
    let year = (365u64 * 24 * 3600).to_string();
    let over_year = (365u64 * 24 * 3600 + 1).to_string();
    for (flag, value, ok) in [
        ("--idle-timeout", "18446744073709551615", false),
        ("--idle-timeout", over_year.as_str(), false),
        ("--idle-timeout", "0", false),
        ("--idle-timeout", "-1", false),
        ("--idle-timeout", year.as_str(), true),
        ("--max-connections", "0", false),
        ("--max-connections", "18446744073709551615", false),
        ("--threads", "0", false),
        ("--threads", "4294967296", false),
        ("--io-threads", "0", false),
    ] {
        if ok {
            let server = Server::start(dir.path(), &["--engine", "memory", flag, value]);
            assert_eq!(server.client(&["ping"]).status.code(), Some(0));
            server.signal(libc::SIGTERM);
            assert_eq!(server.wait_exit(EXIT_LIMIT), Some(0));
            continue;
        }
        let o = run(
            SERVER,
            &[
                "--engine",
                "memory",
                "--addr",
                "127.0.0.1:0",
                "--log-level",
                "off",
                flag,
                value,
            ],
            dir.path(),
        );
        let err = stderr(&o);
        assert_ne!(o.status.code(), Some(0), "{flag} {value} accepted");
        assert!(!err.contains("panicked"), "{flag} {value}: {err}");
        assert!(!err.trim().is_empty(), "{flag} {value}: no message");
    }
}

/// The password comes from a file (a Docker secret) and is required.
#[test]
fn requirepass_file_is_enforced() {
    let dir = tempfile::tempdir().unwrap();
    let secret = dir.path().join("secret");
    std::fs::write(&secret, "hunter2\n").unwrap();
    let server = Server::start_with_env(
        dir.path(),
        &["--engine", "memory"],
        &[("KVS_REQUIREPASS_FILE", secret.to_str().unwrap())],
    );
    let o = server.client(&["get", "a"]);
    assert_ne!(o.status.code(), Some(0));
    assert!(stderr(&o).to_lowercase().contains("auth"), "{}", stderr(&o));
    server.signal(libc::SIGTERM);
    assert_eq!(server.wait_exit(EXIT_LIMIT), Some(0));
}

/// Under a low open-file limit the default connection cap follows it, so
/// clients past it are refused with an answer instead of hanging while
/// `accept` fails.
#[test]
fn connection_cap_follows_the_open_file_limit() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = server_command();
    cmd.args(["--engine", "memory"]).current_dir(dir.path());
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between
    // fork and exec.
    unsafe {
        cmd.pre_exec(|| {
            let lim = libc::rlimit {
                rlim_cur: 128,
                rlim_max: 128,
            };
            if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let server = ServerChild::spawn(cmd);
    let addr = server.addr;
    // 200 connections against a limit of 128 descriptors: each one is
    // either served or refused with an error, within a bounded wait.
    let mut held = Vec::new();
    let (mut served, mut refused) = (0, 0);
    for _ in 0..200 {
        use std::io::{Read, Write};
        let mut s = std::net::TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        // A native Ping frame: length 2, version 1, variant 0.
        s.write_all(&[0, 0, 0, 2, 1, 0]).unwrap();
        let mut head = [0u8; 6];
        s.read_exact(&mut head)
            .expect("no answer: the client hangs");
        if head == [0, 0, 0, 2, 1, 0] {
            served += 1;
        } else {
            refused += 1;
        }
        held.push(s);
    }
    drop(server);
    assert!(
        served > 0 && refused > 0,
        "served {served} refused {refused}"
    );
    assert!(served <= 128 - 64, "served {served}");
}

/// 40 connections each send 12 MiB of a 16 MiB frame and stall: the
/// server's RSS stays under its input budget (256 MiB) plus its baseline
/// while they hold it, and comes back down once they leave (large buffers
/// are returned to the OS, not kept by the allocator).
#[test]
fn partial_frames_memory_is_bounded_and_returned() {
    use std::io::Write;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(dir.path(), &["--engine", "memory"]);
    let pid = server.child.id();
    assert_eq!(server.client(&["ping"]).status.code(), Some(0));
    let baseline = rss_of(pid);
    let body = vec![7u8; 12 << 20];
    let (tx, rx) = mpsc::channel();
    let mut senders = Vec::new();
    for _ in 0..40 {
        let addr = server.addr;
        let body = body.clone();
        let tx = tx.clone();
        senders.push(thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).unwrap();
            s.set_write_timeout(Some(Duration::from_secs(3))).unwrap();
            let _ = s.write_all(&[1, 0, 0, 0, 1]); // 16 MiB declared, version 1
            let _ = s.write_all(&body); // stalls once the server stops reading
            let _ = tx.send(());
            thread::sleep(Duration::from_secs(2));
            drop(s);
        }));
    }
    for _ in 0..40 {
        rx.recv_timeout(Duration::from_secs(30)).unwrap();
    }
    let held = rss_of(pid);
    for s in senders {
        s.join().unwrap();
    }
    // The server notices the closed connections and frees their buffers.
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut after = rss_of(pid);
    while after > baseline + (48 << 20) && Instant::now() < deadline {
        thread::sleep(Duration::from_millis(100));
        after = rss_of(pid);
    }
    println!(
        "RSS: baseline {} MiB, holding 40 x 12 MiB partial frames {} MiB, after {} MiB",
        baseline >> 20,
        held >> 20,
        after >> 20
    );
    assert!(
        held < baseline + (256 << 20) + (40 << 16) + (32 << 20),
        "held {} MiB",
        held >> 20
    );
    assert!(after < baseline + (48 << 20), "after {} MiB", after >> 20);
    assert_eq!(server.client(&["ping"]).status.code(), Some(0));
}
