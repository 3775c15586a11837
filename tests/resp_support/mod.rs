//! Shared by the RESP test files: a real `redis-server` child to compare
//! against, a raw-socket connection that reads whole RESP replies as
//! bytes, a RESP reply splitter, and [`Kvs`]: the command layer run in
//! process (decoder, `dispatch`, `execute`) the way a connection runs it.
//!
//! A test that needs `redis-server` calls [`RedisServer::start`]; when the
//! binary is absent it prints `SKIPPED: ...` and gets `None`, except under
//! `CI=true`, where the absence is a failure (CI installs it).
#![allow(dead_code)] // each test file uses a different subset

pub mod scripts;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::BytesMut;
use kvs::KvsEngine;
use kvs::command::{ServerContext, Session, Step, dispatch};
use kvs::protocol::resp::{Limits, RespDecoder};

/// A `redis-server` child on a free loopback port, without persistence and
/// with one database (as kvs has), killed on drop.
pub struct RedisServer {
    pub addr: SocketAddr,
    child: Child,
}

impl RedisServer {
    /// Starts one; `requirepass` sets a password. `None` (after printing
    /// `SKIPPED`) when `redis-server` is not installed and CI is not set.
    pub fn start(test: &str, requirepass: Option<&str>) -> Option<RedisServer> {
        let found = Command::new("redis-server")
            .arg("--version")
            .stdout(Stdio::null())
            .status()
            .is_ok();
        if !found {
            if std::env::var("CI").as_deref() == Ok("true") {
                panic!("{test}: redis-server is not installed (CI installs redis-server)");
            }
            // Straight to stderr: cargo test shows it without --nocapture.
            let _ = writeln!(
                std::io::stderr(),
                "SKIPPED: {test}: redis-server is not installed"
            );
            return None;
        }
        let port = free_port();
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--databases", "1"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(pass) = requirepass {
            cmd.args(["--requirepass", pass]);
        }
        die_with_parent(&mut cmd);
        let child = cmd.spawn().expect("start redis-server");
        let server = RedisServer {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            child,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            if let Ok(mut conn) = RawConn::connect(server.addr) {
                // Any reply (PONG or NOAUTH) means it is serving.
                if conn.send(b"*1\r\n$4\r\nPING\r\n").is_ok() && conn.reply().is_ok() {
                    return Some(server);
                }
            }
            assert!(
                Instant::now() < deadline,
                "redis-server did not start on {port}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn connect(&self) -> RawConn {
        RawConn::connect(self.addr).expect("connect to redis-server")
    }
}

/// Makes the child get SIGKILL when the thread that started it ends, so a
/// server kept for a whole test binary (a `static`, never dropped) or left
/// by a test that was killed does not outlive it.
pub fn die_with_parent(cmd: &mut Command) {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe; nothing else runs between fork
    // and exec.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A port nobody listened on a moment ago.
pub fn free_port() -> u16 {
    let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
    listener.local_addr().expect("local addr").port()
}

/// Encodes a command as a multibulk request.
pub fn multibulk(args: &[&[u8]]) -> Vec<u8> {
    let mut out = format!("*{}\r\n", args.len()).into_bytes();
    for a in args {
        out.extend_from_slice(format!("${}\r\n", a.len()).as_bytes());
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
    out
}

/// Splits `line` on spaces into a multibulk request.
pub fn cmd(line: &str) -> Vec<u8> {
    let args: Vec<&[u8]> = line.split(' ').map(str::as_bytes).collect();
    multibulk(&args)
}

/// The length of the first whole RESP2 reply in `buf`, `None` if it is
/// not all there. Panics on bytes that are not RESP2.
pub fn reply_len(buf: &[u8]) -> Option<usize> {
    let line_end = |from: usize| {
        buf[from..]
            .windows(2)
            .position(|w| w == b"\r\n")
            .map(|p| from + p)
    };
    let end = line_end(0)?;
    let head = std::str::from_utf8(&buf[1..end]).expect("RESP header is text");
    match buf[0] {
        b'+' | b'-' | b':' => Some(end + 2),
        b'$' => {
            let len: i64 = head.parse().expect("bulk length");
            if len < 0 {
                return Some(end + 2);
            }
            let total = end + 2 + len as usize + 2;
            (buf.len() >= total).then_some(total)
        }
        b'*' => {
            let count: i64 = head.parse().expect("array count");
            let mut at = end + 2;
            for _ in 0..count.max(0) {
                at += reply_len(&buf[at..])?;
            }
            Some(at)
        }
        other => panic!("not a RESP2 reply: {:?}", other as char),
    }
}

/// A raw TCP connection that reads whole replies.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
}

impl RawConn {
    pub fn connect(addr: SocketAddr) -> std::io::Result<RawConn> {
        let stream = TcpStream::connect(addr)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        stream.set_nodelay(true)?;
        Ok(RawConn {
            stream,
            buf: Vec::new(),
        })
    }

    pub fn send(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        self.stream.write_all(bytes)
    }

    /// The next whole reply's bytes.
    pub fn reply(&mut self) -> std::io::Result<Vec<u8>> {
        loop {
            if !self.buf.is_empty()
                && let Some(len) = reply_len(&self.buf)
            {
                return Ok(self.buf.drain(..len).collect());
            }
            let mut chunk = [0u8; 16 << 10];
            let n = self.stream.read(&mut chunk)?;
            if n == 0 {
                return Err(std::io::ErrorKind::UnexpectedEof.into());
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Sends `request` and returns the one reply to it.
    pub fn call(&mut self, request: &[u8]) -> Vec<u8> {
        self.send(request).expect("send");
        self.reply().expect("reply")
    }

    /// Everything the peer sends until it closes (`None` if it is still
    /// open after the read timeout). A reset counts as a close: a peer
    /// that closes with request bytes still unread resets the connection.
    pub fn read_to_close(&mut self) -> Option<Vec<u8>> {
        let mut out = std::mem::take(&mut self.buf);
        let mut chunk = [0u8; 16 << 10];
        loop {
            match self.stream.read(&mut chunk) {
                Ok(0) => return Some(out),
                Ok(n) => out.extend_from_slice(&chunk[..n]),
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => return Some(out),
                Err(_) => return None,
            }
        }
    }

    /// Half-closes: the peer reads EOF after what was sent. A peer that
    /// already closed the connection (it refused the request) makes this
    /// fail with NotConnected, which is no error here.
    pub fn shutdown_write(&mut self) {
        let _ = self.stream.shutdown(std::net::Shutdown::Write);
    }

    /// Another handle to the socket (a writer thread's).
    pub fn try_clone_stream(&self) -> TcpStream {
        self.stream.try_clone().expect("clone socket")
    }

    /// Changes the read timeout (e.g. short, to show a peer stays open).
    pub fn set_read_timeout(&mut self, timeout: Duration) {
        self.stream
            .set_read_timeout(Some(timeout))
            .expect("set timeout");
    }
}

/// One connection's worth of kvs, in process.
pub struct Kvs<E: KvsEngine> {
    pub engine: E,
    pub ctx: Arc<ServerContext>,
    pub session: Session,
    decoder: RespDecoder,
    buf: BytesMut,
    /// Set after QUIT or a protocol error: the server would close.
    pub closed: bool,
    /// The response budget passed to `execute`.
    pub budget: usize,
}

impl<E: KvsEngine> Kvs<E> {
    pub fn new(engine: E, requirepass: Option<&str>) -> Kvs<E> {
        let mut ctx = ServerContext::new(Box::new(Default::default));
        ctx.requirepass = requirepass.map(str::to_owned);
        let ctx = Arc::new(ctx);
        Kvs {
            session: Session::new(&ctx),
            engine,
            ctx,
            decoder: RespDecoder::new(),
            buf: BytesMut::new(),
            closed: false,
            budget: 16 << 20,
        }
    }

    /// Another connection to the same engine and context.
    pub fn connection(&self) -> Kvs<E> {
        Kvs {
            engine: self.engine.clone(),
            ctx: self.ctx.clone(),
            session: Session::new(&self.ctx),
            decoder: RespDecoder::new(),
            buf: BytesMut::new(),
            closed: false,
            budget: 16 << 20,
        }
    }

    /// Feeds request bytes; the bytes of every reply they produce.
    pub fn feed(&mut self, bytes: &[u8]) -> Vec<u8> {
        let mut out = BytesMut::new();
        self.buf.extend_from_slice(bytes);
        while !self.closed {
            let authenticated = self.session.is_authenticated();
            match self
                .decoder
                .decode(&mut self.buf, &Limits::default(), authenticated)
            {
                Ok(None) => break,
                Ok(Some(args)) => match dispatch(args, &mut self.session, &self.ctx) {
                    Step::Reply(r) => r.encode(&mut out),
                    Step::Close(r) => {
                        r.encode(&mut out);
                        self.closed = true;
                    }
                    Step::Engine(cmd) => cmd
                        .execute(&self.engine, &self.ctx, self.budget)
                        .reply
                        .encode(&mut out),
                },
                Err(e) => {
                    e.reply().encode(&mut out);
                    self.closed = true;
                }
            }
        }
        out.to_vec()
    }

    /// Runs one command given as arguments; its reply's bytes.
    pub fn call(&mut self, args: &[&[u8]]) -> Vec<u8> {
        self.feed(&multibulk(args))
    }

    /// Runs one command written as a space-separated line.
    pub fn line(&mut self, line: &str) -> String {
        String::from_utf8_lossy(&self.feed(&cmd(line))).into_owned()
    }
}
