//! Shared by the `bench_*` tests: tiny responders for `kvs-bench` to load
//! that misbehave on purpose or speak RESP. The real kvs server in-process
//! is `server_support::TestServer`.
#![allow(dead_code)] // each test file uses a different subset

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kvs::protocol::{ErrorKind, FrameCodec, Response, encode_frame};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio_util::codec::Decoder;

/// A responder on 127.0.0.1:0 that runs `serve` for every connection, until
/// the test ends (its runtime drops the tasks).
pub async fn responder<F, Fut>(serve: F) -> SocketAddr
where
    F: Fn(TcpStream) -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            tokio::spawn(serve(stream));
        }
    });
    addr
}

/// Speaks the kvs framing and answers every request with an error
/// response; after `close_after` requests (if given) it closes instead.
pub async fn kvs_error_responder(mut stream: TcpStream, close_after: Option<usize>) {
    let mut codec = FrameCodec::new(1 << 24);
    let mut rbuf = BytesMut::new();
    let mut wbuf = BytesMut::new();
    let error = Response::Error {
        kind: ErrorKind::Server,
        message: "injected failure".into(),
    };
    let mut answered = 0;
    loop {
        while let Ok(Some(_frame)) = codec.decode(&mut rbuf) {
            if close_after.is_some_and(|n| answered >= n) {
                return;
            }
            encode_frame(&error, 1 << 24, &mut wbuf).unwrap();
            answered += 1;
        }
        if stream.write_all_buf(&mut wbuf).await.is_err() {
            return;
        }
        match stream.read_buf(&mut rbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A tiny RESP2 server: SET and GET on a private map, anything else (or
/// everything, with `fail`) answered `-ERR`.
pub async fn resp_responder(stream: TcpStream, fail: bool) {
    let (rd, mut wr) = stream.into_split();
    let mut rd = BufReader::new(rd);
    let mut map: HashMap<Vec<u8>, Vec<u8>> = HashMap::new();
    let mut line = String::new();
    let mut out = Vec::new();
    loop {
        // One command: *N CRLF, then N bulk strings.
        line.clear();
        match rd.read_line(&mut line).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let Some(n) = line
            .trim_end()
            .strip_prefix('*')
            .and_then(|n| n.parse().ok())
        else {
            return;
        };
        let mut args: Vec<Vec<u8>> = Vec::with_capacity(n);
        for _ in 0..n {
            line.clear();
            if rd.read_line(&mut line).await.is_err() {
                return;
            }
            let Some(len) = line
                .trim_end()
                .strip_prefix('$')
                .and_then(|n| n.parse::<usize>().ok())
            else {
                return;
            };
            let mut arg = vec![0; len + 2];
            if rd.read_exact(&mut arg).await.is_err() {
                return;
            }
            arg.truncate(len);
            args.push(arg);
        }
        match (fail, args.as_slice()) {
            (false, [cmd, key, value]) if cmd.eq_ignore_ascii_case(b"SET") => {
                map.insert(key.clone(), value.clone());
                out.extend_from_slice(b"+OK\r\n");
            }
            (false, [cmd, key]) if cmd.eq_ignore_ascii_case(b"GET") => match map.get(key) {
                Some(v) => {
                    out.extend_from_slice(format!("${}\r\n", v.len()).as_bytes());
                    out.extend_from_slice(v);
                    out.extend_from_slice(b"\r\n");
                }
                None => out.extend_from_slice(b"$-1\r\n"),
            },
            _ => out.extend_from_slice(b"-ERR injected failure\r\n"),
        }
        // Answer once the pipelined commands that have arrived are read.
        if rd.buffer().is_empty() {
            if wr.write_all(&out).await.is_err() {
                return;
            }
            out.clear();
        }
    }
}

/// A `redis-server` started by this test on a free loopback port, killed
/// (by its PID) when dropped.
pub struct Redis {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl Redis {
    /// Starts one, or, when `redis-server` is not installed, says
    /// `SKIPPED` where `cargo test` shows it (straight to the process's
    /// stderr, which the test harness does not capture) and returns `None`;
    /// under `CI=true` a missing `redis-server` fails the test instead.
    pub fn start_or_skip(test: &str) -> Option<Redis> {
        let redis = Redis::start();
        if redis.is_none() {
            let message = format!("SKIPPED: {test}: redis-server is not installed");
            if std::env::var("CI").is_ok_and(|v| v == "true") {
                panic!("{message} (CI=true: it must be)");
            }
            let _ = writeln!(std::io::stderr(), "{message}");
        }
        redis
    }

    fn start() -> Option<Redis> {
        let installed = Command::new("redis-server")
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success());
        if !installed {
            return None;
        }
        // A free port: bind port 0, note it, release it.
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &addr.port().to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        // SIGKILL when the starting thread ends: never outlives the test.
        // SAFETY: prctl is async-signal-safe; nothing else runs between
        // fork and exec.
        unsafe {
            std::os::unix::process::CommandExt::pre_exec(&mut cmd, || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let child = cmd.spawn().unwrap();
        let redis = Redis {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        Some(redis)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Speaks the kvs framing and answers every request `Value(None)` (a GET
/// miss) after sleeping `delay`, one request at a time: a server with a
/// known capacity of `1 / delay` requests per second per connection.
pub async fn kvs_slow_responder(mut stream: TcpStream, delay: Duration) {
    let mut codec = FrameCodec::new(1 << 24);
    let mut rbuf = BytesMut::new();
    let mut wbuf = BytesMut::new();
    loop {
        while let Ok(Some(_frame)) = codec.decode(&mut rbuf) {
            tokio::time::sleep(delay).await;
            encode_frame(&Response::Value(None), 1 << 24, &mut wbuf).unwrap();
            if stream.write_all_buf(&mut wbuf).await.is_err() {
                return;
            }
        }
        match stream.read_buf(&mut rbuf).await {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
    }
}

/// A `kvs-server` child process on a free loopback port, with the memory
/// engine; killed (by its PID) when dropped. [`KvsChild::pause`] stops it
/// with SIGSTOP for a while, as a stalled server.
pub struct KvsChild {
    child: Child,
    pub addr: SocketAddr,
    _dir: tempfile::TempDir,
}

impl KvsChild {
    pub fn start() -> KvsChild {
        let addr = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(env!("CARGO_BIN_EXE_kvs-server"))
            .args(["--addr", &addr.to_string(), "--engine", "memory"])
            .args(["--log-level", "warn"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let server = KvsChild {
            child,
            addr,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(addr).is_err() {
            assert!(Instant::now() < deadline, "kvs-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
        server
    }

    /// SIGSTOP now, SIGCONT after `stall`.
    pub async fn pause(&self, stall: Duration) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on the PID of a child this test started and has
        // not reaped (it is reaped only in Drop).
        assert_eq!(unsafe { libc::kill(pid, libc::SIGSTOP) }, 0);
        tokio::time::sleep(stall).await;
        // SAFETY: as above.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGCONT) }, 0);
    }
}

impl Drop for KvsChild {
    fn drop(&mut self) {
        // SAFETY: as in `pause`; a stopped child must be continued to die
        // of a later signal promptly. SIGKILL works on a stopped process,
        // but SIGCONT first keeps the order obvious.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGCONT) };
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
